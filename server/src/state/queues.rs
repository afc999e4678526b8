//! Durable FIFO queues: enqueue with dedup ids, delivery with per-attempt tags and visibility
//! timeouts, ack, nack, extend, redelivery when a consumer's session ends, dead-lettering after
//! the last attempt, and waiting gets that are served in the entry that makes a message
//! deliverable.
//!
//! Pure: time is the leader's stamp passed in, ids and tags are fresh revisions handed out by the
//! caller, and every collection is ordered, so replicas applying the same log agree byte for byte.
//!
//! A message is either **ready** (in [`Queue::ready`], ordered by id, so FIFO by enqueue order and
//! a returned message goes back to the head) or **in flight** (one entry in [`Queue::in_flight`],
//! keyed by its delivery tag). Gets that find nothing ready wait in [`Queue::waiters`], oldest
//! first; whenever messages become ready and a get waits, [`Queue::dispatch`] hands them over at
//! once, so a waiting consumer never polls.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use distsync::wire::{
    AttemptOutcome, DeliveryAttempt, PutMessage, PutOutcome, QueueDelivery, QueueOptions, QueueStats,
    DEAD_LETTER_SUFFIX, QUEUE_GET_BYTES_MAX,
};
use distsync::{QueueRefusal, ServerError, SessionId};
use serde::{Deserialize, Serialize};

/// Queues at once; each costs little, but a client bug creating queues in a loop must not
/// exhaust the nodes' memory.
pub const QUEUES_MAX: usize = 10_000;

/// Bytes of message bodies held across all queues: every byte lives in each node's memory and
/// snapshot until acked.
pub const QUEUED_BYTES_MAX: u64 = 512 * 1024 * 1024;

/// Dedup ids remembered per queue.
pub const DEDUP_IDS_MAX: usize = 100_000;

/// Earlier attempts kept per message; older ones are dropped first.
pub const HISTORY_MAX: usize = 32;

/// Who a delivery went to: the consumer's session and its id for the get.
type Consumer = (SessionId, u64);

/// A message not yet acked.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Message {
    body: Vec<u8>,
    enqueued_ms: u64,
    /// Deliveries so far in this queue.
    attempts: u32,
    /// The tag of the current delivery when in flight.
    delivery: Option<u64>,
    /// Earlier attempts that ended without an ack, oldest first.
    history: Vec<DeliveryAttempt>,
}

/// A delivery awaiting its ack.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    id: u64,
    consumer: Consumer,
    /// Whether the consumer's session ending returns the message (false for detached gets).
    bound: bool,
    attempt: u32,
    delivered_ms: u64,
    visible_at_ms: u64,
}

/// A get waiting for a message.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Waiter {
    consumer: Consumer,
    max: u32,
    visibility_ms: u64,
    detach: bool,
    deadline_ms: u64,
}

/// One queue.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    options: QueueOptions,
    messages: BTreeMap<u64, Message>,
    /// Ids of messages ready for delivery: FIFO by id.
    ready: BTreeSet<u64>,
    /// Deliveries by tag.
    in_flight: BTreeMap<u64, InFlight>,
    /// (visible_at_ms, tag) of every delivery.
    by_visibility: BTreeSet<(u64, u64)>,
    /// (consumer, tag) of every delivery, to answer a consumer's await.
    by_consumer: BTreeSet<(Consumer, u64)>,
    /// Waiting gets, oldest first. Non-empty only while nothing is ready.
    waiters: VecDeque<Waiter>,
    /// Dedup id → (message id, leader time the id is forgotten).
    dedup: BTreeMap<String, (u64, u64)>,
    /// (forget_at_ms, dedup id).
    dedup_by_expiry: BTreeSet<(u64, String)>,
    bytes: u64,
    dead_lettered: u64,
    put_total: u64,
    acked_total: u64,
    /// The deadline of this queue in [`Queues::deadlines`], if any.
    indexed_deadline: Option<u64>,
}

impl Queue {
    fn new(options: QueueOptions) -> Self {
        Queue {
            options,
            messages: BTreeMap::new(),
            ready: BTreeSet::new(),
            in_flight: BTreeMap::new(),
            by_visibility: BTreeSet::new(),
            by_consumer: BTreeSet::new(),
            waiters: VecDeque::new(),
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
    fn deadline(&self) -> Option<u64> {
        let visibility = self.by_visibility.first().map(|(at, _)| *at);
        let wait = self.waiters.iter().map(|w| w.deadline_ms).min();
        match (visibility, wait) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Delivers up to `max` ready messages (and at most [`QUEUE_GET_BYTES_MAX`] bytes, but at
    /// least one) to `consumer`; returns their tags.
    fn deliver(
        &mut self,
        consumer: Consumer,
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
            let tag = next_revision();
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

    /// The delivery `tag` as a get returns it.
    fn delivery(&self, tag: u64) -> QueueDelivery {
        let flight = &self.in_flight[&tag];
        let message = &self.messages[&flight.id];
        QueueDelivery {
            id: flight.id,
            tag,
            attempt: flight.attempt,
            body: message.body.clone(),
            enqueued_ms: message.enqueued_ms,
            visible_at_ms: flight.visible_at_ms,
            history: message.history.clone(),
        }
    }

    /// Ends delivery `tag` and takes its message out of flight; the caller puts it somewhere.
    fn land(&mut self, tag: u64) -> Option<InFlight> {
        let flight = self.in_flight.remove(&tag)?;
        self.by_visibility.remove(&(flight.visible_at_ms, tag));
        self.by_consumer.remove(&(flight.consumer, tag));
        let message = self.messages.get_mut(&flight.id).expect("in-flight messages exist");
        debug_assert_eq!(message.delivery, Some(tag));
        message.delivery = None;
        Some(flight)
    }

    /// Removes message `id` (ready or landed) with its bytes.
    fn remove_message(&mut self, id: u64) -> Message {
        let message = self.messages.remove(&id).expect("the message exists");
        self.ready.remove(&id);
        self.bytes -= message.body.len() as u64;
        message
    }

    /// Hands ready messages to waiting gets, oldest get first; returns the sessions served.
    fn dispatch(&mut self, now_ms: u64, next_revision: &mut dyn FnMut() -> u64) -> Vec<SessionId> {
        let mut served = Vec::new();
        while !self.ready.is_empty() {
            let Some(waiter) = self.waiters.pop_front() else { break };
            self.deliver(waiter.consumer, waiter.max, waiter.visibility_ms, !waiter.detach, now_ms, next_revision);
            served.push(waiter.consumer.0);
        }
        served
    }

    /// Counters, with ages by `now_ms`.
    fn stats(&self, name: &str, now_ms: u64) -> QueueStats {
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
        assert_eq!(self.dedup.len(), self.dedup_by_expiry.len(), "queue {name}: dedup index");
        for (dedup_id, (_, forget_at)) in &self.dedup {
            assert!(self.dedup_by_expiry.contains(&(*forget_at, dedup_id.clone())), "queue {name}: dedup index");
        }
        assert_eq!(self.indexed_deadline, self.deadline(), "queue {name}: deadline index is stale");
    }
}

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

    fn ensure(&mut self, name: &str, options: QueueOptions) -> Result<&mut Queue, ServerError> {
        if !self.queues.contains_key(name) && self.queues.len() >= QUEUES_MAX {
            return Err(ServerError::Queue(QueueRefusal::Full {
                queue: name.to_string(),
                reason: format!("the cluster holds {QUEUES_MAX} queues, its maximum; delete unused ones"),
            }));
        }
        Ok(self.queues.entry(name.to_string()).or_insert_with(|| Queue::new(options)))
    }

    /// Creates `name` with `options`, or sets the options of the existing queue; returns whether
    /// it was created.
    ///
    /// # Errors
    ///
    /// `Full` beyond [`QUEUES_MAX`] queues.
    pub fn create(&mut self, name: &str, options: QueueOptions) -> Result<bool, ServerError> {
        let created = !self.queues.contains_key(name);
        self.ensure(name, options)?.options = options;
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
        touched.extend(queue.waiters.iter().map(|w| w.consumer.0));
        touched.extend(queue.in_flight.values().map(|f| f.consumer.0));
        Ok(queue.messages.len() as u64)
    }

    /// Enqueues `messages` into `name` (created with defaults if absent), all or nothing, and
    /// serves waiting gets. Ids come from `next_revision`.
    ///
    /// # Errors
    ///
    /// `MessageTooLarge` beyond the queue's limit; `Full` beyond [`QUEUED_BYTES_MAX`],
    /// [`DEDUP_IDS_MAX`] or [`QUEUES_MAX`].
    pub fn put(
        &mut self,
        name: &str,
        messages: &[PutMessage],
        now_ms: u64,
        next_revision: &mut dyn FnMut() -> u64,
        touched: &mut Vec<SessionId>,
    ) -> Result<Vec<PutOutcome>, ServerError> {
        let total_bytes = self.bytes;
        let queue = self.ensure(name, QueueOptions::default())?;
        // Forget dedup ids whose window has passed, so a put after the window enqueues again.
        while let Some((forget_at, _)) = queue.dedup_by_expiry.first() {
            if *forget_at > now_ms {
                break;
            }
            let (_, dedup_id) = queue.dedup_by_expiry.pop_first().expect("checked");
            queue.dedup.remove(&dedup_id);
        }
        // Check everything before changing anything.
        let max = queue.options.max_message_bytes as usize;
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
            if message.dedup_id.as_ref().is_some_and(|id| !queue.dedup.contains_key(id)) {
                new_dedup_ids += 1;
            }
        }
        if total_bytes + added > QUEUED_BYTES_MAX {
            return Err(ServerError::Queue(QueueRefusal::Full {
                queue: name.to_string(),
                reason: format!("the cluster holds {total_bytes} queued bytes and may hold {QUEUED_BYTES_MAX}"),
            }));
        }
        if queue.dedup.len() + new_dedup_ids > DEDUP_IDS_MAX {
            return Err(ServerError::Queue(QueueRefusal::Full {
                queue: name.to_string(),
                reason: format!("{DEDUP_IDS_MAX} dedup ids are remembered; shorten the dedup window"),
            }));
        }
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
                    body: message.body.clone(),
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
        touched.extend(queue.dispatch(now_ms, next_revision));
        self.bytes += enqueued_bytes;
        self.reindex(name);
        Ok(outcomes)
    }

    /// A get of `consumer` on `name` (created with defaults if absent): delivers up to `max`
    /// ready messages now, or waits until `now_ms + wait_ms` when none is ready and `wait_ms` > 0.
    ///
    /// # Errors
    ///
    /// `Full` beyond [`QUEUES_MAX`] queues.
    #[allow(clippy::too_many_arguments)]
    pub fn get(
        &mut self,
        name: &str,
        consumer: Consumer,
        max: u32,
        visibility_ms: Option<u64>,
        wait_ms: u64,
        detach: bool,
        now_ms: u64,
        next_revision: &mut dyn FnMut() -> u64,
    ) -> Result<GetOutcome, ServerError> {
        let queue = self.ensure(name, QueueOptions::default())?;
        let visibility_ms = visibility_ms.unwrap_or(queue.options.visibility_ms);
        let outcome = if queue.ready.is_empty() && wait_ms > 0 {
            queue.waiters.push_back(Waiter {
                consumer,
                max,
                visibility_ms,
                detach,
                deadline_ms: now_ms.saturating_add(wait_ms),
            });
            GetOutcome::Waiting
        } else {
            let tags = queue.deliver(consumer, max, visibility_ms, !detach, now_ms, next_revision);
            GetOutcome::Delivered(tags.into_iter().map(|tag| queue.delivery(tag)).collect())
        };
        self.reindex(name);
        Ok(outcome)
    }

    /// Acks deliveries: their messages are gone for good. Returns the tags that named no
    /// current delivery (they changed nothing).
    ///
    /// # Errors
    ///
    /// `NoSuchQueue`.
    pub fn ack(&mut self, name: &str, tags: &[u64]) -> Result<Vec<u64>, ServerError> {
        let queue = self.existing(name)?;
        let mut stale = Vec::new();
        let mut freed = 0u64;
        for &tag in tags {
            match queue.land(tag) {
                Some(flight) => {
                    freed += queue.remove_message(flight.id).body.len() as u64;
                    queue.acked_total += 1;
                }
                None => stale.push(tag),
            }
        }
        self.bytes -= freed;
        self.reindex(name);
        Ok(stale)
    }

    /// Nacks deliveries: their messages are deliverable again at once, or dead-lettered after
    /// their last attempt. Returns the stale tags.
    ///
    /// # Errors
    ///
    /// `NoSuchQueue`.
    pub fn nack(
        &mut self,
        name: &str,
        tags: &[u64],
        now_ms: u64,
        next_revision: &mut dyn FnMut() -> u64,
        touched: &mut Vec<SessionId>,
    ) -> Result<Vec<u64>, ServerError> {
        let queue = self.existing(name)?;
        let mut landed = Vec::new();
        let mut stale = Vec::new();
        for &tag in tags {
            match queue.land(tag) {
                Some(flight) => landed.push(flight),
                None => stale.push(tag),
            }
        }
        for flight in landed {
            self.return_message(name, flight, AttemptOutcome::Nacked, now_ms);
        }
        self.settle(name, now_ms, next_revision, touched);
        Ok(stale)
    }

    /// Keeps delivery `tag` invisible until `now_ms + visibility_ms`; returns that time.
    ///
    /// # Errors
    ///
    /// `NoSuchQueue`, `StaleTag`.
    pub fn extend(&mut self, name: &str, tag: u64, visibility_ms: u64, now_ms: u64) -> Result<u64, ServerError> {
        let queue = self.existing(name)?;
        let Some(flight) = queue.in_flight.get_mut(&tag) else {
            return Err(ServerError::Queue(QueueRefusal::StaleTag { queue: name.to_string(), tag }));
        };
        let visible_at_ms = now_ms.saturating_add(visibility_ms);
        queue.by_visibility.remove(&(flight.visible_at_ms, tag));
        flight.visible_at_ms = visible_at_ms;
        queue.by_visibility.insert((visible_at_ms, tag));
        self.reindex(name);
        Ok(visible_at_ms)
    }

    /// Gives up the get `consumer` made: ends its wait, and makes deliveries made to it ready
    /// again without counting their attempt. Returns how many messages went back.
    pub fn cancel(
        &mut self,
        name: &str,
        consumer: Consumer,
        now_ms: u64,
        next_revision: &mut dyn FnMut() -> u64,
        touched: &mut Vec<SessionId>,
    ) -> u64 {
        let Some(queue) = self.queues.get_mut(name) else { return 0 };
        queue.waiters.retain(|w| w.consumer != consumer);
        let tags: Vec<u64> =
            queue.by_consumer.range((consumer, 0)..=(consumer, u64::MAX)).map(|(_, tag)| *tag).collect();
        for &tag in &tags {
            let flight = queue.land(tag).expect("indexed deliveries are in flight");
            let message = queue.messages.get_mut(&flight.id).expect("in-flight messages exist");
            message.attempts -= 1;
            queue.ready.insert(flight.id);
        }
        touched.push(consumer.0);
        self.settle(name, now_ms, next_revision, touched);
        tags.len() as u64
    }

    /// Ends everything of `session`: its waiting gets, and its bound deliveries, which count as
    /// failed attempts and are deliverable again at once.
    pub fn release_session(
        &mut self,
        session: SessionId,
        now_ms: u64,
        next_revision: &mut dyn FnMut() -> u64,
        touched: &mut Vec<SessionId>,
    ) {
        let names: Vec<String> = self.queues.keys().cloned().collect();
        for name in names {
            let queue = self.queues.get_mut(&name).expect("listed above");
            let waiting = queue.waiters.len();
            queue.waiters.retain(|w| w.consumer.0 != session);
            let tags: Vec<u64> = queue
                .by_consumer
                .range(((session, 0), 0)..=((session, u64::MAX), u64::MAX))
                .map(|(_, tag)| *tag)
                .filter(|tag| queue.in_flight[tag].bound)
                .collect();
            if tags.is_empty() && waiting == queue.waiters.len() {
                continue;
            }
            let landed: Vec<InFlight> =
                tags.iter().map(|tag| queue.land(*tag).expect("indexed deliveries are in flight")).collect();
            for flight in landed {
                self.return_message(&name, flight, AttemptOutcome::SessionEnded, now_ms);
            }
            self.settle(&name, now_ms, next_revision, touched);
        }
        touched.push(session);
    }

    /// Ends the visibility timeouts and waits that passed before `now_ms` (a deadline equal to
    /// `now_ms` has not passed).
    pub fn expire(&mut self, now_ms: u64, next_revision: &mut dyn FnMut() -> u64, touched: &mut Vec<SessionId>) {
        while let Some((deadline, name)) = self.deadlines.first().cloned() {
            if deadline >= now_ms {
                break;
            }
            let queue = self.queues.get_mut(&name).expect("indexed queues exist");
            let mut landed = Vec::new();
            while let Some(&(visible_at_ms, tag)) = queue.by_visibility.first() {
                if visible_at_ms >= now_ms {
                    break;
                }
                landed.push(queue.land(tag).expect("indexed deliveries are in flight"));
            }
            queue.waiters.retain(|waiter| {
                let ended = waiter.deadline_ms < now_ms;
                if ended {
                    touched.push(waiter.consumer.0);
                }
                !ended
            });
            for flight in landed {
                self.return_message(&name, flight, AttemptOutcome::TimedOut, now_ms);
            }
            self.settle(&name, now_ms, next_revision, touched);
            debug_assert!(
                self.queues[&name].indexed_deadline.is_none_or(|d| d >= now_ms),
                "expiry made progress on queue {name}"
            );
        }
    }

    /// Serves waiting gets of `name` and its dead-letter queue, and refreshes their deadlines.
    fn settle(
        &mut self,
        name: &str,
        now_ms: u64,
        next_revision: &mut dyn FnMut() -> u64,
        touched: &mut Vec<SessionId>,
    ) {
        let dead_letters = dead_letter_queue(name);
        for queue_name in [name, dead_letters.as_str()] {
            if let Some(queue) = self.queues.get_mut(queue_name) {
                touched.extend(queue.dispatch(now_ms, next_revision));
            }
            self.reindex(queue_name);
        }
    }

    /// Puts a landed message of `name` back in line, or into the dead-letter queue after its last
    /// attempt, recording how the attempt ended.
    fn return_message(&mut self, name: &str, flight: InFlight, outcome: AttemptOutcome, now_ms: u64) {
        let queue = self.queues.get_mut(name).expect("the queue exists");
        let message = queue.messages.get_mut(&flight.id).expect("landed messages exist");
        if message.history.len() == HISTORY_MAX {
            message.history.remove(0);
        }
        message.history.push(DeliveryAttempt {
            queue: name.to_string(),
            attempt: flight.attempt,
            session: flight.consumer.0,
            delivered_ms: flight.delivered_ms,
            ended_ms: now_ms,
            outcome,
        });
        let max_attempts = queue.options.max_attempts;
        if max_attempts == 0 || message.attempts < max_attempts {
            queue.ready.insert(flight.id);
            return;
        }
        // The last attempt failed: move the message, with its history, to the dead-letter queue.
        // Its bytes move too, so the cluster total is unchanged.
        let mut message = queue.remove_message(flight.id);
        queue.dead_lettered += 1;
        message.attempts = 0;
        let bytes = message.body.len() as u64;
        let dead_letters = dead_letter_queue(name);
        let target = self.queues.entry(dead_letters).or_insert_with(|| {
            Queue::new(QueueOptions {
                max_attempts: 0,
                max_message_bytes: distsync::wire::QUEUE_MESSAGE_BYTES_MAX as u32,
                ..QueueOptions::default()
            })
        });
        target.bytes += bytes;
        target.put_total += 1;
        target.ready.insert(flight.id);
        target.messages.insert(flight.id, message);
    }

    /// Where the get of `consumer` stands on this replica.
    pub fn await_state(&self, name: &str, consumer: Consumer) -> AwaitState {
        let Some(queue) = self.queues.get(name) else { return AwaitState::Gone };
        if queue.waiters.iter().any(|w| w.consumer == consumer) {
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
            sessions.extend(queue.waiters.iter().map(|w| w.consumer.0));
            sessions.extend(queue.in_flight.values().filter(|f| f.bound).map(|f| f.consumer.0));
        }
        sessions
    }

    /// Checks one queue; see [`Queue::check`].
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
        }
        assert_eq!(bytes, self.bytes, "queued bytes drifted");
        assert!(bytes <= QUEUED_BYTES_MAX, "queued bytes beyond the limit");
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A revision counter for the tests.
    struct Revisions(u64);

    impl Revisions {
        fn next(&mut self) -> impl FnMut() -> u64 + '_ {
            || {
                self.0 += 1;
                self.0
            }
        }
    }

    fn message(body: &str) -> PutMessage {
        PutMessage { body: body.as_bytes().to_vec(), dedup_id: None }
    }

    fn put(queues: &mut Queues, revisions: &mut Revisions, name: &str, bodies: &[&str], now: u64) -> Vec<u64> {
        let messages: Vec<PutMessage> = bodies.iter().map(|b| message(b)).collect();
        let mut touched = Vec::new();
        let outcomes = queues.put(name, &messages, now, &mut revisions.next(), &mut touched).unwrap();
        outcomes.into_iter().map(|o| o.id).collect()
    }

    fn get(
        queues: &mut Queues,
        revisions: &mut Revisions,
        consumer: Consumer,
        max: u32,
        now: u64,
    ) -> Vec<QueueDelivery> {
        match queues.get("q", consumer, max, Some(1_000), 0, false, now, &mut revisions.next()).unwrap() {
            GetOutcome::Delivered(deliveries) => deliveries,
            GetOutcome::Waiting => panic!("a get without wait never waits"),
        }
    }

    fn bodies(deliveries: &[QueueDelivery]) -> Vec<String> {
        deliveries.iter().map(|d| String::from_utf8(d.body.clone()).unwrap()).collect()
    }

    #[test]
    fn delivery_is_fifo_and_an_ack_deletes_for_good() {
        let (mut queues, mut revisions) = (Queues::default(), Revisions(0));
        let ids = put(&mut queues, &mut revisions, "q", &["a", "b", "c"], 10);
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
        let first = get(&mut queues, &mut revisions, (1, 1), 2, 20);
        assert_eq!(bodies(&first), ["a", "b"]);
        assert_eq!(first[0].attempt, 1);
        let second = get(&mut queues, &mut revisions, (2, 1), 5, 20);
        assert_eq!(bodies(&second), ["c"], "in-flight messages are invisible to others");
        let tags: Vec<u64> = first.iter().chain(&second).map(|d| d.tag).collect();
        assert_eq!(queues.ack("q", &tags).unwrap(), Vec::<u64>::new());
        assert_eq!(queues.ack("q", &tags[..1]).unwrap(), tags[..1], "a second ack is stale");
        let stats = queues.stats("q", 30).unwrap();
        assert_eq!((stats.depth, stats.in_flight, stats.acked_total, stats.bytes), (0, 0, 3, 0));
        assert!(get(&mut queues, &mut revisions, (1, 2), 5, 40).is_empty(), "an acked message never comes back");
        queues.check_invariants();
    }

    #[test]
    fn a_nacked_message_returns_to_the_head_and_its_old_tag_is_refused() {
        let (mut queues, mut revisions) = (Queues::default(), Revisions(0));
        put(&mut queues, &mut revisions, "q", &["a", "b"], 10);
        let first = get(&mut queues, &mut revisions, (1, 1), 1, 20);
        let mut touched = Vec::new();
        queues.nack("q", &[first[0].tag], 30, &mut revisions.next(), &mut touched).unwrap();
        let again = get(&mut queues, &mut revisions, (2, 1), 1, 40);
        assert_eq!(bodies(&again), ["a"], "the nacked message is at the head again");
        assert_eq!(again[0].attempt, 2);
        assert_eq!(again[0].history.len(), 1);
        assert_eq!(again[0].history[0].outcome, AttemptOutcome::Nacked);
        assert_ne!(again[0].tag, first[0].tag, "each attempt has its own tag");
        assert_eq!(queues.ack("q", &[first[0].tag]).unwrap(), [first[0].tag], "the old tag acks nothing");
        assert_eq!(queues.stats("q", 50).unwrap().in_flight, 1, "the redelivery is still in flight");
        let error = queues.extend("q", first[0].tag, 5_000, 50).unwrap_err();
        assert!(matches!(error, ServerError::Queue(QueueRefusal::StaleTag { .. })), "{error:?}");
        queues.check_invariants();
    }

    #[test]
    fn visibility_timeouts_redeliver_and_extend_keeps_the_message() {
        let (mut queues, mut revisions) = (Queues::default(), Revisions(0));
        put(&mut queues, &mut revisions, "q", &["a", "b"], 0);
        let delivered = get(&mut queues, &mut revisions, (1, 1), 2, 100); // visible again at 1_100
        assert_eq!(queues.next_deadline_ms(), Some(1_100));
        assert_eq!(queues.extend("q", delivered[1].tag, 5_000, 600).unwrap(), 5_600);
        let mut touched = Vec::new();
        queues.expire(1_100, &mut revisions.next(), &mut touched);
        assert_eq!(queues.stats("q", 1_100).unwrap().depth, 0, "the deadline itself is not past");
        queues.expire(1_101, &mut revisions.next(), &mut touched);
        let stats = queues.stats("q", 1_101).unwrap();
        assert_eq!((stats.depth, stats.in_flight), (1, 1), "a timed out, b extended");
        let again = get(&mut queues, &mut revisions, (2, 1), 2, 1_200);
        assert_eq!(bodies(&again), ["a"]);
        assert_eq!(again[0].history[0].outcome, AttemptOutcome::TimedOut);
        queues.check_invariants();
    }

    #[test]
    fn after_the_last_attempt_a_message_moves_to_the_dead_letter_queue_with_its_history() {
        let (mut queues, mut revisions) = (Queues::default(), Revisions(0));
        let options = QueueOptions { max_attempts: 2, ..QueueOptions::default() };
        queues.create("q", options).unwrap();
        let [id] = put(&mut queues, &mut revisions, "q", &["poison"], 0)[..] else { panic!() };
        let mut touched = Vec::new();
        for attempt in 1..=2 {
            let delivered = get(&mut queues, &mut revisions, (1, attempt), 1, attempt * 10);
            assert_eq!(delivered[0].attempt, attempt as u32);
            queues.nack("q", &[delivered[0].tag], attempt * 10 + 1, &mut revisions.next(), &mut touched).unwrap();
        }
        assert!(get(&mut queues, &mut revisions, (1, 9), 1, 100).is_empty(), "not redelivered a third time");
        let stats = queues.stats("q", 100).unwrap();
        assert_eq!((stats.depth, stats.dead_lettered), (0, 1));
        let dead = match queues.get("q.dlq", (1, 10), 1, None, 0, false, 110, &mut revisions.next()).unwrap() {
            GetOutcome::Delivered(deliveries) => deliveries,
            GetOutcome::Waiting => panic!(),
        };
        assert_eq!(dead.len(), 1);
        assert_eq!((dead[0].id, dead[0].attempt, &dead[0].body[..]), (id, 1, &b"poison"[..]));
        assert_eq!(dead[0].history.len(), 2, "both failed attempts travel with it");
        assert!(dead[0].history.iter().all(|a| a.queue == "q" && a.outcome == AttemptOutcome::Nacked));
        assert_eq!(queues.stats("q.dlq", 110).unwrap().options.max_attempts, 0, "a dead-letter queue keeps all");
        queues.check_invariants();
    }

    #[test]
    fn a_repeated_dedup_id_returns_the_first_id_within_the_window_only() {
        let (mut queues, mut revisions) = (Queues::default(), Revisions(0));
        let with_id = |body: &str| PutMessage { body: body.into(), dedup_id: Some("order-42".into()) };
        let mut touched = Vec::new();
        let first = queues.put("q", &[with_id("one")], 0, &mut revisions.next(), &mut touched).unwrap();
        let again = queues.put("q", &[with_id("two")], 1_000, &mut revisions.next(), &mut touched).unwrap();
        assert_eq!(again, [PutOutcome { id: first[0].id, duplicate: true }]);
        assert_eq!(queues.stats("q", 1_000).unwrap().depth, 1);
        // The default window is two minutes: after it, the id enqueues again.
        let later = queues.put("q", &[with_id("three")], 120_001, &mut revisions.next(), &mut touched).unwrap();
        assert!(!later[0].duplicate && later[0].id > first[0].id);
        queues.check_invariants();
    }

    #[test]
    fn a_waiting_get_is_served_in_the_entry_that_enqueues_and_in_arrival_order() {
        let (mut queues, mut revisions) = (Queues::default(), Revisions(0));
        let mut waiting = |queues: &mut Queues, consumer: Consumer| {
            let outcome = queues.get("q", consumer, 1, None, 5_000, false, 10, &mut revisions.next()).unwrap();
            assert_eq!(outcome, GetOutcome::Waiting);
        };
        waiting(&mut queues, (1, 1));
        waiting(&mut queues, (2, 1));
        assert_eq!(queues.await_state("q", (1, 1)), AwaitState::Waiting);
        let mut touched = Vec::new();
        queues.put("q", &[message("x")], 20, &mut revisions.next(), &mut touched).unwrap();
        assert_eq!(touched, [1], "the first waiter is served and its node told");
        let AwaitState::Delivered(deliveries) = queues.await_state("q", (1, 1)) else { panic!("not delivered") };
        assert_eq!(bodies(&deliveries), ["x"]);
        assert_eq!(queues.await_state("q", (2, 1)), AwaitState::Waiting);
        // The second wait ends at its deadline, empty.
        touched.clear();
        queues.expire(5_011, &mut revisions.next(), &mut touched);
        assert_eq!(touched, [2]);
        assert_eq!(queues.await_state("q", (2, 1)), AwaitState::Gone);
        queues.check_invariants();
    }

    #[test]
    fn a_session_ending_returns_its_deliveries_at_once_but_not_detached_ones() {
        let (mut queues, mut revisions) = (Queues::default(), Revisions(0));
        put(&mut queues, &mut revisions, "q", &["a", "b"], 0);
        let bound = get(&mut queues, &mut revisions, (7, 1), 1, 10);
        let detached = match queues.get("q", (7, 2), 1, Some(60_000), 0, true, 10, &mut revisions.next()).unwrap() {
            GetOutcome::Delivered(deliveries) => deliveries,
            GetOutcome::Waiting => panic!(),
        };
        let mut touched = Vec::new();
        queues.release_session(7, 20, &mut revisions.next(), &mut touched);
        let stats = queues.stats("q", 20).unwrap();
        assert_eq!((stats.depth, stats.in_flight), (1, 1), "the bound delivery came back, the detached stays");
        let again = get(&mut queues, &mut revisions, (8, 1), 5, 30);
        assert_eq!(again[0].id, bound[0].id);
        assert_eq!(again[0].history[0].outcome, AttemptOutcome::SessionEnded);
        assert!(queues.ack("q", &[detached[0].tag]).unwrap().is_empty(), "a detached delivery acks from anywhere");
        queues.check_invariants();
    }

    #[test]
    fn a_cancelled_get_returns_unseen_deliveries_without_counting_the_attempt() {
        let (mut queues, mut revisions) = (Queues::default(), Revisions(0));
        let waiting = queues.get("q", (3, 1), 1, None, 5_000, false, 0, &mut revisions.next()).unwrap();
        assert_eq!(waiting, GetOutcome::Waiting);
        put(&mut queues, &mut revisions, "q", &["a"], 10);
        let mut touched = Vec::new();
        assert_eq!(queues.cancel("q", (3, 1), 20, &mut revisions.next(), &mut touched), 1);
        let again = get(&mut queues, &mut revisions, (4, 1), 1, 30);
        assert_eq!(again[0].attempt, 1, "the unseen delivery does not count");
        assert!(again[0].history.is_empty());
        queues.check_invariants();
    }

    #[test]
    fn oversized_messages_and_unknown_queues_are_typed_errors_that_change_nothing() {
        let (mut queues, mut revisions) = (Queues::default(), Revisions(0));
        queues.create("q", QueueOptions { max_message_bytes: 4, ..QueueOptions::default() }).unwrap();
        let mut touched = Vec::new();
        let error =
            queues.put("q", &[message("ok"), message("too long")], 0, &mut revisions.next(), &mut touched).unwrap_err();
        assert!(matches!(error, ServerError::Queue(QueueRefusal::MessageTooLarge { bytes: 8, max: 4, .. })));
        assert_eq!(queues.stats("q", 0).unwrap().depth, 0, "all or nothing");
        let error = queues.ack("nope", &[1]).unwrap_err();
        assert!(matches!(error, ServerError::Queue(QueueRefusal::NoSuchQueue { .. })), "{error:?}");
        assert_eq!(queues.delete("q", &mut touched).unwrap(), 0);
        assert!(queues.stats("q", 0).is_none());
        queues.check_invariants();
    }
}
