//! Distributed locks: exclusive and shared, fair, leased to the client's session, fenced.
//!
//! ```no_run
//! # async fn example(client: distsync::Client) -> Result<(), distsync::LockError> {
//! use std::time::Duration;
//!
//! let guard = client.lock("reports").timeout(Duration::from_secs(5)).acquire().await?;
//! // Pass the fencing token to every resource the lock protects; see `LockGuard::token`.
//! println!("holding reports with token {}", guard.token());
//! guard.release().await?;
//! # Ok(()) }
//! ```
//!
//! ## Who owns a lock
//!
//! A lock is held by an **owner**: an actor inside the client's session. By default the actor is
//! the current tokio task (or, outside any task, the current thread), so two tasks sharing one
//! [`Client`] exclude each other exactly as two processes do, and an owner asking again for a lock
//! it holds gets [`LockError::AlreadyHeld`]. To tie locks taken from several tasks to one logical
//! actor, make a handle with [`Client::owner`] and pass it to [`LockBuilder::owner`].
//!
//! ## Leases
//!
//! A hold lasts as long as the session. If the client is cut off or stalls past the session TTL,
//! the cluster releases its locks. The client stops trusting a lock before the cluster can free
//! it: [`LockGuard::is_held`] turns false at the client's own lease deadline (the send time of the
//! last acknowledged keepalive plus the TTL, less a margin), and [`LockGuard::lost`] completes then
//! or when the cluster reports that the session ended, whichever comes first.
//!
//! ## Layout
//!
//! `builder.rs` makes a request, `request.rs` follows it in the cluster (with the client's
//! shared wait machinery, `pending.rs`) and withdraws it when the caller stops waiting,
//! `guard.rs` is the hold, `owner.rs` names owners, `error.rs` says what failed, and `state.rs`
//! is what the client remembers of its own locks.

mod builder;
mod error;
mod guard;
mod owner;
mod request;
mod state;

pub use self::builder::LockBuilder;
pub use self::error::LockError;
pub use self::guard::LockGuard;
pub use self::owner::OwnerHandle;
pub(crate) use self::state::LockState;
use crate::client::Client;
use crate::error::ClientError;
use crate::pending::collect_pages;
use crate::wire::{LockInfo, Query, QueryResponse};

/// Every lock held or awaited; see [`Client::lock_list`].
pub(crate) async fn list(client: &Client) -> Result<Vec<LockInfo>, ClientError> {
    let page = |after| async move {
        match client.read(Query::LockList { after }).await? {
            QueryResponse::LockList { locks, more } => Ok((locks, more)),
            other => Err(ClientError::Protocol { reason: format!("unexpected answer: {other:?}") }),
        }
    };
    collect_pages(page, |lock: &LockInfo| &lock.name).await
}

/// One lock; see [`Client::lock_show`].
pub(crate) async fn show(client: &Client, name: &str) -> Result<Option<LockInfo>, ClientError> {
    crate::wire::validate_lock_name(name)?;
    match client.read(Query::LockShow { name: name.to_string() }).await? {
        QueryResponse::LockShow { lock } => Ok(lock),
        other => Err(ClientError::Protocol { reason: format!("unexpected answer: {other:?}") }),
    }
}
