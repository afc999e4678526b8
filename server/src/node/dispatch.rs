//! Client requests (and those a follower forwarded): one handler per request kind, each with the
//! identity of the connection it came in on. Writes carry the identity into the log, where the
//! state machine checks it; requests answered here are checked here.

use distsync::wire::{Command, CommandResponse, Permission, Reply, Request, ResourceKind, Response, WriteRequest};
use distsync::{NodeId, ServerError};

use super::Node;
use crate::config::InjectedBug;
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
    /// Handles one client request (or one forwarded by a follower) from `identity`.
    pub(super) async fn handle(&self, request: Request, origin: Origin, identity: &str) -> Reply {
        let body = self.dispatch(request, origin, identity).await;
        self.reply(body)
    }

    /// Routes one request of `identity` to its handler. Every request kind is named here, so
    /// that a new one does not compile until it is handled.
    pub(super) async fn dispatch(
        &self,
        request: Request,
        origin: Origin,
        identity: &str,
    ) -> Result<Response, ServerError> {
        // Only operations that go into the log own a copy of the identity.
        let caller = || identity.to_string();
        match request {
            Request::Status => {
                self.state.applied().machine.access().check_enabled(identity)?;
                Ok(Response::Status(Box::new(self.status())))
            }
            Request::StatusDigest => {
                self.state.applied().machine.access().check_enabled(identity)?;
                Ok(Response::Status(Box::new(self.status_with_digest().await)))
            }
            Request::SetDroppedPeers { peers } => {
                self.state.applied().machine.access().check_admin(identity)?;
                self.set_dropped_peers(&peers)
            }
            Request::SetClockOffset { offset_ms } => {
                self.state.applied().machine.access().check_admin(identity)?;
                self.set_clock_offset(offset_ms)
            }
            Request::SetPeerDelay { delay_ms } => {
                self.state.applied().machine.access().check_admin(identity)?;
                self.set_peer_delay(delay_ms)
            }
            Request::OpenSession { ttl_ms, secret } => {
                self.write(Op::OpenSession { ttl_ms, identity: caller(), secret }, origin).await
            }
            Request::KeepAlive { session, secret } => {
                self.write(Op::KeepAlive { session, identity: caller(), secret }, origin).await
            }
            Request::Write(write) => self.write_command(write, origin, caller()).await,
            Request::Read(query) => self.read(query, origin, identity).await,
            Request::AwaitLock { name, owner, queued_revision, max_wait_ms, secret } => {
                self.await_lock(&name, owner, queued_revision, max_wait_ms, (identity, &secret)).await
            }
            Request::WatchSession { session, max_wait_ms, secret } => {
                self.watch_session(session, max_wait_ms, (identity, &secret)).await
            }
            Request::AwaitDelivery { queue, session, request, queued_revision, max_wait_ms, secret } => {
                self.await_delivery(&queue, session, request, queued_revision, max_wait_ms, (identity, &secret)).await
            }
            Request::CacheGet { keys, mut consistency } => {
                if self.config.enable_fault_injection && self.config.inject_bug == Some(InjectedBug::StaleReads) {
                    // Broken on purpose (`--inject-bug stale-reads`): no read index.
                    consistency = distsync::wire::Consistency::Local;
                }
                let values = self.cache.get(self, &keys, consistency).await?;
                // Checked after the read: for a linearizable read this node has then applied
                // at least up to the read index, so a revoke acknowledged before the read
                // began is in force here, on whichever node serves it.
                let applied = self.state.applied();
                let access = applied.machine.access();
                for key in &keys[..values.len()] {
                    access.check(identity, ResourceKind::Cache, key, Permission::Read)?;
                }
                Ok(Response::CacheValues(values))
            }
            Request::CacheShow { key } => {
                distsync::wire::validate_key(&key)?;
                self.state.applied().machine.access().check(identity, ResourceKind::Cache, &key, Permission::Read)?;
                Ok(Response::CacheShow(Box::new(self.cache.show(self, &key))))
            }
            Request::CacheStats => {
                self.state.applied().machine.access().check_enabled(identity)?;
                Ok(Response::CacheStats(Box::new(self.cache.stats(self))))
            }
            Request::Admin(command) => {
                command.validate()?;
                // Checked here to refuse early; the state machine checks again where it applies.
                self.state.applied().machine.access().check_admin(identity)?;
                self.write(Op::Admin { identity: caller(), command }, origin).await
            }
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
    async fn write_command(
        &self,
        mut write: WriteRequest,
        origin: Origin,
        identity: String,
    ) -> Result<Response, ServerError> {
        write.command.validate()?;
        // The node a client writes a cache value through keeps a copy (M); a leader serving a
        // follower's forward does not: the follower keeps it.
        let written = match &write.command {
            Command::CacheSet { key, value, .. } if origin != Origin::Forwarded => Some((key.clone(), value.clone())),
            _ => None,
        };
        let bug = self.config.inject_bug.filter(|_| self.config.enable_fault_injection);
        if bug == Some(InjectedBug::ForgetAnswers) && origin == Origin::Client {
            // Broken on purpose (`--inject-bug forget-answers`): every arrival is a new command,
            // so a retry of a write whose answer was lost is applied again.
            static FRESH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1 << 62);
            write.seq = FRESH.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if bug == Some(InjectedBug::EarlyAck) && origin == Origin::Client {
            // Broken on purpose (`--inject-bug early-ack`): acknowledged before it commits.
            let early = match &write.command {
                Command::KvPut { .. } => Some(CommandResponse::KvPut { version: 0 }),
                Command::QueuePut { messages, .. } => Some(CommandResponse::QueuePut {
                    outcomes: messages.iter().map(|_| distsync::wire::PutOutcome { id: 0, duplicate: false }).collect(),
                }),
                _ => None,
            };
            if let Some(early) = early {
                let proposed = self.write(Op::Write { identity, write }, origin);
                return match tokio::time::timeout(std::time::Duration::from_millis(1), proposed).await {
                    Ok(result) => result,
                    Err(_) => Ok(Response::Written(early)),
                };
            }
        }
        let releasing = matches!(write.command, Command::LockRelease { .. });
        let result = self.write(Op::Write { identity, write }, origin).await;
        if let (Some((key, value)), Ok(Response::Written(CommandResponse::CacheSet { version }))) = (written, &result) {
            self.cache.keep_written(self, &key, value, *version);
        }
        if bug == Some(InjectedBug::GrantQueued) {
            // Broken on purpose (`--inject-bug grant-queued`): granted whoever holds it.
            match result {
                Ok(Response::Written(CommandResponse::LockQueued { revision, .. })) => {
                    return Ok(Response::Written(CommandResponse::LockGranted { token: revision }));
                }
                Err(ServerError::Lock(distsync::LockRefusal::NotHeld { .. })) if releasing => {
                    return Ok(Response::Written(CommandResponse::LockReleased));
                }
                _ => {}
            }
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

    /// Test-only fault injection: hold every request to a peer `delay_ms` before sending it.
    fn set_peer_delay(&self, delay_ms: u32) -> Result<Response, ServerError> {
        if !self.config.enable_fault_injection {
            return Err(ServerError::FaultInjectionDisabled);
        }
        self.transport.set_delay(std::time::Duration::from_millis(u64::from(delay_ms)));
        Ok(Response::Done)
    }

    /// Test-only fault injection: read this node's wall clock `offset_ms` off from now on.
    fn set_clock_offset(&self, offset_ms: i64) -> Result<Response, ServerError> {
        if !self.config.enable_fault_injection {
            return Err(ServerError::FaultInjectionDisabled);
        }
        self.clock_offset_ms.store(offset_ms, std::sync::atomic::Ordering::Relaxed);
        Ok(Response::Done)
    }
}
