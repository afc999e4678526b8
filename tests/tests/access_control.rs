//! Grants decide what each identity may do, through the command line, on every node, at once
//! and after a whole-cluster restart: for each primitive, an identity with `write` may change
//! and read, one with `read` may only read, one with nothing may do nothing, and a denial is a
//! "permission denied" on stderr naming the identity, the resource and the permission (for
//! `lock run`, with its conflict exit code). A revoke is in force on every node as soon as it is
//! acknowledged. `identity disable` cuts off a live client from its next request (its lock is
//! released at once) and `identity enable` lets it back.

use std::process::Output;
use std::time::Duration;

use distsync::{Client, ClientOptions, ErrorKind};
use distsync_cluster_tests::{Cluster, ClusterOptions};

const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_decide_every_call_on_every_node_and_survive_a_restart() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, ClusterOptions::default()).await?;
    let outcome = scenario(&cluster).await;
    cluster.finish(outcome)
}

/// One call of the matrix: the CLI arguments, the resource it acts on, and what it needs.
struct Call {
    args: &'static [&'static str],
    resource: &'static str,
    needed: &'static str,
}

const CALLS: &[Call] = &[
    Call { args: &["kv", "put", "app/k", "v"], resource: "kv:app/k", needed: "write" },
    Call { args: &["kv", "get", "app/k"], resource: "kv:app/k", needed: "read" },
    Call { args: &["lock", "run", "app/l", "--", "true"], resource: "lock:app/l", needed: "write" },
    Call { args: &["lock", "show", "app/l"], resource: "lock:app/l", needed: "read" },
    Call { args: &["queue", "put", "app/q", "body"], resource: "queue:app/q", needed: "write" },
    Call { args: &["queue", "stats", "app/q"], resource: "queue:app/q", needed: "read" },
    Call { args: &["cache", "set", "app/c", "v"], resource: "cache:app/c", needed: "write" },
    Call { args: &["cache", "get", "app/c"], resource: "cache:app/c", needed: "read" },
];

async fn scenario(cluster: &Cluster) -> anyhow::Result<()> {
    cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    for kind in ["kv", "lock", "queue", "cache"] {
        admin(cluster, &["acl", "grant", "writer", &format!("{kind}:app/"), "write"]).await?;
        admin(cluster, &["acl", "grant", "reader", &format!("{kind}:app/"), "read"]).await?;
    }
    check_matrix(cluster).await?;

    // `lock run` refused for want of a grant exits with its conflict code.
    let run =
        cluster.run_cli_as("reader", &["lock", "run", "--conflict-exit-code", "7", "app/l", "--", "true"]).await?;
    assert_eq!(run.status.code(), Some(7), "lock run denied: {}", String::from_utf8_lossy(&run.stderr));

    // A grant and a revoke take effect on every node: cache reads are answered by the node a
    // client talks to, so ask each one.
    admin(cluster, &["acl", "grant", "roamer", "cache:shared/", "read"]).await?;
    let roamers = homed_clients(cluster, "roamer").await?;
    for (id, roamer) in &roamers {
        assert!(roamer.cache().get("shared/x").await.is_ok(), "node {id} refused a granted read");
        let denied = roamer.cache().get("other/x").await.expect_err("a read outside the grant");
        assert!(matches!(denied.kind(), ErrorKind::PermissionDenied { .. }), "node {id}: {denied:?}");
    }
    admin(cluster, &["acl", "revoke", "roamer", "cache:shared/"]).await?;
    for (id, roamer) in &roamers {
        let denied = roamer.cache().get("shared/x").await.expect_err("a read after the revoke");
        assert!(matches!(denied.kind(), ErrorKind::PermissionDenied { .. }), "node {id}: {denied:?}");
        roamer.close().await;
    }

    // The whole cluster restarts; the grants come back from the disk.
    cluster.stop();
    for id in cluster.ids() {
        cluster.restart(id).await?;
    }
    cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    check_matrix(cluster).await?;
    let listed = admin(cluster, &["acl", "list", "--json"]).await?;
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout)?;
    let writer = listed.as_array().and_then(|all| all.iter().find(|i| i["identity"] == "writer")).cloned();
    let writer = writer.unwrap_or_default();
    assert_eq!(writer["grants"].as_array().map(Vec::len), Some(4), "writer's grants after the restart: {listed}");
    assert_eq!(writer["grants"][0], serde_json::json!({ "resource": "kv:app/", "permission": "write" }));

    disable_cuts_off_a_live_client(cluster).await
}

/// Every call of [`CALLS`] as writer, reader and nobody.
async fn check_matrix(cluster: &Cluster) -> anyhow::Result<()> {
    for identity in ["writer", "reader", "nobody"] {
        for call in CALLS {
            let output = cluster.run_cli_as(identity, call.args).await?;
            let stderr = String::from_utf8_lossy(&output.stderr);
            let allowed = identity == "writer" || (identity == "reader" && call.needed == "read");
            if allowed {
                assert!(!stderr.contains("permission denied"), "{identity} {:?} was denied: {stderr}", call.args);
            } else {
                let expected =
                    format!("permission denied: identity {identity} needs {} on {}", call.needed, call.resource);
                assert!(!output.status.success(), "{identity} {:?} succeeded", call.args);
                assert!(stderr.contains(&expected), "{identity} {:?}: expected {expected:?} in {stderr}", call.args);
                assert!(stderr.contains("distsync acl grant"), "the denial says how to grant: {stderr}");
            }
        }
    }
    Ok(())
}

async fn disable_cuts_off_a_live_client(cluster: &Cluster) -> anyhow::Result<()> {
    admin(cluster, &["acl", "grant", "worker", "kv:", "write"]).await?;
    admin(cluster, &["acl", "grant", "worker", "lock:", "write"]).await?;
    let worker = cluster.client_as("worker").await?;
    worker.kv().put("work", "1").await?;
    let guard = worker.lock("work-lock").acquire().await?;

    admin(cluster, &["identity", "disable", "worker"]).await?;
    let refused = worker.kv().put("work", "2").await.expect_err("a disabled identity's next write");
    assert!(matches!(refused.kind(), ErrorKind::PermissionDenied { .. }), "{refused:?}");
    assert!(refused.to_string().contains("identity worker is disabled"), "{refused}");
    let show = admin(cluster, &["lock", "show", "work-lock"]).await?;
    assert!(String::from_utf8_lossy(&show.stdout).contains("is free"), "the disabled identity's lock was released");
    let listed = admin(cluster, &["identity", "list", "--json"]).await?;
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout)?;
    let entry = listed.as_array().and_then(|all| all.iter().find(|i| i["identity"] == "worker")).cloned();
    assert_eq!(entry.unwrap_or_default()["disabled"], true, "{listed}");
    drop(guard);

    admin(cluster, &["identity", "enable", "worker"]).await?;
    // The old session ended with the disable; the first write learns that, the next opens a new one.
    if let Err(error) = worker.kv().put("work", "3").await {
        assert!(matches!(error.kind(), ErrorKind::SessionExpired { .. }), "after enable: {error:?}");
        worker.kv().put("work", "3").await?;
    }
    assert_eq!(worker.kv().get("work").await?, Some(b"3".to_vec()));
    worker.close().await;
    Ok(())
}

/// One client per node as `identity`, each sending its cache requests to that node.
async fn homed_clients(cluster: &Cluster, identity: &str) -> anyhow::Result<Vec<(u64, Client)>> {
    let tls = cluster.identity_tls(identity).await?;
    let mut clients = Vec::new();
    for id in cluster.ids() {
        let options = ClientOptions::new(cluster.endpoints(), tls.clone()).home(cluster.endpoint(id));
        clients.push((id, Client::connect_with(options).await?));
    }
    Ok(clients)
}

/// The command line as the admin; it must succeed.
async fn admin(cluster: &Cluster, args: &[&str]) -> anyhow::Result<Output> {
    let output = cluster.run_cli(args).await?;
    anyhow::ensure!(output.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    Ok(output)
}
