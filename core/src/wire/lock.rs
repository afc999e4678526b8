//! Locks on the wire: owners, modes, waits, and what `lock show` and an await answer.

use serde::{Deserialize, Serialize};

use super::{SessionId, LOCK_NAME_BYTES_MAX, LOCK_WAIT_MS_MAX};
use crate::error::ServerError;

#[allow(unused_imports)] // for intra-doc links
use super::Request;

/// Who holds or waits for a lock: an actor (thread, task, handle) inside a client session. Two
/// actors of one session exclude each other exactly as two sessions do.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Owner {
    /// The session the actor belongs to.
    pub session: SessionId,
    /// The actor, chosen by the client.
    pub actor: u64,
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "session {} actor {:#x}", self.session, self.actor)
    }
}

/// Lock mode.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// One holder.
    Exclusive,
    /// Any number of holders, and no exclusive one.
    Shared,
}

impl LockMode {
    /// Lowercase name, as printed by the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Exclusive => "exclusive",
            LockMode::Shared => "shared",
        }
    }
}

/// Whether and how long a lock request waits.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockWait {
    /// Fail at once with `WouldBlock` if the lock cannot be granted now.
    Try,
    /// Wait at most this long, counted from the leader's clock when the request is applied.
    TimeoutMs(u64),
    /// Wait until granted or until the session ends.
    Forever,
}

/// One holder of a lock.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    /// Who holds it.
    pub owner: Owner,
    /// In which mode.
    pub mode: LockMode,
    /// The fencing token of this grant.
    pub token: u64,
    /// Leader-stamped time of the grant, ms since the Unix epoch.
    pub since_ms: u64,
}

/// One queued lock request.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LockWaiter {
    /// Who waits.
    pub owner: Owner,
    /// For which mode.
    pub mode: LockMode,
    /// Whether this is an upgrade of a shared hold the owner keeps while waiting.
    pub upgrade: bool,
    /// When the wait ends without a grant (leader time, ms since the Unix epoch), if ever.
    pub deadline_ms: Option<u64>,
    /// Leader-stamped time the wait began.
    pub since_ms: u64,
}

/// A lock as seen by `lock show`: its holders and its waiters in the order they are served.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LockInfo {
    /// The lock.
    pub name: String,
    /// Current holders: one exclusive, or any number shared.
    pub holders: Vec<LockHolder>,
    /// Waiters in the order they are served.
    pub waiters: Vec<LockWaiter>,
    /// The identity that opened each session among the holders and waiters, by session.
    pub identities: Vec<(SessionId, String)>,
}

/// How an [`Request::AwaitLock`] ended.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockAwaitOutcome {
    /// The request was granted with this fencing token.
    Granted {
        /// The fencing token.
        token: u64,
    },
    /// Still waiting; ask again.
    Pending,
    /// The wait ended without a grant: its deadline passed, or the request was cancelled.
    TimedOut,
    /// The owner's session ended, and with it the wait.
    SessionEnded,
}

/// Checks a lock name against [`LOCK_NAME_BYTES_MAX`].
///
/// # Errors
///
/// [`ServerError::InvalidArgument`] for an empty or oversized name.
pub fn validate_lock_name(name: &str) -> Result<(), ServerError> {
    if name.is_empty() {
        return Err(ServerError::InvalidArgument { reason: "lock name is empty".into() });
    }
    if name.len() > LOCK_NAME_BYTES_MAX {
        return Err(ServerError::InvalidArgument {
            reason: format!("lock name is {} bytes, the maximum is {LOCK_NAME_BYTES_MAX}", name.len()),
        });
    }
    Ok(())
}

/// Checks a lock request's name and wait.
pub(crate) fn validate_lock_request(name: &str, wait: &LockWait) -> Result<(), ServerError> {
    validate_lock_name(name)?;
    match wait {
        LockWait::TimeoutMs(ms) if *ms > LOCK_WAIT_MS_MAX => Err(ServerError::InvalidArgument {
            reason: format!("lock wait of {ms} ms exceeds {LOCK_WAIT_MS_MAX} ms; wait forever instead"),
        }),
        _ => Ok(()),
    }
}
