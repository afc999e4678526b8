//! Liveness: within a bound after the heal, every client's next operation succeeds.

use std::time::Duration;

/// How long one client took, after every fault was healed, to complete an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The client.
    pub client: usize,
    /// What it does (`kv`, `lock`, ...).
    pub workload: String,
    /// From the heal to its first success; `None`: none within the probe's deadline.
    pub after_heal: Option<Duration>,
}

/// A client that did not recover within the bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck {
    /// The client.
    pub client: usize,
    /// What it does.
    pub workload: String,
    /// How long it took, if it ever succeeded.
    pub after_heal: Option<Duration>,
}

/// Every client that needed longer than `bound`.
///
/// ```
/// use distsync_torture::check::liveness::{check, Recovery};
/// use std::time::Duration;
///
/// let slow = Recovery { client: 1, workload: "kv".into(), after_heal: Some(Duration::from_secs(9)) };
/// assert_eq!(check(&[slow], Duration::from_secs(5)).len(), 1);
/// ```
pub fn check(recoveries: &[Recovery], bound: Duration) -> Vec<Stuck> {
    recoveries
        .iter()
        .filter(|recovery| recovery.after_heal.is_none_or(|took| took > bound))
        .map(|recovery| Stuck {
            client: recovery.client,
            workload: recovery.workload.clone(),
            after_heal: recovery.after_heal,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_past_the_bound_or_never_back_are_stuck() {
        let recovery = |client, after: Option<u64>| Recovery {
            client,
            workload: "kv".into(),
            after_heal: after.map(Duration::from_millis),
        };
        let all = [recovery(1, Some(100)), recovery(2, Some(5_000)), recovery(3, Some(5_001)), recovery(4, None)];
        let stuck: Vec<usize> = check(&all, Duration::from_secs(5)).iter().map(|s| s.client).collect();
        assert_eq!(stuck, vec![3, 4]);
    }
}
