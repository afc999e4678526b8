//! The cache on a node: [`service`] answers reads (read index, this node's copy, Redis) and keeps
//! the writer's copy; `write_back.rs` is the leader's write-back to Redis and `reports.rs` the
//! holder reports; [`near_cache`] is the node's own bounded cache with MESI states; [`backing`]
//! is Redis, where values live once written back.

pub mod backing;
mod frequency_sketch;
pub mod near_cache;
mod reports;
pub mod service;
mod write_back;

pub use self::service::{CacheHost, CacheService};
