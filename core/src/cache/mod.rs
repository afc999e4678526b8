//! The coherent cache: Redis holds the values, every node keeps copies, reads are linearizable
//! by default.
//!
//! Each key's requests go to one node, picked by the key's hash (or to the client's home node,
//! [`ClientOptions::home`](crate::ClientOptions::home)), whose copy serves repeated reads
//! without a trip to Redis; writes go through that node to the leader, and it keeps the
//! written value.
//!
//! ```no_run
//! # async fn example(client: distsync::Client) -> Result<(), distsync::ClientError> {
//! use std::time::Duration;
//!
//! let cache = client.cache();
//! cache.set_with_ttl("user:1", b"{\"name\":\"Ada\"}", Duration::from_secs(60)).await?;
//! assert_eq!(cache.get("user:1").await?.as_deref(), Some(&b"{\"name\":\"Ada\"}"[..]));
//! let values = cache.get_many(["user:1", "user:2"]).await?;
//! assert!(values[1].is_none());
//! cache.delete("user:1").await?;
//! # Ok(()) }
//! ```
//!
//! `get_batcher.rs` merges concurrent gets of one client into shared requests and holds the
//! batchers a client keeps.

mod get_batcher;

use std::time::{Duration, Instant};

pub(crate) use self::get_batcher::CacheState;
use self::get_batcher::GetBatcher;
use crate::client::{unexpected, CallOptions, Client, Route};
use crate::error::ClientError;
use crate::wire::{
    fnv1a, validate_key, CacheValue, Command, CommandResponse, Consistency, Request, Response, CACHE_GET_KEYS_MAX,
    CACHE_TTL_MS_MAX,
};

/// The cache, as seen from one client; cheap to clone. See the [module documentation](self).
#[derive(Clone)]
pub struct Cache {
    client: Client,
    consistency: Consistency,
}

impl Cache {
    pub(crate) fn new(client: Client) -> Self {
        Cache { client, consistency: Consistency::Linearizable }
    }
}

impl Cache {
    /// The same cache with reads of `consistency`. [`Consistency::Local`] answers from the home
    /// node's applied state without confirming with the leader: faster, but a read may miss a
    /// write acknowledged moments ago (or longer, when the node is cut off from the leader).
    ///
    /// ```no_run
    /// # async fn example(client: distsync::Client) -> Result<(), distsync::ClientError> {
    /// use distsync::wire::Consistency;
    /// let fast = client.cache().consistency(Consistency::Local);
    /// let maybe_stale = fast.get("config").await?;
    /// # Ok(()) }
    /// ```
    pub fn consistency(mut self, consistency: Consistency) -> Self {
        self.consistency = consistency;
        self
    }

    /// The value of `key`, or `None` when absent (never set, deleted, or expired).
    ///
    /// # Errors
    ///
    /// [`ClientError::InvalidArgument`] for an empty key or one over
    /// [`KEY_BYTES_MAX`](crate::wire::KEY_BYTES_MAX); [`ClientError::Unavailable`] when no node
    /// could answer before the request timeout (Redis down and the value not cached, no leader).
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, ClientError> {
        Ok(self.get_versioned(key).await?.map(|v| v.value))
    }

    /// Like [`Cache::get`], with the version (the revision of the write that set the value).
    ///
    /// # Errors
    ///
    /// As [`Cache::get`].
    pub async fn get_versioned(&self, key: impl AsRef<[u8]>) -> Result<Option<CacheValue>, ClientError> {
        let key = key.as_ref().to_vec();
        validate_key(&key)?;
        GetBatcher::get(&self.client, self.consistency, route(&self.client, &key), key).await
    }

    /// The values of `keys`, in order, each `None` when absent; one round trip per
    /// [`CACHE_GET_KEYS_MAX`] keys. All are read at one point in time (linearizable mode).
    ///
    /// # Errors
    ///
    /// As [`Cache::get`].
    pub async fn get_many<K: AsRef<[u8]>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Vec<Option<Vec<u8>>>, ClientError> {
        Ok(self.get_many_versioned(keys).await?.into_iter().map(|v| v.map(|v| v.value)).collect())
    }

    /// Like [`Cache::get_many`], with versions.
    ///
    /// # Errors
    ///
    /// As [`Cache::get`].
    pub async fn get_many_versioned<K: AsRef<[u8]>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Vec<Option<CacheValue>>, ClientError> {
        let keys: Vec<Vec<u8>> = keys.into_iter().map(|k| k.as_ref().to_vec()).collect();
        for key in &keys {
            validate_key(key)?;
        }
        // Any node answers any key; the first key's owner is as good a choice as any.
        let Some(first) = keys.first() else { return Ok(Vec::new()) };
        self.get_routed(&keys, route(&self.client, first)).await
    }

    /// Reads `keys` through the node `route` picks, a request per [`CACHE_GET_KEYS_MAX`] keys (or
    /// fewer when their values are large).
    pub(super) async fn get_routed(
        &self,
        keys: &[Vec<u8>],
        route: Route,
    ) -> Result<Vec<Option<CacheValue>>, ClientError> {
        let options = CallOptions::default().route(route).deadline(Instant::now() + self.client.request_timeout());
        let mut values = Vec::with_capacity(keys.len());
        while values.len() < keys.len() {
            let chunk = keys[values.len()..].iter().take(CACHE_GET_KEYS_MAX).cloned().collect();
            let request = Request::CacheGet { keys: chunk, consistency: self.consistency };
            match self.client.call(&request, options).await? {
                // A node answers at least one key; fewer than asked when the values are large.
                Response::CacheValues(answers) if !answers.is_empty() => values.extend(answers),
                other => return Err(unexpected(&other)),
            }
        }
        Ok(values)
    }

    /// Sets `key` to `value` with no expiry; returns the write's version. Acknowledged once a
    /// majority logged it: every later read on any node sees it, and it reaches Redis even if
    /// Redis is down right now.
    ///
    /// # Errors
    ///
    /// [`ClientError::InvalidArgument`] for a bad key or a value over
    /// [`VALUE_BYTES_MAX`](crate::wire::VALUE_BYTES_MAX); [`ClientError::Server`] with
    /// `LimitReached` when too many writes wait for Redis; [`ClientError::Unavailable`] when the
    /// cluster cannot commit before the deadline (the write may or may not have been applied).
    pub async fn set(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<u64, ClientError> {
        self.write_set(key.as_ref(), value.as_ref(), None).await
    }

    /// Like [`Cache::set`]; the key reads as absent `ttl` after the leader applies the write
    /// (millisecond resolution, at most a year).
    ///
    /// # Errors
    ///
    /// As [`Cache::set`]; [`ClientError::InvalidArgument`] for a TTL under 1 ms or over a year.
    pub async fn set_with_ttl(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        ttl: Duration,
    ) -> Result<u64, ClientError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        if ttl_ms == 0 || ttl_ms > CACHE_TTL_MS_MAX {
            return Err(ClientError::InvalidArgument {
                reason: format!("TTL {ttl:?} is outside 1 ms..={} days", CACHE_TTL_MS_MAX / 86_400_000),
            });
        }
        self.write_set(key.as_ref(), value.as_ref(), Some(ttl_ms)).await
    }

    async fn write_set(&self, key: &[u8], value: &[u8], ttl_ms: Option<u64>) -> Result<u64, ClientError> {
        let command = Command::CacheSet { key: key.to_vec(), value: value.to_vec(), ttl_ms };
        match self.write(key, command).await? {
            CommandResponse::CacheSet { version } => Ok(version),
            other => Err(ClientError::Protocol { reason: format!("unexpected answer to a cache set: {other:?}") }),
        }
    }

    /// Removes `key`; returns whether it existed.
    ///
    /// # Errors
    ///
    /// As [`Cache::set`].
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<bool, ClientError> {
        match self.write(key.as_ref(), Command::CacheDelete { key: key.as_ref().to_vec() }).await? {
            CommandResponse::CacheDeleted { existed } => Ok(existed),
            other => Err(ClientError::Protocol { reason: format!("unexpected answer to a cache delete: {other:?}") }),
        }
    }

    /// Sends a write of `key` through the node its reads go to, which keeps the written value.
    /// Writes of one client are not merged: each is its own exactly-once command.
    async fn write(&self, key: &[u8], command: Command) -> Result<CommandResponse, ClientError> {
        let options = CallOptions::default().route(route(&self.client, key));
        Ok(self.client.write(command, options).await?.1)
    }
}

/// Where cache requests for `key` go: the home node when the client has one, else the endpoint
/// the key's hash picks (the same for every client, so each node caches its share of the keys).
fn route(client: &Client, key: &[u8]) -> Route {
    if client.has_home() {
        return Route::Home;
    }
    Route::Endpoint((fnv1a(key) % client.endpoint_count() as u64) as usize)
}
