//! What the worker runs on: a Raft member (its own [`App`]) or a worker
//! node outside Raft ([`Remote`]). The worker loops and the transforms
//! call the cluster only through this, so one worker serves both kinds of
//! node; the two differ only in where a call goes (a member routes through
//! its Raft view, a worker over RPC to the leader) and where a read is
//! answered (a member's own applied state, the leader's for a worker).

use std::sync::Arc;
use std::time::Duration;

use skein_raft::fsm::policy::PolicyState;
use skein_raft::fsm::{Command, HeartbeatAck, Rejection, Response, TaskId, TaskStatus};
use skein_transport::{
    CompleteRequest, ExchangeReply, ExchangeRequest, HeartbeatRequest, LeaseRequest, LeasedTask, NodeError,
    NodeVersion, PartitionResult, RunInfo, WorkerAnswer, WorkerRead,
};

use tokio::sync::watch;

use crate::cluster::app::{App, SharedApp};
use crate::cluster::remote::Remote;
use crate::config::Config;
use crate::metrics::Metrics;

#[derive(Clone)]
pub enum Host {
    Member(SharedApp),
    Worker(Arc<Remote>),
}

impl Host {
    pub fn id(&self) -> u64 {
        match self {
            Host::Member(app) => app.id,
            Host::Worker(r) => r.id,
        }
    }

    pub fn config(&self) -> &Config {
        match self {
            Host::Member(app) => &app.config,
            Host::Worker(r) => &r.config,
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        match self {
            Host::Member(app) => &app.metrics,
            Host::Worker(r) => &r.metrics,
        }
    }

    pub fn is_removed(&self) -> bool {
        match self {
            Host::Member(app) => app.is_removed(),
            Host::Worker(r) => r.is_removed(),
        }
    }

    pub async fn lease(&self, req: LeaseRequest) -> Result<Vec<LeasedTask>, NodeError> {
        match self {
            Host::Member(app) => app.lease(req).await,
            Host::Worker(r) => r.lease(req).await,
        }
    }

    pub async fn heartbeat(&self, req: HeartbeatRequest) -> Result<HeartbeatAck, NodeError> {
        match self {
            Host::Member(app) => app.heartbeat(req).await,
            Host::Worker(r) => r.heartbeat(req).await,
        }
    }

    pub async fn complete(&self, req: CompleteRequest) -> Result<Vec<Result<TaskStatus, Rejection>>, NodeError> {
        match self {
            Host::Member(app) => app.complete(req).await,
            Host::Worker(r) => r.complete(req).await,
        }
    }

    /// One round of the worker's protocol with the leader.
    pub async fn exchange(&self, req: ExchangeRequest) -> Result<ExchangeReply, NodeError> {
        match self {
            Host::Member(app) => app.exchange(req).await,
            Host::Worker(r) => r.exchange(req).await,
        }
    }

    /// What the leader runs, asked now: `None` when no leader is known or
    /// it did not answer, `Some(None)` when it answered but not the call.
    pub async fn leader_version(&self) -> Option<Option<NodeVersion>> {
        match self {
            Host::Member(app) => {
                let (id, leader) = app.leader()?;
                if id == app.id {
                    return Some(Some(crate::cluster::versions::own_version(&app.config)));
                }
                app.peers.node_version(&leader.rpc_addr).await.ok()
            }
            Host::Worker(r) => r.leader_version().await,
        }
    }

    pub async fn write(&self, command: Command) -> Result<Response, NodeError> {
        match self {
            Host::Member(app) => app.write(command).await,
            Host::Worker(r) => r.write(command).await,
        }
    }

    async fn read(&self, read: WorkerRead) -> Result<WorkerAnswer, NodeError> {
        match self {
            Host::Member(app) => App::worker_read(app, &read).await,
            Host::Worker(r) => r.read(read).await,
        }
    }

    /// A plan's catalog document (`None`: no such plan), and the policy to
    /// check it against.
    pub async fn plan(&self, entity_ref: &str) -> Result<(Option<String>, PolicyState), NodeError> {
        match self.read(WorkerRead::Plan { entity_ref: entity_ref.to_string() }).await? {
            WorkerAnswer::Plan { document, policy } => Ok((document, policy.into_state())),
            other => Err(unexpected("plan", &other)),
        }
    }

    /// The exec allow list and data roots.
    pub async fn policy(&self) -> Result<PolicyState, NodeError> {
        match self.read(WorkerRead::Policy).await? {
            WorkerAnswer::Policy(policy) => Ok(policy.into_state()),
            other => Err(unexpected("policy", &other)),
        }
    }

    /// What a partitioned run's planner needs about its task.
    pub async fn run_info(&self, task: TaskId) -> Result<RunInfo, NodeError> {
        match self.read(WorkerRead::Run { task }).await? {
            WorkerAnswer::Run(info) => Ok(info),
            other => Err(unexpected("run", &other)),
        }
    }

    /// A run's partitions, with the results of those that succeeded.
    pub async fn partition_results(&self, commit: TaskId) -> Result<Vec<PartitionResult>, NodeError> {
        match self.read(WorkerRead::Results { commit }).await? {
            WorkerAnswer::Results(results) => Ok(results),
            other => Err(unexpected("results", &other)),
        }
    }

    /// Waits `backoff` after a failed call to the leader, or less: until a
    /// new leader is known (an election ended), so that work resumes as
    /// soon as a leader can take it, not a backoff later.
    pub async fn pause_after_failure(&self, backoff: Duration) {
        match self {
            Host::Member(app) => until_new_leader(app.raft.metrics(), |m| m.current_leader, backoff).await,
            Host::Worker(r) => until_new_leader(r.leader_changes(), |l| l.as_ref().map(|(id, _)| *id), backoff).await,
        }
    }
}

/// Waits `backoff`, or less: until `watch` names a leader other than the
/// one it named at first.
async fn until_new_leader<T>(mut watch: watch::Receiver<T>, leader: impl Fn(&T) -> Option<u64>, backoff: Duration) {
    let sleep = tokio::time::sleep(backoff);
    tokio::pin!(sleep);
    let before = leader(&watch.borrow());
    loop {
        tokio::select! {
            _ = &mut sleep => return,
            changed = watch.changed() => {
                if changed.is_err() {
                    return (&mut sleep).await;
                }
                let now = leader(&watch.borrow());
                if now.is_some() && now != before {
                    return;
                }
            }
        }
    }
}

fn unexpected(what: &str, answer: &WorkerAnswer) -> NodeError {
    NodeError::Internal(format!("a {what} read was answered with {answer:?}"))
}
