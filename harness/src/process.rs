//! Child processes and scratch space: commands run to completion under a deadline, children that
//! die with their parent, fresh directories, free ports.

use std::io::Read;
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};

/// `count` distinct UDP ports on 127.0.0.1 that were free a moment ago: all are bound at once
/// (so they differ), then released for the nodes to bind.
///
/// # Errors
///
/// When a socket cannot be bound.
pub fn free_udp_ports(count: usize) -> std::io::Result<Vec<u16>> {
    let sockets = (0..count).map(|_| UdpSocket::bind("127.0.0.1:0")).collect::<std::io::Result<Vec<_>>>()?;
    sockets.iter().map(|socket| socket.local_addr().map(|address| address.port())).collect()
}

/// Whether this process runs as root (effective uid 0): mounting a filesystem, as the full-disk
/// tests do, needs it.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status.lines().any(|line| line.starts_with("Uid:") && line.split_whitespace().nth(2) == Some("0"))
    })
}

/// Exit status, stdout and stderr of a finished command, for assertion messages.
pub fn describe_output(output: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A fresh directory under the system temp directory, unique across processes and tests.
pub(crate) fn unique_directory() -> anyhow::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let name = format!("distsync-test-{}-{}-{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
    let directory = std::env::temp_dir().join(name);
    std::fs::create_dir(&directory).with_context(|| format!("cannot create {}", directory.display()))?;
    Ok(directory)
}

/// Runs a command to completion with piped output, killing it at the deadline. Blocking work
/// runs on tokio's blocking pool, so callers may await it from a test.
pub(crate) async fn run_bounded(command: Command, timeout: Duration) -> anyhow::Result<Output> {
    tokio::task::spawn_blocking(move || run_bounded_blocking(command, timeout))
        .await
        .context("the thread running a command panicked")?
}

fn run_bounded_blocking(mut command: Command, timeout: Duration) -> anyhow::Result<Output> {
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let description = format!("{command:?}");
    let mut child = command.spawn().with_context(|| format!("cannot run {description}"))?;
    // Both pipes close when the process exits; readers on their own threads turn that into an
    // event with a deadline, where waiting on the process itself has none.
    let (sender, receiver) = mpsc::channel();
    let stdout = child.stdout.take().context("stdout was piped")?;
    let stderr = child.stderr.take().context("stderr was piped")?;
    for (index, mut pipe) in [(0usize, Box::new(stdout) as Box<dyn Read + Send>), (1, Box::new(stderr))] {
        let sender = sender.clone();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            let _ = sender.send((index, bytes));
        });
    }
    let deadline = Instant::now() + timeout;
    let mut outputs = [Vec::new(), Vec::new()];
    for _ in 0..2 {
        match receiver.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((index, bytes)) => outputs[index] = bytes,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{description} did not finish within {timeout:?}");
            }
        }
    }
    let status = child.wait().with_context(|| format!("cannot reap {description}"))?;
    let [stdout, stderr] = outputs;
    Ok(Output { status, stdout, stderr })
}

/// Makes a child process receive SIGKILL when the thread that spawned it exits, so that a
/// harness process killed mid-run (Ctrl-C, a CI timeout, a SIGKILL) leaves no nodes running.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub(crate) fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: the closure runs in the forked child before exec and only calls prctl, which is
    // async-signal-safe and touches no memory shared with the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn die_with_parent(_command: &mut Command) {}

/// Sends SIGTERM to `pid`: a clean shutdown of a node or server.
pub(crate) fn terminate(pid: u32) {
    let _ = signal(pid, libc::SIGTERM);
}

/// Sends `signal` to `pid`.
#[allow(unsafe_code)]
pub(crate) fn signal(pid: u32, signal: libc::c_int) -> std::io::Result<()> {
    // SAFETY: sending a signal has no memory-safety preconditions.
    let sent = unsafe { libc::kill(pid as libc::pid_t, signal) };
    if sent == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
