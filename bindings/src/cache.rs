//! The coherent cache: [`Cache`].

use std::future::Future;
use std::time::Duration;

use distsync::wire::Consistency;

use crate::error::Outcome;
use crate::run::{block_on, on_runtime};

/// The coherent cache: values in Redis, a coherent copy on every node, linearizable reads.
#[derive(uniffi::Object)]
pub struct Cache {
    pub(crate) cache: distsync::Cache,
}

impl Cache {
    fn get_future(&self, key: String, local: bool) -> impl Future<Output = Outcome<Option<Vec<u8>>>> + Send + 'static {
        let cache = if local { self.cache.clone().consistency(Consistency::Local) } else { self.cache.clone() };
        async move { Ok(cache.get(key).await?) }
    }

    fn set_future(
        &self,
        key: String,
        value: Vec<u8>,
        ttl_seconds: Option<u64>,
    ) -> impl Future<Output = Outcome<u64>> + Send + 'static {
        let cache = self.cache.clone();
        async move {
            Ok(match ttl_seconds {
                Some(ttl) => cache.set_with_ttl(key, value, Duration::from_secs(ttl)).await?,
                None => cache.set(key, value).await?,
            })
        }
    }
}

#[uniffi::export]
impl Cache {
    /// The value of `key`, or null when it has none. Linearizable: it reflects every write
    /// acknowledged before the call. With `local`, the home node answers from what it has
    /// applied, without asking the leader: faster, and it may miss a write acknowledged moments
    /// ago.
    #[uniffi::method(default(local = false))]
    pub async fn get(&self, key: String, local: bool) -> Outcome<Option<Vec<u8>>> {
        on_runtime(self.get_future(key, local)).await
    }

    /// `get`, waiting on the calling thread.
    #[uniffi::method(default(local = false))]
    pub fn get_blocking(&self, key: String, local: bool) -> Outcome<Option<Vec<u8>>> {
        block_on(self.get_future(key, local))
    }

    /// Sets `key` to `value`, expiring after `ttl_seconds` if given; returns the write's version.
    #[uniffi::method(default(ttl_seconds = None))]
    pub async fn set(&self, key: String, value: Vec<u8>, ttl_seconds: Option<u64>) -> Outcome<u64> {
        on_runtime(self.set_future(key, value, ttl_seconds)).await
    }

    /// `set`, waiting on the calling thread.
    #[uniffi::method(default(ttl_seconds = None))]
    pub fn set_blocking(&self, key: String, value: Vec<u8>, ttl_seconds: Option<u64>) -> Outcome<u64> {
        block_on(self.set_future(key, value, ttl_seconds))
    }

    /// Deletes `key`; returns whether it had a value.
    pub async fn delete(&self, key: String) -> Outcome<bool> {
        let cache = self.cache.clone();
        on_runtime(async move { Ok(cache.delete(key).await?) }).await
    }
}
