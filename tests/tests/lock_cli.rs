//! The lock command line's contract for scripts. `lock run NAME -- CMD` runs CMD holding the lock
//! with DISTSYNC_FENCING_TOKEN and DISTSYNC_LOCK_NAME set, exits with CMD's status and leaves the
//! lock free; each run's token is higher than the last. While someone else holds the lock,
//! `lock run --timeout` gives up without running CMD, exits 1 (or `--conflict-exit-code`) and
//! says "not granted" on stderr; without a short timeout it waits and runs CMD once the holder
//! lets go. `lock show` names the holder's session and token (`--json`: the lock's holders and
//! waiters, `null` when free, and the text says the lock is free), and `lock list` lists held
//! locks (`--json`: an array).

use std::process::Output;
use std::time::Duration;

use anyhow::Context as _;
use distsync::{LockInfo, LockMode};
use distsync_cluster_tests::{describe_output, wait_for_lock, Cluster, ClusterOptions};

const LOCK: &str = "cli-lock";
const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_command_line_contract() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, ClusterOptions::default()).await?;
    let outcome = scenario(&cluster).await;
    cluster.finish(outcome)
}

async fn scenario(cluster: &Cluster) -> anyhow::Result<()> {
    cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let client = cluster.client().await?;

    // `lock run` passes the token and the name, and CMD's exit status.
    let script = r#"echo "$DISTSYNC_FENCING_TOKEN $DISTSYNC_LOCK_NAME"; exit 7"#;
    let first = cluster.run_cli(&["lock", "run", LOCK, "--", "sh", "-c", script]).await?;
    assert_eq!(first.status.code(), Some(7), "lock run exits with the command's status: {}", describe_output(&first));
    let first_token = token_and_name(&first)?;
    assert_eq!(client.lock_show(LOCK).await?, None, "lock run releases the lock when the command ends");
    let second = cluster.run_cli(&["lock", "run", LOCK, "--", "sh", "-c", script]).await?;
    assert_eq!(second.status.code(), Some(7), "{}", describe_output(&second));
    let second_token = token_and_name(&second)?;
    assert!(second_token > first_token, "the second run's token {second_token} is not above the first's {first_token}");

    // Someone else holds the lock.
    let held = client.lock(LOCK).try_acquire().await.context("taking the lock from the library")?;
    assert!(held.token() > second_token, "token {} after the CLI's {second_token}", held.token());
    let ran_marker = cluster.directory().join("ran");
    let marker_script = format!("touch '{}'", ran_marker.display());
    let refused = cluster.run_cli(&["lock", "run", LOCK, "--timeout", "0.5", "--", "sh", "-c", &marker_script]).await?;
    assert_eq!(refused.status.code(), Some(1), "a conflict exits 1 by default: {}", describe_output(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not granted"),
        "a conflict says \"not granted\" on stderr: {}",
        describe_output(&refused)
    );
    let custom = cluster
        .run_cli(&[
            "lock",
            "run",
            LOCK,
            "--timeout",
            "0.5",
            "--conflict-exit-code",
            "75",
            "--",
            "sh",
            "-c",
            &marker_script,
        ])
        .await?;
    assert_eq!(custom.status.code(), Some(75), "--conflict-exit-code 75: {}", describe_output(&custom));
    assert!(!ran_marker.exists(), "the command ran although the lock was not granted");

    // `lock show`, text and JSON.
    let show = cluster.run_cli(&["lock", "show", LOCK]).await?;
    assert!(show.status.success(), "lock show: {}", describe_output(&show));
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        text.contains(&format!("token {}", held.token()))
            && text.contains(&format!("session {}", held.owner().session)),
        "lock show names the holder's session {} and token {}: {}",
        held.owner().session,
        held.token(),
        describe_output(&show)
    );
    let show_json = cluster.run_cli(&["lock", "show", LOCK, "--json"]).await?;
    assert!(show_json.status.success(), "lock show --json: {}", describe_output(&show_json));
    let shown: Option<LockInfo> = serde_json::from_slice(&show_json.stdout)
        .with_context(|| format!("lock show --json is not a lock: {}", describe_output(&show_json)))?;
    let shown = shown.context("lock show --json of a held lock is not null")?;
    assert_eq!(shown.name, LOCK);
    assert_eq!(
        shown.holders.iter().map(|h| (h.owner, h.mode, h.token)).collect::<Vec<_>>(),
        vec![(held.owner(), LockMode::Exclusive, held.token())],
        "lock show --json names the holder: {shown:?}"
    );
    assert!(shown.waiters.is_empty(), "the refused runs left no waiter: {shown:?}");

    // `lock list`, text and JSON.
    let list = cluster.run_cli(&["lock", "list"]).await?;
    assert!(list.status.success(), "lock list: {}", describe_output(&list));
    let row = String::from_utf8_lossy(&list.stdout)
        .lines()
        .find(|line| line.split_whitespace().next() == Some(LOCK))
        .map(str::to_string)
        .with_context(|| format!("lock list has no row for {LOCK:?}: {}", describe_output(&list)))?;
    assert!(
        row.split_whitespace().any(|field| field == held.token().to_string())
            && row.split_whitespace().any(|field| field == "exclusive"),
        "the row of {LOCK:?} shows the mode and the token {}: {row:?}",
        held.token()
    );
    let list_json = cluster.run_cli(&["lock", "list", "--json"]).await?;
    assert!(list_json.status.success(), "lock list --json: {}", describe_output(&list_json));
    let listed: Vec<LockInfo> = serde_json::from_slice(&list_json.stdout)
        .with_context(|| format!("lock list --json is not a list of locks: {}", describe_output(&list_json)))?;
    assert_eq!(listed, vec![shown.clone()], "lock list --json lists the one held lock as lock show does");

    // Without a short timeout, `lock run` waits for the holder and then runs with a higher token.
    let token_script = r#"echo "$DISTSYNC_FENCING_TOKEN $DISTSYNC_LOCK_NAME""#;
    let held_token = held.token();
    let waiting_run = ["lock", "run", LOCK, "--", "sh", "-c", token_script];
    let (waited, released) = tokio::join!(cluster.run_cli(&waiting_run), async {
        wait_for_lock(&client, LOCK, STEP_TIMEOUT, "the command line waits", |shown| {
            shown.is_some_and(|lock| lock.waiters.len() == 1)
        })
        .await?;
        held.release().await.context("releasing the library's hold")
    });
    released?;
    let waited = waited?;
    assert!(waited.status.success(), "a waiting lock run: {}", describe_output(&waited));
    let waited_token = token_and_name(&waited)?;
    assert!(waited_token > held_token, "the waiting run's token {waited_token} is not above the holder's {held_token}");

    // Free again: `lock show` says so, and its JSON is null.
    let free = cluster.run_cli(&["lock", "show", LOCK]).await?;
    assert!(free.status.success(), "lock show of a free lock: {}", describe_output(&free));
    assert!(
        String::from_utf8_lossy(&free.stdout).contains(&format!("lock \"{LOCK}\" is free")),
        "lock show says the lock is free: {}",
        describe_output(&free)
    );
    let free_json = cluster.run_cli(&["lock", "show", LOCK, "--json"]).await?;
    assert!(free_json.status.success(), "{}", describe_output(&free_json));
    let shown: Option<LockInfo> = serde_json::from_slice(&free_json.stdout)
        .with_context(|| format!("lock show --json: {}", describe_output(&free_json)))?;
    assert_eq!(shown, None, "lock show --json of a free lock is null");
    Ok(())
}

/// Parses the "TOKEN NAME" line a command under `lock run` printed, checks the name, returns the
/// token.
fn token_and_name(output: &Output) -> anyhow::Result<u64> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut fields = stdout.split_whitespace();
    let token = fields
        .next()
        .and_then(|token| token.parse::<u64>().ok())
        .with_context(|| format!("DISTSYNC_FENCING_TOKEN is not a number: {}", describe_output(output)))?;
    assert_eq!(fields.next(), Some(LOCK), "DISTSYNC_LOCK_NAME names the lock: {}", describe_output(output));
    Ok(token)
}
