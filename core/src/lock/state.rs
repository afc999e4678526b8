//! What a client remembers about its own locks: the holds of its live guards, and the
//! releases and withdrawals still running in the background.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::client::Client;

/// A gate held while a background release or withdrawal runs.
type Gate = Arc<tokio::sync::Mutex<()>>;

/// The lock state a [`Client`] keeps.
#[derive(Default)]
pub(crate) struct LockState {
    /// Background releases and withdrawals per (actor, lock), each a gate held while it runs; a
    /// later request of the same owner for the same lock waits for them, so that it cannot be
    /// overtaken by them.
    settling: Mutex<HashMap<(u64, String), Gate>>,
    /// (actor, lock) of every live guard, to refuse a second acquire by the same owner locally.
    holds: Mutex<HashSet<(u64, String)>>,
}

impl LockState {
    /// Records that `actor` holds or awaits `name`; false if it already does.
    pub(crate) fn claim(&self, actor: u64, name: &str) -> bool {
        self.holds.lock().expect("holds lock").insert((actor, name.to_string()))
    }

    /// Forgets the hold of `actor` on `name`, so the owner may ask for the lock again.
    pub(crate) fn unclaim(&self, actor: u64, name: &str) {
        self.holds.lock().expect("holds lock").remove(&(actor, name.to_string()));
    }

    /// Waits until background releases or withdrawals of `actor` on `name` have finished.
    pub(crate) async fn settled(&self, actor: u64, name: &str) {
        let gate = self.settling.lock().expect("settling lock").get(&(actor, name.to_string())).cloned();
        if let Some(gate) = gate {
            let _ = gate.lock().await;
        }
    }
}

/// Runs `work` in the background, registered so that a later request of the same owner for the
/// same lock waits for it.
pub(crate) fn settle_in_background<F>(client: &Client, actor: u64, name: &str, work: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!(lock = name, "no async runtime to release the lock in; it is freed when the session ends");
        return;
    };
    let key = (actor, name.to_string());
    let gate = Arc::new(tokio::sync::Mutex::new(()));
    let held = gate.clone().try_lock_owned().expect("a new mutex is free");
    let previous = client.lock_state().settling.lock().expect("settling lock").insert(key.clone(), gate.clone());
    let client = client.clone();
    runtime.spawn(async move {
        if let Some(previous) = previous {
            let _ = previous.lock().await;
        }
        work.await;
        drop(held);
        let mut settling = client.lock_state().settling.lock().expect("settling lock");
        if settling.get(&key).is_some_and(|current| Arc::ptr_eq(current, &gate)) {
            settling.remove(&key);
        }
    });
}
