//! A node's QUIC transport: TLS with the cluster CA and peer authentication ([`tls`]), the
//! outgoing peer RPCs with their fault-injection switch ([`peers`]), and the messages nodes send
//! each other ([`protocol`]), and the key of its stateless resets ([`reset_key`]).

pub mod peers;
pub mod protocol;
pub mod reset_key;
pub mod tls;

pub use self::peers::{PeerError, PeerTransport};
pub use self::protocol::{PeerRequest, PeerResponse};
pub use self::tls::{client_identity, negotiated_protocol, peer_identity, NodeTls};
