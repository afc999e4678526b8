//! The leader's write-back: pending cache values go to Redis in version order, and each written
//! batch is recorded in the log, retried with backoff while Redis is down.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;

use super::backing::{Namespace, StoreWrite};
use super::{CacheHost, CacheService};
use crate::state::Op;

/// Writes per write-back batch, at most.
const WRITE_BACK_KEYS_MAX: usize = 512;

/// Value bytes per write-back batch, roughly.
const WRITE_BACK_BYTES_MAX: usize = 4 * 1024 * 1024;

impl CacheService {
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
            let Some((namespace, batch)) = host.is_leader().then(|| pending_batch(host)).flatten() else {
                tokio::select! {
                    _ = applied_changes.changed() => {}
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = stopped.changed() => return,
                }
                continue;
            };
            match redis.write_back(&namespace, &batch).await {
                Ok(skipped) => {
                    self.note_skipped(&batch, &skipped);
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

    /// Counts the writes Redis skipped, and warns of those it skipped for a newer version.
    fn note_skipped(&self, batch: &[StoreWrite], skipped: &[super::backing::Skipped]) {
        self.counters.write_back_skipped.fetch_add(skipped.len() as u64, Ordering::Relaxed);
        for skip in skipped {
            let write = &batch[skip.index];
            if skip.held > write.version {
                tracing::warn!(
                    key = %String::from_utf8_lossy(&write.key),
                    writing = write.version,
                    held = skip.held,
                    "Redis holds a newer version of a cache key than the one written back: a deposed leader \
                     wrote late, or another writer uses this cluster's Redis namespace"
                );
            }
        }
    }
}

/// The cluster's Redis namespace and its oldest pending writes, within the batch limits; none
/// while nothing is pending (or the cluster is not named yet, so nothing can be).
fn pending_batch(host: &impl CacheHost) -> Option<(Namespace, Vec<StoreWrite>)> {
    let applied = host.applied();
    let namespace = Namespace::of(&applied.machine.cluster_id()?);
    let now_ms = applied.machine.now_ms();
    let mut bytes = 0;
    let batch = applied
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
            expires_in_ms: write.expires_at_ms.map(|at| at.saturating_sub(now_ms).max(1)),
        })
        .collect::<Vec<_>>();
    (!batch.is_empty()).then_some((namespace, batch))
}
