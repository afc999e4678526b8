//! Linearizable reads: confirm that this node is current (a read index, from the leader's lease
//! or a quorum round, coalesced), wait until applied up to it, then read the local state. The
//! cache reads the same way, through [`CacheHost`].

use std::future::Future;
use std::time::Instant;

use distsync::wire::{Query, Request, Response};
use distsync::{NodeId, ServerError};
use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::{BasicNode, ServerState};

use super::dispatch::Origin;
use super::forward::forward_timeout;
use super::Node;
use crate::cache::CacheHost;
use crate::state::Op;
use crate::transport::{PeerRequest, PeerResponse};

impl Node {
    /// Serves a linearizable read: confirm leadership with a quorum (read index), wait until
    /// applied up to it, then read the local state.
    pub(super) async fn read(&self, query: Query, origin: Origin, identity: &str) -> Result<Response, ServerError> {
        if self.config.enable_fault_injection && self.config.inject_bug == Some(crate::config::InjectedBug::StaleReads)
        {
            // Broken on purpose (`--inject-bug stale-reads`): whatever this node has applied.
            return self.state.applied().machine.query(identity, &query).map(Response::Read);
        }
        let leader = self.metrics.borrow().current_leader;
        if leader.is_some_and(|leader| leader != self.config.id) {
            return self.forward(Request::Read(query), leader, origin, identity).await;
        }
        let write_timeout = self.config.write_timeout();
        match tokio::time::timeout(write_timeout, self.raft.ensure_linearizable()).await {
            Ok(Ok(_)) => self.state.applied().machine.query(identity, &query).map(Response::Read),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(to)))) => {
                self.forward(Request::Read(query), to.leader_id, origin, identity).await
            }
            Ok(Err(error)) => Err(self.unconfirmed(Some(error))),
            Err(_) => Err(self.unconfirmed(None)),
        }
    }

    /// Why this node could not confirm its leadership; `None`: not within the write timeout.
    fn unconfirmed(&self, error: Option<RaftError<NodeId, CheckIsLeaderError<NodeId, BasicNode>>>) -> ServerError {
        let id = self.config.id;
        let reason = match error {
            Some(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_))) => {
                format!("node {id} lost its leadership during a read; retry")
            }
            Some(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(error))) => {
                format!("node {id} cannot reach a quorum: {error}")
            }
            Some(RaftError::Fatal(error)) => format!("node {id} is stopping: {error}"),
            None => format!("node {id} could not confirm its leadership within {:?}", self.config.write_timeout()),
        };
        ServerError::Unavailable { reason }
    }

    pub(super) fn is_leader(&self) -> bool {
        self.metrics.borrow().current_leader == Some(self.config.id)
    }

    /// The read index without a round trip, while this leader's lease holds (see
    /// [`crate::raft::lease`]).
    pub(super) fn lease_read_index(&self) -> Option<u64> {
        let term = {
            let metrics = self.metrics.borrow();
            if metrics.state != ServerState::Leader || metrics.current_leader != Some(self.config.id) {
                return None;
            }
            metrics.current_term
        };
        let applied = || self.state.applied().last_applied;
        self.lease.read_index(term, self.transport.lease_acks(term), applied, Instant::now())
    }

    /// As leader, confirms that this node still leads (by its lease, or else with a quorum
    /// round); returns the read index: every write acknowledged before the call is at or below it.
    pub(super) async fn confirm_leadership(&self) -> Result<u64, ServerError> {
        if let Some(index) = self.lease_read_index() {
            return Ok(index);
        }
        match tokio::time::timeout(self.config.write_timeout(), self.raft.get_read_log_id()).await {
            Ok(Ok((read_log_id, _))) => Ok(read_log_id.map_or(0, |log_id| log_id.index)),
            Ok(Err(error)) => Err(self.unconfirmed(Some(error))),
            Err(_) => Err(self.unconfirmed(None)),
        }
    }

    /// As follower, asks the leader for a read index.
    async fn ask_read_index(&self, leader: NodeId) -> Result<u64, ServerError> {
        let timeout = forward_timeout(self.config.write_timeout());
        match self.transport.call(leader, &PeerRequest::ReadIndex, timeout).await {
            Ok(PeerResponse::ReadIndex(Ok(index))) => Ok(index),
            Ok(PeerResponse::ReadIndex(Err(ServerError::NotLeader { .. }))) => {
                Err(ServerError::Unavailable { reason: format!("node {leader} is no longer the leader; retry") })
            }
            Ok(PeerResponse::ReadIndex(Err(error))) => Err(error),
            Ok(other) => {
                Err(ServerError::Internal { reason: format!("unexpected answer to a read index request: {other:?}") })
            }
            Err(error) => Err(ServerError::Unavailable {
                reason: format!("node {} cannot reach the leader {leader}: {error}", self.config.id),
            }),
        }
    }
}

impl CacheHost for Node {
    async fn read_index(&self) -> Result<u64, ServerError> {
        let leader = self.metrics.borrow().current_leader;
        match leader {
            Some(leader) if leader == self.config.id => self.confirmations.join(|| self.confirm_leadership()).await,
            Some(leader) => self.leader_reads.join(|| self.ask_read_index(leader)).await,
            None => Err(ServerError::Unavailable { reason: "no leader is elected right now".into() }),
        }
    }

    async fn wait_applied(&self, index: u64) -> Result<(), ServerError> {
        let timeout = self.config.write_timeout();
        if self.state.wait_applied(index, timeout).await {
            Ok(())
        } else {
            Err(ServerError::Unavailable {
                reason: format!(
                    "node {} did not apply up to the read index {index} within {timeout:?}",
                    self.config.id
                ),
            })
        }
    }

    fn propose(&self, op: Op) -> std::pin::Pin<Box<dyn Future<Output = Result<(), ServerError>> + Send + '_>> {
        Box::pin(async move { self.write(op, Origin::Client).await.map(|_| ()) })
    }

    fn applied(&self) -> std::sync::RwLockReadGuard<'_, crate::storage::state_machine_store::Applied> {
        self.state.applied()
    }

    fn is_leader(&self) -> bool {
        Node::is_leader(self)
    }
}
