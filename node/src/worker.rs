//! The worker every node runs: it asks the leader for as many tasks as it
//! has free slots, runs each task's transform, renews all its leases with
//! one heartbeat per interval, and reports outcomes under their tokens.
//!
//! Fencing on the worker's side: a task the leader says is no longer ours
//! (revoked in a heartbeat ack) is stopped at once, and a task whose lease
//! we could not renew before it ran out is stopped on our own, without
//! reporting: by then the leader may have given it to another node.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use skein_raft::fsm::{Command, Completion, FencingToken, HeldLease, Outcome, Rejection, TaskId, TaskStatus};
use skein_transport::{CompleteRequest, HeartbeatRequest, LeaseRequest, LeasedTask};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::app::SharedApp;
use crate::journal::Journal;
use crate::metrics::{outcome_label, Metrics};
use crate::proposer::now_ms;
use crate::transform::{self, TaskContext};

/// How long a lease long-poll may wait on the leader.
const LEASE_WAIT_MS: u64 = 1_000;

/// A task this node runs.
struct Running {
    token: FencingToken,
    attempt: u32,
    ctx: TaskContext,
    /// When our lease runs out unless renewed (by our own clock).
    deadline: Instant,
    /// The outcome, once the transform finished, until the leader has it.
    outcome: Option<Outcome>,
    /// For metrics: the task's queue, and how long its transform ran.
    queue: String,
    started: Instant,
    ran: Option<Duration>,
}

pub struct Worker {
    app: SharedApp,
    running: Mutex<BTreeMap<TaskId, Running>>,
    /// Signalled when a slot frees up.
    freed: Notify,
    /// The leader told us we are draining.
    draining: std::sync::atomic::AtomicBool,
    done_tx: mpsc::UnboundedSender<TaskId>,
    /// `--journal`: every start and outcome report, for audits.
    journal: Option<Journal>,
}

impl Worker {
    /// Starts the worker's loops. `stop_leasing` ends leasing (drain);
    /// `stop` cancels every running task and ends the loops.
    pub fn spawn(
        app: SharedApp,
        journal: Option<Journal>,
        stop_leasing: CancellationToken,
        stop: CancellationToken,
    ) -> Arc<Worker> {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let worker = Arc::new(Worker {
            app,
            running: Mutex::new(BTreeMap::new()),
            freed: Notify::new(),
            draining: std::sync::atomic::AtomicBool::new(false),
            done_tx,
            journal,
        });
        tokio::spawn(worker.clone().lease_loop(stop_leasing, stop.clone()));
        tokio::spawn(worker.clone().heartbeat_loop(stop.clone()));
        tokio::spawn(worker.clone().complete_loop(done_rx, stop));
        worker
    }

    /// Tasks running or waiting for their outcome to be recorded.
    pub fn running_count(&self) -> usize {
        self.running.lock().map_or(0, |r| r.len())
    }

    /// Tasks whose transform still runs: what occupies a slot. A finished
    /// task whose outcome is on its way to the leader frees its slot, so
    /// the next lease overlaps the report.
    fn busy_count(&self) -> usize {
        self.running.lock().map_or(0, |r| r.values().filter(|t| t.outcome.is_none()).count())
    }

    /// Stops every running task without reporting (shutdown after the drain
    /// deadline). The leader hands their leases back when told.
    pub fn abandon_all(&self) {
        if let Ok(mut r) = self.running.lock() {
            for (id, t) in std::mem::take(&mut *r) {
                info!(task_id = id.0, attempt = t.attempt, token = t.token.0, "handing back task at shutdown");
                t.ctx.cancel.cancel();
            }
        }
    }

    async fn lease_loop(self: Arc<Self>, stop_leasing: CancellationToken, stop: CancellationToken) {
        let node = self.app.id;
        // Leases held by a previous run of this node are orphans: hand them
        // back before taking new ones, so they need not wait for expiry.
        let mut backoff = Duration::from_millis(100);
        loop {
            if stop_leasing.is_cancelled() {
                return;
            }
            match self.app.write(Command::ReleaseNode { node, forget: false }).await {
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
        info!(node_id = node, slots = self.app.config.slots, "worker leasing");
        // Lease requests in flight, each with the slots it asked for. Slots
        // that free up while one request is on its way go into another, so a
        // busy worker does not wait a whole round trip per batch of tasks
        // (every lease is a Raft commit: a round to a majority's disks).
        let mut in_flight = FuturesUnordered::new();
        let mut requested = 0usize;
        let slots = self.app.config.slots as usize;
        let mut backoff = Duration::from_millis(50);
        loop {
            if stop_leasing.is_cancelled() {
                return;
            }
            let free = slots.saturating_sub(self.busy_count() + requested);
            let draining = self.draining.load(std::sync::atomic::Ordering::Relaxed);
            // One request takes every free slot; another goes out only for a
            // worthwhile share of them (so an idle worker long-polls once).
            let worth = if in_flight.is_empty() { 1 } else { (slots / 4).max(1) };
            if !draining && free >= worth && in_flight.len() < self.app.config.leases_in_flight {
                let req = LeaseRequest {
                    node,
                    queues: self.app.config.queues.clone(),
                    max: free as u32,
                    wait_ms: LEASE_WAIT_MS,
                };
                requested += free;
                let app = self.app.clone();
                let (asked_at, asked_ms) = (Instant::now(), now_ms());
                in_flight.push(async move { (free, asked_at, asked_ms, app.lease(req).await) });
                continue;
            }
            tokio::select! {
                _ = stop_leasing.cancelled() => return,
                Some((asked, asked_at, asked_ms, result)) = in_flight.next(), if !in_flight.is_empty() => {
                    requested -= asked;
                    match result {
                        Ok(tasks) => {
                            backoff = Duration::from_millis(50);
                            for task in tasks {
                                self.start(task, asked_at, asked_ms, &stop);
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

    /// Starts running a leased task.
    fn start(self: &Arc<Self>, task: LeasedTask, asked_at: Instant, asked_ms: u64, stop: &CancellationToken) {
        let g = &task.grant;
        // The lease runs from the leader's clock; count it from when we
        // asked, which is no later than when it was granted.
        let deadline = asked_at + Duration::from_millis(g.expires_ms.saturating_sub(asked_ms));
        let ctx = TaskContext {
            cancel: stop.child_token(),
            progress: Arc::new(Mutex::new(None)),
            app: Some(self.app.clone()),
        };
        info!(task_id = g.task.0, attempt = g.attempt, token = g.token.0, kind = %g.kind, "task started");
        if let Some(j) = &self.journal {
            j.start(g.task, g.attempt, g.token);
        }
        if let Ok(mut r) = self.running.lock() {
            r.insert(
                g.task,
                Running {
                    token: g.token,
                    attempt: g.attempt,
                    ctx: ctx.clone(),
                    deadline,
                    outcome: None,
                    queue: g.queue.clone(),
                    started: Instant::now(),
                    ran: None,
                },
            );
        }
        Metrics::count(&self.app.metrics.leased, vec![("queue", g.queue.clone())], 1);
        self.app.metrics.running.set(self.busy_count() as i64);
        // Every line logged while the task runs (the transform's, an exec's
        // stderr) carries the task's id, attempt and token.
        let span = info_span!("task", task_id = g.task.0, attempt = g.attempt, token = g.token.0);
        let worker = self.clone();
        tokio::spawn(
            async move {
                let id = task.grant.task;
                let outcome = transform::run(&task, &ctx).await;
                match outcome {
                    Some(outcome) => {
                        if let Ok(mut r) = worker.running.lock() {
                            if let Some(t) = r.get_mut(&id) {
                                t.outcome = Some(outcome);
                                t.ran = Some(t.started.elapsed());
                            }
                        }
                        let _ = worker.done_tx.send(id);
                        worker.freed.notify_one();
                    }
                    None => {
                        // Cancelled: whoever cancelled it has already removed it.
                        worker.freed.notify_one();
                    }
                }
            }
            .instrument(span),
        );
    }

    async fn heartbeat_loop(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.app.config.heartbeat_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.fence_expired();
            self.app.metrics.running.set(self.busy_count() as i64);
            let held: Vec<HeldLease> = match self.running.lock() {
                Ok(r) => r
                    .iter()
                    .map(|(id, t)| HeldLease {
                        task: *id,
                        token: t.token,
                        progress: t.ctx.progress.lock().ok().and_then(|p| p.clone()),
                    })
                    .collect(),
                Err(_) => continue,
            };
            let req = HeartbeatRequest { node: self.app.id, slots: self.app.config.slots, held };
            let sent_at = Instant::now();
            let sent_ms = now_ms();
            match self.app.heartbeat(req).await {
                Ok(ack) => {
                    self.draining.store(ack.draining, std::sync::atomic::Ordering::Relaxed);
                    if let Ok(mut r) = self.running.lock() {
                        for (id, expires_ms) in ack.renewed {
                            if let Some(t) = r.get_mut(&id) {
                                t.deadline = sent_at + Duration::from_millis(expires_ms.saturating_sub(sent_ms));
                            }
                        }
                        for (id, token) in ack.revoked {
                            // A task whose transform already finished is left to
                            // its report, which ends it whatever the leader
                            // answers: this heartbeat may have been applied just
                            // after that report, and taking the task away here
                            // would make `finished` miss the outcome it counts.
                            if r.get(&id).is_some_and(|t| t.token == token && t.outcome.is_none()) {
                                if let Some(t) = r.remove(&id) {
                                    warn!(
                                        task_id = id.0,
                                        attempt = t.attempt,
                                        token = token.0,
                                        "lease revoked by the leader; stopping task"
                                    );
                                    t.ctx.cancel.cancel();
                                }
                                self.freed.notify_one();
                            }
                        }
                    }
                }
                Err(e) => debug!(error = %e, "heartbeat failed"),
            }
        }
    }

    /// Waits `backoff` after a failed call to the leader, or less: until
    /// this node learns of a new leader (an election ended), so that work
    /// resumes as soon as a leader can take it, not a backoff later.
    async fn pause_after_failure(&self, backoff: Duration) {
        let mut metrics = self.app.raft.metrics();
        let before = metrics.borrow().current_leader;
        let sleep = tokio::time::sleep(backoff);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return,
                changed = metrics.changed() => {
                    if changed.is_err() {
                        return (&mut sleep).await;
                    }
                    let now = metrics.borrow().current_leader;
                    if now.is_some() && now != before {
                        return;
                    }
                }
            }
        }
    }

    /// Stops tasks whose lease ran out before we could renew it.
    fn fence_expired(&self) {
        let now = Instant::now();
        if let Ok(mut r) = self.running.lock() {
            let expired: Vec<TaskId> = r.iter().filter(|(_, t)| t.deadline <= now).map(|(id, _)| *id).collect();
            for id in expired {
                if let Some(t) = r.remove(&id) {
                    warn!(
                        task_id = id.0,
                        token = t.token.0,
                        attempt = t.attempt,
                        "lease ran out unrenewed; stopping task"
                    );
                    t.ctx.cancel.cancel();
                }
                self.freed.notify_one();
            }
        }
    }

    /// Sends finished tasks' outcomes to the leader, many per call, retrying
    /// while their leases last.
    async fn complete_loop(self: Arc<Self>, mut done: mpsc::UnboundedReceiver<TaskId>, stop: CancellationToken) {
        let mut pending: Vec<TaskId> = Vec::new();
        loop {
            if pending.is_empty() {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    id = done.recv() => match id { Some(id) => pending.push(id), None => return },
                }
            }
            while let Ok(id) = done.try_recv() {
                pending.push(id);
            }
            let completions: Vec<Completion> = match self.running.lock() {
                Ok(r) => pending
                    .iter()
                    .filter_map(|id| {
                        let t = r.get(id)?;
                        Some(Completion { task: *id, token: t.token, outcome: t.outcome.clone()? })
                    })
                    .collect(),
                Err(_) => Vec::new(),
            };
            pending.clear();
            if completions.is_empty() {
                continue;
            }
            if let Some(j) = &self.journal {
                for c in &completions {
                    j.report(c.task, c.token, &c.outcome);
                }
            }
            let req = CompleteRequest { node: self.app.id, completions: completions.clone() };
            match self.app.complete(req).await {
                Ok(results) => {
                    for (c, result) in completions.iter().zip(results) {
                        self.finished(c, result);
                    }
                }
                Err(e) => {
                    debug!(error = %e, tasks = completions.len(), "reporting outcomes failed; will retry");
                    pending.extend(completions.iter().map(|c| c.task));
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = self.pause_after_failure(Duration::from_millis(200)) => {}
                    }
                    // Tasks whose lease ran out meanwhile are dropped by the fence.
                    self.fence_expired();
                }
            }
        }
    }

    fn finished(&self, c: &Completion, result: Result<skein_raft::fsm::TaskStatus, Rejection>) {
        let id = c.task;
        let mine = match self.running.lock() {
            Ok(mut r) if r.get(&id).is_some_and(|t| t.token == c.token) => r.remove(&id),
            _ => None,
        };
        let attempt = mine.as_ref().map_or(0, |t| t.attempt);
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
        if let (Some(t), Ok(status)) = (&mine, &result) {
            let m = &self.app.metrics;
            let outcome = outcome_label(*status);
            Metrics::count(&m.completed, vec![("queue", t.queue.clone()), ("outcome", outcome.into())], 1);
            match status {
                TaskStatus::Pending | TaskStatus::Blocked => {
                    Metrics::count(&m.retries, vec![("queue", t.queue.clone()), ("cause", "failure".into())], 1)
                }
                TaskStatus::Dead => Metrics::count(&m.dead, vec![("queue", t.queue.clone())], 1),
                _ => {}
            }
            if let Some(ran) = t.ran {
                m.task_duration
                    .get_or_create(&vec![("queue", t.queue.clone()), ("outcome", outcome.into())])
                    .observe(ran.as_secs_f64());
            }
        }
        self.app.metrics.running.set(self.busy_count() as i64);
        self.freed.notify_one();
    }
}
