//! [`LockError`]: what a lock call can fail with, and how client errors map onto it.

use thiserror::Error;

use crate::error::{describe_cycle, ClientError, ErrorKind, LockRefusal, ServerError};
use crate::wire::{Owner, SessionId};

#[allow(unused_imports)] // for intra-doc links
use super::{LockBuilder, OwnerHandle};
#[allow(unused_imports)] // for intra-doc links
use crate::Client;

/// What a lock call can fail with. Each variant says what to do.
#[derive(Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockError {
    /// The wait ended without a grant: the timeout passed. Nothing is held; retry later or with
    /// a longer timeout.
    #[error("lock {name:?} was not granted within the timeout")]
    Timeout {
        /// The lock.
        name: String,
    },
    /// [`LockBuilder::try_acquire`] found the lock taken. Nothing is held.
    #[error("lock {name:?} is held by another owner")]
    WouldBlock {
        /// The lock.
        name: String,
    },
    /// Waiting would have closed a cycle of owners waiting for each other; nothing changed.
    /// Release what you hold (usually a lock of the cycle) and retry, or take locks in one order.
    #[error("waiting for lock {name:?} would deadlock: {}", describe_cycle(cycle))]
    Deadlock {
        /// The lock requested.
        name: String,
        /// The cycle: each owner waits for the next through the named lock; the last one waits
        /// for the first.
        cycle: Vec<(Owner, String)>,
    },
    /// This owner already holds or awaits the lock (a guard for it is alive in this client). Use
    /// the hold you have, drop a lost guard first, or pass a distinct owner ([`Client::owner`]) if
    /// another actor should take it.
    #[error("lock {name:?} is already held or awaited by this owner")]
    AlreadyHeld {
        /// The lock.
        name: String,
    },
    /// The hold is gone (released, or lost with the session): whatever it protected may have been
    /// changed by a newer holder since.
    #[error("this owner no longer holds lock {name:?} with token {token}")]
    NotHeld {
        /// The lock.
        name: String,
        /// The token of the hold.
        token: u64,
    },
    /// An upgrade needs a shared hold.
    #[error("lock {name:?} is not held shared, so it cannot be upgraded")]
    NotShared {
        /// The lock.
        name: String,
    },
    /// The session expired, so every lock it held was released and every wait ended. The client
    /// opens a new session for later calls; redo the work that needed the lock.
    #[error("session {session} expired: its locks were released; acquire them again")]
    SessionExpired {
        /// The expired session.
        session: SessionId,
    },
    /// The cluster could not be reached or could not commit before the deadline. Nothing is held
    /// (a request that may have been queued is withdrawn); retry later.
    #[error("cluster unavailable: {reason}")]
    Unavailable {
        /// The last failure seen.
        reason: String,
    },
    /// The request is invalid (empty or oversized name, timeout beyond a day); fix it.
    #[error("invalid argument: {reason}")]
    InvalidArgument {
        /// What is wrong.
        reason: String,
    },
    /// Any other client failure.
    #[error(transparent)]
    Client(ClientError),
}

impl LockError {
    /// What kind of failure this is: the classification the language bindings share.
    pub fn kind(&self) -> ErrorKind {
        match self {
            LockError::Timeout { name } | LockError::WouldBlock { name } => {
                ErrorKind::LockTimeout { lock: name.clone() }
            }
            LockError::Deadlock { name, cycle } => ErrorKind::Deadlock { lock: name.clone(), cycle: cycle.clone() },
            LockError::AlreadyHeld { name } => ErrorKind::AlreadyHeld { lock: name.clone() },
            LockError::NotHeld { name, .. } => ErrorKind::NotHeld { lock: name.clone() },
            LockError::NotShared { .. } | LockError::InvalidArgument { .. } => ErrorKind::InvalidArgument,
            LockError::SessionExpired { session } => ErrorKind::SessionExpired { session: *session },
            LockError::Unavailable { .. } => ErrorKind::Unavailable,
            LockError::Client(error) => error.kind(),
        }
    }
}

impl From<ClientError> for LockError {
    fn from(error: ClientError) -> Self {
        match error {
            ClientError::Unavailable { reason } => LockError::Unavailable { reason },
            ClientError::SessionExpired { session } => LockError::SessionExpired { session },
            ClientError::InvalidArgument { reason } => LockError::InvalidArgument { reason },
            ClientError::Server(ServerError::Lock(refusal)) => match refusal {
                LockRefusal::WouldBlock { name } => LockError::WouldBlock { name },
                LockRefusal::AlreadyHeld { name } => LockError::AlreadyHeld { name },
                LockRefusal::Deadlock { name, cycle } => LockError::Deadlock { name, cycle },
                LockRefusal::NotHeld { name, token } => LockError::NotHeld { name, token },
                LockRefusal::NotShared { name } => LockError::NotShared { name },
            },
            other => LockError::Client(other),
        }
    }
}
