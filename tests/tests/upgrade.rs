//! A data directory written by skein 0.1.0 opens in this version with every
//! task, queue, plan, history event, payload, result and fencing token
//! intact, and the token counter past every token 0.1.0 issued (issue 12).
//!
//! The fixture, `tests/fixtures/datadir-0.1.0.tar.gz`, is a one-node
//! cluster's data directory made by the 0.1.0 binaries with
//! `scripts/make-datadir-fixture.py` (its docs list what it holds: every
//! task status, a migration plan that ran, a snapshot, log entries after
//! it), and `expected.json`: what 0.1.0's API showed just before it stopped.
//!
//! Needs the binaries: `cargo build --workspace --bins` first.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use reqwest::Method;
use serde_json::{json, Value};
use skein_testkit::process::{free_port, log_tail, Binaries, Process};
use skein_testkit::{wait_for, wait_until, Api};

const FIXTURE: &str = "datadir-0.1.0.tar.gz";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

/// Where `actual` differs from `expected`: every field `expected` has must be
/// in `actual` and equal (a newer version may add fields; it may not lose or
/// change one). Objects are compared key by key, arrays item by item.
fn differences(path: &str, expected: &Value, actual: &Value, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                match a.get(k) {
                    Some(av) => differences(&format!("{path}.{k}"), ev, av, out),
                    None => out.push(format!("{path}.{k}: missing (was {ev})")),
                }
            }
        }
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => {
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                differences(&format!("{path}[{i}]"), ev, av, out);
            }
        }
        (e, a) if e != a => out.push(format!("{path}: {a} (was {e})")),
        _ => {}
    }
}

/// The parts of a queue listing that do not depend on the time of asking.
fn queue_facts(queues: &Value) -> Value {
    let list = queues["queues"].as_array().cloned().unwrap_or_default();
    Value::Array(
        list.iter()
            .map(|q| json!({"name": q["name"], "config": q["config"], "paused": q["paused"], "counts": q["counts"]}))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_0_1_0_data_directory_opens_with_everything_intact() {
    if let Err(e) = run().await {
        panic!("{e:?}");
    }
}

async fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let status = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(fixture(FIXTURE))
        .arg("-C")
        .arg(dir.path())
        .status()
        .context("running tar")?;
    ensure!(status.success(), "tar could not unpack {FIXTURE}: {status}");
    let expected: Value = serde_json::from_slice(&std::fs::read(dir.path().join("expected.json"))?)?;

    let bins = Binaries::locate()?;
    let (http, rpc) = (format!("127.0.0.1:{}", free_port()?), format!("127.0.0.1:{}", free_port()?));
    let data = dir.path().join("node1");
    let log = dir.path().join("node1.log");
    let args: Vec<String> = ["--id", "1", "--listen", &rpc, "--http", &http, "--slots", "2", "--data-dir"]
        .iter()
        .map(|s| s.to_string())
        .chain([data.display().to_string()])
        .collect();
    let _node = Process::spawn(&bins.node, &args, &log)?;
    let api = Api::new();
    let ready = wait_until(Duration::from_secs(30), "the node on the 0.1.0 directory to be ready", async || {
        Ok(api.raw(Method::GET, &http, "/readyz", None).await?.status.is_success())
    })
    .await;
    if let Err(e) = ready {
        bail!("{e:#}\nits log ends with:\n{}", log_tail(&log, 40));
    }

    let mut diffs = Vec::new();
    let tasks = expected["tasks"].as_array().context("expected.json: tasks")?;
    ensure!(tasks.len() == 15, "the fixture holds {} tasks, 0.1.0 made 15", tasks.len());
    for task in tasks {
        let id = task["id"].as_u64().context("a task id")?;
        let now: Value = api.call(Method::GET, &http, &format!("/api/v1/tasks/{id}"), None).await?;
        differences(&format!("task {id}"), task, &now, &mut diffs);
    }
    let now: Value = api.call(Method::GET, &http, "/api/v1/queues", None).await?;
    differences("queues", &queue_facts(&expected["queues"]), &queue_facts(&now), &mut diffs);
    let now: Value = api.call(Method::GET, &http, "/api/v1/plans", None).await?;
    differences("plans", &expected["plans"], &now, &mut diffs);
    for plan in expected["plan_details"].as_array().context("expected.json: plan_details")? {
        let entity_ref = plan["entity_ref"].as_str().context("a plan's entity_ref")?;
        let path = format!("/api/v1/plans/{}", entity_ref.replacen(':', "/", 1));
        let now: Value = api.call(Method::GET, &http, &path, None).await?;
        differences(entity_ref, plan, &now, &mut diffs);
    }
    ensure!(diffs.is_empty(), "the 0.1.0 directory opened with {} differences:\n{}", diffs.len(), diffs.join("\n"));

    // Every status is there, and so is the migration's result.
    let statuses: std::collections::BTreeSet<&str> = tasks.iter().filter_map(|t| t["status"].as_str()).collect();
    for status in ["pending", "blocked", "succeeded", "dead", "cancelled"] {
        ensure!(statuses.contains(status), "the fixture has no {status} task (it has {statuses:?})");
    }

    // The token counter: a new lease gets a token past every one 0.1.0 issued.
    let max_token = expected["max_token"].as_u64().context("expected.json: max_token")?;
    let id = api.enqueue(&http, &[json!({"queue": "etl", "kind": "noop"})]).await?[0];
    let detail = wait_for(Duration::from_secs(30), "the new task to succeed", async || {
        let d = api.task(&http, id).await?;
        Ok((d.task.status == skein_raft::fsm::TaskStatus::Succeeded).then_some(d))
    })
    .await?;
    let token = detail.history.iter().filter_map(|e| e.token).map(|t| t.0).max().context("the new task's token")?;
    ensure!(token > max_token, "a new lease got token {token}, not past 0.1.0's highest token {max_token}");
    Ok(())
}
