//! Transforms: what running a task means, by its kind. Each is a
//! [`Transform`] in a file of its own:
//!
//! - `noop`: succeeds at once (benchmarks, tests);
//! - [`sleep`]: waits, reporting progress;
//! - [`exec`]: runs a program;
//! - [`migration`]: runs a plan of the replicated catalog with `skein-migrate`.
//!
//! Every transform stops when its `cancel` token fires (the lease was
//! revoked or ran out, or the node is shutting down) and then reports
//! nothing: an outcome is only ever sent under a lease the worker still holds.

pub mod exec;
pub mod migration;
mod partitioned;
pub mod sleep;

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use skein_raft::fsm::{Outcome, ReportedProgress};
use skein_transport::LeasedTask;
use tokio_util::sync::CancellationToken;

/// What a running transform can touch.
#[derive(Clone)]
pub struct TaskContext {
    pub cancel: CancellationToken,
    /// The latest progress, sent with the next heartbeat.
    pub progress: Arc<Mutex<Option<ReportedProgress>>>,
    /// The node, for transforms that read the replicated state (the plan
    /// catalog, the policy) or confirm their lease (`migration`); `None` in
    /// unit tests.
    pub host: Option<crate::cluster::host::Host>,
}

impl TaskContext {
    pub fn report(&self, fraction: f32, message: impl Into<String>) {
        if let Ok(mut p) = self.progress.lock() {
            *p = Some(ReportedProgress { fraction, message: message.into() });
        }
    }
}

/// One kind of task.
pub trait Transform: Send + Sync {
    /// The task `kind` it runs.
    fn kind(&self) -> &'static str;
    /// Runs `task`; `None` when `ctx.cancel` fired before it finished.
    fn run<'a>(&'a self, task: &'a LeasedTask, ctx: &'a TaskContext) -> BoxFuture<'a, Option<Outcome>>;
}

/// `noop`: succeeds at once.
pub struct Noop;

impl Transform for Noop {
    fn kind(&self) -> &'static str {
        "noop"
    }

    fn run<'a>(&'a self, _: &'a LeasedTask, _: &'a TaskContext) -> BoxFuture<'a, Option<Outcome>> {
        Box::pin(async { Some(Outcome::Succeeded { result: "null".into() }) })
    }
}

/// Every transform this node runs.
pub const TRANSFORMS: &[&dyn Transform] = &[&Noop, &sleep::Sleep, &exec::Exec, &migration::Migration];

/// Runs `task` with the transform its kind names; `None` when it was
/// cancelled before it finished.
pub async fn run(task: &LeasedTask, ctx: &TaskContext) -> Option<Outcome> {
    match TRANSFORMS.iter().find(|t| t.kind() == task.grant.kind) {
        Some(transform) => transform.run(task, ctx).await,
        None => {
            let known: Vec<&str> = TRANSFORMS.iter().map(|t| t.kind()).collect();
            Some(Outcome::Permanent {
                error: format!("no transform named {:?} on this node (known: {})", task.grant.kind, known.join(", ")),
            })
        }
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
        TaskContext { cancel: CancellationToken::new(), progress: Arc::new(Mutex::new(None)), host: None }
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
