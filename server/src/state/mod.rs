//! The replicated state machine: pure and deterministic.
//!
//! It reads no clock and does no I/O. Every entry carries the time its leader stamped on it, and
//! every decision that depends on time (session expiry) uses that stamp, so all replicas applying
//! the same log reach the same state. Log indexes serve as session ids and versions.
//!
//! Layout: [`sessions`] (leases and the exactly-once response cache), [`kv`] (the replicated
//! register). Locks, queues and the cache directory join them as siblings.

pub mod kv;
pub mod sessions;

use distsync::wire::{Command, CommandResponse, Query, QueryResponse, Response, WriteRequest};
use distsync::{ServerError, SessionId};
use serde::{Deserialize, Serialize};

use self::kv::KvRegister;
use self::sessions::{Sessions, WriteAdmission};

/// The application payload of a Raft log entry.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LogCommand {
    /// The proposing leader's wall clock, in ms since the Unix epoch.
    pub time_ms: u64,
    /// How long leases are extended when this entry is the first of a new leader's term: the
    /// proposing leader's election timeout, doubled. Carried in the entry so every replica grants
    /// the same grace.
    pub grace_ms: u64,
    /// What to do.
    pub op: Op,
}

/// Operations of the state machine.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Open a session; its id is the entry's log index.
    OpenSession {
        /// Requested TTL.
        ttl_ms: u64,
    },
    /// Renew a session.
    KeepAlive {
        /// The session.
        session: SessionId,
    },
    /// A client command under a session.
    Write(WriteRequest),
    /// Proposed by an idle leader so that time advances and leases expire.
    Tick,
}

/// The result of applying one entry, returned to the proposer.
pub type ApplyResult = Result<Response, ServerError>;

/// All replicated state.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct StateMachine {
    /// Leader-stamped time of the latest entry; never goes backwards.
    now_ms: u64,
    /// Term of the latest stamped entry, to notice leader changes.
    term: u64,
    /// Index of the latest applied entry.
    applied_index: u64,
    sessions: Sessions,
    kv: KvRegister,
}

impl StateMachine {
    /// Applies the entry at `index` written in `term`.
    pub fn apply(&mut self, index: u64, term: u64, command: &LogCommand) -> ApplyResult {
        debug_assert!(index > self.applied_index, "entries are applied once, in order");
        self.applied_index = index;
        // Leaders' clocks differ; keep time monotonic so an old stamp cannot revive anything.
        self.now_ms = self.now_ms.max(command.time_ms);
        if term > self.term {
            if self.term != 0 {
                self.sessions.grant_grace(self.now_ms + command.grace_ms);
            }
            self.term = term;
        }
        let expired = self.sessions.expire(self.now_ms);
        if !expired.is_empty() {
            tracing::debug!(?expired, index, "sessions expired");
        }
        let result = match &command.op {
            Op::OpenSession { ttl_ms } => self
                .sessions
                .open(index, *ttl_ms, self.now_ms)
                .map(|()| Response::SessionOpened { session: index, ttl_ms: *ttl_ms }),
            Op::KeepAlive { session } => self.sessions.keep_alive(*session, self.now_ms).map(|()| Response::KeptAlive),
            Op::Write(write) => self.apply_write(index, write).map(Response::Written),
            Op::Tick => Ok(Response::Done),
        };
        if cfg!(debug_assertions) {
            self.check_touched(&command.op);
        }
        result
    }

    /// The invariants of what `op` touched: cheap enough to run after every apply in debug
    /// builds, where [`StateMachine::check_invariants`] would walk the whole state.
    fn check_touched(&self, op: &Op) {
        self.sessions.check_counts();
        match op {
            Op::KeepAlive { session } => self.sessions.check_session(*session),
            Op::Write(write) => {
                self.sessions.check_session(write.session);
                if let Command::KvPut { key, .. } | Command::KvDelete { key } = &write.command {
                    if let Some((_, version)) = self.kv.get(key) {
                        assert!(*version <= self.applied_index, "version {version} beyond applied index");
                    }
                }
            }
            Op::OpenSession { .. } => self.sessions.check_session(self.applied_index),
            Op::Tick => {}
        }
    }

    /// Records an entry without application payload (a leader's blank entry or a membership
    /// change), so the applied index stays exact.
    pub fn apply_empty(&mut self, index: u64) {
        // The initial membership entry has index 0, the only index that may equal the start.
        debug_assert!(index > self.applied_index || index == 0, "entries are applied once, in order");
        self.applied_index = index;
    }

    fn apply_write(&mut self, index: u64, write: &WriteRequest) -> Result<CommandResponse, ServerError> {
        let admission = self.sessions.begin_write(write.session, write.seq, write.acked_below, self.now_ms)?;
        if let WriteAdmission::Duplicate(stored) = admission {
            return stored;
        }
        let result = self.execute(index, write.session, &write.command);
        if self.sessions.contains(write.session) {
            self.sessions.finish_write(write.session, write.seq, result.clone());
        }
        result
    }

    fn execute(&mut self, index: u64, session: SessionId, command: &Command) -> Result<CommandResponse, ServerError> {
        command.validate()?;
        match command {
            Command::KvPut { key, value } => {
                if !self.kv.has_room_for(key) {
                    return Err(ServerError::InvalidArgument {
                        reason: format!("the register holds {} keys, its maximum; delete some first", self.kv.len()),
                    });
                }
                self.kv.put(key.clone(), value.clone(), index);
                Ok(CommandResponse::KvPut { version: index })
            }
            Command::KvDelete { key } => Ok(CommandResponse::KvDelete { existed: self.kv.delete(key) }),
            Command::CloseSession => {
                self.sessions.close(session);
                Ok(CommandResponse::SessionClosed)
            }
        }
    }

    /// Answers a read from the applied state.
    pub fn query(&self, query: &Query) -> QueryResponse {
        match query {
            Query::KvGet { key } => QueryResponse::KvGet { value: self.kv.get(key).cloned() },
        }
    }

    /// Index of the latest applied entry.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Open sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Keys in the register.
    pub fn key_count(&self) -> usize {
        self.kv.len()
    }

    /// A 64-bit FNV-1a digest of the whole state; equal states give equal digests on every node.
    pub fn digest(&self) -> u64 {
        let bytes = postcard::to_stdvec(self).expect("the state machine always serializes");
        bytes
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x100_0000_01b3))
    }

    /// Panics if the state is inconsistent, which would mean a bug: a replica that stops is
    /// better than one that diverges.
    pub fn check_invariants(&self) {
        self.sessions.check_invariants();
        self.kv.check_invariants(self.applied_index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE_MS: u64 = 600;

    fn at(time_ms: u64, op: Op) -> LogCommand {
        LogCommand { time_ms, grace_ms: GRACE_MS, op }
    }

    fn put(session: SessionId, seq: u64, acked_below: u64, key: &str, value: &str) -> Op {
        Op::Write(WriteRequest {
            session,
            seq,
            acked_below,
            command: Command::KvPut { key: key.into(), value: value.into() },
        })
    }

    fn opened(machine: &mut StateMachine, index: u64, time_ms: u64, ttl_ms: u64) -> SessionId {
        match machine.apply(index, 1, &at(time_ms, Op::OpenSession { ttl_ms })) {
            Ok(Response::SessionOpened { session, .. }) => session,
            other => panic!("open session: {other:?}"),
        }
    }

    #[test]
    fn a_retried_write_answers_the_first_response_and_applies_once() {
        let mut machine = StateMachine::default();
        let session = opened(&mut machine, 1, 1_000, 5_000);
        let first = machine.apply(2, 1, &at(1_010, put(session, 1, 1, "k", "v1"))).unwrap();
        // Another client changes the key; then the first client's retry of seq 1 arrives.
        let other = opened(&mut machine, 3, 1_020, 5_000);
        machine.apply(4, 1, &at(1_030, put(other, 1, 1, "k", "v2"))).unwrap();
        let retry = machine.apply(5, 1, &at(1_040, put(session, 1, 1, "k", "v1"))).unwrap();
        assert_eq!(first, retry);
        assert_eq!(first, Response::Written(CommandResponse::KvPut { version: 2 }));
        let QueryResponse::KvGet { value } = machine.query(&Query::KvGet { key: b"k".to_vec() });
        assert_eq!(value, Some((b"v2".to_vec(), 4)), "the retry did not apply again");
    }

    #[test]
    fn acknowledged_responses_are_forgotten_and_stale_retries_refused() {
        let mut machine = StateMachine::default();
        let session = opened(&mut machine, 1, 0, 5_000);
        machine.apply(2, 1, &at(1, put(session, 1, 1, "a", "1"))).unwrap();
        machine.apply(3, 1, &at(2, put(session, 2, 2, "a", "2"))).unwrap();
        let stale = machine.apply(4, 1, &at(3, put(session, 1, 1, "a", "1")));
        assert_eq!(stale, Err(ServerError::StaleSequence { session, seq: 1, oldest_kept: 2 }));
    }

    #[test]
    fn sessions_expire_by_leader_time_and_keepalives_renew_them() {
        let mut machine = StateMachine::default();
        let session = opened(&mut machine, 1, 10_000, 1_000);
        machine.apply(2, 1, &at(10_900, Op::KeepAlive { session })).unwrap();
        machine.apply(3, 1, &at(11_800, Op::Tick)).unwrap();
        assert_eq!(machine.session_count(), 1, "renewed at 10.9 s, lives until 11.9 s");
        machine.apply(4, 1, &at(11_901, Op::Tick)).unwrap();
        assert_eq!(machine.session_count(), 0);
        let late = machine.apply(5, 1, &at(11_902, put(session, 1, 1, "k", "v")));
        assert_eq!(late, Err(ServerError::SessionExpired { session }));
    }

    #[test]
    fn time_never_runs_backwards_across_leaders() {
        let mut machine = StateMachine::default();
        let session = opened(&mut machine, 1, 50_000, 1_000);
        // A leader whose clock is behind stamps an early time: the session must not revive or
        // gain lease from it, and expiry still happens once the later clock passes its deadline.
        machine.apply(2, 1, &at(40_000, Op::KeepAlive { session })).unwrap();
        machine.apply(3, 1, &at(51_001, Op::Tick)).unwrap();
        assert_eq!(machine.session_count(), 0);
    }

    #[test]
    fn a_new_leader_grants_grace_before_anything_expires() {
        let mut machine = StateMachine::default();
        let session = opened(&mut machine, 1, 1_000, 1_000);
        // The old leader died; the first entry of term 2 comes long after the lease ended.
        machine.apply(2, 2, &at(2_500, Op::Tick)).unwrap();
        assert_eq!(machine.session_count(), 1, "grace extends the lease to 2.5 s + 600 ms");
        machine.apply(3, 2, &at(2_900, Op::KeepAlive { session })).unwrap();
        machine.apply(4, 2, &at(3_901, Op::Tick)).unwrap();
        assert_eq!(machine.session_count(), 0, "after the grace, the ordinary TTL applies");
    }

    #[test]
    fn ttl_out_of_range_is_refused() {
        let mut machine = StateMachine::default();
        let result = machine.apply(1, 1, &at(0, Op::OpenSession { ttl_ms: 10 }));
        assert!(matches!(result, Err(ServerError::InvalidArgument { .. })), "{result:?}");
    }

    #[test]
    fn close_session_ends_it_at_once() {
        let mut machine = StateMachine::default();
        let session = opened(&mut machine, 1, 0, 60_000);
        let close = Op::Write(WriteRequest { session, seq: 1, acked_below: 1, command: Command::CloseSession });
        assert_eq!(machine.apply(2, 1, &at(1, close)), Ok(Response::Written(CommandResponse::SessionClosed)));
        assert_eq!(machine.session_count(), 0);
    }

    #[test]
    fn equal_logs_give_equal_digests() {
        let log = [
            at(1, Op::OpenSession { ttl_ms: 2_000 }),
            at(2, put(1, 1, 1, "x", "1")),
            at(3, put(1, 2, 1, "y", "2")),
            at(9_000, Op::Tick),
        ];
        let mut left = StateMachine::default();
        let mut right = StateMachine::default();
        for (offset, command) in log.iter().enumerate() {
            let _ = left.apply(offset as u64 + 1, 1, command);
            let _ = right.apply(offset as u64 + 1, 1, command);
        }
        assert_eq!(left.digest(), right.digest());
        assert_eq!(left, right);
        let _ = right.apply(5, 1, &at(9_001, Op::Tick));
        assert_ne!(left.digest(), right.digest(), "the applied index is part of the state");
    }
}
