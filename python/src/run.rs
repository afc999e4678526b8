//! Running the client's futures for Python: blocking with the GIL released (interruptible by
//! Ctrl-C), or as asyncio futures resolved from the client's runtime. Plus argument conversions.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use distsync::runtime::{self, ProcessBound};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyMemoryView, PyString};
use pyo3::IntoPyObjectExt;

use crate::error::Failure;

/// How often a blocked thread wakes to let Python run its signal handlers.
const SIGNAL_CHECK: Duration = Duration::from_millis(50);

/// A value of the client (the client itself, a lock's holds, a queue handle) that belongs to the
/// process that made it; see [`ProcessBound`].
pub type Local<T> = Arc<ProcessBound<T>>;

/// Binds `value` to this process.
pub fn local<T>(value: T) -> Local<T> {
    Arc::new(ProcessBound::new(value))
}

/// The value of `bound`, in the process that made it.
pub fn here<T>(bound: &Local<T>) -> Result<&T, Failure> {
    Ok(bound.get()?)
}

/// Runs `future` to completion on the calling thread with the GIL released, so other Python
/// threads run meanwhile. Every 50 ms the thread takes the GIL back to run pending signal
/// handlers: Ctrl-C raises `KeyboardInterrupt` here, and the future is dropped inside the
/// runtime, which withdraws whatever it waited for (a queued lock request, a waiting get).
pub fn wait<F, T>(py: Python<'_>, future: F) -> PyResult<T>
where
    F: Future<Output = Result<T, Failure>> + Send,
    T: Send,
{
    let runtime = runtime::runtime().map_err(Failure::from)?;
    // Declared before the future, so dropped after it: an interrupted future is dropped inside
    // the runtime's context, where its cleanup can spawn work.
    let _context = runtime.enter();
    let mut future = std::pin::pin!(future);
    loop {
        let slice = py.detach(|| runtime.block_on(tokio::time::timeout(SIGNAL_CHECK, future.as_mut())));
        match slice {
            Ok(outcome) => return outcome.map_err(PyErr::from),
            Err(_still_running) => py.check_signals()?,
        }
    }
}

/// Builds something that must be made inside the runtime (a client's UDP socket), without
/// waiting for anything.
pub fn inside_runtime<T>(make: impl FnOnce() -> Result<T, Failure>) -> PyResult<T> {
    let runtime = runtime::runtime().map_err(Failure::from)?;
    let _context = runtime.enter();
    Ok(make()?)
}

/// Starts `future` on the client's runtime and returns an asyncio future of the running loop
/// that it resolves. Cancelling the asyncio future (a `wait_for` timeout, task cancellation)
/// aborts the Rust future, which withdraws whatever it waited for.
pub fn spawn<'py, F, T>(py: Python<'py>, future: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = Result<T, Failure>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    let runtime = runtime::runtime().map_err(Failure::from)?;
    let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
    let awaitable = event_loop.call_method0("create_future")?;
    let (event_loop_ref, awaitable_ref) = (event_loop.clone().unbind(), awaitable.clone().unbind());
    let task = runtime.spawn(async move {
        let outcome = future.await;
        Python::attach(|py| {
            let (ok, value) = match outcome {
                Ok(value) => match value.into_py_any(py) {
                    Ok(value) => (true, value),
                    Err(error) => (false, error.value(py).clone().into_any().unbind()),
                },
                Err(failure) => (false, PyErr::from(failure).value(py).clone().into_any().unbind()),
            };
            let resolve = resolver(py);
            // A closed loop has nobody left to tell.
            let _ = event_loop_ref.bind(py).call_method1("call_soon_threadsafe", (resolve, awaitable_ref, ok, value));
        });
    });
    awaitable.call_method1("add_done_callback", (Canceller { task: task.abort_handle() },))?;
    Ok(awaitable)
}

/// Sets the outcome of an asyncio future unless it was cancelled meanwhile.
#[pyfunction]
fn resolve(future: &Bound<'_, PyAny>, ok: bool, value: Bound<'_, PyAny>) -> PyResult<()> {
    if future.call_method0("done")?.is_truthy()? {
        return Ok(());
    }
    if ok {
        future.call_method1("set_result", (value,))?;
    } else {
        future.call_method1("set_exception", (value,))?;
    }
    Ok(())
}

fn resolver(py: Python<'_>) -> &Py<PyAny> {
    static RESOLVE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    RESOLVE.get_or_init(py, || wrap_pyfunction!(resolve, py).expect("a function wraps").into_any().unbind())
}

/// The done-callback of an asyncio future: aborts the Rust task when the future was cancelled.
#[pyclass(frozen)]
struct Canceller {
    task: tokio::task::AbortHandle,
}

#[pymethods]
impl Canceller {
    fn __call__(&self, future: &Bound<'_, PyAny>) -> PyResult<()> {
        if future.call_method0("cancelled")?.is_truthy()? {
            self.task.abort();
        }
        Ok(())
    }
}

/// Bytes handed to Python as `bytes` (a `Vec<u8>` would become a list of ints).
pub struct Bytes(pub Vec<u8>);

impl<'py> IntoPyObject<'py> for Bytes {
    type Target = PyBytes;
    type Output = Bound<'py, PyBytes>;
    type Error = Infallible;

    fn into_pyobject(self, py: Python<'py>) -> Result<Self::Output, Self::Error> {
        Ok(PyBytes::new(py, &self.0))
    }
}

/// The bytes of a `bytes`, `bytearray`, `memoryview` or `str` (UTF-8) argument.
pub fn bytes_of(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<u8>> {
    if let Ok(bytes) = value.cast::<PyBytes>() {
        return Ok(bytes.as_bytes().to_vec());
    }
    if let Ok(text) = value.cast::<PyString>() {
        return Ok(text.to_cow()?.as_bytes().to_vec());
    }
    if let Ok(array) = value.cast::<PyByteArray>() {
        return Ok(array.to_vec());
    }
    if value.is_instance_of::<PyMemoryView>() {
        let copied = value.py().get_type::<PyBytes>().call1((value,))?;
        return Ok(copied.cast::<PyBytes>()?.as_bytes().to_vec());
    }
    Err(Failure::Argument(format!("{what} must be bytes or str, not {}", value.get_type().name()?)).into())
}

/// A duration in seconds from Python (`float` or `int`).
pub fn seconds(value: f64, what: &str) -> Result<Duration, Failure> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| Failure::Argument(format!("{what} must be a finite number of seconds ≥ 0, not {value}")))
}

/// An optional duration in seconds.
pub fn optional_seconds(value: Option<f64>, what: &str) -> Result<Option<Duration>, Failure> {
    value.map(|value| seconds(value, what)).transpose()
}
