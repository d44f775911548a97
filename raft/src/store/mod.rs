//! RocksDB storage for openraft 0.9 (`storage-v2`): the Raft log, the state
//! machine, and its snapshots.
//!
//! # Layout
//!
//! One RocksDB instance per node at `<data_dir>/db`, with column families:
//!
//! | cf | key | value |
//! | --- | --- | --- |
//! | `log` | log index, u64 big-endian (byte order = log order) | bincode [`Entry`](crate::config::Entry) |
//! | `meta` | a name (`vote`, `committed`, `last_purged`, `installing`) | bincode |
//! | `payload` | task id, u64 BE | the payload, UTF-8 |
//! | `result` | task id, u64 BE | the result, UTF-8 |
//! | `history` | task id u64 BE ++ seq u32 BE | bincode [`Event`](crate::fsm::Event) |
//!
//! Snapshots are files in `<data_dir>/snapshots/`; `store/snapshot.rs` describes
//! their format and how they are published and installed.
//!
//! # Durability, and why the state machine is not synced
//!
//! The Raft log is the durable source of truth: [`LogStore::append`](openraft::storage::RaftLogStorage::append)
//! acknowledges entries only after a synced write, and so does `save_vote`.
//! The state machine's *hot* part (everything scheduling reads,
//! [`StateMachine`]) lives in memory; after a restart it comes from the newest
//! snapshot file and openraft re-applies the log after it. So
//! [`applied_state`](openraft::storage::RaftStateMachine::applied_state) after
//! a restart is the loaded snapshot's, never anything newer.
//!
//! The *cold* part (payloads, results, history) is written by `apply` into the
//! `payload`/`result`/`history` CFs without sync. The writes are idempotent
//! puts and deletes computed from the log alone, so re-applying entries after
//! a restart rewrites exactly the same values: cold data may be *ahead* of the
//! loaded hot state for a moment, never wrong once the replay is done.
//! The one thing that must not be lost is cold data older than the snapshot
//! the log was purged to; building a snapshot therefore syncs RocksDB's WAL
//! before the snapshot is published (after which openraft may purge).
//!
//! # Readers
//!
//! [`StoreHandle`] is a cheap clone that the node layer keeps: read access to
//! the hot state, the cold reads, the applied log id and a [`digest`](StoreHandle::digest)
//! that compares replicas.

mod codec;
mod cold;
mod handle;
mod log;
mod snapshot;
mod state_machine;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::{ErrorSubject, ErrorVerb, StorageIOError};
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Options, DB};

use crate::config::{LogId, StorageError, StoredMembership};
use crate::fsm::StateMachine;

pub use codec::Fnv64;
/// The decoder of every stored bincode value (log entries, meta values,
/// snapshot metas and states, history and audit records), bounded by the
/// input's length; public for the fuzz tests (`tests/fuzz_decoders.rs`).
pub use codec::{decode, decode_limit, decode_state, MAX_DECODE_INPUT};
pub use handle::{digest_of, StateRead, StoreHandle};
pub use log::LogStore;
pub use snapshot::{RestoreReport, SnapshotBuilder};
pub use state_machine::StateMachineStore;

/// Column family names.
pub(crate) const CF_LOG: &str = "log";
pub(crate) const CF_META: &str = "meta";
pub(crate) const CF_PAYLOAD: &str = "payload";
pub(crate) const CF_RESULT: &str = "result";
pub(crate) const CF_HISTORY: &str = "history";

/// Keys in the `meta` CF.
pub(crate) const META_VOTE: &[u8] = b"vote";
pub(crate) const META_COMMITTED: &[u8] = b"committed";
pub(crate) const META_LAST_PURGED: &[u8] = b"last_purged";
/// Present while a snapshot's cold records are being written into the cold
/// CFs; if it is found on open, the install was cut short and the cold CFs
/// are rebuilt from the newest snapshot file.
pub(crate) const META_INSTALLING: &[u8] = b"installing";
/// The highest stored format the directory's applied state has reached
/// (`u32`, big-endian): a build that reads less refuses the directory with
/// a clear error instead of failing on an entry it cannot decode. Added in
/// 0.2.0; 0.1.0 never reads it, and a directory without it is format 1.
pub(crate) const META_FORMAT: &[u8] = b"format";

/// Reads [`META_FORMAT`]; refuses a directory of a newer format.
fn check_dir_format(db: &DB) -> Result<u32, StoreError> {
    let Some(bytes) = db.get_cf(cf(db, CF_META)?, META_FORMAT)? else { return Ok(crate::format::FORMAT_0_1_0) };
    let bytes: [u8; 4] =
        bytes.as_slice().try_into().map_err(|_| StoreError::Corrupt("meta format: not 4 bytes".into()))?;
    let format = u32::from_be_bytes(bytes);
    if format > crate::format::LATEST {
        return Err(StoreError::Other(format!("this data directory is {}", crate::format::newer_format(format))));
    }
    Ok(format)
}

/// Records the directory's format once its state reaches a newer one.
pub(crate) fn note_dir_format(db: &DB, recorded: u32, now: u32) -> Result<(), StoreError> {
    if now > recorded {
        let mut o = rocksdb::WriteOptions::default();
        o.set_sync(true);
        db.put_cf_opt(cf(db, CF_META)?, META_FORMAT, now.to_be_bytes(), &o)?;
    }
    Ok(())
}

/// Total memtable budget across all column families. RocksDB's default
/// (64 MiB per CF, two of them each) would let five CFs take 640 MiB, more than
/// the whole node's memory budget (DESIGN.md: a million 1 KiB tasks in 512 MiB).
const DB_WRITE_BUFFER_BYTES: usize = 64 << 20;
/// Forces a flush of a CF that holds old WAL files back, so the WAL stays small.
const MAX_TOTAL_WAL_BYTES: u64 = 256 << 20;

/// An error of the storage layer outside openraft's traits (opening, reads
/// for the API). Inside the traits it becomes an [`openraft::StorageError`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb: {0}")]
    Db(#[from] rocksdb::Error),
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("encoding: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("decoding: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("corrupt snapshot {path}: {reason}")]
    CorruptSnapshot { path: PathBuf, reason: String },
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    #[error("column family {0} is missing")]
    MissingCf(&'static str),
    #[error("the state machine lock is poisoned (a panic while applying)")]
    Poisoned,
    #[error("{0}")]
    Other(String),
}

impl StoreError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        StoreError::Io { context: context.into(), source }
    }

    /// As an openraft error about `subject`, while doing `verb`.
    pub(crate) fn into_storage(self, subject: ErrorSubject<u64>, verb: ErrorVerb) -> StorageError {
        StorageIOError::new(subject, verb, &self).into()
    }
}

/// What the state-machine store, its snapshot builders and the readers share.
pub(crate) struct Shared {
    pub(crate) db: Arc<DB>,
    pub(crate) hot: RwLock<Hot>,
    pub(crate) snapshots: snapshot::SnapshotDir,
}

/// The in-memory part of the state machine, with the log position it
/// reflects. One lock, so a reader sees a state and its applied index together.
pub(crate) struct Hot {
    pub(crate) sm: StateMachine,
    pub(crate) last_applied: Option<LogId>,
    pub(crate) membership: StoredMembership,
}

impl Shared {
    /// Read access for readers and the snapshot builder. A poisoned lock means
    /// a panic inside `apply`; the Raft state-machine task is then gone and the
    /// node is stopping, so readers are given the state as it is rather than
    /// a second panic.
    pub(crate) fn read_hot(&self) -> RwLockReadGuard<'_, Hot> {
        self.hot.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Write access for `apply` and `install_snapshot`, which refuse to go on
    /// from a state a panic may have left half-changed.
    pub(crate) fn write_hot(&self) -> Result<RwLockWriteGuard<'_, Hot>, StoreError> {
        self.hot.write().map_err(|_| StoreError::Poisoned)
    }
}

/// A column family handle; every CF is created on open, so a missing one is
/// an error, never a panic.
pub(crate) fn cf<'a>(db: &'a DB, name: &'static str) -> Result<&'a ColumnFamily, StoreError> {
    db.cf_handle(name).ok_or(StoreError::MissingCf(name))
}

/// Opens (creating if needed) the node's storage under `data_dir`: the
/// RocksDB instance at `<data_dir>/db` and the snapshot directory at
/// `<data_dir>/snapshots`. Loads the newest snapshot's hot state, so the
/// returned state machine reports that snapshot's applied log id and
/// membership; openraft re-applies the log after it.
///
/// Blocking (opens RocksDB, reads a snapshot header): call it before the
/// runtime gets busy, or from `spawn_blocking`.
pub fn open(data_dir: &Path) -> Result<(LogStore, StateMachineStore), StoreError> {
    let db_dir = data_dir.join("db");
    let snap_dir = data_dir.join("snapshots");
    for dir in [&db_dir, &snap_dir] {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io(format!("creating {}", dir.display()), e))?;
    }

    let db = Arc::new(open_db(&db_dir)?);
    let recorded = check_dir_format(&db)?;
    let (snapshots, loaded) = snapshot::SnapshotDir::open(snap_dir, &db)?;
    let hot = match loaded {
        Some((meta, sm)) => Hot { sm, last_applied: meta.last_log_id, membership: meta.last_membership },
        None => Hot { sm: StateMachine::new(), last_applied: None, membership: StoredMembership::default() },
    };
    note_dir_format(&db, recorded, hot.sm.format())?;
    let shared = Arc::new(Shared { db: db.clone(), hot: RwLock::new(hot), snapshots });
    Ok((LogStore::new(db), StateMachineStore::new(shared)))
}

/// Starts a new cluster's data directory from a backup (a snapshot file made
/// by `GET /api/v1/admin/backup`): see [`snapshot::restore`]. `data_dir`
/// must be missing or empty; the backup is checked whole before anything is
/// created. The node then bootstraps a one-node cluster on it.
pub fn restore(data_dir: &Path, backup: &Path) -> Result<RestoreReport, StoreError> {
    snapshot::restore(data_dir, backup)
}

pub(crate) fn open_db(path: &Path) -> Result<DB, StoreError> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_db_write_buffer_size(DB_WRITE_BUFFER_BYTES);
    opts.set_max_total_wal_size(MAX_TOTAL_WAL_BYTES);
    opts.set_keep_log_file_num(4);

    let cf_opts = |write_buffer: usize| {
        let mut o = Options::default();
        // Payloads and results are JSON text: LZ4 is cheap and shrinks them well.
        o.set_compression_type(DBCompressionType::Lz4);
        o.set_write_buffer_size(write_buffer);
        o
    };
    let cfs = vec![
        ColumnFamilyDescriptor::new(CF_LOG, cf_opts(16 << 20)),
        ColumnFamilyDescriptor::new(CF_META, cf_opts(1 << 20)),
        ColumnFamilyDescriptor::new(CF_PAYLOAD, cf_opts(16 << 20)),
        ColumnFamilyDescriptor::new(CF_RESULT, cf_opts(8 << 20)),
        ColumnFamilyDescriptor::new(CF_HISTORY, cf_opts(8 << 20)),
    ];
    Ok(DB::open_cf_descriptors(&opts, path, cfs)?)
}

#[cfg(test)]
mod tests;
