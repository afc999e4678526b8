//! The replicated key-value register: linearizable reads and writes of bytes, each value with
//! the version (revision) of the write that set it.

use crate::client::{CallOptions, Client};
use crate::error::ClientError;
use crate::wire::{Command, CommandResponse, Query, QueryResponse};

/// The replicated key-value register, a linearizable map from bytes to bytes.
///
/// ```no_run
/// # async fn example(client: distsync::Client) -> Result<(), distsync::ClientError> {
/// let kv = client.kv();
/// let version = kv.put("config/mode", "active").await?;
/// assert_eq!(kv.get_versioned("config/mode").await?, Some((b"active".to_vec(), version)));
/// assert!(kv.delete("config/mode").await?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Kv {
    client: Client,
}

impl Kv {
    pub(crate) fn new(client: Client) -> Self {
        Kv { client }
    }

    /// Sets `key` to `value` once a majority has it on disk; returns the write's version (its
    /// revision, unique and increasing in commit order).
    ///
    /// # Errors
    ///
    /// [`ClientError::InvalidArgument`] for keys or values beyond the limits in [`crate::wire`];
    /// [`ClientError::Unavailable`] when the cluster cannot commit before the deadline (the write
    /// may or may not have been applied); [`ClientError::SessionExpired`].
    pub async fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<u64, ClientError> {
        let command = Command::KvPut { key: key.as_ref().to_vec(), value: value.as_ref().to_vec() };
        match self.client.write(command, CallOptions::default()).await?.1 {
            CommandResponse::KvPut { version } => Ok(version),
            other => Err(ClientError::Protocol { reason: format!("unexpected answer to a put: {other:?}") }),
        }
    }

    /// Reads `key` linearizably: the result reflects every write acknowledged before the call.
    ///
    /// # Errors
    ///
    /// As [`Kv::put`].
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, ClientError> {
        Ok(self.get_versioned(key).await?.map(|(value, _)| value))
    }

    /// Like [`Kv::get`], with the version (the revision) of the write that set the value.
    ///
    /// # Errors
    ///
    /// As [`Kv::put`].
    pub async fn get_versioned(&self, key: impl AsRef<[u8]>) -> Result<Option<(Vec<u8>, u64)>, ClientError> {
        let key = key.as_ref().to_vec();
        crate::wire::validate_key(&key)?;
        match self.client.read(Query::KvGet { key }).await? {
            QueryResponse::KvGet { value } => Ok(value),
            other => Err(ClientError::Protocol { reason: format!("unexpected answer to a get: {other:?}") }),
        }
    }

    /// Removes `key`; returns whether it existed.
    ///
    /// # Errors
    ///
    /// As [`Kv::put`].
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<bool, ClientError> {
        match self.client.write(Command::KvDelete { key: key.as_ref().to_vec() }, CallOptions::default()).await?.1 {
            CommandResponse::KvDelete { existed } => Ok(existed),
            other => Err(ClientError::Protocol { reason: format!("unexpected answer to a delete: {other:?}") }),
        }
    }
}
