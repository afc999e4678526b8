//! Re-applies the committed log after the latest snapshot at start, in reads bounded by bytes.
//!
//! openraft does this itself when the state machine is behind the committed index, but in
//! chunks of 64 entries, and then scans the same log again for membership in chunks of 64: with
//! 5 MiB entries that holds hundreds of MiB at once. Replaying here, before openraft starts,
//! leaves it nothing to re-apply and only the uncommitted tail to scan.

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::RaftLogReader;

use super::log_store::LogStore;
use super::state_machine_store::StateMachineStore;

/// What [`apply_committed`] re-applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Entries re-applied.
    pub entries: u64,
    /// The index the state machine had applied afterwards (0: nothing yet).
    pub applied: u64,
}

/// Applies every committed entry after the state machine's applied index to it, a bounded read
/// ([`super::log_store::LogStoreLimits::read_bytes`]) at a time.
///
/// # Errors
///
/// When an entry that the log says is committed cannot be read (a hole, or a corrupt entry).
pub async fn apply_committed(log: &mut LogStore, state: &mut StateMachineStore) -> anyhow::Result<Replayed> {
    let committed = log.read_committed().await?.map(|log_id| log_id.index);
    let (applied, _) = state.applied_state().await?;
    let mut next = applied.map_or(0, |log_id| log_id.index + 1);
    let Some(committed) = committed.filter(|&committed| committed >= next) else {
        return Ok(Replayed { entries: 0, applied: next.saturating_sub(1) });
    };
    tracing::info!(from = next, to = committed, "re-applying the committed log after the snapshot");
    let mut entries = 0;
    while next <= committed {
        let chunk = log.limited_get_log_entries(next, committed + 1).await?;
        let contiguous = chunk.iter().zip(next..).all(|(entry, index)| entry.log_id.index == index);
        anyhow::ensure!(
            !chunk.is_empty() && contiguous,
            "the Raft log lacks committed entries from index {next} (last committed: {committed})"
        );
        next += chunk.len() as u64;
        entries += chunk.len() as u64;
        state.apply(chunk).await?;
    }
    debug_assert_eq!(state.applied().last_applied.map(|log_id| log_id.index), Some(committed));
    Ok(Replayed { entries, applied: committed })
}
