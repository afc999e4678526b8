//! Each checker catches the bug it is for: nodes started with `--inject-bug` break one
//! guarantee on purpose, and a short run of the fault suite must report a violation from the
//! matching checker (and the run must not pass). Where the bug shows only when a fault lands at
//! the right moment (a put lost with its leader, an answer lost with a killed node), the run is
//! repeated with the next seed, a few times at most: the claim is "caught within a minute of
//! faults", not "caught by one particular seed".

use std::time::Duration;

use distsync_torture::report::Report;
use distsync_torture::run::{run, RunConfig};
use distsync_torture::schedule::FaultKind;
use distsync_torture::workload::Primitive;

/// Runs with `bug` until `checker` reports a violation, at most `attempts` seeds; returns the
/// report that showed it.
async fn caught(
    bug: &str,
    checker: &str,
    workload: Primitive,
    faults: &[FaultKind],
    seconds: u64,
    attempts: u64,
) -> anyhow::Result<Report> {
    for seed in 1..=attempts {
        let config = RunConfig {
            seed,
            duration: Duration::from_secs(seconds),
            nodes: 3,
            faults: faults.to_vec(),
            workloads: vec![workload],
            clients: 3,
            recovery_bound: Duration::from_secs(30),
            binary: None,
            directory: None,
            node_args: vec!["--inject-bug".into(), bug.into()],
            // The bugs are in the nodes, not the network: loopback is enough, and runs unprivileged.
            namespaces: false,
        };
        let finished = run(&config).await?;
        let report = finished.report.clone();
        finished.stop();
        let found = report.violations.iter().filter(|violation| violation.checker == checker).count();
        eprintln!("--inject-bug {bug}, seed {seed}: {found} {checker} violations of {}", report.violations.len());
        if found > 0 {
            assert!(!report.passed(), "a run with violations does not pass");
            return Ok(report);
        }
    }
    anyhow::bail!("--inject-bug {bug}: the {checker} checker found nothing in {attempts} runs of {seconds} s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_without_a_read_index_fail_the_register_check() -> anyhow::Result<()> {
    let report =
        caught("stale-reads", "cache", Primitive::Cache, &[FaultKind::Partition, FaultKind::Pause], 10, 3).await?;
    let shown = &report.violations.iter().find(|violation| violation.checker == "cache").expect("found").window;
    assert!(shown.contains("read"), "the window shows the operations: {shown}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_acknowledged_before_they_commit_fail_the_register_check() -> anyhow::Result<()> {
    caught("early-ack", "kv", Primitive::Kv, &[], 8, 3).await.map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_acknowledged_before_they_commit_lose_messages_with_their_leader() -> anyhow::Result<()> {
    caught("early-ack", "queue", Primitive::Queue, &[FaultKind::Kill, FaultKind::KillAll], 15, 4).await.map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_granted_to_waiters_fail_the_lock_check() -> anyhow::Result<()> {
    caught("grant-queued", "lock", Primitive::Lock, &[], 8, 3).await.map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgotten_session_answers_apply_retried_puts_twice() -> anyhow::Result<()> {
    caught("forget-answers", "sessions", Primitive::Queue, &[FaultKind::KillAll, FaultKind::Kill], 20, 4)
        .await
        .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_never_fsynced_loses_acknowledged_writes_in_a_power_cut() -> anyhow::Result<()> {
    // A SIGKILL leaves the kernel's page cache, so only a power cut (every data directory on the
    // power-cut filesystem; needs root) can tell.
    anyhow::ensure!(distsync_harness::is_root(), "power cuts mount FUSE filesystems and need root (CI has it)");
    caught("skip-fsync", "kv", Primitive::Kv, &[FaultKind::Power], 20, 4).await.map(drop)
}
