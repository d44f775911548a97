//! The Raft log in RocksDB's `log` column family, and the vote and
//! committed/purged markers in `meta`.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, LogState, RaftLogReader};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};

use super::codec::{self, index_key, key_index};
use super::{cf, StoreError, CF_LOG, CF_META, META_COMMITTED, META_LAST_PURGED, META_VOTE};
use crate::config::{Entry, LogId, StorageError, TypeConfig, Vote};

/// The exclusive end of a range over every log key (all keys are 8 bytes).
const LOG_KEY_END: [u8; 9] = [0xFF; 9];

/// openraft's log store. Cloning is cheap (one `Arc`); a clone is also the
/// log reader openraft hands to its replication tasks.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
}

fn synced() -> WriteOptions {
    let mut o = WriteOptions::default();
    o.set_sync(true);
    o
}

fn logs_err(verb: ErrorVerb) -> impl FnOnce(StoreError) -> StorageError {
    move |e| e.into_storage(ErrorSubject::Logs, verb)
}

fn vote_err(verb: ErrorVerb) -> impl FnOnce(StoreError) -> StorageError {
    move |e| e.into_storage(ErrorSubject::Vote, verb)
}

impl LogStore {
    pub(crate) fn new(db: Arc<DB>) -> Self {
        LogStore { db }
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        match self.db.get_cf(cf(&self.db, CF_META)?, key)? {
            Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    fn put_meta<T: serde::Serialize>(&self, key: &[u8], value: &T, sync: bool) -> Result<(), StoreError> {
        let opts = if sync { synced() } else { WriteOptions::default() };
        self.db.put_cf_opt(cf(&self.db, CF_META)?, key, codec::encode(value)?, &opts)?;
        Ok(())
    }

    /// Appends entries durably: one write batch, fsynced before this returns.
    /// The trait's `append` acknowledges to openraft after this; it is public
    /// for the storage benchmark, which cannot build openraft's callback.
    pub async fn append_entries<I>(&self, entries: I) -> Result<(), StoreError>
    where
        I: IntoIterator<Item = Entry>,
    {
        let batch = self.batch_of(entries)?;
        // The fsync takes milliseconds: keep it off the async worker threads.
        // Awaiting it here keeps appends, truncations and purges in order.
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.write_opt(batch, &synced()))
            .await
            .map_err(|e| StoreError::Other(format!("log write task: {e}")))??;
        Ok(())
    }

    fn batch_of(&self, entries: impl IntoIterator<Item = Entry>) -> Result<WriteBatch, StoreError> {
        let log = cf(&self.db, CF_LOG)?;
        let mut batch = WriteBatch::default();
        for entry in entries {
            batch.put_cf(log, index_key(entry.log_id.index), codec::encode(&entry)?);
        }
        Ok(batch)
    }

    fn entries<RB: RangeBounds<u64>>(&self, range: RB) -> Result<Vec<Entry>, StoreError> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => match i.checked_add(1) {
                Some(i) => i,
                None => return Ok(Vec::new()),
            },
            Bound::Unbounded => 0,
        };
        // Exclusive end; `None` means no end.
        let end = match range.end_bound() {
            Bound::Included(&i) => i.checked_add(1),
            Bound::Excluded(&i) => Some(i),
            Bound::Unbounded => None,
        };
        let mut out = Vec::new();
        if end.is_some_and(|e| e <= start) {
            return Ok(out);
        }
        let key = index_key(start);
        for item in self.db.iterator_cf(cf(&self.db, CF_LOG)?, IteratorMode::From(&key, Direction::Forward)) {
            let (k, v) = item?;
            if end.is_some_and(|e| key_index(&k).is_ok_and(|i| i >= e)) {
                break;
            }
            out.push(codec::decode(&v)?);
        }
        Ok(out)
    }

    fn last_log_id(&self) -> Result<Option<LogId>, StoreError> {
        match self.db.iterator_cf(cf(&self.db, CF_LOG)?, IteratorMode::End).next() {
            Some(item) => {
                let (_, v) = item?;
                let entry: Entry = codec::decode(&v)?;
                Ok(Some(entry.log_id))
            }
            None => Ok(None),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.entries(range).map_err(logs_err(ErrorVerb::Read))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.get_meta(META_LAST_PURGED).map_err(logs_err(ErrorVerb::Read))?;
        let last_log_id = self.last_log_id().map_err(logs_err(ErrorVerb::Read))?.or(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    /// Synced: a vote must survive a crash, or a node could vote twice in a term.
    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.put_meta(META_VOTE, vote, true).map_err(vote_err(ErrorVerb::Write))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get_meta(META_VOTE).map_err(vote_err(ErrorVerb::Read))
    }

    /// Not synced: the committed index only spares a restarted node waiting
    /// for the leader before it re-applies; losing the latest value is harmless.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let res = match committed {
            Some(c) => self.put_meta(META_COMMITTED, &c, false),
            None => cf(&self.db, CF_META).and_then(|m| Ok(self.db.delete_cf(m, META_COMMITTED)?)),
        };
        res.map_err(logs_err(ErrorVerb::Write))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.get_meta(META_COMMITTED).map_err(logs_err(ErrorVerb::Read))
    }

    /// The durability promise: openraft hears that the entries are stored only
    /// once the write that holds them is fsynced.
    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        match self.append_entries(entries).await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(io::Error::other(e.to_string())));
                Err(e.into_storage(ErrorSubject::Logs, ErrorVerb::Write))
            }
        }
    }

    /// Deletes `[log_id.index, ∞)`. Synced so that a conflicting suffix,
    /// once removed, never comes back after a crash.
    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let res = (|| {
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(cf(&self.db, CF_LOG)?, &index_key(log_id.index)[..], &LOG_KEY_END[..]);
            Ok::<_, StoreError>(self.db.write_opt(batch, &synced())?)
        })();
        res.map_err(logs_err(ErrorVerb::Delete))
    }

    /// Deletes `[0, log_id.index]` and records `log_id` as the last purged,
    /// in one atomic batch.
    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let res = (|| {
            let mut batch = WriteBatch::default();
            batch.put_cf(cf(&self.db, CF_META)?, META_LAST_PURGED, codec::encode(&log_id)?);
            let end = match log_id.index.checked_add(1) {
                Some(e) => index_key(e).to_vec(),
                None => LOG_KEY_END.to_vec(),
            };
            batch.delete_range_cf(cf(&self.db, CF_LOG)?, &index_key(0)[..], &end[..]);
            Ok::<_, StoreError>(self.db.write_opt(batch, &synced())?)
        })();
        res.map_err(logs_err(ErrorVerb::Delete))
    }
}
