//! A node's own view, for `distsync status`, the admin port's `/status` and `/metrics`.

use distsync::wire::{CacheNodeStats, NodeStatus, PeerStatus, Role};
use openraft::ServerState;

use super::Node;

impl Node {
    /// This node's cache counters and contents, for the admin port's `/metrics`.
    pub fn cache_stats(&self) -> CacheNodeStats {
        self.cache.stats(self)
    }

    /// This node's own view, for `distsync status` and the admin port's `/status`.
    pub fn status(&self) -> NodeStatus {
        self.status_with(true)
    }

    /// The same without the state digest (left 0): serializing the whole state under the state
    /// machine's read lock would hold up applying entries on every metrics scrape.
    pub fn status_without_digest(&self) -> NodeStatus {
        self.status_with(false)
    }

    fn status_with(&self, digest: bool) -> NodeStatus {
        let metrics = self.metrics.borrow().clone();
        let role = match metrics.state {
            ServerState::Leader => Role::Leader,
            ServerState::Follower => Role::Follower,
            ServerState::Candidate => Role::Candidate,
            ServerState::Learner => Role::Learner,
            ServerState::Shutdown => Role::Shutdown,
        };
        let (applied, digest, sessions, keys, locks, queues) = {
            let applied = self.state.applied();
            (
                applied.last_applied.map(|l| l.index).unwrap_or(0),
                if digest { applied.machine.digest() } else { 0 },
                applied.machine.session_count() as u64,
                applied.machine.key_count() as u64,
                applied.machine.lock_count() as u64,
                applied.machine.queue_count() as u64,
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
            state_digest: digest,
            sessions,
            keys,
            locks,
            queues,
            peers,
        }
    }
}
