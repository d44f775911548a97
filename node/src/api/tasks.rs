//! `/api/v1/tasks` (and the seed's `POST /api/honk/tasks`): enqueue, list,
//! show, cancel, retry.

use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use skein_raft::api::{
    DependencySpec, EnqueueBody, EnqueueReply, EnqueuedTask, ErrorCode, HonkBody, TaskDetail, TaskList, TaskSpec,
};
use skein_raft::fsm::{Command, NewTask, Rejection, Response, TaskId, TaskRef, TaskStatus};
use skein_transport::NodeError;

use crate::api::auth::Who;
use crate::api::errors::{parse_json, parse_task_id, ApiError, ApiResult};
use crate::cluster::app::{App, SharedApp};

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 10_000;

pub async fn honk_enqueue(
    State(app): State<SharedApp>,
    Extension(who): Extension<Who>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<EnqueueReply>)> {
    let honk: HonkBody = parse_json(&body)?;
    let kind = honk.kind.unwrap_or_else(|| {
        if honk.payload.get("entity_ref").is_some() {
            "migration".into()
        } else {
            "noop".into()
        }
    });
    let spec = TaskSpec { queue: honk.queue, kind: Some(kind), payload: Some(honk.payload), ..TaskSpec::default() };
    submit(&app, &who, vec![spec]).await
}

pub async fn enqueue(
    State(app): State<SharedApp>,
    Extension(who): Extension<Who>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<EnqueueReply>)> {
    let specs = match parse_json::<EnqueueBody>(&body)? {
        EnqueueBody::Batch { tasks } => tasks,
        EnqueueBody::One(spec) => vec![spec],
    };
    submit(&app, &who, specs).await
}

async fn submit(app: &App, who: &Who, specs: Vec<TaskSpec>) -> ApiResult<(StatusCode, Json<EnqueueReply>)> {
    let mut owners: Vec<&str> = specs.iter().filter_map(|s| s.owner.as_deref()).collect();
    owners.dedup();
    if owners.len() > 1 || (!owners.is_empty() && specs.iter().any(|s| s.owner.is_none())) {
        return Err(ApiError::new(ErrorCode::Invalid, "the tasks of one request must all have the same owner"));
    }
    let owner = owners.first().map(|o| o.to_string()).or_else(|| who.owners.first().cloned());
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
    check_policy(app, &tasks)?;
    match app.write_as(who.caller, enqueue_command(app, tasks, owner)).await? {
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

/// Refuses (403) an `exec` task whose program is not allowed, and a
/// `migration` task whose plan reads, writes or runs what is not.
fn check_policy(app: &App, tasks: &[NewTask]) -> ApiResult<()> {
    let state = app.store.state();
    let policy = state.policy();
    let forbidden = |m: String| ApiError::new(ErrorCode::Forbidden, m);
    crate::policy::check_tasks(policy, tasks).map_err(forbidden)?;
    if !policy.enforce {
        return Ok(());
    }
    for t in tasks.iter().filter(|t| t.kind == skein_raft::fsm::catalog::MIGRATION_KIND) {
        let plan = serde_json::from_str::<serde_json::Value>(&t.payload)
            .ok()
            .and_then(|p| p.get("entity_ref").and_then(|r| r.as_str()).map(str::to_string));
        if let Some(entry) = plan.and_then(|r| state.catalog_entry(&r)) {
            crate::policy::check_document(policy, &entry.entity.document, &entry.entity.entity_ref)
                .map_err(forbidden)?;
        }
    }
    Ok(())
}

/// `EnqueueOwned` once the cluster's format has it, else the plain enqueue.
fn enqueue_command(app: &App, tasks: Vec<NewTask>, owner: Option<String>) -> Command {
    if app.store.state().format() >= 3 {
        Command::EnqueueOwned { tasks, owner }
    } else {
        Command::Enqueue { tasks }
    }
}

#[derive(Deserialize)]
pub struct ListParams {
    queue: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
    cursor: Option<u64>,
}

pub async fn list_tasks(State(app): State<SharedApp>, Query(p): Query<ListParams>) -> ApiResult<Json<TaskList>> {
    let status = match p.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(s.parse::<TaskStatus>().map_err(|e| ApiError::new(ErrorCode::Invalid, e))?),
    };
    let limit = p.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let page =
        app.store.state().tasks(p.queue.as_deref().filter(|q| !q.is_empty()), status, p.cursor.map(TaskId), limit);
    Ok(Json(TaskList { tasks: page.tasks, next_cursor: page.next }))
}

pub async fn show_task(State(app): State<SharedApp>, Path(id): Path<String>) -> ApiResult<Json<TaskDetail>> {
    let id = parse_task_id(&id)?;
    if app.store.state().task(id).is_none() {
        // Perhaps enqueued through another node a moment ago.
        app.catch_up().await?;
    }
    let task = app.store.state().task(id).cloned().ok_or(Rejection::UnknownTask(id))?;
    let as_json = |s: Option<String>| s.map(|s| serde_json::from_str(&s).unwrap_or(serde_json::Value::String(s)));
    let internal = |e: skein_raft::store::StoreError| ApiError::new(ErrorCode::Internal, e.to_string());
    Ok(Json(TaskDetail {
        task,
        payload: as_json(app.store.payload(id).map_err(internal)?),
        result: as_json(app.store.result(id).map_err(internal)?),
        history: app.store.history(id).map_err(internal)?,
    }))
}

#[derive(Deserialize, Default)]
pub struct CancelBody {
    #[serde(default)]
    reason: String,
}

pub async fn cancel_task(
    State(app): State<SharedApp>,
    Extension(who): Extension<Who>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    let id = parse_task_id(&id)?;
    let reason = if body.is_empty() { String::new() } else { parse_json::<CancelBody>(&body)?.reason };
    task_change(&app, &who, Command::Cancel { task: id, reason }).await
}

pub async fn retry_task(
    State(app): State<SharedApp>,
    Extension(who): Extension<Who>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let id = parse_task_id(&id)?;
    task_change(&app, &who, Command::Retry { task: id }).await
}

async fn task_change(app: &App, who: &Who, command: Command) -> ApiResult<Json<serde_json::Value>> {
    match app.write_as(who.caller, command).await? {
        Response::Task { id, status } => Ok(Json(json!({"id": id, "status": status}))),
        Response::Rejected(r) => Err(r.into()),
        other => Err(NodeError::Internal(format!("answered with {other:?}")).into()),
    }
}
