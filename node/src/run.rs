//! Futures to Promises, and what every binding object shares with its client.
//!
//! Every call returns a Promise resolved on napi's tokio runtime, so the event loop never waits
//! for the network. A pending Promise keeps the process alive (as a pending socket read would);
//! an idle client does not: its keepalives run on the runtime's own threads, outside the loop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use napi::bindgen_prelude::{Buffer, PromiseRaw, ToNapiValue};
use napi::{Either, Env};
use tokio::sync::watch;

use crate::error::Failure;

/// The client behind a `Client` object and everything made from it, and the switch that
/// `Client.close()` turns: once closed, pending calls end (their waits are withdrawn, as when a
/// Rust future is dropped) and later calls fail with `CLIENT_CLOSED`.
#[derive(Clone)]
pub struct Shared {
    pub client: distsync::Client,
    closed: Arc<watch::Sender<bool>>,
    runtime: tokio::runtime::Handle,
}

impl Shared {
    /// Wraps `client`; must run inside the runtime.
    pub fn new(client: distsync::Client) -> Self {
        Shared { client, closed: Arc::new(watch::channel(false).0), runtime: tokio::runtime::Handle::current() }
    }

    /// Ends every pending call and refuses later ones.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// `future`, unless the client is closed first.
    pub async fn guard<T>(&self, future: impl Future<Output = Result<T, Failure>>) -> Result<T, Failure> {
        let mut closed = self.closed.subscribe();
        if *closed.borrow_and_update() {
            return Err(Failure::Closed);
        }
        tokio::select! {
            outcome = future => outcome,
            _ = closed.wait_for(|closed| *closed) => Err(Failure::Closed),
        }
    }

    /// Drops `value` inside the runtime, where its cleanup (a background release, the return of
    /// prefetched messages) can be spawned. Objects are finalized on the JavaScript thread.
    pub fn drop_inside<T>(&self, value: T) {
        let _context = self.runtime.enter();
        drop(value);
    }
}

/// A Promise of `future`'s outcome, which runs on the runtime guarded by `shared`'s close
/// switch; a failure rejects it with the matching `DistsyncError`.
pub fn promise<'env, T, F>(env: &'env Env, shared: &Shared, future: F) -> napi::Result<PromiseRaw<'env, T>>
where
    T: ToNapiValue + Send + 'static,
    F: Future<Output = Result<T, Failure>> + Send + 'static,
{
    let shared = shared.clone();
    settle(env, async move { shared.guard(future).await })
}

/// A Promise of `future`'s outcome, which runs on the runtime whether or not the client closes.
pub fn settle<'env, T, F>(env: &'env Env, future: F) -> napi::Result<PromiseRaw<'env, T>>
where
    T: ToNapiValue + Send + 'static,
    F: Future<Output = Result<T, Failure>> + Send + 'static,
{
    env.spawn_future_with_callback(async move { Ok(future.await) }, |env, outcome| {
        outcome.map_err(|failure| failure.into_js(env))
    })
}

/// Bytes from JavaScript: a `Buffer` (any `Uint8Array`) or a string (UTF-8).
pub type BytesArg = Either<Buffer, String>;

pub fn bytes_of(value: BytesArg) -> Vec<u8> {
    match value {
        Either::A(buffer) => buffer.to_vec(),
        Either::B(text) => text.into_bytes(),
    }
}

/// A duration given in milliseconds; `what` names it in the error.
pub fn millis(value: f64, what: &str) -> Result<Duration, Failure> {
    if !value.is_finite() || value < 0.0 {
        return Err(Failure::Argument(format!("{what} must be a finite number of milliseconds ≥ 0, not {value}")));
    }
    Duration::try_from_secs_f64(value / 1000.0)
        .map_err(|_| Failure::Argument(format!("{what} is too large: {value} ms")))
}

pub fn optional_millis(value: Option<f64>, what: &str) -> Result<Option<Duration>, Failure> {
    value.map(|value| millis(value, what)).transpose()
}

/// A count given as a JavaScript number.
pub fn count(value: f64, what: &str) -> Result<usize, Failure> {
    if value.fract() != 0.0 || !(0.0..=u32::MAX as f64).contains(&value) {
        return Err(Failure::Argument(format!("{what} must be a whole number ≥ 0, not {value}")));
    }
    Ok(value as usize)
}

/// A counter of the cluster (token, id, tag, session, version) as a JavaScript number: exact
/// below 2^53, which these counters, incremented once per operation, do not reach.
pub fn number(value: u64) -> f64 {
    debug_assert!(value < 1 << 53, "counter {value} beyond JavaScript's exact integers");
    value as f64
}
