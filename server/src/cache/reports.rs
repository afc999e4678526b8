//! Holder reports: every node tells the leader, in the log, which cache copies it loaded and
//! dropped, so that the directory's holder sets (E versus S) stay current.

use std::collections::BTreeMap;
use std::time::Duration;

use distsync::wire::CacheReport;
use distsync::NodeId;
use tokio::sync::watch;

use super::near_cache::HolderChange;
use super::{CacheHost, CacheService};
use crate::state::Op;

/// How often a node reports the copies it loaded and dropped.
const REPORT_INTERVAL: Duration = Duration::from_millis(20);

/// Holder changes per report, at most.
const REPORT_CHANGES_MAX: usize = 4096;

/// Key bytes per report, at most: keys are up to 4 KiB, so the count alone would let one report
/// grow to 16 MiB, beyond what one log entry may hold.
const REPORT_KEY_BYTES_MAX: usize = 1024 * 1024;

/// Holder changes kept for a later report while no leader takes them; beyond, they are dropped
/// (holder sets only decide between E and S, never what a read returns).
const REPORT_BACKLOG_MAX: usize = 100_000;

impl CacheService {
    /// Reports this node's loaded and dropped copies to the leader every `REPORT_INTERVAL`.
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
                let take = changes_fitting(&backlog);
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

/// How many of the first `changes` one report takes: at least one, at most
/// [`REPORT_CHANGES_MAX`] and [`REPORT_KEY_BYTES_MAX`] of keys.
fn changes_fitting(changes: &[HolderChange]) -> usize {
    let mut bytes = 0;
    let fitting = changes
        .iter()
        .take(REPORT_CHANGES_MAX)
        .take_while(|change| {
            bytes += match change {
                HolderChange::Loaded(key, _) | HolderChange::Dropped(key) => key.len() + 16,
            };
            bytes <= REPORT_KEY_BYTES_MAX
        })
        .count();
    fitting.max(1).min(changes.len())
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_report_of_long_keys_stays_within_one_operation() {
        let key = |i: u32| [i.to_be_bytes().as_slice(), &[b'k'; distsync::wire::KEY_BYTES_MAX - 4]].concat();
        let changes: Vec<_> = (0..REPORT_CHANGES_MAX as u32).map(|i| HolderChange::Loaded(key(i), 1)).collect();
        let take = changes_fitting(&changes);
        assert!(take > 1 && take < changes.len(), "{take} of {} changes", changes.len());
        let op = Op::CacheReport(build_report(1, true, &changes[..take]));
        assert!(op.encoded_bytes() <= crate::node::OP_BYTES_MAX, "{} bytes", op.encoded_bytes());
        assert_eq!(changes_fitting(&changes[..1]), 1);
        assert_eq!(changes_fitting(&[]), 0);
    }
}
