//! The replicated register is linearizable, including across a leader SIGKILL: concurrent clients
//! put unique values and get keys; the recorded history (invocation and return times, results)
//! must have a linearization per key. A `get` never returns a value older than a write that was
//! acknowledged before the `get` began, and never one that was not written.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use distsync::Client;
use distsync_cluster_tests::linearizability::{check, timeline, Action, Operation};
use distsync_cluster_tests::{Cluster, ClusterOptions};
use tokio::sync::Notify;

const WORKERS: usize = 4;
const KEYS: u64 = 3;
/// Operations before the leader is killed, and in all.
const OPERATIONS_BEFORE_KILL: usize = 200;
const OPERATIONS_TOTAL: usize = 600;
const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Far more than the test needs; bounds the run if the cluster stops making progress.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_and_puts_stay_linearizable_across_a_leader_kill() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, ClusterOptions::default()).await?;
    let outcome = scenario(&cluster).await;
    cluster.finish(outcome)
}

async fn scenario(cluster: &Cluster) -> anyhow::Result<()> {
    let leader = cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let history: Arc<Mutex<Vec<Operation>>> = Arc::default();
    let completed = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(Notify::new());
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..WORKERS {
        let client = cluster.client().await?;
        workers.spawn(run_worker(worker, client, history.clone(), completed.clone(), progress.clone(), started));
    }

    let deadline = started + RUN_TIMEOUT;
    loop {
        // Registered before the check, so a notification in between is not lost.
        let notified = progress.notified();
        if completed.load(Ordering::Relaxed) >= OPERATIONS_BEFORE_KILL {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        anyhow::ensure!(
            tokio::time::timeout(left, notified).await.is_ok(),
            "only {} operations completed before the kill",
            completed.load(Ordering::Relaxed)
        );
    }
    cluster.kill(leader)?;
    let survivors: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != leader).collect();
    let new_leader = cluster.wait_for_leader(&survivors, ELECTION_TIMEOUT).await?;
    assert_ne!(new_leader, leader);
    while let Some(joined) = workers.join_next().await {
        joined?;
    }

    let history = std::mem::take(&mut *history.lock().expect("history lock"));
    let reads_of_values = history.iter().filter(|op| matches!(op.action, Action::Read(Some(_)))).count();
    let acknowledged_writes =
        history.iter().filter(|op| matches!(op.action, Action::Write(_)) && op.returned.is_some()).count();
    assert!(reads_of_values >= 50, "too few reads saw a value ({reads_of_values}) to test anything");
    assert!(acknowledged_writes >= 50, "too few writes were acknowledged ({acknowledged_writes})");
    if let Err(violation) = check(&history) {
        eprintln!("{}", timeline(&history, &violation.key, started));
        anyhow::bail!("the history of key {:?} is not linearizable", String::from_utf8_lossy(&violation.key));
    }
    Ok(())
}

/// Random puts and gets until the total reaches [`OPERATIONS_TOTAL`].
async fn run_worker(
    worker: usize,
    client: Client,
    history: Arc<Mutex<Vec<Operation>>>,
    completed: Arc<AtomicUsize>,
    progress: Arc<Notify>,
    started: Instant,
) {
    let kv = client.kv();
    // xorshift: deterministic per worker, no dependency needed.
    let mut random = 0x9e37_79b9_7f4a_7c15u64 ^ (worker as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let mut sequence = 0u64;
    while completed.load(Ordering::Relaxed) < OPERATIONS_TOTAL && started.elapsed() < RUN_TIMEOUT {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        let key = format!("lin-{}", random % KEYS).into_bytes();
        let invoked = Instant::now();
        let operation = if random.is_multiple_of(2) {
            sequence += 1;
            let value = format!("w{worker}-{sequence}").into_bytes();
            let result = kv.put(&key, &value).await;
            Operation { key, action: Action::Write(value), invoked, returned: result.ok().map(|_| Instant::now()) }
        } else {
            match kv.get(&key).await {
                Ok(value) => Operation { key, action: Action::Read(value), invoked, returned: Some(Instant::now()) },
                // A failed read returned nothing: it constrains nothing.
                Err(_) => continue,
            }
        };
        history.lock().expect("history lock").push(operation);
        completed.fetch_add(1, Ordering::Relaxed);
        progress.notify_waiters();
    }
    client.close().await;
}
