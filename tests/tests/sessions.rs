//! Sessions through real nodes: a write repeated under the same (session, seq), as a client does
//! after a lost reply or a failover, gets the first answer back and is applied once, even when
//! the repeat goes to another node; a different command under a seen (session, seq) is refused,
//! never answered with the first command's answer; an open retried with the same secret gets the
//! session it opened, not a second one; a session whose client falls silent expires after its TTL on
//! every node, driven by the leader's idle ticks, and its writes are refused afterwards.

use std::time::{Duration, Instant};

use distsync::wire::{Command, CommandResponse, Request, Response, SessionSecret, WriteRequest};
use distsync::ServerError;
use distsync_cluster_tests::{Cluster, ClusterOptions};

const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// The shortest TTL a session may have.
const SESSION_TTL: Duration = Duration::from_secs(1);
/// Expiry needs the TTL, the lease grace of a possible leader change and a tick; far less than this.
const EXPIRY_TIMEOUT: Duration = Duration::from_secs(20);
const POLL_INTERVAL: Duration = Duration::from_millis(100);

const SECRET: SessionSecret = SessionSecret([7; 16]);

fn put(session: u64, seq: u64, value: &str) -> Request {
    Request::Write(WriteRequest {
        session,
        seq,
        acked_below: seq,
        command: Command::KvPut { key: b"exactly-once".to_vec(), value: value.as_bytes().to_vec() },
        secret: SECRET,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_write_is_applied_once_and_silent_sessions_expire() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, ClusterOptions::default()).await?;
    let outcome = scenario(&cluster).await;
    cluster.finish(outcome)
}

async fn scenario(cluster: &Cluster) -> anyhow::Result<()> {
    let leader = cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let follower = cluster.ids().into_iter().find(|id| *id != leader).expect("three nodes");
    let to_leader = cluster.raw_connection(leader).await?;
    let to_follower = cluster.raw_connection(follower).await?;

    let ttl_ms = SESSION_TTL.as_millis() as u64;
    let open = Request::OpenSession { ttl_ms, secret: SECRET };
    let opened = to_leader.request(&open, REPLY_TIMEOUT).await?;
    let Ok(Response::SessionOpened { session, .. }) = opened.body else {
        anyhow::bail!("opening a session: {opened:?}");
    };
    // The open retried (its answer lost, say), through another node: the same session.
    let reopened = to_follower.request(&open, REPLY_TIMEOUT).await?;
    assert_eq!(reopened.body, opened.body, "a retried open must answer the session it opened");

    // The first attempt applies; the repeat (through a follower, which forwards it) answers the
    // stored response; another command under the same seq is refused.
    let first = to_leader.request(&put(session, 1, "first"), REPLY_TIMEOUT).await?;
    let Ok(Response::Written(CommandResponse::KvPut { version })) = first.body else {
        anyhow::bail!("first put: {first:?}");
    };
    let repeat = to_follower.request(&put(session, 1, "first"), REPLY_TIMEOUT).await?;
    assert_eq!(repeat.body, Ok(Response::Written(CommandResponse::KvPut { version })), "the repeat's answer");
    let other = to_follower.request(&put(session, 1, "other"), REPLY_TIMEOUT).await?;
    assert_eq!(other.body, Err(ServerError::SequenceReused { session, seq: 1 }), "another command under seq 1");
    let client = cluster.client().await?;
    assert_eq!(
        client.kv().get_versioned("exactly-once").await?,
        Some((b"first".to_vec(), version)),
        "the repeated write was applied a second time"
    );

    // The session falls silent: no keepalives, no writes. Every node must drop it by itself.
    let sessions_with_it = cluster.status(leader).await?.sessions;
    assert!(sessions_with_it >= 1, "the open session is counted");
    let deadline = Instant::now() + EXPIRY_TIMEOUT;
    while cluster.status(leader).await?.sessions >= sessions_with_it {
        anyhow::ensure!(Instant::now() < deadline, "session {session} did not expire within {EXPIRY_TIMEOUT:?}");
        // Polling the node's status: there is no event to await across processes.
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    let statuses = cluster.wait_applied_equal(&cluster.ids(), EXPIRY_TIMEOUT).await?;
    for status in &statuses {
        assert!(
            status.sessions < sessions_with_it,
            "node {} still counts {} sessions after the expiry",
            status.id,
            status.sessions
        );
    }
    let late = to_follower.request(&put(session, 2, "late"), REPLY_TIMEOUT).await?;
    assert_eq!(late.body, Err(ServerError::SessionExpired { session }), "a write under the expired session");
    assert_eq!(
        client.kv().get("exactly-once").await?,
        Some(b"first".to_vec()),
        "writes under an expired session are refused"
    );
    client.close().await;
    Ok(())
}
