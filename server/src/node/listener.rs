//! The QUIC listener: one task per connection (peers proven by their certificates), one per
//! stream, one frame in and one frame out, within the budgets of [`super::admission`].

use std::future::IntoFuture as _;
use std::sync::Arc;
use std::time::Duration;

use distsync::quic::CONCURRENT_STREAMS_MAX;
use distsync::tls::CLOSE_NOT_A_CLIENT;
use distsync::wire::{
    decode_body, encode_frame, read_body, read_frame, read_prefix, write_frame, Request, ALPN_PEER, FRAME_BYTES_MAX,
};
use distsync::{FrameError, NodeId, ServerError};
use tokio::sync::{watch, OwnedSemaphorePermit};

use super::admission::{
    ConnectionBudget, CONNECTIONS_MAX, HANDSHAKE_TIMEOUT, PEER_CONNECTIONS_MAX, REQUEST_READ_TIMEOUT,
};
use super::dispatch::Origin;
use super::Node;
use crate::transport::{client_identity, negotiated_protocol, peer_identity};

/// QUIC application close code for a peer connection without a member certificate.
const CLOSE_NOT_A_MEMBER: u32 = 1;

pub(super) async fn accept_loop(node: Arc<Node>, endpoint: quinn::Endpoint, mut stopped: watch::Receiver<bool>) {
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            _ = stopped.changed() => return,
        };
        let Some(incoming) = incoming else { return };
        let budget = node.admission.budget_of(incoming.remote_address());
        let Some(permit) = node.admission.connection(budget) else {
            let open = match budget {
                ConnectionBudget::Peer => format!("{PEER_CONNECTIONS_MAX} from members' addresses"),
                ConnectionBudget::Client => format!("{CONNECTIONS_MAX} client connections"),
            };
            tracing::warn!(remote = %incoming.remote_address(), "refusing a connection: {open} are open");
            incoming.refuse();
            continue;
        };
        // Where the connection lives: quinn spawns a connection's driver (its packets, its
        // crypto, the handshake) on the runtime that accepts it, so a client's is accepted on the
        // client runtime and a flood of handshakes and streams never queues ahead of Raft's.
        let runtime = match budget {
            ConnectionBudget::Peer => tokio::runtime::Handle::current(),
            ConnectionBudget::Client => node.client_runtime.handle().clone(),
        };
        let node = node.clone();
        runtime.spawn(async move {
            let remote = incoming.remote_address();
            let Some(turn) = node.admission.handshake(budget).await else {
                tracing::warn!(%remote, "refusing a connection: no handshake turn came in time (a reconnect storm)");
                incoming.refuse();
                return;
            };
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming.into_future()).await;
            drop(turn);
            let Ok(handshake) = handshake else {
                tracing::info!(%remote, "handshake abandoned: not done within {HANDSHAKE_TIMEOUT:?}");
                drop(permit);
                return;
            };
            match handshake {
                Ok(connection) => serve_connection(node, connection).await,
                // A stranger's certificate ends here: rustls refused it during the handshake.
                Err(error) => tracing::info!(%remote, %error, "handshake failed"),
            }
            drop(permit);
        });
    }
}

/// Who is at the other end of a connection, as its certificate proves.
enum Party {
    /// A cluster member.
    Peer(NodeId),
    /// A client with this identity.
    Client(Arc<str>),
}

async fn serve_connection(node: Arc<Node>, connection: quinn::Connection) {
    let remote = connection.remote_address();
    let party = if negotiated_protocol(&connection).as_deref() == Some(ALPN_PEER) {
        match peer_identity(&connection, &node.config.peers.0) {
            Some(id) => {
                connection.set_max_concurrent_bi_streams(CONCURRENT_STREAMS_MAX.into());
                connection.set_receive_window(quinn::VarInt::MAX);
                Party::Peer(id)
            }
            None => {
                tracing::warn!(%remote, "refusing a peer connection whose certificate does not name a cluster member");
                connection.close(CLOSE_NOT_A_MEMBER.into(), b"not a cluster member certificate");
                return;
            }
        }
    } else {
        match client_identity(&connection) {
            Ok(identity) => {
                tracing::debug!(%remote, %identity, "client connected");
                Party::Client(identity.into())
            }
            Err(reason) => {
                tracing::warn!(%remote, reason, "refusing a client connection");
                connection.close(CLOSE_NOT_A_CLIENT.into(), reason.as_bytes());
                return;
            }
        }
    };
    loop {
        let (send, recv) = match connection.accept_bi().await {
            Ok(streams) => streams,
            Err(error) => {
                tracing::debug!(%remote, %error, "connection ended");
                return;
            }
        };
        match &party {
            Party::Peer(from) => {
                tokio::spawn(serve_peer_stream(node.clone(), *from, send, recv));
            }
            Party::Client(identity) => {
                let (served, identity) = (node.clone(), identity.clone());
                node.client_runtime
                    .handle()
                    .spawn(async move { serve_client_stream(served, &identity, send, recv).await });
            }
        }
    }
}

/// How reading a client's request ended.
enum Arrival {
    /// A whole frame body, with its share of the byte budget (held until the reply is written).
    Request(Vec<u8>, OwnedSemaphorePermit),
    /// Refused unread: too large, or no budget for it.
    Refused(ServerError),
    /// The stream failed, ended early, or did not deliver within the read deadline.
    Gone(String),
}

async fn read_request(node: &Node, recv: &mut quinn::RecvStream) -> Arrival {
    let read = async {
        let bytes = match read_prefix(recv, FRAME_BYTES_MAX).await {
            Ok(bytes) => bytes,
            Err(error @ FrameError::TooLarge { .. }) => return Arrival::Refused(error.into()),
            Err(error) => return Arrival::Gone(error.to_string()),
        };
        let permit = match node.admission.request_bytes(bytes) {
            Ok(permit) => permit,
            Err(busy) => return Arrival::Refused(busy),
        };
        match read_body(recv, bytes).await {
            Ok(body) => Arrival::Request(body, permit),
            Err(error) => Arrival::Gone(error.to_string()),
        }
    };
    tokio::time::timeout(REQUEST_READ_TIMEOUT, read)
        .await
        .unwrap_or_else(|_| Arrival::Gone(format!("the request did not arrive whole within {REQUEST_READ_TIMEOUT:?}")))
}

async fn serve_client_stream(
    node: Arc<Node>,
    identity: &str,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    // The stream's place and the request's bytes stay taken until the reply is written.
    let (reply, _stream, _bytes) = match node.admission.stream() {
        Err(busy) => {
            let _ = recv.stop(0u32.into());
            (node.reply(Err(busy)), None, None)
        }
        Ok(stream) => match read_request(&node, &mut recv).await {
            Arrival::Request(body, bytes) => {
                let reply = match decode_body::<Request>(&body) {
                    Ok(request) => {
                        drop(body);
                        // A client that gives up on an attempt drops its stream, which stops
                        // ours: stop working on a request nobody waits for (a forward, a
                        // reroute). A write already proposed still commits; the client's retry
                        // under the same seq finds its answer.
                        let abandoned = send.stopped();
                        tokio::select! {
                            reply = node.handle(request, Origin::Client, identity) => reply,
                            _ = abandoned => {
                                tracing::debug!("client abandoned a request");
                                return;
                            }
                        }
                    }
                    Err(error) => node.reply(Err(error.into())),
                };
                (reply, Some(stream), Some(bytes))
            }
            Arrival::Refused(error) => {
                // Refuse the rest of the body unread.
                let _ = recv.stop(0u32.into());
                (node.reply(Err(error)), Some(stream), None)
            }
            Arrival::Gone(reason) => {
                tracing::debug!(reason, "client stream ended before a whole request");
                let _ = recv.stop(0u32.into());
                let _ = send.reset(0u32.into());
                return;
            }
        },
    };
    match encode_frame(&reply) {
        Ok(frame) => {
            let _ = write_frame(&mut send, &frame).await;
        }
        Err(error) => tracing::error!(%error, "cannot encode a reply"),
    }
}

async fn serve_peer_stream(node: Arc<Node>, from: NodeId, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let request = match read_frame(&mut recv, FRAME_BYTES_MAX).await.and_then(|body| decode_body(&body)) {
        Ok(request) => request,
        Err(error) => {
            tracing::warn!(peer = from, %error, "bad frame from a peer");
            return;
        }
    };
    let Some(response) = node.handle_peer(from, request).await else {
        // Simulated partition: stay silent as a dropped packet would, until the sender gives up.
        tokio::time::sleep(Duration::from_secs(10)).await;
        return;
    };
    match encode_frame(&response) {
        Ok(frame) => {
            let _ = write_frame(&mut send, &frame).await;
        }
        Err(error) => tracing::error!(peer = from, %error, "cannot encode a peer response"),
    }
}
