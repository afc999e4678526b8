//! openraft's network: one [`PeerNetwork`] per replication target, over the node's peer
//! transport. An append that outlives openraft's wait goes on in the background
//! (`append.rs`); its answer serves whichever range is asked for next.

use std::sync::Arc;
use std::time::{Duration, Instant};

use distsync::wire::FRAME_BYTES_MAX;
use distsync::NodeId;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{BasicNode, LogIdOptionExt};

use super::append::{Append, AppendRange, AppendWait};
use super::TypeConfig;
use crate::state::Op;
use crate::transport::{PeerError, PeerRequest, PeerResponse, PeerTransport};

/// Makes one [`PeerNetwork`] per target for openraft.
#[derive(Clone)]
pub struct NetworkFactory {
    transport: Arc<PeerTransport>,
    retry_pause: Duration,
}

impl NetworkFactory {
    /// A factory over `transport`; after a peer was unreachable, replication to it pauses
    /// `retry_pause` between attempts (see [`PeerNetwork::backoff`]).
    pub fn new(transport: Arc<PeerTransport>, retry_pause: Duration) -> Self {
        Self { transport, retry_pause }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> Self::Network {
        PeerNetwork { target, transport: self.transport.clone(), append: None, retry_pause: self.retry_pause }
    }
}

/// openraft's connection to one peer, for one replication stream.
pub struct PeerNetwork {
    target: NodeId,
    transport: Arc<PeerTransport>,
    /// The latest AppendEntries carrying entries, from its sending until its answer is used (see
    /// [`PeerNetwork::append_entries`]).
    append: Option<Append>,
    /// The pause between replication attempts once the peer was unreachable.
    retry_pause: Duration,
}

type RpcError<E = openraft::error::Infallible> = RPCError<u64, BasicNode, RaftError<u64, E>>;

impl PeerNetwork {
    async fn call<E: std::error::Error>(
        &self,
        request: PeerRequest,
        option: &RPCOption,
    ) -> Result<PeerResponse, RPCError<u64, BasicNode, RaftError<u64, E>>> {
        let action = match request {
            PeerRequest::Vote(_) => RPCTypes::Vote,
            PeerRequest::InstallSnapshot(_) => RPCTypes::InstallSnapshot,
            _ => RPCTypes::AppendEntries,
        };
        let timeout = option.hard_ttl();
        self.transport.call(self.target, &request, timeout).await.map_err(|error| self.failed(action, timeout, error))
    }

    fn failed<E: std::error::Error>(
        &self,
        action: RPCTypes,
        timeout: Duration,
        error: PeerError,
    ) -> RPCError<u64, BasicNode, RaftError<u64, E>> {
        match error {
            PeerError::Timeout { .. } => {
                RPCError::Timeout(Timeout { action, id: self.transport.id(), target: self.target, timeout })
            }
            PeerError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&error)),
        }
    }

    /// Any answer but a higher vote means the follower took this leader's vote and restarted
    /// its lease on receipt, which is after `sent`.
    fn note_lease_ack(&self, range: &AppendRange, sent: Instant, response: &AppendEntriesResponse<u64>) {
        if range.vote.committed && !matches!(response, AppendEntriesResponse::HigherVote(_)) {
            self.transport.note_lease_ack(self.target, range.vote.leader_id.term, sent);
        }
    }

    /// What the finished `append` tells about a request for `wanted`. Its own answer when
    /// `wanted` is the same range; for another range of the same leader, a success that reaches
    /// into it, the same conflict, or a higher vote. `None` when `wanted` must be sent.
    fn settle(
        &self,
        append: &Append,
        outcome: Result<Result<PeerResponse, PeerError>, tokio::task::JoinError>,
        wanted: &AppendRange,
    ) -> Option<Result<AppendEntriesResponse<u64>, RpcError>> {
        let same = append.range == *wanted;
        let response = match outcome {
            Ok(Ok(PeerResponse::AppendEntries(Ok(response)))) => response,
            _ if !same => return None,
            Ok(Ok(PeerResponse::AppendEntries(Err(error)))) => {
                return Some(Err(RPCError::RemoteError(RemoteError::new(self.target, error))))
            }
            Ok(Ok(other)) => return Some(Err(self.unexpected(other))),
            Ok(Err(error)) => {
                let timeout = match error {
                    PeerError::Timeout { timeout, .. } => timeout,
                    PeerError::Unreachable { .. } => Duration::ZERO,
                };
                return Some(Err(self.failed(RPCTypes::AppendEntries, timeout, error)));
            }
            Err(error) => return Some(Err(RPCError::Unreachable(Unreachable::new(&error)))),
        };
        self.note_lease_ack(&append.range, append.sent, &response);
        if same {
            return Some(Ok(response));
        }
        if append.range.vote != wanted.vote {
            return None;
        }
        let matching = match response {
            AppendEntriesResponse::Success => append.range.last,
            AppendEntriesResponse::PartialSuccess(matching) => matching,
            AppendEntriesResponse::Conflict => {
                return (append.range.prev == wanted.prev).then_some(Ok(AppendEntriesResponse::Conflict))
            }
            higher @ AppendEntriesResponse::HigherVote(_) => return Some(Ok(higher)),
        };
        if wanted.reaches(&matching) {
            Some(Ok(if matching == wanted.last {
                AppendEntriesResponse::Success
            } else {
                AppendEntriesResponse::PartialSuccess(matching)
            }))
        } else if matching >= wanted.last && matching.index() >= wanted.last.index() && matching >= wanted.prev {
            // The follower already has all of `wanted` (openraft asked for less this time).
            Some(Ok(AppendEntriesResponse::Success))
        } else {
            None
        }
    }

    fn unexpected<E: std::error::Error>(&self, response: PeerResponse) -> RPCError<u64, BasicNode, RaftError<u64, E>> {
        RPCError::Network(NetworkError::new(&UnexpectedResponse(format!("{response:?}"))))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unexpected peer response: {0}")]
struct UnexpectedResponse(String);

impl RaftNetwork<TypeConfig> for PeerNetwork {
    /// openraft waits only the heartbeat interval (50 ms by default) for any AppendEntries, then drops the
    /// call and asks for the range again. A frame of entries may need longer to cross the network
    /// and be fsynced by the follower; cutting it off every time would resend it forever and the
    /// follower would never catch up (seen with one 300 KiB entry on a loaded machine). So an
    /// append that outlives openraft's wait moves into a task of its own (`AppendCall`); the next
    /// call waits for it again rather than sending anew, and its answer serves whichever range is
    /// asked for next: a success that reaches into the range answers it as far as it reaches
    /// (openraft's `PartialSuccess`), and openraft sends only the rest. Heartbeats, when openraft
    /// sends one meanwhile, go straight out beside it.
    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RpcError> {
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
        let wanted = AppendRange::of(&request);
        if request.entries.is_empty() {
            let sent = Instant::now();
            let response = match self.call(PeerRequest::AppendEntries(request), &option).await? {
                PeerResponse::AppendEntries(result) => {
                    result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))?
                }
                other => return Err(self.unexpected(other)),
            };
            self.note_lease_ack(&wanted, sent, &response);
            return Ok(response);
        }
        let mut request = Some(request);
        loop {
            if self.append.is_none() {
                // Only a previous append's answer can fail to serve this request, so this runs
                // once at most.
                let Some(request) = request.take() else { unreachable!("an append's own answer serves it") };
                self.append = Some(Append::start(&self.transport, self.target, request));
            }
            let append = self.append.as_mut().expect("an append is being sent");
            // Cancel-safe: when openraft gives up here, the append goes on in a task of its own
            // and the next call waits for it again.
            let outcome = AppendWait { call: &mut append.call, done: false }.await;
            let append = self.append.take().expect("an append is being sent");
            if let Some(answer) = self.settle(&append, outcome, &wanted) {
                return answer;
            }
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

    /// openraft pauses replication to a peer that was unreachable until an RPC succeeds again,
    /// and pauses after *every* attempt meanwhile, heartbeats included. Its default pause, 500 ms,
    /// is longer than an election timeout: a follower that comes back (restarted, or a partition
    /// healed) then hears nothing for longer than its election timeout between the leader's
    /// attempts, starts an election with a higher term, and deposes the leader, again and again
    /// while it catches up on entries that take longer than that to send (seen as a cluster
    /// electing for a minute with a follower stuck at its old log). So the pause is the
    /// heartbeat interval: an unreachable peer costs a retry per heartbeat (the connection pool
    /// dials once at a time), and a returning one is kept a follower.
    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(self.retry_pause))
    }

    async fn vote(&mut self, request: VoteRequest<u64>, option: RPCOption) -> Result<VoteResponse<u64>, RpcError> {
        match self.call(PeerRequest::Vote(request), &option).await? {
            PeerResponse::Vote(result) => result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e))),
            other => Err(self.unexpected(other)),
        }
    }
}

/// Target size of one AppendEntries frame: 1 MiB, far below the frame limit. A follower learns
/// that its leader is alive only when a whole AppendEntries has arrived and been stored, and
/// heartbeats to it queue behind a frame in flight on the same connection; a frame that takes
/// longer than an election timeout to cross, decrypt and fsync (8 MiB on a loaded machine, or
/// in a debug build) makes a catching-up follower start elections and depose the leader. One
/// MiB per round trip still catches up at hundreds of MiB/s on a LAN. A single larger entry
/// goes alone.
const REPLICATION_FRAME_BYTES: usize = 1024 * 1024;

const _: () = assert!(REPLICATION_FRAME_BYTES * 2 <= FRAME_BYTES_MAX, "room for encoding overhead");

/// Encoded size of an entry, its log id and time stamps counted generously.
pub(super) fn entry_bytes(entry: &openraft::Entry<TypeConfig>) -> usize {
    match &entry.payload {
        openraft::EntryPayload::Normal(command) => 64 + command.ops.iter().map(Op::encoded_bytes).sum::<usize>(),
        _ => 256,
    }
}
