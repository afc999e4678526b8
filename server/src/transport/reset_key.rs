//! The key of a node's QUIC stateless resets, kept in its data directory.
//!
//! A node that restarts has forgotten the connections its previous process held. When a packet
//! of one arrives, it answers with a stateless reset, which the other end accepts only if its
//! token matches the one the old process announced: both are derived from this key. The
//! connection ids the node hands out are derived from it too: quinn answers only packets whose
//! connection id its generator made (the others are dropped unanswered), and its default
//! generator takes a new random key in every process. A key that
//! survives restarts therefore lets peers and clients learn at once that their connection is
//! dead, and reconnect, instead of waiting out a timeout (RFC 9000, section 10.3). The key lives
//! in the data directory, not in the certificate: rotating the node's certificate and key (a CA
//! rotation restarts every node with new ones) keeps it too.

use std::io::ErrorKind;
use std::path::Path;
use std::sync::Arc;

use ring::rand::SecureRandom as _;

use crate::storage::durable::write_atomically;

/// The key's file in the data directory.
pub const RESET_KEY_FILE: &str = "stateless-reset-key";

/// Bytes of the key (an HMAC-SHA256 key).
const KEY_BYTES: usize = 32;

/// The endpoint settings with the reset key of the data directory `data_dir`, made (random,
/// written durably) on the first start.
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
            write_atomically(&path, &key).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
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
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let cid_key = ring::hmac::sign(&key, b"distsync connection ids v1");
    let cid_key = u64::from_le_bytes(cid_key.as_ref()[..8].try_into().expect("an HMAC-SHA256 tag has 32 bytes"));
    let mut config = quinn::EndpointConfig::new(Arc::new(key));
    config.cid_generator(move || Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key)));
    Ok(config)
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
        std::fs::write(directory.join(RESET_KEY_FILE), b"short").unwrap();
        let refused = endpoint_config(&directory).unwrap_err().to_string();
        assert!(refused.contains("not a 32-byte key"), "{refused}");
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
