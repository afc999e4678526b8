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
//!
//! ## Layout
//!
//! This file is the [`Queue`] handle with puts and administration; `get.rs` the gets (waiting
//! with the client's shared wait machinery, `pending.rs`), `settle.rs` acks, nacks and
//! extensions, `put_batcher.rs` the merging of concurrent puts, `delivery.rs` and
//! `consumer.rs` what a consumer holds, `error.rs` what fails.

mod consumer;
mod delivery;
mod error;
mod get;
mod put_batcher;
mod settle;

use std::time::Duration;

pub use self::consumer::Consumer;
pub use self::delivery::Delivery;
use self::error::unexpected_answer;
pub use self::error::QueueError;
use self::put_batcher::PutBatcher;
pub(crate) use self::put_batcher::QueueState;
use crate::client::{CallOptions, Client};
use crate::error::ClientError;
use crate::pending::collect_pages;
use crate::wire::{Command, CommandResponse, PutMessage, PutOutcome, Query, QueryResponse, QueueOptions, QueueStats};

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
    /// [`crate::wire::QUEUE_BATCH_MAX`]; an error whose [`QueueError::kind`] is
    /// [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) for a batch whose encoding exceeds
    /// [`crate::wire::WRITE_BYTES_MAX`] (4 MiB): split it into several batches.
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
        Consumer::new(self.clone())
    }

    async fn write(&self, command: Command) -> Result<CommandResponse, QueueError> {
        Ok(self.client.write(command, CallOptions::default()).await?.1)
    }
}

/// Every queue with its counters; see [`Client::queue_list`].
pub(crate) async fn list(client: &Client) -> Result<Vec<QueueStats>, QueueError> {
    let page = |after| async move {
        match client.read(Query::QueueList { after }).await? {
            QueryResponse::QueueList { queues, more } => Ok((queues, more)),
            other => Err(QueueError::Client(ClientError::Protocol { reason: format!("unexpected answer: {other:?}") })),
        }
    };
    collect_pages(page, |queue: &QueueStats| &queue.name).await
}
