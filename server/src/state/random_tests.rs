//! Random sequences of log entries against the state machine (fuzzing without a fuzzer, on
//! stable): every kind of operation, with names drawn from a small set so that they collide,
//! sequence numbers now and then repeated or stale, secrets now and then wrong, time jumping,
//! terms changing, limits lowered. After every entry the whole state's invariants hold; two
//! machines fed the same entries are equal, and a machine survives a snapshot round trip
//! unchanged. A failure names its seed and entry, so `random_state_machine_seed(S)` replays it.
//!
//! The seeds are the corpus: each ran clean when committed; a crash found becomes a focused test
//! beside the primitive's own. `DISTSYNC_RANDOM_SEEDS=N` runs N seeds instead of [`SEEDS`] (a
//! longer search on a developer's machine: `DISTSYNC_RANDOM_SEEDS=2000 cargo test -p
//! distsync-server --lib random_entries`).

use distsync::wire::{
    AclTarget, AdminCommand, Command, CommandResponse, LockMode, LockWait, Permission, PutMessage, QueueOptions,
    Resource, ResourceKind, SessionSecret, WriteRequest, ADMIN_IDENTITY,
};
use distsync::SessionId;

use super::limits::Limits;
use super::{LogCommand, Op, Response, StateMachine};

/// Seeds run on every `cargo test`: 150,000 entries, a few seconds.
const SEEDS: u64 = 100;
/// Entries per seed.
const ENTRIES: u64 = 1_500;

/// SplitMix64: small, fast, and the same on every platform.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound`.
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        (!items.is_empty()).then(|| &items[self.below(items.len() as u64) as usize])
    }
}

/// A session the generator opened, with what it needs to write under it.
struct Known {
    session: SessionId,
    identity: &'static str,
    secret: SessionSecret,
    next_seq: u64,
}

/// What the generator has seen: sessions to write under, tags to ack, lock tokens.
#[derive(Default)]
struct Seen {
    sessions: Vec<Known>,
    tags: Vec<(String, u64)>,
    revisions: Vec<u64>,
}

const IDENTITIES: [&str; 3] = [ADMIN_IDENTITY, "alice", "bob"];

fn name(random: &mut Random, kind: &str) -> String {
    // Now and then a dead-letter queue's name: they are made, owned and read like others too.
    let suffix = if kind == "queue" && random.chance(15) { distsync::wire::DEAD_LETTER_SUFFIX } else { "" };
    format!("{kind}{}{suffix}", random.below(4))
}

fn key(random: &mut Random) -> Vec<u8> {
    format!("k{}", random.below(6)).into_bytes()
}

fn body(random: &mut Random) -> Vec<u8> {
    vec![random.below(256) as u8; random.below(64) as usize]
}

fn wait(random: &mut Random) -> LockWait {
    match random.below(3) {
        0 => LockWait::Try,
        1 => LockWait::TimeoutMs(random.below(5_000)),
        _ => LockWait::Forever,
    }
}

fn command(random: &mut Random, seen: &Seen) -> Command {
    let actor = random.below(3);
    match random.below(17) {
        0 => Command::KvPut { key: key(random), value: body(random) },
        1 => Command::KvDelete { key: key(random) },
        2 => Command::CloseSession,
        3 | 4 => Command::LockAcquire {
            name: name(random, "lock"),
            actor,
            mode: if random.chance(50) { LockMode::Exclusive } else { LockMode::Shared },
            wait: wait(random),
        },
        5 => Command::LockUpgrade { name: name(random, "lock"), actor, wait: wait(random) },
        6 => Command::LockRelease {
            name: name(random, "lock"),
            actor,
            token: random.pick(&seen.revisions).copied().unwrap_or(1),
        },
        7 => Command::LockCancel {
            name: name(random, "lock"),
            actor,
            queued_revision: random.pick(&seen.revisions).copied().unwrap_or(1),
            upgrade: random.chance(20),
        },
        8 => Command::QueueCreate {
            queue: name(random, "queue"),
            options: QueueOptions {
                max_attempts: random.below(4) as u32,
                visibility_ms: 100 + random.below(3_000),
                ..QueueOptions::default()
            },
        },
        9 => Command::QueueDelete { queue: name(random, "queue") },
        10 | 11 => Command::QueuePut {
            queue: name(random, "queue"),
            messages: (0..1 + random.below(3))
                .map(|_| PutMessage {
                    body: body(random),
                    dedup_id: random.chance(30).then(|| format!("d{}", random.below(5))),
                })
                .collect(),
        },
        12 => Command::QueueGet {
            queue: name(random, "queue"),
            request: random.below(4),
            max: 1 + random.below(3) as u32,
            visibility_ms: random.chance(50).then(|| 100 + random.below(3_000)),
            wait_ms: if random.chance(50) { 0 } else { random.below(4_000) },
            detach: random.chance(30),
        },
        13 | 14 => {
            let (queue, tag) = random.pick(&seen.tags).cloned().unwrap_or_else(|| (name(random, "queue"), 7));
            match random.below(3) {
                0 => Command::QueueAck { queue, tags: vec![tag] },
                1 => Command::QueueNack { queue, tags: vec![tag] },
                _ => Command::QueueExtend { queue, tag, visibility_ms: 100 + random.below(3_000) },
            }
        }
        15 => Command::CacheSet {
            key: key(random),
            value: body(random),
            ttl_ms: random.chance(50).then(|| 1 + random.below(5_000)),
        },
        _ => {
            if random.chance(50) {
                Command::CacheDelete { key: key(random) }
            } else {
                Command::QueueCancel { queue: name(random, "queue"), request: random.below(4) }
            }
        }
    }
}

fn op(random: &mut Random, seen: &mut Seen, machine: &StateMachine) -> Op {
    match random.below(20) {
        0 | 1 => {
            let mut secret = [0u8; 16];
            secret[..8].copy_from_slice(&random.next().to_le_bytes());
            let ttl_ms = if random.chance(5) { 10 } else { 1_000 + random.below(20_000) };
            let identity = (*random.pick(&IDENTITIES).expect("identities")).to_string();
            Op::OpenSession { ttl_ms, identity, secret: SessionSecret(secret) }
        }
        2 => match random.pick(&seen.sessions) {
            Some(known) => Op::KeepAlive {
                session: known.session,
                identity: known.identity.into(),
                secret: if random.chance(10) { SessionSecret::default() } else { known.secret },
            },
            None => Op::Tick,
        },
        3 => Op::Tick,
        4 => Op::SetLimits {
            limits: Limits {
                kv_keys: 1 + random.below(8),
                queues: 1 + random.below(6),
                queues_per_identity: 1 + random.below(4),
                queued_bytes: 1 + random.below(400),
                queued_bytes_per_identity: 1 + random.below(200),
                locks: 1 + random.below(6),
                waiters_per_lock: 1 + random.below(3),
                queue_waiters: 1 + random.below(3),
                queue_waiters_per_identity: 1 + random.below(4),
                cache_keys: 1 + random.below(8),
                ..Limits::default()
            },
        },
        5 => Op::SetLimits { limits: Limits::default() },
        6 => {
            let written = machine
                .cache
                .pending_write_backs(4)
                .into_iter()
                .map(|write| (write.key.to_vec(), if random.chance(20) { write.version + 1 } else { write.version }))
                .collect();
            Op::CacheWrittenBack { written }
        }
        7 => {
            let identity = random.pick(&IDENTITIES[1..]).expect("identities").to_string();
            let resource = Resource { kind: ResourceKind::Queue, prefix: b"queue".to_vec() };
            let command = match random.below(3) {
                0 => AdminCommand::Grant {
                    identity,
                    target: AclTarget::Resource(resource),
                    permission: Permission::Write,
                },
                1 => AdminCommand::Revoke { identity, target: AclTarget::Resource(resource) },
                _ => AdminCommand::SetEnabled { identity, enabled: random.chance(70) },
            };
            Op::Admin { identity: ADMIN_IDENTITY.into(), command }
        }
        _ => {
            let command = command(random, seen);
            let Some(index) = (!seen.sessions.is_empty()).then(|| random.below(seen.sessions.len() as u64) as usize)
            else {
                return Op::Tick;
            };
            let known = &mut seen.sessions[index];
            // Mostly the next number; sometimes a retry of the last, or one long forgotten.
            let seq = match random.below(10) {
                0 => known.next_seq.saturating_sub(1).max(1),
                1 => 1,
                _ => {
                    known.next_seq += 1;
                    known.next_seq - 1
                }
            };
            let secret = if random.chance(3) { SessionSecret::default() } else { known.secret };
            let write =
                WriteRequest { session: known.session, seq, acked_below: seq.saturating_sub(3), command, secret };
            Op::Write { identity: known.identity.into(), write }
        }
    }
}

/// Learns sessions, tags and revisions from what an entry answered.
fn learn(seen: &mut Seen, ops: &[Op], results: &[super::ApplyResult]) {
    for (op, result) in ops.iter().zip(results) {
        match (op, result) {
            (Op::OpenSession { identity, secret, .. }, Ok(Response::SessionOpened { session, .. }))
                if !seen.sessions.iter().any(|known| known.session == *session) =>
            {
                let identity = IDENTITIES.into_iter().find(|known| known == identity).expect("ours");
                seen.sessions.push(Known { session: *session, identity, secret: *secret, next_seq: 1 });
            }
            (Op::Write { write, .. }, Ok(Response::Written(response))) => {
                let queue = write.command.queue_name().unwrap_or_default().to_string();
                match response {
                    CommandResponse::QueueDelivered { deliveries } => {
                        seen.tags.extend(deliveries.iter().map(|delivery| (queue.clone(), delivery.tag)));
                    }
                    CommandResponse::LockGranted { token } => seen.revisions.push(*token),
                    CommandResponse::LockQueued { revision, .. } => seen.revisions.push(*revision),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    let keep = |items: usize| items.saturating_sub(64);
    seen.tags.drain(..keep(seen.tags.len()));
    seen.revisions.drain(..keep(seen.revisions.len()));
}

/// Runs one seed; panics (naming the seed and entry) on a broken invariant, a divergence, or a
/// snapshot that does not round-trip.
fn random_state_machine_seed(seed: u64) {
    let mut random = Random(seed);
    let mut machine = StateMachine::default();
    let mut twin = StateMachine::default();
    let mut seen = Seen::default();
    let (mut time_ms, mut term) = (1_000_000, 1);
    for index in 1..=ENTRIES {
        time_ms += match random.below(20) {
            0 => random.below(60_000),
            1 => 0,
            _ => random.below(400),
        };
        if random.chance(2) {
            term += 1;
        }
        let ops: Vec<Op> = (0..1 + random.below(4)).map(|_| op(&mut random, &mut seen, &machine)).collect();
        let command = LogCommand { time_ms, grace_ms: 600, ops };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let results = machine.apply(index, term, &command);
            machine.check_invariants();
            results
        }));
        let results = outcome.unwrap_or_else(|panic| {
            panic!("seed {seed}, entry {index} ({command:?}): {}", describe(&panic));
        });
        assert_eq!(results.len(), command.ops.len(), "seed {seed}, entry {index}: one result per operation");
        assert_eq!(twin.apply(index, term, &command), results, "seed {seed}, entry {index}: replicas diverged");
        // What the node takes after each apply (not replicated state).
        assert_eq!(machine.take_touched_sessions(), twin.take_touched_sessions(), "seed {seed}, entry {index}");
        assert_eq!(machine.take_cache_changes(), twin.take_cache_changes(), "seed {seed}, entry {index}");
        learn(&mut seen, &command.ops, &results);
        if index % 250 == 0 {
            let bytes = postcard::to_stdvec(&machine).expect("the state serializes");
            let restored: StateMachine = postcard::from_bytes(&bytes).expect("the state deserializes");
            assert_eq!(restored, machine, "seed {seed}, entry {index}: a snapshot changed the state");
        }
    }
    assert_eq!(twin, machine, "seed {seed}: replicas diverged");
}

fn describe(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic".into())
}

#[test]
fn random_entries_keep_every_invariant_and_replicas_equal() {
    let seeds: u64 = std::env::var("DISTSYNC_RANDOM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(SEEDS);
    for seed in 0..seeds {
        random_state_machine_seed(seed);
    }
}
