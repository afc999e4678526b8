//! What each identity holds of the queues (the queues it owns, their bytes, its waiting gets),
//! kept beside the queues so that a quota costs a lookup, and what a put is checked against.

use std::collections::BTreeMap;

use distsync::wire::{PutMessage, QueueOptions};
use distsync::{QueueRefusal, ServerError};
use serde::{Deserialize, Serialize};

use super::queue::Waiter;
use super::{full, Queues, DEAD_LETTER_SUFFIX};
use crate::state::limits::Limits;

/// What one identity holds of the queues: those it owns, their bytes, its waiting gets.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Queues it created, dead-letter queues included.
    pub queues: u64,
    /// Bytes of message bodies in them.
    pub bytes: u64,
    /// Gets of its sessions waiting, on any queue.
    pub waiting: u64,
}

impl Queues {
    /// Adds `queues`, `bytes` and `waiting` (any may be negative) to what `identity` holds.
    pub(super) fn charge(&mut self, identity: &str, queues: i64, bytes: i64, waiting: i64) {
        let usage = self.usage.entry(identity.to_string()).or_default();
        // A drift would be a bug (the invariants recount); saturating keeps a release build's
        // replicas serving, identically, rather than all stopping on the same entry.
        let add = |count: &mut u64, delta: i64, what: &str| {
            debug_assert!(count.checked_add_signed(delta).is_some(), "{identity}'s {what} below zero");
            *count = count.saturating_add_signed(delta);
        };
        add(&mut usage.queues, queues, "queue count");
        add(&mut usage.bytes, bytes, "queued bytes");
        add(&mut usage.waiting, waiting, "waiting gets");
        if usage.queues == 0 {
            debug_assert_eq!(usage.bytes, 0, "bytes of {identity} without a queue");
        }
        if *usage == Usage::default() {
            self.usage.remove(identity);
        }
    }

    /// Gives back the quota of waiting gets that ended (served, cancelled, timed out, gone).
    pub(super) fn ended_waiting<'a>(&mut self, ended: impl IntoIterator<Item = &'a Waiter>) {
        for waiter in ended {
            self.charge(&waiter.identity, 0, 0, -1);
        }
    }

    /// What `identity`'s queues hold.
    pub fn usage(&self, identity: &str) -> Usage {
        self.usage.get(identity).copied().unwrap_or_default()
    }

    /// Who owns `name` once it exists: the owner of its queue when it is a dead-letter queue
    /// (`NAME.dlq` of an existing `NAME`), else `identity`, which makes it.
    pub(super) fn owner_for(&self, name: &str, identity: &str) -> String {
        let base = name.strip_suffix(DEAD_LETTER_SUFFIX).and_then(|base| self.queues.get(base));
        base.map_or_else(|| identity.to_string(), |queue| queue.owner.clone())
    }

    /// Whether `messages` may be put into `name` (which may not exist yet): sizes, bytes and
    /// dedup ids against the limits.
    pub(super) fn check_put(
        &self,
        name: &str,
        messages: &[PutMessage],
        identity: &str,
        limits: &Limits,
    ) -> Result<(), ServerError> {
        let queue = self.queues.get(name);
        let max = queue.map_or(QueueOptions::default().max_message_bytes, |q| q.options.max_message_bytes) as usize;
        let mut added = 0u64;
        let mut new_dedup_ids = 0usize;
        for message in messages {
            if message.body.len() > max {
                return Err(ServerError::Queue(QueueRefusal::MessageTooLarge {
                    queue: name.to_string(),
                    bytes: message.body.len(),
                    max,
                }));
            }
            added += message.body.len() as u64;
            let known = |id: &String| queue.is_some_and(|queue| queue.dedup.contains_key(id));
            if message.dedup_id.as_ref().is_some_and(|id| !known(id)) {
                new_dedup_ids += 1;
            }
        }
        let total_bytes = self.bytes;
        if total_bytes + added > limits.queued_bytes {
            return Err(full(
                name,
                "QUEUED_BYTES_MAX",
                limits.queued_bytes,
                format!(
                    "the cluster holds {total_bytes} queued bytes and may hold {}; consume and ack messages",
                    limits.queued_bytes
                ),
            ));
        }
        let owner = queue.map_or_else(|| self.owner_for(name, identity), |queue| queue.owner.clone());
        let (owner_bytes, quota) = (self.usage(&owner).bytes, limits.queued_bytes_per_identity);
        if owner_bytes + added > quota {
            return Err(full(
                name,
                "QUEUED_BYTES_PER_IDENTITY_MAX",
                quota,
                format!(
                    "the queues of identity {owner:?} hold {owner_bytes} bytes and may hold {quota}, its quota; consume \
                     and ack their messages (other identities' queues are not affected)"
                ),
            ));
        }
        if (queue.map_or(0, |queue| queue.dedup.len()) + new_dedup_ids) as u64 > limits.dedup_ids {
            return Err(full(
                name,
                "DEDUP_IDS_MAX",
                limits.dedup_ids,
                format!("{} dedup ids are remembered; shorten the dedup window", limits.dedup_ids),
            ));
        }
        Ok(())
    }

    /// Panics if what is kept per identity differs from a recount.
    pub(super) fn check_usage(&self) {
        let mut usage: BTreeMap<&str, Usage> = BTreeMap::new();
        for queue in self.queues.values() {
            let owned = usage.entry(&queue.owner).or_default();
            owned.queues += 1;
            owned.bytes += queue.bytes;
            for waiter in queue.waiters() {
                usage.entry(&waiter.identity).or_default().waiting += 1;
            }
        }
        let kept: BTreeMap<&str, Usage> = self.usage.iter().map(|(owner, usage)| (owner.as_str(), *usage)).collect();
        assert_eq!(kept, usage, "usage per identity drifted");
    }
}
