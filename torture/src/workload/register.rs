//! kv and cache workers: writes of values unique to the worker and linearizable reads on a few
//! keys, so that readers and writers of one key overlap often.

use std::time::Instant;

use super::{client_outcome, Worker};
use crate::check::register::{Action, Operation};
use crate::check::Outcome;

/// Keys per register: few, so operations on one key overlap.
const KEYS: u64 = 6;

/// One operation in this many writes; the rest read.
const WRITE_ONE_IN: u64 = 3;

pub(super) async fn run(mut worker: Worker, cache: bool) {
    let Some(client) = worker.connect(None).await else { return };
    let (kv, cache_handle) = (client.kv(), client.cache());
    let prefix = if cache { "cache" } else { "kv" };
    let mut sequence = 0u64;
    while !worker.shared.stopping() {
        let key = format!("{prefix}-{}", worker.random.below(KEYS)).into_bytes();
        let invoked = Instant::now();
        if worker.random.one_in(WRITE_ONE_IN) {
            sequence += 1;
            let value = format!("c{}-{sequence}", worker.id).into_bytes();
            let written = if cache {
                cache_handle.set(&key, &value).await.map(drop)
            } else {
                kv.put(&key, &value).await.map(drop)
            };
            let outcome = match &written {
                Ok(()) => Outcome::Ok,
                Err(error) => client_outcome(error),
            };
            if outcome == Outcome::Ok {
                worker.shared.succeeded(worker.id, invoked);
            }
            // A refused write did not happen: it constrains nothing.
            if outcome != Outcome::Failed {
                let returned = (outcome == Outcome::Ok).then(Instant::now);
                let operation = Operation { key, action: Action::Write(value), invoked, returned };
                worker.shared.history.register(cache, operation, outcome);
            } else {
                worker.shared.history.count(prefix, "write", outcome);
            }
        } else {
            let read = if cache { cache_handle.get(&key).await } else { kv.get(&key).await };
            match read {
                Ok(value) => {
                    worker.shared.succeeded(worker.id, invoked);
                    let operation =
                        Operation { key, action: Action::Read(value), invoked, returned: Some(Instant::now()) };
                    worker.shared.history.register(cache, operation, Outcome::Ok);
                }
                // A failed read returned nothing: it constrains nothing.
                Err(_) => worker.shared.history.count(prefix, "read", Outcome::Failed),
            }
        }
    }
    client.close().await;
}
