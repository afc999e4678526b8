//! The peer protocol: what one node asks another (Raft RPCs, forwarded client requests, read
//! indexes) and the answers. Framed like the client protocol ([`distsync::wire::frame`]).

use distsync::wire::{Reply, Request};
use distsync::ServerError;
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::raft::TypeConfig;

/// A request from one node to another.
#[derive(Serialize, Deserialize, Debug)]
pub enum PeerRequest {
    /// Raft log replication and heartbeats.
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// Raft election.
    Vote(VoteRequest<u64>),
    /// Raft snapshot chunk.
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A client request a follower relays to the leader, with the identity of the client's
    /// connection (which the leader trusts: only members speak this protocol).
    Forward {
        /// The client's identity.
        identity: String,
        /// The request.
        request: Request,
    },
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
