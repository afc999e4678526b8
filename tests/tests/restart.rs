//! Every node killed with SIGKILL at once and restarted on its data directory: the cluster elects
//! a leader again and holds exactly what was acknowledged before the crash — every put present
//! with its value, every delete still absent — the nodes agree on the state digest, and writes
//! work again.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use distsync_cluster_tests::{Cluster, ClusterOptions};

const PUTS: u64 = 200;
/// Every tenth key is deleted again: 20 deletes.
const DELETE_EVERY: u64 = 10;

const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_restart_keeps_acknowledged_state() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, ClusterOptions::default()).await?;
    let outcome = scenario(&cluster).await;
    cluster.finish(outcome)
}

async fn scenario(cluster: &Cluster) -> anyhow::Result<()> {
    cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let client = cluster.client().await?;
    let mut expected: BTreeMap<String, Option<String>> = BTreeMap::new();
    for index in 0..PUTS {
        client.kv().put(key(index), value(index)).await.with_context(|| format!("put {}", key(index)))?;
        expected.insert(key(index), Some(value(index)));
    }
    for index in (0..PUTS).step_by(DELETE_EVERY as usize) {
        let existed = client.kv().delete(key(index)).await.with_context(|| format!("delete {}", key(index)))?;
        assert!(existed, "{} was put, so deleting it finds it", key(index));
        expected.insert(key(index), None);
    }
    let present = expected.values().filter(|value| value.is_some()).count() as u64;
    assert_eq!(present, PUTS - PUTS / DELETE_EVERY);
    drop(client);

    for id in cluster.ids() {
        cluster.kill(id)?;
    }
    for id in cluster.ids() {
        cluster.restart(id).await?;
    }
    cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let statuses = cluster.wait_applied_equal(&cluster.ids(), CONVERGE_TIMEOUT).await?;
    for status in &statuses {
        assert_eq!(status.keys, present, "keys on node {} after the restart", status.id);
    }

    let client = cluster.client().await?;
    for (key, value) in &expected {
        let read = client.kv().get(key).await.with_context(|| format!("reading {key} after the restart"))?;
        assert_eq!(read, value.as_ref().map(|v| v.clone().into_bytes()), "{key} after the restart");
    }
    client.kv().put("after-restart", "yes").await.context("put after the restart")?;
    assert_eq!(client.kv().get("after-restart").await?, Some(b"yes".to_vec()));
    Ok(())
}

fn key(index: u64) -> String {
    format!("key-{index}")
}

fn value(index: u64) -> String {
    format!("value-{index}")
}
