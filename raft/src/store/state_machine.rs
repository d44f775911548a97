//! openraft's state-machine store: applies committed entries to the hot
//! [`StateMachine`] in memory and its cold writes to RocksDB, and builds,
//! installs and serves snapshots.

use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, Snapshot};

use super::cold::BatchSink;
use super::handle::StoreHandle;
use super::snapshot::{self, SnapshotBuilder};
use super::{Shared, StoreError};
use crate::config::{Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use crate::fsm::Response;

/// openraft's state machine. Readers use a [`StoreHandle`] from
/// [`StateMachineStore::handle`], taken before the store is given to openraft.
pub struct StateMachineStore {
    shared: Arc<Shared>,
}

impl StateMachineStore {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        StateMachineStore { shared }
    }

    /// A cheap, clonable read handle on this state machine.
    pub fn handle(&self) -> StoreHandle {
        StoreHandle::new(self.shared.clone())
    }

    /// Applies entries to the hot state and writes their cold data.
    ///
    /// The write lock is held until the cold batch is written, so a reader
    /// that sees a task in the state also finds its payload and history.
    /// That write is not synced (see the module docs of [`super`]) and takes
    /// microseconds, so it is done right here, with no `.await` under the lock.
    fn apply_entries(
        &self,
        entries: impl IntoIterator<Item = Entry>,
    ) -> Result<Vec<Response>, (Option<LogId>, StoreError)> {
        let mut hot = self.shared.write_hot().map_err(|e| (None, e))?;
        let format_before = hot.sm.format();
        let mut sink = BatchSink::new(&self.shared.db).map_err(|e| (None, e))?;
        let mut responses = Vec::new();
        for entry in entries {
            let log_id = entry.log_id;
            let response = match entry.payload {
                EntryPayload::Blank => Response::Done,
                EntryPayload::Normal(stamped) => hot.sm.apply(&stamped, &mut sink),
                EntryPayload::Membership(membership) => {
                    hot.membership = StoredMembership::new(Some(log_id), membership);
                    Response::Done
                }
            };
            hot.last_applied = Some(log_id);
            responses.push(response);
            sink.flush_if_large().map_err(|e| (Some(log_id), e))?;
        }
        let last = hot.last_applied;
        sink.finish().map_err(|e| (last, e))?;
        super::note_dir_format(&self.shared.db, format_before, hot.sm.format()).map_err(|e| (last, e))?;
        Ok(responses)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    /// The last applied log id and membership of the state in memory: after
    /// a restart, those of the snapshot it was loaded from.
    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let hot = self.shared.read_hot();
        Ok((hot.last_applied, hot.membership.clone()))
    }

    /// One response per entry; blank and membership entries answer
    /// [`Response::Done`].
    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        self.apply_entries(entries).map_err(|(log_id, e)| match log_id {
            Some(id) => e.into_storage(ErrorSubject::Apply(id), ErrorVerb::Write),
            None => e.into_storage(ErrorSubject::StateMachine, ErrorVerb::Write),
        })
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder::capture(self.shared.clone()).await
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let file = self
            .shared
            .snapshots
            .new_receiving()
            .map_err(|e| e.into_storage(ErrorSubject::Snapshot(None), ErrorVerb::Write))?;
        Ok(Box::new(tokio::fs::File::from_std(file)))
    }

    /// Replaces the whole state with the snapshot's: checks the file, makes
    /// it the current snapshot, rewrites the cold CFs from it, then swaps the
    /// hot state in. Readers may see the old hot state with some cold data
    /// already rewritten for the duration; a node installing a snapshot is
    /// behind anyway, and blocking its readers for the whole install would
    /// stall the threads they run on.
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let to_storage =
            |e: StoreError| e.into_storage(ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Write);
        // Waits for any write still in flight on the handle.
        let file = snapshot.into_std().await;
        let shared = self.shared.clone();
        let owned_meta = meta.clone();
        let sm = tokio::task::spawn_blocking(move || snapshot::install(&shared, &owned_meta, file))
            .await
            .map_err(|e| to_storage(StoreError::Other(format!("snapshot install task: {e}"))))?
            .map_err(to_storage)?;
        let mut hot = self.shared.write_hot().map_err(to_storage)?;
        super::note_dir_format(&self.shared.db, hot.sm.format(), sm.format()).map_err(to_storage)?;
        hot.sm = sm;
        hot.last_applied = meta.last_log_id;
        hot.membership = meta.last_membership.clone();
        drop(hot);
        tracing::info!(snapshot = %meta, "installed a snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let current = self
            .shared
            .snapshots
            .current()
            .map_err(|e| e.into_storage(ErrorSubject::Snapshot(None), ErrorVerb::Read))?;
        Ok(current.map(|(meta, file)| Snapshot { meta, snapshot: Box::new(tokio::fs::File::from_std(file)) }))
    }
}
