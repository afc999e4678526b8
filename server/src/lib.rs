//! # distsync-server
//!
//! A distsync node: Raft consensus (openraft) over QUIC (quinn) with mutual TLS, a durable log in
//! redb with group commit, and a pure state machine holding sessions and the replicated register.
//!
//! ## Layout
//!
//! - [`config`]: [`config::ServerConfig`], flags and validation.
//! - [`state`]: the pure, deterministic state machine (no I/O, no clock).
//! - [`storage`]: the Raft log store and the state-machine store with snapshots.
//! - [`raft`]: openraft's type configuration, its network over the peer transport, the leader
//!   lease and read-index coalescing.
//! - [`transport`]: TLS configuration, peer authentication, the peer protocol and the outgoing
//!   peer transport with its fault-injection switch.
//! - [`cache`]: cache reads (read index, copy, Redis), write-back, holder reports, the node's own
//!   bounded cache with MESI states, and Redis.
//! - [`node`]: assembly and request handling; [`node::run`] runs a node until told to stop.
//! - [`admin`]: Prometheus metrics and JSON status over HTTP.
//! - [`certs`]: `distsync certs init`.
//!
//! The `distsync` binary (package `distsync-cli`) runs a node with [`run`]; nothing else here
//! knows about command lines, benchmarks or child processes.

#![warn(missing_docs)]

pub mod admin;
pub mod cache;
pub mod certs;
pub mod config;
pub mod node;
pub mod raft;
pub mod state;
pub mod storage;
pub mod transport;

pub use config::ServerConfig;
pub use node::run;
