//! Durable FIFO queues: put, get with a visibility timeout, ack, nack, extend, dead-letters.
//!
//! ```no_run
//! # async fn example(client: distsync::Client) -> Result<(), distsync::QueueError> {
//! use std::time::Duration;
//!
//! let jobs = client.queue("jobs");
//! let id = jobs.put_with_dedup(b"resize photo 7".to_vec(), "photo-7").await?;
//! if let Some(delivery) = jobs.get(Duration::from_secs(1)).await? {
//!     println!("job {} attempt {}: {:?}", delivery.id, delivery.attempt, delivery.body);
//!     delivery.ack().await?; // deleted for good; never delivered again
//! }
//! # Ok(()) }
//! ```
//!
//! ## Delivery
//!
//! A get hands out the oldest deliverable messages with a **delivery tag** each and keeps them
//! invisible to other consumers for the visibility timeout. The message comes back (at the head of
//! the queue) when the consumer nacks it, when the timeout passes, or at once when the consumer's
//! session ends, so a crashed consumer's messages do not wait for their timeout. Each delivery has
//! its own tag: an ack carrying the tag of an earlier delivery is refused with
//! [`QueueError::StaleTag`], so a slow consumer can never acknowledge a redelivery that another
//! consumer is processing. After the queue's `max_attempts` deliveries a message moves to the
//! dead-letter queue `NAME.dlq`, with the history of its attempts.
//!
//! Delivery is at least once: a message whose ack did not happen is delivered again. An ack
//! succeeds at most once per message; for exactly-once effects make processing idempotent by
//! message id. See `examples/queue.rs` for a worker.
//!
//! A waiting get costs nothing while it waits: the cluster hands it a message in the same log
//! entry that enqueues one, and the node the client talks to pushes it at once.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::client::{unexpected, Client};
use crate::error::{ClientError, ErrorKind, QueueRefusal, ServerError};
use crate::merge::{answer_each, Merger};
use crate::wire::{
    Command, CommandResponse, DeliveryAttempt, PutMessage, PutOutcome, Query, QueryResponse, QueueAwaitOutcome,
    QueueDelivery, QueueOptions, QueueStats, Request, Response, SessionId, QUEUE_BATCH_MAX, QUEUE_WAIT_MS_MAX,
};

/// How long one [`Request::AwaitDelivery`] may stay open on a node before the client asks again.
const AWAIT_SLICE: Duration = Duration::from_secs(10);

/// How long each get of a [`Consumer`] waits before asking again.
const CONSUME_WAIT: Duration = Duration::from_secs(30);

/// Ids of gets, unique within the process and so within any session.
static NEXT_REQUEST: AtomicU64 = AtomicU64::new(1);

/// What a queue call can fail with. Each variant says what to do.
#[derive(Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueueError {
    /// The queue does not exist (ack, nack, extend, stats and delete do not create it). Check
    /// the name; a put or get creates a queue.
    #[error("queue {queue:?} does not exist; a put or get creates it")]
    NoSuchQueue {
        /// The queue.
        queue: String,
    },
    /// The delivery is no longer current: it was acked, nacked, timed out or ended with its
    /// session, and the message was (or will be) delivered again, maybe to another consumer.
    /// Stop working on it; do not publish its effects.
    #[error("delivery tag {tag} of queue {queue:?} is not current; the message was or will be delivered again")]
    StaleTag {
        /// The queue.
        queue: String,
        /// The tag.
        tag: u64,
    },
    /// A message exceeds the queue's `max_message_bytes`; nothing of the put was enqueued.
    #[error("a message of {bytes} bytes exceeds queue {queue:?}'s maximum of {max}; nothing was enqueued")]
    MessageTooLarge {
        /// The queue.
        queue: String,
        /// The message size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The cluster holds as much queued data (or as many queues or dedup ids) as it may; nothing
    /// was enqueued. Consume and ack messages, or delete queues, then retry.
    #[error("queue {queue:?} is full: {reason}")]
    Full {
        /// The queue.
        queue: String,
        /// Which limit.
        reason: String,
    },
    /// The session expired: its deliveries went back to their queues, so their tags are stale.
    /// The client opens a new session for later calls.
    #[error("session {session} expired; its deliveries were returned to their queues")]
    SessionExpired {
        /// The expired session.
        session: SessionId,
    },
    /// The cluster could not be reached or could not commit before the deadline. A put may or
    /// may not have been enqueued: retry it with the same dedup id to be sure it is enqueued once.
    #[error("cluster unavailable: {reason}")]
    Unavailable {
        /// The last failure seen.
        reason: String,
    },
    /// The request is invalid (bad name, empty batch, out-of-range option); fix it.
    #[error("invalid argument: {reason}")]
    InvalidArgument {
        /// What is wrong.
        reason: String,
    },
    /// Any other client failure.
    #[error(transparent)]
    Client(ClientError),
}

impl QueueError {
    /// What kind of failure this is: the classification the language bindings share.
    pub fn kind(&self) -> ErrorKind {
        match self {
            QueueError::NoSuchQueue { queue } => ErrorKind::NoSuchQueue { queue: queue.clone() },
            QueueError::StaleTag { queue, tag } => ErrorKind::StaleDelivery { queue: queue.clone(), tag: *tag },
            QueueError::MessageTooLarge { .. } | QueueError::InvalidArgument { .. } => ErrorKind::InvalidArgument,
            QueueError::Full { queue, .. } => ErrorKind::LimitReached { queue: Some(queue.clone()) },
            QueueError::SessionExpired { session } => ErrorKind::SessionExpired { session: *session },
            QueueError::Unavailable { .. } => ErrorKind::Unavailable,
            QueueError::Client(error) => error.kind(),
        }
    }
}

impl From<ClientError> for QueueError {
    fn from(error: ClientError) -> Self {
        match error {
            ClientError::Unavailable { reason } => QueueError::Unavailable { reason },
            ClientError::SessionExpired { session } => QueueError::SessionExpired { session },
            ClientError::InvalidArgument { reason } => QueueError::InvalidArgument { reason },
            ClientError::Server(ServerError::Queue(refusal)) => match refusal {
                QueueRefusal::NoSuchQueue { queue } => QueueError::NoSuchQueue { queue },
                QueueRefusal::StaleTag { queue, tag } => QueueError::StaleTag { queue, tag },
                QueueRefusal::MessageTooLarge { queue, bytes, max } => {
                    QueueError::MessageTooLarge { queue, bytes, max }
                }
                QueueRefusal::Full { queue, reason } => QueueError::Full { queue, reason },
            },
            other => QueueError::Client(other),
        }
    }
}

/// A handle to one queue; cheap to clone. Made by [`Client::queue`].
///
/// ```no_run
/// # async fn example(client: distsync::Client) -> Result<(), distsync::QueueError> {
/// use std::time::Duration;
///
/// let jobs = client.queue("jobs").visibility(Duration::from_secs(60));
/// jobs.put_batch(["a", "b", "c"]).await?;            // one log entry, FIFO order kept
/// for delivery in jobs.get_batch(10, Duration::ZERO).await? {
///     delivery.ack().await?;
/// }
/// println!("{} ready", jobs.stats().await?.depth);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Queue {
    client: Client,
    name: String,
    visibility: Option<Duration>,
    detach: bool,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("name", &self.name).field("visibility", &self.visibility).finish()
    }
}

impl Queue {
    pub(crate) fn new(client: Client, name: String) -> Self {
        Queue { client, name, visibility: None, detach: false }
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Gets through this handle keep their messages invisible for `visibility` instead of the
    /// queue's default.
    pub fn visibility(mut self, visibility: Duration) -> Self {
        self.visibility = Some(visibility);
        self
    }

    /// Gets through this handle make **detached** deliveries: they outlive this client's session,
    /// and only their visibility timeout (or a nack) returns them. For handing a delivery tag to
    /// another process, as `distsync queue get` followed by `distsync queue ack` does. A crashed
    /// consumer's detached deliveries wait for their full visibility timeout.
    pub fn detached(mut self) -> Self {
        self.detach = true;
        self
    }

    /// Creates the queue with `options`, or sets the options of the existing queue. Returns
    /// whether it was created. Queues are also created with default options by their first put
    /// or get.
    ///
    /// # Errors
    ///
    /// [`QueueError::InvalidArgument`] for options out of range; [`QueueError::Full`] beyond the
    /// cluster's queue count; [`QueueError::Unavailable`].
    pub async fn create(&self, options: QueueOptions) -> Result<bool, QueueError> {
        match self.write(Command::QueueCreate { queue: self.name.clone(), options }).await? {
            CommandResponse::QueueCreated { created } => Ok(created),
            other => Err(unexpected_answer(&other)),
        }
    }

    /// Deletes the queue and every message in it, delivered or not; returns how many it held.
    /// Its dead-letter queue stays.
    ///
    /// # Errors
    ///
    /// [`QueueError::NoSuchQueue`], [`QueueError::Unavailable`].
    pub async fn delete(&self) -> Result<u64, QueueError> {
        match self.write(Command::QueueDelete { queue: self.name.clone() }).await? {
            CommandResponse::QueueDeleted { messages } => Ok(messages),
            other => Err(unexpected_answer(&other)),
        }
    }

    /// Enqueues one message once a majority has it on disk; returns its id (unique, increasing
    /// in enqueue order).
    ///
    /// # Errors
    ///
    /// [`QueueError::MessageTooLarge`], [`QueueError::Full`], [`QueueError::Unavailable`] (the
    /// put may or may not have happened; use [`Queue::put_with_dedup`] to retry safely).
    ///
    /// Concurrent puts through one client into one queue are sent together: while a few requests
    /// are on their way, further puts wait and go together in the next one, each still answered
    /// with its own outcome. Puts issued one after another keep their order.
    pub async fn put(&self, body: impl Into<Vec<u8>>) -> Result<u64, QueueError> {
        let message = PutMessage { body: body.into(), dedup_id: None };
        Ok(PutBatcher::put(self, message).await?.id)
    }

    /// Enqueues one message unless a message with the same `dedup_id` was enqueued within the
    /// queue's dedup window (default two minutes); either way returns the id of the message that
    /// carries the dedup id.
    ///
    /// # Errors
    ///
    /// As [`Queue::put`].
    pub async fn put_with_dedup(
        &self,
        body: impl Into<Vec<u8>>,
        dedup_id: impl Into<String>,
    ) -> Result<u64, QueueError> {
        let message = PutMessage { body: body.into(), dedup_id: Some(dedup_id.into()) };
        Ok(PutBatcher::put(self, message).await?.id)
    }

    /// Enqueues messages in order as one log entry: all or none. Returns their ids.
    ///
    /// # Errors
    ///
    /// As [`Queue::put`]; [`QueueError::InvalidArgument`] for an empty batch or one larger than
    /// [`crate::wire::QUEUE_BATCH_MAX`].
    pub async fn put_batch<I, B>(&self, bodies: I) -> Result<Vec<u64>, QueueError>
    where
        I: IntoIterator<Item = B>,
        B: Into<Vec<u8>>,
    {
        let messages = bodies.into_iter().map(|body| PutMessage { body: body.into(), dedup_id: None }).collect();
        Ok(self.put_messages(messages).await?.into_iter().map(|outcome| outcome.id).collect())
    }

    /// Enqueues messages with optional dedup ids, in order, as one log entry: all or none.
    ///
    /// # Errors
    ///
    /// As [`Queue::put_batch`].
    pub async fn put_messages(&self, messages: Vec<PutMessage>) -> Result<Vec<PutOutcome>, QueueError> {
        let count = messages.len();
        match self.write(Command::QueuePut { queue: self.name.clone(), messages }).await? {
            CommandResponse::QueuePut { outcomes } if outcomes.len() == count => Ok(outcomes),
            other => Err(unexpected_answer(&other)),
        }
    }

    /// The oldest deliverable message, waiting up to `wait` for one to arrive (pushed by the
    /// cluster the moment it is enqueued); `None` when none arrived.
    ///
    /// # Errors
    ///
    /// [`QueueError::Unavailable`] when the cluster cannot be reached; nothing is then left in
    /// flight for this call (an unseen delivery is given back).
    pub async fn get(&self, wait: Duration) -> Result<Option<Delivery>, QueueError> {
        Ok(self.get_batch(1, wait).await?.pop())
    }

    /// Up to `max` of the oldest deliverable messages (at most 4 MiB of bodies, at least one),
    /// waiting up to `wait` for the first; empty when none arrived.
    ///
    /// # Errors
    ///
    /// As [`Queue::get`]; [`QueueError::InvalidArgument`] for `max` outside
    /// 1..=[`crate::wire::QUEUE_BATCH_MAX`].
    pub async fn get_batch(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        let limit = Instant::now() + wait;
        let mut renewed_session = false;
        loop {
            let remaining = limit.saturating_duration_since(Instant::now());
            let slice = remaining.min(Duration::from_millis(QUEUE_WAIT_MS_MAX));
            match self.get_once(max, slice).await {
                Ok(deliveries) if deliveries.is_empty() && Instant::now() < limit && slice < remaining => {}
                Ok(deliveries) => return Ok(deliveries),
                // The session ended while the get waited: nothing was delivered to this call, so
                // ask again under the new session once.
                Err(QueueError::SessionExpired { .. }) if !renewed_session => renewed_session = true,
                Err(error) => return Err(error),
            }
        }
    }

    async fn get_once(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        let request = NEXT_REQUEST.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let command = Command::QueueGet {
            queue: self.name.clone(),
            request,
            max: u32::try_from(max).unwrap_or(u32::MAX),
            visibility_ms: self.visibility.map(|v| v.as_millis().min(u128::from(u64::MAX)) as u64),
            wait_ms: wait.as_millis() as u64,
            detach: self.detach,
        };
        // Until the outcome is known messages may be in flight to this get: if the caller stops
        // waiting (drops this future) or the outcome is lost, give them back.
        let mut cancel = Cancel { client: Some(self.client.clone()), queue: self.name.clone(), request };
        let deadline = started + self.client.request_timeout();
        let (session, response) = match self.client.write_in_session(command, deadline).await {
            Ok(answer) => answer,
            Err(error @ ClientError::Unavailable { .. }) => {
                cancel.now().await;
                return Err(error.into());
            }
            Err(error) => {
                cancel.disarm();
                return Err(error.into());
            }
        };
        let deliveries = match response {
            CommandResponse::QueueDelivered { deliveries } => deliveries,
            CommandResponse::QueueWaiting { revision } => {
                let limit = started + wait + self.client.request_timeout();
                match self.await_delivery(session, request, revision, limit).await {
                    Ok(deliveries) => deliveries,
                    Err(Ended::Decided(error)) => {
                        cancel.disarm();
                        return Err(error);
                    }
                    Err(Ended::Undecided(error)) => {
                        cancel.now().await;
                        return Err(error);
                    }
                }
            }
            other => {
                cancel.now().await;
                return Err(unexpected_answer(&other));
            }
        };
        cancel.disarm();
        Ok(deliveries.into_iter().map(|delivery| Delivery::new(self.clone(), delivery)).collect())
    }

    /// Asks the node this client talks to until the waiting get is decided.
    async fn await_delivery(
        &self,
        session: SessionId,
        request: u64,
        queued_revision: u64,
        limit: Instant,
    ) -> Result<Vec<QueueDelivery>, Ended> {
        let mut last_failure = None;
        loop {
            let now = Instant::now();
            if now >= limit {
                return Err(Ended::Undecided(match last_failure {
                    Some(reason) => QueueError::Unavailable { reason },
                    None => QueueError::Unavailable { reason: "the cluster did not end the wait in time".into() },
                }));
            }
            let slice = (limit - now).min(AWAIT_SLICE);
            let await_request = Request::AwaitDelivery {
                queue: self.name.clone(),
                session,
                request,
                queued_revision,
                max_wait_ms: slice.as_millis() as u64,
            };
            let attempt = slice + self.client.attempt_timeout();
            let deadline = now + slice + self.client.request_timeout();
            match self.client.call_with(&await_request, deadline, attempt).await {
                Ok(Response::QueueAwait(QueueAwaitOutcome::Delivered(deliveries))) => return Ok(deliveries),
                Ok(Response::QueueAwait(QueueAwaitOutcome::Empty)) => return Ok(Vec::new()),
                Ok(Response::QueueAwait(QueueAwaitOutcome::Pending)) => {}
                Ok(Response::QueueAwait(QueueAwaitOutcome::SessionEnded)) => {
                    self.client.session_lost(session);
                    return Err(Ended::Decided(QueueError::SessionExpired { session }));
                }
                Ok(other) => return Err(Ended::Undecided(unexpected(&other).into())),
                // Keep waiting through an outage; the cluster decides the get meanwhile.
                Err(ClientError::Unavailable { reason }) => last_failure = Some(reason),
                Err(error) => return Err(Ended::Undecided(error.into())),
            }
        }
    }

    /// Acks several deliveries of this queue in one log entry.
    ///
    /// # Errors
    ///
    /// [`QueueError::StaleTag`] naming the first delivery that was not current (the others were
    /// acked); [`QueueError::NoSuchQueue`]; [`QueueError::Unavailable`].
    pub async fn ack_all(&self, deliveries: &[Delivery]) -> Result<(), QueueError> {
        self.ack_tags(deliveries.iter().map(|d| d.tag).collect()).await
    }

    async fn ack_tags(&self, tags: Vec<u64>) -> Result<(), QueueError> {
        match self.write(Command::QueueAck { queue: self.name.clone(), tags }).await? {
            CommandResponse::QueueAcked { stale } => self.refuse_stale(&stale),
            other => Err(unexpected_answer(&other)),
        }
    }

    /// Nacks several deliveries of this queue in one log entry: deliverable again at once.
    ///
    /// # Errors
    ///
    /// As [`Queue::ack_all`].
    pub async fn nack_all(&self, deliveries: &[Delivery]) -> Result<(), QueueError> {
        self.nack_tags(deliveries.iter().map(|d| d.tag).collect()).await
    }

    async fn nack_tags(&self, tags: Vec<u64>) -> Result<(), QueueError> {
        match self.write(Command::QueueNack { queue: self.name.clone(), tags }).await? {
            CommandResponse::QueueNacked { stale } => self.refuse_stale(&stale),
            other => Err(unexpected_answer(&other)),
        }
    }

    /// Acks the delivery `tag` (as printed by `distsync queue get --json`).
    ///
    /// # Errors
    ///
    /// As [`Delivery::ack`].
    pub async fn ack_tag(&self, tag: u64) -> Result<(), QueueError> {
        self.ack_tags(vec![tag]).await
    }

    /// Nacks the delivery `tag`.
    ///
    /// # Errors
    ///
    /// As [`Delivery::nack`].
    pub async fn nack_tag(&self, tag: u64) -> Result<(), QueueError> {
        self.nack_tags(vec![tag]).await
    }

    /// Keeps the delivery `tag` invisible for `visibility` from now; returns the leader time (ms
    /// since the Unix epoch) at which it becomes visible again.
    ///
    /// # Errors
    ///
    /// As [`Delivery::extend`].
    pub async fn extend_tag(&self, tag: u64, visibility: Duration) -> Result<u64, QueueError> {
        let visibility_ms = visibility.as_millis().min(u128::from(u64::MAX)) as u64;
        match self.write(Command::QueueExtend { queue: self.name.clone(), tag, visibility_ms }).await? {
            CommandResponse::QueueExtended { visible_at_ms } => Ok(visible_at_ms),
            other => Err(unexpected_answer(&other)),
        }
    }

    fn refuse_stale(&self, stale: &[u64]) -> Result<(), QueueError> {
        match stale.first() {
            Some(&tag) => Err(QueueError::StaleTag { queue: self.name.clone(), tag }),
            None => Ok(()),
        }
    }

    /// The queue's counters, read linearizably.
    ///
    /// # Errors
    ///
    /// [`QueueError::NoSuchQueue`], [`QueueError::Unavailable`].
    pub async fn stats(&self) -> Result<QueueStats, QueueError> {
        crate::wire::validate_queue_name(&self.name).map_err(ClientError::from)?;
        match self.client.read(Query::QueueStats { queue: self.name.clone() }).await? {
            QueryResponse::QueueStats { stats: Some(stats) } => Ok(stats),
            QueryResponse::QueueStats { stats: None } => Err(QueueError::NoSuchQueue { queue: self.name.clone() }),
            other => Err(QueueError::Client(ClientError::Protocol { reason: format!("unexpected answer: {other:?}") })),
        }
    }

    /// An endless stream of deliveries, fetched `prefetch` at a time (default 1). Deliveries
    /// fetched but not yet taken from the stream when it is dropped are nacked.
    ///
    /// ```no_run
    /// # async fn example(client: distsync::Client) -> Result<(), distsync::QueueError> {
    /// let mut consumer = client.queue("jobs").consume();
    /// loop {
    ///     let delivery = consumer.next().await?;
    ///     // ... process delivery.body ...
    ///     delivery.ack().await?;
    /// }
    /// # }
    /// ```
    pub fn consume(&self) -> Consumer {
        Consumer { queue: self.clone(), prefetch: 1, buffer: VecDeque::new(), fetching: None }
    }

    async fn write(&self, command: Command) -> Result<CommandResponse, QueueError> {
        Ok(self.client.write(command).await?)
    }
}

/// Bytes of bodies merged into one request by the [`PutBatcher`]; a larger message goes alone.
const MERGED_PUT_BYTES_MAX: usize = 1024 * 1024;

/// Requests of merged puts in flight per client and queue: enough to keep the cluster's commit
/// pipeline busy, few enough that puts arriving meanwhile share the next request.
const MERGED_PUTS_IN_FLIGHT_MAX: usize = 4;

/// Merges concurrent single puts of one client into one queue into `QueuePut` requests: at most
/// [`MERGED_PUTS_IN_FLIGHT_MAX`] requests in flight, and whatever arrives meanwhile goes in the
/// next one. The cluster already shares an fsync among concurrent writes; this also shares the
/// request, its session bookkeeping and its stored response, which is what bounds throughput
/// under load.
#[derive(Default)]
pub(crate) struct PutBatcher {
    merger: Merger<PutMessage, Result<PutOutcome, QueueError>>,
}

impl PutBatcher {
    async fn put(queue: &Queue, message: PutMessage) -> Result<PutOutcome, QueueError> {
        // Refuse what the cluster would refuse before it can fail a merged request.
        crate::wire::validate_queue_name(&queue.name).and_then(|()| message.validate()).map_err(ClientError::from)?;
        let batcher = queue.client.put_batcher(&queue.name);
        let (answered, start) = batcher.merger.push(message, MERGED_PUTS_IN_FLIGHT_MAX);
        if start {
            tokio::spawn(Self::send_all(batcher, queue.clone()));
        }
        answered.await.map_err(|_| QueueError::Unavailable { reason: "the client is shutting down".into() })?
    }

    /// Whether no put is pending or being sent.
    pub(crate) fn is_idle(&self) -> bool {
        self.merger.is_idle()
    }

    /// Sends what is pending, request after request, until nothing is left (one of the senders).
    async fn send_all(batcher: Arc<PutBatcher>, queue: Queue) {
        loop {
            let mut bytes = 0;
            let batch = batcher.merger.next_batch(|taken, message| {
                bytes += message.body.len();
                taken < QUEUE_BATCH_MAX && bytes <= MERGED_PUT_BYTES_MAX
            });
            let Some(batch) = batch else { break };
            let (messages, waiters): (Vec<PutMessage>, Vec<_>) = batch.into_iter().unzip();
            match queue.put_messages(messages.clone()).await {
                // One message's refusal must not fail the others: send each alone to say whose.
                Err(QueueError::MessageTooLarge { .. } | QueueError::Full { .. }) if messages.len() > 1 => {
                    for (message, waiter) in messages.into_iter().zip(waiters) {
                        let outcome = queue.put_messages(vec![message]).await.map(|outcomes| outcomes[0]);
                        let _ = waiter.send(outcome);
                    }
                }
                outcome => answer_each(waiters, outcome),
            }
        }
        queue.client.forget_put_batcher(&queue.name, &batcher);
    }
}

fn unexpected_answer(response: &CommandResponse) -> QueueError {
    QueueError::Client(ClientError::Protocol { reason: format!("unexpected answer to a queue request: {response:?}") })
}

/// How a waiting get ended without deliveries: decided by the cluster, or given up by the client.
enum Ended {
    Decided(QueueError),
    Undecided(QueueError),
}

/// Cancels a get on drop unless disarmed: in the background when dropped, or awaited with
/// [`Cancel::now`]. Messages delivered to the get that the caller never saw go back at once.
struct Cancel {
    client: Option<Client>,
    queue: String,
    request: u64,
}

impl Cancel {
    fn disarm(&mut self) {
        self.client = None;
    }

    fn command(&self) -> Command {
        Command::QueueCancel { queue: self.queue.clone(), request: self.request }
    }

    async fn now(&mut self) {
        if let Some(client) = self.client.take() {
            cancel(client, self.command(), self.queue.clone()).await;
        }
    }
}

async fn cancel(client: Client, command: Command, queue: String) {
    let deadline = Instant::now() + client.request_timeout();
    match client.write_in_session(command, deadline).await {
        Ok(_) | Err(ClientError::SessionExpired { .. }) => {}
        Err(error) => tracing::warn!(
            %queue, %error,
            "could not give back an unseen delivery; it returns at its visibility timeout or the session's end"
        ),
    }
}

impl Drop for Cancel {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(cancel(client, self.command(), self.queue.clone()));
    }
}

/// A delivered message: process it, then [`Delivery::ack`] it. Dropping it without an ack leaves
/// it in flight until its visibility timeout, a nack, or the end of the session.
#[derive(Clone)]
pub struct Delivery {
    /// The message id: unique in the cluster, increasing in enqueue order.
    pub id: u64,
    /// The tag of this delivery attempt.
    pub tag: u64,
    /// The attempt number, from 1.
    pub attempt: u32,
    /// The payload.
    pub body: Vec<u8>,
    /// Leader time of the enqueue, ms since the Unix epoch.
    pub enqueued_ms: u64,
    /// Leader time at which the message becomes deliverable again unless acked or extended.
    pub visible_at_ms: u64,
    /// Earlier attempts that ended without an ack, oldest first.
    pub history: Vec<DeliveryAttempt>,
    queue: Queue,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("queue", &self.queue.name)
            .field("id", &self.id)
            .field("tag", &self.tag)
            .field("attempt", &self.attempt)
            .field("bytes", &self.body.len())
            .finish()
    }
}

impl Delivery {
    fn new(queue: Queue, delivery: QueueDelivery) -> Self {
        Delivery {
            id: delivery.id,
            tag: delivery.tag,
            attempt: delivery.attempt,
            body: delivery.body,
            enqueued_ms: delivery.enqueued_ms,
            visible_at_ms: delivery.visible_at_ms,
            history: delivery.history,
            queue,
        }
    }

    /// The queue it came from.
    pub fn queue(&self) -> &str {
        &self.queue.name
    }

    /// Deletes the message for good; it is never delivered again.
    ///
    /// # Errors
    ///
    /// [`QueueError::StaleTag`] when this delivery is no longer current (its visibility timeout
    /// passed, it was nacked, or the session ended): the message was or will be delivered again,
    /// so the work done must not count. [`QueueError::Unavailable`]: the ack may or may not have
    /// happened; retrying is safe (a second ack of an acked delivery reports `StaleTag`).
    pub async fn ack(&self) -> Result<(), QueueError> {
        self.queue.ack_tag(self.tag).await
    }

    /// Makes the message deliverable again at once (at the head of the queue), or moves it to
    /// the dead-letter queue if this was its last attempt.
    ///
    /// # Errors
    ///
    /// As [`Delivery::ack`].
    pub async fn nack(&self) -> Result<(), QueueError> {
        self.queue.nack_tag(self.tag).await
    }

    /// Keeps the message invisible for `visibility` from now, for work that takes longer than
    /// expected.
    ///
    /// # Errors
    ///
    /// As [`Delivery::ack`]; [`QueueError::InvalidArgument`] outside 100 ms..=12 h.
    pub async fn extend(&mut self, visibility: Duration) -> Result<(), QueueError> {
        self.visible_at_ms = self.queue.extend_tag(self.tag, visibility).await?;
        Ok(())
    }
}

type Fetch = Pin<Box<dyn Future<Output = Result<Vec<Delivery>, QueueError>> + Send>>;

/// An endless stream of deliveries from one queue; see [`Queue::consume`]. Use
/// [`Consumer::next`], or the [`futures_core::Stream`] implementation.
pub struct Consumer {
    queue: Queue,
    prefetch: usize,
    buffer: VecDeque<Delivery>,
    fetching: Option<Fetch>,
}

impl Consumer {
    /// Fetch up to `prefetch` messages per get (1..=1000). More saves round trips; the fetched
    /// messages are in flight, invisible to other consumers, until taken and acked.
    pub fn prefetch(mut self, prefetch: usize) -> Self {
        self.prefetch = prefetch.clamp(1, crate::wire::QUEUE_BATCH_MAX);
        self
    }

    /// The next delivery, waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// [`QueueError::Unavailable`] while the cluster cannot be reached (call again to keep
    /// waiting), and the errors of [`Queue::get_batch`].
    pub async fn next(&mut self) -> Result<Delivery, QueueError> {
        std::future::poll_fn(|cx| self.poll_delivery(cx)).await
    }

    fn poll_delivery(&mut self, cx: &mut Context<'_>) -> Poll<Result<Delivery, QueueError>> {
        loop {
            if let Some(delivery) = self.buffer.pop_front() {
                return Poll::Ready(Ok(delivery));
            }
            let fetch = self.fetching.get_or_insert_with(|| {
                let queue = self.queue.clone();
                let prefetch = self.prefetch;
                Box::pin(async move { queue.get_batch(prefetch, CONSUME_WAIT).await })
            });
            match fetch.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(result) => {
                    self.fetching = None;
                    match result {
                        Ok(deliveries) => self.buffer.extend(deliveries),
                        Err(error) => return Poll::Ready(Err(error)),
                    }
                }
            }
        }
    }
}

impl futures_core::Stream for Consumer {
    type Item = Result<Delivery, QueueError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_delivery(cx).map(Some)
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let tags: Vec<u64> = self.buffer.drain(..).map(|d| d.tag).collect();
        let queue = self.queue.clone();
        runtime.spawn(async move {
            if let Err(error) = queue.nack_tags(tags).await {
                tracing::warn!(queue = %queue.name, %error, "could not return prefetched deliveries");
            }
        });
    }
}

impl Client {
    /// A durable FIFO queue; see [`crate::queue`]. Nothing is sent until it is used.
    pub fn queue(&self, name: impl Into<String>) -> Queue {
        Queue::new(self.clone(), name.into())
    }

    /// Every queue (dead-letter queues included) with its counters, read linearizably.
    ///
    /// # Errors
    ///
    /// [`QueueError::Unavailable`] when the cluster cannot answer in time.
    pub async fn queue_list(&self) -> Result<Vec<QueueStats>, QueueError> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            match self.read(Query::QueueList { after }).await? {
                QueryResponse::QueueList { queues, more } => {
                    after = queues.last().map(|queue| queue.name.clone());
                    all.extend(queues);
                    if !more || after.is_none() {
                        return Ok(all);
                    }
                }
                other => {
                    return Err(QueueError::Client(ClientError::Protocol {
                        reason: format!("unexpected answer: {other:?}"),
                    }))
                }
            }
        }
    }
}
