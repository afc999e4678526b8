//! The queue command line's contract for scripts.
//!
//! - `queue put NAME DATA` and `queue put NAME` (stdin) print the message id; `--dedup-id` twice
//!   prints the same id.
//! - `queue get NAME` prints the body alone; `--json` adds id, tag and attempt; nothing there:
//!   exit status 1 and nothing on stdout. Without `--ack` the delivery outlives the process, so
//!   `queue ack NAME TAG` from another process settles it; a second ack of the tag fails with
//!   "not current".
//! - `queue consume NAME --count N -- CMD` feeds each body to CMD, acks on status 0 and nacks
//!   otherwise: a message CMD keeps failing comes back to the head until its attempts are spent,
//!   then sits in `NAME.dlq`.
//! - `queue create` sets options that `queue stats --json` shows; `queue list --json` lists the
//!   queues; `queue delete` prints how many messages went, after which `queue stats` fails
//!   naming the queue.

use std::process::{Output, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use distsync::wire::QueueStats;
use distsync_cluster_tests::{describe_output, Cluster, ClusterOptions};
use tokio::io::AsyncWriteExt as _;

const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_command_line_contract() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, ClusterOptions::default()).await?;
    let outcome = scenario(&cluster).await;
    cluster.finish(outcome)
}

fn stdout(output: &Output) -> anyhow::Result<String> {
    anyhow::ensure!(output.status.success(), "command failed: {}", describe_output(output));
    Ok(String::from_utf8(output.stdout.clone())?)
}

fn id_of(output: &Output) -> anyhow::Result<u64> {
    let text = stdout(output)?;
    text.trim().parse().with_context(|| format!("expected a message id, got {text:?}"))
}

async fn stats(cluster: &Cluster, name: &str) -> anyhow::Result<QueueStats> {
    let output = cluster.run_cli(&["queue", "stats", name, "--json"]).await?;
    Ok(serde_json::from_str(&stdout(&output)?)?)
}

async fn scenario(cluster: &Cluster) -> anyhow::Result<()> {
    cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;

    let first = id_of(&cluster.run_cli(&["queue", "put", "jobs", "hello"]).await?)?;
    let from_stdin = {
        let mut command = tokio::process::Command::new(cluster.binary());
        command
            .arg("--endpoints")
            .arg(cluster.endpoints().join(","))
            .arg("--ca")
            .arg(cluster.ca_path())
            .args(["queue", "put", "jobs"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn()?;
        let mut stdin = child.stdin.take().context("stdin")?;
        stdin.write_all(b"line one\nline two").await?;
        drop(stdin);
        let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await??;
        id_of(&output)?
    };
    assert!(from_stdin > first, "ids increase: {first} then {from_stdin}");
    let deduped = id_of(&cluster.run_cli(&["queue", "put", "jobs", "charge", "--dedup-id", "order-1"]).await?)?;
    let repeat = id_of(&cluster.run_cli(&["queue", "put", "jobs", "charge again", "--dedup-id", "order-1"]).await?)?;
    assert_eq!(deduped, repeat, "a repeated dedup id prints the first id");
    assert_eq!(stats(cluster, "jobs").await?.depth, 3);

    // get --json, then ack from another process.
    let got = cluster.run_cli(&["queue", "get", "jobs", "--json"]).await?;
    let delivery: serde_json::Value = serde_json::from_str(&stdout(&got)?)?;
    assert_eq!(delivery["id"], first);
    assert_eq!(delivery["body"], "hello");
    assert_eq!(delivery["attempt"], 1);
    let tag = delivery["tag"].as_u64().context("the JSON has a tag")?.to_string();
    let jobs = stats(cluster, "jobs").await?;
    assert_eq!((jobs.depth, jobs.in_flight), (2, 1), "the delivery outlived `queue get`: {jobs:?}");
    let acked = cluster.run_cli(&["queue", "ack", "jobs", &tag]).await?;
    assert!(acked.status.success(), "{}", describe_output(&acked));
    let again = cluster.run_cli(&["queue", "ack", "jobs", &tag]).await?;
    assert_eq!(again.status.code(), Some(1), "{}", describe_output(&again));
    assert!(String::from_utf8_lossy(&again.stderr).contains("not current"), "{}", describe_output(&again));

    // get prints the body alone; --ack settles it at once.
    let body = cluster.run_cli(&["queue", "get", "jobs", "--ack"]).await?;
    assert_eq!(stdout(&body)?, "line one\nline two\n");
    let charge = cluster.run_cli(&["queue", "get", "jobs", "--ack", "--wait", "5"]).await?;
    assert_eq!(stdout(&charge)?, "charge\n");
    let empty = cluster.run_cli(&["queue", "get", "jobs", "--wait", "0.2"]).await?;
    assert_eq!(empty.status.code(), Some(1), "nothing there exits 1: {}", describe_output(&empty));
    assert!(empty.stdout.is_empty(), "nothing on stdout when nothing arrived");
    let jobs = stats(cluster, "jobs").await?;
    assert_eq!((jobs.depth, jobs.in_flight, jobs.acked_total), (0, 0, 3), "{jobs:?}");

    // consume with a command: status 0 acks, anything else nacks.
    let sink = cluster.directory().join("consumed");
    for body in ["fail", "a", "b"] {
        cluster.run_cli(&["queue", "put", "work", body]).await?;
    }
    let script = format!(r#"body=$(cat); echo "$body $DISTSYNC_ATTEMPT" >> '{}'; [ "$body" != fail ]"#, sink.display());
    let consumed = cluster.run_cli(&["queue", "consume", "work", "--count", "2", "--", "sh", "-c", &script]).await?;
    assert!(consumed.status.success(), "{}", describe_output(&consumed));
    let lines = std::fs::read_to_string(&sink)?;
    assert_eq!(
        lines, "fail 1\nfail 2\nfail 3\nfail 4\nfail 5\na 1\nb 1\n",
        "the failing message was nacked back to the head until its 5 attempts were spent, then the rest in order"
    );
    let work = stats(cluster, "work").await?;
    assert_eq!((work.acked_total, work.depth, work.dead_lettered), (2, 0, 1), "{work:?}");
    assert_eq!(stats(cluster, "work.dlq").await?.depth, 1, "the failing message is in work.dlq");

    // create, list, delete.
    let created = cluster
        .run_cli(&[
            "queue",
            "create",
            "tuned",
            "--max-attempts",
            "3",
            "--visibility",
            "7.5",
            "--max-message-bytes",
            "64",
        ])
        .await?;
    assert!(stdout(&created)?.contains("created"));
    let tuned = stats(cluster, "tuned").await?;
    assert_eq!(
        (tuned.options.max_attempts, tuned.options.visibility_ms, tuned.options.max_message_bytes),
        (3, 7_500, 64)
    );
    let too_big = cluster.run_cli(&["queue", "put", "tuned", &"x".repeat(65)]).await?;
    assert_eq!(too_big.status.code(), Some(1), "{}", describe_output(&too_big));
    assert!(String::from_utf8_lossy(&too_big.stderr).contains("exceeds"), "{}", describe_output(&too_big));
    let listed = cluster.run_cli(&["queue", "list", "--json"]).await?;
    let queues: Vec<QueueStats> = serde_json::from_str(&stdout(&listed)?)?;
    let names: Vec<&str> = queues.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(names, ["jobs", "tuned", "work", "work.dlq"], "queues in name order");
    let deleted = cluster.run_cli(&["queue", "delete", "work.dlq"]).await?;
    assert_eq!(stdout(&deleted)?.trim(), "1", "the dead letter went with the queue");
    let deleted = cluster.run_cli(&["queue", "delete", "work"]).await?;
    assert_eq!(stdout(&deleted)?.trim(), "0");
    let gone = cluster.run_cli(&["queue", "stats", "work"]).await?;
    assert_eq!(gone.status.code(), Some(1), "{}", describe_output(&gone));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("\"work\" does not exist"), "{}", describe_output(&gone));
    Ok(())
}
