//! Merging concurrent single calls of one client into shared requests: the callers queue their
//! items and wait for their own answers, while at most a few sender tasks take the queued items
//! in batches, send each batch as one request and hand every caller its outcome. Used by the
//! queue's put batcher and the cache's get batcher.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::oneshot;

/// Where one caller's answer goes.
pub(crate) type Answer<O> = oneshot::Sender<O>;

/// The items waiting to be sent, and the sender tasks running.
pub(crate) struct Merger<I, O> {
    pending: Mutex<Pending<I, O>>,
}

struct Pending<I, O> {
    senders: usize,
    items: VecDeque<(I, Answer<O>)>,
}

impl<I, O> Default for Merger<I, O> {
    fn default() -> Self {
        Merger { pending: Mutex::new(Pending { senders: 0, items: VecDeque::new() }) }
    }
}

impl<I, O> Merger<I, O> {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending<I, O>> {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `item`. Returns where its answer arrives, and whether the caller must start a
    /// sender (fewer than `senders_max` run): in a task of its own, so that a caller that stops
    /// waiting does not strand the others.
    pub(crate) fn push(&self, item: I, senders_max: usize) -> (oneshot::Receiver<O>, bool) {
        let (answer, answered) = oneshot::channel();
        let mut pending = self.pending();
        pending.items.push_back((item, answer));
        let start = pending.senders < senders_max;
        if start {
            pending.senders += 1;
        }
        (answered, start)
    }

    /// A sender's next batch: items from the front while `fits(items taken, next item)` holds.
    /// It is asked of every item in order, the first included, which goes whatever the answer.
    /// `None` when nothing is pending: the sender is then counted out and must stop.
    pub(crate) fn next_batch(&self, mut fits: impl FnMut(usize, &I) -> bool) -> Option<Vec<(I, Answer<O>)>> {
        let mut pending = self.pending();
        let mut batch = Vec::new();
        while let Some((item, _)) = pending.items.front() {
            if !fits(batch.len(), item) && !batch.is_empty() {
                break;
            }
            batch.push(pending.items.pop_front().expect("a front item"));
        }
        if batch.is_empty() {
            debug_assert!(pending.senders > 0, "a sender ended that was never counted");
            pending.senders -= 1;
            return None;
        }
        Some(batch)
    }

    /// Whether nothing is pending and no sender runs.
    pub(crate) fn is_idle(&self) -> bool {
        let pending = self.pending();
        pending.senders == 0 && pending.items.is_empty()
    }
}

/// Answers each waiter with its own outcome, in order, or every waiter with the same error.
pub(crate) fn answer_each<T, E: Clone>(waiters: Vec<Answer<Result<T, E>>>, outcome: Result<Vec<T>, E>) {
    match outcome {
        Ok(outcomes) => {
            for (waiter, outcome) in waiters.into_iter().zip(outcomes) {
                let _ = waiter.send(Ok(outcome));
            }
        }
        Err(error) => {
            for waiter in waiters {
                let _ = waiter.send(Err(error.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders_start_up_to_the_limit_and_batches_respect_the_fit() {
        let merger: Merger<u32, Result<u32, ()>> = Merger::default();
        let mut receivers = Vec::new();
        let mut started = 0;
        for item in 0..5 {
            let (answered, start) = merger.push(item, 2);
            receivers.push(answered);
            started += usize::from(start);
        }
        assert_eq!(started, 2, "at most two senders");
        let first = merger.next_batch(|taken, _| taken < 3).expect("items pending");
        assert_eq!(first.iter().map(|(item, _)| *item).collect::<Vec<_>>(), [0, 1, 2]);
        let (items, waiters): (Vec<u32>, Vec<_>) = first.into_iter().unzip();
        answer_each(waiters, Ok(items.iter().map(|i| i * 10).collect()));
        let second = merger.next_batch(|_, _| false).expect("the first item always goes");
        assert_eq!(second.len(), 1);
        let (_, waiters): (Vec<u32>, Vec<_>) = second.into_iter().unzip();
        answer_each::<u32, ()>(waiters, Err(()));
        assert!(!merger.is_idle());
        let third = merger.next_batch(|_, _| true).expect("one left");
        drop(third);
        assert!(merger.next_batch(|_, _| true).is_none());
        assert!(!merger.is_idle(), "the other sender still runs");
        assert!(merger.next_batch(|_, _| true).is_none());
        assert!(merger.is_idle());
        let answers: Vec<_> = receivers.into_iter().map(|mut r| r.try_recv().ok()).collect();
        assert_eq!(answers, [Some(Ok(0)), Some(Ok(10)), Some(Ok(20)), Some(Err(())), None]);
    }
}
