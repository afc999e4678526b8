//! Queues: every acknowledged put is delivered and acked, nothing is invented, nothing is acked
//! twice or delivered after its ack, and each consumer sees new messages in FIFO order.
//!
//! The history ends with a drain after the heal (a consumer that takes and acks what is left), so
//! a message a crashed consumer held comes back there or the check fails. A put or ack whose
//! outcome is unknown may or may not have happened.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use super::Outcome;

/// A put of one message with a body unique in the run.
#[derive(Debug, Clone)]
pub struct Put {
    /// The queue.
    pub queue: String,
    /// The body, unique in the run.
    pub body: Vec<u8>,
    /// What the client learned.
    pub outcome: Outcome,
}

/// One delivery to a consumer.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// The queue.
    pub queue: String,
    /// The consumer (a workload client, or the drain).
    pub consumer: usize,
    /// The message id.
    pub id: u64,
    /// The delivery attempt, from 1.
    pub attempt: u32,
    /// The body.
    pub body: Vec<u8>,
    /// When the get that returned it was invoked.
    pub invoked: Instant,
    /// Whether the message had been withdrawn before (handed to a get whose caller had stopped
    /// waiting, taken back unseen; its delivery history says so): its attempt number was then
    /// restored, so attempt 1 does not mean a first delivery.
    pub withdrawn: bool,
}

/// An ack of one delivery.
#[derive(Debug, Clone)]
pub struct Acked {
    /// The queue.
    pub queue: String,
    /// The message id.
    pub id: u64,
    /// What the client learned.
    pub outcome: Outcome,
    /// When the ack returned, if it did.
    pub returned: Option<Instant>,
}

/// The queue part of a history.
#[derive(Debug, Clone, Default)]
pub struct QueueHistory {
    /// Every put.
    pub puts: Vec<Put>,
    /// Every delivery, in the order each consumer received them.
    pub deliveries: Vec<Delivered>,
    /// Every ack.
    pub acks: Vec<Acked>,
}

/// A broken promise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueViolation {
    /// An acknowledged put whose message was never acked by a consumer (lost, or never
    /// redelivered after its consumer crashed).
    Lost {
        /// The queue.
        queue: String,
        /// The body.
        body: Vec<u8>,
    },
    /// A delivery of a body no put (acknowledged or unknown) wrote.
    Invented {
        /// The queue.
        queue: String,
        /// The message id.
        id: u64,
    },
    /// Two acknowledged acks of one message.
    AckedTwice {
        /// The queue.
        queue: String,
        /// The message id.
        id: u64,
    },
    /// A delivery requested after an ack of the same message was acknowledged.
    DeliveredAfterAck {
        /// The queue.
        queue: String,
        /// The message id.
        id: u64,
    },
    /// A consumer got a message for the first time after one enqueued later.
    OutOfOrder {
        /// The queue.
        queue: String,
        /// The consumer.
        consumer: usize,
        /// The message delivered first.
        first: u64,
        /// The older message delivered after it.
        then: u64,
    },
}

/// Checks a queue history.
///
/// ```
/// use distsync_torture::check::queue::{check, Acked, Delivered, Put, QueueHistory, QueueViolation};
/// use distsync_torture::check::Outcome;
/// use std::time::Instant;
///
/// let put = Put { queue: "q".into(), body: b"m1".to_vec(), outcome: Outcome::Ok };
/// let history = QueueHistory { puts: vec![put], ..QueueHistory::default() };
/// assert_eq!(check(&history), vec![QueueViolation::Lost { queue: "q".into(), body: b"m1".to_vec() }]);
/// ```
pub fn check(history: &QueueHistory) -> Vec<QueueViolation> {
    let mut violations = Vec::new();
    let put_bodies: HashSet<(&str, &[u8])> = history
        .puts
        .iter()
        .filter(|put| put.outcome != Outcome::Failed)
        .map(|put| (put.queue.as_str(), put.body.as_slice()))
        .collect();
    let mut body_of: HashMap<(&str, u64), &[u8]> = HashMap::new();
    for delivered in &history.deliveries {
        body_of.insert((&delivered.queue, delivered.id), &delivered.body);
        if !put_bodies.contains(&(delivered.queue.as_str(), delivered.body.as_slice())) {
            violations.push(QueueViolation::Invented { queue: delivered.queue.clone(), id: delivered.id });
        }
    }
    // Messages whose ack may have happened, and when an acknowledged ack returned.
    let mut settled: HashSet<(&str, &[u8])> = HashSet::new();
    let mut acknowledged_at: BTreeMap<(&str, u64), Instant> = BTreeMap::new();
    for ack in &history.acks {
        if ack.outcome == Outcome::Failed {
            continue;
        }
        if let Some(body) = body_of.get(&(ack.queue.as_str(), ack.id)) {
            settled.insert((&ack.queue, body));
        }
        if let (Outcome::Ok, Some(returned)) = (ack.outcome, ack.returned) {
            // The first acknowledged ack counts: anything delivered after it is a resurrection.
            match acknowledged_at.entry((&ack.queue, ack.id)) {
                Entry::Vacant(entry) => {
                    entry.insert(returned);
                }
                Entry::Occupied(mut entry) => {
                    violations.push(QueueViolation::AckedTwice { queue: ack.queue.clone(), id: ack.id });
                    let first = (*entry.get()).min(returned);
                    entry.insert(first);
                }
            }
        }
    }
    for delivered in &history.deliveries {
        if let Some(&acked) = acknowledged_at.get(&(delivered.queue.as_str(), delivered.id)) {
            if delivered.invoked > acked {
                violations.push(QueueViolation::DeliveredAfterAck { queue: delivered.queue.clone(), id: delivered.id });
            }
        }
    }
    for put in history.puts.iter().filter(|put| put.outcome == Outcome::Ok) {
        if !settled.contains(&(put.queue.as_str(), put.body.as_slice())) {
            violations.push(QueueViolation::Lost { queue: put.queue.clone(), body: put.body.clone() });
        }
    }
    // FIFO: first deliveries to one consumer come in id (enqueue) order. A message withdrawn
    // from a get whose caller stopped waiting goes back to the head with its attempt count
    // restored, so its next delivery says attempt 1 although it was handed out before; its
    // history names the withdrawal, which is what `withdrawn` records.
    let mut last_new: HashMap<(&str, usize), u64> = HashMap::new();
    for delivered in history.deliveries.iter().filter(|delivered| delivered.attempt == 1 && !delivered.withdrawn) {
        let last = last_new.entry((&delivered.queue, delivered.consumer)).or_insert(0);
        if delivered.id < *last {
            violations.push(QueueViolation::OutOfOrder {
                queue: delivered.queue.clone(),
                consumer: delivered.consumer,
                first: *last,
                then: delivered.id,
            });
        }
        *last = (*last).max(delivered.id);
    }
    violations
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn put(body: &str, outcome: Outcome) -> Put {
        Put { queue: "q".into(), body: body.as_bytes().to_vec(), outcome }
    }

    fn delivered(consumer: usize, id: u64, attempt: u32, body: &str, at: Instant) -> Delivered {
        Delivered {
            queue: "q".into(),
            consumer,
            id,
            attempt,
            body: body.as_bytes().to_vec(),
            invoked: at,
            withdrawn: false,
        }
    }

    fn acked(id: u64, outcome: Outcome, at: Instant) -> Acked {
        Acked { queue: "q".into(), id, outcome, returned: (outcome == Outcome::Ok).then_some(at) }
    }

    #[test]
    fn a_redelivered_message_of_a_crashed_consumer_passes() {
        let t = Instant::now();
        let ms = |n| t + Duration::from_millis(n);
        let history = QueueHistory {
            puts: vec![put("a", Outcome::Ok), put("b", Outcome::Unknown), put("c", Outcome::Failed)],
            // Consumer 1 took "a" and crashed; the drain (consumer 9) got it again.
            deliveries: vec![
                delivered(1, 1, 1, "a", ms(1)),
                delivered(9, 1, 2, "a", ms(5)),
                delivered(9, 2, 1, "b", ms(6)),
            ],
            acks: vec![acked(1, Outcome::Ok, ms(7)), acked(2, Outcome::Unknown, ms(8))],
        };
        assert_eq!(check(&history), vec![]);
    }

    #[test]
    fn a_lost_message_is_caught() {
        let t = Instant::now();
        // Delivered, but its consumer crashed and it never came back.
        let history = QueueHistory {
            puts: vec![put("a", Outcome::Ok)],
            deliveries: vec![delivered(1, 1, 1, "a", t)],
            acks: vec![],
        };
        assert_eq!(check(&history), vec![QueueViolation::Lost { queue: "q".into(), body: b"a".to_vec() }]);
        // Acked by a failed ack only.
        let failed_ack = QueueHistory { acks: vec![acked(1, Outcome::Failed, t)], ..history };
        assert_eq!(check(&failed_ack), vec![QueueViolation::Lost { queue: "q".into(), body: b"a".to_vec() }]);
    }

    #[test]
    fn invented_double_acked_and_resurrected_messages_are_caught() {
        let t = Instant::now();
        let ms = |n| t + Duration::from_millis(n);
        let history = QueueHistory {
            puts: vec![put("a", Outcome::Ok), put("refused", Outcome::Failed)],
            deliveries: vec![
                delivered(1, 1, 1, "a", ms(1)),
                delivered(2, 1, 2, "a", ms(10)),
                delivered(2, 2, 1, "refused", ms(11)),
            ],
            acks: vec![acked(1, Outcome::Ok, ms(2)), acked(1, Outcome::Ok, ms(12))],
        };
        assert_eq!(
            check(&history),
            vec![
                QueueViolation::Invented { queue: "q".into(), id: 2 },
                QueueViolation::AckedTwice { queue: "q".into(), id: 1 },
                QueueViolation::DeliveredAfterAck { queue: "q".into(), id: 1 },
            ]
        );
    }

    #[test]
    fn first_deliveries_out_of_enqueue_order_are_caught() {
        let t = Instant::now();
        let puts = vec![put("a", Outcome::Ok), put("b", Outcome::Ok)];
        let acks = vec![acked(1, Outcome::Ok, t), acked(2, Outcome::Ok, t)];
        // A redelivery of an older message is fine; a first delivery of it is not.
        let redelivered = QueueHistory {
            puts: puts.clone(),
            deliveries: vec![delivered(1, 1, 1, "a", t), delivered(1, 2, 1, "b", t), delivered(1, 1, 2, "a", t)],
            acks: acks.clone(),
        };
        assert_eq!(check(&redelivered), vec![]);
        let skipped =
            QueueHistory { puts, deliveries: vec![delivered(1, 2, 1, "b", t), delivered(1, 1, 1, "a", t)], acks };
        assert_eq!(
            check(&skipped),
            vec![QueueViolation::OutOfOrder { queue: "q".into(), consumer: 1, first: 2, then: 1 }]
        );
        // Unless "a" had been withdrawn from a get whose caller stopped waiting (its history
        // says so): it was handed out before "b", and its attempt number restored.
        let mut withdrawn = skipped.clone();
        withdrawn.deliveries[1].withdrawn = true;
        assert_eq!(check(&withdrawn), vec![]);
    }
}
