//! Autoscaling on backlog, end to end on a real node: `GET /api/v1/scale`
//! (what KEDA's `metrics-api` scaler reads), the `skein_scale_tasks` gauge
//! of `/metrics` and `skein scale` agree on the workers a backlog needs,
//! within a queue's concurrency cap, with a paused queue's pending tasks
//! left out and its running ones kept; the route refuses a caller without a
//! token and serves a `read` one.
//!
//! Needs the binaries: `cargo build --workspace --bins` first.

use std::time::Duration;

use anyhow::{ensure, Context};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use skein_raft::api::ErrorCode;
use skein_raft::fsm::TaskStatus;
use skein_testkit::{wait_until, Api, Cluster};
use skein_tests::checks::say;

/// A task that holds its slot for the whole test.
fn long(queue: &str) -> Value {
    json!({"queue": queue, "kind": "sleep", "payload": {"ms": 600_000}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_counts_running_and_ready_within_caps_and_pauses() {
    skein_tests::bounded::with_cluster("skein-scale-", 1, Vec::new(), Duration::from_secs(120), async |c, _| {
        scale(c).await
    })
    .await;
}

async fn scale(c: &mut Cluster) -> anyhow::Result<()> {
    let addr = c.addr(1);
    // The node works with 4 slots. "capped" runs at most 2 at once, of 6.
    c.api.configure_queue(&addr, "capped", json!({"concurrency": 2})).await?;
    let capped = c.api.enqueue(&addr, &vec![long("capped"); 6]).await?;
    // "held" runs 1, is paused, then gets 3 more: they wait.
    c.api.enqueue(&addr, &[long("held")]).await?;
    wait_leased(c, "capped", 2).await?;
    wait_leased(c, "held", 1).await?;
    c.api.pause(&addr, "held").await?;
    c.api.enqueue(&addr, &vec![long("held"); 3]).await?;
    // "waiting": blocked on a task of "capped" that has not run; it needs no
    // slot, though the node has one free.
    let blocked = json!({"queue": "waiting", "kind": "noop", "depends_on": [capped[5]]});
    c.api.enqueue(&addr, &[blocked]).await?;
    let counts = c.api.counts(&addr, "waiting").await?;
    ensure!(counts.get(&TaskStatus::Blocked) == Some(&1), "the dependent task is not blocked: {counts:?}");
    // Nothing moves from here: the leases hold, the cap and the pause hold
    // the rest back.
    ensure!(c.api.counts(&addr, "capped").await?.get(&TaskStatus::Leased) == Some(&2), "the cap of 2 was exceeded");

    let one = get(&c.api, &addr, "/api/v1/scale?queue=capped&per_worker=1").await?;
    say(format!("GET /api/v1/scale?queue=capped&per_worker=1: {one}"));
    ensure!(
        one == json!({"queue": "capped", "tasks": 2, "per_worker": 1, "workers": 2, "ready": 4, "running": 2,
                      "paused": false}),
        "the capped queue: {one}"
    );
    let held = get(&c.api, &addr, "/api/v1/scale?queue=held&per_worker=4").await?;
    ensure!(
        held == json!({"queue": "held", "tasks": 1, "per_worker": 4, "workers": 1, "ready": 0, "running": 1,
                       "paused": true}),
        "the paused queue: {held}"
    );
    let waiting = get(&c.api, &addr, "/api/v1/scale?queue=waiting").await?;
    ensure!(waiting["tasks"] == 0 && waiting["workers"] == 0, "a blocked task needs no worker: {waiting}");
    // Every queue: 2 + 1 + 0 tasks, 2 slots a worker: 2 workers.
    let all = get(&c.api, &addr, "/api/v1/scale?per_worker=2").await?;
    ensure!(
        all == json!({"queue": null, "tasks": 3, "per_worker": 2, "workers": 2, "ready": 4, "running": 3,
                      "paused": false}),
        "every queue: {all}"
    );
    // An empty queue= is every queue, as in the other reads.
    let empty = get(&c.api, &addr, "/api/v1/scale?queue=&per_worker=2").await?;
    ensure!(empty == all, "queue= answered {empty}, not {all}");
    // A queue nobody enqueued to yet: zeros, so an autoscaler may scale to 0.
    let unknown = get(&c.api, &addr, "/api/v1/scale?queue=not-yet").await?;
    let zeros = json!({"queue": "not-yet", "tasks": 0, "per_worker": 1, "workers": 0, "ready": 0, "running": 0,
                       "paused": false});
    ensure!(unknown == zeros, "an unknown queue: {unknown}");

    for bad in ["0", "10001", "-3", "lots", ""] {
        let r = c.api.raw(Method::GET, &addr, &format!("/api/v1/scale?per_worker={bad}"), None).await?;
        ensure!(
            r.status == StatusCode::BAD_REQUEST && r.error_code() == Some(ErrorCode::Invalid),
            "per_worker={bad}: expected 400 invalid, got {} {}",
            r.status,
            r.body
        );
        let message = r.body.pointer("/error/message").and_then(Value::as_str).unwrap_or("");
        ensure!(message.contains("per_worker") && message.contains("1 to 10000"), "per_worker={bad}: {message}");
    }

    // The gauge: each queue's tasks.
    let metrics = c.api.raw(Method::GET, &addr, "/metrics", None).await?;
    ensure!(metrics.status.is_success(), "GET /metrics: {}", metrics.status);
    let text = metrics.body.as_str().context("/metrics is not text")?;
    for (queue, want) in [("capped", 2.0), ("held", 1.0), ("waiting", 0.0)] {
        let got = gauge(text, &format!("skein_scale_tasks{{queue=\"{queue}\"}}"))?;
        ensure!(got == want, "skein_scale_tasks of {queue}: {got}, not {want}");
    }

    // The CLI prints the same answer.
    let out = c.cli(&["--addr", &addr, "-o", "json", "scale", "--queue", "capped", "--per-worker", "3"]).await?;
    ensure!(out.status.success(), "skein scale: {}", String::from_utf8_lossy(&out.stderr));
    let printed: Value = serde_json::from_slice(&out.stdout).context("skein -o json scale prints JSON")?;
    ensure!(printed["workers"] == 1 && printed["tasks"] == 2, "skein scale printed {printed}");
    let out = c.cli(&["--addr", &addr, "scale", "--per-worker", "2"]).await?;
    let table = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success() && table.contains("WORKERS"), "skein scale: {table}");
    say(format!("skein scale --per-worker 2:\n{table}"));

    // Secure by default: no token, 401; a read token, the answer.
    let anonymous = c.api.clone().without_token();
    let r = anonymous.raw(Method::GET, &addr, "/api/v1/scale?queue=capped", None).await?;
    ensure!(
        r.status == StatusCode::UNAUTHORIZED && r.error_code() == Some(ErrorCode::Unauthenticated),
        "without a token: {} {}",
        r.status,
        r.body
    );
    let made = c
        .api
        .raw(Method::POST, &addr, "/api/v1/tokens", Some(json!({"role": "read", "name": "keda"}).to_string().into()))
        .await?;
    ensure!(made.status == StatusCode::CREATED, "creating a read token: {} {}", made.status, made.body);
    let token = made.body["token"].as_str().context("no token in the answer")?;
    let reader = Api::new().with_token(token);
    let r = get(&reader, &addr, "/api/v1/scale?queue=capped&per_worker=1").await?;
    ensure!(r == one, "a read token's answer {r} differs from {one}");
    Ok(())
}

async fn get(api: &Api, addr: &str, path: &str) -> anyhow::Result<Value> {
    api.call(Method::GET, addr, path, None).await
}

/// Waits until `n` tasks of `queue` are leased.
async fn wait_leased(c: &Cluster, queue: &str, n: u64) -> anyhow::Result<()> {
    let addr = c.addr(1);
    wait_until(Duration::from_secs(30), &format!("{n} leased tasks in {queue}"), async || {
        Ok(c.api.counts(&addr, queue).await?.get(&TaskStatus::Leased) == Some(&n))
    })
    .await
}

/// The value of the sample named exactly `series` (name and labels).
fn gauge(text: &str, series: &str) -> anyhow::Result<f64> {
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(series))
        .with_context(|| format!("no {series} in /metrics"))?;
    let value = line.split_whitespace().nth(1).context("a sample without a value")?;
    value.parse().with_context(|| format!("{series}: {value:?} is not a number"))
}
