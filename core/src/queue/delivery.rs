//! [`Delivery`]: a delivered message and its settlement.

use std::time::Duration;

use super::{Queue, QueueError};
use crate::wire::{DeliveryAttempt, QueueDelivery};

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
    /// Earlier attempts that ended without an ack, and deliveries withdrawn unseen
    /// ([`AttemptOutcome::Withdrawn`](crate::wire::AttemptOutcome::Withdrawn)), oldest first.
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
    pub(super) fn new(queue: Queue, delivery: QueueDelivery) -> Self {
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
