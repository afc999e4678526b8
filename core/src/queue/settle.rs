//! Settling deliveries: ack (delete for good), nack (deliver again), extend (keep invisible).

use std::time::Duration;

use super::error::unexpected_answer;
use super::{Delivery, Queue, QueueError};
use crate::wire::{Command, CommandResponse};

impl Queue {
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

    pub(super) async fn nack_tags(&self, tags: Vec<u64>) -> Result<(), QueueError> {
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
}
