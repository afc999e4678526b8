//! Scenarios of [`Queues`]: FIFO delivery, acks and nacks, visibility, dead letters, dedup,
//! waiting gets, session ends, cancels and limits.

use super::*;
use distsync::wire::AttemptOutcome;

/// A revision counter for the tests.
struct Revisions(u64);

impl Revisions {
    fn next(&mut self) -> impl FnMut() -> u64 + '_ {
        || {
            self.0 += 1;
            self.0
        }
    }
}

fn message(body: &str) -> PutMessage {
    PutMessage { body: body.as_bytes().to_vec(), dedup_id: None }
}

fn put(queues: &mut Queues, revisions: &mut Revisions, name: &str, bodies: &[&str], now: u64) -> Vec<u64> {
    let messages: Vec<PutMessage> = bodies.iter().map(|b| message(b)).collect();
    let mut touched = Vec::new();
    let outcomes =
        queues.put(name, &messages, now, &mut revisions.next(), &mut touched, "alice", &Limits::default()).unwrap();
    outcomes.into_iter().map(|o| o.id).collect()
}

/// The secret of session `session` in these tests.
fn key(session: u64) -> SessionSecret {
    SessionSecret([session as u8; 16])
}

fn get(queues: &mut Queues, revisions: &mut Revisions, consumer: Consumer, max: u32, now: u64) -> Vec<QueueDelivery> {
    match queues
        .get(
            "q",
            consumer,
            key(consumer.0),
            max,
            Some(1_000),
            0,
            false,
            now,
            &mut revisions.next(),
            "alice",
            &Limits::default(),
        )
        .unwrap()
    {
        GetOutcome::Delivered(deliveries) => deliveries,
        GetOutcome::Waiting => panic!("a get without wait never waits"),
    }
}

fn bodies(deliveries: &[QueueDelivery]) -> Vec<String> {
    deliveries.iter().map(|d| String::from_utf8(d.body.clone()).unwrap()).collect()
}

#[test]
fn delivery_is_fifo_and_an_ack_deletes_for_good() {
    let (mut queues, mut revisions) = (Queues::default(), Revisions(0));
    let ids = put(&mut queues, &mut revisions, "q", &["a", "b", "c"], 10);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    let first = get(&mut queues, &mut revisions, (1, 1), 2, 20);
    assert_eq!(bodies(&first), ["a", "b"]);
    assert_eq!(first[0].attempt, 1);
    let second = get(&mut queues, &mut revisions, (2, 1), 5, 20);
    assert_eq!(bodies(&second), ["c"], "in-flight messages are invisible to others");
    let tags: Vec<u64> = first.iter().map(|d| d.tag).collect();
    assert_eq!(queues.ack("q", 1, &tags).unwrap(), Vec::<u64>::new());
    assert_eq!(queues.ack("q", 2, &[second[0].tag]).unwrap(), Vec::<u64>::new());
    assert_eq!(queues.ack("q", 1, &tags[..1]).unwrap(), tags[..1], "a second ack is stale");
    let stats = queues.stats("q", 30).unwrap();
    assert_eq!((stats.depth, stats.in_flight, stats.acked_total, stats.bytes), (0, 0, 3, 0));
    assert!(get(&mut queues, &mut revisions, (1, 2), 5, 40).is_empty(), "an acked message never comes back");
    queues.check_invariants();
}

#[test]
fn a_nacked_message_returns_to_the_head_and_its_old_tag_is_refused() {
    let (mut queues, mut revisions) = (Queues::default(), Revisions(0));
    put(&mut queues, &mut revisions, "q", &["a", "b"], 10);
    let first = get(&mut queues, &mut revisions, (1, 1), 1, 20);
    let mut touched = Vec::new();
    queues.nack("q", 1, &[first[0].tag], 30, &mut revisions.next(), &mut touched).unwrap();
    let again = get(&mut queues, &mut revisions, (2, 1), 1, 40);
    assert_eq!(bodies(&again), ["a"], "the nacked message is at the head again");
    assert_eq!(again[0].attempt, 2);
    assert_eq!(again[0].history.len(), 1);
    assert_eq!(again[0].history[0].outcome, AttemptOutcome::Nacked);
    assert_ne!(again[0].tag, first[0].tag, "each attempt has its own tag");
    assert_eq!(queues.ack("q", 1, &[first[0].tag]).unwrap(), [first[0].tag], "the old tag acks nothing");
    assert_eq!(queues.stats("q", 50).unwrap().in_flight, 1, "the redelivery is still in flight");
    let error = queues.extend("q", 1, first[0].tag, 5_000, 50).unwrap_err();
    assert!(matches!(error, ServerError::Queue(QueueRefusal::StaleTag { .. })), "{error:?}");
    queues.check_invariants();
}

#[test]
fn visibility_timeouts_redeliver_and_extend_keeps_the_message() {
    let (mut queues, mut revisions) = (Queues::default(), Revisions(0));
    put(&mut queues, &mut revisions, "q", &["a", "b"], 0);
    let delivered = get(&mut queues, &mut revisions, (1, 1), 2, 100); // visible again at 1_100
    assert_eq!(queues.next_deadline_ms(), Some(1_100));
    assert_eq!(queues.extend("q", 1, delivered[1].tag, 5_000, 600).unwrap(), 5_600);
    let mut touched = Vec::new();
    queues.expire(1_100, &mut revisions.next(), &mut touched);
    assert_eq!(queues.stats("q", 1_100).unwrap().depth, 0, "the deadline itself is not past");
    queues.expire(1_101, &mut revisions.next(), &mut touched);
    let stats = queues.stats("q", 1_101).unwrap();
    assert_eq!((stats.depth, stats.in_flight), (1, 1), "a timed out, b extended");
    let again = get(&mut queues, &mut revisions, (2, 1), 2, 1_200);
    assert_eq!(bodies(&again), ["a"]);
    assert_eq!(again[0].history[0].outcome, AttemptOutcome::TimedOut);
    queues.check_invariants();
}

#[test]
fn after_the_last_attempt_a_message_moves_to_the_dead_letter_queue_with_its_history() {
    let (mut queues, mut revisions) = (Queues::default(), Revisions(0));
    let options = QueueOptions { max_attempts: 2, ..QueueOptions::default() };
    queues.create("q", options, "alice", &Limits::default()).unwrap();
    let [id] = put(&mut queues, &mut revisions, "q", &["poison"], 0)[..] else { panic!() };
    let mut touched = Vec::new();
    for attempt in 1..=2 {
        let delivered = get(&mut queues, &mut revisions, (1, attempt), 1, attempt * 10);
        assert_eq!(delivered[0].attempt, attempt as u32);
        queues.nack("q", 1, &[delivered[0].tag], attempt * 10 + 1, &mut revisions.next(), &mut touched).unwrap();
    }
    assert!(get(&mut queues, &mut revisions, (1, 9), 1, 100).is_empty(), "not redelivered a third time");
    let stats = queues.stats("q", 100).unwrap();
    assert_eq!((stats.depth, stats.dead_lettered), (0, 1));
    let dead = match queues
        .get("q.dlq", (1, 10), key(1), 1, None, 0, false, 110, &mut revisions.next(), "alice", &Limits::default())
        .unwrap()
    {
        GetOutcome::Delivered(deliveries) => deliveries,
        GetOutcome::Waiting => panic!(),
    };
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].id, dead[0].attempt, &dead[0].body[..]), (id, 1, &b"poison"[..]));
    assert_eq!(dead[0].history.len(), 2, "both failed attempts travel with it");
    assert!(dead[0].history.iter().all(|a| a.queue == "q" && a.outcome == AttemptOutcome::Nacked));
    assert_eq!(queues.stats("q.dlq", 110).unwrap().options.max_attempts, 0, "a dead-letter queue keeps all");
    queues.check_invariants();
}

#[test]
fn a_repeated_dedup_id_returns_the_first_id_within_the_window_only() {
    let (mut queues, mut revisions) = (Queues::default(), Revisions(0));
    let with_id = |body: &str| PutMessage { body: body.into(), dedup_id: Some("order-42".into()) };
    let mut touched = Vec::new();
    let first = queues
        .put("q", &[with_id("one")], 0, &mut revisions.next(), &mut touched, "alice", &Limits::default())
        .unwrap();
    let again = queues
        .put("q", &[with_id("two")], 1_000, &mut revisions.next(), &mut touched, "alice", &Limits::default())
        .unwrap();
    assert_eq!(again, [PutOutcome { id: first[0].id, duplicate: true }]);
    assert_eq!(queues.stats("q", 1_000).unwrap().depth, 1);
    // The default window is two minutes: after it, the id enqueues again.
    let later = queues
        .put("q", &[with_id("three")], 120_001, &mut revisions.next(), &mut touched, "alice", &Limits::default())
        .unwrap();
    assert!(!later[0].duplicate && later[0].id > first[0].id);
    queues.check_invariants();
}

#[test]
fn a_waiting_get_is_served_in_the_entry_that_enqueues_and_in_arrival_order() {
    let (mut queues, mut revisions) = (Queues::default(), Revisions(0));
    let mut waiting = |queues: &mut Queues, consumer: Consumer| {
        let outcome = queues
            .get(
                "q",
                consumer,
                key(consumer.0),
                1,
                None,
                5_000,
                false,
                10,
                &mut revisions.next(),
                "alice",
                &Limits::default(),
            )
            .unwrap();
        assert_eq!(outcome, GetOutcome::Waiting);
    };
    waiting(&mut queues, (1, 1));
    waiting(&mut queues, (2, 1));
    assert_eq!(queues.await_state("q", (1, 1)), AwaitState::Waiting);
    let mut touched = Vec::new();
    queues.put("q", &[message("x")], 20, &mut revisions.next(), &mut touched, "alice", &Limits::default()).unwrap();
    assert_eq!(touched, [1], "the first waiter is served and its node told");
    let AwaitState::Delivered(deliveries) = queues.await_state("q", (1, 1)) else { panic!("not delivered") };
    assert_eq!(bodies(&deliveries), ["x"]);
    assert_eq!(queues.await_state("q", (2, 1)), AwaitState::Waiting);
    // The second wait ends at its deadline, empty.
    touched.clear();
    queues.expire(5_011, &mut revisions.next(), &mut touched);
    assert_eq!(touched, [2]);
    assert_eq!(queues.await_state("q", (2, 1)), AwaitState::Gone);
    queues.check_invariants();
}

#[test]
fn a_session_ending_returns_its_deliveries_at_once_but_not_detached_ones() {
    let (mut queues, mut revisions) = (Queues::default(), Revisions(0));
    put(&mut queues, &mut revisions, "q", &["a", "b"], 0);
    let bound = get(&mut queues, &mut revisions, (7, 1), 1, 10);
    let detached = match queues
        .get("q", (7, 2), key(7), 1, Some(60_000), 0, true, 10, &mut revisions.next(), "alice", &Limits::default())
        .unwrap()
    {
        GetOutcome::Delivered(deliveries) => deliveries,
        GetOutcome::Waiting => panic!(),
    };
    let mut touched = Vec::new();
    queues.release_session(7, 20, &mut revisions.next(), &mut touched);
    let stats = queues.stats("q", 20).unwrap();
    assert_eq!((stats.depth, stats.in_flight), (1, 1), "the bound delivery came back, the detached stays");
    let again = get(&mut queues, &mut revisions, (8, 1), 5, 30);
    assert_eq!(again[0].id, bound[0].id);
    assert_eq!(again[0].history[0].outcome, AttemptOutcome::SessionEnded);
    assert!(queues.ack("q", 9, &[detached[0].tag]).unwrap().is_empty(), "a detached delivery acks from anywhere");
    queues.check_invariants();
}

#[test]
fn a_cancelled_get_returns_unseen_deliveries_without_counting_the_attempt() {
    let (mut queues, mut revisions) = (Queues::default(), Revisions(0));
    let waiting = queues
        .get("q", (3, 1), key(3), 1, None, 5_000, false, 0, &mut revisions.next(), "alice", &Limits::default())
        .unwrap();
    assert_eq!(waiting, GetOutcome::Waiting);
    put(&mut queues, &mut revisions, "q", &["a"], 10);
    let mut touched = Vec::new();
    assert_eq!(queues.cancel("q", (3, 1), 20, &mut revisions.next(), &mut touched), 1);
    let again = get(&mut queues, &mut revisions, (4, 1), 1, 30);
    assert_eq!(again[0].attempt, 1, "the unseen delivery does not count");
    let withdrawn: Vec<_> = again[0].history.iter().map(|a| (a.attempt, a.session, a.outcome)).collect();
    assert_eq!(withdrawn, [(1, 3, AttemptOutcome::Withdrawn)], "but it is recorded");
    // Withdrawn again: one entry per attempt, the latest, so the history keeps real attempts.
    assert_eq!(queues.cancel("q", (4, 1), 40, &mut revisions.next(), &mut touched), 1);
    let third = get(&mut queues, &mut revisions, (5, 1), 1, 50);
    let withdrawn: Vec<_> = third[0].history.iter().map(|a| (a.attempt, a.session, a.outcome)).collect();
    assert_eq!(withdrawn, [(1, 4, AttemptOutcome::Withdrawn)]);
    assert_eq!(third[0].attempt, 1);
    queues.check_invariants();
}

#[test]
fn oversized_messages_and_unknown_queues_are_typed_errors_that_change_nothing() {
    let (mut queues, mut revisions) = (Queues::default(), Revisions(0));
    queues
        .create("q", QueueOptions { max_message_bytes: 4, ..QueueOptions::default() }, "alice", &Limits::default())
        .unwrap();
    let mut touched = Vec::new();
    let error = queues
        .put(
            "q",
            &[message("ok"), message("too long")],
            0,
            &mut revisions.next(),
            &mut touched,
            "alice",
            &Limits::default(),
        )
        .unwrap_err();
    assert!(matches!(error, ServerError::Queue(QueueRefusal::MessageTooLarge { bytes: 8, max: 4, .. })));
    assert_eq!(queues.stats("q", 0).unwrap().depth, 0, "all or nothing");
    let error = queues.ack("nope", 1, &[1]).unwrap_err();
    assert!(matches!(error, ServerError::Queue(QueueRefusal::NoSuchQueue { .. })), "{error:?}");
    assert_eq!(queues.delete("q", &mut touched).unwrap(), 0);
    assert!(queues.stats("q", 0).is_none());
    queues.check_invariants();
}

#[test]
fn a_bound_delivery_is_settled_by_its_session_only_and_tags_are_keyed_by_its_secret() {
    let (mut queues, mut revisions) = (Queues::default(), Revisions(0));
    put(&mut queues, &mut revisions, "q", &["a", "b"], 0);
    let mine = get(&mut queues, &mut revisions, (1, 1), 1, 10);
    let tag = mine[0].tag;
    assert!(tag < 1 << 53, "tags stay exact in JavaScript numbers: {tag}");
    assert!(tag > 1_000, "a tag is not a small revision anyone could count to: {tag}");
    let mut touched = Vec::new();
    // Another session that learned the tag can neither ack, nack nor extend the delivery.
    assert_eq!(queues.ack("q", 2, &[tag]).unwrap(), [tag], "someone else's ack is refused");
    assert_eq!(queues.nack("q", 2, &[tag], 20, &mut revisions.next(), &mut touched).unwrap(), [tag]);
    let error = queues.extend("q", 2, tag, 5_000, 20).unwrap_err();
    assert!(matches!(error, ServerError::Queue(QueueRefusal::StaleTag { .. })), "{error:?}");
    assert_eq!(queues.stats("q", 20).unwrap().in_flight, 1, "the delivery is untouched");
    assert_eq!(queues.ack("q", 1, &[tag]).unwrap(), Vec::<u64>::new(), "its own session acks it");
    // The same revision under another session's secret gives another tag.
    let mut same = Queues::default();
    put(&mut same, &mut Revisions(0), "q", &["a"], 0);
    let other = get(&mut same, &mut Revisions(2), (2, 1), 1, 10);
    assert_ne!(other[0].tag, tag, "tags are keyed by the consumer's secret");
    queues.check_invariants();
}

#[test]
fn waiting_gets_are_capped_per_queue_and_expire_by_their_own_deadlines() {
    let (mut queues, mut revisions) = (Queues::default(), Revisions(0));
    // Waits with deadlines in reverse order of arrival: the index, not the queue order, decides.
    for session in 1..=QUEUE_WAITERS_MAX as u64 {
        let wait_ms = 10_000 - session;
        let outcome = queues
            .get(
                "q",
                (session, 1),
                key(session),
                1,
                None,
                wait_ms,
                false,
                0,
                &mut revisions.next(),
                "alice",
                &Limits::default(),
            )
            .unwrap();
        assert!(matches!(outcome, GetOutcome::Waiting));
    }
    let refused = queues.get(
        "q",
        (99_999, 1),
        key(9),
        1,
        None,
        1_000,
        false,
        0,
        &mut revisions.next(),
        "alice",
        &Limits::default(),
    );
    assert!(
        matches!(&refused, Err(ServerError::Queue(QueueRefusal::Full { queue, .. })) if queue == "q"),
        "{refused:?}"
    );
    // A get that does not wait still answers (nothing ready).
    assert!(matches!(get(&mut queues, &mut revisions, (99_999, 2), 1, 0).as_slice(), []));
    let earliest = 10_000 - QUEUE_WAITERS_MAX as u64;
    assert_eq!(queues.next_deadline_ms(), Some(earliest));
    let mut touched = Vec::new();
    queues.expire(earliest + 2, &mut revisions.next(), &mut touched);
    touched.sort_unstable();
    let last = QUEUE_WAITERS_MAX as u64;
    assert_eq!(touched, [last - 1, last], "the two waits that ended, the last two to arrive");
    assert_eq!(queues.stats("q", 0).unwrap().waiting_consumers, QUEUE_WAITERS_MAX as u64 - 2);
    queues.check_invariants();
}

#[test]
fn a_session_end_visits_the_queues_it_used_and_no_others() {
    let (mut queues, mut revisions) = (Queues::default(), Revisions(0));
    for name in ["a", "b", "c"] {
        put(&mut queues, &mut revisions, name, &["m"], 0);
    }
    let mut got = |queues: &mut Queues, name: &str, session: u64| {
        queues
            .get(
                name,
                (session, 1),
                key(session),
                1,
                Some(1_000),
                0,
                false,
                0,
                &mut revisions.next(),
                "alice",
                &Limits::default(),
            )
            .unwrap()
    };
    got(&mut queues, "a", 1);
    got(&mut queues, "c", 2);
    queues.check_invariants();
    let mut touched = Vec::new();
    queues.release_session(1, 5, &mut Revisions(100).next(), &mut touched);
    let depth = |queues: &Queues, name: &str| queues.stats(name, 5).unwrap().depth;
    assert_eq!((depth(&queues, "a"), depth(&queues, "b"), depth(&queues, "c")), (1, 1, 0));
    assert!(!queues.session_queues.iter().any(|(session, _)| *session == 1), "the ended session is unindexed");
    queues.check_invariants();
}

#[test]
fn a_second_waiting_get_with_the_same_request_id_is_refused_not_a_crash() {
    // Found by the random entries (seed 1083): the second waiting get of one consumer broke the
    // waiter index (a debug assertion: every replica would have crashed on it).
    let mut queues = Queues::default();
    let mut revisions = Revisions(0);
    let consumer = (3, 3);
    let wait = |queues: &mut Queues, revisions: &mut Revisions| {
        queues.get(
            "q",
            consumer,
            key(3),
            1,
            None,
            5_000,
            false,
            1_000,
            &mut revisions.next(),
            "alice",
            &Limits::default(),
        )
    };
    assert_eq!(wait(&mut queues, &mut revisions).unwrap(), GetOutcome::Waiting);
    let refused = wait(&mut queues, &mut revisions);
    assert!(
        matches!(&refused, Err(ServerError::InvalidArgument { reason }) if reason.contains("already waits")),
        "{refused:?}"
    );
    queues.check_invariants();
    // The first get is served when a message arrives.
    put(&mut queues, &mut revisions, "q", &["m"], 1_001);
    queues.check_invariants();
}

/// A put of `bodies` into `name` as `identity` under `limits`.
fn put_as(
    queues: &mut Queues,
    revisions: &mut Revisions,
    name: &str,
    bodies: &[&str],
    identity: &str,
    limits: &Limits,
) -> Result<Vec<PutOutcome>, ServerError> {
    let messages: Vec<PutMessage> = bodies.iter().map(|b| message(b)).collect();
    queues.put(name, &messages, 1_000, &mut revisions.next(), &mut Vec::new(), identity, limits)
}

fn refused_by(result: Result<impl std::fmt::Debug, ServerError>, limit: &str) {
    assert!(
        matches!(&result, Err(ServerError::Queue(QueueRefusal::Full { what, .. })) if what == limit),
        "expected {limit}: {result:?}"
    );
}

/// One message of `name` for `consumer` as `identity`, delivered with a 10 ms visibility.
fn got(
    queues: &mut Queues,
    revisions: &mut Revisions,
    name: &str,
    consumer: Consumer,
    identity: &str,
    limits: &Limits,
) -> Vec<QueueDelivery> {
    let next = &mut revisions.next();
    match queues.get(name, consumer, key(consumer.0), 1, Some(10), 0, false, 1_000, next, identity, limits).unwrap() {
        GetOutcome::Delivered(deliveries) => deliveries,
        GetOutcome::Waiting => panic!("a get without wait never waits"),
    }
}

#[test]
fn one_identity_cannot_take_every_queue() {
    let limits = Limits { queues_per_identity: 2, ..Limits::default() };
    let mut queues = Queues::default();
    for name in ["a1", "a2"] {
        queues.create(name, QueueOptions::default(), "alice", &limits).unwrap();
    }
    refused_by(queues.create("a3", QueueOptions::default(), "alice", &limits), "QUEUES_PER_IDENTITY_MAX");
    // A put or a get would create it for alice too, and is refused alike.
    let mut revisions = Revisions(0);
    refused_by(put_as(&mut queues, &mut revisions, "a3", &["m"], "alice", &limits), "QUEUES_PER_IDENTITY_MAX");
    // Another identity is not affected, and may use alice's queues (they stay alice's).
    queues.create("b1", QueueOptions::default(), "bob", &limits).unwrap();
    put_as(&mut queues, &mut revisions, "a1", &["from bob"], "bob", &limits).unwrap();
    assert_eq!(queues.usage("alice"), Usage { queues: 2, bytes: 8, waiting: 0 });
    assert_eq!(queues.usage("bob"), Usage { queues: 1, bytes: 0, waiting: 0 });
    // Deleting one makes room.
    queues.delete("a2", &mut Vec::new()).unwrap();
    queues.create("a3", QueueOptions::default(), "alice", &limits).unwrap();
    queues.check_invariants();
}

#[test]
fn a_stuck_queue_fills_its_owners_quota_not_the_cluster() {
    // Alice's queue has no consumer; its producer goes on until alice's quota is reached.
    let limits = Limits { queued_bytes_per_identity: 10, queued_bytes: 100, ..Limits::default() };
    let (mut queues, mut revisions) = (Queues::default(), Revisions(0));
    queues.create("stuck", QueueOptions { max_attempts: 1, ..QueueOptions::default() }, "alice", &limits).unwrap();
    queues.create("busy", QueueOptions::default(), "bob", &limits).unwrap();
    put_as(&mut queues, &mut revisions, "stuck", &["12345", "12345"], "alice", &limits).unwrap();
    refused_by(put_as(&mut queues, &mut revisions, "stuck", &["1"], "carol", &limits), "QUEUED_BYTES_PER_IDENTITY_MAX");
    // Bob's queue still takes puts.
    put_as(&mut queues, &mut revisions, "busy", &["12345"], "bob", &limits).unwrap();
    // A message dead-lettered stays alice's (the dead-letter queue is hers), and an ack frees room.
    let consumer = (7, 1);
    let first = got(&mut queues, &mut revisions, "stuck", consumer, "alice", &limits);
    queues.nack("stuck", consumer.0, &[first[0].tag], 1_001, &mut revisions.next(), &mut Vec::new()).unwrap();
    assert_eq!(queues.usage("alice"), Usage { queues: 2, bytes: 10, waiting: 0 }, "the dead-letter queue is alice's");
    let second = got(&mut queues, &mut revisions, "stuck", consumer, "alice", &limits);
    assert_eq!(queues.ack("stuck", consumer.0, &[second[0].tag]).unwrap(), Vec::<u64>::new());
    assert_eq!(queues.usage("alice"), Usage { queues: 2, bytes: 5, waiting: 0 });
    put_as(&mut queues, &mut revisions, "stuck", &["12345"], "alice", &limits).unwrap();
    queues.check_invariants();
}

#[test]
fn dead_letters_stay_charged_to_the_owner_of_the_queue_they_failed_in() {
    let limits = Limits { queued_bytes_per_identity: 10, ..Limits::default() };
    let (mut queues, mut revisions) = (Queues::default(), Revisions(0));
    // A monitor polls the dead-letter queue before the queue exists: it makes it, for itself.
    queues.get("orders.dlq", (9, 1), key(9), 1, None, 0, false, 1_000, &mut revisions.next(), "ops", &limits).unwrap();
    assert_eq!(queues.usage("ops"), Usage { queues: 1, bytes: 0, waiting: 0 });
    queues.create("orders", QueueOptions { max_attempts: 1, ..QueueOptions::default() }, "alice", &limits).unwrap();
    put_as(&mut queues, &mut revisions, "orders", &["12345", "12345"], "alice", &limits).unwrap();
    let consumer = (7, 1);
    let first = got(&mut queues, &mut revisions, "orders", consumer, "alice", &limits);
    queues.nack("orders", consumer.0, &[first[0].tag], 1_001, &mut revisions.next(), &mut Vec::new()).unwrap();
    // The dead-letter queue passed to alice with the message: her quota still counts it, so
    // dead-lettering cannot free room for her.
    assert_eq!(queues.usage("alice"), Usage { queues: 2, bytes: 10, waiting: 0 });
    assert_eq!(queues.usage("ops"), Usage::default());
    refused_by(
        put_as(&mut queues, &mut revisions, "orders", &["1"], "alice", &limits),
        "QUEUED_BYTES_PER_IDENTITY_MAX",
    );
    queues.check_invariants();
}

#[test]
fn a_refused_put_creates_no_queue() {
    let limits = Limits { queues_per_identity: 1, ..Limits::default() };
    let (mut queues, mut revisions) = (Queues::default(), Revisions(0));
    let too_large = "x".repeat(QueueOptions::default().max_message_bytes as usize + 1);
    let refused = put_as(&mut queues, &mut revisions, "new", &[&too_large], "alice", &limits);
    assert!(matches!(refused, Err(ServerError::Queue(QueueRefusal::MessageTooLarge { .. }))), "{refused:?}");
    assert!(queues.is_empty(), "no queue was made, and alice's quota is untouched");
    put_as(&mut queues, &mut revisions, "other", &["m"], "alice", &limits).unwrap();
    queues.check_invariants();
}

#[test]
fn one_identity_cannot_keep_every_get_waiting() {
    let limits = Limits { queue_waiters_per_identity: 2, ..Limits::default() };
    let (mut queues, mut revisions) = (Queues::default(), Revisions(0));
    let wait = |queues: &mut Queues, revisions: &mut Revisions, queue: &str, consumer: Consumer, identity: &str| {
        let next = &mut revisions.next();
        queues.get(queue, consumer, key(consumer.0), 1, None, 60_000, false, 1_000, next, identity, &limits)
    };
    // Two waiting gets of alice, on two queues, from two sessions: her quota.
    assert_eq!(wait(&mut queues, &mut revisions, "q1", (1, 1), "alice").unwrap(), GetOutcome::Waiting);
    assert_eq!(wait(&mut queues, &mut revisions, "q2", (2, 1), "alice").unwrap(), GetOutcome::Waiting);
    refused_by(wait(&mut queues, &mut revisions, "q1", (1, 2), "alice"), "QUEUE_WAITERS_PER_IDENTITY_MAX");
    // Bob still waits; a get that does not wait is not counted.
    assert_eq!(wait(&mut queues, &mut revisions, "q1", (3, 1), "bob").unwrap(), GetOutcome::Waiting);
    assert_eq!(queues.usage("alice").waiting, 2);
    // A put serves the oldest waiting get on q1 (alice's): her quota has room again.
    put_as(&mut queues, &mut revisions, "q1", &["m"], "bob", &limits).unwrap();
    assert_eq!(queues.usage("alice").waiting, 1);
    assert_eq!(wait(&mut queues, &mut revisions, "q1", (1, 3), "alice").unwrap(), GetOutcome::Waiting);
    // Cancelled, timed out, a session's end, a deleted queue: each gives its room back.
    queues.cancel("q1", (1, 3), 1_001, &mut revisions.next(), &mut Vec::new());
    queues.expire(70_000, &mut revisions.next(), &mut Vec::new());
    assert_eq!(queues.usage("alice").waiting, 0);
    assert_eq!(queues.usage("bob").waiting, 0);
    assert_eq!(wait(&mut queues, &mut revisions, "q2", (2, 2), "alice").unwrap(), GetOutcome::Waiting);
    queues.release_session(2, 70_001, &mut revisions.next(), &mut Vec::new());
    assert_eq!(wait(&mut queues, &mut revisions, "q2", (4, 1), "alice").unwrap(), GetOutcome::Waiting);
    queues.delete("q2", &mut Vec::new()).unwrap();
    assert_eq!(
        queues.usage("alice"),
        Usage { queues: 1, bytes: 1, waiting: 0 },
        "q1 holds the message delivered to her"
    );
    queues.check_invariants();
}
