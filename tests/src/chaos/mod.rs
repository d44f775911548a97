//! The chaos harness: a cluster of real `skein-node` processes whose every
//! link runs through a fault-injecting proxy ([`crate::proxy::Net`]), a
//! recorded workload ([`workload`]), faults from a seeded schedule
//! ([`nemesis`]), and a checker that reads the history and the final state
//! afterwards ([`checker`]), in the manner of Jepsen.
//!
//! A run may include worker nodes ([`RunConfig::workers`]: `--role
//! worker`, outside Raft), whose links to the members go through the
//! proxies as well; the nemesis hits them like any node, the clients call
//! only the members (a worker serves no API), and their journals are read
//! with the members'.
//!
//! [`run`] does one whole run: start, load and faults for the given time,
//! heal, drain, collect the evidence (written to the run's folder), check.
//! `skein-chaos` (`scripts/chaos.sh`) is its command line; the short runs in
//! `tests/tests/chaos_runs.rs` are part of the normal tests.

pub mod checker;
pub mod history;
pub mod nemesis;
pub mod rng;
pub mod upgrade;
pub mod workload;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use futures::stream::{self, StreamExt};
use serde_json::json;
use skein_raft::fsm::TaskStatus;

use crate::checks::say;
use crate::proxy::Net;
use checker::Report;
use history::{Evidence, FinalTask, JournalLine, NodeDigest};
use rng::Rng;
use skein_testkit::cluster::WORKER_IDS;
use skein_testkit::{now_ms, wait_for};
use skein_testkit::{Cluster, Spec};
use workload::{Workload, QUEUE};

/// One run's settings.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Names the fault schedule and the workload's choices.
    pub seed: u64,
    /// 3 or 5 (all voters), or more (5 voters, the rest learners).
    pub nodes: usize,
    /// Worker nodes (`--role worker`, outside Raft) besides the members,
    /// ids [`WORKER_IDS`]` + 1..`: their links to the members run through
    /// the proxies too, and the nemesis kills, pauses and cuts them like
    /// any node. 0: none (the members run the tasks).
    pub workers: usize,
    /// `--slots` of each worker.
    pub worker_slots: u32,
    /// `--slots` of each member; `None`: the harness's default. A run with
    /// workers usually gives its members none, so that the workers do the
    /// work.
    pub member_slots: Option<u32>,
    /// Extra flags of every node, members and workers (e.g. the members'
    /// `--worker-silence`).
    pub node_args: Vec<String>,
    /// How long the workload and the faults go on.
    pub duration: Duration,
    /// Concurrent enqueuing clients (one reader besides).
    pub clients: u32,
    /// The chaos queue's lease time.
    pub lease_ms: u64,
    /// The longest the cluster may take to end every task after the heal.
    pub drain_timeout: Duration,
    /// Where the evidence and the report are written.
    pub out: PathBuf,
}

impl RunConfig {
    pub fn new(seed: u64, nodes: usize, duration: Duration, out: &Path) -> RunConfig {
        RunConfig {
            seed,
            nodes,
            workers: 0,
            worker_slots: 3,
            member_slots: None,
            node_args: Vec::new(),
            duration,
            clients: 3,
            lease_ms: 3_000,
            drain_timeout: Duration::from_secs(120),
            out: out.to_path_buf(),
        }
    }

    /// [`RunConfig::new`] with `workers` worker nodes of `worker_slots`
    /// slots each, the members running nothing (`--slots 0`).
    pub fn with_workers(mut self, workers: usize, worker_slots: u32) -> RunConfig {
        self.workers = workers;
        self.worker_slots = worker_slots;
        self.member_slots = Some(0);
        self
    }

    /// The worker nodes' ids.
    pub fn worker_ids(&self) -> Vec<u64> {
        (1..=self.workers as u64).map(|i| WORKER_IDS + i).collect()
    }

    /// The command that replays this run.
    pub fn replay(&self) -> String {
        let mut cmd = format!(
            "scripts/chaos.sh --seed {} --nodes {} --seconds {}",
            self.seed,
            self.nodes,
            self.duration.as_secs()
        );
        if self.workers > 0 {
            // skein-chaos has no flag for workers: the configuration, as
            // `tests/tests/chaos_runs.rs` writes it.
            cmd = format!(
                "RunConfig::new({}, {}, {} s).with_workers({}, {}) in tests/tests/chaos_runs.rs \
                 (skein-chaos has no flag for workers)",
                self.seed,
                self.nodes,
                self.duration.as_secs(),
                self.workers,
                self.worker_slots
            );
        }
        cmd
    }
}

/// Whether `id` is a worker node's (see [`RunConfig::workers`]).
pub fn is_worker(id: u64) -> bool {
    id > WORKER_IDS
}

/// The `--route` flags (pairs of flag and value) of `routes` that lead to
/// one of `members`' RPC addresses: nobody dials a worker (it has no RPC
/// listener), so the proxies to workers are never used.
fn routes_to(routes: Vec<String>, members: &BTreeMap<u64, String>) -> Vec<String> {
    let targets: Vec<&String> = members.values().collect();
    let mut out = Vec::new();
    for pair in routes.chunks(2) {
        if let [flag, value] = pair {
            if value.split_once('=').is_some_and(|(to, _)| targets.contains(&&to.to_string())) {
                out.extend([flag.clone(), value.clone()]);
            }
        }
    }
    out
}

/// Runs the cluster, the workload and the faults; returns the evidence and
/// the checker's report (also written to `out/`). An `Err` is a harness
/// failure (a node that would not start, a cluster that never answered),
/// itself a finding: the nodes' logs are in the error.
pub async fn run(cfg: &RunConfig) -> anyhow::Result<(Evidence, Report)> {
    std::fs::create_dir_all(&cfg.out).with_context(|| format!("creating {}", cfg.out.display()))?;
    say(format!(
        "seed {} · {} nodes · {} s of load and faults · evidence in {}",
        cfg.seed,
        cfg.nodes,
        cfg.duration.as_secs(),
        cfg.out.display()
    ));
    if cfg.workers > 0 {
        say(format!(
            "{} workers of {} slots each ({:?}); members' slots {:?}",
            cfg.workers,
            cfg.worker_slots,
            cfg.worker_ids(),
            cfg.member_slots
        ));
    }
    say(format!("replay with: {}", cfg.replay()));
    let (mut c, net) = start(cfg, None).await?;
    let result = drive(cfg, &mut c, &net).await;
    if result.is_err() {
        eprintln!("==== the chaos run failed; the end of each node's log:\n{}", c.log_tails(40));
    }
    let (evidence, report) = result?;
    write_json(&cfg.out.join("report.json"), &report)?;
    say(summary(cfg, &report));
    Ok((evidence, report))
}

/// Starts the proxies and the cluster on free ports. Ports are fixed
/// before any node starts (each node's routes name the others'), so a port
/// taken by another process meanwhile fails the start: then again on new
/// ports, at most three times. Every node runs `node_bin` if given (else
/// the `skein-node` next to this executable).
///
/// Then the workers, if any ([`RunConfig::workers`]): each registers over
/// HTTP (which no proxy cuts) and reaches every member's RPC address
/// through its own proxy, so the nemesis can cut it off like a member.
pub async fn start(cfg: &RunConfig, node_bin: Option<&Path>) -> anyhow::Result<(Cluster, Net)> {
    let mut attempt = 1;
    let (mut c, net) = loop {
        let mut layout = Spec::free(cfg.nodes)?;
        layout.voters = Some(if cfg.nodes >= 5 { 5 } else { cfg.nodes.min(3) });
        layout.node_bin = node_bin.map(Path::to_path_buf);
        if let Some(slots) = cfg.member_slots {
            layout.slots = slots;
        }
        layout.args = cfg.node_args.clone();
        let rpc: BTreeMap<u64, String> = layout.addrs.iter().map(|(&id, (_, rpc))| (id, rpc.clone())).collect();
        // A worker has no RPC listener: its proxies' target is a port
        // nothing listens on, and no route leads there.
        let mut everyone = rpc.clone();
        for w in cfg.worker_ids() {
            everyone.insert(w, "127.0.0.1:9".to_string());
        }
        let net = Net::start(&everyone).await?;
        for &id in rpc.keys() {
            let mut args = routes_to(net.route_args(id), &rpc);
            args.extend(["--journal".to_string(), journal_path(&cfg.out, id).display().to_string()]);
            layout.node_args.insert(id, args);
        }
        match Cluster::start_layout(layout).await {
            Ok(c) => break (c, net),
            Err(e) if attempt < 3 && format!("{e:#}").contains("in use") => {
                say(format!("a port was taken before a node could bind it; starting again on new ports ({e:#})"));
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    };
    let rpc: BTreeMap<u64, String> = c.ids().into_iter().map(|id| (id, c.node(id).rpc.clone())).collect();
    for w in cfg.worker_ids() {
        let mut args = routes_to(net.route_args(w), &rpc);
        args.extend([
            "--journal".to_string(),
            journal_path(&cfg.out, w).display().to_string(),
            "--slots".into(),
            cfg.worker_slots.to_string(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        c.add_joining(w, "worker", &args).await.with_context(|| format!("starting worker {w}"))?;
    }
    if cfg.workers > 0 {
        say(format!("{} workers registered, each reaching the members through its proxies", cfg.workers));
    }
    Ok((c, net))
}

/// The Raft members among `ids` (the nodes that serve the API).
pub fn members(ids: &[u64]) -> Vec<u64> {
    ids.iter().copied().filter(|&id| !is_worker(id)).collect()
}

async fn drive(cfg: &RunConfig, c: &mut Cluster, net: &Net) -> anyhow::Result<(Evidence, Report)> {
    let (load, rng, workload_start_ms) = start_load(cfg, c).await?;
    let faults = nemesis::run(c, net, rng.fork(0), cfg.duration).await;
    let ops = load.stop().await;
    let workload_end_ms = now_ms();
    let faults = faults?;
    say(format!("workload stopped: {} operations, {} faults; healed, draining", ops.len(), faults.len()));
    conclude(cfg, c, ops, faults, workload_start_ms, workload_end_ms).await
}

/// Configures the chaos queue and starts the workload on every node;
/// returns it, the run's generator (fork 0 is the nemesis's) and when the
/// load started.
pub(crate) async fn start_load(cfg: &RunConfig, c: &Cluster) -> anyhow::Result<(Workload, Rng, u64)> {
    let leader = c.wait_leader(Duration::from_secs(10)).await?;
    c.api
        .configure_queue(
            &c.addr(leader),
            QUEUE,
            json!({"lease_ms": cfg.lease_ms, "backoff_base_ms": 100, "backoff_cap_ms": 1000, "max_attempts": 25}),
        )
        .await?;

    let rng = Rng::new(cfg.seed);
    // A worker serves no API: the clients call the members.
    let nodes: Vec<(u64, String)> = members(&c.ids()).into_iter().map(|id| (id, c.addr(id))).collect();
    let workload_start_ms = now_ms();
    let load = Workload::start(nodes, cfg.clients, &rng);
    Ok((load, rng, workload_start_ms))
}

/// After the load stopped and every fault was healed: waits for the queue
/// to drain, collects the evidence (written to `out/evidence.json`) and
/// checks it.
pub(crate) async fn conclude(
    cfg: &RunConfig,
    c: &Cluster,
    ops: Vec<history::Op>,
    faults: Vec<history::Fault>,
    workload_start_ms: u64,
    workload_end_ms: u64,
) -> anyhow::Result<(Evidence, Report)> {
    // Everything healed; wait for the queue to empty.
    let leader = c.wait_leader(Duration::from_secs(30)).await?;
    let drained = wait_for(cfg.drain_timeout, "the chaos queue to drain", async || {
        let leader = c.leader().await?;
        let counts = c.api.counts(&c.addr(leader), QUEUE).await?;
        let open: u64 = [TaskStatus::Pending, TaskStatus::Leased, TaskStatus::Blocked].iter().map(|s| counts[s]).sum();
        Ok((open == 0).then_some(()))
    })
    .await;
    if let Err(e) = &drained {
        say(format!("the queue did not drain: {e:#} (the checker reports what is still open)"));
    }

    let leader = c.leader().await.unwrap_or(leader);
    let tasks = final_tasks(c, &c.addr(leader)).await?;
    let digests = agreed_digests(c).await?;
    let journal = read_journals(&cfg.out, &c.ids())?;
    let evidence = Evidence {
        workers: cfg.worker_ids(),
        ops,
        faults,
        journal,
        tasks,
        digests,
        lease_ms: cfg.lease_ms,
        // The sweep's tick (200 ms), an election if the leader died with
        // it (under a second), and a loaded machine's delays.
        dead_lease_slack_ms: 5_000,
        workload_start_ms,
        workload_end_ms,
    };
    write_json(&cfg.out.join("evidence.json"), &evidence)?;
    let report = checker::check(&evidence);
    Ok((evidence, report))
}

/// Every task of the chaos queue with its history, as the leader has it.
async fn final_tasks(c: &Cluster, addr: &str) -> anyhow::Result<Vec<FinalTask>> {
    let list = c.api.tasks(addr, Some(QUEUE), None).await?;
    let details: Vec<anyhow::Result<FinalTask>> = stream::iter(list)
        .map(|t| async move {
            let d = c.api.task(addr, t.id.0).await?;
            Ok(FinalTask {
                id: d.task.id.0,
                status: d.task.status,
                key: d.task.idempotency_key.as_deref().map(String::from),
                history: d.history,
            })
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut tasks = details.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    tasks.sort_by_key(|t| t.id);
    Ok(tasks)
}

/// Every node's digest, once all have applied the same index (for at most
/// 30 s; the last sample otherwise, which the checker reports).
async fn agreed_digests(c: &Cluster) -> anyhow::Result<Vec<NodeDigest>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut sample = Vec::new();
        // Workers hold no state machine.
        for id in members(&c.live_ids()) {
            match c.api.digest(&c.addr(id)).await {
                Ok((applied_index, digest)) => sample.push(NodeDigest { node: id, applied_index, digest }),
                Err(e) => {
                    sample.push(NodeDigest { node: id, applied_index: None, digest: format!("unreadable: {e:#}") })
                }
            }
        }
        let same_index = sample.windows(2).all(|w| w[0].applied_index == w[1].applied_index);
        if same_index || tokio::time::Instant::now() >= deadline {
            return Ok(sample);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

pub fn journal_path(out: &Path, node: u64) -> PathBuf {
    out.join(format!("journal-{node}.jsonl"))
}

/// Every node's journal lines. A line cut short by a kill -9 is skipped.
fn read_journals(out: &Path, nodes: &[u64]) -> anyhow::Result<Vec<JournalLine>> {
    let mut lines = Vec::new();
    for &id in nodes {
        let path = journal_path(out, id);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        lines.extend(text.lines().filter_map(|l| serde_json::from_str::<JournalLine>(l).ok()));
    }
    Ok(lines)
}

pub(crate) fn write_json(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec_pretty(value)?;
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// The run's summary table.
pub fn summary(cfg: &RunConfig, r: &Report) -> String {
    let s = &r.stats;
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("  {k:<44} {v}\n"));
    line("seed / nodes / load time", format!("{} / {} / {} s", cfg.seed, cfg.nodes, cfg.duration.as_secs()));
    if cfg.workers > 0 {
        line("workers (slots each)", format!("{} ({})", cfg.workers, cfg.worker_slots));
        line("faults that hit a worker", s.faults_on_workers.to_string());
        line("successes by workers / by members", format!("{} / {}", s.worker_successes, s.member_successes));
    }
    for (kind, outcomes) in &s.ops {
        let get = |o: &str| outcomes.get(o).copied().unwrap_or(0);
        line(
            &format!("operations: {kind} (ok / failed / unknown)"),
            format!("{} / {} / {}", get("ok"), get("failed"), get("unknown")),
        );
    }
    for (kind, n) in &s.faults {
        line(&format!("faults: {kind}"), n.to_string());
    }
    line("faults: total", s.faults.values().sum::<usize>().to_string());
    line("tasks acknowledged / in the final state", format!("{} / {}", s.tasks_acknowledged, s.tasks_in_final_state));
    line("acknowledged tasks' final status", format!("{:?}", s.final_status));
    line("longest window without an acknowledged write", format!("{} ms", s.longest_write_gap_ms));
    let kills: Vec<String> =
        s.leader_kill_to_next_success_ms.iter().map(|k| k.map_or("none".into(), |ms| format!("{ms} ms"))).collect();
    line(
        "leader kill -9 → next task success",
        if kills.is_empty() { "no leader killed".into() } else { kills.join(", ") },
    );
    line("tasks run more than once (allowed)", s.ran_more_than_once.to_string());
    line("successes reported to workers (journals)", s.journal_commits.to_string());
    line("violations", r.violations.len().to_string());
    for v in r.violations.iter().take(20) {
        out.push_str(&format!("    VIOLATION: {v}\n"));
    }
    if r.violations.len() > 20 {
        out.push_str(&format!("    ... and {} more (report.json)\n", r.violations.len() - 20));
    }
    format!("chaos summary\n{out}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_routed_only_to_the_members() {
        let rpc = BTreeMap::from([(1, "127.0.0.1:11".to_string()), (2, "127.0.0.1:12".to_string())]);
        let routes = ["--route", "127.0.0.1:11=127.0.0.1:91", "--route", "127.0.0.1:9=127.0.0.1:92"];
        let routes: Vec<String> = routes.iter().map(|s| s.to_string()).collect();
        assert_eq!(routes_to(routes, &rpc), ["--route", "127.0.0.1:11=127.0.0.1:91"]);
        let cfg = RunConfig::new(7, 3, Duration::from_secs(1), Path::new("/tmp")).with_workers(2, 5);
        assert_eq!(cfg.worker_ids(), [WORKER_IDS + 1, WORKER_IDS + 2]);
        assert!(cfg.worker_ids().iter().all(|&w| is_worker(w)) && !is_worker(3));
        assert_eq!(members(&[1, 2, 3, 101, 102]), [1, 2, 3]);
        assert_eq!(cfg.member_slots, Some(0));
        assert!(cfg.replay().contains("with_workers(2, 5)"), "{}", cfg.replay());
    }
}
