//! Cluster tests over real `distsync` processes on loopback.
//!
//! The process harness is `distsync-harness` (the same one `distsync dev` runs): [`Cluster`]
//! starts N nodes of the `distsync` binary, each with its own data directory and log file
//! inside a fresh temporary directory, on UDP ports the kernel picked. Tests kill nodes with
//! SIGKILL, restart them on the same disk, cut Raft traffic between groups of nodes through the
//! nodes' fault-injection switch (`--enable-fault-injection`), and watch the nodes' own status to
//! know when the cluster has settled.
//!
//! ## Layout
//!
//! - `src/lib.rs`: the harness's types, and helpers only tests need ([`wait_for_lock`]).
//! - `src/linearizability.rs`: recorded register histories, checked by `distsync-torture`'s checker.
//! - `tests/*.rs`: one behaviour per file, each opening with the behaviour it pins down; all of
//!   them are modules of one test binary, `cluster` (`tests/main.rs`).
//!
//! The binary is not built by `cargo test -p distsync-cluster-tests` (a test crate cannot depend
//! on another package's binary): run `cargo build -p distsync-cli` first, with the same
//! profile, or point `DISTSYNC_BIN` at a binary.
//!
//! Everything is per cluster (directory, ports, processes), so tests run in parallel. Waiting
//! polls each node's status with a short pause under a deadline: there is no event to await
//! across processes. A failing test keeps its directory and prints the tail of every node's log;
//! `DISTSYNC_TEST_KEEP=1` keeps the directories of passing tests too.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use distsync_cluster_tests::{Cluster, ClusterOptions};
//! use std::time::Duration;
//!
//! let cluster = Cluster::start(3, ClusterOptions::default()).await?;
//! let leader = cluster.wait_for_leader(&[1, 2, 3], Duration::from_secs(20)).await?;
//! cluster.client().await?.kv().put("k", "v").await?;
//! cluster.kill(leader)?;
//! # Ok(()) }
//! ```

pub mod linearizability;

use std::time::{Duration, Instant};

use anyhow::bail;
use distsync::{Client, LockInfo};
pub use distsync_harness::{
    describe_output, describe_statuses, free_udp_ports, Cluster, ClusterOptions, Filter, Network, RawConnection, Redis,
};

/// Pause between two polls of a lock's state.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Polls `client.lock_show(name)` until `condition` accepts what it shows (`None`: nobody holds
/// or awaits the lock), and returns that. A read that fails counts as "not yet": the cluster may
/// be electing a leader. `what` names the awaited state in the error.
///
/// # Errors
///
/// At the deadline, with the last state shown or the last error.
pub async fn wait_for_lock(
    client: &Client,
    name: &str,
    timeout: Duration,
    what: &str,
    condition: impl Fn(Option<&LockInfo>) -> bool,
) -> anyhow::Result<Option<LockInfo>> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match client.lock_show(name).await {
            Ok(shown) if condition(shown.as_ref()) => return Ok(shown),
            Ok(shown) => format!("{shown:?}"),
            Err(error) => format!("error {error}"),
        };
        if Instant::now() >= deadline {
            bail!("lock {name:?} did not reach the state \"{what}\" within {timeout:?}; last seen: {last}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
