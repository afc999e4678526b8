//! Waiting on the cluster, shared by every primitive that waits: a lock request in line, a get
//! waiting for a message, and whatever waits next.
//!
//! - [`await_outcome`] asks the node the client talks to, in slices, until the cluster decides
//!   a request that was queued there: each slice is one await request the node holds open and
//!   answers the moment the deciding entry is applied (a push within one round trip), or with
//!   "pending" at the slice's end.
//! - [`CancelOnDrop`] withdraws such a request when its caller stops waiting (the future was
//!   dropped) or the outcome was lost, so that nothing stays granted or delivered to nobody.
//! - [`collect_pages`] reads a listing page by page.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::client::{CallOptions, Client};
use crate::error::ClientError;
use crate::wire::{Command, Request, Response};

/// How long one await request may stay open on a node before the client asks again.
pub(crate) const AWAIT_SLICE: Duration = Duration::from_secs(10);

/// How a wait ended without its result.
pub(crate) enum Ended<E> {
    /// The cluster decided it (timed out, session gone): nothing to undo.
    Decided(E),
    /// The client gave up on it (its own limit, an outage, a garbled answer): the request may
    /// still be queued or even granted, so withdraw it.
    Undecided(E),
}

/// What one answer to an await request says.
pub(crate) enum Verdict<T, E> {
    /// Not decided yet: ask again.
    Pending,
    /// Decided, with the result.
    Done(T),
    /// Ended without a result.
    Ended(Ended<E>),
}

/// Asks the node the client talks to, one slice after another, until `verdict` finds the
/// request decided or `limit` passes.
///
/// - `request(max_wait_ms)` builds one slice's await request;
/// - `verdict` reads each answer;
/// - through an outage the wait goes on while `keep_waiting()` holds (the cluster decides the
///   request meanwhile, and the next answer reports it), else it ends undecided;
/// - at `limit` it ends undecided with `at_limit(last outage)`.
pub(crate) async fn await_outcome<T, E: From<ClientError>>(
    client: &Client,
    limit: Option<Instant>,
    request: impl Fn(u64) -> Request,
    mut verdict: impl FnMut(Response) -> Verdict<T, E>,
    keep_waiting: impl Fn() -> bool,
    at_limit: impl FnOnce(Option<String>) -> E,
) -> Result<T, Ended<E>> {
    let mut last_outage = None;
    loop {
        let now = Instant::now();
        let slice = match limit {
            Some(limit) if now >= limit => return Err(Ended::Undecided(at_limit(last_outage))),
            Some(limit) => (limit - now).min(AWAIT_SLICE),
            None => AWAIT_SLICE,
        };
        let options = CallOptions::default()
            .deadline(now + slice + client.request_timeout())
            .attempt(slice + client.attempt_timeout());
        match client.call(&request(slice.as_millis() as u64), options).await {
            Ok(response) => match verdict(response) {
                Verdict::Pending => {}
                Verdict::Done(result) => return Ok(result),
                Verdict::Ended(ended) => return Err(ended),
            },
            Err(ClientError::Unavailable { reason }) => {
                if !keep_waiting() {
                    return Err(Ended::Undecided(ClientError::Unavailable { reason }.into()));
                }
                last_outage = Some(reason);
            }
            Err(error) => return Err(Ended::Undecided(error.into())),
        }
    }
}

/// A request the cluster may hold for a caller, and how to take it back.
pub(crate) trait Cancellable: Send + 'static {
    /// The command that withdraws the request.
    fn command(&self) -> Command;

    /// What the log says when the withdrawal fails; say what frees the request anyway.
    fn failure_note(&self) -> String;

    /// Runs `withdrawal` when the guard is dropped: in a task of its own by default (none
    /// without a runtime: the session's end frees the request then).
    fn in_background(&self, _client: &Client, withdrawal: impl Future<Output = ()> + Send + 'static) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(withdrawal);
        }
    }
}

/// Withdraws a request unless disarmed: awaited with [`CancelOnDrop::now`], or in the
/// background when dropped (the caller's future was dropped mid-wait).
pub(crate) struct CancelOnDrop<R: Cancellable> {
    client: Option<Client>,
    request: R,
}

impl<R: Cancellable> CancelOnDrop<R> {
    /// Arms the guard for `request`.
    pub(crate) fn new(client: &Client, request: R) -> Self {
        CancelOnDrop { client: Some(client.clone()), request }
    }

    /// The request, to complete what it names once the cluster answered (a queued revision).
    pub(crate) fn request_mut(&mut self) -> &mut R {
        &mut self.request
    }

    /// The outcome is known and needs no withdrawal.
    pub(crate) fn disarm(&mut self) {
        self.client = None;
    }

    /// Withdraws the request now and waits for that to commit (or fail).
    pub(crate) async fn now(&mut self) {
        if let Some(client) = self.client.take() {
            withdraw(client, self.request.command(), self.request.failure_note()).await;
        }
    }
}

impl<R: Cancellable> Drop for CancelOnDrop<R> {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else { return };
        let withdrawal = withdraw(client.clone(), self.request.command(), self.request.failure_note());
        self.request.in_background(&client, withdrawal);
    }
}

async fn withdraw(client: Client, command: Command, failure_note: String) {
    match client.write(command, CallOptions::default()).await {
        // An expired session took the request with it.
        Ok(_) | Err(ClientError::SessionExpired { .. }) => {}
        Err(error) => tracing::warn!(%error, "{failure_note}"),
    }
}

/// Reads a listing page after page: `page(after)` answers the items after the name `after` and
/// whether more follow; `name` names an item.
pub(crate) async fn collect_pages<T, E, F, Fut>(mut page: F, name: impl Fn(&T) -> &str) -> Result<Vec<T>, E>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<(Vec<T>, bool), E>>,
{
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let (items, more) = page(after.take()).await?;
        after = items.last().map(|item| name(item).to_string());
        all.extend(items);
        if !more || after.is_none() {
            return Ok(all);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pages_are_read_until_the_last_one_and_each_starts_after_the_previous() {
        let names: Vec<String> = (0..7).map(|i| format!("n{i}")).collect();
        let mut asked = Vec::new();
        let all: Result<Vec<String>, ()> = collect_pages(
            |after: Option<String>| {
                asked.push(after.clone());
                let start = after.map_or(0, |after| names.iter().position(|n| *n == after).unwrap() + 1);
                let page: Vec<String> = names[start..].iter().take(3).cloned().collect();
                let more = start + page.len() < names.len();
                async move { Ok((page, more)) }
            },
            String::as_str,
        )
        .await;
        assert_eq!(all.unwrap(), names);
        assert_eq!(asked, [None, Some("n2".to_string()), Some("n5".to_string())]);
    }

    #[tokio::test]
    async fn an_empty_page_that_claims_more_ends_the_listing() {
        let mut pages = 0;
        let all: Result<Vec<String>, ()> = collect_pages(
            |_| {
                pages += 1;
                async { Ok((Vec::new(), true)) }
            },
            String::as_str,
        )
        .await;
        assert!(all.unwrap().is_empty());
        assert_eq!(pages, 1, "no name to continue after: stop instead of asking for ever");
    }
}
