//! What people look at: the web dashboard at `/` (plain HTML, CSS and JS
//! embedded in the binary: no build step, nothing fetched from elsewhere),
//! the JSON it polls (`/api/v1/overview`, one request per refresh), stuck
//! tasks (`/api/v1/stuck`) and Prometheus metrics (`/metrics`).
//!
//! Reads come from this node's applied state, like every read of the API.
//! The state lock is held only to copy what an answer needs; payloads (for
//! the datasets' names and owners) are read from RocksDB after it is released.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;
use skein_raft::api::{ErrorBody, ErrorDetail, NodeView, Overview, PlanProgress, StuckList, StuckRow, TaskRow};
use skein_raft::fsm::{StateMachine, Task, TaskStatus};

use crate::app::{App, SharedApp};
use crate::proposer::now_ms;

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const DASHBOARD_JS: &str = include_str!("dashboard/dashboard.js");
const DASHBOARD_CSS: &str = include_str!("dashboard/dashboard.css");

/// Rows of the status table when the request does not say.
const DEFAULT_ROWS: usize = 500;
const MAX_ROWS: usize = 5_000;
/// With an owner or plan filter, at most this many tasks are looked at
/// (each needs its payload read); past it the answer says `truncated`.
const SCAN_CAP: usize = 20_000;
/// Heartbeat ages for a node's health: within 3 heartbeats `ok`, within 10 `late`.
const HEALTH_OK_MS: u64 = 3_000;
const HEALTH_LATE_MS: u64 = 10_000;

/// The dashboard's routes, merged into the API's router.
pub fn routes() -> Router<SharedApp> {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/dashboard.js", get(|| async { asset("text/javascript; charset=utf-8", DASHBOARD_JS) }))
        .route("/dashboard.css", get(|| async { asset("text/css; charset=utf-8", DASHBOARD_CSS) }))
        .route("/api/v1/overview", get(overview))
        .route("/api/v1/stuck", get(stuck))
        .route("/metrics", get(metrics))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

async fn metrics(State(app): State<SharedApp>) -> Response {
    match app.metrics.render(&app) {
        Ok(text) => ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "encoding the metrics failed").into_response(),
    }
}

#[derive(Debug, Default, Deserialize)]
struct OverviewParams {
    queue: Option<String>,
    status: Option<String>,
    owner: Option<String>,
    /// An entity reference: only tasks that migrate it.
    plan: Option<String>,
    limit: Option<usize>,
    /// `false` skips the stuck-task scan (`skein watch` does not need it).
    stuck: Option<bool>,
}

fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

async fn overview(State(app): State<SharedApp>, Query(p): Query<OverviewParams>) -> Response {
    let status = match nonempty(&p.status).map(str::parse::<TaskStatus>) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(message)) => {
            let body = ErrorBody { error: ErrorDetail { code: "invalid".into(), message, leader: None } };
            return (StatusCode::BAD_REQUEST, Json(body)).into_response();
        }
    };
    Json(build_overview(&app, &p, status)).into_response()
}

fn build_overview(app: &App, p: &OverviewParams, status: Option<TaskStatus>) -> Overview {
    let now = now_ms();
    let queue = nonempty(&p.queue);
    let owner = nonempty(&p.owner).map(str::to_string);
    let plan = nonempty(&p.plan).map(|r| r.to_ascii_lowercase());
    let limit = p.limit.unwrap_or(DEFAULT_ROWS).min(MAX_ROWS);
    let filtered = owner.is_some() || plan.is_some();
    let cluster = crate::http::cluster_status(app);

    // Under the state lock: copy what the answer needs, nothing more.
    let (queues, totals, candidates, more, plans, plan_owners, stuck, heartbeats) = {
        let state = app.store.state();
        let queues = state.queue_stats(now);
        let totals = state.total_counts();
        let want = if filtered { SCAN_CAP } else { limit };
        let page = state.tasks(queue, status, None, want);
        let more = page.next.is_some();
        let (plans, plan_owners) = plan_progress(&state);
        let stuck = (p.stuck != Some(false)).then(|| state.stuck(now, queue));
        let heartbeats: BTreeMap<u64, u64> = state.nodes().iter().map(|(id, n)| (*id, n.last_heartbeat_ms)).collect();
        (queues, totals, page.tasks, more, plans, plan_owners, stuck, heartbeats)
    };

    let tasks_total = queues
        .iter()
        .filter(|q| queue.is_none_or(|name| q.name == name))
        .map(|q| match status {
            Some(s) => q.counts.get(&s).copied().unwrap_or(0),
            None => q.counts.values().sum(),
        })
        .sum();
    let mut owners: BTreeSet<String> = plan_owners.values().cloned().collect();
    let mut tasks = Vec::new();
    let mut truncated = more;
    for t in &candidates {
        if tasks.len() == limit {
            truncated = true;
            break;
        }
        let row = row_of(app, t, &plan_owners, now);
        if let Some(o) = &row.owner {
            owners.insert(o.clone());
        }
        if owner.as_deref().is_some_and(|o| !row.owner.as_deref().is_some_and(|x| owner_matches(x, o))) {
            continue;
        }
        if plan.as_deref().is_some_and(|r| row.entity_ref.as_deref().map(str::to_ascii_lowercase).as_deref() != Some(r))
        {
            continue;
        }
        tasks.push(row);
    }
    let nodes = cluster
        .nodes
        .into_iter()
        .map(|node| {
            let age = heartbeats.get(&node.id).map(|at| now.saturating_sub(*at));
            let health = match age {
                None => "unknown",
                Some(a) if a <= HEALTH_OK_MS => "ok",
                Some(a) if a <= HEALTH_LATE_MS => "late",
                Some(_) => "silent",
            };
            NodeView { node, health: health.into(), heartbeat_age_ms: age }
        })
        .collect();
    Overview {
        node_id: cluster.node_id,
        now_ms: now,
        leader: cluster.leader,
        term: cluster.term,
        commit_index: cluster.commit_index,
        applied_index: cluster.applied_index,
        nodes,
        queues,
        totals,
        tasks,
        tasks_total,
        truncated,
        // Every plan, even with a plan filter: the caller follows `depends_on`.
        plans,
        owners: owners.into_iter().collect(),
        stuck: stuck.map(|report| stuck_list(app, report, &plan_owners, now)),
    }
}

/// Every migration plan of the catalog with its newest run's progress, and
/// each plan's owner by entity reference.
fn plan_progress(state: &StateMachine) -> (Vec<PlanProgress>, BTreeMap<String, String>) {
    let mut plans = Vec::new();
    let mut owners = BTreeMap::new();
    for entry in state.catalog() {
        let e = &entry.entity;
        if let Some(o) = &e.owner {
            owners.insert(e.entity_ref.clone(), o.clone());
        }
        if !e.is_plan {
            continue;
        }
        let task = state.plan_task(entry);
        let (fraction, message) = match task {
            Some(t) if t.status == TaskStatus::Succeeded => (1.0, None),
            Some(t) => (
                t.progress.as_ref().map_or(0.0, |p| p.fraction),
                t.progress.as_ref().map(|p| p.message.clone()).or_else(|| t.last_error.clone()),
            ),
            None => (0.0, None),
        };
        plans.push(PlanProgress {
            entity_ref: e.entity_ref.clone(),
            owner: e.owner.clone(),
            queue: e.queue.clone(),
            depends_on: e.depends_on.clone(),
            task: task.map(|t| t.id),
            status: task.map_or_else(|| "never_run".to_string(), |t| t.status.to_string()),
            fraction,
            message,
            node: task.and_then(|t| t.lease.as_ref().map(|l| l.node).or(t.last_node)),
        });
    }
    (plans, owners)
}

/// A task's row, its name and owner from its payload (and its plan).
fn row_of(app: &App, t: &Task, plan_owners: &BTreeMap<String, String>, now: u64) -> TaskRow {
    let payload: Option<Value> = if t.payload_bytes > 2 {
        app.store.payload(t.id).ok().flatten().and_then(|s| serde_json::from_str(&s).ok())
    } else {
        None
    };
    let mut row = TaskRow::new(t, payload.as_ref(), now);
    if let Some(r) = &row.entity_ref {
        if let Some(o) = plan_owners.get(&r.to_ascii_lowercase()) {
            row.owner = Some(o.clone());
        }
    }
    row
}

/// `team-infra` matches `group:default/team-infra`, as Backstage owners
/// are written either way.
fn owner_matches(owner: &str, wanted: &str) -> bool {
    let short = |s: &str| {
        let s = s.rsplit_once(':').map_or(s, |(_, r)| r);
        s.rsplit_once('/').map_or(s, |(_, r)| r).to_ascii_lowercase()
    };
    owner.eq_ignore_ascii_case(wanted) || short(owner) == short(wanted)
}

fn stuck_list(
    app: &App,
    report: skein_raft::fsm::StuckReport,
    plan_owners: &BTreeMap<String, String>,
    now: u64,
) -> StuckList {
    StuckList {
        now_ms: now,
        tasks: report
            .tasks
            .into_iter()
            .map(|s| StuckRow {
                row: row_of(app, &s.task, plan_owners, now),
                why: s.reasons.iter().map(ToString::to_string).collect(),
                reasons: s.reasons,
            })
            .collect(),
        silent_nodes: report.silent_nodes,
    }
}

#[derive(Debug, Default, Deserialize)]
struct StuckParams {
    queue: Option<String>,
}

async fn stuck(State(app): State<SharedApp>, Query(p): Query<StuckParams>) -> Json<StuckList> {
    let now = now_ms();
    let (report, plan_owners) = {
        let state = app.store.state();
        (state.stuck(now, nonempty(&p.queue)), plan_progress(&state).1)
    };
    Json(stuck_list(&app, report, &plan_owners, now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_match_short_and_full_forms() {
        assert!(owner_matches("group:default/team-infra", "team-infra"));
        assert!(owner_matches("team-infra", "Group:default/Team-Infra"));
        assert!(!owner_matches("team-data", "team-infra"));
    }

    #[test]
    fn assets_reference_each_other() {
        assert!(INDEX_HTML.contains("/dashboard.js") && INDEX_HTML.contains("/dashboard.css"));
        assert!(DASHBOARD_JS.contains("/api/v1/overview"));
        // No CDN, no remote anything: the network may be closed.
        for asset in [INDEX_HTML, DASHBOARD_JS, DASHBOARD_CSS] {
            assert!(!asset.contains("http://") && !asset.contains("https://"), "an asset refers to another host");
        }
    }
}
