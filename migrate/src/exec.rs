//! `exec` steps: an external program for what SQL cannot do. It reads the
//! dataset so far from `SKEIN_INPUT` and may write a new one into
//! `SKEIN_OUTPUT_DIR` (see [`skein_plan::ExecStep`]).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use datafusion::dataframe::DataFrame;
use datafusion::prelude::SessionContext;
use skein_plan::{ExecStep, Format, MigrationSpec};
use skein_raft::fsm::policy::PolicyState;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::error::MigrateError;
use crate::io::{register, write_local};
use crate::location::Location;
use crate::publish::Attempt;
use crate::roots::check_exec;

/// Exit code meaning "try again later" (sysexits' EX_TEMPFAIL).
pub const EXIT_RETRY: i32 = 75;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// Bytes of an exec's stderr kept for its error message (the newest).
const STDERR_KEPT: usize = 8 * 1024;

/// Runs step `index`; returns the dataset it wrote, if it wrote one.
/// `source_url` is what the program sees as `SKEIN_SOURCE_URL`: the
/// primary source's URL, or in a partition its first file's. The
/// program must be allowed by `policy` (checked first, before anything is
/// written or started; see [`crate::roots::check_exec`]).
#[allow(clippy::too_many_arguments)]
pub async fn run_exec(
    ctx: &SessionContext,
    step: &ExecStep,
    index: usize,
    current: &DataFrame,
    spec: &MigrationSpec,
    source_url: &str,
    attempt: &Attempt,
    dir: &Path,
    policy: Option<&PolicyState>,
) -> Result<Option<DataFrame>, MigrateError> {
    // The worker's own check, against its applied policy, before this
    // step does anything; refused, nothing is written and nothing started.
    check_exec(policy, index, &step.command)?;
    let in_format = step.input_format.unwrap_or(Format::Jsonl);
    let out_format = step.output_format.unwrap_or(in_format);
    let input = dir.join(format!("input.{}", in_format.extension()));
    let out_dir = dir.join("out");
    std::fs::create_dir_all(&out_dir)?;
    write_local(current.clone(), in_format, &input, |_| {}).await?;

    let Some((program, args)) = step.command.split_first() else {
        return Err(MigrateError::Plan(format!("step {index}: exec command is empty")));
    };
    let fmt = |f: Option<Format>| f.map(|f| f.extension().to_string()).unwrap_or_default();
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(&step.env)
        .env("SKEIN_SOURCE_URL", source_url)
        .env("SKEIN_SOURCE_FORMAT", fmt(spec.primary().1.format()))
        .env("SKEIN_TARGET_URL", &spec.target.url)
        .env("SKEIN_TARGET_FORMAT", fmt(spec.target.format()))
        .env("SKEIN_INPUT", &input)
        .env("SKEIN_INPUT_FORMAT", in_format.extension())
        .env("SKEIN_OUTPUT_DIR", &out_dir)
        .env("SKEIN_OUTPUT_FORMAT", out_format.extension())
        .env("SKEIN_TASK_ID", attempt.task.to_string())
        .env("SKEIN_ATTEMPT", attempt.attempt.to_string())
        .env("SKEIN_TOKEN", attempt.token.to_string())
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| MigrateError::Exec {
        message: format!("step {index}: cannot run {program:?}: {e}"),
        retryable: false,
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        let bytes = serde_json::to_vec(step).unwrap_or_default();
        tokio::spawn(async move {
            let _ = stdin.write_all(&bytes).await;
        });
    }
    let mut stderr = child.stderr.take();
    // Each stderr line goes to the node's log as it comes (in the caller's
    // span: the worker's `task` span with its id, attempt and token); the
    // newest few KiB are kept for the error message.
    let read_err = async {
        let mut buf = Vec::new();
        if let Some(s) = stderr.take() {
            let mut lines = BufReader::new(s);
            let mut line = Vec::new();
            while lines.read_until(b'\n', &mut line).await.unwrap_or(0) > 0 {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end_matches(['\n', '\r']);
                tracing::info!(step = index, line = %text, "exec step stderr");
                buf.extend_from_slice(&line);
                let excess = buf.len().saturating_sub(STDERR_KEPT);
                if excess > 0 {
                    buf.drain(..excess);
                }
                line.clear();
            }
        }
        buf
    };
    let timeout = step.timeout_ms.map_or(DEFAULT_TIMEOUT, Duration::from_millis);
    let (err, status) = match tokio::time::timeout(timeout, async { (read_err.await, child.wait().await) }).await {
        Ok(r) => r,
        Err(_) => {
            return Err(MigrateError::Exec {
                message: format!("step {index}: {program:?} timed out after {} ms", timeout.as_millis()),
                retryable: true,
            })
        }
    };
    let status = status.map_err(|e| MigrateError::Exec {
        message: format!("step {index}: waiting for {program:?}: {e}"),
        retryable: true,
    })?;
    let text = String::from_utf8_lossy(&err);
    let tail: String = {
        let t = text.trim();
        let start = t.len().saturating_sub(1024);
        let start = (start..t.len()).find(|i| t.is_char_boundary(*i)).unwrap_or(t.len());
        t[start..].to_string()
    };
    if !status.success() {
        let code = status.code();
        return Err(MigrateError::Exec {
            message: match code {
                Some(c) => format!("step {index}: {program:?} exited with {c}: {tail}"),
                None => format!("step {index}: {program:?} was killed by a signal: {tail}"),
            },
            retryable: code == Some(EXIT_RETRY),
        });
    }
    let wrote = std::fs::read_dir(&out_dir)?.flatten().any(|e| e.path().is_file());
    if !wrote {
        return Ok(None);
    }
    let name = format!("exec_{index}");
    let loc = Location::Local { path: out_dir.clone(), folder: true };
    register(ctx, &name, &loc, out_format, None).await.map_err(|e| {
        MigrateError::Plan(format!(
            "step {index}: reading what {program:?} wrote to SKEIN_OUTPUT_DIR as {out_format}: {e}"
        ))
    })?;
    Ok(Some(ctx.table(name.as_str()).await?))
}
