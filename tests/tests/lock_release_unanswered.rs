//! A release the cluster did not answer does not leave the lock held: the holder's client goes on
//! releasing in the background until the cluster answers. (Found by the fault suite: after every
//! node was killed at once, a holder's `release` failed as unavailable while its client kept the
//! session alive, so the lock stayed held for as long as the holder's process lived and every
//! other client's acquire timed out, for ever.)
//!
//! A client holds a lock; every node is SIGKILLed; its `release` reports `Unavailable`; the nodes
//! restart on their disks, well within the holder's session TTL, so the session (kept alive by
//! the holder's client) still holds the lock. Another client must then get the lock within a
//! fraction of that TTL, and the lock shows it as the holder.

use std::time::{Duration, Instant};

use distsync::{Client, LockError};
use distsync_cluster_tests::{wait_for_lock, Cluster, ClusterOptions};

const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// The holder's session lease: long enough that it survives the whole-cluster restart, so only a
/// release (not the session's expiry) can free the lock in time.
const HOLDER_TTL: Duration = Duration::from_secs(60);
/// How long the other client waits for the lock: far less than the holder's TTL.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_the_cluster_did_not_answer_is_retried_until_the_lock_is_free() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, ClusterOptions::default()).await?;
    let outcome = scenario(&cluster).await;
    cluster.finish(outcome)
}

async fn scenario(cluster: &Cluster) -> anyhow::Result<()> {
    cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let options = cluster.options_for(&cluster.ids()).session_ttl(HOLDER_TTL).request_timeout(Duration::from_secs(2));
    let holder = Client::connect_with(options).await?;
    let guard = holder.lock("report").acquire().await?;
    let token = guard.token();

    for id in cluster.ids() {
        cluster.kill(id)?;
    }
    let release = guard.release().await;
    assert!(matches!(release, Err(LockError::Unavailable { .. })), "a release with every node down: {release:?}");
    let restarted = Instant::now();
    for id in cluster.ids() {
        cluster.restart(id).await?;
    }
    cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;

    let other = cluster.client().await?;
    let acquired = other.lock("report").timeout(ACQUIRE_TIMEOUT).acquire().await;
    let took = restarted.elapsed();
    let next = match acquired {
        Ok(next) => next,
        Err(error) => {
            panic!("the lock was still held {took:?} after the restart ({error}): the unanswered release was dropped")
        }
    };
    assert!(next.token() > token, "the next hold has a higher token: {} after {token}", next.token());
    assert!(took < HOLDER_TTL / 2, "freed by the release, not by the holder's session expiring: {took:?}");
    let shown = wait_for_lock(&other, "report", ELECTION_TIMEOUT, "held by the other client", |info| {
        info.is_some_and(|info| info.holders.iter().any(|holder| holder.token == next.token()))
    })
    .await?;
    eprintln!("the lock came free {took:?} after the restart: {shown:?}");
    next.release().await?;
    holder.close().await;
    other.close().await;
    Ok(())
}
