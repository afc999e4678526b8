//! Merging concurrent single puts of one client into one queue, and the per-queue batchers a
//! client keeps ([`QueueState`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{Queue, QueueError};
use crate::error::ClientError;
use crate::merge::{answer_each, Merger};
use crate::wire::{PutMessage, PutOutcome, QUEUE_BATCH_MAX};

/// The queue state a [`Client`](crate::Client) keeps: its put batchers, per queue.
#[derive(Default)]
pub(crate) struct QueueState {
    put_batchers: Mutex<HashMap<String, Arc<PutBatcher>>>,
}

impl QueueState {
    /// The batcher of single puts into `queue`.
    fn put_batcher(&self, queue: &str) -> Arc<PutBatcher> {
        let mut batchers = self.put_batchers.lock().expect("batchers lock");
        batchers.entry(queue.to_string()).or_default().clone()
    }

    /// Forgets the batcher of `queue` if it is `batcher` and idle, so that a client putting into
    /// many queues keeps only the batchers in use.
    fn forget_put_batcher(&self, queue: &str, batcher: &Arc<PutBatcher>) {
        let mut batchers = self.put_batchers.lock().expect("batchers lock");
        if batchers.get(queue).is_some_and(|current| Arc::ptr_eq(current, batcher) && current.is_idle()) {
            batchers.remove(queue);
        }
    }
}

/// Bytes of bodies merged into one request by the [`PutBatcher`]; a larger message goes alone.
const MERGED_PUT_BYTES_MAX: usize = 1024 * 1024;

/// Requests of merged puts in flight per client and queue: enough to keep the cluster's commit
/// pipeline busy, few enough that puts arriving meanwhile share the next request.
const MERGED_PUTS_IN_FLIGHT_MAX: usize = 4;

/// Merges concurrent single puts of one client into one queue into `QueuePut` requests: at most
/// [`MERGED_PUTS_IN_FLIGHT_MAX`] requests in flight, and whatever arrives meanwhile goes in the
/// next one. The cluster already shares an fsync among concurrent writes; this also shares the
/// request, its session bookkeeping and its stored response, which is what bounds throughput
/// under load.
#[derive(Default)]
pub(super) struct PutBatcher {
    merger: Merger<PutMessage, Result<PutOutcome, QueueError>>,
}

impl PutBatcher {
    pub(super) async fn put(queue: &Queue, message: PutMessage) -> Result<PutOutcome, QueueError> {
        // Refuse what the cluster would refuse before it can fail a merged request.
        crate::wire::validate_queue_name(&queue.name).and_then(|()| message.validate()).map_err(ClientError::from)?;
        let batcher = queue.client.queue_state().put_batcher(&queue.name);
        let (answered, start) = batcher.merger.push(message, MERGED_PUTS_IN_FLIGHT_MAX);
        if start {
            tokio::spawn(Self::send_all(batcher, queue.clone()));
        }
        answered.await.map_err(|_| QueueError::Unavailable { reason: "the client is shutting down".into() })?
    }

    /// Whether no put is pending or being sent.
    fn is_idle(&self) -> bool {
        self.merger.is_idle()
    }

    /// Sends what is pending, request after request, until nothing is left (one of the senders).
    async fn send_all(batcher: Arc<PutBatcher>, queue: Queue) {
        loop {
            let mut bytes = 0;
            let batch = batcher.merger.next_batch(|taken, message| {
                bytes += message.body.len();
                taken < QUEUE_BATCH_MAX && bytes <= MERGED_PUT_BYTES_MAX
            });
            let Some(batch) = batch else { break };
            let (messages, waiters): (Vec<PutMessage>, Vec<_>) = batch.into_iter().unzip();
            match queue.put_messages(messages.clone()).await {
                // One message's refusal must not fail the others: send each alone to say whose.
                Err(error) if messages.len() > 1 && refused_for_some_messages(&error) => {
                    for (message, waiter) in messages.into_iter().zip(waiters) {
                        let outcome = queue.put_messages(vec![message]).await.map(|outcomes| outcomes[0]);
                        let _ = waiter.send(outcome);
                    }
                }
                outcome => answer_each(waiters, outcome),
            }
        }
        queue.client.queue_state().forget_put_batcher(&queue.name, &batcher);
    }
}

/// Whether a refusal of a merged put may be owed to some of its messages only, so that each sent
/// alone may fare differently: a message too large, or a byte or dedup-id limit that smaller
/// parts may fit. A queue that cannot be created (`QUEUES_MAX`, `QUEUES_PER_IDENTITY_MAX`)
/// refuses every part alike, so the batch is answered as it is instead of once per message.
fn refused_for_some_messages(error: &QueueError) -> bool {
    match error {
        QueueError::MessageTooLarge { .. } => true,
        QueueError::Full { what, .. } => !matches!(what.as_str(), "QUEUES_MAX" | "QUEUES_PER_IDENTITY_MAX"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(what: &str) -> QueueError {
        QueueError::Full { queue: "jobs".into(), what: what.into(), limit: 1, reason: "reached".into() }
    }

    #[test]
    fn a_merged_put_is_split_only_when_its_parts_may_fare_differently() {
        for what in ["QUEUED_BYTES_MAX", "QUEUED_BYTES_PER_IDENTITY_MAX", "DEDUP_IDS_MAX"] {
            assert!(refused_for_some_messages(&full(what)), "{what}");
        }
        assert!(refused_for_some_messages(&QueueError::MessageTooLarge { queue: "jobs".into(), bytes: 2, max: 1 }));
        for what in ["QUEUES_MAX", "QUEUES_PER_IDENTITY_MAX"] {
            assert!(!refused_for_some_messages(&full(what)), "{what}");
        }
        assert!(!refused_for_some_messages(&QueueError::Unavailable { reason: "down".into() }));
    }
}
