//! A worker's link to the cluster: a worker is not a Raft member, holds no
//! log and no state, and reaches the members over RPC for everything
//! (leases, heartbeats, outcomes, the reads its transforms need).
//!
//! It calls the leader directly. It learns who leads from the members'
//! answers: a member that does not lead answers "not the leader" with the
//! leader's addresses, and the call goes there next; a member that cannot
//! be reached is skipped for the next one, and so is a leader that does
//! not answer in time or drops the connection (frozen, or cut off): the
//! next call looks for the leader among the members again, while the call
//! whose outcome is unknown is not sent again. The members it knows come
//! from its registration (`POST /api/v1/cluster/workers`) and from those
//! answers, and it reads them anew (`GET /api/v1/cluster`) when no call has
//! been answered for a while ([`REFRESH_AFTER`]).
//!
//! It also keeps when the leader last answered it ([`Contact`]): what its
//! `/readyz` says (see [`readiness`]).

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
use tokio::time::Instant;
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
    /// When the leader last answered, and when this worker last stopped a
    /// task on its own.
    contact: Mutex<Contact>,
    /// The leader last forgotten (see [`Remote::leader_version`]).
    forgotten: Mutex<Option<SkeinNode>>,
}

/// How long a worker goes without any call answered before it reads the
/// membership again to learn the members anew (the ones it knew may all have been
/// replaced, or the leader it knows may be frozen).
pub const REFRESH_AFTER: Duration = Duration::from_secs(10);

/// What a worker knows of its contact with the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contact {
    /// When the last call the leader answered was sent (`None`: none yet).
    pub answered: Option<Instant>,
    /// When a lease last ran out unrenewed here: the worker fenced itself
    /// (stopped the task on its own, reporting nothing).
    pub fenced: Option<Instant>,
    /// When this worker last registered or read the members anew, or
    /// tried to.
    pub registered: Instant,
}

impl Contact {
    fn new(now: Instant) -> Contact {
        Contact { answered: None, fenced: None, registered: now }
    }
}

/// Whether a worker is ready (it can lease), from what it knows at `now`:
/// `Ok` when the leader answered a call sent within `window` (the span of
/// a lease: a lease asked for or renewed before that has run out) and no
/// lease has run out unrenewed since; otherwise why not. A worker cut off
/// from every member is not ready; it is again once the leader answers.
pub fn readiness(removed: bool, contact: &Contact, now: Instant, window: Duration) -> Result<(), String> {
    if removed {
        return Err("removed from the cluster: stopping".into());
    }
    let Some(answered) = contact.answered else {
        return Err("no leader has answered this worker yet".into());
    };
    if let Some(fenced) = contact.fenced.filter(|f| *f >= answered) {
        return Err(format!(
            "cut off from the leader: a lease ran out unrenewed {} ms ago and no call has been answered since \
             (the leader last answered a call sent {} ms ago)",
            now.saturating_duration_since(fenced).as_millis(),
            now.saturating_duration_since(answered).as_millis()
        ));
    }
    let quiet = now.saturating_duration_since(answered);
    if quiet > window {
        return Err(format!(
            "cut off from the leader: no call answered for {} ms (more than a lease, {} ms)",
            quiet.as_millis(),
            window.as_millis()
        ));
    }
    Ok(())
}

/// The span [`readiness`] allows without an answer: a lease of the default
/// length (a queue's `lease_ms`).
pub fn ready_window() -> Duration {
    Duration::from_millis(skein_raft::fsm::QueueConfig::default().lease_ms)
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
            contact: Mutex::new(Contact::new(Instant::now())),
            forgotten: Mutex::new(None),
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

    /// When the leader last answered, and when this worker last fenced
    /// itself.
    pub fn contact(&self) -> Contact {
        *self.contact.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether this worker can lease now (see [`readiness`]).
    pub fn readiness(&self) -> Result<(), String> {
        readiness(self.is_removed(), &self.contact(), Instant::now(), ready_window())
    }

    /// A call sent at `sent` was answered by the leader.
    fn note_answered(&self, sent: Instant) {
        let mut c = self.contact.lock().unwrap_or_else(PoisonError::into_inner);
        if c.answered.is_none_or(|a| a < sent) {
            c.answered = Some(sent);
        }
    }

    /// A lease ran out unrenewed: the worker stopped its task on its own.
    pub fn note_self_fenced(&self, at: Instant) {
        self.contact.lock().unwrap_or_else(PoisonError::into_inner).fenced = Some(at);
    }

    fn note_registered(&self, at: Instant) {
        self.contact.lock().unwrap_or_else(PoisonError::into_inner).registered = at;
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
    ///
    /// Only where the next call goes changes here, never whether this one
    /// is sent again: a call that timed out or lost its connection may have
    /// been carried out, and [`CALLS`] does not repeat it.
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
            // No leader there (it says so, or it cannot be reached), or one
            // that does not answer in time, drops the connection, or cannot
            // serve the call (a leader frozen, or cut off from its
            // majority, while the others elect a new one): the next call
            // tries the next member, which names the leader it knows.
            CallError::Remote { error: NodeError::NotLeader { .. } | NodeError::Unavailable(_), .. }
            | CallError::Unreachable { .. }
            | CallError::Timeout { .. }
            | CallError::Disconnected { .. } => self.forget(target),
            _ => {}
        }
    }

    /// Forgets `target` as the leader, if it was, and makes the next member
    /// tried (while no leader is known) the one after it.
    fn forget(&self, target: &(u64, SkeinNode)) {
        let id = target.0;
        let forgot = self.leader.send_if_modified(|l| {
            let was = l.as_ref().is_some_and(|(l, _)| *l == id);
            if was {
                *l = None;
            }
            was
        });
        if forgot {
            *self.forgotten.lock().unwrap_or_else(PoisonError::into_inner) = Some(target.1.clone());
            let members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(i) = members.iter().position(|(m, _)| *m == id) {
                self.next.store(i + 1, Ordering::Relaxed);
            }
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
                let sent = Instant::now();
                match call(target.1.rpc_addr.clone()).await {
                    Ok(v) => {
                        self.note_answered(sent);
                        if self.leader().is_none() {
                            self.leader.send_replace(Some(target));
                        }
                        Ok(v)
                    }
                    Err(e) => {
                        if let CallError::Remote { error, .. } = &e {
                            if !matches!(error, NodeError::NotLeader { .. } | NodeError::Unavailable(_)) {
                                // The leader answered (a refusal is an answer).
                                self.note_answered(sent);
                            }
                        }
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
        self.peers.node_version(&self.version_target()?).await.ok()
    }

    /// Whom [`Remote::leader_version`] asks: the leader, or while none is
    /// known the leader last forgotten. A leader older than 0.6.0 drops
    /// the connection on `exchange`, which makes this worker forget it;
    /// the worker must still learn from it that it is older.
    fn version_target(&self) -> Option<String> {
        match self.leader() {
            Some((_, leader)) => Some(leader.rpc_addr),
            None => self.forgotten.lock().unwrap_or_else(PoisonError::into_inner).as_ref().map(|n| n.rpc_addr.clone()),
        }
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

/// Reads the membership again while no call is answered: once
/// [`REFRESH_AFTER`] has passed since the last answer (or the last read),
/// and every [`REFRESH_AFTER`] after that, or sooner once the leader is
/// forgotten (see [`refresh_due`]), to learn the members and the
/// leader anew (the members this worker knew may all have been replaced,
/// or the leader it knows may be frozen). It goes by the answers, not by
/// whether a leader is known: a leader that was known but no longer
/// answers counts as none.
///
/// It reads (`GET /api/v1/cluster`, through the members of `--join`), never
/// registers again: a registration records a heartbeat, and a worker cut
/// off from the members' RPC port (the one its work goes through) must
/// stay silent, so that the leader removes it after `--worker-silence`.
pub async fn refresh_members(remote: Arc<Remote>, stop: CancellationToken) {
    let mut leader = remote.leader_changes();
    loop {
        if remote.is_removed() || remote.shutdown.is_cancelled() {
            return;
        }
        let due = refresh_due(&remote.contact(), remote.leader().is_some());
        if Instant::now() < due {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(due) => continue,
                // A leader forgotten: due sooner.
                changed = leader.changed() => if changed.is_err() { return } else { continue },
            }
        }
        let reading = Instant::now();
        let read = tokio::select! {
            _ = stop.cancelled() => return,
            read = read_members(&remote.config, remote.id) => read,
        };
        match read {
            Ok(joined) if !joined.members.is_empty() => {
                info!(members = joined.members.len(), leader = ?joined.leader, "no leader answering: learned the members anew");
                remote.learn(&joined);
            }
            Ok(_) => warn!("no leader answering, and the cluster's status lists no member"),
            Err(e) => warn!(error = %e, "no leader answering, and reading the members failed"),
        }
        remote.note_registered(reading);
    }
}

/// How often, at most, the members are read anew while no leader is known.
pub const LOST_LEADER_REFRESH: Duration = Duration::from_secs(5);

/// When [`refresh_members`] next reads the members: [`REFRESH_AFTER`]
/// after the last answer or read; while no leader is known (the one it
/// knew timed out, dropped a call or was unavailable, and was forgotten),
/// [`LOST_LEADER_REFRESH`] after the last read, so at once when that was
/// long ago. A worker that registered while the cluster had one member
/// knows only that one: without this it would go on calling it, frozen,
/// for [`REFRESH_AFTER`] before it learned of the new leader.
pub fn refresh_due(c: &Contact, leader_known: bool) -> Instant {
    let quiet = c.answered.map_or(c.registered, |a| a.max(c.registered)) + REFRESH_AFTER;
    if leader_known {
        quiet
    } else {
        quiet.min(c.registered + LOST_LEADER_REFRESH)
    }
}

/// The Raft members and the leader, as the first member of `--join` that
/// answers `GET /api/v1/cluster` within 3 s says (in the shape of a
/// registration's answer).
async fn read_members(config: &Config, id: u64) -> anyhow::Result<WorkerJoined> {
    let Some(join) = &config.join else { bail!("a worker needs --join") };
    let status = membership::cluster_status_once(config, join, Duration::from_secs(3)).await?;
    let members = status
        .nodes
        .into_iter()
        .filter(|n| n.role != "worker")
        .map(|n| skein_raft::api::MemberAddr { id: n.id, rpc_addr: n.rpc_addr, http_addr: n.http_addr })
        .collect();
    Ok(WorkerJoined { id, members, leader: status.leader })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
pub(crate) mod tests {
    use std::sync::Mutex as StdMutex;

    use clap::Parser;
    use skein_raft::api::MemberAddr;
    use skein_transport::PeersConfig;

    use super::*;

    /// A worker that knows members 1, 2 and 3 (at `m<id>:7800`), 1 leading.
    pub(crate) fn remote() -> Remote {
        let args = crate::config::Args::try_parse_from([
            "skein-node",
            "--role",
            "worker",
            "--join",
            "127.0.0.1:1",
            "--listen",
            "127.0.0.1:1",
            "--http",
            "127.0.0.1:2",
            "--data-dir",
            "/tmp/skein-remote-test",
        ])
        .unwrap();
        let config = Config::resolve(args).unwrap();
        let members = (1..=3)
            .map(|id| MemberAddr { id, rpc_addr: format!("m{id}:7800"), http_addr: format!("m{id}:7700") })
            .collect();
        let joined = WorkerJoined { id: 1 << 33, members, leader: Some(1) };
        let peers = Peers::new(PeersConfig::default());
        Remote::new(joined.id, config, peers, Arc::new(Metrics::new()), CancellationToken::new(), &joined)
    }

    /// One call that the leader answers.
    pub(crate) async fn answered(r: &Remote) {
        r.to_leader(|_| async { Ok::<(), CallError>(()) }).await.unwrap();
    }

    /// Calls through `r`: every address called, in order, and the answer.
    /// `m1` (the leader known at first) fails with `failure`; the others
    /// answer.
    async fn call(r: &Remote, calls: &StdMutex<Vec<String>>, failure: &CallError) -> Result<(), NodeError> {
        r.to_leader(|addr| {
            calls.lock().unwrap().push(addr.clone());
            let failure = failure.clone();
            async move {
                if addr == "m1:7800" {
                    Err(failure)
                } else {
                    Ok(())
                }
            }
        })
        .await
    }

    /// A leader that stops answering (frozen: the call times out) or drops
    /// the connection is forgotten: the call is not sent again (its
    /// outcome is unknown), and the next call goes to another member, not
    /// back to it.
    #[tokio::test]
    async fn a_leader_that_times_out_or_drops_the_call_is_forgotten_but_the_call_is_not_repeated() {
        let failures = [
            CallError::Timeout { peer: "m1:7800".into(), after: Duration::from_secs(3) },
            CallError::Disconnected { peer: "m1:7800".into(), reason: "reset by peer".into() },
            CallError::Remote { peer: "m1:7800".into(), error: NodeError::Unavailable("no majority".into()) },
        ];
        for failure in failures {
            let r = remote();
            let calls = StdMutex::new(Vec::new());
            let first = call(&r, &calls, &failure).await;
            assert!(first.is_err(), "{failure}: {first:?}");
            assert_eq!(*calls.lock().unwrap(), ["m1:7800"], "{failure}: sent once only");
            assert_eq!(r.leader(), None, "{failure}: the frozen leader is forgotten");

            calls.lock().unwrap().clear();
            call(&r, &calls, &failure).await.unwrap();
            assert_eq!(*calls.lock().unwrap(), ["m2:7800"], "{failure}: the next call tries the next member");
            assert_eq!(r.leader().map(|(id, _)| id), Some(2), "{failure}: the member that answered leads");
        }
        // One that cannot be reached was not sent the call: it goes on to
        // the next member at once.
        let r = remote();
        let calls = StdMutex::new(Vec::new());
        let refused = CallError::Unreachable { peer: "m1:7800".into(), reason: "refused".into() };
        call(&r, &calls, &refused).await.unwrap();
        assert_eq!(*calls.lock().unwrap(), ["m1:7800", "m2:7800"]);
    }

    /// A leader that dropped a call (as one older than 0.6.0 drops
    /// `exchange`) is forgotten, and is still the one asked what it runs
    /// until another leader is known.
    #[tokio::test]
    async fn the_leader_forgotten_is_asked_its_version_until_another_is_known() {
        let r = remote();
        assert_eq!(r.version_target().as_deref(), Some("m1:7800"), "the leader known");
        let calls = StdMutex::new(Vec::new());
        let dropped = CallError::Disconnected { peer: "m1:7800".into(), reason: "unknown call".into() };
        assert!(call(&r, &calls, &dropped).await.is_err());
        assert_eq!(r.leader(), None);
        assert_eq!(r.version_target().as_deref(), Some("m1:7800"), "the leader forgotten");
        call(&r, &calls, &dropped).await.unwrap();
        assert_eq!(r.version_target().as_deref(), Some("m2:7800"), "the new leader");
    }

    /// An answer of substance from the leader (a refusal) keeps it.
    #[tokio::test]
    async fn a_leader_that_refuses_a_call_is_kept() {
        let r = remote();
        let calls = StdMutex::new(Vec::new());
        let refusal = CallError::Remote { peer: "m1:7800".into(), error: NodeError::Invalid("no".into()) };
        assert!(call(&r, &calls, &refusal).await.is_err());
        assert_eq!(r.leader().map(|(id, _)| id), Some(1));
        assert!(r.contact().answered.is_some(), "a refusal is an answer");
    }

    #[test]
    fn readiness_follows_the_contact_with_the_leader() {
        let t0 = Instant::now();
        let window = Duration::from_secs(30);
        let s = Duration::from_secs;
        let contact = |answered: Option<u64>, fenced: Option<u64>| Contact {
            answered: answered.map(|a| t0 + s(a)),
            fenced: fenced.map(|f| t0 + s(f)),
            registered: t0,
        };
        let at = |secs| t0 + s(secs);
        assert!(readiness(false, &contact(None, None), at(1), window).is_err(), "no answer yet");
        assert_eq!(readiness(false, &contact(Some(1), None), at(2), window), Ok(()));
        assert!(readiness(true, &contact(Some(1), None), at(2), window).is_err(), "removed");
        assert_eq!(readiness(false, &contact(Some(1), None), at(31), window), Ok(()), "within a lease's span");
        let quiet = readiness(false, &contact(Some(1), None), at(32), window).unwrap_err();
        assert!(quiet.contains("no call answered for 31000 ms"), "{quiet}");
        let fenced = readiness(false, &contact(Some(1), Some(4)), at(5), window).unwrap_err();
        assert!(fenced.contains("a lease ran out unrenewed 1000 ms ago"), "{fenced}");
        assert_eq!(readiness(false, &contact(Some(6), Some(4)), at(7), window), Ok(()), "answered again since");
    }

    /// The members are read anew 10 s after the last answer or read; once
    /// the leader is forgotten, 5 s after the last read (at once when that
    /// was long ago), not 10 s after the last answer.
    #[test]
    fn a_forgotten_leader_makes_the_members_read_anew_sooner() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let contact = |answered: Option<u64>, registered: u64| Contact {
            answered: answered.map(|a| t0 + s(a)),
            fenced: None,
            registered: t0 + s(registered),
        };
        // (case, contact, leader known, due at t0 + secs)
        let cases = [
            ("no answer yet, leader known", contact(None, 0), true, 10),
            ("answered at 60, leader known", contact(Some(60), 0), true, 70),
            ("read at 65 after an answer at 60", contact(Some(60), 65), true, 75),
            ("answered at 60, leader forgotten: the last read was long ago", contact(Some(60), 0), false, 5),
            ("leader forgotten, read at 62", contact(Some(60), 62), false, 67),
            ("leader forgotten, read at 68: 5 s after that read", contact(Some(66), 68), false, 73),
        ];
        for (case, c, known, due) in cases {
            assert_eq!(refresh_due(&c, known), t0 + s(due), "{case}");
        }
    }
}
