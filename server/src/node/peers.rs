//! Requests from other members: Raft RPCs (with the votes a leased or fresh node withholds),
//! forwarded client requests, and read-index questions to the leader.

use std::time::Duration;

use distsync::{NodeId, ServerError};

use super::dispatch::Origin;
use super::Node;
use crate::transport::{PeerRequest, PeerResponse};

impl Node {
    /// Handles one request from an authenticated peer; `None` means "stay silent".
    pub(super) async fn handle_peer(&self, from: NodeId, request: PeerRequest) -> Option<PeerResponse> {
        if self.transport.is_dropped(from) {
            return None;
        }
        self.transport.heard_from(from);
        Some(match request {
            PeerRequest::AppendEntries(request) => PeerResponse::AppendEntries(self.raft.append_entries(request).await),
            PeerRequest::Vote(request) => {
                // Keep the lease promise (see [`crate::raft::lease`]): no vote while this node leads
                // under a lease, nor in a fresh process, which has forgotten when it last heard
                // from a leader. A candidate sees a lost packet and tries again later.
                let fresh = self.started.elapsed() < Duration::from_millis(self.config.election_timeout_max_ms);
                if fresh || self.lease_read_index().is_some() {
                    return None;
                }
                PeerResponse::Vote(self.raft.vote(request).await)
            }
            PeerRequest::InstallSnapshot(request) => {
                PeerResponse::InstallSnapshot(self.raft.install_snapshot(request).await)
            }
            PeerRequest::Forward { identity, request } => {
                PeerResponse::Forward(self.handle(request, Origin::Forwarded, &identity).await)
            }
            PeerRequest::ReadIndex => PeerResponse::ReadIndex(if self.is_leader() {
                self.confirmations.join(|| self.confirm_leadership()).await
            } else {
                Err(ServerError::NotLeader { leader: self.leader() })
            }),
        })
    }
}
