//! The CLI against a fake node: an axum server on 127.0.0.1:0 that records
//! what it is sent and answers as the real HTTP API does. Some tests call
//! `skein_cli::run` in-process; those that check exit codes and standard
//! error run the real `skein` binary.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use clap::Parser;
use serde_json::{json, Value};
use skein_cli::Cli;
use skein_raft::api::TaskSpec;
use skein_raft::fsm::types::QUEUE_SETTINGS;
use skein_raft::fsm::{QueueConfig, QueuePatch};

/// What the fake node was sent.
#[derive(Default)]
struct Seen {
    /// Bodies of `POST /api/v1/tasks`, in order.
    enqueues: Vec<Value>,
    /// Query strings of `GET /api/v1/tasks`.
    list_queries: Vec<String>,
    /// The next task id to hand out.
    next_id: u64,
}

type Shared = Arc<Mutex<Seen>>;

fn seen(s: &Shared) -> std::sync::MutexGuard<'_, Seen> {
    s.lock().expect("lock not poisoned")
}

/// A task as the node serializes it.
fn task_json(id: u64, status: &str) -> Value {
    json!({
        "id": id, "queue": "migrations", "kind": "migration", "priority": 0, "status": status,
        "attempt": 1, "max_attempts": 5, "not_before_ms": 1_795_500_723_000u64, "idempotency_key": "orders-v2",
        "depends_on": [], "lease": null, "progress": null, "last_error": null, "expiry_streak": 0,
        "payload_bytes": 24, "created_ms": 1_795_500_723_000u64, "first_started_ms": 1_795_500_724_000u64,
        "last_started_ms": 1_795_500_724_000u64, "finished_ms": 1_795_500_783_000u64, "history_len": 3
    })
}

fn detail_json(id: u64) -> Value {
    let mut d = task_json(id, "succeeded");
    let o = d.as_object_mut().expect("an object");
    o.insert("payload".into(), json!({"dataset": "orders", "rows": 1000}));
    o.insert("result".into(), json!({"rows_written": 1000}));
    o.insert(
        "history".into(),
        json!([
            {"at_ms": 1_795_500_723_000u64, "node": null, "token": null, "what": {"enqueued": {"status": "pending"}}},
            {"at_ms": 1_795_500_724_000u64, "node": 2, "token": 17, "what": {"leased": {"attempt": 1}}},
            {"at_ms": 1_795_500_783_000u64, "node": 2, "token": 17, "what": "succeeded"}
        ]),
    );
    d
}

fn error(status: StatusCode, code: &str, message: &str, leader: Option<String>) -> (StatusCode, Json<Value>) {
    let mut e = json!({"code": code, "message": message});
    if let Some(l) = leader {
        e["leader"] = json!(l);
    }
    (status, Json(json!({ "error": e })))
}

async fn enqueue(State(s): State<Shared>, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    let n = body.get("tasks").and_then(Value::as_array).map_or(1, Vec::len);
    let mut s = seen(&s);
    s.enqueues.push(body);
    let tasks: Vec<Value> = (0..n)
        .map(|_| {
            s.next_id += 1;
            json!({"id": s.next_id, "created": true, "status": "pending"})
        })
        .collect();
    (StatusCode::CREATED, Json(json!({ "tasks": tasks })))
}

/// Three tasks, two per page.
async fn list(
    State(s): State<Shared>,
    RawQuery(raw): RawQuery,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Json<Value> {
    seen(&s).list_queries.push(raw.unwrap_or_default());
    let after: u64 = q.get("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
    let all = [1u64, 2, 3];
    let page: Vec<u64> = all.iter().copied().filter(|id| *id > after).take(2).collect();
    let next = if page.last().is_some_and(|l| *l < 3) { page.last().copied() } else { None };
    let tasks: Vec<Value> = page.iter().map(|id| task_json(*id, "pending")).collect();
    Json(json!({ "tasks": tasks, "next_cursor": next }))
}

async fn show(Path(id): Path<u64>) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    match id {
        1..=7 => Ok(Json(detail_json(id))),
        _ => Err(error(StatusCode::NOT_FOUND, "not_found", &format!("task {id} not found"), None)),
    }
}

async fn unavailable() -> (StatusCode, Json<Value>) {
    error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "no leader elected yet", None)
}

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

async fn fake_node() -> (SocketAddr, Shared) {
    let state = Shared::default();
    let router = Router::new()
        .route("/api/v1/tasks", post(enqueue).get(list))
        .route("/api/v1/tasks/{id}", get(show))
        .route("/api/v1/queues", get(unavailable))
        .route("/api/v1/queues/{name}/pause", post(|| async { Json(json!({})) }))
        .with_state(state.clone());
    (serve(router).await, state)
}

/// A port nothing listens on (bound, then released).
async fn dead_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("local addr").port()
}

/// Runs the CLI in-process; returns what it printed.
async fn skein(args: &[&str]) -> anyhow::Result<String> {
    let cli = Cli::try_parse_from(std::iter::once("skein").chain(args.iter().copied()))?;
    let mut out = Vec::new();
    skein_cli::run(cli, &mut out).await?;
    Ok(String::from_utf8(out)?)
}

/// Runs the real binary: (exit code, stdout, stderr).
async fn skein_bin(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_skein"))
        .args(args)
        .env_remove("SKEIN_ADDR")
        .output()
        .await
        .expect("runs skein");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn enqueue_sends_the_task_spec() {
    let (addr, state) = fake_node().await;
    let out = skein(&[
        "--addr",
        &addr.to_string(),
        "enqueue",
        "--queue",
        "migrations",
        "--kind",
        "sleep",
        "--payload",
        r#"{"ms": 5}"#,
        "--key",
        "orders-v2",
        "--priority",
        "-2",
        "--max-attempts",
        "3",
        "--depends-on",
        "3",
        "--depends-on",
        "orders-v1",
    ])
    .await
    .expect("enqueue works");

    let bodies = seen(&state).enqueues.clone();
    assert_eq!(bodies.len(), 1);
    assert_eq!(
        bodies[0],
        json!({
            "queue": "migrations", "kind": "sleep", "payload": {"ms": 5}, "priority": -2, "max_attempts": 3,
            "delay_ms": 0, "idempotency_key": "orders-v2", "depends_on": [3, "orders-v1"]
        })
    );
    // The node's own type (deny_unknown_fields) accepts it.
    serde_json::from_value::<TaskSpec>(bodies[0].clone()).expect("a TaskSpec");
    assert_eq!(out, "ID  CREATED  STATUS\n 1  yes      pending\n");
}

#[tokio::test]
async fn enqueue_count_sends_batches_of_1000() {
    let (addr, state) = fake_node().await;
    let out = skein(&["--addr", &format!("http://{addr}/"), "enqueue", "-q", "load", "--count", "2500"])
        .await
        .expect("load works");
    let sizes: Vec<usize> = seen(&state).enqueues.iter().map(|b| b["tasks"].as_array().map_or(0, Vec::len)).collect();
    assert_eq!(sizes, [1000, 1000, 500]);
    assert!(out.starts_with("enqueued 2500 tasks to queue \"load\" in "), "{out}");
    assert!(out.trim_end().ends_with("ids 1..=2500"), "{out}");
}

#[tokio::test]
async fn tasks_show_renders_the_answer() {
    let (addr, _) = fake_node().await;
    let out = skein(&["--addr", &addr.to_string(), "tasks", "show", "7"]).await.expect("show works");
    for want in [
        "id             7\n",
        "status         succeeded\n",
        "key            orders-v2\n",
        "first started  2026-11-24 06:12:04\n",
        "finished       2026-11-24 06:13:03\n",
        "payload:\n  {\n    \"dataset\": \"orders\",\n    \"rows\": 1000\n  }",
        "result:\n  {\n    \"rows_written\": 1000\n  }",
        "history (3 events):\n",
        "  2026-11-24 06:12:03  enqueued   -     -      as pending\n",
        "  2026-11-24 06:12:04  leased     2     17     attempt 1\n",
        "  2026-11-24 06:13:03  succeeded  2     17",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
}

#[tokio::test]
async fn json_output_is_the_servers_json() {
    let (addr, _) = fake_node().await;
    let out = skein(&["--addr", &addr.to_string(), "-o", "json", "tasks", "show", "7"]).await.expect("show works");
    let printed: Value = serde_json::from_str(&out).expect("stdout is JSON");
    assert_eq!(printed, detail_json(7));
    assert!(out.contains("\n  \"id\": 7"), "pretty-printed: {out}");
}

#[tokio::test]
async fn tasks_list_all_follows_cursors() {
    let (addr, state) = fake_node().await;
    let out = skein(&["--addr", &addr.to_string(), "tasks", "list", "--queue", "a b", "--status", "pending", "--all"])
        .await
        .expect("list works");
    let ids: Vec<&str> = out.lines().skip(1).filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(ids, ["1", "2", "3"], "{out}");
    assert_eq!(seen(&state).list_queries, ["queue=a+b&status=pending", "queue=a+b&status=pending&cursor=2"]);

    let out = skein(&["--addr", &addr.to_string(), "tasks", "list"]).await.expect("list works");
    assert!(out.ends_with("more tasks: add --cursor 2 for the next page, or --all for every page\n"), "{out}");
}

#[tokio::test]
async fn status_names_datasets_from_payloads() {
    let (addr, _) = fake_node().await;
    let out = skein(&["--addr", &addr.to_string(), "status"]).await.expect("status works");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("DATASET/TASK  STATUS   NODE  ATTEMPTS  STARTED"), "{out}");
    assert!(lines[1].starts_with("orders        pending  -          1/5  2026-11-24 06:12:04"), "{out}");
    assert_eq!(lines.last().copied(), Some("3 tasks: 3 pending"), "{out}");
}

#[tokio::test]
async fn error_body_is_the_message_and_exit_is_1() {
    let (addr, _) = fake_node().await;
    let (code, stdout, stderr) = skein_bin(&["--addr", &addr.to_string(), "queue", "list"]).await;
    assert_eq!(code, 1, "stderr: {stderr}");
    assert_eq!(stdout, "");
    assert!(stderr.starts_with("error: no leader elected yet (unavailable, HTTP 503)\n"), "{stderr}");

    let (code, _, stderr) = skein_bin(&["--addr", &addr.to_string(), "tasks", "show", "99"]).await;
    assert_eq!(code, 1);
    assert_eq!(stderr, "error: task 99 not found (not_found, HTTP 404)\n");
}

#[tokio::test]
async fn no_node_answering_says_so() {
    let port = dead_port().await;
    let addr = format!("127.0.0.1:{port}");
    let (code, _, stderr) = skein_bin(&["--addr", &addr, "cluster", "status"]).await;
    assert_eq!(code, 1);
    assert_eq!(
        stderr,
        format!(
            "error: no skein node answered at {addr} (connection refused) — is the cluster running? set --addr or SKEIN_ADDR\n"
        )
    );
}

#[tokio::test]
async fn usage_errors_exit_with_2() {
    let (code, _, stderr) = skein_bin(&["enqueue", "--queue", "q", "--payload", "{oops"]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("not valid JSON"), "{stderr}");
    let (code, stdout, _) = skein_bin(&["--help"]).await;
    assert_eq!(code, 0);
    assert!(stdout.contains("Examples:"), "{stdout}");
}

#[tokio::test]
async fn tries_the_next_node_and_follows_the_leader() {
    let (leader, _) = fake_node().await;
    let leader_addr = leader.to_string();
    // A follower that does not forward writes: it names the leader instead.
    let follower = serve(Router::new().route(
        "/api/v1/queues/{name}/pause",
        post(move || {
            let leader = leader_addr.clone();
            async move { error(StatusCode::MISDIRECTED_REQUEST, "not_leader", "not the leader", Some(leader)) }
        }),
    ))
    .await;
    let dead = dead_port().await;
    let out =
        skein(&["--addr", &format!("127.0.0.1:{dead},{follower}"), "queue", "pause", "q"]).await.expect("pause works");
    assert_eq!(out, "queue \"q\" paused: running tasks finish, no new ones start until `skein queue resume q`\n");
}

#[tokio::test]
async fn queue_set_sends_only_the_given_settings() {
    let bodies: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let seen = bodies.clone();
    let node = serve(Router::new().route(
        "/api/v1/queues/{name}",
        patch(move |Path(name): Path<String>, Json(body): Json<Value>| {
            let seen = seen.clone();
            async move {
                seen.lock().expect("lock not poisoned").push((name, body));
                Json(json!({}))
            }
        }),
    ))
    .await;
    let args = ["queue", "set", "etl jobs", "--max-attempts", "3", "--stuck-silence-ms", "0", "--lease-ms", "60000"];
    let out = skein(&[&["--addr", &node.to_string()][..], &args].concat()).await.expect("set works");
    assert_eq!(out, "queue \"etl jobs\" updated: lease_ms=60000, max_attempts=3, stuck_silence_ms=0\n");
    let sent = bodies.lock().expect("lock not poisoned").clone();
    assert_eq!(sent, [("etl jobs".to_string(), json!({"lease_ms": 60000, "max_attempts": 3, "stuck_silence_ms": 0}))]);
    // What the node parses it into.
    let patch: QueuePatch = serde_json::from_value(sent[0].1.clone()).expect("a QueuePatch");
    assert_eq!(
        patch,
        QueuePatch { lease_ms: Some(60_000), max_attempts: Some(3), stuck_silence_ms: Some(0), ..Default::default() }
    );
}

#[tokio::test]
async fn queue_show_renders_every_setting_of_one_queue() {
    let config = serde_json::to_value(QueueConfig { concurrency: 4, ..QueueConfig::default() }).expect("json");
    let list = json!({"queues": [
        {"name": "other", "paused": false, "config": QueueConfig::default(), "counts": {}, "oldest_pending_age_ms": null},
        {"name": "etl", "paused": true, "config": config, "counts": {"pending": 2, "dead": 1}, "oldest_pending_age_ms": 5000},
    ]});
    let answer = list.clone();
    let node = serve(Router::new().route("/api/v1/queues", get(move || async move { Json(answer) }))).await;
    let addr = node.to_string();

    let out = skein(&["--addr", &addr, "queue", "show", "etl"]).await.expect("show works");
    for want in ["state           paused\n", "tasks           3 tasks: 2 pending, 1 dead\n", "oldest pending  5s\n"] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    for s in QUEUE_SETTINGS {
        assert!(out.lines().any(|l| l.starts_with(&format!("{} ", s.name))), "no row for {} in\n{out}", s.name);
    }
    let concurrency = out.lines().find(|l| l.starts_with("concurrency ")).expect("a concurrency row");
    assert_eq!(concurrency.split_whitespace().collect::<Vec<_>>(), ["concurrency", "4", "0"]);

    let json_out = skein(&["--addr", &addr, "-o", "json", "queue", "show", "etl"]).await.expect("show works");
    assert_eq!(serde_json::from_str::<Value>(&json_out).expect("json"), list["queues"][1]);

    let (code, _, stderr) = skein_bin(&["--addr", &addr, "queue", "show", "nope"]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("no queue named \"nope\""), "{stderr}");
}

/// A follower that has not applied a plan run yet: the run was committed
/// through the leader (task 11 created; task 5, the current run of another
/// plan, ended and was forgotten long ago), but the follower's task list
/// shows neither at first. Asked for on its own, task 11 is answered once
/// the follower caught up (pending); it succeeds a few polls later. `skein
/// plan run --wait` waits for it instead of answering at once with no
/// tasks, and counts the forgotten one as ended.
#[tokio::test]
async fn plan_run_wait_on_a_lagging_follower_waits_for_the_new_task() {
    #[derive(Default)]
    struct Follower {
        lists: usize,
    }
    type F = Arc<Mutex<Follower>>;
    async fn run() -> Json<Value> {
        let run = |r: &str, task: u64, created: bool, status: &str| json!({"entity_ref": r, "generation": 1, "task": task, "created": created, "status": status, "requested": true});
        Json(json!({"runs": [
            run("component:default/orders", 11, true, "pending"),
            run("component:default/old", 5, false, "succeeded"),
        ]}))
    }
    // Two polls show nothing (not applied yet), two the task pending, then
    // it has succeeded.
    async fn list(State(f): State<F>) -> Json<Value> {
        let n = {
            let mut f = f.lock().expect("lock");
            f.lists += 1;
            f.lists
        };
        let tasks: Vec<Value> = match n {
            1..=2 => vec![],
            3..=4 => vec![task_json(11, "pending")],
            _ => vec![task_json(11, "succeeded")],
        };
        Json(json!({"tasks": tasks, "next_cursor": null}))
    }
    async fn show(Path(id): Path<u64>) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
        match id {
            11 => Ok(Json(task_json(11, "pending"))),
            _ => Err(error(StatusCode::NOT_FOUND, "not_found", &format!("task {id} not found"), None)),
        }
    }
    let plan = || async { Json(json!({"generation": 1, "partitions": null})) };
    let router = Router::new()
        .route("/api/v1/plans/run", post(run))
        .route("/api/v1/plans/{kind}/{namespace}/{name}", get(plan))
        .route("/api/v1/tasks", get(list))
        .route("/api/v1/tasks/{id}", get(show))
        .with_state(F::default());
    let addr = serve(router).await.to_string();
    let out = skein(&["--addr", &addr, "-o", "json", "plan", "run", "orders", "old", "--wait", "--timeout", "20"])
        .await
        .expect("plan run --wait works");
    let v: Value = serde_json::from_str(&out).expect("JSON");
    let tasks = v["tasks"].as_array().expect("a list of tasks");
    assert_eq!(tasks.len(), 1, "{out}");
    assert_eq!(tasks[0]["id"], 11, "{out}");
    assert_eq!(tasks[0]["status"], "succeeded", "{out}");
}
