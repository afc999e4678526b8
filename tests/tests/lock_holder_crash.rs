//! A lock outlives neither its holder nor the holder's lease, and the holder learns it lost the
//! lock before anyone else can take it.
//!
//! - A `distsync lock run` process with a 3 s session TTL holds a lock and is SIGKILLed: the lock
//!   stays held right after the kill, and comes free by itself once the session expires: not
//!   before 2/3 of the TTL (the holder's last keepalive was at most a third of the TTL before the
//!   kill), and within the TTL plus generous slack. The next holder's token is higher.
//! - A client that talks only to the leader holds a lock when that leader is partitioned from the
//!   two others: its keepalives stop being acknowledged, so the guard's `lost()` completes and
//!   `is_held()` turns false on the client's own clock; a client of the majority waits for the
//!   lock and gets it only once the cluster has expired the session — by which time the old guard
//!   already says it is not held. After the heal the old hold is gone (`release` fails).

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use distsync::{Client, LockError, NodeId};
use distsync_cluster_tests::{wait_for_lock, Cluster, ClusterOptions};

const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

/// `--session-ttl` of the crashing command line.
const CRASH_TTL: Duration = Duration::from_secs(3);
/// The earliest the crashed holder's lock may come free after the kill: its last keepalive was
/// at most TTL/3 (plus a round trip) before the kill, and the cluster counts the TTL from there.
/// 2/3 of 3 s is 2 s; 1.5 s leaves room for a slow round trip.
const EARLIEST_FREE: Duration = Duration::from_millis(1500);
/// The latest: the TTL, the leader's tick and a commit, with generous slack for a busy machine.
const LATEST_FREE: Duration = Duration::from_secs(13);
const FREE_POLL: Duration = Duration::from_millis(50);

/// Session TTL and deadlines of the client that gets cut off.
const CUT_OFF_TTL: Duration = Duration::from_secs(2);
const CUT_OFF_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);
const CUT_OFF_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on the cut-off guard noticing the loss: its lease is 0.8 of the TTL past the last
/// acknowledged keepalive.
const LOSS_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on the majority's wait: the TTL, a new leader's grace and an election, with slack.
const MAJORITY_WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_holders_lock_comes_free_after_its_ttl() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, ClusterOptions::default()).await?;
    let outcome = killed_holder(&cluster).await;
    cluster.finish(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_holder_knows_it_lost_the_lock_before_it_is_regranted() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, ClusterOptions::default()).await?;
    let outcome = cut_off_holder(&cluster).await;
    cluster.finish(outcome)
}

async fn killed_holder(cluster: &Cluster) -> anyhow::Result<()> {
    const LOCK: &str = "crash-lock";
    cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let observer = cluster.client().await?;
    let mut holder = HolderProcess::spawn(cluster, LOCK)?;

    let shown = wait_for_lock(&observer, LOCK, STEP_TIMEOUT, "the command line holds it", |shown| {
        shown.is_some_and(|lock| lock.holders.len() == 1)
    })
    .await
    .with_context(|| holder.describe())?
    .context("the lock is shown")?;
    let crashed_token = shown.holders[0].token;
    holder.wait_for_command().await?;

    holder.kill_cli()?;
    let killed_at = Instant::now();
    let right_after = observer.lock(LOCK).try_acquire().await;
    assert!(
        matches!(&right_after, Err(LockError::WouldBlock { .. })),
        "right after the holder was killed its lock must still be held (its session lives until its TTL), got \
         {right_after:?}"
    );

    let next = loop {
        match observer.lock(LOCK).try_acquire().await {
            Ok(guard) => break guard,
            Err(LockError::WouldBlock { .. }) => {}
            Err(error) => return Err(error).context("polling the crashed holder's lock"),
        }
        anyhow::ensure!(
            killed_at.elapsed() <= LATEST_FREE,
            "the killed holder's lock is still held {:?} after the kill; its session TTL is {CRASH_TTL:?}",
            killed_at.elapsed()
        );
        // Polling the lock: the expiry is decided in the cluster, there is no event to await here.
        tokio::time::sleep(FREE_POLL).await;
    };
    let freed_after = killed_at.elapsed();
    eprintln!("the killed holder's lock came free {freed_after:?} after the kill (session TTL {CRASH_TTL:?})");
    assert!(
        freed_after >= EARLIEST_FREE,
        "the killed holder's lock came free {freed_after:?} after the kill, before its session could have expired \
         (TTL {CRASH_TTL:?}, keepalives every third of it)"
    );
    assert!(freed_after <= LATEST_FREE, "the lock came free only {freed_after:?} after the kill");
    assert!(next.token() > crashed_token, "the next token {} is not above the crashed {crashed_token}", next.token());
    next.release().await?;
    Ok(())
}

async fn cut_off_holder(cluster: &Cluster) -> anyhow::Result<()> {
    const LOCK: &str = "lost-lock";
    let old_leader = cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let majority: Vec<NodeId> = cluster.ids().into_iter().filter(|&id| id != old_leader).collect();

    // Partitions cut Raft traffic only and clients follow leader hints, so the client that gets
    // cut off is one that talks to the leader, which is then partitioned from the others.
    let options = cluster
        .options_for(&[old_leader])
        .session_ttl(CUT_OFF_TTL)
        .attempt_timeout(CUT_OFF_ATTEMPT_TIMEOUT)
        .request_timeout(CUT_OFF_REQUEST_TIMEOUT);
    let cut_off = Client::connect_with(options).await?;
    let old = Arc::new(cut_off.lock(LOCK).try_acquire().await.context("the soon cut-off client takes the lock")?);
    assert!(old.is_held());
    let old_token = old.token();

    cluster.partition(&[old_leader], &majority).await?;
    let new_leader = cluster.wait_for_leader(&majority, ELECTION_TIMEOUT).await?;
    let majority_client = cluster.client_for(&majority).await?;
    let majority_waits = tokio::spawn({
        let old = old.clone();
        async move {
            let acquired = majority_client.lock(LOCK).timeout(MAJORITY_WAIT).acquire().await;
            let granted_at = Instant::now();
            // At the moment of the grant, the old holder must already have stopped trusting it.
            let old_held_at_grant = old.is_held();
            (acquired, granted_at, old_held_at_grant)
        }
    });

    tokio::time::timeout(LOSS_TIMEOUT, old.lost())
        .await
        .with_context(|| format!("the cut-off guard's lost() did not complete within {LOSS_TIMEOUT:?}"))?;
    let lost_at = Instant::now();
    assert!(!old.is_held(), "lost() completed but the guard still says it is held");

    let (acquired, granted_at, old_held_at_grant) = tokio::time::timeout(MAJORITY_WAIT + STEP_TIMEOUT, majority_waits)
        .await
        .context("the majority's acquire did not finish")?
        .context("the majority's task panicked")?;
    let granted = acquired.with_context(|| {
        format!("the majority (leader {new_leader}) never got the lock of the cut-off client (old leader {old_leader})")
    })?;
    assert!(!old_held_at_grant, "the majority was granted the lock while the cut-off guard still said it held it");
    assert!(
        lost_at < granted_at,
        "the cut-off guard noticed the loss {:?} after the majority was granted the lock",
        lost_at.duration_since(granted_at)
    );
    assert!(granted.token() > old_token, "the new token {} is not above the lost {old_token}", granted.token());
    eprintln!(
        "the cut-off guard gave up the lock {:?} before the majority was granted it",
        granted_at.duration_since(lost_at)
    );

    // After the heal the old hold is gone for good.
    cluster.heal().await?;
    cluster.wait_applied_equal(&cluster.ids(), CONVERGE_TIMEOUT).await?;
    let shown = cluster.client().await?.lock_show(LOCK).await?.context("the majority's hold survives the heal")?;
    assert_eq!(
        shown.holders.iter().map(|h| (h.owner, h.token)).collect::<Vec<_>>(),
        vec![(granted.owner(), granted.token())],
        "after the heal only the majority's client holds the lock: {shown:?}"
    );
    let old = Arc::try_unwrap(old).map_err(|_| anyhow::anyhow!("the majority's task still holds the old guard"))?;
    let released = old.release().await;
    assert!(
        matches!(&released, Err(LockError::SessionExpired { .. } | LockError::NotHeld { .. })),
        "releasing the lost hold after the heal must report it gone, got {released:?}"
    );
    granted.release().await?;
    Ok(())
}

/// A `distsync lock run` process holding a lock while its command sleeps; kills both on drop.
struct HolderProcess {
    cli: Option<Child>,
    pid_file: PathBuf,
    log: PathBuf,
}

impl HolderProcess {
    fn spawn(cluster: &Cluster, name: &str) -> anyhow::Result<HolderProcess> {
        let pid_file = cluster.directory().join("holder-command.pid");
        let log = cluster.directory().join("holder-cli.log");
        let script = format!("echo $$ > '{}'; exec sleep 120", pid_file.display());
        let output = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let cli = Command::new(cluster.binary())
            .arg("--endpoints")
            .arg(cluster.endpoints().join(","))
            .arg("--ca")
            .arg(cluster.ca_path())
            .arg("--session-ttl")
            .arg(CRASH_TTL.as_secs().to_string())
            .args(["lock", "run", name, "--", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .spawn()
            .context("cannot spawn `distsync lock run`")?;
        Ok(HolderProcess { cli: Some(cli), pid_file, log })
    }

    /// Waits until the command under the lock has started (it wrote its pid file).
    async fn wait_for_command(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + STEP_TIMEOUT;
        while self.command_pid().is_none() {
            if let Some(cli) = self.cli.as_mut() {
                if let Some(status) = cli.try_wait()? {
                    anyhow::bail!("`distsync lock run` exited with {status}: {}", self.describe());
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "the command under the lock did not start: {}", self.describe());
            // Polling a file another process writes.
            tokio::time::sleep(FREE_POLL).await;
        }
        Ok(())
    }

    /// SIGKILLs the command line (not its command), like a crash of the holder.
    fn kill_cli(&mut self) -> anyhow::Result<()> {
        let mut cli = self.cli.take().context("the command line was killed before")?;
        if let Some(status) = cli.try_wait()? {
            anyhow::bail!("`distsync lock run` had already exited with {status}: {}", self.describe());
        }
        cli.kill().context("cannot kill `distsync lock run`")?;
        cli.wait().context("cannot reap `distsync lock run`")?;
        Ok(())
    }

    fn command_pid(&self) -> Option<libc::pid_t> {
        std::fs::read_to_string(&self.pid_file).ok()?.trim().parse().ok()
    }

    fn describe(&self) -> String {
        let output = std::fs::read_to_string(&self.log).unwrap_or_default();
        format!("output of `distsync lock run`:\n{output}")
    }
}

impl Drop for HolderProcess {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        if let Some(mut cli) = self.cli.take() {
            let _ = cli.kill();
            let _ = cli.wait();
        }
        if let Some(pid) = self.command_pid() {
            // SAFETY: kill(2) on the pid the command wrote; at worst the process is gone already.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}
