//! Queues keep order and content through leader failover, whole-cluster restarts and partitions.
//!
//! - FIFO: one producer puts 240 numbered messages one by one while one consumer gets and acks
//!   them; the leader is SIGKILLed a third of the way through. The consumer sees every message
//!   exactly once, in the order it was put, and every ack succeeds.
//! - Whole-cluster restart: every node is SIGKILLed and restarted; ready messages, in-flight
//!   deliveries (whose tags still ack), dead-letter counts and options are all still there.
//! - A client that can reach only a leader cut off from the majority cannot enqueue: its put
//!   fails, and after the heal the message does not exist; the majority enqueues meanwhile.

use std::time::Duration;

use anyhow::Context as _;
use distsync::{Client, NodeId, QueueError, QueueOptions};
use distsync_cluster_tests::{Cluster, ClusterOptions};

const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);
const MESSAGES: usize = 240;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_order_survives_a_leader_kill() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, ClusterOptions::default()).await?;
    let outcome = fifo_across_failover(&cluster).await;
    cluster.finish(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_survive_a_whole_cluster_restart_and_a_cut_off_leader_cannot_enqueue() -> anyhow::Result<()> {
    let cluster =
        Cluster::start(3, ClusterOptions { snapshot_threshold: Some(50), ..ClusterOptions::default() }).await?;
    let outcome = restart_and_partition(&cluster).await;
    cluster.finish(outcome)
}

async fn fifo_across_failover(cluster: &Cluster) -> anyhow::Result<()> {
    cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let mut killed = None;
    let producer = cluster.client().await?;
    let consumer = cluster.client().await?;

    let consuming = tokio::spawn({
        let queue = consumer.queue("fifo");
        async move {
            let mut seen: Vec<Vec<u8>> = Vec::new();
            while seen.len() < MESSAGES {
                let Some(delivery) = queue.get(Duration::from_secs(60)).await? else {
                    anyhow::bail!("no message for a minute after {} of {MESSAGES}", seen.len());
                };
                seen.push(delivery.body.clone());
                delivery.ack().await.with_context(|| format!("ack of message {}", seen.len()))?;
            }
            Ok(seen)
        }
    });
    let queue = producer.queue("fifo");
    let mut ids = Vec::with_capacity(MESSAGES);
    for number in 0..MESSAGES {
        // The dedup id makes a retry after an ambiguous failure safe.
        let body = format!("{number:04}");
        let id = loop {
            match queue.put_with_dedup(body.clone(), body.clone()).await {
                Ok(id) => break id,
                Err(QueueError::Unavailable { .. }) => continue,
                Err(error) => return Err(error).context("put"),
            }
        };
        ids.push(id);
        if number == MESSAGES / 3 {
            killed = Some(cluster.kill_leader(ELECTION_TIMEOUT).await?);
        }
    }
    let (leader, term) = killed.context("the leader was killed a third of the way")?;
    // Puts went on after the kill, so a leader of a later term took them.
    cluster.wait_for_new_leader(term, ELECTION_TIMEOUT).await?;
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "message ids increase in put order");
    let seen = tokio::time::timeout(Duration::from_secs(120), consuming)
        .await
        .context("the consumer did not receive every message within two minutes")???;
    let expected: Vec<Vec<u8>> = (0..MESSAGES).map(|n| format!("{n:04}").into_bytes()).collect();
    assert_eq!(seen, expected, "the consumer saw every message once, in put order");
    let survivors: Vec<NodeId> = cluster.ids().into_iter().filter(|&id| id != leader).collect();
    cluster.wait_applied_equal(&survivors, CONVERGE_TIMEOUT).await?;
    let stats = producer.queue("fifo").stats().await?;
    assert_eq!((stats.depth, stats.in_flight, stats.acked_total), (0, 0, MESSAGES as u64), "{stats:?}");
    producer.close().await;
    consumer.close().await;
    Ok(())
}

async fn restart_and_partition(cluster: &Cluster) -> anyhow::Result<()> {
    cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let client = cluster.client().await?;
    let keep = client.queue("keep");
    keep.create(QueueOptions { max_attempts: 1, ..QueueOptions::default() }).await?;
    // Enough entries to take snapshots (threshold 50), so the restart loads one and replays the
    // log after it.
    let mut ids = Vec::new();
    for chunk in 0..10 {
        let bodies: Vec<String> = (0..10).map(|n| format!("m{}", chunk * 10 + n)).collect();
        ids.extend(keep.put_batch(bodies.iter().map(|b| b.as_bytes().to_vec())).await?);
        for _ in 0..6 {
            client.kv().put("filler", "x").await?;
        }
    }
    // Two deliveries stay in flight across the restart; they are detached, so the test client's
    // session ending (it dies with the cluster) does not return them.
    let detached = client.queue("keep").detached().visibility(Duration::from_secs(600));
    let held = detached.get_batch(2, Duration::ZERO).await?;
    assert_eq!(held.iter().map(|d| d.id).collect::<Vec<_>>(), ids[..2]);
    // One message is dead-lettered.
    let third = keep.get(Duration::ZERO).await?.context("third message")?;
    third.nack().await?;
    let before = keep.stats().await?;
    assert_eq!((before.depth, before.in_flight, before.dead_lettered), (97, 2, 1), "{before:?}");
    client.close().await;

    for id in cluster.ids() {
        cluster.kill(id)?;
    }
    for id in cluster.ids() {
        cluster.restart(id).await?;
    }
    cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let client = cluster.client().await?;
    let keep = client.queue("keep");
    let after = keep.stats().await?;
    assert_eq!(
        (after.depth, after.in_flight, after.dead_lettered, after.options),
        (before.depth, before.in_flight, before.dead_lettered, before.options),
        "the queue is as it was: {after:?}"
    );
    // The tags handed out before the restart still name their deliveries.
    client.queue("keep").ack_tag(held[0].tag).await.context("a pre-restart tag acks after the restart")?;
    client.queue("keep").ack_tag(held[1].tag).await?;
    let dead = client.queue("keep.dlq").get(Duration::ZERO).await?.context("the dead letter survived")?;
    assert_eq!(dead.id, ids[2]);
    dead.ack().await?;
    let rest = keep.get_batch(1000, Duration::ZERO).await?;
    assert_eq!(rest.iter().map(|d| d.id).collect::<Vec<_>>(), ids[3..], "the rest, in order");
    keep.ack_all(&rest).await?;
    client.close().await;

    // Cut the leader off from the majority; a client that knows only the old leader cannot put.
    let old_leader = cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let majority: Vec<NodeId> = cluster.ids().into_iter().filter(|&id| id != old_leader).collect();
    let cut_off = Client::connect_with(
        cluster
            .options_for(&[old_leader])
            .attempt_timeout(Duration::from_millis(500))
            .request_timeout(Duration::from_secs(3)),
    )
    .await?;
    cut_off.kv().put("session", "opened before the cut").await?;
    cluster.partition(&[old_leader], &majority).await?;
    let refused = cut_off.queue("partitioned").put("from the minority").await;
    assert!(matches!(refused, Err(QueueError::Unavailable { .. })), "the cut-off leader enqueued: {refused:?}");
    cluster.wait_for_leader(&majority, ELECTION_TIMEOUT).await?;
    let majority_client = cluster.client_for(&majority).await?;
    let accepted = majority_client.queue("partitioned").put("from the majority").await?;
    cluster.heal().await?;
    cluster.wait_applied_equal(&cluster.ids(), CONVERGE_TIMEOUT).await?;
    let everything = majority_client.queue("partitioned").get_batch(10, Duration::ZERO).await?;
    assert_eq!(
        everything.iter().map(|d| (d.id, d.body.clone())).collect::<Vec<_>>(),
        vec![(accepted, b"from the majority".to_vec())],
        "only the majority's message exists"
    );
    majority_client.close().await;
    Ok(())
}
