//! Queues: [`Queue`], [`Consumer`] and [`Delivery`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use distsync::wire::QueueOptions;

use crate::error::Outcome;
use crate::run::{block_on, drop_on_runtime, on_runtime};

/// A durable FIFO queue. Nothing is lost once `put` returns; a message is delivered again
/// until acked; an ack succeeds at most once.
#[derive(uniffi::Object)]
pub struct Queue {
    pub(crate) queue: distsync::Queue,
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
