//! Fenced output: staging under a location private to the attempt, and
//! publishing it so that a stale attempt can never replace a newer result
//! and a crash never leaves a half-written target. ARCHITECTURE.md
//! ("Fenced output") states the protocol and its guarantees.
//!
//! Layout, for a target file `T` (a folder target `D/` writes `D/part-00000.<ext>`):
//!
//! ```text
//! <dir of T>/_skein/<name of T>/            the control folder C (for a folder D/: D/_skein/)
//!     attempts/<token>/<name of T>           staged output of the attempt holding lease <token>
//!     published.json                         {token, task, attempt, rows, staged, published_ms}
//!     lock                                   (local files) held while publishing
//! ```
//!
//! Readers of a folder dataset never see `_skein/` (DataFusion, Spark and
//! Hive skip `_`-prefixed entries and sub-folders).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use crate::error::MigrateError;

/// The name of a folder target's one data file.
pub const PART_NAME: &str = "part-00000";
/// The control folder's name.
pub const CONTROL_DIR: &str = "_skein";

/// Which attempt is writing: the task, its attempt number and the fencing
/// token of its lease (tokens only grow, so a later lease has a larger one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub task: u64,
    pub attempt: u32,
    pub token: u64,
}

/// What `published.json` records: the attempt whose output is the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedRecord {
    pub token: u64,
    pub task: u64,
    pub attempt: u32,
    pub rows: u64,
    /// Where the attempt staged its output (kept for object stores, whose
    /// publication is a copy; see [`publish_remote`]).
    pub staged: String,
    pub published_ms: u64,
}

// ----- local files -----------------------------------------------------------

/// The paths of a local target.
#[derive(Debug, Clone)]
pub struct LocalTarget {
    /// The file readers see.
    pub final_path: PathBuf,
    pub control: PathBuf,
}

impl LocalTarget {
    pub fn new(path: &Path, folder: bool, ext: &str) -> LocalTarget {
        if folder {
            LocalTarget { final_path: path.join(format!("{PART_NAME}.{ext}")), control: path.join(CONTROL_DIR) }
        } else {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "data".into());
            let parent = path.parent().unwrap_or(Path::new("/"));
            LocalTarget { final_path: path.to_path_buf(), control: parent.join(CONTROL_DIR).join(name) }
        }
    }

    /// Where the attempt under `token` stages its output.
    pub fn staged(&self, token: u64) -> PathBuf {
        let name = self.final_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        self.control.join("attempts").join(token.to_string()).join(name)
    }
}

/// Publishes a staged local file: under the target's lock, refuses if a
/// newer token is already published, then renames the staged file over the
/// target (atomic: readers see the old file or the new one, whole) and
/// records the token. Blocking: call it from a blocking thread.
pub fn publish_local(t: &LocalTarget, attempt: &Attempt, rows: u64) -> Result<(), MigrateError> {
    let staged = t.staged(attempt.token);
    std::fs::create_dir_all(&t.control)?;
    let lock = OpenOptions::new().create(true).truncate(false).write(true).open(t.control.join("lock"))?;
    // Held until `lock` drops; the kernel releases it if we die.
    lock.lock()?;
    let record_path = t.control.join("published.json");
    if let Some(rec) = read_json::<PublishedRecord>(&record_path)? {
        if rec.token > attempt.token {
            let _ = std::fs::remove_dir_all(staged.parent().unwrap_or(&staged));
            return Err(MigrateError::Fenced(format!(
                "a newer result (token {}, task {} attempt {}) is already published at {}",
                rec.token,
                rec.task,
                rec.attempt,
                t.final_path.display()
            )));
        }
        if rec.token == attempt.token && !staged.exists() {
            return Ok(()); // this attempt published already (a retried call)
        }
    }
    if let Some(parent) = t.final_path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::rename(&staged, &t.final_path)?;
    sync_dir(t.final_path.parent())?;
    let rec = PublishedRecord {
        token: attempt.token,
        task: attempt.task,
        attempt: attempt.attempt,
        rows,
        staged: staged.display().to_string(),
        published_ms: skein_raft::clock::now_ms(),
    };
    write_atomically(
        &record_path,
        &serde_json::to_vec_pretty(&rec).map_err(|e| MigrateError::Storage(e.to_string()))?,
    )?;
    drop(lock);
    // Garbage: this attempt's empty folder, and what older attempts left.
    remove_attempts_below(&t.control.join("attempts"), attempt.token + 1);
    Ok(())
}

/// Removes a staged attempt (fenced, or failed before publishing).
pub fn discard_local(t: &LocalTarget, token: u64) {
    let _ = std::fs::remove_dir_all(t.control.join("attempts").join(token.to_string()));
}

fn remove_attempts_below(dir: &Path, below: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let older = e.file_name().to_str().and_then(|n| n.parse::<u64>().ok()).is_some_and(|t| t < below);
        if older {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// A JSON record of the control folder, if it exists.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, MigrateError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| MigrateError::Storage(format!("{} is corrupt: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Writes `bytes` to `path` through a temporary file, fsync and rename.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), MigrateError> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    sync_dir(path.parent())?;
    Ok(())
}

pub(crate) fn sync_dir(dir: Option<&Path>) -> Result<(), MigrateError> {
    if let Some(d) = dir {
        File::open(d)?.sync_all()?;
    }
    Ok(())
}

// ----- object stores -----------------------------------------------------------

/// The keys of a target in an object store.
#[derive(Debug, Clone)]
pub struct RemoteTarget {
    pub store: Arc<dyn ObjectStore>,
    pub final_key: ObjectPath,
    pub control: ObjectPath,
}

impl RemoteTarget {
    pub fn new(store: Arc<dyn ObjectStore>, key: &ObjectPath, folder: bool, ext: &str) -> RemoteTarget {
        if folder {
            let final_key = ObjectPath::from(format!("{}/{PART_NAME}.{ext}", key.as_ref()).trim_start_matches('/'));
            let control = ObjectPath::from(format!("{}/{CONTROL_DIR}", key.as_ref()).trim_start_matches('/'));
            RemoteTarget { store, final_key, control }
        } else {
            let name = key.filename().unwrap_or("data").to_string();
            let parent: Vec<_> = key.parts().collect();
            let parent = &parent[..parent.len().saturating_sub(1)];
            let mut control = ObjectPath::from_iter(parent.iter().cloned());
            control = control.clone().join(CONTROL_DIR).join(name);
            RemoteTarget { store, final_key: key.clone(), control }
        }
    }

    pub fn staged(&self, token: u64) -> ObjectPath {
        let name = self.final_key.filename().unwrap_or("data").to_string();
        self.control.clone().join("attempts").join(token.to_string()).join(name)
    }

    fn record_key(&self) -> ObjectPath {
        self.control.clone().join("published.json")
    }
}

/// Uploads a local file to `key` (multipart, so a crash leaves no object:
/// an unfinished upload is invisible).
pub async fn upload(store: &Arc<dyn ObjectStore>, local: &Path, key: &ObjectPath) -> Result<(), MigrateError> {
    use tokio::io::AsyncWriteExt;
    let mut file = tokio::fs::File::open(local).await?;
    let mut writer = object_store::buffered::BufWriter::new(store.clone(), key.clone());
    tokio::io::copy(&mut file, &mut writer).await?;
    writer.shutdown().await?;
    Ok(())
}

/// Publishes a staged object: refuses if a newer token is recorded, copies
/// the staged object over the target key (one object: readers see the old
/// one or the new one, whole), then records the token with a conditional
/// write (compare-and-swap on the record's ETag). Losing that race to a
/// newer token means the newer one published too: its staged object is
/// copied back over ours, so the target always ends with the newest output.
pub async fn publish_remote(t: &RemoteTarget, attempt: &Attempt, rows: u64) -> Result<(), MigrateError> {
    let staged = t.staged(attempt.token);
    for _ in 0..5 {
        let (current, version) = read_remote_record(t).await?;
        if let Some(rec) = &current {
            if rec.token > attempt.token {
                let _ = t.store.delete(&staged).await;
                return Err(MigrateError::Fenced(format!(
                    "a newer result (token {}, task {} attempt {}) is already published",
                    rec.token, rec.task, rec.attempt
                )));
            }
        }
        t.store.copy(&staged, &t.final_key).await?;
        let rec = PublishedRecord {
            token: attempt.token,
            task: attempt.task,
            attempt: attempt.attempt,
            rows,
            staged: staged.to_string(),
            published_ms: skein_raft::clock::now_ms(),
        };
        let body = PutPayload::from(serde_json::to_vec_pretty(&rec).map_err(|e| MigrateError::Storage(e.to_string()))?);
        let mode = match version {
            Some(v) => PutMode::Update(v),
            None => PutMode::Create,
        };
        match t.store.put_opts(&t.record_key(), body.clone(), PutOptions { mode, ..Default::default() }).await {
            Ok(_) => {
                remove_remote_attempts_below(t, attempt.token).await;
                return Ok(());
            }
            Err(object_store::Error::Precondition { .. } | object_store::Error::AlreadyExists { .. }) => {
                // Someone published between our read and our write: look again.
                let (now, _) = read_remote_record(t).await?;
                if let Some(newer) = now.filter(|r| r.token > attempt.token) {
                    // Put the newer output back over ours.
                    t.store.copy(&ObjectPath::from(newer.staged.as_str()), &t.final_key).await?;
                    let _ = t.store.delete(&staged).await;
                    return Err(MigrateError::Fenced(format!(
                        "a newer result (token {}) was published meanwhile; it stays",
                        newer.token
                    )));
                }
            }
            Err(object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. }) => {
                // A store without conditional writes: the lease check before
                // publishing is then the only fence (see ARCHITECTURE.md).
                t.store.put(&t.record_key(), body).await?;
                remove_remote_attempts_below(t, attempt.token).await;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(MigrateError::Storage("could not record the publication after 5 tries (contention)".into()))
}

async fn read_remote_record(
    t: &RemoteTarget,
) -> Result<(Option<PublishedRecord>, Option<UpdateVersion>), MigrateError> {
    match t.store.get(&t.record_key()).await {
        Ok(r) => {
            let version = UpdateVersion { e_tag: r.meta.e_tag.clone(), version: r.meta.version.clone() };
            let bytes = r.bytes().await?;
            let rec: PublishedRecord = serde_json::from_slice(&bytes)
                .map_err(|e| MigrateError::Storage(format!("{} is corrupt: {e}", t.record_key())))?;
            Ok((Some(rec), Some(version)))
        }
        Err(object_store::Error::NotFound { .. }) => Ok((None, None)),
        Err(e) => Err(e.into()),
    }
}

/// Deletes staged objects of attempts older than `token` (never the
/// published one's, which a lost race may need).
async fn remove_remote_attempts_below(t: &RemoteTarget, token: u64) {
    let prefix = t.control.clone().join("attempts");
    let Ok(objects) = t.store.list(Some(&prefix)).try_collect::<Vec<_>>().await else { return };
    for o in objects {
        let older = o
            .location
            .prefix_match(&prefix)
            .and_then(|mut parts| parts.next())
            .and_then(|p| p.as_ref().parse::<u64>().ok())
            .is_some_and(|tok| tok < token);
        if older {
            let _ = t.store.delete(&o.location).await;
        }
    }
}

/// Removes a staged object (fenced, or failed before publishing).
pub async fn discard_remote(t: &RemoteTarget, token: u64) {
    let _ = t.store.delete(&t.staged(token)).await;
}
