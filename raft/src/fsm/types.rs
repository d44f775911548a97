//! The values the state machine keeps: tasks, queues, nodes, leases and the
//! events of a task's history.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A task's identifier, assigned by the state machine in enqueue order, so a
/// smaller id is an older task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(pub u64);

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A cluster member's identifier (the openraft node id).
pub type NodeId = u64;

/// The fencing token of one lease. Tokens only grow: every lease the state
/// machine grants takes the next one, so a token names one lease of one
/// task for ever, and any token older than a task's current lease is stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FencingToken(pub u64);

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where a task is in its life. See ARCHITECTURE.md for the transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Waiting to be leased (possibly not before `not_before_ms`, after a
    /// delay or a backoff).
    Pending,
    /// Waiting for its dependencies to succeed.
    Blocked,
    /// Held by a node under a fenced lease.
    Leased,
    /// Done; its result is stored.
    Succeeded,
    /// Failed permanently or ran out of attempts.
    Dead,
    /// Cancelled by request, or because a dependency ended without success.
    Cancelled,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 6] = [
        TaskStatus::Pending,
        TaskStatus::Blocked,
        TaskStatus::Leased,
        TaskStatus::Succeeded,
        TaskStatus::Dead,
        TaskStatus::Cancelled,
    ];

    /// A terminal task no longer changes unless a user retries it.
    pub fn is_terminal(self) -> bool {
        matches!(self, TaskStatus::Succeeded | TaskStatus::Dead | TaskStatus::Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Blocked => "blocked",
            TaskStatus::Leased => "leased",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Dead => "dead",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TaskStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskStatus::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| {
            format!("unknown status {s:?} (one of pending, blocked, leased, succeeded, dead, cancelled)")
        })
    }
}

/// A live lease: which node holds the task, under which token, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub node: NodeId,
    pub token: FencingToken,
    pub expires_ms: u64,
}

/// The last progress a worker reported for a leased task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Fraction done, 0.0 to 1.0 (clamped on the way in).
    pub fraction: f32,
    pub message: String,
}

/// Everything scheduling needs to know about a task. The payload, the result
/// and the history are kept out of memory (see [`crate::fsm::ColdSink`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: TaskId,
    /// Shared with the queue's own name: one allocation per queue, not per task.
    pub queue: Arc<str>,
    /// The transform to run (`noop`, `sleep`, `exec`, `migration`, ...).
    pub kind: Arc<str>,
    /// Higher runs first.
    pub priority: i32,
    pub status: TaskStatus,
    /// How many times the task has been leased (started).
    pub attempt: u32,
    pub max_attempts: u32,
    /// Not leased before this time (delay on enqueue, backoff after failure).
    pub not_before_ms: u64,
    pub idempotency_key: Option<Arc<str>>,
    pub depends_on: Vec<TaskId>,
    pub lease: Option<Lease>,
    /// The node that last leased the task (still set once it ended), so a
    /// status table can say where each dataset ran.
    pub last_node: Option<NodeId>,
    pub progress: Option<Progress>,
    /// The last error, shortened to [`Limits::max_error_bytes`]; the whole
    /// message is in the history.
    pub last_error: Option<String>,
    /// Leases that expired one after another, with no completion between:
    /// the sign of a task that kills or hangs its workers.
    pub expiry_streak: u32,
    pub payload_bytes: u32,
    pub created_ms: u64,
    pub first_started_ms: Option<u64>,
    pub last_started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    /// Number of history events ever written; the newest has `history_len - 1`.
    pub history_len: u32,
}

/// A queue's settings. Every queue is created on first use with the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueConfig {
    /// How long a lease lasts without a heartbeat.
    pub lease_ms: u64,
    pub max_attempts: u32,
    /// Backoff after the n-th failure: `min(cap, base * 2^(n-1))`.
    pub backoff_base_ms: u64,
    pub backoff_cap_ms: u64,
    /// At most this many tasks of the queue leased at once (0: no cap).
    pub concurrency: u32,
    /// At most this many tasks not yet ended (pending, blocked, leased).
    pub max_depth: u64,
    /// Ended tasks are forgotten this long after they ended (0: kept).
    pub retention_ms: u64,
    /// Stuck: a task whose lease expired this many times in a row (0: never).
    pub stuck_expiries: u32,
    /// Stuck: a task whose current attempt has run longer than this (0: no
    /// fixed limit).
    pub stuck_run_ms: u64,
    /// Stuck: a task whose current attempt has run more than this many times
    /// the queue's typical (median) duration (0: off). See `StateMachine::stuck`.
    pub stuck_factor: u32,
    /// Stuck: a task leased to a node that has sent no heartbeat for this
    /// long (0: off).
    pub stuck_silence_ms: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            lease_ms: 30_000,
            max_attempts: 5,
            backoff_base_ms: 1_000,
            backoff_cap_ms: 300_000,
            concurrency: 0,
            max_depth: 5_000_000,
            retention_ms: 7 * 24 * 3600 * 1000,
            stuck_expiries: 3,
            stuck_run_ms: 0,
            stuck_factor: 10,
            stuck_silence_ms: 10_000,
        }
    }
}

/// A change to some of a queue's settings; `None` leaves one as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuePatch {
    pub lease_ms: Option<u64>,
    pub max_attempts: Option<u32>,
    pub backoff_base_ms: Option<u64>,
    pub backoff_cap_ms: Option<u64>,
    pub concurrency: Option<u32>,
    pub max_depth: Option<u64>,
    pub retention_ms: Option<u64>,
    pub stuck_expiries: Option<u32>,
    pub stuck_run_ms: Option<u64>,
    pub stuck_factor: Option<u32>,
    pub stuck_silence_ms: Option<u64>,
}

/// A queue: its settings and whether it is paused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queue {
    pub name: Arc<str>,
    pub config: QueueConfig,
    pub paused: bool,
}

/// What the scheduler knows of a node that works.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: NodeId,
    /// Concurrent transforms the node runs, as it last said.
    pub slots: u32,
    /// A draining node is leased nothing new.
    pub draining: bool,
    pub last_heartbeat_ms: u64,
}

/// Limits every replica enforces alike. They are part of the replicated
/// state so that changing one is itself a logged command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub max_payload_bytes: u32,
    pub max_batch: u32,
    pub max_history_per_task: u32,
    pub max_error_bytes: u32,
    pub max_name_bytes: u32,
    pub max_queues: u32,
    pub max_depends_on: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 1024 * 1024,
            max_batch: 10_000,
            max_history_per_task: 64,
            max_error_bytes: 1024,
            max_name_bytes: 200,
            max_queues: 10_000,
            max_depends_on: 1_000,
        }
    }
}

/// One transition in a task's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at_ms: u64,
    pub node: Option<NodeId>,
    pub token: Option<FencingToken>,
    pub what: EventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Enqueued {
        status: TaskStatus,
    },
    Unblocked,
    Leased {
        attempt: u32,
    },
    Succeeded,
    /// A retryable failure (or an expired lease): pending again after `retry_at_ms`.
    Failed {
        error: String,
        retry_at_ms: u64,
    },
    Expired {
        retry_at_ms: u64,
    },
    Dead {
        error: String,
    },
    Cancelled {
        reason: String,
    },
    Retried,
    Released {
        retry_at_ms: u64,
    },
}
