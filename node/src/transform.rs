//! Transforms: what running a task means, by its kind.
//!
//! - `noop`: succeeds at once (benchmarks, tests);
//! - `sleep`: payload `{"ms": N}`, waits N ms, reporting progress;
//! - `exec`: payload `{"command": ["prog", "arg", ...], "timeout_ms": N,
//!   "env": {"K": "V"}}` runs a program with the task as JSON on stdin and
//!   `SKEIN_TASK_ID`, `SKEIN_ATTEMPT`, `SKEIN_TOKEN` in its environment.
//!   Exit 0 succeeds with the last JSON line of stdout as the result, 75
//!   (EX_TEMPFAIL) is a retryable failure, anything else a permanent one.
//!   Its stderr goes to the node's log under the task's id.
//!
//! - `migration`: payload `{"entity_ref": "component:default/name"}` runs
//!   that plan from the replicated catalog (see [`crate::migration`]).
//!
//! Every transform stops when its `cancel` token fires (the lease was
//! revoked or ran out, or the node is shutting down) and then reports
//! nothing: an outcome is only ever sent under a lease the worker still holds.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use skein_raft::fsm::{Outcome, ReportedProgress};
use skein_transport::LeasedTask;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// What a running transform can touch.
#[derive(Clone)]
pub struct TaskContext {
    pub cancel: CancellationToken,
    /// The latest progress, sent with the next heartbeat.
    pub progress: Arc<Mutex<Option<ReportedProgress>>>,
    /// The node, for transforms that read the replicated state (the plan
    /// catalog) or confirm their lease (`migration`); `None` in unit tests.
    pub app: Option<crate::app::SharedApp>,
}

impl TaskContext {
    pub fn report(&self, fraction: f32, message: impl Into<String>) {
        if let Ok(mut p) = self.progress.lock() {
            *p = Some(ReportedProgress { fraction, message: message.into() });
        }
    }
}

/// Runs `task`; `None` when it was cancelled before it finished.
pub async fn run(task: &LeasedTask, ctx: &TaskContext) -> Option<Outcome> {
    match task.grant.kind.as_str() {
        "noop" => Some(Outcome::Succeeded { result: "null".into() }),
        "sleep" => sleep(task, ctx).await,
        "exec" => exec(task, ctx).await,
        "migration" => crate::migration::run(task, ctx).await,
        other => Some(Outcome::Permanent {
            error: format!("no transform named {other:?} on this node (known: noop, sleep, exec, migration)"),
        }),
    }
}

#[derive(Deserialize)]
struct SleepPayload {
    ms: u64,
}

async fn sleep(task: &LeasedTask, ctx: &TaskContext) -> Option<Outcome> {
    let ms = match serde_json::from_str::<SleepPayload>(&task.payload) {
        Ok(p) => p.ms,
        Err(e) => return Some(Outcome::Permanent { error: format!("sleep payload must be {{\"ms\": N}}: {e}") }),
    };
    let total = Duration::from_millis(ms);
    let start = tokio::time::Instant::now();
    let step = Duration::from_millis(500).min(total.max(Duration::from_millis(1)));
    loop {
        let elapsed = start.elapsed();
        if elapsed >= total {
            return Some(Outcome::Succeeded { result: format!("{{\"slept_ms\":{ms}}}") });
        }
        tokio::select! {
            _ = ctx.cancel.cancelled() => return None,
            _ = tokio::time::sleep(step.min(total - elapsed)) => {}
        }
        let done = start.elapsed().as_secs_f32() / total.as_secs_f32().max(f32::EPSILON);
        ctx.report(done.min(1.0), format!("slept {} of {ms} ms", start.elapsed().as_millis().min(ms as u128)));
    }
}

/// The fields `exec` reads; the payload may hold anything else the program
/// wants (it receives the whole task on stdin).
#[derive(Deserialize)]
struct ExecPayload {
    /// The program and its arguments.
    command: Vec<String>,
    /// Killed (and retried) after this long. Default 10 minutes.
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    env: std::collections::BTreeMap<String, String>,
}

/// Exit code meaning "try again later" (sysexits' EX_TEMPFAIL).
pub const EXIT_RETRY: i32 = 75;

async fn exec(task: &LeasedTask, ctx: &TaskContext) -> Option<Outcome> {
    let g = &task.grant;
    let p: ExecPayload = match serde_json::from_str(&task.payload) {
        Ok(p) => p,
        Err(e) => {
            return Some(Outcome::Permanent {
                error: format!(
                    "exec payload must be {{\"command\": [\"prog\", \"arg\", ...], \"timeout_ms\": N}}: {e}"
                ),
            })
        }
    };
    let Some((program, args)) = p.command.split_first() else {
        return Some(Outcome::Permanent { error: "exec payload: command is empty".into() });
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(&p.env)
        .env("SKEIN_TASK_ID", g.task.to_string())
        .env("SKEIN_ATTEMPT", g.attempt.to_string())
        .env("SKEIN_TOKEN", g.token.to_string())
        .env("SKEIN_QUEUE", &g.queue)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Some(Outcome::Permanent { error: format!("cannot run {program:?}: {e}") }),
    };
    let input = serde_json::json!({
        "id": g.task, "queue": g.queue, "kind": g.kind, "attempt": g.attempt, "token": g.token,
        "payload": serde_json::from_str::<serde_json::Value>(&task.payload).unwrap_or(serde_json::Value::Null),
    });
    if let Some(mut stdin) = child.stdin.take() {
        let bytes = input.to_string().into_bytes();
        // A program that does not read its stdin is fine: ignore the broken pipe.
        tokio::spawn(async move {
            let _ = stdin.write_all(&bytes).await;
        });
    }
    let stderr_tail = Arc::new(Mutex::new(String::new()));
    let mut stderr_reader = None;
    if let Some(stderr) = child.stderr.take() {
        let tail = stderr_tail.clone();
        // The worker's span carries the task's id, attempt and token; a
        // spawned task does not inherit it, so hand it over.
        let span = tracing::Span::current();
        stderr_reader = Some(tokio::spawn(tracing::Instrument::instrument(
            async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    info!(line = %line, "exec stderr");
                    if let Ok(mut t) = tail.lock() {
                        t.push_str(&line);
                        t.push('\n');
                        let excess = t.len().saturating_sub(2048);
                        if excess > 0 {
                            let cut = (excess..t.len()).find(|i| t.is_char_boundary(*i)).unwrap_or(t.len());
                            t.drain(..cut);
                        }
                    }
                }
            },
            span,
        )));
    }
    let mut stdout = child.stdout.take();
    let read_stdout = async {
        let mut out = Vec::new();
        if let Some(s) = stdout.as_mut() {
            // Keep at most the last 1 MiB: the result is the last JSON line.
            let mut buf = [0u8; 8192];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        out.extend_from_slice(&buf[..n]);
                        if out.len() > 1 << 20 {
                            out.drain(..out.len() - (1 << 20));
                        }
                    }
                }
            }
        }
        out
    };
    let timeout = Duration::from_millis(p.timeout_ms.unwrap_or(600_000));
    let run = async {
        let out = read_stdout.await;
        let status = child.wait().await;
        (out, status)
    };
    let (out, status) = tokio::select! {
        r = run => r,
        _ = ctx.cancel.cancelled() => return None,
        _ = tokio::time::sleep(timeout) => {
            warn!(task_id = g.task.0, "exec timed out");
            return Some(Outcome::Retryable { error: format!("timed out after {} ms", timeout.as_millis()) });
        }
    };
    // The error message quotes the end of stderr: let the reader finish
    // (briefly: a child's own children may still hold the pipe open).
    if let Some(reader) = stderr_reader {
        let _ = tokio::time::timeout(Duration::from_secs(1), reader).await;
    }
    let tail = stderr_tail.lock().map(|t| t.trim().to_string()).unwrap_or_default();
    match status {
        Err(e) => Some(Outcome::Retryable { error: format!("waiting for {program:?}: {e}") }),
        Ok(s) if s.success() => {
            let text = String::from_utf8_lossy(&out);
            let result = text
                .lines()
                .rev()
                .map(str::trim)
                .find(|l| !l.is_empty() && serde_json::from_str::<serde_json::Value>(l).is_ok())
                .unwrap_or("null")
                .to_string();
            Some(Outcome::Succeeded { result })
        }
        Ok(s) if s.code() == Some(EXIT_RETRY) => {
            Some(Outcome::Retryable { error: format!("exit code {EXIT_RETRY} (retry): {tail}") })
        }
        Ok(s) => Some(Outcome::Permanent {
            error: match s.code() {
                Some(code) => format!("exit code {code}: {tail}"),
                None => format!("killed by a signal: {tail}"),
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skein_raft::fsm::{FencingToken, Granted, TaskId};

    fn leased(kind: &str, payload: &str) -> LeasedTask {
        LeasedTask {
            grant: Granted {
                task: TaskId(7),
                queue: "q".into(),
                kind: kind.into(),
                attempt: 2,
                token: FencingToken(9),
                expires_ms: 0,
            },
            payload: payload.into(),
        }
    }

    fn ctx() -> TaskContext {
        TaskContext { cancel: CancellationToken::new(), progress: Arc::new(Mutex::new(None)), app: None }
    }

    fn sh(script: &str) -> String {
        serde_json::json!({"command": ["sh", "-c", script]}).to_string()
    }

    #[tokio::test]
    async fn exec_exit_codes_map_to_outcomes() {
        let ok = run(&leased("exec", &sh("echo noise; echo '{\"rows\": 3}'")), &ctx()).await;
        assert_eq!(ok, Some(Outcome::Succeeded { result: "{\"rows\": 3}".into() }));
        let retry = run(&leased("exec", &sh("echo busy >&2; exit 75")), &ctx()).await;
        assert_eq!(retry, Some(Outcome::Retryable { error: "exit code 75 (retry): busy".into() }));
        let fail = run(&leased("exec", &sh("echo broken >&2; exit 3")), &ctx()).await;
        assert_eq!(fail, Some(Outcome::Permanent { error: "exit code 3: broken".into() }));
    }

    #[tokio::test]
    async fn exec_sees_task_on_stdin_and_env() {
        let script = "read line; echo \"{\\\"env\\\": \\\"$SKEIN_TASK_ID/$SKEIN_ATTEMPT/$SKEIN_TOKEN\\\"}\"; echo \"$line\" | grep -q '\"attempt\":2' || exit 1";
        let out = run(&leased("exec", &sh(script)), &ctx()).await;
        assert_eq!(out, Some(Outcome::Succeeded { result: "{\"env\": \"7/2/9\"}".into() }));
    }

    #[tokio::test]
    async fn exec_times_out_and_cancels() {
        let p = serde_json::json!({"command": ["sleep", "5"], "timeout_ms": 100}).to_string();
        assert!(matches!(run(&leased("exec", &p), &ctx()).await, Some(Outcome::Retryable { .. })));
        let c = ctx();
        c.cancel.cancel();
        assert_eq!(run(&leased("exec", &sh("sleep 5")), &c).await, None);
    }

    #[tokio::test]
    async fn bad_payloads_fail_permanently() {
        assert!(matches!(run(&leased("exec", "{}"), &ctx()).await, Some(Outcome::Permanent { .. })));
        assert!(matches!(run(&leased("sleep", "[]"), &ctx()).await, Some(Outcome::Permanent { .. })));
        assert!(matches!(run(&leased("nope", "{}"), &ctx()).await, Some(Outcome::Permanent { .. })));
        let missing = serde_json::json!({"command": ["/no/such/program"]}).to_string();
        assert!(matches!(run(&leased("exec", &missing), &ctx()).await, Some(Outcome::Permanent { .. })));
    }

    #[tokio::test]
    async fn sleep_reports_progress() {
        let c = ctx();
        let out = run(&leased("sleep", "{\"ms\": 30}"), &c).await;
        assert_eq!(out, Some(Outcome::Succeeded { result: "{\"slept_ms\":30}".into() }));
        assert!(c.progress.lock().unwrap().is_some());
    }
}
