//! # distsync
//!
//! The client library and wire protocol of distsync, a coordination service whose nodes agree
//! through Raft and talk QUIC with TLS.
//!
//! ```no_run
//! # async fn example() -> Result<(), distsync::ClientError> {
//! use distsync::{Client, ClientTls};
//!
//! let tls = ClientTls::from_ca_file("tls/ca.pem")?;
//! let client = Client::connect(["127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"], tls).await?;
//! client.kv().put("greeting", "hello").await?;
//! # Ok(()) }
//! ```
//!
//! ## Layout
//!
//! - [`wire`]: messages, limits and the frame codec shared with the server.
//! - [`error`]: [`ServerError`] (on the wire), [`FrameError`], [`ClientError`] (what callers see).
//! - [`tls`]: trusting the cluster CA and presenting the client's certificate; [`quic`]: the QUIC settings of every connection.
//! - [`pool`]: cached connections and the request/response exchange, shared with nodes.
//! - [`client`]: [`Client`], which finds the leader, retries across failovers and keeps a
//!   session so that retried writes apply once; every request takes its one request path.
//! - [`access`]: grants and identities, for admins (`client.access().grant(…)`).
//! - [`kv`]: the replicated register (`client.kv().put("k", "v").await`).
//! - [`lock`]: distributed locks (`client.lock("name").acquire().await`).
//! - [`queue`]: durable FIFO queues (`client.queue("jobs").put(body).await`).
//! - [`cache`]: the coherent cache (`client.cache().get("user:1").await`).
//! - `pending.rs`: the wait machinery locks and queues share (awaiting a decision in slices,
//!   withdrawing a request whose caller stopped waiting, reading listings page by page);
//!   `merge.rs`: merging concurrent calls into shared requests.
//! - [`runtime`]: one runtime per process and fork-aware values, for synchronous callers and
//!   language bindings (also reachable as `distsync::blocking`, its former name).
//!
//! This crate pulls in no Raft, no storage and no Redis: it is what applications link.

#![warn(missing_docs)]

pub mod access;
pub mod cache;
pub mod client;
pub mod error;
pub mod kv;
pub mod lock;
mod merge;
mod pending;
pub mod pool;
pub mod queue;
pub mod quic;
pub mod runtime;
pub mod tls;
pub mod wire;

/// The former name of [`runtime`], kept so that programs written against it still build.
#[doc(hidden)]
pub use self::runtime as blocking;

pub use access::Access;
pub use cache::Cache;
pub use client::{Client, ClientOptions, Kv};
pub use error::{ClientError, ErrorKind, FrameError, LockRefusal, QueueRefusal, ServerError};
pub use lock::{LockBuilder, LockError, LockGuard, OwnerHandle};
pub use queue::{Consumer, Delivery, Queue, QueueError};
pub use tls::ClientTls;
pub use wire::{
    CacheValue, Consistency, LockInfo, LockMode, NodeId, NodeStatus, Owner, PutMessage, QueueOptions, QueueStats, Role,
    SessionId, StateDigest,
};
