//! The peer protocol (Raft RPCs and forwarded client requests) and openraft's network over it.

use std::sync::Arc;
use std::time::Duration;

use distsync::wire::FRAME_BYTES_MAX;
use distsync::wire::{Reply, Request};
use distsync::{NodeId, ServerError};
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use serde::{Deserialize, Serialize};

use crate::raft_types::TypeConfig;
use crate::transport::{PeerError, PeerTransport};

/// A request from one node to another.
#[derive(Serialize, Deserialize, Debug)]
pub enum PeerRequest {
    /// Raft log replication and heartbeats.
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// Raft election.
    Vote(VoteRequest<u64>),
    /// Raft snapshot chunk.
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A client request a follower relays to the leader.
    Forward(Request),
    /// A follower asks the leader for a read index: the leader confirms its leadership with a
    /// quorum and answers its commit index, which the follower applies up to before reading.
    ReadIndex,
}

/// The answer to a [`PeerRequest`].
#[derive(Serialize, Deserialize, Debug)]
pub enum PeerResponse {
    /// Answer to [`PeerRequest::AppendEntries`].
    AppendEntries(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    /// Answer to [`PeerRequest::Vote`].
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    /// Answer to [`PeerRequest::InstallSnapshot`].
    InstallSnapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
    /// Answer to [`PeerRequest::Forward`].
    Forward(Reply),
    /// Answer to [`PeerRequest::ReadIndex`].
    ReadIndex(Result<u64, ServerError>),
}

/// Makes one [`PeerNetwork`] per target for openraft.
#[derive(Clone)]
pub struct NetworkFactory {
    transport: Arc<PeerTransport>,
}

impl NetworkFactory {
    /// A factory over `transport`.
    pub fn new(transport: Arc<PeerTransport>) -> Self {
        Self { transport }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> Self::Network {
        PeerNetwork { target, transport: self.transport.clone() }
    }
}

/// openraft's connection to one peer.
pub struct PeerNetwork {
    target: NodeId,
    transport: Arc<PeerTransport>,
}

type RpcError<E = openraft::error::Infallible> = RPCError<u64, BasicNode, RaftError<u64, E>>;

impl PeerNetwork {
    async fn call<E: std::error::Error>(
        &self,
        request: PeerRequest,
        option: &RPCOption,
    ) -> Result<PeerResponse, RPCError<u64, BasicNode, RaftError<u64, E>>> {
        let timeout = option.hard_ttl();
        self.transport.call(self.target, &request, timeout).await.map_err(|error| match error {
            PeerError::Timeout { .. } => RPCError::Timeout(Timeout {
                action: openraft::network::RPCTypes::AppendEntries,
                id: self.transport.id(),
                target: self.target,
                timeout,
            }),
            PeerError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&error)),
        })
    }

    fn unexpected<E: std::error::Error>(&self, response: PeerResponse) -> RPCError<u64, BasicNode, RaftError<u64, E>> {
        RPCError::Network(NetworkError::new(&UnexpectedResponse(format!("{response:?}"))))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unexpected peer response: {0}")]
struct UnexpectedResponse(String);

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RpcError> {
        // openraft gives every AppendEntries the heartbeat interval (50 ms) to complete. That suits
        // heartbeats, but a catch-up batch of a thousand entries needs an fsync on a possibly
        // busy follower; timing it out would only resend the same batch forever.
        // openraft bounds batches by entry count only; keep frames under the limit by asking it
        // for fewer entries (it retries with the hint).
        let entry_count = request.entries.len();
        if entry_count > 1 {
            let bytes: usize = request.entries.iter().map(entry_bytes).sum();
            if bytes > REPLICATION_FRAME_BYTES {
                let fitting = (entry_count * REPLICATION_FRAME_BYTES / bytes).clamp(1, entry_count - 1);
                return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(fitting as u64)));
            }
        }
        let option = if request.entries.is_empty() {
            option
        } else {
            RPCOption::new(option.hard_ttl().max(REPLICATION_TIMEOUT_MIN))
        };
        let (term, committed, sent) = (request.vote.leader_id.term, request.vote.committed, std::time::Instant::now());
        match self.call(PeerRequest::AppendEntries(request), &option).await? {
            PeerResponse::AppendEntries(result) => {
                // Any answer but a higher vote means the follower took this leader's vote and
                // restarted its lease on receipt, which is after `sent`.
                if committed
                    && matches!(&result, Ok(response) if !matches!(response, AppendEntriesResponse::HigherVote(_)))
                {
                    self.transport.note_lease_ack(self.target, term, sent);
                }
                result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(self.unexpected(other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        request: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RpcError<InstallSnapshotError>> {
        match self.call(PeerRequest::InstallSnapshot(request), &option).await? {
            PeerResponse::InstallSnapshot(result) => {
                result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(self.unexpected(other)),
        }
    }

    async fn vote(&mut self, request: VoteRequest<u64>, option: RPCOption) -> Result<VoteResponse<u64>, RpcError> {
        match self.call(PeerRequest::Vote(request), &option).await? {
            PeerResponse::Vote(result) => result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e))),
            other => Err(self.unexpected(other)),
        }
    }
}

/// Target size of one AppendEntries frame: half the frame limit, leaving room for encoding
/// overhead the estimate misses.
const REPLICATION_FRAME_BYTES: usize = FRAME_BYTES_MAX / 2;

/// Approximate encoded size of an entry.
fn entry_bytes(entry: &openraft::Entry<TypeConfig>) -> usize {
    match &entry.payload {
        openraft::EntryPayload::Normal(command) => {
            32 + command.ops.iter().map(|op| op.approximate_bytes()).sum::<usize>()
        }
        _ => 256,
    }
}

/// Least time an AppendEntries carrying entries gets to complete.
const REPLICATION_TIMEOUT_MIN: Duration = Duration::from_secs(1);

/// How long a forwarded client request may take: the write timeout plus a margin for the hop.
pub fn forward_timeout(write_timeout: Duration) -> Duration {
    write_timeout + Duration::from_millis(500)
}
