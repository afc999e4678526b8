//! [`Consumer`]: an endless stream of deliveries from one queue, fetched a batch at a time.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use super::{Delivery, Queue, QueueError};

/// How long each get of a [`Consumer`] waits before asking again.
const CONSUME_WAIT: Duration = Duration::from_secs(30);

type Fetch = Pin<Box<dyn Future<Output = Result<Vec<Delivery>, QueueError>> + Send>>;

/// An endless stream of deliveries from one queue; see [`Queue::consume`]. Use
/// [`Consumer::next`], or the [`futures_core::Stream`] implementation.
pub struct Consumer {
    queue: Queue,
    prefetch: usize,
    buffer: VecDeque<Delivery>,
    fetching: Option<Fetch>,
}

impl Consumer {
    pub(super) fn new(queue: Queue) -> Self {
        Consumer { queue, prefetch: 1, buffer: VecDeque::new(), fetching: None }
    }

    /// Fetch up to `prefetch` messages per get (1..=1000). More saves round trips; the fetched
    /// messages are in flight, invisible to other consumers, until taken and acked.
    pub fn prefetch(mut self, prefetch: usize) -> Self {
        self.prefetch = prefetch.clamp(1, crate::wire::QUEUE_BATCH_MAX);
        self
    }

    /// The next delivery, waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// [`QueueError::Unavailable`] while the cluster cannot be reached (call again to keep
    /// waiting), and the errors of [`Queue::get_batch`].
    pub async fn next(&mut self) -> Result<Delivery, QueueError> {
        std::future::poll_fn(|cx| self.poll_delivery(cx)).await
    }

    fn poll_delivery(&mut self, cx: &mut Context<'_>) -> Poll<Result<Delivery, QueueError>> {
        loop {
            if let Some(delivery) = self.buffer.pop_front() {
                return Poll::Ready(Ok(delivery));
            }
            let fetch = self.fetching.get_or_insert_with(|| {
                let queue = self.queue.clone();
                let prefetch = self.prefetch;
                Box::pin(async move { queue.get_batch(prefetch, CONSUME_WAIT).await })
            });
            match fetch.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(result) => {
                    self.fetching = None;
                    match result {
                        Ok(deliveries) => self.buffer.extend(deliveries),
                        Err(error) => return Poll::Ready(Err(error)),
                    }
                }
            }
        }
    }
}

impl futures_core::Stream for Consumer {
    type Item = Result<Delivery, QueueError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_delivery(cx).map(Some)
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let tags: Vec<u64> = self.buffer.drain(..).map(|d| d.tag).collect();
        let queue = self.queue.clone();
        runtime.spawn(async move {
            if let Err(error) = queue.nack_tags(tags).await {
                tracing::warn!(queue = %queue.name, %error, "could not return prefetched deliveries");
            }
        });
    }
}
