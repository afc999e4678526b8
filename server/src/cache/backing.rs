//! Where cache values live once written back: Redis.
//!
//! Each key is a Redis hash under `distsync:CLUSTER:cache:KEY` with two fields: `v`, the version
//! (the revision of the write), and `d`, the value. `CLUSTER` is the cluster's random id, fixed in
//! the replicated state by its first leader: versions are revisions of one cluster's log, so a
//! second cluster sharing the Redis (or a cluster re-created from empty data directories, whose
//! revisions start again at 1) must never see the first one's keys. Writes are conditional on the version, in one Lua
//! script per batch, so a slow write-back from a deposed leader can never overwrite a newer
//! value. A deletion leaves the hash with `v` alone (a tombstone, dropped by Redis after an hour)
//! for the same reason. Reads fetch both fields, so the reader can check the version against the
//! directory's.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::state::ClusterId;

/// The Redis key prefix of one cluster's cache: `distsync:CLUSTER:cache:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace(Vec<u8>);

impl Namespace {
    /// The namespace of the cluster named `id`.
    pub fn of(id: &ClusterId) -> Self {
        Self(format!("distsync:{}:cache:", cluster_hex(id)).into_bytes())
    }

    fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut redis_key = Vec::with_capacity(self.0.len() + key.len());
        redis_key.extend_from_slice(&self.0);
        redis_key.extend_from_slice(key);
        redis_key
    }
}

/// A cluster id as 32 lowercase hex digits, as `distsync status --json` shows it.
pub fn cluster_hex(id: &ClusterId) -> String {
    id.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Longest a Redis call may take before it counts as failed.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a deletion's tombstone stays in Redis: far longer than any write-back can lag.
const TOMBSTONE_MS: u64 = 3_600_000;

/// Extra time a value lives in Redis past its directory expiry, so that the delay between
/// computing its time to live and Redis applying it never drops a value the directory still
/// serves.
const EXPIRY_SLACK_MS: u64 = 60_000;

/// Writes a batch: per key, only if Redis holds an older version or none.
/// KEYS: the Redis keys. ARGV, four per key: version, `s` (set) or `d` (delete),
/// time to live in ms (0: none), value. Returns `{i, version}` for each key skipped because
/// Redis holds that version, as a flat array.
const WRITE_BACK_SCRIPT: &str = r"
local skipped = {}
for i = 1, #KEYS do
  local base = (i - 1) * 4
  local version = tonumber(ARGV[base + 1])
  local current = tonumber(redis.call('HGET', KEYS[i], 'v'))
  if current == nil or current < version then
    if ARGV[base + 2] == 'd' then
      redis.call('HDEL', KEYS[i], 'd')
      redis.call('HSET', KEYS[i], 'v', ARGV[base + 1])
      redis.call('PEXPIRE', KEYS[i], ARGV[base + 3])
    else
      redis.call('HSET', KEYS[i], 'v', ARGV[base + 1], 'd', ARGV[base + 4])
      local ttl = tonumber(ARGV[base + 3])
      if ttl > 0 then
        redis.call('PEXPIRE', KEYS[i], ttl)
      else
        redis.call('PERSIST', KEYS[i])
      end
    end
  else
    table.insert(skipped, i - 1)
    table.insert(skipped, current)
  end
end
return skipped
";

/// Redis could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BackingError {
    /// Redis did not answer, or answered with an error.
    #[error("Redis at {url} failed: {reason}; writes stay pending and are retried")]
    Redis {
        /// Where.
        url: String,
        /// What happened.
        reason: String,
    },
}

/// One write to store.
#[derive(Debug, Clone)]
pub struct StoreWrite {
    /// The cache key.
    pub key: Vec<u8>,
    /// Its version.
    pub version: u64,
    /// The value, or `None` to delete.
    pub value: Option<Vec<u8>>,
    /// How long the value has left to live, by the directory's (cluster) time, in ms. Relative,
    /// so that Redis's clock and the cluster's need not agree.
    pub expires_in_ms: Option<u64>,
}

/// A write Redis did not make because it holds that version of the key or a newer one: an
/// acknowledged retry (the same version) or a slower, deposed leader's write (older).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    /// Index of the write in the batch.
    pub index: usize,
    /// The version Redis holds.
    pub held: u64,
}

/// What Redis holds for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Nothing (never written back, evicted, or lost).
    Nothing,
    /// A deletion at this version.
    Deleted(u64),
    /// This version's value.
    Value(u64, Vec<u8>),
}

/// A Redis connection that reconnects by itself.
pub struct RedisStore {
    url: String,
    manager: ConnectionManager,
    script: redis::Script,
}

impl RedisStore {
    /// Prepares a connection to `url`; connects lazily, so a node starts while Redis is down.
    ///
    /// # Errors
    ///
    /// When the URL is not a Redis URL.
    pub fn new(url: &str) -> Result<Self, BackingError> {
        let failed = |e: redis::RedisError| BackingError::Redis { url: url.to_string(), reason: e.to_string() };
        let client = redis::Client::open(url).map_err(failed)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_lazy_with_config(client, config).map_err(failed)?;
        Ok(Self { url: url.to_string(), manager, script: redis::Script::new(WRITE_BACK_SCRIPT) })
    }

    /// The URL, for logs and stats.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn failed(&self, reason: impl ToString) -> BackingError {
        BackingError::Redis { url: self.url.clone(), reason: reason.to_string() }
    }

    /// Stores `writes` (each only over an older version), in one atomic script.
    ///
    /// # Errors
    ///
    /// When Redis cannot be reached or refuses; nothing may or some may have been stored, which
    /// the version check makes safe to retry.
    pub async fn write_back(&self, namespace: &Namespace, writes: &[StoreWrite]) -> Result<Vec<Skipped>, BackingError> {
        let mut invocation = self.script.prepare_invoke();
        for write in writes {
            invocation.key(namespace.key(&write.key));
            invocation.arg(write.version);
            match &write.value {
                Some(value) => {
                    invocation.arg("s");
                    invocation.arg(write.expires_in_ms.map_or(0, |ttl| ttl + EXPIRY_SLACK_MS));
                    invocation.arg(value.as_slice());
                }
                None => {
                    invocation.arg("d");
                    invocation.arg(TOMBSTONE_MS);
                    invocation.arg("");
                }
            }
        }
        let mut connection = self.manager.clone();
        let call = invocation.invoke_async::<Vec<u64>>(&mut connection);
        match tokio::time::timeout(REDIS_TIMEOUT, call).await {
            Ok(Ok(skipped)) => Ok(skipped
                .chunks_exact(2)
                .map(|pair| Skipped { index: pair[0] as usize, held: pair[1] })
                .filter(|skipped| skipped.index < writes.len())
                .collect()),
            Ok(Err(error)) => Err(self.failed(error)),
            Err(_) => Err(self.failed(format!("no answer within {REDIS_TIMEOUT:?}"))),
        }
    }

    /// What Redis holds for each of `keys`, in one round trip.
    ///
    /// # Errors
    ///
    /// When Redis cannot be reached or refuses.
    pub async fn fetch(&self, namespace: &Namespace, keys: &[&[u8]]) -> Result<Vec<Stored>, BackingError> {
        let mut pipeline = redis::pipe();
        for key in keys {
            pipeline.cmd("HMGET").arg(namespace.key(key)).arg("v").arg("d");
        }
        let mut connection = self.manager.clone();
        let call = pipeline.query_async::<Vec<(Option<u64>, Option<Vec<u8>>)>>(&mut connection);
        let answers = match tokio::time::timeout(REDIS_TIMEOUT, call).await {
            Ok(Ok(answers)) => answers,
            Ok(Err(error)) => return Err(self.failed(error)),
            Err(_) => return Err(self.failed(format!("no answer within {REDIS_TIMEOUT:?}"))),
        };
        if answers.len() != keys.len() {
            return Err(self.failed(format!("{} answers to {} reads", answers.len(), keys.len())));
        }
        Ok(answers
            .into_iter()
            .map(|answer| match answer {
                (Some(version), Some(value)) => Stored::Value(version, value),
                (Some(version), None) => Stored::Deleted(version),
                (None, _) => Stored::Nothing,
            })
            .collect())
    }
}
