//! Merging concurrent single-key gets of one client into shared requests, and the batchers a
//! client keeps ([`CacheState`]).

use std::sync::Arc;

use super::Cache;
use crate::client::{Client, Route};
use crate::error::ClientError;
use crate::merge::{answer_each, Merger};
use crate::wire::{CacheValue, Consistency, CACHE_GET_KEYS_MAX};

#[allow(unused_imports)] // for intra-doc links
use crate::wire::Request;

/// The cache state a [`Client`] keeps: one get batcher per consistency and target node.
pub(crate) struct CacheState {
    /// Per consistency, one slot per endpoint (a key's node by hash) and a last one for the
    /// home node.
    get_batchers: Vec<Arc<GetBatcher>>,
}

impl CacheState {
    /// The state of a client of `endpoints` nodes.
    pub(crate) fn new(endpoints: usize) -> Self {
        CacheState { get_batchers: (0..2 * (endpoints + 1)).map(|_| Arc::default()).collect() }
    }

    /// The batcher of single gets of `consistency` sent along `route`.
    fn batcher(&self, consistency: Consistency, route: Route) -> Arc<GetBatcher> {
        let slots = self.get_batchers.len() / 2;
        let target = match route {
            Route::Endpoint(index) => index,
            Route::Home | Route::Leader | Route::Node(_) => slots - 1,
        };
        self.get_batchers[usize::from(consistency == Consistency::Local) * slots + target].clone()
    }
}

/// Requests of merged gets one client keeps in flight per consistency. Gets arriving meanwhile
/// wait and leave together in the next request, so many concurrent callers of one client cost
/// a few round trips instead of one each.
const MERGED_GETS_IN_FLIGHT_MAX: usize = 1;

/// Merges concurrent single-key gets of one client (and one consistency) into shared
/// [`Request::CacheGet`] requests. Each get still sees a state from after it was called: its
/// request leaves after it arrived, and the node takes a read index after receiving it.
#[derive(Default)]
pub(super) struct GetBatcher {
    merger: Merger<Vec<u8>, Result<Option<CacheValue>, ClientError>>,
}

impl GetBatcher {
    pub(super) async fn get(
        client: &Client,
        consistency: Consistency,
        route: Route,
        key: Vec<u8>,
    ) -> Result<Option<CacheValue>, ClientError> {
        let batcher = client.cache_state().batcher(consistency, route);
        let (answered, start) = batcher.merger.push(key, MERGED_GETS_IN_FLIGHT_MAX);
        if start {
            tokio::spawn(Self::send_all(batcher, client.clone(), consistency, route));
        }
        answered.await.map_err(|_| ClientError::Unavailable { reason: "the client is shutting down".into() })?
    }

    /// Sends what is pending, request after request, until nothing is left.
    async fn send_all(batcher: Arc<GetBatcher>, client: Client, consistency: Consistency, route: Route) {
        let cache = Cache::new(client).consistency(consistency);
        while let Some(batch) = batcher.merger.next_batch(|taken, _| taken < CACHE_GET_KEYS_MAX) {
            let (keys, waiters): (Vec<Vec<u8>>, Vec<_>) = batch.into_iter().unzip();
            answer_each(waiters, cache.get_routed(&keys, route).await);
        }
    }
}
