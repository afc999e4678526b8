//! Killing the leader with SIGKILL while a client writes continuously loses no acknowledged write:
//! the two survivors elect a new leader, the same client's writes resume through it, and every
//! key whose `put` returned Ok reads back afterwards with its value and the version (revision)
//! the put reported. Acknowledged versions increase in the order the writes were issued.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use distsync::{Client, ClientError};
use distsync_cluster_tests::{Cluster, ClusterOptions};
use tokio::sync::watch;

/// Acknowledged writes before the leader is killed, and again after.
const ACKS_PER_PHASE: usize = 150;

/// Upper bound on the writer's loop, far above what the test needs.
const WRITES_MAX: u64 = 100_000;

const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);
const ACKS_TIMEOUT: Duration = Duration::from_secs(120);

/// What the background writer saw.
struct History {
    /// Index and version of every acknowledged write, in the order issued.
    acknowledged: Vec<(u64, u64)>,
    /// Writes that returned an error: they may or may not have been applied.
    failed: Vec<(u64, ClientError)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_leader_kill() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, ClusterOptions::default()).await?;
    let outcome = scenario(&cluster).await;
    cluster.finish(outcome)
}

async fn scenario(cluster: &Cluster) -> anyhow::Result<()> {
    cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let client = cluster.client().await?;
    let stop = Arc::new(AtomicBool::new(false));
    let (acks_sender, mut acks) = watch::channel(0usize);
    let writer = tokio::spawn(write_until_stopped(client, stop.clone(), acks_sender));

    wait_for_acks(&mut acks, ACKS_PER_PHASE).await.context("before the kill")?;
    let (old_leader, term) = cluster.kill_leader(ELECTION_TIMEOUT).await?;
    let acks_at_kill = *acks.borrow();

    let survivors: Vec<u64> = cluster.ids().into_iter().filter(|&id| id != old_leader).collect();
    // A leader of a later term: only an election after the kill makes one.
    cluster.wait_for_new_leader(term, ELECTION_TIMEOUT).await?;

    wait_for_acks(&mut acks, acks_at_kill + ACKS_PER_PHASE).await.context("after the kill")?;
    stop.store(true, Ordering::Relaxed);
    let history = writer.await.context("the writer task panicked")?;

    assert!(
        history.acknowledged.len() >= acks_at_kill + ACKS_PER_PHASE,
        "writes did not resume after the kill: {} acknowledged in all, {acks_at_kill} at the kill",
        history.acknowledged.len()
    );
    for pair in history.acknowledged.windows(2) {
        let ((first, first_version), (second, second_version)) = (pair[0], pair[1]);
        assert!(
            first_version < second_version,
            "k-{second} was issued after k-{first} but got version {second_version} <= {first_version}"
        );
    }
    eprintln!(
        "{} writes acknowledged ({acks_at_kill} before the kill of node {old_leader}), {} failed: {:?}",
        history.acknowledged.len(),
        history.failed.len(),
        history.failed.iter().take(5).collect::<Vec<_>>()
    );

    let reader = cluster.client_for(&survivors).await?;
    for &(index, version) in &history.acknowledged {
        let read = reader.kv().get_versioned(key(index)).await.with_context(|| format!("reading {}", key(index)))?;
        assert_eq!(
            read,
            Some((value(index).into_bytes(), version)),
            "acknowledged write {} (version {version}) was lost or changed",
            key(index)
        );
    }
    Ok(())
}

/// Puts `k-0`, `k-1`, … one after another until `stop`, publishing the number of acknowledged
/// writes after each one.
async fn write_until_stopped(client: Client, stop: Arc<AtomicBool>, acks: watch::Sender<usize>) -> History {
    let mut history = History { acknowledged: Vec::new(), failed: Vec::new() };
    for index in 0..WRITES_MAX {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        match client.kv().put(key(index), value(index)).await {
            Ok(version) => {
                history.acknowledged.push((index, version));
                acks.send_replace(history.acknowledged.len());
            }
            Err(error) => history.failed.push((index, error)),
        }
    }
    history
}

async fn wait_for_acks(acks: &mut watch::Receiver<usize>, target: usize) -> anyhow::Result<()> {
    // The `Ref` returned by `wait_for` holds the channel's lock; drop it at once.
    let reached =
        tokio::time::timeout(ACKS_TIMEOUT, async { acks.wait_for(|&count| count >= target).await.map(drop) }).await;
    match reached {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(_)) => anyhow::bail!("the writer stopped before {target} acknowledged writes"),
        Err(_) => {
            anyhow::bail!("fewer than {target} writes acknowledged within {ACKS_TIMEOUT:?} (now {})", *acks.borrow())
        }
    }
}

fn key(index: u64) -> String {
    format!("k-{index}")
}

fn value(index: u64) -> String {
    format!("v-{index}")
}
