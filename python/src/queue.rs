//! `Queue`, `Message` and `Consumer`, and their asyncio twins.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use distsync::wire::QueueOptions;
use distsync::Delivery;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::error::Failure;
use crate::run::{bytes_of, here, local, optional_seconds, seconds, spawn, wait, Local};

/// What the queue calls share between the blocking and asyncio flavours.
mod ops {
    use super::*;

    pub async fn put(queue: Local<distsync::Queue>, body: Vec<u8>, dedup: Option<String>) -> Result<u64, Failure> {
        let queue = here(&queue)?;
        Ok(match dedup {
            Some(dedup) => queue.put_with_dedup(body, dedup).await?,
            None => queue.put(body).await?,
        })
    }

    pub async fn put_batch(queue: Local<distsync::Queue>, bodies: Vec<Vec<u8>>) -> Result<Vec<u64>, Failure> {
        Ok(here(&queue)?.put_batch(bodies).await?)
    }

    pub async fn get_batch(
        queue: Local<distsync::Queue>,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivered>, Failure> {
        let deliveries = here(&queue)?.get_batch(max, wait).await?;
        Ok(deliveries.into_iter().map(|delivery| Delivered::new(&queue, delivery)).collect())
    }

    pub async fn ack(queue: Local<distsync::Queue>, tag: u64) -> Result<(), Failure> {
        Ok(here(&queue)?.ack_tag(tag).await?)
    }

    pub async fn nack(queue: Local<distsync::Queue>, tag: u64) -> Result<(), Failure> {
        Ok(here(&queue)?.nack_tag(tag).await?)
    }

    pub async fn extend(
        queue: Local<distsync::Queue>,
        tag: u64,
        visibility: Duration,
        visible_at: Arc<AtomicU64>,
    ) -> Result<(), Failure> {
        let at = here(&queue)?.extend_tag(tag, visibility).await?;
        visible_at.store(at, Ordering::Relaxed);
        Ok(())
    }

    pub async fn stats(queue: Local<distsync::Queue>) -> Result<QueueStats, Failure> {
        Ok(here(&queue)?.stats().await?.into())
    }

    pub async fn create(queue: Local<distsync::Queue>, options: QueueOptions) -> Result<bool, Failure> {
        Ok(here(&queue)?.create(options).await?)
    }

    pub async fn delete(queue: Local<distsync::Queue>) -> Result<u64, Failure> {
        Ok(here(&queue)?.delete().await?)
    }

    pub async fn next(
        consumer: Local<Arc<tokio::sync::Mutex<distsync::Consumer>>>,
        queue: Local<distsync::Queue>,
    ) -> Result<Delivered, Failure> {
        let consumer = here(&consumer)?.clone();
        let delivery = consumer.lock_owned().await.next().await?;
        Ok(Delivered::new(&queue, delivery))
    }
}

/// A delivery on its way to Python, as a `Message` or an `AsyncMessage`.
pub struct Delivered {
    queue: Local<distsync::Queue>,
    name: String,
    id: u64,
    tag: u64,
    attempt: u32,
    body: Vec<u8>,
    enqueued_ms: u64,
    visible_at_ms: u64,
}

impl Delivered {
    fn new(queue: &Local<distsync::Queue>, delivery: Delivery) -> Self {
        Delivered {
            queue: queue.clone(),
            name: delivery.queue().to_string(),
            id: delivery.id,
            tag: delivery.tag,
            attempt: delivery.attempt,
            enqueued_ms: delivery.enqueued_ms,
            visible_at_ms: delivery.visible_at_ms,
            body: delivery.body,
        }
    }
}

fn bodies(values: Vec<Bound<'_, PyAny>>) -> PyResult<Vec<Vec<u8>>> {
    values.iter().map(|value| bytes_of(value, "a message body")).collect()
}

fn queue_options(
    max_attempts: Option<u32>,
    visibility: Option<f64>,
    max_message_bytes: Option<u32>,
    dedup_window: Option<f64>,
) -> PyResult<QueueOptions> {
    let mut options = QueueOptions::default();
    if let Some(max_attempts) = max_attempts {
        options.max_attempts = max_attempts;
    }
    if let Some(visibility) = optional_seconds(visibility, "visibility")? {
        options.visibility_ms = u64::try_from(visibility.as_millis()).unwrap_or(u64::MAX);
    }
    if let Some(bytes) = max_message_bytes {
        options.max_message_bytes = bytes;
    }
    if let Some(window) = optional_seconds(dedup_window, "dedup_window")? {
        options.dedup_window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
    }
    Ok(options)
}

/// A durable FIFO queue, made by ``Client.queue``. Nothing is lost once ``put`` returns (a
/// majority of nodes has it on disk); a message is delivered again until acked; an ack
/// succeeds at most once. After ``max_attempts`` deliveries a message moves to ``NAME.dlq``.
///
/// Example::
///
///     jobs = client.queue("jobs")
///     jobs.put(b"resize photo 7", dedup_id="photo-7")
///     msg = jobs.get(wait=1.0)
///     if msg:
///         handle(msg.body)
///         msg.ack()
#[pyclass(module = "distsync", frozen)]
pub struct Queue {
    queue: Local<distsync::Queue>,
}

impl Queue {
    pub fn new(queue: distsync::Queue) -> Self {
        Queue { queue: local(queue) }
    }
}

#[pymethods]
impl Queue {
    /// The queue's name.
    #[getter]
    fn name(&self) -> PyResult<String> {
        Ok(here(&self.queue)?.name().to_string())
    }

    /// Enqueues `body` (bytes or str) once a majority has it on disk; returns its id.
    ///
    /// Args:
    ///     dedup_id: a put with an id seen in the queue's dedup window (2 minutes by default)
    ///         enqueues nothing and returns the first put's id: retry with the same id after
    ///         ``Unavailable`` to enqueue exactly once.
    ///
    /// Raises:
    ///     InvalidArgument: the body is over the queue's ``max_message_bytes``.
    ///     LimitReached: the cluster holds as much as it may; nothing was enqueued.
    ///     Unavailable: the put may or may not have happened (retry with a ``dedup_id``).
    #[pyo3(signature = (body, *, dedup_id=None))]
    fn put(&self, py: Python<'_>, body: &Bound<'_, PyAny>, dedup_id: Option<String>) -> PyResult<u64> {
        wait(py, ops::put(self.queue.clone(), bytes_of(body, "a message body")?, dedup_id))
    }

    /// Enqueues `bodies` in order, in one log entry; returns their ids.
    fn put_batch(&self, py: Python<'_>, bodies: Vec<Bound<'_, PyAny>>) -> PyResult<Vec<u64>> {
        wait(py, ops::put_batch(self.queue.clone(), self::bodies(bodies)?))
    }

    /// The oldest deliverable message, waiting up to `wait` seconds for one; ``None`` when
    /// none arrived. The message stays invisible to other consumers until acked, nacked, its
    /// visibility timeout passes, or this client's session ends.
    #[pyo3(signature = (wait=0.0))]
    fn get(&self, py: Python<'_>, wait: f64) -> PyResult<Option<Message>> {
        let wait_for = seconds(wait, "wait")?;
        let mut messages = crate::run::wait(py, ops::get_batch(self.queue.clone(), 1, wait_for))?;
        Ok(messages.pop().map(Message::from))
    }

    /// Up to `max` of the oldest deliverable messages (1 to 1000), waiting up to `wait`
    /// seconds for the first; empty when none arrived.
    #[pyo3(signature = (max, wait=0.0))]
    fn get_batch(&self, py: Python<'_>, max: usize, wait: f64) -> PyResult<Vec<Message>> {
        let wait_for = seconds(wait, "wait")?;
        let messages = crate::run::wait(py, ops::get_batch(self.queue.clone(), max, wait_for))?;
        Ok(messages.into_iter().map(Message::from).collect())
    }

    /// An endless iterator of messages, blocking until each arrives:
    /// ``for msg in queue.consume(): ...; msg.ack()``.
    ///
    /// Args:
    ///     prefetch: messages fetched per request (1 to 1000); fetched messages are in flight
    ///         (invisible to other consumers) until taken and acked.
    #[pyo3(signature = (*, prefetch=1))]
    fn consume(&self, prefetch: usize) -> PyResult<Consumer> {
        let consumer = here(&self.queue)?.consume().prefetch(prefetch);
        Ok(Consumer { consumer: local(Arc::new(tokio::sync::Mutex::new(consumer))), queue: self.queue.clone() })
    }

    /// The queue's counters and options.
    ///
    /// Raises:
    ///     NoSuchQueue: the queue does not exist.
    fn stats(&self, py: Python<'_>) -> PyResult<QueueStats> {
        wait(py, ops::stats(self.queue.clone()))
    }

    /// Creates the queue with these options, or sets them on the existing queue; returns
    /// whether it was created. Unset options take their defaults.
    ///
    /// Args:
    ///     max_attempts: deliveries before a message moves to ``NAME.dlq`` (default 5; 0 for
    ///         never).
    ///     visibility: default seconds a delivery stays invisible (default 30).
    ///     max_message_bytes: largest body (default 256 KiB).
    ///     dedup_window: seconds a ``dedup_id`` is remembered (default 120).
    #[pyo3(signature = (*, max_attempts=None, visibility=None, max_message_bytes=None, dedup_window=None))]
    fn create(
        &self,
        py: Python<'_>,
        max_attempts: Option<u32>,
        visibility: Option<f64>,
        max_message_bytes: Option<u32>,
        dedup_window: Option<f64>,
    ) -> PyResult<bool> {
        let options = queue_options(max_attempts, visibility, max_message_bytes, dedup_window)?;
        wait(py, ops::create(self.queue.clone(), options))
    }

    /// Deletes the queue and every message in it; returns how many it held.
    fn delete(&self, py: Python<'_>) -> PyResult<u64> {
        wait(py, ops::delete(self.queue.clone()))
    }

    fn __repr__(&self) -> String {
        match self.queue.get() {
            Ok(queue) => format!("distsync.Queue({:?})", queue.name()),
            Err(_) => "distsync.Queue(<from the parent process>)".into(),
        }
    }
}

/// A delivered message. Process it, then ``ack()`` it; ``nack()`` hands it back at once.
#[pyclass(module = "distsync", frozen)]
pub struct Message {
    delivered: Delivered,
    visible_at: Arc<AtomicU64>,
}

impl From<Delivered> for Message {
    fn from(delivered: Delivered) -> Self {
        let visible_at = Arc::new(AtomicU64::new(delivered.visible_at_ms));
        Message { delivered, visible_at }
    }
}

/// `Message` and `AsyncMessage`: the same read-only attributes, and the methods given.
macro_rules! message_class {
    ($class:ident { $($methods:tt)* }) => {
        #[pymethods]
        impl $class {
            $($methods)*

            /// The payload.
            #[getter]
            fn body<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
                PyBytes::new(py, &self.delivered.body)
            }

            /// The message id: unique in the cluster, increasing in enqueue order.
            #[getter]
            fn id(&self) -> u64 {
                self.delivered.id
            }

            /// The tag of this delivery attempt.
            #[getter]
            fn tag(&self) -> u64 {
                self.delivered.tag
            }

            /// The attempt number, from 1.
            #[getter]
            fn attempt(&self) -> u32 {
                self.delivered.attempt
            }

            /// The queue it came from.
            #[getter]
            fn queue(&self) -> &str {
                &self.delivered.name
            }

            /// Leader time of the enqueue, ms since the Unix epoch.
            #[getter]
            fn enqueued_ms(&self) -> u64 {
                self.delivered.enqueued_ms
            }

            /// Leader time at which the message is delivered again unless acked or extended.
            #[getter]
            fn visible_at_ms(&self) -> u64 {
                self.visible_at.load(Ordering::Relaxed)
            }

            fn __repr__(&self) -> String {
                format!(
                    "{}(queue={:?}, id={}, attempt={}, {} bytes)",
                    stringify!($class),
                    self.delivered.name,
                    self.delivered.id,
                    self.delivered.attempt,
                    self.delivered.body.len()
                )
            }
        }
    };
}

message_class!(Message {
    /// Deletes the message for good; it is never delivered again.
    ///
    /// Raises:
    ///     StaleDelivery: this delivery is no longer current (timed out, nacked, or the session
    ///         ended): the message was or will be delivered again; do not count the work.
    ///     Unavailable: the ack may or may not have happened; retrying is safe.
    fn ack(&self, py: Python<'_>) -> PyResult<()> {
        wait(py, ops::ack(self.delivered.queue.clone(), self.delivered.tag))
    }

    /// Makes the message deliverable again at once (or dead-letters it after its last attempt).
    fn nack(&self, py: Python<'_>) -> PyResult<()> {
        wait(py, ops::nack(self.delivered.queue.clone(), self.delivered.tag))
    }

    /// Keeps the message invisible for `visibility` seconds from now, for work that takes
    /// longer than expected.
    fn extend(&self, py: Python<'_>, visibility: f64) -> PyResult<()> {
        let visibility = seconds(visibility, "visibility")?;
        wait(py, ops::extend(self.delivered.queue.clone(), self.delivered.tag, visibility, self.visible_at.clone()))
    }
});

/// The endless iterator of ``Queue.consume``: each ``next`` blocks until a message arrives
/// (Ctrl-C interrupts it).
#[pyclass(module = "distsync", frozen)]
pub struct Consumer {
    consumer: Local<Arc<tokio::sync::Mutex<distsync::Consumer>>>,
    queue: Local<distsync::Queue>,
}

#[pymethods]
impl Consumer {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Message> {
        Ok(wait(py, ops::next(self.consumer.clone(), self.queue.clone()))?.into())
    }
}

/// A durable FIFO queue for asyncio, made by ``AsyncClient.queue``; as ``Queue``, with
/// coroutines, and ``consume()`` an async iterator.
#[pyclass(module = "distsync", frozen)]
pub struct AsyncQueue {
    queue: Local<distsync::Queue>,
}

impl AsyncQueue {
    pub fn new(queue: distsync::Queue) -> Self {
        AsyncQueue { queue: local(queue) }
    }
}

#[pymethods]
impl AsyncQueue {
    /// The queue's name.
    #[getter]
    fn name(&self) -> PyResult<String> {
        Ok(here(&self.queue)?.name().to_string())
    }

    /// Enqueues `body`; see ``Queue.put``.
    #[pyo3(signature = (body, *, dedup_id=None))]
    fn put<'py>(
        &self,
        py: Python<'py>,
        body: &Bound<'py, PyAny>,
        dedup_id: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        spawn(py, ops::put(self.queue.clone(), bytes_of(body, "a message body")?, dedup_id))
    }

    /// Enqueues `bodies` in order; see ``Queue.put_batch``.
    fn put_batch<'py>(&self, py: Python<'py>, bodies: Vec<Bound<'py, PyAny>>) -> PyResult<Bound<'py, PyAny>> {
        spawn(py, ops::put_batch(self.queue.clone(), self::bodies(bodies)?))
    }

    /// The oldest deliverable message or ``None``; see ``Queue.get``.
    #[pyo3(signature = (wait=0.0))]
    fn get<'py>(&self, py: Python<'py>, wait: f64) -> PyResult<Bound<'py, PyAny>> {
        let batch = ops::get_batch(self.queue.clone(), 1, seconds(wait, "wait")?);
        spawn(py, async move { Ok(batch.await?.pop().map(AsyncMessage::from)) })
    }

    /// Up to `max` messages; see ``Queue.get_batch``.
    #[pyo3(signature = (max, wait=0.0))]
    fn get_batch<'py>(&self, py: Python<'py>, max: usize, wait: f64) -> PyResult<Bound<'py, PyAny>> {
        let batch = ops::get_batch(self.queue.clone(), max, seconds(wait, "wait")?);
        spawn(py, async move { Ok(batch.await?.into_iter().map(AsyncMessage::from).collect::<Vec<_>>()) })
    }

    /// An endless async iterator of messages: ``async for msg in queue.consume(): ...``.
    #[pyo3(signature = (*, prefetch=1))]
    fn consume(&self, prefetch: usize) -> PyResult<AsyncConsumer> {
        let consumer = here(&self.queue)?.consume().prefetch(prefetch);
        Ok(AsyncConsumer { consumer: local(Arc::new(tokio::sync::Mutex::new(consumer))), queue: self.queue.clone() })
    }

    /// The queue's counters and options; see ``Queue.stats``.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        spawn(py, ops::stats(self.queue.clone()))
    }

    /// Creates the queue or sets its options; see ``Queue.create``.
    #[pyo3(signature = (*, max_attempts=None, visibility=None, max_message_bytes=None, dedup_window=None))]
    fn create<'py>(
        &self,
        py: Python<'py>,
        max_attempts: Option<u32>,
        visibility: Option<f64>,
        max_message_bytes: Option<u32>,
        dedup_window: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let options = queue_options(max_attempts, visibility, max_message_bytes, dedup_window)?;
        spawn(py, ops::create(self.queue.clone(), options))
    }

    /// Deletes the queue; see ``Queue.delete``.
    fn delete<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        spawn(py, ops::delete(self.queue.clone()))
    }

    fn __repr__(&self) -> String {
        match self.queue.get() {
            Ok(queue) => format!("distsync.AsyncQueue({:?})", queue.name()),
            Err(_) => "distsync.AsyncQueue(<from the parent process>)".into(),
        }
    }
}

/// A delivered message for asyncio; as ``Message``, with coroutines.
#[pyclass(module = "distsync", frozen)]
pub struct AsyncMessage {
    delivered: Delivered,
    visible_at: Arc<AtomicU64>,
}

impl From<Delivered> for AsyncMessage {
    fn from(delivered: Delivered) -> Self {
        let visible_at = Arc::new(AtomicU64::new(delivered.visible_at_ms));
        AsyncMessage { delivered, visible_at }
    }
}

message_class!(AsyncMessage {
    /// Deletes the message for good; see ``Message.ack``.
    fn ack<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        spawn(py, ops::ack(self.delivered.queue.clone(), self.delivered.tag))
    }

    /// Hands the message back at once; see ``Message.nack``.
    fn nack<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        spawn(py, ops::nack(self.delivered.queue.clone(), self.delivered.tag))
    }

    /// Keeps the message invisible for `visibility` seconds; see ``Message.extend``.
    fn extend<'py>(&self, py: Python<'py>, visibility: f64) -> PyResult<Bound<'py, PyAny>> {
        let visibility = seconds(visibility, "visibility")?;
        spawn(py, ops::extend(self.delivered.queue.clone(), self.delivered.tag, visibility, self.visible_at.clone()))
    }
});

/// The endless async iterator of ``AsyncQueue.consume``.
#[pyclass(module = "distsync", frozen)]
pub struct AsyncConsumer {
    consumer: Local<Arc<tokio::sync::Mutex<distsync::Consumer>>>,
    queue: Local<distsync::Queue>,
}

#[pymethods]
impl AsyncConsumer {
    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let next = ops::next(self.consumer.clone(), self.queue.clone());
        spawn(py, async move { Ok(AsyncMessage::from(next.await?)) })
    }
}

/// A queue's counters and options, from ``Queue.stats`` or ``Client.queues``.
#[pyclass(module = "distsync", frozen, get_all)]
pub struct QueueStats {
    /// The queue.
    name: String,
    /// Messages ready for delivery.
    depth: u64,
    /// Messages delivered and neither acked nor returned yet.
    in_flight: u64,
    /// Gets waiting for a message.
    waiting_consumers: u64,
    /// Messages moved to the dead-letter queue since the queue was created.
    dead_lettered: u64,
    /// Messages enqueued since the queue was created (duplicates excluded).
    put_total: u64,
    /// Messages acked since the queue was created.
    acked_total: u64,
    /// Bytes of message bodies held.
    bytes: u64,
    /// Age in ms of the oldest message not yet acked, or ``None`` when empty.
    oldest_age_ms: Option<u64>,
    /// Deliveries per message before dead-lettering (0: never).
    max_attempts: u32,
    /// Default visibility timeout, in seconds.
    visibility: f64,
    /// Largest message body, in bytes.
    max_message_bytes: u32,
    /// How long a dedup id is remembered, in seconds.
    dedup_window: f64,
}

impl From<distsync::QueueStats> for QueueStats {
    fn from(stats: distsync::QueueStats) -> Self {
        QueueStats {
            name: stats.name,
            depth: stats.depth,
            in_flight: stats.in_flight,
            waiting_consumers: stats.waiting_consumers,
            dead_lettered: stats.dead_lettered,
            put_total: stats.put_total,
            acked_total: stats.acked_total,
            bytes: stats.bytes,
            oldest_age_ms: stats.oldest_age_ms,
            max_attempts: stats.options.max_attempts,
            visibility: stats.options.visibility_ms as f64 / 1000.0,
            max_message_bytes: stats.options.max_message_bytes,
            dedup_window: stats.options.dedup_window_ms as f64 / 1000.0,
        }
    }
}

#[pymethods]
impl QueueStats {
    fn __repr__(&self) -> String {
        format!("QueueStats(name={:?}, depth={}, in_flight={})", self.name, self.depth, self.in_flight)
    }
}
