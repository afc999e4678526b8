//! Running the client's futures for Kotlin and Swift callers: awaited from their executors, or
//! blocking the calling thread, always on the client's per-process runtime.

use std::future::Future;

use distsync::runtime;

use crate::error::{DistsyncError, Outcome};

/// Runs `future` on the client's runtime and awaits it from whatever executor polls this one;
/// dropping this future (a cancelled coroutine or Task) aborts the work, which withdraws what
/// it waited for.
pub(crate) async fn on_runtime<T, F>(future: F) -> Outcome<T>
where
    T: Send + 'static,
    F: Future<Output = Outcome<T>> + Send + 'static,
{
    struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);
    impl<T> Drop for AbortOnDrop<T> {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let mut task = AbortOnDrop(runtime::runtime()?.spawn(future));
    match (&mut task.0).await {
        Ok(outcome) => outcome,
        Err(failed) => Err(DistsyncError::Internal { reason: format!("the call's task failed: {failed}") }),
    }
}

/// Drops `value` inside the client's runtime, where its cleanup (a background release, the
/// return of prefetched messages) can be spawned; foreign objects are freed on foreign threads.
pub(crate) fn drop_on_runtime<T>(value: T) {
    if let Ok(runtime) = runtime::runtime() {
        let _context = runtime.enter();
        drop(value);
    }
}

/// Runs `future` to completion on the calling thread (which must not be a runtime thread).
pub(crate) fn block_on<T>(future: impl Future<Output = Outcome<T>>) -> Outcome<T> {
    runtime::runtime()?.block_on(future)
}
