//! `GET /metrics`: Prometheus metrics in the OpenMetrics text format
//! (`prometheus-client`), on every node.
//!
//! Two kinds, and each metric's HELP says which:
//! - **cluster-wide facts** (tasks by queue and status, stuck tasks, leases
//!   per node, plans) are read from this node's copy of the replicated state
//!   at scrape time, so every node reports the same numbers (a follower may
//!   be a few entries behind). Query one node, or take `max` over nodes;
//!   never `sum` them.
//! - **node-local** counters and histograms (what this node's API enqueued,
//!   its worker leased and completed, how long its tasks ran, the leases
//!   this node expired as leader) count what happened *here*: `sum` them over
//!   nodes for the cluster. They start at zero when the node starts.
//!
//! Raft metrics (term, leader, indexes, apply lag, snapshot and log sizes)
//! are this node's view.

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use skein_raft::fsm::TaskStatus;

use openraft::RaftMetrics;
use skein_raft::api::ClusterStatus;
use skein_raft::config::SkeinNode;
use skein_raft::fsm::StateMachine;

/// Label pairs; every family here has a fixed set of keys.
pub type Labels = Vec<(&'static str, String)>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// The content type of the answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// 5 ms to ~11 min, doubling: lease waits and task durations both span that.
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 18))
}

/// The node-local metrics, updated where things happen.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Tasks created through this node's task API, by queue.
    pub enqueued: Family<Labels, Counter>,
    /// Leases granted to this node's worker, by queue.
    pub leased: Family<Labels, Counter>,
    /// Outcomes this node's worker reported that the leader accepted, by
    /// queue and outcome (`succeeded`, `retry`, `failed`).
    pub completed: Family<Labels, Counter>,
    /// Attempts that ended without success and will run again, by queue
    /// and cause (`failure`: the worker reported a retryable error here;
    /// `expired`: this node, as leader, took back an expired lease).
    pub retries: Family<Labels, Counter>,
    /// Tasks that went dead through this node (its worker's permanent
    /// failures and last attempts, its leader's expiry sweeps), by queue.
    pub dead: Family<Labels, Counter>,
    /// Time from a task being ready to being leased, as the leader that
    /// granted the lease saw it, by queue.
    pub lease_wait: HistogramFamily,
    /// How long this node's transforms ran, by queue and outcome.
    pub task_duration: HistogramFamily,
    /// Transforms running on this node now.
    pub running: Gauge,
    /// Requests without a token this node served (auth mode `warn`), and
    /// requests it refused (401, 403), by `outcome`.
    pub auth: Family<Labels, Counter>,
    /// Requests and connections refused by the limits per caller, by
    /// `limit` (`token`, `address`: a request without a token,
    /// `connections_per_address`, `connections`) and `listener` (`http`,
    /// `rpc`).
    pub rate_limited: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            enqueued: Family::default(),
            leased: Family::default(),
            completed: Family::default(),
            retries: Family::default(),
            dead: Family::default(),
            lease_wait: Family::new_with_constructor(seconds_histogram as fn() -> Histogram),
            task_duration: Family::new_with_constructor(seconds_histogram as fn() -> Histogram),
            running: Gauge::default(),
            auth: Family::default(),
            rate_limited: Family::default(),
        };
        if let Ok(mut r) = m.registry.lock() {
            let local = " (node-local: sum over nodes)";
            r.register(
                "skein_enqueued_tasks",
                format!("Tasks created through this node's API (task enqueues and plan runs){local}"),
                m.enqueued.clone(),
            );
            r.register("skein_leased_tasks", format!("Leases granted to this node's worker{local}"), m.leased.clone());
            r.register(
                "skein_completed_tasks",
                format!("Outcomes this node's worker reported and the leader accepted, by outcome (succeeded, retry, failed){local}"),
                m.completed.clone(),
            );
            r.register(
                "skein_task_retries",
                format!("Attempts that ended without success and will run again, by cause (failure, expired){local}"),
                m.retries.clone(),
            );
            r.register("skein_dead_tasks", format!("Tasks that went dead through this node{local}"), m.dead.clone());
            r.register_with_unit(
                "skein_lease_wait",
                format!("Time from ready (enqueued, unblocked or backoff over) to leased, observed by the leader that granted the lease{local}"),
                Unit::Seconds,
                m.lease_wait.clone(),
            );
            r.register_with_unit(
                "skein_task_duration",
                format!("How long this node's transforms ran, by outcome{local}"),
                Unit::Seconds,
                m.task_duration.clone(),
            );
            r.register("skein_running_tasks", "Transforms running on this node now (node-local)", m.running.clone());
            r.register(
                "skein_auth_requests",
                format!("Requests by auth outcome: anonymous (served without a token, auth mode warn), unauthenticated (401), forbidden (403){local}"),
                m.auth.clone(),
            );
            r.register(
                "skein_rate_limited",
                format!("Requests (429 rate_limited) and connections refused by the limits per caller, by limit (token, address: requests without a token, connections_per_address, connections) and listener (http, rpc){local}"),
                m.rate_limited.clone(),
            );
        }
        m
    }

    /// Counts `n` in the family `f` under `labels`.
    pub fn count(f: &Family<Labels, Counter>, labels: Labels, n: u64) {
        f.get_or_create(&labels).inc_by(n);
    }

    /// This node's own metrics only: what a worker node (which holds no
    /// state) exposes.
    pub fn render_local(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        if let Ok(r) = self.registry.lock() {
            encode_registry(&mut out, &r)?;
        }
        encode_eof(&mut out)?;
        Ok(out)
    }

    /// The whole exposition: node-local metrics, then the gauges read from
    /// the state and from Raft at scrape time, then `# EOF`.
    pub fn render(&self, state: &StateMachine, scrape: &Scrape) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        if let Ok(r) = self.registry.lock() {
            encode_registry(&mut out, &r)?;
        }
        encode_registry(&mut out, &snapshot_registry(state, scrape))?;
        encode_eof(&mut out)?;
        Ok(out)
    }
}

/// A gauge family made fresh for one scrape (so a queue that is gone
/// leaves no stale series).
struct Gauges {
    family: Family<Labels, FloatGauge>,
}

impl Gauges {
    fn register(r: &mut Registry, name: &str, help: &str) -> Gauges {
        let family = Family::<Labels, FloatGauge>::default();
        r.register(name, help, family.clone());
        Gauges { family }
    }

    fn set(&self, labels: Labels, v: f64) {
        self.family.get_or_create(&labels).set(v);
    }
}

/// What a scrape reads besides the state: this node's view of Raft and of
/// its own files.
pub struct Scrape {
    pub me: u64,
    pub now_ms: u64,
    pub raft: RaftMetrics<u64, SkeinNode>,
    pub cluster: ClusterStatus,
    /// The newest snapshot file's size.
    pub snapshot_bytes: u64,
    /// The kept log's estimated size in RocksDB.
    pub log_bytes: u64,
    /// This node's certificates (`--tls-dir`) and when each expires.
    pub certificates: Vec<skein_tls::CertExpiry>,
}

/// The gauges read from the state and from Raft at scrape time.
fn snapshot_registry(state: &StateMachine, scrape: &Scrape) -> Registry {
    let mut r = Registry::default();
    let cw = " (cluster-wide, from the replicated state: do not sum over nodes)";
    let tasks = Gauges::register(&mut r, "skein_tasks", &format!("Tasks by queue and status{cw}"));
    let expiry = Gauges::register(
        &mut r,
        "skein_certificate_expiry_timestamp_seconds",
        "When each of this node's certificates (ca, node) expires, as a Unix time (node-local)",
    );
    for c in &scrape.certificates {
        expiry.set(vec![("cert", c.name.to_string())], c.not_after_unix as f64);
    }
    let auth = Gauges::register(
        &mut r,
        "skein_auth_enforced",
        &format!("1 when calls without a token are refused (auth enforce), 0 in warn{cw}"),
    );
    auth.set(Vec::new(), if state.auth_enforced() { 1.0 } else { 0.0 });
    let oldest = Gauges::register(
        &mut r,
        "skein_queue_oldest_pending_age_seconds",
        &format!("Age of the oldest pending task of each queue{cw}"),
    );
    let paused = Gauges::register(&mut r, "skein_queue_paused", &format!("1 when the queue is paused{cw}"));
    let scale = Gauges::register(
        &mut r,
        "skein_scale_tasks",
        &format!(
            "Tasks that need a worker slot now: running + ready (pending, dependencies met, backoff included; \
             none while paused), within the queue's concurrency cap; divide by a worker's slots for the workers \
             needed (GET /api/v1/scale){cw}"
        ),
    );
    let stuck = Gauges::register(&mut r, "skein_stuck_tasks", &format!("Stuck tasks by queue, each counted once{cw}"));
    let stuck_reasons = Gauges::register(
        &mut r,
        "skein_stuck_reasons",
        &format!("Stuck tasks by queue and reason (a task may have several){cw}"),
    );
    let node_leases = Gauges::register(&mut r, "skein_node_leases", &format!("Leases held, by node{cw}"));
    let node_slots =
        Gauges::register(&mut r, "skein_node_slots", &format!("Worker slots, by node, as it last said{cw}"));
    let node_hb = Gauges::register(
        &mut r,
        "skein_node_heartbeat_age_seconds",
        &format!("Time since each node's last heartbeat, by this node's clock{cw}"),
    );
    let plans =
        Gauges::register(&mut r, "skein_plans", &format!("Migration plans by the status of their newest run{cw}"));
    let partitions = Gauges::register(
        &mut r,
        "skein_plan_partitions",
        &format!("A partitioned plan's newest run: its partitions by status (one series per plan and status){cw}"),
    );

    let now = scrape.now_ms;
    {
        for q in state.queue_stats(now) {
            for (status, n) in &q.counts {
                tasks.set(vec![("queue", q.name.clone()), ("status", status.to_string())], *n as f64);
            }
            oldest.set(vec![("queue", q.name.clone())], q.oldest_pending_age_ms.unwrap_or(0) as f64 / 1000.0);
            paused.set(vec![("queue", q.name.clone())], if q.paused { 1.0 } else { 0.0 });
            scale.set(vec![("queue", q.name.clone())], crate::views::scale::QueueNeed::of_stats(&q).tasks as f64);
            stuck.set(vec![("queue", q.name.clone())], 0.0);
        }
        let report = state.stuck(now, None);
        let mut per_queue: std::collections::BTreeMap<String, u64> = Default::default();
        let mut per_reason: std::collections::BTreeMap<(String, &'static str), u64> = Default::default();
        for s in &report.tasks {
            *per_queue.entry(s.task.queue.to_string()).or_default() += 1;
            for reason in &s.reasons {
                *per_reason.entry((s.task.queue.to_string(), reason.kind())).or_default() += 1;
            }
        }
        for (queue, n) in per_queue {
            stuck.set(vec![("queue", queue)], n as f64);
        }
        for ((queue, reason), n) in per_reason {
            stuck_reasons.set(vec![("queue", queue), ("reason", reason.to_string())], n as f64);
        }
        for (id, info) in state.nodes() {
            node_leases.set(vec![("node", id.to_string())], state.lease_count(*id) as f64);
            node_slots.set(vec![("node", id.to_string())], f64::from(info.slots));
            node_hb.set(vec![("node", id.to_string())], now.saturating_sub(info.last_heartbeat_ms) as f64 / 1000.0);
        }
        let mut by_status: std::collections::BTreeMap<String, u64> = Default::default();
        for entry in state.catalog().filter(|e| e.entity.is_plan) {
            let task = state.plan_task(entry);
            let status = task.map_or_else(|| "never_run".to_string(), |t| t.status.to_string());
            *by_status.entry(status).or_default() += 1;
            if let Some(run) = task.and_then(|t| crate::views::runs::run_partitions(state, t, now, None)) {
                let plan = entry.entity.entity_ref.clone();
                for (status, n) in [
                    ("pending", run.pending),
                    ("running", run.running),
                    ("succeeded", run.succeeded),
                    ("failed", run.failed),
                    ("cancelled", run.cancelled),
                ] {
                    partitions.set(vec![("plan", plan.clone()), ("status", status.to_string())], n as f64);
                }
            }
        }
        for (status, n) in by_status {
            plans.set(vec![("status", status)], n as f64);
        }
    }

    let mut raft = |name: &str, help: &str| Gauges::register(&mut r, name, &format!("{help} (this node's view)"));
    let m = &scrape.raft;
    let status = &scrape.cluster;
    let g = raft("skein_raft_term", "The current Raft term");
    g.set(vec![], m.current_term as f64);
    let g = raft("skein_raft_leader_id", "The leader's node id as this node knows it (-1: none)");
    g.set(vec![], m.current_leader.map_or(-1.0, |l| l as f64));
    let g = raft("skein_raft_is_leader", "1 when this node leads");
    g.set(vec![], if m.current_leader == Some(scrape.me) { 1.0 } else { 0.0 });
    let g = raft("skein_raft_last_log_index", "The last log index this node has");
    g.set(vec![], m.last_log_index.unwrap_or(0) as f64);
    let g = raft("skein_raft_applied_index", "The last log index applied to the state machine");
    g.set(vec![], m.last_applied.map_or(0, |l| l.index) as f64);
    if let Some(commit) = status.commit_index {
        let g = raft("skein_raft_commit_index", "The commit index (reported by the leader only)");
        g.set(vec![], commit as f64);
    }
    let applied = m.last_applied.map_or(0, |l| l.index);
    let lag = status.commit_index.unwrap_or(m.last_log_index.unwrap_or(0)).saturating_sub(applied);
    let g =
        raft("skein_raft_apply_lag_entries", "Entries committed (leader) or appended (follower) but not yet applied");
    g.set(vec![], lag as f64);
    let g = raft("skein_raft_snapshot_index", "The log index of the newest snapshot");
    g.set(vec![], m.snapshot.map_or(0, |l| l.index) as f64);
    let g = raft("skein_raft_snapshot_bytes", "Size of the newest snapshot file");
    g.set(vec![], scrape.snapshot_bytes as f64);
    let first = m.purged.map_or(0, |l| l.index + 1);
    let g = raft("skein_raft_log_entries", "Log entries kept (not yet purged behind a snapshot)");
    g.set(vec![], (m.last_log_index.map_or(0, |l| l + 1)).saturating_sub(first) as f64);
    let g = raft("skein_raft_log_bytes", "Estimated bytes of the kept log in RocksDB");
    g.set(vec![], scrape.log_bytes as f64);
    let g = raft("skein_raft_members", "Members by role");
    for role in ["leader", "voter", "learner"] {
        g.set(vec![("role", role.to_string())], status.nodes.iter().filter(|n| n.role == role).count() as f64);
    }
    r
}

/// The outcome label of a completion that the leader accepted.
pub fn outcome_label(status: TaskStatus) -> &'static str {
    match status {
        TaskStatus::Succeeded => "succeeded",
        TaskStatus::Pending | TaskStatus::Blocked => "retry",
        _ => "failed",
    }
}
