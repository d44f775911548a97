//! The cold part of the state machine in RocksDB: payloads, results and
//! history, which `apply` writes and scheduling never reads.

use rocksdb::{ColumnFamily, Direction, IteratorMode, WriteBatch, WriteOptions, DB};

use super::codec::{self, audit_key, event_key, task_key, AUDIT_PREFIX, KEY_END};
use super::{cf, StoreError, CF_HISTORY, CF_PAYLOAD, CF_RESULT};
use crate::fsm::{AuditRecord, ColdSink, Event, TaskId};

/// A batch that has grown past this is written before `apply` goes on, so
/// that applying many large entries at once does not hold them all in memory.
const MAX_BATCH_BYTES: usize = 32 << 20;

/// Above this many events, forgetting a task deletes its history with one
/// range tombstone instead of a point delete per event. Point deletes are the
/// common case on purpose: garbage collection forgets tasks by the thousand,
/// and thousands of range tombstones slow every later read of the CF.
const RANGE_DELETE_ABOVE: u32 = 128;

/// The three cold column families.
#[derive(Clone, Copy)]
pub(crate) struct ColdCfs<'a> {
    pub(crate) payload: &'a ColumnFamily,
    pub(crate) result: &'a ColumnFamily,
    pub(crate) history: &'a ColumnFamily,
}

impl<'a> ColdCfs<'a> {
    pub(crate) fn new(db: &'a DB) -> Result<Self, StoreError> {
        Ok(ColdCfs { payload: cf(db, CF_PAYLOAD)?, result: cf(db, CF_RESULT)?, history: cf(db, CF_HISTORY)? })
    }

    /// The CF a snapshot record tag names (see [`super::snapshot`]).
    pub(crate) fn by_tag(&self, tag: u8) -> Option<&'a ColumnFamily> {
        match tag {
            TAG_PAYLOAD => Some(self.payload),
            TAG_RESULT => Some(self.result),
            TAG_HISTORY | TAG_AUDIT => Some(self.history),
            _ => None,
        }
    }
}

/// Snapshot record tags, one per cold CF.
pub(crate) const TAG_PAYLOAD: u8 = 1;
pub(crate) const TAG_RESULT: u8 = 2;
pub(crate) const TAG_HISTORY: u8 = 3;
/// Format 3: audit records (kept in the history CF, see [`codec::AUDIT_PREFIX`]).
pub(crate) const TAG_AUDIT: u8 = 4;

/// The key length each tag's records must have.
pub(crate) fn key_len_of(tag: u8) -> Option<usize> {
    match tag {
        TAG_PAYLOAD | TAG_RESULT => Some(8),
        TAG_HISTORY => Some(12),
        TAG_AUDIT => Some(16),
        _ => None,
    }
}

/// A [`ColdSink`] that collects `apply`'s cold writes into RocksDB write
/// batches. Written without sync: the Raft log is the durable source and a
/// replay rewrites identical values (see the module docs of [`super`]).
pub(crate) struct BatchSink<'a> {
    db: &'a DB,
    cfs: ColdCfs<'a>,
    batch: WriteBatch,
    /// `ColdSink` cannot fail; the first encoding error waits here for
    /// [`BatchSink::flush_if_large`] or [`BatchSink::finish`] to report it.
    error: Option<StoreError>,
}

impl<'a> BatchSink<'a> {
    pub(crate) fn new(db: &'a DB) -> Result<Self, StoreError> {
        Ok(BatchSink { db, cfs: ColdCfs::new(db)?, batch: WriteBatch::default(), error: None })
    }

    /// Writes the batch if it has grown large; call between entries.
    pub(crate) fn flush_if_large(&mut self) -> Result<(), StoreError> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if self.batch.size_in_bytes() >= MAX_BATCH_BYTES {
            let batch = std::mem::take(&mut self.batch);
            self.db.write_opt(batch, &WriteOptions::default())?;
        }
        Ok(())
    }

    /// Writes what is left.
    pub(crate) fn finish(mut self) -> Result<(), StoreError> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if !self.batch.is_empty() {
            self.db.write_opt(self.batch, &WriteOptions::default())?;
        }
        Ok(())
    }
}

impl ColdSink for BatchSink<'_> {
    fn put_payload(&mut self, task: TaskId, payload: &str) {
        self.batch.put_cf(self.cfs.payload, task_key(task), payload.as_bytes());
    }

    fn put_result(&mut self, task: TaskId, result: &str) {
        self.batch.put_cf(self.cfs.result, task_key(task), result.as_bytes());
    }

    fn put_event(&mut self, task: TaskId, seq: u32, event: &Event) {
        match codec::encode_event(event) {
            Ok(bytes) => self.batch.put_cf(self.cfs.history, event_key(task, seq), bytes),
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
    }

    fn delete_event(&mut self, task: TaskId, seq: u32) {
        self.batch.delete_cf(self.cfs.history, event_key(task, seq));
    }

    fn forget_task(&mut self, task: TaskId, history_len: u32) {
        self.batch.delete_cf(self.cfs.payload, task_key(task));
        self.batch.delete_cf(self.cfs.result, task_key(task));
        if history_len <= RANGE_DELETE_ABOVE {
            for seq in 0..history_len {
                self.batch.delete_cf(self.cfs.history, event_key(task, seq));
            }
        } else {
            // Every key of the task, whatever its history length says.
            let start = task_key(task);
            let mut end = [0xFFu8; 13];
            end[..8].copy_from_slice(&start);
            self.batch.delete_range_cf(self.cfs.history, &start[..], &end[..]);
        }
    }

    fn put_audit(&mut self, seq: u64, record: &AuditRecord) {
        match codec::encode_audit(record) {
            Ok(bytes) => self.batch.put_cf(self.cfs.history, audit_key(seq), bytes),
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
    }

    fn delete_audit(&mut self, from: u64, to: u64) {
        self.batch.delete_range_cf(self.cfs.history, audit_key(from), audit_key(to));
    }
}

/// Up to `limit` audit records from sequence number `from` on, in order.
pub(crate) fn read_audit(db: &DB, from: u64, limit: usize) -> Result<Vec<(u64, AuditRecord)>, StoreError> {
    let start = audit_key(from);
    let mut out = Vec::new();
    for item in db.iterator_cf(cf(db, CF_HISTORY)?, IteratorMode::From(&start, Direction::Forward)) {
        let (key, value) = item?;
        if out.len() >= limit || !key.starts_with(&AUDIT_PREFIX) || key.len() != 16 {
            break;
        }
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&key[8..]);
        out.push((u64::from_be_bytes(seq), codec::decode_audit(&value)?));
    }
    Ok(out)
}

/// Reads a UTF-8 value (payload or result).
pub(crate) fn read_text(db: &DB, cf_name: &'static str, task: TaskId) -> Result<Option<String>, StoreError> {
    let Some(bytes) = db.get_cf(cf(db, cf_name)?, task_key(task))? else {
        return Ok(None);
    };
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|e| StoreError::Corrupt(format!("{cf_name} of task {task} is not UTF-8: {e}")))
}

/// A task's history, oldest first.
pub(crate) fn read_history(db: &DB, task: TaskId) -> Result<Vec<Event>, StoreError> {
    let prefix = task_key(task);
    let mut out = Vec::new();
    let iter = db.iterator_cf(cf(db, CF_HISTORY)?, IteratorMode::From(&prefix, Direction::Forward));
    for item in iter {
        let (key, value) = item?;
        if !key.starts_with(&prefix) {
            break;
        }
        out.push(codec::decode_event(&value)?);
    }
    Ok(out)
}

/// Adds to `batch` the deletion of every cold key (one range tombstone per CF).
pub(crate) fn clear_all(batch: &mut WriteBatch, cfs: &ColdCfs<'_>) {
    for cf in [cfs.payload, cfs.result, cfs.history] {
        batch.delete_range_cf(cf, [].as_slice(), KEY_END.as_slice());
    }
}
