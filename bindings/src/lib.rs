//! uniffi exports of the distsync client, from which `bindings/generate.sh` generates the Kotlin
//! and Swift SDKs (`bindings/kotlin`, `bindings/swift`).
//!
//! Thin by design: every behaviour (leader discovery, retries, sessions, lock ownership) lives
//! in the Rust client. Each call runs on the client's per-process runtime
//! ([`distsync::runtime::runtime`]); an async method awaits it from the caller's executor
//! (Kotlin coroutines, Swift concurrency), and cancelling the caller withdraws the call, as
//! dropping a Rust future does. The `…Blocking` variants wait on the calling thread, for JVM and
//! mobile code outside coroutines.
//!
//! ```kotlin
//! val client = Client.connect(listOf("127.0.0.1:7101"), "tls/ca.pem")
//! val lock = client.lock("reports")
//! try { write(report, lock.token()) } finally { lock.release() }
//! ```
//!
//! One file per concern: `client.rs` (connecting, owners), `lock.rs`, `queue.rs`, `cache.rs`,
//! `error.rs` (the error every call throws), `run.rs` (how calls run on the client's runtime).

mod cache;
mod client;
mod error;
mod lock;
mod queue;
mod run;

uniffi::setup_scaffolding!();
