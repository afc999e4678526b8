//! The state machine's limits are flags (`--max-kv-keys`, `--max-queues`, …), shown by every
//! node's status once applied, and every write a limit refuses gets a typed error naming the limit
//! and its value, through the Rust client and the command line alike; nothing is changed by a refused write, and freeing room lets the next
//! one through. (The Python and Node suites check the same through their bindings.)

use std::time::Duration;

use distsync::{ClientError, ErrorKind, QueueError, ServerError};
use distsync_cluster_tests::{Cluster, ClusterOptions};

const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_set_by_flag_refuses_with_its_name_and_value_everywhere() -> anyhow::Result<()> {
    let node_args = ["--max-kv-keys", "2", "--max-queues", "2"].map(String::from).to_vec();
    let cluster = Cluster::start(3, ClusterOptions { node_args, ..ClusterOptions::default() }).await?;
    let outcome = scenario(&cluster).await;
    cluster.finish(outcome)
}

async fn scenario(cluster: &Cluster) -> anyhow::Result<()> {
    cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let client = cluster.client().await?;
    // A first write carries the leader's limits; then every node shows them in its status.
    client.kv().put("first", "1").await?;
    client.kv().delete("first").await?;
    cluster.wait_applied_equal(&cluster.ids(), ELECTION_TIMEOUT).await?;
    for id in cluster.ids() {
        let status = cluster.status(id).await?;
        assert_eq!(status.limits.get("KEYS_MAX"), Some(&2), "node {id}: {:?}", status.limits);
        assert_eq!(status.limits.get("QUEUES_MAX"), Some(&2), "node {id}");
        assert_eq!(status.limits.get("KV_BYTES_MAX"), Some(&(256 << 20)), "node {id}: a default");
    }

    // The register: two keys fit; a third is refused, naming KEYS_MAX = 2.
    client.kv().put("a", "1").await?;
    client.kv().put("b", "1").await?;
    let refused = client.kv().put("c", "1").await.expect_err("a third key is over --max-kv-keys 2");
    let ClientError::Server(ServerError::LimitReached { what, limit, reason }) = &refused else {
        anyhow::bail!("expected LimitReached, got {refused:?}");
    };
    assert_eq!((what.as_str(), *limit), ("KEYS_MAX", 2), "{reason}");
    assert_eq!(refused.kind(), ErrorKind::LimitReached { queue: None, what: "KEYS_MAX".into(), limit: 2 });
    assert_eq!(client.kv().get("c").await?, None, "nothing was written");
    client.kv().put("a", "2").await.expect("replacing a key adds none");

    // The command line says the same and fails.
    let output = cluster.run_cli(&["kv", "put", "d", "1"]).await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the CLI fails on a refused write: {stderr}");
    assert!(stderr.contains("limit reached") && stderr.contains("KEYS_MAX"), "{stderr}");

    // Room freed, the next key fits.
    client.kv().delete("b").await?;
    client.kv().put("c", "1").await?;

    // Queues: a third queue is refused as a full queue, naming QUEUES_MAX = 2.
    for name in ["q1", "q2"] {
        client.queue(name).create(Default::default()).await?;
    }
    let refused = client.queue("q3").create(Default::default()).await.expect_err("a third queue is over 2");
    let QueueError::Full { queue, what, limit, .. } = &refused else {
        anyhow::bail!("expected a full queue, got {refused:?}");
    };
    assert_eq!((queue.as_str(), what.as_str(), *limit), ("q3", "QUEUES_MAX", 2));
    let output = cluster.run_cli(&["queue", "put", "q4", "body"]).await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("QUEUES_MAX"), "{stderr}");
    let listed: Vec<String> = client.queue_list().await?.into_iter().map(|stats| stats.name).collect();
    assert_eq!(listed, ["q1", "q2"], "the refused queues were not created");
    client.close().await;
    Ok(())
}
