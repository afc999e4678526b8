//! One queue: its messages, what is ready and what is in flight, waiting gets, and dedup ids.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use distsync::wire::{DeliveryAttempt, QueueDelivery, QueueOptions, QueueStats, SessionSecret, QUEUE_GET_BYTES_MAX};
use distsync::SessionId;
use serde::{Deserialize, Serialize};

#[allow(unused_imports)] // for intra-doc links
use super::Queues;
use super::HISTORY_MAX;

/// Delivery tags are 53-bit numbers (exact in every language's numbers).
const TAG_MASK: u64 = (1 << 53) - 1;

/// Who a delivery went to: the consumer's session and its id for the get.
pub(super) type Consumer = (SessionId, u64);

/// A message not yet acked.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Shared, not copied, by a clone of the state (a snapshot's, a digest's).
    pub(super) body: bytes::Bytes,
    pub(super) enqueued_ms: u64,
    /// Deliveries so far in this queue.
    pub(super) attempts: u32,
    /// The tag of the current delivery when in flight.
    pub(super) delivery: Option<u64>,
    /// Earlier attempts that ended without an ack, oldest first.
    pub(super) history: Vec<DeliveryAttempt>,
}

/// A delivery awaiting its ack.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    pub(super) id: u64,
    pub(super) consumer: Consumer,
    /// Whether the consumer's session ending returns the message (false for detached gets).
    pub(super) bound: bool,
    pub(super) attempt: u32,
    pub(super) delivered_ms: u64,
    pub(super) visible_at_ms: u64,
}

impl InFlight {
    /// Whether the session `caller` may ack, nack or extend this delivery: a delivery bound to
    /// its session belongs to that session alone; a detached one to whoever has its tag.
    pub(super) fn belongs_to(&self, caller: SessionId) -> bool {
        !self.bound || self.consumer.0 == caller
    }
}

/// A get waiting for a message.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Waiter {
    pub(super) consumer: Consumer,
    pub(super) max: u32,
    pub(super) visibility_ms: u64,
    pub(super) detach: bool,
    pub(super) deadline_ms: u64,
    /// The consumer session's secret, which keys the tags of what it is delivered.
    pub(super) tag_key: SessionSecret,
    /// The identity that asked, whose quota of waiting gets this takes.
    pub(super) identity: String,
}

/// One queue.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    pub(super) options: QueueOptions,
    /// The identity that created it (explicitly, or by a first put or get): its queued bytes
    /// and its queue count are charged to that identity's quota. A dead-letter queue is its
    /// queue's owner's.
    pub(super) owner: String,
    pub(super) messages: BTreeMap<u64, Message>,
    /// Ids of messages ready for delivery: FIFO by id.
    pub(super) ready: BTreeSet<u64>,
    /// Deliveries by tag.
    pub(super) in_flight: BTreeMap<u64, InFlight>,
    /// (visible_at_ms, tag) of every delivery.
    pub(super) by_visibility: BTreeSet<(u64, u64)>,
    /// (consumer, tag) of every delivery, to answer a consumer's await.
    pub(super) by_consumer: BTreeSet<(Consumer, u64)>,
    /// Waiting gets, oldest first. Non-empty only while nothing is ready. Changed only through
    /// the waiter methods below, which keep `waiting` and `waiter_deadlines` in step.
    waiters: VecDeque<Waiter>,
    /// The deadline of each waiting get, by consumer.
    waiting: BTreeMap<Consumer, u64>,
    /// (deadline, consumer) of every waiting get, so the earliest costs a lookup, not a scan.
    waiter_deadlines: BTreeSet<(u64, Consumer)>,
    /// Dedup id → (message id, leader time the id is forgotten).
    pub(super) dedup: BTreeMap<String, (u64, u64)>,
    /// (forget_at_ms, dedup id).
    pub(super) dedup_by_expiry: BTreeSet<(u64, String)>,
    pub(super) bytes: u64,
    pub(super) dead_lettered: u64,
    pub(super) put_total: u64,
    pub(super) acked_total: u64,
    /// The deadline of this queue in [`Queues::deadlines`], if any.
    pub(super) indexed_deadline: Option<u64>,
}

impl Queue {
    pub(super) fn new(options: QueueOptions, owner: &str) -> Self {
        Queue {
            options,
            owner: owner.to_string(),
            messages: BTreeMap::new(),
            ready: BTreeSet::new(),
            in_flight: BTreeMap::new(),
            by_visibility: BTreeSet::new(),
            by_consumer: BTreeSet::new(),
            waiters: VecDeque::new(),
            waiting: BTreeMap::new(),
            waiter_deadlines: BTreeSet::new(),
            dedup: BTreeMap::new(),
            dedup_by_expiry: BTreeSet::new(),
            bytes: 0,
            dead_lettered: 0,
            put_total: 0,
            acked_total: 0,
            indexed_deadline: None,
        }
    }

    /// The earliest moment something in this queue must happen: a visibility timeout or the end
    /// of a wait. Dedup ids expire lazily and need no tick.
    pub(super) fn deadline(&self) -> Option<u64> {
        let visibility = self.by_visibility.first().map(|(at, _)| *at);
        let wait = self.waiter_deadlines.first().map(|(at, _)| *at);
        match (visibility, wait) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Delivers up to `max` ready messages (and at most [`QUEUE_GET_BYTES_MAX`] bytes, but at
    /// least one) to `consumer`; returns their tags.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn deliver(
        &mut self,
        consumer: Consumer,
        tag_key: &SessionSecret,
        max: u32,
        visibility_ms: u64,
        bound: bool,
        now_ms: u64,
        next_revision: &mut dyn FnMut() -> u64,
    ) -> Vec<u64> {
        let mut tags = Vec::new();
        let mut bytes = 0usize;
        while tags.len() < max as usize {
            let Some(&id) = self.ready.first() else { break };
            let message = self.messages.get_mut(&id).expect("ready messages exist");
            if !tags.is_empty() && bytes + message.body.len() > QUEUE_GET_BYTES_MAX {
                break;
            }
            self.ready.pop_first();
            bytes += message.body.len();
            message.attempts += 1;
            let tag = self.fresh_tag(tag_key, next_revision());
            let message = self.messages.get_mut(&id).expect("ready messages exist");
            message.delivery = Some(tag);
            let visible_at_ms = now_ms.saturating_add(visibility_ms);
            self.in_flight.insert(
                tag,
                InFlight { id, consumer, bound, attempt: message.attempts, delivered_ms: now_ms, visible_at_ms },
            );
            self.by_visibility.insert((visible_at_ms, tag));
            self.by_consumer.insert((consumer, tag));
            tags.push(tag);
        }
        tags
    }

    /// An unguessable tag for the delivery at `revision`, unique among this queue's deliveries:
    /// the consumer session's secret keys an HMAC of the revision, so only that session (which
    /// is handed the tag) can know it, and every replica computes the same. Kept below 2^53 so
    /// that JavaScript numbers hold it exactly.
    fn fresh_tag(&self, key: &SessionSecret, revision: u64) -> u64 {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key.0);
        (0u32..)
            .map(|salt| {
                let mut input = [0u8; 12];
                input[..8].copy_from_slice(&revision.to_be_bytes());
                input[8..].copy_from_slice(&salt.to_be_bytes());
                let digest = ring::hmac::sign(&key, &input);
                let bytes: [u8; 8] = digest.as_ref()[..8].try_into().expect("an HMAC-SHA256 has 32 bytes");
                u64::from_be_bytes(bytes) & TAG_MASK
            })
            .find(|tag| *tag != 0 && !self.in_flight.contains_key(tag))
            .expect("some salt gives a free tag")
    }

    /// The delivery `tag` as a get returns it.
    pub(super) fn delivery(&self, tag: u64) -> QueueDelivery {
        let flight = &self.in_flight[&tag];
        let message = &self.messages[&flight.id];
        QueueDelivery {
            id: flight.id,
            tag,
            attempt: flight.attempt,
            body: message.body.to_vec(),
            enqueued_ms: message.enqueued_ms,
            visible_at_ms: flight.visible_at_ms,
            history: message.history.clone(),
        }
    }

    /// [`Queue::land`], if delivery `tag` is `caller`'s to settle.
    pub(super) fn land_for(&mut self, caller: SessionId, tag: u64) -> Option<InFlight> {
        if self.in_flight.get(&tag)?.belongs_to(caller) {
            self.land(tag)
        } else {
            None
        }
    }

    /// Ends delivery `tag` and takes its message out of flight; the caller puts it somewhere.
    pub(super) fn land(&mut self, tag: u64) -> Option<InFlight> {
        let flight = self.in_flight.remove(&tag)?;
        self.by_visibility.remove(&(flight.visible_at_ms, tag));
        self.by_consumer.remove(&(flight.consumer, tag));
        let message = self.messages.get_mut(&flight.id).expect("in-flight messages exist");
        debug_assert_eq!(message.delivery, Some(tag));
        message.delivery = None;
        Some(flight)
    }

    /// Removes message `id` (ready or landed) with its bytes.
    pub(super) fn remove_message(&mut self, id: u64) -> Message {
        let message = self.messages.remove(&id).expect("the message exists");
        self.ready.remove(&id);
        self.bytes -= message.body.len() as u64;
        message
    }

    /// Waiting gets.
    pub(super) fn waiter_count(&self) -> usize {
        self.waiters.len()
    }

    /// Whether `consumer`'s get waits here.
    pub(super) fn is_waiting(&self, consumer: Consumer) -> bool {
        self.waiting.contains_key(&consumer)
    }

    /// The consumers of the waiting gets, oldest first.
    pub(super) fn waiting_consumers(&self) -> impl Iterator<Item = Consumer> + '_ {
        self.waiters.iter().map(|w| w.consumer)
    }

    /// The waiting gets, oldest first.
    pub(super) fn waiters(&self) -> impl Iterator<Item = &Waiter> + '_ {
        self.waiters.iter()
    }

    /// Queues a get at the back; a consumer waits at most once.
    pub(super) fn add_waiter(&mut self, waiter: Waiter) {
        let previous = self.waiting.insert(waiter.consumer, waiter.deadline_ms);
        debug_assert!(previous.is_none(), "consumer {:?} waits once", waiter.consumer);
        self.waiter_deadlines.insert((waiter.deadline_ms, waiter.consumer));
        self.waiters.push_back(waiter);
    }

    /// The oldest waiting get, taken out.
    fn pop_waiter(&mut self) -> Option<Waiter> {
        let waiter = self.waiters.pop_front()?;
        self.waiting.remove(&waiter.consumer);
        self.waiter_deadlines.remove(&(waiter.deadline_ms, waiter.consumer));
        Some(waiter)
    }

    /// Ends the waiting gets of `consumers` and returns them; one pass over the waiters, only if
    /// any is here.
    pub(super) fn remove_waiters(&mut self, consumers: &BTreeSet<Consumer>) -> Vec<Waiter> {
        let mut removed = 0;
        for consumer in consumers {
            if let Some(deadline) = self.waiting.remove(consumer) {
                self.waiter_deadlines.remove(&(deadline, *consumer));
                removed += 1;
            }
        }
        if removed == 0 {
            return Vec::new();
        }
        let ended: Vec<Waiter> = self.waiters.iter().filter(|w| consumers.contains(&w.consumer)).cloned().collect();
        self.waiters.retain(|w| !consumers.contains(&w.consumer));
        debug_assert_eq!(ended.len(), removed, "waiters and their index agree");
        ended
    }

    /// The consumers of `session` with a waiting get here.
    pub(super) fn waiting_of(&self, session: SessionId) -> BTreeSet<Consumer> {
        self.waiting.range((session, 0)..=(session, u64::MAX)).map(|(consumer, _)| *consumer).collect()
    }

    /// The consumers whose waits ended before `now_ms`.
    pub(super) fn waits_ended(&self, now_ms: u64) -> BTreeSet<Consumer> {
        self.waiter_deadlines.iter().take_while(|(at, _)| *at < now_ms).map(|(_, consumer)| *consumer).collect()
    }

    /// Hands ready messages to waiting gets, oldest get first; returns the gets served.
    pub(super) fn dispatch(&mut self, now_ms: u64, next_revision: &mut dyn FnMut() -> u64) -> Vec<Waiter> {
        let mut served = Vec::new();
        while !self.ready.is_empty() {
            let Some(waiter) = self.pop_waiter() else { break };
            self.deliver(
                waiter.consumer,
                &waiter.tag_key,
                waiter.max,
                waiter.visibility_ms,
                !waiter.detach,
                now_ms,
                next_revision,
            );
            served.push(waiter);
        }
        served
    }

    /// Counters, with ages by `now_ms`.
    pub(super) fn stats(&self, name: &str, now_ms: u64) -> QueueStats {
        QueueStats {
            name: name.to_string(),
            options: self.options,
            depth: self.ready.len() as u64,
            in_flight: self.in_flight.len() as u64,
            waiting_consumers: self.waiters.len() as u64,
            dead_lettered: self.dead_lettered,
            put_total: self.put_total,
            acked_total: self.acked_total,
            bytes: self.bytes,
            // Ids increase with enqueue order, so the smallest id is the oldest message.
            oldest_age_ms: self.messages.values().next().map(|m| now_ms.saturating_sub(m.enqueued_ms)),
        }
    }

    /// Panics if the queue's indexes disagree, which would mean a bug.
    pub fn check(&self, name: &str) {
        let mut bytes = 0u64;
        for (id, message) in &self.messages {
            bytes += message.body.len() as u64;
            match message.delivery {
                Some(tag) => {
                    assert!(!self.ready.contains(id), "queue {name}: message {id} is both ready and in flight");
                    let flight = self.in_flight.get(&tag).unwrap_or_else(|| {
                        panic!("queue {name}: message {id} names delivery {tag}, which is not in flight")
                    });
                    assert_eq!(flight.id, *id, "queue {name}: delivery {tag} names another message");
                    assert_eq!(flight.attempt, message.attempts, "queue {name}: message {id} attempt mismatch");
                }
                None => assert!(self.ready.contains(id), "queue {name}: message {id} is neither ready nor in flight"),
            }
            assert!(message.history.len() <= HISTORY_MAX, "queue {name}: message {id} history unbounded");
        }
        assert_eq!(bytes, self.bytes, "queue {name}: byte count drifted");
        assert_eq!(self.ready.len() + self.in_flight.len(), self.messages.len(), "queue {name}: message count");
        assert_eq!(self.by_visibility.len(), self.in_flight.len(), "queue {name}: visibility index");
        assert_eq!(self.by_consumer.len(), self.in_flight.len(), "queue {name}: consumer index");
        for (tag, flight) in &self.in_flight {
            assert!(self.by_visibility.contains(&(flight.visible_at_ms, *tag)), "queue {name}: tag {tag} unindexed");
            assert!(self.by_consumer.contains(&(flight.consumer, *tag)), "queue {name}: tag {tag} unindexed");
            assert!(*tag > flight.id, "queue {name}: delivery tag {tag} precedes message {}", flight.id);
        }
        assert!(self.waiters.is_empty() || self.ready.is_empty(), "queue {name}: a get waits while messages are ready");
        assert_eq!(self.waiting.len(), self.waiters.len(), "queue {name}: a consumer waits twice, or unindexed");
        assert_eq!(self.waiter_deadlines.len(), self.waiters.len(), "queue {name}: waiter deadline index");
        for waiter in &self.waiters {
            assert_eq!(self.waiting.get(&waiter.consumer), Some(&waiter.deadline_ms), "queue {name}: waiter index");
            assert!(
                self.waiter_deadlines.contains(&(waiter.deadline_ms, waiter.consumer)),
                "queue {name}: waiter index"
            );
        }
        assert_eq!(self.dedup.len(), self.dedup_by_expiry.len(), "queue {name}: dedup index");
        for (dedup_id, (_, forget_at)) in &self.dedup {
            assert!(self.dedup_by_expiry.contains(&(*forget_at, dedup_id.clone())), "queue {name}: dedup index");
        }
        assert_eq!(self.indexed_deadline, self.deadline(), "queue {name}: deadline index is stale");
    }
}
