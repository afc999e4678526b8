//! openraft's view of the state machine: applying entries, building and installing snapshots.
//!
//! The state machine lives in memory; durability comes from the log plus the latest snapshot,
//! which is written to a file (with a checksummed header, see [`SnapshotHeader`]), fsync'd and
//! renamed into place before it is used. After a restart
//! the state is the snapshot's, and openraft re-applies the committed log after it.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{BasicNode, EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError, StoredMembership};
use serde::{Deserialize, Serialize};

use super::checksum::SnapshotHeader;
use super::durable::write_atomically;
use super::purge_floor::PurgeFloor;
use crate::cache::near_cache::NearCache;
use crate::raft::{ApplyResults, Entry, LogId, StorageError, TypeConfig};
use crate::state::StateMachine;
use distsync::SessionId;

const SNAPSHOT_FILE: &str = "snapshot.bin";

/// The applied state, shared between openraft (writes) and the RPC handlers (reads).
#[derive(Default, Clone)]
pub struct Applied {
    /// Last applied log id.
    pub last_applied: Option<LogId>,
    /// Last applied membership.
    pub membership: StoredMembership<u64, BasicNode>,
    /// The replicated state.
    pub machine: StateMachine,
}

/// What a snapshot file holds.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<u64, BasicNode>,
    data: Vec<u8>,
}

/// The serialized part of [`Applied`] inside a snapshot.
#[derive(Serialize, Deserialize)]
struct SnapshotData {
    machine: StateMachine,
}

/// Wakes the requests a node holds open on behalf of a session (a lock wait, a session watch)
/// when applied entries touch that session, instead of waking every waiter on every entry.
#[derive(Default)]
pub struct SessionSignals {
    signals: Mutex<HashMap<SessionId, Weak<tokio::sync::Notify>>>,
    /// Entries left after the last sweep of dropped signals.
    swept: AtomicUsize,
}

/// Below this many entries, dropped signals are not swept (they are few).
const SIGNALS_SWEEP_MIN: usize = 1024;

impl SessionSignals {
    /// The signal of `session`: it fires after an applied entry touched the session's locks or
    /// ended the session, and after a snapshot was installed.
    pub fn subscribe(&self, session: SessionId) -> Arc<tokio::sync::Notify> {
        let mut signals = self.signals.lock().expect("signals lock");
        if let Some(signal) = signals.get(&session).and_then(Weak::upgrade) {
            return signal;
        }
        // Signals nobody holds any more are dropped when the map has doubled since the last
        // sweep, so that sessions that were waited on once and never touched again (they closed
        // on another node, say) do not pile up: amortized constant time per subscription.
        let live_at_sweep = signals.len();
        if live_at_sweep >= SIGNALS_SWEEP_MIN && live_at_sweep >= 2 * self.swept.load(Ordering::Relaxed) {
            signals.retain(|_, signal| signal.strong_count() > 0);
            self.swept.store(signals.len(), Ordering::Relaxed);
        }
        let signal = Arc::new(tokio::sync::Notify::new());
        signals.insert(session, Arc::downgrade(&signal));
        signal
    }

    /// Signals kept, held or not (for tests).
    pub fn len(&self) -> usize {
        self.signals.lock().expect("signals lock").len()
    }

    /// Whether no signal is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn notify(&self, sessions: &[SessionId]) {
        if sessions.is_empty() {
            return;
        }
        let mut signals = self.signals.lock().expect("signals lock");
        for session in sessions {
            match signals.get(session).map(Weak::upgrade) {
                Some(Some(signal)) => signal.notify_waiters(),
                Some(None) => {
                    signals.remove(session);
                }
                None => {}
            }
        }
    }

    fn notify_all(&self) {
        let mut signals = self.signals.lock().expect("signals lock");
        signals.retain(|_, signal| match signal.upgrade() {
            Some(signal) => {
                signal.notify_waiters();
                true
            }
            None => false,
        });
    }
}

/// A handle to the state machine; clones share it.
#[derive(Clone)]
pub struct StateMachineStore {
    applied: Arc<RwLock<Applied>>,
    signals: Arc<SessionSignals>,
    /// The applied index, for readers waiting to catch up with a read index.
    applied_index: Arc<tokio::sync::watch::Sender<u64>>,
    /// This node's cache: applied writes invalidate its older copies.
    near_cache: Arc<NearCache>,
    snapshot: Arc<Mutex<Option<SnapshotFile>>>,
    directory: PathBuf,
    /// Raised to each snapshot's index once it is durable: how far the log may purge.
    purge_floor: PurgeFloor,
    /// Held while a snapshot is written: one writer of the snapshot file at a time.
    persisting: Arc<Mutex<()>>,
}

impl StateMachineStore {
    /// Opens the store in `directory`, restoring the latest snapshot if there is one.
    ///
    /// # Errors
    ///
    /// When the directory cannot be created or the snapshot is corrupt.
    pub fn open(directory: &Path, near_cache: Arc<NearCache>) -> anyhow::Result<Self> {
        std::fs::create_dir_all(directory)?;
        let path = directory.join(SNAPSHOT_FILE);
        let mut applied = Applied::default();
        let snapshot = match std::fs::read(&path) {
            Ok(bytes) => {
                let corrupt =
                    |e: &dyn std::fmt::Display| anyhow::anyhow!("snapshot {} is corrupt: {e}", path.display());
                let body = SnapshotHeader::body(&bytes).map_err(|e| corrupt(&e))?;
                let file: SnapshotFile = postcard::from_bytes(body).map_err(|e| corrupt(&e))?;
                let data: SnapshotData = postcard::from_bytes(&file.data).map_err(|e| corrupt(&e))?;
                applied.last_applied = file.meta.last_log_id;
                applied.membership = file.meta.last_membership.clone();
                applied.machine = data.machine;
                applied.machine.check_invariants();
                Some(file)
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => anyhow::bail!("cannot read snapshot {}: {error}", path.display()),
        };
        let applied_index = applied.last_applied.map_or(0, |log_id| log_id.index);
        let purge_floor = PurgeFloor::default();
        if let Some(log_id) = snapshot.as_ref().and_then(|file| file.meta.last_log_id) {
            purge_floor.raise(log_id);
        }
        Ok(Self {
            applied: Arc::new(RwLock::new(applied)),
            signals: Arc::default(),
            applied_index: Arc::new(tokio::sync::watch::channel(applied_index).0),
            near_cache,
            snapshot: Arc::new(Mutex::new(snapshot)),
            directory: directory.to_path_buf(),
            purge_floor,
            persisting: Arc::default(),
        })
    }

    /// How far the log may purge: the index of the latest durable snapshot (give it to
    /// [`super::log_store::LogStore::open_with_floor`]).
    pub fn purge_floor(&self) -> PurgeFloor {
        self.purge_floor.clone()
    }

    /// A copy of the applied state, taken under the read lock for as long as copying its items
    /// takes: the register's keys and values, queue bodies and pending cache values are
    /// reference-counted ([`crate::state::shared`]), shared with the live state rather than
    /// copied. For a snapshot or a digest, computed off the lock.
    pub fn applied_copy(&self) -> Applied {
        let started = std::time::Instant::now();
        let copy = self.applied().clone();
        tracing::debug!(elapsed = ?started.elapsed(), "copied the applied state");
        copy
    }

    /// Read access to the applied state.
    pub fn applied(&self) -> std::sync::RwLockReadGuard<'_, Applied> {
        self.applied.read().expect("state machine lock")
    }

    /// Waits until entries up to `index` are applied here, at most `timeout`; false on timeout.
    pub async fn wait_applied(&self, index: u64, timeout: std::time::Duration) -> bool {
        let mut applied = self.applied_index.subscribe();
        tokio::time::timeout(timeout, applied.wait_for(|applied| *applied >= index)).await.is_ok_and(|r| r.is_ok())
    }

    /// Fires whenever entries are applied (carrying the applied index).
    pub fn applied_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied_index.subscribe()
    }

    /// Signals per session, fired as entries are applied.
    pub fn signals(&self) -> &SessionSignals {
        &self.signals
    }

    /// Persists `file` (off the async workers: a large snapshot blocks) and makes it the current
    /// snapshot.
    async fn keep(&self, file: SnapshotFile) -> Result<(), StorageError> {
        let signature = file.meta.signature();
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.persist_if_newer(file))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(signature.clone()), &AnyMessage(e.to_string())))?
            .map_err(|e| StorageIOError::write_snapshot(Some(signature), &e))?;
        Ok(())
    }

    /// Writes `file` durably and makes it the current snapshot, unless one at least as new is
    /// current already. openraft builds snapshots in a task of its own, so a build and an
    /// install from the leader can overlap: one writer at a time, and an older snapshot never
    /// replaces a newer one on disk (the log may already have purged what the newer covers).
    fn persist_if_newer(&self, file: SnapshotFile) -> std::io::Result<()> {
        let _writing = self.persisting.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.snapshot.lock().expect("snapshot lock").as_ref().and_then(|file| file.meta.last_log_id);
        let index = |log_id: Option<LogId>| log_id.map(|log_id| log_id.index);
        if current.is_some() && index(current) >= index(file.meta.last_log_id) {
            tracing::info!(snapshot = %file.meta.snapshot_id, ?current, "a newer snapshot is kept already");
            return Ok(());
        }
        self.persist(&file)?;
        if let Some(log_id) = file.meta.last_log_id {
            self.purge_floor.raise(log_id);
        }
        *self.snapshot.lock().expect("snapshot lock") = Some(file);
        Ok(())
    }

    /// Writes a snapshot durably (see [`write_atomically`]).
    fn persist(&self, file: &SnapshotFile) -> std::io::Result<()> {
        let bytes = postcard::to_stdvec(file).map_err(std::io::Error::other)?;
        write_atomically(&self.directory.join(SNAPSHOT_FILE), &SnapshotHeader::frame(&bytes))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        // The state is copied under the read lock and serialized off it: applies wait only for
        // the copy, whose cost is the state's item count (its values are shared, see
        // [`StateMachineStore::applied_copy`]), not for the serialization of all its bytes.
        let copy = self.applied_copy();
        let (meta, data) = tokio::task::spawn_blocking(move || {
            if cfg!(debug_assertions) {
                copy.machine.check_invariants();
            }
            let snapshot_id = match copy.last_applied {
                Some(log_id) => format!("{}-{}", log_id.leader_id.term, log_id.index),
                None => "empty".to_string(),
            };
            let meta = SnapshotMeta { last_log_id: copy.last_applied, last_membership: copy.membership, snapshot_id };
            let data = postcard::to_stdvec(&SnapshotData { machine: copy.machine })?;
            Ok::<_, postcard::Error>((meta, data))
        })
        .await
        .map_err(|e| StorageIOError::read_state_machine(&AnyMessage(e.to_string())))?
        .map_err(|e| StorageIOError::read_state_machine(&e))?;
        self.keep(SnapshotFile { meta: meta.clone(), data: data.clone() }).await?;
        tracing::info!(snapshot = %meta.snapshot_id, bytes = data.len(), "snapshot written");
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership<u64, BasicNode>), StorageError> {
        let applied = self.applied.read().expect("state machine lock");
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ApplyResults>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut applied = self.applied.write().expect("state machine lock");
        let mut results = Vec::new();
        for entry in entries {
            let index = entry.log_id.index;
            applied.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Normal(command) => {
                    results.push(applied.machine.apply(index, entry.log_id.leader_id.term, &command));
                }
                EntryPayload::Membership(membership) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                    applied.machine.apply_empty(index);
                    results.push(Vec::new());
                }
                EntryPayload::Blank => {
                    applied.machine.apply_empty(index);
                    results.push(Vec::new());
                }
            }
        }
        let touched = applied.machine.take_touched_sessions();
        let cache_changes = applied.machine.take_cache_changes();
        let index = applied.last_applied.map_or(0, |log_id| log_id.index);
        drop(applied);
        // Readers compare versions with the directory, so invalidating after the lock is
        // released is safe: this only frees the values and counts.
        for (key, version) in cache_changes {
            self.near_cache.invalidate(&key, version);
        }
        self.applied_index.send_replace(index);
        self.signals.notify(&touched);
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let data: SnapshotData =
            postcard::from_bytes(&bytes).map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        data.machine.check_invariants();
        self.keep(SnapshotFile { meta: meta.clone(), data: bytes }).await?;
        {
            let mut applied = self.applied.write().expect("state machine lock");
            applied.last_applied = meta.last_log_id;
            applied.membership = meta.last_membership.clone();
            applied.machine = data.machine;
        }
        // Nothing in this node's cache can be proven current against the new state.
        self.near_cache.clear();
        self.applied_index.send_replace(meta.last_log_id.map_or(0, |log_id| log_id.index));
        self.signals.notify_all();
        // tests/tests/follower_catchup.rs looks for this line.
        tracing::info!(snapshot = %meta.snapshot_id, "snapshot installed from the leader");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let snapshot = self.snapshot.lock().expect("snapshot lock");
        Ok(snapshot
            .as_ref()
            .map(|file| Snapshot { meta: file.meta.clone(), snapshot: Box::new(Cursor::new(file.data.clone())) }))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct AnyMessage(String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_nobody_holds_are_swept_as_the_map_grows() {
        let signals = SessionSignals::default();
        // A hundred thousand sessions each waited on once, their waits over.
        for session in 0..100_000 {
            drop(signals.subscribe(session));
        }
        assert!(signals.len() <= 2 * SIGNALS_SWEEP_MIN, "{} signals kept", signals.len());
        // Held ones stay, and are the same signal for the same session.
        let held: Vec<_> = (200_000..203_000).map(|session| signals.subscribe(session)).collect();
        for session in 0..100_000 {
            drop(signals.subscribe(session + 300_000));
        }
        assert!(signals.len() <= 2 * (held.len() + SIGNALS_SWEEP_MIN), "{} signals kept", signals.len());
        assert!(Arc::ptr_eq(&held[0], &signals.subscribe(200_000)));
    }

    #[test]
    fn a_snapshot_round_trips_and_the_digest_streams_the_same_bytes() {
        let mut machine = StateMachine::default();
        let op = crate::state::Op::NameCluster { id: [9; 16] };
        machine.apply(1, 1, &crate::state::LogCommand { time_ms: 5, grace_ms: 0, ops: vec![op] });
        let encoded = postcard::to_stdvec(&SnapshotData { machine: machine.clone() }).unwrap();
        let restored: SnapshotData = postcard::from_bytes(&encoded).unwrap();
        assert_eq!(restored.machine, machine);
        assert_eq!(machine.digest(), distsync::wire::fnv1a(&postcard::to_stdvec(&machine).unwrap()));
    }
}
