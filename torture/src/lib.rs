//! # distsync-torture
//!
//! A randomized fault suite: real `distsync` nodes (and a real Redis), a mixed workload of
//! every primitive from several clients, faults drawn from a seed, and history checkers that
//! decide whether what the clients saw is what distsync promises.
//!
//! ## Layout
//!
//! - `check/`: the checkers, pure functions of a recorded history, one module per guarantee;
//! - `history.rs`: the record, and the fenced resource the locks guard;
//! - `workload/`: the clients, one file per primitive;
//! - `schedule.rs`: the seeded fault schedule; `faults.rs`: injecting and healing it;
//!   `disk.rs`: the small filesystem of the full-disk fault; `power/`: the power-cut filesystem;
//! - `run.rs`: one run from start to verdict; `report.rs`: the table, JSON and violation windows;
//! - `random.rs`: the seeded generator.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use distsync_torture::run::{run, RunConfig};
//! use distsync_torture::schedule::FaultKind;
//! use distsync_torture::workload::Primitive;
//! use std::time::Duration;
//!
//! let config = RunConfig {
//!     seed: 1, duration: Duration::from_secs(30), nodes: 3,
//!     faults: FaultKind::ALL.to_vec(), workloads: Primitive::ALL.to_vec(), clients: 3,
//!     recovery_bound: Duration::from_secs(5), binary: None, directory: None, node_args: Vec::new(),
//!     namespaces: true,
//! };
//! let finished = run(&config).await?;
//! println!("{}", finished.report.table());
//! let passed = finished.report.passed();
//! finished.stop(); // the cluster's files stay when the run failed
//! assert!(passed);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod check;
pub mod disk;
pub mod faults;
pub mod history;
pub mod power;
pub mod random;
pub mod report;
pub mod run;
pub mod schedule;
pub mod workload;
