//! One cached QUIC connection per destination, and the request/response exchange over it. Used by
//! the client (per node address) and by nodes (per peer id).

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::wire::{decode_body, read_frame, write_frame, FRAME_BYTES_MAX};

/// The outcome of dialing: a connection, or why there is none.
type Dialed<E> = Result<quinn::Connection, E>;

/// What the pool has for one destination.
enum Slot<E> {
    Open(quinn::Connection),
    /// Being dialed by a task of its own, which every caller asking meanwhile waits for.
    Dialing(watch::Receiver<Option<Dialed<E>>>),
}

/// Live connections by destination, each dialed once however many callers ask at the same time.
///
/// A dial runs in a task of its own: a caller that gives up (its deadline passed, its request
/// was cancelled) does not abort the handshake for the others or for the next call. A caller
/// that wants a fresh dial calls [`ConnectionPool::forget`] first. `E` is what a failed dial
/// reports.
pub struct ConnectionPool<K, E = String> {
    slots: Arc<Mutex<HashMap<K, Slot<E>>>>,
}

impl<K: Hash + Eq + Copy, E> Default for ConnectionPool<K, E> {
    fn default() -> Self {
        Self { slots: Arc::new(Mutex::new(HashMap::new())) }
    }
}

impl<K, E> ConnectionPool<K, E>
where
    K: Hash + Eq + Copy + Send + 'static,
    E: Clone + Send + Sync + From<&'static str> + 'static,
{
    /// The open connection to `key`, or the one being dialed, or a new one from `connect`
    /// (dialed outside the lock, in a task of its own). Must be called within a Tokio runtime.
    ///
    /// # Errors
    ///
    /// Whatever `connect` reports; every caller waiting for that dial gets the same message.
    pub async fn get_or_connect<F, Fut>(&self, key: K, connect: F) -> Result<quinn::Connection, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Dialed<E>> + Send + 'static,
    {
        let mut dialing = {
            let mut slots = self.slots.lock().expect("connections lock");
            match slots.get(&key) {
                Some(Slot::Open(connection)) if connection.close_reason().is_none() => return Ok(connection.clone()),
                // A dial whose task ended without a word (it panicked) is no dial: dial again.
                Some(Slot::Dialing(dialing)) if dialing.has_changed().is_ok() => dialing.clone(),
                _ => {
                    let (sender, dialing) = watch::channel(None);
                    slots.insert(key, Slot::Dialing(dialing.clone()));
                    tokio::spawn(Self::dial(self.slots.clone(), key, connect(), sender));
                    dialing
                }
            }
        };
        let dialed = dialing.wait_for(Option::is_some).await;
        match dialed.as_deref() {
            Ok(Some(dialed)) => dialed.clone(),
            _ => Err(E::from("the connection attempt ended without an outcome (its task stopped)")),
        }
    }

    /// Runs one dial, records its connection (unless the slot was forgotten meanwhile) and tells
    /// the callers waiting for it.
    async fn dial(
        slots: Arc<Mutex<HashMap<K, Slot<E>>>>,
        key: K,
        connect: impl Future<Output = Dialed<E>>,
        sender: watch::Sender<Option<Dialed<E>>>,
    ) {
        let dialed = connect.await;
        {
            let mut slots = slots.lock().expect("connections lock");
            let current =
                matches!(slots.get(&key), Some(Slot::Dialing(dialing)) if dialing.same_channel(&sender.subscribe()));
            if current {
                match &dialed {
                    Ok(connection) => slots.insert(key, Slot::Open(connection.clone())),
                    Err(_) => slots.remove(&key),
                };
            }
        }
        sender.send_replace(Some(dialed));
    }

    /// [`ConnectionPool::forget`], if the pool still holds `connection` for `key` (and not a
    /// newer connection or dial): for a caller that found `connection` dead.
    pub fn forget_connection(&self, key: K, connection: &quinn::Connection) {
        let mut slots = self.slots.lock().expect("connections lock");
        if matches!(slots.get(&key), Some(Slot::Open(open)) if open.stable_id() == connection.stable_id()) {
            slots.remove(&key);
        }
        drop(slots);
        connection.close(0u32.into(), b"destination did not answer");
    }

    /// Drops and closes the connection to `key` (or forgets the dial in progress), so that the
    /// next request dials afresh: used when the destination stopped answering (a restarted
    /// process cannot reset the old connection).
    pub fn forget(&self, key: K) {
        if let Some(Slot::Open(connection)) = self.slots.lock().expect("connections lock").remove(&key) {
            connection.close(0u32.into(), b"destination did not answer");
        }
    }
}

/// Sends one request frame on a new stream of `connection` and decodes the one reply frame.
///
/// # Errors
///
/// A message when the stream fails or the reply does not decode.
pub async fn exchange<T: DeserializeOwned>(connection: &quinn::Connection, frame: &[u8]) -> Result<T, String> {
    let (mut send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
    write_frame(&mut send, frame).await.map_err(|e| e.to_string())?;
    let body = read_frame(&mut recv, FRAME_BYTES_MAX).await.map_err(|e| e.to_string())?;
    decode_body(&body).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::sync::Notify;

    use super::*;

    /// A dial that fails once `gate` opens, counting how often it ran.
    fn failing_dial(
        dials: &Arc<AtomicUsize>,
        gate: &Arc<Notify>,
    ) -> impl Future<Output = Dialed<String>> + Send + 'static {
        dials.fetch_add(1, Ordering::SeqCst);
        let gate = gate.clone();
        async move {
            gate.notified().await;
            Err("refused".to_string())
        }
    }

    #[tokio::test]
    async fn callers_asking_at_once_share_one_dial_which_outlives_a_caller_that_gives_up() {
        let pool = ConnectionPool::<u8>::default();
        let (dials, gate) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
        // The first caller gives up while the dial is still going; the dial goes on.
        let impatient =
            tokio::time::timeout(Duration::from_millis(10), pool.get_or_connect(1, || failing_dial(&dials, &gate)));
        assert!(impatient.await.is_err(), "the first caller should have timed out");
        // Four more callers ask (each polled before the gate opens), then the dial fails.
        let ask = || pool.get_or_connect(1, || failing_dial(&dials, &gate));
        let callers = async { tokio::join!(ask(), ask(), ask(), ask()) };
        let open = async {
            tokio::task::yield_now().await;
            gate.notify_one();
        };
        let ((a, b, c, d), ()) = tokio::join!(callers, open);
        for outcome in [a, b, c, d] {
            assert_eq!(outcome.err().as_deref(), Some("refused"));
        }
        assert_eq!(dials.load(Ordering::SeqCst), 1, "one dial for five callers");
        // A failed dial is not kept: the next call dials again.
        gate.notify_one();
        let again = pool.get_or_connect(1, || failing_dial(&dials, &gate)).await;
        assert_eq!(again.err().as_deref(), Some("refused"));
        assert_eq!(dials.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_dial_that_dies_without_an_outcome_does_not_block_the_destination() {
        let pool = ConnectionPool::<u8>::default();
        let dials = Arc::new(AtomicUsize::new(0));
        let dying = pool
            .get_or_connect(1, || {
                dials.fetch_add(1, Ordering::SeqCst);
                async { panic!("the dial's task dies") }
            })
            .await;
        assert!(dying.is_err());
        let gate = Arc::new(Notify::new());
        gate.notify_one();
        let next = pool.get_or_connect(1, || failing_dial(&dials, &gate)).await;
        assert_eq!(next.err().as_deref(), Some("refused"), "the next call must dial again");
        assert_eq!(dials.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn forgetting_a_destination_starts_a_fresh_dial() {
        let pool = ConnectionPool::<u8>::default();
        let (dials, gate) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
        let stuck = Arc::new(Notify::new());
        let slow =
            tokio::time::timeout(Duration::from_millis(10), pool.get_or_connect(1, || failing_dial(&dials, &stuck)));
        assert!(slow.await.is_err());
        pool.forget(1);
        gate.notify_one();
        let fresh = pool.get_or_connect(1, || failing_dial(&dials, &gate)).await;
        assert_eq!(fresh.err().as_deref(), Some("refused"));
        assert_eq!(dials.load(Ordering::SeqCst), 2, "forget() must not leave callers waiting on the old dial");
    }
}
