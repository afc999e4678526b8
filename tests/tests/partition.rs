//! A network partition that cuts the leader and one follower off from the other three nodes:
//! the majority elects a new leader and commits writes; the minority commits nothing (a client
//! that knows only the minority gets `Unavailable`, never Ok; the old leader appends the writes
//! sent to it but answers `Unavailable`, and no minority node's commit index moves); after
//! healing, all five nodes converge on one applied index and state digest, every majority write
//! is readable, and the writes the old leader had appended without committing are gone: they
//! were rolled back, not committed late.
//!
//! Why the rolled-back writes go to the old leader over a bare connection: a write the client
//! library gave up on may still be in progress on a node (an attempt abandoned at the client's
//! deadline, a follower's forward that is re-routed when the leader changes), and may then
//! legitimately commit after the heal — `Unavailable` means "may or may not have been applied".
//! A bare request is finished on the node once the node has answered it, so nothing of it is
//! pending when the partition heals, and its absence afterwards is a real rollback.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use distsync::wire::{Command, Reply, Request, Response, WriteRequest};
use distsync::{Client, ClientError, ServerError};
use distsync_cluster_tests::{describe_statuses, Cluster, ClusterOptions, Network, RawConnection};

const WRITES_BEFORE: u64 = 5;
const MAJORITY_WRITES: u64 = 20;
/// Writes through the client library that knows only the minority.
const MINORITY_CLIENT_WRITES: u64 = 2;
/// Bare writes to the old leader, which it must roll back.
const MINORITY_WRITES: u64 = 3;

/// Per-call deadline of the minority's client: long enough for the old leader to append and
/// time out its commit, short enough to keep the test quick.
const MINORITY_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// How long the old leader may take to answer a bare write it cannot commit; far above the
/// node's own commit timeout.
const BARE_REPLY_TIMEOUT: Duration = Duration::from_secs(30);

const SESSION_TTL: Duration = Duration::from_secs(120);
const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_commits_nothing_and_rolls_back_after_heal() -> anyhow::Result<()> {
    let cluster = Cluster::start(5, ClusterOptions::default()).await?;
    let outcome = scenario(&cluster).await;
    cluster.finish(outcome)
}

/// The same, with each node in its own network namespace and the partition a set of iptables
/// rules: every packet between the groups is lost (forwarded requests too), not just Raft's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_commits_nothing_and_rolls_back_after_a_firewall_partition() -> anyhow::Result<()> {
    if let Some(reason) = Network::unavailable() {
        anyhow::bail!(
            "this test puts nodes in network namespaces and must run as root with iptables (CI does): {reason}"
        );
    }
    let network = Arc::new(Network::create(&[1, 2, 3, 4, 5])?);
    let cluster = Cluster::start(5, ClusterOptions { network: Some(network), ..ClusterOptions::default() }).await?;
    let outcome = scenario(&cluster).await;
    cluster.finish(outcome)
}

async fn scenario(cluster: &Cluster) -> anyhow::Result<()> {
    let old_leader = cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    // The minority holds the current leader, so the partition also cuts the leader off.
    let companion = cluster.ids().into_iter().find(|&id| id != old_leader).context("five nodes")?;
    let minority = vec![old_leader, companion];
    let majority: Vec<u64> = cluster.ids().into_iter().filter(|id| !minority.contains(id)).collect();

    let everyone = cluster.client().await?;
    for index in 0..WRITES_BEFORE {
        everyone.kv().put(format!("before-{index}"), "1").await.with_context(|| format!("put before-{index}"))?;
    }
    // Sessions open now, while the cluster can commit, so that the writes after the partition
    // reach the old leader's log instead of failing to open a session.
    let minority_options =
        cluster.options_for(&minority).request_timeout(MINORITY_REQUEST_TIMEOUT).session_ttl(SESSION_TTL);
    let minority_client = Client::connect_with(minority_options).await?;
    minority_client.kv().put("minority-client-session", "1").await.context("put through the minority client")?;
    let mut bare = BareWriter::open(cluster.raw_connection(old_leader).await?).await?;
    let reply = bare.put("bare-session", "1").await?;
    assert!(matches!(reply.body, Ok(Response::Written(_))), "bare put before the partition: {reply:?}");

    cluster.partition(&minority, &majority).await?;
    let minority_committed_at_partition = highest_committed(cluster, &minority).await?;

    // (a) The majority elects a leader of its own and commits.
    let new_leader = cluster.wait_for_leader(&majority, ELECTION_TIMEOUT).await?;
    assert!(majority.contains(&new_leader), "leader {new_leader} is not in the majority {majority:?}");
    let majority_client = cluster.client_for(&majority).await?;
    for index in 0..MAJORITY_WRITES {
        majority_client
            .kv()
            .put(format!("majority-{index}"), format!("m-{index}"))
            .await
            .with_context(|| format!("put majority-{index} in the majority {majority:?}"))?;
    }

    // (b) The minority commits nothing.
    for index in 0..MINORITY_CLIENT_WRITES {
        let outcome = minority_client.kv().put(format!("minority-client-{index}"), "unknown").await;
        assert!(
            matches!(outcome, Err(ClientError::Unavailable { .. })),
            "put minority-client-{index} in the minority {minority:?} returned {outcome:?}, expected Unavailable"
        );
    }
    let log_before_bare_writes = cluster.status(old_leader).await?.last_log_index;
    for index in 0..MINORITY_WRITES {
        let reply = bare.put(&format!("minority-{index}"), "lost").await?;
        assert!(
            matches!(reply.body, Err(ServerError::Unavailable { .. })),
            "the cut-off old leader {old_leader} answered a put of minority-{index} with {reply:?}, expected Unavailable"
        );
    }
    let old_leader_status = cluster.status(old_leader).await?;
    assert!(
        old_leader_status.last_log_index >= log_before_bare_writes + MINORITY_WRITES,
        "the old leader did not append the minority writes (log {log_before_bare_writes} -> {}), so nothing \
         would be rolled back: {old_leader_status:?}",
        old_leader_status.last_log_index
    );
    let minority_committed_now = highest_committed(cluster, &minority).await?;
    assert_eq!(
        minority_committed_now, minority_committed_at_partition,
        "the minority {minority:?} advanced its highest commit index while cut off"
    );

    cluster.heal().await?;
    let statuses = cluster.wait_applied_equal(&cluster.ids(), CONVERGE_TIMEOUT).await?;
    eprintln!(
        "converged after heal:\n{}",
        describe_statuses(&cluster.ids(), &statuses.into_iter().map(Ok).collect::<Vec<_>>())
    );

    let reader = cluster.client().await?;
    for key in (0..WRITES_BEFORE).map(|index| format!("before-{index}")).chain(["bare-session".into()]) {
        assert_eq!(reader.kv().get(&key).await?, Some(b"1".to_vec()), "{key} was committed before the partition");
    }
    assert_eq!(reader.kv().get("minority-client-session").await?, Some(b"1".to_vec()));
    for index in 0..MAJORITY_WRITES {
        let read = reader.kv().get(format!("majority-{index}")).await?;
        assert_eq!(read, Some(format!("m-{index}").into_bytes()), "majority write majority-{index} was lost");
    }
    for index in 0..MINORITY_WRITES {
        let read = reader.kv().get(format!("minority-{index}")).await?;
        assert_eq!(read, None, "minority-{index} was appended by the cut-off leader, never committed, yet survived");
    }
    // The library's writes may or may not have been applied (see the top of the file); say which.
    for index in 0..MINORITY_CLIENT_WRITES {
        let read = reader.kv().get(format!("minority-client-{index}")).await?;
        eprintln!("minority-client-{index} after the heal: {}", if read.is_some() { "applied" } else { "absent" });
    }
    Ok(())
}

/// Writes under a session of its own over a bare connection, one request at a time, each
/// returning only once the node has answered it.
struct BareWriter {
    connection: RawConnection,
    session: u64,
    secret: distsync::wire::SessionSecret,
    next_seq: u64,
}

impl BareWriter {
    async fn open(connection: RawConnection) -> anyhow::Result<BareWriter> {
        let ttl_ms = SESSION_TTL.as_millis() as u64;
        let secret = distsync::wire::SessionSecret::random();
        let reply = connection.request(&Request::OpenSession { ttl_ms, secret }, BARE_REPLY_TIMEOUT).await?;
        let Ok(Response::SessionOpened { session, .. }) = reply.body else {
            anyhow::bail!("opening a session over a bare connection: {reply:?}");
        };
        Ok(BareWriter { connection, session, secret, next_seq: 1 })
    }

    async fn put(&mut self, key: &str, value: &str) -> anyhow::Result<Reply> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let command = Command::KvPut { key: key.as_bytes().to_vec(), value: value.as_bytes().to_vec() };
        // Every earlier request has been answered, so the cluster may forget their responses.
        let secret = self.secret;
        let request = Request::Write(WriteRequest { session: self.session, seq, acked_below: seq, command, secret });
        self.connection.request(&request, BARE_REPLY_TIMEOUT).await
    }
}

/// The highest commit index among `ids`. Within a cut-off minority it cannot grow: a follower
/// may still learn the old leader's commit index late, but never beyond it.
async fn highest_committed(cluster: &Cluster, ids: &[u64]) -> anyhow::Result<u64> {
    let mut highest = 0;
    for &id in ids {
        highest = highest.max(cluster.status(id).await?.committed);
    }
    Ok(highest)
}
