//! The replicated state machine: pure and deterministic.
//!
//! It reads no clock and does no I/O. Every entry carries the time its leader stamped on it, and
//! every decision that depends on time (session expiry) uses that stamp, so all replicas applying
//! the same log reach the same state.
//!
//! An entry carries a batch of operations (the leader batches concurrent writes into one entry).
//! Each applied operation takes the next **revision**, a counter that increases by one per
//! operation in log order, like etcd's revision: session ids and key versions are revisions, so
//! they are unique and increasing even for operations sharing an entry.
//!
//! Layout: [`sessions`] (leases and the exactly-once response cache), [`kv`] (the replicated
//! register), [`locks`] (locks, their queues and the wait-for graph), [`queues`] (durable FIFO
//! queues), [`cache`] (the cache directory: versions and pending write-backs; not yet wired to
//! commands).
//!
//! Fencing tokens are revisions too: every grant takes a fresh one, so tokens increase per lock
//! across leader changes, and a token says where in the log the grant happened. Message ids and
//! delivery tags are fresh revisions as well.

pub mod cache;
pub mod kv;
pub mod locks;
pub mod queues;
pub mod sessions;

use distsync::wire::{
    CacheReport, Command, CommandResponse, LockAwaitOutcome, LockInfo, LockWait, Owner, Query, QueryResponse,
    QueueAwaitOutcome, Response, WriteRequest, LOCK_LIST_PAGE_MAX, QUEUE_LIST_PAGE_MAX,
};
use distsync::{ServerError, SessionId};
use serde::{Deserialize, Serialize};

use self::cache::CacheDirectory;
use self::kv::KvRegister;
use self::locks::{AcquireOutcome, LockEvent, Locks, Wait};
use self::queues::{AwaitState, GetOutcome, Queues};
use self::sessions::{Sessions, WriteAdmission};

/// The application payload of a Raft log entry: a batch of operations stamped by the leader.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LogCommand {
    /// The proposing leader's wall clock, in ms since the Unix epoch.
    pub time_ms: u64,
    /// How long leases are extended when this entry is the first of a new leader's term: the
    /// proposing leader's election timeout, doubled. Carried in the entry so every replica grants
    /// the same grace.
    pub grace_ms: u64,
    /// What to do, in order.
    pub ops: Vec<Op>,
}

/// Operations of the state machine.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Open a session; its id is the operation's revision.
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
    /// Proposed by the leader's write-back worker: Redis holds these (key, version) pairs.
    CacheWrittenBack {
        /// Keys and the versions stored.
        written: Vec<(Vec<u8>, u64)>,
    },
    /// Proposed by a node about its cache copies; see [`CacheReport`].
    CacheReport(CacheReport),
}

impl Op {
    /// Roughly how many bytes the operation adds to an entry, to bound batches.
    pub fn approximate_bytes(&self) -> usize {
        match self {
            Op::Write(WriteRequest { command: Command::KvPut { key, value }, .. }) => 64 + key.len() + value.len(),
            Op::Write(WriteRequest { command: Command::KvDelete { key }, .. }) => 64 + key.len(),
            Op::Write(WriteRequest { command: Command::CacheSet { key, value, .. }, .. }) => {
                64 + key.len() + value.len()
            }
            Op::CacheWrittenBack { written } => 64 + written.iter().map(|(key, _)| 16 + key.len()).sum::<usize>(),
            Op::CacheReport(report) => {
                64 + report.loaded.iter().chain(&report.lost).map(|(key, _)| 16 + key.len()).sum::<usize>()
                    + report.dropped.iter().map(|key| 8 + key.len()).sum::<usize>()
            }
            Op::Write(WriteRequest { command: Command::QueuePut { messages, .. }, .. }) => {
                64 + messages.iter().map(|m| 16 + m.body.len()).sum::<usize>()
            }
            _ => 64,
        }
    }
}

/// The result of applying one operation, returned to its proposer.
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
    /// Revision of the latest applied operation.
    revision: u64,
    sessions: Sessions,
    kv: KvRegister,
    locks: Locks,
    queues: Queues,
    cache: CacheDirectory,
    /// Sessions whose locks or queue gets changed in the entries applied since the last
    /// [`StateMachine::take_touched_sessions`]: whoever waits on their behalf should look again.
    /// Not replicated state.
    #[serde(skip)]
    touched: Vec<SessionId>,
}

impl StateMachine {
    /// Applies the entry at `index` written in `term`; one result per operation.
    pub fn apply(&mut self, index: u64, term: u64, command: &LogCommand) -> Vec<ApplyResult> {
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
        // Expiry and timeouts are decided before the entry's operations, so a lock is never
        // granted in an entry that finds its session expired (etcd-io/etcd#11456).
        let mut events = Vec::new();
        for session in expired {
            let revision = &mut self.revision;
            self.locks.release_session(session, self.now_ms, &mut || next(revision), &mut events);
            self.queues.release_session(session, self.now_ms, &mut || next(revision), &mut self.touched);
            self.touched.push(session);
        }
        let revision = &mut self.revision;
        self.locks.expire_waits(self.now_ms, &mut || next(revision), &mut events);
        self.queues.expire(self.now_ms, &mut || next(revision), &mut self.touched);
        self.cache.expire(self.now_ms, &mut || next(revision));
        self.note_events(&events);
        command
            .ops
            .iter()
            .map(|op| {
                self.revision += 1;
                let result = self.apply_op(op);
                if cfg!(debug_assertions) {
                    self.check_touched(op);
                }
                result
            })
            .collect()
    }

    fn note_events(&mut self, events: &[LockEvent]) {
        for event in events {
            let owner = match event {
                LockEvent::Granted { owner, .. }
                | LockEvent::TimedOut { owner, .. }
                | LockEvent::Cancelled { owner, .. }
                | LockEvent::Lost { owner, .. } => owner,
            };
            self.touched.push(owner.session);
        }
    }

    /// Sessions whose lock requests may have been decided since the last call; drains the list.
    pub fn take_touched_sessions(&mut self) -> Vec<SessionId> {
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_unstable();
        touched.dedup();
        touched
    }

    fn apply_op(&mut self, op: &Op) -> ApplyResult {
        let revision = self.revision;
        match op {
            Op::OpenSession { ttl_ms } => self
                .sessions
                .open(revision, *ttl_ms, self.now_ms)
                .map(|()| Response::SessionOpened { session: revision, ttl_ms: *ttl_ms }),
            Op::KeepAlive { session } => self.sessions.keep_alive(*session, self.now_ms).map(|()| Response::KeptAlive),
            Op::Write(write) => self.apply_write(revision, write).map(Response::Written),
            Op::Tick => Ok(Response::Done),
            Op::CacheWrittenBack { written } => {
                for (key, version) in written {
                    self.cache.written_back(key, *version);
                }
                Ok(Response::Done)
            }
            Op::CacheReport(report) => {
                self.cache.apply_report(report);
                Ok(Response::Done)
            }
        }
    }

    /// The invariants of what `op` touched: cheap enough to run after every apply in debug
    /// builds, where [`StateMachine::check_invariants`] would walk the whole state.
    fn check_touched(&self, op: &Op) {
        self.sessions.check_counts();
        match op {
            Op::KeepAlive { session } => self.sessions.check_session(*session),
            Op::Write(write) => {
                if let Some(name) = write.command.lock_name() {
                    if let Some(lock) = self.locks.get(name) {
                        self.locks.check_lock(name, lock);
                    }
                }
                if let Some(name) = write.command.queue_name() {
                    self.queues.check_queue(name);
                    self.queues.check_queue(&queues::dead_letter_queue(name));
                }
                self.sessions.check_session(write.session);
                if let Command::KvPut { key, .. } | Command::KvDelete { key } = &write.command {
                    if let Some((_, version)) = self.kv.get(key) {
                        assert!(*version <= self.revision, "version {version} beyond the revision");
                    }
                }
            }
            Op::OpenSession { .. } => self.sessions.check_session(self.revision),
            Op::Tick | Op::CacheWrittenBack { .. } | Op::CacheReport(_) => {}
        }
    }

    /// Records an entry without application payload (a leader's blank entry or a membership
    /// change), so the applied index stays exact.
    pub fn apply_empty(&mut self, index: u64) {
        // The initial membership entry has index 0, the only index that may equal the start.
        debug_assert!(index > self.applied_index || index == 0, "entries are applied once, in order");
        self.applied_index = index;
    }

    fn apply_write(&mut self, revision: u64, write: &WriteRequest) -> Result<CommandResponse, ServerError> {
        let admission = self.sessions.begin_write(write.session, write.seq, write.acked_below, self.now_ms)?;
        if let WriteAdmission::Duplicate(stored) = admission {
            return stored;
        }
        let result = self.execute(revision, write.session, &write.command);
        if self.sessions.contains(write.session) {
            self.sessions.finish_write(write.session, write.seq, result.clone());
        }
        result
    }

    fn execute(
        &mut self,
        revision: u64,
        session: SessionId,
        command: &Command,
    ) -> Result<CommandResponse, ServerError> {
        command.validate()?;
        match command {
            Command::KvPut { key, value } => {
                if !self.kv.has_room_for(key) {
                    return Err(ServerError::InvalidArgument {
                        reason: format!("the register holds {} keys, its maximum; delete some first", self.kv.len()),
                    });
                }
                self.kv.put(key.clone(), value.clone(), revision);
                Ok(CommandResponse::KvPut { version: revision })
            }
            Command::KvDelete { key } => Ok(CommandResponse::KvDelete { existed: self.kv.delete(key) }),
            Command::CacheSet { key, value, ttl_ms } => {
                let expires_at_ms = ttl_ms.map(|ttl| self.now_ms.saturating_add(ttl));
                self.cache.set(key, value, revision, expires_at_ms)?;
                Ok(CommandResponse::CacheSet { version: revision })
            }
            Command::CacheDelete { key } => {
                Ok(CommandResponse::CacheDeleted { existed: self.cache.delete(key, revision) })
            }
            Command::CloseSession => {
                self.sessions.close(session);
                let mut events = Vec::new();
                let revision = &mut self.revision;
                self.locks.release_session(session, self.now_ms, &mut || next(revision), &mut events);
                self.queues.release_session(session, self.now_ms, &mut || next(revision), &mut self.touched);
                self.note_events(&events);
                self.touched.push(session);
                Ok(CommandResponse::SessionClosed)
            }
            Command::LockAcquire { .. }
            | Command::LockUpgrade { .. }
            | Command::LockRelease { .. }
            | Command::LockCancel { .. } => self.execute_lock(revision, session, command),
            _ => self.execute_queue(revision, session, command),
        }
    }

    /// Applies a queue command of `session` at `revision`; message ids and delivery tags take
    /// fresh revisions.
    fn execute_queue(
        &mut self,
        revision: u64,
        session: SessionId,
        command: &Command,
    ) -> Result<CommandResponse, ServerError> {
        let now_ms = self.now_ms;
        let counter = &mut self.revision;
        let next_revision = &mut || next(counter);
        let touched = &mut self.touched;
        let queues = &mut self.queues;
        Ok(match command {
            Command::QueueCreate { queue, options } => {
                CommandResponse::QueueCreated { created: queues.create(queue, *options)? }
            }
            Command::QueueDelete { queue } => {
                CommandResponse::QueueDeleted { messages: queues.delete(queue, touched)? }
            }
            Command::QueuePut { queue, messages } => {
                CommandResponse::QueuePut { outcomes: queues.put(queue, messages, now_ms, next_revision, touched)? }
            }
            Command::QueueGet { queue, request, max, visibility_ms, wait_ms, detach } => {
                match queues.get(
                    queue,
                    (session, *request),
                    *max,
                    *visibility_ms,
                    *wait_ms,
                    *detach,
                    now_ms,
                    next_revision,
                )? {
                    GetOutcome::Delivered(deliveries) => CommandResponse::QueueDelivered { deliveries },
                    GetOutcome::Waiting => {
                        // Whoever waits for this get on another node learns of it by this.
                        touched.push(session);
                        CommandResponse::QueueWaiting { revision }
                    }
                }
            }
            Command::QueueAck { queue, tags } => CommandResponse::QueueAcked { stale: queues.ack(queue, tags)? },
            Command::QueueNack { queue, tags } => {
                CommandResponse::QueueNacked { stale: queues.nack(queue, tags, now_ms, next_revision, touched)? }
            }
            Command::QueueExtend { queue, tag, visibility_ms } => {
                CommandResponse::QueueExtended { visible_at_ms: queues.extend(queue, *tag, *visibility_ms, now_ms)? }
            }
            Command::QueueCancel { queue, request } => CommandResponse::QueueCancelled {
                returned: queues.cancel(queue, (session, *request), now_ms, next_revision, touched),
            },
            _ => unreachable!("execute passes queue commands only"),
        })
    }

    /// Where a get of `session` that started waiting at `queued_revision` stands, as far as this
    /// replica has applied.
    pub fn queue_await(
        &self,
        queue: &str,
        session: SessionId,
        request: u64,
        queued_revision: u64,
    ) -> QueueAwaitOutcome {
        if self.revision < queued_revision {
            return QueueAwaitOutcome::Pending;
        }
        match self.queues.await_state(queue, (session, request)) {
            AwaitState::Waiting => QueueAwaitOutcome::Pending,
            AwaitState::Delivered(deliveries) => QueueAwaitOutcome::Delivered(deliveries),
            AwaitState::Gone if self.sessions.contains(session) => QueueAwaitOutcome::Empty,
            AwaitState::Gone => QueueAwaitOutcome::SessionEnded,
        }
    }

    /// Applies a lock command of `session` at `revision`; grants take fresh revisions as tokens.
    fn execute_lock(
        &mut self,
        revision: u64,
        session: SessionId,
        command: &Command,
    ) -> Result<CommandResponse, ServerError> {
        let now_ms = self.now_ms;
        // A relative wait becomes a deadline on the leader's clock.
        let deadline = |wait: &LockWait| match wait {
            LockWait::Try => Wait::No,
            LockWait::TimeoutMs(ms) => Wait::Until { deadline_ms: now_ms.saturating_add(*ms) },
            LockWait::Forever => Wait::Forever,
        };
        let queued = |outcome: AcquireOutcome| match outcome {
            AcquireOutcome::Granted { token } => CommandResponse::LockGranted { token },
            AcquireOutcome::Queued { ahead } => CommandResponse::LockQueued { revision, ahead: ahead as u64 },
        };
        let counter = &mut self.revision;
        let next_token = &mut || next(counter);
        let mut events = Vec::new();
        let response = match command {
            Command::LockAcquire { name, actor, mode, wait } => {
                let owner = Owner { session, actor: *actor };
                queued(self.locks.acquire(owner, name, *mode, deadline(wait), now_ms, next_token)?)
            }
            Command::LockUpgrade { name, actor, wait } => {
                let owner = Owner { session, actor: *actor };
                queued(self.locks.upgrade(owner, name, deadline(wait), now_ms, next_token)?)
            }
            Command::LockRelease { name, actor, token } => {
                let owner = Owner { session, actor: *actor };
                self.locks.release(owner, name, *token, now_ms, next_token, &mut events)?;
                CommandResponse::LockReleased
            }
            Command::LockCancel { name, actor, queued_revision, upgrade } => {
                let owner = Owner { session, actor: *actor };
                let released =
                    self.locks.cancel(owner, name, *queued_revision, *upgrade, now_ms, next_token, &mut events);
                CommandResponse::LockCancelled { released }
            }
            _ => unreachable!("execute passes lock commands only"),
        };
        self.note_events(&events);
        if matches!(response, CommandResponse::LockQueued { .. } | CommandResponse::LockCancelled { .. }) {
            // Whoever waits for this request on another node learns of it by this.
            self.touched.push(session);
        }
        Ok(response)
    }

    /// Where a lock request queued at `queued_revision` stands, as far as this replica has
    /// applied: granted (with its token), still pending (or not yet applied here), timed out or
    /// cancelled, or ended with its session.
    pub fn lock_await(&self, name: &str, owner: Owner, queued_revision: u64) -> LockAwaitOutcome {
        if self.revision < queued_revision {
            return LockAwaitOutcome::Pending;
        }
        if let Some(lock) = self.locks.get(name) {
            if let Some(holder) = lock.holders.iter().find(|h| h.owner == owner && h.token > queued_revision) {
                return LockAwaitOutcome::Granted { token: holder.token };
            }
            if lock.waiters.iter().any(|w| w.owner == owner) {
                return LockAwaitOutcome::Pending;
            }
        }
        if self.sessions.contains(owner.session) {
            LockAwaitOutcome::TimedOut
        } else {
            LockAwaitOutcome::SessionEnded
        }
    }

    /// Whether `session` is open, or may still be (this replica has not applied its opening).
    pub fn session_alive(&self, session: SessionId) -> bool {
        self.revision < session || self.sessions.contains(session)
    }

    /// Answers a read from the applied state.
    pub fn query(&self, query: &Query) -> QueryResponse {
        match query {
            Query::KvGet { key } => QueryResponse::KvGet { value: self.kv.get(key).cloned() },
            Query::LockList { after } => {
                let (page, more) = self.locks.list(after.as_deref(), LOCK_LIST_PAGE_MAX);
                QueryResponse::LockList {
                    locks: page.into_iter().map(|(name, lock)| lock_info(name, lock)).collect(),
                    more,
                }
            }
            Query::LockShow { name } => {
                QueryResponse::LockShow { lock: self.locks.get(name).map(|lock| lock_info(name, lock)) }
            }
            Query::QueueStats { queue } => QueryResponse::QueueStats { stats: self.queues.stats(queue, self.now_ms) },
            Query::QueueList { after } => {
                let (queues, more) = self.queues.list(after.as_deref(), QUEUE_LIST_PAGE_MAX, self.now_ms);
                QueryResponse::QueueList { queues, more }
            }
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

    /// The earliest leader time at which a lock wait or a session lease ends, if any: the leader
    /// proposes a tick once its clock passes it.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        [
            self.locks.next_deadline_ms(),
            self.sessions.next_expiry_ms(),
            self.queues.next_deadline_ms(),
            self.cache.next_expiry_ms(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The cache directory.
    pub fn cache(&self) -> &CacheDirectory {
        &self.cache
    }

    /// Cache keys written, deleted or expired since the last call, with their new versions.
    pub fn take_cache_changes(&mut self) -> Vec<(Vec<u8>, u64)> {
        self.cache.take_changes()
    }

    /// Queues, including dead-letter queues.
    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }

    /// Locks held or awaited.
    pub fn lock_count(&self) -> usize {
        self.locks.len()
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
        self.kv.check_invariants(self.revision);
        self.locks.check_invariants();
        for session in self.locks.sessions() {
            assert!(self.sessions.contains(session), "session {session} holds or awaits a lock but is not open");
        }
        self.queues.check_invariants();
        self.cache.check_invariants(self.revision);
        for session in self.queues.sessions() {
            assert!(self.sessions.contains(session), "session {session} waits on or holds a delivery but is not open");
        }
    }
}

/// Hands out the next revision, for fencing tokens.
fn next(revision: &mut u64) -> u64 {
    *revision += 1;
    *revision
}

fn lock_info(name: &str, lock: &locks::Lock) -> LockInfo {
    LockInfo { name: name.to_string(), holders: lock.holders.clone(), waiters: lock.waiters.iter().cloned().collect() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use distsync::wire::{LockAwaitOutcome, LockWait, Owner};

    const GRACE_MS: u64 = 600;

    fn at(time_ms: u64, op: Op) -> LogCommand {
        LogCommand { time_ms, grace_ms: GRACE_MS, ops: vec![op] }
    }

    /// Applies a one-operation entry and returns its result.
    fn apply(machine: &mut StateMachine, index: u64, term: u64, command: &LogCommand) -> ApplyResult {
        let mut results = machine.apply(index, term, command);
        assert_eq!(results.len(), 1);
        results.pop().expect("one result")
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
        match apply(machine, index, 1, &at(time_ms, Op::OpenSession { ttl_ms })) {
            Ok(Response::SessionOpened { session, .. }) => session,
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
        let QueryResponse::KvGet { value } = machine.query(&Query::KvGet { key: b"k".to_vec() }) else {
            unreachable!()
        };
        assert_eq!(value, Some((b"v2".to_vec(), 4)), "the retry did not apply again");
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
        apply(&mut machine, 2, 1, &at(10_900, Op::KeepAlive { session })).unwrap();
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
        apply(&mut machine, 2, 1, &at(40_000, Op::KeepAlive { session })).unwrap();
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
        apply(&mut machine, 3, 2, &at(2_900, Op::KeepAlive { session })).unwrap();
        apply(&mut machine, 4, 2, &at(3_901, Op::Tick)).unwrap();
        assert_eq!(machine.session_count(), 0, "after the grace, the ordinary TTL applies");
    }

    #[test]
    fn operations_sharing_an_entry_get_increasing_revisions() {
        let mut machine = StateMachine::default();
        let batch = LogCommand {
            time_ms: 5,
            grace_ms: GRACE_MS,
            ops: vec![Op::OpenSession { ttl_ms: 5_000 }, Op::OpenSession { ttl_ms: 5_000 }],
        };
        let opened = machine.apply(1, 1, &batch);
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
        let QueryResponse::KvGet { value } = machine.query(&Query::KvGet { key: b"k".to_vec() }) else {
            unreachable!()
        };
        assert_eq!(value, Some((b"second".to_vec(), 4)), "later operations in an entry win");
        machine.check_invariants();
    }

    #[test]
    fn ttl_out_of_range_is_refused() {
        let mut machine = StateMachine::default();
        let result = apply(&mut machine, 1, 1, &at(0, Op::OpenSession { ttl_ms: 10 }));
        assert!(matches!(result, Err(ServerError::InvalidArgument { .. })), "{result:?}");
    }

    #[test]
    fn close_session_ends_it_at_once() {
        let mut machine = StateMachine::default();
        let session = opened(&mut machine, 1, 0, 60_000);
        let close = Op::Write(WriteRequest { session, seq: 1, acked_below: 1, command: Command::CloseSession });
        assert_eq!(apply(&mut machine, 2, 1, &at(1, close)), Ok(Response::Written(CommandResponse::SessionClosed)));
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
            let _ = apply(&mut left, offset as u64 + 1, 1, command);
            let _ = apply(&mut right, offset as u64 + 1, 1, command);
        }
        assert_eq!(left.digest(), right.digest());
        assert_eq!(left, right);
        left.check_invariants();
        let _ = apply(&mut right, 5, 1, &at(9_001, Op::Tick));
        assert_ne!(left.digest(), right.digest(), "the applied index is part of the state");
    }

    fn write_op(session: SessionId, seq: u64, command: Command) -> Op {
        Op::Write(WriteRequest { session, seq, acked_below: seq, command })
    }

    fn acquire(name: &str, actor: u64, wait: LockWait) -> Command {
        Command::LockAcquire { name: name.into(), actor, mode: distsync::wire::LockMode::Exclusive, wait }
    }

    #[test]
    fn an_expired_session_frees_its_lock_and_the_next_waiter_gets_a_higher_token_in_that_entry() {
        let mut machine = StateMachine::default();
        let holder = opened(&mut machine, 1, 1_000, 1_000);
        let waiter = opened(&mut machine, 2, 1_000, 60_000);
        let granted = apply(&mut machine, 3, 1, &at(1_010, write_op(holder, 1, acquire("L", 7, LockWait::Forever))));
        let Ok(Response::Written(CommandResponse::LockGranted { token: first })) = granted else {
            panic!("{granted:?}")
        };
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
        assert_eq!(
            apply(&mut machine, 5, 1, &at(2_001, release)),
            Ok(Response::Written(CommandResponse::LockReleased))
        );
        assert_eq!(
            machine.lock_await("L", Owner { session: waiter, actor: 2 }, revision),
            LockAwaitOutcome::SessionEnded
        );
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
        use self::cache::DirectoryRead;
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
        let cancel = write_op(
            b,
            3,
            Command::LockCancel { name: "L".into(), actor: 2, queued_revision: revision, upgrade: false },
        );
        assert_eq!(
            apply(&mut machine, 9, 1, &at(1_800, cancel)),
            Ok(Response::Written(CommandResponse::LockCancelled { released: true }))
        );
        assert_eq!(machine.lock_count(), 0);
        machine.check_invariants();
    }
}
