//! Durable storage behind openraft: the log and vote ([`log_store`]) and the state machine with
//! its snapshots ([`state_machine_store`]); the log's in-memory tail (`log_cache`) and atomic
//! file writes ([`durable`]).

pub mod durable;
mod log_cache;
pub mod log_store;
pub mod state_machine_store;
