//! The Node.js binding of the distsync client: the native half of the `distsync` npm package
//! (`node/`), loaded by the generated `index.js` and wrapped by `distsync.js`.
//!
//! Thin by design: every behaviour (leader discovery, retries, sessions, lock ownership,
//! batching) lives in the Rust client. This crate converts arguments and results, turns each
//! call into a Promise resolved from napi's tokio runtime (`run.rs`), and maps errors to the
//! `DistsyncError` classes that `distsync.js` defines and registers (`error.rs`).
//!
//! ## Layout
//!
//! - `client.rs`: `Client`, `Owner`, connection options.
//! - `lock.rs`: `Lock`, `LockInfo`.
//! - `queue.rs`: `Queue`, `Message`, `Consumer`, `QueueStats`.
//! - `cache.rs`: `Cache`.

// napi-derive registers the exports only outside `cfg(test)`, so a test build of this crate
// (clippy --all-targets) sees the exported functions as unused.
#![cfg_attr(test, allow(dead_code))]

mod cache;
mod client;
mod error;
mod lock;
mod queue;
mod run;
