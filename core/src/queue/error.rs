//! [`QueueError`]: what a queue call can fail with, and how client errors map onto it.

use thiserror::Error;

use crate::error::{ClientError, ErrorKind, QueueRefusal, ServerError};
use crate::wire::{CommandResponse, SessionId};

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
    #[error("queue {queue:?} is full: {reason} ({what}, see docs/limits.md); nothing was enqueued")]
    Full {
        /// The queue.
        queue: String,
        /// The limit's name as `docs/limits.md` lists it (`QUEUED_BYTES_MAX`, `QUEUES_MAX`).
        what: String,
        /// The limit's value, in its unit (bytes or a count).
        limit: u64,
        /// What was reached, and what to do about it.
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
            QueueError::Full { queue, what, limit, .. } => {
                ErrorKind::LimitReached { queue: Some(queue.clone()), what: what.clone(), limit: *limit }
            }
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
                QueueRefusal::Full { queue, what, limit, reason } => QueueError::Full { queue, what, limit, reason },
            },
            other => QueueError::Client(other),
        }
    }
}

/// A queue answer that does not fit the request: versions differ, or a bug.
pub(super) fn unexpected_answer(response: &CommandResponse) -> QueueError {
    QueueError::Client(ClientError::Protocol { reason: format!("unexpected answer to a queue request: {response:?}") })
}
