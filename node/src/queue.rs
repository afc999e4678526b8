//! `Queue`, `Message` and `Consumer`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use distsync::Delivery;
use napi::bindgen_prelude::{Buffer, PromiseRaw};
use napi::Env;
use napi_derive::napi;

use crate::error::Failure;
use crate::run::{bytes_of, count, millis, number, optional_millis, promise, settle, BytesArg, Shared};

/// Options of `Queue.put`.
#[napi(object)]
pub struct PutOptions {
    /// A put with an id seen in the queue's dedup window (2 minutes by default) enqueues
    /// nothing and resolves to the first put's id: retry with the same id after `UNAVAILABLE`
    /// to enqueue exactly once.
    pub dedup_id: Option<String>,
}

/// Options of `Queue.get` and `Queue.getBatch`.
#[napi(object)]
pub struct GetOptions {
    /// How long to wait for a message when none is ready, in ms. Default 0.
    pub wait_ms: Option<f64>,
}

/// Options of `Queue.consume`.
#[napi(object)]
pub struct ConsumeOptions {
    /// Messages fetched per round trip (1 to 1000). More saves round trips; fetched messages
    /// are invisible to other consumers until taken and acked. Default 1.
    pub prefetch: Option<f64>,
}

/// Settings of a queue, for `Queue.create`; each defaults as shown.
#[napi(object)]
pub struct QueueSettings {
    /// Deliveries per message before it moves to the dead-letter queue `NAME.dlq`; 0 means
    /// never. Default 5.
    pub max_attempts: Option<u32>,
    /// Visibility timeout of a delivery, in ms. Default 30000.
    pub visibility_ms: Option<f64>,
    /// Largest message body, in bytes. Default 262144.
    pub max_message_bytes: Option<u32>,
    /// How long a dedup id is remembered, in ms. Default 120000.
    pub dedup_window_ms: Option<f64>,
}

/// A queue's counters, from `Queue.stats` and `Client.queues`.
#[napi(object)]
pub struct QueueStats {
    pub name: String,
    pub max_attempts: u32,
    pub visibility_ms: f64,
    pub max_message_bytes: u32,
    pub dedup_window_ms: f64,
    /// Messages ready for delivery.
    pub depth: f64,
    /// Messages delivered and neither acked nor returned yet.
    pub in_flight: f64,
    /// Gets waiting for a message.
    pub waiting_consumers: f64,
    /// Messages moved to the dead-letter queue since the queue was created.
    pub dead_lettered: f64,
    /// Messages enqueued since the queue was created (duplicates excluded).
    pub put_total: f64,
    /// Messages acked since the queue was created.
    pub acked_total: f64,
    /// Bytes of message bodies held.
    pub bytes: f64,
    /// Age of the oldest message not yet acked, in ms.
    pub oldest_age_ms: Option<f64>,
}

impl From<distsync::wire::QueueStats> for QueueStats {
    fn from(stats: distsync::wire::QueueStats) -> Self {
        QueueStats {
            name: stats.name,
            max_attempts: stats.options.max_attempts,
            visibility_ms: number(stats.options.visibility_ms),
            max_message_bytes: stats.options.max_message_bytes,
            dedup_window_ms: number(stats.options.dedup_window_ms),
            depth: number(stats.depth),
            in_flight: number(stats.in_flight),
            waiting_consumers: number(stats.waiting_consumers),
            dead_lettered: number(stats.dead_lettered),
            put_total: number(stats.put_total),
            acked_total: number(stats.acked_total),
            bytes: number(stats.bytes),
            oldest_age_ms: stats.oldest_age_ms.map(number),
        }
    }
}

/// A durable FIFO queue, from `client.queue(name)`. Nothing is lost once `put` resolves (a
/// majority of nodes has it on disk); a message is delivered again until acked; an ack
/// succeeds at most once. After `maxAttempts` deliveries a message moves to `NAME.dlq`.
///
/// ```js
/// const jobs = client.queue('jobs')
/// await jobs.put(Buffer.from('resize photo 7'), { dedupId: 'photo-7' })
/// const msg = await jobs.get({ waitMs: 1000 })
/// if (msg) { handle(msg.body); await msg.ack() }
/// for await (const m of jobs.consume()) { handle(m.body); await m.ack() }
/// ```
#[napi]
pub struct Queue {
    shared: Shared,
    queue: distsync::Queue,
}

impl Queue {
    pub fn new(shared: Shared, queue: distsync::Queue) -> Self {
        Queue { shared, queue }
    }
}

#[napi]
impl Queue {
    /// The queue's name.
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.queue.name().to_string()
    }

    /// Enqueues `body` (a Buffer, any Uint8Array, or a string as UTF-8) once a majority has it
    /// on disk; resolves to its id (unique, increasing in enqueue order).
    ///
    /// Rejects with `INVALID_ARGUMENT` (body over the queue's `maxMessageBytes`),
    /// `LIMIT_REACHED` (nothing was enqueued), `UNAVAILABLE` (the put may or may not have
    /// happened: retry with a `dedupId`).
    #[napi(ts_args_type = "body: Buffer | Uint8Array | string, options?: PutOptions | null")]
    pub fn put<'env>(
        &self,
        env: &'env Env,
        body: BytesArg,
        options: Option<PutOptions>,
    ) -> napi::Result<PromiseRaw<'env, f64>> {
        let (queue, body) = (self.queue.clone(), bytes_of(body));
        let dedup = options.and_then(|options| options.dedup_id);
        promise(env, &self.shared, async move {
            let id = match dedup {
                Some(dedup) => queue.put_with_dedup(body, dedup).await?,
                None => queue.put(body).await?,
            };
            Ok(number(id))
        })
    }

    /// Enqueues `bodies` in order, in one log entry; resolves to their ids.
    #[napi(ts_args_type = "bodies: Array<Buffer | Uint8Array | string>")]
    pub fn put_batch<'env>(&self, env: &'env Env, bodies: Vec<BytesArg>) -> napi::Result<PromiseRaw<'env, Vec<f64>>> {
        let queue = self.queue.clone();
        let bodies: Vec<Vec<u8>> = bodies.into_iter().map(bytes_of).collect();
        promise(env, &self.shared, async move { Ok(queue.put_batch(bodies).await?.into_iter().map(number).collect()) })
    }

    /// The oldest deliverable message, waiting up to `waitMs` for one; `null` when none
    /// arrived. The message stays invisible to other consumers until acked, nacked, its
    /// visibility timeout passes, or this client's session ends.
    #[napi(ts_args_type = "options?: GetOptions | null", ts_return_type = "Promise<Message | null>")]
    pub fn get<'env>(
        &self,
        env: &'env Env,
        options: Option<GetOptions>,
    ) -> napi::Result<PromiseRaw<'env, Option<Message>>> {
        let (wait, shared, queue) = (wait_of(options), self.shared.clone(), self.queue.clone());
        promise(env, &self.shared, async move {
            Ok(queue.get(wait?).await?.map(|delivery| Message::new(shared, queue, delivery)))
        })
    }

    /// Up to `max` of the oldest deliverable messages (1 to 1000), waiting up to `waitMs` for
    /// the first; empty when none arrived.
    #[napi(ts_args_type = "max: number, options?: GetOptions | null")]
    pub fn get_batch<'env>(
        &self,
        env: &'env Env,
        max: f64,
        options: Option<GetOptions>,
    ) -> napi::Result<PromiseRaw<'env, Vec<Message>>> {
        let (max, wait) = (count(max, "max"), wait_of(options));
        let (shared, queue) = (self.shared.clone(), self.queue.clone());
        promise(env, &self.shared, async move {
            let deliveries = queue.get_batch(max?, wait?).await?;
            Ok(deliveries.into_iter().map(|delivery| Message::new(shared.clone(), queue.clone(), delivery)).collect())
        })
    }

    /// An endless stream of messages: `for await (const m of queue.consume()) { … await
    /// m.ack() }`. Leaving the loop (`break`, `return`, a throw) returns the prefetched
    /// messages not yet taken; `client.close()` ends the loop.
    #[napi(ts_args_type = "options?: ConsumeOptions | null")]
    pub fn consume(&self, env: &Env, options: Option<ConsumeOptions>) -> napi::Result<Consumer> {
        let prefetch = options.and_then(|options| options.prefetch).map(|prefetch| count(prefetch, "prefetch"));
        let prefetch = prefetch.transpose().map_err(|failure| failure.into_js(env))?;
        if prefetch.is_some_and(|prefetch| !(1..=distsync::wire::QUEUE_BATCH_MAX).contains(&prefetch)) {
            let reason = format!("prefetch must be 1 to {}", distsync::wire::QUEUE_BATCH_MAX);
            return Err(Failure::Argument(reason).into_js(env));
        }
        let consumer = self.queue.consume().prefetch(prefetch.unwrap_or(1));
        Ok(Consumer {
            shared: self.shared.clone(),
            queue: self.queue.clone(),
            consumer: Arc::new(tokio::sync::Mutex::new(Some(consumer))),
        })
    }

    /// The queue's counters. Rejects with `NO_SUCH_QUEUE`.
    #[napi]
    pub fn stats<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, QueueStats>> {
        let queue = self.queue.clone();
        promise(env, &self.shared, async move { Ok(queue.stats().await?.into()) })
    }

    /// Creates the queue with these settings; resolves to false when it already existed (its
    /// settings are then left as they are).
    #[napi(ts_args_type = "settings?: QueueSettings | null")]
    pub fn create<'env>(
        &self,
        env: &'env Env,
        settings: Option<QueueSettings>,
    ) -> napi::Result<PromiseRaw<'env, bool>> {
        let (options, queue) = (queue_options(settings), self.queue.clone());
        promise(env, &self.shared, async move { Ok(queue.create(options?).await?) })
    }

    /// Deletes the queue and every message in it; resolves to how many it held. Its
    /// dead-letter queue stays. Rejects with `NO_SUCH_QUEUE`.
    #[napi]
    pub fn delete<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, f64>> {
        let queue = self.queue.clone();
        promise(env, &self.shared, async move { Ok(number(queue.delete().await?)) })
    }
}

fn wait_of(options: Option<GetOptions>) -> Result<std::time::Duration, Failure> {
    Ok(optional_millis(options.and_then(|options| options.wait_ms), "waitMs")?.unwrap_or_default())
}

fn queue_options(settings: Option<QueueSettings>) -> Result<distsync::wire::QueueOptions, Failure> {
    let mut options = distsync::wire::QueueOptions::default();
    let Some(settings) = settings else { return Ok(options) };
    let as_ms = |duration: std::time::Duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    if let Some(max_attempts) = settings.max_attempts {
        options.max_attempts = max_attempts;
    }
    if let Some(visibility) = optional_millis(settings.visibility_ms, "visibilityMs")? {
        options.visibility_ms = as_ms(visibility);
    }
    if let Some(bytes) = settings.max_message_bytes {
        options.max_message_bytes = bytes;
    }
    if let Some(window) = optional_millis(settings.dedup_window_ms, "dedupWindowMs")? {
        options.dedup_window_ms = as_ms(window);
    }
    Ok(options)
}

/// A delivered message: process it, then `ack()` it. A message neither acked nor nacked is
/// delivered again after its visibility timeout, or when this client's session ends.
#[napi]
pub struct Message {
    shared: Shared,
    queue: distsync::Queue,
    id: u64,
    tag: u64,
    attempt: u32,
    body: Vec<u8>,
    enqueued_ms: u64,
    visible_at_ms: Arc<AtomicU64>,
}

impl Message {
    fn new(shared: Shared, queue: distsync::Queue, delivery: Delivery) -> Self {
        Message {
            shared,
            queue,
            id: delivery.id,
            tag: delivery.tag,
            attempt: delivery.attempt,
            enqueued_ms: delivery.enqueued_ms,
            visible_at_ms: Arc::new(AtomicU64::new(delivery.visible_at_ms)),
            body: delivery.body,
        }
    }
}

#[napi]
impl Message {
    /// The payload (a new Buffer on each access).
    #[napi(getter)]
    pub fn body(&self) -> Buffer {
        Buffer::from(self.body.clone())
    }

    /// The message id: unique in the cluster, increasing in enqueue order.
    #[napi(getter)]
    pub fn id(&self) -> f64 {
        number(self.id)
    }

    /// The tag of this delivery attempt.
    #[napi(getter)]
    pub fn tag(&self) -> f64 {
        number(self.tag)
    }

    /// The attempt number, from 1.
    #[napi(getter)]
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The queue it came from.
    #[napi(getter)]
    pub fn queue(&self) -> String {
        self.queue.name().to_string()
    }

    /// Leader time of the enqueue, ms since the Unix epoch.
    #[napi(getter)]
    pub fn enqueued_ms(&self) -> f64 {
        number(self.enqueued_ms)
    }

    /// Leader time at which the message becomes deliverable again unless acked or extended.
    #[napi(getter)]
    pub fn visible_at_ms(&self) -> f64 {
        number(self.visible_at_ms.load(Ordering::Relaxed))
    }

    /// Deletes the message for good; it is never delivered again.
    ///
    /// Rejects with `STALE_DELIVERY` when this delivery is no longer current (timed out,
    /// nacked, its session ended): the message was or will be delivered again, so the work
    /// done must not count. `UNAVAILABLE`: the ack may or may not have happened; retrying is
    /// safe.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn ack<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        let (queue, tag) = (self.queue.clone(), self.tag);
        promise(env, &self.shared, async move { Ok(queue.ack_tag(tag).await?) })
    }

    /// Makes the message deliverable again at once (at the head of the queue), or moves it to
    /// the dead-letter queue if this was its last attempt. Rejects as `ack`.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn nack<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        let (queue, tag) = (self.queue.clone(), self.tag);
        promise(env, &self.shared, async move { Ok(queue.nack_tag(tag).await?) })
    }

    /// Keeps the message invisible for `visibilityMs` from now (100 ms to 12 h), for work that
    /// takes longer than expected. Rejects as `ack`.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn extend<'env>(&self, env: &'env Env, visibility_ms: f64) -> napi::Result<PromiseRaw<'env, ()>> {
        let visibility = millis(visibility_ms, "visibilityMs");
        let (queue, tag, visible_at) = (self.queue.clone(), self.tag, self.visible_at_ms.clone());
        promise(env, &self.shared, async move {
            visible_at.store(queue.extend_tag(tag, visibility?).await?, Ordering::Relaxed);
            Ok(())
        })
    }
}

/// One step of a `Consumer`: the JavaScript iterator protocol's result.
#[napi(object, object_from_js = false)]
pub struct ConsumerStep {
    pub done: bool,
    pub value: Option<Message>,
}

/// An endless stream of messages from one queue, from `queue.consume()`: an async iterable
/// (`for await`), or call `next()` yourself.
#[napi]
pub struct Consumer {
    shared: Shared,
    queue: distsync::Queue,
    /// `None` once returned.
    consumer: Arc<tokio::sync::Mutex<Option<distsync::Consumer>>>,
}

#[napi]
impl Consumer {
    /// The next message, waiting as long as it takes: `{ done: false, value: message }`, or
    /// `{ done: true }` once the consumer was returned or the client closed.
    ///
    /// Rejects with `UNAVAILABLE` while the cluster cannot be reached (call again to keep
    /// waiting) and `NO_SUCH_QUEUE` if the queue is deleted.
    #[napi(ts_return_type = "Promise<IteratorResult<Message, undefined>>")]
    pub fn next<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ConsumerStep>> {
        let (shared, queue, consumer) = (self.shared.clone(), self.queue.clone(), self.consumer.clone());
        let done = ConsumerStep { done: true, value: None };
        // Not `promise`: a close ends the iteration instead of failing it.
        settle(env, async move {
            let next = async {
                let mut consumer = consumer.lock().await;
                let Some(consumer) = consumer.as_mut() else { return Ok(None) };
                Ok::<_, Failure>(Some(consumer.next().await?))
            };
            match shared.guard(next).await {
                Ok(Some(delivery)) => {
                    Ok(ConsumerStep { done: false, value: Some(Message::new(shared, queue, delivery)) })
                }
                Ok(None) | Err(Failure::Closed) => Ok(done),
                Err(failure) => Err(failure),
            }
        })
    }

    /// Stops the consumer (what `break` out of a `for await` loop calls): the prefetched
    /// messages not yet taken are returned to the queue.
    #[napi(js_name = "return", ts_return_type = "Promise<IteratorResult<Message, undefined>>")]
    pub fn finish<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ConsumerStep>> {
        let consumer = self.consumer.clone();
        env.spawn_future(async move {
            // Dropped here, inside the runtime: the Rust consumer returns what it prefetched.
            drop(consumer.lock().await.take());
            Ok(ConsumerStep { done: true, value: None })
        })
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if let Ok(mut consumer) = self.consumer.try_lock() {
            if let Some(consumer) = consumer.take() {
                self.shared.drop_inside(consumer);
            }
        }
    }
}
