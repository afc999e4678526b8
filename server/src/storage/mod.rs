//! Durable storage behind openraft: the log and vote ([`log_store`]) and the state machine with
//! its snapshots ([`state_machine_store`]); the log's in-memory tail (`log_cache`), atomic
//! file writes ([`durable`]), the checksums that catch corrupt files ([`checksum`]), the
//! re-applying of the committed log at start ([`replay`]), and the floor below which the log
//! may delete entries ([`purge_floor`]); and, for `--inject-bug skip-fsync` only, a log file
//! that is never fsync'd ([`unsynced_backend`]).

pub mod checksum;
pub mod durable;
mod log_cache;
pub mod log_store;
pub mod purge_floor;
pub mod replay;
pub mod state_machine_store;
pub mod unsynced_backend;
