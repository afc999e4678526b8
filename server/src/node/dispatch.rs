//! Client requests (and those a follower forwarded): one handler per request kind.

use distsync::wire::{Command, CommandResponse, Reply, Request, Response, WriteRequest};
use distsync::{NodeId, ServerError};

use super::Node;
use crate::state::Op;

/// Where a request came from, which bounds how far it may travel: a forwarded request is not
/// forwarded again (no loops), and a rerouted one is not rerouted again.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// Straight from a client.
    Client,
    /// From a client, being re-sent after the leader changed while it was forwarded.
    Rerouted,
    /// Forwarded by a follower.
    Forwarded,
}

impl Node {
    /// Handles one client request (or one forwarded by a follower).
    pub(super) async fn handle(&self, request: Request, origin: Origin) -> Reply {
        let body = self.dispatch(request, origin).await;
        self.reply(body)
    }

    /// Routes one request to its handler. Every request kind is named here, so that a new one
    /// does not compile until it is handled.
    pub(super) async fn dispatch(&self, request: Request, origin: Origin) -> Result<Response, ServerError> {
        match request {
            Request::Status => Ok(Response::Status(Box::new(self.status()))),
            Request::SetDroppedPeers { peers } => self.set_dropped_peers(&peers),
            Request::OpenSession { ttl_ms } => self.write(Op::OpenSession { ttl_ms }, origin).await,
            Request::KeepAlive { session } => self.write(Op::KeepAlive { session }, origin).await,
            Request::Write(write) => self.write_command(write, origin).await,
            Request::Read(query) => self.read(query, origin).await,
            Request::AwaitLock { name, owner, queued_revision, max_wait_ms } => {
                self.await_lock(&name, owner, queued_revision, max_wait_ms).await
            }
            Request::WatchSession { session, max_wait_ms } => Ok(self.watch_session(session, max_wait_ms).await),
            Request::AwaitDelivery { queue, session, request, queued_revision, max_wait_ms } => {
                self.await_delivery(&queue, session, request, queued_revision, max_wait_ms).await
            }
            Request::CacheGet { keys, consistency } => {
                self.cache.get(self, &keys, consistency).await.map(Response::CacheValues)
            }
            Request::CacheShow { key } => {
                distsync::wire::validate_key(&key)?;
                Ok(Response::CacheShow(Box::new(self.cache.show(self, &key))))
            }
            Request::CacheStats => Ok(Response::CacheStats(Box::new(self.cache.stats(self)))),
            Request::CacheReport(report) => {
                if origin == Origin::Client {
                    return Err(ServerError::InvalidArgument {
                        reason: "cache reports are sent between nodes only".into(),
                    });
                }
                self.write(Op::CacheReport(report), origin).await
            }
        }
    }

    /// A client's command under its session, proposed here or forwarded to the leader.
    async fn write_command(&self, write: WriteRequest, origin: Origin) -> Result<Response, ServerError> {
        write.command.validate()?;
        // The node a client writes a cache value through keeps a copy (M); a leader serving a
        // follower's forward does not: the follower keeps it.
        let written = match &write.command {
            Command::CacheSet { key, value, .. } if origin != Origin::Forwarded => Some((key.clone(), value.clone())),
            _ => None,
        };
        let result = self.write(Op::Write(write), origin).await;
        if let (Some((key, value)), Ok(Response::Written(CommandResponse::CacheSet { version }))) = (written, &result) {
            self.cache.keep_written(self, &key, value, *version);
        }
        result
    }

    /// Test-only fault injection: drop Raft traffic with `peers` from now on.
    fn set_dropped_peers(&self, peers: &[NodeId]) -> Result<Response, ServerError> {
        if !self.config.enable_fault_injection {
            return Err(ServerError::FaultInjectionDisabled);
        }
        self.transport.set_dropped(peers);
        Ok(Response::Done)
    }
}
