//! Who holds a lock inside a client: [`OwnerHandle`], the actor ids of tasks, threads and
//! explicit handles.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

#[allow(unused_imports)] // for intra-doc links
use crate::Client;

/// Actor ids carry their kind in the top two bits, so tasks, threads and handles never collide.
const ACTOR_TASK: u64 = 1 << 62;
const ACTOR_THREAD: u64 = 2 << 62;
const ACTOR_HANDLE: u64 = 3 << 62;
const ACTOR_MASK: u64 = (1 << 62) - 1;

static NEXT_HANDLE: AtomicU64 = AtomicU64::new(1);

fn hashed(value: impl Hash) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish() & ACTOR_MASK
}

/// An explicit lock owner: locks taken with the same handle belong to one actor, whichever task
/// or thread takes them. Made by [`Client::owner`]; cheap to copy.
///
/// ```no_run
/// # async fn example(client: distsync::Client) -> Result<(), distsync::LockError> {
/// let me = client.owner();
/// let outer = client.lock("accounts").owner(&me).acquire().await?;
/// // Another task acting for the same actor: its locks join the same owner's wait-for edges.
/// let inner = client.lock("ledger").owner(&me).acquire().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OwnerHandle {
    actor: u64,
}

impl OwnerHandle {
    pub(crate) fn new() -> Self {
        OwnerHandle { actor: ACTOR_HANDLE | (NEXT_HANDLE.fetch_add(1, Ordering::Relaxed) & ACTOR_MASK) }
    }

    /// The owner identity of the calling OS thread: what a lock taken on this thread without an
    /// explicit owner would use outside a tokio task. Bindings use it to make the calling thread
    /// the owner before they hand the call to the runtime.
    pub fn current_thread() -> Self {
        OwnerHandle { actor: ACTOR_THREAD | hashed(std::thread::current().id()) }
    }

    /// The owner of a lock taken here without an explicit owner: the current tokio task, or the
    /// current thread outside any task.
    pub fn current() -> Self {
        match tokio::task::try_id() {
            Some(task) => OwnerHandle { actor: ACTOR_TASK | hashed(task) },
            None => Self::current_thread(),
        }
    }

    /// The actor id sent to the cluster (shown by `distsync lock show`).
    pub fn actor(&self) -> u64 {
        self.actor
    }
}
