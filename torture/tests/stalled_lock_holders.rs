//! A lock holder whose whole client stalls past its session lease (as in a long GC pause or
//! under SIGSTOP: keepalives stop too) loses the lock: the cluster refuses its late release, and
//! the lock check finds no two acknowledged holds overlapping. Run on a healthy cluster, so
//! every stall must end in a lapsed lease.

use std::time::Duration;

use distsync_torture::run::{run, RunConfig};
use distsync_torture::workload::Primitive;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_stalled_past_its_lease_loses_the_lock_and_its_release_is_refused() -> anyhow::Result<()> {
    // Stalls are drawn per hold, so a seed may draw none in a short run: try the next one.
    for seed in 1..=4 {
        let config = RunConfig {
            seed,
            duration: Duration::from_secs(20),
            nodes: 3,
            faults: vec![],
            workloads: vec![Primitive::Lock],
            clients: 3,
            recovery_bound: Duration::from_secs(30),
            binary: None,
            directory: None,
            node_args: vec![],
            namespaces: false,
        };
        let finished = run(&config).await?;
        let report = finished.report.clone();
        finished.stop();
        let stalls = report.stalls;
        eprintln!("seed {seed}: {stalls:?}, fenced {:?}", report.fenced);
        assert!(report.passed(), "violations: {:#?}", report.violations);
        assert_eq!(stalls.releases_refused, stalls.holds, "every stalled holder's lease lapsed: {stalls:?}");
        if stalls.holds > 0 {
            return Ok(());
        }
    }
    anyhow::bail!("no lock holder stalled in 4 runs of 20 s")
}
