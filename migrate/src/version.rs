//! Versioned output: the many files of a partitioned (or `partition_by`,
//! or `max_rows_per_file`) plan, staged by each partition's task and
//! published together, as one version, by a fenced commit.
//!
//! Layout of a local folder target `/d/out/` (its control folder `C` is
//! beside it, since the target folder itself is swapped):
//!
//! ```text
//! /d/out/                                    the published version (readers list it)
//!     _manifest.json, _SUCCESS               which version it is: files, rows, token
//! /d/_skein/out/                             C
//!     runs/<generation>/part-<i>/<token>/    a partition's staged files, by the token of its attempt
//!     versions/<generation>-<token>/         a version being built (moved to /d/out/ by the swap)
//!     versions/<generation>-<token>.replaced the version it replaced, kept for readers still reading it
//!     published.json, lock                   the publication record, and its lock
//! ```
//!
//! An object-store target `s3://b/out/` keeps its control objects inside
//! it (nothing there is swapped; readers follow a pointer):
//!
//! ```text
//! out/_skein/runs/<generation>/part-<i>/<token>/...  staged files
//! out/_versions/<generation>-<token>/...              published versions (_manifest.json, _SUCCESS)
//! out/_skein/current.json                             the pointer: {version, token, generation, rows, files}
//! ```
//!
//! The staged files of a partition are found from (generation, index,
//! token) alone; only the file names inside come from the recorded output,
//! checked to stay inside. A partition attempt that lost its lease staged
//! under another token and is never read.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};
use skein_raft::fsm::policy::DataRoot;

use crate::error::MigrateError;
use crate::location::Location;
use crate::output::StagedFile;
use crate::publish::{read_json, sync_dir, write_atomically, Attempt, CONTROL_DIR};
use crate::{roots, Report};

/// What one partition's task produced: its files, staged under
/// `runs/<generation>/part-<index>/<token>/`, not yet published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionOutput {
    pub index: u32,
    /// The fencing token of the attempt that staged it.
    pub token: u64,
    pub files: Vec<StagedFile>,
    pub rows: u64,
    pub bytes: u64,
    /// The partition's slice of the primary source, when counted.
    pub source_rows: Option<u64>,
    /// One line per step.
    pub steps: Vec<String>,
    pub elapsed_ms: u64,
}

/// One partition of a version, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRef {
    pub index: u32,
    pub token: u64,
}

/// What a version is: its `_manifest.json`, a local target's
/// `published.json` and an object store's pointer `_skein/current.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Local: `<generation>-<token>`; object store: the version's URL
    /// (`s3://b/out/_versions/<generation>-<token>/`), where readers read.
    pub version: String,
    /// The commit's fencing token.
    pub token: u64,
    pub generation: u64,
    pub task: u64,
    pub attempt: u32,
    pub rows: u64,
    pub bytes: u64,
    /// Paths relative to the version's folder.
    pub files: Vec<StagedFile>,
    /// The partition outputs it was made of.
    pub parts: Vec<PartRef>,
    pub published_ms: u64,
    /// What the commit reported (a retried commit reports it again).
    pub report: Report,
}

/// Where a versioned target lives.
#[derive(Debug, Clone)]
pub enum VersionedTarget {
    Local {
        /// The folder readers list.
        target: PathBuf,
        /// `<parent>/_skein/<name>/`.
        control: PathBuf,
        /// The data root it must stay under (policy enforced).
        root: Option<DataRoot>,
    },
    Remote {
        store: Arc<dyn ObjectStore>,
        /// The target's URL, ending in `/` (for the pointer's `version`).
        url: String,
        /// The target's prefix, without a trailing slash.
        key: ObjectPath,
    },
}

impl VersionedTarget {
    /// The versioned target at `loc`, which must be a folder.
    pub fn of(loc: &Location, root: Option<DataRoot>) -> Result<VersionedTarget, MigrateError> {
        if !loc.is_folder() {
            return Err(MigrateError::Plan(format!(
                "the target {} is written as many files, published together: it must be a folder (a URL ending in /)",
                loc.display()
            )));
        }
        Ok(match loc {
            Location::Local { path, .. } => VersionedTarget::local(path, root),
            Location::Remote { store, key, .. } => {
                VersionedTarget::Remote { store: store.clone(), url: loc.display(), key: key.clone() }
            }
        })
    }

    pub fn local(target: &Path, root: Option<DataRoot>) -> VersionedTarget {
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "data".into());
        let parent = target.parent().unwrap_or(Path::new("/"));
        VersionedTarget::Local { target: target.to_path_buf(), control: parent.join(CONTROL_DIR).join(name), root }
    }

    /// What readers read, as a URL.
    pub fn display(&self) -> String {
        match self {
            VersionedTarget::Local { target, .. } => format!("file://{}/", target.display()),
            VersionedTarget::Remote { url, .. } => url.clone(),
        }
    }

    /// A partition's staged folder (local targets).
    pub fn staged_dir(control: &Path, generation: u64, index: u32, token: u64) -> PathBuf {
        control.join("runs").join(generation.to_string()).join(format!("part-{index}")).join(token.to_string())
    }

    fn remote_control(key: &ObjectPath) -> ObjectPath {
        child(key, CONTROL_DIR)
    }

    /// A partition's staged prefix (object stores).
    pub fn staged_prefix(key: &ObjectPath, generation: u64, index: u32, token: u64) -> ObjectPath {
        Self::remote_control(key)
            .join("runs")
            .join(generation.to_string())
            .join(format!("part-{index}"))
            .join(token.to_string())
    }

    /// Confines a local target's folder and control folder to the data
    /// root (right before staging into it and again before publishing).
    pub fn confine(&self) -> Result<(), MigrateError> {
        let VersionedTarget::Local { target, control, root: Some(root) } = self else { return Ok(()) };
        roots::confine(target, root, "target", false)?;
        let resolved = roots::confine(control, root, "target's control folder", true)?;
        if resolved.is_dir() {
            roots::confine_tree(control, root, "target's control folder")?;
        }
        Ok(())
    }

    /// Removes a partition's staging (failed or fenced before its output
    /// was recorded).
    pub async fn discard(&self, generation: u64, index: u32, token: u64) {
        match self {
            VersionedTarget::Local { control, .. } => {
                let _ = std::fs::remove_dir_all(Self::staged_dir(control, generation, index, token));
            }
            VersionedTarget::Remote { store, key, .. } => {
                let prefix = Self::staged_prefix(key, generation, index, token);
                delete_prefix(store, &prefix, |_| true).await;
            }
        }
    }
}

fn child(key: &ObjectPath, part: &str) -> ObjectPath {
    if key.as_ref().is_empty() {
        ObjectPath::from(part)
    } else {
        key.clone().join(part)
    }
}

/// Joins a checked relative path (`a=1/p.parquet`) to an object path.
pub(crate) fn join_rel(base: &ObjectPath, rel: &str) -> ObjectPath {
    rel.split('/').fold(base.clone(), |p, seg| p.join(seg))
}

/// A staged file's path must stay inside its folder: relative, no `.`,
/// `..` or empty segments, no hidden (`_`, `.`) segment.
fn check_rel(rel: &str) -> Result<(), MigrateError> {
    let bad = rel.is_empty()
        || rel.starts_with('/')
        || rel.contains('\\')
        || rel.split('/').any(|s| s.is_empty() || s == "." || s == ".." || s.starts_with('_') || s.starts_with('.'));
    if bad {
        return Err(MigrateError::Forbidden(format!(
            "a partition output names the file {rel:?}, not a plain path inside it"
        )));
    }
    Ok(())
}

/// Checks the partition outputs of a commit: at least one, each index
/// once, file paths inside.
pub fn check_parts(parts: &[PartitionOutput]) -> Result<Vec<PartRef>, MigrateError> {
    if parts.is_empty() {
        return Err(MigrateError::Plan("a commit needs at least one partition output".into()));
    }
    let mut seen = BTreeSet::new();
    let mut refs = Vec::with_capacity(parts.len());
    for p in parts {
        if !seen.insert(p.index) {
            return Err(MigrateError::Plan(format!("partition {} is given twice to one commit", p.index)));
        }
        let mut names = BTreeSet::new();
        for f in &p.files {
            check_rel(&f.path)?;
            if !names.insert(f.path.as_str()) {
                return Err(MigrateError::Plan(format!("partition {} names {} twice", p.index, f.path)));
            }
        }
        refs.push(PartRef { index: p.index, token: p.token });
    }
    refs.sort_by_key(|r| r.index);
    Ok(refs)
}

/// The version's files: every partition's, by path. Two partitions never
/// name the same file (names carry the partition's index and token).
fn version_files(parts: &[PartitionOutput]) -> Result<Vec<StagedFile>, MigrateError> {
    let mut files: Vec<StagedFile> = parts.iter().flat_map(|p| p.files.iter().cloned()).collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    if let Some(w) = files.windows(2).find(|w| w[0].path == w[1].path) {
        return Err(MigrateError::Plan(format!("two partitions wrote {}", w[0].path)));
    }
    Ok(files)
}

fn version_name(generation: u64, token: u64) -> String {
    format!("{generation}-{token}")
}

/// The token in a version folder's name (`<g>-<t>` or `<g>-<t>.replaced`).
fn token_of(name: &str) -> Option<u64> {
    let base = name.strip_suffix(REPLACED).unwrap_or(name);
    base.split_once('-').and_then(|(_, t)| t.parse().ok())
}

const REPLACED: &str = ".replaced";
const MANIFEST: &str = "_manifest.json";
const SUCCESS: &str = "_SUCCESS";

/// What a commit publishes, before it is published.
pub struct Commit<'a> {
    pub generation: u64,
    pub parts: &'a [PartitionOutput],
    pub attempt: Attempt,
    /// The report to record (its `token` is the commit's).
    pub report: Report,
}

impl Commit<'_> {
    fn manifest(&self, version: String, refs: Vec<PartRef>) -> Result<Manifest, MigrateError> {
        let files = version_files(self.parts)?;
        Ok(Manifest {
            version,
            token: self.attempt.token,
            generation: self.generation,
            task: self.attempt.task,
            attempt: self.attempt.attempt,
            rows: files.iter().map(|f| f.rows).sum(),
            bytes: files.iter().map(|f| f.bytes).sum(),
            files,
            parts: refs,
            published_ms: skein_raft::clock::now_ms(),
            report: self.report.clone(),
        })
    }
}

fn fenced(newer: &Manifest, target: &str) -> MigrateError {
    MigrateError::Fenced(format!(
        "a newer version (token {}, generation {}, task {} attempt {}) is already published at {target}",
        newer.token, newer.generation, newer.task, newer.attempt
    ))
}

// ----- local folders -------------------------------------------------------------

/// Publishes a version of a local folder target. Blocking: call it from a
/// blocking thread. Under the control folder's lock:
///
/// 1. refuses if the record, or the live folder's manifest, names a newer
///    token; returns the recorded report if this generation was already
///    published from these same partition outputs (a retried commit);
/// 2. builds `versions/<g>-<t>/` by renaming every partition's staged files
///    in (a retry after a crash finds those already moved there), writes
///    `_manifest.json` and `_SUCCESS`, fsyncs;
/// 3. swaps it with the target folder in one `renameat2(RENAME_EXCHANGE)`
///    (a plain rename if there is no target yet): readers see the old
///    folder or the new one, whole;
/// 4. renames what was swapped out to `versions/<g>-<t>.replaced` (kept
///    until the next commit: readers that listed it may still be reading),
///    records `published.json`, then deletes older versions and this
///    generation's staging.
pub fn commit_local(t: &VersionedTarget, c: &Commit<'_>) -> Result<Manifest, MigrateError> {
    let VersionedTarget::Local { target, control, .. } = t else {
        return Err(MigrateError::Plan("not a local target".into()));
    };
    let refs = check_parts(c.parts)?;
    let token = c.attempt.token;
    let shown = t.display();
    t.confine()?;
    std::fs::create_dir_all(control)?;
    let lock = OpenOptions::new().create(true).truncate(false).write(true).open(control.join("lock"))?;
    // Held until `lock` drops; the kernel releases it if we die.
    lock.lock()?;
    let record_path = control.join("published.json");
    let record = read_json::<Manifest>(&record_path)?;
    let live = read_json::<Manifest>(&target.join(MANIFEST)).ok().flatten();
    for m in record.iter().chain(live.iter()) {
        if m.token > token {
            return Err(fenced(m, &shown));
        }
    }
    if let Some(rec) = record.as_ref().filter(|r| r.generation == c.generation && r.parts == refs) {
        // Published already from these very outputs (a retried commit, or
        // a newer attempt of the commit after the first one's report was lost).
        return Ok(rec.clone());
    }
    let versions = control.join("versions");
    let name = version_name(c.generation, token);
    let building = versions.join(&name);
    let swapped = live.as_ref().is_some_and(|m| m.token == token && m.generation == c.generation);
    let manifest = if swapped {
        // Crashed after the swap, before the record: finish the job.
        live.clone().ok_or_else(|| MigrateError::Storage("the live manifest vanished".into()))?
    } else {
        let manifest = c.manifest(name.clone(), refs)?;
        build_local(control, &building, c, &manifest)?;
        // The swap itself: one step for readers.
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        t.confine()?;
        if target.exists() {
            rustix::fs::renameat_with(
                rustix::fs::CWD,
                building.as_path(),
                rustix::fs::CWD,
                target.as_path(),
                rustix::fs::RenameFlags::EXCHANGE,
            )
            .map_err(|e| {
                MigrateError::Storage(format!("swapping {} into {}: {e}", building.display(), target.display()))
            })?;
        } else {
            std::fs::rename(&building, target)?;
        }
        sync_dir(target.parent())?;
        sync_dir(Some(&versions))?;
        manifest
    };
    // What was swapped out now sits where the new version was built.
    if building.exists() {
        let replaced = versions.join(format!("{name}{REPLACED}"));
        let _ = std::fs::remove_dir_all(&replaced);
        std::fs::rename(&building, &replaced)?;
        sync_dir(Some(&versions))?;
    }
    write_atomically(&record_path, &to_json(&manifest)?)?;
    drop(lock);
    // Garbage: versions older than this one but the one it replaced, and
    // this generation's (and older generations') staging. A newer token's
    // half-built version is left to its own retry.
    if let Ok(entries) = std::fs::read_dir(&versions) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            let keep = n == format!("{name}{REPLACED}") || token_of(&n).is_none_or(|tok| tok >= token);
            if !keep {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    remove_runs_up_to(&control.join("runs"), c.generation);
    Ok(manifest)
}

/// Moves the staged files into `dir` and writes the manifest and `_SUCCESS`.
fn build_local(control: &Path, dir: &Path, c: &Commit<'_>, manifest: &Manifest) -> Result<(), MigrateError> {
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::from([dir.to_path_buf()]);
    std::fs::create_dir_all(dir)?;
    for p in c.parts {
        let staged = VersionedTarget::staged_dir(control, c.generation, p.index, p.token);
        for f in &p.files {
            let (from, to) = (staged.join(&f.path), dir.join(&f.path));
            if let Some(parent) = to.parent() {
                if dirs.insert(parent.to_path_buf()) {
                    std::fs::create_dir_all(parent)?;
                }
            }
            match std::fs::rename(&from, &to) {
                Ok(()) => {}
                // Moved by an earlier try of this commit.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && to.is_file() => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(MigrateError::Storage(format!(
                        "partition {} (token {}): the staged file {} is missing",
                        p.index,
                        p.token,
                        from.display()
                    )))
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    write_atomically(&dir.join(MANIFEST), &to_json(manifest)?)?;
    File::create(dir.join(SUCCESS))?.sync_all()?;
    for d in dirs.iter().rev() {
        sync_dir(Some(d))?;
    }
    Ok(())
}

fn remove_runs_up_to(runs: &Path, generation: u64) {
    let Ok(entries) = std::fs::read_dir(runs) else { return };
    for e in entries.flatten() {
        let older = e.file_name().to_str().and_then(|n| n.parse::<u64>().ok()).is_some_and(|g| g <= generation);
        if older {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>, MigrateError> {
    serde_json::to_vec_pretty(v).map_err(|e| MigrateError::Storage(e.to_string()))
}

// ----- object stores ---------------------------------------------------------------

/// Publishes a version of an object-store target: refuses if the pointer
/// names a newer token (or returns its report if this generation was
/// already published from these outputs), copies every staged object to
/// `_versions/<g>-<t>/`, writes `_manifest.json` and `_SUCCESS` there, then
/// moves the pointer `_skein/current.json` with a conditional write
/// (`If-Match` on the version read, `If-None-Match` for the first). Losing
/// that race to a newer token is [`MigrateError::Fenced`]; to an older
/// one, it tries again. Then deletes versions older than the one it
/// replaced, and this generation's staging.
pub async fn commit_remote(t: &VersionedTarget, c: &Commit<'_>) -> Result<Manifest, MigrateError> {
    let VersionedTarget::Remote { store, url, key } = t else {
        return Err(MigrateError::Plan("not an object-store target".into()));
    };
    let refs = check_parts(c.parts)?;
    let token = c.attempt.token;
    let pointer = child(&VersionedTarget::remote_control(key), "current.json");
    let versions = child(key, "_versions");
    let name = version_name(c.generation, token);
    let vprefix = versions.clone().join(name.as_str());
    let version_url = format!("{}/_versions/{name}/", url.trim_end_matches('/'));
    let mut built = false;
    for _ in 0..5 {
        let (current, version) = read_pointer(store, &pointer).await?;
        if let Some(cur) = &current {
            if cur.token > token {
                if built {
                    delete_prefix(store, &vprefix, |_| true).await;
                }
                return Err(fenced(cur, url));
            }
            if cur.generation == c.generation && cur.parts == refs {
                return Ok(cur.clone());
            }
        }
        let manifest = c.manifest(version_url.clone(), refs.clone())?;
        if !built {
            for p in c.parts {
                let staged = VersionedTarget::staged_prefix(key, c.generation, p.index, p.token);
                for f in &p.files {
                    let (from, to) = (join_rel(&staged, &f.path), join_rel(&vprefix, &f.path));
                    match store.copy(&from, &to).await {
                        Ok(()) => {}
                        // Copied by an earlier try, whose cleanup then ran.
                        Err(object_store::Error::NotFound { .. }) if store.head(&to).await.is_ok() => {}
                        Err(object_store::Error::NotFound { .. }) => {
                            return Err(MigrateError::Storage(format!(
                                "partition {} (token {}): the staged object {from} is missing",
                                p.index, p.token
                            )))
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            store.put(&vprefix.clone().join(MANIFEST), PutPayload::from(to_json(&manifest)?)).await?;
            store.put(&vprefix.clone().join(SUCCESS), PutPayload::new()).await?;
            built = true;
        }
        let body = PutPayload::from(to_json(&manifest)?);
        let mode = match version {
            Some(v) => PutMode::Update(v),
            None => PutMode::Create,
        };
        match store.put_opts(&pointer, body.clone(), PutOptions { mode, ..Default::default() }).await {
            Ok(_) => {}
            // Someone moved the pointer between our read and our write: look again.
            Err(object_store::Error::Precondition { .. } | object_store::Error::AlreadyExists { .. }) => continue,
            Err(object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. }) => {
                // A store without conditional writes: the lease check before
                // the commit is then the only fence (see ARCHITECTURE.md).
                store.put(&pointer, body).await?;
            }
            Err(e) => return Err(e.into()),
        }
        // Keep the version just replaced (readers may be reading it).
        let previous = current.and_then(|m| m.version.rsplit('/').nth(1).map(str::to_string));
        delete_prefix(store, &versions, |first| {
            token_of(first).is_some_and(|tok| tok < token) && previous.as_deref() != Some(first)
        })
        .await;
        let runs = VersionedTarget::remote_control(key).join("runs");
        delete_prefix(store, &runs, |first| first.parse::<u64>().is_ok_and(|g| g <= c.generation)).await;
        return Ok(manifest);
    }
    Err(MigrateError::Storage("could not move the version pointer after 5 tries (contention)".into()))
}

async fn read_pointer(
    store: &Arc<dyn ObjectStore>,
    pointer: &ObjectPath,
) -> Result<(Option<Manifest>, Option<UpdateVersion>), MigrateError> {
    match store.get(pointer).await {
        Ok(r) => {
            let version = UpdateVersion { e_tag: r.meta.e_tag.clone(), version: r.meta.version.clone() };
            let bytes = r.bytes().await?;
            let m: Manifest = serde_json::from_slice(&bytes)
                .map_err(|e| MigrateError::Storage(format!("{pointer} is corrupt: {e}")))?;
            Ok((Some(m), Some(version)))
        }
        Err(object_store::Error::NotFound { .. }) => Ok((None, None)),
        Err(e) => Err(e.into()),
    }
}

/// Deletes the objects under `prefix` whose first path part below it
/// `select` picks. Best effort: garbage left is deleted by a later commit.
async fn delete_prefix(store: &Arc<dyn ObjectStore>, prefix: &ObjectPath, select: impl Fn(&str) -> bool) {
    let Ok(objects) = store.list(Some(prefix)).try_collect::<Vec<_>>().await else { return };
    for o in objects {
        let first = o.location.prefix_match(prefix).and_then(|mut parts| parts.next());
        if first.is_some_and(|p| select(p.as_ref())) {
            let _ = store.delete(&o.location).await;
        }
    }
}

/// The version published now: a local target's `_manifest.json`, an
/// object-store target's pointer; `None` before the first commit.
pub async fn current_version(t: &VersionedTarget) -> Result<Option<Manifest>, MigrateError> {
    match t {
        VersionedTarget::Local { target, .. } => read_json(&target.join(MANIFEST)),
        VersionedTarget::Remote { store, key, .. } => {
            Ok(read_pointer(store, &child(&VersionedTarget::remote_control(key), "current.json")).await?.0)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use object_store::memory::InMemory;

    use super::*;

    fn output(index: u32, token: u64, files: &[(&str, u64)]) -> PartitionOutput {
        let files: Vec<StagedFile> =
            files.iter().map(|(p, rows)| StagedFile { path: p.to_string(), rows: *rows, bytes: 10 }).collect();
        PartitionOutput {
            index,
            token,
            rows: files.iter().map(|f| f.rows).sum(),
            bytes: 10 * files.len() as u64,
            files,
            source_rows: None,
            steps: vec![],
            elapsed_ms: 0,
        }
    }

    fn report(token: u64, rows: u64) -> Report {
        Report {
            target: "s3://b/out/".into(),
            format: "csv".into(),
            rows_written: rows,
            bytes: 0,
            token,
            steps: vec![],
            elapsed_ms: 0,
        }
    }

    async fn stage(store: &Arc<dyn ObjectStore>, key: &ObjectPath, g: u64, p: &PartitionOutput) {
        let prefix = VersionedTarget::staged_prefix(key, g, p.index, p.token);
        for f in &p.files {
            store.put(&join_rel(&prefix, &f.path), PutPayload::from(f.path.clone().into_bytes())).await.unwrap();
        }
    }

    #[tokio::test]
    async fn object_store_commits_move_the_pointer_in_token_order() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let key = ObjectPath::from("out");
        let t = VersionedTarget::Remote { store: store.clone(), url: "s3://b/out/".into(), key: key.clone() };
        let attempt = |token| Attempt { task: 1, attempt: 1, token };
        // Generation 1: two partitions, and a stale attempt of partition 0 that must not be read.
        let parts = vec![output(0, 5, &[("dt=1/p00000-5-0.csv", 2)]), output(1, 6, &[("dt=2/p00001-6-0.csv", 3)])];
        for p in &parts {
            stage(&store, &key, 1, p).await;
        }
        stage(&store, &key, 1, &output(0, 4, &[("dt=1/p00000-4-0.csv", 99)])).await;
        let c = Commit { generation: 1, parts: &parts, attempt: attempt(10), report: report(10, 5) };
        let m = commit_remote(&t, &c).await.unwrap();
        assert_eq!((m.token, m.rows, m.version.as_str()), (10, 5, "s3://b/out/_versions/1-10/"));
        assert_eq!(current_version(&t).await.unwrap().unwrap(), m);
        let listed: Vec<String> = store
            .list(Some(&ObjectPath::from("out/_versions/1-10")))
            .map_ok(|o| o.location.to_string())
            .try_collect::<Vec<_>>()
            .await
            .unwrap();
        let mut listed = listed;
        listed.sort();
        assert_eq!(
            listed,
            vec![
                "out/_versions/1-10/_SUCCESS",
                "out/_versions/1-10/_manifest.json",
                "out/_versions/1-10/dt=1/p00000-5-0.csv",
                "out/_versions/1-10/dt=2/p00001-6-0.csv"
            ]
        );
        // The staging of generation 1 is gone, the stale attempt's too.
        assert!(store.list(Some(&ObjectPath::from("out/_skein/runs"))).try_next().await.unwrap().is_none());
        // A retried commit reports the same.
        assert_eq!(commit_remote(&t, &c).await.unwrap(), m);

        // Generation 2 under token 20 replaces it; an older token is refused.
        let parts2 = vec![output(0, 15, &[("p00000-15-0.csv", 7)])];
        stage(&store, &key, 2, &parts2[0]).await;
        let stale = Commit { generation: 2, parts: &parts2, attempt: attempt(9), report: report(9, 7) };
        assert!(commit_remote(&t, &stale).await.unwrap_err().is_fenced());
        assert_eq!(current_version(&t).await.unwrap().unwrap().token, 10);
        let c2 = Commit { generation: 2, parts: &parts2, attempt: attempt(20), report: report(20, 7) };
        assert_eq!(commit_remote(&t, &c2).await.unwrap().rows, 7);
        // The previous version is kept; a third commit deletes it.
        assert!(store.head(&ObjectPath::from("out/_versions/1-10/_SUCCESS")).await.is_ok());
        let parts3 = vec![output(0, 25, &[("p00000-25-0.csv", 1)])];
        stage(&store, &key, 3, &parts3[0]).await;
        let c3 = Commit { generation: 3, parts: &parts3, attempt: attempt(30), report: report(30, 1) };
        commit_remote(&t, &c3).await.unwrap();
        assert!(store.head(&ObjectPath::from("out/_versions/1-10/_SUCCESS")).await.is_err());
        assert!(store.head(&ObjectPath::from("out/_versions/2-20/_SUCCESS")).await.is_ok());
        assert_eq!(current_version(&t).await.unwrap().unwrap().token, 30);
    }

    #[test]
    fn staged_paths_must_stay_inside() {
        for bad in ["", "/abs.csv", "../x.csv", "a/../../x.csv", "_skein/x.csv", "a//b.csv", ".hidden.csv", "a\\b"] {
            assert!(check_rel(bad).is_err(), "{bad}");
        }
        check_rel("dt=2026-11-01/p00003-7-0.parquet").unwrap();
        let dup = vec![output(0, 1, &[("a.csv", 1)]), output(0, 2, &[("b.csv", 1)])];
        assert!(check_parts(&dup).unwrap_err().to_string().contains("twice"));
    }
}
