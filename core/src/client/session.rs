//! The client's session: opened on the first write, kept alive in the background, watched for
//! its end while locks depend on it, and the sequence numbers that make every write
//! exactly-once (Raft dissertation §6.3).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::rpc::CallOptions;
use super::{unexpected, Client, Inner};
use crate::error::ClientError;
use crate::wire::{Command, CommandResponse, Request, Response, SessionId, SessionSecret, WriteRequest};

/// How long one session watch may stay open on a node.
const SESSION_WATCH_MS: u64 = 20_000;

/// The client's session and the tasks that tend it.
pub(crate) struct Session {
    state: Mutex<SessionState>,
    /// Serializes opening a session, so concurrent first writes share one.
    opening: tokio::sync::Mutex<()>,
    keepalive: Mutex<Option<JoinHandle<()>>>,
    /// Long-polls the cluster for the end of the session while this client uses locks.
    watcher: Mutex<Option<(SessionId, JoinHandle<()>)>>,
    /// Bumped whenever the session ends or its lease is renewed, to wake lock guards.
    changes: watch::Sender<u64>,
}

impl Default for Session {
    fn default() -> Self {
        Session {
            state: Mutex::new(SessionState { next_seq: 1, ..SessionState::default() }),
            opening: tokio::sync::Mutex::new(()),
            keepalive: Mutex::new(None),
            watcher: Mutex::new(None),
            changes: watch::channel(0).0,
        }
    }
}

impl Session {
    /// Stops the keepalive and the watch.
    fn stop_tasks(&self) {
        if let Some(task) = self.keepalive.lock().expect("keepalive lock").take() {
            task.abort();
        }
        if let Some((_, task)) = self.watcher.lock().expect("watcher lock").take() {
            task.abort();
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SessionState> {
        self.state.lock().expect("session lock")
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stop_tasks();
    }
}

#[derive(Default)]
struct SessionState {
    id: Option<SessionId>,
    /// The current session's secret, which every request naming it carries.
    secret: SessionSecret,
    next_seq: u64,
    /// Sequence numbers sent but not yet answered; the smallest bounds what the cluster keeps.
    outstanding: BTreeSet<u64>,
    /// Until when this client may rely on the session (and so on its locks): the send time of
    /// the latest acknowledged keepalive plus the TTL, less a safety margin. The cluster cannot
    /// expire the session before that, since it counts the TTL from a later moment.
    lease_deadline: Option<Instant>,
}

/// The part of the TTL a client does not rely on: clocks run at slightly different rates, and a
/// client that stops trusting its locks early is safe, while one that trusts them late is not.
fn lease_margin(ttl: Duration) -> Duration {
    (ttl / 5).max(Duration::from_millis(100))
}

impl Client {
    /// Sends `command` under the session (opening one first if needed) with the next sequence
    /// number, along the options' route, so that a retry is applied once. Returns the session
    /// it was written in with the answer.
    ///
    /// # Errors
    ///
    /// As [`Client::call`]; [`ClientError::InvalidArgument`] before sending when the command
    /// breaks a limit; [`ClientError::SessionExpired`] (the next write opens a new session).
    pub(crate) async fn write(
        &self,
        command: Command,
        options: CallOptions,
    ) -> Result<(SessionId, CommandResponse), ClientError> {
        command.validate()?;
        let deadline = options.deadline_from(self, Instant::now());
        let session = self.ensure_session(deadline).await?;
        let (seq, acked_below, secret) = {
            let mut state = self.inner.session.state();
            let seq = state.next_seq;
            state.next_seq += 1;
            state.outstanding.insert(seq);
            let acked_below = *state.outstanding.first().expect("just inserted");
            (seq, acked_below, state.secret)
        };
        let request = Request::Write(WriteRequest { session, seq, acked_below, command, secret });
        let result = self.call(&request, options.deadline(deadline)).await;
        self.inner.session.state().outstanding.remove(&seq);
        match result {
            Ok(Response::Written(response)) => Ok((session, response)),
            Ok(other) => Err(unexpected(&other)),
            Err(ClientError::SessionExpired { session }) => {
                self.session_lost(session);
                Err(ClientError::SessionExpired { session })
            }
            Err(error) => Err(error),
        }
    }

    /// The current session, if one is open.
    pub(crate) fn current_session(&self) -> Option<SessionId> {
        self.inner.session.state().id
    }

    /// The secret of `session` if it is the current one. A session that ended has no secret
    /// here any more; the cluster answers requests about it with its end, which needs none.
    pub(crate) fn session_secret(&self, session: SessionId) -> SessionSecret {
        let state = self.inner.session.state();
        if state.id == Some(session) {
            state.secret
        } else {
            SessionSecret::default()
        }
    }

    /// Closes the session (the cluster releases what it holds at once) and stops tending it.
    pub(crate) async fn close_session(&self) {
        self.inner.session.stop_tasks();
        if self.current_session().is_some() {
            let deadline = Instant::now() + self.attempt_timeout();
            let options = CallOptions::default().deadline(deadline);
            if let Err(error) = self.write(Command::CloseSession, options).await {
                tracing::debug!(%error, "closing the session failed; it will expire at its TTL");
            }
            self.inner.session.state().id = None;
            self.inner.session.changes.send_modify(|epoch| *epoch += 1);
        }
    }

    /// Whether this client may still rely on `session`: it is the current one and its lease has
    /// not run out on the client's clock.
    pub(crate) fn session_valid(&self, session: SessionId) -> bool {
        self.lease_deadline(session).is_some_and(|deadline| Instant::now() < deadline)
    }

    /// When the lease of `session` runs out on the client's clock; `None` if it is not current.
    pub(crate) fn lease_deadline(&self, session: SessionId) -> Option<Instant> {
        let state = self.inner.session.state();
        if state.id == Some(session) {
            state.lease_deadline
        } else {
            None
        }
    }

    /// A receiver that changes whenever the session ends or its lease is renewed.
    pub(crate) fn session_changes(&self) -> watch::Receiver<u64> {
        self.inner.session.changes.subscribe()
    }

    /// Marks `session` as gone (if it is the current one): the next write opens a new one.
    pub(crate) fn session_lost(&self, session: SessionId) {
        let mut state = self.inner.session.state();
        if state.id == Some(session) {
            tracing::warn!(session, "session expired; the next write opens a new one");
            state.id = None;
            state.lease_deadline = None;
            drop(state);
            self.inner.session.changes.send_modify(|epoch| *epoch += 1);
        }
    }

    /// Starts watching `session` for its end (pushed by the cluster), unless already watching.
    pub(crate) fn watch_session(&self, session: SessionId) {
        let mut watcher = self.inner.session.watcher.lock().expect("watcher lock");
        if watcher.as_ref().is_some_and(|(watched, task)| *watched == session && !task.is_finished()) {
            return;
        }
        let task = tokio::spawn(watch_session(Arc::downgrade(&self.inner), session));
        if let Some((_, previous)) = watcher.replace((session, task)) {
            previous.abort();
        }
    }

    fn renew_lease(&self, session: SessionId, sent: Instant) {
        let ttl = self.inner.options.session_ttl;
        let deadline = sent + ttl - lease_margin(ttl);
        let mut state = self.inner.session.state();
        if state.id == Some(session) && state.lease_deadline.is_none_or(|current| current < deadline) {
            state.lease_deadline = Some(deadline);
            drop(state);
            self.inner.session.changes.send_modify(|epoch| *epoch += 1);
        }
    }

    async fn ensure_session(&self, deadline: Instant) -> Result<SessionId, ClientError> {
        if let Some(id) = self.current_session() {
            return Ok(id);
        }
        let _opening = self.inner.session.opening.lock().await;
        if let Some(id) = self.current_session() {
            return Ok(id);
        }
        let ttl_ms = self.inner.options.session_ttl.as_millis() as u64;
        let sent = Instant::now();
        let options = CallOptions::default().deadline(deadline);
        // Every attempt of this open carries the same fresh secret, so a retry after a lost
        // answer gets the session the first attempt opened instead of a second one.
        let secret = SessionSecret::random();
        let session = match self.call(&Request::OpenSession { ttl_ms, secret }, options).await? {
            Response::SessionOpened { session, .. } => session,
            other => return Err(unexpected(&other)),
        };
        {
            let mut state = self.inner.session.state();
            // Sequence numbers are per session; a new session starts over.
            *state = SessionState {
                id: Some(session),
                secret,
                next_seq: 1,
                outstanding: BTreeSet::new(),
                lease_deadline: None,
            };
        }
        self.renew_lease(session, sent);
        let task = tokio::spawn(keep_alive(Arc::downgrade(&self.inner), session, secret));
        if let Some(previous) = self.inner.session.keepalive.lock().expect("keepalive lock").replace(task) {
            previous.abort();
        }
        tracing::debug!(session, "session opened");
        Ok(session)
    }
}

/// Keeps the session alive every third of its TTL until the client is dropped or the session
/// is found expired.
async fn keep_alive(inner: Weak<Inner>, session: SessionId, secret: SessionSecret) {
    let mut failed = false;
    loop {
        let Some(strong) = inner.upgrade() else { return };
        let period = strong.options.session_ttl / 3;
        drop(strong);
        // After a failure, try again at once (each call backs off between its own attempts): a
        // keepalive that waited a whole period after a failed one could let the session expire
        // across a single failover.
        if !failed {
            tokio::time::sleep(period).await;
        }
        let Some(strong) = inner.upgrade() else { return };
        let client = Client { inner: strong };
        let sent = Instant::now();
        let options = CallOptions::default().deadline(sent + period);
        match client.call(&Request::KeepAlive { session, secret }, options).await {
            Ok(_) => {
                client.renew_lease(session, sent);
                failed = false;
            }
            Err(ClientError::SessionExpired { .. }) => {
                client.session_lost(session);
                return;
            }
            Err(error) => {
                tracing::warn!(session, %error, "session keepalive failed; retrying");
                failed = true;
            }
        }
    }
}

/// Long-polls the cluster until `session` ends, then marks it lost at once, so that lock guards
/// learn of it without waiting for the next keepalive.
async fn watch_session(inner: Weak<Inner>, session: SessionId) {
    let mut failures = 0u32;
    loop {
        let Some(strong) = inner.upgrade() else { return };
        let client = Client { inner: strong };
        if client.current_session() != Some(session) {
            return;
        }
        let wait = Duration::from_millis(SESSION_WATCH_MS);
        let attempt = wait + client.attempt_timeout();
        let secret = client.session_secret(session);
        let request = Request::WatchSession { session, max_wait_ms: SESSION_WATCH_MS, secret };
        let options = CallOptions::default().deadline(Instant::now() + attempt).attempt(attempt);
        match client.call(&request, options).await {
            Ok(Response::SessionWatch { alive: false }) => {
                client.session_lost(session);
                return;
            }
            Ok(_) => failures = 0,
            Err(error) => {
                failures += 1;
                tracing::debug!(session, %error, "session watch failed; retrying");
                let pause = client.backoff(failures);
                drop(client);
                tokio::time::sleep(pause).await;
            }
        }
    }
}
