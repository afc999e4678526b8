//! The replicated key-value register: bytes to bytes, each value with the revision that wrote it.

use std::collections::BTreeMap;

use bytes::Bytes;

use distsync::wire::CommandResponse;
use distsync::ServerError;
use serde::{Deserialize, Serialize};

use super::limits::{reached, Limits};
use super::shared;
use super::StateMachine;

/// Keys in the register by default (`--max-kv-keys`). Bounds state-machine memory and snapshot size; with values of at most
/// 1 MiB the register is meant for configuration and coordination data, not bulk storage.
pub const KEYS_MAX: usize = 1_000_000;

/// Bytes of keys and values in the register by default (`--max-kv-bytes`): what a snapshot of it takes, and every replica's
/// memory for it (with values of up to 1 MiB, [`KEYS_MAX`] alone would allow a terabyte).
pub const KV_BYTES_MAX: u64 = 256 * 1024 * 1024;

/// The register.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct KvRegister {
    /// Keys and values are [`Bytes`] made by [`shared`](super::shared), so that a copy of the state (a
    /// snapshot's, a digest's) shares them at the cost of a reference count each.
    entries: BTreeMap<Bytes, (Bytes, u64)>,
    /// Bytes of keys and values.
    bytes: u64,
}

impl KvRegister {
    /// Value and version of `key`.
    pub fn get(&self, key: &[u8]) -> Option<&(Bytes, u64)> {
        self.entries.get(key)
    }

    /// Why `key` may not be set to a value of `value_bytes`, if it may not: the register is at
    /// [`KEYS_MAX`] keys or would pass [`KV_BYTES_MAX`].
    pub fn refusal(&self, key: &[u8], value_bytes: usize, limits: &Limits) -> Option<ServerError> {
        let existing = self.entries.get(key).map(|(value, _)| (key.len() + value.len()) as u64);
        let keys = limits.kv_keys;
        if existing.is_none() && self.entries.len() as u64 >= keys {
            return Some(reached(
                "KEYS_MAX",
                keys,
                format!("the register holds {keys} keys, its maximum; delete some first"),
            ));
        }
        let after = self.bytes - existing.unwrap_or(0) + (key.len() + value_bytes) as u64;
        let bytes = limits.kv_bytes;
        (after > bytes).then(|| {
            reached(
                "KV_BYTES_MAX",
                bytes,
                format!(
                    "the register would hold {after} bytes of keys and values, beyond its {bytes}; delete or shrink \
                     some first"
                ),
            )
        })
    }

    /// Sets `key` at `version` (the revision of the write).
    pub fn put(&mut self, key: Bytes, value: Bytes, version: u64) {
        let added = (key.len() + value.len()) as u64;
        if let Some((old, _)) = self.entries.get(&key) {
            self.bytes -= (key.len() + old.len()) as u64;
        }
        self.bytes += added;
        self.entries.insert(key, (value, version));
    }

    /// Removes `key`; returns whether it existed.
    pub fn delete(&mut self, key: &[u8]) -> bool {
        match self.entries.remove(key) {
            Some((value, _)) => {
                self.bytes -= (key.len() + value.len()) as u64;
                true
            }
            None => false,
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the register is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Checks that no version is newer than the latest revision.
    pub fn check_invariants(&self, revision: u64) {
        let mut bytes = 0;
        for (key, (value, version)) in &self.entries {
            assert!(*version <= revision, "key {key:?} has version {version} beyond revision {revision}");
            bytes += (key.len() + value.len()) as u64;
        }
        assert_eq!(bytes, self.bytes, "register bytes drifted");
    }
}

/// The register's commands.
impl StateMachine {
    /// `KvPut` at `revision`, which becomes the value's version.
    pub(super) fn kv_put(&mut self, revision: u64, key: &[u8], value: &[u8]) -> Result<CommandResponse, ServerError> {
        if let Some(refusal) = self.kv.refusal(key, value.len(), &self.limits) {
            return Err(refusal);
        }
        self.kv.put(shared(key), shared(value), revision);
        Ok(CommandResponse::KvPut { version: revision })
    }

    /// `KvDelete`.
    pub(super) fn kv_delete(&mut self, key: &[u8]) -> CommandResponse {
        CommandResponse::KvDelete { existed: self.kv.delete(key) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_register_is_bounded_by_bytes_and_replacing_a_value_counts_only_the_difference() {
        let mut register = KvRegister::default();
        register.put(Bytes::from_static(b"a"), Bytes::from(vec![0; 100]), 1);
        register.put(Bytes::from_static(b"a"), Bytes::from(vec![0; 50]), 2);
        assert_eq!(register.bytes, 51);
        register.delete(b"a");
        assert_eq!(register.bytes, 0);
        // Nearly full (as if it held many values): new bytes are refused, smaller ones fit.
        register.put(Bytes::from_static(b"big"), Bytes::from(vec![0; 1000]), 3);
        register.bytes = KV_BYTES_MAX - 10;
        assert!(
            matches!(register.refusal(b"new", 8, &Limits::default()), Some(ServerError::LimitReached { what, limit, .. }) if what == "KV_BYTES_MAX" && limit == KV_BYTES_MAX)
        );
        assert_eq!(register.refusal(b"new", 7, &Limits::default()), None, "exactly at the limit fits");
        assert_eq!(
            register.refusal(b"big", 1000 + 10, &Limits::default()),
            None,
            "a replacement counts only what it adds"
        );
        assert!(register.refusal(b"big", 1000 + 11, &Limits::default()).is_some());
    }

    #[test]
    fn values_as_bytes_encode_as_the_vectors_of_earlier_snapshots_did() {
        #[derive(Serialize)]
        struct Earlier {
            entries: BTreeMap<Vec<u8>, (Vec<u8>, u64)>,
            bytes: u64,
        }
        let mut register = KvRegister::default();
        register.put(Bytes::from_static(b"key"), Bytes::from_static(b"value"), 7);
        let earlier = Earlier { entries: [(b"key".to_vec(), (b"value".to_vec(), 7))].into(), bytes: 8 };
        let encoded = postcard::to_stdvec(&register).unwrap();
        assert_eq!(encoded, postcard::to_stdvec(&earlier).unwrap());
        assert_eq!(postcard::from_bytes::<KvRegister>(&encoded).unwrap(), register);
    }
}
