//! The fleet scenario (issue 17): 3 Raft members with no slots of their own
//! and 10, 100 or 1,000 workers outside Raft. Up to `--fleet-real` of them
//! are real `skein-node --role worker` processes running `sleep` tasks; the
//! rest are lightweight simulated workers in this process, each speaking
//! the workers' own RPCs to the leader over a connection of its own: it
//! registers over HTTP like a real worker, leases, renews its leases once
//! per heartbeat interval and reports each task's outcome, holding each
//! task for the same time instead of running it.
//!
//! The offered load is the same for every fleet size (`--fleet-rate`
//! tasks/s): a task is held `workers × slots / rate` seconds, so a bigger
//! fleet runs the same number of tasks per second with more, longer tasks,
//! and what grows with the fleet is only what the fleet itself costs the
//! leader (connections, renewals). Each run reports tasks/s, the leader's
//! CPU seconds per 1,000 tasks (from /proc), heartbeat bytes/s, how long a
//! new worker takes to get its first task, and the share of workers
//! holding a lease (sampled every 100 ms: a flat cost from idle workers
//! would prove nothing).
//!
//! What is counted where: tasks done are those enqueued and no longer
//! open as a follower sees them (real and simulated workers alike); bytes
//! and calls are the simulated workers' own, per worker-second, scaled to
//! the fleet; the real workers' busy state is read from a follower's
//! cluster status once a second, so the leader spends nothing on the
//! measuring.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use reqwest::Method;
use serde::Serialize;
use skein_raft::api::{WorkerJoinBody, WorkerJoined};
use skein_raft::fsm::{Completion, FencingToken, HeldLease, Outcome, TaskId, TaskStatus};
use skein_testkit::api::enqueue_body;
use skein_testkit::cluster::WORKER_IDS;
use skein_testkit::{Api, Cluster};
use skein_transport::{
    CompleteRequest, ExchangeRequest, HeartbeatRequest, LeaseRequest, LeasedTask, Peers, PeersConfig,
};

use crate::procs;

/// The queue the fleet works on.
const QUEUE: &str = "fleet";
/// How long a lease request may wait on the leader (a real worker's wait).
const LEASE_WAIT_MS: u64 = 1_000;
/// How often a worker renews its leases (a real worker's default
/// `--heartbeat-interval`).
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// How often the share of busy workers is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Which calls the simulated workers make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// One `exchange` call carries a worker's outcomes, its renewals and its
    /// next lease (what `skein-node --role worker` does since 0.6.0).
    Batched,
    /// Separate `lease`, `heartbeat` and `complete` calls (0.5.0's worker).
    Separate,
}

/// One fleet size's figures.
#[derive(Debug, Clone, Serialize)]
pub struct FleetRun {
    pub workers: usize,
    /// How many of them were real `skein-node` processes.
    pub real_workers: usize,
    pub protocol: Protocol,
    /// How long each task is held, in ms.
    pub hold_ms: f64,
    pub window_secs: f64,
    pub tasks: u64,
    pub tasks_per_sec: f64,
    /// The leader process's user + system CPU over the window.
    pub leader_cpu_secs: f64,
    pub leader_cpu_secs_per_1000_tasks: f64,
    /// The two followers' CPU per 1,000 tasks, together.
    pub followers_cpu_secs_per_1000_tasks: f64,
    /// Bytes per second of the requests that carried renewals, for the
    /// whole fleet: the simulated workers' (each request as encoded on the
    /// wire, frame header excluded) per worker-second, times `workers`.
    pub heartbeat_bytes_per_sec: f64,
    /// The same for every call (lease, renewals, outcomes).
    pub protocol_bytes_per_sec: f64,
    /// The same for the number of calls.
    pub calls_per_sec: f64,
    /// Worker-seconds of simulated workers behind those three figures.
    pub simulated_worker_secs: f64,
    /// Share of workers holding at least one lease: mean and lowest of the
    /// samples over the window.
    pub busy_share_mean: f64,
    pub busy_share_min: f64,
    /// From a new worker's registration to its first lease, in ms: each
    /// joining while the fleet runs.
    pub first_task_ms: Vec<f64>,
    /// Calls that failed (each is retried).
    pub errors: u64,
}

/// What every simulated worker adds to.
#[derive(Default)]
struct Tally {
    calls: AtomicU64,
    heartbeat_bytes: AtomicU64,
    protocol_bytes: AtomicU64,
    errors: AtomicU64,
}

struct SimWorker {
    id: u64,
    peers: Peers,
    leader: String,
    slots: u32,
    hold: Duration,
    protocol: Protocol,
    tally: Arc<Tally>,
    /// Its leases: task, token.
    held: Mutex<Vec<(TaskId, FencingToken)>>,
    /// Set when its first lease arrived.
    first_lease: Mutex<Option<Instant>>,
    stop: Arc<AtomicBool>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn wire_bytes<T: Serialize>(value: &T) -> u64 {
    skein_transport::codec::encode(value).map_or(0, |b| b.len() as u64)
}

impl SimWorker {
    fn held_leases(&self) -> Vec<HeldLease> {
        lock(&self.held).iter().map(|(task, token)| HeldLease { task: *task, token: *token, progress: None }).collect()
    }

    fn took(&self, tasks: &[LeasedTask]) {
        if tasks.is_empty() {
            return;
        }
        let mut first = lock(&self.first_lease);
        if first.is_none() {
            *first = Some(Instant::now());
        }
        drop(first);
        lock(&self.held).extend(tasks.iter().map(|t| (t.grant.task, t.grant.token)));
    }

    fn done(&self, c: &[Completion]) {
        lock(&self.held).retain(|(task, _)| !c.iter().any(|c| c.task == *task));
    }

    fn count_call(&self, bytes: u64, heartbeat_bytes: u64) {
        self.tally.calls.fetch_add(1, Ordering::Relaxed);
        self.tally.protocol_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.tally.heartbeat_bytes.fetch_add(heartbeat_bytes, Ordering::Relaxed);
    }

    fn failed(&self) {
        self.tally.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Renews every lease once per [`HEARTBEAT_EVERY`] (the separate
    /// protocol; the batched one renews in its exchanges).
    async fn heartbeats(self: Arc<Self>) {
        while !self.stop.load(Ordering::Relaxed) {
            tokio::time::sleep(HEARTBEAT_EVERY).await;
            let req = HeartbeatRequest { node: self.id, slots: self.slots, held: self.held_leases() };
            let bytes = wire_bytes(&req);
            match self.peers.heartbeat(&self.leader, req).await {
                Ok(_) => self.count_call(bytes, bytes),
                Err(_) => self.failed(),
            }
        }
    }

    /// Lease, hold, report, with one call per step.
    async fn run_separate(self: Arc<Self>) {
        tokio::spawn(self.clone().heartbeats());
        while !self.stop.load(Ordering::Relaxed) {
            let req =
                LeaseRequest { node: self.id, queues: vec![QUEUE.into()], max: self.slots, wait_ms: LEASE_WAIT_MS };
            let bytes = wire_bytes(&req);
            let tasks = match self.peers.lease(&self.leader, req).await {
                Ok(t) => {
                    self.count_call(bytes, 0);
                    t
                }
                Err(_) => {
                    self.failed();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if tasks.is_empty() {
                continue;
            }
            self.took(&tasks);
            tokio::time::sleep(self.hold).await;
            let completions = completions_of(&tasks);
            let req = CompleteRequest { node: self.id, completions: completions.clone() };
            let bytes = wire_bytes(&req);
            match self.peers.complete(&self.leader, req).await {
                Ok(_) => self.count_call(bytes, 0),
                Err(_) => self.failed(),
            }
            self.done(&completions);
        }
    }

    /// Lease, hold, then report and lease again in one call; renewals go
    /// in an exchange of their own only when no exchange was made for a
    /// heartbeat interval.
    async fn run_batched(self: Arc<Self>) {
        let mut reports: Vec<Completion> = Vec::new();
        let mut renewed = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            let renew = !lock(&self.held).is_empty() && renewed.elapsed() >= HEARTBEAT_EVERY;
            // The slots free once this round's outcomes are in.
            let running = lock(&self.held).len().saturating_sub(reports.len());
            let free = self.slots.saturating_sub(running as u32);
            let req = ExchangeRequest {
                node: self.id,
                slots: self.slots,
                completions: reports.clone(),
                held: renew.then(|| self.held_leases()),
                queues: vec![QUEUE.into()],
                max: free,
                wait_ms: LEASE_WAIT_MS,
            };
            let bytes = wire_bytes(&req);
            let heartbeat_bytes = if renew { bytes } else { 0 };
            let reply = match self.peers.exchange(&self.leader, req).await {
                Ok(r) => r,
                Err(_) => {
                    self.failed();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            self.count_call(bytes, heartbeat_bytes);
            if renew {
                renewed = Instant::now();
            }
            if reply.completed.is_ok() {
                self.done(&reports);
                reports.clear();
            }
            let tasks = reply.leased.unwrap_or_default();
            self.took(&tasks);
            if lock(&self.held).is_empty() {
                continue;
            }
            // Hold the tasks (renewing as they run), then report them.
            let until = Instant::now() + self.hold;
            while Instant::now() < until && !self.stop.load(Ordering::Relaxed) {
                let next_renewal = renewed + HEARTBEAT_EVERY;
                if next_renewal <= until {
                    tokio::time::sleep_until(next_renewal.into()).await;
                    let req = ExchangeRequest {
                        node: self.id,
                        slots: self.slots,
                        completions: Vec::new(),
                        held: Some(self.held_leases()),
                        queues: Vec::new(),
                        max: 0,
                        wait_ms: 0,
                    };
                    let bytes = wire_bytes(&req);
                    match self.peers.exchange(&self.leader, req).await {
                        Ok(_) => self.count_call(bytes, bytes),
                        Err(_) => self.failed(),
                    }
                    renewed = Instant::now();
                } else {
                    tokio::time::sleep_until(until.into()).await;
                }
            }
            reports = completions_of(&tasks);
        }
    }
}

fn completions_of(tasks: &[LeasedTask]) -> Vec<Completion> {
    tasks
        .iter()
        .map(|t| Completion {
            task: t.grant.task,
            token: t.grant.token,
            outcome: Outcome::Succeeded { result: "null".into() },
        })
        .collect()
}

/// A cluster's member processes' CPU seconds: the leader's, the others'.
fn cpu_of(c: &Cluster, leader: u64) -> (f64, f64) {
    let mut followers = 0.0;
    let mut own = 0.0;
    for id in c.ids().into_iter().filter(|id| *id < WORKER_IDS) {
        let secs = c.node(id).pid().and_then(procs::cpu_secs_of).unwrap_or(0.0);
        if id == leader {
            own = secs;
        } else {
            followers += secs;
        }
    }
    (own, followers)
}

/// What a fleet run needs to know.
pub struct FleetSpec {
    pub workers: usize,
    /// How many of them are real `skein-node --role worker` processes (the
    /// rest are simulated); only with [`Protocol::Batched`], which is what
    /// the real worker speaks.
    pub real: usize,
    pub slots: u32,
    /// Offered load, tasks/s.
    pub rate: f64,
    pub warmup: Duration,
    pub window: Duration,
    pub joiners: usize,
    pub protocol: Protocol,
}

/// Registers a worker over HTTP, as `skein-node --role worker` does.
async fn register(api: &Api, http: &str, slots: u32) -> anyhow::Result<u64> {
    let body = WorkerJoinBody {
        id: None,
        http_addr: "127.0.0.1:9".into(),
        slots,
        release: skein_raft::format::RELEASE.into(),
        format: skein_raft::format::LATEST,
    };
    let joined: WorkerJoined = api
        .call(Method::POST, http, "/api/v1/cluster/workers", Some(&serde_json::to_value(&body)?))
        .await
        .context("registering a worker")?;
    Ok(joined.id)
}

/// Tasks enqueued and acknowledged so far, and a lock held across each
/// enqueue so that a count of what is done is never taken mid-batch.
#[derive(Default)]
struct Fed {
    enqueued: tokio::sync::Mutex<u64>,
}

/// Tasks done: enqueued and acknowledged, and no longer pending, blocked
/// or leased as `follower` sees them. Counted this way, it holds for real
/// workers as for simulated ones, and whatever the state machine forgets.
async fn done(api: &Api, follower: &str, fed: &Fed) -> anyhow::Result<u64> {
    let enqueued = fed.enqueued.lock().await;
    let counts = api.counts(follower, QUEUE).await?;
    let open: u64 = [TaskStatus::Pending, TaskStatus::Blocked, TaskStatus::Leased].iter().map(|s| counts[s]).sum();
    Ok(enqueued.saturating_sub(open))
}

/// Keeps at least `backlog` tasks pending (as `follower` sees them, so the
/// leader spends nothing on the looking): enqueues `sleep` tasks of
/// `hold` on the leader in batches of 500.
async fn feed(api: Api, leader: String, follower: String, backlog: u64, hold: Duration, fed: Arc<Fed>) {
    let payload = serde_json::json!({ "ms": hold.as_millis() as u64 }).to_string();
    let body = enqueue_body(QUEUE, "sleep", &payload, 500);
    loop {
        let pending = api.counts(&follower, QUEUE).await.map_or(0, |c| c[&TaskStatus::Pending]);
        if pending < backlog {
            let mut enqueued = fed.enqueued.lock().await;
            if api.enqueue_raw(&leader, body.clone(), false).await.is_ok() {
                *enqueued += 500;
            }
            continue;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The real workers holding a lease, as `follower` sees them.
async fn real_busy(api: &Api, follower: &str, real: &[u64]) -> usize {
    let Ok(status) = api.cluster(follower).await else { return 0 };
    status.nodes.iter().filter(|n| real.contains(&n.id) && n.leases_held > 0).count()
}

/// Runs one fleet size on the cluster `c` (3 members, no slots): starts
/// `spec.real` real workers and simulates the rest.
pub async fn run(c: &mut Cluster, spec: &FleetSpec) -> anyhow::Result<FleetRun> {
    let leader = c.leader().await?;
    let leader_http = c.addr(leader);
    let leader_rpc = c.node(leader).rpc.clone();
    let follower = c.addr(c.ids().into_iter().find(|id| *id != leader).context("no follower")?);
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let hold = Duration::from_secs_f64(spec.workers as f64 * spec.slots as f64 / spec.rate);
    let backlog = (spec.workers as u64 * spec.slots as u64 * 2).max(1_000);
    let fed = Arc::new(Fed::default());
    let feeder = tokio::spawn(feed(c.api.clone(), leader_http.clone(), follower.clone(), backlog, hold, fed.clone()));

    // The real workers, then the simulated ones (registered 16 at a time).
    let real_n = if spec.protocol == Protocol::Batched { spec.real.min(spec.workers) } else { 0 };
    let real: Vec<u64> = (0..real_n as u64).map(|i| WORKER_IDS + i).collect();
    let slots = spec.slots.to_string();
    for id in &real {
        c.add_worker(*id, &["--slots", &slots, "--queues", QUEUE]).await?;
    }
    let ids: Vec<u64> = futures::stream::iter(real_n..spec.workers)
        .map(|_| register(&c.api, &leader_http, spec.slots))
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let config = PeersConfig { call_timeout: Duration::from_secs(10), ..PeersConfig::default() };
    let sim = |id: u64| {
        Arc::new(SimWorker {
            id,
            peers: Peers::new(config.clone()),
            leader: leader_rpc.clone(),
            slots: spec.slots,
            hold,
            protocol: spec.protocol,
            tally: tally.clone(),
            held: Mutex::default(),
            first_lease: Mutex::default(),
            stop: stop.clone(),
        })
    };
    let start = |w: Arc<SimWorker>| match w.protocol {
        Protocol::Batched => tokio::spawn(w.run_batched()),
        Protocol::Separate => tokio::spawn(w.run_separate()),
    };
    let fleet: Vec<Arc<SimWorker>> = ids.iter().map(|id| sim(*id)).collect();
    let mut handles: Vec<_> = fleet.iter().map(|w| start(w.clone())).collect();
    let busy_sims = |fleet: &[Arc<SimWorker>]| fleet.iter().filter(|w| !lock(&w.held).is_empty()).count();

    // Warm up for at least `warmup` and two task lengths, until every
    // worker holds a lease (or four times that).
    let warm = spec.warmup.max(hold * 2);
    let warm_start = Instant::now();
    loop {
        let elapsed = warm_start.elapsed();
        let all_busy = elapsed >= warm
            && busy_sims(&fleet) == fleet.len()
            && real_busy(&c.api, &follower, &real).await == real.len();
        if all_busy || elapsed >= warm * 4 {
            break;
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }

    // The window.
    let done_before = done(&c.api, &follower, &fed).await?;
    let before = Snapshot::take(c, leader, &tally);
    let window_start = Instant::now();
    let mut shares = Vec::new();
    let mut joiners: Vec<(Instant, Arc<SimWorker>)> = Vec::new();
    let join_every = spec.window / (spec.joiners as u32 + 1);
    let mut next_join = window_start + join_every;
    let mut real_sampled = (Instant::now(), real_busy(&c.api, &follower, &real).await);
    while window_start.elapsed() < spec.window {
        // The real workers are looked at once a second (on a follower).
        if real_sampled.0.elapsed() >= Duration::from_secs(1) {
            real_sampled = (Instant::now(), real_busy(&c.api, &follower, &real).await);
        }
        let busy = busy_sims(&fleet) + real_sampled.1;
        shares.push(busy as f64 / spec.workers.max(1) as f64);
        if joiners.len() < spec.joiners && Instant::now() >= next_join {
            next_join += join_every;
            let asked = Instant::now();
            let w = sim(register(&c.api, &leader_http, spec.slots).await?);
            handles.push(start(w.clone()));
            joiners.push((asked, w));
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    let after = Snapshot::take(c, leader, &tally);
    let done_after = done(&c.api, &follower, &fed).await?;
    let secs = window_start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    feeder.abort();
    for h in handles {
        h.abort();
    }
    let first_task_ms: Vec<f64> = joiners
        .iter()
        .filter_map(|(asked, w)| lock(&w.first_lease).map(|at| at.duration_since(*asked).as_secs_f64() * 1e3))
        .collect();
    if first_task_ms.len() < joiners.len() {
        bail!(
            "{} of {} workers that joined during the window got no task in it",
            joiners.len() - first_task_ms.len(),
            joiners.len()
        );
    }
    let tasks = done_after.saturating_sub(done_before);
    if tasks == 0 {
        bail!("no task completed in the window");
    }
    let per_1000 = |cpu: f64| cpu / tasks as f64 * 1000.0;
    // The simulated workers measured the protocol's bytes and calls: those
    // of the window's start, and the joiners from when each joined.
    let sim_secs = fleet.len() as f64 * secs
        + joiners
            .iter()
            .map(|(asked, _)| {
                (window_start + Duration::from_secs_f64(secs)).saturating_duration_since(*asked).as_secs_f64()
            })
            .sum::<f64>();
    let fleet_rate = |n: u64| if sim_secs > 0.0 { n as f64 / sim_secs * spec.workers as f64 } else { 0.0 };
    Ok(FleetRun {
        workers: spec.workers,
        real_workers: real_n,
        protocol: spec.protocol,
        hold_ms: hold.as_secs_f64() * 1e3,
        window_secs: secs,
        tasks,
        tasks_per_sec: tasks as f64 / secs,
        leader_cpu_secs: after.leader_cpu - before.leader_cpu,
        leader_cpu_secs_per_1000_tasks: per_1000(after.leader_cpu - before.leader_cpu),
        followers_cpu_secs_per_1000_tasks: per_1000(after.followers_cpu - before.followers_cpu),
        heartbeat_bytes_per_sec: fleet_rate(after.heartbeat_bytes - before.heartbeat_bytes),
        protocol_bytes_per_sec: fleet_rate(after.protocol_bytes - before.protocol_bytes),
        calls_per_sec: fleet_rate(after.calls - before.calls),
        simulated_worker_secs: sim_secs,
        busy_share_mean: shares.iter().sum::<f64>() / shares.len().max(1) as f64,
        busy_share_min: shares.iter().copied().fold(1.0, f64::min),
        first_task_ms,
        errors: after.errors - before.errors,
    })
}

/// The simulated workers' counters and the members' CPU at one instant.
struct Snapshot {
    calls: u64,
    heartbeat_bytes: u64,
    protocol_bytes: u64,
    errors: u64,
    leader_cpu: f64,
    followers_cpu: f64,
}

impl Snapshot {
    fn take(c: &Cluster, leader: u64, t: &Tally) -> Snapshot {
        let (leader_cpu, followers_cpu) = cpu_of(c, leader);
        Snapshot {
            calls: t.calls.load(Ordering::Relaxed),
            heartbeat_bytes: t.heartbeat_bytes.load(Ordering::Relaxed),
            protocol_bytes: t.protocol_bytes.load(Ordering::Relaxed),
            errors: t.errors.load(Ordering::Relaxed),
            leader_cpu,
            followers_cpu,
        }
    }
}
