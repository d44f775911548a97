//! The HTTP API every node serves (README.md documents each route).
//!
//! Writes go through [`App::write`], which forwards to the leader; reads
//! come from this node's applied state, which a follower may have a moment
//! behind the leader. A lookup of a task this node has not seen yet first
//! catches up with the leader (a read index), so a client that enqueued
//! through one node and reads through another sees its task.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;
use skein_raft::api::{
    ClusterNode, ClusterStatus, DependencySpec, EnqueueBody, EnqueueReply, EnqueuedTask, ErrorBody, ErrorDetail,
    FinalizeReply, HonkBody, JoinBody, QueueList, RedriveReply, RetriedTask, TaskDetail, TaskList, TaskSpec,
};
use skein_raft::config::SkeinNode;
use skein_raft::fsm::{Command, NewTask, QueuePatch, Rejection, Response, TaskId, TaskRef, TaskStatus};
use skein_transport::{JoinRequest, NodeError};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::app::{App, SharedApp};
use crate::proposer::now_ms;
use crate::versions::Finalize;

mod plans;

/// The largest request body: a batch of many tasks. One task's payload has
/// its own, smaller limit (the state machine's `max_payload_bytes`).
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 10_000;

pub fn router(app: SharedApp) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/api/honk/tasks", post(honk_enqueue))
        .route("/api/v1/tasks", post(enqueue).get(list_tasks))
        .route("/api/v1/tasks/{id}", get(show_task))
        .route("/api/v1/tasks/{id}/cancel", post(cancel_task))
        .route("/api/v1/tasks/{id}/retry", post(retry_task))
        .route("/api/v1/queues", get(list_queues))
        .route("/api/v1/queues/{name}", axum::routing::patch(configure_queue))
        .route("/api/v1/queues/{name}/pause", post(pause_queue))
        .route("/api/v1/queues/{name}/resume", post(resume_queue))
        .route("/api/v1/queues/{name}/redrive", post(redrive_queue))
        .route("/api/v1/cluster", get(cluster))
        .route("/api/v1/cluster/join", post(join))
        .route("/api/v1/cluster/finalize", post(finalize))
        .route("/api/v1/cluster/nodes/{id}", axum::routing::delete(remove_node))
        .route("/api/v1/cluster/nodes/{id}/drain", post(drain_node))
        .route("/api/v1/admin/digest", get(digest))
        .route("/api/v1/admin/backup", get(backup))
        .route("/api/v1/plans", post(plans::apply).get(plans::list))
        .route("/api/v1/plans/run", post(plans::run))
        .route("/api/v1/plans/{entity_ref}", get(plans::show_one))
        .route("/api/v1/plans/{kind}/{namespace}/{name}", get(plans::show_three))
        .merge(crate::dashboard::routes())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(with_release))
        .with_state(app)
}

/// The header every answer carries: the node's release. A client that gets
/// an answer without it talks to a 0.1.0 node, and can say so.
pub const RELEASE_HEADER: &str = "x-skein-release";

async fn with_release(mut response: HttpResponse) -> HttpResponse {
    response.headers_mut().insert(
        axum::http::HeaderName::from_static(RELEASE_HEADER),
        axum::http::HeaderValue::from_static(skein_raft::format::RELEASE),
    );
    response
}

/// Serves the API until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: SharedApp,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    info!(addr = ?addr, "http api listening");
    axum::serve(listener, router(app)).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}

// ----- errors ---------------------------------------------------------------

/// An error answer: a real status code and `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody { error: ErrorDetail { code: code.into(), message: message.into(), leader: None } },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> HttpResponse {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::NotLeader { leader, .. } => {
                let mut err = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "no leader could be reached; the cluster may be electing one or have lost its majority",
                );
                err.body.error.leader = leader.map(|l| l.http_addr);
                err
            }
            NodeError::Unavailable(m) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m),
            NodeError::Invalid(m) => ApiError::new(StatusCode::BAD_REQUEST, "invalid", m),
            NodeError::Internal(m) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", m),
            e @ NodeError::Removed(_) => ApiError::new(StatusCode::GONE, "removed", e.to_string()),
            NodeError::NeedsFormat { message, .. } => ApiError::new(StatusCode::CONFLICT, "needs_format", message),
        }
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        let (status, code) = match &r {
            Rejection::UnknownTask(_)
            | Rejection::UnknownQueue(_)
            | Rejection::UnknownNode(_)
            | Rejection::NodeRemoved(_) => (StatusCode::NOT_FOUND, "not_found"),
            Rejection::StaleToken { .. } => (StatusCode::CONFLICT, "stale_token"),
            Rejection::WrongStatus { .. } | Rejection::DependencyFailed { .. } => (StatusCode::CONFLICT, "conflict"),
            Rejection::PayloadTooLarge { .. } | Rejection::BatchTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            Rejection::QueueFull { .. } | Rejection::TooManyQueues { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "queue_full")
            }
            _ => (StatusCode::BAD_REQUEST, "invalid"),
        };
        ApiError::new(status, code, r.to_string())
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Parses a JSON body with a clear 400 instead of axum's plain-text one.
fn parse_json<T: DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    if body.is_empty() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid", "the request needs a JSON body"));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid", format!("invalid JSON body: {e}")))
}

fn parse_task_id(raw: &str) -> ApiResult<TaskId> {
    raw.parse::<u64>().map(TaskId).map_err(|_| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid", format!("task id must be a number, not {raw:?}"))
    })
}

// ----- tasks ----------------------------------------------------------------

async fn honk_enqueue(State(app): State<SharedApp>, body: Bytes) -> ApiResult<(StatusCode, Json<EnqueueReply>)> {
    let honk: HonkBody = parse_json(&body)?;
    let kind = honk.kind.unwrap_or_else(|| {
        if honk.payload.get("entity_ref").is_some() {
            "migration".into()
        } else {
            "noop".into()
        }
    });
    let spec = TaskSpec { queue: honk.queue, kind: Some(kind), payload: Some(honk.payload), ..TaskSpec::default() };
    submit(&app, vec![spec]).await
}

async fn enqueue(State(app): State<SharedApp>, body: Bytes) -> ApiResult<(StatusCode, Json<EnqueueReply>)> {
    let specs = match parse_json::<EnqueueBody>(&body)? {
        EnqueueBody::Batch { tasks } => tasks,
        EnqueueBody::One(spec) => vec![spec],
    };
    submit(&app, specs).await
}

async fn submit(app: &App, specs: Vec<TaskSpec>) -> ApiResult<(StatusCode, Json<EnqueueReply>)> {
    let limit = app.store.state().limits().max_payload_bytes as usize;
    let queues: Vec<String> = specs.iter().map(|s| s.queue.clone()).collect();
    let mut tasks = Vec::with_capacity(specs.len());
    for (index, spec) in specs.into_iter().enumerate() {
        let payload = spec.payload.unwrap_or_else(|| json!({})).to_string();
        if payload.len() > limit {
            return Err(Rejection::PayloadTooLarge { index, bytes: payload.len() as u64, limit: limit as u64 }.into());
        }
        tasks.push(NewTask {
            queue: spec.queue,
            kind: spec.kind.unwrap_or_else(|| "noop".into()),
            payload,
            priority: spec.priority,
            max_attempts: spec.max_attempts,
            delay_ms: spec.delay_ms,
            idempotency_key: spec.idempotency_key,
            depends_on: spec
                .depends_on
                .into_iter()
                .map(|d| match d {
                    DependencySpec::Id(id) => TaskRef::Id(TaskId(id)),
                    DependencySpec::Key(k) => TaskRef::Key(k),
                })
                .collect(),
        });
    }
    match app.write(Command::Enqueue { tasks }).await? {
        Response::Enqueued(out) => {
            for (e, queue) in out.iter().zip(queues) {
                if e.created {
                    crate::metrics::Metrics::count(&app.metrics.enqueued, vec![("queue", queue)], 1);
                }
            }
            let created = out.iter().any(|e| e.created);
            let tasks =
                out.into_iter().map(|e| EnqueuedTask { id: e.id, created: e.created, status: e.status }).collect();
            Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(EnqueueReply { tasks })))
        }
        Response::Rejected(r) => Err(r.into()),
        other => Err(NodeError::Internal(format!("enqueue answered with {other:?}")).into()),
    }
}

#[derive(Deserialize)]
struct ListParams {
    queue: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
    cursor: Option<u64>,
}

async fn list_tasks(State(app): State<SharedApp>, Query(p): Query<ListParams>) -> ApiResult<Json<TaskList>> {
    let status = match p.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(s.parse::<TaskStatus>().map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid", e))?),
    };
    let limit = p.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let page =
        app.store.state().tasks(p.queue.as_deref().filter(|q| !q.is_empty()), status, p.cursor.map(TaskId), limit);
    Ok(Json(TaskList { tasks: page.tasks, next_cursor: page.next }))
}

async fn show_task(State(app): State<SharedApp>, Path(id): Path<String>) -> ApiResult<Json<TaskDetail>> {
    let id = parse_task_id(&id)?;
    if app.store.state().task(id).is_none() {
        // Perhaps enqueued through another node a moment ago.
        app.catch_up().await?;
    }
    let task = app.store.state().task(id).cloned().ok_or(Rejection::UnknownTask(id))?;
    let as_json = |s: Option<String>| s.map(|s| serde_json::from_str(&s).unwrap_or(serde_json::Value::String(s)));
    let internal =
        |e: skein_raft::store::StoreError| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string());
    Ok(Json(TaskDetail {
        task,
        payload: as_json(app.store.payload(id).map_err(internal)?),
        result: as_json(app.store.result(id).map_err(internal)?),
        history: app.store.history(id).map_err(internal)?,
    }))
}

#[derive(Deserialize, Default)]
struct CancelBody {
    #[serde(default)]
    reason: String,
}

async fn cancel_task(
    State(app): State<SharedApp>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    let id = parse_task_id(&id)?;
    let reason = if body.is_empty() { String::new() } else { parse_json::<CancelBody>(&body)?.reason };
    task_change(&app, Command::Cancel { task: id, reason }).await
}

async fn retry_task(State(app): State<SharedApp>, Path(id): Path<String>) -> ApiResult<Json<serde_json::Value>> {
    let id = parse_task_id(&id)?;
    task_change(&app, Command::Retry { task: id }).await
}

async fn task_change(app: &App, command: Command) -> ApiResult<Json<serde_json::Value>> {
    match app.write(command).await? {
        Response::Task { id, status } => Ok(Json(json!({"id": id, "status": status}))),
        Response::Rejected(r) => Err(r.into()),
        other => Err(NodeError::Internal(format!("answered with {other:?}")).into()),
    }
}

// ----- queues ---------------------------------------------------------------

async fn list_queues(State(app): State<SharedApp>) -> Json<QueueList> {
    Json(QueueList { queues: app.store.state().queue_stats(now_ms()) })
}

async fn pause_queue(State(app): State<SharedApp>, Path(name): Path<String>) -> ApiResult<Json<serde_json::Value>> {
    done(app.write(Command::SetQueuePaused { queue: name, paused: true }).await?)
}

async fn resume_queue(State(app): State<SharedApp>, Path(name): Path<String>) -> ApiResult<Json<serde_json::Value>> {
    done(app.write(Command::SetQueuePaused { queue: name, paused: false }).await?)
}

async fn configure_queue(
    State(app): State<SharedApp>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Patch {
        lease_ms: Option<u64>,
        max_attempts: Option<u32>,
        backoff_base_ms: Option<u64>,
        backoff_cap_ms: Option<u64>,
        concurrency: Option<u32>,
        max_depth: Option<u64>,
        retention_ms: Option<u64>,
        stuck_expiries: Option<u32>,
        stuck_run_ms: Option<u64>,
        stuck_factor: Option<u32>,
        stuck_silence_ms: Option<u64>,
    }
    let p: Patch = parse_json(&body)?;
    let patch = QueuePatch {
        lease_ms: p.lease_ms,
        max_attempts: p.max_attempts,
        backoff_base_ms: p.backoff_base_ms,
        backoff_cap_ms: p.backoff_cap_ms,
        concurrency: p.concurrency,
        max_depth: p.max_depth,
        retention_ms: p.retention_ms,
        stuck_expiries: p.stuck_expiries,
        stuck_run_ms: p.stuck_run_ms,
        stuck_factor: p.stuck_factor,
        stuck_silence_ms: p.stuck_silence_ms,
    };
    done(app.write(Command::ConfigureQueue { queue: name, patch }).await?)
}

fn done(r: Response) -> ApiResult<Json<serde_json::Value>> {
    match r {
        Response::Done => Ok(Json(json!({}))),
        Response::Rejected(r) => Err(r.into()),
        other => Err(NodeError::Internal(format!("answered with {other:?}")).into()),
    }
}

// ----- cluster --------------------------------------------------------------

async fn cluster(State(app): State<SharedApp>) -> Json<ClusterStatus> {
    Json(cluster_status(&app))
}

pub fn cluster_status(app: &App) -> ClusterStatus {
    let m = app.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
    let state = app.store.state();
    let matched = m.replication.clone().unwrap_or_default();
    // On the leader, the commit index is the highest index a majority of
    // voters has; a follower does not know it.
    let commit_index = m.replication.as_ref().map(|r| {
        let mut idx: Vec<u64> = voters
            .iter()
            .map(|v| {
                if *v == app.id {
                    m.last_log_index.unwrap_or(0)
                } else {
                    r.get(v).cloned().flatten().map_or(0, |l| l.index)
                }
            })
            .collect();
        idx.sort_unstable_by(|a, b| b.cmp(a));
        idx.get(voters.len() / 2).copied().unwrap_or(0)
    });
    let versions = app.member_versions();
    let nodes = membership
        .nodes()
        .map(|(id, node)| {
            let info = state.nodes().get(id);
            let heard = versions.get(id).cloned().flatten();
            ClusterNode {
                id: *id,
                rpc_addr: node.rpc_addr.clone(),
                http_addr: node.http_addr.clone(),
                role: if m.current_leader == Some(*id) {
                    "leader"
                } else if voters.contains(id) {
                    "voter"
                } else {
                    "learner"
                }
                .into(),
                matched_index: if *id == app.id {
                    m.last_log_index
                } else {
                    matched.get(id).cloned().flatten().map(|l| l.index)
                },
                slots: info.map(|i| i.slots),
                leases_held: state.lease_count(*id) as u64,
                draining: info.is_some_and(|i| i.draining),
                last_heartbeat_ms: info.map(|i| i.last_heartbeat_ms),
                release: heard.as_ref().and_then(|r| r.release()),
                format: heard.as_ref().map(|r| r.format()),
            }
        })
        .collect();
    ClusterStatus {
        node_id: app.id,
        leader: m.current_leader,
        term: m.current_term,
        commit_index,
        applied_index: m.last_applied.map(|l| l.index),
        nodes,
        format: Some(state.format()),
        release: Some(skein_raft::format::RELEASE.to_string()),
    }
}

/// `skein cluster finalize`: asks every member its version now, and raises
/// the cluster's stored format once all of them read the newest one. On the
/// leader only (a follower answers 421 with the leader), so that the check
/// and the proposal are one node's view.
async fn finalize(State(app): State<SharedApp>) -> ApiResult<Json<FinalizeReply>> {
    if !app.is_leader() {
        let mut err = ApiError::new(StatusCode::MISDIRECTED_REQUEST, "not_leader", "the leader finalizes: ask it");
        err.body.error.leader = app.leader().map(|(_, node)| node.http_addr);
        return Err(err);
    }
    let members = app.ask_member_versions().await;
    let cluster = app.store.state().format();
    match crate::versions::finalize_decision(cluster, skein_raft::format::LATEST, &members) {
        Finalize::AlreadyAt(format) => Ok(Json(FinalizeReply { format, changed: false })),
        Finalize::Upgrade(behind) => {
            let names: Vec<String> = behind.iter().map(|(id, what)| format!("node {id} {what}")).collect();
            Err(ApiError::new(
                StatusCode::CONFLICT,
                "upgrade_needed",
                format!(
                    "not finalized: every member must run skein {} or later first; {}. Nothing changed: the \
                     cluster stays at format {cluster}, readable by the older release",
                    skein_raft::format::release_of(skein_raft::format::LATEST),
                    names.join(", ")
                ),
            ))
        }
        Finalize::Raise(format) => {
            info!(from = cluster, to = format, "finalizing the upgrade: raising the stored format");
            app.raise_format(format).await?;
            Ok(Json(FinalizeReply { format, changed: true }))
        }
    }
}

#[derive(Deserialize)]
struct RedriveQuery {
    max: Option<u32>,
}

/// The most dead tasks one redrive retries, and its default.
const MAX_REDRIVE: u32 = 10_000;

async fn redrive_queue(
    State(app): State<SharedApp>,
    Path(name): Path<String>,
    Query(q): Query<RedriveQuery>,
) -> ApiResult<Json<RedriveReply>> {
    let max = q.max.unwrap_or(MAX_REDRIVE);
    if max == 0 || max > MAX_REDRIVE {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid", format!("max must be 1 to {MAX_REDRIVE}")));
    }
    match app.write(Command::RedriveQueue { queue: name, max }).await? {
        Response::Batch(each) => {
            let mut reply = RedriveReply { tasks: Vec::new(), refused: Vec::new() };
            for r in each {
                match r {
                    Response::Task { id, status } => reply.tasks.push(RetriedTask { id, status }),
                    Response::Rejected(why) => reply.refused.push(why.to_string()),
                    other => return Err(NodeError::Internal(format!("redrive answered with {other:?}")).into()),
                }
            }
            Ok(Json(reply))
        }
        Response::Rejected(r) => Err(r.into()),
        other => Err(NodeError::Internal(format!("redrive answered with {other:?}")).into()),
    }
}

async fn join(State(app): State<SharedApp>, body: Bytes) -> ApiResult<Json<serde_json::Value>> {
    let j: JoinBody = parse_json(&body)?;
    app.join(JoinRequest { id: j.id, node: SkeinNode { rpc_addr: j.rpc_addr, http_addr: j.http_addr } }).await?;
    Ok(Json(json!({})))
}

fn parse_node_id(raw: &str) -> ApiResult<u64> {
    raw.parse::<u64>().map_err(|_| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid", format!("node id must be a number, not {raw:?}"))
    })
}

async fn drain_node(State(app): State<SharedApp>, Path(id): Path<String>) -> ApiResult<Json<serde_json::Value>> {
    let id = parse_node_id(&id)?;
    if app.raft.metrics().borrow().membership_config.membership().get_node(&id).is_none() {
        return Err(Rejection::UnknownNode(id).into());
    }
    done(app.write(Command::DrainNode { node: id, draining: true }).await?)
}

async fn remove_node(State(app): State<SharedApp>, Path(id): Path<String>) -> ApiResult<Json<serde_json::Value>> {
    let id = parse_node_id(&id)?;
    app.leave(id).await?;
    Ok(Json(json!({})))
}

async fn readyz(State(app): State<SharedApp>) -> HttpResponse {
    let m = app.raft.metrics().borrow().clone();
    match (m.current_leader, m.last_applied) {
        (Some(leader), Some(applied)) => {
            Json(json!({"status": "ready", "leader": leader, "applied_index": applied.index})).into_response()
        }
        _ => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "no leader known yet, or nothing applied")
            .into_response(),
    }
}

/// A hash of the applied state, for comparing replicas: equal digests at
/// equal applied indexes mean identical state machines.
async fn digest(State(app): State<SharedApp>) -> ApiResult<Json<serde_json::Value>> {
    let (applied, digest) = app
        .store
        .digest_at()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok(Json(json!({"node_id": app.id, "applied_index": applied, "digest": format!("{digest:016x}")})))
}

/// How long a backup may wait for the leader's snapshot to be written.
const BACKUP_SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(300);

/// `GET /api/v1/admin/backup`: the replicated state as one consistent,
/// checksummed snapshot file (payloads, results and histories included),
/// taken now on the leader while the cluster runs. A follower answers
/// `not_leader` naming the leader (the CLI follows it). `skein-node
/// --restore FILE --bootstrap` starts a new cluster from it.
async fn backup(State(app): State<SharedApp>) -> ApiResult<HttpResponse> {
    if !app.is_leader() {
        let mut err =
            ApiError::new(StatusCode::MISDIRECTED_REQUEST, "not_leader", "backups are taken on the leader: ask it");
        err.body.error.leader = app.leader().map(|(_, node)| node.http_addr);
        return Err(err);
    }
    app.snapshot_now(BACKUP_SNAPSHOT_TIMEOUT).await?;
    let internal = |e: String| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e);
    let (meta, file) = app
        .store
        .current_snapshot()
        .map_err(|e| internal(e.to_string()))?
        .ok_or_else(|| internal("no snapshot after building one".into()))?;
    let len = file.metadata().map_err(|e| internal(format!("reading the snapshot: {e}")))?.len();
    info!(snapshot = %meta, bytes = len, "sending a backup");
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file)));
    let headers = [
        (axum::http::header::CONTENT_TYPE, "application/octet-stream".to_string()),
        (axum::http::header::CONTENT_LENGTH, len.to_string()),
        (axum::http::HeaderName::from_static("x-skein-snapshot"), meta.snapshot_id.clone()),
    ];
    Ok((headers, body).into_response())
}

impl App {
    /// Waits until this node has applied everything the leader had
    /// committed when asked (a linearizable read barrier), for at most a few
    /// seconds.
    pub async fn catch_up(&self) -> Result<(), NodeError> {
        let index = match self.leader() {
            Some((id, _)) if id == self.id => return Ok(()),
            Some((_, node)) => {
                self.peers.read_index(&node.rpc_addr).await.map_err(|e| NodeError::Unavailable(e.to_string()))?
            }
            None => return Err(NodeError::Unavailable("no leader known".into())),
        };
        self.raft
            .wait(Some(Duration::from_secs(3)))
            .applied_index_at_least(Some(index), "read barrier")
            .await
            .map_err(|e| NodeError::Unavailable(format!("catching up with the leader: {e}")))?;
        Ok(())
    }
}
