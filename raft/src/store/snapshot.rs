//! Snapshot files: building, publishing, receiving and installing them.
//!
//! A node keeps one snapshot, `<data_dir>/snapshots/current.snap`. A new one
//! is written to a `*.tmp` file, fsynced, then renamed over it (and the
//! directory fsynced), so a crash leaves either the old snapshot or the new
//! one, never half of one. Leftover `*.tmp` files are removed on open.
//!
//! # Format (integers big-endian)
//!
//! ```text
//! "SKEINSNP"  u32 version (3: format 1, 0.1.0; 4: format 2 and later)
//! u64 len, bincode SnapshotMeta
//! u64 len, the replicated core in the shapes of `crate::format` (indexes are rebuilt on load)
//! u64 header checksum: FNV-1a of every byte above
//! records: u8 tag (1 payload, 2 result, 3 history, 4 audit: format 3), u32 len, key, u32 len, value
//! u8 0xFF, u64 number of records
//! u64 file checksum: FNV-1a of every byte above
//! ```
//!
//! A restart reads only the header (its checksum guards the hot state), so
//! restart time does not grow with the cold data. Installing a received
//! snapshot verifies the whole file before changing anything. Nothing is
//! decoded before its checksum has been checked, so a damaged file is an
//! error, never a panic or a giant allocation.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, PoisonError};

use openraft::{ErrorSubject, ErrorVerb, RaftSnapshotBuilder, Snapshot};
use rocksdb::{ReadOptions, SnapshotWithThreadMode, WriteBatch, WriteOptions, DB};
use tokio::sync::oneshot;

use super::codec::{self, HashReader, HashWriter};
use super::cold::{self, key_len_of, ColdCfs, TAG_AUDIT, TAG_HISTORY, TAG_PAYLOAD, TAG_RESULT};
use super::{cf, Shared, StoreError, CF_META, META_INSTALLING};
use crate::config::{LogId, SnapshotMeta, StorageError, TypeConfig};
use crate::fsm::{NewEpoch, StateMachine};

const MAGIC: &[u8; 8] = b"SKEINSNP";
// File versions (the state's encoding: `codec::encode_state`):
// 2: the core gained the plan catalog (before any release).
// 3: the core gained the set of removed nodes: release 0.1.0, format 1.
// 4: version 3, then the cluster's format (u32): format 2.
// 5: version 4, then the auth section (`format::v3::Auth`), and audit
//    records (tag 4): format 3 and later.
const TAG_END: u8 = 0xFF;
const CURRENT: &str = "current.snap";
/// Cold records are written back into RocksDB in batches of about this size.
const RESTORE_BATCH_BYTES: usize = 8 << 20;

fn synced() -> WriteOptions {
    let mut o = WriteOptions::default();
    o.set_sync(true);
    o
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks (plain field updates and
    // file renames that return errors), so a poisoned one holds valid data.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The snapshot directory and what is known of its current snapshot.
pub(crate) struct SnapshotDir {
    dir: PathBuf,
    /// The meta of `current.snap`; the lock also orders renames over it.
    current: Mutex<Option<SnapshotMeta>>,
    /// Makes temp-file names and snapshot ids unique within the process.
    seq: AtomicU64,
    /// Temp files handed to openraft by `begin_receiving_snapshot`.
    receiving: Mutex<Vec<Receiving>>,
}

struct Receiving {
    path: PathBuf,
    identity: Option<FileIdentity>,
}

/// Which file a handle refers to, so that `install_snapshot` can tell its own
/// receiving temp file (renamed into place) from any other (copied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdentity {
    dev: u64,
    ino: u64,
}

#[cfg(unix)]
fn identity(file: &File) -> Option<FileIdentity> {
    use std::os::unix::fs::MetadataExt;
    file.metadata().ok().map(|m| FileIdentity { dev: m.dev(), ino: m.ino() })
}

#[cfg(not(unix))]
fn identity(_: &File) -> Option<FileIdentity> {
    None
}

fn io_err(context: impl std::fmt::Display, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let context = format!("{context} {}", path.display());
    move |e| StoreError::io(context, e)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("syncing", dir))
}

impl SnapshotDir {
    /// Opens the directory: removes leftovers, loads the current snapshot's
    /// header, and finishes an install a crash cut short.
    pub(crate) fn open(dir: PathBuf, db: &DB) -> Result<(Self, Option<(SnapshotMeta, StateMachine)>), StoreError> {
        for entry in fs::read_dir(&dir).map_err(io_err("listing", &dir))? {
            let path = entry.map_err(io_err("listing", &dir))?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                fs::remove_file(&path).map_err(io_err("removing", &path))?;
            }
        }

        let installing = db.get_cf(cf(db, CF_META)?, META_INSTALLING)?.is_some();
        let path = dir.join(CURRENT);
        let loaded = match File::open(&path) {
            Ok(mut file) => {
                if installing {
                    verify(&mut file, &path)?;
                }
                let mut r = SnapReader::new(file, path.clone())?;
                let (meta, sm) = r.read_header()?;
                if installing {
                    tracing::warn!(snapshot = %meta, "an install was interrupted; rewriting the cold data from the snapshot");
                    restore_cold(db, &mut r)?;
                }
                Some((meta, sm))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if installing {
                    let mut batch = WriteBatch::default();
                    cold::clear_all(&mut batch, &ColdCfs::new(db)?);
                    batch.delete_cf(cf(db, CF_META)?, META_INSTALLING);
                    db.write_opt(batch, &synced())?;
                }
                None
            }
            Err(e) => return Err(StoreError::io(format!("opening {}", path.display()), e)),
        };

        let current = loaded.as_ref().map(|(meta, _)| meta.clone());
        let snapshots = SnapshotDir {
            dir,
            current: Mutex::new(current),
            seq: AtomicU64::new(0),
            receiving: Mutex::new(Vec::new()),
        };
        Ok((snapshots, loaded))
    }

    fn current_path(&self) -> PathBuf {
        self.dir.join(CURRENT)
    }

    fn temp_path(&self, kind: &str) -> PathBuf {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("{kind}-{}-{n}.tmp", std::process::id()))
    }

    /// A snapshot id unique to this build: openraft uses it to tell transfers
    /// apart, even of two snapshots with the same last log id.
    fn next_id(&self, last: Option<LogId>) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let millis = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        match last {
            Some(l) => format!("{l}-{millis}-{n}"),
            None => format!("none-{millis}-{n}"),
        }
    }

    /// Makes `temp` the current snapshot. Unless `force`d (an install, which
    /// openraft orders), a snapshot older than the current one is dropped
    /// instead: a slow build must not replace a newer installed snapshot that
    /// the log may already be purged up to. Returns whether it was published.
    pub(crate) fn publish(&self, temp: &Path, meta: &SnapshotMeta, force: bool) -> Result<bool, StoreError> {
        let mut current = lock(&self.current);
        if !force && current.as_ref().is_some_and(|c| c.last_log_id > meta.last_log_id) {
            fs::remove_file(temp).map_err(io_err("removing", temp))?;
            return Ok(false);
        }
        let dest = self.current_path();
        fs::rename(temp, &dest).map_err(io_err("renaming into place", &dest))?;
        sync_dir(&self.dir)?;
        *current = Some(meta.clone());
        Ok(true)
    }

    /// The current snapshot file's size (0 without one).
    pub(crate) fn current_bytes(&self) -> u64 {
        fs::metadata(self.current_path()).map_or(0, |m| m.len())
    }

    /// The current snapshot's meta.
    pub(crate) fn current_meta(&self) -> Option<SnapshotMeta> {
        lock(&self.current).clone()
    }

    /// The current snapshot's meta and a fresh read handle on it.
    pub(crate) fn current(&self) -> Result<Option<(SnapshotMeta, File)>, StoreError> {
        let current = lock(&self.current);
        let Some(meta) = current.as_ref() else { return Ok(None) };
        let path = self.current_path();
        let file = File::open(&path).map_err(io_err("opening", &path))?;
        Ok(Some((meta.clone(), file)))
    }

    /// A new empty temp file for openraft to stream a snapshot into.
    pub(crate) fn new_receiving(&self) -> Result<File, StoreError> {
        let path = self.temp_path("recv");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err("creating", &path))?;
        lock(&self.receiving).push(Receiving { path, identity: identity(&file) });
        Ok(file)
    }

    /// The path of `file` if it is one of our receiving temp files.
    fn take_receiving(&self, file: &File) -> Option<PathBuf> {
        let id = identity(file)?;
        let mut receiving = lock(&self.receiving);
        let i = receiving.iter().position(|r| r.identity == Some(id))?;
        Some(receiving.swap_remove(i).path)
    }

    /// Removes the receiving temp files that were never installed (a transfer
    /// abandoned for a newer one).
    fn discard_receiving(&self) {
        for r in lock(&self.receiving).drain(..) {
            if let Err(e) = fs::remove_file(&r.path) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %r.path.display(), error = %e, "could not remove a snapshot temp file");
                }
            }
        }
    }
}

// ---------------------------------------------------------------- writing

/// Writes one snapshot file at `path` (which must not exist), fsyncs it, and
/// returns it opened at its start.
fn write_file(
    path: &Path,
    meta: &SnapshotMeta,
    (version, hot): &(u32, Vec<u8>),
    records: impl FnOnce(&mut RecordWriter<'_>) -> Result<(), StoreError>,
) -> Result<File, StoreError> {
    let file =
        OpenOptions::new().read(true).write(true).create_new(true).open(path).map_err(io_err("creating", path))?;
    let result = (|| {
        let mut w = HashWriter::new(BufWriter::with_capacity(1 << 20, file));
        let meta_bytes = codec::encode(meta)?;
        let io = (|| {
            w.write_all(MAGIC)?;
            w.write_all(&version.to_be_bytes())?;
            w.write_all(&(meta_bytes.len() as u64).to_be_bytes())?;
            w.write_all(&meta_bytes)?;
            w.write_all(&(hot.len() as u64).to_be_bytes())?;
            w.write_all(hot)?;
            let header_sum = w.hash.finish();
            w.write_all(&header_sum.to_be_bytes())
        })();
        io.map_err(|e| StoreError::io("writing a snapshot header", e))?;

        let mut rw = RecordWriter { w: &mut w, count: 0 };
        records(&mut rw)?;
        let count = rw.count;

        let io = (|| {
            w.write_all(&[TAG_END])?;
            w.write_all(&count.to_be_bytes())?;
            let sum = w.hash.finish();
            let mut buffered = w.inner;
            buffered.write_all(&sum.to_be_bytes())?;
            let mut file = buffered.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            file.seek(SeekFrom::Start(0))?;
            Ok::<_, io::Error>(file)
        })();
        io.map_err(|e| StoreError::io("finishing a snapshot", e))
    })();
    match result {
        Ok(file) => Ok(file),
        Err(e) => {
            // Best effort: the file is a temp file, removed on the next open anyway.
            let _ = fs::remove_file(path);
            Err(e)
        }
    }
}

/// Appends cold records to a snapshot file being written.
pub(crate) struct RecordWriter<'a> {
    w: &'a mut HashWriter<BufWriter<File>>,
    count: u64,
}

impl RecordWriter<'_> {
    fn record(&mut self, tag: u8, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let too_long =
            |what: &str, n: usize| StoreError::Other(format!("a cold {what} of {n} bytes is too long for a snapshot"));
        let klen = u32::try_from(key.len()).map_err(|_| too_long("key", key.len()))?;
        let vlen = u32::try_from(value.len()).map_err(|_| too_long("value", value.len()))?;
        let io = (|| {
            self.w.write_all(&[tag])?;
            self.w.write_all(&klen.to_be_bytes())?;
            self.w.write_all(key)?;
            self.w.write_all(&vlen.to_be_bytes())?;
            self.w.write_all(value)
        })();
        io.map_err(|e| StoreError::io("writing a snapshot record", e))?;
        self.count += 1;
        Ok(())
    }
}

/// Writes every cold key of the RocksDB snapshot `snap` as records.
fn write_cold(db: &DB, snap: &SnapshotWithThreadMode<'_, DB>, rw: &mut RecordWriter<'_>) -> Result<(), StoreError> {
    let cfs = ColdCfs::new(db)?;
    for (tag, cf) in [(TAG_PAYLOAD, cfs.payload), (TAG_RESULT, cfs.result), (TAG_HISTORY, cfs.history)] {
        let mut opts = ReadOptions::default();
        // A full scan: do not push the working set out of the block cache.
        opts.fill_cache(false);
        let mut it = snap.raw_iterator_cf_opt(cf, opts);
        it.seek_to_first();
        while let Some((key, value)) = it.item() {
            // The history CF also holds the audit records (16-byte keys).
            let tag = if tag == TAG_HISTORY && key.len() == 16 { TAG_AUDIT } else { tag };
            rw.record(tag, key, value)?;
            it.next();
        }
        it.status()?;
    }
    Ok(())
}

// ---------------------------------------------------------------- building

/// Builds one snapshot of the state as it was when openraft asked for the
/// builder (`get_snapshot_builder` fixes it: the hot state as bytes, the cold
/// CFs as a RocksDB snapshot), while `apply` goes on.
pub struct SnapshotBuilder {
    pending: Option<Result<Pending, StoreError>>,
}

struct Pending {
    meta: SnapshotMeta,
    /// Tells the writer thread to go on; dropping it tells it to stop.
    go: mpsc::Sender<()>,
    done: oneshot::Receiver<Result<File, StoreError>>,
}

impl SnapshotBuilder {
    /// Captures the state for a snapshot. Called by `get_snapshot_builder`,
    /// which openraft runs on the state-machine task between two applies; it
    /// then runs `build_snapshot` in another task while applying goes on.
    /// So everything is fixed here: the hot state is serialized to bytes, and
    /// a writer thread takes a RocksDB snapshot of the cold CFs before this
    /// returns. The cold records in the file then match the hot state exactly.
    ///
    /// The thread exists because a RocksDB snapshot borrows the database and
    /// so cannot live in the builder, which openraft moves into a task.
    pub(crate) async fn capture(shared: Arc<Shared>) -> Self {
        SnapshotBuilder { pending: Some(Self::start(shared).await) }
    }

    async fn start(shared: Arc<Shared>) -> Result<Pending, StoreError> {
        let (meta, hot) = {
            let hot = shared.read_hot();
            let meta = SnapshotMeta {
                last_log_id: hot.last_applied,
                last_membership: hot.membership.clone(),
                snapshot_id: shared.snapshots.next_id(hot.last_applied),
            };
            (meta, codec::encode_state(&hot.sm)?)
        };

        let (taken_tx, taken_rx) = oneshot::channel::<()>();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = oneshot::channel();
        let thread_meta = meta.clone();
        std::thread::Builder::new()
            .name("skein-snapshot".into())
            .spawn(move || {
                let result = {
                    let snap = shared.db.snapshot();
                    let _ = taken_tx.send(());
                    if go_rx.recv().is_err() {
                        return; // the builder was dropped unused
                    }
                    write_built(&shared, &snap, &thread_meta, &hot)
                };
                // Release the database before answering, so that whoever
                // waits for this snapshot can close and reopen the store.
                drop(shared);
                let _ = done_tx.send(result);
            })
            .map_err(|e| StoreError::io("starting the snapshot thread", e))?;
        taken_rx.await.map_err(|_| StoreError::Other("the snapshot thread stopped before taking its view".into()))?;
        Ok(Pending { meta, go: go_tx, done: done_rx })
    }
}

/// The writer thread's work: the file, the WAL sync, the publication.
fn write_built(
    shared: &Shared,
    snap: &SnapshotWithThreadMode<'_, DB>,
    meta: &SnapshotMeta,
    hot: &(u32, Vec<u8>),
) -> Result<File, StoreError> {
    let tmp = shared.snapshots.temp_path("build");
    let file = write_file(&tmp, meta, hot, |rw| write_cold(&shared.db, snap, rw))?;
    // Cold data up to this snapshot was written without sync. Once the
    // snapshot is published openraft may purge the log it came from, and a
    // restart does not reload cold data from the snapshot file, so the WAL
    // that holds it must be on disk first.
    shared.db.flush_wal(true)?;
    if !shared.snapshots.publish(&tmp, meta, false)? {
        tracing::info!(snapshot = %meta, "a newer snapshot was installed meanwhile; this one is not kept");
    }
    Ok(file)
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let to_storage = |e: StoreError| e.into_storage(ErrorSubject::Snapshot(None), ErrorVerb::Write);
        let pending = self
            .pending
            .take()
            .unwrap_or_else(|| Err(StoreError::Other("build_snapshot called twice on one builder".into())))
            .map_err(to_storage)?;
        let signature = pending.meta.signature();
        let to_storage =
            |e: StoreError| e.into_storage(ErrorSubject::Snapshot(Some(signature.clone())), ErrorVerb::Write);
        pending.go.send(()).map_err(|_| to_storage(StoreError::Other("the snapshot thread is gone".into())))?;
        let file = pending
            .done
            .await
            .map_err(|_| to_storage(StoreError::Other("the snapshot thread stopped without an answer".into())))?
            .map_err(to_storage)?;
        tracing::info!(snapshot = %pending.meta, "built a snapshot");
        Ok(Snapshot { meta: pending.meta, snapshot: Box::new(tokio::fs::File::from_std(file)) })
    }
}

// ---------------------------------------------------------------- reading

/// Checks a whole file against its trailing checksum.
fn verify(file: &mut File, path: &Path) -> Result<(), StoreError> {
    let corrupt = |reason: &str| StoreError::CorruptSnapshot { path: path.to_path_buf(), reason: reason.into() };
    let len = file.metadata().map_err(io_err("reading", path))?.len();
    if len < 8 {
        return Err(corrupt("shorter than its checksum"));
    }
    file.seek(SeekFrom::Start(0)).map_err(io_err("reading", path))?;
    let mut hasher = HashWriter::new(io::sink());
    let copied = io::copy(&mut (&mut *file).take(len - 8), &mut hasher).map_err(io_err("reading", path))?;
    let mut sum = [0u8; 8];
    file.read_exact(&mut sum).map_err(io_err("reading", path))?;
    if copied != len - 8 || u64::from_be_bytes(sum) != hasher.hash.finish() {
        return Err(corrupt("checksum mismatch"));
    }
    file.seek(SeekFrom::Start(0)).map_err(io_err("reading", path))?;
    Ok(())
}

/// Reads a snapshot file front to back, checking bounds and checksums.
struct SnapReader {
    r: HashReader<BufReader<File>>,
    pos: u64,
    len: u64,
    path: PathBuf,
}

impl SnapReader {
    /// `file` must be at its start.
    fn new(file: File, path: PathBuf) -> Result<Self, StoreError> {
        let len = file.metadata().map_err(io_err("reading", &path))?.len();
        Ok(SnapReader { r: HashReader::new(BufReader::with_capacity(1 << 20, file)), pos: 0, len, path })
    }

    fn corrupt(&self, reason: impl Into<String>) -> StoreError {
        StoreError::CorruptSnapshot { path: self.path.clone(), reason: reason.into() }
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), StoreError> {
        if buf.len() as u64 > self.len - self.pos {
            return Err(self.corrupt(format!("truncated at byte {}", self.pos)));
        }
        self.r.read_exact(buf).map_err(io_err("reading", &self.path))?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn u8(&mut self) -> Result<u8, StoreError> {
        let mut b = [0u8; 1];
        self.read_exact(&mut b)?;
        Ok(b[0])
    }

    fn u32(&mut self) -> Result<u32, StoreError> {
        let mut b = [0u8; 4];
        self.read_exact(&mut b)?;
        Ok(u32::from_be_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, StoreError> {
        let mut b = [0u8; 8];
        self.read_exact(&mut b)?;
        Ok(u64::from_be_bytes(b))
    }

    /// `n` bytes into `buf`, after checking that the file has them (so a
    /// damaged length is an error, not an allocation of that size).
    fn bytes_into(&mut self, n: u64, buf: &mut Vec<u8>) -> Result<(), StoreError> {
        if n > self.len - self.pos {
            return Err(self.corrupt(format!("a length of {n} bytes at byte {} runs past the end", self.pos)));
        }
        buf.clear();
        buf.resize(n as usize, 0);
        self.read_exact(buf)
    }

    /// The meta and the hot state, after checking the header checksum.
    fn read_header(&mut self) -> Result<(SnapshotMeta, StateMachine), StoreError> {
        let mut magic = [0u8; 8];
        self.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(self.corrupt("not a skein snapshot"));
        }
        let version = self.u32()?;
        if !crate::format::SNAPSHOT_VERSIONS.contains(&version) {
            return Err(self.corrupt(codec::unreadable_snapshot_version(version)));
        }
        let mut meta_bytes = Vec::new();
        let n = self.u64()?;
        self.bytes_into(n, &mut meta_bytes)?;
        let mut hot_bytes = Vec::new();
        let n = self.u64()?;
        self.bytes_into(n, &mut hot_bytes)?;
        let expected = self.r.hash.finish();
        if self.u64()? != expected {
            return Err(self.corrupt("header checksum mismatch"));
        }
        let meta: SnapshotMeta = codec::decode(&meta_bytes).map_err(|e| self.corrupt(format!("meta: {e}")))?;
        let sm = codec::decode_state(version, &hot_bytes).map_err(|e| self.corrupt(format!("state: {e}")))?;
        Ok((meta, sm))
    }

    /// Calls `f` for each cold record, then checks the record count, the
    /// file checksum and that nothing follows.
    fn for_each_record(
        &mut self,
        mut f: impl FnMut(u8, &[u8], &[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let (mut key, mut value) = (Vec::new(), Vec::new());
        let mut count = 0u64;
        loop {
            let tag = self.u8()?;
            if tag == TAG_END {
                break;
            }
            let Some(key_len) = key_len_of(tag) else {
                return Err(self.corrupt(format!("unknown record tag {tag} at byte {}", self.pos - 1)));
            };
            let n = self.u32()?;
            if n as usize != key_len {
                return Err(self.corrupt(format!("a key of {n} bytes for tag {tag}")));
            }
            self.bytes_into(u64::from(n), &mut key)?;
            let n = self.u32()?;
            self.bytes_into(u64::from(n), &mut value)?;
            f(tag, &key, &value)?;
            count += 1;
        }
        if self.u64()? != count {
            return Err(self.corrupt("record count mismatch"));
        }
        let expected = self.r.hash.finish();
        if self.u64()? != expected {
            return Err(self.corrupt("checksum mismatch"));
        }
        if self.pos != self.len {
            return Err(self.corrupt("bytes after the end"));
        }
        Ok(())
    }
}

/// Replaces every cold key with the snapshot's records, then clears the
/// `installing` marker in the final, synced write (a sync of the WAL covers
/// the unsynced batches before it).
fn restore_cold(db: &DB, r: &mut SnapReader) -> Result<(), StoreError> {
    let cfs = ColdCfs::new(db)?;
    let mut batch = WriteBatch::default();
    // Range deletions first: the puts after them in the same or later
    // batches have higher sequence numbers and stay visible.
    cold::clear_all(&mut batch, &cfs);
    r.for_each_record(|tag, key, value| {
        let Some(cf) = cfs.by_tag(tag) else {
            return Err(StoreError::Corrupt(format!("unknown record tag {tag}")));
        };
        batch.put_cf(cf, key, value);
        if batch.size_in_bytes() >= RESTORE_BATCH_BYTES {
            db.write_opt(std::mem::take(&mut batch), &WriteOptions::default())?;
        }
        Ok(())
    })?;
    batch.delete_cf(cf(db, CF_META)?, META_INSTALLING);
    db.write_opt(batch, &synced())?;
    Ok(())
}

// ---------------------------------------------------------------- installing

/// Installs a received snapshot file (blocking): checks it whole, makes it
/// the current snapshot, rewrites the cold CFs from it, and returns its hot
/// state for the caller to swap in.
///
/// Crash safety: the `installing` marker is written (synced) before the first
/// change, and removed by the last synced write. Between the two, a restart
/// rebuilds the cold CFs from whatever `current.snap` is then (the old one
/// or this one), which matches the hot state it loads.
pub(crate) fn install(shared: &Shared, meta: &SnapshotMeta, file: File) -> Result<StateMachine, StoreError> {
    let snapshots = &shared.snapshots;
    let db = &shared.db;
    let (mut file, path) = match snapshots.take_receiving(&file) {
        Some(path) => (file, path),
        None => {
            // Not a file we handed out (e.g. openraft's full-snapshot API, or
            // a test passing another store's file): take a copy we own.
            let path = snapshots.temp_path("recv");
            let mut copy = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(io_err("creating", &path))?;
            let mut src = file;
            src.seek(SeekFrom::Start(0)).map_err(io_err("reading the received snapshot for", &path))?;
            io::copy(&mut src, &mut copy).map_err(io_err("copying the received snapshot to", &path))?;
            (copy, path)
        }
    };
    let result = (|| {
        file.sync_all().map_err(io_err("syncing", &path))?;
        verify(&mut file, &path)?;
        let mut r = SnapReader::new(file, path.clone())?;
        let (file_meta, sm) = r.read_header()?;
        if file_meta != *meta {
            return Err(r.corrupt(format!("its meta {file_meta} is not the one being installed, {meta}")));
        }
        db.put_cf_opt(cf(db, CF_META)?, META_INSTALLING, codec::encode(&meta.last_log_id)?, &synced())?;
        snapshots.publish(&path, meta, true)?;
        restore_cold(db, &mut r)?;
        Ok(sm)
    })();
    if result.is_err() {
        // Nothing of a refused file is kept (after publication it is gone from
        // this path, and removing fails harmlessly).
        let _ = fs::remove_file(&path);
    }
    snapshots.discard_receiving();
    result
}

// ---------------------------------------------------------------- restoring a backup

/// What [`restore`] did.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    /// The backed-up cluster's last log entry in the backup.
    pub from: Option<LogId>,
    pub tasks: usize,
    pub epoch: NewEpoch,
}

/// Makes `data_dir` (missing or empty) the start of a new cluster whose state
/// is the backup's: checks the whole backup first (nothing is created when it
/// is damaged, truncated or not a snapshot), writes its cold records into a
/// new RocksDB, moves the state to a new epoch ([`StateMachine::begin_new_epoch`]),
/// and publishes it as the directory's snapshot with no log position and no
/// membership, so that the node bootstraps a new cluster on top of it.
pub(crate) fn restore(data_dir: &Path, backup: &Path) -> Result<RestoreReport, StoreError> {
    if let Ok(mut entries) = fs::read_dir(data_dir) {
        if entries.next().is_some() {
            return Err(StoreError::Other(format!(
                "refusing to restore into {}: it is not empty (a restore starts a new cluster: give it an empty \
                 data directory)",
                data_dir.display()
            )));
        }
    }
    let mut file = File::open(backup).map_err(io_err("opening the backup", backup))?;
    verify(&mut file, backup)?;
    let mut r = SnapReader::new(file, backup.to_path_buf())?;
    let (meta, mut sm) = r.read_header()?;

    let db_dir = data_dir.join("db");
    let snap_dir = data_dir.join("snapshots");
    for dir in [&db_dir, &snap_dir] {
        fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    }
    let db = super::open_db(&db_dir)?;
    restore_cold(&db, &mut r)?;
    let mut sink = cold::BatchSink::new(&db)?;
    let epoch = sm.begin_new_epoch(&mut sink);
    sink.finish()?;

    let restored = SnapshotMeta {
        last_log_id: None,
        last_membership: Default::default(),
        snapshot_id: format!("restored-epoch-{}", epoch.epoch),
    };
    let tmp = snap_dir.join("restore.tmp");
    let view = db.snapshot();
    write_file(&tmp, &restored, &codec::encode_state(&sm)?, |rw| write_cold(&db, &view, rw))?;
    drop(view);
    db.flush_wal(true)?;
    let dest = snap_dir.join(CURRENT);
    fs::rename(&tmp, &dest).map_err(io_err("renaming into place", &dest))?;
    sync_dir(&snap_dir)?;
    Ok(RestoreReport { from: meta.last_log_id, tasks: sm.task_count(), epoch })
}
