//! The commands the log carries and the responses applying them gives.
//!
//! Serialized enums are append-only: a new command or response variant goes at
//! the end, and an existing one never changes shape (ARCHITECTURE.md has the
//! checklist for adding a command).

use serde::{Deserialize, Serialize};

use super::auth::{Caller, NewToken};
use super::catalog::{AppliedEntity, NewEntity, PlanRun};
use super::types::{FencingToken, NodeId, QueuePatch, TaskId, TaskStatus};

/// One log entry's payload: a command and the leader's clock when it was
/// proposed. The state machine keeps its own clock at `max(now_ms, last)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stamped {
    pub now_ms: u64,
    pub command: Command,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Add tasks, all or none.
    Enqueue {
        tasks: Vec<NewTask>,
    },
    /// Lease up to `max` eligible tasks of `queues` (all queues when empty)
    /// to `node`.
    Lease {
        node: NodeId,
        queues: Vec<String>,
        max: u32,
    },
    /// One per node per interval: renews every lease the node still holds.
    Heartbeat {
        node: NodeId,
        slots: u32,
        held: Vec<HeldLease>,
    },
    /// Outcomes of leased tasks, each under its token.
    Complete {
        node: NodeId,
        completions: Vec<Completion>,
    },
    /// Return every lease past its expiry to pending (or dead).
    ExpireLeases,
    Cancel {
        task: TaskId,
        reason: String,
    },
    /// Give a dead or cancelled task a fresh set of attempts.
    Retry {
        task: TaskId,
    },
    SetQueuePaused {
        queue: String,
        paused: bool,
    },
    /// Change some of a queue's settings (the queue is made with the
    /// defaults if new): all of `patch` or, if the result fails
    /// `QueueConfig::validate`, none (`Rejection::InvalidConfig`). `patch`
    /// keeps format 1's shape: see `queue_settings!` in `types.rs`.
    ConfigureQueue {
        queue: String,
        patch: QueuePatch,
    },
    /// Stop (or resume) leasing to a node.
    DrainNode {
        node: NodeId,
        draining: bool,
    },
    /// Hand back every lease of a node at once (it restarted, or it left the
    /// cluster): its tasks go back to pending as if their leases expired.
    ReleaseNode {
        node: NodeId,
        forget: bool,
    },
    /// Forget ended tasks older than their queue's retention.
    CollectGarbage,
    /// Several commands in one log entry, applied in order.
    Batch(Vec<Command>),
    /// Store catalog entities (plans and what they depend on), all or none,
    /// checked against the catalog: see [`super::catalog`].
    ApplyPlans {
        entities: Vec<NewEntity>,
    },
    /// Enqueue one `migration` task per plan (and per plan they depend on
    /// that has not run), idempotently unless `force`. Plans without a queue
    /// annotation go to `default_queue`.
    RunPlans {
        refs: Vec<String>,
        force: bool,
        default_queue: String,
        priority: i32,
    },
    /// The node left the Raft membership: hand back its leases, forget its
    /// record, and refuse its leases, heartbeats and completions from now on
    /// (`Rejection::NodeRemoved`), so that a removed process that has not
    /// noticed is given no more work and is told to stop.
    RemoveNode {
        node: NodeId,
    },
    /// The node (re)joined the membership: accept it again after a
    /// `RemoveNode`. Does nothing for a node never removed.
    AdmitNode {
        node: NodeId,
    },
    // ---- format 2 (0.2.0): proposed only once the cluster's format is 2 ----
    /// Raise the cluster's stored format to `format` (`skein cluster
    /// finalize`, or a new cluster's first entry); never lowers it. From then
    /// on, commands and snapshots of that format may be written, and nodes of
    /// older releases can no longer read the log.
    SetFormat {
        format: u32,
    },
    /// Retry up to `max` dead tasks of `queue`, those that ended first first
    /// (a dead-letter redrive), each as `Retry` would.
    RedriveQueue {
        queue: String,
        max: u32,
    },
    // ---- format 3 (0.3.0): tokens, owners, the audit trail (see `super::auth`) ----
    /// A client write and who sent it: applied only if the caller's token
    /// exists, has not expired, and its role and owners allow `command`,
    /// all judged at this log position. Audited either way.
    AsCaller {
        caller: Caller,
        command: Box<Command>,
    },
    /// Enqueue tasks that belong to `owner` (a group reference).
    EnqueueOwned {
        tasks: Vec<NewTask>,
        owner: Option<String>,
    },
    CreateToken {
        token: NewToken,
    },
    RevokeToken {
        id: u64,
    },
    /// Replace token `old` with a new secret: same name, role, owners and lifetime.
    RotateToken {
        old: u64,
        new: NewToken,
    },
    /// When tokens were last used (reported by the nodes, not per call).
    TouchTokens {
        used: Vec<(u64, u64)>,
    },
    /// `skein auth enforce|warn`, and the audit log's retention.
    ConfigureAuth {
        enforce: Option<bool>,
        audit_retention_ms: Option<u64>,
    },
    /// An audited request that is not itself a command of the state machine
    /// (a membership change): applying it only writes the audit record.
    Record {
        action: String,
        target: String,
    },
    // ---- format 4 (0.4.0): what the fleet may run and touch (see `super::policy`) ----
    /// `skein exec allow PROGRAM [--args PREFIX...]`.
    AllowExec {
        program: String,
        args: Vec<String>,
    },
    /// `skein exec deny PROGRAM`: every rule of the program, or only the one
    /// with exactly `args`.
    DenyExec {
        program: String,
        args: Option<Vec<String>>,
    },
    /// `skein roots allow URL ...` (replaces a root of the same URL).
    AllowRoot {
        root: super::policy::NewRoot,
    },
    DenyRoot {
        url: String,
    },
    /// `skein policy enforce|open`.
    ConfigurePolicy {
        enforce: bool,
    },
    /// Tasks that a leased task's worker adds as part of its work (a
    /// partitioned run's planner enqueues its partitions and its commit).
    /// Applied only while `token` is `parent`'s live lease, so a stale or
    /// cut-off attempt adds nothing; the tasks belong to the parent's owner.
    /// The lease is the authority, as for a completion: no caller.
    EnqueueChildren {
        parent: TaskId,
        token: FencingToken,
        tasks: Vec<NewTask>,
    },
}

impl Command {
    /// The stored format that introduced this command (see
    /// [`crate::format`]): a cluster of an older format must not log it.
    pub fn format(&self) -> u32 {
        match self {
            Command::SetFormat { .. } | Command::RedriveQueue { .. } => 2,
            Command::AsCaller { command, .. } => command.format().max(3),
            Command::EnqueueOwned { .. }
            | Command::CreateToken { .. }
            | Command::RevokeToken { .. }
            | Command::RotateToken { .. }
            | Command::TouchTokens { .. }
            | Command::ConfigureAuth { .. }
            | Command::Record { .. } => 3,
            Command::AllowExec { .. }
            | Command::DenyExec { .. }
            | Command::AllowRoot { .. }
            | Command::DenyRoot { .. }
            | Command::ConfigurePolicy { .. }
            | Command::EnqueueChildren { .. } => 4,
            Command::Batch(commands) => commands.iter().map(Command::format).max().unwrap_or(1),
            _ => crate::format::FORMAT_0_1_0,
        }
    }

    /// The command's name in messages.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Enqueue { .. } => "enqueue",
            Command::Lease { .. } => "lease",
            Command::Heartbeat { .. } => "heartbeat",
            Command::Complete { .. } => "complete",
            Command::ExpireLeases => "expire leases",
            Command::Cancel { .. } => "cancel",
            Command::Retry { .. } => "retry",
            Command::SetQueuePaused { .. } => "pause queue",
            Command::ConfigureQueue { .. } => "configure queue",
            Command::DrainNode { .. } => "drain node",
            Command::ReleaseNode { .. } => "release node",
            Command::CollectGarbage => "collect garbage",
            Command::Batch(_) => "batch",
            Command::ApplyPlans { .. } => "apply plans",
            Command::RunPlans { .. } => "run plans",
            Command::RemoveNode { .. } => "remove node",
            Command::AdmitNode { .. } => "admit node",
            Command::SetFormat { .. } => "finalize",
            Command::RedriveQueue { .. } => "redrive queue",
            Command::AsCaller { command, .. } => command.name(),
            Command::EnqueueOwned { .. } => "enqueue",
            Command::CreateToken { .. } => "create token",
            Command::RevokeToken { .. } => "revoke token",
            Command::RotateToken { .. } => "rotate token",
            Command::TouchTokens { .. } => "touch tokens",
            Command::ConfigureAuth { .. } => "configure auth",
            Command::Record { .. } => "record",
            Command::AllowExec { .. } => "allow exec",
            Command::DenyExec { .. } => "deny exec",
            Command::AllowRoot { .. } => "allow root",
            Command::DenyRoot { .. } => "deny root",
            Command::ConfigurePolicy { .. } => "configure policy",
            Command::EnqueueChildren { .. } => "enqueue children",
        }
    }
}

/// A task to enqueue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewTask {
    pub queue: String,
    pub kind: String,
    /// JSON text; the API checks it parses.
    pub payload: String,
    pub priority: i32,
    /// `None`: the queue's setting.
    pub max_attempts: Option<u32>,
    /// Not leased before `now + delay_ms`.
    pub delay_ms: u64,
    /// A key seen before returns the task it made instead of a new one.
    pub idempotency_key: Option<String>,
    pub depends_on: Vec<TaskRef>,
}

impl NewTask {
    /// A task with default settings, for tests and simple callers.
    pub fn new(queue: &str, kind: &str, payload: &str) -> Self {
        NewTask {
            queue: queue.to_string(),
            kind: kind.to_string(),
            payload: payload.to_string(),
            priority: 0,
            max_attempts: None,
            delay_ms: 0,
            idempotency_key: None,
            depends_on: Vec::new(),
        }
    }
}

/// A dependency: a task by id, or by the idempotency key it was enqueued
/// with (which may be a task earlier in the same batch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskRef {
    Id(TaskId),
    Key(String),
}

/// A lease a worker reports as still running, with its progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldLease {
    pub task: TaskId,
    pub token: FencingToken,
    pub progress: Option<ReportedProgress>,
}

/// Progress as a worker reports it in a heartbeat (the log's own copy of
/// the shape; the task keeps it as [`super::types::Progress`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportedProgress {
    pub fraction: f32,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    pub task: TaskId,
    pub token: FencingToken,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// Done; `result` is JSON text.
    Succeeded { result: String },
    /// Failed, worth another attempt after a backoff.
    Retryable { error: String },
    /// Failed for good: dead at once.
    Permanent { error: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    Enqueued(Vec<Enqueued>),
    Leased(Vec<Granted>),
    HeartbeatAck(HeartbeatAck),
    Completed(Vec<Result<TaskStatus, Rejection>>),
    Expired(Vec<(TaskId, TaskStatus)>),
    /// The command changed one task (cancel, retry).
    Task {
        id: TaskId,
        status: TaskStatus,
    },
    /// The command was applied and has nothing to report.
    Done,
    /// The command was refused; nothing changed.
    Rejected(Rejection),
    Released(Vec<(TaskId, TaskStatus)>),
    Collected {
        tasks: u64,
    },
    Batch(Vec<Response>),
    PlansApplied(Vec<AppliedEntity>),
    PlansRun(Vec<PlanRun>),
}

/// One enqueued task: its id, and whether this command made it (`false`: an
/// idempotency key returned an existing task).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enqueued {
    pub id: TaskId,
    pub created: bool,
    pub status: TaskStatus,
}

/// A lease the state machine granted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Granted {
    pub task: TaskId,
    pub queue: String,
    pub kind: String,
    pub attempt: u32,
    pub token: FencingToken,
    pub expires_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatAck {
    /// The leases renewed, with their new expiry.
    pub renewed: Vec<(TaskId, u64)>,
    /// Leases the node reported that are no longer its own: stop them.
    pub revoked: Vec<(TaskId, FencingToken)>,
    pub draining: bool,
}

/// Why a command was refused. Every replica computes the same one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejection {
    UnknownTask(TaskId),
    UnknownQueue(String),
    UnknownNode(NodeId),
    /// The token is not the task's current lease (expired, reassigned, or never granted).
    StaleToken {
        task: TaskId,
        token: FencingToken,
        current: Option<FencingToken>,
    },
    /// The task is not in a state the command applies to.
    WrongStatus {
        task: TaskId,
        status: TaskStatus,
        expected: String,
    },
    PayloadTooLarge {
        index: usize,
        bytes: u64,
        limit: u64,
    },
    BatchTooLarge {
        tasks: u64,
        limit: u64,
    },
    EmptyBatch,
    QueueFull {
        queue: String,
        depth: u64,
        limit: u64,
    },
    TooManyQueues {
        limit: u64,
    },
    InvalidName {
        index: usize,
        field: String,
        reason: String,
    },
    UnknownDependency {
        index: usize,
        dependency: String,
    },
    /// A dependency already ended without success, so the task could never run.
    DependencyFailed {
        index: usize,
        dependency: TaskId,
        status: TaskStatus,
    },
    TooManyDependencies {
        index: usize,
        count: u64,
        limit: u64,
    },
    InvalidConfig(String),
    /// A catalog entity is malformed or would break the catalog (missing
    /// dependency, cycle, not a plan).
    InvalidEntity {
        index: usize,
        entity: String,
        field: String,
        reason: String,
    },
    /// No entity with this reference in the catalog.
    UnknownEntity(String),
    /// The node was removed from the cluster (`RemoveNode`): it may lease,
    /// renew and report nothing, and should stop.
    NodeRemoved(NodeId),
    // ---- format 3 ----
    /// No valid token: missing (while enforcing), revoked, unknown or expired.
    Unauthenticated(String),
    /// The token's role or owners do not allow the command; says which.
    Forbidden(String),
    /// A token to create or rotate is malformed or its id is taken.
    InvalidToken(String),
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::UnknownTask(id) => write!(f, "no task {id}"),
            Rejection::UnknownQueue(q) => write!(f, "no queue {q:?}"),
            Rejection::UnknownNode(n) => write!(f, "no node {n}"),
            Rejection::StaleToken { task, token, current } => match current {
                Some(c) => write!(f, "stale token {token} for task {task} (current lease {c})"),
                None => write!(f, "stale token {token} for task {task} (it holds no lease)"),
            },
            Rejection::WrongStatus { task, status, expected } => {
                write!(f, "task {task} is {status}, expected {expected}")
            }
            Rejection::PayloadTooLarge { index, bytes, limit } => {
                write!(f, "task #{index}: payload is {bytes} bytes, the limit is {limit}")
            }
            Rejection::BatchTooLarge { tasks, limit } => {
                write!(f, "batch of {tasks} tasks, the limit is {limit}")
            }
            Rejection::EmptyBatch => write!(f, "no tasks to enqueue"),
            Rejection::QueueFull { queue, depth, limit } => {
                write!(f, "queue {queue:?} is full: {depth} tasks not ended, the limit is {limit}")
            }
            Rejection::TooManyQueues { limit } => write!(f, "too many queues (limit {limit})"),
            Rejection::InvalidName { index, field, reason } => {
                write!(f, "task #{index}: {field}: {reason}")
            }
            Rejection::UnknownDependency { index, dependency } => {
                write!(f, "task #{index}: depends on unknown task {dependency}")
            }
            Rejection::DependencyFailed { index, dependency, status } => {
                write!(f, "task #{index}: dependency {dependency} is {status}")
            }
            Rejection::TooManyDependencies { index, count, limit } => {
                write!(f, "task #{index}: {count} dependencies, the limit is {limit}")
            }
            Rejection::InvalidConfig(msg) => write!(f, "invalid queue config: {msg}"),
            Rejection::InvalidEntity { entity, field, reason, .. } => write!(f, "{entity}: {field}: {reason}"),
            Rejection::UnknownEntity(r) => write!(f, "no entity {r} in the catalog"),
            Rejection::NodeRemoved(n) => write!(f, "node {n} was removed from the cluster"),
            Rejection::Unauthenticated(why) => write!(f, "unauthenticated: {why}"),
            Rejection::Forbidden(why) => write!(f, "forbidden: {why}"),
            Rejection::InvalidToken(why) => write!(f, "invalid token: {why}"),
        }
    }
}
