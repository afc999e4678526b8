//! The leader lease: a leader whose AppendEntries a quorum accepted moments ago knows that no
//! other leader can exist yet, and may answer a read index without a quorum round.
//!
//! Why it holds: openraft followers refuse to vote for anyone for a whole election timeout after
//! accepting an AppendEntries; a leader refuses votes while its lease holds, and a restarted
//! node refuses them for an election timeout (see the node's peer handler). The lease lasts half
//! the shortest election timeout from the *send* time of the acknowledged requests; the other
//! half is margin for clocks and scheduling. The leader must also have applied an entry of its
//! own term, which makes every write acknowledged by earlier leaders applied here; its own
//! acknowledged writes are applied before they are acknowledged.
//!
//! Pure: the caller gathers the acks (from the peer transport) and the clock reading.

use std::time::{Duration, Instant};

use crate::raft::LogId;

/// The lease rule of one cluster.
#[derive(Debug, Clone, Copy)]
pub struct LeaderLease {
    /// How long an ack keeps the lease.
    duration: Duration,
    /// Voting members, this node included.
    members: usize,
}

impl LeaderLease {
    /// The lease of a cluster of `members` voters whose election timeout is at least
    /// `election_timeout_min`.
    pub fn new(election_timeout_min: Duration, members: usize) -> Self {
        LeaderLease { duration: election_timeout_min / 2, members }
    }

    /// The read index a leader of `term` may answer at `now` without a round trip, or `None`
    /// when it must confirm with a quorum. `acks` are the send times of the latest
    /// AppendEntries each other member accepted in `term`; `applied` gives the leader's last
    /// applied log id, asked only when the acks hold a lease (it takes the state's lock).
    pub fn read_index(
        &self,
        term: u64,
        mut acks: Vec<Instant>,
        applied: impl FnOnce() -> Option<LogId>,
        now: Instant,
    ) -> Option<u64> {
        // The other members whose acks, with this node's own vote, make a majority.
        let needed = self.members / 2;
        if acks.len() < needed {
            return None;
        }
        acks.sort_unstable_by(|a, b| b.cmp(a));
        let oldest_needed = if needed == 0 { now } else { acks[needed - 1] };
        if now.saturating_duration_since(oldest_needed) >= self.duration {
            return None;
        }
        let applied = applied()?;
        (applied.leader_id.term == term).then_some(applied.index)
    }
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;

    fn log_id(term: u64, index: u64) -> Option<LogId> {
        Some(LogId::new(CommittedLeaderId::new(term, 1), index))
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_fresh_quorum_of_acks_and_an_entry_of_this_term_give_the_applied_index() {
        let lease = LeaderLease::new(150 * MS, 3);
        let now = Instant::now() + 1000 * MS;
        assert_eq!(lease.read_index(4, vec![now - 10 * MS], || log_id(4, 17), now), Some(17));
        assert_eq!(lease.read_index(4, vec![now - 80 * MS, now - 10 * MS], || log_id(4, 17), now), Some(17));
    }

    #[test]
    fn stale_or_missing_acks_give_no_lease() {
        let lease = LeaderLease::new(150 * MS, 3);
        let now = Instant::now() + 1000 * MS;
        assert_eq!(lease.read_index(4, vec![], || log_id(4, 17), now), None);
        assert_eq!(lease.read_index(4, vec![now - 75 * MS], || log_id(4, 17), now), None, "half the timeout");
        let five = LeaderLease::new(150 * MS, 5);
        let acks = vec![now - 10 * MS, now - 100 * MS, now - 5 * MS];
        assert_eq!(five.read_index(4, acks, || log_id(4, 17), now), Some(17), "the two freshest make the quorum");
        let acks = vec![now - 10 * MS, now - 100 * MS, now - 90 * MS];
        assert_eq!(five.read_index(4, acks, || log_id(4, 17), now), None, "the second freshest is too old");
    }

    #[test]
    fn a_leader_that_applied_nothing_of_its_term_must_ask_the_quorum() {
        let lease = LeaderLease::new(150 * MS, 3);
        let now = Instant::now() + 1000 * MS;
        assert_eq!(lease.read_index(5, vec![now], || log_id(4, 17), now), None);
        assert_eq!(lease.read_index(5, vec![now], || None, now), None);
    }

    #[test]
    fn a_single_node_leads_on_its_own() {
        let lease = LeaderLease::new(150 * MS, 1);
        let now = Instant::now();
        assert_eq!(lease.read_index(2, vec![], || log_id(2, 3), now), Some(3));
    }
}
