//! A node stops in order (`skein_node::Stage`) and `run` returns only when
//! everything it started has ended: a one-node cluster in this process,
//! with a task running when the shutdown begins.
//!
//! What is checked, beyond the order of the stages: the drain let the
//! running task finish and report (its result is in the store the node
//! left on disk); the HTTP and RPC ports are closed when `run` returns; and
//! the RocksDB store was closed (it opens again in this same process, which
//! RocksDB's lock would refuse while any handle was left).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use skein_node::config::{Args, Config};
use skein_node::Stage;
use tokio_util::sync::CancellationToken;

fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("its address")
}

fn config(dir: &std::path::Path) -> Config {
    let (rpc, http) = (free_addr(), free_addr());
    let args = Args::parse_from([
        "skein-node",
        "--id",
        "1",
        "--listen",
        &rpc.to_string(),
        "--http",
        &http.to_string(),
        "--data-dir",
        &dir.display().to_string(),
        "--bootstrap",
        "--drain-timeout",
        "20",
    ]);
    Config::resolve(args).expect("a valid config")
}

async fn get(client: &reqwest::Client, url: String) -> Option<serde_json::Value> {
    client.get(url).send().await.ok()?.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stops_in_order_and_leaves_nothing_running() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = config(dir.path());
    let (http, rpc, data_dir) = (config.http, config.listen, config.data_dir.clone());
    let stop = CancellationToken::new();
    let stages = Arc::new(Mutex::new(Vec::new()));
    let node = tokio::spawn({
        let (stop, stages) = (stop.clone(), stages.clone());
        async move { skein_node::run_observed(config, stop, move |s| stages.lock().unwrap().push(s)).await }
    });
    // Whatever happens below, the node is told to stop.
    let _stop_on_exit = stop.clone().drop_guard();

    skein_tls::install_provider();
    let client = reqwest::Client::new();
    let base = format!("http://{http}");
    let ready = async {
        loop {
            if get(&client, format!("{base}/readyz")).await.is_some_and(|r| r["status"] == "ready") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), ready).await.expect("the node became ready");
    // The bootstrap wrote the first admin token; every API call needs one.
    let token_file = data_dir.join(skein_node::ADMIN_TOKEN_FILE);
    let token = std::fs::read_to_string(&token_file).expect("the admin token file");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&token_file).expect("its metadata").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "admin.token must be readable by its owner only");
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {}", token.trim()).parse().expect("a header"));
    let client = reqwest::Client::builder().default_headers(headers).build().expect("a client");
    let enqueued: serde_json::Value = client
        .post(format!("{base}/api/v1/tasks"))
        .json(&serde_json::json!({"queue": "q", "kind": "sleep", "payload": {"ms": 1500}}))
        .send()
        .await
        .expect("enqueue")
        .json()
        .await
        .expect("its answer");
    let id = enqueued["tasks"][0]["id"].as_u64().expect("a task id");
    let mut last = None;
    let running = async {
        loop {
            last = get(&client, format!("{base}/api/v1/tasks/{id}")).await;
            if last.as_ref().is_some_and(|t| t["status"] == "leased") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let started = tokio::time::timeout(Duration::from_secs(20), running).await;
    assert!(started.is_ok(), "the task did not start: {last:?}");

    stop.cancel();
    let result = tokio::time::timeout(Duration::from_secs(60), node).await.expect("run returned in time");
    result.expect("run did not panic").expect("run ended without an error");

    assert_eq!(
        *stages.lock().unwrap(),
        vec![
            Stage::Draining,
            Stage::WorkerStopped,
            Stage::HandedOver,
            Stage::RaftStopped,
            Stage::ServersStopped,
            Stage::TasksEnded,
            Stage::StoreClosed,
        ]
    );
    for (what, addr) in [("HTTP", http), ("RPC", rpc)] {
        assert!(
            TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err(),
            "the {what} port still answers"
        );
    }
    // Closed: RocksDB lets this process open it again. The drain let the
    // task finish, and its success was applied before Raft stopped (its
    // result is in the cold store, which a restart does not rebuild).
    let (_log, sm) = skein_raft::store::open(&data_dir).expect("the store opens again: every handle was dropped");
    let result = sm.handle().result(skein_raft::fsm::TaskId(id)).expect("reading the result");
    assert_eq!(result.as_deref(), Some("{\"slept_ms\":1500}"));
}
