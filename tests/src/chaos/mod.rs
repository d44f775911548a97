//! The chaos harness: a cluster of real `skein-node` processes whose every
//! link runs through a fault-injecting proxy ([`crate::proxy::Net`]), a
//! recorded workload ([`workload`]), faults from a seeded schedule
//! ([`nemesis`]), and a checker that reads the history and the final state
//! afterwards ([`checker`]), in the manner of Jepsen.
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
            duration,
            clients: 3,
            lease_ms: 3_000,
            drain_timeout: Duration::from_secs(120),
            out: out.to_path_buf(),
        }
    }

    /// The command that replays this run.
    pub fn replay(&self) -> String {
        format!("scripts/chaos.sh --seed {} --nodes {} --seconds {}", self.seed, self.nodes, self.duration.as_secs())
    }
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
pub(crate) async fn start(cfg: &RunConfig, node_bin: Option<&Path>) -> anyhow::Result<(Cluster, Net)> {
    let mut attempt = 1;
    loop {
        let mut layout = Spec::free(cfg.nodes)?;
        layout.voters = Some(if cfg.nodes >= 5 { 5 } else { cfg.nodes.min(3) });
        layout.node_bin = node_bin.map(Path::to_path_buf);
        let rpc: BTreeMap<u64, String> = layout.addrs.iter().map(|(&id, (_, rpc))| (id, rpc.clone())).collect();
        let net = Net::start(&rpc).await?;
        for &id in rpc.keys() {
            let mut args = net.route_args(id);
            args.extend(["--journal".to_string(), journal_path(&cfg.out, id).display().to_string()]);
            layout.node_args.insert(id, args);
        }
        match Cluster::start_layout(layout).await {
            Ok(c) => return Ok((c, net)),
            Err(e) if attempt < 3 && format!("{e:#}").contains("in use") => {
                say(format!("a port was taken before a node could bind it; starting again on new ports ({e:#})"));
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
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
    let nodes: Vec<(u64, String)> = c.ids().into_iter().map(|id| (id, c.addr(id))).collect();
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
        for id in c.live_ids() {
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
