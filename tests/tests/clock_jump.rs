//! A node's wall clock jumping does not move cluster time: TTLs run by the leader's monotonic
//! clock (see the server's `node/clock.rs`).
//!
//! Nodes read their wall clock through a fault-injection offset (`SetClockOffset`, refused
//! without `--enable-fault-injection`): the only wall-clock reading that reaches the replicated
//! state is the leader's stamp on each entry.
//!
//! One client holds a lock (10 s session) and another waits for it with a 60 s timeout, then:
//!
//! 1. The leader's clock jumps an hour forward: the holder keeps its lock, token and session,
//!    and the long waiter keeps waiting; a 2 s waiter times out, and not before 2 s.
//! 2. The leader's clock jumps two hours back: a 1 s waiter still times out (time does not
//!    freeze until the clock catches up).
//! 3. Both followers' clocks are an hour ahead and the leader is SIGKILLed: whichever follower
//!    takes over, the holder keeps its lock, token and session and the long waiter keeps waiting.
//! 4. The holder releases: the long waiter is granted.
//!
//! Stamping the raw wall clock (as before) fails step 1 (every session and the waiter's
//! deadline expire at once), step 2 (the 1 s wait lasts an hour) and step 3.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use distsync::{Client, LockError, LockGuard};
use distsync_cluster_tests::{wait_for_lock, Cluster, ClusterOptions};

const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);
const STEP_TIMEOUT: Duration = Duration::from_secs(20);
const HOUR_MS: i64 = 3_600_000;
const LOCK: &str = "clocked";
/// The long waiter's timeout: longer than the whole scenario.
const LONG_WAIT: Duration = Duration::from_secs(60);
/// Cluster time may run up to 1 % fast while a clock is off, and the client's stopwatch starts
/// before the leader stamps the request: a wait ends no more than this before its timeout.
const CLOCK_SLACK: Duration = Duration::from_millis(100);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_jumps_do_not_move_ttls() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, ClusterOptions::default()).await?;
    let outcome = scenario(&cluster).await;
    cluster.finish(outcome)
}

/// What must survive every jump: the holder's lock, token and session, and the long waiter.
struct Survivors {
    holder: Client,
    held: LockGuard,
    session: distsync::SessionId,
    observer: Client,
}

impl Survivors {
    async fn check(&self, when: &str) -> anyhow::Result<()> {
        // A write by the holder goes through the log after the jump, and keeps its session.
        self.holder.kv().put("holder-alive", when).await.with_context(|| format!("{when}: the holder's write"))?;
        anyhow::ensure!(
            self.holder.session_id() == Some(self.session),
            "{when}: the holder's session {} expired (now {:?})",
            self.session,
            self.holder.session_id()
        );
        let shown = self.observer.lock_show(LOCK).await?.with_context(|| format!("{when}: the lock is free"))?;
        anyhow::ensure!(
            shown.holders.iter().map(|h| (h.owner, h.token)).collect::<Vec<_>>()
                == vec![(self.held.owner(), self.held.token())],
            "{when}: the holder lost its lock or token: {shown:?}"
        );
        anyhow::ensure!(shown.waiters.len() == 1, "{when}: the long waiter is gone: {shown:?}");
        Ok(())
    }
}

/// A wait of `timeout` behind the holder: must end in `Timeout`, not before `timeout`, within
/// `bound`.
async fn timed_wait(cluster: &Cluster, timeout: Duration, bound: Duration, when: &str) -> anyhow::Result<()> {
    let client = cluster.client().await?;
    let started = Instant::now();
    let outcome = tokio::time::timeout(bound, client.lock(LOCK).timeout(timeout).acquire())
        .await
        .with_context(|| format!("{when}: a {timeout:?} wait had not ended after {bound:?} (time froze)"))?;
    let waited = started.elapsed();
    eprintln!("{when}: a {timeout:?} wait ended after {waited:?}");
    anyhow::ensure!(
        matches!(&outcome, Err(LockError::Timeout { .. })),
        "{when}: a {timeout:?} wait must time out, got {outcome:?}"
    );
    anyhow::ensure!(waited + CLOCK_SLACK >= timeout, "{when}: a {timeout:?} wait timed out after {waited:?}");
    client.close().await;
    Ok(())
}

async fn scenario(cluster: &Cluster) -> anyhow::Result<()> {
    let leader = cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let holder = cluster.client().await?;
    let held = holder.lock(LOCK).try_acquire().await.context("taking the free lock")?;
    let session = holder.session_id().context("the holder has a session")?;
    let observer = cluster.client().await?;
    let waiter = cluster.client().await?;
    let long_wait = tokio::spawn({
        let waiter = waiter.clone();
        async move { waiter.lock(LOCK).timeout(LONG_WAIT).acquire().await }
    });
    wait_for_lock(&observer, LOCK, STEP_TIMEOUT, "the long waiter queues", |shown| {
        shown.is_some_and(|lock| lock.waiters.len() == 1)
    })
    .await?;
    let survivors = Survivors { holder, held, session, observer };
    survivors.check("before any jump").await?;

    // 1. An hour forward on the leader.
    cluster.set_clock_offset(leader, HOUR_MS).await?;
    survivors.check("leader an hour ahead").await?;
    timed_wait(cluster, Duration::from_secs(2), STEP_TIMEOUT, "leader an hour ahead").await?;
    survivors.check("leader an hour ahead, later").await?;

    // 2. Two hours back on the leader (an hour behind the real time).
    cluster.set_clock_offset(leader, -HOUR_MS).await?;
    timed_wait(cluster, Duration::from_secs(1), STEP_TIMEOUT, "leader an hour behind").await?;
    survivors.check("leader an hour behind").await?;

    // 3. Failover to a node whose clock is an hour ahead.
    let followers: Vec<_> = cluster.ids().into_iter().filter(|&id| id != leader).collect();
    for &follower in &followers {
        cluster.set_clock_offset(follower, HOUR_MS).await?;
    }
    let term = cluster.status(leader).await?.term;
    cluster.kill(leader)?;
    let new_leader = cluster.wait_for_new_leader(term, ELECTION_TIMEOUT).await?;
    eprintln!("node {} took over with its clock an hour ahead", new_leader.id);
    survivors.check("failover to a clock an hour ahead").await?;
    timed_wait(cluster, Duration::from_secs(1), STEP_TIMEOUT, "new leader an hour ahead").await?;
    survivors.check("failover to a clock an hour ahead, later").await?;

    // 4. The release hands the lock to the long waiter.
    let Survivors { held, observer, .. } = survivors;
    let token = held.token();
    held.release().await.context("releasing the lock")?;
    let granted = tokio::time::timeout(STEP_TIMEOUT, long_wait)
        .await
        .context("the long waiter was not granted after the release")?
        .context("the long waiter's task panicked")?
        .context("the long waiter's acquire")?;
    assert!(granted.token() > token, "token {} after {token}", granted.token());
    granted.release().await?;
    assert_eq!(observer.lock_show(LOCK).await?, None);
    Ok(())
}
