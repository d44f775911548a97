//! The entry points of a versioned output: a partition's run
//! ([`run_partition`]), the commit of all partitions as one version
//! ([`commit`]), and both in one task for [`crate::run`].

use std::time::Instant;

use skein_plan::MigrationSpec;

use crate::error::MigrateError;
use crate::location::{format_of, Location};
use crate::output::FileLayout;
use crate::partition::{plan_partitions, Partition};
use crate::publish::Attempt;
use crate::version::{self, Commit, PartitionOutput, VersionedTarget};
use crate::{locate, memory_error, open_session, progress, roots, run_steps, Datasets, Options, Report, Scratch, Sink};

/// [`crate::run`] of a plan with a versioned output (see there).
pub(crate) async fn run_versioned(
    spec: &MigrationSpec,
    attempt: Attempt,
    opts: &Options,
) -> Result<Report, MigrateError> {
    let started = Instant::now();
    let generation = attempt.token;
    let parts = match spec.partitioned() {
        Some(_) => plan_partitions(spec, opts).await?,
        None => vec![Partition { index: 0, files: Vec::new(), bytes: 0, key: None }],
    };
    let mut outputs: Vec<PartitionOutput> = Vec::with_capacity(parts.len());
    let mut result = Ok(());
    for part in &parts {
        match run_partition_inner(spec, generation, part, attempt, opts).await {
            Ok(out) => outputs.push(out),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    let committed = match result {
        Ok(()) => commit(spec, generation, &outputs, attempt, opts).await,
        Err(e) => Err(e),
    };
    match committed {
        Ok(mut report) => {
            report.elapsed_ms = started.elapsed().as_millis() as u64;
            Ok(report)
        }
        Err(e) => {
            tracing::warn!(task_id = attempt.task, token = attempt.token, error = %e, "output not published");
            // A refused target may now lead out of its root: leave it alone.
            if !e.is_forbidden() {
                if let Ok(vt) = versioned_target(spec, opts) {
                    for out in &outputs {
                        vt.discard(generation, out.index, out.token).await;
                    }
                }
            }
            Err(e)
        }
    }
}

/// Runs the plan's steps over one partition and stages its output,
/// unpublished, for a later [`commit`]: the partitioned source is
/// registered (under its name, and as `source`) from exactly the
/// partition's files, checked to be inside it; every other source whole.
/// `validate` steps see this partition's slice as `source` and its staged
/// files as `target`. The output is written as files (`max_rows_per_file`
/// at most each, in hive folders for `partition_by`, named
/// `p<index>-<token>-<n>.<ext>`: unique across partitions and versions)
/// and staged under the target's control folder at
/// `runs/<generation>/part-<index>/<token>/` (see [`version`]). The fence
/// is not asked: nothing is published here; the node records the output
/// through a fenced completion. For a plan that is not partitioned, the
/// one partition is index 0 (its `files` are not used).
///
/// In an `exec` step of a partition, `SKEIN_SOURCE_URL` is the URL of the
/// partition's first file.
pub async fn run_partition(
    spec: &MigrationSpec,
    generation: u64,
    part: &Partition,
    attempt: Attempt,
    opts: &Options,
) -> Result<PartitionOutput, MigrateError> {
    run_partition_inner(spec, generation, part, attempt, opts).await.map_err(|e| memory_error(e, opts.memory_limit))
}

async fn run_partition_inner(
    spec: &MigrationSpec,
    generation: u64,
    part: &Partition,
    attempt: Attempt,
    opts: &Options,
) -> Result<PartitionOutput, MigrateError> {
    let started = Instant::now();
    if !spec.versioned_output() {
        return Err(MigrateError::Plan("the plan's output is a single file: run() stages and publishes it".into()));
    }
    let slice = spec.partitioned().map(|_| part);
    if slice.is_none() && part.index != 0 {
        return Err(MigrateError::Plan(format!(
            "the plan is not partitioned: its one partition is 0, not {}",
            part.index
        )));
    }
    let Datasets { sources, dst, dst_root, dst_format } = locate(spec, opts)?;
    let vt = VersionedTarget::of(&dst, dst_root)?;
    let scratch = Scratch::create(&opts.scratch_dir, &attempt, Some(part.index))?;
    let (ctx, source_url, rows_total) = open_session(spec, opts, &sources, &dst, &scratch, slice).await?;
    let (dir, upload) = match &vt {
        VersionedTarget::Local { control, .. } => {
            (VersionedTarget::staged_dir(control, generation, part.index, attempt.token), None)
        }
        VersionedTarget::Remote { key, .. } => (
            scratch.path.join("output"),
            Some(VersionedTarget::staged_prefix(key, generation, part.index, attempt.token)),
        ),
    };
    let layout = FileLayout {
        format: dst_format,
        partition_by: spec.target.partition_by.clone(),
        max_rows_per_file: spec.target.max_rows_per_file,
        index: part.index,
        token: attempt.token,
    };
    let sink = Sink::Files { vt, dir, layout, upload };
    let done = run_steps(&ctx, spec, &attempt, opts, &scratch, &sink, rows_total, &source_url).await;
    let Sink::Files { vt, .. } = &sink else { unreachable!("a files sink") };
    let done = match done {
        Ok(d) => d,
        Err(e) => {
            // A refused target may now lead out of its root: leave it alone.
            if !e.is_forbidden() {
                vt.discard(generation, part.index, attempt.token).await;
            }
            return Err(e);
        }
    };
    Ok(PartitionOutput {
        index: part.index,
        token: attempt.token,
        rows: done.staged.written.rows,
        bytes: done.staged.written.bytes,
        files: done.staged.files,
        source_rows: done.source_rows.or(rows_total),
        steps: done.lines,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

/// Publishes one complete version of the target from exactly `parts`,
/// each read from its own staging (`runs/<generation>/part-<index>/<token>/`,
/// computed from the output's index and token, never taken from it), once
/// `opts.fence` confirms the lease: a local folder target is swapped
/// whole; an object store's pointer moves (see [`version`]). Refused
/// ([`MigrateError::Fenced`]) if a newer token already published. A
/// retried commit of the same generation and outputs returns the report
/// recorded the first time.
pub async fn commit(
    spec: &MigrationSpec,
    generation: u64,
    parts: &[PartitionOutput],
    attempt: Attempt,
    opts: &Options,
) -> Result<Report, MigrateError> {
    let started = Instant::now();
    if !spec.versioned_output() {
        return Err(MigrateError::Plan("the plan's output is a single file: run() stages and publishes it".into()));
    }
    let vt = versioned_target(spec, opts)?;
    let format = format_of(&spec.target, "target")?;
    version::check_parts(parts)?;
    if let Some(f) = &opts.fence {
        f().await.map_err(MigrateError::Fenced)?;
    }
    let steps = spec.steps.len();
    let rows: u64 = parts.iter().map(|p| p.rows).sum();
    progress(opts, steps + 1, steps, "publish", rows, None);
    let mut sorted: Vec<&PartitionOutput> = parts.iter().collect();
    sorted.sort_by_key(|p| p.index);
    let files: usize = parts.iter().map(|p| p.files.len()).sum();
    let mut lines = Vec::new();
    if let [one] = sorted.as_slice() {
        lines.extend(one.steps.iter().cloned());
    } else {
        // A line per partition (a few): the report is the task's result.
        const SHOWN: usize = 20;
        for p in sorted.iter().take(SHOWN) {
            lines.push(format!(
                "partition {}: {} rows in {} files (token {})",
                p.index,
                p.rows,
                p.files.len(),
                p.token
            ));
        }
        if sorted.len() > SHOWN {
            lines.push(format!("... and {} more partitions", sorted.len() - SHOWN));
        }
    }
    lines.push(format!(
        "commit: {} partition(s), {files} file(s), {rows} rows, version {generation}-{}",
        parts.len(),
        attempt.token
    ));
    let report = Report {
        target: vt.display(),
        format: format.to_string(),
        rows_written: rows,
        bytes: parts.iter().map(|p| p.bytes).sum(),
        token: attempt.token,
        steps: lines,
        elapsed_ms: started.elapsed().as_millis() as u64,
    };
    let manifest = if matches!(vt, VersionedTarget::Local { .. }) {
        // Renames, fsyncs and a file lock: on a blocking thread.
        let owned = parts.to_vec();
        tokio::task::spawn_blocking(move || {
            version::commit_local(&vt, &Commit { generation, parts: &owned, attempt, report })
        })
        .await
        .map_err(|e| MigrateError::Storage(format!("publishing: {e}")))??
    } else {
        version::commit_remote(&vt, &Commit { generation, parts, attempt, report }).await?
    };
    Ok(manifest.report)
}

/// The plan's target as a versioned one, the policy checked.
fn versioned_target(spec: &MigrationSpec, opts: &Options) -> Result<VersionedTarget, MigrateError> {
    let dst_root = roots::check_location(opts.policy.as_deref(), "target", &spec.target.url)?;
    let dst = Location::parse_in(&spec.target.url, dst_root.as_ref(), &roots::Env::process())?;
    VersionedTarget::of(&dst, dst_root)
}
