//! How many writes one log entry takes: the proposer's entry budget. Every entry must fit one
//! AppendEntries frame, whatever the mix of writes waiting, or replication would refuse to send
//! it and nothing after it would ever commit.

use distsync::wire::{FRAME_BYTES_MAX, WRITE_BYTES_MAX};

/// Operations batched into one log entry at most. Concurrent writes share an entry, so the
/// per-entry costs (an fsync, a replication round trip) are paid once per batch.
pub const BATCH_OPS_MAX: usize = 512;

/// Bytes of operations after which a batch takes no more writes: group commit pays off long
/// before an entry is large, and smaller entries keep replication frames short.
pub const BATCH_BYTES_MAX: usize = 1024 * 1024;

/// Largest encoded operation the proposer accepts: one client write
/// ([`WRITE_BYTES_MAX`]) with what the log adds around it (identity, session fields).
/// Operations a node makes itself (cache reports and write-backs) are sized below it.
pub const OP_BYTES_MAX: usize = WRITE_BYTES_MAX + 4 * 1024;

/// Largest total of encoded operations in one entry: a batch that reached
/// [`BATCH_BYTES_MAX`] less one byte, plus one maximal operation.
pub const ENTRY_BYTES_MAX: usize = BATCH_BYTES_MAX + OP_BYTES_MAX;

/// What an AppendEntries frame holds around one entry's operations (vote, log ids, the entry's
/// time stamps, vector lengths), generously.
pub const ENTRY_ENVELOPE_BYTES: usize = 4 * 1024;

const _: () = assert!(
    ENTRY_BYTES_MAX + ENTRY_ENVELOPE_BYTES <= FRAME_BYTES_MAX,
    "one entry must always fit one replication frame"
);

/// Fills one batch: `first`, then from `next` while the batch is below [`BATCH_OPS_MAX`] and
/// [`BATCH_BYTES_MAX`]. Every operation is at most [`OP_BYTES_MAX`] (larger ones are refused
/// before they are queued), so a batch never passes [`ENTRY_BYTES_MAX`]: it takes a write only
/// while below `BATCH_BYTES_MAX`, and that write adds at most `OP_BYTES_MAX`.
pub(super) fn fill_batch<T>(first: T, bytes: impl Fn(&T) -> usize, mut next: impl FnMut() -> Option<T>) -> Vec<T> {
    let mut total = bytes(&first);
    let mut batch = vec![first];
    while batch.len() < BATCH_OPS_MAX && total < BATCH_BYTES_MAX {
        let Some(item) = next() else { break };
        let item_bytes = bytes(&item);
        debug_assert!(item_bytes <= OP_BYTES_MAX, "operations over OP_BYTES_MAX are refused before batching");
        total += item_bytes;
        batch.push(item);
    }
    debug_assert!(total <= ENTRY_BYTES_MAX);
    batch
}

#[cfg(test)]
mod tests {
    use distsync::wire::{
        encode_frame, encoded_bytes, Command, PutMessage, SessionSecret, WriteRequest, KEY_BYTES_MAX,
        QUEUE_DEDUP_ID_BYTES_MAX, QUEUE_MESSAGE_BYTES_MAX, VALUE_BYTES_MAX,
    };
    use openraft::raft::AppendEntriesRequest;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};

    use super::*;
    use crate::state::{LogCommand, Op};
    use crate::transport::protocol::PeerRequest;

    /// A client write as the log holds it.
    fn write(command: Command) -> Op {
        let write = WriteRequest {
            session: u64::MAX,
            seq: u64::MAX,
            acked_below: u64::MAX,
            command,
            secret: SessionSecret([0xff; 16]),
        };
        Op::Write { identity: "i".repeat(distsync::wire::IDENTITY_BYTES_MAX), write }
    }

    /// Writes of every shape up to their limits, drawn from a small deterministic generator.
    fn writes(seed: u64, count: usize) -> Vec<Op> {
        let mut state = seed;
        let mut random = move |below: usize| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) as usize) % below
        };
        (0..count)
            .map(|_| match random(4) {
                0 => write(Command::KvPut {
                    key: vec![b'k'; 1 + random(KEY_BYTES_MAX)],
                    value: vec![0; random(VALUE_BYTES_MAX + 1)],
                }),
                1 => write(Command::KvPut { key: vec![b'k'; KEY_BYTES_MAX], value: vec![0; VALUE_BYTES_MAX] }),
                2 => {
                    // The largest put the write limit allows, in messages of random sizes.
                    let mut command = Command::QueuePut { queue: "q".repeat(256), messages: Vec::new() };
                    loop {
                        let Command::QueuePut { messages, .. } = &mut command else { unreachable!() };
                        let body = vec![0; 1 + random(QUEUE_MESSAGE_BYTES_MAX)];
                        messages.push(PutMessage { body, dedup_id: Some("d".repeat(QUEUE_DEDUP_ID_BYTES_MAX)) });
                        if command.validate().is_err() {
                            let Command::QueuePut { messages, .. } = &mut command else { unreachable!() };
                            messages.pop();
                            break;
                        }
                    }
                    write(command)
                }
                _ => write(Command::KvDelete { key: vec![b'k'; 1 + random(64)] }),
            })
            .collect()
    }

    /// The frame replication sends for an entry of `ops`, with every field at its widest.
    fn append_frame(ops: Vec<Op>) -> Result<Vec<u8>, distsync::FrameError> {
        let log_id = LogId::new(CommittedLeaderId::new(u64::MAX, u64::MAX), u64::MAX);
        let entry =
            Entry { log_id, payload: EntryPayload::Normal(LogCommand { time_ms: u64::MAX, grace_ms: u64::MAX, ops }) };
        let request = AppendEntriesRequest {
            vote: Vote::new_committed(u64::MAX, u64::MAX),
            prev_log_id: Some(log_id),
            entries: vec![entry],
            leader_commit: Some(log_id),
        };
        encode_frame(&PeerRequest::AppendEntries(request))
    }

    #[test]
    fn no_entry_outgrows_one_replication_frame_whatever_the_mix_of_writes() {
        for seed in 0..3 {
            let mut waiting = writes(seed, 16).into_iter();
            let mut entries = 0;
            while let Some(first) = waiting.next() {
                assert!(encoded_bytes(&first) <= OP_BYTES_MAX, "a valid write fits OP_BYTES_MAX");
                let batch = fill_batch(first, encoded_bytes, || waiting.next());
                let total: usize = batch.iter().map(encoded_bytes).sum();
                assert!(total <= ENTRY_BYTES_MAX, "seed {seed}: an entry of {total} bytes");
                let frame = append_frame(batch);
                assert!(frame.is_ok(), "seed {seed}: the entry's frame was refused: {frame:?}");
                entries += 1;
            }
            assert!(entries > 1, "the mix must need several entries");
        }
    }

    #[test]
    fn a_batch_stops_at_its_byte_target_and_its_op_count() {
        let mut rest = [OP_BYTES_MAX, 10].into_iter();
        let batch = fill_batch(BATCH_BYTES_MAX - 1, |&b| b, || rest.next());
        assert_eq!(batch, vec![BATCH_BYTES_MAX - 1, OP_BYTES_MAX], "the last write may be maximal");
        assert_eq!(rest.next(), Some(10), "a full batch takes nothing more from the queue");
        assert_eq!(BATCH_BYTES_MAX - 1 + OP_BYTES_MAX, ENTRY_BYTES_MAX - 1, "which is the entry budget");
        let mut small = std::iter::repeat(1);
        assert_eq!(fill_batch(1, |&b| b, || small.next()).len(), BATCH_OPS_MAX);
    }
}
