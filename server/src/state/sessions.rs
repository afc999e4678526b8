//! Client sessions: TTL leases renewed by keepalives, expiry by leader-stamped time, and the
//! per-session response cache that makes retried writes exactly-once.
//!
//! A session belongs to the identity that opened it and is proven by the secret its opener
//! chose: every request naming it must come from that identity with that secret. Stored answers
//! are keyed by sequence number and checked against the digest of the command they answer, so
//! a different command under a seen sequence number is refused instead of answered.

use std::collections::{BTreeMap, BTreeSet};

use distsync::wire::{CommandResponse, SessionId, SessionSecret, SESSION_TTL_MAX, SESSION_TTL_MIN};
use distsync::ServerError;
use serde::{Deserialize, Serialize};

use super::limits::{reached, Limits};

/// Responses kept per session. A client has at most this many writes in flight; beyond it the
/// oldest responses are forgotten and a retry of one of them gets `StaleSequence`. Bounds the
/// memory and snapshot size one session can pin.
pub const RESPONSES_PER_SESSION_MAX: usize = 4096;

/// Encoded bytes of the responses kept per session; beyond, the oldest are forgotten as above.
/// Responses are kept compact (a queue get keeps its tags, not the bodies it delivered; see
/// `StateMachine::apply_write`), so this holds thousands of ordinary answers.
pub const RESPONSE_BYTES_PER_SESSION_MAX: u64 = 1024 * 1024;

/// Open sessions at once by default (`--max-sessions`). Bounds state-machine memory against a client bug that opens sessions
/// in a loop; each costs a few hundred bytes.
pub const SESSIONS_MAX: usize = 100_000;

/// Open sessions of one identity at once by default (`--max-sessions-per-identity`): a tenth of [`SESSIONS_MAX`], so that one client that
/// opens sessions in a loop (or a thousand processes sharing a certificate, each with long TTLs)
/// cannot lock every other identity out.
pub const SESSIONS_PER_IDENTITY_MAX: usize = 10_000;

/// The answer of an applied write, kept for its retries.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    /// The digest of the command answered ([`command_digest`](super::command_digest)).
    pub digest: u64,
    /// The answer.
    pub result: Result<CommandResponse, ServerError>,
    /// Its encoded size, counted in [`Session::response_bytes`].
    pub bytes: u64,
}

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
    pub responses: BTreeMap<u64, StoredAnswer>,
    /// Encoded bytes of `responses`, at most [`RESPONSE_BYTES_PER_SESSION_MAX`].
    pub response_bytes: u64,
    /// The identity that opened the session.
    pub identity: String,
    /// The secret its opener chose.
    pub secret: SessionSecret,
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
    /// (identity, secret) → session, so that a retried open finds the session it opened.
    by_opener: BTreeMap<(String, SessionSecret), SessionId>,
    /// Open sessions per identity, for [`SESSIONS_PER_IDENTITY_MAX`].
    per_identity: BTreeMap<String, usize>,
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

    /// Opens session `id` (the revision of the opening operation) for `identity` with `secret`;
    /// returns the session and its TTL. When `identity` has a session open with the same secret
    /// already (a retry whose first answer was lost), answers that one instead.
    ///
    /// # Errors
    ///
    /// `InvalidArgument` for a TTL out of range, `LimitReached` when `limits.sessions` are open, or
    /// `limits.sessions_per_identity` of the identity's.
    pub fn open(
        &mut self,
        id: SessionId,
        ttl_ms: u64,
        now_ms: u64,
        identity: &str,
        secret: SessionSecret,
        limits: &Limits,
    ) -> Result<(SessionId, u64), ServerError> {
        if let Some(&existing) = self.by_opener.get(&(identity.to_string(), secret)) {
            return Ok((existing, self.sessions[&existing].ttl_ms));
        }
        let range = SESSION_TTL_MIN.as_millis() as u64..=SESSION_TTL_MAX.as_millis() as u64;
        if !range.contains(&ttl_ms) {
            return Err(ServerError::InvalidArgument {
                reason: format!("session TTL {ttl_ms} ms is outside {}..={} ms", range.start(), range.end()),
            });
        }
        let (all, quota) = (limits.sessions, limits.sessions_per_identity);
        if self.sessions.len() as u64 >= all {
            return Err(reached(
                "SESSIONS_MAX",
                all,
                format!("{all} sessions are open; close idle clients or wait for their TTL"),
            ));
        }
        if self.per_identity.get(identity).is_some_and(|&open| open as u64 >= quota) {
            return Err(reached(
                "SESSIONS_PER_IDENTITY_MAX",
                quota,
                format!(
                    "identity {identity:?} has {quota} sessions open, its quota; close its idle clients or wait for \
                     their TTL (other identities are not affected)"
                ),
            ));
        }
        assert!(!self.sessions.contains_key(&id), "session ids are revisions and never repeat");
        let expires_at_ms = now_ms + ttl_ms;
        let session = Session {
            ttl_ms,
            expires_at_ms,
            acked_below: 1,
            responses: BTreeMap::new(),
            response_bytes: 0,
            identity: identity.to_string(),
            secret,
        };
        self.sessions.insert(id, session);
        self.by_expiry.insert((expires_at_ms, id));
        self.by_opener.insert((identity.to_string(), secret), id);
        *self.per_identity.entry(identity.to_string()).or_insert(0) += 1;
        Ok((id, ttl_ms))
    }

    /// Checks that session `id` is open and was opened by `identity` with `secret`.
    ///
    /// # Errors
    ///
    /// `SessionExpired` when it is not open; `SessionNotOwned` when the caller is not its opener.
    pub fn authorize(&self, id: SessionId, identity: &str, secret: &SessionSecret) -> Result<(), ServerError> {
        let session = self.sessions.get(&id).ok_or(ServerError::SessionExpired { session: id })?;
        // Both are compared whatever the first finds, so the answer time tells nothing.
        let secret_matches = session.secret.matches(secret);
        if secret_matches & (session.identity == identity) {
            Ok(())
        } else {
            Err(ServerError::SessionNotOwned { session: id })
        }
    }

    /// Renews a session's lease from `now_ms`, for its opener.
    ///
    /// # Errors
    ///
    /// As [`Sessions::authorize`].
    pub fn keep_alive(
        &mut self,
        id: SessionId,
        identity: &str,
        secret: &SessionSecret,
        now_ms: u64,
    ) -> Result<(), ServerError> {
        self.authorize(id, identity, secret)?;
        self.renew(id, now_ms);
        Ok(())
    }

    /// Renews an open session's lease from `now_ms`.
    fn renew(&mut self, id: SessionId, now_ms: u64) {
        let session = self.sessions.get_mut(&id).expect("renewed sessions are open");
        let renewed = now_ms + session.ttl_ms;
        if renewed > session.expires_at_ms {
            self.by_expiry.remove(&(session.expires_at_ms, id));
            session.expires_at_ms = renewed;
            self.by_expiry.insert((renewed, id));
        }
    }

    /// Closes a session at once; returns whether it was open.
    pub fn close(&mut self, id: SessionId) -> bool {
        match self.sessions.remove(&id) {
            Some(session) => {
                self.by_expiry.remove(&(session.expires_at_ms, id));
                self.by_opener.remove(&(session.identity.clone(), session.secret));
                self.forget_identity_session(&session.identity);
                true
            }
            None => false,
        }
    }

    /// The identity that opened session `id`, if it is open.
    pub fn identity_of(&self, id: SessionId) -> Option<&str> {
        self.sessions.get(&id).map(|session| session.identity.as_str())
    }

    /// The open sessions of `identity`, oldest first.
    pub fn sessions_of(&self, identity: &str) -> Vec<SessionId> {
        self.sessions.iter().filter(|(_, session)| session.identity == identity).map(|(id, _)| *id).collect()
    }

    /// Open sessions per identity.
    pub fn count_by_identity(&self) -> BTreeMap<String, u64> {
        self.per_identity.iter().map(|(identity, open)| (identity.clone(), *open as u64)).collect()
    }

    fn forget_identity_session(&mut self, identity: &str) {
        let open = self.per_identity.get_mut(identity).expect("an open session counts for its identity");
        *open -= 1;
        if *open == 0 {
            self.per_identity.remove(identity);
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
            let session = self.sessions.remove(&id).expect("indexed sessions are open");
            self.by_opener.remove(&(session.identity.clone(), session.secret));
            self.forget_identity_session(&session.identity);
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

    /// Admits a write `(id, seq)` of the command with `digest` from `identity` with `secret`:
    /// renews the lease, forgets responses the client has seen, and says whether to apply the
    /// command or answer a stored response.
    ///
    /// # Errors
    ///
    /// As [`Sessions::authorize`]; `StaleSequence` when `seq` was answered and forgotten
    /// already; `SequenceReused` when `seq` answered a different command.
    #[allow(clippy::too_many_arguments)]
    pub fn begin_write(
        &mut self,
        id: SessionId,
        identity: &str,
        secret: &SessionSecret,
        seq: u64,
        acked_below: u64,
        digest: u64,
        now_ms: u64,
    ) -> Result<WriteAdmission, ServerError> {
        self.keep_alive(id, identity, secret, now_ms)?;
        let session = self.sessions.get_mut(&id).expect("kept alive above");
        if let Some(stored) = session.responses.get(&seq) {
            if stored.digest != digest {
                return Err(ServerError::SequenceReused { session: id, seq });
            }
            return Ok(WriteAdmission::Duplicate(stored.result.clone()));
        }
        if seq < session.acked_below {
            return Err(ServerError::StaleSequence { session: id, seq, oldest_kept: session.acked_below });
        }
        // The client has seen every answer below `acked_below` (it never goes backwards, but a
        // delayed request may carry an older bound, hence the max).
        let bound = acked_below.min(seq).max(session.acked_below);
        session.acked_below = bound;
        let kept = session.responses.split_off(&bound);
        let forgotten = std::mem::replace(&mut session.responses, kept);
        session.response_bytes -= forgotten.values().map(|answer| answer.bytes).sum::<u64>();
        Ok(WriteAdmission::Apply)
    }

    /// Stores the answer of an applied write (of the command with `digest`) for retries.
    pub fn finish_write(&mut self, id: SessionId, seq: u64, digest: u64, result: Result<CommandResponse, ServerError>) {
        if let Some(session) = self.sessions.get_mut(&id) {
            let bytes = distsync::wire::encoded_bytes(&result) as u64;
            if let Some(replaced) = session.responses.insert(seq, StoredAnswer { digest, result, bytes }) {
                session.response_bytes -= replaced.bytes;
            }
            session.response_bytes += bytes;
            // The newest answer is always kept, whatever its size.
            while session.responses.len() > RESPONSES_PER_SESSION_MAX
                || (session.response_bytes > RESPONSE_BYTES_PER_SESSION_MAX && session.responses.len() > 1)
            {
                let (oldest, answer) = session.responses.pop_first().expect("non-empty");
                session.response_bytes -= answer.bytes;
                session.acked_below = oldest + 1;
            }
        }
    }

    /// Session `id`, if open.
    pub fn get(&self, id: SessionId) -> Option<&Session> {
        self.sessions.get(&id)
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
        assert_eq!(self.sessions.len(), self.by_opener.len(), "every session is indexed by its opener once");
        assert_eq!(self.sessions.len(), self.per_identity.values().sum::<usize>(), "sessions counted per identity");
    }

    /// One session agrees with the index and keeps its bounds; an absent session is fine.
    pub fn check_session(&self, id: SessionId) {
        let Some(session) = self.sessions.get(&id) else { return };
        assert!(self.by_expiry.contains(&(session.expires_at_ms, id)), "index agrees with session {id}");
        assert_eq!(self.by_opener.get(&(session.identity.clone(), session.secret)), Some(&id));
        assert!(session.responses.len() <= RESPONSES_PER_SESSION_MAX);
        let bytes: u64 = session.responses.values().map(|answer| answer.bytes).sum();
        assert_eq!(bytes, session.response_bytes, "session {id}: response bytes drifted");
        assert!(bytes <= RESPONSE_BYTES_PER_SESSION_MAX || session.responses.len() == 1, "session {id}: responses");
        if let Some((&first, _)) = session.responses.first_key_value() {
            assert!(first >= session.acked_below, "session {id} keeps no response below its bound");
        }
    }
}
