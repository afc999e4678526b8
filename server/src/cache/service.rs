//! The cache on a node: linearizable and local reads, the writer's copy, `cache show` and
//! `cache stats`, the leader's write-back to Redis, and the reports that keep the directory's
//! holder sets current.
//!
//! A linearizable read takes a read index (batched: one leader confirmation serves every read
//! that arrived before it started), waits until this node has applied that far, then answers
//! each key from the directory: absent; pending write-back (the value is in the directory); or
//! stored, served from this node's copy when its version is the directory's, else fetched from
//! Redis, checked against that version, and offered to the cache.
//!
//! The leader's write-back to Redis is in `write_back.rs`, the reports of each node's copies in
//! `reports.rs`.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use distsync::wire::{
    validate_key, CacheDirectoryView, CacheKeyView, CacheNodeStats, CacheReport, CacheValue, Consistency,
    CACHE_GET_BYTES_MAX, CACHE_GET_KEYS_MAX,
};
use distsync::{NodeId, ServerError};

use super::backing::{Namespace, RedisStore, Stored};
use super::near_cache::{Lookup, NearCache};
use crate::state::cache::DirectoryRead;
use crate::state::Op;

/// Passes over the directory a read makes before giving up on a key that keeps changing.
const READ_PASSES_MAX: usize = 4;

/// Counters of the read and write-back paths (the cache's own are in [`NearCache`]).
#[derive(Default)]
pub(super) struct Counters {
    pub(super) misses: AtomicU64,
    pub(super) pending_reads: AtomicU64,
    pub(super) absent_reads: AtomicU64,
    pub(super) write_backs: AtomicU64,
    pub(super) write_back_failures: AtomicU64,
    pub(super) write_back_skipped: AtomicU64,
    pub(super) lost: AtomicU64,
}

/// A node's cache service.
pub struct CacheService {
    pub(super) node: NodeId,
    pub(super) near: Arc<NearCache>,
    pub(super) redis: Option<RedisStore>,
    pub(super) counters: Counters,
}

/// What a node needs from its surroundings to serve the cache; implemented by the node.
pub trait CacheHost: Send + Sync {
    /// A read index from the leader (confirmed after this call began).
    fn read_index(&self) -> impl Future<Output = Result<u64, ServerError>> + Send;
    /// Waits until this node applied `index`.
    fn wait_applied(&self, index: u64) -> impl Future<Output = Result<(), ServerError>> + Send;
    /// Proposes `op` through the leader and waits for it to commit. Boxed: proposing may
    /// forward a request whose handling reads the cache again.
    fn propose(&self, op: Op) -> std::pin::Pin<Box<dyn Future<Output = Result<(), ServerError>> + Send + '_>>;
    /// The applied state.
    fn applied(&self) -> std::sync::RwLockReadGuard<'_, crate::storage::state_machine_store::Applied>;
    /// Whether this node leads now.
    fn is_leader(&self) -> bool;
}

impl CacheService {
    /// The service of node `node`, with its cache and optional Redis.
    pub fn new(node: NodeId, near: Arc<NearCache>, redis: Option<RedisStore>) -> Self {
        Self { node, near, redis, counters: Counters::default() }
    }

    /// Reads `keys`; see the module documentation. The answer may cover a prefix of the keys
    /// when their values exceed [`CACHE_GET_BYTES_MAX`].
    ///
    /// # Errors
    ///
    /// `InvalidArgument` for bad keys; `Unavailable` when the node cannot confirm it is current
    /// or Redis cannot be reached for a value not cached here.
    pub async fn get(
        &self,
        host: &impl CacheHost,
        keys: &[Vec<u8>],
        consistency: Consistency,
    ) -> Result<Vec<Option<CacheValue>>, ServerError> {
        if keys.is_empty() || keys.len() > CACHE_GET_KEYS_MAX {
            return Err(ServerError::InvalidArgument {
                reason: format!("a cache get takes 1..={CACHE_GET_KEYS_MAX} keys, not {}", keys.len()),
            });
        }
        for key in keys {
            validate_key(key)?;
        }
        if consistency == Consistency::Linearizable {
            let index = host.read_index().await?;
            host.wait_applied(index).await?;
        }
        let mut answers: Vec<Option<CacheValue>> = vec![None; keys.len()];
        let mut todo: Vec<usize> = (0..keys.len()).collect();
        for _ in 0..READ_PASSES_MAX {
            let fetch = self.answer_locally(host, keys, &todo, &mut answers);
            if fetch.is_empty() {
                return Ok(within_byte_limit(answers));
            }
            let (retry, lost) = self.fetch(host, keys, &fetch, &mut answers).await?;
            if !lost.is_empty() {
                // Redis no longer holds these versions: record in the log that the keys are gone,
                // then look again from a state that includes that record.
                self.counters.lost.fetch_add(lost.len() as u64, Ordering::Relaxed);
                tracing::warn!(keys = lost.len(), "Redis no longer holds cached values; they now read as absent");
                host.propose(Op::CacheReport(CacheReport { node: self.node, lost, ..CacheReport::default() })).await?;
                let index = host.read_index().await?;
                host.wait_applied(index).await?;
            }
            todo = retry;
            if todo.is_empty() {
                return Ok(within_byte_limit(answers));
            }
        }
        Err(ServerError::Unavailable {
            reason: format!("{} cache keys changed during every attempt to read them; retry", todo.len()),
        })
    }

    /// Answers the keys at `todo` from the directory and this node's copies; returns those to
    /// fetch from Redis, with the version they must have.
    fn answer_locally(
        &self,
        host: &impl CacheHost,
        keys: &[Vec<u8>],
        todo: &[usize],
        answers: &mut [Option<CacheValue>],
    ) -> Vec<(usize, u64)> {
        let applied = host.applied();
        let directory = applied.machine.cache();
        let mut fetch = Vec::new();
        for &i in todo {
            match directory.read(&keys[i]) {
                DirectoryRead::Absent => {
                    self.counters.absent_reads.fetch_add(1, Ordering::Relaxed);
                    answers[i] = None;
                }
                DirectoryRead::Pending { version, value } => match self.near.get(&keys[i], version) {
                    Lookup::Hit(value) => answers[i] = Some(CacheValue { version, value: value.to_vec() }),
                    Lookup::Miss => {
                        // Like a read of a modified line in MESI: the value comes from the
                        // owner (here, the directory) and this node keeps a shared copy.
                        self.counters.pending_reads.fetch_add(1, Ordering::Relaxed);
                        self.near.insert(&keys[i], version, Arc::new(value.to_vec()), false);
                        answers[i] = Some(CacheValue { version, value: value.to_vec() });
                    }
                },
                DirectoryRead::Stored { version } => match self.near.get(&keys[i], version) {
                    Lookup::Hit(value) => answers[i] = Some(CacheValue { version, value: value.to_vec() }),
                    Lookup::Miss => fetch.push((i, version)),
                },
            }
        }
        fetch
    }

    /// Fetches `fetch` from Redis into `answers`; returns the keys to look at again and the
    /// (key, version) pairs Redis lost.
    async fn fetch(
        &self,
        host: &impl CacheHost,
        keys: &[Vec<u8>],
        fetch: &[(usize, u64)],
        answers: &mut [Option<CacheValue>],
    ) -> Result<(Vec<usize>, Vec<(Vec<u8>, u64)>), ServerError> {
        let Some(redis) = &self.redis else {
            return Err(ServerError::Unavailable {
                reason: format!(
                    "cache values were written back to Redis but node {} runs without --redis; start it with \
                     the cluster's --redis URL",
                    self.node
                ),
            });
        };
        self.counters.misses.fetch_add(fetch.len() as u64, Ordering::Relaxed);
        let wanted: Vec<&[u8]> = fetch.iter().map(|(i, _)| keys[*i].as_slice()).collect();
        let Some(namespace) = host.applied().machine.cluster_id().map(|id| Namespace::of(&id)) else {
            // Nothing is written back before the cluster is named, so Redis holds nothing of it.
            return Err(ServerError::Internal {
                reason: "a value was written back before the cluster was named".into(),
            });
        };
        let stored =
            redis.fetch(&namespace, &wanted).await.map_err(|e| ServerError::Unavailable { reason: e.to_string() })?;
        let applied = host.applied();
        let directory = applied.machine.cache();
        let mut retry = Vec::new();
        let mut lost = Vec::new();
        for (&(i, version), stored) in fetch.iter().zip(stored) {
            let key = &keys[i];
            let current = directory.read(key);
            match stored {
                Stored::Value(found, value) if found == version => {
                    if current == (DirectoryRead::Stored { version }) {
                        self.near.insert(key, version, Arc::new(value.clone()), false);
                    }
                    answers[i] = Some(CacheValue { version, value });
                }
                // A write (or deletion) newer than the directory this read started from has
                // committed and been written back meanwhile: it is a valid answer, since it
                // committed within the read's lifetime.
                Stored::Value(found, value) if found > version => {
                    answers[i] = Some(CacheValue { version: found, value });
                }
                Stored::Deleted(found) if found > version => answers[i] = None,
                _ => {
                    if current == (DirectoryRead::Stored { version }) {
                        lost.push((key.clone(), version));
                    }
                    retry.push(i);
                }
            }
        }
        Ok((retry, lost))
    }

    /// Keeps the copy a set made through this node, as M: committed at `version`, write-back
    /// pending. Skipped when a newer write is already applied here.
    pub fn keep_written(&self, host: &impl CacheHost, key: &[u8], value: Vec<u8>, version: u64) {
        let applied = host.applied();
        if applied.machine.cache().entry(key).is_some_and(|entry| entry.version > version) {
            return;
        }
        self.near.insert(key, version, Arc::new(value), true);
    }

    /// This node's view of `key`.
    pub fn show(&self, host: &impl CacheHost, key: &[u8]) -> CacheKeyView {
        let applied = host.applied();
        let entry = applied.machine.cache().entry(key);
        CacheKeyView {
            node: self.node,
            applied: applied.last_applied.map_or(0, |log_id| log_id.index),
            directory: entry.map(|entry| CacheDirectoryView {
                version: entry.version,
                pending: entry.pending.is_some(),
                expires_at_ms: entry.expires_at_ms,
                holders: entry.holders.iter().copied().collect(),
            }),
            copy: self.near.view(key, entry),
        }
    }

    /// This node's counters and contents.
    pub fn stats(&self, host: &impl CacheHost) -> CacheNodeStats {
        let (counts, pending) = {
            let applied = host.applied();
            let directory = applied.machine.cache();
            (self.near.state_counts(|key| directory.entry(key)), directory.pending_count() as u64)
        };
        let near = self.near.counters();
        let limits = self.near.limits();
        let counter = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CacheNodeStats {
            node: self.node,
            backing: self.redis.as_ref().map_or_else(|| "embedded".to_string(), |r| r.url().to_string()),
            hits: near.hits,
            misses: counter(&self.counters.misses),
            pending_reads: counter(&self.counters.pending_reads),
            absent_reads: counter(&self.counters.absent_reads),
            invalidations: near.invalidations,
            evictions: near.evictions,
            rejected: near.rejected,
            write_backs: counter(&self.counters.write_backs),
            write_back_failures: counter(&self.counters.write_back_failures),
            pending_write_backs: pending,
            lost: counter(&self.counters.lost),
            modified: counts.modified,
            exclusive: counts.exclusive,
            shared: counts.shared,
            invalid: counts.invalid,
            bytes: counts.bytes,
            capacity_bytes: limits.bytes,
            write_back_skipped: counter(&self.counters.write_back_skipped),
            capacity_entries: limits.entries as u64,
        }
    }
}

/// The longest prefix of `answers` whose values fit in [`CACHE_GET_BYTES_MAX`] (at least one).
fn within_byte_limit(mut answers: Vec<Option<CacheValue>>) -> Vec<Option<CacheValue>> {
    let mut bytes = 0;
    let mut keep = answers.len();
    for (i, answer) in answers.iter().enumerate() {
        bytes += answer.as_ref().map_or(0, |a| a.value.len());
        if bytes > CACHE_GET_BYTES_MAX && i > 0 {
            keep = i;
            break;
        }
    }
    answers.truncate(keep);
    answers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_answer_stops_at_the_byte_limit_but_never_empty() {
        let big = || Some(CacheValue { version: 1, value: vec![0; CACHE_GET_BYTES_MAX / 2 + 1] });
        assert_eq!(within_byte_limit(vec![big(), big(), None]).len(), 1);
        let huge = Some(CacheValue { version: 1, value: vec![0; CACHE_GET_BYTES_MAX + 1] });
        assert_eq!(within_byte_limit(vec![huge, None]).len(), 1);
        assert_eq!(within_byte_limit(vec![None, None]).len(), 2);
    }
}
