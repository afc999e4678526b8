//! The history checkers, one module per guarantee. Each is pure: it takes a recorded history
//! and returns what it violates, and each has unit tests on hand-made histories that must fail.
//!
//! - [`register`]: kv and cache registers are linearizable per key;
//! - [`lock`]: tokens unique and in real-time order, acknowledged holds mutually exclusive;
//! - [`queue`]: acknowledged puts delivered, nothing invented, acked twice or out of order;
//! - [`sessions`]: a retried put is applied once;
//! - [`liveness`]: every client works again soon after the heal.

pub mod liveness;
pub mod lock;
pub mod queue;
pub mod register;
pub mod sessions;

/// What a client learned of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// It happened.
    Ok,
    /// It did not happen: the cluster refused it.
    Failed,
    /// It may or may not have happened: the client gave up waiting.
    Unknown,
}

impl Outcome {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Unknown => "unknown",
        }
    }
}
