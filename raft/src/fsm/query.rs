//! Read-only questions the layers above ask of the state: nothing here is
//! replicated, so a query may take the caller's clock.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::state::StateMachine;
use super::types::{Limits, NodeId, NodeInfo, Queue, QueueConfig, Task, TaskId, TaskStatus};

/// A queue's settings and counts, for `GET /api/v1/queues` and metrics.
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
    pub fn tasks(&self, queue: Option<&str>, status: Option<TaskStatus>, after: Option<TaskId>, limit: usize) -> TaskPage {
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
                let counts = TaskStatus::ALL
                    .iter()
                    .map(|s| (*s, qi.map_or(0, |qi| qi.counts[s.index()])))
                    .collect();
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
        self.idx
            .leases_by_node
            .get(&node)
            .into_iter()
            .flatten()
            .filter_map(|id| self.core.tasks.get(id))
            .collect()
    }

    pub fn lease_count(&self, node: NodeId) -> usize {
        self.idx.leases_by_node.get(&node).map_or(0, |s| s.len())
    }

    pub fn nodes(&self) -> &BTreeMap<NodeId, NodeInfo> {
        &self.core.nodes
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
