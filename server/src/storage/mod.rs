//! Durable storage behind openraft: the log and vote ([`log_store`]) and the state machine with
//! its snapshots ([`state_machine_store`]).

pub mod log_store;
pub mod state_machine_store;
