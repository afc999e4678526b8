//! The replicated register's checks; its commands and queries are variants of [`Command`] and
//! [`Query`] (`KvPut`, `KvDelete`, `KvGet`).

use super::{KEY_BYTES_MAX, VALUE_BYTES_MAX};
use crate::error::ServerError;

#[allow(unused_imports)] // for intra-doc links
use super::{Command, Query};

/// Checks a register key against [`KEY_BYTES_MAX`].
///
/// # Errors
///
/// [`ServerError::InvalidArgument`] for an empty or oversized key.
pub fn validate_key(key: &[u8]) -> Result<(), ServerError> {
    if key.is_empty() {
        return Err(ServerError::InvalidArgument { reason: "key is empty".into() });
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(ServerError::InvalidArgument {
            reason: format!("key is {} bytes, the maximum is {KEY_BYTES_MAX}", key.len()),
        });
    }
    Ok(())
}

/// Checks a value (of the register or the cache) against [`VALUE_BYTES_MAX`].
pub(crate) fn validate_value(value: &[u8]) -> Result<(), ServerError> {
    if value.len() > VALUE_BYTES_MAX {
        return Err(ServerError::InvalidArgument {
            reason: format!("value is {} bytes, the maximum is {VALUE_BYTES_MAX}", value.len()),
        });
    }
    Ok(())
}
