//! Read-only questions the layers above ask of the state: nothing here is
//! replicated, so a query may take the caller's clock.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::state::StateMachine;
use super::types::{Limits, NodeId, NodeInfo, Queue, QueueConfig, Task, TaskId, TaskStatus};

/// A queue's settings and counts, for `GET /api/v1/queues` and metrics.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueStats {
    pub name: String,
    pub paused: bool,
    pub config: QueueConfig,
    /// Tasks by status, every status present (zero included).
    pub counts: BTreeMap<TaskStatus, u64>,
    /// Age of the oldest pending task (waiting or in backoff), if any.
    pub oldest_pending_age_ms: Option<u64>,
}

/// One page of a task listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskPage {
    pub tasks: Vec<Task>,
    /// Pass back as `after` for the next page; `None` on the last page.
    pub next: Option<TaskId>,
}

impl StateMachine {
    pub fn task(&self, id: TaskId) -> Option<&Task> {
        self.core.tasks.get(&id)
    }

    /// The task an idempotency key made, if it is still known.
    pub fn task_by_key(&self, key: &str) -> Option<&Task> {
        self.core.keys.get(key).and_then(|id| self.core.tasks.get(id))
    }

    /// Tasks in id order (oldest first) after `after`, filtered by queue and
    /// status, at most `limit` of them.
    pub fn tasks(
        &self,
        queue: Option<&str>,
        status: Option<TaskStatus>,
        after: Option<TaskId>,
        limit: usize,
    ) -> TaskPage {
        let start = after.map_or(0, |a| a.0.saturating_add(1));
        let mut tasks = Vec::new();
        let mut next = None;
        for t in self.core.tasks.range(TaskId(start)..).map(|(_, t)| t) {
            if queue.is_some_and(|q| &*t.queue != q) || status.is_some_and(|s| t.status != s) {
                continue;
            }
            if tasks.len() == limit {
                next = tasks.last().map(|t: &Task| t.id);
                break;
            }
            tasks.push(t.clone());
        }
        TaskPage { tasks, next }
    }

    pub fn queue_stats(&self, now_ms: u64) -> Vec<QueueStats> {
        self.core
            .queues
            .values()
            .map(|q| {
                let qi = self.idx.queues.get(&q.name);
                let counts = TaskStatus::ALL.iter().map(|s| (*s, qi.map_or(0, |qi| qi.counts[s.index()]))).collect();
                let oldest = qi
                    .and_then(|qi| qi.pending.first())
                    .and_then(|id| self.core.tasks.get(id))
                    .map(|t| now_ms.saturating_sub(t.created_ms));
                QueueStats {
                    name: q.name.to_string(),
                    paused: q.paused,
                    config: q.config.clone(),
                    counts,
                    oldest_pending_age_ms: oldest,
                }
            })
            .collect()
    }

    pub fn queue(&self, name: &str) -> Option<&Queue> {
        self.core.queues.get(name)
    }

    /// Tasks leased to `node`, by id.
    pub fn leases_of(&self, node: NodeId) -> Vec<&Task> {
        self.idx.leases_by_node.get(&node).into_iter().flatten().filter_map(|id| self.core.tasks.get(id)).collect()
    }

    pub fn lease_count(&self, node: NodeId) -> usize {
        self.idx.leases_by_node.get(&node).map_or(0, |s| s.len())
    }

    pub fn nodes(&self) -> &BTreeMap<NodeId, NodeInfo> {
        &self.core.nodes
    }

    /// Whether `node` was removed from the cluster (`RemoveNode`) and not
    /// admitted again: its leases, heartbeats and completions are refused.
    pub fn is_removed(&self, node: NodeId) -> bool {
        self.core.removed.contains(&node)
    }

    /// Every node removed and not admitted again.
    pub fn removed_nodes(&self) -> &std::collections::BTreeSet<NodeId> {
        &self.core.removed
    }

    pub fn limits(&self) -> &Limits {
        &self.core.limits
    }

    /// The state machine's clock: the largest `now_ms` it has applied.
    pub fn clock_ms(&self) -> u64 {
        self.core.clock_ms
    }

    /// The earliest expiry among live leases, for the leader's sweep.
    pub fn next_expiry_ms(&self) -> Option<u64> {
        self.idx.expiry.first().map(|(at, _)| *at)
    }

    /// Tasks whose lease has run out by `now_ms` (what an `ExpireLeases`
    /// then would take back), soonest first.
    pub fn leases_due(&self, now_ms: u64) -> Vec<&Task> {
        self.idx
            .expiry
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .filter_map(|(_, id)| self.core.tasks.get(id))
            .collect()
    }

    /// Whether any pending task could be leased now or soon; lets the leader
    /// skip a lease proposal that would grant nothing.
    pub fn has_pending(&self) -> bool {
        self.idx.queues.values().any(|qi| !qi.pending.is_empty())
    }

    /// Counts of every task by status, over all queues.
    pub fn total_counts(&self) -> BTreeMap<TaskStatus, u64> {
        let mut out: BTreeMap<TaskStatus, u64> = TaskStatus::ALL.iter().map(|s| (*s, 0)).collect();
        for qi in self.idx.queues.values() {
            for s in TaskStatus::ALL {
                *out.entry(s).or_default() += qi.counts[s.index()];
            }
        }
        out
    }

    pub fn task_count(&self) -> usize {
        self.core.tasks.len()
    }
}

impl StateMachine {
    /// Whether a `Lease` for `queues` (all when empty) at `now_ms` would
    /// grant anything. The leader asks before proposing one, so idle
    /// workers' long polls do not fill the log with empty leases.
    pub fn can_lease(&self, queues: &[String], now_ms: u64) -> bool {
        let now = now_ms.max(self.core.clock_ms);
        let eligible = |q: &super::types::Queue| {
            let Some(qi) = self.idx.queues.get(&q.name) else { return false };
            !q.paused
                && (q.config.concurrency == 0
                    || qi.counts[TaskStatus::Leased.index()] < u64::from(q.config.concurrency))
                && (!qi.ready.is_empty() || qi.delayed.first().is_some_and(|(at, _)| *at <= now))
        };
        if queues.is_empty() {
            self.core.queues.values().any(eligible)
        } else {
            queues.iter().filter_map(|q| self.core.queues.get(q.as_str())).any(eligible)
        }
    }
}

// ----- stuck tasks ------------------------------------------------------------

/// The fewest succeeded tasks a queue needs before its typical duration is
/// trusted for [`StuckReason::BeyondTypical`].
pub const TYPICAL_MIN_SAMPLES: usize = 5;
/// How many of a queue's newest succeeded tasks its typical duration is the
/// median of.
pub const TYPICAL_SAMPLES: usize = 200;
/// A task never counts as far beyond its queue's typical duration before it
/// has run this long (a queue of 10 ms tasks must not flag a 1 s one).
pub const TYPICAL_FLOOR_MS: u64 = 60_000;
/// A node that holds no flagged lease is listed as silent after this long
/// without a heartbeat.
pub const NODE_SILENCE_MS: u64 = 10_000;

/// Why a task looks stuck: work that is not moving and needs a person. The
/// thresholds are the queue's `stuck_*` settings; each reason carries the
/// numbers it was decided on.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum StuckReason {
    /// Its lease expired `expiries` times in a row with no outcome between:
    /// the task kills or hangs whichever worker takes it.
    LeaseExpiries { expiries: u32, limit: u32 },
    /// Its current attempt has run for longer than the queue's `stuck_run_ms`.
    RunningTooLong { running_ms: u64, limit_ms: u64 },
    /// Its current attempt has run for more than `factor` times the queue's
    /// typical (median) duration of a success.
    BeyondTypical { running_ms: u64, typical_ms: u64, factor: u32 },
    /// Blocked on a dependency that ended without success: it can never run.
    DependencyFailed { dependency: TaskId, status: TaskStatus },
    /// Blocked on a dependency that is itself stuck.
    DependencyStuck { dependency: TaskId },
    /// Leased to a node that has sent no heartbeat for `silent_ms`: the node
    /// is down, paused or cut off, and the task waits for its lease to expire.
    NodeSilent { node: NodeId, silent_ms: u64, limit_ms: u64 },
}

impl StuckReason {
    /// A short stable name (a metric label): `lease_expiries`, `running_too_long`, ...
    pub fn kind(&self) -> &'static str {
        match self {
            StuckReason::LeaseExpiries { .. } => "lease_expiries",
            StuckReason::RunningTooLong { .. } => "running_too_long",
            StuckReason::BeyondTypical { .. } => "beyond_typical",
            StuckReason::DependencyFailed { .. } => "dependency_failed",
            StuckReason::DependencyStuck { .. } => "dependency_stuck",
            StuckReason::NodeSilent { .. } => "node_silent",
        }
    }
}

impl std::fmt::Display for StuckReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = |ms: u64| ms as f64 / 1000.0;
        match self {
            StuckReason::LeaseExpiries { expiries, limit } => {
                write!(f, "lease expired {expiries} times in a row (limit {limit})")
            }
            StuckReason::RunningTooLong { running_ms, limit_ms } => {
                write!(f, "running for {:.1}s, longer than the limit of {:.1}s", secs(*running_ms), secs(*limit_ms))
            }
            StuckReason::BeyondTypical { running_ms, typical_ms, factor } => write!(
                f,
                "running for {:.1}s, over {factor}x the queue's typical {:.1}s",
                secs(*running_ms),
                secs(*typical_ms)
            ),
            StuckReason::DependencyFailed { dependency, status } => {
                write!(f, "blocked on task {dependency}, which is {status}")
            }
            StuckReason::DependencyStuck { dependency } => write!(f, "blocked on task {dependency}, which is stuck"),
            StuckReason::NodeSilent { node, silent_ms, limit_ms } => write!(
                f,
                "node {node} holds the lease but sent no heartbeat for {:.1}s (limit {:.1}s)",
                secs(*silent_ms),
                secs(*limit_ms)
            ),
        }
    }
}

/// A task that looks stuck, and every reason why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StuckTask {
    pub task: Task,
    pub reasons: Vec<StuckReason>,
}

/// A node the state has heard nothing from for a while.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SilentNode {
    pub node: NodeId,
    pub silent_ms: u64,
    /// Leases it still holds (they come back at expiry).
    pub leases: u64,
}

/// What [`StateMachine::stuck`] finds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StuckReport {
    /// Stuck tasks, by id.
    pub tasks: Vec<StuckTask>,
    /// Nodes with no heartbeat for [`NODE_SILENCE_MS`], or holding a lease
    /// flagged [`StuckReason::NodeSilent`].
    pub silent_nodes: Vec<SilentNode>,
}

impl StateMachine {
    /// Tasks that look stuck at `now_ms` (the caller's clock), of one queue
    /// or all, with their reasons; and the nodes that went silent. Read-only
    /// and deterministic in (state, `now_ms`). One pass over the tasks, plus
    /// the newest successes of each queue with leases, for its typical duration.
    pub fn stuck(&self, now_ms: u64, queue: Option<&str>) -> StuckReport {
        let mut flagged: BTreeMap<TaskId, Vec<StuckReason>> = BTreeMap::new();
        let mut typical: BTreeMap<&str, Option<u64>> = BTreeMap::new();
        let defaults = QueueConfig::default();
        for t in self.core.tasks.values() {
            if queue.is_some_and(|q| &*t.queue != q) || t.status.is_terminal() {
                continue;
            }
            let config = self.core.queues.get(&t.queue).map_or(&defaults, |q| &q.config);
            let mut reasons = Vec::new();
            if config.stuck_expiries > 0 && t.expiry_streak >= config.stuck_expiries {
                reasons.push(StuckReason::LeaseExpiries { expiries: t.expiry_streak, limit: config.stuck_expiries });
            }
            match t.status {
                TaskStatus::Leased => {
                    let running_ms = now_ms.saturating_sub(t.last_started_ms.unwrap_or(now_ms));
                    if config.stuck_run_ms > 0 && running_ms > config.stuck_run_ms {
                        reasons.push(StuckReason::RunningTooLong { running_ms, limit_ms: config.stuck_run_ms });
                    }
                    if config.stuck_factor > 0 && running_ms > TYPICAL_FLOOR_MS {
                        let typical_ms =
                            *typical.entry(&*t.queue).or_insert_with(|| self.typical_duration_ms(&t.queue));
                        if let Some(typical_ms) = typical_ms {
                            if running_ms > typical_ms.saturating_mul(u64::from(config.stuck_factor)) {
                                reasons.push(StuckReason::BeyondTypical {
                                    running_ms,
                                    typical_ms,
                                    factor: config.stuck_factor,
                                });
                            }
                        }
                    }
                    if let (Some(lease), true) = (&t.lease, config.stuck_silence_ms > 0) {
                        let silent_ms = self
                            .core
                            .nodes
                            .get(&lease.node)
                            .map_or(running_ms, |n| now_ms.saturating_sub(n.last_heartbeat_ms));
                        if silent_ms > config.stuck_silence_ms {
                            reasons.push(StuckReason::NodeSilent {
                                node: lease.node,
                                silent_ms,
                                limit_ms: config.stuck_silence_ms,
                            });
                        }
                    }
                }
                TaskStatus::Blocked => {
                    for dep in &t.depends_on {
                        if let Some(d) = self.core.tasks.get(dep) {
                            if matches!(d.status, TaskStatus::Dead | TaskStatus::Cancelled) {
                                reasons.push(StuckReason::DependencyFailed { dependency: *dep, status: d.status });
                            }
                        }
                    }
                }
                _ => {}
            }
            if !reasons.is_empty() {
                flagged.insert(t.id, reasons);
            }
        }
        // Whatever waits on a stuck task is stuck too, transitively.
        let mut frontier: Vec<TaskId> = flagged.keys().copied().collect();
        while let Some(dep) = frontier.pop() {
            for &waiter in self.idx.dependents.get(&dep).into_iter().flatten() {
                let Some(w) = self.core.tasks.get(&waiter) else { continue };
                if w.status != TaskStatus::Blocked || queue.is_some_and(|q| &*w.queue != q) {
                    continue;
                }
                let reasons = flagged.entry(waiter).or_default();
                let reason = StuckReason::DependencyStuck { dependency: dep };
                if reasons.is_empty() {
                    frontier.push(waiter);
                }
                if !reasons.contains(&reason) {
                    reasons.push(reason);
                }
            }
        }
        let mut silent: BTreeMap<NodeId, SilentNode> = BTreeMap::new();
        for n in self.core.nodes.values() {
            let silent_ms = now_ms.saturating_sub(n.last_heartbeat_ms);
            if silent_ms > NODE_SILENCE_MS {
                silent.insert(n.id, SilentNode { node: n.id, silent_ms, leases: self.lease_count(n.id) as u64 });
            }
        }
        for reasons in flagged.values() {
            for r in reasons {
                if let StuckReason::NodeSilent { node, silent_ms, .. } = r {
                    silent.entry(*node).or_insert_with(|| SilentNode {
                        node: *node,
                        silent_ms: *silent_ms,
                        leases: self.lease_count(*node) as u64,
                    });
                }
            }
        }
        StuckReport {
            tasks: flagged
                .into_iter()
                .filter_map(|(id, reasons)| Some(StuckTask { task: self.core.tasks.get(&id)?.clone(), reasons }))
                .collect(),
            silent_nodes: silent.into_values().collect(),
        }
    }

    /// The median run time of the last attempt of a queue's newest
    /// successes, once it has [`TYPICAL_MIN_SAMPLES`] of them.
    pub fn typical_duration_ms(&self, queue: &str) -> Option<u64> {
        let qi = self.idx.queues.get(queue)?;
        let mut durations: Vec<u64> = qi
            .finished
            .iter()
            .rev()
            .take(TYPICAL_SAMPLES * 10)
            .filter_map(|(_, id)| self.core.tasks.get(id))
            .filter(|t| t.status == TaskStatus::Succeeded)
            .filter_map(|t| Some(t.finished_ms?.saturating_sub(t.last_started_ms?)))
            .take(TYPICAL_SAMPLES)
            .collect();
        if durations.len() < TYPICAL_MIN_SAMPLES {
            return None;
        }
        durations.sort_unstable();
        Some(durations[durations.len() / 2])
    }
}
