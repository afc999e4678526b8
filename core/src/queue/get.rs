//! Gets: taking the oldest deliverable messages, waiting in the cluster for one to arrive, and
//! giving back what was delivered to a get whose caller stopped waiting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::error::unexpected_answer;
use super::{Delivery, Queue, QueueError};
use crate::client::{unexpected, CallOptions};
use crate::error::ClientError;
use crate::pending::{self, CancelOnDrop, Cancellable, Ended, Verdict};
use crate::wire::{
    Command, CommandResponse, QueueAwaitOutcome, QueueDelivery, Request, Response, SessionId, QUEUE_WAIT_MS_MAX,
};

/// Ids of gets, unique within the process and so within any session.
static NEXT_REQUEST: AtomicU64 = AtomicU64::new(1);

impl Queue {
    /// The oldest deliverable message, waiting up to `wait` for one to arrive (pushed by the
    /// cluster the moment it is enqueued); `None` when none arrived.
    ///
    /// # Errors
    ///
    /// [`QueueError::Unavailable`] when the cluster cannot be reached; nothing is then left in
    /// flight for this call (an unseen delivery is given back).
    pub async fn get(&self, wait: Duration) -> Result<Option<Delivery>, QueueError> {
        Ok(self.get_batch(1, wait).await?.pop())
    }

    /// Up to `max` of the oldest deliverable messages (at most 4 MiB of bodies, at least one),
    /// waiting up to `wait` for the first; empty when none arrived.
    ///
    /// # Errors
    ///
    /// As [`Queue::get`]; [`QueueError::InvalidArgument`] for `max` outside
    /// 1..=[`crate::wire::QUEUE_BATCH_MAX`].
    pub async fn get_batch(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        let limit = Instant::now() + wait;
        let mut renewed_session = false;
        loop {
            let remaining = limit.saturating_duration_since(Instant::now());
            let slice = remaining.min(Duration::from_millis(QUEUE_WAIT_MS_MAX));
            match self.get_once(max, slice).await {
                Ok(deliveries) if deliveries.is_empty() && Instant::now() < limit && slice < remaining => {}
                Ok(deliveries) => return Ok(deliveries),
                // The session ended while the get waited: nothing was delivered to this call, so
                // ask again under the new session once.
                Err(QueueError::SessionExpired { .. }) if !renewed_session => renewed_session = true,
                Err(error) => return Err(error),
            }
        }
    }

    async fn get_once(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        let request = NEXT_REQUEST.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let command = Command::QueueGet {
            queue: self.name.clone(),
            request,
            max: u32::try_from(max).unwrap_or(u32::MAX),
            visibility_ms: self.visibility.map(|v| v.as_millis().min(u128::from(u64::MAX)) as u64),
            wait_ms: wait.as_millis() as u64,
            detach: self.detach,
        };
        // Until the outcome is known messages may be in flight to this get: if the caller stops
        // waiting (drops this future) or the outcome is lost, give them back.
        let mut cancel = CancelOnDrop::new(&self.client, GetCancel { queue: self.name.clone(), request });
        let options = CallOptions::default().deadline(started + self.client.request_timeout());
        let (session, response) = match self.client.write(command, options).await {
            Ok(answer) => answer,
            Err(error @ ClientError::Unavailable { .. }) => {
                cancel.now().await;
                return Err(error.into());
            }
            Err(error) => {
                cancel.disarm();
                return Err(error.into());
            }
        };
        let deliveries = match response {
            CommandResponse::QueueDelivered { deliveries } => deliveries,
            CommandResponse::QueueWaiting { revision } => {
                let limit = started + wait + self.client.request_timeout();
                match self.await_delivery(session, request, revision, limit).await {
                    Ok(deliveries) => deliveries,
                    Err(Ended::Decided(error)) => {
                        cancel.disarm();
                        return Err(error);
                    }
                    Err(Ended::Undecided(error)) => {
                        cancel.now().await;
                        return Err(error);
                    }
                }
            }
            other => {
                cancel.now().await;
                return Err(unexpected_answer(&other));
            }
        };
        cancel.disarm();
        Ok(deliveries.into_iter().map(|delivery| Delivery::new(self.clone(), delivery)).collect())
    }

    /// Asks the node this client talks to until the waiting get is decided. Through an outage it
    /// keeps waiting: the cluster decides the get meanwhile.
    async fn await_delivery(
        &self,
        session: SessionId,
        request: u64,
        queued_revision: u64,
        limit: Instant,
    ) -> Result<Vec<QueueDelivery>, Ended<QueueError>> {
        let secret = self.client.session_secret(session);
        pending::await_outcome(
            &self.client,
            Some(limit),
            |max_wait_ms| Request::AwaitDelivery {
                queue: self.name.clone(),
                session,
                request,
                queued_revision,
                max_wait_ms,
                secret,
            },
            |response| match response {
                Response::QueueAwait(QueueAwaitOutcome::Delivered(deliveries)) => Verdict::Done(deliveries),
                Response::QueueAwait(QueueAwaitOutcome::Empty) => Verdict::Done(Vec::new()),
                Response::QueueAwait(QueueAwaitOutcome::Pending) => Verdict::Pending,
                Response::QueueAwait(QueueAwaitOutcome::SessionEnded) => {
                    self.client.session_lost(session);
                    Verdict::Ended(Ended::Decided(QueueError::SessionExpired { session }))
                }
                other => Verdict::Ended(Ended::Undecided(unexpected(&other).into())),
            },
            || true,
            |last_outage| QueueError::Unavailable {
                reason: last_outage.unwrap_or_else(|| "the cluster did not end the wait in time".into()),
            },
        )
        .await
    }
}

/// Gives up a get: ends its wait, and makes messages delivered to it that the caller never saw
/// deliverable again at once, without counting that attempt.
struct GetCancel {
    queue: String,
    request: u64,
}

impl Cancellable for GetCancel {
    fn command(&self) -> Command {
        Command::QueueCancel { queue: self.queue.clone(), request: self.request }
    }

    fn failure_note(&self) -> String {
        format!(
            "could not give back an unseen delivery of queue {:?}; it returns at its visibility timeout or the \
             session's end",
            self.queue
        )
    }
}
