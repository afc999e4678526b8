//! Lock workers: exclusive and shared holds of a few locks. An exclusive holder writes to the
//! fenced resource under its token before it releases; a holder whose session lapsed while a
//! node was paused or cut off finds its write refused when a newer holder wrote meanwhile. Now
//! and then a hold lasts longer than the waiters' acquire timeout, so that waits time out too.

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

pub(super) async fn run(mut worker: Worker) {
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
        let work = if long {
            ACQUIRE_TIMEOUT + Duration::from_secs(1)
        } else {
            Duration::from_millis(worker.random.between(5, 60))
        };
        tokio::time::sleep(work).await;
        if mode == Mode::Exclusive {
            worker.shared.fenced.write(&name, token, &worker.shared.history);
        }
        let released = Instant::now();
        let release = guard.release().await;
        let release_acknowledged = release.is_ok();
        worker.shared.history.count("lock", "release", release.as_ref().map_or_else(lock_outcome, |()| Outcome::Ok));
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
