//! # distsync-harness
//!
//! Clusters of real `distsync` processes on loopback, for `distsync dev`, `distsync bench
//! failover` and the cluster tests: one harness, so that what a developer runs and what the tests
//! run start nodes the same way.
//!
//! [`Cluster`] starts N nodes of the `distsync` binary, each with its own data directory and log
//! file, in a fresh temporary directory (or one the caller names), on ports the kernel picked (or
//! fixed ones). It kills nodes with SIGKILL, restarts them on the same disk, stops them cleanly,
//! cuts Raft traffic between groups of nodes through the nodes' fault-injection switch, runs the
//! command line against them, and watches the nodes' own status to know when the cluster has
//! settled. [`Redis`] is a real `redis-server` for the cache.
//!
//! ## Layout
//!
//! - `cluster.rs`: [`Cluster`] and [`ClusterOptions`]: layout, start, kill, restart, stop;
//! - `waits.rs`: statuses and waits (a leader, an applied index, converged replicas);
//! - `faults.rs`: partitions; `cli.rs`: the command line; `raw.rs`: a bare connection;
//! - `identity.rs`: client identities (certificates from the cluster CA, clients presenting them);
//! - `network.rs`: [`Network`], a namespace per node on a bridge, with packet filters;
//! - `redis.rs`: [`Redis`]; `process.rs`: child processes, deadlines, free ports;
//! - `freshness.rs`: refusing a `distsync` binary older than its sources.
//!
//! Everything is per cluster (directory, ports, processes), so clusters run side by side. A
//! cluster dropped after a failure (see [`Cluster::finish`]) keeps its directory and prints the
//! tail of every node's log; `DISTSYNC_TEST_KEEP=1` keeps the directories of passing runs too.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use distsync_harness::{Cluster, ClusterOptions};
//! use std::time::Duration;
//!
//! let cluster = Cluster::start(3, ClusterOptions::default()).await?;
//! let leader = cluster.wait_for_leader(&[1, 2, 3], Duration::from_secs(20)).await?;
//! cluster.client().await?.kv().put("k", "v").await?;
//! cluster.kill(leader)?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod cli;
mod cluster;
mod faults;
mod freshness;
mod identity;
mod network;
mod process;
mod raw;
mod redis;
mod waits;

pub use self::cluster::{Cluster, ClusterOptions};
pub use self::network::{Filter, Network, NODE_PORT};
pub use self::process::{describe_output, free_udp_ports, is_root};
pub use self::raw::RawConnection;
pub use self::redis::{Fsync, Redis};
pub use self::waits::describe_statuses;
