//! No write can wedge replication. One client write is at most `WRITE_BYTES_MAX` (4 MiB)
//! encoded; the proposer batches writes into entries that always fit one replication frame.
//!
//! - A put batch over the limit is refused as `TooLarge` by the client before it is sent, and by
//!   the node when a client skips the check (a 15 MiB put in one frame, under the frame limit):
//!   `TooLarge { what: "write" }`, nothing enqueued.
//! - Put batches just under the limit from several clients at once, beside other clients writing
//!   1 MiB values, all commit (the batches and the large values share entries); over-limit
//!   batches sent meanwhile get `TooLarge`; afterwards a small write commits, every replica
//!   converges, and the queue holds exactly the messages of the batches that committed.
//!
//! The clients are patient (a 60 s request deadline, not 10 s): on this 2-core machine three
//! debug-build nodes under 4 MiB entries sometimes hold an election, and a write may wait it
//! out. A wedged log never commits, however long a client waits; that is what this test tells
//! apart, not how fast the cluster is (benchmarks measure that).

use std::time::Duration;

use anyhow::Context as _;
use distsync::wire::{
    Command, PutMessage, Request, Response, SessionSecret, WriteRequest, QUEUE_MESSAGE_BYTES_MAX, WRITE_BYTES_MAX,
};
use distsync::{Client, ErrorKind, QueueOptions, ServerError};
use distsync_cluster_tests::{Cluster, ClusterOptions};

const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one client call may retry (elections included) before it fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// Clients putting batches just under the limit, and batches each.
const BATCHERS: usize = 3;
const BATCHES: usize = 4;
/// Clients writing 1 MiB register values meanwhile, and values each.
const VALUE_WRITERS: usize = 2;
const VALUES: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_at_the_size_limit_commit_and_larger_ones_are_refused_without_wedging_replication() -> anyhow::Result<()>
{
    let cluster = Cluster::start(3, ClusterOptions::default()).await?;
    let outcome = scenario(&cluster).await;
    cluster.finish(outcome)
}

/// The bodies of a batch whose encoding is as close under [`WRITE_BYTES_MAX`] as whole messages
/// allow: three full messages and one that fills the rest.
fn batch_under_the_limit(tag: u8) -> Vec<Vec<u8>> {
    let full = QUEUE_MESSAGE_BYTES_MAX;
    let mut bodies = vec![vec![tag; full], vec![tag; full], vec![tag; full], vec![tag; 1]];
    let bytes = |bodies: &[Vec<u8>]| {
        let messages = bodies.iter().map(|body| PutMessage { body: body.clone(), dedup_id: None }).collect();
        distsync::wire::encoded_bytes(&Command::QueuePut { queue: "wedge".into(), messages })
    };
    let room = WRITE_BYTES_MAX - bytes(&bodies);
    bodies[3] = vec![tag; room.saturating_sub(8).min(full)];
    assert!(bytes(&bodies) <= WRITE_BYTES_MAX && bytes(&bodies) > WRITE_BYTES_MAX - 64);
    bodies
}

/// A client of every node whose calls retry for [`PATIENCE`].
async fn patient_client(cluster: &Cluster) -> anyhow::Result<Client> {
    Ok(Client::connect_with(cluster.options_for(&cluster.ids()).request_timeout(PATIENCE)).await?)
}

async fn scenario(cluster: &Cluster) -> anyhow::Result<()> {
    let leader = cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;

    // A client that skips the client-side check: the node refuses the write itself.
    let raw = cluster.raw_connection(leader).await?;
    let secret = SessionSecret::random();
    let opened = raw.request(&Request::OpenSession { ttl_ms: 30_000, secret }, REPLY_TIMEOUT).await?;
    let Ok(Response::SessionOpened { session, .. }) = opened.body else {
        anyhow::bail!("open session answered {:?}", opened.body);
    };
    let messages = (0..15).map(|_| PutMessage { body: vec![7; QUEUE_MESSAGE_BYTES_MAX], dedup_id: None }).collect();
    let command = Command::QueuePut { queue: "wedge".into(), messages };
    let write = WriteRequest { session, seq: 1, acked_below: 1, command, secret };
    let reply = raw.request(&Request::Write(write), REPLY_TIMEOUT).await?;
    match reply.body {
        Err(ServerError::TooLarge { what, bytes, limit }) => {
            assert_eq!(what, "write");
            assert_eq!(limit, WRITE_BYTES_MAX as u64);
            assert!(bytes > 15 * QUEUE_MESSAGE_BYTES_MAX as u64, "the size of the write: {bytes}");
        }
        other => panic!("a 15 MiB write was answered {other:?}, expected TooLarge"),
    }
    drop(raw);

    // Messages as large as any queue allows.
    let options = QueueOptions { max_message_bytes: QUEUE_MESSAGE_BYTES_MAX as u32, ..QueueOptions::default() };
    patient_client(cluster).await?.queue("wedge").create(options).await?;

    // The mix: batches just under the limit, 1 MiB values, and over-limit batches, at once.
    let mut tasks = tokio::task::JoinSet::new();
    for batcher in 0..BATCHERS {
        let client = patient_client(cluster).await?;
        tasks.spawn(async move {
            let queue = client.queue("wedge");
            for batch in 0..BATCHES {
                let ids = queue
                    .put_batch(batch_under_the_limit(batcher as u8))
                    .await
                    .with_context(|| format!("batch {batch} of batcher {batcher}"))?;
                anyhow::ensure!(ids.len() == 4, "four ids for four messages");
            }
            Ok::<_, anyhow::Error>(BATCHES * 4)
        });
    }
    for writer in 0..VALUE_WRITERS {
        let client = patient_client(cluster).await?;
        tasks.spawn(async move {
            for value in 0..VALUES {
                client
                    .kv()
                    .put(format!("large-{writer}-{value}"), vec![value as u8; distsync::wire::VALUE_BYTES_MAX])
                    .await
                    .with_context(|| format!("value {value} of writer {writer}"))?;
            }
            Ok(0)
        });
    }
    let client = patient_client(cluster).await?;
    tasks.spawn(async move {
        let queue = client.queue("wedge");
        for _ in 0..3 {
            let over = vec![vec![9u8; QUEUE_MESSAGE_BYTES_MAX]; 5];
            match queue.put_batch(over).await {
                Err(error) => match error.kind() {
                    ErrorKind::TooLarge { what, limit, .. } if what == "write" && limit == WRITE_BYTES_MAX as u64 => {
                        assert!(error.to_string().contains("split it"), "the message says what to do: {error}");
                    }
                    other => anyhow::bail!("an over-limit batch failed with {other:?}: {error}"),
                },
                Ok(ids) => anyhow::bail!("an over-limit batch was enqueued: {ids:?}"),
            }
        }
        Ok(0)
    });
    let mut enqueued = 0;
    while let Some(outcome) = tasks.join_next().await {
        enqueued += outcome??;
    }
    assert_eq!(enqueued, BATCHERS * BATCHES * 4);

    // Replication is not wedged: a small write commits, and every replica applies everything.
    let client = patient_client(cluster).await?;
    client.kv().put("after", "small").await.context("a small write after the mix")?;
    let stats = client.queue("wedge").stats().await?;
    assert_eq!(stats.depth as usize, enqueued, "exactly the committed batches' messages are queued: {stats:?}");
    for writer in 0..VALUE_WRITERS {
        let last = client.kv().get(format!("large-{writer}-{}", VALUES - 1)).await?;
        assert_eq!(last.map(|value| value.len()), Some(distsync::wire::VALUE_BYTES_MAX));
    }
    // Every message comes out whole; then the replicas, emptied of the bulk, agree.
    let queue = client.queue("wedge");
    let mut consumed = 0;
    while consumed < enqueued {
        let deliveries = queue.get_batch(4, Duration::from_secs(10)).await?;
        anyhow::ensure!(!deliveries.is_empty(), "only {consumed} of {enqueued} messages came out");
        for delivery in deliveries {
            assert!(delivery.body.len() > 1 && delivery.body.iter().all(|&b| b == delivery.body[0]), "a whole body");
            delivery.ack().await?;
            consumed += 1;
        }
    }
    for writer in 0..VALUE_WRITERS {
        for value in 0..VALUES {
            client.kv().delete(format!("large-{writer}-{value}")).await?;
        }
    }
    cluster.wait_applied_equal(&cluster.ids(), CONVERGE_TIMEOUT).await?;
    Ok(())
}
