//! The state machine's data: the replicated core that snapshots carry, and
//! the indexes derived from it that make scheduling fast. Indexes are never
//! serialized; they are rebuilt from the core on restore, so there is one
//! source of truth.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::taskmap::TaskMap;
use super::types::{Limits, NodeId, NodeInfo, Queue, TaskId, TaskStatus};

/// What every replica holds alike, byte for byte. Snapshots store it in the
/// shapes of [`crate::format`], never as these types.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Core {
    /// The state machine's clock: the largest `now_ms` applied so far.
    pub clock_ms: u64,
    pub next_task_id: u64,
    pub next_token: u64,
    pub limits: Limits,
    pub queues: BTreeMap<Arc<str>, Queue>,
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    /// By id, in a dense chunked table (see [`super::taskmap`]); serialized
    /// as a map of id to task.
    pub tasks: TaskMap,
    /// Idempotency key to the task it made.
    pub keys: BTreeMap<Arc<str>, TaskId>,
    /// The plan catalog: entities by canonical reference (see [`super::catalog`]).
    pub catalog: BTreeMap<String, super::catalog::CatalogEntry>,
    /// Nodes removed from the cluster (`RemoveNode`) and not admitted again:
    /// their leases, heartbeats and completions are refused.
    pub removed: BTreeSet<NodeId>,
    /// The cluster's stored format (see [`crate::format`]).
    pub format: ClusterFormat,
    /// Tokens, the auth mode, task owners, the audit log's index (format 3).
    pub auth: super::auth::AuthState,
    /// The exec allow list and the data roots (format 4).
    pub policy: super::policy::PolicyState,
}

/// A cluster's stored format: 1 (release 0.1.0's) until a `SetFormat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClusterFormat(pub u32);

impl Default for ClusterFormat {
    fn default() -> Self {
        ClusterFormat(crate::format::FORMAT_0_1_0)
    }
}

/// Per-queue indexes.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct QueueIndex {
    /// Pending tasks that may run now: highest priority, then oldest, first.
    pub ready: BTreeSet<(Reverse<i32>, TaskId)>,
    /// Pending tasks waiting for their `not_before_ms`.
    pub delayed: BTreeSet<(u64, TaskId)>,
    /// Every pending task, oldest first (for the age of the backlog).
    pub pending: BTreeSet<TaskId>,
    /// Ended tasks by the time they ended (for retention).
    pub finished: BTreeSet<(u64, TaskId)>,
    pub counts: [u64; 6],
}

impl QueueIndex {
    /// Tasks not yet ended: what the queue's depth limit counts.
    pub fn depth(&self) -> u64 {
        self.counts[TaskStatus::Pending.index()]
            + self.counts[TaskStatus::Blocked.index()]
            + self.counts[TaskStatus::Leased.index()]
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Indexes {
    pub queues: BTreeMap<Arc<str>, QueueIndex>,
    /// Live leases by the node holding them.
    pub leases_by_node: BTreeMap<NodeId, BTreeSet<TaskId>>,
    /// Live leases by expiry.
    pub expiry: BTreeSet<(u64, TaskId)>,
    /// A task to the blocked tasks waiting for it.
    pub dependents: BTreeMap<TaskId, BTreeSet<TaskId>>,
    /// Interned task kinds, so a million `noop` tasks share one string.
    pub kinds: BTreeSet<Arc<str>>,
}

/// skein's replicated state machine. See the module docs of [`crate::fsm`].
#[derive(Debug, Clone, Default)]
pub struct StateMachine {
    pub(crate) core: Core,
    pub(crate) idx: Indexes,
    /// Set while applying the command inside an `AsCaller` (whose caller
    /// was checked): never set between entries, never stored.
    pub(crate) in_caller: bool,
}

impl PartialEq for StateMachine {
    fn eq(&self, other: &Self) -> bool {
        self.core == other.core
    }
}

impl StateMachine {
    /// The cluster's stored format: what may be logged and snapshotted
    /// (see [`crate::format`]).
    pub fn format(&self) -> u32 {
        self.core.format.0
    }

    /// An empty state machine with the default limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty state machine with other limits (tests, benches).
    pub fn with_limits(limits: Limits) -> Self {
        let mut sm = Self::default();
        sm.core.limits = limits;
        sm
    }

    /// Rebuilds the indexes of a core read from a snapshot, and shares the
    /// queue and kind strings again.
    pub(crate) fn from_core(mut core: Core) -> Self {
        let mut idx = Indexes::default();
        for task in core.tasks.values_mut() {
            if let Some(q) = core.queues.get(&task.queue) {
                task.queue = q.name.clone();
            }
            task.kind = intern(&mut idx.kinds, &task.kind);
            if let Some(key) = &task.idempotency_key {
                if let Some((k, _)) = core.keys.get_key_value(key) {
                    task.idempotency_key = Some(k.clone());
                }
            }
        }
        let mut sm = StateMachine { core, idx, in_caller: false };
        for q in sm.core.queues.keys() {
            sm.idx.queues.insert(q.clone(), QueueIndex::default());
        }
        let ids: Vec<TaskId> = sm.core.tasks.keys().copied().collect();
        for id in ids {
            sm.index(id);
        }
        sm
    }

    /// Adds task `id` to the indexes its current fields call for.
    pub(crate) fn index(&mut self, id: TaskId) {
        let Some(task) = self.core.tasks.get(&id) else { return };
        let clock = self.core.clock_ms;
        let qi = self.idx.queues.entry(task.queue.clone()).or_default();
        qi.counts[task.status.index()] += 1;
        match task.status {
            TaskStatus::Pending => {
                qi.pending.insert(id);
                if task.not_before_ms > clock {
                    qi.delayed.insert((task.not_before_ms, id));
                } else {
                    qi.ready.insert((Reverse(task.priority), id));
                }
            }
            TaskStatus::Leased => {
                if let Some(lease) = &task.lease {
                    self.idx.leases_by_node.entry(lease.node).or_default().insert(id);
                    self.idx.expiry.insert((lease.expires_ms, id));
                }
            }
            TaskStatus::Blocked => {
                for dep in &task.depends_on {
                    // A forgotten dependency (collected after it ended) counts
                    // as done, as in `unblock_dependents` and `retry`.
                    let done = self.core.tasks.get(dep).is_none_or(|d| d.status == TaskStatus::Succeeded);
                    if !done {
                        self.idx.dependents.entry(*dep).or_default().insert(id);
                    }
                }
            }
            TaskStatus::Succeeded | TaskStatus::Dead | TaskStatus::Cancelled => {
                qi.finished.insert((task.finished_ms.unwrap_or(0), id));
            }
        }
    }

    /// Removes task `id` from every index; call before changing its fields.
    pub(crate) fn unindex(&mut self, id: TaskId) {
        let Some(task) = self.core.tasks.get(&id) else { return };
        if let Some(qi) = self.idx.queues.get_mut(&task.queue) {
            qi.counts[task.status.index()] -= 1;
            match task.status {
                TaskStatus::Pending => {
                    qi.pending.remove(&id);
                    qi.delayed.remove(&(task.not_before_ms, id));
                    qi.ready.remove(&(Reverse(task.priority), id));
                }
                TaskStatus::Succeeded | TaskStatus::Dead | TaskStatus::Cancelled => {
                    qi.finished.remove(&(task.finished_ms.unwrap_or(0), id));
                }
                TaskStatus::Leased | TaskStatus::Blocked => {}
            }
        }
        match task.status {
            TaskStatus::Leased => {
                if let Some(lease) = &task.lease {
                    if let Some(set) = self.idx.leases_by_node.get_mut(&lease.node) {
                        set.remove(&id);
                        if set.is_empty() {
                            self.idx.leases_by_node.remove(&lease.node);
                        }
                    }
                    self.idx.expiry.remove(&(lease.expires_ms, id));
                }
            }
            TaskStatus::Blocked => {
                for dep in &task.depends_on {
                    if let Some(set) = self.idx.dependents.get_mut(dep) {
                        set.remove(&id);
                        if set.is_empty() {
                            self.idx.dependents.remove(dep);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Checks that the indexes are exactly what the core implies, and the
    /// per-task invariants. For tests; a failure names the first problem.
    pub fn check_invariants(&self) -> Result<(), String> {
        let rebuilt = StateMachine::from_core(self.core.clone());
        // Delayed tasks whose time has come may sit in either set until the
        // next lease promotes them; compare everything else exactly.
        for (name, qi) in &self.idx.queues {
            let other = rebuilt.idx.queues.get(name).cloned().unwrap_or_default();
            if qi.counts != other.counts || qi.pending != other.pending || qi.finished != other.finished {
                return Err(format!("queue {name}: counts or sets differ from a rebuild"));
            }
            let mine: BTreeSet<TaskId> =
                qi.ready.iter().map(|(_, id)| *id).chain(qi.delayed.iter().map(|(_, id)| *id)).collect();
            if mine != qi.pending {
                return Err(format!("queue {name}: ready+delayed is not the pending set"));
            }
        }
        if self.idx.leases_by_node != rebuilt.idx.leases_by_node
            || self.idx.expiry != rebuilt.idx.expiry
            || self.idx.dependents != rebuilt.idx.dependents
        {
            return Err("lease or dependency indexes differ from a rebuild".into());
        }
        for task in self.core.tasks.values() {
            let leased = task.status == TaskStatus::Leased;
            if leased != task.lease.is_some() {
                return Err(format!("task {}: status {} but lease {:?}", task.id, task.status, task.lease));
            }
            if let Some(lease) = &task.lease {
                if lease.token.0 >= self.core.next_token {
                    return Err(format!(
                        "task {}: token {} not below next {}",
                        task.id, lease.token, self.core.next_token
                    ));
                }
            }
            if task.status.is_terminal() != task.finished_ms.is_some() {
                return Err(format!("task {}: status {} but finished {:?}", task.id, task.status, task.finished_ms));
            }
            if task.id.0 >= self.core.next_task_id {
                return Err(format!("task {} not below next id {}", task.id, self.core.next_task_id));
            }
        }
        Ok(())
    }
}

/// Returns the shared copy of `s`, adding it the first time.
pub(crate) fn intern(set: &mut BTreeSet<Arc<str>>, s: &str) -> Arc<str> {
    if let Some(existing) = set.get(s) {
        return existing.clone();
    }
    let a: Arc<str> = Arc::from(s);
    set.insert(a.clone());
    a
}
