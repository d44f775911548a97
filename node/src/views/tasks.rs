//! The status table and the stuck list: what the dashboard, `skein status`,
//! `skein watch` and `skein stuck` show, read from this node's applied state
//! (`GET /api/v1/overview`, `GET /api/v1/stuck`).
//!
//! The state lock is held only to copy what an answer needs; payloads (for
//! the datasets' names and owners) are read from RocksDB after it is
//! released. `now` is an argument: these read no clock.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::Value;
use skein_raft::api::{ClusterStatus, NodeView, Overview, PlanProgress, StuckList, StuckRow, TaskRow};
use skein_raft::fsm::{StateMachine, StuckReport, Task, TaskStatus};
use skein_raft::store::StoreHandle;

use crate::views::cluster::heartbeat_health;

/// Rows of the status table when the request does not say.
const DEFAULT_ROWS: usize = 500;
/// The most rows one answer holds.
const MAX_ROWS: usize = 5_000;
/// With an owner or plan filter, the most tasks scanned for matches.
const SCAN_CAP: usize = 20_000;

/// The filters of the status table (the query of `GET /api/v1/overview`).
#[derive(Debug, Default, Deserialize)]
pub struct OverviewParams {
    pub queue: Option<String>,
    pub status: Option<String>,
    pub owner: Option<String>,
    /// An entity reference: only tasks that migrate it.
    pub plan: Option<String>,
    pub limit: Option<usize>,
    /// `false` skips the stuck-task scan (`skein watch` does not need it).
    pub stuck: Option<bool>,
}

/// A filter's value, `None` when absent or blank.
pub fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// The dashboard's whole picture: the cluster, the queues, a page of
/// status rows (filtered), every plan's progress and the stuck tasks.
pub fn overview(
    store: &StoreHandle,
    cluster: ClusterStatus,
    p: &OverviewParams,
    status: Option<TaskStatus>,
    now: u64,
) -> Overview {
    let queue = nonempty(&p.queue);
    let owner = nonempty(&p.owner).map(str::to_string);
    let plan = nonempty(&p.plan).map(|r| r.to_ascii_lowercase());
    let limit = p.limit.unwrap_or(DEFAULT_ROWS).min(MAX_ROWS);
    let filtered = owner.is_some() || plan.is_some();

    // Under the state lock: copy what the answer needs, nothing more.
    let (queues, totals, candidates, more, plans, plan_owners, stuck, heartbeats) = {
        let state = store.state();
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
        let row = row_of(store, t, &plan_owners, now);
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
            NodeView { node, health: heartbeat_health(age).into(), heartbeat_age_ms: age }
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
        stuck: stuck.map(|report| stuck_list(store, report, &plan_owners, now)),
    }
}

/// Every migration plan of the catalog with its newest run's progress, and
/// each plan's owner by entity reference.
pub fn plan_progress(state: &StateMachine) -> (Vec<PlanProgress>, BTreeMap<String, String>) {
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
        let (mut fraction, mut message) = match task {
            Some(t) if t.status == TaskStatus::Succeeded => (1.0, None),
            Some(t) => (
                t.progress.as_ref().map_or(0.0, |p| p.fraction),
                t.progress.as_ref().map(|p| p.message.clone()).or_else(|| t.last_error.clone()),
            ),
            None => (0.0, None),
        };
        let mut status = task.map_or_else(|| "never_run".to_string(), |t| t.status.to_string());
        // A partitioned run: the run's state is its partitions' and commit's.
        let partitions = task.and_then(|t| super::runs::run_partitions(state, t, state.clock_ms(), None));
        if let Some(r) = &partitions {
            fraction = if r.total == 0 { 0.0 } else { r.succeeded as f32 / r.total as f32 };
            if r.status != "succeeded" {
                fraction = fraction.min(0.99);
            }
            message = Some(super::runs::describe(r));
            status = match r.status.as_str() {
                "running" | "failing" | "publishing" => TaskStatus::Leased.to_string(),
                "failed" => TaskStatus::Dead.to_string(),
                "cancelled" => TaskStatus::Cancelled.to_string(),
                _ => TaskStatus::Succeeded.to_string(),
            };
        }
        plans.push(PlanProgress {
            entity_ref: e.entity_ref.clone(),
            owner: e.owner.clone(),
            queue: e.queue.clone(),
            depends_on: e.depends_on.clone(),
            task: task.map(|t| t.id),
            status,
            fraction,
            message,
            node: task.and_then(|t| t.lease.as_ref().map(|l| l.node).or(t.last_node)),
            partitions,
        });
    }
    (plans, owners)
}

/// A task's row, its name and owner from its payload (and its plan).
fn row_of(store: &StoreHandle, t: &Task, plan_owners: &BTreeMap<String, String>, now: u64) -> TaskRow {
    let payload: Option<Value> = if t.payload_bytes > 2 {
        store.payload(t.id).ok().flatten().and_then(|s| serde_json::from_str(&s).ok())
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
pub fn owner_matches(owner: &str, wanted: &str) -> bool {
    let short = |s: &str| {
        let s = s.rsplit_once(':').map_or(s, |(_, r)| r);
        s.rsplit_once('/').map_or(s, |(_, r)| r).to_ascii_lowercase()
    };
    owner.eq_ignore_ascii_case(wanted) || short(owner) == short(wanted)
}

fn stuck_list(store: &StoreHandle, report: StuckReport, plan_owners: &BTreeMap<String, String>, now: u64) -> StuckList {
    StuckList {
        now_ms: now,
        tasks: report
            .tasks
            .into_iter()
            .map(|s| StuckRow {
                row: row_of(store, &s.task, plan_owners, now),
                why: s.reasons.iter().map(ToString::to_string).collect(),
                reasons: s.reasons,
            })
            .collect(),
        silent_nodes: report.silent_nodes,
    }
}

/// The stuck tasks of one queue (or all), with their rows.
pub fn stuck(store: &StoreHandle, queue: Option<&str>, now: u64) -> StuckList {
    let (report, plan_owners) = {
        let state = store.state();
        (state.stuck(now, queue), plan_progress(&state).1)
    };
    stuck_list(store, report, &plan_owners, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_match_short_and_full_forms() {
        let cases = [
            ("group:default/team-infra", "team-infra", true),
            ("team-infra", "Group:default/Team-Infra", true),
            ("group:default/team-infra", "group:other/team-infra", true),
            ("team-data", "team-infra", false),
            ("user:default/ann", "group:default/ann", true),
            ("", "team-infra", false),
        ];
        for (owner, wanted, want) in cases {
            assert_eq!(owner_matches(owner, wanted), want, "{owner} ~ {wanted}");
        }
    }

    #[test]
    fn blank_filters_are_absent() {
        for (raw, want) in [(None, None), (Some(""), None), (Some("  "), None), (Some(" q "), Some("q"))] {
            assert_eq!(nonempty(&raw.map(str::to_string)), want, "{raw:?}");
        }
    }
}
