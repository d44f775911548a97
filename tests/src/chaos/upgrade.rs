//! A rolling upgrade under the chaos workload, checked like a chaos run
//! (issue 12): a cluster started on an older release's `skein-node`, its
//! nodes replaced one at a time (SIGTERM: the node drains and exits; then
//! the new binary on the same data directory), followers first and the
//! leader last, while the recorded [`Workload`](super::workload::Workload)
//! runs against every node; then `POST /api/v1/cluster/finalize`. With
//! `back`, the nodes go back to the older binary the same way instead of
//! finalizing (the older release must open the directories the newer one
//! used, as long as the cluster was not finalized).
//!
//! Each replacement is recorded as a [`FaultKind::Upgrade`] fault; the
//! history, the journals and the final state go through the chaos
//! [`checker`](super::checker) as they do after a chaos run: no acknowledged
//! task lost, no success under a stale token, the replicas' digests equal.
//! `skein-chaos --upgrade-from OLD --upgrade-to NEW [--back]`
//! (`scripts/upgrade-test.sh`) is its command line.

use skein_raft::api::ErrorCode;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};

use super::checker::Report;
use super::history::{Evidence, Fault, FaultKind, Op, Outcome};
use super::{conclude, start, start_load, summary, write_json, RunConfig};
use crate::checks::say;
use skein_testkit::Cluster;
use skein_testkit::{now_ms, wait_for, wait_until};

/// How long a SIGTERMed node may take to drain and exit (its drain timeout
/// is 30 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a node started on another binary may take to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// The time under load between two replacements.
const PAUSE: Duration = Duration::from_secs(3);
/// How long the finalize may be refused (a member's version not yet known)
/// or go unanswered.
const FINALIZE_TIMEOUT: Duration = Duration::from_secs(60);
/// The least load after the last step, however long the steps took.
const MIN_TAIL: Duration = Duration::from_secs(5);

/// One node's replacement, as the summary and `replacements.json` show it.
#[derive(Debug, Clone, Serialize)]
pub struct Replacement {
    pub node: u64,
    /// The releases it ran before and after.
    pub from: String,
    pub to: String,
    /// It led when it was stopped.
    pub was_leader: bool,
    /// SIGTERM sent.
    pub start_ms: u64,
    /// Its process exited (drained).
    pub stopped_ms: u64,
    /// The new process answered `/readyz`.
    pub ready_ms: u64,
    /// A leader confirmed, and the node caught up with it.
    pub end_ms: u64,
    /// The longest interval in `start_ms..end_ms` without an acknowledged
    /// enqueue.
    pub write_gap_ms: u64,
}

/// The release a `skein-node` binary says it is (`skein-node --version`).
pub fn release_of(bin: &Path) -> Option<String> {
    let out = std::process::Command::new(bin).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let release = text.split_whitespace().nth(1)?;
    (out.status.success() && release.chars().next().is_some_and(|c| c.is_ascii_digit())).then(|| release.to_string())
}

/// The command that replays this run.
pub fn replay(cfg: &RunConfig, old: &Path, new: &Path, back: bool) -> String {
    let dir = |p: &Path| p.parent().map_or_else(|| ".".to_string(), |d| d.display().to_string());
    format!(
        "scripts/upgrade-test.sh {} {}{} --seed {} --seconds {}",
        dir(old),
        dir(new),
        if back { " --back" } else { "" },
        cfg.seed,
        cfg.duration.as_secs()
    )
}

/// Runs the upgrade (and with `back`, the way back) under load; returns
/// the evidence and the checker's report, both also written to `cfg.out`
/// with `replacements.json`. `old` and `new` are `skein-node` binaries. An
/// `Err` is a failed step (a node that did not stop, start or catch up, a
/// finalize refused for a minute, a node that does not report the release
/// it was started on), with the nodes' logs.
pub async fn run(cfg: &RunConfig, old: PathBuf, new: PathBuf, back: bool) -> anyhow::Result<(Evidence, Report)> {
    std::fs::create_dir_all(&cfg.out).with_context(|| format!("creating {}", cfg.out.display()))?;
    let old_rel = release_of(&old).with_context(|| format!("{} --version names no release", old.display()))?;
    let new_rel = release_of(&new).with_context(|| format!("{} --version names no release", new.display()))?;
    say(format!(
        "upgrade run: seed {} · {} nodes · {} s of load · {} ({}) → {} ({}){} · evidence in {}",
        cfg.seed,
        cfg.nodes,
        cfg.duration.as_secs(),
        old_rel,
        old.display(),
        new_rel,
        new.display(),
        if back { format!(" → back to {old_rel}, not finalized") } else { ", then finalize".to_string() },
        cfg.out.display()
    ));
    say(format!("replay with: {}", replay(cfg, &old, &new, back)));
    // The proxies must live as long as the cluster: the nodes reach each
    // other through them.
    let (mut c, _net) = start(cfg, Some(&old)).await?;
    let steps = Steps { old: (old, old_rel), new: (new, new_rel), back };
    let result = drive(cfg, &mut c, &steps).await;
    if result.is_err() {
        eprintln!("==== the upgrade run failed; the end of each node's log:\n{}", c.log_tails(40));
    }
    let (evidence, report, replacements) = result?;
    write_json(&cfg.out.join("report.json"), &report)?;
    write_json(&cfg.out.join("replacements.json"), &replacements)?;
    say(summary(cfg, &report));
    say(upgrade_summary(&steps, &replacements));
    Ok((evidence, report))
}

/// The two binaries, each with its release, and the direction.
struct Steps {
    old: (PathBuf, String),
    new: (PathBuf, String),
    back: bool,
}

async fn drive(
    cfg: &RunConfig,
    c: &mut Cluster,
    steps: &Steps,
) -> anyhow::Result<(Evidence, Report, Vec<Replacement>)> {
    let (load, _rng, workload_start_ms) = start_load(cfg, c).await?;
    let mut replacements = Vec::new();
    let done: anyhow::Result<()> = async {
        tokio::time::sleep(cfg.duration / 5).await;
        let leader = c.wait_leader(Duration::from_secs(30)).await?;
        expect_format(c, leader, 1).await.context("before the upgrade")?;

        let (new, new_rel) = &steps.new;
        say(format!("replacing every node with {new_rel}, followers first, the leader last"));
        replace_all(c, new, new_rel, &|| load.ops(), &mut replacements).await?;
        let leader = c.wait_leader(Duration::from_secs(30)).await?;
        expect_format(c, leader, 1).await.context("every node upgraded, not finalized")?;

        if steps.back {
            let (old, old_rel) = &steps.old;
            say(format!("going back: replacing every node with {old_rel} again, followers first, the leader last"));
            replace_all(c, old, old_rel, &|| load.ops(), &mut replacements).await?;
            let since = replacements.last().map_or(0, |r| r.end_ms);
            wait_until(Duration::from_secs(30), "an acknowledged enqueue after the way back", async || {
                Ok(load.ops().iter().any(|o| o.is_write() && o.outcome == Outcome::Ok && o.complete_ms > since))
            })
            .await?;
            say(format!("every node runs {old_rel} again, on the directories {new_rel} used; the load goes on"));
        } else {
            finalize(c).await?;
            let leader = c.wait_leader(Duration::from_secs(30)).await?;
            expect_format(c, leader, 2).await.context("after the finalize")?;
        }

        let elapsed = Duration::from_millis(now_ms().saturating_sub(workload_start_ms));
        let tail = cfg.duration.saturating_sub(elapsed).max(MIN_TAIL);
        say(format!("the rest of the load: {} s", tail.as_secs()));
        tokio::time::sleep(tail).await;
        Ok(())
    }
    .await;
    let ops = load.stop().await;
    let workload_end_ms = now_ms();
    done?;
    say(format!("workload stopped: {} operations, {} replacements; draining", ops.len(), replacements.len()));

    for r in &mut replacements {
        r.write_gap_ms = write_gap(&ops, r.start_ms, r.end_ms);
    }
    let faults = replacements
        .iter()
        .map(|r| Fault {
            kind: FaultKind::Upgrade,
            nodes: vec![r.node],
            leader_hit: r.was_leader,
            start_ms: r.start_ms,
            end_ms: r.end_ms,
        })
        .collect();
    let (evidence, report) = conclude(cfg, c, ops, faults, workload_start_ms, workload_end_ms).await?;
    Ok((evidence, report, replacements))
}

/// Replaces every node whose binary is not `bin` with it, one at a time:
/// a follower while there is one, the leader (whoever leads at that
/// moment) last.
async fn replace_all(
    c: &mut Cluster,
    bin: &Path,
    release: &str,
    ops: &impl Fn() -> Vec<Op>,
    out: &mut Vec<Replacement>,
) -> anyhow::Result<()> {
    let mut pending: BTreeSet<u64> = c.ids().into_iter().filter(|&id| c.node_binary(id) != bin).collect();
    while !pending.is_empty() {
        let leader = c.wait_leader(Duration::from_secs(30)).await?;
        let id = pending.iter().copied().find(|&id| id != leader).unwrap_or(leader);
        pending.remove(&id);
        let mut r = replace(c, id, id == leader, bin, release, out.len() + 1).await?;
        r.write_gap_ms = write_gap(&ops(), r.start_ms, r.end_ms);
        say(format!(
            "replacement {}: node {} {} → {} in {} ms (drain and exit {} ms, start to ready {} ms, catch-up {} ms); \
             longest gap without an acknowledged enqueue {} ms",
            out.len() + 1,
            id,
            r.from,
            r.to,
            r.end_ms - r.start_ms,
            r.stopped_ms - r.start_ms,
            r.ready_ms - r.stopped_ms,
            r.end_ms - r.ready_ms,
            r.write_gap_ms
        ));
        out.push(r);
        tokio::time::sleep(PAUSE).await;
    }
    Ok(())
}

/// One node: SIGTERM, wait for it to drain and exit, start `bin` on its
/// data directory, wait until it is ready, a leader is confirmed, it has
/// applied what the leader had committed, and it reports `release`.
async fn replace(
    c: &mut Cluster,
    id: u64,
    was_leader: bool,
    bin: &Path,
    release: &str,
    n: usize,
) -> anyhow::Result<Replacement> {
    let from = release_of(c.node_binary(id)).unwrap_or_else(|| "?".into());
    say(format!(
        "replacement {n}: node {id}{}: SIGTERM (it drains), then {release} on the same data directory",
        if was_leader { " (the leader)" } else { "" }
    ));
    let start_ms = now_ms();
    c.term(id)?;
    let status = c.wait_exit(id, STOP_TIMEOUT).await.context("a SIGTERMed node drains and exits")?;
    let stopped_ms = now_ms();
    if !status.success() {
        bail!("node {id} exited with {status} after SIGTERM (a graceful stop exits 0)");
    }
    c.set_node_binary(id, bin.to_path_buf());
    c.restart(id)?;
    c.wait_ready(id, READY_TIMEOUT).await.with_context(|| format!("node {id} started on {release}"))?;
    let ready_ms = now_ms();
    let leader = c.wait_leader(Duration::from_secs(30)).await?;
    let committed = c.api.cluster(&c.addr(leader)).await?.commit_index.unwrap_or(0);
    let addr = c.addr(id);
    wait_until(Duration::from_secs(30), &format!("node {id} to apply index {committed}"), async || {
        Ok(c.api.cluster(&addr).await?.applied_index.unwrap_or(0) >= committed)
    })
    .await?;
    // 0.1.0 names no release in its answers.
    let reported = c.api.cluster(&addr).await?.release.unwrap_or_else(|| "0.1.0".into());
    ensure!(reported == release, "node {id}, started on {}, reports release {reported}", bin.display());
    let end_ms = now_ms();
    Ok(Replacement {
        node: id,
        from,
        to: release.to_string(),
        was_leader,
        start_ms,
        stopped_ms,
        ready_ms,
        end_ms,
        write_gap_ms: 0,
    })
}

/// Checks that every live node says the cluster's stored format is
/// `format` (a 0.1.0 node names none: format 1), waiting up to 30 s for
/// followers to apply it.
async fn expect_format(c: &Cluster, leader: u64, format: u32) -> anyhow::Result<()> {
    let mut ids = c.live_ids();
    ids.sort_by_key(|&id| id != leader);
    for id in ids {
        let addr = c.addr(id);
        wait_until(Duration::from_secs(30), &format!("node {id} to report stored format {format}"), async || {
            let s: Value = c.api.call(Method::GET, &addr, "/api/v1/cluster", None).await?;
            let have = s.get("format").map_or(Some(1), Value::as_u64);
            if have == Some(u64::from(format)) {
                Ok(true)
            } else {
                bail!("it reports format {:?}", s.get("format"))
            }
        })
        .await?;
    }
    say(format!("every node reports stored format {format}"));
    Ok(())
}

/// `POST /api/v1/cluster/finalize` to the leader (following `not_leader`),
/// again until it answers 200 (a member's version may not be known yet:
/// 409 `upgrade_needed`), for up to [`FINALIZE_TIMEOUT`].
async fn finalize(c: &Cluster) -> anyhow::Result<()> {
    say("finalizing: POST /api/v1/cluster/finalize");
    let started = now_ms();
    let body = wait_for(FINALIZE_TIMEOUT, "the finalize to be accepted", async || {
        let mut addr = c.addr(c.leader().await?);
        for _ in 0..3 {
            let reply = c.api.raw(Method::POST, &addr, "/api/v1/cluster/finalize", None).await?;
            match (reply.status, reply.error_code()) {
                (StatusCode::OK, _) => return Ok(Some(reply.body)),
                (StatusCode::MISDIRECTED_REQUEST, Some(ErrorCode::NotLeader)) => {
                    match reply.body.pointer("/error/leader").and_then(Value::as_str) {
                        Some(leader) => addr = leader.trim_start_matches("http://").to_string(),
                        None => bail!("{addr} is not the leader and names none"),
                    }
                }
                (status, _) => bail!("{addr} answered {status}: {}", reply.body),
            }
        }
        bail!("three not_leader answers in a row")
    })
    .await?;
    ensure!(body.get("format") == Some(&json!(2)), "the finalize answered {body}, not format 2");
    say(format!("finalized in {} ms: {body}", now_ms() - started));
    Ok(())
}

/// The longest interval in `from..to` without an acknowledged enqueue.
fn write_gap(ops: &[Op], from: u64, to: u64) -> u64 {
    let mut times: Vec<u64> = ops
        .iter()
        .filter(|o| o.is_write() && o.outcome == Outcome::Ok && (from..=to).contains(&o.complete_ms))
        .map(|o| o.complete_ms)
        .collect();
    times.extend([from, to]);
    times.sort_unstable();
    times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0)
}

fn upgrade_summary(steps: &Steps, rs: &[Replacement]) -> String {
    let mut out = format!(
        "upgrade summary: {} → {}{}\n",
        steps.old.1,
        steps.new.1,
        if steps.back { format!(" → {} (not finalized)", steps.old.1) } else { ", finalized (format 2)".into() }
    );
    out.push_str(&format!(
        "  {:<3} {:<5} {:<18} {:<7} {:>9} {:>11} {:>9} {:>9} {:>10}\n",
        "#", "node", "release", "leader", "total ms", "drain+exit", "to ready", "catch-up", "write gap"
    ));
    for (i, r) in rs.iter().enumerate() {
        out.push_str(&format!(
            "  {:<3} {:<5} {:<18} {:<7} {:>9} {:>11} {:>9} {:>9} {:>10}\n",
            i + 1,
            r.node,
            format!("{} → {}", r.from, r.to),
            if r.was_leader { "yes" } else { "no" },
            r.end_ms - r.start_ms,
            r.stopped_ms - r.start_ms,
            r.ready_ms - r.stopped_ms,
            r.end_ms - r.ready_ms,
            r.write_gap_ms
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::history::OpKind;

    fn write(complete_ms: u64, outcome: Outcome) -> Op {
        Op {
            client: 0,
            node: 1,
            kind: OpKind::Enqueue { count: 1, key: None, try_no: 1 },
            invoke_ms: complete_ms,
            complete_ms,
            outcome,
            ids: vec![complete_ms],
            error: None,
        }
    }

    #[test]
    fn the_write_gap_is_the_longest_interval_without_an_acknowledged_enqueue() {
        let ops =
            [write(50, Outcome::Ok), write(120, Outcome::Ok), write(400, Outcome::Failed), write(700, Outcome::Ok)];
        assert_eq!(write_gap(&ops, 100, 1_000), 580, "120 → 700");
        assert_eq!(write_gap(&ops, 100, 110), 10, "no write in the window");
        assert_eq!(write_gap(&[], 0, 0), 0);
    }
}
