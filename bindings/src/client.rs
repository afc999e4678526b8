//! [`Client`] and [`Owner`]: connecting, and the way in to locks, queues and the cache.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use distsync::wire::LockMode;
use distsync::{ClientOptions, ClientTls, LockBuilder, LockError, OwnerHandle};

use crate::cache::Cache;
use crate::error::Outcome;
use crate::lock::{Lock, LockHolder, LockInfo, LockWaiter};
use crate::queue::Queue;
use crate::run::{block_on, on_runtime};

/// A lock owner: locks taken with one `Owner` belong to one actor. Made by `Client.owner()`.
/// Each `lock` call without one is its own owner.
#[derive(uniffi::Object)]
pub struct Owner {
    pub(crate) handle: OwnerHandle,
}

#[uniffi::export]
impl Owner {
    /// The actor id the cluster records (shown by `distsync lock show` and in deadlock cycles).
    pub fn actor(&self) -> u64 {
        self.handle.actor()
    }
}

/// A connection to a distsync cluster; share one per process. Any subset of the nodes will do:
/// the client finds the leader and follows it across failovers.
#[derive(uniffi::Object)]
pub struct Client {
    client: distsync::Client,
}

#[uniffi::export]
impl Client {
    /// Connects: returns once a node answers (proving the addresses and the CA certificate at
    /// `ca_path`, `tls/ca.pem` of `distsync dev`). The client presents the certificate at
    /// `cert_path` with its key at `key_path`, which names its identity (from `distsync certs
    /// client`); without them, `$DISTSYNC_CERT` and `$DISTSYNC_KEY`, else `client.pem` and
    /// `client-key.pem` beside the CA file (the admin identity of `distsync certs init`).
    /// Throws `InvalidArgument` for unusable endpoints, CA or certificate, `Unauthenticated`
    /// when the cluster refuses the certificate (or the client the nodes'), `Unavailable` when
    /// no node answers.
    #[uniffi::constructor(default(cert_path = None, key_path = None))]
    pub async fn connect(
        endpoints: Vec<String>,
        ca_path: String,
        cert_path: Option<String>,
        key_path: Option<String>,
    ) -> Outcome<Arc<Self>> {
        let tls = client_tls(&ca_path, cert_path, key_path)?;
        on_runtime(connect(endpoints, tls, None)).await
    }

    /// `connect` with the session TTL (how long the cluster keeps this client's locks after
    /// it falls silent, 1000 to 3600000 ms) and the request timeout (per call, across retries).
    #[uniffi::constructor(default(cert_path = None, key_path = None))]
    pub async fn connect_with(
        endpoints: Vec<String>,
        ca_path: String,
        session_ttl_ms: u64,
        request_timeout_ms: u64,
        cert_path: Option<String>,
        key_path: Option<String>,
    ) -> Outcome<Arc<Self>> {
        let tls = client_tls(&ca_path, cert_path, key_path)?;
        on_runtime(connect(endpoints, tls, Some((session_ttl_ms, request_timeout_ms)))).await
    }

    /// `connect`, waiting on the calling thread.
    #[uniffi::constructor(default(cert_path = None, key_path = None))]
    pub fn connect_blocking(
        endpoints: Vec<String>,
        ca_path: String,
        cert_path: Option<String>,
        key_path: Option<String>,
    ) -> Outcome<Arc<Self>> {
        let tls = client_tls(&ca_path, cert_path, key_path)?;
        block_on(connect(endpoints, tls, None))
    }

    /// Acquires lock `name`, waiting in line until granted or `timeout_ms` passes. Pass an
    /// `owner` to tie nested locks of one actor together; without one the call is its own owner.
    ///
    /// Throws `LockTimeout`, `Deadlock` (at once, with the cycle), `AlreadyHeld`,
    /// `SessionExpired`, `Unavailable`, `InvalidArgument`.
    #[uniffi::method(default(shared = false, timeout_ms = None, owner = None))]
    pub async fn lock(
        &self,
        name: String,
        shared: bool,
        timeout_ms: Option<u64>,
        owner: Option<Arc<Owner>>,
    ) -> Outcome<Arc<Lock>> {
        on_runtime(self.acquire(name, shared, timeout_ms, owner)).await
    }

    /// `lock`, waiting on the calling thread.
    #[uniffi::method(default(shared = false, timeout_ms = None, owner = None))]
    pub fn lock_blocking(
        &self,
        name: String,
        shared: bool,
        timeout_ms: Option<u64>,
        owner: Option<Arc<Owner>>,
    ) -> Outcome<Arc<Lock>> {
        block_on(self.acquire(name, shared, timeout_ms, owner))
    }

    /// Takes lock `name` if it is free right now and nobody waits for it; null at once when it
    /// is taken (nothing is left waiting). Owners as for `lock`.
    #[uniffi::method(default(shared = false, owner = None))]
    pub async fn try_lock(&self, name: String, shared: bool, owner: Option<Arc<Owner>>) -> Outcome<Option<Arc<Lock>>> {
        let (request, owner) = self.lock_request(name, shared, None, owner);
        on_runtime(async move {
            match request.try_acquire().await {
                Ok(guard) => Ok(Some(Lock::new(guard, owner))),
                Err(LockError::WouldBlock { .. }) => Ok(None),
                Err(error) => Err(error.into()),
            }
        })
        .await
    }

    /// Holders and waiters of lock `name` (read linearizably); null when nobody holds or awaits
    /// it.
    pub async fn lock_info(&self, name: String) -> Outcome<Option<LockInfo>> {
        let client = self.client.clone();
        on_runtime(async move {
            let info = client.lock_show(&name).await?;
            Ok(info.map(|info| LockInfo {
                name: info.name,
                holders: info
                    .holders
                    .into_iter()
                    .map(|holder| LockHolder {
                        session: holder.owner.session,
                        actor: holder.owner.actor,
                        shared: holder.mode == LockMode::Shared,
                        token: holder.token,
                    })
                    .collect(),
                waiters: info
                    .waiters
                    .into_iter()
                    .map(|waiter| LockWaiter {
                        session: waiter.owner.session,
                        actor: waiter.owner.actor,
                        shared: waiter.mode == LockMode::Shared,
                        upgrade: waiter.upgrade,
                    })
                    .collect(),
            }))
        })
        .await
    }

    /// A new lock owner, distinct from every other.
    pub fn owner(&self) -> Arc<Owner> {
        Arc::new(Owner { handle: self.client.owner() })
    }

    /// A durable FIFO queue; nothing is sent until it is used, and a put or get creates it.
    pub fn queue(&self, name: String) -> Arc<Queue> {
        Arc::new(Queue { queue: self.client.queue(name) })
    }

    /// The coherent cache: values in Redis, copies on every node, linearizable reads.
    pub fn cache(&self) -> Arc<Cache> {
        Arc::new(Cache { cache: self.client.cache() })
    }

    /// Ends the session now, releasing its locks and returning its deliveries at once instead
    /// of at the session TTL. (`close()` of the Kotlin object, or dropping the Swift one, frees
    /// the client itself.)
    pub async fn close_session(&self) {
        let client = self.client.clone();
        let _ = on_runtime(async move {
            client.close().await;
            Ok(())
        })
        .await;
    }

    /// `close_session`, waiting on the calling thread.
    pub fn close_session_blocking(&self) {
        let client = self.client.clone();
        let _ = block_on(async move {
            client.close().await;
            Ok(())
        });
    }
}

/// Trusts the CA at `ca_path` and presents the certificate at `cert_path` (looked up as
/// `ClientTls::load` does when left out).
fn client_tls(ca_path: &str, cert_path: Option<String>, key_path: Option<String>) -> Outcome<ClientTls> {
    Ok(ClientTls::load(ca_path, cert_path.as_deref().map(Path::new), key_path.as_deref().map(Path::new))?)
}

async fn connect(endpoints: Vec<String>, tls: ClientTls, timing: Option<(u64, u64)>) -> Outcome<Arc<Client>> {
    let mut options = ClientOptions::new(endpoints, tls);
    if let Some((session_ttl_ms, request_timeout_ms)) = timing {
        options = options
            .session_ttl(Duration::from_millis(session_ttl_ms))
            .request_timeout(Duration::from_millis(request_timeout_ms));
    }
    Ok(Arc::new(Client { client: distsync::Client::connect_with(options).await? }))
}

impl Client {
    /// The request for lock `name`, and its owner: `owner`, or a new one (each call without
    /// an owner is its own owner).
    fn lock_request(
        &self,
        name: String,
        shared: bool,
        timeout_ms: Option<u64>,
        owner: Option<Arc<Owner>>,
    ) -> (LockBuilder, OwnerHandle) {
        let owner = owner.map(|owner| owner.handle).unwrap_or_else(|| self.client.owner());
        let mut request = self.client.lock(name).owner(&owner);
        if shared {
            request = request.shared();
        }
        if let Some(timeout_ms) = timeout_ms {
            request = request.timeout(Duration::from_millis(timeout_ms));
        }
        (request, owner)
    }

    fn acquire(
        &self,
        name: String,
        shared: bool,
        timeout_ms: Option<u64>,
        owner: Option<Arc<Owner>>,
    ) -> impl Future<Output = Outcome<Arc<Lock>>> + Send + 'static {
        let (request, owner) = self.lock_request(name, shared, timeout_ms, owner);
        async move { Ok(Lock::new(request.acquire().await?, owner)) }
    }
}
