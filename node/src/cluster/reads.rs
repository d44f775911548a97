//! A member's answers to a worker's reads ([`skein_transport::WorkerRead`]):
//! what a transform needs from the replicated state, read from this
//! member's applied state after a read barrier when what it holds could be
//! behind what the leader granted (a plan applied a moment ago, partitions
//! that succeeded a moment ago). Members' own transforms read the same way
//! (see [`crate::cluster::host`]), so both kinds of node run one code path.

use skein_raft::format::v4;
use skein_raft::fsm::{StateMachine, TaskId, TaskStatus};
use skein_transport::{NodeError, PartitionResult, RunInfo, WorkerAnswer, WorkerRead};

use crate::cluster::app::App;
use crate::views::runs::{commit_key, partition_tasks};

impl App {
    /// Answers `read` from this node's applied state.
    pub async fn worker_read(&self, read: &WorkerRead) -> Result<WorkerAnswer, NodeError> {
        match read {
            WorkerRead::Plan { entity_ref } => {
                let mut document = self.plan_document(entity_ref);
                if document.is_none() {
                    // Perhaps applied a moment ago and not yet applied here.
                    self.catch_up().await?;
                    document = self.plan_document(entity_ref);
                }
                Ok(WorkerAnswer::Plan { document, policy: self.policy_wire() })
            }
            WorkerRead::Policy => Ok(WorkerAnswer::Policy(self.policy_wire())),
            WorkerRead::Run { task } => {
                let info = run_info(&self.store.state(), *task);
                match info {
                    Some(info) => Ok(WorkerAnswer::Run(info)),
                    None => {
                        self.catch_up().await?;
                        run_info(&self.store.state(), *task)
                            .map(WorkerAnswer::Run)
                            .ok_or_else(|| NodeError::Invalid(format!("task {task} is not in the cluster's state")))
                    }
                }
            }
            WorkerRead::Results { commit } => {
                let mut statuses = partition_statuses(&self.store.state(), *commit);
                if statuses.as_ref().is_none_or(|s| s.iter().any(|(_, st)| *st != TaskStatus::Succeeded)) {
                    // The commit is leased only once all succeeded: this node lags.
                    self.catch_up().await?;
                    statuses = partition_statuses(&self.store.state(), *commit);
                }
                let statuses = statuses
                    .ok_or_else(|| NodeError::Invalid(format!("commit task {commit} is not in the cluster's state")))?;
                let mut out = Vec::with_capacity(statuses.len());
                for (task, status) in statuses {
                    let result = match status {
                        TaskStatus::Succeeded => self
                            .store
                            .result(task)
                            .map_err(|e| NodeError::Internal(format!("reading task {task}'s result: {e}")))?,
                        _ => None,
                    };
                    out.push(PartitionResult { task, status, result });
                }
                Ok(WorkerAnswer::Results(out))
            }
        }
    }

    fn plan_document(&self, entity_ref: &str) -> Option<String> {
        self.store.state().catalog_entry(entity_ref).map(|c| c.entity.document.clone())
    }

    fn policy_wire(&self) -> v4::Policy<'static> {
        v4::Policy::of(self.store.state().policy()).into_static()
    }
}

/// What a planner needs about its own task, if the state has it.
fn run_info(state: &StateMachine, task: TaskId) -> Option<RunInfo> {
    let t = state.task(task)?;
    let key = t.idempotency_key.as_deref().map(str::to_string);
    let planned = key
        .as_deref()
        .and_then(|k| state.task_by_key(&commit_key(k)))
        .map(|commit| (partition_tasks(state, commit).len(), commit.id.0));
    let limits = state.limits();
    Some(RunInfo {
        key,
        priority: t.priority,
        max_batch: limits.max_batch,
        max_depends_on: limits.max_depends_on,
        planned,
    })
}

/// The partitions of commit task `commit`, with their statuses.
fn partition_statuses(state: &StateMachine, commit: TaskId) -> Option<Vec<(TaskId, TaskStatus)>> {
    let commit = state.task(commit)?;
    Some(partition_tasks(state, commit).iter().map(|t| (t.id, t.status)).collect())
}
