//! `distsync lock …`: run a command under a lock, and inspect locks.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use distsync::Client;

use crate::connect::Target;
use crate::flags::seconds;
use crate::signals::shutdown_signal;

#[derive(Subcommand)]
pub(crate) enum LockCommand {
    /// Run COMMAND while holding lock NAME, then release it; exits with COMMAND's status. The
    /// fencing token is in DISTSYNC_FENCING_TOKEN. If the lock is lost while COMMAND runs, COMMAND
    /// gets SIGTERM (SIGKILL 10 s later) and the status is the conflict exit code.
    Run {
        /// The lock.
        name: String,
        /// Take a shared hold instead of an exclusive one.
        #[arg(long)]
        shared: bool,
        /// Give up after this many seconds (fractions allowed); default: wait until granted.
        #[arg(long)]
        timeout: Option<f64>,
        /// Exit status when the lock is not granted in time or is lost (like flock's -E).
        #[arg(long, default_value_t = 1)]
        conflict_exit_code: u8,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, num_args = 1..)]
        command: Vec<String>,
    },
    /// Every lock held or awaited: mode, holders and waiters.
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One lock's holders (session, actor, mode, token, since) and waiters in order.
    Show {
        /// The lock.
        name: String,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Runs one lock command under a session of its own.
pub(crate) async fn run(target: &Target, command: LockCommand) -> anyhow::Result<ExitCode> {
    let client = target.connect().await?;
    let code = run_command(&client, command).await;
    client.close().await;
    code
}

async fn run_command(client: &Client, command: LockCommand) -> anyhow::Result<ExitCode> {
    match command {
        LockCommand::Run { name, shared, timeout, conflict_exit_code, command } => {
            let mut request = client.lock(&name);
            if shared {
                request = request.shared();
            }
            if let Some(timeout) = timeout {
                request = request.timeout(seconds(timeout, "--timeout")?);
            }
            // Ctrl-C while waiting: give up the wait (closing the session withdraws it).
            let acquired = tokio::select! {
                acquired = request.acquire() => acquired,
                () = shutdown_signal() => {
                    eprintln!("distsync: interrupted while waiting for lock {name:?}");
                    return Ok(ExitCode::from(130));
                }
            };
            let guard = match acquired {
                Ok(guard) => guard,
                Err(error @ (distsync::LockError::Timeout { .. } | distsync::LockError::Deadlock { .. })) => {
                    eprintln!("distsync: {error}");
                    return Ok(ExitCode::from(conflict_exit_code));
                }
                Err(error) if matches!(error.kind(), distsync::ErrorKind::PermissionDenied { .. }) => {
                    eprintln!("distsync: {error}");
                    return Ok(ExitCode::from(conflict_exit_code));
                }
                Err(error) => return Err(error.into()),
            };
            let status = run_holding(&guard, &command).await;
            let released = guard.release().await;
            match status? {
                Held::Exited(code) => {
                    if let Err(error) = released {
                        eprintln!("distsync: releasing lock {name:?}: {error}");
                    }
                    Ok(ExitCode::from(code))
                }
                Held::Lost => {
                    eprintln!("distsync: lock {name:?} was lost while the command ran; it was stopped");
                    Ok(ExitCode::from(conflict_exit_code))
                }
            }
        }
        LockCommand::List { json } => {
            let locks = client.lock_list().await?;
            if json {
                println!("{}", serde_json::to_string(&locks)?);
            } else {
                println!("{:<32} {:<10} {:>7} {:>7} {:>12}", "NAME", "MODE", "HOLDERS", "WAITERS", "TOKEN");
                for lock in &locks {
                    let mode = lock.holders.first().map(|h| h.mode.as_str()).unwrap_or("-");
                    let token = lock.holders.iter().map(|h| h.token).max().map(|t| t.to_string());
                    println!(
                        "{:<32} {:<10} {:>7} {:>7} {:>12}",
                        lock.name,
                        mode,
                        lock.holders.len(),
                        lock.waiters.len(),
                        token.unwrap_or_else(|| "-".into())
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        LockCommand::Show { name, json } => {
            let lock = client.lock_show(&name).await?;
            if json {
                println!("{}", serde_json::to_string(&lock)?);
                return Ok(ExitCode::SUCCESS);
            }
            let Some(lock) = lock else {
                println!("lock {name:?} is free: nobody holds or awaits it");
                return Ok(ExitCode::SUCCESS);
            };
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            let age = |since_ms: u64| format!("{:.1}s", now_ms.saturating_sub(since_ms) as f64 / 1000.0);
            let identity = |session: u64| {
                let known = lock.identities.iter().find(|(id, _)| *id == session);
                known.map(|(_, identity)| format!(" ({identity})")).unwrap_or_default()
            };
            println!("lock {:?}", lock.name);
            println!("holders:");
            for holder in &lock.holders {
                println!(
                    "  session {}{} actor {:#x} {} token {} for {}",
                    holder.owner.session,
                    identity(holder.owner.session),
                    holder.owner.actor,
                    holder.mode.as_str(),
                    holder.token,
                    age(holder.since_ms)
                );
            }
            println!("waiters, in the order they are served:");
            for waiter in &lock.waiters {
                let deadline = match waiter.deadline_ms {
                    Some(deadline) => format!(", gives up in {:.1}s", deadline.saturating_sub(now_ms) as f64 / 1000.0),
                    None => String::new(),
                };
                println!(
                    "  session {}{} actor {:#x} {}{} waiting {}{deadline}",
                    waiter.owner.session,
                    identity(waiter.owner.session),
                    waiter.owner.actor,
                    waiter.mode.as_str(),
                    if waiter.upgrade { " (upgrade)" } else { "" },
                    age(waiter.since_ms)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// How a command run under a lock ended.
enum Held {
    /// It exited with this status (128 + N when killed by signal N, as shells report it).
    Exited(u8),
    /// The lock was lost first, and the command was stopped.
    Lost,
}

/// Runs `command` while `guard` holds its lock; stops it if the lock is lost, and passes SIGINT
/// and SIGTERM on to it.
async fn run_holding(guard: &distsync::LockGuard, command: &[String]) -> anyhow::Result<Held> {
    use std::os::unix::process::ExitStatusExt as _;
    use tokio::signal::unix::{signal, SignalKind};
    let (program, arguments) = command.split_first().context("no command given after --")?;
    let mut child = tokio::process::Command::new(program)
        .args(arguments)
        .env("DISTSYNC_FENCING_TOKEN", guard.token().to_string())
        .env("DISTSYNC_LOCK_NAME", guard.name())
        .spawn()
        .with_context(|| format!("cannot run {program:?}"))?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status?,
            _ = interrupt.recv() => forward_signal(&child, libc::SIGINT),
            _ = terminate.recv() => forward_signal(&child, libc::SIGTERM),
            () = guard.lost() => {
                forward_signal(&child, libc::SIGTERM);
                if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
                    let _ = child.kill().await;
                }
                return Ok(Held::Lost);
            }
        }
    };
    let code = match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(signal)) => 128u8.saturating_add(signal as u8),
        (None, None) => 1,
    };
    Ok(Held::Exited(code))
}

#[allow(unsafe_code)]
fn forward_signal(child: &tokio::process::Child, signal: libc::c_int) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped) is sound.
        unsafe {
            libc::kill(pid as libc::pid_t, signal);
        }
    }
}
