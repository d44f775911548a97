//! Splitting a partitioned source into partitions: list its files (the
//! same way on every node: hidden entries and other formats skipped,
//! sorted by path), then group them as the plan's [`Partitioning`] says.
//! Each partition is then run as its own task ([`crate::run_partition`]),
//! and a partition carries its files, so a re-run reads exactly them even
//! if files were added to the folder meanwhile.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use skein_plan::{Dataset, Format, MigrationSpec, Partitioning};
use skein_raft::fsm::policy::DataRoot;

use crate::error::MigrateError;
use crate::location::{format_of, Location};
use crate::roots::{self, Env};
use crate::Options;

/// One slice of a partitioned source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    /// 0-based, in listing order; names the partition's output files.
    pub index: u32,
    /// Full URLs (`file:///abs/path` or `s3://bucket/key`), sorted.
    pub files: Vec<String>,
    /// Their total size.
    pub bytes: u64,
    /// For key partitioning: the hive folder, e.g. `dt=2026-11-01`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A file of a partitioned source.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    /// The path below the source folder, `/`-separated: what files sort by.
    rel: String,
    url: String,
    bytes: u64,
}

/// Lists the plan's partitioned source and groups its files into
/// partitions (see [`Partitioning`]). The policy is checked first, as
/// [`crate::run`] does (the location under a data root; for a local
/// folder, every link in it resolving inside the root). A local folder is
/// walked recursively; an object store is listed by prefix. `_`- and
/// `.`-prefixed files and folders, and files of other extensions, are
/// skipped, as DataFusion, Spark and Hive skip them. The same listing
/// always gives the same partitions. An error if the plan is not
/// partitioned or the source holds no file.
pub async fn plan_partitions(spec: &MigrationSpec, opts: &Options) -> Result<Vec<Partition>, MigrateError> {
    let Some((name, ds, how)) = spec.partitioned() else {
        return Err(MigrateError::Plan("the plan has no partitioned source (no source sets `partition:`)".into()));
    };
    let (loc, root, format) = open_source(name, ds, opts)?;
    let files = list(&loc, root.as_ref(), format).await?;
    if files.is_empty() {
        return Err(MigrateError::SourceNotFound(format!(
            "{} holds no .{} file to partition",
            loc.display(),
            format.extension()
        )));
    }
    group(files, how)
}

/// The partitioned source's location, its data root and format, the
/// policy checked.
pub(crate) fn open_source(
    name: &str,
    ds: &Dataset,
    opts: &Options,
) -> Result<(Location, Option<DataRoot>, Format), MigrateError> {
    let which = source_label(name);
    let root = roots::check_location(opts.policy.as_deref(), &which, &ds.url)?;
    let loc = Location::parse_in(&ds.url, root.as_ref(), &Env::process())?;
    let format = format_of(ds, &which)?;
    if !loc.is_folder() {
        return Err(MigrateError::Plan(format!("the partitioned {which} {} is not a folder", loc.display())));
    }
    Ok((loc, root, format))
}

/// How messages name a source: `source` for the plan's `source:`, else
/// `source orders`.
pub(crate) fn source_label(name: &str) -> String {
    if name == skein_plan::SOURCE_TABLE {
        "source".to_string()
    } else {
        format!("source {name}")
    }
}

/// Whether a listed path below the source folder is data: no hidden part,
/// the format's extension.
fn is_data(rel: &str, ext: &str) -> bool {
    !rel.split('/').any(|p| p.is_empty() || p.starts_with('_') || p.starts_with('.')) && rel.ends_with(ext)
}

async fn list(loc: &Location, root: Option<&DataRoot>, format: Format) -> Result<Vec<Listed>, MigrateError> {
    let ext = format!(".{}", format.extension());
    match loc {
        Location::Local { path, .. } => {
            // Links change after the apply: resolve them right before listing.
            roots::confine_source(loc, root)?;
            let (path, ext2) = (path.clone(), ext.clone());
            let files = tokio::task::spawn_blocking(move || walk(&path, &ext2))
                .await
                .map_err(|e| MigrateError::Storage(format!("listing the source: {e}")))??;
            Ok(files)
        }
        Location::Remote { base, store, key, .. } => {
            let prefix = (!key.as_ref().is_empty()).then_some(key);
            let base = base.as_str().trim_end_matches('/');
            let mut out = Vec::new();
            let mut stream = store.list(prefix);
            while let Some(meta) = stream.try_next().await? {
                let rel: Vec<String> = match prefix {
                    Some(p) => match meta.location.prefix_match(p) {
                        Some(parts) => parts.map(|p| p.as_ref().to_string()).collect(),
                        None => continue,
                    },
                    None => meta.location.parts().map(|p| p.as_ref().to_string()).collect(),
                };
                let rel = rel.join("/");
                if is_data(&rel, &ext) {
                    out.push(Listed { rel, url: format!("{base}/{}", meta.location), bytes: meta.size });
                }
            }
            Ok(out)
        }
    }
}

/// Walks a local folder (following links into folders once, as
/// DataFusion's listing does; [`roots::confine_source`] has checked them).
fn walk(dir: &Path, ext: &str) -> Result<Vec<Listed>, MigrateError> {
    let mut out = Vec::new();
    let mut seen: HashSet<PathBuf> = HashSet::new();
    let mut stack: Vec<(PathBuf, String)> = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, prefix)) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && prefix.is_empty() => {
                return Err(MigrateError::SourceNotFound(format!("file://{}/", d.display())))
            }
            Err(e) => return Err(MigrateError::Storage(format!("listing {}: {e}", d.display()))),
        };
        if !seen.insert(std::fs::canonicalize(&d)?) {
            continue; // a link back into a folder already walked
        }
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('_') || name.starts_with('.') {
                continue;
            }
            let rel = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
            let path = entry.path();
            // Follows links: what they lead to counts.
            let meta = std::fs::metadata(&path)?;
            if meta.is_dir() {
                stack.push((path, rel));
            } else if meta.is_file() && is_data(&rel, ext) {
                out.push(Listed { rel, url: format!("file://{}", path.display()), bytes: meta.len() });
            }
        }
    }
    Ok(out)
}

/// Groups files, sorted by path, into partitions.
fn group(mut files: Vec<Listed>, how: &Partitioning) -> Result<Vec<Partition>, MigrateError> {
    files.sort_by(|a, b| a.rel.cmp(&b.rel));
    let groups: Vec<(Option<String>, Vec<Listed>)> = match how {
        Partitioning::Files(n) => {
            let n = usize::try_from(*n).unwrap_or(usize::MAX).max(1);
            files.chunks(n).map(|c| (None, c.to_vec())).collect()
        }
        Partitioning::Bytes(limit) => {
            // Consecutive files while they fit; a file larger than the
            // limit is a partition of its own.
            let mut out: Vec<(Option<String>, Vec<Listed>)> = Vec::new();
            let mut current: Vec<Listed> = Vec::new();
            let mut size = 0u64;
            for f in files {
                if !current.is_empty() && size.saturating_add(f.bytes) > *limit {
                    out.push((None, std::mem::take(&mut current)));
                    size = 0;
                }
                size = size.saturating_add(f.bytes);
                current.push(f);
            }
            if !current.is_empty() {
                out.push((None, current));
            }
            out
        }
        Partitioning::Key(column) => {
            let mut by_key: BTreeMap<String, Vec<Listed>> = BTreeMap::new();
            let wanted = format!("{column}=");
            for f in files {
                let folders = f.rel.rsplit_once('/').map_or("", |(d, _)| d);
                let Some(key) = folders.split('/').find(|p| p.starts_with(&wanted)) else {
                    return Err(MigrateError::Plan(format!(
                        "partition {{key: {column}}}: {} is not in a `{column}=...` folder",
                        f.url
                    )));
                };
                by_key.entry(key.to_string()).or_default().push(f);
            }
            by_key.into_iter().map(|(k, v)| (Some(k), v)).collect()
        }
    };
    groups
        .into_iter()
        .enumerate()
        .map(|(i, (key, files))| {
            let index = u32::try_from(i)
                .map_err(|_| MigrateError::Plan(format!("more than {} partitions: use larger ones", u32::MAX)))?;
            let bytes = files.iter().map(|f| f.bytes).sum();
            Ok(Partition { index, files: files.into_iter().map(|f| f.url).collect(), bytes, key })
        })
        .collect()
}

/// Checks, before a partition's files are opened, that every one is a data
/// file inside the partitioned source `loc` (a partition is passed around
/// between nodes: its files are never trusted to stay inside on their
/// own), and returns them as DataFusion reads them (local: plain paths).
pub(crate) fn partition_paths(loc: &Location, format: Format, part: &Partition) -> Result<Vec<String>, MigrateError> {
    if part.files.is_empty() {
        return Err(MigrateError::Plan(format!("partition {} has no files", part.index)));
    }
    let folder = loc.display();
    let ext = format!(".{}", format.extension());
    part.files
        .iter()
        .map(|url| {
            let rel = url
                .strip_prefix(folder.as_str())
                .filter(|rel| is_data(rel, &ext) && !rel.split('/').any(|p| p == ".." || p == "." || p.contains('\\')));
            match (rel, loc) {
                (None, _) => Err(MigrateError::Forbidden(format!(
                    "partition {}: {url} is not a .{} file inside the partitioned source {folder}",
                    part.index,
                    format.extension()
                ))),
                (Some(_), Location::Local { .. }) => Ok(url.trim_start_matches("file://").to_string()),
                (Some(_), Location::Remote { .. }) => Ok(url.clone()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn f(rel: &str, bytes: u64) -> Listed {
        Listed { rel: rel.into(), url: format!("s3://b/src/{rel}"), bytes }
    }

    #[test]
    fn hidden_and_other_files_are_not_data() {
        assert!(is_data("dt=1/a.csv", ".csv"));
        assert!(!is_data("_tmp/a.csv", ".csv"));
        assert!(!is_data("dt=1/.a.csv", ".csv"));
        assert!(!is_data("a.parquet", ".csv"));
        assert!(!is_data("a//b.csv", ".csv"));
    }

    #[test]
    fn bytes_groups_consecutive_files() {
        let files = vec![f("c", 70), f("a", 40), f("b", 50), f("d", 300), f("e", 10)];
        let p = group(files, &Partitioning::Bytes(100)).unwrap();
        let names: Vec<Vec<&str>> =
            p.iter().map(|p| p.files.iter().map(|u| u.trim_start_matches("s3://b/src/")).collect()).collect();
        assert_eq!(names, vec![vec!["a", "b"], vec!["c"], vec!["d"], vec!["e"]]);
        assert_eq!(p.iter().map(|p| p.bytes).collect::<Vec<_>>(), vec![90, 70, 300, 10]);
        assert_eq!(p.iter().map(|p| p.index).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    }

    #[test]
    fn a_partition_file_must_be_inside_the_source() {
        let loc = Location::Local { path: "/data/src".into(), folder: true };
        let part = |files: &[&str]| Partition {
            index: 3,
            files: files.iter().map(|s| s.to_string()).collect(),
            bytes: 0,
            key: None,
        };
        assert_eq!(
            partition_paths(&loc, Format::Csv, &part(&["file:///data/src/dt=1/a.csv"])).unwrap(),
            vec!["/data/src/dt=1/a.csv"]
        );
        for bad in [
            "file:///data/other/a.csv",
            "file:///data/src/../secret.csv",
            "file:///data/src/_skein/x.csv",
            "file:///data/src/a.parquet",
            "file:///data/srcx/a.csv",
        ] {
            let err = partition_paths(&loc, Format::Csv, &part(&[bad])).unwrap_err();
            assert!(err.is_forbidden(), "{bad}: {err}");
        }
    }
}
