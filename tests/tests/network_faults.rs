//! Faults below the transport, with each node in its own network namespace and iptables rules
//! between them:
//!
//! - a one-way cut: every packet the leader sends to its followers is lost, while theirs still
//!   reach it. Its QUIC connections keep receiving, so nothing looks closed to it; the followers
//!   stop hearing heartbeats, elect a leader of a later term, and commit acknowledged writes;
//!   after the heal all three converge and every acknowledged write is there;
//! - random loss: 30 % of packets between any two nodes lost (each way); writes still commit
//!   (QUIC retransmits), and every acknowledged one survives.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use distsync_cluster_tests::{Cluster, ClusterOptions, Filter, Network};

const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);
/// Writes that must be acknowledged while the fault holds.
const WRITES_DURING: u64 = 20;

/// A cluster of three, a namespace each.
async fn start() -> anyhow::Result<Cluster> {
    if let Some(reason) = Network::unavailable() {
        anyhow::bail!(
            "this test puts nodes in network namespaces and must run as root with iptables (CI does): {reason}"
        );
    }
    let network = Arc::new(Network::create(&[1, 2, 3])?);
    Cluster::start(3, ClusterOptions { network: Some(network), ..ClusterOptions::default() }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_packets_are_lost_is_replaced_and_no_acknowledged_write_is_lost() -> anyhow::Result<()> {
    let cluster = start().await?;
    let outcome = one_way(&cluster).await;
    cluster.finish(outcome)
}

async fn one_way(cluster: &Cluster) -> anyhow::Result<()> {
    let network = cluster.network().context("a cluster in a network")?;
    let old_leader = cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let old_term = cluster.status(old_leader).await?.term;
    let followers: Vec<u64> = cluster.ids().into_iter().filter(|&id| id != old_leader).collect();
    let client = cluster.client().await?;
    client.kv().put("before", "1").await?;

    network.apply(&[(old_leader, followers.iter().map(|&peer| Filter::to(peer)).collect())]).await?;
    let new_leader = cluster.wait_for_new_leader(old_term, ELECTION_TIMEOUT).await?;
    assert_ne!(new_leader.id, old_leader, "a leader whose packets are lost cannot lead on");
    let majority = cluster.client_for(&followers).await?;
    for index in 0..WRITES_DURING {
        majority
            .kv()
            .put(format!("during-{index}"), index.to_string())
            .await
            .with_context(|| format!("during-{index}"))?;
    }

    let dropped = network.dropped_packets(old_leader).await?;
    assert!(dropped > 0, "the old leader's filters dropped nothing: the cut was not real");
    network.heal().await?;
    cluster.wait_applied_equal(&cluster.ids(), CONVERGE_TIMEOUT).await?;
    let reader = cluster.client_for(&[old_leader]).await?;
    assert_eq!(reader.kv().get("before").await?, Some(b"1".to_vec()));
    for index in 0..WRITES_DURING {
        let value = reader.kv().get(format!("during-{index}")).await?;
        assert_eq!(value, Some(index.to_string().into_bytes()), "during-{index} after the heal");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_commit_through_random_packet_loss() -> anyhow::Result<()> {
    let cluster = start().await?;
    let outcome = lossy(&cluster).await;
    cluster.finish(outcome)
}

async fn lossy(cluster: &Cluster) -> anyhow::Result<()> {
    let network = cluster.network().context("a cluster in a network")?;
    cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let client = cluster.client().await?;
    let ids = cluster.ids();
    network.lose_everywhere(0.3).await?;
    let mut acknowledged = Vec::new();
    for index in 0..WRITES_DURING {
        // A write may time out while packets are lost; what matters is that those acknowledged
        // survive, and that most get through.
        if client.kv().put(format!("lossy-{index}"), index.to_string()).await.is_ok() {
            acknowledged.push(index);
        }
    }
    assert!(
        acknowledged.len() as u64 * 2 > WRITES_DURING,
        "most writes commit through 30 % loss: {} of {WRITES_DURING}",
        acknowledged.len()
    );
    let mut dropped = 0;
    for &id in &ids {
        dropped += network.dropped_packets(id).await?;
    }
    assert!(dropped > 0, "no packet was lost: the loss was not real");
    network.heal().await?;
    cluster.wait_applied_equal(&ids, CONVERGE_TIMEOUT).await?;
    for id in ids {
        let reader = cluster.client_for(&[id]).await?;
        for &index in &acknowledged {
            let value = reader.kv().get(format!("lossy-{index}")).await?;
            assert_eq!(value, Some(index.to_string().into_bytes()), "lossy-{index} read through node {id}");
        }
    }
    Ok(())
}
