//! Partitioned runs as people and `/metrics` see them.
//!
//! A partitioned plan's run is a tree of ordinary tasks, found by their
//! idempotency keys (see `worker::transform::partitioned`): the planner
//! (`plan:<ref>#<generation>`, the run's task as the catalog knows it),
//! the commit (`…/commit`), which depends on every partition (`…/part-<i>`)
//! directly or, past `MAX_DEPENDS_ON` partitions, through barrier tasks
//! (`…/barrier-<k>`). Everything here reads the applied state only.

use skein_raft::api::RunPartitions;
use skein_raft::fsm::{StateMachine, Task, TaskId, TaskStatus};

/// The key suffix of a run's commit task.
pub const COMMIT_SUFFIX: &str = "/commit";
/// The key infix of a run's barrier tasks.
pub const BARRIER_INFIX: &str = "/barrier-";
/// The key infix of a run's partition tasks.
pub const PARTITION_INFIX: &str = "/part-";

/// The key of a run's commit task.
pub fn commit_key(run_key: &str) -> String {
    format!("{run_key}{COMMIT_SUFFIX}")
}

/// The key of partition `index` of a run.
pub fn partition_key(run_key: &str, index: u32) -> String {
    format!("{run_key}{PARTITION_INFIX}{index}")
}

/// The key of barrier `k` of a run.
pub fn barrier_key(run_key: &str, k: usize) -> String {
    format!("{run_key}{BARRIER_INFIX}{k}")
}

/// Whether a task is one of a run's barriers.
pub fn is_barrier(t: &Task) -> bool {
    t.idempotency_key.as_deref().is_some_and(|k| k.contains(BARRIER_INFIX))
}

/// The partition tasks the commit task `commit` publishes, in dependency
/// order (through barriers).
pub fn partition_tasks<'a>(state: &'a StateMachine, commit: &Task) -> Vec<&'a Task> {
    let mut out = Vec::new();
    for dep in &commit.depends_on {
        let Some(t) = state.task(*dep) else { continue };
        if is_barrier(t) {
            out.extend(t.depends_on.iter().filter_map(|d| state.task(*d)));
        } else {
            out.push(t);
        }
    }
    out
}

/// The run whose planner is `planner`, if it was planned (its commit task
/// exists). `rows` adds up the rows the succeeded partitions wrote (read
/// from their results by the caller: it costs a read per partition).
pub fn run_partitions(
    state: &StateMachine,
    planner: &Task,
    now_ms: u64,
    rows: Option<&dyn Fn(TaskId) -> Option<u64>>,
) -> Option<RunPartitions> {
    let run_key = planner.idempotency_key.as_deref()?;
    let commit = state.task_by_key(&commit_key(run_key))?;
    let parts = partition_tasks(state, commit);
    let mut r = RunPartitions {
        total: parts.len() as u64,
        pending: 0,
        running: 0,
        succeeded: 0,
        failed: 0,
        cancelled: 0,
        status: String::new(),
        commit_task: commit.id,
        commit_status: commit.status,
        rows: None,
        failed_partitions: Vec::new(),
        eta_ms: None,
    };
    let mut rows_done = 0u64;
    let mut first_start: Option<u64> = None;
    for t in &parts {
        match t.status {
            TaskStatus::Pending | TaskStatus::Blocked => r.pending += 1,
            TaskStatus::Leased => r.running += 1,
            TaskStatus::Succeeded => {
                r.succeeded += 1;
                if let Some(f) = rows {
                    rows_done += f(t.id).unwrap_or(0);
                }
            }
            TaskStatus::Dead => {
                r.failed += 1;
                if r.failed_partitions.len() < 100 {
                    if let Some(i) = partition_index(t) {
                        r.failed_partitions.push(i);
                    }
                }
            }
            TaskStatus::Cancelled => r.cancelled += 1,
        }
        if let Some(s) = t.first_started_ms {
            first_start = Some(first_start.map_or(s, |f| f.min(s)));
        }
    }
    if rows.is_some() {
        r.rows = Some(rows_done);
    }
    r.status = match commit.status {
        TaskStatus::Succeeded => "succeeded",
        // Partitions still running after one failed finish first (their
        // outputs are kept for a retry of the failed ones).
        _ if r.failed > 0 && r.running + r.pending > 0 => "failing",
        _ if r.failed > 0 => "failed",
        TaskStatus::Dead => "failed",
        TaskStatus::Cancelled => "cancelled",
        // The commit is pending only once every partition succeeded.
        TaskStatus::Leased | TaskStatus::Pending => "publishing",
        TaskStatus::Blocked => "running",
    }
    .to_string();
    let remaining = r.total - r.succeeded;
    if remaining > 0 && r.succeeded > 0 && r.failed == 0 {
        if let Some(start) = first_start {
            let elapsed = now_ms.saturating_sub(start);
            r.eta_ms = Some(elapsed.saturating_mul(remaining) / r.succeeded);
        }
    }
    Some(r)
}

/// A partition task's index, from its key.
pub fn partition_index(t: &Task) -> Option<u32> {
    let key = t.idempotency_key.as_deref()?;
    let (_, i) = key.rsplit_once(PARTITION_INFIX)?;
    i.parse().ok()
}

/// "120/200 partitions, 3 running, 1 failed, about 2m left".
pub fn describe(r: &RunPartitions) -> String {
    let mut s = format!("{}/{} partitions", r.succeeded, r.total);
    if r.running > 0 {
        s.push_str(&format!(", {} running", r.running));
    }
    if r.failed > 0 {
        s.push_str(&format!(", {} failed", r.failed));
    }
    if let Some(eta) = r.eta_ms {
        s.push_str(&format!(", about {} left", human_ms(eta)));
    }
    if r.status == "publishing" {
        s.push_str(", publishing");
    }
    s
}

fn human_ms(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let run = "plan:component:default/orders#3";
        assert_eq!(commit_key(run), "plan:component:default/orders#3/commit");
        assert_eq!(partition_key(run, 17), "plan:component:default/orders#3/part-17");
        assert_eq!(barrier_key(run, 2), "plan:component:default/orders#3/barrier-2");
    }

    #[test]
    fn describe_says_what_is_left() {
        let r = RunPartitions {
            total: 200,
            pending: 76,
            running: 3,
            succeeded: 120,
            failed: 1,
            cancelled: 0,
            status: "running".into(),
            commit_task: TaskId(9),
            commit_status: TaskStatus::Blocked,
            rows: None,
            failed_partitions: vec![7],
            eta_ms: Some(125_000),
        };
        assert_eq!(describe(&r), "120/200 partitions, 3 running, 1 failed, about 2m05s left");
    }
}
