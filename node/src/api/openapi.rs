//! The HTTP API as an OpenAPI 3.1 document, generated from the code and
//! served at `GET /api/v1/openapi.json` (public: it holds no data).
//!
//! The bodies' schemas come from the types themselves (`skein_raft::api`
//! and the state machine's types, `ToSchema` under skein-raft's `openapi`
//! feature); each route is declared once here, on a function that only
//! carries its `#[utoipa::path]` (the handlers stay where they are). Each
//! operation names the role it needs in `x-skein-role`; [`Finish`] turns
//! that into the bearer security requirement and the 401/403 answers, and
//! adds the error answers (`{"error": {"code", "message", "leader"?}}`) with
//! the statuses of their codes ([`ErrorCode::status`]).
//!
//! The tests below check the document against the router's source (every
//! route, its method and its role, nothing more) and that every `$ref`
//! resolves; `tests/tests/openapi.rs` fuzzes a live cluster from it.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use skein_raft::api::policy::{DenyRootBody, ExecRuleBody, PolicyModeBody, PolicyView, RootBody};
use skein_raft::api::*;
use skein_raft::fsm::{QueuePatch, Role, TaskId, TaskStatus};
use utoipa::openapi::header::Header;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, Response as DocResponse, Schema};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::views::scale::ScaleReply;

/// The path it is served at.
pub const PATH: &str = "/api/v1/openapi.json";

/// The operation extension naming the role a route needs (absent: public).
pub const ROLE_EXTENSION: &str = "x-skein-role";

/// The security scheme's name.
const BEARER: &str = "bearer";

/// `GET /api/v1/openapi.json`.
pub async fn serve() -> Response {
    static JSON: OnceLock<String> = OnceLock::new();
    let json = JSON.get_or_init(|| document().to_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}")));
    ([(header::CONTENT_TYPE, "application/json")], json.as_str()).into_response()
}

/// The whole document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// Every error code with its status, in the order of the README's table.
/// (A test checks it against `ErrorCode`'s own schema: none is missing.)
pub const ERROR_CODES: &[ErrorCode] = &[
    ErrorCode::Invalid,
    ErrorCode::Unauthenticated,
    ErrorCode::Forbidden,
    ErrorCode::NotFound,
    ErrorCode::Conflict,
    ErrorCode::StaleToken,
    ErrorCode::NeedsFormat,
    ErrorCode::UpgradeNeeded,
    ErrorCode::Removed,
    ErrorCode::PayloadTooLarge,
    ErrorCode::NotLeader,
    ErrorCode::QueueFull,
    ErrorCode::RateLimited,
    ErrorCode::Internal,
    ErrorCode::Unavailable,
    ErrorCode::OutcomeUnknown,
];

#[derive(OpenApi)]
#[openapi(
    info(
        title = "skein",
        description = "The HTTP API every skein-node serves (README.md, \"HTTP API\"). Every error answer is \
                       `{\"error\": {\"code\", \"message\", \"leader\"?}}` with the status of its code; \
                       every answer carries the node's release in `x-skein-release`. A route that needs a \
                       role names it in `x-skein-role` and takes `Authorization: Bearer <token>` (or the \
                       dashboard's cookie).",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    paths(
        ops::healthz, ops::readyz, ops::dashboard_page, ops::dashboard_js, ops::dashboard_css,
        ops::signin_page, ops::sign_in, ops::sign_out, ops::openapi_json, ops::metrics, ops::overview,
        ops::stuck, ops::list_tasks, ops::show_task, ops::list_queues, ops::cluster_status, ops::list_plans,
        ops::show_plan, ops::show_plan_by_parts, ops::auth_status, ops::scale, ops::honk_enqueue, ops::enqueue,
        ops::cancel_task, ops::retry_task, ops::apply_plans, ops::run_plans, ops::configure_queue,
        ops::pause_queue, ops::resume_queue, ops::redrive_queue, ops::join, ops::register_worker, ops::finalize, ops::remove_node,
        ops::drain_node, ops::digest, ops::audit, ops::backup, ops::list_tokens, ops::create_token,
        ops::revoke_token, ops::rotate_token, ops::configure_auth, ops::show_policy, ops::set_policy_mode,
        ops::allow_exec, ops::deny_exec, ops::allow_root, ops::deny_root,
    ),
    components(schemas(ErrorBody, ErrorDetail, ErrorCode)),
    modifiers(&Finish),
    tags(
        (name = "health", description = "Liveness and readiness"),
        (name = "dashboard", description = "The web dashboard, its sign-in and the metrics"),
        (name = "tasks", description = "Enqueue, list, show, cancel and retry tasks"),
        (name = "queues", description = "Queue settings, pause, resume, redrive; the workers their backlog needs"),
        (name = "plans", description = "The migration catalog: apply, list, show and run plans"),
        (name = "cluster", description = "Membership, drain, finalize, digest, backups"),
        (name = "access", description = "Tokens, the auth mode and the audit trail"),
        (name = "policy", description = "What the fleet may run and touch: the exec allow list, the data roots"),
        (name = "meta", description = "This document")
    )
)]
struct ApiDoc;

// ----- bodies that are not shared types --------------------------------------

/// `GET /healthz`.
#[derive(Serialize, Deserialize, ToSchema)]
struct Health {
    /// Always `ok`.
    status: String,
    /// This node's id (absent on a worker node's answer, which says `role`).
    node_id: Option<u64>,
    /// Whether this node is in a cluster yet (`--bootstrap-expect` members
    /// ask each other this before any token exists).
    initialized: Option<bool>,
    /// A member's RPC address, where a node that joins without a token
    /// sends its `join` call (authenticated by its certificate).
    rpc_addr: Option<String>,
    /// The Raft members' ids (voters and learners) this member knows: a
    /// member that lost its data learns from it whether it is still listed.
    members: Option<Vec<u64>>,
}

/// `GET /readyz`: a leader is known and something was applied.
#[derive(Serialize, Deserialize, ToSchema)]
struct Ready {
    /// Always `ready`.
    status: String,
    leader: u64,
    applied_index: u64,
}

/// `{}`: done.
#[derive(Serialize, Deserialize, ToSchema)]
struct Done {}

/// A task's status after a cancel or a retry.
#[derive(Serialize, Deserialize, ToSchema)]
struct TaskChanged {
    id: TaskId,
    status: TaskStatus,
}

/// `POST /api/v1/tasks/{id}/cancel`: optional.
#[derive(Serialize, Deserialize, ToSchema)]
struct CancelBody {
    /// Kept in the task's history.
    #[serde(default)]
    reason: String,
}

/// `GET /api/v1/admin/digest`.
#[derive(Serialize, Deserialize, ToSchema)]
struct Digest {
    node_id: u64,
    applied_index: u64,
    /// 16 hex digits; equal digests at equal applied indexes: identical replicas.
    digest: String,
}

/// `POST /signin` (a form).
#[derive(Serialize, Deserialize, ToSchema)]
struct SignIn {
    /// A token of role `read` or above: `skein_<id>_<secret>`.
    token: String,
}

// ----- the operations --------------------------------------------------------
//
// One function per route, in the router's order (`super::router`). Each
// carries only its declaration. Path parameters are as the handlers parse
// them; query parameters as their `Deserialize` structs take them.

/// Declarations only: the handlers are in the sibling modules.
#[allow(dead_code)]
mod ops {
    use super::*;

    /// Liveness: the process answers.
    #[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
    pub(super) fn healthz() {}

    /// Readiness: a leader is known and this node applied something.
    #[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200, body = Ready)))]
    pub(super) fn readyz() {}

    /// The dashboard (HTML).
    #[utoipa::path(get, path = "/", tag = "dashboard",
        responses((status = 200, description = "The page", content_type = "text/html", body = String)))]
    pub(super) fn dashboard_page() {}

    /// The dashboard's script.
    #[utoipa::path(get, path = "/dashboard.js", tag = "dashboard",
        responses((status = 200, description = "The script", content_type = "text/javascript", body = String)))]
    pub(super) fn dashboard_js() {}

    /// The dashboard's style sheet.
    #[utoipa::path(get, path = "/dashboard.css", tag = "dashboard",
        responses((status = 200, description = "The style sheet", content_type = "text/css", body = String)))]
    pub(super) fn dashboard_css() {}

    /// The sign-in page (HTML).
    #[utoipa::path(get, path = "/signin", tag = "dashboard",
        responses((status = 200, description = "The page", content_type = "text/html", body = String)))]
    pub(super) fn signin_page() {}

    /// Signs the browser in: keeps the token in an HttpOnly, SameSite=Strict cookie.
    #[utoipa::path(post, path = "/signin", tag = "dashboard",
        request_body(content = SignIn, content_type = "application/x-www-form-urlencoded"),
        responses(
            (status = 303, description = "Signed in: the cookie is set, on to the dashboard",
                headers(("set-cookie" = String), ("location" = String))),
            (status = 401, description = "Not signed in: the page again, saying why",
                content_type = "text/html", body = String),
        ))]
    pub(super) fn sign_in() {}

    /// Signs the browser out (clears the cookie).
    #[utoipa::path(post, path = "/signout", tag = "dashboard",
        responses((status = 303, description = "Signed out, on to the sign-in page",
            headers(("set-cookie" = String), ("location" = String)))))]
    pub(super) fn sign_out() {}

    /// This document.
    #[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta",
        responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)))]
    pub(super) fn openapi_json() {}

    /// Prometheus metrics (OpenMetrics text). Public when the node runs with `--metrics-public`.
    #[utoipa::path(get, path = "/metrics", tag = "dashboard",
        extensions(("x-skein-role" = json!("read"))),
        responses((status = 200, description = "The metrics",
            content_type = "application/openmetrics-text", body = String)))]
    pub(super) fn metrics() {}

    /// Everything the dashboard shows, in one answer.
    #[utoipa::path(get, path = "/api/v1/overview", tag = "dashboard",
        extensions(("x-skein-role" = json!("read"))),
        params(
            ("queue" = Option<String>, Query, description = "Only this queue's tasks"),
            ("status" = Option<TaskStatus>, Query, description = "Only tasks with this status"),
            ("owner" = Option<String>, Query, description = "Only this owner's tasks"),
            ("plan" = Option<String>, Query, description = "Only the tasks migrating this entity"),
            ("limit" = Option<u64>, Query, description = "At most this many rows"),
            ("stuck" = Option<bool>, Query, description = "`false` skips the stuck-task scan"),
        ),
        responses((status = 200, body = Overview)))]
    pub(super) fn overview() {}

    /// Stuck tasks and silent nodes.
    #[utoipa::path(get, path = "/api/v1/stuck", tag = "tasks",
        extensions(("x-skein-role" = json!("read"))),
        params(("queue" = Option<String>, Query, description = "Only this queue's tasks")),
        responses((status = 200, body = StuckList)))]
    pub(super) fn stuck() {}

    /// Lists tasks, oldest first, a page at a time.
    #[utoipa::path(get, path = "/api/v1/tasks", tag = "tasks",
        extensions(("x-skein-role" = json!("read"))),
        params(
            ("queue" = Option<String>, Query, description = "Only this queue's tasks"),
            ("status" = Option<TaskStatus>, Query, description = "Only tasks with this status"),
            ("limit" = Option<u64>, Query, description = "Page size (1 to 10000, default 100)"),
            ("cursor" = Option<u64>, Query, description = "A previous page's `next_cursor`"),
        ),
        responses((status = 200, body = TaskList)))]
    pub(super) fn list_tasks() {}

    /// A task with its payload, result and history.
    #[utoipa::path(get, path = "/api/v1/tasks/{id}", tag = "tasks",
        extensions(("x-skein-role" = json!("read"))),
        params(("id" = u64, Path, description = "The task's id")),
        responses((status = 200, body = TaskDetail)))]
    pub(super) fn show_task() {}

    /// Every queue with its settings and counts.
    #[utoipa::path(get, path = "/api/v1/queues", tag = "queues",
        extensions(("x-skein-role" = json!("read"))),
        responses((status = 200, body = QueueList)))]
    pub(super) fn list_queues() {}

    /// The cluster as the answering node sees it.
    #[utoipa::path(get, path = "/api/v1/cluster", tag = "cluster",
        extensions(("x-skein-role" = json!("read"))),
        responses((status = 200, body = ClusterStatus)))]
    pub(super) fn cluster_status() {}

    /// Lists the catalog's entities.
    #[utoipa::path(get, path = "/api/v1/plans", tag = "plans",
        extensions(("x-skein-role" = json!("read"))),
        params(
            ("owner" = Option<String>, Query, description = "Only this owner's"),
            ("label" = Option<String>, Query, description = "`k=v,k2=v2`: every label must match"),
            ("plans_only" = Option<bool>, Query, description = "Only migration plans"),
        ),
        responses((status = 200, body = PlanList)))]
    pub(super) fn list_plans() {}

    /// One entity, by reference (`[kind:][namespace/]name`).
    #[utoipa::path(get, path = "/api/v1/plans/{entity_ref}", tag = "plans",
        extensions(("x-skein-role" = json!("read"))),
        params(("entity_ref" = String, Path, description = "`[kind:][namespace/]name`; kind defaults to component")),
        responses((status = 200, body = PlanDetail)))]
    pub(super) fn show_plan() {}

    /// One entity, by kind, namespace and name.
    #[utoipa::path(get, path = "/api/v1/plans/{kind}/{namespace}/{name}", tag = "plans",
        extensions(("x-skein-role" = json!("read"))),
        params(
            ("kind" = String, Path, description = "`component`, `group`, ..."),
            ("namespace" = String, Path, description = "Usually `default`"),
            ("name" = String, Path),
        ),
        responses((status = 200, body = PlanDetail)))]
    pub(super) fn show_plan_by_parts() {}

    /// The auth mode and the number of tokens.
    #[utoipa::path(get, path = "/api/v1/auth", tag = "access",
        extensions(("x-skein-role" = json!("read"))),
        responses((status = 200, body = AuthStatus)))]
    pub(super) fn auth_status() {}

    /// The workers the backlog needs (running + ready tasks, within each queue's
    /// concurrency cap, none ready in a paused queue), for an autoscaler: KEDA's
    /// `metrics-api` scaler reads `workers`. An unknown queue answers zeros.
    #[utoipa::path(get, path = "/api/v1/scale", tag = "queues",
        extensions(("x-skein-role" = json!("read"))),
        params(
            ("queue" = Option<String>, Query, description = "Only this queue (absent or empty: every queue, each within its cap)"),
            ("per_worker" = Option<u64>, Query, minimum = 1, maximum = 10000,
                description = "Task slots of one worker (1 to 10000, default 1): `workers` is ceil(tasks / per_worker)"),
        ),
        responses((status = 200, body = ScaleReply)))]
    pub(super) fn scale() {}

    /// Enqueues one task in the format existing tools send.
    #[utoipa::path(post, path = "/api/honk/tasks", tag = "tasks",
        extensions(("x-skein-role" = json!("submit"))),
        request_body = HonkBody,
        responses(
            (status = 201, description = "Enqueued", body = EnqueueReply),
            (status = 200, description = "An idempotency key returned an existing task", body = EnqueueReply),
        ))]
    pub(super) fn honk_enqueue() {}

    /// Enqueues a task, or `{"tasks": [...]}` (all or none).
    #[utoipa::path(post, path = "/api/v1/tasks", tag = "tasks",
        extensions(("x-skein-role" = json!("submit"))),
        request_body = EnqueueBody,
        responses(
            (status = 201, description = "At least one task was created", body = EnqueueReply),
            (status = 200, description = "Idempotency keys returned existing tasks only", body = EnqueueReply),
        ))]
    pub(super) fn enqueue() {}

    /// Cancels a task.
    #[utoipa::path(post, path = "/api/v1/tasks/{id}/cancel", tag = "tasks",
        extensions(("x-skein-role" = json!("submit"))),
        params(("id" = u64, Path, description = "The task's id")),
        request_body(content = Option<CancelBody>, description = "Optional: why"),
        responses((status = 200, body = TaskChanged)))]
    pub(super) fn cancel_task() {}

    /// Retries a dead or cancelled task.
    #[utoipa::path(post, path = "/api/v1/tasks/{id}/retry", tag = "tasks",
        extensions(("x-skein-role" = json!("submit"))),
        params(("id" = u64, Path, description = "The task's id")),
        responses((status = 200, body = TaskChanged)))]
    pub(super) fn retry_task() {}

    /// Stores catalog entities, all or none: `{"entities": [...]}`, or YAML documents.
    #[utoipa::path(post, path = "/api/v1/plans", tag = "plans",
        extensions(("x-skein-role" = json!("submit"))),
        request_body(content(
            (ApplyPlansBody = "application/json"),
            (String = "application/yaml"),
        )),
        responses((status = 200, body = ApplyPlansReply)))]
    pub(super) fn apply_plans() {}

    /// Enqueues plans' migrations: `refs`, `all` or a `selector`.
    #[utoipa::path(post, path = "/api/v1/plans/run", tag = "plans",
        extensions(("x-skein-role" = json!("submit"))),
        request_body = RunPlansBody,
        responses(
            (status = 201, description = "At least one run was enqueued", body = RunPlansReply),
            (status = 200, description = "Every plan's current run was returned", body = RunPlansReply),
        ))]
    pub(super) fn run_plans() {}

    /// Changes some of a queue's settings (unknown keys refused).
    #[utoipa::path(patch, path = "/api/v1/queues/{name}", tag = "queues",
        extensions(("x-skein-role" = json!("operate"))),
        params(("name" = String, Path, description = "The queue")),
        request_body = QueuePatch,
        responses((status = 200, body = Done)))]
    pub(super) fn configure_queue() {}

    /// Pauses a queue: nothing of it is leased.
    #[utoipa::path(post, path = "/api/v1/queues/{name}/pause", tag = "queues",
        extensions(("x-skein-role" = json!("operate"))),
        params(("name" = String, Path, description = "The queue")),
        responses((status = 200, body = Done)))]
    pub(super) fn pause_queue() {}

    /// Resumes a paused queue.
    #[utoipa::path(post, path = "/api/v1/queues/{name}/resume", tag = "queues",
        extensions(("x-skein-role" = json!("operate"))),
        params(("name" = String, Path, description = "The queue")),
        responses((status = 200, body = Done)))]
    pub(super) fn resume_queue() {}

    /// Retries a queue's dead tasks.
    #[utoipa::path(post, path = "/api/v1/queues/{name}/redrive", tag = "queues",
        extensions(("x-skein-role" = json!("operate"))),
        params(
            ("name" = String, Path, description = "The queue"),
            ("max" = Option<u32>, Query, minimum = 1, maximum = 10000, description = "At most this many (default 10000)"),
        ),
        responses((status = 200, body = RedriveReply)))]
    pub(super) fn redrive_queue() {}

    /// Adds a node (what `skein-node --join` asks).
    #[utoipa::path(post, path = "/api/v1/cluster/join", tag = "cluster",
        extensions(("x-skein-role" = json!("operate"))),
        request_body = JoinBody,
        responses((status = 200, body = Done)))]
    pub(super) fn join() {}

    /// Registers a worker node (what `skein-node --role worker` asks): it
    /// leases and runs tasks but is not a Raft member.
    #[utoipa::path(post, path = "/api/v1/cluster/workers", tag = "cluster",
        extensions(("x-skein-role" = json!("operate"))),
        request_body = WorkerJoinBody,
        responses((status = 200, body = WorkerJoined)))]
    pub(super) fn register_worker() {}

    /// Raises the cluster's stored format once every member reads it (the leader answers).
    #[utoipa::path(post, path = "/api/v1/cluster/finalize", tag = "cluster",
        extensions(("x-skein-role" = json!("operate"))),
        responses((status = 200, body = FinalizeReply)))]
    pub(super) fn finalize() {}

    /// Removes a node from the cluster.
    #[utoipa::path(delete, path = "/api/v1/cluster/nodes/{id}", tag = "cluster",
        extensions(("x-skein-role" = json!("operate"))),
        params(("id" = u64, Path, description = "The node's id")),
        responses((status = 200, body = Done)))]
    pub(super) fn remove_node() {}

    /// Drains a node: it is leased nothing new.
    #[utoipa::path(post, path = "/api/v1/cluster/nodes/{id}/drain", tag = "cluster",
        extensions(("x-skein-role" = json!("operate"))),
        params(("id" = u64, Path, description = "The node's id")),
        responses((status = 200, body = Done)))]
    pub(super) fn drain_node() {}

    /// A hash of this node's applied state, to compare replicas.
    #[utoipa::path(get, path = "/api/v1/admin/digest", tag = "cluster",
        extensions(("x-skein-role" = json!("operate"))),
        responses((status = 200, body = Digest)))]
    pub(super) fn digest() {}

    /// The audit trail, a page at a time.
    #[utoipa::path(get, path = "/api/v1/audit", tag = "access",
        extensions(("x-skein-role" = json!("operate"))),
        params(
            ("since_ms" = Option<u64>, Query, description = "Records at or after this time (Unix ms)"),
            ("principal" = Option<String>, Query, description = "Only this token name's (or `anonymous`)"),
            ("after" = Option<u64>, Query, description = "A previous page's `next`"),
            ("limit" = Option<u64>, Query, description = "Page size (1 to 10000, default 1000)"),
        ),
        responses((status = 200, body = AuditList)))]
    pub(super) fn audit() {}

    /// A consistent, checksummed snapshot of the whole state, taken now on the leader.
    #[utoipa::path(get, path = "/api/v1/admin/backup", tag = "cluster",
        extensions(("x-skein-role" = json!("admin"))),
        responses((status = 200, description = "The snapshot file (`skein-node --restore`)",
            content_type = "application/octet-stream", body = Vec<u8>,
            headers(("x-skein-snapshot" = String, description = "The snapshot's id")))))]
    pub(super) fn backup() {}

    /// Lists the tokens (never a secret).
    #[utoipa::path(get, path = "/api/v1/tokens", tag = "access",
        extensions(("x-skein-role" = json!("admin"))),
        responses((status = 200, body = TokenList)))]
    pub(super) fn list_tokens() {}

    /// Creates a token; its text is shown this once.
    #[utoipa::path(post, path = "/api/v1/tokens", tag = "access",
        extensions(("x-skein-role" = json!("admin"))),
        request_body = CreateTokenBody,
        responses((status = 201, body = TokenCreated)))]
    pub(super) fn create_token() {}

    /// Revokes a token.
    #[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "access",
        extensions(("x-skein-role" = json!("admin"))),
        params(("id" = String, Path, pattern = "^[0-9a-f]{16}$", description = "The token's id: 16 hex digits")),
        responses((status = 200, body = Done)))]
    pub(super) fn revoke_token() {}

    /// Replaces a token with a new one of the same role and owners.
    #[utoipa::path(post, path = "/api/v1/tokens/{id}/rotate", tag = "access",
        extensions(("x-skein-role" = json!("admin"))),
        params(("id" = String, Path, pattern = "^[0-9a-f]{16}$", description = "The token's id: 16 hex digits")),
        responses((status = 201, body = TokenCreated)))]
    pub(super) fn rotate_token() {}

    /// Sets the auth mode (`enforce` or `warn`) or the audit retention.
    #[utoipa::path(post, path = "/api/v1/auth", tag = "access",
        extensions(("x-skein-role" = json!("admin"))),
        request_body = AuthBody,
        responses((status = 200, body = AuthStatus)))]
    pub(super) fn configure_auth() {}

    /// The exec allow list and the data roots.
    #[utoipa::path(get, path = "/api/v1/policy", tag = "policy",
        extensions(("x-skein-role" = json!("read"))),
        responses((status = 200, body = PolicyView)))]
    pub(super) fn show_policy() {}

    /// Sets the policy's mode: `enforce`, or `open` (any program, any location).
    #[utoipa::path(post, path = "/api/v1/policy", tag = "policy",
        extensions(("x-skein-role" = json!("admin"))),
        request_body = PolicyModeBody,
        responses((status = 200, body = PolicyView)))]
    pub(super) fn set_policy_mode() {}

    /// Allows a program (with the leading arguments every call must start with).
    #[utoipa::path(post, path = "/api/v1/policy/exec", tag = "policy",
        extensions(("x-skein-role" = json!("admin"))),
        request_body = ExecRuleBody,
        responses((status = 200, body = PolicyView)))]
    pub(super) fn allow_exec() {}

    /// Removes a program's rule (or all of them).
    #[utoipa::path(post, path = "/api/v1/policy/exec/deny", tag = "policy",
        extensions(("x-skein-role" = json!("admin"))),
        request_body = ExecRuleBody,
        responses((status = 200, body = PolicyView)))]
    pub(super) fn deny_exec() {}

    /// Allows a data root (a local directory or an object store prefix).
    #[utoipa::path(post, path = "/api/v1/policy/roots", tag = "policy",
        extensions(("x-skein-role" = json!("admin"))),
        request_body = RootBody,
        responses((status = 200, body = PolicyView)))]
    pub(super) fn allow_root() {}

    /// Removes a data root.
    #[utoipa::path(post, path = "/api/v1/policy/roots/deny", tag = "policy",
        extensions(("x-skein-role" = json!("admin"))),
        request_body = DenyRootBody,
        responses((status = 200, body = PolicyView)))]
    pub(super) fn deny_root() {}
}

// ----- what every operation shares -------------------------------------------

/// Sets the release, the bearer scheme, and each operation's security and
/// error answers.
struct Finish;

impl Modify for Finish {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        doc.info.version = skein_raft::format::RELEASE.to_string();
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                utoipa::openapi::security::HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("skein_<id>_<secret>")
                    .description(Some("A token (`skein token create`); the dashboard sends it as a cookie"))
                    .build(),
            ),
        );
        for (path, item) in doc.paths.paths.iter_mut() {
            let ops = [
                ("get", &mut item.get),
                ("post", &mut item.post),
                ("patch", &mut item.patch),
                ("delete", &mut item.delete),
                ("put", &mut item.put),
            ];
            for (method, op) in ops {
                if let Some(op) = op.as_mut() {
                    finish_operation(path, method, op);
                }
            }
        }
    }
}

/// The role an operation declares, if any.
pub fn role_of(op: &Operation) -> Option<Role> {
    let value = op.extensions.as_ref()?.get(ROLE_EXTENSION)?;
    Role::ALL.into_iter().find(|r| value.as_str() == Some(r.name()))
}

fn finish_operation(path: &str, method: &str, op: &mut Operation) {
    let role = role_of(op);
    if role.is_some() {
        op.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
    }
    let api = path.starts_with("/api/");
    let write = method != "get";
    let has_input = op.parameters.as_ref().is_some_and(|p| !p.is_empty()) || op.request_body.is_some();
    let mut statuses: Vec<u16> = vec![500];
    // Every route but these counts against its caller's request limit
    // (`super::limits`).
    if !["/healthz", "/readyz", PATH].contains(&path) {
        statuses.push(429);
    }
    if role.is_some() {
        statuses.extend([401, 403]);
    }
    // A request that does not parse (a form too: `errors::json_rejections`).
    if has_input || (api && write) {
        statuses.push(400);
    }
    if api && (path.contains('{') || write) {
        statuses.push(404);
    }
    if api && write {
        // Through the log: refused by the state, not carried out, unknown.
        statuses.extend([409, 410, 413, 421, 503]);
    }
    // Reads that ask the leader: a lookup catching up, readiness, backups.
    if path == "/readyz" || (api && path.contains('{')) {
        statuses.push(503);
    }
    if path == "/api/v1/admin/backup" {
        statuses.extend([421, 503]);
    }
    statuses.sort_unstable();
    statuses.dedup();
    for status in statuses {
        let key = status.to_string();
        if op.responses.responses.contains_key(&key) {
            continue;
        }
        op.responses.responses.insert(key, RefOr::T(error_response(status)));
    }
    for response in op.responses.responses.values_mut() {
        if let RefOr::T(r) = response {
            r.headers.entry(crate::api::RELEASE_HEADER.to_string()).or_insert_with(|| {
                let mut h =
                    Header::new(utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::Type::String));
                h.description = Some("The answering node's release".into());
                RefOr::T(h)
            });
        }
    }
}

/// The error answer of a status: the codes it carries, in words.
fn error_response(status: u16) -> DocResponse {
    let codes: Vec<String> =
        ERROR_CODES.iter().filter(|c| c.status() == status).map(|c| format!("`{}`", c.as_str())).collect();
    let mut description = format!("Error: {}", codes.join(", "));
    if status == 429 {
        description.push_str(" (retry after the `Retry-After` header's seconds)");
    }
    let mut response = DocResponse::new(description);
    response.content.insert(
        "application/json".to_string(),
        RefOr::T(Content::new(Some(RefOr::<Schema>::Ref(Ref::from_schema_name("ErrorBody"))))),
    );
    if status == 429 {
        response.headers.insert(
            "retry-after".to_string(),
            RefOr::T(Header::new(utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::Type::Integer))),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;

    /// `(method, path, role)` of every `.route(...)` written in the router
    /// (`mod.rs`) and the dashboard's routes: the role is the group the
    /// route is written in (`let read = ...`, `fn read_routes`).
    fn router_routes() -> BTreeSet<(String, String, Option<String>)> {
        let mut routes = BTreeSet::new();
        for source in [include_str!("mod.rs"), include_str!("dashboard.rs")] {
            for (i, _) in source.match_indices(".route(\"") {
                let rest = &source[i + 8..];
                let path = &rest[..rest.find('"').expect("a closing quote")];
                let group = group_before(&source[..i]);
                let role = match group.as_str() {
                    "public" | "public_routes" => None,
                    "read" | "read_routes" | "metrics" => Some("read".to_string()),
                    other => Some(other.to_string()),
                };
                for method in methods(&rest[path.len() + 1..]) {
                    routes.insert((method, path.to_string(), role.clone()));
                }
            }
        }
        routes
    }

    /// The name of the nearest `let NAME` or `fn NAME` before `text`'s end.
    fn group_before(text: &str) -> String {
        let l = text.rfind("let ").map(|i| (i + 4, i));
        let f = text.rfind("fn ").map(|i| (i + 3, i));
        let start = match (l, f) {
            (Some(a), Some(b)) => {
                if a.1 > b.1 {
                    a.0
                } else {
                    b.0
                }
            }
            (Some(a), None) | (None, Some(a)) => a.0,
            (None, None) => panic!("a route outside any group"),
        };
        let name = text[start..].trim_start_matches("mut ");
        name.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()
    }

    /// The routing methods (`get(`, `.post(`, `axum::routing::patch(`) at
    /// the top level of a `.route("...", HERE)` call's second argument.
    fn methods(after_path: &str) -> Vec<String> {
        let mut depth = 0i32;
        let mut found = Vec::new();
        let bytes = after_path.as_bytes();
        for (i, c) in after_path.char_indices() {
            match c {
                '(' | '{' | '[' => depth += 1,
                ')' | '}' | ']' => {
                    depth -= 1;
                    if depth < 0 {
                        break;
                    }
                }
                _ => {}
            }
            if depth == 0 && c.is_ascii_alphabetic() && (i == 0 || !(bytes[i - 1] as char).is_alphanumeric()) {
                let word: String = after_path[i..].chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
                let next = after_path[i + word.len()..].chars().next();
                if ["get", "post", "patch", "delete", "put"].contains(&word.as_str()) && next == Some('(') {
                    found.push(word.to_uppercase());
                }
            }
        }
        assert!(!found.is_empty(), "no method in {:?}", &after_path[..after_path.len().min(80)]);
        found
    }

    fn document_json() -> Value {
        serde_json::from_str(&document().to_json().expect("serializes")).expect("valid JSON")
    }

    fn document_routes(doc: &Value) -> BTreeSet<(String, String, Option<String>)> {
        let mut routes = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("a path item") {
                let role = op.get(ROLE_EXTENSION).and_then(Value::as_str).map(str::to_string);
                routes.insert((method.to_uppercase(), path.clone(), role));
            }
        }
        routes
    }

    #[test]
    fn the_document_has_every_route_of_the_router_with_its_role() {
        let router = router_routes();
        assert!(router.len() >= 40, "the route parser found only {router:?}");
        assert!(router.contains(&("GET".into(), PATH.into(), None)), "the document itself is public");
        let doc = document_routes(&document_json());
        let missing: Vec<_> = router.difference(&doc).collect();
        let extra: Vec<_> = doc.difference(&router).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "routes (method, path, role) not in the document: {missing:?}; in the document, not routed: {extra:?}"
        );
    }

    #[test]
    fn every_ref_resolves_and_every_operation_is_complete() {
        let doc = document_json();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["title"], "skein");
        assert_eq!(doc["info"]["version"], skein_raft::format::RELEASE);
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        assert!(refs.len() > 40, "few $refs: {refs:?}");
        for r in &refs {
            let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("an external $ref {r}"));
            assert!(doc.pointer(pointer).is_some(), "$ref {r} does not resolve");
        }
        let mut ids = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("a path item") {
                let id = op["operationId"].as_str().expect("an operationId");
                assert!(ids.insert(id.to_string()), "operationId {id} twice");
                let responses = op["responses"].as_object().expect("responses");
                assert!(responses.keys().any(|s| s.starts_with('2') || s.starts_with('3')), "{method} {path}");
                assert!(responses.contains_key("500"), "{method} {path}");
                let secured = op.get("security").is_some();
                assert_eq!(secured, op.get(ROLE_EXTENSION).is_some(), "{method} {path}: security and role");
                if secured {
                    assert!(responses.contains_key("401") && responses.contains_key("403"), "{method} {path}");
                }
                // Each path parameter is declared.
                let declared: BTreeSet<&str> = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["in"] == "path")
                    .filter_map(|p| p["name"].as_str())
                    .collect();
                let in_path: BTreeSet<&str> =
                    path.split('/').filter_map(|s| s.strip_prefix('{')?.strip_suffix('}')).collect();
                assert_eq!(declared, in_path, "{method} {path}: path parameters");
            }
        }
        assert!(doc.pointer("/components/securitySchemes/bearer").is_some());
    }

    #[test]
    fn every_error_code_is_listed_with_its_status() {
        let doc = document_json();
        let schema = doc.pointer("/components/schemas/ErrorCode").expect("the ErrorCode schema");
        let mut named = BTreeSet::new();
        collect_enum(schema, &mut named);
        let listed: BTreeSet<String> = ERROR_CODES.iter().map(|c| c.as_str().to_string()).collect();
        named.remove("unknown"); // a newer node's code, as a client reads it
        assert_eq!(named, listed, "ERROR_CODES and ErrorCode differ");
        for c in ERROR_CODES {
            let answered = doc["paths"]
                .as_object()
                .into_iter()
                .flat_map(|p| p.values())
                .flat_map(|item| item.as_object().into_iter().flat_map(|o| o.values()))
                .any(|op| op["responses"].get(c.status().to_string()).is_some());
            assert!(answered, "no operation answers {} ({})", c.status(), c.as_str());
        }
    }

    fn collect_refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    if k == "$ref" {
                        out.extend(v.as_str().map(str::to_string));
                    } else {
                        collect_refs(v, out);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
            _ => {}
        }
    }

    fn collect_enum(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    if k == "enum" {
                        out.extend(v.as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_string));
                    } else {
                        collect_enum(v, out);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| collect_enum(v, out)),
            _ => {}
        }
    }
}
