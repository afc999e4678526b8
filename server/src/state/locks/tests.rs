//! Table-driven scenarios of [`Locks`]: modes, fairness, tokens, expiry, deadlocks, limits.

use super::*;

const A: Owner = Owner { session: 1, actor: 1 };
const B: Owner = Owner { session: 2, actor: 1 };
const C: Owner = Owner { session: 3, actor: 1 };
/// Another actor of A's session.
const A2: Owner = Owner { session: 1, actor: 2 };

/// Locks with a token counter, checking invariants after every step.
struct Bench {
    locks: Locks,
    revision: u64,
    events: Vec<LockEvent>,
}

impl Bench {
    fn new() -> Self {
        Self { locks: Locks::default(), revision: 100, events: Vec::new() }
    }

    fn acquire(&mut self, owner: Owner, name: &str, mode: Mode, wait: Wait) -> Result<AcquireOutcome, ServerError> {
        let revision = &mut self.revision;
        let result = self.locks.acquire(
            owner,
            name,
            mode,
            wait,
            0,
            &mut || {
                *revision += 1;
                *revision
            },
            &Limits::default(),
        );
        self.locks.check_invariants();
        result
    }

    fn granted(&mut self, owner: Owner, name: &str, mode: Mode) -> u64 {
        match self.acquire(owner, name, mode, Wait::No) {
            Ok(AcquireOutcome::Granted { token }) => token,
            other => panic!("{owner:?} acquiring {name:?}: {other:?}"),
        }
    }

    fn upgrade(&mut self, owner: Owner, name: &str, wait: Wait) -> Result<AcquireOutcome, ServerError> {
        let revision = &mut self.revision;
        let result = self.locks.upgrade(
            owner,
            name,
            wait,
            0,
            &mut || {
                *revision += 1;
                *revision
            },
            &Limits::default(),
        );
        self.locks.check_invariants();
        result
    }

    fn release(&mut self, owner: Owner, name: &str, token: u64) -> Result<(), ServerError> {
        let revision = &mut self.revision;
        let result = self.locks.release(
            owner,
            name,
            token,
            0,
            &mut || {
                *revision += 1;
                *revision
            },
            &mut self.events,
        );
        self.locks.check_invariants();
        result
    }

    fn expire_session(&mut self, session: SessionId) {
        let revision = &mut self.revision;
        self.locks.release_session(
            session,
            0,
            &mut || {
                *revision += 1;
                *revision
            },
            &mut self.events,
        );
        self.locks.check_invariants();
    }

    fn expire_waits(&mut self, now_ms: u64) {
        let revision = &mut self.revision;
        self.locks.expire_waits(
            now_ms,
            &mut || {
                *revision += 1;
                *revision
            },
            &mut self.events,
        );
        self.locks.check_invariants();
    }

    fn holders(&self, name: &str) -> Vec<(Owner, Mode)> {
        self.locks.get(name).map(|l| l.holders.iter().map(|h| (h.owner, h.mode)).collect()).unwrap_or_default()
    }

    fn take_events(&mut self) -> Vec<LockEvent> {
        std::mem::take(&mut self.events)
    }
}

#[test]
fn exclusive_excludes_and_shared_share() {
    let mut bench = Bench::new();
    bench.granted(A, "x", Mode::Exclusive);
    assert_eq!(
        bench.acquire(B, "x", Mode::Exclusive, Wait::No),
        Err(ServerError::Lock(LockRefusal::WouldBlock { name: "x".into() }))
    );
    assert_eq!(
        bench.acquire(B, "x", Mode::Shared, Wait::No),
        Err(ServerError::Lock(LockRefusal::WouldBlock { name: "x".into() }))
    );
    bench.granted(A, "s", Mode::Shared);
    bench.granted(B, "s", Mode::Shared);
    bench.granted(A2, "s", Mode::Shared);
    assert_eq!(bench.holders("s").len(), 3);
    assert_eq!(
        bench.acquire(C, "s", Mode::Exclusive, Wait::No),
        Err(ServerError::Lock(LockRefusal::WouldBlock { name: "s".into() }))
    );
    assert_eq!(
        bench.acquire(A, "x", Mode::Exclusive, Wait::Forever),
        Err(ServerError::Lock(LockRefusal::AlreadyHeld { name: "x".into() }))
    );
}

#[test]
fn actors_of_one_session_exclude_each_other() {
    let mut bench = Bench::new();
    bench.granted(A, "x", Mode::Exclusive);
    assert_eq!(
        bench.acquire(A2, "x", Mode::Exclusive, Wait::No),
        Err(ServerError::Lock(LockRefusal::WouldBlock { name: "x".into() }))
    );
}

#[test]
fn waiters_are_served_in_order_and_writers_do_not_starve() {
    let mut bench = Bench::new();
    let first = bench.granted(A, "x", Mode::Shared);
    assert_eq!(bench.acquire(B, "x", Mode::Exclusive, Wait::Forever), Ok(AcquireOutcome::Queued { ahead: 0 }));
    // Shared is compatible with the holder, but waits behind the exclusive waiter.
    assert_eq!(bench.acquire(C, "x", Mode::Shared, Wait::Forever), Ok(AcquireOutcome::Queued { ahead: 1 }));
    bench.release(A, "x", first).unwrap();
    let events = bench.take_events();
    let [LockEvent::Granted { owner, token: second, .. }] = events.as_slice() else { panic!("{events:?}") };
    assert_eq!(*owner, B);
    assert!(*second > first, "tokens increase");
    assert_eq!(bench.holders("x"), vec![(B, Mode::Exclusive)]);
    bench.release(B, "x", *second).unwrap();
    let events = bench.take_events();
    let [LockEvent::Granted { owner, token: third, .. }] = events.as_slice() else { panic!("{events:?}") };
    assert_eq!((*owner, *third > *second), (C, true));
    assert!(bench.locks.get("x").is_some());
}

#[test]
fn consecutive_shared_waiters_are_granted_together() {
    let mut bench = Bench::new();
    let token = bench.granted(A, "x", Mode::Exclusive);
    bench.acquire(B, "x", Mode::Shared, Wait::Forever).unwrap();
    bench.acquire(C, "x", Mode::Shared, Wait::Forever).unwrap();
    bench.acquire(A2, "x", Mode::Exclusive, Wait::Forever).unwrap();
    bench.release(A, "x", token).unwrap();
    assert_eq!(bench.holders("x"), vec![(B, Mode::Shared), (C, Mode::Shared)]);
    let tokens: Vec<u64> = bench
        .take_events()
        .into_iter()
        .map(|e| match e {
            LockEvent::Granted { token, .. } => token,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(tokens[0] < tokens[1], "even shared holders granted together get distinct, increasing tokens");
}

#[test]
fn a_stale_release_never_frees_a_newer_hold() {
    let mut bench = Bench::new();
    let old = bench.granted(A, "x", Mode::Exclusive);
    bench.release(A, "x", old).unwrap();
    let new = bench.granted(A, "x", Mode::Exclusive);
    assert_eq!(
        bench.release(A, "x", old),
        Err(ServerError::Lock(LockRefusal::NotHeld { name: "x".into(), token: old }))
    );
    assert_eq!(bench.holders("x"), vec![(A, Mode::Exclusive)]);
    bench.release(A, "x", new).unwrap();
    assert!(bench.locks.is_empty(), "unused locks are forgotten");
}

#[test]
fn an_expired_session_loses_its_holds_and_waits() {
    let mut bench = Bench::new();
    let token = bench.granted(A, "x", Mode::Exclusive);
    bench.granted(A2, "y", Mode::Exclusive);
    bench.acquire(A, "z", Mode::Exclusive, Wait::Forever).ok();
    bench.acquire(B, "x", Mode::Exclusive, Wait::Forever).unwrap();
    bench.expire_session(A.session);
    let events = bench.take_events();
    assert!(events.contains(&LockEvent::Lost { name: "x".into(), owner: A, token }));
    assert!(events.iter().any(|e| matches!(e, LockEvent::Lost { name, owner, .. } if name == "y" && *owner == A2)));
    assert!(events.iter().any(|e| matches!(e, LockEvent::Granted { name, owner, .. } if name == "x" && *owner == B)));
    assert_eq!(bench.holders("x"), vec![(B, Mode::Exclusive)]);
    assert!(bench.locks.get("y").is_none() && bench.locks.get("z").is_none());
}

#[test]
fn a_wait_ends_at_its_deadline_and_unblocks_those_behind() {
    let mut bench = Bench::new();
    bench.granted(A, "x", Mode::Shared);
    bench.acquire(B, "x", Mode::Exclusive, Wait::Until { deadline_ms: 1_000 }).unwrap();
    bench.acquire(C, "x", Mode::Shared, Wait::Forever).unwrap();
    bench.expire_waits(1_000);
    assert!(bench.take_events().is_empty(), "the deadline itself is not past yet");
    bench.expire_waits(1_001);
    let events = bench.take_events();
    assert_eq!(events[0], LockEvent::TimedOut { name: "x".into(), owner: B });
    assert!(matches!(&events[1], LockEvent::Granted { owner, .. } if *owner == C), "{events:?}");
    assert_eq!(bench.holders("x"), vec![(A, Mode::Shared), (C, Mode::Shared)]);
}

#[test]
fn a_wait_that_closes_a_cycle_fails_with_the_cycle_and_changes_nothing() {
    let mut bench = Bench::new();
    bench.granted(A, "l1", Mode::Exclusive);
    bench.granted(B, "l2", Mode::Exclusive);
    bench.acquire(A, "l2", Mode::Exclusive, Wait::Forever).unwrap();
    let before = bench.locks.clone();
    let deadlock = bench.acquire(B, "l1", Mode::Exclusive, Wait::Forever);
    assert_eq!(
        deadlock,
        Err(ServerError::Lock(LockRefusal::Deadlock {
            name: "l1".into(),
            cycle: vec![(B, "l1".into()), (A, "l2".into())]
        }))
    );
    assert_eq!(bench.locks, before, "a refused wait leaves no trace");
    assert!(deadlock.unwrap_err().to_string().contains("session 2 actor 0x1 waits on \"l1\""));
}

#[test]
fn deadlocks_between_actors_of_one_session_and_through_queues_are_found() {
    let mut bench = Bench::new();
    // A holds l1 shared; C waits for l1 exclusive. A2 holds l2 and asks for l1 shared: that is
    // compatible with A's hold, but fairness queues A2 behind C, so A2 waits on C only. If A
    // then waits for l2, the only cycle runs through the queue: A -> A2 -> C -> A, two of
    // its owners being actors of one session.
    bench.granted(A, "l1", Mode::Shared);
    bench.acquire(C, "l1", Mode::Exclusive, Wait::Forever).unwrap();
    bench.granted(A2, "l2", Mode::Exclusive);
    bench.acquire(A2, "l1", Mode::Shared, Wait::Forever).unwrap();
    let result = bench.acquire(A, "l2", Mode::Exclusive, Wait::Forever);
    let Err(ServerError::Lock(LockRefusal::Deadlock { cycle, .. })) = result else { panic!("{result:?}") };
    assert_eq!(cycle, vec![(A, "l2".to_string()), (A2, "l1".to_string()), (C, "l1".to_string())]);
}

#[test]
fn upgrades_wait_for_other_readers_and_two_upgrades_deadlock() {
    let mut bench = Bench::new();
    let solo = bench.granted(A, "only", Mode::Shared);
    let Ok(AcquireOutcome::Granted { token }) = bench.upgrade(A, "only", Wait::No) else { panic!() };
    assert!(token > solo);
    assert_eq!(bench.holders("only"), vec![(A, Mode::Exclusive)]);

    bench.granted(A, "x", Mode::Shared);
    let b_token = bench.granted(B, "x", Mode::Shared);
    bench.acquire(C, "x", Mode::Exclusive, Wait::Forever).unwrap();
    assert_eq!(bench.upgrade(A, "x", Wait::Forever), Ok(AcquireOutcome::Queued { ahead: 0 }), "ahead of C");
    let result = bench.upgrade(B, "x", Wait::Forever);
    assert!(matches!(result, Err(ServerError::Lock(LockRefusal::Deadlock { .. }))), "{result:?}");
    bench.release(B, "x", b_token).unwrap();
    let events = bench.take_events();
    assert!(matches!(&events[..], [LockEvent::Granted { owner, upgrade: true, .. }] if *owner == A), "{events:?}");
    assert_eq!(bench.holders("x"), vec![(A, Mode::Exclusive)]);
    assert_eq!(bench.upgrade(C, "x", Wait::No), Err(ServerError::Lock(LockRefusal::NotShared { name: "x".into() })));
}

#[test]
fn a_three_owner_cycle_is_found_and_a_plain_queue_is_not_a_deadlock() {
    let mut bench = Bench::new();
    bench.granted(A, "l1", Mode::Exclusive);
    bench.granted(B, "l2", Mode::Exclusive);
    bench.granted(C, "l3", Mode::Exclusive);
    bench.acquire(A, "l2", Mode::Exclusive, Wait::Forever).unwrap();
    bench.acquire(B, "l3", Mode::Exclusive, Wait::Forever).unwrap();
    let result = bench.acquire(C, "l1", Mode::Exclusive, Wait::Forever);
    assert_eq!(
        result,
        Err(ServerError::Lock(LockRefusal::Deadlock {
            name: "l1".into(),
            cycle: vec![(C, "l1".into()), (A, "l2".into()), (B, "l3".into())]
        }))
    );

    // Many owners queued on one lock, in every mode, wait; none of them is a deadlock.
    let mut queue = Bench::new();
    queue.granted(A, "q", Mode::Exclusive);
    for session in 10..60 {
        let mode = if session % 3 == 0 { Mode::Exclusive } else { Mode::Shared };
        let owner = Owner { session, actor: 1 };
        let queued = queue.acquire(owner, "q", mode, Wait::Forever);
        assert!(matches!(queued, Ok(AcquireOutcome::Queued { .. })), "{owner:?}: {queued:?}");
    }
}

#[test]
fn limits_are_enforced() {
    let mut bench = Bench::new();
    let long = "n".repeat(LOCK_NAME_BYTES_MAX + 1);
    assert!(matches!(bench.acquire(A, &long, Mode::Exclusive, Wait::No), Err(ServerError::InvalidArgument { .. })));
    assert!(matches!(bench.acquire(A, "", Mode::Exclusive, Wait::No), Err(ServerError::InvalidArgument { .. })));
}
