//! The plan catalog's routes (README.md documents them):
//!
//! - `POST /api/v1/plans`: store entities, all or none. The body is
//!   `{"entities": [...]}` (JSON documents), or YAML (one or more
//!   `catalog-info.yaml` documents) with `Content-Type: application/yaml`;
//! - `GET /api/v1/plans?owner=&label=k=v,k2=v2&plans_only=true`: list;
//! - `GET /api/v1/plans/{ref}` or `/api/v1/plans/{kind}/{namespace}/{name}`;
//! - `POST /api/v1/plans/run`: enqueue plans' migrations.
//!
//! Entities are checked here with `skein-plan` (every field, every error
//! reported) and against the catalog as this node sees it; the state
//! machine checks references and cycles again, authoritatively.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use skein_plan::{Catalog, Entity, EntityRef, PlanErrors};
use skein_raft::api::{ApplyPlansReply, ErrorCode, PlanDetail, PlanList, PlanSummary, RunPlansBody, RunPlansReply};
use skein_raft::fsm::{CatalogEntry, Command, NewEntity, PlanRun, Rejection, Response, TaskStatus};
use skein_transport::NodeError;

use crate::api::auth::Who;
use crate::api::errors::{parse_json, ApiError, ApiResult};
use crate::cluster::app::SharedApp;
use crate::views::runs;

/// The queue of plans that name none.
pub const DEFAULT_QUEUE: &str = "dataset-migrations";

pub async fn apply(
    State(app): State<SharedApp>,
    Extension(who): Extension<Who>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<ApplyPlansReply>> {
    if body.is_empty() {
        return Err(ApiError::new(
            ErrorCode::Invalid,
            "the request needs a body: {\"entities\": [...]} or YAML documents",
        ));
    }
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    let is_json = content_type.contains("json") || (!content_type.contains("yaml") && body.first() == Some(&b'{'));
    let parsed = if is_json {
        let body: skein_raft::api::ApplyPlansBody = parse_json(&body)?;
        skein_plan::entities_from_items(
            body.entities.into_iter().enumerate().map(|(i, v)| (v, format!("entities[{i}]"))),
        )
    } else {
        let text =
            std::str::from_utf8(&body).map_err(|_| ApiError::new(ErrorCode::Invalid, "the YAML body is not UTF-8"))?;
        skein_plan::parse_yaml(text, "body")
    };
    let entities = parsed.map_err(invalid)?;
    if entities.is_empty() {
        return Err(ApiError::new(ErrorCode::Invalid, "no entities in the request"));
    }
    skein_plan::validate_set(&entities, &catalog_graph(&app)).map_err(invalid)?;
    {
        let state = app.store.state();
        for e in &entities {
            crate::policy::check_entity(state.policy(), e).map_err(|m| ApiError::new(ErrorCode::Forbidden, m))?;
        }
    }
    let new: Vec<NewEntity> = entities.iter().map(new_entity).collect::<Result<_, _>>().map_err(invalid)?;
    match app.write_as(who.caller, Command::ApplyPlans { entities: new }).await? {
        Response::PlansApplied(entities) => {
            Ok(Json(ApplyPlansReply { entities: entities.into_iter().map(Into::into).collect() }))
        }
        Response::Rejected(r) => Err(rejection(r)),
        other => Err(NodeError::Internal(format!("apply plans answered with {other:?}")).into()),
    }
}

#[derive(Deserialize, Default)]
pub struct ListParams {
    owner: Option<String>,
    /// `k=v,k2=v2`: every label must match.
    label: Option<String>,
    #[serde(default)]
    plans_only: bool,
}

pub async fn list(State(app): State<SharedApp>, Query(p): Query<ListParams>) -> ApiResult<Json<PlanList>> {
    let labels = parse_labels(p.label.as_deref().unwrap_or(""))?;
    let state = app.store.state();
    let plans = if p.owner.is_some() || !labels.is_empty() || p.plans_only {
        state
            .select_plans(p.owner.as_deref().filter(|o| !o.is_empty()), &labels)
            .into_iter()
            .map(|c| summary(&state, c, None))
            .collect()
    } else {
        state.catalog().map(|c| summary(&state, c, None)).collect()
    };
    Ok(Json(PlanList { plans }))
}

pub async fn show_one(State(app): State<SharedApp>, Path(r): Path<String>) -> ApiResult<Json<PlanDetail>> {
    show(&app, &r).await
}

pub async fn show_three(
    State(app): State<SharedApp>,
    Path((kind, namespace, name)): Path<(String, String, String)>,
) -> ApiResult<Json<PlanDetail>> {
    show(&app, &format!("{kind}:{namespace}/{name}")).await
}

async fn show(app: &SharedApp, raw: &str) -> ApiResult<Json<PlanDetail>> {
    let r = parse_ref(raw)?;
    if app.store.state().catalog_entry(&r).is_none() {
        app.catch_up().await?;
    }
    let state = app.store.state();
    let entry = state.catalog_entry(&r).ok_or_else(|| rejection(Rejection::UnknownEntity(r.clone())))?;
    let entity = serde_json::from_str(&entry.entity.document).unwrap_or(serde_json::Value::Null);
    // The detail adds the rows written: a read per finished partition.
    let rows = |id| partition_rows(app, id);
    Ok(Json(PlanDetail { summary: summary(&state, entry, Some(&rows)), entity }))
}

pub async fn run(
    State(app): State<SharedApp>,
    Extension(who): Extension<Who>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<RunPlansReply>)> {
    let body: RunPlansBody = parse_json(&body)?;
    let chosen = [!body.refs.is_empty(), body.all, body.selector.is_some()].iter().filter(|b| **b).count();
    if chosen != 1 {
        return Err(ApiError::new(ErrorCode::Invalid, "give exactly one of refs, all or selector"));
    }
    let refs: Vec<String> = if !body.refs.is_empty() {
        body.refs.iter().map(|r| parse_ref(r)).collect::<Result<_, _>>()?
    } else {
        let sel = body.selector.clone().unwrap_or_default();
        let labels: Vec<(String, String)> = sel.labels.into_iter().collect();
        let state = app.store.state();
        state.select_plans(sel.owner.as_deref(), &labels).into_iter().map(|c| c.entity.entity_ref.clone()).collect()
    };
    if refs.is_empty() {
        return Err(ApiError::new(ErrorCode::NotFound, "no plan in the catalog matches"));
    }
    check_runnable(&app, &refs)?;
    if let Some(index) = body.partition {
        let [r] = refs.as_slice() else {
            return Err(ApiError::new(ErrorCode::Invalid, "partition: give exactly one plan"));
        };
        let run = rerun_partition(&app, &who, r, index).await?;
        return Ok((StatusCode::OK, Json(RunPlansReply { runs: vec![run.into()] })));
    }
    let queue = body.queue.clone().unwrap_or_else(|| DEFAULT_QUEUE.to_string());
    let command = Command::RunPlans { refs, force: body.force, default_queue: queue.clone(), priority: body.priority };
    match app.write_as(who.caller, command).await? {
        Response::PlansRun(runs) => {
            // The tasks a run enqueued count like any other (node-local):
            // each in its plan's queue, else the run's default.
            {
                let state = app.store.state();
                for r in runs.iter().filter(|r| r.created) {
                    let q = state
                        .catalog_entry(&r.entity_ref)
                        .and_then(|c| c.entity.queue.clone())
                        .unwrap_or_else(|| queue.clone());
                    crate::metrics::Metrics::count(&app.metrics.enqueued, vec![("queue", q)], 1);
                }
            }
            // A partitioned run that failed is resumed, not redone: its
            // failed partitions run again, the others are kept.
            for r in runs.iter().filter(|r| !r.created && !body.force) {
                resume_partitioned(&app, &who, r.task).await?;
            }
            let created = runs.iter().any(|r| r.created);
            Ok((
                if created { StatusCode::CREATED } else { StatusCode::OK },
                Json(RunPlansReply { runs: runs.into_iter().map(Into::into).collect() }),
            ))
        }
        Response::Rejected(r) => Err(rejection(r)),
        other => Err(NodeError::Internal(format!("run plans answered with {other:?}")).into()),
    }
}

/// The rows a succeeded partition task wrote, from its result.
fn partition_rows(app: &SharedApp, id: skein_raft::fsm::TaskId) -> Option<u64> {
    let text = app.store.result(id).ok().flatten()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("partition")?.get("rows")?.as_u64()
}

/// Runs partition `index` of `entity_ref`'s newest run again (it failed),
/// and makes the run's commit wait for it again.
async fn rerun_partition(app: &SharedApp, who: &Who, entity_ref: &str, index: u32) -> ApiResult<PlanRun> {
    let (planner, key) = {
        let state = app.store.state();
        let entry =
            state.catalog_entry(entity_ref).ok_or_else(|| rejection(Rejection::UnknownEntity(entity_ref.into())))?;
        let planner = state.plan_task(entry).ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotFound,
                format!("{entity_ref} has no run to resume: run it first (skein plan run {entity_ref})"),
            )
        })?;
        let key = runs::partition_key(&entry.run_key(entry.generation), index);
        let Some(part) = state.task_by_key(&key) else {
            let total = runs::run_partitions(&state, planner, 0, None).map(|r| r.total);
            return Err(ApiError::new(
                ErrorCode::NotFound,
                match total {
                    Some(n) => format!(
                        "{entity_ref}'s newest run has no partition {index} (it has {n}: 0 to {})",
                        n.saturating_sub(1)
                    ),
                    None => format!(
                        "{entity_ref}'s newest run has no partitions (it is not partitioned, or not planned yet)"
                    ),
                },
            ));
        };
        match part.status {
            TaskStatus::Dead | TaskStatus::Cancelled => {}
            TaskStatus::Succeeded => {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    format!("partition {index} of {entity_ref} succeeded (task {}); a whole new run: skein plan run {entity_ref} --force", part.id),
                ))
            }
            s => {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    format!("partition {index} of {entity_ref} is {s} (task {}): it runs already", part.id),
                ))
            }
        }
        (
            PlanRun {
                entity_ref: entity_ref.into(),
                generation: entry.generation,
                task: planner.id,
                created: false,
                status: planner.status,
                requested: true,
            },
            key,
        )
    };
    let retries = {
        let state = app.store.state();
        let mut cmds = Vec::new();
        if let Some(part) = state.task_by_key(&key) {
            cmds.push(Command::Retry { task: part.id });
        }
        cmds.extend(commit_retries(&state, planner.task));
        cmds
    };
    retry_all(app, who, retries).await?;
    Ok(planner)
}

/// Resumes a partitioned run whose partitions failed: every failed
/// partition runs again, the rest is kept. Nothing for other runs.
async fn resume_partitioned(app: &SharedApp, who: &Who, planner: skein_raft::fsm::TaskId) -> ApiResult<()> {
    let retries = {
        let state = app.store.state();
        let Some(p) = state.task(planner) else { return Ok(()) };
        let Some(key) = p.idempotency_key.as_deref() else { return Ok(()) };
        let Some(commit) = state.task_by_key(&runs::commit_key(key)) else { return Ok(()) };
        if !matches!(commit.status, TaskStatus::Dead | TaskStatus::Cancelled) {
            return Ok(());
        }
        let mut cmds: Vec<Command> = runs::partition_tasks(&state, commit)
            .into_iter()
            .filter(|t| matches!(t.status, TaskStatus::Dead | TaskStatus::Cancelled))
            .map(|t| Command::Retry { task: t.id })
            .collect();
        cmds.extend(commit_retries(&state, planner));
        cmds
    };
    retry_all(app, who, retries).await
}

/// Retries of a run's ended barriers, then of its commit, in that order
/// (a retried task waits on its dependencies again).
fn commit_retries(state: &skein_raft::fsm::StateMachine, planner: skein_raft::fsm::TaskId) -> Vec<Command> {
    let mut out = Vec::new();
    let Some(key) = state.task(planner).and_then(|p| p.idempotency_key.clone()) else { return out };
    let Some(commit) = state.task_by_key(&runs::commit_key(&key)) else { return out };
    let ended = |s: TaskStatus| matches!(s, TaskStatus::Dead | TaskStatus::Cancelled);
    for dep in &commit.depends_on {
        if let Some(b) = state.task(*dep).filter(|t| runs::is_barrier(t) && ended(t.status)) {
            out.push(Command::Retry { task: b.id });
        }
    }
    if ended(commit.status) {
        out.push(Command::Retry { task: commit.id });
    }
    out
}

async fn retry_all(app: &SharedApp, who: &Who, cmds: Vec<Command>) -> ApiResult<()> {
    if cmds.is_empty() {
        return Ok(());
    }
    match app.write_as(who.caller.clone(), Command::Batch(cmds)).await? {
        Response::Batch(answers) => {
            for a in answers {
                if let Response::Rejected(r) = a {
                    return Err(rejection(r));
                }
            }
            Ok(())
        }
        Response::Rejected(r) => Err(rejection(r)),
        other => Err(NodeError::Internal(format!("retrying the run's partitions answered with {other:?}")).into()),
    }
}

/// Refuses (403) running a plan, or a plan it depends on, that the policy
/// (changed since the plan was applied, perhaps) no longer allows.
fn check_runnable(app: &SharedApp, refs: &[String]) -> ApiResult<()> {
    let state = app.store.state();
    let policy = state.policy();
    if !policy.enforce {
        return Ok(());
    }
    let mut todo: Vec<String> = refs.to_vec();
    let mut seen = std::collections::BTreeSet::new();
    while let Some(r) = todo.pop() {
        if !seen.insert(r.clone()) {
            continue;
        }
        let Some(entry) = state.catalog_entry(&r) else { continue };
        crate::policy::check_document(policy, &entry.entity.document, &r)
            .map_err(|m| ApiError::new(ErrorCode::Forbidden, m))?;
        todo.extend(entry.entity.depends_on.iter().cloned());
    }
    Ok(())
}

/// A reference as typed (`name`, `ns/name`, `kind:ns/name`, any case) in
/// canonical form; the kind defaults to `component`.
fn parse_ref(raw: &str) -> ApiResult<String> {
    EntityRef::parse(raw, Some("component"))
        .map(|r| r.to_string())
        .map_err(|e| ApiError::new(ErrorCode::Invalid, e.to_string()))
}

fn parse_labels(raw: &str) -> ApiResult<Vec<(String, String)>> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => Ok((k.trim().to_string(), v.trim().to_string())),
            None => Err(ApiError::new(ErrorCode::Invalid, format!("label {kv:?} must be key=value"))),
        })
        .collect()
}

/// What the state machine stores of an entity.
fn new_entity(e: &Entity) -> Result<NewEntity, PlanErrors> {
    Ok(NewEntity {
        entity_ref: e.entity_ref().to_string(),
        is_plan: e.is_plan(),
        queue: e.queue(),
        owner: e.owner(),
        labels: e.metadata.labels.clone(),
        depends_on: e.depends_on()?.iter().map(ToString::to_string).collect(),
        document: e.to_json(),
    })
}

/// The catalog's dependency graph as this node sees it.
fn catalog_graph(app: &SharedApp) -> Catalog {
    let state = app.store.state();
    state
        .catalog()
        .filter_map(|c| {
            let r: EntityRef = c.entity.entity_ref.parse().ok()?;
            let deps = c.entity.depends_on.iter().filter_map(|d| d.parse().ok()).collect();
            Some((r, deps))
        })
        .collect::<BTreeMap<_, _>>()
}

/// `rows`: how to read a partition task's rows written (a read of its
/// result), for a plan's detail; `None` in listings.
fn summary(
    state: &skein_raft::fsm::StateMachine,
    c: &CatalogEntry,
    rows: Option<&dyn Fn(skein_raft::fsm::TaskId) -> Option<u64>>,
) -> PlanSummary {
    PlanSummary {
        entity_ref: c.entity.entity_ref.clone(),
        is_plan: c.entity.is_plan,
        queue: c.entity.queue.clone(),
        owner: c.entity.owner.clone(),
        labels: c.entity.labels.clone(),
        depends_on: c.entity.depends_on.clone(),
        revision: c.revision,
        generation: c.generation,
        updated_ms: c.updated_ms,
        task: state.plan_task(c).cloned(),
        partitions: state.plan_task(c).and_then(|t| runs::run_partitions(state, t, state.clock_ms(), rows)),
    }
}

fn invalid(errors: PlanErrors) -> ApiError {
    ApiError::new(ErrorCode::Invalid, errors.to_string())
}

fn rejection(r: Rejection) -> ApiError {
    match r {
        Rejection::UnknownEntity(_) => ApiError::new(ErrorCode::NotFound, r.to_string()),
        other => other.into(),
    }
}
