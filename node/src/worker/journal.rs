//! The worker's journal (`--journal FILE`): one JSON line per task start and
//! per outcome report, appended as it happens, so that what a node's worker
//! *did* can be audited against what the cluster *recorded*. The chaos
//! checker reads every node's journal to find two accepted successes of one
//! task, or a success accepted under a token the state machine never
//! considered current.
//!
//! Each line is written with one `write(2)` on a file opened with
//! `O_APPEND`, so lines never interleave and a kill -9 loses at most the
//! line being written (the page cache survives the process). It is not
//! fsynced: the journal is evidence for tests and audits, not state.
//!
//! Lines (`ms` is this node's wall clock, `token` the lease's fencing token):
//! - `{"ev":"start","node","task","attempt","token","ms"}`: a transform began;
//! - `{"ev":"report","node","task","token","outcome","ms"}`: its outcome is
//!   being sent to the leader (`outcome`: succeeded, retryable, permanent);
//! - `{"ev":"accepted","node","task","token","outcome","status","ms"}`: the
//!   state machine took it (`status`: the task's status after it);
//! - `{"ev":"refused","node","task","token","outcome","reason","ms"}`: it did
//!   not (a stale token, most often).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use serde_json::{json, Value};
use skein_raft::fsm::{FencingToken, Outcome, TaskId};

use crate::clock::now_ms;

pub struct Journal {
    node: u64,
    file: Mutex<File>,
}

impl Journal {
    /// Opens (creating) the journal for appending.
    pub fn open(path: &Path, node: u64) -> anyhow::Result<Journal> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| anyhow::anyhow!("opening the journal {}: {e}", path.display()))?;
        Ok(Journal { node, file: Mutex::new(file) })
    }

    pub fn start(&self, task: TaskId, attempt: u32, token: FencingToken) {
        self.line(json!({"ev": "start", "task": task.0, "attempt": attempt, "token": token.0}));
    }

    pub fn report(&self, task: TaskId, token: FencingToken, outcome: &Outcome) {
        self.line(json!({"ev": "report", "task": task.0, "token": token.0, "outcome": outcome_name(outcome)}));
    }

    pub fn accepted(&self, task: TaskId, token: FencingToken, outcome: &Outcome, status: impl std::fmt::Display) {
        self.line(json!({
            "ev": "accepted", "task": task.0, "token": token.0,
            "outcome": outcome_name(outcome), "status": status.to_string(),
        }));
    }

    pub fn refused(&self, task: TaskId, token: FencingToken, outcome: &Outcome, reason: impl std::fmt::Display) {
        self.line(json!({
            "ev": "refused", "task": task.0, "token": token.0,
            "outcome": outcome_name(outcome), "reason": reason.to_string(),
        }));
    }

    fn line(&self, mut v: Value) {
        if let Some(obj) = v.as_object_mut() {
            obj.insert("node".into(), self.node.into());
            obj.insert("ms".into(), now_ms().into());
        }
        let mut bytes = v.to_string().into_bytes();
        bytes.push(b'\n');
        // A full disk must not stop the worker; the gap shows in the audit.
        if let Ok(mut f) = self.file.lock() {
            if let Err(e) = f.write_all(&bytes) {
                tracing::warn!(error = %e, "cannot append to the journal");
            }
        }
    }
}

fn outcome_name(o: &Outcome) -> &'static str {
    match o {
        Outcome::Succeeded { .. } => "succeeded",
        Outcome::Retryable { .. } => "retryable",
        Outcome::Permanent { .. } => "permanent",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_json_with_node_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        let j = Journal::open(&path, 3).unwrap();
        let ok = Outcome::Succeeded { result: String::new() };
        j.start(TaskId(7), 2, FencingToken(40));
        j.report(TaskId(7), FencingToken(40), &ok);
        j.accepted(TaskId(7), FencingToken(40), &ok, "succeeded");
        j.refused(TaskId(8), FencingToken(41), &ok, "stale token");
        let lines: Vec<Value> =
            std::fs::read_to_string(&path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let evs: Vec<&str> = lines.iter().map(|l| l["ev"].as_str().unwrap()).collect();
        assert_eq!(evs, ["start", "report", "accepted", "refused"]);
        assert!(lines.iter().all(|l| l["node"] == 3 && l["ms"].as_u64().unwrap() > 0));
        assert_eq!((lines[0]["task"].as_u64(), lines[0]["token"].as_u64()), (Some(7), Some(40)));
        assert_eq!(lines[2]["status"], "succeeded");
    }
}
