//! What a migration plan's `spec` says: the source and target datasets and
//! the steps that turn one into the other.
//!
//! ```yaml
//! source: {url: "file:///data/src/customers.csv", format: csv}
//! target: {url: "s3://bucket/customers-v2/", format: parquet}
//! steps:
//!   - type: sql
//!     query: "SELECT id, name, CAST(amount AS DOUBLE) * 100 AS amount_cents FROM source"
//!   - type: validate
//!     row_count: equal
//! ```
//!
//! Or many sources, each a table of its name, one of them possibly split
//! into partitions (each run as its own task, the outputs published
//! together as one version):
//!
//! ```yaml
//! sources:
//!   orders: {url: "s3://bucket/orders/", format: parquet, partition: {bytes: 256MiB}}
//!   customers: {url: "s3://bucket/customers.parquet"}
//! target: {url: "s3://bucket/orders-v2/", format: parquet, partition_by: [dt], max_rows_per_file: 1000000}
//! ```
//!
//! Field names accept a few synonyms (`path` for `url`, `sql` for `query`,
//! `rowCount` for `row_count`...); the canonical names are the ones above.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A dataset's file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Parquet,
    Csv,
    /// JSON lines (newline-delimited JSON): one object per line.
    #[serde(alias = "json", alias = "ndjson", alias = "json_lines", alias = "jsonlines")]
    Jsonl,
}

impl Format {
    /// Parses a format name, synonyms included.
    pub fn parse(s: &str) -> Option<Format> {
        match s.trim().to_ascii_lowercase().as_str() {
            "parquet" | "pq" => Some(Format::Parquet),
            "csv" => Some(Format::Csv),
            "jsonl" | "json" | "ndjson" | "json_lines" | "jsonlines" => Some(Format::Jsonl),
            _ => None,
        }
    }

    /// The format a file name's extension implies.
    pub fn from_extension(path: &str) -> Option<Format> {
        let path = path.trim_end_matches('/');
        let ext = path.rsplit_once('.').map(|(_, e)| e)?;
        if ext.contains('/') {
            return None;
        }
        Format::parse(ext)
    }

    /// The file extension skein writes.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.extension())
    }
}

/// A dataset: a file or a folder of files, local or in an object store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    /// A local path, `file:///abs/path`, or `s3://bucket/key`. A URL ending
    /// in `/` is a folder.
    pub url: String,
    /// Inferred from the extension when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// CSV only: the field delimiter (default `,`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<char>,
    /// CSV only: whether the first line names the columns (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_header: Option<bool>,
    /// Sources only: split this source into partitions, each run as its
    /// own task (see [`Partitioning`]). At most one source of a plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<Partitioning>,
    /// Targets only: hive-style columns the output is split by
    /// (`dt=2026-11-01/`); the columns are in the folder names, not in the files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partition_by: Vec<String>,
    /// Targets only: at most about this many rows per output file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rows_per_file: Option<u64>,
}

/// How a partitioned source is split. Files are listed (hidden `_`/`.`
/// entries and other extensions skipped) and sorted by path first, so the
/// same listing always gives the same partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Partitioning {
    /// This many files per partition (`Files(1)`, `partition: file`: one per file).
    Files(u64),
    /// Consecutive files up to about this many bytes per partition (a file
    /// larger than that is a partition of its own).
    Bytes(u64),
    /// One partition per hive folder of this column (`dt=2026-11-01/`).
    Key(String),
}

/// What [`MigrationSpec::primary`] gives for a spec without sources (never
/// the case for a parsed plan): a dataset with an empty URL.
static NO_SOURCE: Dataset = Dataset {
    url: String::new(),
    format: None,
    delimiter: None,
    has_header: None,
    partition: None,
    partition_by: Vec::new(),
    max_rows_per_file: None,
};

impl Dataset {
    /// The format given, else the one the URL's extension implies.
    pub fn format(&self) -> Option<Format> {
        self.format.or_else(|| Format::from_extension(&self.url))
    }
}

/// One column of an expected or wanted schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    /// A SQL or Arrow type name: `bigint`, `int`, `double`, `varchar`,
    /// `boolean`, `date`, `timestamp`, `Int64`, `Utf8`...
    #[serde(rename = "type")]
    pub data_type: String,
}

/// A step of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Step {
    /// A DataFusion query. Every source is a table of its name, and `source`
    /// is the primary one ([`MigrationSpec::primary`]; in a partition, the
    /// partition's slice of it); `input` is the result of the steps before
    /// (the primary source for the first). Its result
    /// becomes the dataset the next steps see, and the target in the end.
    Sql { query: String },
    /// Keep the data as it is (the target's format and location make the
    /// change), optionally casting columns to `schema`'s types.
    Copy {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        schema: Vec<Column>,
    },
    /// An external program, for what SQL cannot do. See [`ExecStep`].
    Exec(ExecStep),
    /// Checks that fail the migration for good when they do not hold.
    Validate(Validation),
}

impl Step {
    pub fn type_name(&self) -> &'static str {
        match self {
            Step::Sql { .. } => "sql",
            Step::Copy { .. } => "copy",
            Step::Exec(_) => "exec",
            Step::Validate(_) => "validate",
        }
    }

    /// Whether the step changes the dataset (sql, copy, an exec that writes).
    pub fn transforms(&self) -> bool {
        !matches!(self, Step::Validate(_))
    }
}

/// `exec`: runs `command` with the step (as JSON) on stdin and, in its
/// environment, `SKEIN_SOURCE_URL`, `SKEIN_SOURCE_FORMAT` (the primary
/// source; in a partition, the URL of the partition's first file),
/// `SKEIN_TARGET_URL`, `SKEIN_TARGET_FORMAT`, `SKEIN_INPUT` (a local file
/// holding the dataset so far, in `input_format`) and `SKEIN_OUTPUT_DIR`.
/// Files the program writes into `SKEIN_OUTPUT_DIR` (in `output_format`)
/// become the dataset the next steps see; writing none leaves it as it was.
/// Exit 0 is success, 75 a retryable failure, anything else permanent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecStep {
    /// The program and its arguments.
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Killed (and retried) after this long; default 10 minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Default `jsonl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_format: Option<Format>,
    /// Default: `input_format`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_format: Option<Format>,
}

/// `validate`: every check given must hold. `target` is the dataset the
/// steps before produced (at the end of a plan: the output as staged, before
/// it is published).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    /// `equal`, or a boolean SQL expression over `source` and `target` (the
    /// row counts), e.g. `target >= source * 0.99`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_count: Option<String>,
    /// The target's columns, names and types, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schema: Vec<Column>,
    /// Columns whose values (as text) must checksum equal in source and target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<Checksum>,
    /// A SQL query over `source` and `target` that must return no rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assert: Option<String>,
}

impl Validation {
    pub fn is_empty(&self) -> bool {
        self.row_count.is_none() && self.schema.is_empty() && self.checksum.is_none() && self.assert.is_none()
    }
}

/// An order-independent checksum of some columns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checksum {
    pub columns: Vec<String>,
}

/// A migration plan's `spec` fields that skein runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationSpec {
    /// Every source, by the table name the SQL sees it under; a plan's
    /// `source:` is `{"source": ...}`. The [`primary`](Self::primary) one is
    /// also the table `source` (validations count and checksum against it).
    pub sources: BTreeMap<String, Dataset>,
    pub target: Dataset,
    pub steps: Vec<Step>,
}

/// The table name of a plan's single `source:`, and of the primary source.
pub const SOURCE_TABLE: &str = "source";

impl MigrationSpec {
    /// The source validations (`row_count`, `checksum`) and progress count
    /// against, and the table `source` of the SQL: the partitioned source,
    /// else the one named `source`, else the first by name.
    pub fn primary(&self) -> (&str, &Dataset) {
        if let Some((name, d, _)) = self.partitioned() {
            return (name, d);
        }
        if let Some((name, d)) = self.sources.get_key_value(SOURCE_TABLE) {
            return (name.as_str(), d);
        }
        match self.sources.iter().next() {
            Some((name, d)) => (name.as_str(), d),
            None => (SOURCE_TABLE, &NO_SOURCE),
        }
    }

    /// The partitioned source, if any (a plan has at most one).
    pub fn partitioned(&self) -> Option<(&str, &Dataset, &Partitioning)> {
        self.sources.iter().find_map(|(name, d)| d.partition.as_ref().map(|p| (name.as_str(), d, p)))
    }

    /// Whether the output is a set of files published as one version (a
    /// folder swapped in whole, or an object-store pointer) rather than the
    /// single file of a plain plan: a partitioned plan, or a target with
    /// `partition_by` or `max_rows_per_file`.
    pub fn versioned_output(&self) -> bool {
        self.partitioned().is_some() || !self.target.partition_by.is_empty() || self.target.max_rows_per_file.is_some()
    }
}
