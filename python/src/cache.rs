//! `Cache` and `AsyncCache`.

use std::time::Duration;

use distsync::wire::Consistency;
use pyo3::prelude::*;

use crate::error::Failure;
use crate::run::{bytes_of, here, local, optional_seconds, spawn, wait, Bytes, Local};

/// What the cache calls share between the blocking and asyncio flavours.
mod ops {
    use super::*;

    fn reads(cache: &Local<distsync::Cache>, local: bool) -> Result<distsync::Cache, Failure> {
        let cache = here(cache)?.clone();
        Ok(if local { cache.consistency(Consistency::Local) } else { cache })
    }

    pub async fn get(cache: Local<distsync::Cache>, key: Vec<u8>, local: bool) -> Result<Option<Bytes>, Failure> {
        Ok(reads(&cache, local)?.get(key).await?.map(Bytes))
    }

    pub async fn get_versioned(
        cache: Local<distsync::Cache>,
        key: Vec<u8>,
        local: bool,
    ) -> Result<Option<(Bytes, u64)>, Failure> {
        Ok(reads(&cache, local)?.get_versioned(key).await?.map(|v| (Bytes(v.value), v.version)))
    }

    pub async fn get_many(
        cache: Local<distsync::Cache>,
        keys: Vec<Vec<u8>>,
        local: bool,
    ) -> Result<Vec<Option<Bytes>>, Failure> {
        Ok(reads(&cache, local)?.get_many(keys).await?.into_iter().map(|v| v.map(Bytes)).collect())
    }

    pub async fn set(
        cache: Local<distsync::Cache>,
        key: Vec<u8>,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<u64, Failure> {
        let cache = here(&cache)?;
        Ok(match ttl {
            Some(ttl) => cache.set_with_ttl(key, value, ttl).await?,
            None => cache.set(key, value).await?,
        })
    }

    pub async fn delete(cache: Local<distsync::Cache>, key: Vec<u8>) -> Result<bool, Failure> {
        Ok(here(&cache)?.delete(key).await?)
    }
}

fn keys(keys: Vec<Bound<'_, PyAny>>) -> PyResult<Vec<Vec<u8>>> {
    keys.iter().map(|key| bytes_of(key, "a key")).collect()
}

/// The coherent cache, from ``Client.cache``. Redis holds the values; every node keeps copies
/// kept coherent through the Raft log (MESI). Reads are linearizable: a read that starts after
/// a ``set`` returned sees it (or something newer), whichever node answers. Keys and values are
/// ``bytes`` or ``str`` (stored as UTF-8); values come back as ``bytes``.
///
/// Example::
///
///     client.cache.set("user:1", b'{"name": "Ada"}', ttl=60)
///     client.cache.get("user:1")        # b'{"name": "Ada"}'
///     client.cache.get("user:2")        # None
#[pyclass(module = "distsync", frozen)]
pub struct Cache {
    cache: Local<distsync::Cache>,
}

impl Cache {
    pub fn new(cache: distsync::Cache) -> Self {
        Cache { cache: local(cache) }
    }
}

#[pymethods]
impl Cache {
    /// The value of `key`, or ``None`` when absent (never set, deleted or expired).
    ///
    /// Args:
    ///     local: answer from the node's applied state without confirming with the leader:
    ///         faster, but it may miss a write acknowledged moments ago.
    ///
    /// Raises:
    ///     InvalidArgument: empty key or one over 4 KiB.
    ///     Unavailable: no node could answer in time.
    #[pyo3(signature = (key, *, local=false))]
    fn get(&self, py: Python<'_>, key: &Bound<'_, PyAny>, local: bool) -> PyResult<Option<Bytes>> {
        wait(py, ops::get(self.cache.clone(), bytes_of(key, "a key")?, local))
    }

    /// ``(value, version)`` of `key`, or ``None``; the version is the revision of the write.
    #[pyo3(signature = (key, *, local=false))]
    fn get_versioned(&self, py: Python<'_>, key: &Bound<'_, PyAny>, local: bool) -> PyResult<Option<(Bytes, u64)>> {
        wait(py, ops::get_versioned(self.cache.clone(), bytes_of(key, "a key")?, local))
    }

    /// The values of `keys` in order, each ``None`` when absent, read at one point in time.
    #[pyo3(signature = (keys, *, local=false))]
    fn get_many(&self, py: Python<'_>, keys: Vec<Bound<'_, PyAny>>, local: bool) -> PyResult<Vec<Option<Bytes>>> {
        wait(py, ops::get_many(self.cache.clone(), self::keys(keys)?, local))
    }

    /// Sets `key` to `value`; returns the write's version. Once it returns, every read on any
    /// node sees it, and it reaches Redis even if Redis is down right now.
    ///
    /// Args:
    ///     ttl: seconds after which the key reads as absent (default: never).
    ///
    /// Raises:
    ///     InvalidArgument: bad key, value over 1 MiB, or TTL out of range.
    ///     LimitReached: too many writes wait for Redis.
    ///     Unavailable: the write may or may not have happened.
    #[pyo3(signature = (key, value, *, ttl=None))]
    fn set(&self, py: Python<'_>, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>, ttl: Option<f64>) -> PyResult<u64> {
        let ttl = optional_seconds(ttl, "ttl")?;
        wait(py, ops::set(self.cache.clone(), bytes_of(key, "a key")?, bytes_of(value, "a value")?, ttl))
    }

    /// Removes `key`; returns whether it existed.
    fn delete(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        wait(py, ops::delete(self.cache.clone(), bytes_of(key, "a key")?))
    }

    fn __repr__(&self) -> &'static str {
        "distsync.Cache()"
    }
}

/// The coherent cache for asyncio, from ``AsyncClient.cache``; as ``Cache``, with coroutines.
#[pyclass(module = "distsync", frozen)]
pub struct AsyncCache {
    cache: Local<distsync::Cache>,
}

impl AsyncCache {
    pub fn new(cache: distsync::Cache) -> Self {
        AsyncCache { cache: local(cache) }
    }
}

#[pymethods]
impl AsyncCache {
    /// The value of `key`, or ``None``; see ``Cache.get``.
    #[pyo3(signature = (key, *, local=false))]
    fn get<'py>(&self, py: Python<'py>, key: &Bound<'py, PyAny>, local: bool) -> PyResult<Bound<'py, PyAny>> {
        spawn(py, ops::get(self.cache.clone(), bytes_of(key, "a key")?, local))
    }

    /// ``(value, version)`` of `key`, or ``None``; see ``Cache.get_versioned``.
    #[pyo3(signature = (key, *, local=false))]
    fn get_versioned<'py>(&self, py: Python<'py>, key: &Bound<'py, PyAny>, local: bool) -> PyResult<Bound<'py, PyAny>> {
        spawn(py, ops::get_versioned(self.cache.clone(), bytes_of(key, "a key")?, local))
    }

    /// The values of `keys`; see ``Cache.get_many``.
    #[pyo3(signature = (keys, *, local=false))]
    fn get_many<'py>(&self, py: Python<'py>, keys: Vec<Bound<'py, PyAny>>, local: bool) -> PyResult<Bound<'py, PyAny>> {
        spawn(py, ops::get_many(self.cache.clone(), self::keys(keys)?, local))
    }

    /// Sets `key`; see ``Cache.set``.
    #[pyo3(signature = (key, value, *, ttl=None))]
    fn set<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        value: &Bound<'py, PyAny>,
        ttl: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let ttl = optional_seconds(ttl, "ttl")?;
        spawn(py, ops::set(self.cache.clone(), bytes_of(key, "a key")?, bytes_of(value, "a value")?, ttl))
    }

    /// Removes `key`; see ``Cache.delete``.
    fn delete<'py>(&self, py: Python<'py>, key: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        spawn(py, ops::delete(self.cache.clone(), bytes_of(key, "a key")?))
    }

    fn __repr__(&self) -> &'static str {
        "distsync.AsyncCache()"
    }
}
