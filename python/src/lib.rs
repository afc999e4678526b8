//! The Python binding of the distsync client: `distsync._native`, re-exported by the `distsync`
//! package (see `python/distsync/__init__.py`).
//!
//! Thin by design: every behaviour (leader discovery, retries, sessions, lock ownership, the
//! per-process runtime) lives in the Rust client; this crate converts arguments and results,
//! maps errors to the exception tree (`error.rs`), and runs futures either blocking with the
//! GIL released or as asyncio futures (`run.rs`).
//!
//! ## Layout
//!
//! - `client.rs`: `Client`, `AsyncClient`, `Owner`.
//! - `lock.rs`: `Lock`, `AsyncLock`, `LockInfo`.
//! - `queue.rs`: `Queue`, `Message`, `Consumer` and their asyncio twins, `QueueStats`.
//! - `cache.rs`: `Cache`, `AsyncCache`.

mod cache;
mod client;
mod error;
mod lock;
mod queue;
mod run;

use pyo3::prelude::*;

/// distsync: fenced distributed locks, durable queues and a coherent cache on Raft.
#[pymodule]
#[pyo3(name = "_native")]
fn native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    error::register(module)?;
    module.add_class::<client::Client>()?;
    module.add_class::<client::AsyncClient>()?;
    module.add_class::<client::Owner>()?;
    module.add_class::<lock::Lock>()?;
    module.add_class::<lock::AsyncLock>()?;
    module.add_class::<lock::LockInfo>()?;
    module.add_class::<lock::LockHolder>()?;
    module.add_class::<lock::LockWaiter>()?;
    module.add_class::<queue::Queue>()?;
    module.add_class::<queue::AsyncQueue>()?;
    module.add_class::<queue::Message>()?;
    module.add_class::<queue::AsyncMessage>()?;
    module.add_class::<queue::Consumer>()?;
    module.add_class::<queue::AsyncConsumer>()?;
    module.add_class::<queue::QueueStats>()?;
    module.add_class::<cache::Cache>()?;
    module.add_class::<cache::AsyncCache>()?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
