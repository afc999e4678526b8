//! Checksums of what a node stores, so that a bit flipped on disk, a torn or truncated file is
//! found when it is read, never served.
//!
//! A log entry is stored as its 8-byte xxh3 checksum, then its encoding ([`seal`],
//! [`unseal`]). A snapshot file starts with a header ([`SnapshotHeader`]): a magic that names
//! the format and its version, the body's length and the body's checksum.

use xxhash_rust::xxh3::xxh3_64;

/// Bytes of the checksum in front of a sealed record.
pub const SEAL_BYTES: usize = 8;

/// Why stored bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Corrupt {
    /// Fewer bytes than the format needs.
    #[error("truncated: {found} bytes where at least {needed} are needed")]
    Truncated {
        /// Bytes present.
        found: u64,
        /// Bytes needed.
        needed: u64,
    },
    /// The checksum does not match the bytes.
    #[error("checksum mismatch: stored {stored:#018x}, computed {computed:#018x}")]
    Checksum {
        /// The checksum stored with the bytes.
        stored: u64,
        /// The checksum of the bytes found.
        computed: u64,
    },
    /// Not this format, or another version of it.
    #[error("not a distsync snapshot of format {expected:?} (it starts with {found:?})")]
    Format {
        /// The magic this build reads.
        expected: String,
        /// What the file starts with.
        found: String,
    },
}

/// `payload` with its checksum in front.
pub fn seal(payload: &[u8]) -> Vec<u8> {
    let mut sealed = Vec::with_capacity(SEAL_BYTES + payload.len());
    sealed.extend_from_slice(&xxh3_64(payload).to_le_bytes());
    sealed.extend_from_slice(payload);
    sealed
}

/// The payload of a sealed record, if its checksum matches.
///
/// # Errors
///
/// [`Corrupt::Truncated`] or [`Corrupt::Checksum`].
pub fn unseal(sealed: &[u8]) -> Result<&[u8], Corrupt> {
    let Some((stored, payload)) = sealed.split_first_chunk::<SEAL_BYTES>() else {
        return Err(Corrupt::Truncated { found: sealed.len() as u64, needed: SEAL_BYTES as u64 });
    };
    let stored = u64::from_le_bytes(*stored);
    let computed = xxh3_64(payload);
    if stored != computed {
        return Err(Corrupt::Checksum { stored, computed });
    }
    Ok(payload)
}

/// The start of a snapshot file: magic (format and version), body length, body checksum.
pub struct SnapshotHeader;

impl SnapshotHeader {
    /// Names the format; the last two digits are its version.
    pub const MAGIC: &'static [u8; 8] = b"DSSNAP01";
    /// Bytes of the header.
    pub const BYTES: usize = 8 + 8 + 8;

    /// `body` framed as a snapshot file.
    pub fn frame(body: &[u8]) -> Vec<u8> {
        let mut file = Vec::with_capacity(Self::BYTES + body.len());
        file.extend_from_slice(Self::MAGIC);
        file.extend_from_slice(&(body.len() as u64).to_le_bytes());
        file.extend_from_slice(&xxh3_64(body).to_le_bytes());
        file.extend_from_slice(body);
        file
    }

    /// The body of a snapshot file, if it is whole and unchanged.
    ///
    /// # Errors
    ///
    /// [`Corrupt`]: another format, a truncated file or a checksum mismatch.
    pub fn body(file: &[u8]) -> Result<&[u8], Corrupt> {
        let truncated = |needed: u64| Corrupt::Truncated { found: file.len() as u64, needed };
        let magic = file.get(..8).ok_or_else(|| truncated(Self::BYTES as u64))?;
        if magic != Self::MAGIC {
            return Err(Corrupt::Format {
                expected: String::from_utf8_lossy(Self::MAGIC).into_owned(),
                found: String::from_utf8_lossy(magic).into_owned(),
            });
        }
        let header = file.get(..Self::BYTES).ok_or_else(|| truncated(Self::BYTES as u64))?;
        let length = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
        let stored = u64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
        let needed = (Self::BYTES as u64).saturating_add(length);
        if (file.len() as u64) < needed {
            return Err(truncated(needed));
        }
        let body = &file[Self::BYTES..];
        let body = &body[..length as usize];
        let computed = xxh3_64(body);
        if stored != computed {
            return Err(Corrupt::Checksum { stored, computed });
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_record_opens_and_any_flipped_bit_is_caught() {
        let payload = b"an entry of the raft log".to_vec();
        let sealed = seal(&payload);
        assert_eq!(unseal(&sealed), Ok(payload.as_slice()));
        for bit in 0..sealed.len() * 8 {
            let mut flipped = sealed.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(matches!(unseal(&flipped), Err(Corrupt::Checksum { .. })), "bit {bit}");
        }
        assert!(matches!(unseal(&sealed[..5]), Err(Corrupt::Truncated { .. })));
    }

    #[test]
    fn a_snapshot_file_is_refused_when_truncated_flipped_or_foreign() {
        let body = vec![7u8; 1000];
        let file = SnapshotHeader::frame(&body);
        assert_eq!(SnapshotHeader::body(&file), Ok(body.as_slice()));
        for cut in [0, 4, 20, 500, file.len() - 1] {
            assert!(matches!(SnapshotHeader::body(&file[..cut]), Err(Corrupt::Truncated { .. })), "cut at {cut}");
        }
        let mut flipped = file.clone();
        flipped[600] ^= 0x10;
        assert!(matches!(SnapshotHeader::body(&flipped), Err(Corrupt::Checksum { .. })));
        let mut foreign = file;
        foreign[..8].copy_from_slice(b"DSSNAP00");
        assert!(matches!(SnapshotHeader::body(&foreign), Err(Corrupt::Format { .. })));
    }
}
