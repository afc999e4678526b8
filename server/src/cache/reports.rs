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
}
