//! Client sessions: TTL leases renewed by keepalives, expiry by leader-stamped time, and the
//! per-session response cache that makes retried writes exactly-once.

use std::collections::{BTreeMap, BTreeSet};

use distsync::wire::{CommandResponse, SessionId, SESSION_TTL_MAX, SESSION_TTL_MIN};
use distsync::ServerError;
use serde::{Deserialize, Serialize};

/// Responses kept per session. A client has at most this many writes in flight; beyond it the
/// oldest responses are forgotten and a retry of one of them gets `StaleSequence`. Bounds the
/// memory and snapshot size one session can pin.
pub const RESPONSES_PER_SESSION_MAX: usize = 4096;

/// Open sessions at once. Bounds state-machine memory against a client bug that opens sessions
/// in a loop; each costs a few hundred bytes.
pub const SESSIONS_MAX: usize = 100_000;

/// One open session.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Lease length.
    pub ttl_ms: u64,
    /// Leader-stamped time after which the session is expired.
    pub expires_at_ms: u64,
    /// Every sequence number below this has been answered to the client and forgotten.
    pub acked_below: u64,
    /// Stored answers by sequence number, for retries.
    pub responses: BTreeMap<u64, Result<CommandResponse, ServerError>>,
}

/// What [`Sessions::begin_write`] decided about a write.
#[derive(Debug, PartialEq, Eq)]
pub enum WriteAdmission {
    /// Apply the command, then [`Sessions::finish_write`].
    Apply,
    /// Already applied: answer this without applying again.
    Duplicate(Result<CommandResponse, ServerError>),
}

/// All sessions, with an expiry index.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct Sessions {
    sessions: BTreeMap<SessionId, Session>,
    /// (expires_at_ms, session): the next to expire first.
    by_expiry: BTreeSet<(u64, SessionId)>,
}

impl Sessions {
    /// When the next lease ends.
    pub fn next_expiry_ms(&self) -> Option<u64> {
        self.by_expiry.first().map(|(expires_at_ms, _)| *expires_at_ms)
    }

    /// Number of open sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Opens session `id` (the revision of the opening operation).
    ///
    /// # Errors
    ///
    /// `InvalidArgument` for a TTL out of range, `Unavailable` when [`SESSIONS_MAX`] are open.
    pub fn open(&mut self, id: SessionId, ttl_ms: u64, now_ms: u64) -> Result<(), ServerError> {
        let range = SESSION_TTL_MIN.as_millis() as u64..=SESSION_TTL_MAX.as_millis() as u64;
        if !range.contains(&ttl_ms) {
            return Err(ServerError::InvalidArgument {
                reason: format!("session TTL {ttl_ms} ms is outside {}..={} ms", range.start(), range.end()),
            });
        }
        if self.sessions.len() >= SESSIONS_MAX {
            return Err(ServerError::Unavailable {
                reason: format!("{SESSIONS_MAX} sessions are open; close idle clients or wait for their TTL"),
            });
        }
        assert!(!self.sessions.contains_key(&id), "session ids are revisions and never repeat");
        let expires_at_ms = now_ms + ttl_ms;
        self.sessions.insert(id, Session { ttl_ms, expires_at_ms, acked_below: 1, responses: BTreeMap::new() });
        self.by_expiry.insert((expires_at_ms, id));
        Ok(())
    }

    /// Renews a session's lease from `now_ms`.
    ///
    /// # Errors
    ///
    /// `SessionExpired` when the session is not open.
    pub fn keep_alive(&mut self, id: SessionId, now_ms: u64) -> Result<(), ServerError> {
        let session = self.sessions.get_mut(&id).ok_or(ServerError::SessionExpired { session: id })?;
        let renewed = now_ms + session.ttl_ms;
        if renewed > session.expires_at_ms {
            self.by_expiry.remove(&(session.expires_at_ms, id));
            session.expires_at_ms = renewed;
            self.by_expiry.insert((renewed, id));
        }
        Ok(())
    }

    /// Closes a session at once; returns whether it was open.
    pub fn close(&mut self, id: SessionId) -> bool {
        match self.sessions.remove(&id) {
            Some(session) => {
                self.by_expiry.remove(&(session.expires_at_ms, id));
                true
            }
            None => false,
        }
    }

    /// Removes every session whose lease ended before `now_ms`; returns their ids, oldest first.
    pub fn expire(&mut self, now_ms: u64) -> Vec<SessionId> {
        let mut expired = Vec::new();
        while let Some(&(expires_at_ms, id)) = self.by_expiry.first() {
            if expires_at_ms >= now_ms {
                break;
            }
            self.by_expiry.pop_first();
            self.sessions.remove(&id);
            expired.push(id);
        }
        expired
    }

    /// Extends every lease to at least `until_ms`. Used after a leader change: the cluster may
    /// have been unable to hear keepalives during the election, and clients deserve the time to
    /// find the new leader before anything they hold expires.
    pub fn grant_grace(&mut self, until_ms: u64) {
        let late: Vec<(u64, SessionId)> =
            self.by_expiry.iter().take_while(|(expires_at_ms, _)| *expires_at_ms < until_ms).copied().collect();
        for (expires_at_ms, id) in late {
            self.by_expiry.remove(&(expires_at_ms, id));
            self.by_expiry.insert((until_ms, id));
            self.sessions.get_mut(&id).expect("indexed session exists").expires_at_ms = until_ms;
        }
    }

    /// Admits a write `(id, seq)`: renews the lease, forgets responses the client has seen, and
    /// says whether to apply the command or answer a stored response.
    ///
    /// # Errors
    ///
    /// `SessionExpired` for an unknown session; `StaleSequence` when `seq` was answered and
    /// forgotten already.
    pub fn begin_write(
        &mut self,
        id: SessionId,
        seq: u64,
        acked_below: u64,
        now_ms: u64,
    ) -> Result<WriteAdmission, ServerError> {
        self.keep_alive(id, now_ms)?;
        let session = self.sessions.get_mut(&id).expect("kept alive above");
        if let Some(stored) = session.responses.get(&seq) {
            return Ok(WriteAdmission::Duplicate(stored.clone()));
        }
        if seq < session.acked_below {
            return Err(ServerError::StaleSequence { session: id, seq, oldest_kept: session.acked_below });
        }
        // The client has seen every answer below `acked_below` (it never goes backwards, but a
        // delayed request may carry an older bound, hence the max).
        let bound = acked_below.min(seq).max(session.acked_below);
        session.acked_below = bound;
        session.responses = session.responses.split_off(&bound);
        Ok(WriteAdmission::Apply)
    }

    /// Stores the answer of an applied write for retries.
    pub fn finish_write(&mut self, id: SessionId, seq: u64, response: Result<CommandResponse, ServerError>) {
        if let Some(session) = self.sessions.get_mut(&id) {
            session.responses.insert(seq, response);
            while session.responses.len() > RESPONSES_PER_SESSION_MAX {
                let (oldest, _) = session.responses.pop_first().expect("non-empty");
                session.acked_below = oldest + 1;
            }
        }
    }

    /// Whether `id` is open.
    pub fn contains(&self, id: SessionId) -> bool {
        self.sessions.contains_key(&id)
    }

    /// Checks the expiry index against the sessions; panics on a mismatch, which would mean a bug.
    pub fn check_invariants(&self) {
        self.check_counts();
        for &(_, id) in &self.by_expiry {
            self.check_session(id);
        }
    }

    /// Every session is indexed once (cheap).
    pub fn check_counts(&self) {
        assert_eq!(self.sessions.len(), self.by_expiry.len(), "every session is indexed once");
    }

    /// One session agrees with the index and keeps its bounds; an absent session is fine.
    pub fn check_session(&self, id: SessionId) {
        let Some(session) = self.sessions.get(&id) else { return };
        assert!(self.by_expiry.contains(&(session.expires_at_ms, id)), "index agrees with session {id}");
        assert!(session.responses.len() <= RESPONSES_PER_SESSION_MAX);
        if let Some((&first, _)) = session.responses.first_key_value() {
            assert!(first >= session.acked_below, "session {id} keeps no response below its bound");
        }
    }
}
