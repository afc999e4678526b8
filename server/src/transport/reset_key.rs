//! The key of a node's QUIC stateless resets, kept in its data directory.
//!
//! A node that restarts has forgotten the connections its previous process held. When a packet
//! of one arrives, it answers with a stateless reset, which the other end accepts only if its
//! token matches the one the old process announced: both are derived from this key. The
//! connection ids the node hands out carry a tag made with it too ([`KeyedConnectionIds`]):
//! quinn answers only packets whose connection id its generator recognizes (the others are
//! dropped unanswered), and its default generator takes a new random key in every process. A key that
//! survives restarts therefore lets peers and clients learn at once that their connection is
//! dead, and reconnect, instead of waiting out a timeout (RFC 9000, section 10.3). The key lives
//! in the data directory, not in the certificate: rotating the node's certificate and key (a CA
//! rotation restarts every node with new ones) keeps it too.

use std::io::ErrorKind;
use std::path::Path;
use std::sync::Arc;

use ring::rand::SecureRandom as _;

use crate::storage::durable::write_secret_atomically;

/// The key's file in the data directory.
pub const RESET_KEY_FILE: &str = "stateless-reset-key";

/// Bytes of the key (an HMAC-SHA256 key).
const KEY_BYTES: usize = 32;

/// The endpoint settings with the reset key of the data directory `data_dir`, made (random,
/// written durably, readable by the node's user only) on the first start.
///
/// # Errors
///
/// When the file cannot be read or written, or does not hold a key; the message names the file
/// and what to do.
pub fn endpoint_config(data_dir: &Path) -> anyhow::Result<quinn::EndpointConfig> {
    let path = data_dir.join(RESET_KEY_FILE);
    let key = match std::fs::read(&path) {
        Ok(key) => key,
        Err(error) if error.kind() == ErrorKind::NotFound => {
            let mut key = vec![0; KEY_BYTES];
            ring::rand::SystemRandom::new()
                .fill(&mut key)
                .map_err(|_| anyhow::anyhow!("the operating system gave no random bytes for {}", path.display()))?;
            write_secret_atomically(&path, &key)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
            key
        }
        Err(error) => anyhow::bail!("cannot read {}: {error}", path.display()),
    };
    anyhow::ensure!(
        key.len() == KEY_BYTES,
        "{} holds {} bytes, not a {KEY_BYTES}-byte key; delete it (the node makes a new one at start)",
        path.display(),
        key.len()
    );
    let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    // Its own key for the ids' tags, so that the tags say nothing of the reset key.
    let id_key = ring::hmac::sign(&reset_key, b"distsync connection ids v1");
    let id_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, id_key.as_ref());
    let mut config = quinn::EndpointConfig::new(Arc::new(reset_key));
    config.cid_generator(move || Box::new(KeyedConnectionIds { key: id_key.clone() }));
    Ok(config)
}

/// Random bytes at the start of a connection id.
const ID_NONCE_BYTES: usize = 8;
/// Bytes of the tag after them: a truncated HMAC-SHA256 of the nonce.
const ID_TAG_BYTES: usize = 8;

/// Connection ids of 16 bytes, 8 random and 8 of a keyed tag over them, so that a node recognizes
/// the ids of its earlier processes (and answers them with a reset) while nobody without the key
/// can make one it recognizes. quinn's own keyed generator has the same purpose with 3 random
/// bytes and a non-cryptographic tag: with a key kept for ever, that would be one fixed set of
/// 2^24 ids for the node's whole life, each with a fixed reset token.
struct KeyedConnectionIds {
    key: ring::hmac::Key,
}

impl KeyedConnectionIds {
    fn tag(&self, nonce: &[u8]) -> ring::hmac::Tag {
        ring::hmac::sign(&self.key, nonce)
    }
}

impl quinn::ConnectionIdGenerator for KeyedConnectionIds {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        let mut id = [0u8; ID_NONCE_BYTES + ID_TAG_BYTES];
        // The connection cannot be made without an id; a system whose random source fails
        // cannot make keys or handshakes either.
        ring::rand::SystemRandom::new()
            .fill(&mut id[..ID_NONCE_BYTES])
            .expect("the operating system's random source failed");
        let tag = self.tag(&id[..ID_NONCE_BYTES]);
        id[ID_NONCE_BYTES..].copy_from_slice(&tag.as_ref()[..ID_TAG_BYTES]);
        quinn::ConnectionId::new(&id)
    }

    fn validate(&self, id: &quinn::ConnectionId) -> Result<(), quinn_proto::InvalidCid> {
        if id.len() != ID_NONCE_BYTES + ID_TAG_BYTES {
            return Err(quinn_proto::InvalidCid);
        }
        let (nonce, tag) = id.split_at(ID_NONCE_BYTES);
        let expected = self.tag(nonce);
        // Every byte compared, without an early exit: how long a refusal takes does not say
        // how much of a probed tag was right.
        let difference = expected.as_ref()[..ID_TAG_BYTES].iter().zip(tag).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if difference == 0 {
            Ok(())
        } else {
            Err(quinn_proto::InvalidCid)
        }
    }

    fn cid_len(&self) -> usize {
        ID_NONCE_BYTES + ID_TAG_BYTES
    }

    fn cid_lifetime(&self) -> Option<std::time::Duration> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_and_kept() {
        let directory = std::env::temp_dir().join(format!("distsync-reset-key-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        endpoint_config(&directory).unwrap();
        let made = std::fs::read(directory.join(RESET_KEY_FILE)).unwrap();
        assert_eq!(made.len(), KEY_BYTES);
        endpoint_config(&directory).unwrap();
        assert_eq!(std::fs::read(directory.join(RESET_KEY_FILE)).unwrap(), made, "the same key on the next start");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(directory.join(RESET_KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "a secret, for the node's user only");
        std::fs::write(directory.join(RESET_KEY_FILE), b"short").unwrap();
        let refused = endpoint_config(&directory).unwrap_err().to_string();
        assert!(refused.contains("not a 32-byte key"), "{refused}");
        std::fs::remove_dir_all(&directory).unwrap();
    }

    #[test]
    fn connection_ids_are_recognized_by_a_generator_with_the_same_key_only() {
        use quinn::ConnectionIdGenerator as _;
        let key = |bytes: &[u8]| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, bytes);
        let mut ids = KeyedConnectionIds { key: key(b"one") };
        let (first, second) = (ids.generate_cid(), ids.generate_cid());
        assert_eq!(first.len(), 16);
        assert_ne!(first, second, "random ids");
        // A later process of the same node recognizes them; one with another key does not.
        let restarted = KeyedConnectionIds { key: key(b"one") };
        assert!(restarted.validate(&first).is_ok() && restarted.validate(&second).is_ok());
        let other = KeyedConnectionIds { key: key(b"two") };
        assert!(other.validate(&first).is_err());
        let mut forged = first.to_vec();
        forged[15] ^= 1;
        assert!(restarted.validate(&quinn::ConnectionId::new(&forged)).is_err());
        assert!(restarted.validate(&quinn::ConnectionId::new(&first[..8])).is_err(), "a short id");
    }
}
