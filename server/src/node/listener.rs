//! The QUIC listener: one task per connection (peers proven by their certificates), one per
//! stream, one frame in and one frame out.

use std::sync::Arc;
use std::time::Duration;

use distsync::tls::CLOSE_NOT_A_CLIENT;
use distsync::wire::{decode_body, encode_frame, read_frame, write_frame, Request, ALPN_PEER, FRAME_BYTES_MAX};
use distsync::{FrameError, NodeId};
use tokio::sync::{watch, Semaphore};

use super::dispatch::Origin;
use super::Node;
use crate::transport::{client_identity, negotiated_protocol, peer_identity};

/// Concurrent connections (clients and peers) a node accepts; more are refused. Each costs a
/// task and QUIC state; 4096 is far above a coordination service's client count.
pub const CONNECTIONS_MAX: usize = 4096;

/// QUIC application close code for a peer connection without a member certificate.
const CLOSE_NOT_A_MEMBER: u32 = 1;

pub(super) async fn accept_loop(node: Arc<Node>, endpoint: quinn::Endpoint, mut stopped: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            _ = stopped.changed() => return,
        };
        let Some(incoming) = incoming else { return };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(remote = %incoming.remote_address(), "refusing a connection: {CONNECTIONS_MAX} are open");
            incoming.refuse();
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
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
            Some(id) => Party::Peer(id),
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
    let party = Arc::new(party);
    loop {
        let (send, recv) = match connection.accept_bi().await {
            Ok(streams) => streams,
            Err(error) => {
                tracing::debug!(%remote, %error, "connection ended");
                return;
            }
        };
        let node = node.clone();
        let party = party.clone();
        tokio::spawn(async move {
            match &*party {
                Party::Peer(from) => serve_peer_stream(node, *from, send, recv).await,
                Party::Client(identity) => serve_client_stream(node, identity, send, recv).await,
            }
        });
    }
}

async fn serve_client_stream(
    node: Arc<Node>,
    identity: &str,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let reply = match read_frame(&mut recv, FRAME_BYTES_MAX).await {
        Ok(body) => match decode_body::<Request>(&body) {
            Ok(request) => {
                // A client that gives up on an attempt drops its stream, which stops ours: stop
                // working on a request nobody waits for (a forward, a reroute). A write already
                // proposed still commits; the client's retry under the same seq finds its answer.
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
        },
        Err(error @ FrameError::TooLarge { .. }) => {
            // Refuse the rest of the body unread.
            let _ = recv.stop(0u32.into());
            node.reply(Err(error.into()))
        }
        Err(error) => {
            tracing::debug!(%error, "client stream ended before a whole frame");
            return;
        }
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
