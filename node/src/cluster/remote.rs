//! A worker's link to the cluster: a worker is not a Raft member, holds no
//! log and no state, and reaches the members over RPC for everything
//! (leases, heartbeats, outcomes, the reads its transforms need).
//!
//! It calls the leader directly. It learns who leads from the members'
//! answers: a member that does not lead answers "not the leader" with the
//! leader's addresses, and the call goes there next; a member that cannot
//! be reached is skipped for the next one. The members it knows come from
//! its registration (`POST /api/v1/cluster/workers`) and from those answers,
//! and it registers again to learn them anew when none answers for a while.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::bail;
use skein_raft::api::{WorkerJoinBody, WorkerJoined};
use skein_raft::config::SkeinNode;
use skein_raft::fsm::{Command, HeartbeatAck, Rejection, Response, TaskStatus};
use skein_transport::{
    CallError, CompleteRequest, ExchangeReply, ExchangeRequest, HeartbeatRequest, LeaseRequest, LeasedTask, NodeError,
    NodeVersion, Peers, WorkerAnswer, WorkerRead, WorkerReadRequest,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cluster::app::CALLS;
use crate::cluster::membership;
use crate::cluster::routing::{from_transport, no_leader};
use crate::config::Config;
use crate::metrics::Metrics;

/// The worker's side of the cluster.
pub struct Remote {
    /// This worker's node id (given by the leader when `--id` was not).
    pub id: u64,
    pub config: Config,
    pub peers: Peers,
    pub metrics: Arc<Metrics>,
    /// Cancelled when the worker begins to shut down.
    pub shutdown: CancellationToken,
    removed: AtomicBool,
    /// The members this worker knows, and the next one to try when no
    /// leader is known.
    members: Mutex<Vec<(u64, SkeinNode)>>,
    next: AtomicUsize,
    /// The leader, as last heard (`None`: try the members in turn).
    leader: watch::Sender<Option<(u64, SkeinNode)>>,
}

impl Remote {
    pub fn new(
        id: u64,
        config: Config,
        peers: Peers,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
        joined: &WorkerJoined,
    ) -> Remote {
        let remote = Remote {
            id,
            config,
            peers,
            metrics,
            shutdown,
            removed: AtomicBool::new(false),
            members: Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
            leader: watch::channel(None).0,
        };
        remote.learn(joined);
        remote
    }

    /// Takes the members and leader a registration answered.
    pub fn learn(&self, joined: &WorkerJoined) {
        let members: Vec<(u64, SkeinNode)> = joined
            .members
            .iter()
            .map(|m| (m.id, SkeinNode { rpc_addr: m.rpc_addr.clone(), http_addr: m.http_addr.clone() }))
            .collect();
        let leader = joined.leader.and_then(|l| members.iter().find(|(id, _)| *id == l).cloned());
        *self.members.lock().unwrap_or_else(PoisonError::into_inner) = members;
        self.leader.send_replace(leader);
    }

    /// The members this worker knows.
    pub fn members(&self) -> Vec<(u64, SkeinNode)> {
        self.members.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn leader(&self) -> Option<(u64, SkeinNode)> {
        self.leader.borrow().clone()
    }

    /// Changes whenever the known leader does (the worker resumes leasing
    /// as soon as a new one is known).
    pub fn leader_changes(&self) -> watch::Receiver<Option<(u64, SkeinNode)>> {
        self.leader.subscribe()
    }

    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::SeqCst)
    }

    /// The leader answered that this worker was removed (silent too long,
    /// or `skein cluster remove`): stop at once, as a removed member does.
    fn note_removed(&self) {
        if !self.removed.swap(true, Ordering::SeqCst) {
            info!(node_id = self.id, "removed from the cluster: stopping the worker, then exiting");
        }
        self.shutdown.cancel();
    }

    /// Where the next call goes: the leader if known, else the next member.
    fn target(&self) -> Option<(u64, SkeinNode)> {
        if let Some(l) = self.leader() {
            return Some(l);
        }
        let members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        if members.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % members.len();
        Some(members[i].clone())
    }

    /// Learns from a failed call to `target`: who leads, or that it is gone.
    fn after_failure(&self, target: &(u64, SkeinNode), e: &CallError) {
        match e {
            CallError::Remote { error: NodeError::NotLeader { leader_id: Some(id), leader: Some(node) }, .. } => {
                let mut members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
                match members.iter_mut().find(|(m, _)| m == id) {
                    Some(m) => m.1 = node.clone(),
                    None => members.push((*id, node.clone())),
                }
                drop(members);
                self.leader.send_replace(Some((*id, node.clone())));
            }
            CallError::Remote { error: NodeError::NotLeader { .. }, .. } | CallError::Unreachable { .. } => {
                // No leader there: try the next member.
                self.leader.send_if_modified(|l| {
                    let was = l.as_ref().is_some_and(|(id, _)| *id == target.0);
                    if was {
                        *l = None;
                    }
                    was
                });
            }
            _ => {}
        }
    }

    /// Runs `call` against the leader, following "not the leader" answers
    /// and skipping members that cannot be reached, for up to [`CALLS`]'
    /// deadline; a call whose outcome is unknown is not repeated here.
    async fn to_leader<T, F, Fut>(&self, call: F) -> Result<T, NodeError>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<T, CallError>>,
    {
        let result = CALLS
            .run(|| async {
                let Some(target) = self.target() else { return Err(no_leader()) };
                match call(target.1.rpc_addr.clone()).await {
                    Ok(v) => {
                        if self.leader().is_none() {
                            self.leader.send_replace(Some(target));
                        }
                        Ok(v)
                    }
                    Err(e) => {
                        self.after_failure(&target, &e);
                        Err(from_transport(e))
                    }
                }
            })
            .await;
        if let Err(NodeError::Removed(node)) = &result {
            if *node == self.id {
                self.note_removed();
            }
        }
        result
    }

    pub async fn lease(&self, req: LeaseRequest) -> Result<Vec<LeasedTask>, NodeError> {
        self.to_leader(|addr| {
            let req = req.clone();
            async move { self.peers.lease(&addr, req).await }
        })
        .await
    }

    pub async fn heartbeat(&self, req: HeartbeatRequest) -> Result<HeartbeatAck, NodeError> {
        self.to_leader(|addr| {
            let req = req.clone();
            async move { self.peers.heartbeat(&addr, req).await }
        })
        .await
    }

    pub async fn complete(&self, req: CompleteRequest) -> Result<Vec<Result<TaskStatus, Rejection>>, NodeError> {
        self.to_leader(|addr| {
            let req = req.clone();
            async move { self.peers.complete(&addr, req).await }
        })
        .await
    }

    /// One round of the worker's protocol (see [`ExchangeRequest`]).
    pub async fn exchange(&self, req: ExchangeRequest) -> Result<ExchangeReply, NodeError> {
        self.to_leader(|addr| {
            let req = req.clone();
            async move { self.peers.exchange(&addr, req).await }
        })
        .await
    }

    /// What the leader runs: `None` when no leader is known or it did not
    /// answer; `Some(None)` when it answered but not the call (0.1.0).
    pub async fn leader_version(&self) -> Option<Option<NodeVersion>> {
        let (_, leader) = self.leader()?;
        self.peers.node_version(&leader.rpc_addr).await.ok()
    }

    /// A write of this worker's own (a planner's `EnqueueChildren`, handing
    /// its leases back, leaving), proposed by the leader.
    pub async fn write(&self, command: Command) -> Result<Response, NodeError> {
        let answer = self
            .to_leader(|addr| {
                let command = command.clone();
                async move { self.peers.write(&addr, command).await }
            })
            .await?;
        match answer {
            Response::Rejected(Rejection::NodeRemoved(node)) if node == self.id => {
                self.note_removed();
                Err(NodeError::Removed(node))
            }
            other => Ok(other),
        }
    }

    /// Reads what a transform needs from the leader's applied state.
    pub async fn read(&self, read: WorkerRead) -> Result<WorkerAnswer, NodeError> {
        let req = WorkerReadRequest { node: self.id, read };
        self.to_leader(|addr| {
            let req = req.clone();
            async move { self.peers.worker_read(&addr, req).await }
        })
        .await
    }
}

/// Registers this worker with the cluster through the first member of
/// `--join` (a comma-separated list of HTTP addresses) that answers,
/// retrying for a while: the members may be starting too. The call needs a
/// token of role `operate` (`--token` / `SKEIN_TOKEN`) once the cluster
/// enforces tokens.
pub async fn register(config: &Config, id: u64, shutdown: &CancellationToken) -> anyhow::Result<WorkerJoined> {
    let Some(join) = &config.join else { bail!("a worker needs --join") };
    let release = crate::cluster::versions::own_version(config);
    let body = WorkerJoinBody {
        id: (id != 0).then_some(id),
        http_addr: config.advertise_http.clone(),
        slots: config.slots,
        release: release.release,
        format: release.format,
    };
    membership::ask_members(
        config,
        join,
        reqwest::Method::POST,
        "/api/v1/cluster/workers",
        Some(&body),
        20,
        "registering as a worker",
        shutdown,
    )
    .await
}

/// Registers again every so often while no member answers, to learn the
/// members anew (the ones this worker knew may all have been replaced).
pub async fn refresh_members(remote: Arc<Remote>, stop: CancellationToken) {
    let mut leader = remote.leader_changes();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            r = leader.changed() => if r.is_err() { return } else { continue },
        }
        if remote.leader().is_some() {
            continue;
        }
        match register(&remote.config, remote.id, &stop).await {
            Ok(joined) => {
                info!(members = joined.members.len(), "no leader heard for a while: learned the members anew");
                remote.learn(&joined);
            }
            Err(e) => warn!(error = %e, "no leader heard for a while, and registering again failed"),
        }
    }
}
