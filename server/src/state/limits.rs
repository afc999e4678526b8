//! How much of each resource clients may make the cluster hold: the state machine's limits.
//!
//! They are replicated state, so every node refuses a write at the same log position. An
//! operator sets them with `distsync serve` flags (`--max-queued-bytes`, …); a leader whose
//! flags differ from the state's proposes them ([`super::Op::SetLimits`]), so the limits in force
//! are the latest leader's: give every node the same flags. A limit lowered below what the
//! cluster already holds refuses new writes until enough is freed; nothing held is dropped.
//!
//! A write refused by a limit gets `LimitReached` (or a queue's `Full`) naming the limit as
//! `docs/limits.md` lists it (`what`) and its value (`limit`).

use clap::Args;
use distsync::wire::{GRANTS_PER_IDENTITY_MAX, IDENTITIES_MAX};
use distsync::ServerError;
use serde::{Deserialize, Serialize};

use super::cache::{CACHE_KEYS_MAX, PENDING_BYTES_MAX};
use super::kv::{KEYS_MAX, KV_BYTES_MAX};
use super::locks::{LOCKS_MAX, WAITERS_PER_LOCK_MAX};
use super::queues::{
    DEDUP_IDS_MAX, QUEUED_BYTES_MAX, QUEUED_BYTES_PER_IDENTITY_MAX, QUEUES_MAX, QUEUES_PER_IDENTITY_MAX,
    QUEUE_WAITERS_MAX, QUEUE_WAITERS_PER_IDENTITY_MAX,
};
use super::sessions::{SESSIONS_MAX, SESSIONS_PER_IDENTITY_MAX};

/// The state machine's limits, each a count or bytes; the defaults are the constants of the same
/// names (`KV_BYTES_MAX`, …).
///
/// ```text
/// distsync serve … --max-queued-bytes 1073741824 --max-sessions-per-identity 1000
/// ```
#[derive(Args, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(default)]
pub struct Limits {
    /// Keys the kv register holds (`KEYS_MAX`).
    #[arg(long = "max-kv-keys", default_value_t = KEYS_MAX as u64)]
    pub kv_keys: u64,
    /// Bytes of keys and values the kv register holds (`KV_BYTES_MAX`).
    #[arg(long = "max-kv-bytes", default_value_t = KV_BYTES_MAX)]
    pub kv_bytes: u64,
    /// Sessions open at once (`SESSIONS_MAX`).
    #[arg(long = "max-sessions", default_value_t = SESSIONS_MAX as u64)]
    pub sessions: u64,
    /// Sessions one identity has open at once (`SESSIONS_PER_IDENTITY_MAX`).
    #[arg(long = "max-sessions-per-identity", default_value_t = SESSIONS_PER_IDENTITY_MAX as u64)]
    pub sessions_per_identity: u64,
    /// Locks held or awaited at once (`LOCKS_MAX`).
    #[arg(long = "max-locks", default_value_t = LOCKS_MAX as u64)]
    pub locks: u64,
    /// Owners waiting for one lock (`WAITERS_PER_LOCK_MAX`).
    #[arg(long = "max-waiters-per-lock", default_value_t = WAITERS_PER_LOCK_MAX as u64)]
    pub waiters_per_lock: u64,
    /// Queues at once (`QUEUES_MAX`).
    #[arg(long = "max-queues", default_value_t = QUEUES_MAX as u64)]
    pub queues: u64,
    /// Queues one identity created and has not deleted (`QUEUES_PER_IDENTITY_MAX`).
    #[arg(long = "max-queues-per-identity", default_value_t = QUEUES_PER_IDENTITY_MAX as u64)]
    pub queues_per_identity: u64,
    /// Bytes of message bodies held across all queues (`QUEUED_BYTES_MAX`).
    #[arg(long = "max-queued-bytes", default_value_t = QUEUED_BYTES_MAX)]
    pub queued_bytes: u64,
    /// Bytes of message bodies held by the queues one identity created
    /// (`QUEUED_BYTES_PER_IDENTITY_MAX`).
    #[arg(long = "max-queued-bytes-per-identity", default_value_t = QUEUED_BYTES_PER_IDENTITY_MAX)]
    pub queued_bytes_per_identity: u64,
    /// Gets waiting on one queue (`QUEUE_WAITERS_MAX`).
    #[arg(long = "max-queue-waiters", default_value_t = QUEUE_WAITERS_MAX as u64)]
    pub queue_waiters: u64,
    /// Gets of one identity's sessions waiting at once, across queues
    /// (`QUEUE_WAITERS_PER_IDENTITY_MAX`).
    #[arg(long = "max-queue-waiters-per-identity", default_value_t = QUEUE_WAITERS_PER_IDENTITY_MAX as u64)]
    pub queue_waiters_per_identity: u64,
    /// Dedup ids one queue remembers (`DEDUP_IDS_MAX`).
    #[arg(long = "max-dedup-ids", default_value_t = DEDUP_IDS_MAX as u64)]
    pub dedup_ids: u64,
    /// Keys and tombstones in the cache directory (`CACHE_KEYS_MAX`).
    #[arg(long = "max-cache-keys", default_value_t = CACHE_KEYS_MAX as u64)]
    pub cache_keys: u64,
    /// Bytes of cache values waiting to be written back to Redis (`PENDING_BYTES_MAX`).
    #[arg(long = "max-cache-pending-bytes", default_value_t = PENDING_BYTES_MAX)]
    pub cache_pending_bytes: u64,
    /// Identities with grants or a disabled mark (`IDENTITIES_MAX`).
    #[arg(long = "max-identities", default_value_t = IDENTITIES_MAX as u64)]
    pub identities: u64,
    /// Grants of one identity (`GRANTS_PER_IDENTITY_MAX`).
    #[arg(long = "max-grants-per-identity", default_value_t = GRANTS_PER_IDENTITY_MAX as u64)]
    pub grants_per_identity: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            kv_keys: KEYS_MAX as u64,
            kv_bytes: KV_BYTES_MAX,
            sessions: SESSIONS_MAX as u64,
            sessions_per_identity: SESSIONS_PER_IDENTITY_MAX as u64,
            locks: LOCKS_MAX as u64,
            waiters_per_lock: WAITERS_PER_LOCK_MAX as u64,
            queues: QUEUES_MAX as u64,
            queues_per_identity: QUEUES_PER_IDENTITY_MAX as u64,
            queued_bytes: QUEUED_BYTES_MAX,
            queued_bytes_per_identity: QUEUED_BYTES_PER_IDENTITY_MAX,
            queue_waiters: QUEUE_WAITERS_MAX as u64,
            queue_waiters_per_identity: QUEUE_WAITERS_PER_IDENTITY_MAX as u64,
            dedup_ids: DEDUP_IDS_MAX as u64,
            cache_keys: CACHE_KEYS_MAX as u64,
            cache_pending_bytes: PENDING_BYTES_MAX,
            identities: IDENTITIES_MAX as u64,
            grants_per_identity: GRANTS_PER_IDENTITY_MAX as u64,
        }
    }
}

impl Limits {
    /// Every limit by the name `docs/limits.md` gives it, with its value.
    pub fn named(&self) -> [(&'static str, u64); 17] {
        [
            ("KEYS_MAX", self.kv_keys),
            ("KV_BYTES_MAX", self.kv_bytes),
            ("SESSIONS_MAX", self.sessions),
            ("SESSIONS_PER_IDENTITY_MAX", self.sessions_per_identity),
            ("LOCKS_MAX", self.locks),
            ("WAITERS_PER_LOCK_MAX", self.waiters_per_lock),
            ("QUEUES_MAX", self.queues),
            ("QUEUES_PER_IDENTITY_MAX", self.queues_per_identity),
            ("QUEUED_BYTES_MAX", self.queued_bytes),
            ("QUEUED_BYTES_PER_IDENTITY_MAX", self.queued_bytes_per_identity),
            ("QUEUE_WAITERS_MAX", self.queue_waiters),
            ("QUEUE_WAITERS_PER_IDENTITY_MAX", self.queue_waiters_per_identity),
            ("DEDUP_IDS_MAX", self.dedup_ids),
            ("CACHE_KEYS_MAX", self.cache_keys),
            ("PENDING_BYTES_MAX", self.cache_pending_bytes),
            ("IDENTITIES_MAX", self.identities),
            ("GRANTS_PER_IDENTITY_MAX", self.grants_per_identity),
        ]
    }

    /// Checks every limit is at least 1 (0 would refuse everything of its kind).
    ///
    /// # Errors
    ///
    /// A message naming the flag to fix.
    pub fn validate(&self) -> Result<(), String> {
        match self.named().into_iter().find(|(_, value)| *value == 0) {
            Some((name, _)) => Err(format!("the limit {name} is 0; every --max-… flag must be at least 1")),
            None => Ok(()),
        }
    }
}

/// The refusal of a write that would pass the limit `what` of value `limit`.
pub fn reached(what: &str, limit: u64, reason: String) -> ServerError {
    ServerError::LimitReached { what: what.into(), limit, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_default_to_the_constants_and_zero_is_refused() {
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            limits: Limits,
        }
        let parsed = <Flags as clap::Parser>::try_parse_from(["serve"]).unwrap();
        assert_eq!(parsed.limits, Limits::default());
        let parsed = <Flags as clap::Parser>::try_parse_from(["serve", "--max-queued-bytes", "1024"]).unwrap();
        assert_eq!(parsed.limits.queued_bytes, 1024);
        let zero = Limits { queues: 0, ..Limits::default() };
        assert!(zero.validate().unwrap_err().contains("QUEUES_MAX"));
        assert!(Limits::default().validate().is_ok());
    }
}
