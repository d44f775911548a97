//! skein-migrate: the migration engine. It runs one plan's steps for one
//! attempt of a `migration` task and publishes the target under the
//! attempt's fencing token.
//!
//! - [`location`]: local paths and `file://` / `s3://` URLs, files and folders;
//! - [`io`]: registering datasets with DataFusion, writing Parquet, CSV and
//!   JSON lines;
//! - [`checks`]: `validate` steps (row counts, schema, checksums, assertions);
//! - [`exec`]: `exec` steps (an external program);
//! - [`roots`]: the worker's side of the policy (data roots, confinement
//!   of local paths, object-store credentials, allowed programs);
//! - [`publish`]: the fenced output protocol (stage privately, publish
//!   atomically, never over a newer result) for a plan's single file;
//! - [`partition`]: splitting a partitioned source into partitions;
//! - [`output`]: writing many files (hive folders, rows per file);
//! - [`version`]: publishing many files as one version (a folder swapped
//!   in whole, or an object-store pointer);
//! - [`run`]: the whole migration; [`plan_partitions`], [`run_partition`]
//!   and [`commit`] (in `partitioned.rs`): a partitioned one, a task per
//!   partition and one to publish them together.
//!
//! Only this crate and `skein-node` depend on DataFusion.

pub mod checks;
pub mod error;
pub mod exec;
pub mod io;
pub mod location;
pub mod output;
pub mod partition;
mod partitioned;
pub mod publish;
pub mod roots;
pub mod version;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use datafusion::dataframe::DataFrame;
use futures::future::BoxFuture;
use object_store::path::Path as ObjectPath;
use serde::{Deserialize, Serialize};
use skein_plan::{Dataset, Format, MigrationSpec, Step};
use skein_raft::fsm::policy::{DataRoot, PolicyState};

pub use error::MigrateError;
pub use output::StagedFile;
pub use partition::{plan_partitions, Partition};
pub use partitioned::{commit, run_partition};
pub use publish::{Attempt, PublishedRecord};
pub use version::PartitionOutput;

use crate::io::{register, register_frame, register_paths, register_store, session_for, write_local, Written};
use crate::location::{format_of, Location};
use crate::output::{write_files, FileLayout};
use crate::partition::{partition_paths, source_label};
use crate::publish::{LocalTarget, RemoteTarget};
use crate::version::VersionedTarget;

/// How far a migration is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// 1-based; `steps + 1` while publishing.
    pub step: usize,
    pub steps: usize,
    /// `sql`, `copy`, `exec`, `validate`, `write`, `publish`.
    pub what: &'static str,
    pub rows_done: u64,
    /// The source's row count when cheap to know (Parquet metadata).
    pub rows_total: Option<u64>,
}

impl Progress {
    /// A fraction for the heartbeat, 0.0 to 1.0.
    pub fn fraction(&self) -> f32 {
        match self.rows_total {
            Some(t) if t > 0 && self.what == "write" => (self.rows_done as f32 / t as f32).min(0.99),
            _ => ((self.step.saturating_sub(1)) as f32 / (self.steps + 1) as f32).min(0.99),
        }
    }

    /// A line for people: `step 2/3 (write): 120000 of 1000000 rows`.
    pub fn message(&self) -> String {
        let rows = match (self.rows_done, self.rows_total) {
            (0, _) => String::new(),
            (d, Some(t)) => format!(": {d} of {t} rows"),
            (d, None) => format!(": {d} rows"),
        };
        if self.step > self.steps {
            format!("{}{rows}", self.what)
        } else {
            format!("step {}/{} ({}){rows}", self.step, self.steps, self.what)
        }
    }
}

/// Called with progress as the migration goes.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;
/// Called right before publishing: `Ok` if the attempt still holds a
/// current lease (the node renews it through the state machine), `Err`
/// with why not.
pub type FenceFn = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// How to run a migration.
#[derive(Clone)]
pub struct Options {
    /// A local folder for temporary files (exec inputs, object-store staging).
    pub scratch_dir: PathBuf,
    pub progress: Option<ProgressFn>,
    pub fence: Option<FenceFn>,
    /// The fleet's policy as this node applied it: data roots and allowed
    /// programs, checked again right before a dataset is opened, a target
    /// written or a program started (see [`roots`]). `None`, or a policy
    /// not enforced: any location and program (but `.`, `..` and `_skein`
    /// are refused when a policy is given), object stores set up from the
    /// environment.
    pub policy: Option<Arc<PolicyState>>,
    /// At most this many bytes for DataFusion's operators (the node's
    /// `--migrate-memory`): sorts and aggregations spill to
    /// `scratch_dir` beyond it; what cannot spill (a hash join's build
    /// side) fails the migration for good, saying so. `None`: unbounded.
    pub memory_limit: Option<u64>,
    /// How many streams DataFusion runs in parallel; `None`: its default
    /// (the number of cores).
    pub target_partitions: Option<usize>,
}

impl Options {
    pub fn new(scratch_dir: impl Into<PathBuf>) -> Options {
        Options {
            scratch_dir: scratch_dir.into(),
            progress: None,
            fence: None,
            policy: None,
            memory_limit: None,
            target_partitions: None,
        }
    }

    /// Runs within `bytes` of memory (see [`Options::memory_limit`]).
    pub fn with_memory_limit(mut self, bytes: u64) -> Options {
        self.memory_limit = Some(bytes);
        self
    }

    /// Runs `n` streams in parallel (see [`Options::target_partitions`]).
    pub fn with_target_partitions(mut self, n: usize) -> Options {
        self.target_partitions = Some(n);
        self
    }

    /// Runs under `policy` (see [`Options::policy`]).
    pub fn with_policy(mut self, policy: Arc<PolicyState>) -> Options {
        self.policy = Some(policy);
        self
    }
}

/// What a migration did: the task's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The dataset readers see (for an object-store versioned target: the
    /// folder whose `_skein/current.json` points at the version).
    pub target: String,
    pub format: String,
    pub rows_written: u64,
    pub bytes: u64,
    /// The fencing token the output was published under.
    pub token: u64,
    /// One line per step.
    pub steps: Vec<String>,
    pub elapsed_ms: u64,
}

/// The output as staged, before publication.
pub(crate) struct Staged {
    /// A local copy of the output (for local targets: the staged file or
    /// folder itself).
    pub(crate) local: PathBuf,
    pub(crate) written: Written,
    /// The files of a versioned output (empty for a single file).
    pub(crate) files: Vec<StagedFile>,
}

/// Runs `spec` for `attempt`: every step in order, the output staged under
/// the attempt's token, validated, and published only if the fence allows.
///
/// A plan with a versioned output ([`MigrationSpec::versioned_output`]) is
/// run here as one task: its partitions ([`plan_partitions`]; one of the
/// whole sources for a plan that is not partitioned) one after the other
/// with [`run_partition`], then a [`commit`], all under this attempt, with
/// the attempt's token as the generation (it names the staging and version
/// folders: `runs/<token>/...`, `versions/<token>-<token>/`). The node runs
/// a partitioned plan as a task per partition instead.
pub async fn run(spec: &MigrationSpec, attempt: Attempt, opts: &Options) -> Result<Report, MigrateError> {
    let result = if spec.versioned_output() {
        partitioned::run_versioned(spec, attempt, opts).await
    } else {
        run_single(spec, attempt, opts).await
    };
    result.map_err(|e| memory_error(e, opts.memory_limit))
}

/// The single-file plan: the fenced publication of `publish`.
async fn run_single(spec: &MigrationSpec, attempt: Attempt, opts: &Options) -> Result<Report, MigrateError> {
    let started = Instant::now();
    let Datasets { sources, dst, dst_root, dst_format } = locate(spec, opts)?;
    let scratch = Scratch::create(&opts.scratch_dir, &attempt, None)?;
    let (ctx, source_url, rows_total) = open_session(spec, opts, &sources, &dst, &scratch, None).await?;
    let target = match &dst {
        Location::Local { path, folder } => Target::Local {
            t: LocalTarget::new(path, *folder, dst_format.extension()),
            path: path.clone(),
            root: dst_root.clone(),
        },
        Location::Remote { store, key, folder, .. } => {
            Target::Remote(RemoteTarget::new(store.clone(), key, *folder, dst_format.extension()))
        }
    };
    let sink = Sink::Single { target, format: dst_format };
    let steps = spec.steps.len();
    let done = run_steps(&ctx, spec, &attempt, opts, &scratch, &sink, rows_total, &source_url).await?;
    let Sink::Single { target, .. } = &sink else { unreachable!("a single-file sink") };
    let staged = done.staged;
    progress(opts, steps + 1, steps, "publish", staged.written.rows, rows_total);
    let published = publish(target, &staged, &attempt, opts.fence.as_ref()).await;
    if let Err(e) = &published {
        tracing::warn!(task_id = attempt.task, token = attempt.token, error = %e, "output not published");
        // A refused target may now lead out of its root: leave it alone.
        if !e.is_forbidden() {
            target.discard(attempt.token).await;
        }
    }
    published?;
    Ok(Report {
        target: target.display(),
        format: dst_format.to_string(),
        rows_written: staged.written.rows,
        bytes: staged.written.bytes,
        token: attempt.token,
        steps: done.lines,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

/// A plan's datasets, checked against the policy (lexically, before
/// anything is parsed, built or opened) and located.
pub(crate) struct Datasets<'a> {
    pub(crate) sources: Vec<Source<'a>>,
    pub(crate) dst: Location,
    pub(crate) dst_root: Option<DataRoot>,
    pub(crate) dst_format: Format,
}

pub(crate) fn locate<'a>(spec: &'a MigrationSpec, opts: &Options) -> Result<Datasets<'a>, MigrateError> {
    let policy = opts.policy.as_deref();
    let checked = check_sources(spec, policy)?;
    let dst_root = roots::check_location(policy, "target", &spec.target.url)?;
    let env = roots::Env::process();
    let sources = parse_sources(checked, &env)?;
    let dst = Location::parse_in(&spec.target.url, dst_root.as_ref(), &env)?;
    let dst_format = format_of(&spec.target, "target")?;
    Ok(Datasets { sources, dst, dst_root, dst_format })
}

/// The attempt's session (spilling under its scratch folder) with every
/// dataset's store known and the sources registered (the partitioned one
/// from `slice` only): the session, the URL `exec` steps see as the source,
/// and the primary source's row count when cheap to know.
pub(crate) async fn open_session(
    spec: &MigrationSpec,
    opts: &Options,
    sources: &[Source<'_>],
    dst: &Location,
    scratch: &Scratch,
    slice: Option<&partition::Partition>,
) -> Result<(datafusion::prelude::SessionContext, String, Option<u64>), MigrateError> {
    let ctx = session_for(opts, &scratch.path.join("spill"))?;
    for s in sources {
        register_store(&ctx, &s.loc);
    }
    register_store(&ctx, dst);
    let source_url = register_sources(&ctx, spec, sources, slice).await?;
    let rows_total = rows_total(&ctx, spec).await;
    Ok((ctx, source_url, rows_total))
}

/// A source of the plan, located.
pub(crate) struct Source<'a> {
    name: &'a str,
    ds: &'a Dataset,
    loc: Location,
    root: Option<DataRoot>,
    format: Format,
}

/// The policy's lexical check of every source (before anything is parsed).
pub(crate) fn check_sources<'a>(
    spec: &'a MigrationSpec,
    policy: Option<&PolicyState>,
) -> Result<Vec<(&'a str, &'a Dataset, Option<DataRoot>)>, MigrateError> {
    if spec.sources.is_empty() {
        return Err(MigrateError::Plan("the plan has no source".into()));
    }
    spec.sources
        .iter()
        .map(|(name, ds)| Ok((name.as_str(), ds, roots::check_location(policy, &source_label(name), &ds.url)?)))
        .collect()
}

pub(crate) fn parse_sources<'a>(
    checked: Vec<(&'a str, &'a Dataset, Option<DataRoot>)>,
    env: &roots::Env,
) -> Result<Vec<Source<'a>>, MigrateError> {
    checked
        .into_iter()
        .map(|(name, ds, root)| {
            let loc = Location::parse_in(&ds.url, root.as_ref(), env)?;
            let format = format_of(ds, &source_label(name))?;
            Ok(Source { name, ds, loc, root, format })
        })
        .collect()
}

/// Registers every source under its name (the partitioned one from the
/// slice's files only, when given), and the primary one also as `source`.
/// Returns the URL `exec` steps see as the source.
pub(crate) async fn register_sources(
    ctx: &datafusion::prelude::SessionContext,
    spec: &MigrationSpec,
    sources: &[Source<'_>],
    slice: Option<&Partition>,
) -> Result<String, MigrateError> {
    let partitioned = spec.partitioned().map(|(name, _, _)| name);
    let mut source_url = spec.primary().1.url.clone();
    for s in sources {
        // Links change after the apply: resolve them right before opening.
        roots::confine_source(&s.loc, s.root.as_ref())?;
        match slice.filter(|_| partitioned == Some(s.name)) {
            Some(part) => {
                let paths = partition_paths(&s.loc, s.format, part)?;
                source_url = part.files.first().cloned().unwrap_or(source_url);
                register_paths(ctx, s.name, paths, s.format, Some(s.ds), &[]).await?;
            }
            None => register(ctx, s.name, &s.loc, s.format, Some(s.ds)).await?,
        }
    }
    let (primary, _) = spec.primary();
    if primary != skein_plan::SOURCE_TABLE {
        let table = ctx.table_provider(primary).await?;
        ctx.register_table(skein_plan::SOURCE_TABLE, table)?;
    }
    Ok(source_url)
}

/// The primary source's row count when cheap to know (Parquet metadata).
pub(crate) async fn rows_total(ctx: &datafusion::prelude::SessionContext, spec: &MigrationSpec) -> Option<u64> {
    if spec.primary().1.format() != Some(Format::Parquet) {
        return None;
    }
    ctx.table(skein_plan::SOURCE_TABLE).await.ok()?.count().await.ok().map(|n| n as u64)
}

pub(crate) fn progress(
    opts: &Options,
    step: usize,
    steps: usize,
    what: &'static str,
    rows_done: u64,
    rows_total: Option<u64>,
) {
    if let Some(p) = &opts.progress {
        p(&Progress { step, steps, what, rows_done, rows_total });
    }
}

/// Where the steps' output goes.
pub(crate) enum Sink {
    /// A plain plan's one file, published by [`publish`].
    Single { target: Target, format: Format },
    /// A versioned output's files, into `dir` (a local target's staging
    /// folder itself; for an object store a scratch folder, uploaded to
    /// `upload` after).
    Files { vt: VersionedTarget, dir: PathBuf, layout: FileLayout, upload: Option<ObjectPath> },
}

/// What the steps left: the staged output, a line per step and the
/// source's row count if a validation counted it.
pub(crate) struct StepsDone {
    pub(crate) staged: Staged,
    pub(crate) lines: Vec<String>,
    pub(crate) source_rows: Option<u64>,
}

/// Every step in order; the output staged at the end, or before the
/// validations after the last transforming step (they check it as staged).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_steps(
    ctx: &datafusion::prelude::SessionContext,
    spec: &MigrationSpec,
    attempt: &Attempt,
    opts: &Options,
    scratch: &Scratch,
    sink: &Sink,
    rows_total: Option<u64>,
    source_url: &str,
) -> Result<StepsDone, MigrateError> {
    let policy = opts.policy.as_deref();
    let steps = spec.steps.len();
    let report =
        |step: usize, what: &'static str, rows_done: u64| progress(opts, step, steps, what, rows_done, rows_total);
    let last_transform = spec.steps.iter().rposition(Step::transforms);
    let mut current: DataFrame = ctx.table(skein_plan::SOURCE_TABLE).await?;
    let mut staged: Option<Staged> = None;
    let mut source_rows: Option<u64> = None;
    let mut lines = Vec::with_capacity(steps);
    for (i, step) in spec.steps.iter().enumerate() {
        let n = i + 1;
        report(n, step.type_name(), 0);
        match step {
            Step::Sql { query } => {
                register_frame(ctx, "input", &current)?;
                current = ctx
                    .sql_with_options(query, queries_only())
                    .await
                    .map_err(|e| MigrateError::Plan(format!("step {n} (sql): {}", MigrateError::from(e))))?;
                lines.push(format!("step {n} sql: {} columns", current.schema().fields().len()));
            }
            Step::Copy { schema } => {
                if !schema.is_empty() {
                    register_frame(ctx, "input", &current)?;
                    let sql = cast_query(&current, schema)?;
                    current = ctx
                        .sql_with_options(&sql, queries_only())
                        .await
                        .map_err(|e| MigrateError::Plan(format!("step {n} (copy): {e}")))?;
                    lines.push(format!("step {n} copy: cast {} columns", schema.len()));
                } else {
                    lines.push(format!("step {n} copy"));
                }
            }
            Step::Exec(x) => {
                let dir = scratch.path.join(format!("exec-{n}"));
                match exec::run_exec(ctx, x, n, &current, spec, source_url, attempt, &dir, policy).await? {
                    Some(df) => {
                        current = df;
                        lines.push(format!("step {n} exec: {:?} wrote a new dataset", x.command[0]));
                    }
                    None => lines.push(format!("step {n} exec: {:?} succeeded", x.command[0])),
                }
            }
            Step::Validate(v) => {
                // After the last transforming step, validate the output as staged.
                let target_df = if last_transform.is_none_or(|l| i > l) {
                    if staged.is_none() {
                        staged = Some(stage(&current, sink, attempt, scratch, &|r| report(n, "write", r)).await?);
                    }
                    let s = staged.as_ref().map(|s| s.local.clone()).unwrap_or_default();
                    match sink {
                        Sink::Single { format, .. } => {
                            let loc = Location::Local { path: s, folder: false };
                            register(ctx, "staged_target", &loc, *format, None).await?;
                        }
                        Sink::Files { layout, .. } => {
                            let folder = vec![format!("{}/", s.display())];
                            register_paths(ctx, "staged_target", folder, layout.format, None, &layout.partition_by)
                                .await?;
                        }
                    }
                    ctx.table("staged_target").await?
                } else {
                    current.clone()
                };
                for line in checks::validate(ctx, v, &target_df, &mut source_rows).await? {
                    lines.push(format!("step {n} validate: {line}"));
                }
            }
        }
    }
    let staged = match staged {
        Some(s) => s,
        None => stage(&current, sink, attempt, scratch, &|r| report(steps + 1, "write", r)).await?,
    };
    Ok(StepsDone { staged, lines, source_rows })
}

/// The node's memory limit, named in the error a query that needs more
/// than it fails with (DataFusion's `ResourcesExhausted`). Permanent: the
/// same plan needs the same memory next time.
pub(crate) fn memory_error(e: MigrateError, limit: Option<u64>) -> MigrateError {
    match (e, limit) {
        (MigrateError::Plan(m), Some(limit)) if m.contains("Resources exhausted") => MigrateError::Plan(format!(
            "the migration needs more than the node's --migrate-memory of {}: {m}",
            human_bytes(limit)
        )),
        (e, _) => e,
    }
}

/// `512 MiB`, `2 GiB`, `1000 bytes`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (size, unit) in UNITS {
        if n >= size && n % size == 0 {
            return format!("{} {unit}", n / size);
        }
    }
    format!("{n} bytes")
}

enum Target {
    Local {
        t: LocalTarget,
        /// The target as the plan names it (a file or a folder).
        path: PathBuf,
        /// The data root it must stay under (policy enforced).
        root: Option<DataRoot>,
    },
    Remote(RemoteTarget),
}

impl Target {
    fn display(&self) -> String {
        match self {
            Target::Local { t, .. } => format!("file://{}", t.final_path.display()),
            Target::Remote(t) => format!("{}", t.final_key),
        }
    }

    async fn discard(&self, token: u64) {
        match self {
            Target::Local { t, .. } => publish::discard_local(t, token),
            Target::Remote(t) => publish::discard_remote(t, token).await,
        }
    }

    /// Confines a local target to its root (right before writing to it).
    fn confine(&self, token: u64) -> Result<(), MigrateError> {
        match self {
            Target::Local { t, path, root } => roots::confine_target(path, t, token, root.as_ref()),
            Target::Remote(_) => Ok(()),
        }
    }
}

/// Writes the output where the attempt stages it: for a local target
/// straight into its private attempt folder; for an object store into the
/// scratch folder, then uploaded to the attempt's private key.
async fn stage(
    current: &DataFrame,
    sink: &Sink,
    attempt: &Attempt,
    scratch: &Scratch,
    on_rows: &(dyn Fn(u64) + Sync),
) -> Result<Staged, MigrateError> {
    match sink {
        Sink::Single { target: target @ Target::Local { t, .. }, format } => {
            target.confine(attempt.token)?;
            let local = t.staged(attempt.token);
            let written = write_local(current.clone(), *format, &local, on_rows).await?;
            Ok(Staged { local, written, files: Vec::new() })
        }
        Sink::Single { target: Target::Remote(t), format } => {
            let local = scratch.path.join(format!("output.{}", format.extension()));
            let written = write_local(current.clone(), *format, &local, on_rows).await?;
            publish::upload(&t.store, &local, &t.staged(attempt.token)).await?;
            Ok(Staged { local, written, files: Vec::new() })
        }
        Sink::Files { vt, dir, layout, upload } => {
            vt.confine()?;
            // A retry under the same token starts over.
            if dir.exists() {
                std::fs::remove_dir_all(dir)?;
            }
            let files = write_files(current.clone(), layout, dir, on_rows).await?;
            if let (VersionedTarget::Remote { store, .. }, Some(prefix)) = (vt, upload) {
                for f in &files {
                    publish::upload(store, &dir.join(&f.path), &version::join_rel(prefix, &f.path)).await?;
                }
            }
            let written =
                Written { rows: files.iter().map(|f| f.rows).sum(), bytes: files.iter().map(|f| f.bytes).sum() };
            Ok(Staged { local: dir.clone(), written, files })
        }
    }
}

async fn publish(
    target: &Target,
    staged: &Staged,
    attempt: &Attempt,
    fence: Option<&FenceFn>,
) -> Result<(), MigrateError> {
    if let Some(f) = fence {
        f().await.map_err(MigrateError::Fenced)?;
    }
    match target {
        Target::Local { t, .. } => {
            target.confine(attempt.token)?;
            let (t, a, rows) = (t.clone(), *attempt, staged.written.rows);
            tokio::task::spawn_blocking(move || publish::publish_local(&t, &a, rows))
                .await
                .map_err(|e| MigrateError::Storage(format!("publishing: {e}")))?
        }
        Target::Remote(t) => publish::publish_remote(t, attempt, staged.written.rows).await,
    }
}

/// `SELECT CAST("a" AS type) AS "a", "b", ... FROM input` for a copy step.
fn cast_query(current: &DataFrame, schema: &[skein_plan::Column]) -> Result<String, MigrateError> {
    let fields = current.schema().fields();
    for c in schema {
        if !fields.iter().any(|f| f.name() == &c.name) {
            let have: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
            return Err(MigrateError::Plan(format!(
                "copy: no column {:?} to cast (columns: {})",
                c.name,
                have.join(", ")
            )));
        }
    }
    let cols: Vec<String> = fields
        .iter()
        .map(|f| {
            let q = quote(f.name());
            match schema.iter().find(|c| &c.name == f.name()) {
                Some(c) => format!("CAST({q} AS {}) AS {q}", checks::sql_type(&c.data_type)),
                None => q,
            }
        })
        .collect();
    Ok(format!("SELECT {} FROM input", cols.join(", ")))
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A scratch folder private to the attempt, removed when the run ends.
pub(crate) struct Scratch {
    pub(crate) path: PathBuf,
}

impl Scratch {
    pub(crate) fn create(base: &Path, a: &Attempt, part: Option<u32>) -> Result<Scratch, MigrateError> {
        let mut name = format!("task-{}-token-{}", a.task, a.token);
        if let Some(i) = part {
            name.push_str(&format!("-part-{i}"));
        }
        let path = base.join(name);
        std::fs::create_dir_all(&path)?;
        Ok(Scratch { path })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// What a plan's SQL may be: queries over the plan's datasets, nothing else.
/// No DDL (`CREATE EXTERNAL TABLE` would read any path the node can reach),
/// no DML (`COPY ... TO`, `INSERT` would write one), no statements (`SET`
/// would change the session's settings, `PREPARE`...). Every SQL text of a
/// plan (steps, validations, assertions) runs with these options.
pub fn queries_only() -> datafusion::execution::context::SQLOptions {
    datafusion::execution::context::SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Refuses, before a plan is stored, SQL that [`queries_only`] would refuse
/// when it runs: every statement must be a query (`SELECT`, `WITH`,
/// `VALUES`). Text that does not parse is left to the run's own error.
pub fn check_query(sql: &str) -> Result<(), String> {
    use datafusion::sql::parser::{DFParser, Statement};
    let Ok(statements) = DFParser::parse_sql(sql) else {
        return Ok(());
    };
    for statement in statements {
        let ok = matches!(&statement, Statement::Statement(s) if matches!(**s, datafusion::sql::sqlparser::ast::Statement::Query(_)));
        if !ok {
            let text = statement.to_string();
            let first: String = text.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
            return Err(format!(
                "plan SQL may only query the plan's datasets (SELECT, WITH, VALUES); `{first} ...` is not a query"
            ));
        }
    }
    Ok(())
}
