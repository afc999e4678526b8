//! Scenarios of the whole state machine: sessions, time, revisions, and how the primitives meet
//! in one log (expiry freeing locks and deliveries in the entry that notices it).

use std::cell::RefCell;
use std::collections::HashMap;

use super::*;
use distsync::wire::{LockAwaitOutcome, LockWait, PutMessage, QueueAwaitOutcome, ADMIN_IDENTITY};

pub(super) const GRACE_MS: u64 = 600;

thread_local! {
    /// The secret each session of the running test was opened with.
    static SECRETS: RefCell<HashMap<SessionId, SessionSecret>> = RefCell::new(HashMap::new());
}

/// Remembers that `session` was opened with `secret`.
pub(super) fn remember(session: SessionId, secret: SessionSecret) {
    SECRETS.with(|secrets| secrets.borrow_mut().insert(session, secret));
}

/// The secret `session` was opened with (none for a session never opened).
pub(super) fn secret_of(session: SessionId) -> SessionSecret {
    SECRETS.with(|secrets| secrets.borrow().get(&session).copied().unwrap_or_default())
}

/// An open by the admin identity.
pub(super) fn open_op(ttl_ms: u64, secret: SessionSecret) -> Op {
    Op::OpenSession { ttl_ms, identity: ADMIN_IDENTITY.into(), secret }
}

pub(super) fn keep_alive(session: SessionId) -> Op {
    Op::KeepAlive { session, identity: ADMIN_IDENTITY.into(), secret: secret_of(session) }
}

pub(super) fn kv_get(machine: &StateMachine, key: &str) -> Option<(Vec<u8>, u64)> {
    match machine.query(ADMIN_IDENTITY, &Query::KvGet { key: key.into() }) {
        Ok(QueryResponse::KvGet { value }) => value,
        other => panic!("kv get: {other:?}"),
    }
}

pub(super) fn at(time_ms: u64, op: Op) -> LogCommand {
    LogCommand { time_ms, grace_ms: GRACE_MS, ops: vec![op] }
}

/// Applies a one-operation entry and returns its result.
pub(super) fn apply(machine: &mut StateMachine, index: u64, term: u64, command: &LogCommand) -> ApplyResult {
    let mut results = machine.apply(index, term, command);
    assert_eq!(results.len(), 1);
    results.pop().expect("one result")
}

pub(super) fn put(session: SessionId, seq: u64, acked_below: u64, key: &str, value: &str) -> Op {
    let command = Command::KvPut { key: key.into(), value: value.into() };
    let write = WriteRequest { session, seq, acked_below, command, secret: secret_of(session) };
    Op::Write { identity: ADMIN_IDENTITY.into(), write }
}

pub(super) fn opened(machine: &mut StateMachine, index: u64, time_ms: u64, ttl_ms: u64) -> SessionId {
    opened_as(machine, index, time_ms, ttl_ms, ADMIN_IDENTITY)
}

pub(super) fn opened_as(
    machine: &mut StateMachine,
    index: u64,
    time_ms: u64,
    ttl_ms: u64,
    identity: &str,
) -> SessionId {
    let secret = SessionSecret::random();
    let op = Op::OpenSession { ttl_ms, identity: identity.into(), secret };
    match apply(machine, index, 1, &at(time_ms, op)) {
        Ok(Response::SessionOpened { session, .. }) => {
            remember(session, secret);
            session
        }
        other => panic!("open session: {other:?}"),
    }
}

#[test]
fn a_retried_write_answers_the_first_response_and_applies_once() {
    let mut machine = StateMachine::default();
    let session = opened(&mut machine, 1, 1_000, 5_000);
    let first = apply(&mut machine, 2, 1, &at(1_010, put(session, 1, 1, "k", "v1"))).unwrap();
    // Another client changes the key; then the first client's retry of seq 1 arrives.
    let other = opened(&mut machine, 3, 1_020, 5_000);
    apply(&mut machine, 4, 1, &at(1_030, put(other, 1, 1, "k", "v2"))).unwrap();
    let retry = apply(&mut machine, 5, 1, &at(1_040, put(session, 1, 1, "k", "v1"))).unwrap();
    assert_eq!(first, retry);
    assert_eq!(first, Response::Written(CommandResponse::KvPut { version: 2 }));
    assert_eq!(kv_get(&machine, "k"), Some((b"v2".to_vec(), 4)), "the retry did not apply again");
}

#[test]
fn acknowledged_responses_are_forgotten_and_stale_retries_refused() {
    let mut machine = StateMachine::default();
    let session = opened(&mut machine, 1, 0, 5_000);
    apply(&mut machine, 2, 1, &at(1, put(session, 1, 1, "a", "1"))).unwrap();
    apply(&mut machine, 3, 1, &at(2, put(session, 2, 2, "a", "2"))).unwrap();
    let stale = apply(&mut machine, 4, 1, &at(3, put(session, 1, 1, "a", "1")));
    assert_eq!(stale, Err(ServerError::StaleSequence { session, seq: 1, oldest_kept: 2 }));
}

#[test]
fn sessions_expire_by_leader_time_and_keepalives_renew_them() {
    let mut machine = StateMachine::default();
    let session = opened(&mut machine, 1, 10_000, 1_000);
    apply(&mut machine, 2, 1, &at(10_900, keep_alive(session))).unwrap();
    apply(&mut machine, 3, 1, &at(11_800, Op::Tick)).unwrap();
    assert_eq!(machine.session_count(), 1, "renewed at 10.9 s, lives until 11.9 s");
    apply(&mut machine, 4, 1, &at(11_901, Op::Tick)).unwrap();
    assert_eq!(machine.session_count(), 0);
    let late = apply(&mut machine, 5, 1, &at(11_902, put(session, 1, 1, "k", "v")));
    assert_eq!(late, Err(ServerError::SessionExpired { session }));
}

#[test]
fn time_never_runs_backwards_across_leaders() {
    let mut machine = StateMachine::default();
    let session = opened(&mut machine, 1, 50_000, 1_000);
    // A leader whose clock is behind stamps an early time: the session must not revive or
    // gain lease from it, and expiry still happens once the later clock passes its deadline.
    apply(&mut machine, 2, 1, &at(40_000, keep_alive(session))).unwrap();
    apply(&mut machine, 3, 1, &at(51_001, Op::Tick)).unwrap();
    assert_eq!(machine.session_count(), 0);
}

#[test]
fn a_new_leader_grants_grace_before_anything_expires() {
    let mut machine = StateMachine::default();
    let session = opened(&mut machine, 1, 1_000, 1_000);
    // The old leader died; the first entry of term 2 comes long after the lease ended.
    apply(&mut machine, 2, 2, &at(2_500, Op::Tick)).unwrap();
    assert_eq!(machine.session_count(), 1, "grace extends the lease to 2.5 s + 600 ms");
    apply(&mut machine, 3, 2, &at(2_900, keep_alive(session))).unwrap();
    apply(&mut machine, 4, 2, &at(3_901, Op::Tick)).unwrap();
    assert_eq!(machine.session_count(), 0, "after the grace, the ordinary TTL applies");
}

#[test]
fn operations_sharing_an_entry_get_increasing_revisions() {
    let mut machine = StateMachine::default();
    let batch = LogCommand {
        time_ms: 5,
        grace_ms: GRACE_MS,
        ops: vec![open_op(5_000, SessionSecret([1; 16])), open_op(5_000, SessionSecret([2; 16]))],
    };
    let opened = machine.apply(1, 1, &batch);
    remember(1, SessionSecret([1; 16]));
    remember(2, SessionSecret([2; 16]));
    assert_eq!(
        opened,
        vec![
            Ok(Response::SessionOpened { session: 1, ttl_ms: 5_000 }),
            Ok(Response::SessionOpened { session: 2, ttl_ms: 5_000 })
        ]
    );
    let puts = LogCommand {
        time_ms: 6,
        grace_ms: GRACE_MS,
        ops: vec![put(1, 1, 1, "k", "first"), put(2, 1, 1, "k", "second"), put(9, 1, 1, "k", "nobody")],
    };
    let results = machine.apply(2, 1, &puts);
    assert_eq!(results[0], Ok(Response::Written(CommandResponse::KvPut { version: 3 })));
    assert_eq!(results[1], Ok(Response::Written(CommandResponse::KvPut { version: 4 })));
    assert_eq!(results[2], Err(ServerError::SessionExpired { session: 9 }), "one failure does not fail the batch");
    assert_eq!(kv_get(&machine, "k"), Some((b"second".to_vec(), 4)), "later operations in an entry win");
    machine.check_invariants();
}

#[test]
fn ttl_out_of_range_is_refused() {
    let mut machine = StateMachine::default();
    let result = apply(&mut machine, 1, 1, &at(0, open_op(10, SessionSecret::random())));
    assert!(matches!(result, Err(ServerError::InvalidArgument { .. })), "{result:?}");
}

#[test]
fn close_session_ends_it_at_once() {
    let mut machine = StateMachine::default();
    let session = opened(&mut machine, 1, 0, 60_000);
    let close = write_op(session, 1, Command::CloseSession);
    assert_eq!(apply(&mut machine, 2, 1, &at(1, close)), Ok(Response::Written(CommandResponse::SessionClosed)));
    assert_eq!(machine.session_count(), 0);
}

#[test]
fn equal_logs_give_equal_digests() {
    remember(1, SessionSecret([5; 16]));
    let log = [
        at(1, open_op(2_000, SessionSecret([5; 16]))),
        at(2, put(1, 1, 1, "x", "1")),
        at(3, put(1, 2, 1, "y", "2")),
        at(9_000, Op::Tick),
    ];
    let mut left = StateMachine::default();
    let mut right = StateMachine::default();
    for (offset, command) in log.iter().enumerate() {
        let _ = apply(&mut left, offset as u64 + 1, 1, command);
        let _ = apply(&mut right, offset as u64 + 1, 1, command);
    }
    assert_eq!(left.digest(), right.digest());
    assert_eq!(left, right);
    left.check_invariants();
    let _ = apply(&mut right, 5, 1, &at(9_001, Op::Tick));
    assert_ne!(left.digest(), right.digest(), "the applied index is part of the state");
}

pub(super) fn write_op(session: SessionId, seq: u64, command: Command) -> Op {
    write_as(ADMIN_IDENTITY, session, seq, command)
}

pub(super) fn write_as(identity: &str, session: SessionId, seq: u64, command: Command) -> Op {
    let write = WriteRequest { session, seq, acked_below: seq, command, secret: secret_of(session) };
    Op::Write { identity: identity.into(), write }
}

pub(super) fn acquire(name: &str, actor: u64, wait: LockWait) -> Command {
    Command::LockAcquire { name: name.into(), actor, mode: distsync::wire::LockMode::Exclusive, wait }
}

#[test]
fn an_expired_session_frees_its_lock_and_the_next_waiter_gets_a_higher_token_in_that_entry() {
    let mut machine = StateMachine::default();
    let holder = opened(&mut machine, 1, 1_000, 1_000);
    let waiter = opened(&mut machine, 2, 1_000, 60_000);
    let granted = apply(&mut machine, 3, 1, &at(1_010, write_op(holder, 1, acquire("L", 7, LockWait::Forever))));
    let Ok(Response::Written(CommandResponse::LockGranted { token: first })) = granted else { panic!("{granted:?}") };
    let queued = apply(&mut machine, 4, 1, &at(1_020, write_op(waiter, 1, acquire("L", 9, LockWait::Forever))));
    let Ok(Response::Written(CommandResponse::LockQueued { revision, ahead: 0 })) = queued else {
        panic!("{queued:?}")
    };
    assert_eq!(machine.take_touched_sessions(), vec![waiter], "the queued waiter's node must look");
    let owner = Owner { session: waiter, actor: 9 };
    assert_eq!(machine.lock_await("L", owner, revision), LockAwaitOutcome::Pending);
    // The holder falls silent past its TTL; the next entry (a tick) expires it and grants.
    apply(&mut machine, 5, 1, &at(2_500, Op::Tick)).unwrap();
    let LockAwaitOutcome::Granted { token: second } = machine.lock_await("L", owner, revision) else {
        panic!("not granted")
    };
    assert!(second > first, "tokens increase: {first} then {second}");
    let touched = machine.take_touched_sessions();
    assert!(touched.contains(&holder) && touched.contains(&waiter), "{touched:?}");
    // A retried release from the expired holder frees nothing.
    let stale = apply(
        &mut machine,
        6,
        1,
        &at(2_510, write_op(holder, 2, Command::LockRelease { name: "L".into(), actor: 7, token: first })),
    );
    assert_eq!(stale, Err(ServerError::SessionExpired { session: holder }));
    machine.check_invariants();
}

#[test]
fn a_waiter_whose_session_expires_in_the_releasing_entry_is_never_granted() {
    let mut machine = StateMachine::default();
    let holder = opened(&mut machine, 1, 1_000, 60_000);
    let waiter = opened(&mut machine, 2, 1_000, 1_000);
    let Ok(Response::Written(CommandResponse::LockGranted { token })) =
        apply(&mut machine, 3, 1, &at(1_000, write_op(holder, 1, acquire("L", 1, LockWait::Forever))))
    else {
        panic!("not granted")
    };
    let Ok(Response::Written(CommandResponse::LockQueued { revision, .. })) =
        apply(&mut machine, 4, 1, &at(1_000, write_op(waiter, 1, acquire("L", 2, LockWait::Forever))))
    else {
        panic!("not queued")
    };
    // The release arrives in an entry stamped after the waiter's lease ended (etcd-io/etcd#11456).
    let release = write_op(holder, 2, Command::LockRelease { name: "L".into(), actor: 1, token });
    assert_eq!(apply(&mut machine, 5, 1, &at(2_001, release)), Ok(Response::Written(CommandResponse::LockReleased)));
    assert_eq!(machine.lock_await("L", Owner { session: waiter, actor: 2 }, revision), LockAwaitOutcome::SessionEnded);
    assert_eq!(machine.lock_count(), 0, "nobody holds the lock");
    machine.check_invariants();
}

#[test]
fn an_expired_consumer_gets_its_delivery_returned_and_its_wait_ended_in_the_expiring_entry() {
    use distsync::wire::{PutMessage, QueueDelivery};
    let mut machine = StateMachine::default();
    let consumer = opened(&mut machine, 1, 1_000, 1_000);
    let producer = opened(&mut machine, 2, 1_000, 60_000);
    let get = |request, wait_ms| Command::QueueGet {
        queue: "q".into(),
        request,
        max: 1,
        visibility_ms: Some(600_000),
        wait_ms,
        detach: false,
    };
    // The consumer waits; the producer's put is handed to it in the put's own entry.
    let waiting = apply(&mut machine, 3, 1, &at(1_010, write_op(consumer, 1, get(7, 30_000))));
    let Ok(Response::Written(CommandResponse::QueueWaiting { revision })) = waiting else { panic!("{waiting:?}") };
    assert_eq!(machine.queue_await("q", consumer, 7, revision), QueueAwaitOutcome::Pending);
    let put =
        Command::QueuePut { queue: "q".into(), messages: vec![PutMessage { body: b"m".to_vec(), dedup_id: None }] };
    apply(&mut machine, 4, 1, &at(1_020, write_op(producer, 1, put))).unwrap();
    assert_eq!(machine.take_touched_sessions(), vec![consumer], "the consumer's node must look");
    let QueueAwaitOutcome::Delivered(delivered) = machine.queue_await("q", consumer, 7, revision) else {
        panic!("not delivered")
    };
    let [QueueDelivery { attempt: 1, .. }] = &delivered[..] else { panic!("{delivered:?}") };
    // The consumer starts waiting for a second message, then falls silent past its TTL.
    let second = apply(&mut machine, 5, 1, &at(1_030, write_op(consumer, 2, get(8, 30_000))));
    let Ok(Response::Written(CommandResponse::QueueWaiting { revision: second })) = second else { panic!() };
    apply(&mut machine, 6, 1, &at(2_100, Op::Tick)).unwrap();
    assert_eq!(machine.queue_await("q", consumer, 8, second), QueueAwaitOutcome::SessionEnded);
    // The delivery came back at once, not after its 10-minute visibility timeout.
    let other = opened(&mut machine, 7, 2_100, 60_000);
    let again = apply(&mut machine, 8, 1, &at(2_110, write_op(other, 1, get(1, 0))));
    let Ok(Response::Written(CommandResponse::QueueDelivered { deliveries })) = again else { panic!("{again:?}") };
    assert_eq!((deliveries[0].id, deliveries[0].attempt), (delivered[0].id, 2));
    machine.check_invariants();
}

#[test]
fn cache_writes_stay_pending_until_written_back_and_expire_at_one_log_position() {
    use super::cache::DirectoryRead;
    let mut machine = StateMachine::default();
    let session = opened(&mut machine, 1, 1_000, 60_000);
    let set = |seq, key: &str, ttl_ms| {
        write_op(session, seq, Command::CacheSet { key: key.into(), value: b"v".to_vec(), ttl_ms })
    };
    let Ok(Response::Written(CommandResponse::CacheSet { version })) =
        apply(&mut machine, 2, 1, &at(1_000, set(1, "user:1", None)))
    else {
        panic!("not set")
    };
    assert_eq!(machine.cache().read(b"user:1"), DirectoryRead::Pending { version, value: b"v" });
    apply(&mut machine, 3, 1, &at(1_001, Op::CacheWrittenBack { written: vec![(b"user:1".to_vec(), version)] }))
        .unwrap();
    assert_eq!(machine.cache().read(b"user:1"), DirectoryRead::Stored { version });
    apply(&mut machine, 4, 1, &at(1_002, set(2, "session:9", Some(500)))).unwrap();
    assert_eq!(machine.next_deadline_ms(), Some(1_502), "the leader ticks when the TTL passes");
    apply(&mut machine, 5, 1, &at(1_502, Op::Tick)).unwrap();
    assert!(matches!(machine.cache().read(b"session:9"), DirectoryRead::Pending { .. }), "inclusive");
    apply(&mut machine, 6, 1, &at(1_503, Op::Tick)).unwrap();
    assert_eq!(machine.cache().read(b"session:9"), DirectoryRead::Absent);
    let delete = write_op(session, 3, Command::CacheDelete { key: b"user:1".to_vec() });
    assert_eq!(
        apply(&mut machine, 7, 1, &at(1_504, delete)),
        Ok(Response::Written(CommandResponse::CacheDeleted { existed: true }))
    );
    assert_eq!(machine.cache().read(b"user:1"), DirectoryRead::Absent);
    machine.check_invariants();
}

#[test]
fn a_timed_wait_ends_by_leader_time_and_a_cancel_releases_a_grant_nobody_saw() {
    let mut machine = StateMachine::default();
    let a = opened(&mut machine, 1, 1_000, 60_000);
    let b = opened(&mut machine, 2, 1_000, 60_000);
    let Ok(Response::Written(CommandResponse::LockGranted { token })) =
        apply(&mut machine, 3, 1, &at(1_000, write_op(a, 1, acquire("L", 1, LockWait::Forever))))
    else {
        panic!("not granted")
    };
    let Ok(Response::Written(CommandResponse::LockQueued { revision, .. })) =
        apply(&mut machine, 4, 1, &at(1_000, write_op(b, 1, acquire("L", 2, LockWait::TimeoutMs(500)))))
    else {
        panic!("not queued")
    };
    let owner_b = Owner { session: b, actor: 2 };
    apply(&mut machine, 5, 1, &at(1_500, Op::Tick)).unwrap();
    assert_eq!(machine.lock_await("L", owner_b, revision), LockAwaitOutcome::Pending, "the deadline is inclusive");
    apply(&mut machine, 6, 1, &at(1_501, Op::Tick)).unwrap();
    assert_eq!(machine.lock_await("L", owner_b, revision), LockAwaitOutcome::TimedOut);
    // b asks again, is granted on a's release, but gave up waiting before it learned of it:
    // its cancel releases the grant.
    let Ok(Response::Written(CommandResponse::LockQueued { revision, .. })) =
        apply(&mut machine, 7, 1, &at(1_600, write_op(b, 2, acquire("L", 2, LockWait::Forever))))
    else {
        panic!("not queued")
    };
    let release = write_op(a, 2, Command::LockRelease { name: "L".into(), actor: 1, token });
    apply(&mut machine, 8, 1, &at(1_700, release)).unwrap();
    assert!(matches!(machine.lock_await("L", owner_b, revision), LockAwaitOutcome::Granted { .. }));
    let cancel =
        write_op(b, 3, Command::LockCancel { name: "L".into(), actor: 2, queued_revision: revision, upgrade: false });
    assert_eq!(
        apply(&mut machine, 9, 1, &at(1_800, cancel)),
        Ok(Response::Written(CommandResponse::LockCancelled { released: true }))
    );
    assert_eq!(machine.lock_count(), 0);
    machine.check_invariants();
}

#[test]
fn a_cluster_is_named_once() {
    let mut machine = StateMachine::default();
    assert_eq!(machine.cluster_id(), None);
    apply(&mut machine, 1, 1, &at(1_000, Op::NameCluster { id: [1; 16] })).unwrap();
    // A second leader that proposed before seeing the first name changes nothing.
    apply(&mut machine, 2, 2, &at(1_001, Op::NameCluster { id: [2; 16] })).unwrap();
    assert_eq!(machine.cluster_id(), Some([1; 16]));
}

fn write(session: SessionId, seq: u64, command: Command) -> Op {
    let write = WriteRequest { session, seq, acked_below: 1, command, secret: secret_of(session) };
    Op::Write { identity: ADMIN_IDENTITY.into(), write }
}

fn queue_get(max: u32) -> Command {
    Command::QueueGet { queue: "q".into(), request: 1, max, visibility_ms: Some(60_000), wait_ms: 0, detach: false }
}

#[test]
fn a_retried_queue_get_is_answered_from_tags_and_sessions_keep_no_bodies() {
    let mut machine = StateMachine::default();
    let session = opened(&mut machine, 1, 1_000, 60_000);
    let body = vec![7u8; 100_000];
    let messages = (0..3).map(|_| PutMessage { body: body.clone(), dedup_id: None }).collect();
    apply(&mut machine, 2, 1, &at(1_001, write(session, 1, Command::QueuePut { queue: "q".into(), messages })))
        .unwrap();
    let first = apply(&mut machine, 3, 1, &at(1_002, write(session, 2, queue_get(3)))).unwrap();
    let Response::Written(CommandResponse::QueueDelivered { deliveries }) = &first else { panic!("{first:?}") };
    assert_eq!(deliveries.len(), 3);
    let stored = &machine.sessions.get(session).unwrap().responses[&2];
    assert!(stored.bytes < 1_000, "the stored answer keeps tags, not 300 KB of bodies: {} bytes", stored.bytes);
    // One delivery is acked, then the get is retried: the answer has the others, with bodies.
    let acked = deliveries[0].tag;
    apply(
        &mut machine,
        4,
        1,
        &at(1_003, write(session, 3, Command::QueueAck { queue: "q".into(), tags: vec![acked] })),
    )
    .unwrap();
    let retry = apply(&mut machine, 5, 1, &at(1_004, write(session, 2, queue_get(3)))).unwrap();
    let Response::Written(CommandResponse::QueueDelivered { deliveries: again }) = &retry else { panic!("{retry:?}") };
    assert_eq!(
        again.iter().map(|d| d.tag).collect::<Vec<_>>(),
        deliveries[1..].iter().map(|d| d.tag).collect::<Vec<_>>()
    );
    assert!(again.iter().all(|d| d.body == body), "a retried get carries the bodies");
    machine.check_invariants();
}

#[test]
fn stored_answers_are_bounded_by_bytes_per_session() {
    let mut machine = StateMachine::default();
    let session = opened(&mut machine, 1, 1_000, 60_000);
    // A client that never acknowledges its answers, each 64 KiB (an error carrying a long text).
    for seq in 1..=64 {
        let answer = Err(ServerError::Internal { reason: "x".repeat(64 * 1024) });
        machine.sessions.finish_write(session, seq, seq, answer);
    }
    let kept = machine.sessions.get(session).unwrap();
    assert!(kept.response_bytes <= sessions::RESPONSE_BYTES_PER_SESSION_MAX, "{} bytes kept", kept.response_bytes);
    assert!(kept.responses.len() < 64 && kept.responses.contains_key(&64), "the oldest go, the newest stays");
    assert_eq!(kept.acked_below, *kept.responses.keys().next().unwrap(), "a retry of a forgotten one is stale");
    machine.check_invariants();
}

#[test]
fn one_identity_cannot_take_every_session() {
    let mut machine = StateMachine::default();
    for index in 1..=sessions::SESSIONS_PER_IDENTITY_MAX as u64 {
        opened_as(&mut machine, index, 1_000, 60_000, "greedy");
    }
    let index = sessions::SESSIONS_PER_IDENTITY_MAX as u64 + 1;
    let op = Op::OpenSession { ttl_ms: 60_000, identity: "greedy".into(), secret: SessionSecret::random() };
    let refused = apply(&mut machine, index, 1, &at(1_000, op));
    assert!(
        matches!(&refused, Err(ServerError::LimitReached { what, limit, reason })
            if what == "SESSIONS_PER_IDENTITY_MAX"
                && *limit == sessions::SESSIONS_PER_IDENTITY_MAX as u64
                && reason.contains("greedy")),
        "{refused:?}"
    );
    // Everyone else still opens sessions.
    opened_as(&mut machine, index + 1, 1_000, 60_000, "polite");
    assert_eq!(machine.session_count(), sessions::SESSIONS_PER_IDENTITY_MAX + 1);
    machine.check_invariants();
}

#[test]
fn limits_set_through_the_log_apply_from_their_position_and_keep_what_is_held() {
    let mut machine = StateMachine::default();
    let session = opened(&mut machine, 1, 1_000, 60_000);
    for (seq, key) in [(1, "a"), (2, "b")] {
        apply(&mut machine, seq + 1, 1, &at(1_001, put(session, seq, 1, key, "v"))).unwrap();
    }
    // Two keys are held; the limit drops to one.
    let limits = Limits { kv_keys: 1, ..Limits::default() };
    apply(&mut machine, 4, 1, &at(1_002, Op::SetLimits { limits })).unwrap();
    assert_eq!(machine.limits(), &limits);
    assert_eq!(kv_get(&machine, "a").map(|(value, _)| value), Some(b"v".to_vec()), "nothing held is dropped");
    let refused = apply(&mut machine, 5, 1, &at(1_003, put(session, 3, 1, "c", "v")));
    assert!(
        matches!(&refused, Err(ServerError::LimitReached { what, limit: 1, .. }) if what == "KEYS_MAX"),
        "{refused:?}"
    );
    // An existing key may still be replaced: the count does not grow.
    apply(&mut machine, 6, 1, &at(1_004, put(session, 4, 1, "a", "w"))).unwrap();
    // Invalid limits (a zero) are ignored by every replica alike.
    let zero = Limits { kv_keys: 0, ..Limits::default() };
    apply(&mut machine, 7, 1, &at(1_005, Op::SetLimits { limits: zero })).unwrap();
    assert_eq!(machine.limits(), &limits);
    machine.check_invariants();
}

#[test]
fn list_pages_end_before_their_byte_limit() {
    // Items of 1 MiB each, named by their index: a page takes four (4 MiB), not a thousand.
    let items: Vec<(String, Vec<u8>)> = (0..10).map(|i| (format!("{i:02}"), vec![0u8; 1024 * 1024])).collect();
    let page = |after: &Option<String>| {
        let rest: Vec<(String, Vec<u8>)> =
            items.iter().filter(|(name, _)| after.as_ref().is_none_or(|after| name > after)).cloned().collect();
        (rest, false)
    };
    let (first, more) = filtered_pages(None, 1000, page, |(name, _)| name.clone(), |_| true);
    assert!(more, "more follow the first page");
    assert_eq!(first.len(), 3, "three 1 MiB items and their names fit in 4 MiB, a fourth does not");
    let (second, _) = filtered_pages(Some(first[2].0.clone()), 1000, page, |(name, _)| name.clone(), |_| true);
    assert_eq!(second[0].0, "03", "the next page starts after the last item given");
}

/// A register of `keys` keys with values of `value_bytes`.
fn machine_with_values(keys: usize, value_bytes: usize) -> StateMachine {
    let mut machine = StateMachine::default();
    for i in 0..keys {
        machine.kv.put(shared(format!("key-{i:08}").as_bytes()), shared(&vec![i as u8; value_bytes]), 1);
    }
    machine
}

#[test]
fn a_copy_of_the_state_shares_its_values_rather_than_copying_them() {
    // What lets a snapshot or a digest copy the state under the lock cheaply and serialize it
    // off the lock (`StateMachineStore::applied_copy`).
    let machine = machine_with_values(10, 64 * 1024);
    let copy = machine.clone();
    assert_eq!(copy, machine);
    for i in 0..10 {
        let key = format!("key-{i:08}").into_bytes();
        let (original, copied) = (&machine.kv.get(&key).unwrap().0, &copy.kv.get(&key).unwrap().0);
        assert_eq!(original.as_ptr(), copied.as_ptr(), "the copy of {key:?} shares the value's bytes");
    }
    assert_eq!(copy.digest(), machine.digest());
}

/// A copy of states of three shapes serializes and digests as the state does, and what the copy
/// costs against the serialization and the digest it replaces under the lock. Small states on
/// every `cargo test`; the sizes of docs/limits.md with `DISTSYNC_MEASURE_COPY=1 cargo test
/// --release -p distsync-server --lib copies_of_states -- --nocapture`.
#[test]
fn copies_of_states_of_every_shape_encode_as_the_state_and_what_they_cost() {
    let full = std::env::var_os("DISTSYNC_MEASURE_COPY").is_some();
    let shapes = if full {
        [(200usize, 1024 * 1024usize), (100_000, 1024), (1_000_000, 100)]
    } else {
        [(4, 256 * 1024), (1_000, 1024), (10_000, 100)]
    };
    for (keys, value_bytes) in shapes {
        let machine = machine_with_values(keys, value_bytes);
        let started = std::time::Instant::now();
        let copy = machine.clone();
        let copied = started.elapsed();
        let started = std::time::Instant::now();
        let data = postcard::to_stdvec(&copy).unwrap();
        let serialized = started.elapsed();
        assert_eq!(data, postcard::to_stdvec(&machine).unwrap(), "the copy encodes as the state");
        let started = std::time::Instant::now();
        assert_eq!(copy.digest(), machine.digest());
        let digested = started.elapsed() / 2;
        eprintln!(
            "{keys} keys of {value_bytes} B ({} MiB): copy {copied:?}, serialize {serialized:?}, digest {digested:?}",
            data.len() >> 20
        );
    }
}
