//! How deliveries end: acks, nacks, visibility extended, a get given up, a consumer's session
//! ended, visibility timeouts and waits that passed, and the dead-letter queue after a message's
//! last attempt. Each ends by serving the gets that wait for what became ready.

use std::collections::BTreeSet;

use distsync::wire::{AttemptOutcome, DeliveryAttempt, QueueOptions};
use distsync::{QueueRefusal, ServerError, SessionId};

use super::queue::{Consumer, InFlight, Queue};
use super::{dead_letter_queue, Queues, HISTORY_MAX};

impl Queues {
    /// Acks deliveries for the session `caller`: their messages are gone for good. Returns the
    /// tags that named no current delivery of `caller`'s (they changed nothing): a delivery bound
    /// to a session is settled by that session only, a detached one by any session that has
    /// its exact tag.
    ///
    /// # Errors
    ///
    /// `NoSuchQueue`.
    pub fn ack(&mut self, name: &str, caller: SessionId, tags: &[u64]) -> Result<Vec<u64>, ServerError> {
        let queue = self.existing(name)?;
        let mut stale = Vec::new();
        let mut freed = 0u64;
        for &tag in tags {
            match queue.land_for(caller, tag) {
                Some(flight) => {
                    freed += queue.remove_message(flight.id).body.len() as u64;
                    queue.acked_total += 1;
                }
                None => stale.push(tag),
            }
        }
        let owner = queue.owner.clone();
        self.bytes -= freed;
        self.charge(&owner, 0, -(freed as i64), 0);
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
        caller: SessionId,
        tags: &[u64],
        now_ms: u64,
        next_revision: &mut dyn FnMut() -> u64,
        touched: &mut Vec<SessionId>,
    ) -> Result<Vec<u64>, ServerError> {
        let queue = self.existing(name)?;
        let mut landed = Vec::new();
        let mut stale = Vec::new();
        for &tag in tags {
            match queue.land_for(caller, tag) {
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
    pub fn extend(
        &mut self,
        name: &str,
        caller: SessionId,
        tag: u64,
        visibility_ms: u64,
        now_ms: u64,
    ) -> Result<u64, ServerError> {
        let queue = self.existing(name)?;
        let Some(flight) = queue.in_flight.get_mut(&tag).filter(|flight| flight.belongs_to(caller)) else {
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
        let ended = queue.remove_waiters(&BTreeSet::from([consumer]));
        let tags: Vec<u64> =
            queue.by_consumer.range((consumer, 0)..=(consumer, u64::MAX)).map(|(_, tag)| *tag).collect();
        for &tag in &tags {
            let flight = queue.land(tag).expect("indexed deliveries are in flight");
            let message = queue.messages.get_mut(&flight.id).expect("in-flight messages exist");
            message.attempts -= 1;
            // Recorded, so that a consumer can tell a withdrawn message's next delivery (the same
            // attempt number again) from a first one. Repeated withdrawals of one attempt keep
            // one entry, the latest, so they never push real attempts out of the history.
            let withdrawal = attempt_ended(name, &flight, AttemptOutcome::Withdrawn, now_ms);
            match message.history.last_mut() {
                Some(last) if last.outcome == AttemptOutcome::Withdrawn && last.attempt == flight.attempt => {
                    *last = withdrawal;
                }
                _ => record_attempt(&mut message.history, withdrawal),
            }
            queue.ready.insert(flight.id);
        }
        self.ended_waiting(&ended);
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
        let names: Vec<String> = self
            .session_queues
            .range((session, String::new())..)
            .take_while(|(owner, _)| *owner == session)
            .map(|(_, name)| name.clone())
            .collect();
        for name in names {
            self.session_queues.remove(&(session, name.clone()));
            // A queue deleted since the session's get holds nothing of it.
            let Some(queue) = self.queues.get_mut(&name) else { continue };
            let ended = queue.remove_waiters(&queue.waiting_of(session));
            let ended_waiting = !ended.is_empty();
            self.ended_waiting(&ended);
            let queue = self.queues.get_mut(&name).expect("found above");
            let tags: Vec<u64> = queue
                .by_consumer
                .range(((session, 0), 0)..=((session, u64::MAX), u64::MAX))
                .map(|(_, tag)| *tag)
                .filter(|tag| queue.in_flight[tag].bound)
                .collect();
            if tags.is_empty() && !ended_waiting {
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
            let ended = queue.waits_ended(now_ms);
            let ended_waiters = queue.remove_waiters(&ended);
            touched.extend(ended.iter().map(|consumer| consumer.0));
            self.ended_waiting(&ended_waiters);
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
                let served = queue.dispatch(now_ms, next_revision);
                touched.extend(served.iter().map(|waiter| waiter.consumer.0));
                self.ended_waiting(&served);
            }
            self.reindex(queue_name);
        }
    }

    /// Puts a landed message of `name` back in line, or into the dead-letter queue after its last
    /// attempt, recording how the attempt ended.
    fn return_message(&mut self, name: &str, flight: InFlight, outcome: AttemptOutcome, now_ms: u64) {
        let queue = self.queues.get_mut(name).expect("the queue exists");
        let message = queue.messages.get_mut(&flight.id).expect("landed messages exist");
        record_attempt(&mut message.history, attempt_ended(name, &flight, outcome, now_ms));
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
        let owner = queue.owner.clone();
        let dead_letters = dead_letter_queue(name);
        // Made without the queue limits: a message that ran out of attempts is never lost. A
        // dead-letter queue is its queue's owner's: one made before its queue existed (a get on
        // it) passes to the queue's owner now, so dead letters stay charged to whoever owns the
        // queue they failed in.
        match self.queues.get(&dead_letters).map(|target| (target.owner.clone(), target.bytes)) {
            None => self.charge(&owner, 1, 0, 0),
            Some((previous, held)) if previous != owner => {
                self.charge(&previous, -1, -(held as i64), 0);
                self.charge(&owner, 1, held as i64, 0);
                self.queues.get_mut(&dead_letters).expect("it exists").owner = owner.clone();
            }
            Some(_) => {}
        }
        let target = self.queues.entry(dead_letters).or_insert_with(|| {
            Queue::new(
                QueueOptions {
                    max_attempts: 0,
                    max_message_bytes: distsync::wire::QUEUE_MESSAGE_BYTES_MAX as u32,
                    ..QueueOptions::default()
                },
                &owner,
            )
        });
        let target_owner = target.owner.clone();
        target.bytes += bytes;
        target.put_total += 1;
        target.ready.insert(flight.id);
        target.messages.insert(flight.id, message);
        debug_assert_eq!(target_owner, owner, "a dead-letter queue is its queue's owner's");
    }
}

/// How the delivery `flight` of queue `name` ended at `now_ms`.
fn attempt_ended(name: &str, flight: &InFlight, outcome: AttemptOutcome, now_ms: u64) -> DeliveryAttempt {
    DeliveryAttempt {
        queue: name.to_string(),
        attempt: flight.attempt,
        session: flight.consumer.0,
        delivered_ms: flight.delivered_ms,
        ended_ms: now_ms,
        outcome,
    }
}

/// Appends `attempt` to a message's history, keeping the latest [`HISTORY_MAX`].
fn record_attempt(history: &mut Vec<DeliveryAttempt>, attempt: DeliveryAttempt) {
    if history.len() == HISTORY_MAX {
        history.remove(0);
    }
    history.push(attempt);
}
