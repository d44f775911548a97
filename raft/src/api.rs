//! The HTTP API's request and response bodies, shared by `skein-node` (which
//! serves them) and the `skein` CLI (which sends them). Plain serde types:
//! JSON on the wire. README.md documents each route.

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

pub mod policy;

use crate::fsm::{self, Event, QueueStats, Task, TaskId, TaskStatus};

/// `POST /api/v1/tasks`: one task, or `{"tasks": [...]}` for a batch.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EnqueueBody {
    Batch { tasks: Vec<TaskSpec> },
    One(TaskSpec),
}

/// A task as a client describes it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// The group the task belongs to (`group:default/team-infra`): a token
    /// scoped to owners may cancel and retry only its owners' tasks. One
    /// owner per request; default: an owner-scoped token's first owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DependencySpec {
    Id(u64),
    Key(String),
}

/// `POST /api/honk/tasks`: the format existing tools send, accepted as-is.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HonkBody {
    pub queue: String,
    pub payload: serde_json::Value,
    /// Optional; `migration` when the payload names an `entity_ref`, else `noop`.
    #[serde(default)]
    pub kind: Option<String>,
}

/// One task of an enqueue's answer.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnqueuedTask {
    pub id: TaskId,
    /// `false` when an idempotency key returned an existing task.
    pub created: bool,
    pub status: TaskStatus,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnqueueReply {
    pub tasks: Vec<EnqueuedTask>,
}

/// `GET /api/v1/tasks/{id}`: the task, its payload, result and history.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskDetail {
    #[serde(flatten)]
    pub task: Task,
    pub payload: Option<serde_json::Value>,
    pub result: Option<serde_json::Value>,
    pub history: Vec<Event>,
}

/// `GET /api/v1/tasks?queue=&status=&limit=&cursor=`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskList {
    pub tasks: Vec<Task>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<TaskId>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueList {
    pub queues: Vec<QueueStats>,
}

/// `GET /api/v1/cluster`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The node that answered.
    pub node_id: u64,
    pub leader: Option<u64>,
    pub term: u64,
    pub commit_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub nodes: Vec<ClusterNode>,
    /// The cluster's stored format (see `skein_raft::format`): what it may
    /// write. Absent from a 0.1.0 node's answer (format 1).
    #[serde(default)]
    pub format: Option<u32>,
    /// The answering node's release; absent from a 0.1.0 node's answer.
    #[serde(default)]
    pub release: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterNode {
    pub id: u64,
    pub rpc_addr: String,
    pub http_addr: String,
    /// `leader`, `voter`, `learner`, or `worker` (a node outside Raft: no
    /// addresses, it calls the members).
    pub role: String,
    /// Replication progress as the leader sees it (log index matched).
    pub matched_index: Option<u64>,
    pub slots: Option<u32>,
    pub leases_held: u64,
    pub draining: bool,
    pub last_heartbeat_ms: Option<u64>,
    /// The member's release as the answering node last heard it (`0.1.0`
    /// for a node that does not know the question); absent when not heard.
    #[serde(default)]
    pub release: Option<String>,
    /// The newest stored format the member reads, when heard.
    #[serde(default)]
    pub format: Option<u32>,
}

/// `POST /api/v1/cluster/finalize`: the cluster's stored format now.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinalizeReply {
    pub format: u32,
    /// `false`: the cluster was already at that format.
    pub changed: bool,
}

/// A task a redrive retried.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RetriedTask {
    pub id: TaskId,
    pub status: TaskStatus,
}

/// `POST /api/v1/queues/{name}/redrive?max=N`: the dead tasks retried.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RedriveReply {
    /// Each task retried, with its status now (pending, or blocked).
    pub tasks: Vec<RetriedTask>,
    /// Dead tasks that stay dead (a dependency of theirs failed), with why.
    pub refused: Vec<String>,
}

/// `POST /api/v1/cluster/join`: a new node asks to be added.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinBody {
    pub id: u64,
    pub rpc_addr: String,
    pub http_addr: String,
}

/// The answer of `GET /api/v1/scale`: KEDA's `metrics-api` scaler reads
/// `valueLocation: workers` (with `targetValue: 1`), or `tasks` (with
/// `targetValue` the slots of one worker).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleReply {
    /// The queue asked about; `null`: every queue.
    pub queue: Option<String>,
    /// Tasks that need a slot now: running + ready, each queue within its
    /// concurrency cap.
    pub tasks: u64,
    /// The slots of one worker, as asked (default 1).
    pub per_worker: u64,
    /// Workers the backlog needs: ceil(tasks / per_worker).
    pub workers: u64,
    /// Pending tasks (dependencies met; those in a retry backoff or a
    /// delay included) of the queues that are not paused.
    pub ready: u64,
    /// Leased tasks.
    pub running: u64,
    /// Whether the queue is paused; over every queue, whether there are
    /// queues and all of them are paused.
    pub paused: bool,
}

/// `POST /api/v1/cluster/workers`: a worker (a node outside Raft) joins the
/// fleet, or says it is back.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerJoinBody {
    /// Its node id; absent: the cluster gives it one.
    #[serde(default)]
    pub id: Option<u64>,
    /// Where its HTTP endpoint (health, metrics) is, as it advertises it.
    pub http_addr: String,
    /// Concurrent tasks it runs.
    pub slots: u32,
    /// Its release and the newest stored format it reads.
    pub release: String,
    pub format: u32,
}

/// The answer to a worker's registration: its id, and the members to
/// reach the leader through.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerJoined {
    pub id: u64,
    pub members: Vec<MemberAddr>,
    pub leader: Option<u64>,
}

/// A Raft member's addresses.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberAddr {
    pub id: u64,
    pub rpc_addr: String,
    pub http_addr: String,
}

/// Every error answer: `{"error": {"code", "message"}}` with a real status.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
    /// With `not_leader` or `unavailable`: the leader's HTTP address, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
}

/// What went wrong, machine-readable: the `code` of every error answer
/// (README, "Errors"). The node picks one and its HTTP status follows from
/// it ([`ErrorCode::status`]); clients match on it, never on messages.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the request is wrong; the same request fails again.
    Invalid,
    /// 404: no such task, queue, node, plan or route.
    NotFound,
    /// 409: the task is not in a state that allows it.
    Conflict,
    /// 409: a completion under a fencing token that is no longer current.
    StaleToken,
    /// 409: the command needs a newer stored format (upgrade, then
    /// `skein cluster finalize`).
    NeedsFormat,
    /// 409: a finalize while some member runs an older release.
    UpgradeNeeded,
    /// 410: the node asking was removed from the cluster.
    Removed,
    /// 413: a payload or a batch over its limit.
    PayloadTooLarge,
    /// 421: only the leader answers this; `leader` names it.
    NotLeader,
    /// 429: the queue is at its `max_depth`, or too many queues.
    QueueFull,
    /// 503: not carried out (no leader, or none reachable in time):
    /// nothing changed, safe to retry, at `leader` if it is named.
    Unavailable,
    /// 503: sent, and no answer came back in time: it may or may not have
    /// taken effect. Retry with the same idempotency key.
    OutcomeUnknown,
    /// 500: the node failed (its log says why).
    Internal,
    /// 401: no valid token (missing while the cluster enforces, malformed,
    /// unknown, revoked or expired).
    Unauthenticated,
    /// 403: the token's role or owners do not allow this; the message says which.
    Forbidden,
    /// 429: too many requests from this token, or connections from this
    /// address; retry after the `Retry-After` header's seconds.
    RateLimited,
    /// A code this build does not know (a newer node's): read the status.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The HTTP status a node answers with this code.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::Invalid => 400,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict | ErrorCode::StaleToken | ErrorCode::NeedsFormat | ErrorCode::UpgradeNeeded => 409,
            ErrorCode::Removed => 410,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::NotLeader => 421,
            ErrorCode::QueueFull | ErrorCode::RateLimited => 429,
            ErrorCode::Unavailable | ErrorCode::OutcomeUnknown => 503,
            ErrorCode::Internal | ErrorCode::Unknown => 500,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::Forbidden => 403,
        }
    }

    /// Whether the request certainly did not take effect and may be sent
    /// again as it is (at the leader, when one is named).
    pub fn not_carried_out(self) -> bool {
        matches!(self, ErrorCode::NotLeader | ErrorCode::Unavailable)
    }

    /// The code as it is written in answers (`"not_found"`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Invalid => "invalid",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::StaleToken => "stale_token",
            ErrorCode::NeedsFormat => "needs_format",
            ErrorCode::UpgradeNeeded => "upgrade_needed",
            ErrorCode::Removed => "removed",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::NotLeader => "not_leader",
            ErrorCode::QueueFull => "queue_full",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::OutcomeUnknown => "outcome_unknown",
            ErrorCode::Internal => "internal",
            ErrorCode::Unknown => "unknown",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RateLimited => "rate_limited",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

// ----- plans ----------------------------------------------------------------

/// `POST /api/v1/plans`: catalog entities (Backstage documents, as JSON) to
/// store, all or none. The node also takes `application/yaml` (one or more
/// documents) as the body.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyPlansBody {
    pub entities: Vec<serde_json::Value>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyPlansReply {
    pub entities: Vec<AppliedEntity>,
}

/// What storing one entity did. (The API's own copy of the state machine's
/// answer, which travels between nodes in bincode and may not change.)
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedEntity {
    pub entity_ref: String,
    /// New to the catalog.
    pub created: bool,
    /// Its document differs from the one stored before (always true when created).
    pub changed: bool,
    pub revision: u64,
}

impl From<fsm::AppliedEntity> for AppliedEntity {
    fn from(e: fsm::AppliedEntity) -> Self {
        AppliedEntity { entity_ref: e.entity_ref, created: e.created, changed: e.changed, revision: e.revision }
    }
}

/// One catalog entity in a listing.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanSummary {
    /// Canonical: `component:default/orders-v2`.
    pub entity_ref: String,
    /// A migration plan (else a plain entity plans may depend on).
    pub is_plan: bool,
    pub queue: Option<String>,
    pub owner: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub depends_on: Vec<String>,
    /// Bumped each time the stored document changes.
    pub revision: u64,
    /// The generation of the newest run (0: never run).
    pub generation: u64,
    pub updated_ms: u64,
    /// The newest run's task, while it is known. For a partitioned plan
    /// this is the run's planner, and `partitions` follows the run.
    pub task: Option<Task>,
    /// A partitioned plan's newest run, once planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<RunPartitions>,
}

/// A partitioned plan's run: its partition tasks by status, the commit
/// task that publishes them, and an estimate of the time left.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunPartitions {
    pub total: u64,
    /// Pending or blocked.
    pub pending: u64,
    /// Leased.
    pub running: u64,
    pub succeeded: u64,
    /// Dead: out of attempts or failed for good (`skein plan run REF
    /// --partition P` runs one again).
    pub failed: u64,
    pub cancelled: u64,
    /// The run's status as a whole: `running`, `failing` (a partition
    /// failed, others still run), `publishing`, `succeeded`, `failed` or
    /// `cancelled`.
    pub status: String,
    /// The task that publishes every partition's output as one version.
    pub commit_task: TaskId,
    pub commit_status: TaskStatus,
    /// Rows the succeeded partitions wrote (in a plan's detail only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// The indexes of the failed partitions (at most 100).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_partitions: Vec<u32>,
    /// Time left at the pace so far, while partitions remain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_ms: Option<u64>,
}

/// `GET /api/v1/plans?owner=&label=k=v&plans_only=`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanList {
    pub plans: Vec<PlanSummary>,
}

/// `GET /api/v1/plans/{kind}/{namespace}/{name}`: the summary and the
/// stored document.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanDetail {
    #[serde(flatten)]
    pub summary: PlanSummary,
    pub entity: serde_json::Value,
}

/// `POST /api/v1/plans/run`: which plans to run. Give `refs`, or `all`, or
/// a `selector` (every condition must hold).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunPlansBody {
    /// Entity references (`[kind:][namespace/]name`; kind defaults to component).
    #[serde(default)]
    pub refs: Vec<String>,
    #[serde(default)]
    pub all: bool,
    #[serde(default)]
    pub selector: Option<PlanSelector>,
    /// Run again even plans that are pending, running or done.
    #[serde(default)]
    pub force: bool,
    /// The queue of plans without a `honk/queue` annotation (default `dataset-migrations`).
    #[serde(default)]
    pub queue: Option<String>,
    #[serde(default)]
    pub priority: i32,
    /// A partitioned plan only (with exactly one ref): run this failed
    /// partition of its newest run again, and publish the run once it
    /// succeeds; the partitions that succeeded are kept.
    #[serde(default)]
    pub partition: Option<u32>,
}

/// Plans by owner and labels.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanSelector {
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunPlansReply {
    pub runs: Vec<PlanRun>,
}

/// A plan's run. (The API's own copy of the state machine's answer.)
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRun {
    pub entity_ref: String,
    pub generation: u64,
    pub task: TaskId,
    /// `false`: the plan's current run was returned (it is pending, running
    /// or done), nothing new was enqueued.
    pub created: bool,
    pub status: TaskStatus,
    /// Asked for by name (not pulled in as a dependency).
    pub requested: bool,
}

impl From<fsm::PlanRun> for PlanRun {
    fn from(r: fsm::PlanRun) -> Self {
        PlanRun {
            entity_ref: r.entity_ref,
            generation: r.generation,
            task: r.task,
            created: r.created,
            status: r.status,
            requested: r.requested,
        }
    }
}

// ----- dashboard, progress and stuck tasks ----------------------------------

/// One row of the status table: a dataset (or task) as a person knows it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRow {
    pub id: TaskId,
    /// The payload's `entity_ref`, else its `dataset`, else `kind#id`.
    pub name: String,
    pub queue: String,
    pub kind: String,
    pub status: TaskStatus,
    /// The node holding it, else the node that ran it last.
    pub node: Option<u64>,
    pub attempt: u32,
    pub max_attempts: u32,
    /// When it first started.
    pub started_ms: Option<u64>,
    /// When it ended (succeeded, dead or cancelled).
    pub completed_ms: Option<u64>,
    /// From first start to end; for a leased task, to now.
    pub duration_ms: Option<u64>,
    pub last_error: Option<String>,
    pub progress: Option<crate::fsm::Progress>,
    /// Leases that expired in a row.
    pub expiry_streak: u32,
    /// The catalog entity the task migrates, if any.
    pub entity_ref: Option<String>,
    /// Its plan's owner (or the payload's `owner`).
    pub owner: Option<String>,
}

impl TaskRow {
    /// The row of `task`, given its payload (when read) and the caller's clock.
    pub fn new(task: &Task, payload: Option<&serde_json::Value>, now_ms: u64) -> TaskRow {
        let text = |field: &str| payload.and_then(|p| p.get(field)).and_then(|v| v.as_str()).filter(|s| !s.is_empty());
        let end = task.finished_ms.or((task.status == TaskStatus::Leased).then_some(now_ms));
        TaskRow {
            id: task.id,
            name: task_name(task, payload),
            queue: task.queue.to_string(),
            kind: task.kind.to_string(),
            status: task.status,
            node: task.lease.as_ref().map(|l| l.node).or(task.last_node),
            attempt: task.attempt,
            max_attempts: task.max_attempts,
            started_ms: task.first_started_ms,
            completed_ms: task.finished_ms,
            duration_ms: task.first_started_ms.zip(end).map(|(s, e)| e.saturating_sub(s)),
            last_error: task.last_error.clone(),
            progress: task.progress.clone(),
            expiry_streak: task.expiry_streak,
            entity_ref: text("entity_ref").map(str::to_string),
            owner: text("owner").map(str::to_string),
        }
    }
}

/// The name a person knows a task by: the payload's `entity_ref` (a catalog
/// entity), else its `dataset`, else `kind#id`.
pub fn task_name(task: &Task, payload: Option<&serde_json::Value>) -> String {
    for field in ["entity_ref", "dataset"] {
        match payload.and_then(|p| p.get(field)) {
            Some(serde_json::Value::String(s)) if !s.is_empty() => return s.clone(),
            Some(serde_json::Value::String(_) | serde_json::Value::Null) | None => {}
            Some(other) => return other.to_string(),
        }
    }
    format!("{}#{}", task.kind, task.id)
}

/// A stuck task: its row, why it is stuck, and the reasons in words.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StuckRow {
    #[serde(flatten)]
    pub row: TaskRow,
    pub reasons: Vec<crate::fsm::StuckReason>,
    /// Each reason as a sentence.
    pub why: Vec<String>,
}

/// `GET /api/v1/stuck?queue=`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StuckList {
    /// The clock the answer was computed at.
    pub now_ms: u64,
    pub tasks: Vec<StuckRow>,
    pub silent_nodes: Vec<crate::fsm::SilentNode>,
}

/// A member as the dashboard shows it: [`ClusterNode`] and its health.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeView {
    #[serde(flatten)]
    pub node: ClusterNode,
    /// `ok` (heartbeat within 3 s), `late` (within 10 s), `silent`, or
    /// `unknown` (never heard from).
    pub health: String,
    pub heartbeat_age_ms: Option<u64>,
}

/// A migration plan's progress: the task of its newest run.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanProgress {
    pub entity_ref: String,
    pub owner: Option<String>,
    pub queue: Option<String>,
    pub depends_on: Vec<String>,
    /// The newest run's task (absent: never run, or forgotten).
    pub task: Option<TaskId>,
    /// `never_run` when it has no task.
    pub status: String,
    /// 0.0 to 1.0: 1 once succeeded, the reported progress while leased.
    pub fraction: f32,
    pub message: Option<String>,
    pub node: Option<u64>,
    /// A partitioned plan's newest run, once planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<RunPartitions>,
}

/// `GET /api/v1/overview`: everything the dashboard shows, in one answer.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Overview {
    /// The node that answered, and its view of the cluster.
    pub node_id: u64,
    pub now_ms: u64,
    pub leader: Option<u64>,
    pub term: u64,
    pub commit_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub nodes: Vec<NodeView>,
    /// Every queue with its counts per status.
    pub queues: Vec<QueueStats>,
    /// Counts per status over every queue.
    pub totals: BTreeMap<TaskStatus, u64>,
    /// The status table, filtered by `queue`, `status`, `owner` and `plan`,
    /// oldest first, at most `limit` rows.
    pub tasks: Vec<TaskRow>,
    /// Tasks matching `queue` and `status` (before `owner`/`plan`, which
    /// need the payloads and so only look at the rows scanned).
    pub tasks_total: u64,
    /// More rows match than were returned.
    pub truncated: bool,
    /// Migration plans with their progress (empty without a catalog).
    pub plans: Vec<PlanProgress>,
    /// Every owner known (plans' and payloads'), for the owner filter.
    pub owners: Vec<String>,
    /// Absent when asked with `stuck=false`.
    pub stuck: Option<StuckList>,
}

// ----- tokens, auth mode, audit (format 3) -----------------------------------

/// `POST /api/v1/tokens`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenBody {
    pub role: crate::fsm::Role,
    /// Group references; empty: the token may act for any owner.
    #[serde(default)]
    pub owners: Vec<String>,
    /// Default: `<role>-<first 8 characters of the id>`.
    #[serde(default)]
    pub name: Option<String>,
    /// How long the token lives; default: for ever.
    #[serde(default)]
    pub expires_in_ms: Option<u64>,
}

/// A token as listed: never its secret, never its hash.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenInfo {
    /// 16 hex digits; the token's text starts with `skein_<id>_`.
    pub id: String,
    pub name: String,
    pub role: crate::fsm::Role,
    pub owners: Vec<String>,
    pub created_ms: u64,
    pub expires_ms: Option<u64>,
    pub last_used_ms: Option<u64>,
    pub created_by: String,
}

impl From<&crate::fsm::TokenRecord> for TokenInfo {
    fn from(t: &crate::fsm::TokenRecord) -> Self {
        TokenInfo {
            id: crate::fsm::auth::hex_id(t.id),
            name: t.name.clone(),
            role: t.role,
            owners: t.owners.clone(),
            created_ms: t.created_ms,
            expires_ms: t.expires_ms,
            last_used_ms: t.last_used_ms,
            created_by: t.created_by.clone(),
        }
    }
}

/// `POST /api/v1/tokens` and `POST /api/v1/tokens/{id}/rotate`: the token's
/// text, shown this once.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenCreated {
    #[serde(flatten)]
    pub info: TokenInfo,
    pub token: String,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenList {
    pub tokens: Vec<TokenInfo>,
}

/// `GET /api/v1/auth`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthStatus {
    /// `enforce`: calls without a token are refused; `warn`: served, logged
    /// and counted (`skein_auth_requests{outcome="anonymous"}`).
    pub mode: String,
    /// The cluster's stored format (tokens need 3).
    pub format: u32,
    pub tokens: usize,
    pub audit_retention_ms: u64,
}

/// `POST /api/v1/auth`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthBody {
    /// `enforce` or `warn`.
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub audit_retention_ms: Option<u64>,
}

/// One record of `GET /api/v1/audit`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    #[serde(flatten)]
    pub record: crate::fsm::AuditRecord,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditList {
    pub records: Vec<AuditEntry>,
    /// Pass back as `after` for the next page.
    pub next: Option<u64>,
}
