//! `exec`: payload `{"command": ["prog", "arg", ...], "timeout_ms": N,
//! "env": {"K": "V"}}` runs a program with the task as JSON on stdin and
//! `SKEIN_TASK_ID`, `SKEIN_ATTEMPT`, `SKEIN_TOKEN`, `SKEIN_QUEUE` in its
//! environment. Exit 0 succeeds with the last JSON line of stdout as the
//! result, 75 (EX_TEMPFAIL) is a retryable failure, anything else a
//! permanent one. Its stderr goes to the node's log under the task's id.
//!
//! The program's input and output are driven inside the transform's own
//! future (no task of its own), so a cancelled or finished transform leaves
//! nothing running behind it: the child is killed when dropped.

use std::process::Stdio;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;
use skein_raft::fsm::Outcome;
use skein_transport::LeasedTask;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tracing::{info, warn};

use super::{TaskContext, Transform};

pub struct Exec;

impl Transform for Exec {
    fn kind(&self) -> &'static str {
        "exec"
    }

    fn run<'a>(&'a self, task: &'a LeasedTask, ctx: &'a TaskContext) -> BoxFuture<'a, Option<Outcome>> {
        Box::pin(exec(task, ctx))
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

/// How long a program may run when its payload does not say: 10 minutes.
const DEFAULT_TIMEOUT_MS: u64 = 600_000;

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
    // Checked again here, against this node's applied policy, right before
    // anything starts: the list may have changed since the enqueue.
    if let Some(host) = &ctx.host {
        let policy = match host.policy().await {
            Ok(p) => p,
            Err(e) => return Some(Outcome::Retryable { error: format!("reading the exec allow list: {e}") }),
        };
        if let Err(e) = policy.check_exec(&p.command) {
            warn!(task = %g.task, program = %program, "exec refused by the allow list");
            return Some(Outcome::Permanent { error: format!("refused: {e}") });
        }
    }
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
    let bytes = input.to_string().into_bytes();
    let mut stdin = child.stdin.take();
    let write_stdin = async move {
        if let Some(stdin) = stdin.as_mut() {
            // A program that does not read its stdin is fine: ignore the broken pipe.
            let _ = stdin.write_all(&bytes).await;
        }
        drop(stdin);
    };
    let mut stderr_tail = String::new();
    let mut stderr = child.stderr.take().map(|e| BufReader::new(e).lines());
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
    let timeout_ms = p.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    let timeout = tokio::time::sleep(Duration::from_millis(timeout_ms));
    let run = async {
        let ((), out) = tokio::join!(write_stdin, read_stdout);
        let status = child.wait().await;
        (out, status)
    };
    tokio::pin!(run, timeout);
    // stderr is read beside the run, line by line, into the log and a
    // short tail for the error message.
    let (out, status) = loop {
        tokio::select! {
            r = &mut run => break r,
            line = next_line(&mut stderr) => match line {
                Some(line) => keep_stderr(&mut stderr_tail, line),
                None => stderr = None,
            },
            _ = ctx.cancel.cancelled() => return None,
            _ = &mut timeout => {
                warn!(task_id = g.task.0, "exec timed out");
                return Some(Outcome::Retryable { error: format!("timed out after {timeout_ms} ms") });
            }
        }
    };
    // The error message quotes the end of stderr: read what is left
    // (briefly: a child's own children may still hold the pipe open).
    let rest = async {
        while let Some(line) = next_line(&mut stderr).await {
            keep_stderr(&mut stderr_tail, line);
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), rest).await;
    let tail = stderr_tail.trim().to_string();
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

/// The next line of stderr; never ready once stderr ended (`None` reader).
async fn next_line(stderr: &mut Option<tokio::io::Lines<BufReader<tokio::process::ChildStderr>>>) -> Option<String> {
    match stderr {
        Some(lines) => lines.next_line().await.ok().flatten(),
        None => std::future::pending().await,
    }
}

/// Logs a line of the program's stderr and keeps the last 2 KiB of it.
fn keep_stderr(tail: &mut String, line: String) {
    info!(line = %line, "exec stderr");
    tail.push_str(&line);
    tail.push('\n');
    let excess = tail.len().saturating_sub(2048);
    if excess > 0 {
        let cut = (excess..tail.len()).find(|i| tail.is_char_boundary(*i)).unwrap_or(tail.len());
        tail.drain(..cut);
    }
}
