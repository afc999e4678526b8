//! Queue workers: each puts messages with bodies unique in the run and consumes: it acks most
//! deliveries, nacks some, and abandons some as a crashed consumer would, either leaving the
//! delivery to its visibility timeout or ending its whole session; after the heal, [`drain`]
//! takes and acks whatever is left, so a message that was lost shows.

use std::time::{Duration, Instant};

use distsync::wire::AttemptOutcome;
use distsync::{Client, Delivery, QueueOptions};

use super::{queue_outcome, Worker};
use crate::check::queue::{Acked, Delivered, Put};
use crate::check::Outcome;
use crate::history::History;

/// The queues of a run.
pub const QUEUE_NAMES: [&str; 2] = ["queue-0", "queue-1"];

/// The drain's consumer number (workers count from 1).
const DRAIN_CONSUMER: usize = 0;

/// The queues' options: never dead-letter (every message must come back to a consumer), and a
/// visibility timeout short enough that an abandoned delivery returns within a run.
pub fn queue_options() -> QueueOptions {
    QueueOptions { max_attempts: 0, visibility_ms: 2_000, ..QueueOptions::default() }
}

/// How long a get waits for a message.
const GET_WAIT: Duration = Duration::from_millis(300);

pub(super) async fn run(mut worker: Worker) {
    let Some(mut client) = worker.connect(None).await else { return };
    // A consumer's number changes with its session, so that FIFO is checked per session.
    let mut incarnation = 0usize;
    let mut sequence = 0u64;
    while !worker.shared.stopping() {
        let queue_name = *worker.random.pick(&QUEUE_NAMES);
        let queue = client.queue(queue_name);
        let invoked = Instant::now();
        if worker.random.one_in(2) {
            sequence += 1;
            let body = format!("m{}-{sequence}", worker.id).into_bytes();
            let outcome = match queue.put(body.clone()).await {
                Ok(_) => Outcome::Ok,
                Err(error) => queue_outcome(&error),
            };
            if outcome == Outcome::Ok {
                worker.shared.succeeded(worker.id, invoked);
            }
            worker.shared.history.put(Put { queue: queue_name.to_string(), body, outcome });
            continue;
        }
        let delivery = match queue.get(GET_WAIT).await {
            Ok(Some(delivery)) => delivery,
            Ok(None) => {
                worker.shared.succeeded(worker.id, invoked);
                worker.shared.history.count("queue", "get", Outcome::Ok);
                continue;
            }
            Err(_) => {
                worker.shared.history.failed_get();
                continue;
            }
        };
        worker.shared.succeeded(worker.id, invoked);
        worker.shared.history.delivered(Delivered {
            queue: queue_name.to_string(),
            consumer: worker.id * 1_000 + incarnation,
            id: delivery.id,
            attempt: delivery.attempt,
            body: delivery.body.clone(),
            invoked,
            withdrawn: withdrawn(&delivery),
        });
        match worker.random.below(20) {
            // Crashes: the delivery is left to its visibility timeout, or the session ends.
            0 | 1 => {}
            2 => {
                drop(delivery);
                client.close().await;
                incarnation += 1;
                match worker.connect(None).await {
                    Some(next) => client = next,
                    None => return,
                }
            }
            3 | 4 => {
                let outcome = delivery.nack().await.map_or_else(|error| queue_outcome(&error), |()| Outcome::Ok);
                worker.shared.history.count("queue", "nack", outcome);
            }
            _ => {
                let acked = delivery.ack().await;
                let outcome = acked.as_ref().map_or_else(queue_outcome, |()| Outcome::Ok);
                let returned = (outcome == Outcome::Ok).then(Instant::now);
                worker.shared.history.acked(Acked {
                    queue: queue_name.to_string(),
                    id: delivery.id,
                    outcome,
                    returned,
                });
            }
        }
    }
    client.close().await;
}

/// Takes and acks every message left in the run's queues, until each shows none ready and none
/// in flight, or `timeout` passes (the queue checker then reports what is missing); returns
/// how many deliveries it took.
pub async fn drain(client: &Client, history: &History, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    let mut drained = 0;
    for queue_name in QUEUE_NAMES {
        let queue = client.queue(queue_name);
        while Instant::now() < deadline {
            let invoked = Instant::now();
            let batch = match queue.get_batch(64, Duration::from_millis(500)).await {
                Ok(batch) => batch,
                Err(_) => {
                    history.failed_get();
                    continue;
                }
            };
            if batch.is_empty() {
                match queue.stats().await {
                    Ok(stats) if stats.depth == 0 && stats.in_flight == 0 => break,
                    _ => continue,
                }
            }
            for delivery in batch {
                drained += 1;
                history.delivered(Delivered {
                    queue: queue_name.to_string(),
                    consumer: DRAIN_CONSUMER,
                    id: delivery.id,
                    attempt: delivery.attempt,
                    body: delivery.body.clone(),
                    invoked,
                    withdrawn: withdrawn(&delivery),
                });
                let acked = delivery.ack().await;
                let outcome = acked.as_ref().map_or_else(queue_outcome, |()| Outcome::Ok);
                let returned = (outcome == Outcome::Ok).then(Instant::now);
                history.acked(Acked { queue: queue_name.to_string(), id: delivery.id, outcome, returned });
            }
        }
    }
    drained
}

/// Whether `delivery`'s message had been withdrawn unseen from a get of its queue before.
fn withdrawn(delivery: &Delivery) -> bool {
    delivery
        .history
        .iter()
        .any(|earlier| earlier.outcome == AttemptOutcome::Withdrawn && earlier.queue == delivery.queue())
}
