//! `Cache`: the coherent cache.

use distsync::wire::Consistency;
use napi::bindgen_prelude::{Buffer, PromiseRaw};
use napi::Env;
use napi_derive::napi;

use crate::run::{bytes_of, millis, number, promise, BytesArg, Shared};

/// Options of `Cache.get` and `Cache.getMany`.
#[napi(object)]
pub struct CacheGetOptions {
    /// Answer from the node's applied state without confirming with the leader: faster, and may
    /// miss writes acknowledged moments ago. Default false (linearizable).
    pub local: Option<bool>,
}

/// Options of `Cache.set`.
#[napi(object)]
pub struct CacheSetOptions {
    /// Expire the value after this many seconds (up to a year). Default: never.
    pub ttl_seconds: Option<f64>,
}

/// A cached value with the version of the write that set it.
#[napi(object)]
pub struct VersionedValue {
    pub value: Buffer,
    /// Increases with every write of the key.
    pub version: f64,
}

/// The coherent cache, `client.cache`: values live in Redis, every node keeps a coherent copy,
/// and reads are linearizable (they see every write acknowledged before they began).
///
/// ```js
/// await client.cache.set('user:1', Buffer.from('{"name":"Ada"}'), { ttlSeconds: 60 })
/// const value = await client.cache.get('user:1')    // Buffer | null
/// ```
///
/// Keys and values are Buffers (any Uint8Array) or strings (UTF-8). Calls reject with
/// `INVALID_ARGUMENT` (empty or oversized key, oversized value, TTL out of range) and
/// `UNAVAILABLE`.
#[napi]
pub struct Cache {
    shared: Shared,
}

impl Cache {
    pub fn new(shared: Shared) -> Self {
        Cache { shared }
    }

    fn reader(&self, options: Option<CacheGetOptions>) -> distsync::Cache {
        let local = options.and_then(|options| options.local).unwrap_or(false);
        let consistency = if local { Consistency::Local } else { Consistency::Linearizable };
        self.shared.client.cache().consistency(consistency)
    }
}

#[napi]
impl Cache {
    /// The value of `key`, or `null` when it has none.
    #[napi(
        ts_args_type = "key: Buffer | Uint8Array | string, options?: CacheGetOptions | null",
        ts_return_type = "Promise<Buffer | null>"
    )]
    pub fn get<'env>(
        &self,
        env: &'env Env,
        key: BytesArg,
        options: Option<CacheGetOptions>,
    ) -> napi::Result<PromiseRaw<'env, Option<Buffer>>> {
        let (cache, key) = (self.reader(options), bytes_of(key));
        promise(env, &self.shared, async move { Ok(cache.get(key).await?.map(Buffer::from)) })
    }

    /// The value of `key` with its version, or `null`.
    #[napi(
        ts_args_type = "key: Buffer | Uint8Array | string, options?: CacheGetOptions | null",
        ts_return_type = "Promise<VersionedValue | null>"
    )]
    pub fn get_versioned<'env>(
        &self,
        env: &'env Env,
        key: BytesArg,
        options: Option<CacheGetOptions>,
    ) -> napi::Result<PromiseRaw<'env, Option<VersionedValue>>> {
        let (cache, key) = (self.reader(options), bytes_of(key));
        promise(env, &self.shared, async move {
            let value = cache.get_versioned(key).await?;
            Ok(value.map(|value| VersionedValue { value: Buffer::from(value.value), version: number(value.version) }))
        })
    }

    /// The values of `keys`, in order (`null` for a key without one), read together.
    #[napi(
        ts_args_type = "keys: Array<Buffer | Uint8Array | string>, options?: CacheGetOptions | null",
        ts_return_type = "Promise<Array<Buffer | null>>"
    )]
    pub fn get_many<'env>(
        &self,
        env: &'env Env,
        keys: Vec<BytesArg>,
        options: Option<CacheGetOptions>,
    ) -> napi::Result<PromiseRaw<'env, Vec<Option<Buffer>>>> {
        let cache = self.reader(options);
        let keys: Vec<Vec<u8>> = keys.into_iter().map(bytes_of).collect();
        promise(env, &self.shared, async move {
            Ok(cache.get_many(keys).await?.into_iter().map(|value| value.map(Buffer::from)).collect())
        })
    }

    /// Sets `key` to `value` once Redis has it and every node's copy is invalidated; resolves
    /// to the write's version.
    #[napi(
        ts_args_type = "key: Buffer | Uint8Array | string, value: Buffer | Uint8Array | string, options?: CacheSetOptions | null"
    )]
    pub fn set<'env>(
        &self,
        env: &'env Env,
        key: BytesArg,
        value: BytesArg,
        options: Option<CacheSetOptions>,
    ) -> napi::Result<PromiseRaw<'env, f64>> {
        let ttl = options.and_then(|options| options.ttl_seconds).map(|ttl| millis(ttl * 1000.0, "ttlSeconds"));
        let (cache, key, value) = (self.shared.client.cache(), bytes_of(key), bytes_of(value));
        promise(env, &self.shared, async move {
            let version = match ttl.transpose()? {
                Some(ttl) => cache.set_with_ttl(key, value, ttl).await?,
                None => cache.set(key, value).await?,
            };
            Ok(number(version))
        })
    }

    /// Deletes `key`; resolves to whether it had a value.
    #[napi(ts_args_type = "key: Buffer | Uint8Array | string")]
    pub fn delete<'env>(&self, env: &'env Env, key: BytesArg) -> napi::Result<PromiseRaw<'env, bool>> {
        let (cache, key) = (self.shared.client.cache(), bytes_of(key));
        promise(env, &self.shared, async move { Ok(cache.delete(key).await?) })
    }
}
