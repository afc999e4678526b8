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
//! Layout: this file applies entries and routes each [`Command`] to the primitive it belongs to,
//! by an exhaustive match, so a new command does not compile until it is handled. Each
//! primitive's logic lives beside its state: [`sessions`] (leases, their owners and the
//! exactly-once response cache), [`access`] (grants and disabled identities), [`kv`] (the replicated register), [`locks`] (locks, their queues and the wait-for
//! graph), [`queues`] (durable FIFO queues), [`cache`] (the cache directory: versions and pending
//! write-backs).
//!
//! Fencing tokens are revisions too: every grant takes a fresh one, so tokens increase per lock
//! across leader changes, and a token says where in the log the grant happened. Message ids are
//! fresh revisions as well; delivery tags are keyed hashes of one (unguessable, see
//! `queues/queue.rs`).
//!
//! Every client operation carries the identity of the connection it came in on (set by the node
//! that received it, which peers trust as cluster members). Writes are checked here against the
//! grants, at the log position where they apply, so a forwarded write cannot escape them.

pub mod access;
#[cfg(test)]
mod access_tests;
pub mod cache;
pub mod kv;
pub mod limits;
pub mod locks;
pub mod queues;
#[cfg(test)]
mod random_tests;
pub mod sessions;
#[cfg(test)]
mod tests;

use distsync::wire::{
    AdminCommand, CacheReport, Command, CommandResponse, Owner, Permission, Query, QueryResponse, ResourceKind,
    Response, SessionSecret, WriteRequest, IDENTITY_LIST_PAGE_MAX, LIST_PAGE_BYTES_MAX, LOCK_LIST_PAGE_MAX,
    QUEUE_LIST_PAGE_MAX,
};
use distsync::{ServerError, SessionId};
use serde::{Deserialize, Serialize};

use self::access::AccessControl;
use self::cache::CacheDirectory;
use self::kv::KvRegister;
use self::limits::Limits;
use self::locks::{LockEvent, Locks};
use self::queues::Queues;
use self::sessions::{Sessions, WriteAdmission};

/// The application payload of a Raft log entry: a batch of operations stamped by the leader.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LogCommand {
    /// Cluster time, in ms since the Unix epoch: the proposing leader's continuation of the
    /// state's time by its monotonic clock, steered slowly toward its wall clock.
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
        /// The connection's identity, which will own the session.
        identity: String,
        /// The secret the opener chose.
        secret: SessionSecret,
    },
    /// Renew a session.
    KeepAlive {
        /// The session.
        session: SessionId,
        /// The connection's identity.
        identity: String,
        /// The session's secret.
        secret: SessionSecret,
    },
    /// A client command under a session.
    Write {
        /// The connection's identity.
        identity: String,
        /// The command, with its session and sequence number.
        write: WriteRequest,
    },
    /// Proposed by an idle leader so that time advances and leases expire.
    Tick,
    /// Proposed by the leader's write-back worker: Redis holds these (key, version) pairs.
    CacheWrittenBack {
        /// Keys and the versions stored.
        written: Vec<(Vec<u8>, u64)>,
    },
    /// Proposed by a node about its cache copies; see [`CacheReport`].
    CacheReport(CacheReport),
    /// A change to grants or identities, from an admin.
    Admin {
        /// The connection's identity.
        identity: String,
        /// The change.
        command: AdminCommand,
    },
    /// Proposed by the first leader of a cluster: a random id that names this cluster's data
    /// outside the log (its keys in Redis). The first one applied wins; later ones change
    /// nothing, so a cluster is named once for its life.
    NameCluster {
        /// Random bytes.
        id: ClusterId,
    },
    /// Proposed by a leader whose `--max-…` flags differ from the limits in force: these apply
    /// from this operation on (see [`limits`]).
    SetLimits {
        /// The new limits.
        limits: Limits,
    },
}

/// A cluster's random name, fixed when it first elects a leader.
pub type ClusterId = [u8; 16];

impl Op {
    /// The operation's encoded size in bytes, as the log entry and replication hold it.
    pub fn encoded_bytes(&self) -> usize {
        distsync::wire::encoded_bytes(self)
    }
}

/// `result` as a session keeps it for retries: a queue get keeps the tags of its deliveries,
/// not their bodies (see [`StateMachine::rehydrate`]).
fn compact(result: &Result<CommandResponse, ServerError>) -> Result<CommandResponse, ServerError> {
    match result {
        Ok(CommandResponse::QueueDelivered { deliveries }) => Ok(CommandResponse::QueueDelivered {
            deliveries: deliveries
                .iter()
                .map(|delivery| distsync::wire::QueueDelivery {
                    id: delivery.id,
                    tag: delivery.tag,
                    attempt: delivery.attempt,
                    body: Vec::new(),
                    enqueued_ms: delivery.enqueued_ms,
                    visible_at_ms: delivery.visible_at_ms,
                    history: Vec::new(),
                })
                .collect(),
        }),
        other => other.clone(),
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
    access: AccessControl,
    /// This cluster's name, once its first leader proposed one.
    cluster_id: Option<ClusterId>,
    /// How much clients may make the cluster hold.
    limits: Limits,
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
        for session in expired {
            self.release_session(session);
        }
        let mut events = Vec::new();
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
            Op::OpenSession { ttl_ms, identity, secret } => {
                self.access.check_enabled(identity)?;
                let (session, ttl_ms) =
                    self.sessions.open(revision, *ttl_ms, self.now_ms, identity, *secret, &self.limits)?;
                Ok(Response::SessionOpened { session, ttl_ms })
            }
            Op::KeepAlive { session, identity, secret } => {
                self.access.check_enabled(identity)?;
                self.sessions.keep_alive(*session, identity, secret, self.now_ms).map(|()| Response::KeptAlive)
            }
            Op::Write { identity, write } => self.apply_write(revision, identity, write).map(Response::Written),
            Op::Admin { identity, command } => self.apply_admin(identity, command),
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
            Op::NameCluster { id } => {
                self.cluster_id.get_or_insert(*id);
                Ok(Response::Done)
            }
            Op::SetLimits { limits } => {
                if limits.validate().is_ok() {
                    self.limits = *limits;
                }
                Ok(Response::Done)
            }
        }
    }

    /// The invariants of what `op` touched: cheap enough to run after every apply in debug
    /// builds, where [`StateMachine::check_invariants`] would walk the whole state.
    fn check_touched(&self, op: &Op) {
        self.sessions.check_counts();
        match op {
            Op::KeepAlive { session, .. } => self.sessions.check_session(*session),
            Op::Write { write, .. } => {
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
            Op::Admin { .. } => self.access.check_invariants(),
            Op::NameCluster { .. } => assert!(self.cluster_id.is_some(), "a named cluster keeps its name"),
            Op::SetLimits { .. } => assert!(self.limits.validate().is_ok(), "limits in force are valid"),
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

    /// A write from `identity`: its session must be the identity's (with the secret), then the
    /// identity needs `write` on the name the command acts on. A refusal for want of a grant is
    /// the command's answer, stored like any other for its retries.
    fn apply_write(
        &mut self,
        revision: u64,
        identity: &str,
        write: &WriteRequest,
    ) -> Result<CommandResponse, ServerError> {
        self.access.check_enabled(identity)?;
        let digest = command_digest(&write.command);
        let admission = self.sessions.begin_write(
            write.session,
            identity,
            &write.secret,
            write.seq,
            write.acked_below,
            digest,
            self.now_ms,
        )?;
        if let WriteAdmission::Duplicate(stored) = admission {
            return self.rehydrate(&write.command, stored);
        }
        let permitted = match write.command.resource() {
            Some((kind, name)) => self.access.check(identity, kind, name, Permission::Write),
            None => Ok(()),
        };
        let result =
            permitted.and_then(|()| self.execute(revision, identity, write.session, &write.secret, &write.command));
        if self.sessions.contains(write.session) {
            self.sessions.finish_write(write.session, write.seq, digest, compact(&result));
        }
        result
    }

    /// The answer to a retried write from its stored, compact form: the deliveries of a queue
    /// get are looked up by tag again (with their bodies), and those that ended since (acked,
    /// or back in the queue after their visibility timeout) are left out.
    fn rehydrate(
        &self,
        command: &Command,
        stored: Result<CommandResponse, ServerError>,
    ) -> Result<CommandResponse, ServerError> {
        match (command, stored) {
            (Command::QueueGet { queue, .. }, Ok(CommandResponse::QueueDelivered { deliveries })) => {
                let tags: Vec<u64> = deliveries.iter().map(|delivery| delivery.tag).collect();
                Ok(CommandResponse::QueueDelivered { deliveries: self.queues.deliveries(queue, &tags) })
            }
            (_, stored) => stored,
        }
    }

    /// An admin command; disabling an identity ends its sessions at once.
    fn apply_admin(&mut self, identity: &str, command: &AdminCommand) -> ApplyResult {
        self.access.check_admin(identity)?;
        let changed = self.access.apply(command, &self.limits)?;
        if let AdminCommand::SetEnabled { identity: target, enabled: false } = command {
            for session in self.sessions.sessions_of(target) {
                self.sessions.close(session);
                self.release_session(session);
            }
        }
        Ok(Response::AdminApplied { changed })
    }

    fn execute(
        &mut self,
        revision: u64,
        identity: &str,
        session: SessionId,
        secret: &SessionSecret,
        command: &Command,
    ) -> Result<CommandResponse, ServerError> {
        command.validate()?;
        let owner = |actor: &u64| Owner { session, actor: *actor };
        // Every command is named here, so that a new one does not compile until it is handled;
        // what it does lives beside its primitive.
        match command {
            Command::KvPut { key, value } => self.kv_put(revision, key, value),
            Command::KvDelete { key } => Ok(self.kv_delete(key)),
            Command::CloseSession => {
                self.sessions.close(session);
                self.release_session(session);
                Ok(CommandResponse::SessionClosed)
            }
            Command::LockAcquire { name, actor, mode, wait } => {
                self.lock_acquire(revision, owner(actor), name, *mode, wait)
            }
            Command::LockUpgrade { name, actor, wait } => self.lock_upgrade(revision, owner(actor), name, wait),
            Command::LockRelease { name, actor, token } => self.lock_release(owner(actor), name, *token),
            Command::LockCancel { name, actor, queued_revision, upgrade } => {
                Ok(self.lock_cancel(owner(actor), name, *queued_revision, *upgrade))
            }
            Command::QueueCreate { queue, options } => self.queue_create(queue, *options, identity),
            Command::QueueDelete { queue } => self.queue_delete(queue),
            Command::QueuePut { queue, messages } => self.queue_put(queue, messages, identity),
            Command::QueueGet { queue, request, max, visibility_ms, wait_ms, detach } => {
                let get = queues::Get {
                    request: *request,
                    max: *max,
                    visibility_ms: *visibility_ms,
                    wait_ms: *wait_ms,
                    detach: *detach,
                    tag_key: *secret,
                };
                self.queue_get(revision, session, queue, get, identity)
            }
            Command::QueueAck { queue, tags } => self.queue_ack(session, queue, tags),
            Command::QueueNack { queue, tags } => self.queue_nack(session, queue, tags),
            Command::QueueExtend { queue, tag, visibility_ms } => {
                self.queue_extend(session, queue, *tag, *visibility_ms)
            }
            Command::QueueCancel { queue, request } => Ok(self.queue_cancel(session, queue, *request)),
            Command::CacheSet { key, value, ttl_ms } => self.cache_set(revision, key, value, *ttl_ms),
            Command::CacheDelete { key } => Ok(self.cache_delete(revision, key)),
        }
    }

    /// Releases every hold, wait and delivery of `session`, which expired or was closed.
    fn release_session(&mut self, session: SessionId) {
        let mut events = Vec::new();
        let revision = &mut self.revision;
        self.locks.release_session(session, self.now_ms, &mut || next(revision), &mut events);
        self.queues.release_session(session, self.now_ms, &mut || next(revision), &mut self.touched);
        self.note_events(&events);
        self.touched.push(session);
    }

    /// Whether `session` is open, or may still be (this replica has not applied its opening).
    pub fn session_alive(&self, session: SessionId) -> bool {
        self.revision < session || self.sessions.contains(session)
    }

    /// Answers a read by `identity` from the applied state: a read of one name needs `read` on
    /// it; a listing shows only the names the identity may read.
    ///
    /// # Errors
    ///
    /// `IdentityDisabled`, `PermissionDenied`.
    pub fn query(&self, identity: &str, query: &Query) -> Result<QueryResponse, ServerError> {
        self.access.check_enabled(identity)?;
        let read = |kind, name: &[u8]| self.access.check(identity, kind, name, Permission::Read);
        let may_read = |kind, name: &str| self.access.allows(identity, kind, name.as_bytes(), Permission::Read);
        Ok(match query {
            Query::KvGet { key } => {
                read(ResourceKind::Kv, key)?;
                QueryResponse::KvGet { value: self.kv.get(key).map(|(value, version)| (value.to_vec(), *version)) }
            }
            Query::LockList { after } => {
                let (locks, more) = filtered_pages(
                    after.clone(),
                    LOCK_LIST_PAGE_MAX,
                    |after| self.lock_list(after.as_deref()),
                    |lock| lock.name.clone(),
                    |lock| may_read(ResourceKind::Lock, &lock.name),
                );
                QueryResponse::LockList { locks, more }
            }
            Query::LockShow { name } => {
                read(ResourceKind::Lock, name.as_bytes())?;
                self.lock_show(name)
            }
            Query::QueueStats { queue } => {
                read(ResourceKind::Queue, queue.as_bytes())?;
                QueryResponse::QueueStats { stats: self.queues.stats(queue, self.now_ms) }
            }
            Query::QueueList { after } => {
                let (queues, more) = filtered_pages(
                    after.clone(),
                    QUEUE_LIST_PAGE_MAX,
                    |after| self.queues.list(after.as_deref(), QUEUE_LIST_PAGE_MAX, self.now_ms),
                    |queue| queue.name.clone(),
                    |queue| may_read(ResourceKind::Queue, &queue.name),
                );
                QueryResponse::QueueList { queues, more }
            }
            Query::Identities { after } => {
                self.access.check_admin(identity)?;
                let sessions = self.sessions.count_by_identity();
                let (identities, more) = self.access.list(after.as_deref(), IDENTITY_LIST_PAGE_MAX, &sessions);
                QueryResponse::Identities { identities, more }
            }
        })
    }

    /// Grants and disabled identities.
    pub fn access(&self) -> &AccessControl {
        &self.access
    }

    /// Refuses a request naming `session` unless it comes from the session's opener: the
    /// identity that opened it, with its secret. A session this replica does not know (ended,
    /// or not applied here yet) passes: a wait on it answers with its end or keeps waiting.
    ///
    /// # Errors
    ///
    /// `IdentityDisabled`, `SessionNotOwned`.
    pub fn check_session_owner(
        &self,
        session: SessionId,
        identity: &str,
        secret: &SessionSecret,
    ) -> Result<(), ServerError> {
        self.access.check_enabled(identity)?;
        if self.sessions.contains(session) {
            self.sessions.authorize(session, identity, secret)?;
        }
        Ok(())
    }

    /// Index of the latest applied entry.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Open sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// This cluster's name, once its first leader proposed one.
    pub fn cluster_id(&self) -> Option<ClusterId> {
        self.cluster_id
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The time of the latest applied entry (cluster time, ms since the Unix epoch; see the
    /// node's `clock` module).
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// The earliest cluster time at which a lock wait, session lease, queue deadline or cache
    /// TTL ends, if any: the leader proposes a tick once its clock passes it.
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
    ///
    /// Hashes the encoding as it is serialized, without buffering it (the state may be hundreds
    /// of MiB); equal to [`distsync::wire::fnv1a`] of the encoding.
    pub fn digest(&self) -> u64 {
        postcard::serialize_with_flavor(self, Hashing(distsync::wire::Fnv1a::default()))
            .expect("the state machine always serializes")
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
        self.access.check_invariants();
        for session in self.queues.sessions() {
            assert!(self.sessions.contains(session), "session {session} waits on or holds a delivery but is not open");
        }
    }
}

/// `bytes` in a [`bytes::Bytes`] whose clones only count references, for values the state holds:
/// a copy of the state (a snapshot's, a digest's) shares them. (A `Bytes` made from a `Vec`
/// allocates a shared header at its first clone, so a first copy would allocate once per value.)
pub(crate) fn shared(bytes: &[u8]) -> bytes::Bytes {
    bytes::Bytes::from_owner(bytes.to_vec())
}

/// The digest stored beside a write's answer: a retry under the same sequence number must carry
/// the same command to get that answer.
///
/// Hashes the command's encoding as it is serialized, without buffering it: this runs for every
/// write on every replica, and a command may carry a value of a megabyte.
pub fn command_digest(command: &Command) -> u64 {
    postcard::serialize_with_flavor(command, Hashing(distsync::wire::Fnv1a::default()))
        .expect("commands always serialize")
}

/// A postcard output that hashes the bytes instead of keeping them.
struct Hashing(distsync::wire::Fnv1a);

impl postcard::ser_flavors::Flavor for Hashing {
    type Output = u64;

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.write(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.write(&[data]);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<u64> {
        Ok(self.0.finish())
    }
}

/// Reads pages of a listing from `after` on, keeping the items `keep` allows, until `max` are
/// kept or the listing ends; returns them and whether more may follow. An identity that may read
/// everything keeps every item of the first page, so that costs what an unfiltered listing does.
fn filtered_pages<T: Serialize>(
    mut after: Option<String>,
    max: usize,
    page: impl Fn(&Option<String>) -> (Vec<T>, bool),
    name: impl Fn(&T) -> String,
    keep: impl Fn(&T) -> bool,
) -> (Vec<T>, bool) {
    let mut kept = Vec::new();
    let mut bytes = 0;
    loop {
        let (items, more) = page(&after);
        let last = items.last().map(&name);
        let mut items = items.into_iter();
        for item in items.by_ref() {
            if keep(&item) {
                // A page ends before it would pass LIST_PAGE_BYTES_MAX (one item at least).
                bytes += distsync::wire::encoded_bytes(&item);
                if !kept.is_empty() && bytes > LIST_PAGE_BYTES_MAX {
                    return (kept, true);
                }
                kept.push(item);
                if kept.len() == max {
                    return (kept, more || items.len() > 0);
                }
            }
        }
        if !more || last.is_none() {
            return (kept, false);
        }
        after = last;
    }
}

/// Hands out the next revision, for fencing tokens.
fn next(revision: &mut u64) -> u64 {
    *revision += 1;
    *revision
}
