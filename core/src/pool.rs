//! One cached QUIC connection per destination, and the request/response exchange over it. Used by
//! the client (per node address) and by nodes (per peer id).

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Mutex;

use serde::de::DeserializeOwned;

use crate::wire::{decode_body, read_frame, write_frame, FRAME_BYTES_MAX};

/// Live connections by destination.
pub struct ConnectionPool<K> {
    connections: Mutex<HashMap<K, quinn::Connection>>,
}

impl<K: Hash + Eq + Copy> Default for ConnectionPool<K> {
    fn default() -> Self {
        Self { connections: Mutex::new(HashMap::new()) }
    }
}

impl<K: Hash + Eq + Copy> ConnectionPool<K> {
    /// The open connection to `key`, or a new one from `connect` (dialed outside the lock).
    ///
    /// # Errors
    ///
    /// Whatever `connect` reports.
    pub async fn get_or_connect<F, Fut>(&self, key: K, connect: F) -> Result<quinn::Connection, String>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<quinn::Connection, String>>,
    {
        if let Some(connection) = self.connections.lock().expect("connections lock").get(&key) {
            if connection.close_reason().is_none() {
                return Ok(connection.clone());
            }
        }
        let connection = connect().await?;
        let mut connections = self.connections.lock().expect("connections lock");
        // Another task may have connected meanwhile; keep one connection per destination.
        let kept = connections.entry(key).or_insert_with(|| connection.clone());
        if kept.close_reason().is_some() {
            *kept = connection;
        }
        Ok(kept.clone())
    }

    /// Drops and closes the connection to `key`, so that the next request dials afresh: used when
    /// the destination stopped answering (a restarted process cannot reset the old connection).
    pub fn forget(&self, key: K) {
        if let Some(connection) = self.connections.lock().expect("connections lock").remove(&key) {
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
