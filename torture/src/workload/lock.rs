//! Lock workers: exclusive and shared holds of a few locks. An exclusive holder writes to the
//! fenced resource under its token before it releases; a holder whose session lapsed while a
//! node was paused or cut off finds its write refused when a newer holder wrote meanwhile. Now
//! and then a hold lasts longer than the waiters' acquire timeout, so that waits time out too.
//!
//! Now and then a holder stalls, as a process in a long GC pause or under SIGSTOP does: each
//! lock worker's client runs on a runtime of its own on a thread of its own, and a stall blocks
//! that thread, so the client's keepalives and connections stop too and its lease lapses while
//! it still believes it holds the lock. When it wakes it writes under its old token anyway (as
//! a careless application would) and then releases: the fenced resource must refuse the write
//! if a newer holder wrote meanwhile, and the cluster must refuse the release, or the lock check
//! finds two acknowledged holds that overlap.

use std::time::{Duration, Instant};

use distsync::LockMode;

use super::{lock_outcome, Worker};
use crate::check::lock::{Hold, Mode};
use crate::check::Outcome;

/// Locks the workers share: few, so they contend.
const LOCKS: u64 = 2;

/// The lock workers' session lease: short, so a stalled holder loses its hold within a run.
const SESSION_TTL: Duration = Duration::from_secs(3);

/// How long an acquire waits for the lock.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// One hold in this many lasts longer than [`ACQUIRE_TIMEOUT`].
const LONG_HOLD_ONE_IN: u64 = 25;

/// One exclusive hold in this many stalls its whole client for [`STALL`].
const STALL_ONE_IN: u64 = 15;

/// How long a stalled client stands still: past its lease, with time for a waiter to take over.
const STALL: Duration = SESSION_TTL.saturating_mul(2);

/// Runs a lock worker as a client process of its own would run: on a runtime of its own, on a
/// thread of its own, so that its stalls stop nobody else.
pub(super) async fn run_alone(worker: Worker) {
    let thread = tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a lock worker needs a runtime of its own (the process cannot make one)");
        runtime.block_on(run(worker));
    });
    if let Err(error) = thread.await {
        // A panic goes on as the worker's panic; a cancelled thread (the runtime shutting down)
        // has nothing to report.
        if let Ok(panic) = error.try_into_panic() {
            std::panic::resume_unwind(panic);
        }
    }
}

async fn run(mut worker: Worker) {
    let Some(client) = worker.connect(Some(SESSION_TTL)).await else { return };
    while !worker.shared.stopping() {
        let name = format!("lock-{}", worker.random.below(LOCKS));
        let shared = worker.random.one_in(4);
        let builder = client.lock(&name).timeout(ACQUIRE_TIMEOUT);
        let builder = if shared { builder.shared() } else { builder.exclusive() };
        let requested = Instant::now();
        let guard = match builder.acquire().await {
            Ok(guard) => guard,
            Err(error) => {
                worker.shared.history.count("lock", "acquire", lock_outcome(&error));
                continue;
            }
        };
        let granted = Instant::now();
        worker.shared.succeeded(worker.id, requested);
        worker.shared.history.count("lock", "acquire", Outcome::Ok);
        let mode = if guard.mode() == LockMode::Shared { Mode::Shared } else { Mode::Exclusive };
        let token = guard.token();
        let long = worker.random.one_in(LONG_HOLD_ONE_IN);
        let stall = worker.random.one_in(STALL_ONE_IN)
            && mode == Mode::Exclusive
            && Instant::now() + STALL + Duration::from_secs(1) < worker.shared.faults_end;
        let work = if long {
            ACQUIRE_TIMEOUT + Duration::from_secs(1)
        } else {
            Duration::from_millis(worker.random.between(5, 60))
        };
        if stall {
            // Blocks the thread: this client's runtime, keepalive and connections stand still.
            std::thread::sleep(STALL);
        } else {
            tokio::time::sleep(work).await;
        }
        let accepted = mode == Mode::Exclusive && worker.shared.fenced.write(&name, token, &worker.shared.history);
        let released = Instant::now();
        let release = guard.release().await;
        let release_acknowledged = release.is_ok();
        worker.shared.history.count("lock", "release", release.as_ref().map_or_else(lock_outcome, |()| Outcome::Ok));
        if stall {
            worker.shared.history.stalled(!accepted, !release_acknowledged);
        }
        worker.shared.history.hold(Hold {
            lock: name,
            client: worker.id,
            mode,
            token,
            requested,
            granted,
            released: Some(released),
            release_acknowledged,
        });
    }
    client.close().await;
}
