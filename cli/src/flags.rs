//! Command-line values that need more than clap's parsing.

use std::time::Duration;

/// A command-line number of seconds as a duration; negative, NaN or huge values are refused.
pub(crate) fn seconds(value: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| anyhow::anyhow!("{flag} must be a non-negative number of seconds"))
}
