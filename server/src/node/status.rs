//! A node's own view, for `distsync status`, the admin port's `/status` and `/metrics`.

use std::time::Instant;

use distsync::wire::{CacheNodeStats, NodeStatus, PeerStatus, Role, StateDigest, STATUS_DIGEST_INTERVAL};
use openraft::ServerState;

use super::Node;

/// The digest a node computed last, and when.
pub(super) type LastDigest = tokio::sync::Mutex<Option<(StateDigest, Instant)>>;

impl Node {
    /// This node's cache counters and contents, for the admin port's `/metrics`.
    pub fn cache_stats(&self) -> CacheNodeStats {
        self.cache.stats(self)
    }

    /// This node's own view, for `distsync status` and the admin port's `/status`, without the
    /// state digest: serializing the whole state under the state machine's read lock would hold
    /// up applying entries for every client that connects and every metrics scrape.
    pub fn status(&self) -> NodeStatus {
        self.status_with(None)
    }

    /// [`Node::status`] with a digest of the replicated state, computed from a copy of it off
    /// the state lock (applies wait only for the copy, see
    /// [`StateMachineStore::applied_copy`](crate::storage::state_machine_store::StateMachineStore::applied_copy)).
    /// Askers at the same time share one computation; a digest is reused while nothing was
    /// applied since, or for [`STATUS_DIGEST_INTERVAL`], so a burst of askers costs one digest,
    /// not one each. The digest names the applied index it was taken at, which may be behind the
    /// status's own `applied`.
    pub async fn status_with_digest(&self) -> NodeStatus {
        let mut last = self.last_digest.lock().await;
        let applied_now = self.state.applied().last_applied.map(|l| l.index).unwrap_or(0);
        let digest = match *last {
            Some((digest, at)) if digest.applied == applied_now || at.elapsed() < STATUS_DIGEST_INTERVAL => digest,
            _ => {
                let copy = self.state.applied_copy();
                let computed = tokio::task::spawn_blocking(move || StateDigest {
                    applied: copy.last_applied.map(|l| l.index).unwrap_or(0),
                    digest: copy.machine.digest(),
                });
                match computed.await {
                    Ok(digest) => {
                        *last = Some((digest, Instant::now()));
                        digest
                    }
                    // Only when the runtime shuts down: no digest then.
                    Err(error) => {
                        tracing::debug!(%error, "state digest not computed");
                        return self.status_with(None);
                    }
                }
            }
        };
        drop(last);
        self.status_with(Some(digest))
    }

    /// What clients and peers may hold of this node, and hold now.
    pub fn admission(&self) -> &super::admission::Admission {
        &self.admission
    }

    fn status_with(&self, state_digest: Option<StateDigest>) -> NodeStatus {
        let metrics = self.metrics.borrow().clone();
        let role = match metrics.state {
            ServerState::Leader => Role::Leader,
            ServerState::Follower => Role::Follower,
            ServerState::Candidate => Role::Candidate,
            ServerState::Learner => Role::Learner,
            ServerState::Shutdown => Role::Shutdown,
        };
        let (applied, sessions, keys, locks, queues, cluster_id, limits) = {
            let applied = self.state.applied();
            let limits = applied.machine.limits().named().into_iter().map(|(name, value)| (name.to_string(), value));
            (
                applied.last_applied.map(|l| l.index).unwrap_or(0),
                applied.machine.session_count() as u64,
                applied.machine.key_count() as u64,
                applied.machine.lock_count() as u64,
                applied.machine.queue_count() as u64,
                applied.machine.cluster_id().map(|id| crate::cache::backing::cluster_hex(&id)),
                limits.collect(),
            )
        };
        let heard = self.transport.last_heard();
        let peers = self
            .config
            .peers
            .0
            .iter()
            .filter(|(id, _)| **id != self.config.id)
            .map(|(id, address)| PeerStatus {
                id: *id,
                address: address.clone(),
                last_heard_ms: heard.get(id).map(|d| d.as_millis() as u64),
            })
            .collect();
        NodeStatus {
            id: self.config.id,
            address: self.config.advertised_address().to_string(),
            role,
            term: metrics.current_term,
            leader: metrics.current_leader,
            last_log_index: metrics.last_log_index.unwrap_or(0).max(self.log.last_index()),
            committed: self.log.committed_index().max(applied),
            applied,
            snapshot: metrics.snapshot.map(|s| s.index).unwrap_or(0),
            state_digest,
            sessions,
            keys,
            locks,
            queues,
            peers,
            cluster_id,
            limits,
        }
    }
}
