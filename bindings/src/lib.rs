//! uniffi exports of the distsync client, from which `bindings/generate.sh` generates the Kotlin
//! and Swift SDKs (`bindings/kotlin`, `bindings/swift`).
//!
//! Thin by design: every behaviour (leader discovery, retries, sessions, lock ownership) lives
//! in the Rust client. Each call runs on the client's per-process runtime
//! ([`distsync::runtime::runtime`]); an async method awaits it from the caller's executor
//! (Kotlin coroutines, Swift concurrency), and cancelling the caller withdraws the call, as
//! dropping a Rust future does. The `…Blocking` variants wait on the calling thread, for JVM and
//! mobile code outside coroutines.
//!
//! ```kotlin
//! val client = Client.connect(listOf("127.0.0.1:7101"), "tls/ca.pem")
//! val lock = client.lock("reports")
//! try { write(report, lock.token()) } finally { lock.release() }
//! ```

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distsync::runtime;
use distsync::wire::{Consistency, LockMode, QueueOptions};
use distsync::{
    ClientError, ClientOptions, ClientTls, ErrorKind, LockBuilder, LockError, LockGuard, OwnerHandle, QueueError,
};

uniffi::setup_scaffolding!();

/// Every failure of a call. Each variant's `reason` says what happened and what to do.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum DistsyncError {
    /// The lock was not granted within the timeout; nothing is held.
    #[error("{reason}")]
    LockTimeout { reason: String, lock: String },
    /// Waiting would have closed a cycle of owners waiting for each other; nothing changed.
    /// Release a lock of the cycle and retry, or take locks in one order.
    #[error("{reason}")]
    Deadlock { reason: String, lock: String, cycle: Vec<CycleLink> },
    /// This owner already holds or awaits the lock.
    #[error("{reason}")]
    AlreadyHeld { reason: String, lock: String },
    /// The lock is not held by this owner (released, or lost with the session): whatever it
    /// protected may have been changed since.
    #[error("{reason}")]
    NotHeld { reason: String, lock: String },
    /// The session expired, so the cluster released its locks and returned its deliveries.
    #[error("{reason}")]
    SessionExpired { reason: String, session: u64 },
    /// No node could serve the request in time (no leader, a partition, nodes down). Safe to
    /// retry; a queue put is made safe to retry by a dedup id.
    #[error("{reason}")]
    Unavailable { reason: String },
    /// The request is invalid (a bad name, key, value, option or configuration); fix it.
    #[error("{reason}")]
    InvalidArgument { reason: String },
    /// The queue does not exist (ack, nack and delete do not create one).
    #[error("{reason}")]
    NoSuchQueue { reason: String, queue: String },
    /// The delivery is no longer current: the message was or will be delivered again. Do not
    /// publish its effects.
    #[error("{reason}")]
    StaleDelivery { reason: String, queue: String, tag: u64 },
    /// The cluster is at one of its limits (`queue`, when a queue is full); nothing was changed.
    #[error("{reason}")]
    LimitReached { reason: String, queue: Option<String> },
    /// Any other failure (a protocol mismatch, a server fault).
    #[error("{reason}")]
    Internal { reason: String },
}

/// One link of a deadlock cycle: the owner `(session, actor)` waits for the next link's owner
/// through `lock`; the last waits for the first.
#[derive(Debug, uniffi::Record)]
pub struct CycleLink {
    pub session: u64,
    pub actor: u64,
    pub lock: String,
}

impl DistsyncError {
    /// The variant for a client error, from the classification the bindings share.
    fn of(reason: String, kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::LockTimeout { lock } => DistsyncError::LockTimeout { reason, lock },
            ErrorKind::Deadlock { lock, cycle } => DistsyncError::Deadlock {
                reason,
                lock,
                cycle: cycle
                    .into_iter()
                    .map(|(owner, lock)| CycleLink { session: owner.session, actor: owner.actor, lock })
                    .collect(),
            },
            ErrorKind::AlreadyHeld { lock } => DistsyncError::AlreadyHeld { reason, lock },
            ErrorKind::NotHeld { lock } => DistsyncError::NotHeld { reason, lock },
            ErrorKind::SessionExpired { session } => DistsyncError::SessionExpired { reason, session },
            ErrorKind::Unavailable => DistsyncError::Unavailable { reason },
            ErrorKind::InvalidArgument => DistsyncError::InvalidArgument { reason },
            ErrorKind::NoSuchQueue { queue } => DistsyncError::NoSuchQueue { reason, queue },
            ErrorKind::StaleDelivery { queue, tag } => DistsyncError::StaleDelivery { reason, queue, tag },
            ErrorKind::LimitReached { queue } => DistsyncError::LimitReached { reason, queue },
            _ => DistsyncError::Internal { reason },
        }
    }
}

impl From<ClientError> for DistsyncError {
    fn from(error: ClientError) -> Self {
        Self::of(error.to_string(), error.kind())
    }
}

impl From<LockError> for DistsyncError {
    fn from(error: LockError) -> Self {
        Self::of(error.to_string(), error.kind())
    }
}

impl From<QueueError> for DistsyncError {
    fn from(error: QueueError) -> Self {
        Self::of(error.to_string(), error.kind())
    }
}

type Outcome<T> = Result<T, DistsyncError>;

/// Runs `future` on the client's runtime and awaits it from whatever executor polls this one;
/// dropping this future (a cancelled coroutine or Task) aborts the work, which withdraws what
/// it waited for.
async fn on_runtime<T, F>(future: F) -> Outcome<T>
where
    T: Send + 'static,
    F: Future<Output = Outcome<T>> + Send + 'static,
{
    struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);
    impl<T> Drop for AbortOnDrop<T> {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let mut task = AbortOnDrop(runtime::runtime()?.spawn(future));
    match (&mut task.0).await {
        Ok(outcome) => outcome,
        Err(failed) => Err(DistsyncError::Internal { reason: format!("the call's task failed: {failed}") }),
    }
}

/// Drops `value` inside the client's runtime, where its cleanup (a background release, the
/// return of prefetched messages) can be spawned; foreign objects are freed on foreign threads.
fn drop_on_runtime<T>(value: T) {
    if let Ok(runtime) = runtime::runtime() {
        let _context = runtime.enter();
        drop(value);
    }
}

/// Runs `future` to completion on the calling thread (which must not be a runtime thread).
fn block_on<T>(future: impl Future<Output = Outcome<T>>) -> Outcome<T> {
    runtime::runtime()?.block_on(future)
}

/// A lock owner: locks taken with one `Owner` belong to one actor. Made by `Client.owner()`.
/// Each `lock` call without one is its own owner.
#[derive(uniffi::Object)]
pub struct Owner {
    handle: OwnerHandle,
}

#[uniffi::export]
impl Owner {
    /// The actor id the cluster records (shown by `distsync lock show` and in deadlock cycles).
    pub fn actor(&self) -> u64 {
        self.handle.actor()
    }
}

/// A connection to a distsync cluster; share one per process. Any subset of the nodes will do:
/// the client finds the leader and follows it across failovers.
#[derive(uniffi::Object)]
pub struct Client {
    client: distsync::Client,
}

#[uniffi::export]
impl Client {
    /// Connects: returns once a node answers (proving the addresses and the CA certificate at
    /// `ca_path`, `tls/ca.pem` of `distsync dev`). Throws `InvalidArgument` for unusable
    /// endpoints or CA, `Unavailable` when no node answers.
    #[uniffi::constructor]
    pub async fn connect(endpoints: Vec<String>, ca_path: String) -> Outcome<Arc<Self>> {
        on_runtime(connect(endpoints, ca_path, None)).await
    }

    /// `connect` with the session TTL (how long the cluster keeps this client's locks after
    /// it falls silent, 1000 to 3600000 ms) and the request timeout (per call, across retries).
    #[uniffi::constructor]
    pub async fn connect_with(
        endpoints: Vec<String>,
        ca_path: String,
        session_ttl_ms: u64,
        request_timeout_ms: u64,
    ) -> Outcome<Arc<Self>> {
        on_runtime(connect(endpoints, ca_path, Some((session_ttl_ms, request_timeout_ms)))).await
    }

    /// `connect`, waiting on the calling thread.
    #[uniffi::constructor]
    pub fn connect_blocking(endpoints: Vec<String>, ca_path: String) -> Outcome<Arc<Self>> {
        block_on(connect(endpoints, ca_path, None))
    }

    /// Acquires lock `name`, waiting in line until granted or `timeout_ms` passes. Pass an
    /// `owner` to tie nested locks of one actor together; without one the call is its own owner.
    ///
    /// Throws `LockTimeout`, `Deadlock` (at once, with the cycle), `AlreadyHeld`,
    /// `SessionExpired`, `Unavailable`, `InvalidArgument`.
    #[uniffi::method(default(shared = false, timeout_ms = None, owner = None))]
    pub async fn lock(
        &self,
        name: String,
        shared: bool,
        timeout_ms: Option<u64>,
        owner: Option<Arc<Owner>>,
    ) -> Outcome<Arc<Lock>> {
        on_runtime(self.acquire(name, shared, timeout_ms, owner)).await
    }

    /// `lock`, waiting on the calling thread.
    #[uniffi::method(default(shared = false, timeout_ms = None, owner = None))]
    pub fn lock_blocking(
        &self,
        name: String,
        shared: bool,
        timeout_ms: Option<u64>,
        owner: Option<Arc<Owner>>,
    ) -> Outcome<Arc<Lock>> {
        block_on(self.acquire(name, shared, timeout_ms, owner))
    }

    /// Takes lock `name` if it is free right now and nobody waits for it; null at once when it
    /// is taken (nothing is left waiting). Owners as for `lock`.
    #[uniffi::method(default(shared = false, owner = None))]
    pub async fn try_lock(&self, name: String, shared: bool, owner: Option<Arc<Owner>>) -> Outcome<Option<Arc<Lock>>> {
        let (request, owner) = self.lock_request(name, shared, None, owner);
        on_runtime(async move {
            match request.try_acquire().await {
                Ok(guard) => Ok(Some(Lock::new(guard, owner))),
                Err(LockError::WouldBlock { .. }) => Ok(None),
                Err(error) => Err(error.into()),
            }
        })
        .await
    }

    /// Holders and waiters of lock `name` (read linearizably); null when nobody holds or awaits
    /// it.
    pub async fn lock_info(&self, name: String) -> Outcome<Option<LockInfo>> {
        let client = self.client.clone();
        on_runtime(async move {
            let info = client.lock_show(&name).await?;
            Ok(info.map(|info| LockInfo {
                name: info.name,
                holders: info
                    .holders
                    .into_iter()
                    .map(|holder| LockHolder {
                        session: holder.owner.session,
                        actor: holder.owner.actor,
                        shared: holder.mode == LockMode::Shared,
                        token: holder.token,
                    })
                    .collect(),
                waiters: info
                    .waiters
                    .into_iter()
                    .map(|waiter| LockWaiter {
                        session: waiter.owner.session,
                        actor: waiter.owner.actor,
                        shared: waiter.mode == LockMode::Shared,
                        upgrade: waiter.upgrade,
                    })
                    .collect(),
            }))
        })
        .await
    }

    /// A new lock owner, distinct from every other.
    pub fn owner(&self) -> Arc<Owner> {
        Arc::new(Owner { handle: self.client.owner() })
    }

    /// A durable FIFO queue; nothing is sent until it is used, and a put or get creates it.
    pub fn queue(&self, name: String) -> Arc<Queue> {
        Arc::new(Queue { queue: self.client.queue(name) })
    }

    /// The coherent cache: values in Redis, copies on every node, linearizable reads.
    pub fn cache(&self) -> Arc<Cache> {
        Arc::new(Cache { cache: self.client.cache() })
    }

    /// Ends the session now, releasing its locks and returning its deliveries at once instead
    /// of at the session TTL. (`close()` of the Kotlin object, or dropping the Swift one, frees
    /// the client itself.)
    pub async fn close_session(&self) {
        let client = self.client.clone();
        let _ = on_runtime(async move {
            client.close().await;
            Ok(())
        })
        .await;
    }

    /// `close_session`, waiting on the calling thread.
    pub fn close_session_blocking(&self) {
        let client = self.client.clone();
        let _ = block_on(async move {
            client.close().await;
            Ok(())
        });
    }
}

async fn connect(endpoints: Vec<String>, ca_path: String, timing: Option<(u64, u64)>) -> Outcome<Arc<Client>> {
    let tls = ClientTls::from_ca_file(&ca_path)?;
    let mut options = ClientOptions::new(endpoints, tls);
    if let Some((session_ttl_ms, request_timeout_ms)) = timing {
        options = options
            .session_ttl(Duration::from_millis(session_ttl_ms))
            .request_timeout(Duration::from_millis(request_timeout_ms));
    }
    Ok(Arc::new(Client { client: distsync::Client::connect_with(options).await? }))
}

impl Client {
    /// The request for lock `name`, and its owner: `owner`, or a new one (each call without
    /// an owner is its own owner).
    fn lock_request(
        &self,
        name: String,
        shared: bool,
        timeout_ms: Option<u64>,
        owner: Option<Arc<Owner>>,
    ) -> (LockBuilder, OwnerHandle) {
        let owner = owner.map(|owner| owner.handle).unwrap_or_else(|| self.client.owner());
        let mut request = self.client.lock(name).owner(&owner);
        if shared {
            request = request.shared();
        }
        if let Some(timeout_ms) = timeout_ms {
            request = request.timeout(Duration::from_millis(timeout_ms));
        }
        (request, owner)
    }

    fn acquire(
        &self,
        name: String,
        shared: bool,
        timeout_ms: Option<u64>,
        owner: Option<Arc<Owner>>,
    ) -> impl Future<Output = Outcome<Arc<Lock>>> + Send + 'static {
        let (request, owner) = self.lock_request(name, shared, timeout_ms, owner);
        async move { Ok(Lock::new(request.acquire().await?, owner)) }
    }
}

/// Who holds and who awaits a lock, from `Client.lockInfo`.
#[derive(Debug, uniffi::Record)]
pub struct LockInfo {
    pub name: String,
    /// One exclusive holder, or any number of shared ones.
    pub holders: Vec<LockHolder>,
    /// In the order they will be served.
    pub waiters: Vec<LockWaiter>,
}

/// A holder of a lock: the owner `(session, actor)` and its fencing token.
#[derive(Debug, uniffi::Record)]
pub struct LockHolder {
    pub session: u64,
    pub actor: u64,
    pub shared: bool,
    pub token: u64,
}

/// A waiter for a lock: the owner `(session, actor)`; `upgrade` when a shared holder waits to
/// become exclusive.
#[derive(Debug, uniffi::Record)]
pub struct LockWaiter {
    pub session: u64,
    pub actor: u64,
    pub shared: bool,
    pub upgrade: bool,
}

/// A held lock. Pass `token()` with every write to the protected resource, and have the
/// resource refuse a token lower than the highest it has seen.
#[derive(uniffi::Object)]
pub struct Lock {
    name: String,
    owner: OwnerHandle,
    hold: Mutex<Hold>,
}

struct Hold {
    guard: Option<LockGuard>,
    token: u64,
    shared: bool,
}

impl Lock {
    fn new(guard: LockGuard, owner: OwnerHandle) -> Arc<Self> {
        let hold = Hold { token: guard.token(), shared: guard.mode() == LockMode::Shared, guard: None };
        let name = guard.name().to_string();
        Arc::new(Lock { name, owner, hold: Mutex::new(Hold { guard: Some(guard), ..hold }) })
    }

    fn take(&self) -> Outcome<LockGuard> {
        self.hold.lock().expect("lock hold").guard.take().ok_or_else(|| DistsyncError::NotHeld {
            reason: format!("lock {:?} was already released through this object; acquire it again", self.name),
            lock: self.name.clone(),
        })
    }

    fn release_future(&self) -> impl Future<Output = Outcome<()>> + Send + 'static {
        let guard = self.take();
        async move { Ok(guard?.release().await?) }
    }

    async fn upgrade_future(self: Arc<Self>) -> Outcome<()> {
        let mut guard = self.take()?;
        let outcome = guard.upgrade().await;
        let mut hold = self.hold.lock().expect("lock hold");
        hold.token = guard.token();
        hold.shared = guard.mode() == LockMode::Shared;
        hold.guard = Some(guard);
        Ok(outcome?)
    }
}

#[uniffi::export]
impl Lock {
    /// The lock's name.
    pub fn name(&self) -> String {
        self.name.clone()
    }

    /// The fencing token: strictly increasing per lock across holders and leader changes.
    pub fn token(&self) -> u64 {
        self.hold.lock().expect("lock hold").token
    }

    /// Whether this is a shared hold.
    pub fn is_shared(&self) -> bool {
        self.hold.lock().expect("lock hold").shared
    }

    /// Whether the lock may still be treated as held (not released, session lease current).
    pub fn is_held(&self) -> bool {
        self.hold.lock().expect("lock hold").guard.as_ref().is_some_and(LockGuard::is_held)
    }

    /// The owner holding it; pass it to nested `lock` calls of the same actor.
    pub fn owner(&self) -> Arc<Owner> {
        Arc::new(Owner { handle: self.owner })
    }

    /// Releases the lock. Throws `NotHeld` or `SessionExpired` when the hold was already lost
    /// or released (whatever it protected may have been changed since), `Unavailable`.
    pub async fn release(&self) -> Outcome<()> {
        on_runtime(self.release_future()).await
    }

    /// `release`, waiting on the calling thread.
    pub fn release_blocking(&self) -> Outcome<()> {
        block_on(self.release_future())
    }

    /// Upgrades a shared hold to exclusive; `token()` is then the new, higher token. Throws
    /// `Deadlock` when another shared holder upgrades too, `LockTimeout` (the shared hold is
    /// kept), `InvalidArgument` when not shared.
    pub async fn upgrade(self: Arc<Self>) -> Outcome<()> {
        on_runtime(self.upgrade_future()).await
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        drop_on_runtime(self.hold.get_mut().expect("lock hold").guard.take());
    }
}

/// A durable FIFO queue. Nothing is lost once `put` returns; a message is delivered again
/// until acked; an ack succeeds at most once.
#[derive(uniffi::Object)]
pub struct Queue {
    queue: distsync::Queue,
}

impl Queue {
    fn put_future(
        &self,
        body: Vec<u8>,
        dedup_id: Option<String>,
    ) -> impl Future<Output = Outcome<u64>> + Send + 'static {
        let queue = self.queue.clone();
        async move {
            Ok(match dedup_id {
                Some(dedup) => queue.put_with_dedup(body, dedup).await?,
                None => queue.put(body).await?,
            })
        }
    }

    fn get_future(&self, wait_ms: u64) -> impl Future<Output = Outcome<Option<Arc<Delivery>>>> + Send + 'static {
        let queue = self.queue.clone();
        async move {
            let delivery = queue.get(Duration::from_millis(wait_ms)).await?;
            Ok(delivery.map(|delivery| Arc::new(Delivery { delivery })))
        }
    }
}

#[uniffi::export]
impl Queue {
    /// The queue's name.
    pub fn name(&self) -> String {
        self.queue.name().to_string()
    }

    /// Enqueues `body` once a majority has it on disk; returns its id. A put with a `dedup_id`
    /// seen in the queue's dedup window enqueues nothing and returns the first put's id, so
    /// retrying after `Unavailable` with the same id enqueues exactly once.
    #[uniffi::method(default(dedup_id = None))]
    pub async fn put(&self, body: Vec<u8>, dedup_id: Option<String>) -> Outcome<u64> {
        on_runtime(self.put_future(body, dedup_id)).await
    }

    /// `put`, waiting on the calling thread.
    #[uniffi::method(default(dedup_id = None))]
    pub fn put_blocking(&self, body: Vec<u8>, dedup_id: Option<String>) -> Outcome<u64> {
        block_on(self.put_future(body, dedup_id))
    }

    /// Enqueues `bodies` in this order, all or nothing, in one request; returns their ids.
    pub async fn put_batch(&self, bodies: Vec<Vec<u8>>) -> Outcome<Vec<u64>> {
        let queue = self.queue.clone();
        on_runtime(async move { Ok(queue.put_batch(bodies).await?) }).await
    }

    /// Up to `max` (1 to 1000) of the oldest deliverable messages in one request, waiting up to
    /// `wait_ms` for the first; empty when none arrived.
    #[uniffi::method(default(wait_ms = 0))]
    pub async fn get_batch(&self, max: u32, wait_ms: u64) -> Outcome<Vec<Arc<Delivery>>> {
        let queue = self.queue.clone();
        on_runtime(async move {
            let deliveries = queue.get_batch(max as usize, Duration::from_millis(wait_ms)).await?;
            Ok(deliveries.into_iter().map(|delivery| Arc::new(Delivery { delivery })).collect())
        })
        .await
    }

    /// The oldest deliverable message, waiting up to `wait_ms` for one; null when none arrived.
    #[uniffi::method(default(wait_ms = 0))]
    pub async fn get(&self, wait_ms: u64) -> Outcome<Option<Arc<Delivery>>> {
        on_runtime(self.get_future(wait_ms)).await
    }

    /// `get`, waiting on the calling thread.
    #[uniffi::method(default(wait_ms = 0))]
    pub fn get_blocking(&self, wait_ms: u64) -> Outcome<Option<Arc<Delivery>>> {
        block_on(self.get_future(wait_ms))
    }

    /// Creates the queue with these options, or sets the options of the existing queue; returns
    /// whether it was created. A null option takes its default (5 attempts, 30 s visibility,
    /// 256 KiB messages, 2 min dedup window). A put or get creates a queue with the defaults.
    /// Messages past `maxAttempts` deliveries move to the queue `<name>.dlq`.
    #[uniffi::method(default(
        max_attempts = None,
        visibility_ms = None,
        max_message_bytes = None,
        dedup_window_ms = None
    ))]
    pub async fn create(
        &self,
        max_attempts: Option<u32>,
        visibility_ms: Option<u64>,
        max_message_bytes: Option<u32>,
        dedup_window_ms: Option<u64>,
    ) -> Outcome<bool> {
        let defaults = QueueOptions::default();
        let options = QueueOptions {
            max_attempts: max_attempts.unwrap_or(defaults.max_attempts),
            visibility_ms: visibility_ms.unwrap_or(defaults.visibility_ms),
            max_message_bytes: max_message_bytes.unwrap_or(defaults.max_message_bytes),
            dedup_window_ms: dedup_window_ms.unwrap_or(defaults.dedup_window_ms),
        };
        let queue = self.queue.clone();
        on_runtime(async move { Ok(queue.create(options).await?) }).await
    }

    /// The queue's counters. Throws `NoSuchQueue` when it does not exist.
    pub async fn stats(&self) -> Outcome<QueueStats> {
        let queue = self.queue.clone();
        on_runtime(async move {
            let stats = queue.stats().await?;
            Ok(QueueStats {
                depth: stats.depth,
                in_flight: stats.in_flight,
                waiting_consumers: stats.waiting_consumers,
                dead_lettered: stats.dead_lettered,
                put_total: stats.put_total,
                acked_total: stats.acked_total,
                bytes: stats.bytes,
                oldest_age_ms: stats.oldest_age_ms,
                max_attempts: stats.options.max_attempts,
                visibility_ms: stats.options.visibility_ms,
            })
        })
        .await
    }

    /// An endless stream of this queue's messages, fetched `prefetch` at a time (1 to 1000;
    /// more saves round trips, and the fetched messages stay invisible to other consumers until
    /// taken and acked). Kotlin's `queue.deliveries()` is a `Flow` over it, Swift's an
    /// `AsyncThrowingStream`.
    #[uniffi::method(default(prefetch = 1))]
    pub fn consume(&self, prefetch: u32) -> Arc<Consumer> {
        let consumer = self.queue.consume().prefetch(prefetch as usize);
        let (stopped, _) = tokio::sync::watch::channel(false);
        Arc::new(Consumer { consumer: Arc::new(tokio::sync::Mutex::new(Some(consumer))), stopped })
    }

    /// Deletes the queue and every message in it; returns how many it held.
    pub async fn delete(&self) -> Outcome<u64> {
        let queue = self.queue.clone();
        on_runtime(async move { Ok(queue.delete().await?) }).await
    }
}

/// A queue's counters, from `Queue.stats()`.
#[derive(Debug, uniffi::Record)]
pub struct QueueStats {
    /// Messages ready for delivery.
    pub depth: u64,
    /// Messages delivered and neither acked nor returned yet.
    pub in_flight: u64,
    /// Gets waiting for a message.
    pub waiting_consumers: u64,
    /// Messages moved to the dead-letter queue since the queue was created.
    pub dead_lettered: u64,
    /// Messages enqueued since the queue was created (duplicates excluded).
    pub put_total: u64,
    /// Messages acked since the queue was created.
    pub acked_total: u64,
    /// Bytes of message bodies held.
    pub bytes: u64,
    /// Age of the oldest message not yet acked, in ms; null when there is none.
    pub oldest_age_ms: Option<u64>,
    /// Deliveries of a message before it is dead-lettered.
    pub max_attempts: u32,
    /// How long a delivery stays invisible to other consumers, in ms.
    pub visibility_ms: u64,
}

/// An endless stream of deliveries from one queue, from `Queue.consume()`: call `next()` until
/// `stop()`. One `next()` at a time.
#[derive(uniffi::Object)]
pub struct Consumer {
    /// Taken out (and dropped on the runtime, which returns the prefetched messages) by `stop`.
    consumer: Arc<tokio::sync::Mutex<Option<distsync::Consumer>>>,
    stopped: tokio::sync::watch::Sender<bool>,
}

impl Consumer {
    fn next_future(&self) -> impl Future<Output = Outcome<Option<Arc<Delivery>>>> + Send + 'static {
        let consumer = self.consumer.clone();
        let mut stopped = self.stopped.subscribe();
        async move {
            let next = async {
                match consumer.lock().await.as_mut() {
                    Some(consumer) => consumer.next().await.map(Some),
                    None => Ok(None),
                }
            };
            let delivery = tokio::select! {
                biased;
                // Also when the Consumer object is gone.
                _ = stopped.wait_for(|stopped| *stopped) => None,
                delivery = next => delivery?,
            };
            Ok(delivery.map(|delivery| Arc::new(Delivery { delivery })))
        }
    }
}

#[uniffi::export]
impl Consumer {
    /// The next delivery, waiting as long as it takes; null once the consumer is stopped.
    /// Throws `Unavailable` while the cluster cannot be reached (call again to keep waiting),
    /// `NoSuchQueue` if the queue is deleted.
    pub async fn next(&self) -> Outcome<Option<Arc<Delivery>>> {
        on_runtime(self.next_future()).await
    }

    /// `next`, waiting on the calling thread.
    pub fn next_blocking(&self) -> Outcome<Option<Arc<Delivery>>> {
        block_on(self.next_future())
    }

    /// Stops: a waiting `next` returns null, and the messages fetched ahead and not taken go back
    /// to the queue at once (not at their visibility timeout). Taken deliveries stay yours to
    /// ack or nack.
    pub async fn stop(&self) {
        self.stopped.send_replace(true);
        let consumer = self.consumer.clone();
        let _ = on_runtime(async move {
            drop(consumer.lock().await.take());
            Ok(())
        })
        .await;
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.stopped.send_replace(true);
        drop_on_runtime(self.consumer.try_lock().ok().and_then(|mut consumer| consumer.take()));
    }
}

/// A delivered message: process it, then `ack()` it. Unacked, it is delivered again after its
/// visibility timeout or when the session ends.
#[derive(uniffi::Object)]
pub struct Delivery {
    delivery: distsync::Delivery,
}

#[uniffi::export]
impl Delivery {
    /// The payload.
    pub fn body(&self) -> Vec<u8> {
        self.delivery.body.clone()
    }

    /// The message id: unique, increasing in enqueue order.
    pub fn id(&self) -> u64 {
        self.delivery.id
    }

    /// The tag of this delivery attempt.
    pub fn tag(&self) -> u64 {
        self.delivery.tag
    }

    /// The attempt number, from 1.
    pub fn attempt(&self) -> u32 {
        self.delivery.attempt
    }

    /// Deletes the message for good. Throws `StaleDelivery` when this delivery is no longer
    /// current (the message was or will be delivered again).
    pub async fn ack(&self) -> Outcome<()> {
        let delivery = self.delivery.clone();
        on_runtime(async move { Ok(delivery.ack().await?) }).await
    }

    /// `ack`, waiting on the calling thread.
    pub fn ack_blocking(&self) -> Outcome<()> {
        let delivery = self.delivery.clone();
        block_on(async move { Ok(delivery.ack().await?) })
    }

    /// Makes the message deliverable again at once (or dead-letters it after its last attempt).
    pub async fn nack(&self) -> Outcome<()> {
        let delivery = self.delivery.clone();
        on_runtime(async move { Ok(delivery.nack().await?) }).await
    }

    /// `nack`, waiting on the calling thread.
    pub fn nack_blocking(&self) -> Outcome<()> {
        let delivery = self.delivery.clone();
        block_on(async move { Ok(delivery.nack().await?) })
    }

    /// Keeps the message invisible to other consumers for `visibility_ms` from now, for work
    /// that outlasts the visibility timeout. Throws `StaleDelivery` when no longer current.
    pub async fn extend(&self, visibility_ms: u64) -> Outcome<()> {
        let mut delivery = self.delivery.clone();
        on_runtime(async move { Ok(delivery.extend(Duration::from_millis(visibility_ms)).await?) }).await
    }
}

/// The coherent cache: values in Redis, a coherent copy on every node, linearizable reads.
#[derive(uniffi::Object)]
pub struct Cache {
    cache: distsync::Cache,
}

impl Cache {
    fn get_future(&self, key: String, local: bool) -> impl Future<Output = Outcome<Option<Vec<u8>>>> + Send + 'static {
        let cache = if local { self.cache.clone().consistency(Consistency::Local) } else { self.cache.clone() };
        async move { Ok(cache.get(key).await?) }
    }

    fn set_future(
        &self,
        key: String,
        value: Vec<u8>,
        ttl_seconds: Option<u64>,
    ) -> impl Future<Output = Outcome<u64>> + Send + 'static {
        let cache = self.cache.clone();
        async move {
            Ok(match ttl_seconds {
                Some(ttl) => cache.set_with_ttl(key, value, Duration::from_secs(ttl)).await?,
                None => cache.set(key, value).await?,
            })
        }
    }
}

#[uniffi::export]
impl Cache {
    /// The value of `key`, or null when it has none. Linearizable: it reflects every write
    /// acknowledged before the call. With `local`, the home node answers from what it has
    /// applied, without asking the leader: faster, and it may miss a write acknowledged moments
    /// ago.
    #[uniffi::method(default(local = false))]
    pub async fn get(&self, key: String, local: bool) -> Outcome<Option<Vec<u8>>> {
        on_runtime(self.get_future(key, local)).await
    }

    /// `get`, waiting on the calling thread.
    #[uniffi::method(default(local = false))]
    pub fn get_blocking(&self, key: String, local: bool) -> Outcome<Option<Vec<u8>>> {
        block_on(self.get_future(key, local))
    }

    /// Sets `key` to `value`, expiring after `ttl_seconds` if given; returns the write's version.
    #[uniffi::method(default(ttl_seconds = None))]
    pub async fn set(&self, key: String, value: Vec<u8>, ttl_seconds: Option<u64>) -> Outcome<u64> {
        on_runtime(self.set_future(key, value, ttl_seconds)).await
    }

    /// `set`, waiting on the calling thread.
    #[uniffi::method(default(ttl_seconds = None))]
    pub fn set_blocking(&self, key: String, value: Vec<u8>, ttl_seconds: Option<u64>) -> Outcome<u64> {
        block_on(self.set_future(key, value, ttl_seconds))
    }

    /// Deletes `key`; returns whether it had a value.
    pub async fn delete(&self, key: String) -> Outcome<bool> {
        let cache = self.cache.clone();
        on_runtime(async move { Ok(cache.delete(key).await?) }).await
    }
}
