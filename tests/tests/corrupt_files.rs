//! A node whose files are damaged refuses to start, says what is wrong and what to do, and
//! heals from its peers once given an empty data directory; nothing damaged is ever served.
//!
//! On one follower of a three-node cluster (snapshots every 20 entries), in turn:
//!
//! 1. a bit flipped in the middle of its snapshot file,
//! 2. its snapshot file cut to half its length,
//! 3. a bit flipped inside a log entry (a kv value written last, found by its bytes in the
//!    Raft log file),
//! 4. the Raft log file's last 4 KiB cut off (a torn tail).
//!
//! After 1–2 the node exits non-zero and its log names the file, the damage (checksum mismatch,
//! truncated) and the remedy; the majority keeps committing. The test then does what the
//! message says (moves the data directory aside, starts the node empty) and the node catches up:
//! every node's state digest is equal and the cluster serves every key. After 3–4 the node
//! either refuses the same way, or recovers by itself: redb checks its pages' checksums when it
//! opens a file that was not closed cleanly and falls back to the previous commit when the last
//! one is damaged (a torn commit); a flipped bit it does not see is caught by the checksum each
//! log entry carries. Either way it must then agree with its peers (equal state digests).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use distsync_cluster_tests::{Cluster, ClusterOptions};

const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);
/// A value whose bytes occur nowhere else in the log file.
const MARKER: &[u8] = b"corrupt-files-marker:0123456789abcdefghijklmnopqrstuvwxyz";

#[derive(Debug, Clone, Copy)]
enum Damage {
    FlipSnapshot,
    TruncateSnapshot,
    FlipLogEntry,
    TearLogTail,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_files_are_refused_and_the_node_heals_from_its_peers() -> anyhow::Result<()> {
    let cluster =
        Cluster::start(3, ClusterOptions { snapshot_threshold: Some(20), ..ClusterOptions::default() }).await?;
    let outcome = scenario(&cluster).await;
    cluster.finish(outcome)
}

async fn scenario(cluster: &Cluster) -> anyhow::Result<()> {
    let leader = cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let follower = cluster.ids().into_iter().find(|&id| id != leader).expect("three nodes");
    let client = cluster.client().await?;
    let mut written = 0;
    for damage in [Damage::FlipSnapshot, Damage::TruncateSnapshot, Damage::FlipLogEntry, Damage::TearLogTail] {
        // Enough writes for a snapshot on every node, then the marker last, in the log.
        for _ in 0..60 {
            client.kv().put(format!("key-{written}"), format!("value-{written}")).await?;
            written += 1;
        }
        client.kv().put("marker", MARKER).await?;
        let statuses = cluster.wait_applied_equal(&cluster.ids(), CONVERGE_TIMEOUT).await?;
        let follower_status = statuses.iter().find(|s| s.id == follower).expect("asked of every node");
        anyhow::ensure!(follower_status.snapshot > 0, "node {follower} has no snapshot yet: {follower_status:?}");

        cluster.kill(follower)?;
        let data = cluster.data_directory(follower);
        damage_files(&data, damage)?;
        let log_before = std::fs::metadata(cluster.log_path(follower))?.len();
        cluster.spawn_node(follower)?;
        match wait_for_exit_or_serving(cluster, follower).await? {
            Some(code) => {
                anyhow::ensure!(code != 0, "{damage:?}: the node exited with status 0");
                let log = std::fs::read(cluster.log_path(follower))?;
                let said = String::from_utf8_lossy(&log[log_before as usize..]).into_owned();
                let what = match damage {
                    Damage::FlipSnapshot => vec!["cannot use its snapshot", "checksum mismatch"],
                    Damage::TruncateSnapshot => vec!["cannot use its snapshot", "truncated"],
                    Damage::FlipLogEntry => vec!["cannot use its Raft log", "corrupt"],
                    Damage::TearLogTail => vec!["cannot use its Raft log", "damaged, truncated"],
                };
                for words in what.into_iter().chain(["move this node's data directory aside"]) {
                    anyhow::ensure!(said.contains(words), "{damage:?}: the node's last words lack {words:?}:\n{said}");
                }
                eprintln!("{damage:?}: refused: {}", said.lines().last().unwrap_or_default());
                // The majority keeps committing meanwhile.
                client.kv().put("while-refused", format!("{damage:?}")).await?;
                // What the message says to do: move the data aside, start empty.
                std::fs::rename(&data, data.with_extension(format!("damaged-{written}")))?;
                std::fs::create_dir(&data)?;
                cluster.restart(follower).await?;
            }
            None => {
                anyhow::ensure!(
                    matches!(damage, Damage::FlipLogEntry | Damage::TearLogTail),
                    "{damage:?}: the node started on a damaged snapshot instead of refusing it"
                );
                // The storage engine fell back to its previous commit (the damaged one is
                // treated as torn); the node must then agree with its peers, checked below.
                eprintln!("{damage:?}: the node recovered by itself");
            }
        }
        client.kv().put("after", format!("{damage:?}")).await?;
        cluster.wait_applied_equal(&cluster.ids(), CONVERGE_TIMEOUT).await?;
        let reader = cluster.client_for(&[follower]).await?;
        for key in [0, written / 2, written - 1] {
            let value = reader.kv().get(format!("key-{key}")).await?;
            anyhow::ensure!(
                value.as_deref() == Some(format!("value-{key}").as_bytes()),
                "{damage:?}: key-{key} on node {follower} after healing: {value:?}"
            );
        }
        anyhow::ensure!(reader.kv().get("marker").await?.as_deref() == Some(MARKER), "{damage:?}: the marker");
    }
    Ok(())
}

fn damage_files(data: &Path, damage: Damage) -> anyhow::Result<()> {
    let snapshot = data.join("snapshots").join("snapshot.bin");
    let log = data.join("raft.redb");
    match damage {
        Damage::FlipSnapshot => {
            let mut bytes = std::fs::read(&snapshot).context("the follower's snapshot")?;
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x04;
            std::fs::write(&snapshot, bytes)?;
        }
        Damage::TruncateSnapshot => {
            let bytes = std::fs::read(&snapshot).context("the follower's snapshot")?;
            std::fs::write(&snapshot, &bytes[..bytes.len() / 2])?;
        }
        Damage::FlipLogEntry => {
            let mut bytes = std::fs::read(&log)?;
            // Every copy (the storage engine writes pages anew, so old copies may linger).
            let at: Vec<usize> =
                bytes.windows(MARKER.len()).enumerate().filter(|(_, w)| *w == MARKER).map(|(i, _)| i).collect();
            anyhow::ensure!(!at.is_empty(), "the marker is not in the follower's log file");
            for position in at {
                bytes[position + MARKER.len() / 2] ^= 0x01;
            }
            std::fs::write(&log, bytes)?;
        }
        Damage::TearLogTail => {
            let file = std::fs::OpenOptions::new().write(true).open(&log)?;
            let length = file.metadata()?.len();
            file.set_len(length.saturating_sub(4096))?;
        }
    }
    Ok(())
}

/// `Some(exit code)` if node `id` exits within [`EXIT_TIMEOUT`], `None` once it serves.
async fn wait_for_exit_or_serving(cluster: &Cluster, id: u64) -> anyhow::Result<Option<i32>> {
    let deadline = Instant::now() + EXIT_TIMEOUT;
    loop {
        if let Some(exit) = cluster.exit_status(id) {
            return Ok(Some(exit.code().unwrap_or(-1)));
        }
        if cluster.status(id).await.is_ok_and(|status| status.applied > 0) {
            return Ok(None);
        }
        anyhow::ensure!(Instant::now() < deadline, "node {id} neither exited nor served within {EXIT_TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
