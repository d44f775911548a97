//! The node's shared context, and the one place that decides where a call
//! goes: to this node's proposer when it leads, to the leader over RPC when
//! it does not.
//!
//! Where each call goes and whether it is tried again are decided in
//! [`crate::cluster::routing`]: a call that provably did not reach the state
//! machine is retried against the new leader for up to [`CALLS`]' deadline;
//! one whose outcome is unknown is never retried here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use skein_raft::config::{Raft, SkeinNode};
use skein_raft::fsm::{Caller, Command, HeartbeatAck, Rejection, Response, TaskStatus};
use skein_raft::store::StoreHandle;
use skein_transport::{
    CompleteRequest, ExchangeReply, ExchangeRequest, HeartbeatRequest, JoinRequest, LeaseRequest, LeasedTask,
    NodeError, Peers,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::cluster::proposer::Proposer;
use crate::cluster::routing::{self, from_transport, no_leader, RetryPolicy, Route};
use crate::cluster::versions::Reported;
use crate::config::Config;
use crate::views::cluster::MemberVersion;

/// How long a call keeps looking for a leader before answering `unavailable`,
/// trying again every 50 ms (see [`crate::cluster::routing`]).
pub const CALLS: RetryPolicy = RetryPolicy { deadline: Duration::from_secs(5), pause: Duration::from_millis(50) };
/// The same for membership changes, which take longer to settle.
const MEMBERSHIP_CALLS: RetryPolicy =
    RetryPolicy { deadline: Duration::from_secs(5), pause: Duration::from_millis(100) };
/// The longest a write proposed on this node (as leader) may wait for its
/// commit before the client hears `503 unavailable` (outcome unknown).
///
/// The trade-off: a leader cut off from its majority should say so soon,
/// but a healthy leader that is merely slow must not turn good writes into
/// 503s. A healthy commit is a round to a majority's disks, milliseconds;
/// what can take seconds is the wait behind other batches (4 in flight) on
/// a saturated node, or one huge request (a 32 MiB body, up to 10,000 tasks,
/// is one entry of that size to send and fsync). 4 s covers those with a
/// wide margin, and is no tighter than what a write forwarded by a follower
/// already gets (the node-to-node call's 3 s deadline). If it is hit anyway
/// the write still goes on and commits; the client retries with its
/// idempotency key and gets the same task. Raise it rather than the
/// clients' patience if big batches on slow disks meet it.
pub const LOCAL_WRITE_DEADLINE: Duration = Duration::from_secs(4);
/// The longest a lease long-poll waits on the leader.
pub const MAX_LEASE_WAIT: Duration = Duration::from_secs(5);

pub struct App {
    pub id: u64,
    pub me: SkeinNode,
    pub config: Config,
    pub raft: Raft,
    /// Read access to the applied state and the cold store (payloads...).
    pub store: StoreHandle,
    pub peers: Peers,
    pub proposer: Proposer,
    /// Node-local metrics (`/metrics` adds the state's at scrape time).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Cancelled when the node begins to shut down.
    pub shutdown: CancellationToken,
    /// Set once this node learns it was removed from the cluster (see
    /// [`App::note_removed`]): it then stops at once instead of draining.
    pub removed: std::sync::atomic::AtomicBool,
    /// The members' releases and formats (see [`crate::cluster::versions`]).
    pub versions: crate::cluster::versions::MemberVersions,
    /// Every task the node starts (`run` waits for all of them to end).
    pub tasks: tokio_util::task::TaskTracker,
    /// The node's certificates, when it has `--tls-dir`.
    pub tls: Option<skein_tls::NodeTls>,
    /// Tokens used through this node since the last report, with when:
    /// [`App::report_token_use`] replicates them every few seconds, so a
    /// request costs no write of its own.
    pub token_uses: std::sync::Mutex<BTreeMap<u64, u64>>,
}

impl App {
    /// The leader this node knows of, with its addresses.
    pub fn leader(&self) -> Option<(u64, SkeinNode)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let id = m.current_leader?;
        let node = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, node))
    }

    /// Builds a snapshot now and waits (up to `timeout`) until the current
    /// snapshot covers everything this node had applied when asked; returns
    /// that log position.
    pub async fn snapshot_now(&self, timeout: Duration) -> Result<Option<skein_raft::config::LogId>, NodeError> {
        let applied = self.store.last_applied();
        let unavailable = |what: &str, e: &dyn std::fmt::Display| NodeError::Unavailable(format!("{what}: {e}"));
        self.raft.trigger().snapshot().await.map_err(|e| unavailable("starting a snapshot", &e))?;
        self.raft
            .wait(Some(timeout))
            .metrics(|m| m.snapshot.map(|s| s.index) >= applied.map(|a| a.index), "a snapshot of the applied state")
            .await
            .map_err(|e| unavailable("waiting for the snapshot", &e))?;
        Ok(applied)
    }

    /// What this node runs, as it reports it to the leader.
    pub fn node_version(&self) -> skein_transport::NodeVersion {
        crate::cluster::versions::own_version(&self.config)
    }

    /// Starts an election on this node now: the leader is handing over
    /// (a planned restart) and chose this voter, which is up to date.
    /// (openraft ignores the trigger on a leader and on a learner: a leader
    /// answers ok; a learner, or a node stopping itself, says it cannot, so
    /// the caller picks another.)
    pub async fn campaign(&self) -> Result<(), NodeError> {
        let (leads, voter) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            (m.current_leader == Some(self.id), m.membership_config.membership().voter_ids().any(|v| v == self.id))
        };
        if leads {
            return Ok(());
        }
        if !voter {
            return Err(NodeError::Invalid(format!("node {} is not a voter: it cannot campaign", self.id)));
        }
        if self.shutdown.is_cancelled() {
            return Err(NodeError::Unavailable(format!("node {} is stopping too", self.id)));
        }
        tracing::info!(node_id = self.id, "the leader hands over: campaigning");
        self.raft.trigger().elect().await.map_err(|e| NodeError::Unavailable(format!("starting an election: {e}")))
    }

    /// The version gate: a command newer than the cluster's stored format
    /// is refused before it can reach the log, where nodes of an older
    /// release could not read it.
    pub fn check_format(&self, command: &Command) -> Result<(), NodeError> {
        let needs = command.format();
        let cluster = self.store.state().format();
        if needs <= cluster {
            return Ok(());
        }
        let message =
            crate::cluster::versions::needs_format_message(command.name(), needs, cluster, &self.member_versions());
        Err(NodeError::NeedsFormat { needs, cluster, message })
    }

    /// Proposes `SetFormat { format }` on this node, the leader: straight
    /// to its proposer, as the version gate refuses the command until it
    /// has applied. The one way the cluster's format is raised (a new
    /// cluster's first command, and `skein cluster finalize`).
    pub async fn raise_format(&self, format: u32) -> Result<(), NodeError> {
        let proposed = self.proposer.propose(Command::SetFormat { format });
        let answer = tokio::time::timeout(LOCAL_WRITE_DEADLINE, proposed).await.map_err(|_| {
            NodeError::OutcomeUnknown("no majority answered in time; the new format may or may not be committed".into())
        })??;
        match answer {
            Response::Done => Ok(()),
            other => Err(NodeError::Internal(format!("SetFormat answered {other:?}"))),
        }
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.id)
    }

    /// This node was removed from the cluster (the leader refused its
    /// worker's call with `Removed`, or its membership no longer lists it):
    /// say so once, and shut the node down. `run` then stops the worker at
    /// once (its leases were handed back by the removal) and exits with 0.
    pub fn note_removed(&self, how: &str) {
        if !self.removed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            tracing::info!(
                node_id = self.id,
                how,
                "removed from the cluster: stopping the worker and Raft, then exiting"
            );
        }
        self.shutdown.cancel();
    }

    pub fn is_removed(&self) -> bool {
        self.removed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Passes a worker call's result through, noticing when the leader
    /// answered that this node was removed.
    fn watch_removed<T>(&self, result: Result<T, NodeError>) -> Result<T, NodeError> {
        if let Err(NodeError::Removed(node)) = &result {
            if *node == self.id {
                self.note_removed("the leader refused its call");
            }
        }
        result
    }

    fn route(&self) -> Route {
        routing::route(self.id, self.leader())
    }

    /// Proposes a client write as `caller`: wrapped in `AsCaller`, so that
    /// the state machine checks the caller's token where the write is
    /// applied, and audits it. A cluster below format 3 has no tokens: its
    /// writes go unwrapped.
    pub async fn write_as(&self, caller: Caller, command: Command) -> Result<Response, NodeError> {
        if self.store.state().format() < 3 {
            return self.write(command).await;
        }
        self.write(Command::AsCaller { caller, command: Box::new(command) }).await
    }

    /// Audits a request that is not a command of the state machine (a
    /// membership change), as `caller`. Best effort: the change is done.
    pub async fn record(&self, caller: Caller, action: &str, target: String) {
        if self.store.state().format() < 3 {
            return;
        }
        let command = Command::Record { action: action.to_string(), target };
        if let Err(e) = self.write_as(caller, command).await {
            tracing::warn!(error = %e, action, "could not write the audit record");
        }
    }

    /// Notes that token `id` was used at `at_ms`.
    pub fn note_token_use(&self, id: u64, at_ms: u64) {
        if let Ok(mut uses) = self.token_uses.lock() {
            uses.insert(id, at_ms);
        }
    }

    /// Replicates the token uses noted since the last call (a token's
    /// `last_used`): one small write every few seconds at most.
    pub async fn report_token_use(&self) {
        let used: Vec<(u64, u64)> = match self.token_uses.lock() {
            Ok(mut uses) => std::mem::take(&mut *uses).into_iter().collect(),
            Err(_) => return,
        };
        if used.is_empty() || self.store.state().format() < 3 {
            return;
        }
        if let Err(e) = self.write(Command::TouchTokens { used }).await {
            tracing::debug!(error = %e, "could not report token use");
        }
    }

    /// Proposes a client write on the leader and answers its response.
    pub async fn write(&self, command: Command) -> Result<Response, NodeError> {
        if let Err(refused) = self.check_format(&command) {
            // This node may not have applied a finalize the leader has:
            // catch up once, then decide.
            self.catch_up().await.map_err(|_| refused)?;
            self.check_format(&command)?;
        }
        CALLS.run(|| self.write_once(&command)).await
    }

    async fn write_once(&self, command: &Command) -> Result<Response, NodeError> {
        match self.route() {
            // A leader cut off from its majority would wait for ever:
            // answer `unavailable` (outcome unknown) after a bound.
            Route::Local => self.propose_bounded(command.clone()).await,
            Route::Remote(node) => self.peers.write(&node.rpc_addr, command.clone()).await.map_err(from_transport),
            Route::NoLeader => Err(no_leader()),
        }
    }

    /// Proposes on this node, the leader, waiting at most
    /// [`LOCAL_WRITE_DEADLINE`]: a leader cut off from its majority would
    /// wait for ever, so it answers "outcome unknown" after that bound.
    async fn propose_bounded(&self, command: Command) -> Result<Response, NodeError> {
        tokio::time::timeout(LOCAL_WRITE_DEADLINE, self.proposer.propose(command)).await.unwrap_or_else(|_| {
            Err(NodeError::OutcomeUnknown("no majority answered in time; the write may or may not be committed".into()))
        })
    }

    /// Leases tasks for this node's worker, from the leader, long-polling.
    pub async fn lease(&self, req: LeaseRequest) -> Result<Vec<LeasedTask>, NodeError> {
        let result = CALLS
            .run(|| async {
                match self.route() {
                    Route::Local => self.lease_on_leader(req.clone()).await,
                    Route::Remote(node) => self.peers.lease(&node.rpc_addr, req.clone()).await.map_err(from_transport),
                    Route::NoLeader => Err(no_leader()),
                }
            })
            .await;
        self.watch_removed(result)
    }

    pub async fn heartbeat(&self, req: HeartbeatRequest) -> Result<HeartbeatAck, NodeError> {
        let result = match self.route() {
            Route::Local => self.heartbeat_on_leader(req).await,
            Route::Remote(node) => self.peers.heartbeat(&node.rpc_addr, req).await.map_err(from_transport),
            Route::NoLeader => Err(no_leader()),
        };
        self.watch_removed(result)
    }

    pub async fn heartbeat_on_leader(&self, req: HeartbeatRequest) -> Result<HeartbeatAck, NodeError> {
        let command = Command::Heartbeat { node: req.node, slots: req.slots, held: req.held };
        match self.propose_bounded(command).await? {
            Response::HeartbeatAck(ack) => Ok(ack),
            other => Err(refused_or_unexpected("heartbeat", other)),
        }
    }

    pub async fn complete(&self, req: CompleteRequest) -> Result<Vec<Result<TaskStatus, Rejection>>, NodeError> {
        let result = match self.route() {
            Route::Local => self.complete_on_leader(req).await,
            Route::Remote(node) => self.peers.complete(&node.rpc_addr, req).await.map_err(from_transport),
            Route::NoLeader => Err(no_leader()),
        };
        self.watch_removed(result)
    }

    pub async fn complete_on_leader(
        &self,
        req: CompleteRequest,
    ) -> Result<Vec<Result<TaskStatus, Rejection>>, NodeError> {
        match self.propose_bounded(Command::Complete { node: req.node, completions: req.completions }).await? {
            Response::Completed(results) => Ok(results),
            other => Err(refused_or_unexpected("complete", other)),
        }
    }

    /// A worker's round (outcomes, renewals, a lease) on the leader, or
    /// forwarded to it.
    pub async fn exchange(&self, req: ExchangeRequest) -> Result<ExchangeReply, NodeError> {
        let result = match self.route() {
            Route::Local => Ok(self.exchange_on_leader(req).await),
            Route::Remote(node) => self.peers.exchange(&node.rpc_addr, req).await.map_err(from_transport),
            Route::NoLeader => Err(no_leader()),
        };
        self.watch_removed(result)
    }

    /// Answers a worker's round on the leader: the outcomes, the renewals
    /// and the lease are proposed together, in this order, so that they
    /// meet in one write batch (one Raft entry) and a slot the outcomes
    /// free is leased again in the same entry. The lease waits for a task
    /// only in a round that reports nothing; each part is answered on its
    /// own.
    pub async fn exchange_on_leader(&self, req: ExchangeRequest) -> ExchangeReply {
        let ExchangeRequest { node, slots, completions, held, queues, max, wait_ms } = req;
        let reports = !completions.is_empty() || held.is_some();
        let complete = async {
            if completions.is_empty() {
                return Ok(Vec::new());
            }
            self.complete_on_leader(CompleteRequest { node, completions }).await
        };
        let heartbeat = async {
            match held {
                Some(held) => Some(self.heartbeat_on_leader(HeartbeatRequest { node, slots, held }).await),
                None => None,
            }
        };
        let lease = async {
            if max == 0 {
                // Nothing asked: still tell a removed node.
                return match self.store.state().is_removed(node) {
                    true => Err(NodeError::Removed(node)),
                    false => Ok(Vec::new()),
                };
            }
            let wait_ms = if reports { 0 } else { wait_ms };
            self.lease_on_leader(LeaseRequest { node, queues, max, wait_ms }).await
        };
        let (completed, heartbeat, leased) = tokio::join!(complete, heartbeat, lease);
        ExchangeReply { completed, heartbeat, leased }
    }

    /// Asks the leader to add a node (as a learner).
    pub async fn join(&self, req: JoinRequest) -> Result<(), NodeError> {
        MEMBERSHIP_CALLS
            .run(|| async {
                match self.route() {
                    Route::Local => self.join_on_leader(req.clone()).await,
                    Route::Remote(node) => self.peers.join(&node.rpc_addr, req.clone()).await.map_err(from_transport),
                    Route::NoLeader => Err(no_leader()),
                }
            })
            .await
    }

    /// Asks the leader to remove a node from the membership.
    pub async fn leave(&self, id: u64) -> Result<(), NodeError> {
        MEMBERSHIP_CALLS
            .run(|| async {
                match self.route() {
                    Route::Local => self.leave_on_leader(id).await,
                    Route::Remote(node) => self.peers.leave(&node.rpc_addr, id).await.map_err(from_transport),
                    Route::NoLeader => Err(no_leader()),
                }
            })
            .await
    }

    /// The leader's side of a lease: propose one as soon as the state says
    /// it would grant something, waiting up to `wait_ms` for that.
    pub async fn lease_on_leader(&self, req: LeaseRequest) -> Result<Vec<LeasedTask>, NodeError> {
        // Said at once, not only when there is something to lease: a removed
        // node's lease call (or its probe, `max` 0) is how it learns.
        if self.store.state().is_removed(req.node) {
            return Err(NodeError::Removed(req.node));
        }
        let wait = Duration::from_millis(req.wait_ms).min(MAX_LEASE_WAIT);
        let deadline = Instant::now() + wait;
        let mut applied = self.raft.metrics();
        loop {
            let leasable = self.store.state().can_lease(&req.queues, now_ms());
            if leasable && req.max > 0 {
                let command = Command::Lease { node: req.node, queues: req.queues.clone(), max: req.max };
                match self.proposer.propose(command).await? {
                    Response::Leased(grants) if !grants.is_empty() => {
                        self.observe_lease_waits(&grants);
                        return Ok(grants
                            .into_iter()
                            .map(|grant| {
                                // Enqueue wrote the payload in the same batch as the task.
                                let payload =
                                    self.store.payload(grant.task).ok().flatten().unwrap_or_else(|| "null".to_string());
                                LeasedTask { grant, payload }
                            })
                            .collect());
                    }
                    Response::Leased(_) => {}
                    other => return Err(refused_or_unexpected("lease", other)),
                }
            }
            let now = Instant::now();
            if now >= deadline || self.shutdown.is_cancelled() {
                return Ok(Vec::new());
            }
            // Something applied (an enqueue, a completion freeing a queue's
            // cap) or a backoff may have ended: look again.
            let tick = (deadline - now).min(Duration::from_millis(100));
            tokio::select! {
                _ = applied.changed() => {}
                _ = tokio::time::sleep(tick) => {}
                _ = self.shutdown.cancelled() => return Ok(Vec::new()),
            }
            if !self.is_leader() {
                let (leader_id, leader) = self.leader().unzip();
                return Err(NodeError::NotLeader { leader_id, leader });
            }
        }
    }

    /// How long each granted task waited from ready (enqueued, unblocked or
    /// its backoff over) to leased, into the `skein_lease_wait_seconds`
    /// histogram.
    fn observe_lease_waits(&self, grants: &[skein_raft::fsm::Granted]) {
        let state = self.store.state();
        for g in grants {
            let Some(t) = state.task(g.task) else { continue };
            let Some(started) = t.last_started_ms else { continue };
            let ready = t.created_ms.max(t.not_before_ms);
            self.metrics
                .lease_wait
                .get_or_create(&vec![("queue", g.queue.clone())])
                .observe(started.saturating_sub(ready) as f64 / 1000.0);
        }
    }

    pub async fn join_on_leader(&self, req: JoinRequest) -> Result<(), NodeError> {
        let membership = self.raft.metrics().borrow().membership_config.clone();
        match membership.membership().get_node(&req.id) {
            // Already a member; the leader's duties admit it if need be.
            Some(node) if *node == req.node => return Ok(()),
            // A member restarted with new addresses (a rescheduled pod): the
            // same node (same id, same data), found at its new place.
            Some(old) => {
                tracing::info!(node_id = req.id, from = %old.rpc_addr, to = %req.node.rpc_addr, "a member's addresses changed: updating them");
                let nodes = BTreeMap::from([(req.id, req.node)]);
                self.raft.change_membership(openraft::ChangeMembers::SetNodes(nodes), false).await?;
                return Ok(());
            }
            None => {}
        }
        // A node must read what the cluster writes: after a finalize, an
        // older release could not decode the log it would be sent.
        let cluster = self.store.state().format();
        let joiner = self.versions.ask(req.id, &req.node.rpc_addr).await;
        if joiner.format() < cluster {
            return Err(NodeError::Invalid(format!(
                "node {} cannot join: it {}, and this cluster is at stored format {cluster}, which it cannot read; \
                 run skein {} or later on it",
                req.id,
                match joiner.release() {
                    Some(r) => format!("runs {r} (format {})", joiner.format()),
                    None => "did not say which release it runs".into(),
                },
                skein_raft::format::release_of(cluster)
            )));
        }
        tracing::info!(node_id = req.id, rpc = %req.node.rpc_addr, "adding learner");
        self.raft.add_learner(req.id, req.node, false).await?;
        // A node id removed before and joining again is accepted again
        // before it is told it joined (and so before its worker starts).
        if self.store.state().is_removed(req.id) {
            self.proposer.propose(Command::AdmitNode { node: req.id }).await?;
        }
        Ok(())
    }

    pub async fn leave_on_leader(&self, id: u64) -> Result<(), NodeError> {
        let membership = self.raft.metrics().borrow().membership_config.clone();
        let m = membership.membership();
        if m.get_node(&id).is_none() {
            if self.store.state().nodes().contains_key(&id) {
                // A worker: not in Raft, so only the state machine forgets
                // it (its leases go back to the queue, its calls are refused).
                tracing::info!(node_id = id, "removing worker");
                return match self.proposer.propose(Command::RemoveNode { node: id }).await? {
                    Response::Released(_) => Ok(()),
                    other => Err(unexpected("removing the worker", &other)),
                };
            }
            return Err(NodeError::Invalid(format!("node {id} is neither a member nor a worker")));
        }
        let voters: std::collections::BTreeSet<u64> = m.voter_ids().collect();
        if voters.len() == 1 && voters.contains(&id) {
            return Err(NodeError::Invalid(format!("node {id} is the last voter; a cluster cannot remove it")));
        }
        tracing::info!(node_id = id, "removing node from membership");
        let ids: std::collections::BTreeSet<u64> = [id].into();
        if voters.contains(&id) {
            self.raft.change_membership(openraft::ChangeMembers::RemoveVoters(ids.clone()), false).await?;
        }
        self.raft.change_membership(openraft::ChangeMembers::RemoveNodes(ids), false).await?;
        // Its leases go back to the queue now rather than at expiry, and the
        // state machine refuses it from now on: it is never sent the log
        // again, so it may not know, and must not be given work meanwhile.
        // Only after the membership change: a node refused work while still
        // a voter would stop and leave the cluster a voter short. Should
        // this fail (we just removed ourselves, or lost leadership), the
        // next leader's duties propose it (`leader::reconcile_removed`).
        if let Err(e) = self.proposer.propose(Command::RemoveNode { node: id }).await {
            tracing::warn!(node_id = id, error = %e, "removed from the membership; the leader's duties will hand back its leases");
        }
        Ok(())
    }
}

fn unexpected(what: &str, r: &Response) -> NodeError {
    NodeError::Internal(format!("{what} answered with {r:?}"))
}

/// A worker command's answer that is not its own: `Removed` when the state
/// machine refused the node as removed from the cluster.
fn refused_or_unexpected(what: &str, r: Response) -> NodeError {
    match r {
        Response::Rejected(Rejection::NodeRemoved(node)) => NodeError::Removed(node),
        other => unexpected(what, &other),
    }
}

/// The members' versions (see [`crate::cluster::versions`]).
impl App {
    /// Every member's version, asked now (this node answers for itself).
    pub async fn ask_member_versions(&self) -> BTreeMap<u64, Reported> {
        let members: Vec<(u64, String)> = {
            let m = self.raft.metrics().borrow().membership_config.clone();
            m.membership().nodes().map(|(id, n)| (*id, n.rpc_addr.clone())).collect()
        };
        let asks = members.iter().map(|(id, addr)| async move {
            let r = if *id == self.id {
                Reported::Version(self.node_version())
            } else {
                self.versions.ask(*id, addr).await
            };
            (*id, r)
        });
        futures::future::join_all(asks).await.into_iter().collect()
    }

    /// The members' versions as last heard (without asking).
    pub fn member_versions(&self) -> BTreeMap<u64, Option<Reported>> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        let ids: Vec<u64> = m.membership().nodes().map(|(id, _)| *id).collect();
        ids.into_iter()
            .map(|id| {
                let r =
                    if id == self.id { Some(Reported::Version(self.node_version())) } else { self.versions.get(id) };
                (id, r)
            })
            .collect()
    }
}

impl App {
    /// The cluster as this node sees it (see [`crate::views::cluster`]).
    pub fn cluster_status(&self) -> skein_raft::api::ClusterStatus {
        let metrics = self.raft.metrics().borrow().clone();
        let versions = self
            .member_versions()
            .into_iter()
            .map(|(id, r)| (id, r.map(|r| MemberVersion { release: r.release(), format: r.format() })))
            .collect();
        crate::views::cluster::cluster_status(self.id, &metrics, &self.store.state(), &versions)
    }
}

impl App {
    /// Waits until this node has applied everything the leader had
    /// committed when asked (a linearizable read barrier), for at most a few
    /// seconds.
    pub async fn catch_up(&self) -> Result<(), NodeError> {
        let index = match self.leader() {
            Some((id, _)) if id == self.id => return Ok(()),
            Some((_, node)) => {
                self.peers.read_index(&node.rpc_addr).await.map_err(|e| NodeError::Unavailable(e.to_string()))?
            }
            None => return Err(NodeError::Unavailable("no leader known".into())),
        };
        self.raft
            .wait(Some(Duration::from_secs(3)))
            .applied_index_at_least(Some(index), "read barrier")
            .await
            .map_err(|e| NodeError::Unavailable(format!("catching up with the leader: {e}")))?;
        Ok(())
    }
}

pub type SharedApp = Arc<App>;
