//! Queues on the wire: messages, options, deliveries, counters, and the checks of names, batches
//! and visibility timeouts.

use serde::{Deserialize, Serialize};

use super::{
    SessionId, QUEUE_ATTEMPTS_MAX, QUEUE_BATCH_MAX, QUEUE_DEDUP_ID_BYTES_MAX, QUEUE_DEDUP_WINDOW_MS_MAX,
    QUEUE_MESSAGE_BYTES_MAX, QUEUE_NAME_BYTES_MAX, QUEUE_VISIBILITY_MS_MAX, QUEUE_VISIBILITY_MS_MIN, QUEUE_WAIT_MS_MAX,
};
use crate::error::ServerError;

#[allow(unused_imports)] // for intra-doc links
use super::Request;

/// One message to enqueue.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PutMessage {
    /// The payload, at most the queue's `max_message_bytes`.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// A producer-chosen id: a put repeating an id seen within the queue's dedup window
    /// enqueues nothing and answers the first message's id.
    pub dedup_id: Option<String>,
}

impl PutMessage {
    /// Checks the body against [`QUEUE_MESSAGE_BYTES_MAX`] and the dedup id's length.
    ///
    /// # Errors
    ///
    /// [`ServerError::InvalidArgument`] saying which limit.
    pub fn validate(&self) -> Result<(), ServerError> {
        if self.body.len() > QUEUE_MESSAGE_BYTES_MAX {
            return Err(ServerError::InvalidArgument {
                reason: format!("message is {} bytes, the maximum is {QUEUE_MESSAGE_BYTES_MAX}", self.body.len()),
            });
        }
        match &self.dedup_id {
            Some(id) if id.is_empty() || id.len() > QUEUE_DEDUP_ID_BYTES_MAX => Err(ServerError::InvalidArgument {
                reason: format!("dedup id is {} bytes; it must be 1..={QUEUE_DEDUP_ID_BYTES_MAX}", id.len()),
            }),
            _ => Ok(()),
        }
    }
}

/// The outcome of one message of a put.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutOutcome {
    /// The message id: a revision, unique in the cluster and increasing in enqueue order.
    pub id: u64,
    /// Whether the dedup id was seen before, so nothing was enqueued and `id` is the first
    /// message's.
    pub duplicate: bool,
}

/// A queue's options. [`QueueOptions::default`] is what a queue created on first use gets.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueOptions {
    /// Deliveries per message before it moves to the dead-letter queue `NAME.dlq`; 0 means
    /// never (dead-letter queues themselves use 0). Default 5.
    pub max_attempts: u32,
    /// Default visibility timeout of a delivery, in ms. Default 30 s.
    pub visibility_ms: u64,
    /// Largest message body, in bytes, at most [`QUEUE_MESSAGE_BYTES_MAX`]. Default 256 KiB.
    pub max_message_bytes: u32,
    /// How long a dedup id is remembered, in ms. Default 2 minutes.
    pub dedup_window_ms: u64,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions { max_attempts: 5, visibility_ms: 30_000, max_message_bytes: 256 * 1024, dedup_window_ms: 120_000 }
    }
}

impl QueueOptions {
    /// Checks the options' ranges.
    ///
    /// # Errors
    ///
    /// [`ServerError::InvalidArgument`] naming the option and its range.
    pub fn validate(&self) -> Result<(), ServerError> {
        let invalid = |reason: String| Err(ServerError::InvalidArgument { reason });
        if self.max_attempts > QUEUE_ATTEMPTS_MAX {
            return invalid(format!(
                "max attempts {} exceeds {QUEUE_ATTEMPTS_MAX}; use 0 for never dead-lettering",
                self.max_attempts
            ));
        }
        validate_visibility(self.visibility_ms)?;
        if self.max_message_bytes == 0 || self.max_message_bytes as usize > QUEUE_MESSAGE_BYTES_MAX {
            return invalid(format!(
                "max message bytes {} is outside 1..={QUEUE_MESSAGE_BYTES_MAX}",
                self.max_message_bytes
            ));
        }
        if self.dedup_window_ms > QUEUE_DEDUP_WINDOW_MS_MAX {
            return invalid(format!(
                "dedup window of {} ms exceeds {QUEUE_DEDUP_WINDOW_MS_MAX} ms",
                self.dedup_window_ms
            ));
        }
        Ok(())
    }
}

/// The suffix of a queue's dead-letter queue: messages of `jobs` that used up their attempts
/// move to `jobs.dlq`.
pub const DEAD_LETTER_SUFFIX: &str = ".dlq";

/// How a delivery of a message ended without an ack.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// The consumer nacked it.
    Nacked,
    /// Its visibility timeout passed.
    TimedOut,
    /// The consumer's session ended (the consumer crashed, was cut off, or closed).
    SessionEnded,
    /// Handed to a get whose caller had stopped waiting (its timeout passed, or its connection
    /// dropped) and taken back unseen: not counted as an attempt, so the next delivery has the
    /// same attempt number.
    Withdrawn,
}

impl AttemptOutcome {
    /// Lowercase name, as printed by the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Nacked => "nacked",
            AttemptOutcome::TimedOut => "timed_out",
            AttemptOutcome::SessionEnded => "session_ended",
            AttemptOutcome::Withdrawn => "withdrawn",
        }
    }
}

/// One earlier delivery attempt of a message.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DeliveryAttempt {
    /// The queue it was delivered from (the original queue, for a dead-lettered message).
    pub queue: String,
    /// Its attempt number in that queue, from 1.
    pub attempt: u32,
    /// The consumer's session.
    pub session: SessionId,
    /// Leader time of the delivery, ms since the Unix epoch.
    pub delivered_ms: u64,
    /// Leader time the attempt ended.
    pub ended_ms: u64,
    /// How it ended.
    pub outcome: AttemptOutcome,
}

/// A delivered message, as a get returns it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct QueueDelivery {
    /// The message id.
    pub id: u64,
    /// The delivery tag: names this delivery attempt only, so an ack with the tag of an earlier
    /// attempt is refused.
    pub tag: u64,
    /// The attempt number, from 1.
    pub attempt: u32,
    /// The payload.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// Leader time of the enqueue, ms since the Unix epoch.
    pub enqueued_ms: u64,
    /// Leader time at which the delivery becomes visible again unless acked or extended.
    pub visible_at_ms: u64,
    /// Earlier attempts that ended without an ack, and deliveries withdrawn unseen, oldest first
    /// (at most the latest 32).
    pub history: Vec<DeliveryAttempt>,
}

/// A queue's counters, as `queue stats` shows them.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct QueueStats {
    /// The queue.
    pub name: String,
    /// Its options.
    pub options: QueueOptions,
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
    /// Age of the oldest message not yet acked, by the latest leader time, in ms.
    pub oldest_age_ms: Option<u64>,
}

/// How a [`Request::AwaitDelivery`] ended.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum QueueAwaitOutcome {
    /// Messages were delivered to the get.
    Delivered(Vec<QueueDelivery>),
    /// Still waiting; ask again.
    Pending,
    /// The wait ended with nothing delivered (its limit passed, it was cancelled, or the queue
    /// was deleted).
    Empty,
    /// The consumer's session ended, and with it the wait.
    SessionEnded,
}

/// Checks a visibility timeout's range.
///
/// # Errors
///
/// [`ServerError::InvalidArgument`] outside [`QUEUE_VISIBILITY_MS_MIN`]..=[`QUEUE_VISIBILITY_MS_MAX`].
pub fn validate_visibility(visibility_ms: u64) -> Result<(), ServerError> {
    if !(QUEUE_VISIBILITY_MS_MIN..=QUEUE_VISIBILITY_MS_MAX).contains(&visibility_ms) {
        return Err(ServerError::InvalidArgument {
            reason: format!(
                "visibility timeout of {visibility_ms} ms is outside {QUEUE_VISIBILITY_MS_MIN}..={QUEUE_VISIBILITY_MS_MAX} ms"
            ),
        });
    }
    Ok(())
}

/// Checks a queue name: 1 to [`QUEUE_NAME_BYTES_MAX`] bytes (plus [`DEAD_LETTER_SUFFIX`], so that
/// every queue's dead-letter queue can be named), no control characters or spaces.
///
/// # Errors
///
/// [`ServerError::InvalidArgument`] saying what is wrong.
pub fn validate_queue_name(name: &str) -> Result<(), ServerError> {
    if name.is_empty() {
        return Err(ServerError::InvalidArgument { reason: "queue name is empty".into() });
    }
    if name.len() > QUEUE_NAME_BYTES_MAX + DEAD_LETTER_SUFFIX.len() {
        return Err(ServerError::InvalidArgument {
            reason: format!(
                "queue name is {} bytes, the maximum is {QUEUE_NAME_BYTES_MAX} (plus the `{DEAD_LETTER_SUFFIX}` suffix of a \
                 dead-letter queue)",
                name.len()
            ),
        });
    }
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ServerError::InvalidArgument {
            reason: format!("queue name {name:?} contains whitespace or control characters"),
        });
    }
    Ok(())
}

/// Checks that a batch has 1..=[`QUEUE_BATCH_MAX`] items.
pub(crate) fn validate_batch(what: &str, items: usize) -> Result<(), ServerError> {
    if items == 0 || items > QUEUE_BATCH_MAX {
        return Err(ServerError::InvalidArgument {
            reason: format!("a {what} takes 1..={QUEUE_BATCH_MAX} items, not {items}"),
        });
    }
    Ok(())
}

/// Checks a get's size, visibility timeout and wait.
pub(crate) fn validate_get(max: u32, visibility_ms: Option<u64>, wait_ms: u64) -> Result<(), ServerError> {
    validate_batch("get", max as usize)?;
    if let Some(visibility_ms) = visibility_ms {
        validate_visibility(visibility_ms)?;
    }
    if wait_ms > QUEUE_WAIT_MS_MAX {
        return Err(ServerError::InvalidArgument {
            reason: format!("get wait of {wait_ms} ms exceeds {QUEUE_WAIT_MS_MAX} ms; ask again instead"),
        });
    }
    Ok(())
}
