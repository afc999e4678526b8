//! The retry policy as plain functions: what to do after an attempt that did not end a call, and
//! how long to pause before the next one. No sockets, no clock, no state of their own, so they
//! are tested here without a cluster; [`super::rpc`] carries them out.

use std::time::Duration;

use crate::error::ServerError;
use crate::wire::LeaderInfo;

/// Where a call goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// To the leader, as far as known.
    Leader,
    /// To the client's home node, which forwards writes; see
    /// [`ClientOptions::home`](crate::ClientOptions::home).
    Home,
    /// To the endpoint at this index in the client's list (the node a cache key's hash picks),
    /// or the next ones after failures.
    Endpoint(usize),
    /// To this one node and no other, once: for questions about that node itself (its status,
    /// its cache), which no other node can answer.
    Node(std::net::SocketAddr),
}

/// How one attempt against one node failed to end the call.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Attempt<'a> {
    /// The node answered with this error.
    Refused(&'a ServerError),
    /// The exchange failed: no connection, a broken stream, an undecodable reply.
    Failed,
    /// The node did not answer within the attempt's budget.
    Silent,
}

/// What the call does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Next {
    /// Return the node's error to the caller: it is an answer, not a failure to get one.
    Answer,
    /// Report the failure to the caller as unavailability, without another attempt.
    Stop {
        /// Whether the connection is suspect and the next call should dial afresh.
        redial: bool,
    },
    /// Send again at once to the leader the node named.
    FollowHint(LeaderInfo),
    /// Pause ([`backoff`]), then send again.
    Retry {
        /// Dial the node afresh: it may have died, and QUIC would notice only at the idle
        /// timeout (a restarted process cannot reset the old connection).
        redial: bool,
        /// Move on from this node: the next endpoint for [`Route::Endpoint`], another home for
        /// [`Route::Home`].
        move_on: bool,
    },
}

/// Leader hints followed at once per call before the client backs off, so that two nodes with
/// stale views cannot bounce a call between them.
pub(crate) const HINTS_FOLLOWED_MAX: u32 = 3;

/// What to do after `attempt`, the call's attempt number `failures` (counting from 0) along
/// `route`. Every attempt forgets the failed node as leader unless it is [`Next::Answer`].
pub(crate) fn next(attempt: Attempt<'_>, failures: u32, route: Route) -> Next {
    if let Route::Node(_) = route {
        return match attempt {
            Attempt::Refused(_) => Next::Answer,
            Attempt::Failed | Attempt::Silent => Next::Stop { redial: true },
        };
    }
    match attempt {
        Attempt::Refused(ServerError::NotLeader { leader: Some(leader) }) if failures < HINTS_FOLLOWED_MAX => {
            Next::FollowHint(leader.clone())
        }
        // A home or key owner that keeps refusing may be cut off from the leader: try another.
        Attempt::Refused(error) if error.is_retryable() => {
            Next::Retry { redial: false, move_on: route != Route::Leader && failures >= 1 }
        }
        Attempt::Refused(_) => Next::Answer,
        Attempt::Failed | Attempt::Silent => Next::Retry { redial: true, move_on: true },
    }
}

/// The pause before the next attempt after `failures` failed ones: exponential from 10 ms to
/// 500 ms, with ±50 % jitter drawn from `random`, so that clients retrying after a failover do
/// not arrive in lockstep.
pub(crate) fn backoff(failures: u32, random: u64) -> Duration {
    let base_ms = (10u64 << failures.min(6)).min(500);
    let jitter_ms = random % (base_ms + 1);
    Duration::from_millis(base_ms / 2 + jitter_ms)
}

/// The pause before the next attempt when the node that refused asked for `retry_after`
/// ([`ServerError::Busy`]): at least that long, up to half as long again (jitter from
/// `random`), so that the clients a busy node turned away do not come back at one instant;
/// else [`backoff`].
pub(crate) fn pause(failures: u32, random: u64, retry_after: Option<Duration>) -> Duration {
    match retry_after {
        Some(hint) => {
            let hint_ms = hint.as_millis() as u64;
            Duration::from_millis(hint_ms + random % (hint_ms / 2 + 1)).max(backoff(failures, random))
        }
        None => backoff(failures, random),
    }
}

/// The next value of a xorshift64 generator: cheap, and good enough to spread retries.
pub(crate) fn next_random(state: u64) -> u64 {
    let mut x = state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// The endpoint an [`Route::Endpoint`] call tries after `detour` moves.
pub(crate) fn endpoint_after(first: usize, detour: usize, endpoints: usize) -> usize {
    (first + detour) % endpoints
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader(id: u64) -> LeaderInfo {
        LeaderInfo { id, address: format!("127.0.0.1:{id}") }
    }

    #[test]
    fn a_busy_node_is_retried_after_its_hint_with_jitter() {
        let busy = ServerError::Busy { reason: "full".into(), retry_after_ms: 200 };
        assert_eq!(next(Attempt::Refused(&busy), 0, Route::Leader), Next::Retry { redial: false, move_on: false });
        let pauses: Vec<Duration> = (0..64).map(|random| pause(0, random * 7919, busy.retry_after())).collect();
        assert!(pauses.iter().all(|p| (200..=300).contains(&p.as_millis())), "{pauses:?}");
        assert!(pauses.iter().any(|p| *p != pauses[0]), "jittered");
        assert_eq!(pause(3, 5, None), backoff(3, 5));
    }

    #[test]
    fn a_hint_is_followed_at_once_a_few_times_then_retried_with_backoff() {
        let refusal = ServerError::NotLeader { leader: Some(leader(2)) };
        for failures in 0..HINTS_FOLLOWED_MAX {
            assert_eq!(next(Attempt::Refused(&refusal), failures, Route::Leader), Next::FollowHint(leader(2)));
        }
        assert_eq!(
            next(Attempt::Refused(&refusal), HINTS_FOLLOWED_MAX, Route::Leader),
            Next::Retry { redial: false, move_on: false },
            "two nodes pointing at each other must not bounce a call for ever"
        );
        let no_hint = ServerError::NotLeader { leader: None };
        assert_eq!(next(Attempt::Refused(&no_hint), 0, Route::Leader), Next::Retry { redial: false, move_on: false });
    }

    #[test]
    fn an_unavailable_home_is_left_after_its_second_refusal_but_the_leader_route_stays() {
        let refusal = ServerError::Unavailable { reason: "cut off".into() };
        assert_eq!(next(Attempt::Refused(&refusal), 0, Route::Home), Next::Retry { redial: false, move_on: false });
        assert_eq!(next(Attempt::Refused(&refusal), 1, Route::Home), Next::Retry { redial: false, move_on: true });
        assert_eq!(
            next(Attempt::Refused(&refusal), 1, Route::Endpoint(0)),
            Next::Retry { redial: false, move_on: true }
        );
        assert_eq!(next(Attempt::Refused(&refusal), 5, Route::Leader), Next::Retry { redial: false, move_on: false });
    }

    #[test]
    fn a_failed_or_silent_node_is_dialed_afresh_and_left() {
        for attempt in [Attempt::Failed, Attempt::Silent] {
            for route in [Route::Leader, Route::Home, Route::Endpoint(1)] {
                assert_eq!(next(attempt, 0, route), Next::Retry { redial: true, move_on: true });
            }
        }
    }

    #[test]
    fn answers_are_returned_and_a_single_node_is_asked_once() {
        let answer = ServerError::SessionExpired { session: 4 };
        assert_eq!(next(Attempt::Refused(&answer), 0, Route::Leader), Next::Answer);
        let node = Route::Node("127.0.0.1:1".parse().unwrap());
        let unavailable = ServerError::Unavailable { reason: "no leader".into() };
        assert_eq!(next(Attempt::Refused(&unavailable), 0, node), Next::Answer, "the node's own view is the answer");
        assert_eq!(next(Attempt::Silent, 0, node), Next::Stop { redial: true });
        assert_eq!(next(Attempt::Failed, 0, node), Next::Stop { redial: true });
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter_around_the_base() {
        for failures in 0..12 {
            let base = (10u64 << failures.min(6)).min(500);
            let shortest = backoff(failures, 0);
            let longest = backoff(failures, base);
            assert_eq!(shortest, Duration::from_millis(base / 2));
            assert_eq!(longest, Duration::from_millis(base / 2 + base));
        }
        assert_eq!(backoff(20, 0), Duration::from_millis(250), "capped at 500 ms ± 50 %");
        assert!(backoff(1, 7) < backoff(4, 7));
    }

    #[test]
    fn the_random_sequence_moves_and_an_endpoint_detour_wraps() {
        let mut state = 0x9e37_79b9_7f4a_7c15;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100 {
            state = next_random(state);
            assert!(seen.insert(state), "xorshift repeated within 100 steps");
        }
        assert_eq!(endpoint_after(2, 0, 3), 2);
        assert_eq!(endpoint_after(2, 1, 3), 0);
        assert_eq!(endpoint_after(2, 4, 3), 0);
    }
}
