//! Nothing lost, nothing processed twice, with a consumer process and the leader SIGKILLed.
//!
//! Three producers (first contact: a different node each) put messages one by one, retrying an
//! ambiguous failure under the same dedup id, until well after both kills (at least 100 each). Two in-test consumers and one
//! `distsync queue consume --json -- sleep 0.3` process (2 s session: each message takes it 300 ms)
//! get and ack. Once the process has printed a few deliveries it is frozen (SIGSTOP) while it
//! works on one and SIGKILLed, then the leader is SIGKILLed. When the queue is empty:
//!
//! - every acknowledged put was acked, and no message was acked twice: no consumer saw a
//!   successful ack of a message another ack had already settled, and the queue's own counter
//!   says exactly as many acks as puts;
//! - every message the killed process printed without printing its ack was delivered again, to
//!   another consumer, with a higher attempt number (at most one of them may have been acked by
//!   the process in the instant before it died, which its missing ack line cannot show);
//! - nothing was delivered that was not put.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use distsync::{Client, NodeId, QueueError, QueueOptions};
use distsync_cluster_tests::{Cluster, ClusterOptions};

const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);
const QUEUE: &str = "work";
const PRODUCERS: usize = 3;
/// Puts per producer at least.
const PER_PRODUCER: usize = 100;
/// Puts acknowledged after the leader kill before the producers may stop.
const PUTS_AFTER_KILL: usize = 60;
const CLI_DELIVERIES_BEFORE_KILL: usize = 5;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// What one in-test consumer saw: (message id, attempt) of each delivery, ids whose ack
/// succeeded, and ids whose ack outcome is unknown (the cluster was unreachable for the whole
/// request timeout).
#[derive(Default, Debug)]
struct Seen {
    delivered: Vec<(u64, u32)>,
    acked: Vec<u64>,
    ambiguous: Vec<u64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_message_is_lost_or_acked_twice_when_a_consumer_and_the_leader_are_killed() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, ClusterOptions::default()).await?;
    let outcome = scenario(&cluster).await;
    cluster.finish(outcome)
}

/// A client whose first contact is node `first` (it knows every node, so it fails over).
async fn client_starting_at(cluster: &Cluster, first: NodeId) -> anyhow::Result<Client> {
    let mut ids = cluster.ids();
    let start = ids.iter().position(|&id| id == first).context("no such node")?;
    ids.rotate_left(start);
    cluster.client_for(&ids).await
}

async fn scenario(cluster: &Cluster) -> anyhow::Result<()> {
    cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let admin = cluster.client().await?;
    // Visibility long enough that nothing times out in flight on a slow machine; a lost consumer's
    // messages come back with its session.
    admin.queue(QUEUE).create(QueueOptions { visibility_ms: 60_000, ..QueueOptions::default() }).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let mut consumers = Vec::new();
    for first in [2, 3] {
        let client = client_starting_at(cluster, first).await?;
        let stop = stop.clone();
        consumers.push(tokio::spawn(async move { consume(client, stop).await }));
    }
    let mut process = ConsumerProcess::spawn(cluster)?;

    let producing = Arc::new(AtomicBool::new(true));
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let mut producers = Vec::new();
    for number in 0..PRODUCERS {
        let client = client_starting_at(cluster, number as NodeId + 1).await?;
        let (producing, acknowledged) = (producing.clone(), acknowledged.clone());
        producers.push(tokio::spawn(async move { produce(client, number, producing, acknowledged).await }));
    }

    // Kill the consumer process while it works on a message, once it has printed a few, then the
    // leader.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let printed = process.output()?;
        if printed.delivered.len() >= CLI_DELIVERIES_BEFORE_KILL && printed.delivered.len() > printed.acked.len() {
            process.freeze()?;
            let printed = process.output()?;
            if printed.delivered.len() > printed.acked.len() {
                break;
            }
            process.thaw()?;
        }
        anyhow::ensure!(Instant::now() < deadline, "the consumer process printed too little: {}", process.describe());
        // Polling a file another process writes.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    process.kill()?;
    let (leader, term) = cluster.kill_leader(ELECTION_TIMEOUT).await?;
    // Keep producing through the failover.
    let killed_at = acknowledged.load(Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(60);
    while acknowledged.load(Ordering::SeqCst) < killed_at + PUTS_AFTER_KILL {
        anyhow::ensure!(Instant::now() < deadline, "the producers made no progress after the leader kill");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    producing.store(false, Ordering::SeqCst);
    // The puts after the kill were committed by a leader elected after it.
    cluster.wait_for_new_leader(term, ELECTION_TIMEOUT).await?;

    let mut put: BTreeMap<u64, String> = BTreeMap::new();
    for producer in producers {
        for (id, body) in producer.await?? {
            anyhow::ensure!(put.insert(id, body.clone()).is_none(), "two puts answered the same id {id}");
        }
    }
    assert!(put.len() >= PRODUCERS * PER_PRODUCER, "every put got its own id");

    // Wait until the consumers have drained the queue.
    let survivors: Vec<NodeId> = cluster.ids().into_iter().filter(|&id| id != leader).collect();
    let observer = cluster.client_for(&survivors).await?;
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let stats = loop {
        let stats = observer.queue(QUEUE).stats().await;
        if let Ok(stats) = &stats {
            if stats.depth == 0 && stats.in_flight == 0 {
                break stats.clone();
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "the queue did not drain within {DRAIN_TIMEOUT:?}: {stats:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    stop.store(true, Ordering::SeqCst);
    let mut seen = Vec::new();
    for consumer in consumers {
        seen.push(consumer.await??);
    }
    let killed = process.output()?;

    // Exactly-once acks.
    let mut acks: BTreeMap<u64, usize> = BTreeMap::new();
    for id in seen.iter().flat_map(|s| &s.acked).chain(&killed.acked) {
        *acks.entry(*id).or_default() += 1;
    }
    let twice: Vec<_> = acks.iter().filter(|(_, count)| **count > 1).collect();
    assert!(twice.is_empty(), "messages acked more than once: {twice:?}");
    assert_eq!(stats.put_total, put.len() as u64, "{stats:?}");
    assert_eq!(stats.acked_total, put.len() as u64, "the queue counted one ack per message: {stats:?}");
    let ambiguous: BTreeSet<u64> = seen.iter().flat_map(|s| s.ambiguous.iter().copied()).collect();
    let unconfirmed: BTreeSet<u64> =
        killed.delivered.iter().map(|(id, _)| *id).filter(|id| !killed.acked.contains(id)).collect();
    let never_seen_acked: Vec<u64> = put.keys().copied().filter(|id| !acks.contains_key(id)).collect();
    for id in &never_seen_acked {
        assert!(
            unconfirmed.contains(id) || ambiguous.contains(id),
            "message {id} ({}) was put but no consumer acked it",
            put[id]
        );
    }
    assert!(
        never_seen_acked.iter().filter(|id| !ambiguous.contains(id)).count() <= 1,
        "only the message the killed process was acking as it died may lack a visible ack: {never_seen_acked:?}"
    );

    // Everything the killed process held without acking came back to someone else.
    let redelivered: BTreeMap<u64, u32> =
        seen.iter().flat_map(|s| s.delivered.iter().copied()).fold(BTreeMap::new(), |mut most, (id, attempt)| {
            let entry = most.entry(id).or_insert(attempt);
            *entry = (*entry).max(attempt);
            most
        });
    for id in &unconfirmed {
        if never_seen_acked.contains(id) {
            continue;
        }
        let killed_attempt = killed.delivered.iter().filter(|(d, _)| d == id).map(|(_, a)| *a).max().unwrap_or(0);
        let attempt = redelivered.get(id).copied().unwrap_or(0);
        assert!(
            attempt > killed_attempt,
            "message {id} was delivered to the killed process (attempt {killed_attempt}) and not delivered again"
        );
    }

    // Nothing delivered that was not put.
    for (id, _) in seen.iter().flat_map(|s| &s.delivered).chain(&killed.delivered) {
        assert!(put.contains_key(id), "message {id} was delivered but never put");
    }
    eprintln!(
        "{} messages; the killed process printed {} deliveries and {} acks; {} redeliveries in all",
        put.len(),
        killed.delivered.len(),
        killed.acked.len(),
        seen.iter().flat_map(|s| &s.delivered).filter(|(_, attempt)| *attempt > 1).count()
    );
    admin.close().await;
    observer.close().await;
    Ok(())
}

async fn produce(
    client: Client,
    number: usize,
    producing: Arc<AtomicBool>,
    acknowledged: Arc<AtomicUsize>,
) -> anyhow::Result<Vec<(u64, String)>> {
    let queue = client.queue(QUEUE);
    let mut put = Vec::with_capacity(PER_PRODUCER);
    let mut n = 0;
    while n < PER_PRODUCER || producing.load(Ordering::SeqCst) {
        let body = format!("producer {number} message {n}");
        let id = loop {
            match queue.put_with_dedup(body.clone(), body.clone()).await {
                Ok(id) => break id,
                // Ambiguous: it may or may not have been enqueued; the dedup id makes the retry safe.
                Err(QueueError::Unavailable { .. }) => continue,
                Err(error) => return Err(error).with_context(|| format!("put of {body:?}")),
            }
        };
        put.push((id, body));
        acknowledged.fetch_add(1, Ordering::SeqCst);
        n += 1;
    }
    client.close().await;
    Ok(put)
}

async fn consume(client: Client, stop: Arc<AtomicBool>) -> anyhow::Result<Seen> {
    let queue = client.queue(QUEUE);
    let mut seen = Seen::default();
    while !stop.load(Ordering::SeqCst) {
        let delivery = match queue.get(Duration::from_millis(500)).await {
            Ok(Some(delivery)) => delivery,
            Ok(None) | Err(QueueError::Unavailable { .. }) => continue,
            Err(error) => return Err(error).context("get"),
        };
        seen.delivered.push((delivery.id, delivery.attempt));
        match delivery.ack().await {
            Ok(()) => seen.acked.push(delivery.id),
            Err(QueueError::StaleTag { .. }) => {}
            Err(QueueError::Unavailable { .. }) => seen.ambiguous.push(delivery.id),
            Err(error) => return Err(error).context("ack"),
        }
    }
    client.close().await;
    Ok(seen)
}

/// What the consumer process printed: deliveries (id, attempt) and acked ids.
#[derive(Debug, Default)]
struct Printed {
    delivered: Vec<(u64, u32)>,
    acked: Vec<u64>,
}

/// `distsync queue consume --json` with a 2 s session, writing to a file.
struct ConsumerProcess {
    child: Option<Child>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl ConsumerProcess {
    fn spawn(cluster: &Cluster) -> anyhow::Result<Self> {
        let stdout = cluster.directory().join("consumer.out");
        let stderr = cluster.directory().join("consumer.err");
        let child = Command::new(cluster.binary())
            .arg("--endpoints")
            .arg(cluster.endpoints().join(","))
            .arg("--ca")
            .arg(cluster.ca_path())
            .args(["--session-ttl", "2", "queue", "consume", QUEUE, "--json", "--", "sleep", "0.3"])
            .stdin(Stdio::null())
            .stdout(File::create(&stdout)?)
            .stderr(File::create(&stderr)?)
            .spawn()
            .context("cannot spawn `distsync queue consume`")?;
        Ok(ConsumerProcess { child: Some(child), stdout, stderr })
    }

    /// Parses the complete lines printed so far.
    fn output(&self) -> anyhow::Result<Printed> {
        let text = std::fs::read_to_string(&self.stdout)?;
        let mut printed = Printed::default();
        let complete = text.rsplit_once('\n').map(|(complete, _)| complete).unwrap_or("");
        for line in complete.lines() {
            let value: serde_json::Value =
                serde_json::from_str(line).with_context(|| format!("consumer printed {line:?}"))?;
            let id = value["id"].as_u64().with_context(|| format!("no id in {line:?}"))?;
            if value.get("acked").is_some() {
                printed.acked.push(id);
            } else {
                let attempt = value["attempt"].as_u64().with_context(|| format!("no attempt in {line:?}"))?;
                printed.delivered.push((id, attempt as u32));
            }
        }
        Ok(printed)
    }

    #[allow(unsafe_code)]
    fn signal(&self, signal: libc::c_int) -> anyhow::Result<()> {
        let child = self.child.as_ref().context("killed before")?;
        let pid = libc::pid_t::try_from(child.id())?;
        // SAFETY: kill(2) on our own unreaped child, which cannot have been recycled.
        let result = unsafe { libc::kill(pid, signal) };
        anyhow::ensure!(result == 0, "cannot signal the consumer process");
        Ok(())
    }

    /// Stops the process (SIGSTOP) so its output cannot change.
    fn freeze(&self) -> anyhow::Result<()> {
        self.signal(libc::SIGSTOP)
    }

    fn thaw(&self) -> anyhow::Result<()> {
        self.signal(libc::SIGCONT)
    }

    fn kill(&mut self) -> anyhow::Result<()> {
        let mut child = self.child.take().context("killed before")?;
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("the consumer process had exited with {status}: {}", self.describe());
        }
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }
}

impl Drop for ConsumerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
