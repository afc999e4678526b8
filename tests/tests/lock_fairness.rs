//! Lock queueing through real nodes: shared holders overlap; an exclusive request behind them
//! waits, and a shared request that arrives after it waits behind it (writers do not starve),
//! even though it is compatible with the current holders; a try-lock fails with `WouldBlock`
//! while anyone waits; when the readers leave the writer is granted with a higher token, and only
//! when the writer leaves the late reader is. An owner asking again for a lock it holds gets
//! `AlreadyHeld` and changes nothing; an explicit owner handle is one owner across tasks, two
//! handles are two; and two tokio tasks sharing one client are two owners that exclude each
//! other like two processes.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use distsync::wire::{LockHolder, LockWaiter};
use distsync::{Client, LockError, LockGuard, LockInfo, LockMode, Owner, SessionId};
use distsync_cluster_tests::{wait_for_lock, Cluster, ClusterOptions};
use tokio::task::JoinHandle;

const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a queued request may take to show up in `lock show`, or a grant to arrive once due.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_queue_behind_a_waiting_writer() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, ClusterOptions::default()).await?;
    let outcome = writer_preference(&cluster).await;
    cluster.finish(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_lock_and_reacquire_by_the_same_owner() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, ClusterOptions::default()).await?;
    let outcome = try_and_already_held(&cluster).await;
    cluster.finish(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tasks_of_one_client_exclude_each_other() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, ClusterOptions::default()).await?;
    let outcome = tasks_exclude(&cluster).await;
    cluster.finish(outcome)
}

async fn writer_preference(cluster: &Cluster) -> anyhow::Result<()> {
    const LOCK: &str = "fair";
    cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let (reader1, _) = client_with_session(cluster).await?;
    let (reader2, _) = client_with_session(cluster).await?;
    let (writer, writer_session) = client_with_session(cluster).await?;
    let (late_reader, late_session) = client_with_session(cluster).await?;
    let (bystander, _) = client_with_session(cluster).await?;
    let observer = cluster.client().await?;

    let s1 = reader1.lock(LOCK).shared().try_acquire().await.context("first shared hold")?;
    let s2 = reader2.lock(LOCK).shared().try_acquire().await.context("second shared hold, next to the first")?;
    let shown = observer.lock_show(LOCK).await?.context("a held lock is shown")?;
    assert_eq!(
        holders(&shown),
        vec![(s1.owner(), LockMode::Shared, s1.token()), (s2.owner(), LockMode::Shared, s2.token())],
        "both shared holds at once: {shown:?}"
    );

    // X asks for it exclusively and waits behind the readers.
    let writer_task = spawn_acquire(&writer, LOCK, LockMode::Exclusive);
    wait_for_lock(&observer, LOCK, STEP_TIMEOUT, "the writer waits", |shown| {
        shown.is_some_and(|lock| waiter_sessions(lock) == vec![(writer_session, LockMode::Exclusive)])
    })
    .await?;

    // S3 asks for a shared hold: compatible with the holders, but it must queue behind X.
    let late_task = spawn_acquire(&late_reader, LOCK, LockMode::Shared);
    let shown = wait_for_lock(&observer, LOCK, STEP_TIMEOUT, "the late reader waits behind the writer", |shown| {
        shown.is_some_and(|lock| lock.waiters.len() == 2)
    })
    .await?
    .context("the lock is shown")?;
    assert_eq!(
        waiter_sessions(&shown),
        vec![(writer_session, LockMode::Exclusive), (late_session, LockMode::Shared)],
        "the late shared request queues behind the waiting writer, in arrival order: {shown:?}"
    );
    assert_eq!(shown.holders.len(), 2, "the late reader was not let in next to the readers: {shown:?}");
    let tried = bystander.lock(LOCK).shared().try_acquire().await;
    assert!(
        matches!(&tried, Err(LockError::WouldBlock { name }) if name == LOCK),
        "a shared try-lock while a writer waits must fail with WouldBlock, got {tried:?}"
    );

    // The first reader leaves: the writer still waits for the second.
    let highest_reader_token = s1.token().max(s2.token());
    s1.release().await.context("releasing the first shared hold")?;
    let shown = observer.lock_show(LOCK).await?.context("the lock is still held")?;
    assert_eq!(holders(&shown), vec![(s2.owner(), LockMode::Shared, s2.token())], "{shown:?}");
    assert_eq!(shown.waiters.len(), 2, "both requests still wait: {shown:?}");
    assert!(!writer_task.is_finished(), "the writer was granted next to a shared holder");

    // The second reader leaves: the writer is granted, the late reader still waits.
    s2.release().await.context("releasing the second shared hold")?;
    let x = join_grant(writer_task, "the writer, once the readers left").await?;
    assert!(
        x.token() > highest_reader_token,
        "the writer's token {} is not above the readers' {highest_reader_token}",
        x.token()
    );
    let shown = observer.lock_show(LOCK).await?.context("the writer holds the lock")?;
    assert_eq!(holders(&shown), vec![(x.owner(), LockMode::Exclusive, x.token())], "{shown:?}");
    assert_eq!(
        waiter_sessions(&shown),
        vec![(late_session, LockMode::Shared)],
        "the late reader waits while the writer holds: {shown:?}"
    );
    assert!(!late_task.is_finished(), "the late reader was granted next to the exclusive holder");

    // The writer leaves: the late reader is granted.
    let writer_token = x.token();
    x.release().await.context("releasing the writer's hold")?;
    let s3 = join_grant(late_task, "the late reader, once the writer left").await?;
    assert!(
        s3.token() > writer_token,
        "the late reader's token {} is not above the writer's {writer_token}",
        s3.token()
    );
    let shown = observer.lock_show(LOCK).await?.context("the late reader holds the lock")?;
    assert_eq!(holders(&shown), vec![(s3.owner(), LockMode::Shared, s3.token())], "{shown:?}");
    assert!(shown.waiters.is_empty(), "nobody waits any more: {shown:?}");
    s3.release().await.context("releasing the late reader's hold")?;
    assert_eq!(observer.lock_show(LOCK).await?, None, "the lock is free once everyone left");
    Ok(())
}

async fn try_and_already_held(cluster: &Cluster) -> anyhow::Result<()> {
    const LOCK: &str = "held";
    const HANDLE_LOCK: &str = "held-by-handle";
    cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let holder = cluster.client().await?;
    let other = cluster.client().await?;

    let guard = holder.lock(LOCK).try_acquire().await.context("a try-lock of a free lock")?;
    for (what, tried) in [
        ("an exclusive try-lock of another client", other.lock(LOCK).try_acquire().await),
        ("a shared try-lock of another client", other.lock(LOCK).shared().try_acquire().await),
    ] {
        assert!(
            matches!(&tried, Err(LockError::WouldBlock { name }) if name == LOCK),
            "{what} on a held lock must fail with WouldBlock, got {tried:?}"
        );
    }
    // The same owner (this test's thread, on the same client) asks again, in every way.
    for (what, again) in [
        ("acquire", holder.lock(LOCK).timeout(Duration::from_secs(5)).acquire().await),
        ("try_acquire", holder.lock(LOCK).try_acquire().await),
        ("shared acquire", holder.lock(LOCK).shared().timeout(Duration::from_secs(5)).acquire().await),
    ] {
        assert!(
            matches!(&again, Err(LockError::AlreadyHeld { name }) if name == LOCK),
            "{what} by the owner that holds the lock must fail with AlreadyHeld, got {again:?}"
        );
    }
    let shown = holder.lock_show(LOCK).await?.context("the lock is held")?;
    assert_eq!(holders(&shown), vec![(guard.owner(), LockMode::Exclusive, guard.token())], "unchanged: {shown:?}");
    assert!(shown.waiters.is_empty(), "the refused requests left no waiter behind: {shown:?}");
    assert!(guard.is_held(), "the hold survives the refused requests");

    // An explicit handle is one owner whichever task uses it; another handle is another owner.
    let handle = holder.owner();
    let by_handle = holder.lock(HANDLE_LOCK).owner(&handle).try_acquire().await.context("a lock for a handle")?;
    assert_eq!(by_handle.owner().actor, handle.actor(), "the hold belongs to the handle");
    let from_another_task = {
        let holder = holder.clone();
        tokio::spawn(async move { holder.lock(HANDLE_LOCK).owner(&handle).try_acquire().await })
            .await
            .context("the task panicked")?
    };
    assert!(
        matches!(&from_another_task, Err(LockError::AlreadyHeld { .. })),
        "the same handle from another task is the same owner: expected AlreadyHeld, got {from_another_task:?}"
    );
    let second_handle = holder.owner();
    let by_other_handle = holder.lock(HANDLE_LOCK).owner(&second_handle).try_acquire().await;
    assert!(
        matches!(&by_other_handle, Err(LockError::WouldBlock { .. })),
        "another handle of the same client is another owner: expected WouldBlock, got {by_other_handle:?}"
    );
    by_handle.release().await.context("releasing the handle's hold")?;

    // Released, the lock goes to the next asker with a higher token.
    let first_token = guard.token();
    guard.release().await.context("releasing the hold")?;
    let next = other.lock(LOCK).try_acquire().await.context("a try-lock after the release")?;
    assert!(next.token() > first_token, "token {} after {first_token}", next.token());
    next.release().await?;
    Ok(())
}

async fn tasks_exclude(cluster: &Cluster) -> anyhow::Result<()> {
    const LOCK: &str = "tasks";
    cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let client = cluster.client().await?;
    let observer = cluster.client().await?;

    // Task A takes the lock and holds it until told to let go.
    let (granted_sender, granted) = tokio::sync::oneshot::channel::<(Owner, u64)>();
    let (release_sender, release) = tokio::sync::oneshot::channel::<()>();
    let task_a: JoinHandle<anyhow::Result<Instant>> = tokio::spawn({
        let client = client.clone();
        async move {
            let guard = client.lock(LOCK).acquire().await.context("task A's acquire")?;
            let _ = granted_sender.send((guard.owner(), guard.token()));
            let _ = release.await;
            let releasing = Instant::now();
            guard.release().await.context("task A's release")?;
            Ok(releasing)
        }
    });
    let (owner_a, token_a) = tokio::time::timeout(STEP_TIMEOUT, granted)
        .await
        .context("task A was not granted a free lock")?
        .context("task A ended before its grant")?;

    // Task B, on the same client, is another owner: its try-lock fails and its acquire waits.
    let task_b: JoinHandle<TryThenWait> = tokio::spawn({
        let client = client.clone();
        async move {
            let tried = client.lock(LOCK).try_acquire().await;
            let acquired = client.lock(LOCK).acquire().await.map(|guard| (guard, Instant::now()));
            (tried, acquired)
        }
    });
    let shown = wait_for_lock(&observer, LOCK, STEP_TIMEOUT, "task B waits", |shown| {
        shown.is_some_and(|lock| lock.waiters.len() == 1)
    })
    .await?
    .context("the lock is shown")?;
    assert_eq!(holders(&shown), vec![(owner_a, LockMode::Exclusive, token_a)], "task A holds: {shown:?}");
    let owner_b = shown.waiters[0].owner;
    assert_eq!(owner_b.session, owner_a.session, "both tasks act in the client's one session");
    assert_ne!(owner_b.actor, owner_a.actor, "the two tasks are distinct owners");
    assert!(!task_b.is_finished(), "task B's acquire completed while task A held the lock");

    let _ = release_sender.send(());
    let a_releasing = task_a.await.context("task A panicked")??;
    let (tried, acquired) =
        tokio::time::timeout(STEP_TIMEOUT, task_b).await.context("task B was not granted after A released")??;
    assert!(
        matches!(&tried, Err(LockError::WouldBlock { name }) if name == LOCK),
        "task B's try-lock while task A held the lock must fail with WouldBlock, got {tried:?}"
    );
    let (guard_b, b_granted) = acquired.context("task B's acquire")?;
    assert!(b_granted > a_releasing, "task B got the lock before task A began to release it");
    assert_eq!(guard_b.owner(), owner_b, "task B holds as the owner that waited");
    assert!(guard_b.token() > token_a, "task B's token {} is not above task A's {token_a}", guard_b.token());
    guard_b.release().await.context("releasing task B's hold")?;
    Ok(())
}

/// What task B saw: its try-lock, then its acquire with the instant it was granted.
type TryThenWait = (Result<LockGuard, LockError>, Result<(LockGuard, Instant), LockError>);

/// A client of the whole cluster with its session already open, and that session.
async fn client_with_session(cluster: &Cluster) -> anyhow::Result<(Client, SessionId)> {
    let client = cluster.client().await?;
    client.kv().put("open-a-session", "1").await.context("a write to open the session")?;
    let session = client.session_id().context("a write opens a session")?;
    Ok((client, session))
}

/// Acquires `name` in `mode` in a task of its own (its own owner), waiting without a timeout.
fn spawn_acquire(client: &Client, name: &'static str, mode: LockMode) -> JoinHandle<Result<LockGuard, LockError>> {
    let client = client.clone();
    tokio::spawn(async move {
        let request = client.lock(name);
        let request = match mode {
            LockMode::Shared => request.shared(),
            LockMode::Exclusive => request.exclusive(),
        };
        request.acquire().await
    })
}

async fn join_grant(task: JoinHandle<Result<LockGuard, LockError>>, what: &str) -> anyhow::Result<LockGuard> {
    let guard = tokio::time::timeout(STEP_TIMEOUT, task)
        .await
        .with_context(|| format!("{what} was not granted within {STEP_TIMEOUT:?}"))?
        .with_context(|| format!("the task of {what} panicked"))?
        .with_context(|| format!("{what}: acquire failed"))?;
    Ok(guard)
}

fn holders(lock: &LockInfo) -> Vec<(Owner, LockMode, u64)> {
    lock.holders.iter().map(|LockHolder { owner, mode, token, .. }| (*owner, *mode, *token)).collect()
}

fn waiter_sessions(lock: &LockInfo) -> Vec<(SessionId, LockMode)> {
    lock.waiters.iter().map(|LockWaiter { owner, mode, .. }| (owner.session, *mode)).collect()
}
