//! Lock waits that end without a grant, and grants that cannot happen. A waiter with a 500 ms
//! timeout behind a holder fails with `Timeout` (not before its timeout), and leaves the queue:
//! `lock show` no longer lists it, its owner may ask again (`WouldBlock`, not `AlreadyHeld`), the
//! waiter queued before it is still served, and it is never granted later. A node cut off from the
//! majority grants nothing: a client that knows only the old leader, partitioned away from the
//! two others, gets `Unavailable` for a try-lock of a free lock (and for `lock show`), while a
//! client of the majority takes the lock; after the heal every node agrees that the majority's
//! client alone holds it.
//!
//! Why the cut-off node is the old leader rather than a follower: partitions cut Raft traffic
//! only, and clients follow leader hints. A client that knows only a follower learns the leader's
//! address from the follower's first reply and then talks to the leader directly, so it is never
//! cut off. The old leader knows of no other leader, so its clients stay on the minority side.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use distsync::{Client, ClientError, LockError, LockMode, NodeId, Owner};
use distsync_cluster_tests::{wait_for_lock, Cluster, ClusterOptions};

const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);
const STEP_TIMEOUT: Duration = Duration::from_secs(20);
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

/// The short wait that must time out.
const SHORT_WAIT: Duration = Duration::from_millis(500);
/// Slack below `SHORT_WAIT` for clock granularity: the cluster counts the wait from when the
/// leader stamps the request, after the client sent it, so the client sees at least the timeout.
const CLOCK_SLACK: Duration = Duration::from_millis(50);

/// The minority client's deadlines: an attempt gives up before the node's own 2 s commit timeout,
/// and the call within a few attempts.
const MINORITY_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
const MINORITY_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// Bound on the minority's try-lock: its call, then its withdrawal, each within the request
/// timeout, plus slack.
const MINORITY_CALL_BOUND: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_waiter_leaves_the_queue() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, ClusterOptions::default()).await?;
    let outcome = timed_out_waiter(&cluster).await;
    cluster.finish(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_node_grants_nothing() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, ClusterOptions::default()).await?;
    let outcome = minority_cannot_grant(&cluster).await;
    cluster.finish(outcome)
}

async fn timed_out_waiter(cluster: &Cluster) -> anyhow::Result<()> {
    const LOCK: &str = "slow";
    cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let holder = cluster.client().await?;
    let patient = cluster.client().await?;
    let hasty = cluster.client().await?;
    let observer = cluster.client().await?;

    let held = holder.lock(LOCK).try_acquire().await.context("taking the free lock")?;
    // A patient waiter first, so that the queue is not empty when the hasty one leaves it.
    let patient_owner = patient.owner();
    let patient_waits = tokio::spawn({
        let patient = patient.clone();
        async move { patient.lock(LOCK).owner(&patient_owner).acquire().await }
    });
    let shown = wait_for_lock(&observer, LOCK, STEP_TIMEOUT, "the patient waiter queues", |shown| {
        shown.is_some_and(|lock| lock.waiters.len() == 1)
    })
    .await?
    .context("the lock is shown")?;
    let patient_as_owner = shown.waiters[0].owner;
    assert_eq!(shown.waiters[0].deadline_ms, None, "a wait without a timeout has no deadline: {shown:?}");

    let hasty_owner = hasty.owner();
    let started = Instant::now();
    let outcome = hasty.lock(LOCK).owner(&hasty_owner).timeout(SHORT_WAIT).acquire().await;
    let waited = started.elapsed();
    assert!(
        matches!(&outcome, Err(LockError::Timeout { name }) if name == LOCK),
        "a {SHORT_WAIT:?} wait behind a holder must fail with Timeout, got {outcome:?}"
    );
    assert!(waited + CLOCK_SLACK >= SHORT_WAIT, "the wait timed out after {waited:?}, before its {SHORT_WAIT:?}");

    // The timed-out waiter is gone; the patient one is still there, the holder still holds.
    let shown = observer.lock_show(LOCK).await?.context("the lock is still held")?;
    assert_eq!(
        shown.holders.iter().map(|h| (h.owner, h.token)).collect::<Vec<_>>(),
        vec![(held.owner(), held.token())],
        "the holder still holds: {shown:?}"
    );
    assert_eq!(
        shown.waiters.iter().map(|w| w.owner).collect::<Vec<Owner>>(),
        vec![patient_as_owner],
        "the timed-out waiter must leave the queue, the other waiter stays: {shown:?}"
    );
    // Its owner is free to ask again: it neither holds nor waits.
    let again = hasty.lock(LOCK).owner(&hasty_owner).try_acquire().await;
    assert!(
        matches!(&again, Err(LockError::WouldBlock { .. })),
        "the timed-out owner asking again must get WouldBlock (it no longer waits), got {again:?}"
    );

    // The holder leaves: the patient waiter is served, and nobody else is left.
    let holder_token = held.token();
    held.release().await.context("releasing the hold")?;
    let granted = tokio::time::timeout(STEP_TIMEOUT, patient_waits)
        .await
        .context("the patient waiter was not granted after the release")?
        .context("the patient waiter's task panicked")?
        .context("the patient waiter's acquire")?;
    assert_eq!(granted.owner(), patient_as_owner);
    assert!(granted.token() > holder_token, "token {} after {holder_token}", granted.token());
    let shown = observer.lock_show(LOCK).await?.context("the patient waiter holds the lock")?;
    assert_eq!(shown.holders.len(), 1, "only the patient waiter holds: {shown:?}");
    assert!(shown.waiters.is_empty(), "the timed-out waiter did not come back: {shown:?}");
    granted.release().await?;
    assert_eq!(observer.lock_show(LOCK).await?, None, "the timed-out waiter was never granted the lock");
    Ok(())
}

async fn minority_cannot_grant(cluster: &Cluster) -> anyhow::Result<()> {
    const LOCK: &str = "split";
    let old_leader = cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let majority: Vec<NodeId> = cluster.ids().into_iter().filter(|&id| id != old_leader).collect();

    // The minority client opens its session while the cluster can commit, so that its lock
    // request reaches the old leader's log rather than failing to open a session.
    let minority_options = cluster
        .options_for(&[old_leader])
        .request_timeout(MINORITY_REQUEST_TIMEOUT)
        .attempt_timeout(MINORITY_ATTEMPT_TIMEOUT);
    let minority_client = Client::connect_with(minority_options).await?;
    minority_client.kv().put("minority-session", "1").await.context("opening the minority client's session")?;

    cluster.partition(&[old_leader], &majority).await?;
    let new_leader = cluster.wait_for_leader(&majority, ELECTION_TIMEOUT).await?;

    // The cut-off old leader cannot grant a free lock.
    let attempt = tokio::time::timeout(MINORITY_CALL_BOUND, minority_client.lock(LOCK).try_acquire())
        .await
        .context("the minority's try-lock neither returned nor failed")?;
    assert!(
        matches!(&attempt, Err(LockError::Unavailable { .. })),
        "a try-lock through the cut-off node {old_leader} must fail with Unavailable, got {attempt:?}"
    );
    let shown = tokio::time::timeout(MINORITY_CALL_BOUND, minority_client.lock_show(LOCK))
        .await
        .context("the minority's lock show neither returned nor failed")?;
    assert!(
        matches!(&shown, Err(ClientError::Unavailable { .. })),
        "a linearizable lock show through the cut-off node {old_leader} must fail with Unavailable, got {shown:?}"
    );

    // The majority can take it.
    let majority_client = cluster.client_for(&majority).await?;
    let held = majority_client.lock(LOCK).try_acquire().await.context("the majority's try-lock")?;

    cluster.heal().await?;
    cluster.wait_applied_equal(&cluster.ids(), CONVERGE_TIMEOUT).await?;
    for id in cluster.ids() {
        let reader = cluster.client_for(&[id]).await?;
        let shown = reader.lock_show(LOCK).await?.context("the majority's hold survives the heal")?;
        assert_eq!(
            shown.holders.iter().map(|h| (h.owner, h.mode, h.token)).collect::<Vec<_>>(),
            vec![(held.owner(), LockMode::Exclusive, held.token())],
            "after the heal, read through node {id}: the majority's client alone holds {LOCK:?} (old leader \
             {old_leader}, new leader {new_leader}): {shown:?}"
        );
        assert!(shown.waiters.is_empty(), "nobody waits after the heal: {shown:?}");
    }
    assert!(held.is_held(), "the majority's hold is still valid");
    held.release().await?;
    Ok(())
}
