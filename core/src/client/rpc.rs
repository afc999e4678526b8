//! The one request path of the client: [`Client::call`] sends a request along a route, follows
//! leader hints and retries under a deadline as [`super::retry`] decides. Writes
//! ([`super::session`]) and reads go through it; so do waits held open by a node and questions
//! to one node.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::retry::{self, Attempt, Next, Route};
use super::{unexpected, Client};
use crate::error::ClientError;
use crate::pool::exchange;
use crate::tls::{refusal, SERVER_NAME};
use crate::wire::{encode_frame, LeaderInfo, Query, QueryResponse, Reply, Request, Response};

/// How long a connection may send nothing back after a request before it counts as dead, at
/// least: a live node acknowledges the request's packets within a round trip and the peer's ack
/// delay (25 ms).
const SILENCE_MIN: Duration = Duration::from_millis(500);

/// How often a request's connection is looked at for packets from the node.
const SILENCE_CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// How long a connection with round-trip time `rtt` may be silent after a request: four round
/// trips (a lost packet is resent after about three), and never less than [`SILENCE_MIN`].
fn silence_limit(rtt: Duration) -> Duration {
    (rtt * 4).max(SILENCE_MIN)
}

/// Where one attempt goes.
#[derive(Clone, Copy, Debug)]
enum Destination {
    /// To this node.
    Node(SocketAddr),
    /// To whichever node completes a handshake first (the leader is not known yet): any node
    /// answers, and one that is not the leader forwards the request or names the leader.
    FirstToAnswer,
}

/// Why an attempt got no answer.
#[derive(Clone, Debug)]
pub(crate) enum Trouble {
    /// The node refused the client's certificate (or the client the node's): final.
    Refused(ClientError),
    /// Anything else: the node may be down or unreachable; worth a retry.
    Failed(String),
}

impl From<&'static str> for Trouble {
    fn from(reason: &'static str) -> Self {
        Trouble::Failed(reason.to_string())
    }
}

/// How one call travels; each field left unset takes the client's default.
///
/// The default is an ordinary call: to the leader, retried until the client's request timeout,
/// each attempt given the client's attempt timeout.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CallOptions {
    /// Until when the call may retry; default: the request timeout from now.
    deadline: Option<Instant>,
    /// How long one attempt may take; default: the client's attempt timeout. A request the
    /// node holds open (a wait) needs its wait plus that.
    attempt: Option<Duration>,
    /// Where the request goes.
    route: Option<Route>,
}

impl CallOptions {
    /// Retry until `deadline`.
    pub(crate) fn deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Give each attempt `attempt`.
    pub(crate) fn attempt(mut self, attempt: Duration) -> Self {
        self.attempt = Some(attempt);
        self
    }

    /// Send along `route`.
    pub(crate) fn route(mut self, route: Route) -> Self {
        self.route = Some(route);
        self
    }

    /// The route, [`Route::Leader`] unless set.
    pub(crate) fn route_or_leader(&self) -> Route {
        self.route.unwrap_or(Route::Leader)
    }

    /// The deadline, counted from `now` unless set.
    pub(crate) fn deadline_from(&self, client: &Client, now: Instant) -> Instant {
        self.deadline.unwrap_or_else(|| now + client.request_timeout())
    }
}

impl Client {
    /// Sends `request` along the options' route, following leader hints and retrying retryable
    /// failures with backoff until the deadline. A call to one node ([`Route::Node`]) makes one
    /// attempt.
    ///
    /// # Errors
    ///
    /// [`ClientError::Unavailable`] with the last failure when no attempt succeeded in time; the
    /// node's own error when it is an answer (see [`retry::next`]).
    pub(crate) async fn call(&self, request: &Request, options: CallOptions) -> Result<Response, ClientError> {
        let frame = encode_frame(request).map_err(|e| ClientError::InvalidArgument { reason: e.to_string() })?;
        let route = options.route_or_leader();
        let deadline = options.deadline_from(self, Instant::now());
        let attempt_timeout = options.attempt.unwrap_or_else(|| self.attempt_timeout());
        let mut failures: u32 = 0;
        let mut last_failure = String::from("no attempt finished before the deadline");
        // How many endpoints past its first choice the call has moved after failures.
        let mut detour = 0;
        // Nodes that failed this call: a race for an unknown leader tries the others first.
        let mut avoid: Vec<SocketAddr> = Vec::new();
        // The pause the last refusing node asked for (a busy node), if any.
        let mut retry_after = None;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(ClientError::Unavailable { reason: last_failure });
            }
            let destination = self.destination(route, detour);
            let budget = (deadline - now).min(attempt_timeout);
            // The node the attempt went to, once known (a race learns it when a handshake ends).
            let chosen = std::sync::Mutex::new(match destination {
                Destination::Node(address) => Some(address),
                Destination::FirstToAnswer => None,
            });
            let attempt = async {
                let (address, connection) = match destination {
                    Destination::Node(address) => (address, self.connection(address).await?),
                    Destination::FirstToAnswer => self.first_connected(&avoid).await?,
                };
                *chosen.lock().expect("chosen lock") = Some(address);
                self.exchange_on(&connection, &frame).await
            };
            let outcome = tokio::time::timeout(budget, attempt).await;
            let target = *chosen.lock().expect("chosen lock");
            let name = target.map_or_else(|| "no node".to_string(), |address| address.to_string());
            let next = match outcome {
                Ok(Ok(reply)) => {
                    if let Some(leader) = &reply.leader {
                        self.note_leader(leader).await;
                    }
                    let error = match reply.body {
                        Ok(response) => return Ok(response),
                        Err(error) => error,
                    };
                    retry_after = error.retry_after();
                    let next = retry::next(Attempt::Refused(&error), failures, route);
                    last_failure = match &next {
                        Next::Answer => return Err(error.into()),
                        Next::FollowHint(leader) => {
                            format!("{name} is not the leader; it pointed to node {}", leader.id)
                        }
                        _ => format!("{name}: {error}"),
                    };
                    next
                }
                Ok(Err(Trouble::Refused(error))) => {
                    // The handshake was refused over certificates: no retry can fix that.
                    if let Some(target) = target {
                        self.inner.connections.forget(target);
                    }
                    return Err(error);
                }
                Ok(Err(Trouble::Failed(reason))) => {
                    last_failure = format!("{name}: {reason}");
                    retry::next(Attempt::Failed, failures, route)
                }
                Err(_) => {
                    last_failure = match target {
                        Some(target) => format!("{target} did not answer within {budget:?}"),
                        None => format!("no node completed a handshake within {budget:?}"),
                    };
                    retry::next(Attempt::Silent, failures, route)
                }
            };
            failures += 1;
            match next {
                Next::Answer => unreachable!("answers are returned above"),
                Next::Stop { redial } => {
                    if let (true, Some(target)) = (redial, target) {
                        self.inner.connections.forget(target);
                    }
                    return Err(ClientError::Unavailable { reason: last_failure });
                }
                Next::FollowHint(leader) => {
                    self.note_leader(&leader).await;
                    continue;
                }
                Next::Retry { redial, move_on } => {
                    if let Some(target) = target {
                        if redial {
                            self.inner.connections.forget(target);
                        }
                        self.forget_leader(target);
                        if !avoid.contains(&target) {
                            avoid.push(target);
                        }
                        if move_on {
                            self.leave_home(target);
                        }
                    }
                    if move_on {
                        detour += 1;
                    }
                }
            }
            let pause = retry::pause(failures, self.next_random(), retry_after.take());
            tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        }
    }

    /// Reads linearizably through the leader.
    pub(crate) async fn read(&self, query: Query) -> Result<QueryResponse, ClientError> {
        match self.call(&Request::Read(query), CallOptions::default()).await? {
            Response::Read(response) => Ok(response),
            other => Err(unexpected(&other)),
        }
    }

    /// One request to the node at `address` alone, one attempt of the attempt timeout.
    pub(crate) async fn ask_node(&self, address: SocketAddr, request: &Request) -> Result<Response, ClientError> {
        let attempt = self.attempt_timeout();
        let options = CallOptions::default().route(Route::Node(address)).attempt(attempt);
        self.call(request, options.deadline(Instant::now() + attempt)).await
    }

    /// The connection to `address`: the pool's, or a new one.
    async fn connection(&self, address: SocketAddr) -> Result<quinn::Connection, Trouble> {
        self.inner
            .connections
            .get_or_connect(address, || {
                // The TLS files are read again for every new connection, so that a rotation on
                // disk reaches a long-running client.
                let connecting =
                    self.inner.options.tls.quinn_config().map_err(|e| Trouble::Failed(e.to_string())).and_then(
                        |config| {
                            self.inner
                                .endpoint
                                .connect_with(config, address, SERVER_NAME)
                                .map_err(|e| Trouble::Failed(e.to_string()))
                        },
                    );
                async move {
                    let connecting = connecting?;
                    connecting.await.map_err(|e| match refusal(&e) {
                        Some(error) => Trouble::Refused(error),
                        None => Trouble::Failed(format!("cannot connect: {e}")),
                    })
                }
            })
            .await
    }

    /// The first node to complete a handshake, dialing every endpoint at once (an open
    /// connection counts at once), except those in `avoid` while others remain. A dead node
    /// costs nothing while another answers; the dials that lose the race go on in their own
    /// tasks and leave their connections in the pool for the calls that follow a leader hint.
    async fn first_connected(&self, avoid: &[SocketAddr]) -> Result<(SocketAddr, quinn::Connection), Trouble> {
        let addresses = &self.inner.addresses;
        let mut candidates: Vec<SocketAddr> = addresses.iter().copied().filter(|a| !avoid.contains(a)).collect();
        if candidates.is_empty() {
            candidates.clone_from(addresses);
        }
        let (sender, mut dialed) = tokio::sync::mpsc::channel(candidates.len());
        for address in candidates {
            let (client, sender) = (self.clone(), sender.clone());
            tokio::spawn(async move {
                let outcome = client.connection(address).await;
                let _ = sender.send((address, outcome)).await;
            });
        }
        drop(sender);
        let mut failure = Trouble::Failed("no endpoint to dial".into());
        while let Some((address, outcome)) = dialed.recv().await {
            match outcome {
                Ok(connection) => return Ok((address, connection)),
                // A refusal over certificates says more than a node that is down.
                Err(refused @ Trouble::Refused(_)) => failure = refused,
                Err(failed) if matches!(failure, Trouble::Failed(_)) => failure = failed,
                Err(_) => {}
            }
        }
        Err(failure)
    }

    /// One request on `connection`, one reply; a connection that sends nothing back at all
    /// (not even the transport's acknowledgement of the request) within [`silence_limit`] is given
    /// up at once rather than at the attempt timeout: its node is down, or restarted (a new
    /// process cannot reset the old connection).
    async fn exchange_on(&self, connection: &quinn::Connection, frame: &[u8]) -> Result<Reply, Trouble> {
        let received = connection.stats().udp_rx.datagrams;
        let limit = silence_limit(connection.rtt());
        // quinn has no event for a received packet, so the count is looked at a few times.
        let silent = async {
            let started = Instant::now();
            loop {
                tokio::time::sleep(SILENCE_CHECK_INTERVAL).await;
                if connection.stats().udp_rx.datagrams != received {
                    // The node answers: wait for the reply for as long as the attempt may take.
                    std::future::pending::<()>().await;
                }
                if started.elapsed() >= limit {
                    return;
                }
            }
        };
        let reply = tokio::select! {
            reply = exchange(connection, frame) => reply,
            () = silent => {
                return Err(Trouble::Failed(format!(
                    "no packet came back within {limit:?} of the request: the node is down or was restarted"
                )))
            }
        };
        reply.map_err(|reason| {
            // A node that refuses the client's certificate closes the connection after the
            // handshake looked done on this side: the first request finds it closed.
            match connection.close_reason().as_ref().and_then(refusal) {
                Some(error) => Trouble::Refused(error),
                None => Trouble::Failed(reason),
            }
        })
    }

    /// Where an attempt along `route` goes, `detour` endpoints past the first choice: the leader
    /// when known, else whichever node answers first.
    fn destination(&self, route: Route, detour: usize) -> Destination {
        let addresses = &self.inner.addresses;
        match route {
            Route::Leader => match *self.inner.leader.lock().expect("leader lock") {
                Some(leader) => Destination::Node(leader),
                None if addresses.len() == 1 => Destination::Node(addresses[0]),
                None => Destination::FirstToAnswer,
            },
            Route::Home => Destination::Node(addresses[self.inner.home.load(Ordering::Relaxed) % addresses.len()]),
            Route::Endpoint(first) => {
                Destination::Node(addresses[retry::endpoint_after(first, detour, addresses.len())])
            }
            Route::Node(address) => Destination::Node(address),
        }
    }

    /// Moves cache requests to the next endpoint if `address` is the home node.
    fn leave_home(&self, address: SocketAddr) {
        let home = self.inner.home.load(Ordering::Relaxed);
        if self.inner.addresses[home % self.inner.addresses.len()] == address {
            let _ = self.inner.home.compare_exchange(home, home + 1, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    async fn note_leader(&self, leader: &LeaderInfo) {
        let address = match leader.address.parse::<SocketAddr>() {
            Ok(address) => Some(address),
            Err(_) => tokio::net::lookup_host(&leader.address).await.ok().and_then(|mut a| a.next()),
        };
        if let Some(address) = address {
            *self.inner.leader.lock().expect("leader lock") = Some(address);
        }
    }

    fn forget_leader(&self, address: SocketAddr) {
        let mut leader = self.inner.leader.lock().expect("leader lock");
        if *leader == Some(address) {
            *leader = None;
        }
    }

    /// The next number of the client's jitter sequence.
    fn next_random(&self) -> u64 {
        let next = retry::next_random(self.inner.jitter.load(Ordering::Relaxed));
        self.inner.jitter.store(next, Ordering::Relaxed);
        next
    }

    /// The pause after `failures` failed attempts, as [`retry::backoff`], with this client's
    /// jitter.
    pub(crate) fn backoff(&self, failures: u32) -> Duration {
        retry::backoff(failures, self.next_random())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_counts_as_silent_after_four_round_trips_and_never_sooner_than_the_minimum() {
        assert_eq!(silence_limit(Duration::from_micros(80)), SILENCE_MIN, "loopback");
        assert_eq!(silence_limit(Duration::from_millis(300)), Duration::from_millis(1200), "a slow link");
    }
}
