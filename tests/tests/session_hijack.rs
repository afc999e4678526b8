//! Nobody can act under another client's session, through raw wire frames of the core crate's
//! codec: another identity naming the victim's session (even with its secret), the victim's
//! identity with a wrong secret, a keepalive, close, watch or lock await of the victim's
//! session, a (session, seq) replayed with another command, a guessed (or leaked) delivery tag
//! and a `LockCancel` of the victim's grant are each refused and change nothing: the victim
//! still holds its lock and its delivery, and releases and acks them itself.

use std::time::Duration;

use distsync::wire::{
    Command, CommandResponse, LockMode, LockWait, Owner, PutMessage, Query, QueryResponse, Request, Response,
    SessionSecret, WriteRequest,
};
use distsync::{QueueRefusal, ServerError};
use distsync_cluster_tests::{Cluster, ClusterOptions};
use distsync_harness::RawConnection;

const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
const ACTOR: u64 = 42;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_client_cannot_act_under_a_session_it_did_not_open() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, ClusterOptions::default()).await?;
    let outcome = scenario(&cluster).await;
    cluster.finish(outcome)
}

/// A session opened over a bare connection.
struct Bare {
    connection: RawConnection,
    session: u64,
    secret: SessionSecret,
}

impl Bare {
    async fn open(cluster: &Cluster, leader: u64, identity: &str) -> anyhow::Result<Bare> {
        let tls = cluster.identity_tls(identity).await?;
        let connection = cluster.raw_connection_with(leader, &tls).await?;
        let secret = SessionSecret::random();
        let reply = connection.request(&Request::OpenSession { ttl_ms: 60_000, secret }, REPLY_TIMEOUT).await?;
        let Ok(Response::SessionOpened { session, .. }) = reply.body else { anyhow::bail!("open: {reply:?}") };
        Ok(Bare { connection, session, secret })
    }

    /// `command` as write `seq` of `session` with `secret`, over this connection.
    async fn write_as(
        &self,
        session: u64,
        secret: SessionSecret,
        seq: u64,
        command: Command,
    ) -> anyhow::Result<Result<Response, ServerError>> {
        // Nothing is acknowledged: every answer stays stored, so a replay meets its first answer.
        let request = Request::Write(WriteRequest { session, seq, acked_below: 1, command, secret });
        Ok(self.connection.request(&request, REPLY_TIMEOUT).await?.body)
    }

    /// `command` as write `seq` of this connection's own session.
    async fn write(&self, seq: u64, command: Command) -> anyhow::Result<Result<Response, ServerError>> {
        self.write_as(self.session, self.secret, seq, command).await
    }
}

async fn scenario(cluster: &Cluster) -> anyhow::Result<()> {
    let leader = cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    for identity in ["victim", "mallory"] {
        for resource in ["lock:", "queue:"] {
            let output = cluster.run_cli(&["acl", "grant", identity, resource, "write"]).await?;
            anyhow::ensure!(output.status.success(), "grant: {}", String::from_utf8_lossy(&output.stderr));
        }
    }
    let victim = Bare::open(cluster, leader, "victim").await?;
    let mallory = Bare::open(cluster, leader, "mallory").await?;
    let (session, secret) = (victim.session, victim.secret);
    let not_owned = Err(ServerError::SessionNotOwned { session });

    // The victim holds a lock and a delivery.
    let acquire =
        Command::LockAcquire { name: "l".into(), actor: ACTOR, mode: LockMode::Exclusive, wait: LockWait::Try };
    let Ok(Response::Written(CommandResponse::LockGranted { token })) = victim.write(1, acquire.clone()).await? else {
        anyhow::bail!("the victim's lock was not granted");
    };
    let put =
        Command::QueuePut { queue: "q".into(), messages: vec![PutMessage { body: b"m".to_vec(), dedup_id: None }] };
    victim.write(2, put).await??;
    let get = Command::QueueGet {
        queue: "q".into(),
        request: 1,
        max: 1,
        visibility_ms: Some(60_000),
        wait_ms: 0,
        detach: false,
    };
    let Ok(Response::Written(CommandResponse::QueueDelivered { deliveries })) = victim.write(3, get).await? else {
        anyhow::bail!("the victim got no delivery");
    };
    let tag = deliveries[0].tag;

    // Mallory names the victim's session, with its (leaked) secret and with a guessed one.
    let release = Command::LockRelease { name: "l".into(), actor: ACTOR, token };
    assert_eq!(mallory.write_as(session, secret, 4, release.clone()).await?, not_owned, "another identity");
    assert_eq!(mallory.write_as(session, SessionSecret::random(), 4, release.clone()).await?, not_owned);
    // The victim's own identity with a wrong secret is refused as well.
    assert_eq!(victim.write_as(session, SessionSecret::random(), 4, release.clone()).await?, not_owned, "wrong secret");
    for request in [
        Request::KeepAlive { session, secret },
        Request::WatchSession { session, max_wait_ms: 100, secret },
        Request::AwaitLock {
            name: "l".into(),
            owner: Owner { session, actor: ACTOR },
            queued_revision: 0,
            max_wait_ms: 100,
            secret,
        },
    ] {
        let reply = mallory.connection.request(&request, REPLY_TIMEOUT).await?;
        assert_eq!(reply.body, not_owned, "{request:?}");
    }
    assert_eq!(mallory.write_as(session, secret, 4, Command::CloseSession).await?, not_owned, "close");

    // The victim's seq 1 replayed with another command.
    let other =
        Command::LockAcquire { name: "other".into(), actor: ACTOR, mode: LockMode::Shared, wait: LockWait::Try };
    assert_eq!(victim.write(1, other).await?, Err(ServerError::SequenceReused { session, seq: 1 }));
    assert_eq!(victim.write(1, acquire).await?, Ok(Response::Written(CommandResponse::LockGranted { token })));

    // Guessed tags near the revisions, and the exact tag, from Mallory's own session.
    let mut guesses: Vec<u64> = (1..=64).collect();
    guesses.push(tag);
    let ack = Command::QueueAck { queue: "q".into(), tags: guesses.clone() };
    assert_eq!(mallory.write(1, ack).await?, Ok(Response::Written(CommandResponse::QueueAcked { stale: guesses })));
    let extend = Command::QueueExtend { queue: "q".into(), tag, visibility_ms: 100 };
    let stale = Err(ServerError::Queue(QueueRefusal::StaleTag { queue: "q".into(), tag }));
    assert_eq!(mallory.write(2, extend).await?, stale, "someone else's delivery cannot be extended");
    // A cancel naming the victim's actor, from before any grant, frees nothing of the victim's.
    let cancel = Command::LockCancel { name: "l".into(), actor: ACTOR, queued_revision: 0, upgrade: true };
    let cancelled = Ok(Response::Written(CommandResponse::LockCancelled { released: false }));
    assert_eq!(mallory.write(3, cancel).await?, cancelled);

    // The victim's state is as it was, and the victim settles it itself.
    let admin = cluster.raw_connection(leader).await?;
    let show = admin.request(&Request::Read(Query::LockShow { name: "l".into() }), REPLY_TIMEOUT).await?;
    let Ok(Response::Read(QueryResponse::LockShow { lock: Some(lock) })) = show.body else { anyhow::bail!("{show:?}") };
    assert_eq!((lock.holders[0].owner.session, lock.holders[0].token), (session, token), "the victim still holds l");
    assert_eq!(lock.identities, vec![(session, "victim".to_string())], "lock show names the identity");
    let stats = admin.request(&Request::Read(Query::QueueStats { queue: "q".into() }), REPLY_TIMEOUT).await?;
    let Ok(Response::Read(QueryResponse::QueueStats { stats: Some(stats) })) = stats.body else {
        anyhow::bail!("{stats:?}")
    };
    assert_eq!(stats.in_flight, 1, "the victim's delivery is still in flight");
    assert_eq!(victim.write(4, release).await?, Ok(Response::Written(CommandResponse::LockReleased)));
    let ack = Command::QueueAck { queue: "q".into(), tags: vec![tag] };
    assert_eq!(victim.write(5, ack).await?, Ok(Response::Written(CommandResponse::QueueAcked { stale: vec![] })));
    Ok(())
}
