//! The time a leader stamps on log entries.
//!
//! Every lease, lock wait, visibility timeout and cache TTL is measured against the time in the
//! entries, so that every replica decides expiry alike. Stamping the leader's raw wall clock made
//! that time as good as the worst clock in the cluster: a leader whose clock jumped an hour ahead
//! (or a failover to one) expired every session at once, and a jump back froze every timeout
//! until the clock caught up.
//!
//! Instead, a leader continues the state's time: from the time of the last applied entry when it
//! takes office, time advances by the *monotonic* clock, which neither jumps nor stops. The wall
//! clock only steers it, slowly: each stamp may move at most [`SLEW_PER_MILLE`] ‰ of the
//! monotonic time since the previous stamp toward the wall clock. So cluster time stays close to
//! Unix time (what `since_ms`, `enqueued_ms` and the Redis expiry show) when clocks are right,
//! catches up the pause of an election, and a clock jump of any size on any node changes how fast
//! a TTL runs by at most 1 %, never more.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How fast cluster time may drift toward the leader's wall clock: at most this many
/// milliseconds per second of monotonic time (1 %).
pub const SLEW_PER_MILLE: u64 = 10;

/// The stamping state of one leader: where its term's time started and how far the wall clock
/// has steered it. Only the proposer stamps; [`LeaderClock::peek`] answers "what time is it" for
/// the idle tick without stamping.
#[derive(Debug, Default)]
pub struct LeaderClock {
    office: Option<Office>,
}

/// A term in office.
#[derive(Debug, Clone, Copy)]
struct Office {
    term: u64,
    /// The state's time when the term's first stamp was taken, in µs since the Unix epoch.
    base_us: u64,
    /// The monotonic instant of that stamp.
    started: Instant,
    /// Monotonic µs since `started` at the latest stamp.
    last_elapsed_us: u64,
    /// The correction applied so far, in µs (negative: behind the monotonic estimate).
    correction_us: i64,
    /// The latest stamp, in µs.
    last_us: u64,
}

impl LeaderClock {
    /// The time to stamp on an entry proposed now in `term`, in ms since the Unix epoch, given
    /// the time of the latest applied entry (`state_ms`), the monotonic `now` and this node's
    /// wall clock. Never below `state_ms` or an earlier stamp of the same term.
    pub fn stamp(&mut self, term: u64, state_ms: u64, now: Instant, wall_ms: u64) -> u64 {
        let office = self.office_for(term, state_ms, now, wall_ms);
        let stamp_us = office.advance(now, wall_ms, state_ms);
        stamp_us / 1000
    }

    /// What [`LeaderClock::stamp`] would answer now, without recording it.
    pub fn peek(&self, term: u64, state_ms: u64, now: Instant, wall_ms: u64) -> u64 {
        let mut clock = LeaderClock { office: self.office };
        clock.stamp(term, state_ms, now, wall_ms)
    }

    /// The office for `term`, opened now if this is its first stamp.
    fn office_for(&mut self, term: u64, state_ms: u64, now: Instant, wall_ms: u64) -> &mut Office {
        if self.office.is_none_or(|office| office.term != term) {
            // A cluster's very first entry has no time to continue: it starts from the wall clock.
            let base_ms = if state_ms == 0 { wall_ms } else { state_ms };
            self.office = Some(Office {
                term,
                base_us: base_ms.saturating_mul(1000),
                started: now,
                last_elapsed_us: 0,
                correction_us: 0,
                last_us: base_ms.saturating_mul(1000),
            });
        }
        self.office.as_mut().expect("opened above")
    }
}

impl Office {
    /// Moves the clock to `now`, steered toward `wall_ms` by at most the slew, and never behind
    /// the state's time; returns the stamp in µs.
    fn advance(&mut self, now: Instant, wall_ms: u64, state_ms: u64) -> u64 {
        let elapsed_us = micros(now.saturating_duration_since(self.started)).max(self.last_elapsed_us);
        let step_us = elapsed_us - self.last_elapsed_us;
        self.last_elapsed_us = elapsed_us;
        let estimate_us = self.base_us.saturating_add(elapsed_us).saturating_add_signed(self.correction_us);
        let wanted = i128::from(wall_ms) * 1000 - i128::from(estimate_us);
        let allowed = i128::from(step_us * SLEW_PER_MILLE / 1000);
        let correction = wanted.clamp(-allowed, allowed) as i64;
        self.correction_us = self.correction_us.saturating_add(correction);
        let stamp_us =
            estimate_us.saturating_add_signed(correction).max(state_ms.saturating_mul(1000)).max(self.last_us);
        self.last_us = stamp_us;
        stamp_us
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// This node's wall clock in ms since the Unix epoch, moved by `offset_ms` (fault injection).
pub fn wall_ms(offset_ms: i64) -> u64 {
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    wall.saturating_add_signed(offset_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_MS: u64 = 3_600_000;

    /// A leader's stamps every `step_ms` for `steps` steps, with its wall clock `skew_ms` off.
    fn run(clock: &mut LeaderClock, term: u64, state_ms: u64, start: Instant, skew_ms: i64, steps: u64) -> Vec<u64> {
        (1..=steps)
            .map(|step| {
                let now = start + Duration::from_millis(step * 10);
                let wall = (1_000_000 + step * 10).saturating_add_signed(skew_ms);
                clock.stamp(term, state_ms, now, wall)
            })
            .collect()
    }

    #[test]
    fn a_cluster_starts_at_the_wall_clock_and_follows_it_when_clocks_are_right() {
        let start = Instant::now();
        let mut clock = LeaderClock::default();
        assert_eq!(clock.stamp(1, 0, start, 1_000_000), 1_000_000);
        let stamps = run(&mut clock, 1, 1_000_000, start, 0, 100);
        assert_eq!(stamps.last(), Some(&1_001_000), "one second of monotonic time is one second");
    }

    #[test]
    fn a_jump_of_the_wall_clock_moves_time_by_at_most_the_slew() {
        for skew_ms in [HOUR_MS as i64, -(HOUR_MS as i64)] {
            let start = Instant::now();
            let mut clock = LeaderClock::default();
            clock.stamp(1, 0, start, 1_000_000);
            // Ten seconds in office with the wall clock an hour off, stamped every 10 ms.
            let stamps = run(&mut clock, 1, 1_000_000, start, skew_ms, 1000);
            let advanced = stamps.last().unwrap() - 1_000_000;
            assert!((9_900..=10_100).contains(&advanced), "skew {skew_ms}: 10 s became {advanced} ms");
            assert!(stamps.windows(2).all(|pair| pair[0] <= pair[1]), "never back");
        }
    }

    #[test]
    fn a_new_leader_continues_the_state_time_whatever_its_clock_says() {
        let start = Instant::now();
        let mut clock = LeaderClock::default();
        // The state's time is 5_000_000; the new leader's clock reads an hour later.
        let first = clock.stamp(7, 5_000_000, start, 5_000_000 + HOUR_MS);
        assert_eq!(first, 5_000_000);
        let later = clock.stamp(7, 5_000_000, start + Duration::from_secs(1), 5_001_000 + HOUR_MS);
        assert_eq!(later, 5_001_010, "one second and its 1 % slew");
        // A clock an hour behind does not take time back either.
        let mut behind = LeaderClock::default();
        let first = behind.stamp(8, 5_000_000, start, 5_000_000 - HOUR_MS);
        let later = behind.stamp(8, 5_000_000, start + Duration::from_secs(1), 5_001_000 - HOUR_MS);
        assert_eq!((first, later), (5_000_000, 5_000_990));
    }

    #[test]
    fn stamps_never_fall_behind_the_applied_state() {
        let start = Instant::now();
        let mut clock = LeaderClock::default();
        clock.stamp(2, 1_000, start, 1_000);
        // Entries of the previous term applied since: the state is ahead of this office's time.
        assert_eq!(clock.stamp(2, 9_000, start + Duration::from_millis(1), 1_001), 9_000);
        assert!(clock.stamp(2, 1_000, start + Duration::from_millis(2), 1_002) >= 9_000);
    }

    #[test]
    fn peek_does_not_stamp() {
        let start = Instant::now();
        let mut clock = LeaderClock::default();
        clock.stamp(1, 0, start, 1_000_000);
        let later = start + Duration::from_secs(1);
        assert_eq!(clock.peek(1, 1_000_000, later, 1_001_000), 1_001_000);
        assert_eq!(clock.office.unwrap().last_us, 1_000_000_000);
    }

    #[test]
    fn the_pause_of_an_election_is_caught_up_at_the_slew() {
        let start = Instant::now();
        let mut clock = LeaderClock::default();
        // The state stopped at 1_000_000 two seconds ago (an election); the wall clock is right.
        clock.stamp(3, 1_000_000, start, 1_002_000);
        let stamps = run(&mut clock, 3, 1_000_000, start, 2_000, 20_000);
        // After 200 s the 2 s gap is closed, and time then follows the wall clock.
        assert_eq!(*stamps.last().unwrap(), 1_000_000 + 200_000 + 2_000);
    }
}
