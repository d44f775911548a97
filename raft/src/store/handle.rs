//! Read access for the node layer: the state, cold data and a digest.

use std::ops::Deref;
use std::sync::{Arc, RwLockReadGuard};

use super::codec::{self, Fnv64};
use super::{cold, Hot, Shared, StoreError, CF_PAYLOAD, CF_RESULT};
use crate::config::{LogId, SnapshotMeta, StoredMembership};
use crate::fsm::{Event, StateMachine, TaskId};

/// A cheap, clonable read handle on a node's state machine and its cold data.
/// Keep one (from [`StateMachineStore::handle`](super::StateMachineStore::handle))
/// before handing the stores to openraft.
#[derive(Clone)]
pub struct StoreHandle {
    pub(crate) shared: Arc<Shared>,
}

/// Read access to the state machine, with the log id it reflects. It holds a
/// read lock that blocks `apply`: keep it for a moment, never across an
/// `.await` (it is not `Send`, so the compiler will refuse that in a task).
pub struct StateRead<'a> {
    guard: RwLockReadGuard<'a, Hot>,
}

impl Deref for StateRead<'_> {
    type Target = StateMachine;
    fn deref(&self) -> &StateMachine {
        &self.guard.sm
    }
}

impl StateRead<'_> {
    /// The last log entry this state includes.
    pub fn last_applied(&self) -> Option<LogId> {
        self.guard.last_applied
    }

    /// The last membership config this state includes.
    pub fn membership(&self) -> &StoredMembership {
        &self.guard.membership
    }
}

impl StoreHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        StoreHandle { shared }
    }

    /// Read access to the hot state (see [`StateRead`]).
    pub fn state(&self) -> StateRead<'_> {
        StateRead { guard: self.shared.read_hot() }
    }

    /// The last log entry applied to the state.
    pub fn last_applied(&self) -> Option<LogId> {
        self.shared.read_hot().last_applied
    }

    /// A task's payload. `None` for an unknown or forgotten task.
    pub fn payload(&self, task: TaskId) -> Result<Option<String>, StoreError> {
        cold::read_text(&self.shared.db, CF_PAYLOAD, task)
    }

    /// A succeeded task's result.
    pub fn result(&self, task: TaskId) -> Result<Option<String>, StoreError> {
        cold::read_text(&self.shared.db, CF_RESULT, task)
    }

    /// A task's history, oldest first (the newest `max_history_per_task`
    /// events; older ones are dropped as new ones come).
    pub fn history(&self, task: TaskId) -> Result<Vec<Event>, StoreError> {
        cold::read_history(&self.shared.db, task)
    }

    /// Up to `limit` audit records from sequence number `from` on (see
    /// `StateMachine::audit_range`), oldest first.
    pub fn audit(&self, from: u64, limit: usize) -> Result<Vec<(u64, crate::fsm::AuditRecord)>, StoreError> {
        cold::read_audit(&self.shared.db, from, limit)
    }

    /// Estimated bytes of the Raft log in RocksDB (the `log` column
    /// family's SST files and memtables), for metrics; 0 if unknown.
    pub fn log_bytes(&self) -> u64 {
        let Ok(cf) = super::cf(&self.shared.db, super::CF_LOG) else { return 0 };
        let prop = |name: &str| self.shared.db.property_int_value_cf(cf, name).ok().flatten().unwrap_or(0);
        prop("rocksdb.total-sst-files-size") + prop("rocksdb.cur-size-all-mem-tables")
    }

    /// The size of the current snapshot file (0 without one).
    pub fn snapshot_bytes(&self) -> u64 {
        self.shared.snapshots.current_bytes()
    }

    /// The meta of the current snapshot, if any (for status pages).
    pub fn snapshot_meta(&self) -> Option<SnapshotMeta> {
        self.shared.snapshots.current_meta()
    }

    /// The current snapshot file, open, with its meta: what a backup sends.
    /// The file stays readable even if a newer snapshot replaces it.
    pub fn current_snapshot(&self) -> Result<Option<(SnapshotMeta, std::fs::File)>, StoreError> {
        self.shared.snapshots.current()
    }

    /// A 64-bit FNV-1a of the hot state's bincode bytes and the last applied
    /// index. Two replicas that applied the same log have the same digest;
    /// comparing digests at the same applied index checks replication.
    /// Costs one serialization of the state: not for a hot path.
    pub fn digest(&self) -> Result<u64, StoreError> {
        Ok(self.digest_at()?.1)
    }

    /// [`StoreHandle::digest`] with the applied index it was taken at, read
    /// together (under one lock), so that two nodes' answers at the same
    /// index compare.
    pub fn digest_at(&self) -> Result<(Option<u64>, u64), StoreError> {
        let hot = self.shared.read_hot();
        Ok((hot.last_applied.map(|l| l.index), digest_of(&hot.sm, hot.last_applied)?))
    }
}

/// See [`StoreHandle::digest`].
pub fn digest_of(sm: &StateMachine, last_applied: Option<LogId>) -> Result<u64, StoreError> {
    let mut h = Fnv64::new();
    h.update(&codec::encode_state(sm)?.1);
    match last_applied {
        Some(id) => {
            h.update(&[1]);
            h.update(&id.index.to_be_bytes());
        }
        None => h.update(&[0]),
    }
    Ok(h.finish())
}
