//! Bad input never crashes a node: malformed and oversized requests get
//! clear 4xx answers, a stale completion is fenced off, a write without a
//! reachable leader answers 503 instead of hanging, and a node that cannot
//! join exits with a clear message.
//!
//! Needs the binaries: `cargo build --workspace --bins` first.

use skein_raft::api::ErrorCode;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use reqwest::{Method, StatusCode};
use serde_json::json;
use skein_raft::fsm::{Completion, EventKind, FencingToken, Outcome, Rejection, TaskId, TaskStatus};
use skein_testkit::api::Reply;
use skein_testkit::process::{free_port, log_tail, Process};
use skein_testkit::{wait_for, Cluster};
use skein_tests::checks::say;
use skein_transport::{CompleteRequest, Peers, PeersConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_never_crashes_a_node() {
    let mut c = Cluster::start(3).await.expect("starting 3 nodes");
    let result = bad_input(&mut c).await;
    c.finish(result);
}

/// Expects `status` and `{"error": {"code": code, ...}}`.
fn expect(what: &str, reply: &Reply, status: StatusCode, code: ErrorCode) -> anyhow::Result<()> {
    ensure!(
        reply.status == status && reply.error_code() == Some(code),
        "{what}: expected {status} with code {code:?}, got {} {}",
        reply.status,
        reply.body
    );
    ensure!(
        reply.body.pointer("/error/message").and_then(|m| m.as_str()).is_some_and(|m| !m.is_empty()),
        "{what}: no error message in {}",
        reply.body
    );
    Ok(())
}

async fn bad_input(c: &mut Cluster) -> anyhow::Result<()> {
    // Started first: it keeps retrying its join for a while.
    let lonely_dir = tempfile::tempdir()?;
    let nowhere = format!("127.0.0.1:{}", free_port()?);
    let lonely_log = lonely_dir.path().join("node.log");
    let args: Vec<String> = [
        "--id",
        "99",
        "--listen",
        &format!("127.0.0.1:{}", free_port()?),
        "--http",
        &format!("127.0.0.1:{}", free_port()?),
        "--data-dir",
        &lonely_dir.path().join("data").display().to_string(),
        "--join",
        &nowhere,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut lonely = Process::spawn(&c.bins().node, &args, &lonely_log)?;
    let lonely_started = Instant::now();

    let leader = c.leader().await?;
    let follower = c.live_ids().into_iter().find(|&id| id != leader).context("no follower")?;
    let post = |body: &[u8]| Some(body.to_vec());
    for id in [leader, follower] {
        let addr = c.addr(id);
        let api = &c.api;
        let raw = |method: Method, path: &'static str, body: Option<Vec<u8>>| {
            let addr = addr.clone();
            async move { api.raw(method, &addr, path, body).await }
        };
        let who = |what: &str| format!("node {id}: {what}");
        expect(
            &who("malformed JSON"),
            &raw(Method::POST, "/api/v1/tasks", post(b"{\"tasks\": [")).await?,
            StatusCode::BAD_REQUEST,
            ErrorCode::Invalid,
        )?;
        expect(
            &who("wrong type"),
            &raw(Method::POST, "/api/v1/tasks", post(b"{\"queue\": 5}")).await?,
            StatusCode::BAD_REQUEST,
            ErrorCode::Invalid,
        )?;
        expect(
            &who("unknown field"),
            &raw(Method::POST, "/api/v1/tasks", post(br#"{"queue": "q", "colour": "red"}"#)).await?,
            StatusCode::BAD_REQUEST,
            ErrorCode::Invalid,
        )?;
        expect(
            &who("empty body"),
            &raw(Method::POST, "/api/v1/tasks", None).await?,
            StatusCode::BAD_REQUEST,
            ErrorCode::Invalid,
        )?;
        expect(
            &who("empty batch"),
            &raw(Method::POST, "/api/v1/tasks", post(br#"{"tasks": []}"#)).await?,
            StatusCode::BAD_REQUEST,
            ErrorCode::Invalid,
        )?;
        expect(
            &who("unknown task"),
            &raw(Method::GET, "/api/v1/tasks/987654321", None).await?,
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
        )?;
        expect(
            &who("task id abc"),
            &raw(Method::GET, "/api/v1/tasks/abc", None).await?,
            StatusCode::BAD_REQUEST,
            ErrorCode::Invalid,
        )?;
        expect(
            &who("task id -1"),
            &raw(Method::GET, "/api/v1/tasks/-1", None).await?,
            StatusCode::BAD_REQUEST,
            ErrorCode::Invalid,
        )?;
        expect(
            &who("status=bogus"),
            &raw(Method::GET, "/api/v1/tasks?status=bogus", None).await?,
            StatusCode::BAD_REQUEST,
            ErrorCode::Invalid,
        )?;
        expect(
            &who("cancel unknown task"),
            &raw(Method::POST, "/api/v1/tasks/987654321/cancel", None).await?,
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
        )?;
        expect(
            &who("bad queue setting"),
            &raw(Method::PATCH, "/api/v1/queues/q", post(br#"{"lease_ms": "soon"}"#)).await?,
            StatusCode::BAD_REQUEST,
            ErrorCode::Invalid,
        )?;
        expect(
            &who("drain unknown node"),
            &raw(Method::POST, "/api/v1/cluster/nodes/12345/drain", None).await?,
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
        )?;
        expect(
            &who("no such route"),
            &raw(Method::GET, "/api/v1/nope", None).await?,
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
        )?;

        let big = json!({"queue": "q", "kind": "noop", "payload": {"blob": "x".repeat((1 << 20) + 1000)}}).to_string();
        let reply = raw(Method::POST, "/api/v1/tasks", Some(big.into_bytes())).await?;
        expect(&who("payload over 1 MiB"), &reply, StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge)?;
        // One oversized task fails the batch, and nothing of it is enqueued.
        let batch = json!({"tasks": [
            {"queue": "all-or-none", "kind": "noop"},
            {"queue": "all-or-none", "kind": "noop", "payload": {"blob": "x".repeat((1 << 20) + 1000)}},
        ]})
        .to_string();
        let reply = raw(Method::POST, "/api/v1/tasks", Some(batch.into_bytes())).await?;
        expect(
            &who("batch with one payload over 1 MiB"),
            &reply,
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
        )?;
        let counts = c.api.counts(&addr, "all-or-none").await?;
        ensure!(counts.values().all(|&n| n == 0), "a refused batch left tasks behind: {counts:?}");

        ensure!(c.api.healthy(&addr).await?, "node {id} is not healthy after bad input");
    }
    for id in c.live_ids() {
        ensure!(c.api.healthy(&c.addr(id)).await?, "node {id} is not healthy after bad input");
    }
    say("bad requests answered 400/404/413 with codes; every node healthy");

    stale_completions(c, leader).await?;

    // The node that could not join gives up with a clear message.
    let left = Duration::from_secs(40).saturating_sub(lonely_started.elapsed());
    let status = lonely.wait_exit(left).await.context("a node joining nowhere should give up")?;
    let gave_up = lonely_started.elapsed();
    let log = log_tail(&lonely_log, 10);
    say(format!("FIGURE a node joining nowhere exited with {status} after {gave_up:?}"));
    ensure!(!status.success(), "a node that could not join exited successfully");
    ensure!(log.contains("could not join"), "its log does not say it could not join:\n{log}");
    ensure!(gave_up < Duration::from_secs(30), "it took {gave_up:?} to give up");

    // A follower whose leader and other follower are gone: 503, not a hang.
    for id in c.live_ids().into_iter().filter(|&id| id != follower) {
        c.kill9(id)?;
    }
    let addr = c.addr(follower);
    let reply = c.api.raw(Method::POST, &addr, "/api/v1/tasks", post(br#"{"queue": "q", "kind": "noop"}"#)).await?;
    say(format!("FIGURE write with no reachable leader: {} after {:?}", reply.status, reply.elapsed));
    expect("write with no reachable leader", &reply, StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable)?;
    ensure!(reply.elapsed < Duration::from_secs(10), "the 503 took {:?}", reply.elapsed);
    ensure!(c.api.healthy(&addr).await?, "the survivor is not healthy");
    let reply = c.api.raw(Method::GET, &addr, "/api/v1/tasks?limit=5", None).await?;
    ensure!(reply.status == StatusCode::OK, "reads on the survivor: {} {}", reply.status, reply.body);
    Ok(())
}

/// Completions with a wrong token, an old token and for no task, sent
/// straight to the leader over RPC, are rejected one by one and change
/// nothing.
async fn stale_completions(c: &Cluster, leader: u64) -> anyhow::Result<()> {
    let addr = c.addr(leader);
    let specs = [
        json!({"queue": "stale", "kind": "sleep", "payload": {"ms": 60000}}),
        json!({"queue": "stale", "kind": "noop"}),
    ];
    let ids = c.api.enqueue(&addr, &specs).await?;
    let (running, done) = (ids[0], ids[1]);
    let (running_d, done_d) = wait_for(Duration::from_secs(20), "one task leased and one succeeded", async || {
        let r = c.api.task(&addr, running).await?;
        let d = c.api.task(&addr, done).await?;
        Ok((r.task.status == TaskStatus::Leased && d.task.status == TaskStatus::Succeeded).then_some((r, d)))
    })
    .await?;
    let lease = running_d.task.lease.clone().context("a leased task without a lease")?;
    let old_token = done_d
        .history
        .iter()
        .find_map(|e| matches!(e.what, EventKind::Leased { .. }).then_some(e.token).flatten())
        .context("no lease in a succeeded task's history")?;

    let peers = Peers::new(PeersConfig::default());
    let rpc = &c.node(leader).rpc;
    let ok = |task: u64, token: FencingToken| Completion {
        task: TaskId(task),
        token,
        outcome: Outcome::Succeeded { result: "{\"forged\": true}".into() },
    };
    let req = CompleteRequest {
        node: lease.node,
        completions: vec![ok(running, FencingToken(999_999)), ok(done, old_token), ok(987_654_321, FencingToken(1))],
    };
    let results = peers.complete(rpc, req).await.context("sending completions to the leader")?;
    say(format!("stale completions answered: {results:?}"));
    ensure!(results.len() == 3, "3 completions, {} answers: {results:?}", results.len());
    ensure!(
        results[0]
            == Err(Rejection::StaleToken {
                task: TaskId(running),
                token: FencingToken(999_999),
                current: Some(lease.token)
            }),
        "a wrong token: {:?}",
        results[0]
    );
    ensure!(
        results[1] == Err(Rejection::StaleToken { task: TaskId(done), token: old_token, current: None }),
        "the token of a finished task: {:?}",
        results[1]
    );
    ensure!(results[2] == Err(Rejection::UnknownTask(TaskId(987_654_321))), "no such task: {:?}", results[2]);

    let after = c.api.task(&addr, running).await?;
    ensure!(
        after.task.lease.as_ref().map(|l| l.token) == Some(lease.token),
        "the running task's lease changed: {:?}",
        after.task
    );
    let after = c.api.task(&addr, done).await?;
    ensure!(after.result != Some(json!({"forged": true})), "a stale completion overwrote the result");
    ensure!(after.history == done_d.history, "a stale completion changed a finished task's history");
    c.api.cancel(&addr, running).await?;
    Ok(())
}
