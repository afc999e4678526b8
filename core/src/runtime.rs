//! Driving the async client from synchronous code and from other languages' threads: one tokio
//! runtime per process, and values that refuse to be used in a child process after `fork()`.
//!
//! A program that is not async itself (a Python script, a JVM service) calls [`runtime`] once
//! and blocks on the client's futures with it. The runtime belongs to the process that made it:
//! after a `fork()`, the child gets a runtime of its own on first use, because the parent's
//! worker threads do not exist in the child. A [`Client`](crate::Client) cannot follow: its
//! connections and background tasks (session keepalives, lease watchers) live in the parent's
//! runtime. Wrapping it in a [`ProcessBound`] makes a child's use of it fail with
//! [`ClientError::Forked`], which says what to do, instead of hanging on tasks that will never
//! run.
//!
//! ```no_run
//! # fn example() -> Result<(), distsync::ClientError> {
//! use distsync::runtime::{runtime, ProcessBound};
//! use distsync::{Client, ClientTls};
//!
//! let runtime = runtime()?;
//! let client = runtime.block_on(Client::connect(["127.0.0.1:7101"], ClientTls::from_ca_file("tls/ca.pem")?))?;
//! let client = ProcessBound::new(client);
//! // Later, possibly in a forked child:
//! let value = runtime.block_on(client.get()?.kv().get("greeting"))?;
//! # Ok(()) }
//! ```

use std::sync::Mutex;

use tokio::runtime::Runtime;

use crate::error::ClientError;

/// The runtime of the current process, by process id; a forked child's copy names the parent.
static RUNTIME: Mutex<Option<(u32, &'static Runtime)>> = Mutex::new(None);

/// The runtime of this process, started on first use: a multi-threaded tokio runtime whose
/// worker threads are named `distsync`. Blocking on it from many threads at once is fine; each
/// blocked thread waits for its own future while the workers drive the connections.
///
/// After a `fork()`, the child's first call starts a new runtime; the parent's is left alone
/// (its threads were not copied, so it can be neither used nor shut down in the child).
///
/// # Errors
///
/// [`ClientError::Config`] when the runtime cannot start (the process may not create threads).
pub fn runtime() -> Result<&'static Runtime, ClientError> {
    let pid = std::process::id();
    let mut current = RUNTIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((owner, runtime)) = *current {
        if owner == pid {
            return Ok(runtime);
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("distsync")
        .build()
        .map_err(|e| ClientError::Config { reason: format!("cannot start the client's runtime: {e}") })?;
    // Never dropped: dropping a runtime joins its workers, and a forked child has none to join.
    let runtime: &'static Runtime = Box::leak(Box::new(runtime));
    *current = Some((pid, runtime));
    Ok(runtime)
}

/// A value usable only in the process that created it: in a forked child,
/// [`get`](ProcessBound::get) fails with [`ClientError::Forked`] and dropping the value leaks
/// it instead of touching state that belongs to the parent. In its own process, the value is
/// dropped inside the process's [`runtime`], so that whatever its drop starts in the background
/// (a lock release, a cancelled wait) runs.
///
/// ```no_run
/// # fn example(client: distsync::Client) {
/// use distsync::runtime::ProcessBound;
///
/// let bound = ProcessBound::new(client);
/// match bound.get() {
///     Ok(client) => { /* use it */ }
///     Err(error) => eprintln!("{error}"), // "...create a new client in the child process"
/// }
/// # }
/// ```
pub struct ProcessBound<T> {
    pid: u32,
    /// Always `Some` until dropped.
    value: Option<T>,
}

impl<T> ProcessBound<T> {
    /// Binds `value` to the current process.
    pub fn new(value: T) -> Self {
        ProcessBound { pid: std::process::id(), value: Some(value) }
    }

    /// The value, in the process that created it.
    ///
    /// # Errors
    ///
    /// [`ClientError::Forked`] in any other process.
    pub fn get(&self) -> Result<&T, ClientError> {
        self.check()?;
        Ok(self.value.as_ref().expect("a ProcessBound holds its value until dropped"))
    }

    /// The value, mutably, in the process that created it.
    ///
    /// # Errors
    ///
    /// As [`ProcessBound::get`].
    pub fn get_mut(&mut self) -> Result<&mut T, ClientError> {
        self.check()?;
        Ok(self.value.as_mut().expect("a ProcessBound holds its value until dropped"))
    }

    fn check(&self) -> Result<(), ClientError> {
        let pid = std::process::id();
        if pid == self.pid {
            Ok(())
        } else {
            Err(ClientError::Forked { created_in: self.pid, used_in: pid })
        }
    }
}

impl<T> Drop for ProcessBound<T> {
    fn drop(&mut self) {
        let value = self.value.take();
        if self.check().is_err() {
            // It belongs to the parent: its tasks and sockets are not this process's to touch.
            std::mem::forget(value);
            return;
        }
        let _context = runtime().ok().map(|runtime| runtime.enter());
        drop(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_is_shared_within_a_process() {
        let first = runtime().expect("runtime") as *const Runtime;
        let second = runtime().expect("runtime") as *const Runtime;
        assert_eq!(first, second);
    }

    #[test]
    fn a_bound_value_is_usable_in_its_process_and_dropped_inside_the_runtime() {
        struct NeedsRuntime;
        impl Drop for NeedsRuntime {
            fn drop(&mut self) {
                assert!(tokio::runtime::Handle::try_current().is_ok(), "dropped outside the runtime");
            }
        }
        let mut bound = ProcessBound::new(NeedsRuntime);
        assert!(bound.get().is_ok());
        assert!(bound.get_mut().is_ok());
        drop(bound);
    }

    #[test]
    fn a_bound_value_refuses_another_process() {
        let mut bound = ProcessBound::new(5);
        bound.pid ^= 1; // as if created by the parent of a fork
        let expected = ClientError::Forked { created_in: bound.pid, used_in: std::process::id() };
        assert_eq!(bound.get().err(), Some(expected.clone()));
        assert_eq!(bound.get_mut().err(), Some(expected.clone()));
        assert!(expected.to_string().contains("create a new client in the child process"));
    }
}
