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
//! - [`raft_types`]: openraft's type configuration.
//! - [`transport`]: TLS configuration, peer authentication, the outgoing peer transport with its
//!   fault-injection switch.
//! - [`peer`]: the peer protocol and openraft's network over it.
//! - [`near_cache`]: a node's own bounded cache with TinyLFU admission and MESI states.
//! - [`backing`]: Redis, where cache values live once written back.
//! - [`cache_service`]: cache reads (read index, copy, Redis), write-back and holder reports.
//! - [`node`]: assembly and request handling; [`node::run`] runs a node until told to stop.
//! - [`admin`]: Prometheus metrics and JSON status over HTTP.
//! - [`certs`]: `distsync certs init`.
//! - [`local_cluster`]: child-process clusters for `distsync dev` and `bench failover`.
//! - [`bench`]: `distsync bench write|failover`.
//!
//! The binary (`src/main.rs`) is the `distsync` CLI: `serve`, `dev`, `status`, `kv`, `bench`.

#![warn(missing_docs)]

pub mod admin;
pub mod backing;
pub mod bench;
pub mod cache_service;
pub mod certs;
pub mod config;
pub mod local_cluster;
pub mod near_cache;
pub mod node;
pub mod peer;
pub mod raft_types;
pub mod state;
pub mod storage;
pub mod transport;

pub use config::ServerConfig;
pub use node::run;
