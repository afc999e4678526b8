//! The fault schedule: which fault, when, for how long, against which node, all drawn from the
//! seed before the run starts (a target named by role, such as "the leader", is resolved when
//! the fault is injected, and the progress line says which node that was).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::random::Random;

/// A kind of fault (`--faults`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// SIGKILL a node, restart it on the same disk after a while.
    Kill,
    /// SIGSTOP a node past the election timeout, then SIGCONT.
    Pause,
    /// Cut traffic between nodes: majority from minority, the leader from everyone, around a
    /// bridge node that still reaches both sides, or one way (a node's packets to the others
    /// are lost, theirs still reach it).
    Partition,
    /// Lose a share of the packets between nodes at random (5–40 %, every link, both ways);
    /// needs the network of namespaces.
    Loss,
    /// Slow every request between nodes by tens of milliseconds (jittered, so messages reorder),
    /// through the nodes' fault switch.
    Delay,
    /// Move one node's wall clock by seconds to a minute, forwards or back.
    Clock,
    /// SIGKILL Redis, restart it on its own files.
    Redis,
    /// SIGKILL every node at once, restart them all.
    KillAll,
    /// Fill the disk of one node (the last, whose data directory is a small filesystem of its
    /// own), then give the space back and restart it if it stopped.
    Disk,
    /// Cut the power to a minority, a majority or all of the nodes: SIGKILL them and drop every
    /// write their disks had not fsync'd, then start them again (every data directory is a
    /// power-cut filesystem; needs root).
    Power,
}

impl FaultKind {
    /// Every kind, in the order of `--faults all`.
    pub const ALL: [FaultKind; 10] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::Loss,
        FaultKind::Delay,
        FaultKind::Clock,
        FaultKind::Redis,
        FaultKind::KillAll,
        FaultKind::Disk,
        FaultKind::Power,
    ];

    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::Loss => "loss",
            FaultKind::Delay => "delay",
            FaultKind::Clock => "clock",
            FaultKind::Redis => "redis",
            FaultKind::KillAll => "kill-all",
            FaultKind::Disk => "disk",
            FaultKind::Power => "power",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FaultKind {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        FaultKind::ALL.into_iter().find(|kind| kind.name() == name).ok_or_else(|| {
            let known: Vec<&str> = FaultKind::ALL.iter().map(|kind| kind.name()).collect();
            format!("unknown fault {name:?}; known faults: {}", known.join(", "))
        })
    }
}

/// Which node a fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Whoever leads when the fault is injected.
    Leader,
    /// The n-th (modulo their number) of the nodes that do not lead then.
    Follower(usize),
}

/// How a partition divides the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The leader alone against the rest.
    IsolateLeader,
    /// A minority of `minority` nodes (the n-th rotation of the ids) against the majority.
    MinorityMajority {
        /// The rotation that picks the minority.
        rotation: usize,
    },
    /// Two halves that cannot reach each other, and one node (not leading, if it can be
    /// helped) that reaches both.
    Bridge {
        /// The rotation that picks the bridge.
        rotation: usize,
    },
    /// The fault's target loses every packet it sends to the others; theirs still reach it.
    OneWay,
}

/// Which nodes a power cut hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerScope {
    /// Fewer than half: the fault's target, and more on 5 nodes.
    Minority,
    /// More than half, the target among them.
    Majority,
    /// Every node.
    All,
}

/// One fault of the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFault {
    /// When, from the start of the workload.
    pub at: Duration,
    /// What.
    pub kind: FaultKind,
    /// How long it lasts before it is healed.
    pub hold: Duration,
    /// The node it hits (kill, pause, clock).
    pub target: Target,
    /// How a partition divides the nodes.
    pub split: Split,
    /// A clock jump, in ms (negative: back).
    pub clock_offset_ms: i64,
    /// The share of packets lost, in percent.
    pub loss_percent: u8,
    /// How long each request between nodes is held, in ms.
    pub delay_ms: u32,
    /// Which nodes a power cut hits.
    pub power: PowerScope,
}

/// Draws the schedule for a run of `duration`: faults one after another with a quiet gap
/// between them (so the cluster recovers and the workload makes progress between faults), each
/// of a kind from `kinds`, none running past the end.
pub fn draw(seed: u64, duration: Duration, kinds: &[FaultKind]) -> Vec<PlannedFault> {
    let mut random = Random::new(seed, 0);
    let mut schedule = Vec::new();
    if kinds.is_empty() {
        return schedule;
    }
    let end = duration.as_millis() as u64;
    let mut at = random.between(1_000, 2_000);
    loop {
        let kind = *random.pick(kinds);
        let hold = match kind {
            // Past the election timeout, so the others elect a leader meanwhile.
            FaultKind::Pause => random.between(1_500, 4_000),
            FaultKind::KillAll | FaultKind::Power => random.between(200, 1_500),
            _ => random.between(500, 4_000),
        };
        if at + hold > end {
            break;
        }
        let target = if random.one_in(2) { Target::Leader } else { Target::Follower(random.below(16) as usize) };
        let split = match random.below(4) {
            0 => Split::IsolateLeader,
            1 => Split::MinorityMajority { rotation: random.below(16) as usize },
            2 => Split::Bridge { rotation: random.below(16) as usize },
            _ => Split::OneWay,
        };
        let seconds = random.between(5, 60) as i64 * 1000;
        let clock_offset_ms = if random.one_in(2) { seconds } else { -seconds };
        let loss_percent = random.between(5, 40) as u8;
        let delay_ms = random.between(5, 120) as u32;
        let power = match random.below(3) {
            0 => PowerScope::Minority,
            1 => PowerScope::Majority,
            _ => PowerScope::All,
        };
        schedule.push(PlannedFault {
            at: Duration::from_millis(at),
            kind,
            hold: Duration::from_millis(hold),
            target,
            split,
            clock_offset_ms,
            loss_percent,
            delay_ms,
            power,
        });
        at += hold + random.between(1_000, 3_000);
    }
    schedule
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_draws_the_same_schedule_within_the_run() {
        let kinds = FaultKind::ALL;
        let first = draw(42, Duration::from_secs(60), &kinds);
        assert_eq!(first, draw(42, Duration::from_secs(60), &kinds));
        assert_ne!(first, draw(43, Duration::from_secs(60), &kinds));
        assert!(first.len() >= 6, "a minute holds several faults: {first:?}");
        for fault in &first {
            assert!(fault.at + fault.hold <= Duration::from_secs(60), "{fault:?} runs past the end");
        }
        for pair in first.windows(2) {
            assert!(pair[0].at + pair[0].hold < pair[1].at, "faults overlap: {pair:?}");
        }
        let only_pauses = draw(42, Duration::from_secs(60), &[FaultKind::Pause]);
        assert!(only_pauses.iter().all(|fault| fault.kind == FaultKind::Pause));
        assert!(draw(42, Duration::from_secs(60), &[]).is_empty());
    }

    #[test]
    fn fault_names_parse_back() {
        for kind in FaultKind::ALL {
            assert_eq!(kind.name().parse::<FaultKind>(), Ok(kind));
        }
        assert!("flood".parse::<FaultKind>().unwrap_err().contains("known faults: kill, pause"));
    }
}
