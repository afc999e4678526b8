//! What brings a delivered message back, and what keeps it away, on a real cluster.
//!
//! - A nack and a passed visibility timeout make a message deliverable again, at the head of the
//!   queue, with a new tag; the old tag acks nothing and extends nothing.
//! - `extend` keeps a message invisible past its first visibility timeout.
//! - After the queue's max attempts the message is in `NAME.dlq` with the history of its attempts.
//! - A repeated dedup id enqueues nothing and answers the first id.
//! - Concurrent puts of one client, merged into shared requests, each get their own id, and one
//!   oversized message among them fails alone.
//! - A consumer that falls silent (its client is gone without closing its session) gets its
//!   message returned when its session expires, not at the far longer visibility timeout
//!   (nats-server#4627): the redelivery's history says the attempt ended with the session.
//! - A waiting get returns as soon as a message is put, from a node other than the producer's;
//!   a batched get returns a put batch in order.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use distsync::wire::AttemptOutcome;
use distsync::{QueueError, QueueOptions};
use distsync_cluster_tests::{Cluster, ClusterOptions};

const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacks_timeouts_stale_tags_dead_letters_and_dedup() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, ClusterOptions::default()).await?;
    let outcome = nacks_timeouts_and_dead_letters(&cluster).await;
    cluster.finish(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_consumers_message_returns_when_its_session_ends_and_waiting_gets_are_pushed() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, ClusterOptions::default()).await?;
    let outcome = session_end_and_push(&cluster).await;
    cluster.finish(outcome)
}

async fn nacks_timeouts_and_dead_letters(cluster: &Cluster) -> anyhow::Result<()> {
    cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let client = cluster.client().await?;
    let other = cluster.client_for(&[3]).await?;

    // Nack: back at the head, new tag, old tag refused.
    let jobs = client.queue("jobs");
    let ids = jobs.put_batch(["first", "second"]).await?;
    let first = jobs.get(Duration::ZERO).await?.context("a message is ready")?;
    assert_eq!((first.id, first.attempt, &first.body[..]), (ids[0], 1, &b"first"[..]));
    first.nack().await?;
    let again = other.queue("jobs").get(Duration::ZERO).await?.context("the nacked message is ready again")?;
    assert_eq!((again.id, again.attempt), (ids[0], 2), "the nacked message is redelivered first");
    assert_ne!(again.tag, first.tag, "each delivery has its own tag");
    assert_eq!(again.history.len(), 1);
    assert_eq!(again.history[0].outcome, AttemptOutcome::Nacked);
    let late_ack = first.ack().await;
    assert!(matches!(late_ack, Err(QueueError::StaleTag { tag, .. }) if tag == first.tag), "{late_ack:?}");
    let mut stale = first.clone();
    let late_extend = stale.extend(Duration::from_secs(60)).await;
    assert!(matches!(late_extend, Err(QueueError::StaleTag { .. })), "{late_extend:?}");
    again.ack().await?;
    let second = jobs.get(Duration::ZERO).await?.context("the second message")?;
    assert_eq!(second.id, ids[1]);
    second.ack().await?;
    let stats = jobs.stats().await?;
    assert_eq!((stats.depth, stats.in_flight, stats.acked_total), (0, 0, 2), "{stats:?}");

    // Visibility timeout: a short one passes and the message comes back; an extended one does not.
    let short = client.queue("short").visibility(Duration::from_secs(3));
    let ids = short.put_batch(["lapses", "extended"]).await?;
    let deliveries = short.get_batch(2, Duration::ZERO).await?;
    assert_eq!(deliveries.iter().map(|d| d.id).collect::<Vec<_>>(), ids);
    let mut extended = deliveries[1].clone();
    extended.extend(Duration::from_secs(60)).await?;
    let returned = other
        .queue("short")
        .get(Duration::from_secs(20))
        .await?
        .context("the message whose visibility lapsed is delivered again")?;
    assert_eq!((returned.id, returned.attempt), (ids[0], 2));
    assert_eq!(returned.history[0].outcome, AttemptOutcome::TimedOut);
    assert!(
        matches!(deliveries[0].ack().await, Err(QueueError::StaleTag { .. })),
        "the lapsed delivery's tag no longer acks"
    );
    let stats = short.stats().await?;
    assert_eq!((stats.depth, stats.in_flight), (0, 2), "the extended message is still in flight: {stats:?}");
    extended.ack().await?;
    returned.ack().await?;

    // Dead-lettering after max attempts, with the history.
    let poison = client.queue("poison");
    assert!(poison.create(QueueOptions { max_attempts: 2, ..QueueOptions::default() }).await?);
    let id = poison.put("bad input").await?;
    for attempt in 1..=2 {
        let delivery = poison.get(Duration::ZERO).await?.context("delivered while attempts remain")?;
        assert_eq!((delivery.id, delivery.attempt), (id, attempt));
        delivery.nack().await?;
    }
    assert!(poison.get(Duration::ZERO).await?.is_none(), "not delivered beyond max attempts");
    let stats = poison.stats().await?;
    assert_eq!((stats.depth, stats.dead_lettered), (0, 1), "{stats:?}");
    let dead = client.queue("poison.dlq").get(Duration::ZERO).await?.context("the message is in poison.dlq")?;
    assert_eq!((dead.id, &dead.body[..]), (id, &b"bad input"[..]));
    assert_eq!(dead.history.len(), 2, "both attempts travel with it: {:?}", dead.history);
    assert!(dead.history.iter().all(|a| a.queue == "poison" && a.outcome == AttemptOutcome::Nacked));
    dead.ack().await?;

    // Dedup ids.
    let orders = client.queue("orders");
    let first = orders.put_with_dedup("charge 42", "order-42").await?;
    let repeat = other.queue("orders").put_with_dedup("charge 42 again", "order-42").await?;
    assert_eq!(first, repeat, "a repeated dedup id answers the first id");
    let stats = orders.stats().await?;
    assert_eq!((stats.depth, stats.put_total), (1, 1), "the repeat enqueued nothing: {stats:?}");

    // Unknown queues and bad input are typed errors.
    let missing = client.queue("never-used").stats().await;
    assert!(matches!(missing, Err(QueueError::NoSuchQueue { .. })), "{missing:?}");
    let missing = client.queue("never-used").ack_tag(1).await;
    assert!(matches!(missing, Err(QueueError::NoSuchQueue { .. })), "{missing:?}");
    let bad_name = client.queue("has space").put("x").await;
    assert!(matches!(bad_name, Err(QueueError::InvalidArgument { .. })), "{bad_name:?}");
    let small = client.queue("small");
    small.create(QueueOptions { max_message_bytes: 8, ..QueueOptions::default() }).await?;
    let too_large = small.put(vec![0u8; 9]).await;
    assert!(matches!(too_large, Err(QueueError::MessageTooLarge { bytes: 9, max: 8, .. })), "{too_large:?}");

    // Concurrent puts of one client are merged into shared requests, yet each gets its own
    // outcome: one oversized message among them fails alone.
    let mut puts = tokio::task::JoinSet::new();
    for n in 0..64usize {
        let small = small.clone();
        let body = if n == 17 { vec![b'x'; 9] } else { format!("{n:08}").into_bytes() };
        puts.spawn(async move { (n, small.put(body).await) });
    }
    let mut ids = std::collections::BTreeSet::new();
    while let Some(joined) = puts.join_next().await {
        let (n, outcome) = joined?;
        match (n, outcome) {
            (17, Err(QueueError::MessageTooLarge { .. })) => {}
            (17, other) => anyhow::bail!("the oversized concurrent put answered {other:?}"),
            (n, Ok(id)) => assert!(ids.insert(id), "put {n} got the id {id} of another"),
            (n, Err(error)) => anyhow::bail!("concurrent put {n} failed: {error}"),
        }
    }
    let stats = small.stats().await?;
    assert_eq!((stats.depth, stats.put_total), (63, 63), "every other concurrent put is enqueued once: {stats:?}");
    client.close().await;
    other.close().await;
    Ok(())
}

async fn session_end_and_push(cluster: &Cluster) -> anyhow::Result<()> {
    cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let observer = cluster.client().await?;

    // A consumer with a 2 s session takes a message for 10 minutes, then falls silent.
    let silent = distsync::Client::connect_with(cluster.options_for(&[1]).session_ttl(Duration::from_secs(2))).await?;
    let work = silent.queue("work").visibility(Duration::from_secs(600));
    let id = work.put("job").await?;
    let taken = work.get(Duration::ZERO).await?.context("the silent consumer takes the job")?;
    assert_eq!(taken.id, id);
    // Dropping every handle of the client stops its keepalives without closing its session, as
    // a crash would.
    drop((taken, work, silent));
    let returned = observer
        .queue("work")
        .get(Duration::from_secs(60))
        .await?
        .context("the silent consumer's message came back within a minute, not after its 10-minute visibility")?;
    assert_eq!((returned.id, returned.attempt), (id, 2));
    assert_eq!(
        returned.history.last().map(|a| a.outcome),
        Some(AttemptOutcome::SessionEnded),
        "the attempt ended with the session: {:?}",
        returned.history
    );
    returned.ack().await?;

    // A waiting get on node 3 is handed a message put through node 1.
    let consumer = cluster.client_for(&[3]).await?;
    let producer = cluster.client_for(&[1]).await?;
    let waiting = tokio::spawn({
        let queue = consumer.queue("push");
        async move { queue.get(Duration::from_secs(60)).await }
    });
    // Wait until the get is registered in the cluster, so the put finds it waiting.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(stats) = observer.queue("push").stats().await {
            if stats.waiting_consumers == 1 {
                break;
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "the waiting get never showed in the queue's stats");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let id = producer.queue("push").put("hello").await?;
    let delivery = waiting.await??.context("the waiting get returned empty although a message was put")?;
    assert_eq!((delivery.id, &delivery.body[..]), (id, &b"hello"[..]));
    delivery.ack().await?;

    // A batch put is one entry and comes back in order from a batched get.
    let bodies: Vec<String> = (0..5).map(|n| format!("item {n}")).collect();
    let ids = producer.queue("batch").put_batch(bodies.iter().map(|b| b.as_bytes().to_vec())).await?;
    let batch = consumer.queue("batch").get_batch(10, Duration::from_secs(5)).await?;
    assert_eq!(batch.iter().map(|d| d.id).collect::<Vec<_>>(), ids);
    assert_eq!(
        batch.iter().map(|d| d.body.clone()).collect::<Vec<_>>(),
        bodies.iter().map(|b| b.as_bytes().to_vec()).collect::<Vec<_>>()
    );
    consumer.queue("batch").ack_all(&batch).await?;
    assert_eq!(observer.queue("batch").stats().await?.acked_total, 5);

    // A get that gives up before anything arrives leaves nothing waiting behind.
    let nothing = consumer.queue("quiet").get(Duration::from_millis(300)).await?;
    assert!(nothing.is_none());
    let stats = observer.queue("quiet").stats().await?;
    assert_eq!((stats.waiting_consumers, stats.in_flight), (0, 0), "{stats:?}");
    for client in [observer, consumer, producer] {
        client.close().await;
    }
    Ok(())
}
