//! Deadlock detection through real nodes. A request whose wait would close a cycle of owners
//! waiting for each other fails at once with `Deadlock`, naming the cycle from the requester on
//! (each owner with the lock it waits on), and changes nothing: no waiter is left behind and the
//! other owners' waits go on. Covered: two owners of two clients, three owners, two tokio tasks of
//! one client, and two shared holders that both upgrade (the second upgrade is refused, the first
//! is granted once the second lets go of its shared hold). No false positives: owners queued on
//! one lock, and a chain of waits that is not a cycle, are all served in turn.

use std::time::Duration;

use anyhow::Context as _;
use distsync::{Client, LockError, LockGuard, LockInfo, LockMode, Owner, OwnerHandle};
use distsync_cluster_tests::{wait_for_lock, Cluster, ClusterOptions};
use tokio::task::JoinHandle;

const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a queued request may take to show up in `lock show`, or a grant to arrive once due.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on a request that must fail at once with `Deadlock`: if it waits this long instead, no
/// deadlock was detected.
const DETECTION_TIMEOUT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_owner_cycle_is_refused_and_changes_nothing() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, ClusterOptions::default()).await?;
    let outcome = two_owners(&cluster).await;
    cluster.finish(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_owner_cycle_is_refused() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, ClusterOptions::default()).await?;
    let outcome = three_owners(&cluster).await;
    cluster.finish(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cycle_between_two_tasks_of_one_client_is_refused() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, ClusterOptions::default()).await?;
    let outcome = two_tasks(&cluster).await;
    cluster.finish(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_of_two_upgrades_is_refused() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, ClusterOptions::default()).await?;
    let outcome = double_upgrade(&cluster).await;
    cluster.finish(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_and_chains_without_a_cycle_are_served() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, ClusterOptions::default()).await?;
    let outcome = no_false_positive(&cluster).await;
    cluster.finish(outcome)
}

async fn two_owners(cluster: &Cluster) -> anyhow::Result<()> {
    cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let client_a = cluster.client().await?;
    let client_b = cluster.client().await?;
    let observer = cluster.client().await?;
    let a = client_a.owner();
    let b = client_b.owner();

    let a_l1 = client_a.lock("L1").owner(&a).acquire().await.context("A takes L1")?;
    let b_l2 = client_b.lock("L2").owner(&b).acquire().await.context("B takes L2")?;
    let (owner_a, owner_b) = (a_l1.owner(), b_l2.owner());
    assert_ne!(owner_a.session, owner_b.session, "two clients, two sessions");

    // A waits for L2 (held by B).
    let a_waits = spawn_acquire(&client_a, "L2", a);
    wait_for_waiter(&observer, "L2", owner_a).await?;

    // B asks for L1 (held by A, who waits for B): a cycle.
    let refused = detect(client_b.lock("L1").owner(&b).acquire(), "B asking for L1").await?;
    assert_eq!(
        cycle_of(&refused, "L1")?,
        vec![(owner_b, "L1".to_string()), (owner_a, "L2".to_string())],
        "the cycle: B waits on L1 (for A), A waits on L2 (for B)"
    );

    // Nothing changed: B does not wait for L1, A still holds it and still waits for L2.
    let l1 = observer.lock_show("L1").await?.context("L1 is held")?;
    assert_eq!(holder_owners(&l1), vec![owner_a], "A still holds L1: {l1:?}");
    assert!(l1.waiters.is_empty(), "the refused request left no waiter on L1: {l1:?}");
    let l2 = observer.lock_show("L2").await?.context("L2 is held")?;
    assert_eq!(holder_owners(&l2), vec![owner_b], "B still holds L2: {l2:?}");
    assert_eq!(waiter_owners(&l2), vec![owner_a], "A still waits for L2: {l2:?}");
    assert!(b_l2.is_held(), "B's hold survives the refusal");
    assert!(!a_waits.is_finished(), "A's wait for L2 ended while B held it");

    // B gives up L2: A's wait is granted.
    let b_token = b_l2.token();
    b_l2.release().await.context("B releases L2")?;
    let a_l2 = join_grant(a_waits, "A's wait for L2").await?;
    assert_eq!(a_l2.owner(), owner_a);
    assert!(a_l2.token() > b_token, "A's token {} on L2 is not above B's {b_token}", a_l2.token());
    a_l2.release().await?;
    a_l1.release().await?;
    Ok(())
}

async fn three_owners(cluster: &Cluster) -> anyhow::Result<()> {
    cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let clients = [cluster.client().await?, cluster.client().await?, cluster.client().await?];
    let observer = cluster.client().await?;
    let handles: Vec<OwnerHandle> = clients.iter().map(Client::owner).collect();
    let names = ["M1", "M2", "M3"];

    // Owner i holds lock i.
    let mut held = Vec::new();
    for i in 0..3 {
        held.push(clients[i].lock(names[i]).owner(&handles[i]).acquire().await.with_context(|| names[i])?);
    }
    let owners: Vec<Owner> = held.iter().map(LockGuard::owner).collect();

    // Owner 0 waits for M2 (held by 1), owner 1 waits for M3 (held by 2).
    let zero_waits = spawn_acquire(&clients[0], "M2", handles[0]);
    wait_for_waiter(&observer, "M2", owners[0]).await?;
    let one_waits = spawn_acquire(&clients[1], "M3", handles[1]);
    wait_for_waiter(&observer, "M3", owners[1]).await?;

    // Owner 2 asks for M1 (held by 0): 2 -> 0 -> 1 -> 2.
    let refused = detect(clients[2].lock("M1").owner(&handles[2]).acquire(), "owner 2 asking for M1").await?;
    assert_eq!(
        cycle_of(&refused, "M1")?,
        vec![(owners[2], "M1".to_string()), (owners[0], "M2".to_string()), (owners[1], "M3".to_string())],
        "the cycle: 2 waits on M1 for 0, 0 waits on M2 for 1, 1 waits on M3 for 2"
    );
    let m1 = observer.lock_show("M1").await?.context("M1 is held")?;
    assert!(m1.waiters.is_empty(), "the refused request left no waiter on M1: {m1:?}");

    // Unwind: 2 releases M3, so 1 gets it; 1 releases M2 and M3, so 0 gets M2.
    let mut held = held.into_iter();
    let (zero_m1, one_m2, two_m3) =
        (held.next().expect("three"), held.next().expect("three"), held.next().expect("three"));
    two_m3.release().await?;
    let one_m3 = join_grant(one_waits, "owner 1's wait for M3").await?;
    one_m3.release().await?;
    one_m2.release().await?;
    let zero_m2 = join_grant(zero_waits, "owner 0's wait for M2").await?;
    zero_m2.release().await?;
    zero_m1.release().await?;
    Ok(())
}

async fn two_tasks(cluster: &Cluster) -> anyhow::Result<()> {
    cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let client = cluster.client().await?;
    let observer = cluster.client().await?;

    // Task 1 holds T1 and then waits for T2; task 2 holds T2 and then asks for T1. Each is its
    // own owner, since locks belong to the task that takes them.
    let (one_holds, one_held) = tokio::sync::oneshot::channel::<Owner>();
    let (one_go, one_may_go) = tokio::sync::oneshot::channel::<()>();
    let task_one: JoinHandle<anyhow::Result<u64>> = tokio::spawn({
        let client = client.clone();
        async move {
            let t1 = client.lock("T1").acquire().await.context("task 1 takes T1")?;
            let _ = one_holds.send(t1.owner());
            let _ = one_may_go.await;
            let t2 = client.lock("T2").acquire().await.context("task 1 waits for T2")?;
            let token = t2.token();
            t2.release().await?;
            t1.release().await?;
            Ok(token)
        }
    });
    let (two_holds, two_held) = tokio::sync::oneshot::channel::<(Owner, u64)>();
    let (two_go, two_may_go) = tokio::sync::oneshot::channel::<()>();
    let task_two: JoinHandle<anyhow::Result<LockError>> = tokio::spawn({
        let client = client.clone();
        async move {
            let t2 = client.lock("T2").acquire().await.context("task 2 takes T2")?;
            let _ = two_holds.send((t2.owner(), t2.token()));
            let _ = two_may_go.await;
            let refused = detect(client.lock("T1").acquire(), "task 2 asking for T1").await;
            // Task 2 backs off, as a refused owner should, which lets task 1 through.
            t2.release().await?;
            refused
        }
    });
    let owner_one = tokio::time::timeout(STEP_TIMEOUT, one_held).await.context("task 1 holds T1")??;
    let (owner_two, two_token) = tokio::time::timeout(STEP_TIMEOUT, two_held).await.context("task 2 holds T2")??;
    assert_eq!(owner_one.session, owner_two.session, "both tasks act in the client's one session");
    assert_ne!(owner_one.actor, owner_two.actor, "two tasks are two owners");

    let _ = one_go.send(());
    wait_for_waiter(&observer, "T2", owner_one).await?;
    let _ = two_go.send(());
    let refused = tokio::time::timeout(STEP_TIMEOUT + DETECTION_TIMEOUT, task_two)
        .await
        .context("task 2 did not finish")?
        .context("task 2 panicked")??;
    assert_eq!(
        cycle_of(&refused, "T1")?,
        vec![(owner_two, "T1".to_string()), (owner_one, "T2".to_string())],
        "the cycle: task 2 waits on T1 for task 1, task 1 waits on T2 for task 2"
    );
    let one_token = tokio::time::timeout(STEP_TIMEOUT, task_one)
        .await
        .context("task 1 was not granted T2 after task 2 released it")?
        .context("task 1 panicked")??;
    assert!(one_token > two_token, "task 1's token {one_token} on T2 is not above task 2's {two_token}");
    Ok(())
}

async fn double_upgrade(cluster: &Cluster) -> anyhow::Result<()> {
    const LOCK: &str = "upgraded";
    cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let client_one = cluster.client().await?;
    let client_two = cluster.client().await?;
    let observer = cluster.client().await?;

    let mut first = client_one.lock(LOCK).shared().acquire().await.context("first shared hold")?;
    let mut second = client_two.lock(LOCK).shared().acquire().await.context("second shared hold")?;
    let (owner_one, owner_two) = (first.owner(), second.owner());
    let shared_tokens = first.token().max(second.token());

    // The first holder upgrades: it waits for the second to leave.
    let first_upgrade: JoinHandle<(LockGuard, Result<(), LockError>)> = tokio::spawn(async move {
        let upgraded = first.upgrade().await;
        (first, upgraded)
    });
    let shown = wait_for_lock(&observer, LOCK, STEP_TIMEOUT, "the first upgrade waits", |shown| {
        shown.is_some_and(|lock| lock.waiters.iter().any(|w| w.owner == owner_one && w.upgrade))
    })
    .await?
    .context("the lock is shown")?;
    assert_eq!(shown.holders.len(), 2, "both still hold shared while the upgrade waits: {shown:?}");

    // The second holder upgrades too: each would wait for the other to leave.
    let refused = detect(second.upgrade(), "the second upgrade").await?;
    assert_eq!(
        cycle_of(&refused, LOCK)?,
        vec![(owner_two, LOCK.to_string()), (owner_one, LOCK.to_string())],
        "the cycle: each shared holder waits for the other"
    );
    assert!(second.is_held(), "the refused upgrade keeps its shared hold");
    assert_eq!(second.mode(), LockMode::Shared, "the refused upgrade stays shared");
    let shown = observer.lock_show(LOCK).await?.context("the lock is held")?;
    assert_eq!(holder_owners(&shown), vec![owner_one, owner_two], "both still hold: {shown:?}");
    assert!(shown.holders.iter().all(|h| h.mode == LockMode::Shared), "both still shared: {shown:?}");
    assert_eq!(waiter_owners(&shown), vec![owner_one], "only the first upgrade waits: {shown:?}");
    assert!(!first_upgrade.is_finished(), "the first upgrade completed while the second held the lock shared");

    // The second lets go of its shared hold: the first upgrade is granted.
    second.release().await.context("releasing the second shared hold")?;
    let (first, upgraded) = tokio::time::timeout(STEP_TIMEOUT, first_upgrade)
        .await
        .context("the first upgrade was not granted after the second holder left")?
        .context("the upgrading task panicked")?;
    upgraded.context("the first upgrade")?;
    assert_eq!(first.mode(), LockMode::Exclusive);
    assert!(first.token() > shared_tokens, "the upgrade's token {} is not above {shared_tokens}", first.token());
    let shown = observer.lock_show(LOCK).await?.context("the lock is held")?;
    assert_eq!(
        shown.holders.iter().map(|h| (h.owner, h.mode, h.token)).collect::<Vec<_>>(),
        vec![(owner_one, LockMode::Exclusive, first.token())],
        "the upgraded holder alone, exclusive, with the new token: {shown:?}"
    );
    first.release().await?;
    Ok(())
}

async fn no_false_positive(cluster: &Cluster) -> anyhow::Result<()> {
    cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let clients = [cluster.client().await?, cluster.client().await?, cluster.client().await?];
    let observer = cluster.client().await?;
    let handles: Vec<OwnerHandle> = clients.iter().map(Client::owner).collect();

    // A plain queue: 0 holds Q, 1 and 2 wait for it.
    let held = clients[0].lock("Q").owner(&handles[0]).acquire().await.context("owner 0 takes Q")?;
    let owner_zero = held.owner();
    let one_waits = spawn_acquire(&clients[1], "Q", handles[1]);
    wait_for_lock(&observer, "Q", STEP_TIMEOUT, "owner 1 waits", |shown| shown.is_some_and(|l| l.waiters.len() == 1))
        .await?;
    let two_waits = spawn_acquire(&clients[2], "Q", handles[2]);
    wait_for_lock(&observer, "Q", STEP_TIMEOUT, "owner 2 waits", |shown| shown.is_some_and(|l| l.waiters.len() == 2))
        .await?;
    let mut token = held.token();
    held.release().await?;
    let one = join_grant(one_waits, "owner 1 in the queue").await?;
    assert!(one.token() > token, "owner 1's token {} after {token}", one.token());
    assert!(!two_waits.is_finished(), "owner 2 was granted next to owner 1");
    // And the cluster agrees: owner 1 alone holds Q, owner 2 alone waits.
    let shown = observer.lock_show("Q").await?.context("Q is held")?;
    assert_eq!(holder_owners(&shown), vec![one.owner()], "owner 1 holds Q next: {shown:?}");
    assert_eq!(shown.waiters.len(), 1, "owner 2 still waits, and no one else: {shown:?}");
    token = one.token();
    one.release().await?;
    let two = join_grant(two_waits, "owner 2 in the queue").await?;
    assert!(two.token() > token, "owner 2's token {} after {token}", two.token());
    two.release().await?;

    // A chain that is not a cycle: 0 holds C1 and waits for C2 (held by 1); 2 asks for C1.
    let zero_c1 = clients[0].lock("C1").owner(&handles[0]).acquire().await?;
    let one_c2 = clients[1].lock("C2").owner(&handles[1]).acquire().await?;
    let zero_waits = spawn_acquire(&clients[0], "C2", handles[0]);
    wait_for_waiter(&observer, "C2", owner_zero).await?;
    let two_waits = spawn_acquire(&clients[2], "C1", handles[2]);
    let shown = wait_for_lock(&observer, "C1", STEP_TIMEOUT, "owner 2 waits on the chain", |shown| {
        shown.is_some_and(|l| l.waiters.len() == 1)
    })
    .await?;
    assert!(!two_waits.is_finished(), "owner 2's request ended while queued: {shown:?}");
    one_c2.release().await?;
    let zero_c2 = join_grant(zero_waits, "owner 0 at the end of the chain").await?;
    zero_c2.release().await?;
    zero_c1.release().await?;
    let two_c1 = join_grant(two_waits, "owner 2 at the head of the chain").await?;
    two_c1.release().await?;
    Ok(())
}

/// Runs a request that must be refused with `Deadlock` at once; returns the refusal.
async fn detect<T: std::fmt::Debug>(
    request: impl std::future::Future<Output = Result<T, LockError>>,
    what: &str,
) -> anyhow::Result<LockError> {
    match tokio::time::timeout(DETECTION_TIMEOUT, request).await {
        Err(_) => anyhow::bail!("{what} waited {DETECTION_TIMEOUT:?} instead of being refused with Deadlock"),
        Ok(Ok(granted)) => anyhow::bail!("{what} was granted ({granted:?}) though it closes a cycle"),
        Ok(Err(error)) => Ok(error),
    }
}

/// The cycle of a `Deadlock` refusal for `name`.
fn cycle_of(error: &LockError, name: &str) -> anyhow::Result<Vec<(Owner, String)>> {
    match error {
        LockError::Deadlock { name: refused, cycle } if refused == name => Ok(cycle.clone()),
        other => anyhow::bail!("expected Deadlock on {name:?}, got {other:?}"),
    }
}

/// Acquires `name` for `owner` in a task of its own, waiting without a timeout.
fn spawn_acquire(client: &Client, name: &'static str, owner: OwnerHandle) -> JoinHandle<Result<LockGuard, LockError>> {
    let client = client.clone();
    tokio::spawn(async move { client.lock(name).owner(&owner).acquire().await })
}

async fn join_grant(task: JoinHandle<Result<LockGuard, LockError>>, what: &str) -> anyhow::Result<LockGuard> {
    let guard = tokio::time::timeout(STEP_TIMEOUT, task)
        .await
        .with_context(|| format!("{what} was not granted within {STEP_TIMEOUT:?}"))?
        .with_context(|| format!("the task of {what} panicked"))?
        .with_context(|| format!("{what}: acquire failed"))?;
    Ok(guard)
}

async fn wait_for_waiter(observer: &Client, name: &str, owner: Owner) -> anyhow::Result<()> {
    wait_for_lock(observer, name, STEP_TIMEOUT, &format!("{owner} waits"), |shown| {
        shown.is_some_and(|lock| lock.waiters.iter().any(|waiter| waiter.owner == owner))
    })
    .await?;
    Ok(())
}

fn holder_owners(lock: &LockInfo) -> Vec<Owner> {
    lock.holders.iter().map(|holder| holder.owner).collect()
}

fn waiter_owners(lock: &LockInfo) -> Vec<Owner> {
    lock.waiters.iter().map(|waiter| waiter.owner).collect()
}
