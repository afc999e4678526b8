//! The run's report: operations per primitive by outcome, faults by kind, violations per
//! checker with the window of history that shows each, recovery after the heal; as a table or
//! as one JSON document.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use crate::check::liveness::{Recovery, Stuck};
use crate::check::lock::{Hold, LockViolation};
use crate::check::queue::QueueViolation;
use crate::check::register::{self, Operation, RegisterError};
use crate::check::sessions::AppliedTwice;
use crate::check::Outcome;
use crate::history::Stalls;
use crate::schedule::FaultKind;
use crate::workload::Primitive;

/// The checkers, in report order.
pub const CHECKERS: [&str; 8] = ["kv", "cache", "lock", "queue", "sessions", "liveness", "replicas", "crashes"];

/// Operations of the window shown for a register violation.
const WINDOW_OPERATIONS: usize = 40;

/// One violation: which checker, what, and the window of history that shows it.
#[derive(Debug, Clone)]
pub struct Violation {
    /// The checker (one of [`CHECKERS`]).
    pub checker: &'static str,
    /// What was violated.
    pub summary: String,
    /// The operations that show it, one per line.
    pub window: String,
    /// When the window starts and ends, from the run's start (for the node logs).
    pub span: Option<(Duration, Duration)>,
}

impl Violation {
    /// A register history without a linearization: the key's shortest failing prefix, its last
    /// operations shown.
    pub fn register(checker: &'static str, error: RegisterError, history: &[Operation]) -> Self {
        let key = error.key().to_vec();
        let mut on_key: Vec<Operation> = history.iter().filter(|op| op.key == key).cloned().collect();
        on_key.sort_by_key(|op| op.invoked);
        // The shortest prefix (by invocation) that already fails: its end is where the history
        // went wrong.
        let (mut low, mut high) = (1, on_key.len());
        while low < high {
            let middle = (low + high) / 2;
            if register::check_within(&on_key[..middle], Duration::from_secs(5)).is_err() {
                high = middle;
            } else {
                low = middle + 1;
            }
        }
        let shown = &on_key[high.saturating_sub(WINDOW_OPERATIONS)..high];
        let origin = shown.first().map_or_else(Instant::now, |op| op.invoked);
        let end = shown.iter().filter_map(|op| op.returned).max().unwrap_or(origin);
        let summary = match &error {
            RegisterError::NotLinearizable { operations, .. } => format!(
                "key {:?}: no linearization of its {operations} operations; the first {high} (by invocation) already have none",
                String::from_utf8_lossy(&key)
            ),
            RegisterError::Undecided { operations, .. } => format!(
                "key {:?}: the search over its {operations} operations did not finish in time (undecided, counted as a failure)",
                String::from_utf8_lossy(&key)
            ),
        };
        Violation {
            checker,
            summary,
            window: format!(
                "ms from the window's first operation (? = unknown outcome):\n{}",
                register::timeline(shown, &key, origin)
            ),
            span: Some((origin, end)).map(|(a, b)| (a.elapsed(), b.elapsed())),
        }
    }

    /// A lock violation, with the two holds.
    pub fn lock(violation: LockViolation, holds: &[Hold]) -> Self {
        let (a, b) = violation.holds();
        let describe = |hold: &Hold| {
            format!(
                "client {} {:?} {:?} token {}: requested {:?} ago, granted {:?} ago, released {:?} ago (acknowledged: {})",
                hold.client,
                hold.mode,
                hold.lock,
                hold.token,
                hold.requested.elapsed(),
                hold.granted.elapsed(),
                hold.released.map(|at| at.elapsed()),
                hold.release_acknowledged
            )
        };
        let start = holds[a].requested.min(holds[b].requested);
        let end = [holds[a].released, holds[b].released].into_iter().flatten().max().unwrap_or(start);
        Violation {
            checker: "lock",
            summary: format!("{violation:?}"),
            window: format!("{}\n{}", describe(&holds[a]), describe(&holds[b])),
            span: Some((start.elapsed(), end.elapsed())),
        }
    }

    /// A queue violation.
    pub fn queue(violation: QueueViolation) -> Self {
        let summary = match &violation {
            QueueViolation::Lost { queue, body } => {
                format!("{queue}: acknowledged put {:?} was never acked by a consumer", String::from_utf8_lossy(body))
            }
            other => format!("{other:?}"),
        };
        Violation { checker: "queue", summary, window: String::new(), span: None }
    }

    /// A put applied twice.
    pub fn sessions(violation: AppliedTwice) -> Self {
        Violation {
            checker: "sessions",
            summary: format!(
                "{}: put {:?} was applied twice (message ids {} and {})",
                violation.queue,
                String::from_utf8_lossy(&violation.body),
                violation.ids.0,
                violation.ids.1
            ),
            window: String::new(),
            span: None,
        }
    }

    /// A client that did not recover in time.
    pub fn liveness(stuck: Stuck) -> Self {
        let summary = match stuck.after_heal {
            Some(took) => {
                format!("client {} ({}) first succeeded {took:?} after the heal", stuck.client, stuck.workload)
            }
            None => format!("client {} ({}) never succeeded after the heal", stuck.client, stuck.workload),
        };
        Violation { checker: "liveness", summary, window: String::new(), span: None }
    }

    /// A node that stopped by itself without a full disk.
    pub fn crash(description: String) -> Self {
        let summary = description.lines().next().unwrap_or_default().to_string();
        Violation { checker: "crashes", summary, window: description, span: None }
    }

    /// Replicas that did not converge after the heal.
    pub fn replicas(error: String) -> Self {
        Violation { checker: "replicas", summary: error, window: String::new(), span: None }
    }
}

/// What a run did and found.
#[derive(Debug, Clone)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// The workload's duration under faults.
    pub duration: Duration,
    /// Nodes.
    pub nodes: usize,
    /// Whether each node ran in its own network namespace (else on loopback).
    pub namespaces: bool,
    /// Further arguments every node had (`--inject-bug NAME`).
    pub node_args: Vec<String>,
    /// Fault kinds drawn from.
    pub faults: Vec<FaultKind>,
    /// Primitives exercised.
    pub workloads: Vec<Primitive>,
    /// Operations per (primitive, operation) by outcome.
    pub counts: BTreeMap<(&'static str, &'static str), BTreeMap<Outcome, u64>>,
    /// Faults injected by kind.
    pub injected: BTreeMap<FaultKind, u64>,
    /// Nodes that stopped after their disk filled and were restarted.
    pub restarted_after_full_disk: u64,
    /// Bytes of writes not fsync'd that power cuts dropped.
    pub power_cut_bytes: u64,
    /// Writes the fenced resource accepted and refused.
    pub fenced: (u64, u64),
    /// Lock holders stalled past their lease, and what became of their writes and releases.
    pub stalls: Stalls,
    /// Messages the drain took after the heal.
    pub drained: u64,
    /// Each worker's recovery after the heal.
    pub recoveries: Vec<Recovery>,
    /// When the workload ended, from the start.
    pub workload_ended: Duration,
    /// What the checkers found.
    pub violations: Vec<Violation>,
    /// When the run started.
    pub started: Instant,
    /// The same moment on the wall clock (node logs are stamped with it).
    pub wall_started: SystemTime,
    /// Faults in the schedule.
    pub schedule_length: usize,
}

impl Report {
    /// Whether every checker passed.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// The slowest recovery after the heal.
    pub fn slowest_recovery(&self) -> Option<Duration> {
        self.recoveries.iter().filter_map(|recovery| recovery.after_heal).max()
    }

    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        let names = |items: Vec<&str>| items.join(",");
        format!(
            "distsync-torture --seed {} --duration {} --nodes {} --network {} --faults {} --workload {}",
            self.seed,
            self.duration.as_secs(),
            self.nodes,
            self.network(),
            names(self.faults.iter().map(|kind| kind.name()).collect()),
            names(self.workloads.iter().map(|primitive| primitive.name()).collect()),
        ) + &self.node_args.iter().map(|arg| format!(" {arg}")).collect::<String>()
    }

    /// `netns` or `loopback`, as `--network` names it.
    pub fn network(&self) -> &'static str {
        if self.namespaces {
            "netns"
        } else {
            "loopback"
        }
    }

    /// The report as tables.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "\n{:<8} {:<8} {:>8} {:>8} {:>8}", "primitive", "op", "ok", "failed", "unknown");
        for ((primitive, operation), outcomes) in &self.counts {
            let of = |outcome| outcomes.get(&outcome).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "{primitive:<9} {operation:<8} {:>8} {:>8} {:>8}",
                of(Outcome::Ok),
                of(Outcome::Failed),
                of(Outcome::Unknown)
            );
        }
        let _ = writeln!(
            out,
            "fenced resource: {} writes accepted, {} stale writes refused; drain after the heal: {} deliveries",
            self.fenced.0, self.fenced.1, self.drained
        );
        if self.stalls.holds > 0 {
            let _ = writeln!(
                out,
                "lock holders stalled past their lease: {} (writes then refused: {}, releases then refused: {})",
                self.stalls.holds, self.stalls.writes_refused, self.stalls.releases_refused
            );
        }
        let _ = writeln!(out, "\n{:<10} {:>8}", "fault", "injected");
        for kind in &self.faults {
            let _ = writeln!(out, "{:<10} {:>8}", kind.name(), self.injected.get(kind).copied().unwrap_or(0));
        }
        if self.injected.contains_key(&FaultKind::Disk) {
            let _ = writeln!(out, "nodes stopped by a full disk and restarted: {}", self.restarted_after_full_disk);
        }
        if self.injected.contains_key(&FaultKind::Power) {
            let _ = writeln!(out, "writes not fsync'd that power cuts dropped: {} KiB", self.power_cut_bytes / 1024);
        }
        let _ = writeln!(out, "\n{:<10} {:>10}", "checker", "violations");
        for checker in CHECKERS {
            let count = self.violations.iter().filter(|violation| violation.checker == checker).count();
            let _ = writeln!(out, "{checker:<10} {count:>10}");
        }
        match self.slowest_recovery() {
            Some(slowest) => {
                let _ = writeln!(out, "\nrecovery after the heal: every client within {slowest:?} (slowest)");
            }
            None => {
                let _ = writeln!(out, "\nrecovery after the heal: no client succeeded");
            }
        }
        let verdict = if self.passed() { "PASSED" } else { "FAILED" };
        let _ = writeln!(out, "seed {}: {verdict}; replay: {}", self.seed, self.replay_command());
        out
    }

    /// The report as one JSON document.
    pub fn json(&self) -> Value {
        let counts: Vec<Value> = self
            .counts
            .iter()
            .map(|((primitive, operation), outcomes)| {
                let of = |outcome| outcomes.get(&outcome).copied().unwrap_or(0);
                json!({
                    "primitive": primitive, "operation": operation,
                    "ok": of(Outcome::Ok), "failed": of(Outcome::Failed), "unknown": of(Outcome::Unknown),
                })
            })
            .collect();
        let faults: BTreeMap<&str, u64> =
            self.faults.iter().map(|kind| (kind.name(), self.injected.get(kind).copied().unwrap_or(0))).collect();
        let violations_per_checker: BTreeMap<&str, usize> = CHECKERS
            .iter()
            .map(|&checker| (checker, self.violations.iter().filter(|violation| violation.checker == checker).count()))
            .collect();
        let violations: Vec<Value> = self
            .violations
            .iter()
            .map(|violation| json!({"checker": violation.checker, "summary": violation.summary, "window": violation.window}))
            .collect();
        let recoveries: Vec<Value> = self
            .recoveries
            .iter()
            .map(|recovery| {
                json!({
                    "client": recovery.client, "workload": recovery.workload,
                    "after_heal_ms": recovery.after_heal.map(|took| took.as_millis() as u64),
                })
            })
            .collect();
        json!({
            "seed": self.seed,
            "duration_s": self.duration.as_secs(),
            "nodes": self.nodes,
            "network": self.network(),
            "passed": self.passed(),
            "operations": counts,
            "fenced": {"accepted": self.fenced.0, "refused": self.fenced.1},
            "stalled_holders": {
                "holds": self.stalls.holds,
                "writes_refused": self.stalls.writes_refused,
                "releases_refused": self.stalls.releases_refused,
            },
            "drained": self.drained,
            "faults": faults,
            "restarted_after_full_disk": self.restarted_after_full_disk,
            "power_cut_bytes_lost": self.power_cut_bytes,
            "violations_per_checker": violations_per_checker,
            "violations": violations,
            "recovery": {
                "slowest_ms": self.slowest_recovery().map(|took| took.as_millis() as u64),
                "clients": recoveries,
            },
            "replay": self.replay_command(),
        })
    }

    /// Each violation with its window and, for a window with a time span, the node log lines
    /// stamped within it (±1 s), from `logs` (node id, log text).
    pub fn violations_with_logs(&self, logs: &[(u64, String)]) -> String {
        let mut out = String::new();
        for violation in &self.violations {
            let _ = writeln!(out, "\n== {} violation: {}", violation.checker, violation.summary);
            if !violation.window.is_empty() {
                let _ = writeln!(out, "{}", violation.window);
            }
            let Some((start_ago, end_ago)) = violation.span else { continue };
            // Spans were taken as "so long ago" when the violation was built: turn them into
            // wall-clock stamps, the nodes' log format (RFC 3339, UTC, sortable as text).
            let now = SystemTime::now();
            let from = stamp(now - start_ago - Duration::from_secs(1));
            let to = stamp(now - end_ago + Duration::from_secs(1));
            for (id, text) in logs {
                let lines: Vec<&str> = text
                    .lines()
                    .filter(|line| line.get(..from.len()).is_some_and(|at| at >= &from[..] && at <= &to[..]))
                    .collect();
                let _ = writeln!(out, "-- node {id} log, {from} .. {to} ({} lines, last 40):", lines.len());
                for line in &lines[lines.len().saturating_sub(40)..] {
                    let _ = writeln!(out, "{line}");
                }
            }
        }
        out
    }
}

/// `at` as `YYYY-MM-DDTHH:MM:SS.ffffff` in UTC, the prefix of tracing's timestamps.
fn stamp(at: SystemTime) -> String {
    let since = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60,
        since.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_match_the_nodes_log_format() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_micros(1_796_274_841_123_456);
        assert_eq!(stamp(at), "2026-12-03T05:14:01.123456");
        assert_eq!(stamp(SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00.000000");
    }
}
