//! The replicated key-value register: bytes to bytes, each value with the revision that wrote it.

use std::collections::BTreeMap;

use distsync::wire::CommandResponse;
use distsync::ServerError;
use serde::{Deserialize, Serialize};

use super::StateMachine;

/// Keys in the register. Bounds state-machine memory and snapshot size; with values of at most
/// 1 MiB the register is meant for configuration and coordination data, not bulk storage.
pub const KEYS_MAX: usize = 1_000_000;

/// The register.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct KvRegister {
    entries: BTreeMap<Vec<u8>, (Vec<u8>, u64)>,
}

impl KvRegister {
    /// Value and version of `key`.
    pub fn get(&self, key: &[u8]) -> Option<&(Vec<u8>, u64)> {
        self.entries.get(key)
    }

    /// Whether another key may be added.
    pub fn has_room_for(&self, key: &[u8]) -> bool {
        self.entries.len() < KEYS_MAX || self.entries.contains_key(key)
    }

    /// Sets `key` at `version` (the revision of the write).
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>, version: u64) {
        self.entries.insert(key, (value, version));
    }

    /// Removes `key`; returns whether it existed.
    pub fn delete(&mut self, key: &[u8]) -> bool {
        self.entries.remove(key).is_some()
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
        for (key, (_, version)) in &self.entries {
            assert!(*version <= revision, "key {key:?} has version {version} beyond revision {revision}");
        }
    }
}

/// The register's commands.
impl StateMachine {
    /// `KvPut` at `revision`, which becomes the value's version.
    pub(super) fn kv_put(&mut self, revision: u64, key: &[u8], value: &[u8]) -> Result<CommandResponse, ServerError> {
        if !self.kv.has_room_for(key) {
            return Err(ServerError::InvalidArgument {
                reason: format!("the register holds {} keys, its maximum; delete some first", self.kv.len()),
            });
        }
        self.kv.put(key.to_vec(), value.to_vec(), revision);
        Ok(CommandResponse::KvPut { version: revision })
    }

    /// `KvDelete`.
    pub(super) fn kv_delete(&mut self, key: &[u8]) -> CommandResponse {
        CommandResponse::KvDelete { existed: self.kv.delete(key) }
    }
}
