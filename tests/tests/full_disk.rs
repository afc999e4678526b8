//! A node whose disk fills up stops for good, saying why, and exits non-zero so that its
//! supervisor can restart it; the others keep committing; once there is space again the
//! restarted node recovers from its log and catches up.
//!
//! One follower's data directory is a small tmpfs (a real filesystem that runs out of space,
//! mounted here as root); 1 MiB writes fill it.

use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use distsync_cluster_tests::{Cluster, ClusterOptions};

const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

/// A tmpfs mounted on a directory, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(path: &std::path::Path, size: &str) -> anyhow::Result<SmallDisk> {
        run(Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(path))?;
        Ok(SmallDisk(path.to_path_buf()))
    }

    fn grow(&self, size: &str) -> anyhow::Result<()> {
        run(Command::new("mount").args(["-o", &format!("remount,size={size}")]).arg(&self.0))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command.output().with_context(|| format!("cannot run {command:?}"))?;
    anyhow::ensure!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_disk_is_full_exits_and_recovers_once_there_is_space() -> anyhow::Result<()> {
    anyhow::ensure!(distsync_harness::is_root(), "this test mounts a tmpfs and must run as root (CI does)");
    let cluster = Cluster::start(3, ClusterOptions::default()).await?;
    let outcome = scenario(&cluster).await;
    cluster.finish(outcome)
}

async fn scenario(cluster: &Cluster) -> anyhow::Result<()> {
    let leader = cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let follower = cluster.ids().into_iter().find(|&id| id != leader).expect("three nodes");
    let client = cluster.client().await?;
    client.kv().put("before", "1").await?;

    // Move the follower's data onto a 12 MiB disk.
    cluster.kill(follower)?;
    let data = cluster.data_directory(follower);
    let saved = data.with_extension("saved");
    std::fs::rename(&data, &saved)?;
    std::fs::create_dir(&data)?;
    let disk = SmallDisk::mount(&data, "12m")?;
    run(Command::new("cp").arg("-a").arg(format!("{}/.", saved.display())).arg(&data))?;
    cluster.restart(follower).await?;

    // 1 MiB values until the follower's disk is full: it stops and exits non-zero, saying why.
    let mut written = 0;
    let exit = loop {
        anyhow::ensure!(written < 200, "200 MiB written and node {follower} still runs on a 12 MiB disk");
        client.kv().put(format!("large-{}", written % 8), vec![written as u8; 1024 * 1024]).await?;
        written += 1;
        if let Some(exit) = cluster.exit_status(follower) {
            break exit;
        }
    };
    assert!(exit.code().is_some_and(|code| code != 0), "a node that cannot write its log exits non-zero: {exit}");
    let log = std::fs::read_to_string(cluster.log_path(follower))?;
    assert!(
        log.contains("a full or failing disk"),
        "the log says why the node stopped:\n{}",
        cluster.log_tail(follower, 20)
    );

    // The majority keeps committing without it.
    client.kv().put("during", "2").await?;

    // Space again: restarted, it recovers from its log and catches up.
    disk.grow("512m")?;
    cluster.restart(follower).await?;
    client.kv().put("after", "3").await?;
    cluster.wait_applied_equal(&cluster.ids(), CONVERGE_TIMEOUT).await?;
    let reader = cluster.client_for(&[follower]).await?;
    for (key, value) in [("before", "1"), ("during", "2"), ("after", "3")] {
        assert_eq!(reader.kv().get(key).await?.as_deref(), Some(value.as_bytes()), "{key} on node {follower}");
    }
    drop(reader);
    cluster.stop();
    drop(disk);
    Ok(())
}
