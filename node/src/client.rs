//! `Client`: connection settings and the way in to locks, queues and the cache.

use std::path::PathBuf;

use distsync::{ClientOptions, ClientTls, OwnerHandle};
use napi::bindgen_prelude::{BigInt, ClassInstance, PromiseRaw};
use napi::{Either, Env};
use napi_derive::napi;

use crate::cache::Cache;
use crate::error::Failure;
use crate::lock::{Lock, LockInfo};
use crate::queue::{Queue, QueueStats};
use crate::run::{millis, optional_millis, promise, settle, Shared};

/// How to reach the cluster; every field is optional.
#[napi(object)]
pub struct ConnectOptions {
    /// Path of the cluster's CA certificate (`tls/ca.pem` of `distsync dev`). Default:
    /// `$DISTSYNC_CA`.
    pub ca: Option<String>,
    /// Path of this client's certificate, which names its identity (from `distsync certs
    /// client`); give `key` with it. Default: `$DISTSYNC_CERT`, else `client.pem` beside the CA
    /// file (the admin identity of `distsync certs init`).
    pub cert: Option<String>,
    /// Path of the private key of `cert`. Default: `$DISTSYNC_KEY`, else `client-key.pem`
    /// beside the CA file.
    pub key: Option<String>,
    /// How long the cluster keeps this client's session, and so its locks, after the client
    /// falls silent (crashed, cut off): 1000 to 3600000 ms. Default 10000.
    pub session_ttl_ms: Option<f64>,
    /// How long one call may take across all its retries before it fails with `UNAVAILABLE`.
    /// Default 10000.
    pub request_timeout_ms: Option<f64>,
    /// One of the endpoints to send all cache traffic to. Default: each key's own node.
    pub home: Option<String>,
}

/// Options of `Client.lock`, `Client.tryLock` and `Client.withLock`.
#[napi(object)]
pub struct LockOptions<'a> {
    /// Take a shared hold: any number of shared holders, no exclusive one. Default false.
    pub shared: Option<bool>,
    /// How long to wait for the grant before failing with `LOCK_TIMEOUT`. Default: until
    /// granted.
    pub timeout_ms: Option<f64>,
    /// Hold the lock as this owner (from `client.owner()`), so that the nested locks of one
    /// logical actor are tied together for deadlock detection. Default: a new owner per call.
    pub owner: Option<ClassInstance<'a, Owner>>,
}

/// Options of `Client.queue`.
#[napi(object)]
pub struct QueueHandleOptions {
    /// How long a message got through this handle stays invisible to other consumers unless
    /// acked, in ms. Default: the queue's (30000 unless created otherwise).
    pub visibility_ms: Option<f64>,
}

/// A lock owner: locks taken with one `Owner` belong to one actor. Made by `client.owner()`.
///
/// Each `lock`/`withLock` call without an owner is its own owner, so two calls exclude each
/// other. Pass one owner to the nested locks of one logical actor: a cycle among them is then
/// reported as `DEADLOCK`, and taking a lock it already holds fails with `ALREADY_HELD`.
///
/// ```js
/// const me = client.owner()
/// await client.withLock('accounts', { owner: me }, async () => {
///   await client.withLock('ledger', { owner: me }, async () => { … })
/// })
/// ```
#[napi]
pub struct Owner {
    pub(crate) handle: OwnerHandle,
}

#[napi]
impl Owner {
    /// The actor id the cluster records (shown by `distsync lock show`, and in a deadlock's
    /// `cycle`).
    #[napi(getter)]
    pub fn actor(&self) -> BigInt {
        BigInt::from(self.handle.actor())
    }
}

/// A connection to a distsync cluster. Share one per process; every method returns a Promise
/// and none blocks the event loop.
///
/// ```js
/// const { Client } = require('distsync')
/// const client = await Client.connect(['127.0.0.1:7101', '127.0.0.1:7102'], { ca: 'tls/ca.pem' })
/// await client.withLock('reports', async (lock) => {
///   console.log('holding reports with fencing token', lock.token)
/// })
/// await client.close()
/// ```
///
/// A pending call keeps the process alive; an idle client does not. Call `close()` when done:
/// it ends the session, which releases its locks and returns its deliveries at once. A process
/// that exits without it leaves them to the session TTL (10 s by default).
#[napi]
pub struct Client {
    shared: Shared,
}

#[napi]
impl Client {
    /// Connects to the cluster: resolves once a node answers (proving the addresses and the
    /// CA). Any subset of the nodes will do; the client finds the leader and follows it across
    /// failovers.
    ///
    /// `endpoints`: node addresses, an array of `"host:port"` or one comma-separated string.
    /// Default: `$DISTSYNC_ENDPOINTS`.
    ///
    /// Rejects with `INVALID_ARGUMENT` (unusable endpoints, CA, certificate or options),
    /// `UNAUTHENTICATED` (the cluster refused the certificate, or the client the nodes') or
    /// `UNAVAILABLE` (no node answered within the request timeout).
    #[napi(ts_args_type = "endpoints?: string[] | string | null, options?: ConnectOptions | null")]
    pub fn connect<'env>(
        env: &'env Env,
        endpoints: Option<Either<Vec<String>, String>>,
        options: Option<ConnectOptions>,
    ) -> napi::Result<PromiseRaw<'env, Client>> {
        let options = client_options(endpoints, options);
        settle(env, async move {
            let client = distsync::Client::connect_with(options?).await?;
            Ok(Client { shared: Shared::new(client) })
        })
    }

    /// Acquires lock `name` and resolves to the held `Lock`; release it with `lock.release()`.
    /// Waits in line (first come, first served) until granted or `timeoutMs` passes.
    ///
    /// ```js
    /// const lock = await client.lock('x', { timeoutMs: 5000 })
    /// try { await write(data, lock.token) } finally { await lock.release() }
    /// ```
    ///
    /// Rejects with `LOCK_TIMEOUT`, `DEADLOCK` (at once, with the `cycle`), `ALREADY_HELD` (this
    /// owner holds or awaits it), `SESSION_EXPIRED`, `UNAVAILABLE`, `INVALID_ARGUMENT`.
    #[napi(ts_args_type = "name: string, options?: LockOptions | null")]
    pub fn lock<'env>(
        &self,
        env: &'env Env,
        name: String,
        options: Option<LockOptions>,
    ) -> napi::Result<PromiseRaw<'env, Lock>> {
        let (request, shared) = (self.lock_request(name, options), self.shared.clone());
        promise(env, &self.shared, async move {
            let (request, owner) = request?;
            Ok(Lock::new(shared, request.acquire().await?, owner))
        })
    }

    /// Takes lock `name` if it is free right now (and nobody waits for it): resolves to the
    /// held `Lock`, or to `null` at once when it is taken. Options as `lock` (`timeoutMs` is
    /// ignored).
    #[napi(ts_args_type = "name: string, options?: LockOptions | null", ts_return_type = "Promise<Lock | null>")]
    pub fn try_lock<'env>(
        &self,
        env: &'env Env,
        name: String,
        options: Option<LockOptions>,
    ) -> napi::Result<PromiseRaw<'env, Option<Lock>>> {
        let (request, shared) = (self.lock_request(name, options), self.shared.clone());
        promise(env, &self.shared, async move {
            let (request, owner) = request?;
            match request.try_acquire().await {
                Ok(guard) => Ok(Some(Lock::new(shared, guard, owner))),
                Err(distsync::LockError::WouldBlock { .. }) => Ok(None),
                Err(error) => Err(error.into()),
            }
        })
    }

    /// A new lock owner, distinct from every other; see `Owner`.
    #[napi]
    pub fn owner(&self) -> Owner {
        Owner { handle: self.shared.client.owner() }
    }

    /// A durable FIFO queue; nothing is sent until it is used, and a put or get creates it.
    #[napi(ts_args_type = "name: string, options?: QueueHandleOptions | null")]
    pub fn queue(&self, env: &Env, name: String, options: Option<QueueHandleOptions>) -> napi::Result<Queue> {
        let visibility = options.and_then(|options| options.visibility_ms);
        let visibility = optional_millis(visibility, "visibilityMs").map_err(|failure| failure.into_js(env))?;
        let mut queue = self.shared.client.queue(name);
        if let Some(visibility) = visibility {
            queue = queue.visibility(visibility);
        }
        Ok(Queue::new(self.shared.clone(), queue))
    }

    /// The coherent cache: values in Redis, copies on every node, linearizable reads.
    #[napi(getter)]
    pub fn cache(&self) -> Cache {
        Cache::new(self.shared.clone())
    }

    /// The id of the client's current session, or `null` before the first call that needs one
    /// (a lock, a queue get).
    #[napi(getter)]
    pub fn session_id(&self) -> Option<f64> {
        self.shared.client.session_id().map(crate::run::number)
    }

    /// Whether `close()` was called.
    #[napi(getter)]
    pub fn closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// Holders and waiters of lock `name` (read linearizably), or `null` when nobody holds or
    /// awaits it.
    #[napi(ts_return_type = "Promise<LockInfo | null>")]
    pub fn lock_info<'env>(&self, env: &'env Env, name: String) -> napi::Result<PromiseRaw<'env, Option<LockInfo>>> {
        let client = self.shared.client.clone();
        promise(env, &self.shared, async move { Ok(client.lock_show(&name).await?.map(LockInfo::from)) })
    }

    /// Every queue (dead-letter queues included) with its counters.
    #[napi]
    pub fn queues<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, Vec<QueueStats>>> {
        let client = self.shared.client.clone();
        promise(
            env,
            &self.shared,
            async move { Ok(client.queue_list().await?.into_iter().map(QueueStats::from).collect()) },
        )
    }

    /// Closes the client: pending calls end (a lock wait is withdrawn; a `consume()` loop
    /// finishes; others reject with `CLIENT_CLOSED`), the session ends, which releases its
    /// locks and returns its deliveries at once, and later calls reject with `CLIENT_CLOSED`.
    /// Closing twice is harmless.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn close<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        let already = self.shared.is_closed();
        self.shared.close();
        let client = self.shared.client.clone();
        env.spawn_future(async move {
            if !already {
                client.close().await;
            }
            Ok(())
        })
    }
}

impl Client {
    /// The request for lock `name`, and its owner.
    fn lock_request(
        &self,
        name: String,
        options: Option<LockOptions>,
    ) -> Result<(distsync::LockBuilder, OwnerHandle), Failure> {
        let mut request = self.shared.client.lock(name);
        let owner = match options {
            Some(options) => {
                if options.shared == Some(true) {
                    request = request.shared();
                }
                if let Some(timeout) = optional_millis(options.timeout_ms, "timeoutMs")? {
                    request = request.timeout(timeout);
                }
                options.owner.map(|owner| owner.handle)
            }
            None => None,
        };
        // Without an explicit owner, each call is its own owner.
        let owner = owner.unwrap_or_else(|| self.shared.client.owner());
        Ok((request.owner(&owner), owner))
    }
}

/// The client's settings, falling back to `DISTSYNC_ENDPOINTS`, `DISTSYNC_CA`, `DISTSYNC_CERT`
/// and `DISTSYNC_KEY` as the command line does.
fn client_options(
    endpoints: Option<Either<Vec<String>, String>>,
    options: Option<ConnectOptions>,
) -> Result<ClientOptions, Failure> {
    let endpoints = match endpoints {
        Some(Either::A(list)) => list,
        Some(Either::B(text)) => split(&text),
        None => split(&std::env::var("DISTSYNC_ENDPOINTS").map_err(|_| {
            Failure::Argument(
                "no endpoints: pass the nodes' addresses, e.g. ['127.0.0.1:7101'], or set DISTSYNC_ENDPOINTS".into(),
            )
        })?),
    };
    let options = options.unwrap_or(ConnectOptions {
        ca: None,
        cert: None,
        key: None,
        session_ttl_ms: None,
        request_timeout_ms: None,
        home: None,
    });
    let ca =
        match options.ca.map(PathBuf::from).or_else(|| std::env::var_os("DISTSYNC_CA").map(PathBuf::from)) {
            Some(ca) => ca,
            None => return Err(Failure::Argument(
                "no CA certificate: pass { ca: 'path/to/ca.pem' } (tls/ca.pem of `distsync dev`) or set DISTSYNC_CA"
                    .into(),
            )),
        };
    let (cert, key) = (options.cert.map(PathBuf::from), options.key.map(PathBuf::from));
    let tls = ClientTls::load(&ca, cert.as_deref(), key.as_deref())?;
    let mut settings = ClientOptions::new(endpoints, tls)
        .session_ttl(millis(options.session_ttl_ms.unwrap_or(10_000.0), "sessionTtlMs")?)
        .request_timeout(millis(options.request_timeout_ms.unwrap_or(10_000.0), "requestTimeoutMs")?);
    if let Some(home) = options.home {
        settings = settings.home(home);
    }
    Ok(settings)
}

fn split(endpoints: &str) -> Vec<String> {
    endpoints.split(',').map(str::trim).filter(|e| !e.is_empty()).map(String::from).collect()
}
