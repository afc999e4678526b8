//! The command line's contract for scripts: `kv put/get/delete` exit 0 on success, `kv get`
//! prints the value alone on stdout, an absent key exits 1 with a message on stderr and nothing
//! on stdout; `status --json` prints one JSON array with one object per node naming one leader,
//! reports a dead node as "unreachable", and `status` exits non-zero when no node answers.

use std::time::Duration;

use anyhow::Context as _;
use distsync_cluster_tests::{describe_output, free_udp_ports, Cluster, ClusterOptions};
use serde_json::Value;

const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_line_contract() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, ClusterOptions::default()).await?;
    let outcome = scenario(&cluster).await;
    cluster.finish(outcome)
}

async fn scenario(cluster: &Cluster) -> anyhow::Result<()> {
    let leader = cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;

    let put = cluster.run_cli(&["kv", "put", "a", "1"]).await?;
    assert!(put.status.success(), "kv put: {}", describe_output(&put));

    let get = cluster.run_cli(&["kv", "get", "a"]).await?;
    assert!(get.status.success(), "kv get: {}", describe_output(&get));
    assert_eq!(String::from_utf8_lossy(&get.stdout), "1\n", "kv get prints the value alone");

    let missing = cluster.run_cli(&["kv", "get", "missing"]).await?;
    assert_eq!(missing.status.code(), Some(1), "kv get of an absent key: {}", describe_output(&missing));
    assert!(missing.stdout.is_empty(), "nothing on stdout for an absent key: {}", describe_output(&missing));
    assert!(!missing.stderr.trim_ascii().is_empty(), "a message on stderr for an absent key");

    let delete = cluster.run_cli(&["kv", "delete", "a"]).await?;
    assert!(delete.status.success(), "kv delete: {}", describe_output(&delete));
    let deleted = cluster.run_cli(&["kv", "get", "a"]).await?;
    assert_eq!(deleted.status.code(), Some(1), "kv get after delete: {}", describe_output(&deleted));

    let human = cluster.run_cli(&["status"]).await?;
    assert!(human.status.success(), "status: {}", describe_output(&human));
    assert!(!human.stdout.is_empty(), "status prints a table");

    // The first leader names the cluster; once every node applied the name, all show it.
    let cluster_id = cluster.cluster_id(leader, Duration::from_secs(10)).await?;
    for id in cluster.ids() {
        assert_eq!(cluster.cluster_id(id, Duration::from_secs(10)).await?, cluster_id);
    }
    assert!(cluster_id.len() == 32 && cluster_id.bytes().all(|b| b.is_ascii_hexdigit()), "{cluster_id}");
    let nodes = status_json(cluster).await?;
    assert_eq!(nodes.len(), 3, "one object per endpoint: {nodes:?}");
    assert!(nodes.iter().all(|node| node["cluster_id"] == cluster_id.as_str()), "{nodes:?}");
    for node in &nodes {
        for field in ["id", "role", "term", "leader", "applied"] {
            assert!(node.get(field).is_some(), "status --json object lacks {field:?}: {node}");
        }
        assert_eq!(node["leader"], Value::from(leader), "every node names leader {leader}: {node}");
    }
    let leaders: Vec<&Value> = nodes.iter().filter(|node| node["role"] == "leader").collect();
    assert_eq!(leaders.len(), 1, "exactly one node reports role \"leader\": {nodes:?}");
    assert_eq!(leaders[0]["id"], Value::from(leader));
    // The state digest reads the whole state: only `--digest` asks for it.
    assert!(nodes.iter().all(|node| node["state_digest"].is_null()), "no digest unless asked: {nodes:?}");
    let digested = status_json_with(cluster, &["status", "--json", "--digest"]).await?;
    for node in &digested {
        let digest = &node["state_digest"];
        assert!(digest["digest"].is_u64() && digest["applied"].is_u64(), "status --digest gives a digest: {node}");
        assert!(digest["applied"].as_u64() <= node["applied"].as_u64(), "a digest is of an applied index: {node}");
    }
    let with_digest = cluster.run_cli(&["status", "--digest"]).await?;
    assert!(String::from_utf8_lossy(&with_digest.stdout).contains("DIGEST"), "{}", describe_output(&with_digest));

    // A dead node shows up as unreachable, with its address and the error.
    let follower = cluster.ids().into_iter().find(|&id| id != leader).context("three nodes have a follower")?;
    cluster.kill(follower)?;
    let nodes = status_json(cluster).await?;
    let unreachable: Vec<&Value> = nodes.iter().filter(|node| node["role"] == "unreachable").collect();
    assert_eq!(unreachable.len(), 1, "the killed node {follower} is unreachable: {nodes:?}");
    assert_eq!(unreachable[0]["address"], Value::from(cluster.endpoint(follower)));
    assert!(unreachable[0]["error"].is_string(), "an unreachable node carries the error: {}", unreachable[0]);

    // No node answers at all.
    let dead = free_udp_ports(2)?.iter().map(|port| format!("127.0.0.1:{port}")).collect::<Vec<_>>().join(",");
    let ca = cluster.ca_path();
    let ca = ca.to_str().context("temporary directory path is not UTF-8")?;
    let nobody = cluster.run_binary(&["--endpoints", &dead, "--ca", ca, "status"]).await?;
    assert!(!nobody.status.success(), "status with no live endpoint must fail: {}", describe_output(&nobody));
    Ok(())
}

/// Runs `status --json` and parses stdout as an array of objects, whatever the exit status.
async fn status_json(cluster: &Cluster) -> anyhow::Result<Vec<Value>> {
    status_json_with(cluster, &["status", "--json"]).await
}

/// Runs the status command `args` and parses stdout as an array of objects.
async fn status_json_with(cluster: &Cluster, args: &[&str]) -> anyhow::Result<Vec<Value>> {
    let output = cluster.run_cli(args).await?;
    let parsed: Value = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("status --json printed no JSON: {}", describe_output(&output)))?;
    let Value::Array(nodes) = parsed else {
        anyhow::bail!("status --json printed no array: {}", describe_output(&output));
    };
    for node in &nodes {
        anyhow::ensure!(node.is_object(), "status --json array holds a non-object: {node}");
    }
    Ok(nodes)
}
