//! The replicated register is linearizable, including across a leader SIGKILL: concurrent clients
//! put unique values and get keys; the recorded history (invocation and return times, results)
//! must have a linearization per key. A `get` never returns a value older than a write that was
//! acknowledged before the `get` began, and never one that was not written.

use std::time::{Duration, Instant};

use distsync_cluster_tests::linearizability::{Recorder, Workload};
use distsync_cluster_tests::{Cluster, ClusterOptions};

const WORKERS: usize = 4;
/// Operations before the leader is killed.
const OPERATIONS_BEFORE_KILL: usize = 200;
const WORKLOAD: Workload = Workload {
    keys: 3,
    writes_one_in: 2,
    operations: 600,
    // Far more than the test needs; bounds the run if the cluster stops making progress.
    timeout: Duration::from_secs(120),
};
const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_and_puts_stay_linearizable_across_a_leader_kill() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, ClusterOptions::default()).await?;
    let outcome = scenario(&cluster).await;
    cluster.finish(outcome)
}

async fn scenario(cluster: &Cluster) -> anyhow::Result<()> {
    cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let recorder = Recorder::new(WORKLOAD);
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..WORKERS {
        let client = cluster.client().await?;
        workers.spawn(recorder.clone().run_worker(worker, client.clone(), client.kv()));
    }
    recorder.wait_for(OPERATIONS_BEFORE_KILL).await?;
    let (_, term) = cluster.kill_leader(ELECTION_TIMEOUT).await?;
    let killed_at = Instant::now();
    cluster.wait_for_new_leader(term, ELECTION_TIMEOUT).await?;
    while let Some(joined) = workers.join_next().await {
        joined?;
    }
    recorder.verify_across(killed_at, 50, 50, 50)
}
