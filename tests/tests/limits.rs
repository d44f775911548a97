//! Limits per caller, against real nodes: a token over its request rate is
//! answered 429 `rate_limited` with `Retry-After` while other tokens are
//! served (and the CLI waits it out); a flood of thousands of connections
//! from one address (127.0.0.2, which Linux's loopback accepts) to the
//! leader's HTTP and RPC ports is capped at `--max-connections-per-address`
//! while the cluster keeps serving 127.0.0.1 (the API, the CLI and its own
//! Raft traffic) with the same leader; after the flood 127.0.0.2 is served
//! again.
//!
//! Needs the binaries: `cargo build --workspace --bins` first.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use skein_raft::api::ErrorCode;
use skein_raft::fsm::TaskStatus;
use skein_testkit::{say, wait_until, Api, Cluster, Spec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;

/// The address the flood comes from.
const FLOOD_FROM: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// The node's default `--max-connections-per-address`.
const PER_ADDRESS: usize = 256;
/// Connections the flood opens to each port before the cluster is checked.
const FLOOD: usize = 3000;

/// Makes a token with the admin token of the harness.
async fn make_token(c: &Cluster, role: &str, name: &str) -> anyhow::Result<String> {
    let body = json!({"role": role, "name": name}).to_string().into_bytes();
    let reply = c.api.raw(Method::POST, &c.addr(1), "/api/v1/tokens", Some(body)).await?;
    ensure!(reply.status == StatusCode::CREATED, "creating a token: {} {}", reply.status, reply.body);
    reply.body["token"].as_str().map(str::to_string).context("no token in the answer")
}

/// One GET with the status, the `Retry-After` header and the body.
async fn get(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> anyhow::Result<(StatusCode, Option<u64>, Value)> {
    let mut req = client.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    Ok((status, retry_after, body))
}

fn code_of(body: &Value) -> Option<ErrorCode> {
    serde_json::from_value(body.pointer("/error/code")?.clone()).ok()
}

/// A counter of the node's `/metrics` page (0 when absent).
fn metric(page: &str, name_and_labels: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name_and_labels).and_then(|rest| rest.trim().parse::<f64>().ok()))
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_over_its_rate_gets_429_and_others_are_served() {
    let mut spec = Spec::new(1);
    // Low enough for a loop to pass, high enough for the harness's own polls.
    spec.args = ["--requests-per-second-per-token", "20", "--request-burst-per-token", "40"].map(String::from).to_vec();
    let c = spec.start().await.expect("starting a node");
    let result = token_rate(&c).await;
    c.finish(result);
}

async fn token_rate(c: &Cluster) -> anyhow::Result<()> {
    let addr = c.addr(1);
    let hot = make_token(c, "read", "hot").await?;
    let calm = make_token(c, "read", "calm").await?;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let url = format!("http://{addr}/api/v1/queues");

    // The hot token, as fast as it can: its burst of 40, then 429s.
    let (mut served, mut refused) = (0, 0);
    let mut refusal = None;
    for _ in 0..120 {
        let (status, retry_after, body) = get(&client, &url, Some(&hot)).await?;
        match status {
            StatusCode::OK => served += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                refused += 1;
                refusal = Some((retry_after, body));
            }
            other => bail!("GET /api/v1/queues answered {other}"),
        }
    }
    say(format!("hot token: {served} served, {refused} refused (rate 20/s, burst 40)"));
    ensure!(refused > 0 && served >= 40, "{served} served, {refused} refused");
    let (retry_after, body) = refusal.context("no refusal")?;
    ensure!(code_of(&body) == Some(ErrorCode::RateLimited), "not rate_limited: {body}");
    let message = body.pointer("/error/message").and_then(Value::as_str).unwrap_or_default();
    ensure!(
        message.contains("token hot") && message.contains("--requests-per-second-per-token"),
        "the message names neither the token nor the limit: {message}"
    );
    let retry_after = retry_after.context("no Retry-After header")?;
    ensure!((1..=2).contains(&retry_after), "Retry-After: {retry_after}");

    // Other tokens, and callers without one, are served meanwhile; the
    // health checks are never limited.
    let (status, _, _) = get(&client, &url, Some(&calm)).await?;
    ensure!(status == StatusCode::OK, "the calm token got {status}");
    let (status, _, _) = get(&client, &format!("http://{addr}/signin"), None).await?;
    ensure!(status == StatusCode::OK, "a public page got {status}");
    for _ in 0..100 {
        let (status, _, _) = get(&client, &format!("http://{addr}/healthz"), Some(&hot)).await?;
        ensure!(status == StatusCode::OK, "/healthz got {status}");
    }

    // After Retry-After, the hot token is served again.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let (status, _, body) = get(&client, &url, Some(&hot)).await?;
    ensure!(status == StatusCode::OK, "after Retry-After: {status} {body}");

    // The CLI waits out a 429: empty the bucket, then run it with the token.
    while get(&client, &url, Some(&hot)).await?.0 != StatusCode::TOO_MANY_REQUESTS {}
    let started = Instant::now();
    let out = c.cli(&["--addr", &addr, "--token", &hot, "-o", "json", "queue", "list"]).await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "the CLI failed: {stderr}");
    say(format!("the CLI was served after {:.1} s: {}", started.elapsed().as_secs_f64(), stderr.trim()));

    // Every refusal is counted.
    let page = c.api.raw(Method::GET, &addr, "/metrics", None).await?;
    let page = page.body.as_str().unwrap_or_default().to_string();
    let counted = metric(&page, r#"skein_rate_limited_total{limit="token",listener="http"}"#);
    ensure!(counted >= f64::from(refused), "metrics count {counted} token refusals, the test saw {refused}");
    Ok(())
}

/// What the flood met on one port.
#[derive(Debug, Default)]
struct Met {
    /// Accepted and served (HTTP 200), or accepted and held (RPC).
    held: Vec<TcpStream>,
    /// Answered 429 `rate_limited` with `Retry-After` (HTTP).
    answered_429: usize,
    /// Closed by the node without an answer.
    closed: usize,
    /// Could not connect at all.
    failed: usize,
}

/// A connection from [`FLOOD_FROM`].
async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::new(IpAddr::V4(from), 0))?;
    socket.connect(to).await
}

enum Outcome {
    Held(TcpStream),
    Answered429,
    Closed,
    Failed,
}

/// Opens a connection to the HTTP port and asks for `/healthz`.
async fn http_probe(to: SocketAddr) -> Outcome {
    let Ok(Ok(mut s)) = tokio::time::timeout(Duration::from_secs(5), connect_from(FLOOD_FROM, to)).await else {
        return Outcome::Failed;
    };
    if s.write_all(b"GET /healthz HTTP/1.1\r\nhost: flood\r\n\r\n").await.is_err() {
        return Outcome::Closed;
    }
    let mut buf = vec![0u8; 2048];
    let mut got = 0;
    let head = loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf[got..])).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break String::from_utf8_lossy(&buf[..got]).to_string(),
            Ok(Ok(n)) => {
                got += n;
                let text = String::from_utf8_lossy(&buf[..got]).to_string();
                if text.contains("\r\n\r\n") && (text.contains("\"status\"") || text.contains("rate_limited")) {
                    break text;
                }
            }
        }
    };
    if head.starts_with("HTTP/1.1 200") {
        Outcome::Held(s)
    } else if head.starts_with("HTTP/1.1 429") && head.contains("retry-after: ") && head.contains("rate_limited") {
        Outcome::Answered429
    } else {
        Outcome::Closed
    }
}

/// Opens a connection to the RPC port: held if the node keeps it open for
/// a moment, closed if it closes it.
async fn rpc_probe(to: SocketAddr) -> Outcome {
    let Ok(Ok(mut s)) = tokio::time::timeout(Duration::from_secs(5), connect_from(FLOOD_FROM, to)).await else {
        return Outcome::Failed;
    };
    let mut byte = [0u8; 1];
    match tokio::time::timeout(Duration::from_millis(1500), s.read(&mut byte)).await {
        Err(_) => Outcome::Held(s),
        Ok(_) => Outcome::Closed,
    }
}

/// `n` probes of `probe` to `to`, `at_once` at a time.
async fn flood<F, Fut>(to: SocketAddr, n: usize, at_once: usize, probe: F) -> Met
where
    F: Fn(SocketAddr) -> Fut,
    Fut: std::future::Future<Output = Outcome>,
{
    use futures::StreamExt;
    let mut met = Met::default();
    let mut outcomes = futures::stream::iter((0..n).map(|_| probe(to))).buffer_unordered(at_once);
    while let Some(outcome) = outcomes.next().await {
        match outcome {
            Outcome::Held(s) => met.held.push(s),
            Outcome::Answered429 => met.answered_429 += 1,
            Outcome::Closed => met.closed += 1,
            Outcome::Failed => met.failed += 1,
        }
    }
    met
}

/// A background flood: connections from [`FLOOD_FROM`] to each port, opened
/// and dropped as fast as `at_once` allow, until dropped.
struct Churn {
    tasks: Vec<JoinHandle<()>>,
    opened: Arc<AtomicU64>,
}

impl Churn {
    fn start(ports: Vec<SocketAddr>, at_once: usize) -> Churn {
        let opened = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for to in ports {
            for _ in 0..at_once {
                let opened = opened.clone();
                tasks.push(tokio::spawn(async move {
                    loop {
                        if let Ok(Ok(mut s)) =
                            tokio::time::timeout(Duration::from_secs(2), connect_from(FLOOD_FROM, to)).await
                        {
                            opened.fetch_add(1, Ordering::Relaxed);
                            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nhost: churn\r\n\r\n").await;
                            let mut buf = [0u8; 512];
                            let _ = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await;
                        } else {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }));
            }
        }
        Churn { tasks, opened }
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Latencies of `n` GET /api/v1/cluster from 127.0.0.1, in ms, sorted.
async fn latencies(api: &Api, addr: &str, n: usize) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let reply = api.raw(Method::GET, addr, "/api/v1/cluster", None).await?;
        ensure!(reply.status == StatusCode::OK, "GET /api/v1/cluster from 127.0.0.1: {} {}", reply.status, reply.body);
        out.push(started.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    out.sort_by(f64::total_cmp);
    Ok(out)
}

fn summary(ms: &[f64]) -> String {
    let at = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
    format!("p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms", at(0.5), at(0.9), at(1.0))
}

/// Enqueues `n` noop tasks through `addr` and waits until all succeeded;
/// returns how long that took.
async fn tasks_complete(c: &Cluster, addr: &str, queue: &str, n: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let specs: Vec<Value> = (0..n).map(|i| json!({"queue": queue, "kind": "noop", "payload": {"i": i}})).collect();
    let ids = c.api.enqueue(addr, &specs).await?;
    for id in ids {
        wait_until(Duration::from_secs(30), &format!("task {id} succeeded"), async || {
            Ok(c.api.task(addr, id).await?.task.status == TaskStatus::Succeeded)
        })
        .await?;
    }
    Ok(started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_connections_from_one_address_leaves_the_cluster_serving_others() {
    // 127.0.0.2 must be usable (Linux routes all of 127/8 to loopback).
    if connect_from(FLOOD_FROM, "127.0.0.1:9".parse().unwrap())
        .await
        .is_err_and(|e| e.kind() == std::io::ErrorKind::AddrNotAvailable)
    {
        eprintln!("skipped: this host cannot bind {FLOOD_FROM}");
        return;
    }
    let c = Cluster::start(3).await.expect("starting a cluster");
    let result = connection_flood(&c).await;
    c.finish(result);
}

async fn connection_flood(c: &Cluster) -> anyhow::Result<()> {
    let leader = c.leader().await?;
    let term = c.status().await?.term;
    let leader_http: SocketAddr = c.addr(leader).parse()?;
    let leader_rpc: SocketAddr = c.node(leader).rpc.parse()?;
    let follower = c.ids().into_iter().find(|id| *id != leader).context("no follower")?;
    let api = Api::with_timeout(Duration::from_secs(10));

    let before = latencies(&api, &c.addr(leader), 30).await?;
    let done_before = tasks_complete(c, &c.addr(leader), "before", 20).await?;
    say(format!(
        "before the flood: GET /api/v1/cluster {}; 20 tasks enqueued and completed in {} ms",
        summary(&before),
        done_before.as_millis()
    ));

    // The flood: thousands of connections from 127.0.0.2 to the leader's
    // HTTP and RPC ports, every accepted one kept open.
    let started = Instant::now();
    let http = flood(leader_http, FLOOD, 128, http_probe).await;
    let rpc = flood(leader_rpc, FLOOD, 256, rpc_probe).await;
    say(format!(
        "flood of {FLOOD} connections to each port in {:.1} s: HTTP {} served and held, {} answered 429, {} closed, \
         {} failed to connect; RPC {} held, {} closed, {} failed to connect",
        started.elapsed().as_secs_f64(),
        http.held.len(),
        http.answered_429,
        http.closed,
        http.failed,
        rpc.held.len(),
        rpc.closed,
        rpc.failed
    ));
    ensure!(http.held.len() == PER_ADDRESS, "HTTP held {} connections from one address", http.held.len());
    ensure!(rpc.held.len() == PER_ADDRESS, "RPC held {} connections from one address", rpc.held.len());
    ensure!(http.answered_429 > 0, "no HTTP connection was answered 429");
    ensure!(rpc.closed >= FLOOD - PER_ADDRESS - rpc.failed, "RPC: {} closed", rpc.closed);

    // While the flood goes on (its held connections, and new ones opened
    // and dropped without pause), 127.0.0.1 is served: the API, the CLI,
    // and the cluster's own Raft and worker RPCs (tasks complete on every
    // node).
    let churn = Churn::start(vec![leader_http, leader_rpc], 32);
    let during = latencies(&api, &c.addr(leader), 30).await?;
    let done_during = tasks_complete(c, &c.addr(leader), "during", 20).await?;
    let done_follower = tasks_complete(c, &c.addr(follower), "during-follower", 20).await?;
    let out = c.cli(&["--addr", &c.addr(leader), "cluster", "status"]).await?;
    ensure!(out.status.success(), "the CLI failed during the flood: {}", String::from_utf8_lossy(&out.stderr));
    let status = c.status().await?;
    ensure!(
        status.leader == Some(leader) && status.term == term,
        "the leader changed during the flood: {:?} in term {} (was {leader} in {term})",
        status.leader,
        status.term
    );
    let churned = churn.opened.load(Ordering::Relaxed);
    say(format!(
        "during the flood ({churned} more connections opened from {FLOOD_FROM}): GET /api/v1/cluster {}; 20 tasks \
         through the leader in {} ms, 20 through node {follower} in {} ms; leader {leader} in term {term} throughout",
        summary(&during),
        done_during.as_millis(),
        done_follower.as_millis()
    ));
    drop(churn);

    let page = c.api.raw(Method::GET, &c.addr(leader), "/metrics", None).await?;
    let page = page.body.as_str().unwrap_or_default().to_string();
    let refused_http = metric(&page, r#"skein_rate_limited_total{limit="connections_per_address",listener="http"}"#);
    let refused_rpc = metric(&page, r#"skein_rate_limited_total{limit="connections_per_address",listener="rpc"}"#);
    say(format!("the leader counted {refused_http} HTTP and {refused_rpc} RPC connections refused"));
    ensure!(refused_http >= (FLOOD - PER_ADDRESS - http.failed) as f64, "HTTP refusals counted: {refused_http}");
    ensure!(refused_rpc >= (FLOOD - PER_ADDRESS - rpc.failed) as f64, "RPC refusals counted: {refused_rpc}");

    // The flood ends: its connections close, their places are freed, and
    // 127.0.0.2 is served again.
    drop(http);
    drop(rpc);
    let from_flood =
        reqwest::Client::builder().local_address(IpAddr::V4(FLOOD_FROM)).timeout(Duration::from_secs(5)).build()?;
    let url = format!("http://{leader_http}/api/v1/queues");
    let token = skein_testkit::auth::admin_token().to_string();
    wait_until(Duration::from_secs(20), "127.0.0.2 served again", async || {
        Ok(get(&from_flood, &url, Some(&token)).await?.0 == StatusCode::OK)
    })
    .await?;
    let again = flood(leader_rpc, 8, 8, rpc_probe).await;
    ensure!(again.held.len() == 8, "RPC after the flood: {} of 8 held", again.held.len());
    say("after the flood: 127.0.0.2 is served again on both ports");
    Ok(())
}
