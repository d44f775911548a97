//! The worker every node runs: it asks the leader for as many tasks as it
//! has free slots, runs each task's transform, renews all its leases with
//! one heartbeat per interval, and reports outcomes under their tokens.
//!
//! A report is one round with the leader ([`ExchangeRequest`]): it carries
//! the outcomes, the renewals when they are due, and the lease of the slots
//! the outcomes free, so a busy worker makes one call per batch of finished
//! tasks and sends a heartbeat of its own only in an interval without a
//! report. The leader proposes the three together, in one Raft entry when
//! they meet in its write batch. An idle worker long-polls with `lease`.
//!
//! Fencing on the worker's side: a task the leader says is no longer ours
//! (revoked in a heartbeat ack) is stopped at once, and a task whose lease
//! we could not renew before it ran out is stopped on our own, without
//! reporting: by then the leader may have given it to another node.
//!
//! What to do with each lease is decided by the tracker ([`leases`], pure,
//! given `now`); this file does it: the calls, the cancels, the logs, the
//! metrics and the journal.

pub mod journal;
pub mod leases;
pub mod transform;

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use skein_raft::fsm::{Command, Completion, HeartbeatAck, HeldLease, Outcome, Rejection, ReportedProgress, TaskStatus};
use skein_transport::{
    CompleteRequest, ExchangeReply, ExchangeRequest, HeartbeatRequest, LeaseRequest, LeasedTask, NodeError,
};
use tokio::sync::Notify;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::clock::now_ms;
use crate::cluster::host::Host;
use crate::metrics::{outcome_label, Metrics};
use crate::worker::journal::Journal;
use crate::worker::leases::{Answer, Leases, Moment, Stop, Why};
use crate::worker::transform::TaskContext;

/// How long a lease long-poll may wait on the leader.
const LEASE_WAIT_MS: u64 = 1_000;
/// How long the worker reports with 0.5.0's separate calls after finding
/// a leader that does not know `exchange`, before it tries again.
const LEGACY_FOR: Duration = Duration::from_secs(60);
/// The first release whose members answer `exchange`.
const EXCHANGE_SINCE: (u64, u64, u64) = (0, 6, 0);

pub struct Worker {
    host: Host,
    /// Every lease this node holds, each with its transform's context.
    leases: Mutex<Leases<TaskContext>>,
    /// Signalled when a slot frees up.
    freed: Notify,
    /// Signalled when a transform finished: an outcome to report.
    finished: Notify,
    /// The leader told us we are draining.
    draining: std::sync::atomic::AtomicBool,
    /// `--journal`: every start and outcome report, for audits.
    journal: Option<Journal>,
    /// Slots asked for by lease calls and rounds in flight. Changed only
    /// with the tracker's lock held, so that two askers never take the
    /// same free slot.
    requested: std::sync::atomic::AtomicUsize,
    /// When the last renewal that the leader answered was sent.
    renewed: Mutex<Option<Instant>>,
    /// Until when the leader is known not to answer `exchange` (older
    /// than 0.6.0): rounds go as separate calls.
    legacy_until: Mutex<Option<Instant>>,
    /// The worker's loops and every running transform.
    tasks: TaskTracker,
}

impl Worker {
    /// Starts the worker's loops. `stop_leasing` ends leasing (drain);
    /// `stop` cancels every running task and ends the loops.
    pub fn spawn(
        host: Host,
        journal: Option<Journal>,
        stop_leasing: CancellationToken,
        stop: CancellationToken,
    ) -> Arc<Worker> {
        let worker = Arc::new(Worker {
            host,
            leases: Mutex::new(Leases::new()),
            freed: Notify::new(),
            finished: Notify::new(),
            draining: std::sync::atomic::AtomicBool::new(false),
            journal,
            requested: std::sync::atomic::AtomicUsize::new(0),
            renewed: Mutex::new(None),
            legacy_until: Mutex::new(None),
            tasks: TaskTracker::new(),
        });
        worker.tasks.spawn(worker.clone().lease_loop(stop_leasing.clone(), stop.clone()));
        let (w, every, s) = (worker.clone(), worker.host.config().heartbeat_interval, stop.clone());
        worker.tasks.spawn(async move { keep_leases(&*w, every, &s).await });
        worker.tasks.spawn(worker.clone().report_loop(stop_leasing, stop));
        worker
    }

    /// Waits until the worker's loops and every transform it started have
    /// ended (after `stop` was cancelled: running transforms are cancelled
    /// with it).
    pub async fn stopped(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Both clocks, read now.
    fn moment() -> Moment {
        Moment { at: Instant::now(), ms: now_ms() }
    }

    /// Tasks running or waiting for their outcome to be recorded.
    pub fn running_count(&self) -> usize {
        self.leases().len()
    }

    /// Tasks whose transform still runs: what occupies a slot. A finished
    /// task whose outcome is on its way to the leader frees its slot, so
    /// the next lease overlaps the report.
    fn busy_count(&self) -> usize {
        self.leases().busy()
    }

    /// Stops every running task without reporting (shutdown after the drain
    /// deadline). The leader hands their leases back when told.
    pub fn abandon_all(&self) {
        let stops = self.leases().abandon_all();
        for s in stops {
            self.stop_lease(s);
        }
    }

    async fn lease_loop(self: Arc<Self>, stop_leasing: CancellationToken, stop: CancellationToken) {
        let node = self.host.id();
        // Leases held by a previous run of this node are orphans: hand them
        // back before taking new ones, so they need not wait for expiry.
        let mut backoff = Duration::from_millis(100);
        loop {
            if stop_leasing.is_cancelled() {
                return;
            }
            match self.host.write(Command::ReleaseNode { node, forget: false }).await {
                Ok(_) => break,
                Err(e) => {
                    debug!(error = %e, "waiting for a leader to hand back old leases");
                    tokio::select! {
                        _ = stop_leasing.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
        info!(node_id = node, slots = self.host.config().slots, "worker leasing");
        // Lease requests in flight, each with the slots it asked for. Slots
        // that free up while one request is on its way go into another, so a
        // busy worker does not wait a whole round trip per batch of tasks
        // (every lease is a Raft commit: a round to a majority's disks).
        // A finished task's slot is not leased here: its report round
        // leases it ([`Worker::report_loop`]).
        let mut in_flight = FuturesUnordered::new();
        let slots = self.host.config().slots as usize;
        let mut backoff = Duration::from_millis(50);
        loop {
            if stop_leasing.is_cancelled() {
                return;
            }
            let draining = self.draining.load(std::sync::atomic::Ordering::Relaxed);
            // One request takes every free slot; another goes out only for a
            // worthwhile share of them (so an idle worker long-polls once).
            let worth = if in_flight.is_empty() { 1 } else { (slots / 4).max(1) };
            let free = match draining || in_flight.len() >= self.host.config().leases_in_flight {
                true => 0,
                false => self.reserve_slots(0, worth),
            };
            if free > 0 {
                let req = LeaseRequest {
                    node,
                    queues: self.host.config().queues.clone(),
                    max: free as u32,
                    wait_ms: LEASE_WAIT_MS,
                };
                let host = self.host.clone();
                let asked_at = Self::moment();
                in_flight.push(async move { (free, asked_at, host.lease(req).await) });
                continue;
            }
            tokio::select! {
                _ = stop_leasing.cancelled() => return,
                Some((asked, asked_at, result)) = in_flight.next(), if !in_flight.is_empty() => {
                    self.requested.fetch_sub(asked, std::sync::atomic::Ordering::Relaxed);
                    match result {
                        Ok(tasks) => {
                            backoff = Duration::from_millis(50);
                            for task in tasks {
                                self.start(task, asked_at, &stop);
                            }
                        }
                        Err(e) => {
                            debug!(error = %e, "lease failed");
                            tokio::select! {
                                _ = stop_leasing.cancelled() => return,
                                _ = self.pause_after_failure(backoff) => {}
                            }
                            backoff = (backoff * 2).min(Duration::from_secs(1));
                        }
                    }
                }
                _ = self.freed.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    /// Starts running a task leased by a request made at `asked`.
    fn start(self: &Arc<Self>, task: LeasedTask, asked: Moment, stop: &CancellationToken) {
        let g = &task.grant;
        let ctx = TaskContext {
            cancel: stop.child_token(),
            progress: Arc::new(Mutex::new(None)),
            host: Some(self.host.clone()),
        };
        info!(task_id = g.task.0, attempt = g.attempt, token = g.token.0, kind = %g.kind, "task started");
        if let Some(j) = &self.journal {
            j.start(g.task, g.attempt, g.token);
        }
        // The lease runs from the leader's clock; the tracker counts it
        // from when we asked, which is no later than when it was granted.
        let replaced = self.leases().granted(g, asked, Instant::now(), ctx.clone());
        if let Some(old) = replaced {
            self.stop_lease(old);
        }
        Metrics::count(&self.host.metrics().leased, vec![("queue", g.queue.clone())], 1);
        self.host.metrics().running.set(self.busy_count() as i64);
        // Every line logged while the task runs (the transform's, an exec's
        // stderr) carries the task's id, attempt and token.
        let span = info_span!("task", task_id = g.task.0, attempt = g.attempt, token = g.token.0);
        let worker = self.clone();
        self.tasks.spawn(
            async move {
                let (id, token) = (task.grant.task, task.grant.token);
                if let Some(outcome) = transform::run(&task, &ctx).await {
                    // Kept only if this lease is still ours: a lease stopped
                    // meanwhile (cancelled just as it finished) reports nothing.
                    let kept = worker.leases().finished(id, token, outcome, Instant::now());
                    if kept {
                        worker.finished.notify_one();
                    }
                }
                // Cancelled (`None`): whoever cancelled it has already let
                // the lease go. Either way the slot is free.
                worker.freed.notify_one();
            }
            .instrument(span),
        );
    }

    /// Waits `backoff` after a failed call to the leader, or less: until a
    /// new leader is known.
    async fn pause_after_failure(&self, backoff: Duration) {
        self.host.pause_after_failure(backoff).await
    }

    /// Takes up to `free + freeing` slots for a lease (`freeing`: finished
    /// leases whose report goes with it), if at least `worth`; 0 otherwise.
    fn reserve_slots(&self, freeing: usize, worth: usize) -> usize {
        use std::sync::atomic::Ordering::Relaxed;
        let leases = self.leases();
        let slots = self.host.config().slots as usize;
        let free = (slots + freeing).saturating_sub(leases.len() + self.requested.load(Relaxed));
        if free < worth.max(1) {
            return 0;
        }
        self.requested.fetch_add(free, Relaxed);
        free
    }

    /// Whether renewals are due in a report: none answered for half an
    /// interval.
    fn renewal_due(&self) -> bool {
        let half = self.host.config().heartbeat_interval / 2;
        lock(&self.renewed).is_none_or(|at| at.elapsed() >= half)
    }

    /// Sends finished tasks' outcomes to the leader, many per round, with
    /// the renewals when due and the lease of the slots they free (none
    /// while draining), retrying while their leases last.
    async fn report_loop(self: Arc<Self>, stop_leasing: CancellationToken, stop: CancellationToken) {
        use std::sync::atomic::Ordering::Relaxed;
        let config = self.host.config();
        loop {
            let completions = self.leases().reports(Instant::now());
            if completions.is_empty() {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = self.finished.notified() => continue,
                }
            }
            if let Some(j) = &self.journal {
                for c in &completions {
                    j.report(c.task, c.token, &c.outcome);
                }
            }
            let leasing = !stop_leasing.is_cancelled() && !self.draining.load(Relaxed);
            let max = if leasing { self.reserve_slots(completions.len(), 1) } else { 0 };
            let held = self.renewal_due().then(|| self.leases().to_heartbeat(Self::progress));
            let req = ExchangeRequest {
                node: self.host.id(),
                slots: config.slots,
                completions: completions.clone(),
                held,
                queues: config.queues.clone(),
                max: max as u32,
                wait_ms: 0,
            };
            let sent = Self::moment();
            let result = self.exchange(req).await;
            self.requested.fetch_sub(max, Relaxed);
            let reported = match result {
                Ok(reply) => self.apply_reply(reply, &completions, sent, &stop),
                Err(e) => {
                    debug!(error = %e, tasks = completions.len(), "reporting outcomes failed; will retry");
                    false
                }
            };
            if !reported {
                // Unanswered: the leases stay, and go out again.
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = self.pause_after_failure(Duration::from_millis(200)) => {}
                }
                // Tasks whose lease ran out meanwhile are dropped by the fence.
                fence(&*self);
            }
            // Slots the round did not fill are the lease loop's again.
            self.freed.notify_one();
        }
    }

    /// Acts on the answer to a report round: the outcomes' answers, the
    /// renewals, the tasks leased. Whether the outcomes were answered.
    fn apply_reply(
        self: &Arc<Self>,
        reply: ExchangeReply,
        completions: &[Completion],
        sent: Moment,
        stop: &CancellationToken,
    ) -> bool {
        if let Some(Ok(ack)) = &reply.heartbeat {
            self.acked(ack, sent);
        }
        match reply.leased {
            Ok(tasks) => {
                for task in tasks {
                    self.start(task, sent, stop);
                }
            }
            Err(e) => debug!(error = %e, "lease with a report failed"),
        }
        match reply.completed {
            Ok(results) => {
                for (c, result) in completions.iter().zip(results) {
                    self.answered(c, result);
                }
                true
            }
            Err(e) => {
                debug!(error = %e, tasks = completions.len(), "reporting outcomes failed; will retry");
                false
            }
        }
    }

    /// Applies a heartbeat's answer sent at `sent`: renewals, and revoked
    /// leases stopped.
    fn acked(&self, ack: &HeartbeatAck, sent: Moment) {
        self.draining.store(ack.draining, std::sync::atomic::Ordering::Relaxed);
        let stops = self.leases().apply_ack(ack, sent);
        for s in stops {
            self.stop_lease(s);
        }
        *lock(&self.renewed) = Some(sent.at);
    }

    /// One round with the leader. A leader older than 0.6.0 does not know
    /// `exchange` (it drops the connection, so the round's outcome reads as
    /// unknown): asked what it runs, it says so, and the round goes as
    /// 0.5.0's separate calls, as every round does for [`LEGACY_FOR`]. It
    /// had not decoded the round, so nothing in it was done twice.
    async fn exchange(&self, req: ExchangeRequest) -> Result<ExchangeReply, NodeError> {
        let legacy = lock(&self.legacy_until).is_some_and(|until| Instant::now() < until);
        if !legacy {
            match self.host.exchange(req.clone()).await {
                Err(NodeError::OutcomeUnknown(why)) if self.leader_lacks_exchange().await => {
                    info!(error = %why, "the leader runs a release older than 0.6.0: reporting with separate calls");
                    *lock(&self.legacy_until) = Some(Instant::now() + LEGACY_FOR);
                }
                other => return other,
            }
        }
        Ok(self.exchange_by_parts(req).await)
    }

    /// Whether the leader, asked now, runs a release without `exchange`.
    async fn leader_lacks_exchange(&self) -> bool {
        match self.host.leader_version().await {
            Some(Some(v)) => !release_at_least(&v.release, EXCHANGE_SINCE),
            Some(None) => true,
            None => false,
        }
    }

    /// A round as 0.5.0's calls: complete, heartbeat, lease (no wait).
    async fn exchange_by_parts(&self, req: ExchangeRequest) -> ExchangeReply {
        let ExchangeRequest { node, slots, completions, held, queues, max, .. } = req;
        let completed = match completions.is_empty() {
            true => Ok(Vec::new()),
            false => self.host.complete(CompleteRequest { node, completions }).await,
        };
        let heartbeat = match held {
            Some(held) => Some(self.host.heartbeat(HeartbeatRequest { node, slots, held }).await),
            None => None,
        };
        let leased = match max {
            0 => Ok(Vec::new()),
            _ => self.host.lease(LeaseRequest { node, queues, max, wait_ms: 0 }).await,
        };
        ExchangeReply { completed, heartbeat, leased }
    }

    /// A transform's latest progress, for a renewal.
    fn progress(ctx: &TaskContext) -> Option<ReportedProgress> {
        ctx.progress.lock().ok().and_then(|p| p.clone())
    }

    /// Acts on the state machine's answer to one outcome report: the
    /// journal, the log line, and the metrics of an outcome it recorded.
    fn answered(&self, c: &Completion, result: Result<TaskStatus, Rejection>) {
        let id = c.task;
        let answer = self.leases().answered(c, &result);
        let attempt = answer.attempt();
        if let Some(j) = &self.journal {
            match &result {
                Ok(status) => j.accepted(id, c.token, &c.outcome, status),
                Err(e) => j.refused(id, c.token, &c.outcome, e),
            }
        }
        match &result {
            Ok(status) => match &c.outcome {
                Outcome::Succeeded { .. } => {
                    info!(task_id = id.0, attempt, token = c.token.0, %status, "task succeeded")
                }
                Outcome::Retryable { error } | Outcome::Permanent { error } => {
                    warn!(task_id = id.0, attempt, token = c.token.0, %status, error = %error, "task failed")
                }
            },
            Err(Rejection::StaleToken { .. }) => {
                warn!(task_id = id.0, attempt, token = c.token.0, "stale completion rejected")
            }
            Err(e) => warn!(task_id = id.0, attempt, token = c.token.0, error = %e, "completion rejected"),
        }
        if let Answer::Recorded { status, ended } = &answer {
            let m = &self.host.metrics();
            let outcome = outcome_label(*status);
            let queue = &ended.queue;
            Metrics::count(&m.completed, vec![("queue", queue.clone()), ("outcome", outcome.into())], 1);
            match status {
                TaskStatus::Pending | TaskStatus::Blocked => {
                    Metrics::count(&m.retries, vec![("queue", queue.clone()), ("cause", "failure".into())], 1)
                }
                TaskStatus::Dead => Metrics::count(&m.dead, vec![("queue", queue.clone())], 1),
                _ => {}
            }
            if let Some(ran) = ended.ran {
                m.task_duration
                    .get_or_create(&vec![("queue", queue.clone()), ("outcome", outcome.into())])
                    .observe(ran.as_secs_f64());
            }
        }
        self.host.metrics().running.set(self.busy_count() as i64);
        self.freed.notify_one();
    }
}

/// Locks `m`; a poisoned lock is taken as it is (what it guards is a
/// plain value, never left half-written).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether `release` ("0.6.0", "0.6.1-rc1") is `at_least` or newer; an
/// unreadable release is not.
fn release_at_least(release: &str, at_least: (u64, u64, u64)) -> bool {
    let mut parts = release.split(['.', '-', '+']).map(|p| p.parse::<u64>());
    match (parts.next(), parts.next(), parts.next()) {
        (Some(Ok(a)), Some(Ok(b)), Some(Ok(c))) => (a, b, c) >= at_least,
        _ => false,
    }
}

/// What the heartbeat loop ([`keep_leases`]) does to the world, so that a
/// test can run it against a fake leader under tokio's paused clock.
trait Keeper: Sync {
    /// What stops a lease's transform.
    type Handle: Send;
    /// The lease tracker (held briefly, never across an `.await`).
    fn leases(&self) -> MutexGuard<'_, Leases<Self::Handle>>;
    /// Both clocks, read now.
    fn now(&self) -> Moment;
    /// A transform's latest progress, for the heartbeat.
    fn progress(handle: &Self::Handle) -> Option<ReportedProgress>;
    /// Sends one heartbeat; `None` when it got no answer.
    fn heartbeat(&self, held: Vec<HeldLease>) -> impl Future<Output = Option<HeartbeatAck>> + Send;
    /// Stops the transform of a lease the tracker let go of.
    fn stop_lease(&self, stop: Stop<Self::Handle>);
    /// When the last answered renewal was sent (by a heartbeat, or by a
    /// report round that carried one).
    fn renewed_at(&self) -> Option<Instant> {
        None
    }
    /// A heartbeat sent at `sent` was answered.
    fn renewed(&self, sent: Instant) {
        let _ = sent;
    }
}

impl Keeper for Worker {
    type Handle = TaskContext;

    /// The tracker is never left half-changed (its methods do not panic
    /// midway), so a poisoned lock is taken as it is.
    fn leases(&self) -> MutexGuard<'_, Leases<TaskContext>> {
        lock(&self.leases)
    }

    fn now(&self) -> Moment {
        Worker::moment()
    }

    fn progress(ctx: &TaskContext) -> Option<ReportedProgress> {
        Worker::progress(ctx)
    }

    async fn heartbeat(&self, held: Vec<HeldLease>) -> Option<HeartbeatAck> {
        self.host.metrics().running.set(self.busy_count() as i64);
        let req = HeartbeatRequest { node: self.host.id(), slots: self.host.config().slots, held };
        match self.host.heartbeat(req).await {
            Ok(ack) => {
                self.draining.store(ack.draining, std::sync::atomic::Ordering::Relaxed);
                Some(ack)
            }
            Err(e) => {
                debug!(error = %e, "heartbeat failed");
                None
            }
        }
    }

    fn renewed_at(&self) -> Option<Instant> {
        *lock(&self.renewed)
    }

    fn renewed(&self, sent: Instant) {
        *lock(&self.renewed) = Some(sent);
    }

    /// Cancels the transform, saying why in the log.
    fn stop_lease(&self, s: Stop<TaskContext>) {
        let (task_id, attempt, token) = (s.task.0, s.attempt, s.token.0);
        match s.why {
            Why::Expired => warn!(task_id, token, attempt, "lease ran out unrenewed; stopping task"),
            Why::Revoked => warn!(task_id, attempt, token, "lease revoked by the leader; stopping task"),
            Why::Replaced => warn!(
                task_id,
                attempt,
                token,
                finished = s.finished,
                "task leased to us again under a newer token; stopping the old lease's transform"
            ),
            Why::Abandoned => info!(task_id, attempt, token, "handing back task at shutdown"),
        }
        s.handle.cancel.cancel();
        if let (Why::Expired, Host::Worker(remote)) = (s.why, &self.host) {
            // Cut off from the leader: its `/readyz` says so until the
            // leader answers again.
            remote.note_self_fenced(Instant::now());
        }
        if s.why != Why::Abandoned {
            self.freed.notify_one();
        }
    }
}

/// The heartbeat loop: once per `every`, fences what ran out, sends one
/// heartbeat for every lease held and applies its answer (renewals, and
/// revoked leases stopped), until `stop`. Leases are fenced at their
/// deadline exactly, also between ticks and while a heartbeat is on its
/// way: a leader cut off from its majority may not answer for a long while
/// (or, when this node is that leader, at all).
async fn keep_leases<K: Keeper>(k: &K, every: Duration, stop: &CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = fencing(k, every, tick.tick()) => {}
        }
        fence(k);
        // A report round renewed every lease a moment ago: nothing to add.
        if k.renewed_at().is_some_and(|at| k.now().at.saturating_duration_since(at) < every / 2) {
            continue;
        }
        let held = k.leases().to_heartbeat(K::progress);
        let sent = k.now();
        let ack = tokio::select! {
            _ = stop.cancelled() => return,
            ack = fencing(k, every, k.heartbeat(held)) => ack,
        };
        if let Some(ack) = ack {
            let stops = k.leases().apply_ack(&ack, sent);
            for s in stops {
                k.stop_lease(s);
            }
            k.renewed(sent.at);
        }
    }
}

/// Awaits `fut`, fencing each lease at its deadline meanwhile (looking at
/// the deadlines again at least every `every`, for leases granted since).
async fn fencing<K: Keeper, T>(k: &K, every: Duration, fut: impl Future<Output = T>) -> T {
    tokio::pin!(fut);
    loop {
        let next = k.leases().next_deadline();
        let soon = k.now().at + every;
        let wake = next.map_or(soon, |d| d.min(soon));
        tokio::select! {
            biased;
            out = &mut fut => return out,
            _ = tokio::time::sleep_until(wake) => fence(k),
        }
    }
}

/// Stops every lease that has run out.
fn fence<K: Keeper>(k: &K) {
    let now = k.now().at;
    let stops = k.leases().fence(now);
    for s in stops {
        k.stop_lease(s);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    //! The heartbeat loop against a fake leader, under tokio's paused clock
    //! (time only moves when every task waits, straight to the next timer,
    //! so the instants below are exact).

    use skein_raft::fsm::{FencingToken, Granted, TaskId};

    use super::*;

    const WALL: u64 = 1_700_000_000_000;
    const EVERY: Duration = Duration::from_secs(1);
    const LEASE: Duration = Duration::from_secs(3);
    const TASK: TaskId = TaskId(7);
    const TOKEN: FencingToken = FencingToken(40);

    /// How the fake leader answers heartbeats.
    #[derive(Clone, Copy, Debug)]
    enum Leader {
        /// Renews every lease held, as of half `delay` after the send,
        /// and answers after `delay`.
        Renews { delay: Duration },
        /// Answers (after `delay`) that every lease held is not ours.
        Revokes { delay: Duration },
        /// Fails every heartbeat at once (no leader, unreachable).
        Fails,
        /// Never answers (a leader cut off from its majority).
        Hangs,
    }

    struct Fake {
        origin: Instant,
        leases: Mutex<Leases<&'static str>>,
        leader: Mutex<Leader>,
        /// When each heartbeat went out.
        sent: Mutex<Vec<Instant>>,
        /// Each lease stopped: (task, why, when).
        stopped: Mutex<Vec<(TaskId, Why, Instant)>>,
    }

    impl Fake {
        fn new(leader: Leader) -> Arc<Fake> {
            Arc::new(Fake {
                origin: Instant::now(),
                leases: Mutex::new(Leases::new()),
                leader: Mutex::new(leader),
                sent: Mutex::new(Vec::new()),
                stopped: Mutex::new(Vec::new()),
            })
        }

        /// The wall clock, moving with tokio's.
        fn wall_ms(&self) -> u64 {
            WALL + (Instant::now() - self.origin).as_millis() as u64
        }

        /// Leases task 7 for `LEASE`, asked for and granted now.
        fn lease(&self) {
            let g = Granted {
                task: TASK,
                queue: "q".into(),
                kind: "sleep".into(),
                attempt: 1,
                token: TOKEN,
                expires_ms: self.wall_ms() + LEASE.as_millis() as u64,
            };
            let now = self.now();
            assert!(self.leases().granted(&g, now, now.at, "ctx").is_none());
        }

        fn set(&self, leader: Leader) {
            *self.leader.lock().unwrap() = leader;
        }

        fn stopped(&self) -> Vec<(TaskId, Why, Instant)> {
            self.stopped.lock().unwrap().clone()
        }

        fn sent(&self) -> Vec<Instant> {
            self.sent.lock().unwrap().clone()
        }

        /// Runs the heartbeat loop until the returned token is cancelled.
        fn run(self: &Arc<Self>) -> (CancellationToken, tokio::task::JoinHandle<()>) {
            let stop = CancellationToken::new();
            let (fake, s) = (self.clone(), stop.clone());
            (stop, tokio::spawn(async move { keep_leases(&*fake, EVERY, &s).await }))
        }
    }

    impl Keeper for Fake {
        type Handle = &'static str;

        fn leases(&self) -> MutexGuard<'_, Leases<&'static str>> {
            self.leases.lock().unwrap()
        }

        fn now(&self) -> Moment {
            Moment { at: Instant::now(), ms: self.wall_ms() }
        }

        fn progress(_: &&'static str) -> Option<ReportedProgress> {
            None
        }

        async fn heartbeat(&self, held: Vec<HeldLease>) -> Option<HeartbeatAck> {
            self.sent.lock().unwrap().push(Instant::now());
            let leader = *self.leader.lock().unwrap();
            let mut ack = HeartbeatAck { renewed: Vec::new(), revoked: Vec::new(), draining: false };
            match leader {
                Leader::Renews { delay } => {
                    tokio::time::sleep(delay / 2).await;
                    let expires = self.wall_ms() + LEASE.as_millis() as u64;
                    ack.renewed = held.iter().map(|h| (h.task, expires)).collect();
                    tokio::time::sleep(delay / 2).await;
                }
                Leader::Revokes { delay } => {
                    tokio::time::sleep(delay).await;
                    ack.revoked = held.iter().map(|h| (h.task, h.token)).collect();
                }
                Leader::Fails => return None,
                Leader::Hangs => std::future::pending::<()>().await,
            }
            Some(ack)
        }

        fn stop_lease(&self, stop: Stop<&'static str>) {
            self.stopped.lock().unwrap().push((stop.task, stop.why, Instant::now()));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_unrenewed_lease_is_fenced_exactly_when_it_runs_out() {
        // Unrenewed whichever way the leader lets us down; the lease was
        // granted 300 ms after a tick, so its deadline is between ticks.
        for leader in [Leader::Fails, Leader::Hangs, Leader::Renews { delay: Duration::from_secs(10) }] {
            let fake = Fake::new(leader);
            let t0 = fake.origin;
            let (stop, loop_) = fake.run();
            tokio::time::sleep(Duration::from_millis(300)).await;
            fake.lease();
            tokio::time::sleep_until(t0 + Duration::from_millis(3_299)).await;
            assert!(fake.stopped().is_empty(), "{leader:?}: not before its deadline");
            tokio::time::sleep_until(t0 + Duration::from_secs(10)).await;
            let fenced_at = t0 + Duration::from_millis(300) + LEASE;
            assert_eq!(fake.stopped(), [(TASK, Why::Expired, fenced_at)], "{leader:?}");
            assert!(fake.leases().is_empty(), "{leader:?}");
            stop.cancel();
            loop_.await.unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn renewals_keep_a_lease_alive_until_they_stop() {
        let delay = Duration::from_millis(200);
        let fake = Fake::new(Leader::Renews { delay });
        let t0 = fake.origin;
        fake.lease();
        let (stop, loop_) = fake.run();
        // Renewed every second for a minute: never fenced, and each renewal
        // counts from when its heartbeat went out (plus the leader's 100 ms
        // before it read its clock), not from when the answer came.
        tokio::time::sleep_until(t0 + Duration::from_millis(60_500)).await;
        assert!(fake.stopped().is_empty());
        let sent = fake.sent();
        assert_eq!(sent.len(), 61, "one heartbeat per second");
        assert_eq!(sent.last(), Some(&(t0 + Duration::from_secs(60))));
        assert_eq!(fake.leases().deadline(TASK), Some(t0 + Duration::from_millis(60_100) + LEASE));
        // The leader goes away: the lease runs out 3 s after the last
        // renewal's clock reading, exactly.
        fake.set(Leader::Fails);
        tokio::time::sleep_until(t0 + Duration::from_secs(70)).await;
        assert_eq!(fake.stopped(), [(TASK, Why::Expired, t0 + Duration::from_millis(60_100) + LEASE)]);
        stop.cancel();
        loop_.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_revoked_lease_stops_when_the_answer_comes_unless_it_finished() {
        let delay = Duration::from_millis(200);
        // (case, transform finished before the heartbeat, stops)
        let cases = [
            ("running: stopped at the answer", false, vec![(TASK, Why::Revoked, Duration::from_millis(200))]),
            ("finished: left to its report, then to its deadline", true, vec![(TASK, Why::Expired, LEASE)]),
        ];
        for (case, finished, want) in cases {
            let fake = Fake::new(Leader::Revokes { delay });
            let t0 = fake.origin;
            fake.lease();
            if finished {
                assert!(fake.leases().finished(TASK, TOKEN, Outcome::Succeeded { result: "null".into() }, t0));
            }
            let (stop, loop_) = fake.run();
            tokio::time::sleep_until(t0 + Duration::from_secs(10)).await;
            let want: Vec<(TaskId, Why, Instant)> = want.into_iter().map(|(t, w, d)| (t, w, t0 + d)).collect();
            assert_eq!(fake.stopped(), want, "{case}");
            stop.cancel();
            loop_.await.unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_loop_ends_on_stop_even_while_a_heartbeat_hangs() {
        let fake = Fake::new(Leader::Hangs);
        fake.lease();
        let (stop, loop_) = fake.run();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(fake.sent().len(), 1);
        stop.cancel();
        loop_.await.unwrap();
        assert_eq!(fake.leases().len(), 1, "stopping the loop stops no lease");
    }
}
