//! An exclusive lock excludes: six clients, two per node, take the same lock in a loop, and no two
//! of their holds overlap in time (each hold is timed on the client, from the grant's arrival to
//! just before the release is sent, all in one process, so overlapping holds would show up as
//! overlapping intervals), fencing tokens strictly increase in the order the holds happened, and
//! every client gets its turn. The same holds when the leader is SIGKILLed mid-run: the lock keeps
//! changing hands through the new leader, still exclusive, with tokens that keep increasing
//! across the leader change.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use distsync::{Client, NodeId};
use distsync_cluster_tests::{Cluster, ClusterOptions};
use tokio::sync::watch;

const LOCK: &str = "mutex";
const CLIENTS_PER_NODE: usize = 2;
/// How long one client may wait for its turn; far more than six clients' turns take.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(20);
/// The "work" done under the lock: long enough that two holds granted at once would overlap
/// measurably.
const WORK: Duration = Duration::from_millis(20);
/// Holds to observe in the undisturbed run.
const HOLDS_UNDISTURBED: usize = 60;
/// Holds before the leader is killed, and holds that must start after the kill.
const HOLDS_PER_PHASE: usize = 15;
/// Per-call deadline of the clients in the failover run: a failover fits in it many times over.
const FAILOVER_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(90);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// One hold as its client saw it.
#[derive(Debug, Clone, Copy)]
struct Hold {
    client: usize,
    token: u64,
    /// Right after the grant arrived.
    start: Instant,
    /// Right before the release was sent.
    end: Instant,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_holds_never_overlap_and_tokens_increase() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, ClusterOptions::default()).await?;
    let outcome = undisturbed(&cluster).await;
    cluster.finish(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_holds_never_overlap_across_a_leader_kill() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, ClusterOptions::default()).await?;
    let outcome = across_leader_kill(&cluster).await;
    cluster.finish(outcome)
}

async fn undisturbed(cluster: &Cluster) -> anyhow::Result<()> {
    cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let mut clients = Vec::new();
    for id in cluster.ids() {
        for _ in 0..CLIENTS_PER_NODE {
            clients.push(cluster.client_for(&[id]).await?);
        }
    }
    let run = Run::start(clients);
    let mut holds = run.holds.subscribe();
    tokio::time::timeout(PROGRESS_TIMEOUT, holds.wait_for(|holds| holds.len() >= HOLDS_UNDISTURBED))
        .await
        .with_context(|| format!("fewer than {HOLDS_UNDISTURBED} holds within {PROGRESS_TIMEOUT:?}"))??;
    let holds = run.stop().await?;

    check_exclusive(&holds)?;
    // Fair: every client asks again at once after its release, so it queues behind all the
    // others, and each gets about an equal share (two turns of slack for the start and the end).
    let clients = cluster.ids().len() * CLIENTS_PER_NODE;
    let fair_share = holds.len() / clients - 2;
    for client in 0..clients {
        let count = holds.iter().filter(|hold| hold.client == client).count();
        assert!(
            count >= fair_share,
            "client {client} got the lock {count} times in {} holds, less than its share {fair_share}: waiters are not served in turn",
            holds.len()
        );
    }
    eprintln!("{} exclusive holds, none overlapping", holds.len());
    Ok(())
}

async fn across_leader_kill(cluster: &Cluster) -> anyhow::Result<()> {
    cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let ids = cluster.ids();
    // Every client knows every node, each starting from a different one, so that the clients
    // that started at the killed node fail over too.
    let mut clients = Vec::new();
    for index in 0..ids.len() * CLIENTS_PER_NODE {
        let rotated: Vec<NodeId> = ids.iter().cycle().skip(index % ids.len()).take(ids.len()).copied().collect();
        let options = cluster.options_for(&rotated).request_timeout(FAILOVER_REQUEST_TIMEOUT);
        clients.push(Client::connect_with(options).await?);
    }
    let run = Run::start(clients);
    let mut holds = run.holds.subscribe();
    tokio::time::timeout(PROGRESS_TIMEOUT, holds.wait_for(|holds| holds.len() >= HOLDS_PER_PHASE))
        .await
        .with_context(|| format!("fewer than {HOLDS_PER_PHASE} holds before the kill within {PROGRESS_TIMEOUT:?}"))??;

    let (leader, term) = cluster.kill_leader(ELECTION_TIMEOUT).await?;
    let killed_at = Instant::now();
    let new_leader = cluster.wait_for_new_leader(term, ELECTION_TIMEOUT).await?.id;
    let after_kill = |holds: &Vec<Hold>| holds.iter().filter(|hold| hold.start > killed_at).count();
    // `is_ok` at once: the borrow `wait_for` returns blocks the clients' writes while it lives.
    let progressed =
        tokio::time::timeout(PROGRESS_TIMEOUT, holds.wait_for(|holds| after_kill(holds) >= HOLDS_PER_PHASE))
            .await
            .is_ok_and(|seen| seen.is_ok());
    let holds = run.stop().await?;
    anyhow::ensure!(
        progressed,
        "the lock stopped changing hands after the leader {leader} was killed: {} holds started after the kill \
         within {PROGRESS_TIMEOUT:?} ({} in all); new leader {new_leader}",
        after_kill(&holds),
        holds.len()
    );

    check_exclusive(&holds)?;
    let before = holds.iter().filter(|hold| hold.end < killed_at).count();
    eprintln!(
        "{} exclusive holds, none overlapping: {before} ended before the kill of leader {leader}, {} started after it \
         (new leader {new_leader})",
        holds.len(),
        after_kill(&holds)
    );
    Ok(())
}

/// Asserts that no two holds overlap and that tokens increase in the order the holds happened.
fn check_exclusive(holds: &[Hold]) -> anyhow::Result<()> {
    let mut sorted = holds.to_vec();
    sorted.sort_by_key(|hold| hold.start);
    for pair in sorted.windows(2) {
        let (first, second) = (&pair[0], &pair[1]);
        anyhow::ensure!(
            second.start >= first.end,
            "two exclusive holds overlap: client {} still held token {} for {:?} after client {} got token {}",
            first.client,
            first.token,
            first.end.duration_since(second.start),
            second.client,
            second.token
        );
        anyhow::ensure!(
            second.token > first.token,
            "fencing tokens went backwards: client {} held token {}, then client {} got token {}",
            first.client,
            first.token,
            second.client,
            second.token
        );
    }
    Ok(())
}

/// Clients taking the lock in a loop, each in its own task, until stopped.
struct Run {
    stop: Arc<AtomicBool>,
    holds: Arc<watch::Sender<Vec<Hold>>>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Run {
    fn start(clients: Vec<Client>) -> Run {
        let stop = Arc::new(AtomicBool::new(false));
        let holds = Arc::new(watch::channel(Vec::new()).0);
        let tasks = clients
            .into_iter()
            .enumerate()
            .map(|(index, client)| tokio::spawn(take_turns(index, client, stop.clone(), holds.clone())))
            .collect();
        Run { stop, holds, tasks }
    }

    /// Stops the loops after their current turn and returns every hold.
    async fn stop(self) -> anyhow::Result<Vec<Hold>> {
        self.stop.store(true, Ordering::Relaxed);
        for (index, task) in self.tasks.into_iter().enumerate() {
            tokio::time::timeout(STOP_TIMEOUT, task)
                .await
                .with_context(|| format!("client {index} did not finish its turn within {STOP_TIMEOUT:?}"))?
                .with_context(|| format!("client {index} panicked"))?
                .with_context(|| format!("client {index} failed"))?;
        }
        let holds = self.holds.borrow().clone();
        Ok(holds)
    }
}

async fn take_turns(
    index: usize,
    client: Client,
    stop: Arc<AtomicBool>,
    holds: Arc<watch::Sender<Vec<Hold>>>,
) -> anyhow::Result<()> {
    let mut turn = 0u64;
    while !stop.load(Ordering::Relaxed) {
        turn += 1;
        let guard =
            client.lock(LOCK).timeout(ACQUIRE_TIMEOUT).acquire().await.with_context(|| format!("acquire #{turn}"))?;
        let start = Instant::now();
        let token = guard.token();
        tokio::time::sleep(WORK).await;
        let end = Instant::now();
        guard.release().await.with_context(|| format!("release #{turn} (token {token})"))?;
        holds.send_modify(|holds| holds.push(Hold { client: index, token, start, end }));
    }
    client.close().await;
    Ok(())
}
