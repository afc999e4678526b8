//! An AppendEntries carrying entries, in flight: polled inline by the `append_entries` call
//! waiting for it, detached into a task of its own when openraft gives up on that call, so that
//! a long transfer goes on between openraft's calls instead of being sent again for ever.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use distsync::NodeId;
use openraft::raft::AppendEntriesRequest;
use openraft::{LogId, LogIdOptionExt, Vote};

use super::network::entry_bytes;
use super::TypeConfig;
use crate::transport::{PeerError, PeerRequest, PeerResponse, PeerTransport};

/// An AppendEntries carrying entries, in flight.
pub(super) struct Append {
    pub(super) range: AppendRange,
    pub(super) sent: Instant,
    pub(super) call: AppendCall,
}

impl Append {
    pub(super) fn start(
        transport: &Arc<PeerTransport>,
        target: NodeId,
        request: AppendEntriesRequest<TypeConfig>,
    ) -> Self {
        let (range, sent, transport) = (AppendRange::of(&request), Instant::now(), transport.clone());
        let timeout = append_timeout(request.entries.iter().map(entry_bytes).sum());
        let call = Box::pin(async move { transport.call(target, &PeerRequest::AppendEntries(request), timeout).await });
        Self { range, sent, call: AppendCall::Inline(Mutex::new(call)) }
    }
}

type AppendFuture = Pin<Box<dyn Future<Output = Result<PeerResponse, PeerError>> + Send>>;

/// How an append is being sent: polled by the `append_entries` call waiting for it (no task
/// hop on the common path, where it ends within openraft's wait), or, once openraft gave up on
/// that call, by a task of its own, so that it goes on between openraft's calls. Dropping it
/// ends it either way. (The mutex is never locked, only reached through `&mut`: it makes the
/// network `Sync`, as openraft requires.)
pub(super) enum AppendCall {
    Inline(Mutex<AppendFuture>),
    Detached(AbortOnDrop<Result<PeerResponse, PeerError>>),
}

impl AppendCall {
    /// Moves an inline call into a task of its own (outside a runtime, which is shutting down,
    /// it stays put and ends with the network).
    fn detach(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        if let AppendCall::Inline(call) = self {
            let pending: AppendFuture = Box::pin(std::future::pending());
            let call = std::mem::replace(call.get_mut().unwrap_or_else(PoisonError::into_inner), pending);
            *self = AppendCall::Detached(AbortOnDrop(runtime.spawn(call)));
        }
    }
}

impl Future for AppendCall {
    type Output = Result<Result<PeerResponse, PeerError>, tokio::task::JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            AppendCall::Inline(call) => {
                call.get_mut().unwrap_or_else(PoisonError::into_inner).as_mut().poll(cx).map(Ok)
            }
            AppendCall::Detached(AbortOnDrop(task)) => Pin::new(task).poll(cx),
        }
    }
}

/// A task aborted when dropped.
pub(super) struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Waits for an [`AppendCall`]; dropped before it ends (openraft's timeout), detaches it.
pub(super) struct AppendWait<'a> {
    pub(super) call: &'a mut AppendCall,
    pub(super) done: bool,
}

impl Future for AppendWait<'_> {
    type Output = Result<Result<PeerResponse, PeerError>, tokio::task::JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let wait = self.get_mut();
        let outcome = Pin::new(&mut *wait.call).poll(cx);
        wait.done = outcome.is_ready();
        outcome
    }
}

impl Drop for AppendWait<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.call.detach();
        }
    }
}

/// What an AppendEntries asks of the follower: accept the leader's `vote`, and after `prev`
/// the entries up to `last` (`last == prev` for a heartbeat).
#[derive(Debug, PartialEq)]
pub(super) struct AppendRange {
    pub(super) vote: Vote<u64>,
    pub(super) prev: Option<LogId<u64>>,
    pub(super) last: Option<LogId<u64>>,
}

impl AppendRange {
    pub(super) fn of(request: &AppendEntriesRequest<TypeConfig>) -> Self {
        let last = request.entries.last().map(|entry| entry.log_id).or(request.prev_log_id);
        Self { vote: request.vote, prev: request.prev_log_id, last }
    }

    /// Whether a follower matching the leader's log up to `matching` has the part of this range
    /// up to there: openraft's condition for a `PartialSuccess`.
    pub(super) fn reaches(&self, matching: &Option<LogId<u64>>) -> bool {
        *matching >= self.prev
            && *matching <= self.last
            && matching.index() >= self.prev.index()
            && matching.index() <= self.last.index()
    }
}

/// How long an AppendEntries carrying `bytes` of entries may take to be delivered, stored and
/// answered before it is sent again: 5 s plus a second per MiB, so that a full 8 MiB frame
/// crosses a link of 1 MiB/s, while entries lost to a dead connection or a partition are sent
/// again soon after.
pub(super) fn append_timeout(bytes: usize) -> Duration {
    Duration::from_secs(5) + Duration::from_secs_f64(bytes as f64 / (1024.0 * 1024.0))
}
