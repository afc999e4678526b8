//! Sessions: a write the client retried is applied once. A queue put is not idempotent (each
//! applied put enqueues a message with a fresh id), so a put that a retry applied twice shows as
//! one body under two message ids. The workload puts without dedup ids, so only the session's
//! exactly-once answers can prevent that: the client retries every put whose answer it lost,
//! through kills, pauses and partitions, within its session.
//!
//! (The issue proposed an exactly-once counter on a kv key; the register has no increment, so a
//! counter would be read-modify-write by the client and test the client's logic instead. A queue
//! put is the non-idempotent write the protocol already has.)

use std::collections::HashMap;

use super::queue::QueueHistory;

/// One body enqueued twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedTwice {
    /// The queue.
    pub queue: String,
    /// The body.
    pub body: Vec<u8>,
    /// Two message ids it was delivered under.
    pub ids: (u64, u64),
}

/// Checks that no body was delivered under two message ids.
///
/// ```
/// use distsync_torture::check::queue::{Delivered, QueueHistory};
/// use distsync_torture::check::sessions::check;
/// use std::time::Instant;
///
/// let delivered = |id| Delivered {
///     queue: "q".into(), consumer: 1, id, attempt: 1, body: b"once".to_vec(), invoked: Instant::now(), withdrawn: false,
/// };
/// let history = QueueHistory { deliveries: vec![delivered(1), delivered(2)], ..QueueHistory::default() };
/// assert_eq!(check(&history).len(), 1);
/// ```
pub fn check(history: &QueueHistory) -> Vec<AppliedTwice> {
    let mut first_id: HashMap<(&str, &[u8]), u64> = HashMap::new();
    let mut violations = Vec::new();
    for delivered in &history.deliveries {
        let id = *first_id.entry((&delivered.queue, &delivered.body)).or_insert(delivered.id);
        if id != delivered.id && !violations.iter().any(|v: &AppliedTwice| v.body == delivered.body) {
            violations.push(AppliedTwice {
                queue: delivered.queue.clone(),
                body: delivered.body.clone(),
                ids: (id, delivered.id),
            });
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::queue::Delivered;
    use super::*;

    fn delivered(id: u64, body: &str) -> Delivered {
        Delivered {
            queue: "q".into(),
            consumer: 1,
            id,
            attempt: 1,
            body: body.as_bytes().to_vec(),
            invoked: Instant::now(),
            withdrawn: false,
        }
    }

    #[test]
    fn redeliveries_of_one_message_pass_and_a_second_message_with_its_body_does_not() {
        let redelivered = QueueHistory {
            deliveries: vec![delivered(1, "a"), delivered(1, "a"), delivered(2, "b")],
            ..Default::default()
        };
        assert_eq!(check(&redelivered), vec![]);
        let twice = QueueHistory { deliveries: vec![delivered(1, "a"), delivered(3, "a")], ..Default::default() };
        assert_eq!(check(&twice), vec![AppliedTwice { queue: "q".into(), body: b"a".to_vec(), ids: (1, 3) }]);
    }
}
