//! Read-index coalescing: one leadership confirmation serves every read that arrived before it
//! started, so many concurrent linearizable reads cost one quorum round (or one question to the
//! leader) instead of one each.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use distsync::ServerError;

/// Runs read-index confirmations in rounds: a caller is answered by the first round that
/// *started* after it arrived, so one round serves every caller waiting for it. One round runs
/// at a time.
#[derive(Default)]
pub struct ReadIndexRounds {
    arrivals: AtomicU64,
    /// The latest round: the last arrival it covers, and its result.
    latest: tokio::sync::Mutex<Option<(u64, Result<u64, ServerError>)>>,
}

impl ReadIndexRounds {
    /// The result of a round that started after this call: `confirm`'s, or another caller's.
    pub async fn join<F, Fut>(&self, confirm: F) -> Result<u64, ServerError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<u64, ServerError>>,
    {
        let ticket = self.arrivals.fetch_add(1, Ordering::SeqCst) + 1;
        let mut latest = self.latest.lock().await;
        if let Some((covered, result)) = &*latest {
            if *covered >= ticket {
                return result.clone();
            }
        }
        // Everyone who has arrived so far arrived before this round starts.
        let covered = self.arrivals.load(Ordering::SeqCst);
        let result = confirm().await;
        *latest = Some((covered, result.clone()));
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn a_round_serves_only_callers_that_arrived_before_it_started() {
        let rounds = Arc::new(ReadIndexRounds::default());
        let started = Arc::new(AtomicU64::new(0));
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        // The first caller starts round 1 and holds it open.
        let first = {
            let (rounds, started) = (rounds.clone(), started.clone());
            tokio::spawn(async move {
                rounds
                    .join(|| async move {
                        started.fetch_add(1, Ordering::SeqCst);
                        let _ = released.await;
                        Ok(1)
                    })
                    .await
            })
        };
        while started.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // These arrive during round 1, so round 1 cannot answer them: one round 2 serves all.
        let later: Vec<_> = (0..5)
            .map(|_| {
                let (rounds, started) = (rounds.clone(), started.clone());
                tokio::spawn(async move {
                    rounds
                        .join(|| async move {
                            let round = started.fetch_add(1, Ordering::SeqCst) + 1;
                            Ok(round)
                        })
                        .await
                })
            })
            .collect();
        tokio::task::yield_now().await;
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), 1);
        for caller in later {
            assert_eq!(caller.await.unwrap().unwrap(), 2, "served by the round that started after it arrived");
        }
        assert_eq!(started.load(Ordering::SeqCst), 2, "one round for all five");
    }
}
