//! The HTTP API's request and response bodies, shared by `skein-node` (which
//! serves them) and the `skein` CLI (which sends them). Plain serde types:
//! JSON on the wire. README.md documents each route.

use serde::{Deserialize, Serialize};

use crate::fsm::{Event, QueueStats, Task, TaskId, TaskStatus};

/// `POST /api/v1/tasks`: one task, or `{"tasks": [...]}` for a batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EnqueueBody {
    Batch { tasks: Vec<TaskSpec> },
    One(TaskSpec),
}

/// A task as a client describes it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    pub queue: String,
    /// The transform: `noop`, `sleep`, `exec`, `migration`. Default `noop`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Any JSON value; default `{}`.
    #[serde(default)]
    pub payload: Option<serde_json::Value>,
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub max_attempts: Option<u32>,
    #[serde(default)]
    pub delay_ms: u64,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Task ids (numbers) or idempotency keys (strings).
    #[serde(default)]
    pub depends_on: Vec<DependencySpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DependencySpec {
    Id(u64),
    Key(String),
}

/// `POST /api/honk/tasks`: the format existing tools send, accepted as-is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HonkBody {
    pub queue: String,
    pub payload: serde_json::Value,
    /// Optional; `migration` when the payload names an `entity_ref`, else `noop`.
    #[serde(default)]
    pub kind: Option<String>,
}

/// One task of an enqueue's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnqueuedTask {
    pub id: TaskId,
    /// `false` when an idempotency key returned an existing task.
    pub created: bool,
    pub status: TaskStatus,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnqueueReply {
    pub tasks: Vec<EnqueuedTask>,
}

/// `GET /api/v1/tasks/{id}`: the task, its payload, result and history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskDetail {
    #[serde(flatten)]
    pub task: Task,
    pub payload: Option<serde_json::Value>,
    pub result: Option<serde_json::Value>,
    pub history: Vec<Event>,
}

/// `GET /api/v1/tasks?queue=&status=&limit=&cursor=`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskList {
    pub tasks: Vec<Task>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<TaskId>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueList {
    pub queues: Vec<QueueStats>,
}

/// `GET /api/v1/cluster`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The node that answered.
    pub node_id: u64,
    pub leader: Option<u64>,
    pub term: u64,
    pub commit_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub nodes: Vec<ClusterNode>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterNode {
    pub id: u64,
    pub rpc_addr: String,
    pub http_addr: String,
    /// `leader`, `voter` or `learner`.
    pub role: String,
    /// Replication progress as the leader sees it (log index matched).
    pub matched_index: Option<u64>,
    pub slots: Option<u32>,
    pub leases_held: u64,
    pub draining: bool,
    pub last_heartbeat_ms: Option<u64>,
}

/// `POST /api/v1/cluster/join`: a new node asks to be added.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinBody {
    pub id: u64,
    pub rpc_addr: String,
    pub http_addr: String,
}

/// Every error answer: `{"error": {"code", "message"}}` with a real status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `not_found`, `invalid`, `payload_too_large`,
    /// `stale_token`, `conflict`, `unavailable`, `not_leader`, `internal`.
    pub code: String,
    pub message: String,
    /// With `not_leader` or `unavailable`: the leader's HTTP address, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
}
