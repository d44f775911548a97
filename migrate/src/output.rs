//! Writing a versioned output: many files in one folder, split into hive
//! folders by the target's `partition_by` columns (`dt=2026-11-01/`) and
//! rolled over at `max_rows_per_file`, with memory bounded by the number
//! of files open at once (each Parquet writer buffers a row group).

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, UInt32Array};
use datafusion::arrow::compute::{cast, take_record_batch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::dataframe::DataFrame;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use skein_plan::Format;

use crate::error::MigrateError;
use crate::io::FormatWriter;

/// A file of a partition's staged output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedFile {
    /// Relative to the partition's staged folder (and, once published, to
    /// the target folder), e.g. `dt=2026-11-01/p00003-41-0.parquet`.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
}

/// Files open at once at most; the least recently written is closed (and
/// a new file started for its key later) beyond that.
const MAX_OPEN: usize = 32;

/// The folder name Hive gives a null (or empty) partition value.
pub const HIVE_NULL: &str = "__HIVE_DEFAULT_PARTITION__";

/// How the files of one partition's output are named and split.
#[derive(Debug, Clone)]
pub struct FileLayout {
    pub format: Format,
    pub partition_by: Vec<String>,
    pub max_rows_per_file: Option<u64>,
    /// The partition's index and the token of the attempt that writes it:
    /// file names are `p<index>-<token>-<n>.<ext>`, unique across the
    /// partitions of a version and across versions (a reader that listed
    /// the previous version then opens a name the new one does not have:
    /// an error it retries, never a mix of both).
    pub index: u32,
    pub token: u64,
}

struct Open {
    writer: FormatWriter,
    rel: String,
    rows: u64,
    last_use: u64,
}

/// Runs `df` and writes its rows into the folder `dir` as `layout` says;
/// every file and folder fsynced. Returns the files, sorted by path. An
/// output without rows is one empty file (its schema, for readers) unless
/// it is split by columns.
pub async fn write_files(
    df: DataFrame,
    layout: &FileLayout,
    dir: &Path,
    mut on_rows: impl FnMut(u64),
) -> Result<Vec<StagedFile>, MigrateError> {
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let mut key_cols = Vec::with_capacity(layout.partition_by.len());
    for c in &layout.partition_by {
        match schema.index_of(c) {
            Ok(i) => key_cols.push(i),
            Err(_) => {
                let have: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                return Err(MigrateError::Plan(format!(
                    "target.partition_by: the output has no column {c:?} (columns: {})",
                    have.join(", ")
                )));
            }
        }
    }
    // Hive style: the key columns are in the folder names, not in the files.
    let data_cols: Vec<usize> = (0..schema.fields().len()).filter(|i| !key_cols.contains(i)).collect();
    if data_cols.is_empty() {
        return Err(MigrateError::Plan(
            "target.partition_by names every column of the output: no data would be left in the files".into(),
        ));
    }
    let data_schema: SchemaRef = Arc::new(schema.project(&data_cols)?);
    std::fs::create_dir_all(dir)?;
    let mut w = Writer {
        layout,
        dir,
        schema: data_schema,
        open: HashMap::new(),
        done: Vec::new(),
        dirs: BTreeSet::from([dir.to_path_buf()]),
        seq: 0,
        clock: 0,
    };
    let mut stream = df.execute_stream().await?;
    let mut rows = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        if batch.num_rows() == 0 {
            continue;
        }
        rows += batch.num_rows() as u64;
        let data = batch.project(&data_cols)?;
        if key_cols.is_empty() {
            w.write(String::new(), &data)?;
        } else {
            for (key, indices) in split_by_key(&batch, &key_cols, &layout.partition_by)? {
                let part = take_record_batch(&data, &UInt32Array::from(indices))?;
                w.write(key, &part)?;
            }
        }
        on_rows(rows);
    }
    if rows == 0 && key_cols.is_empty() {
        w.open_file(String::new())?;
    }
    let mut keys: Vec<String> = w.open.keys().cloned().collect();
    keys.sort();
    for k in keys {
        w.close(&k)?;
    }
    for d in &w.dirs {
        File::open(d)?.sync_all()?;
    }
    let mut files = w.done;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// The rows of `batch` by hive folder (`a=1/b=x`), in order of first
/// appearance.
fn split_by_key(
    batch: &RecordBatch,
    key_cols: &[usize],
    names: &[String],
) -> Result<Vec<(String, Vec<u32>)>, MigrateError> {
    let texts = key_cols.iter().map(|i| cast(batch.column(*i), &DataType::Utf8)).collect::<Result<Vec<_>, _>>()?;
    let strings: Vec<_> = texts.iter().map(|a| a.as_string::<i32>()).collect();
    let mut order: Vec<(String, Vec<u32>)> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    let mut key = String::new();
    for row in 0..batch.num_rows() {
        key.clear();
        for (n, (s, name)) in strings.iter().zip(names).enumerate() {
            if n > 0 {
                key.push('/');
            }
            key.push_str(name);
            key.push('=');
            if s.is_null(row) || s.value(row).is_empty() {
                key.push_str(HIVE_NULL);
            } else {
                escape_into(s.value(row), &mut key);
            }
        }
        let row = u32::try_from(row).map_err(|_| MigrateError::Plan("a batch of more than 2^32 rows".into()))?;
        match at.get(&key) {
            Some(i) => order[*i].1.push(row),
            None => {
                at.insert(key.clone(), order.len());
                order.push((key.clone(), vec![row]));
            }
        }
    }
    Ok(order)
}

/// A partition value as a folder name, escaped as Hive does: `%XX` for
/// `/`, `=`, `%`, control characters and the like, and for a leading `.`
/// or `_` (readers would skip the folder as hidden).
pub fn escape_into(value: &str, out: &mut String) {
    for (i, b) in value.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'+' | b',' | b'@' | b'~' | b' ' | b'!' | b'$' | b'&' | b'(' | b')' | b';')
            || (matches!(b, b'.' | b'_') && i > 0);
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

struct Writer<'a> {
    layout: &'a FileLayout,
    dir: &'a Path,
    schema: SchemaRef,
    open: HashMap<String, Open>,
    done: Vec<StagedFile>,
    dirs: BTreeSet<PathBuf>,
    seq: u64,
    clock: u64,
}

impl Writer<'_> {
    fn write(&mut self, key: String, batch: &RecordBatch) -> Result<(), MigrateError> {
        let mut offset = 0usize;
        while offset < batch.num_rows() {
            if !self.open.contains_key(&key) {
                self.open_file(key.clone())?;
            }
            self.clock += 1;
            let clock = self.clock;
            let max = self.layout.max_rows_per_file;
            let Some(f) = self.open.get_mut(&key) else {
                return Err(MigrateError::Storage(format!("no open file for {key:?}")));
            };
            let room = max.map_or(u64::MAX, |m| m.saturating_sub(f.rows)).max(1);
            let n = (batch.num_rows() - offset).min(usize::try_from(room).unwrap_or(usize::MAX));
            f.writer.write(&batch.slice(offset, n))?;
            f.rows += n as u64;
            f.last_use = clock;
            offset += n;
            if max.is_some_and(|m| f.rows >= m) {
                self.close(&key)?;
            }
        }
        Ok(())
    }

    fn open_file(&mut self, key: String) -> Result<(), MigrateError> {
        if self.open.len() >= MAX_OPEN {
            let oldest = self.open.iter().min_by_key(|(_, o)| o.last_use).map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.close(&k)?;
            }
        }
        let l = self.layout;
        let name = format!("p{:05}-{}-{}.{}", l.index, l.token, self.seq, l.format.extension());
        self.seq += 1;
        let rel = if key.is_empty() { name } else { format!("{key}/{name}") };
        let path = self.dir.join(&rel);
        if let Some(parent) = path.parent() {
            if self.dirs.insert(parent.to_path_buf()) {
                std::fs::create_dir_all(parent)?;
            }
        }
        let writer = FormatWriter::new(l.format, File::create(&path)?, self.schema.clone())?;
        self.open.insert(key, Open { writer, rel, rows: 0, last_use: self.clock });
        Ok(())
    }

    fn close(&mut self, key: &str) -> Result<(), MigrateError> {
        let Some(o) = self.open.remove(key) else { return Ok(()) };
        let file = o.writer.finish()?;
        file.sync_all()?;
        let bytes = file.metadata()?.len();
        self.done.push(StagedFile { path: o.rel, rows: o.rows, bytes });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hive_values_are_escaped() {
        let esc = |v: &str| {
            let mut s = String::new();
            escape_into(v, &mut s);
            s
        };
        assert_eq!(esc("2026-11-01"), "2026-11-01");
        assert_eq!(esc("a/b=c%"), "a%2Fb%3Dc%25");
        assert_eq!(esc("_x.y"), "%5Fx.y");
        assert_eq!(esc(".."), "%2E.");
        assert_eq!(esc("é"), "%C3%A9");
    }
}
