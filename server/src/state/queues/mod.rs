//! Durable FIFO queues: enqueue with dedup ids, delivery with per-attempt tags and visibility
//! timeouts, ack, nack, extend, redelivery when a consumer's session ends, dead-lettering after
//! the last attempt, and waiting gets that are served in the entry that makes a message
//! deliverable.
//!
//! Pure: time is the leader's stamp passed in, ids and tags are fresh revisions handed out by the
//! caller, and every collection is ordered, so replicas applying the same log agree byte for byte.
//!
//! A message is either **ready** (in `Queue::ready`, ordered by id, so FIFO by enqueue order and
//! a returned message goes back to the head) or **in flight** (one entry in `Queue::in_flight`,
//! keyed by its delivery tag). Gets that find nothing ready wait in `Queue::waiters`, oldest
//! first; whenever messages become ready and a get waits, `Queue::dispatch` hands them over at
//! once, so a waiting consumer never polls.
//!
//! `queue.rs` is one queue, this file all of them with their limits and gets, `settlement.rs` how
//! deliveries end (acks, nacks, timeouts, a session's end, dead letters), `quotas.rs` what each
//! identity holds, `commands.rs` applies the queue commands of the state machine, `tests.rs`
//! holds the scenarios.

mod commands;
mod queue;
mod quotas;
mod settlement;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use distsync::wire::{
    PutMessage, PutOutcome, QueueDelivery, QueueOptions, QueueStats, SessionSecret, DEAD_LETTER_SUFFIX,
};
use distsync::{QueueRefusal, ServerError, SessionId};
use serde::{Deserialize, Serialize};

pub use self::commands::Get;
use self::queue::{Consumer, Message, Queue, Waiter};
pub use self::quotas::Usage;
use super::limits::Limits;

/// Queues at once by default (`--max-queues`); each costs little, but a client bug creating queues in a loop must not
/// exhaust the nodes' memory.
pub const QUEUES_MAX: usize = 10_000;

/// Bytes of message bodies held across all queues by default (`--max-queued-bytes`): every byte lives in each node's memory and
/// snapshot until acked.
pub const QUEUED_BYTES_MAX: u64 = 512 * 1024 * 1024;

/// Queues one identity created and has not deleted, by default
/// (`--max-queues-per-identity`): a tenth of [`QUEUES_MAX`], so that one client creating queues
/// in a loop cannot take the table from everyone else.
pub const QUEUES_PER_IDENTITY_MAX: usize = 1_000;

/// Bytes of message bodies held by the queues one identity created, by default
/// (`--max-queued-bytes-per-identity`): half of [`QUEUED_BYTES_MAX`], so that one stuck queue
/// (its consumer gone, its producer going on) cannot refuse every other queue's puts.
pub const QUEUED_BYTES_PER_IDENTITY_MAX: u64 = QUEUED_BYTES_MAX / 2;

/// Dedup ids remembered per queue by default (`--max-dedup-ids`).
pub const DEDUP_IDS_MAX: usize = 100_000;

/// Earlier attempts kept per message; older ones are dropped first.
pub const HISTORY_MAX: usize = 32;

/// Gets waiting on one queue at most by default (`--max-queue-waiters`); beyond, a waiting get is refused with `Full` (a get
/// without waiting still answers).
pub const QUEUE_WAITERS_MAX: usize = 4096;

/// Gets of one identity's sessions waiting at once, across queues, by default
/// (`--max-queue-waiters-per-identity`).
pub const QUEUE_WAITERS_PER_IDENTITY_MAX: usize = 4096;

/// The immediate outcome of a get.
#[derive(Debug, PartialEq, Eq)]
pub enum GetOutcome {
    /// Delivered now (empty when nothing was ready and the get does not wait).
    Delivered(Vec<QueueDelivery>),
    /// Waiting for a message.
    Waiting,
}

/// What a consumer waiting on a get should be told, as far as this replica knows.
#[derive(Debug, PartialEq, Eq)]
pub enum AwaitState {
    /// Still waiting.
    Waiting,
    /// These deliveries went to it.
    Delivered(Vec<QueueDelivery>),
    /// Nothing waits and nothing was delivered.
    Gone,
}

/// All queues.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct Queues {
    queues: BTreeMap<String, Queue>,
    /// Bytes of message bodies across queues.
    bytes: u64,
    /// (deadline, queue) of every queue with one: what the next tick must look at.
    deadlines: BTreeSet<(u64, String)>,
    /// (session, queue) for every queue where the session made a get (a superset of where it
    /// waits or holds bound deliveries), so that a session's end visits its queues only.
    session_queues: BTreeSet<(SessionId, String)>,
    /// What each identity holds: the queues it owns (see `Queue::owner`) and their bytes, and
    /// its waiting gets; identities holding nothing are not kept.
    usage: BTreeMap<String, Usage>,
}

impl Queues {
    /// Number of queues.
    pub fn len(&self) -> usize {
        self.queues.len()
    }

    /// Whether there are no queues.
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// The earliest visibility timeout or wait deadline across queues.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    fn reindex(&mut self, name: &str) {
        let Some(queue) = self.queues.get_mut(name) else { return };
        let deadline = queue.deadline();
        if deadline != queue.indexed_deadline {
            if let Some(old) = queue.indexed_deadline {
                self.deadlines.remove(&(old, name.to_string()));
            }
            if let Some(new) = deadline {
                self.deadlines.insert((new, name.to_string()));
            }
            queue.indexed_deadline = deadline;
        }
    }

    fn existing(&mut self, name: &str) -> Result<&mut Queue, ServerError> {
        self.queues
            .get_mut(name)
            .ok_or_else(|| ServerError::Queue(QueueRefusal::NoSuchQueue { queue: name.to_string() }))
    }

    /// `name`, created for `identity` with `options` if it does not exist.
    fn ensure(
        &mut self,
        name: &str,
        options: QueueOptions,
        identity: &str,
        limits: &Limits,
    ) -> Result<&mut Queue, ServerError> {
        if !self.queues.contains_key(name) {
            if self.queues.len() as u64 >= limits.queues {
                return Err(full(
                    name,
                    "QUEUES_MAX",
                    limits.queues,
                    format!("the cluster holds {} queues, its maximum; delete unused ones", limits.queues),
                ));
            }
            let owner = self.owner_for(name, identity);
            let quota = limits.queues_per_identity;
            if self.usage.get(&owner).is_some_and(|usage| usage.queues >= quota) {
                return Err(full(
                    name,
                    "QUEUES_PER_IDENTITY_MAX",
                    quota,
                    format!(
                        "identity {owner:?} owns {quota} queues, its quota; delete unused ones (other identities are \
                         not affected)"
                    ),
                ));
            }
            self.charge(&owner, 1, 0, 0);
            self.queues.insert(name.to_string(), Queue::new(options, &owner));
        }
        Ok(self.queues.get_mut(name).expect("it exists now"))
    }

    /// Creates `name` with `options`, or sets the options of the existing queue; returns whether
    /// it was created.
    ///
    /// # Errors
    ///
    /// `Full` beyond `limits.queues` queues.
    pub fn create(
        &mut self,
        name: &str,
        options: QueueOptions,
        identity: &str,
        limits: &Limits,
    ) -> Result<bool, ServerError> {
        let created = !self.queues.contains_key(name);
        self.ensure(name, options, identity, limits)?.options = options;
        Ok(created)
    }

    /// Deletes `name` with its messages; returns how many it held and the sessions whose gets
    /// were waiting on it.
    ///
    /// # Errors
    ///
    /// `NoSuchQueue`.
    pub fn delete(&mut self, name: &str, touched: &mut Vec<SessionId>) -> Result<u64, ServerError> {
        self.existing(name)?;
        let queue = self.queues.remove(name).expect("checked above");
        if let Some(deadline) = queue.indexed_deadline {
            self.deadlines.remove(&(deadline, name.to_string()));
        }
        self.bytes -= queue.bytes;
        self.charge(&queue.owner, -1, -(queue.bytes as i64), 0);
        self.ended_waiting(queue.waiters());
        let sessions: BTreeSet<SessionId> =
            queue.waiting_consumers().chain(queue.in_flight.values().map(|f| f.consumer)).map(|c| c.0).collect();
        for session in &sessions {
            self.session_queues.remove(&(*session, name.to_string()));
        }
        touched.extend(sessions);
        Ok(queue.messages.len() as u64)
    }

    /// Enqueues `messages` into `name` (created with defaults if absent), all or nothing, and
    /// serves waiting gets. Ids come from `next_revision`.
    ///
    /// # Errors
    ///
    /// `MessageTooLarge` beyond the queue's limit; `Full` beyond `limits.queued_bytes`,
    /// `limits.dedup_ids` or `limits.queues`, or the owner's `limits.queued_bytes_per_identity`
    /// or the putter's `limits.queues_per_identity` (a put creates a missing queue for it).
    #[allow(clippy::too_many_arguments)]
    pub fn put(
        &mut self,
        name: &str,
        messages: &[PutMessage],
        now_ms: u64,
        next_revision: &mut dyn FnMut() -> u64,
        touched: &mut Vec<SessionId>,
        identity: &str,
        limits: &Limits,
    ) -> Result<Vec<PutOutcome>, ServerError> {
        if let Some(queue) = self.queues.get_mut(name) {
            // Forget dedup ids whose window has passed, so a put after the window enqueues again.
            while let Some((forget_at, _)) = queue.dedup_by_expiry.first() {
                if *forget_at > now_ms {
                    break;
                }
                let (_, dedup_id) = queue.dedup_by_expiry.pop_first().expect("checked");
                queue.dedup.remove(&dedup_id);
            }
        }
        // Check everything before changing anything: a refused put creates no queue either.
        self.check_put(name, messages, identity, limits)?;
        let queue = self.ensure(name, QueueOptions::default(), identity, limits)?;
        let mut outcomes = Vec::with_capacity(messages.len());
        let mut enqueued_bytes = 0u64;
        for message in messages {
            if let Some(&(id, _)) = message.dedup_id.as_ref().and_then(|dedup_id| queue.dedup.get(dedup_id)) {
                outcomes.push(PutOutcome { id, duplicate: true });
                continue;
            }
            let id = next_revision();
            queue.messages.insert(
                id,
                Message {
                    body: super::shared(&message.body),
                    enqueued_ms: now_ms,
                    attempts: 0,
                    delivery: None,
                    history: Vec::new(),
                },
            );
            queue.ready.insert(id);
            queue.bytes += message.body.len() as u64;
            enqueued_bytes += message.body.len() as u64;
            queue.put_total += 1;
            if let Some(dedup_id) = &message.dedup_id {
                let forget_at = now_ms.saturating_add(queue.options.dedup_window_ms);
                queue.dedup.insert(dedup_id.clone(), (id, forget_at));
                queue.dedup_by_expiry.insert((forget_at, dedup_id.clone()));
            }
            outcomes.push(PutOutcome { id, duplicate: false });
        }
        let served = queue.dispatch(now_ms, next_revision);
        touched.extend(served.iter().map(|waiter| waiter.consumer.0));
        let owner = queue.owner.clone();
        self.bytes += enqueued_bytes;
        self.charge(&owner, 0, enqueued_bytes as i64, 0);
        self.ended_waiting(&served);
        self.reindex(name);
        Ok(outcomes)
    }

    /// A get of `consumer` on `name` (created with defaults if absent): delivers up to `max`
    /// ready messages now, or waits until `now_ms + wait_ms` when none is ready and `wait_ms` > 0.
    ///
    /// # Errors
    ///
    /// `Full` beyond `limits.queues` queues or `limits.queue_waiters` waiting gets.
    #[allow(clippy::too_many_arguments)]
    pub fn get(
        &mut self,
        name: &str,
        consumer: Consumer,
        tag_key: SessionSecret,
        max: u32,
        visibility_ms: Option<u64>,
        wait_ms: u64,
        detach: bool,
        now_ms: u64,
        next_revision: &mut dyn FnMut() -> u64,
        identity: &str,
        limits: &Limits,
    ) -> Result<GetOutcome, ServerError> {
        let waiting = self.usage(identity).waiting;
        let queue = self.ensure(name, QueueOptions::default(), identity, limits)?;
        let visibility_ms = visibility_ms.unwrap_or(queue.options.visibility_ms);
        let outcome = if queue.ready.is_empty() && wait_ms > 0 {
            if queue.is_waiting(consumer) {
                // A client reusing a request id of its own: the first get still waits.
                return Err(ServerError::InvalidArgument {
                    reason: format!(
                        "get request {} of session {} already waits on queue {name:?}; give each get its own request \
                         id",
                        consumer.1, consumer.0
                    ),
                });
            }
            let waiters = limits.queue_waiters;
            if queue.waiter_count() as u64 >= waiters {
                return Err(full(
                    name,
                    "QUEUE_WAITERS_MAX",
                    waiters,
                    format!(
                        "{waiters} gets already wait on this queue, its maximum; get without waiting or retry later"
                    ),
                ));
            }
            let quota = limits.queue_waiters_per_identity;
            if waiting >= quota {
                return Err(full(
                    name,
                    "QUEUE_WAITERS_PER_IDENTITY_MAX",
                    quota,
                    format!(
                        "identity {identity:?} has {quota} gets waiting, its quota; get without waiting, or end some \
                         gets (other identities are not affected)"
                    ),
                ));
            }
            queue.add_waiter(Waiter {
                consumer,
                max,
                visibility_ms,
                detach,
                deadline_ms: now_ms.saturating_add(wait_ms),
                tag_key,
                identity: identity.to_string(),
            });
            GetOutcome::Waiting
        } else {
            let tags = queue.deliver(consumer, &tag_key, max, visibility_ms, !detach, now_ms, next_revision);
            GetOutcome::Delivered(tags.into_iter().map(|tag| queue.delivery(tag)).collect())
        };
        if matches!(outcome, GetOutcome::Waiting) {
            self.charge(identity, 0, 0, 1);
        }
        self.session_queues.insert((consumer.0, name.to_string()));
        self.reindex(name);
        Ok(outcome)
    }

    /// The deliveries of `tags` in `name` still in flight, as a get answered them.
    pub fn deliveries(&self, name: &str, tags: &[u64]) -> Vec<QueueDelivery> {
        let Some(queue) = self.queues.get(name) else { return Vec::new() };
        tags.iter().filter(|tag| queue.in_flight.contains_key(tag)).map(|tag| queue.delivery(*tag)).collect()
    }

    /// Where the get of `consumer` stands on this replica.
    pub fn await_state(&self, name: &str, consumer: Consumer) -> AwaitState {
        let Some(queue) = self.queues.get(name) else { return AwaitState::Gone };
        if queue.is_waiting(consumer) {
            return AwaitState::Waiting;
        }
        let deliveries: Vec<QueueDelivery> = queue
            .by_consumer
            .range((consumer, 0)..=(consumer, u64::MAX))
            .map(|(_, tag)| queue.delivery(*tag))
            .collect();
        if deliveries.is_empty() {
            AwaitState::Gone
        } else {
            AwaitState::Delivered(deliveries)
        }
    }

    /// Counters of `name`.
    pub fn stats(&self, name: &str, now_ms: u64) -> Option<QueueStats> {
        self.queues.get(name).map(|queue| queue.stats(name, now_ms))
    }

    /// Up to `limit` queues after `after`, in name order, and whether more follow.
    pub fn list(&self, after: Option<&str>, limit: usize, now_ms: u64) -> (Vec<QueueStats>, bool) {
        let range = match after {
            Some(after) => self.queues.range::<str, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => self.queues.range::<str, _>(..),
        };
        let mut page: Vec<QueueStats> = range.take(limit + 1).map(|(name, queue)| queue.stats(name, now_ms)).collect();
        let more = page.len() > limit;
        page.truncate(limit);
        (page, more)
    }

    /// Sessions with a waiting get or a bound delivery.
    pub fn sessions(&self) -> BTreeSet<SessionId> {
        let mut sessions = BTreeSet::new();
        for queue in self.queues.values() {
            sessions.extend(queue.waiting_consumers().map(|consumer| consumer.0));
            sessions.extend(queue.in_flight.values().filter(|f| f.bound).map(|f| f.consumer.0));
        }
        sessions
    }

    /// Checks one queue; see `Queue::check`.
    pub fn check_queue(&self, name: &str) {
        if let Some(queue) = self.queues.get(name) {
            queue.check(name);
            if let Some(deadline) = queue.indexed_deadline {
                assert!(self.deadlines.contains(&(deadline, name.to_string())), "queue {name}: deadline unindexed");
            }
        }
    }

    /// Panics if any queue is inconsistent.
    pub fn check_invariants(&self) {
        let mut bytes = 0;
        for (name, queue) in &self.queues {
            self.check_queue(name);
            bytes += queue.bytes;
            let bound = queue.in_flight.values().filter(|f| f.bound).map(|f| f.consumer);
            for consumer in queue.waiting_consumers().chain(bound) {
                assert!(
                    self.session_queues.contains(&(consumer.0, name.clone())),
                    "queue {name}: session {} waits or holds a delivery here but is not indexed",
                    consumer.0
                );
            }
        }
        assert_eq!(bytes, self.bytes, "queued bytes drifted");
        self.check_usage();
        assert_eq!(
            self.deadlines.len(),
            self.queues.values().filter(|q| q.indexed_deadline.is_some()).count(),
            "deadline index has strays"
        );
    }
}

/// The dead-letter queue of `name`.
pub fn dead_letter_queue(name: &str) -> String {
    format!("{name}{DEAD_LETTER_SUFFIX}")
}

/// A queue's `Full` refusal: the limit `what` of value `limit` would be passed.
fn full(queue: &str, what: &str, limit: u64, reason: String) -> ServerError {
    ServerError::Queue(QueueRefusal::Full { queue: queue.to_string(), what: what.into(), limit, reason })
}
