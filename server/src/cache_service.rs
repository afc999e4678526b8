//! The cache on a node: linearizable and local reads, the writer's copy, `cache show` and
//! `cache stats`, the leader's write-back to Redis, and the reports that keep the directory's
//! holder sets current.
//!
//! A linearizable read takes a read index (batched: one leader confirmation serves every read
//! that arrived before it started), waits until this node has applied that far, then answers
//! each key from the directory: absent; pending write-back (the value is in the directory); or
//! stored, served from this node's copy when its version is the directory's, else fetched from
//! Redis, checked against that version, and offered to the cache.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use distsync::wire::{
    validate_key, CacheDirectoryView, CacheKeyView, CacheNodeStats, CacheReport, CacheValue, Consistency,
    CACHE_GET_BYTES_MAX, CACHE_GET_KEYS_MAX,
};
use distsync::{NodeId, ServerError};
use tokio::sync::watch;

use crate::backing::{RedisStore, StoreWrite, Stored};
use crate::near_cache::{HolderChange, Lookup, NearCache};
use crate::state::cache::DirectoryRead;
use crate::state::Op;

/// Writes per write-back batch, at most.
const WRITE_BACK_KEYS_MAX: usize = 512;

/// Value bytes per write-back batch, roughly.
const WRITE_BACK_BYTES_MAX: usize = 4 * 1024 * 1024;

/// How often a node reports the copies it loaded and dropped.
const REPORT_INTERVAL: Duration = Duration::from_millis(20);

/// Holder changes per report, at most.
const REPORT_CHANGES_MAX: usize = 4096;

/// Holder changes kept for a later report while no leader takes them; beyond, they are dropped
/// (holder sets only decide between E and S, never what a read returns).
const REPORT_BACKLOG_MAX: usize = 100_000;

/// Passes over the directory a read makes before giving up on a key that keeps changing.
const READ_PASSES_MAX: usize = 4;

/// Runs confirmations in rounds: a caller is answered by the first round that *started* after
/// it arrived, so one round serves every caller waiting for it. One round runs at a time.
#[derive(Default)]
pub struct Rounds {
    arrivals: AtomicU64,
    /// The latest round: the last arrival it covers, and its result.
    latest: tokio::sync::Mutex<Option<(u64, Result<u64, ServerError>)>>,
}

impl Rounds {
    /// The result of a round that started after this call: `confirm`'s, or another caller's.
    pub async fn join<F, Fut>(&self, confirm: F) -> Result<u64, ServerError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<u64, ServerError>>,
    {
        let ticket = self.arrivals.fetch_add(1, Ordering::SeqCst) + 1;
        let mut latest = self.latest.lock().await;
        if let Some((covered, result)) = &*latest {
            if *covered >= ticket {
                return result.clone();
            }
        }
        // Everyone who has arrived so far arrived before this round starts.
        let covered = self.arrivals.load(Ordering::SeqCst);
        let result = confirm().await;
        *latest = Some((covered, result.clone()));
        result
    }
}

/// Counters of the read and write-back paths (the cache's own are in [`NearCache`]).
#[derive(Default)]
struct Counters {
    misses: AtomicU64,
    pending_reads: AtomicU64,
    absent_reads: AtomicU64,
    write_backs: AtomicU64,
    write_back_failures: AtomicU64,
    lost: AtomicU64,
}

/// A node's cache service.
pub struct CacheService {
    node: NodeId,
    near: Arc<NearCache>,
    redis: Option<RedisStore>,
    /// Read-index rounds this node runs as leader.
    pub(crate) leader_rounds: Rounds,
    /// Read-index rounds this node asks of the leader as follower.
    pub(crate) follower_rounds: Rounds,
    counters: Counters,
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
        Self {
            node,
            near,
            redis,
            leader_rounds: Rounds::default(),
            follower_rounds: Rounds::default(),
            counters: Counters::default(),
        }
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
        let stored = redis.fetch(&wanted).await.map_err(|e| ServerError::Unavailable { reason: e.to_string() })?;
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
            capacity_entries: limits.entries as u64,
        }
    }

    /// As leader, writes pending values to Redis in version order and records each batch in the
    /// log; retries with backoff while Redis is down. Returns when `stopped` flips.
    pub async fn write_back_loop(
        &self,
        host: &impl CacheHost,
        mut applied_changes: watch::Receiver<u64>,
        mut stopped: watch::Receiver<bool>,
    ) {
        let Some(redis) = &self.redis else { return };
        let mut failures: u32 = 0;
        loop {
            if *stopped.borrow() {
                return;
            }
            let batch = if host.is_leader() { pending_batch(host) } else { Vec::new() };
            if batch.is_empty() {
                tokio::select! {
                    _ = applied_changes.changed() => {}
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = stopped.changed() => return,
                }
                continue;
            }
            match redis.write_back(&batch).await {
                Ok(()) => {
                    if failures > 0 {
                        tracing::info!(after_failures = failures, "Redis is reachable again; writing back");
                    }
                    failures = 0;
                    let written: Vec<(Vec<u8>, u64)> = batch.into_iter().map(|w| (w.key, w.version)).collect();
                    let count = written.len() as u64;
                    match host.propose(Op::CacheWrittenBack { written }).await {
                        Ok(()) => {
                            self.counters.write_backs.fetch_add(count, Ordering::Relaxed);
                        }
                        Err(error) => tracing::debug!(%error, "write-back not recorded; it is redone"),
                    }
                }
                Err(error) => {
                    failures += 1;
                    self.counters.write_back_failures.fetch_add(1, Ordering::Relaxed);
                    if failures == 1 || failures % 20 == 0 {
                        tracing::warn!(%error, pending = batch.len(), failures, "cache write-back failed");
                    }
                    let pause = Duration::from_millis(50u64 << failures.min(5)).min(Duration::from_secs(2));
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        _ = stopped.changed() => return,
                    }
                }
            }
        }
    }

    /// Reports this node's loaded and dropped copies to the leader every [`REPORT_INTERVAL`].
    pub async fn report_loop(&self, host: &impl CacheHost, mut stopped: watch::Receiver<bool>) {
        let mut backlog: Vec<HolderChange> = Vec::new();
        let mut reset = false;
        loop {
            tokio::select! {
                () = tokio::time::sleep(REPORT_INTERVAL) => {}
                _ = stopped.changed() => return,
            }
            let (fresh_reset, changes) = self.near.take_changes();
            if fresh_reset {
                // Changes before a reset are moot.
                backlog.clear();
                reset = true;
            }
            backlog.extend(changes);
            while reset || !backlog.is_empty() {
                let take = backlog.len().min(REPORT_CHANGES_MAX);
                let report = build_report(self.node, reset, &backlog[..take]);
                match host.propose(Op::CacheReport(report)).await {
                    Ok(()) => {
                        reset = false;
                        backlog.drain(..take);
                    }
                    Err(error) => {
                        tracing::debug!(%error, "cache report not committed; kept for the next one");
                        if backlog.len() > REPORT_BACKLOG_MAX {
                            let excess = backlog.len() - REPORT_BACKLOG_MAX;
                            backlog.drain(..excess);
                        }
                        break;
                    }
                }
            }
        }
    }
}

/// The oldest pending writes, within the batch limits.
fn pending_batch(host: &impl CacheHost) -> Vec<StoreWrite> {
    let applied = host.applied();
    let mut bytes = 0;
    applied
        .machine
        .cache()
        .pending_write_backs(WRITE_BACK_KEYS_MAX)
        .into_iter()
        .take_while(|write| {
            let fits = bytes == 0 || bytes + write.value.map_or(0, <[u8]>::len) <= WRITE_BACK_BYTES_MAX;
            bytes += write.key.len() + write.value.map_or(0, <[u8]>::len);
            fits
        })
        .map(|write| StoreWrite {
            key: write.key.to_vec(),
            version: write.version,
            value: write.value.map(<[u8]>::to_vec),
            expires_at_ms: write.expires_at_ms,
        })
        .collect()
}

/// A report of `changes`, the last change of each key winning.
fn build_report(node: NodeId, reset: bool, changes: &[HolderChange]) -> CacheReport {
    let mut last: BTreeMap<&[u8], &HolderChange> = BTreeMap::new();
    for change in changes {
        let key = match change {
            HolderChange::Loaded(key, _) | HolderChange::Dropped(key) => key.as_slice(),
        };
        last.insert(key, change);
    }
    let mut report = CacheReport { node, reset, ..CacheReport::default() };
    for change in last.into_values() {
        match change {
            HolderChange::Loaded(key, version) => report.loaded.push((key.clone(), *version)),
            HolderChange::Dropped(key) => report.dropped.push(key.clone()),
        }
    }
    report
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

    #[tokio::test]
    async fn a_round_serves_only_callers_that_arrived_before_it_started() {
        let rounds = Arc::new(Rounds::default());
        let started = Arc::new(AtomicU64::new(0));
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        // The first caller starts round 1 and holds it open.
        let first = {
            let (rounds, started) = (rounds.clone(), started.clone());
            tokio::spawn(async move {
                rounds
                    .join(|| async move {
                        started.fetch_add(1, Ordering::SeqCst);
                        let _ = released.await;
                        Ok(1)
                    })
                    .await
            })
        };
        while started.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // These arrive during round 1, so round 1 cannot answer them: one round 2 serves all.
        let later: Vec<_> = (0..5)
            .map(|_| {
                let (rounds, started) = (rounds.clone(), started.clone());
                tokio::spawn(async move {
                    rounds
                        .join(|| async move {
                            let round = started.fetch_add(1, Ordering::SeqCst) + 1;
                            Ok(round)
                        })
                        .await
                })
            })
            .collect();
        tokio::task::yield_now().await;
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), 1);
        for caller in later {
            assert_eq!(caller.await.unwrap().unwrap(), 2, "served by the round that started after it arrived");
        }
        assert_eq!(started.load(Ordering::SeqCst), 2, "one round for all five");
    }

    #[test]
    fn reports_keep_the_last_change_of_each_key() {
        let changes = [
            HolderChange::Loaded(b"a".to_vec(), 1),
            HolderChange::Dropped(b"a".to_vec()),
            HolderChange::Dropped(b"b".to_vec()),
            HolderChange::Loaded(b"b".to_vec(), 4),
        ];
        let report = build_report(2, false, &changes);
        assert_eq!(report.dropped, vec![b"a".to_vec()]);
        assert_eq!(report.loaded, vec![(b"b".to_vec(), 4)]);
    }

    #[test]
    fn a_large_answer_stops_at_the_byte_limit_but_never_empty() {
        let big = || Some(CacheValue { version: 1, value: vec![0; CACHE_GET_BYTES_MAX / 2 + 1] });
        assert_eq!(within_byte_limit(vec![big(), big(), None]).len(), 1);
        let huge = Some(CacheValue { version: 1, value: vec![0; CACHE_GET_BYTES_MAX + 1] });
        assert_eq!(within_byte_limit(vec![huge, None]).len(), 1);
        assert_eq!(within_byte_limit(vec![None, None]).len(), 2);
    }
}
