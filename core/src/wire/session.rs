//! Sessions on the wire: the session id, the secret that proves a session is yours, and the
//! exactly-once envelope of every write.

use serde::{Deserialize, Serialize};

use super::Command;

/// A client session id: the revision of the operation that opened it (unique, increasing).
///
/// A **revision** is the cluster's operation counter: every applied operation takes the next one,
/// in log order, like etcd's revision. Key versions are revisions too.
pub type SessionId = u64;

/// The secret that proves a request comes from the client that opened the session: 128 random
/// bits the client picks when it opens the session and sends with every request naming it. Ids
/// are guessable revisions; the secret is not, so nobody else can write, keep alive, close or
/// wait under the session. Never printed: its `Debug` shows nothing of it.
///
/// ```
/// let secret = distsync::wire::SessionSecret::random();
/// assert_ne!(secret, distsync::wire::SessionSecret::random());
/// assert_eq!(format!("{secret:?}"), "SessionSecret(..)");
/// ```
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SessionSecret(pub [u8; 16]);

impl SessionSecret {
    /// A fresh secret from the operating system's random source.
    ///
    /// # Panics
    ///
    /// If the operating system has no random source, which no supported system lacks.
    pub fn random() -> Self {
        use ring::rand::SecureRandom as _;
        let mut bytes = [0u8; 16];
        ring::rand::SystemRandom::new().fill(&mut bytes).expect("the OS random source works");
        SessionSecret(bytes)
    }

    /// Compares in time independent of where the secrets differ, so that answer times tell a
    /// guesser nothing.
    pub fn matches(&self, other: &SessionSecret) -> bool {
        self.0.iter().zip(other.0.iter()).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
    }
}

impl std::fmt::Debug for SessionSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionSecret(..)")
    }
}

/// A command applied through the Raft log, carrying the session and sequence number that make a
/// retry return the first answer instead of applying twice (Raft dissertation §6.3).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WriteRequest {
    /// The session the command belongs to.
    pub session: SessionId,
    /// The client's sequence number for this command, starting at 1 and never reused.
    pub seq: u64,
    /// Every sequence number below this one has been answered to the client, so the cluster may
    /// forget their stored responses.
    pub acked_below: u64,
    /// What to do.
    pub command: Command,
    /// The session's secret: a write under someone else's session is refused.
    pub secret: SessionSecret,
}
