//! A rolling upgrade from 0.1.0, in one binary: node 1 runs with the hidden
//! `--behave-as-format 1` flag, so it reports release 0.1.0 and stored
//! format 1 as a node not yet upgraded would (CI has no 0.1.0 binary; the
//! real one is exercised by `scripts/upgrade-test.sh`). Issue 12:
//!
//! - the cluster stays at format 1 and writes version 3 snapshots, which
//!   0.1.0 reads;
//! - a format 2 command (`skein queue redrive`) is refused with a 409 that
//!   names the node to upgrade; so is `skein cluster finalize`;
//! - once node 1 runs as 0.2.0, finalize raises the format, the command
//!   works, and snapshots become version 4.
//!
//! Needs the binaries: `cargo build --workspace --bins` first.

use std::time::Duration;

use anyhow::{ensure, Context};
use reqwest::Method;
use serde_json::{json, Value};
use skein_raft::fsm::TaskStatus;
use skein_testkit::{wait_for, wait_until, Cluster, Spec};
use skein_tests::checks::say;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn a_mixed_version_cluster_refuses_new_commands_until_finalized() {
    let mut layout = Spec::free(3).expect("free ports");
    layout.node_args.insert(1, vec!["--behave-as-format".into(), "1".into()]);
    let mut c = Cluster::start_layout(layout).await.expect("starting the cluster");
    let result = run(&mut c).await;
    c.finish(result);
}

/// The snapshot file version of a backup taken now (bytes 8..12 of the file).
async fn backup_version(c: &Cluster, dir: &std::path::Path, name: &str) -> anyhow::Result<u32> {
    let file = dir.join(name);
    let out = c.cli(&["--addr", &c.live_addrs().join(","), "admin", "backup", &file.display().to_string()]).await?;
    ensure!(out.status.success(), "skein admin backup failed: {}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(&file)?;
    Ok(u32::from_be_bytes(bytes[8..12].try_into()?))
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

async fn run(c: &mut Cluster) -> anyhow::Result<()> {
    let addrs = c.live_addrs().join(",");
    let skein = |args: &[&'static str]| -> Vec<String> {
        ["--addr", addrs.as_str()].iter().chain(args).map(|s| s.to_string()).collect()
    };
    let tmp = tempfile::tempdir()?;

    // A task that dies at once (no such transform), so there is a dead
    // letter to redrive.
    let http = c.addr(c.leader().await?);
    let id = c.api.enqueue(&http, &[json!({"queue": "etl", "kind": "no-such-transform", "max_attempts": 1})]).await?[0];
    wait_for(WAIT, "the task to die", async || {
        let d = c.api.task(&http, id).await?;
        Ok((d.task.status == TaskStatus::Dead).then_some(()))
    })
    .await?;

    say("before finalize: format 1, version 3 snapshots, and every member's version known");
    let status: Value = c.api.call(Method::GET, &http, "/api/v1/cluster", None).await?;
    ensure!(status["format"] == json!(1), "a cluster bootstrapped by a 0.1.0 node is at format 1: {status}");
    ensure!(backup_version(c, tmp.path(), "before.snap").await? == 3, "before finalize, snapshots are version 3");
    wait_until(WAIT, "the leader to know node 1 runs 0.1.0", async || {
        let s: Value = c.api.call(Method::GET, &c.addr(c.leader().await?), "/api/v1/cluster", None).await?;
        Ok(s["nodes"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n["id"] == json!(1) && n["release"] == json!("0.1.0"))))
    })
    .await?;

    say("a format 2 command is refused, naming node 1");
    let out = c.cli(&strs(&skein(&["queue", "redrive", "etl"]))).await?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "redrive went through before finalize");
    ensure!(err.contains("needs stored format 2") && err.contains("node 1 runs 0.1.0"), "redrive's refusal: {err}");
    ensure!(err.contains("409"), "a 409: {err}");
    ensure!(c.api.task(&http, id).await?.task.status == TaskStatus::Dead, "the refused redrive changed the task");

    say("finalize is refused while node 1 runs 0.1.0");
    let out = c.cli(&strs(&skein(&["cluster", "finalize"]))).await?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success() && err.contains("node 1 runs 0.1.0"), "finalize with node 1 on 0.1.0: {err}");
    let out = c.cli(&strs(&skein(&["cluster", "status"]))).await?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(text.contains("RELEASE") && text.contains("stored format: 1"), "cluster status:\n{text}");
    ensure!(text.contains("node 1 still to upgrade"), "cluster status names the node to upgrade:\n{text}");

    say("node 1 upgraded (restarted without the flag); finalize, then the command works");
    c.set_node_args(1, vec!["--voters".into(), "3".into()]);
    c.term(1)?;
    c.wait_exit(1, WAIT).await?;
    c.restart(1)?;
    c.wait_ready(1, WAIT).await?;
    let out = wait_for(WAIT, "finalize to succeed", async || {
        let out = c.cli(&strs(&skein(&["cluster", "finalize"]))).await?;
        Ok(out.status.success().then_some(out))
    })
    .await?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        text.contains(&format!("finalized: the cluster now writes stored format {}", skein_raft::format::LATEST)),
        "finalize said: {text}"
    );
    let out = c.cli(&strs(&skein(&["cluster", "finalize"]))).await?;
    ensure!(String::from_utf8_lossy(&out.stdout).contains("already finalized"), "a second finalize changes nothing");

    let out = c.cli(&strs(&skein(&["--output", "json", "queue", "redrive", "etl"]))).await?;
    ensure!(out.status.success(), "redrive after finalize: {}", String::from_utf8_lossy(&out.stderr));
    let reply: Value = serde_json::from_slice(&out.stdout).context("redrive's JSON")?;
    ensure!(reply["tasks"][0]["id"] == json!(id), "redrive retried task {id}: {reply}");
    ensure!(c.api.task(&http, id).await?.history.len() > 3, "the retry is in the task's history");
    let newest = skein_raft::format::snapshot_version_of(skein_raft::format::LATEST);
    ensure!(
        backup_version(c, tmp.path(), "after.snap").await? == newest,
        "after finalize, snapshots are version {newest}"
    );
    Ok(())
}
