//! Compaction by bytes: openraft's snapshot policy counts entries, and keeps a count of entries
//! after a snapshot, which large entries turn into gigabytes of log on disk and to replay. This
//! node-side loop snapshots and purges by log bytes as well.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::Node;

/// How often a node checks whether its log holds enough bytes for a snapshot.
const SNAPSHOT_CHECK_INTERVAL: Duration = Duration::from_millis(200);

/// How long a snapshot asked for may take before it is asked for again.
const SNAPSHOT_RETRY_AFTER: Duration = Duration::from_secs(10);

/// Asks openraft for a snapshot whenever the log since the latest one holds more than
/// `--snapshot-log-bytes` (openraft's own policy counts entries only), once per check interval at
/// most, and not again until the snapshot moved; and purges the log before the snapshot down to
/// a quarter of that (openraft keeps a number of entries, which large entries make gigabytes).
pub(super) async fn snapshot_by_bytes_loop(node: Arc<Node>, mut stopped: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(SNAPSHOT_CHECK_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The applied index a snapshot was asked at, and when: not asked again until a snapshot
    // reaches it, or a while has passed (a snapshot that failed).
    let mut asked: Option<(u64, Instant)> = None;
    let mut purged_to = 0;
    let keep_bytes = node.config.snapshot_log_bytes / 4;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stopped.changed() => return,
        }
        let snapshot = node.metrics.borrow().snapshot.map_or(0, |s| s.index);
        if let Some(upto) = node.log.purge_point(snapshot, keep_bytes).filter(|&upto| upto > purged_to) {
            if let Err(error) = node.raft.trigger().purge_log(upto).await {
                tracing::warn!(%error, "cannot ask for a purge of the log");
            }
            purged_to = upto;
        }
        if asked.is_some_and(|(index, at)| snapshot < index && at.elapsed() < SNAPSHOT_RETRY_AFTER) {
            continue;
        }
        let bytes = node.log.bytes_after(snapshot);
        if bytes <= node.config.snapshot_log_bytes {
            continue;
        }
        let applied = node.state.applied().last_applied.map_or(0, |l| l.index);
        tracing::info!(
            bytes,
            limit = node.config.snapshot_log_bytes,
            "log since the last snapshot passed --snapshot-log-bytes; taking a snapshot"
        );
        if let Err(error) = node.raft.trigger().snapshot().await {
            tracing::warn!(%error, "cannot ask for a snapshot");
        }
        asked = Some((applied, Instant::now()));
    }
}
