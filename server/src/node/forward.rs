//! Forwarding: a follower relays a client's request to the leader and returns the answer, and
//! sends it where it belongs when the leader changes meanwhile.

use std::time::Duration;

use distsync::wire::{Request, Response};
use distsync::{NodeId, ServerError};

use super::dispatch::Origin;
use super::Node;
use crate::transport::{PeerRequest, PeerResponse};

impl Node {
    /// Relays a request to the leader and returns its answer.
    pub(super) async fn forward(
        &self,
        request: Request,
        leader: Option<NodeId>,
        origin: Origin,
        identity: &str,
    ) -> Result<Response, ServerError> {
        let Some(leader) = leader.filter(|leader| *leader != self.config.id) else {
            return Err(ServerError::Unavailable { reason: "no leader is elected right now".into() });
        };
        if origin == Origin::Forwarded {
            return Err(ServerError::NotLeader { leader: self.leader() });
        }
        let timeout = forward_timeout(self.config.write_timeout());
        let request = PeerRequest::Forward { identity: identity.to_string(), request };
        let mut metrics = self.metrics.clone();
        let leader_moved = async {
            while metrics.changed().await.is_ok() {
                if metrics.borrow().current_leader != Some(leader) {
                    return;
                }
            }
            std::future::pending::<()>().await
        };
        tokio::select! {
            result = self.transport.call(leader, &request, timeout) => match result {
                Ok(PeerResponse::Forward(reply)) => reply.body,
                Ok(other) => Err(ServerError::Internal { reason: format!("unexpected answer to a forward: {other:?}") }),
                Err(error) => Err(ServerError::Unavailable {
                    reason: format!("node {} cannot reach the leader: {error}", self.config.id),
                }),
            },
            // The leader changed while we waited (it may have died): send the request where it
            // belongs now instead of waiting for a dead node. Re-sending is safe because writes
            // are deduplicated by session and sequence number, and reads have no effect.
            () = leader_moved, if origin == Origin::Client => {
                let PeerRequest::Forward { request, .. } = request else { unreachable!("built above") };
                Box::pin(self.dispatch(request, Origin::Rerouted, identity)).await
            }
        }
    }
}

/// How long a forwarded client request may take: the write timeout plus a margin for the hop.
pub(super) fn forward_timeout(write_timeout: Duration) -> Duration {
    write_timeout + Duration::from_millis(500)
}
