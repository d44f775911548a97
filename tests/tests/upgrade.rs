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
//! The same directory then moves to tokens (issue 14): a cluster upgraded
//! from a release without tokens stays in auth mode `warn` (anonymous calls
//! served and counted), and once finalized to the newest format an
//! anonymous caller makes the first admin token and switches to `enforce`
//! with it, after which every node refuses anonymous calls.
//!
//! Needs the binaries: `cargo build --workspace --bins` first.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use skein_raft::api::ErrorCode;
use skein_testkit::process::{free_port, log_tail, Binaries, Process};
use skein_testkit::{say, wait_for, wait_until, Api};

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

/// Unpacks the fixture into `dir` (`node1/`, `expected.json`); returns what
/// 0.1.0's API showed.
fn unpack(dir: &Path) -> anyhow::Result<Value> {
    let status = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(fixture(FIXTURE))
        .arg("-C")
        .arg(dir)
        .status()
        .context("running tar")?;
    ensure!(status.success(), "tar could not unpack {FIXTURE}: {status}");
    Ok(serde_json::from_slice(&std::fs::read(dir.join("expected.json"))?)?)
}

async fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let expected = unpack(dir.path())?;

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

const WAIT: Duration = Duration::from_secs(30);

/// A node of the upgraded cluster, started by the test; killed when dropped.
struct Member {
    id: u64,
    http: String,
    log: PathBuf,
    _process: Process,
}

/// Starts node `id` on `data` with `extra` flags (and no token of the
/// harness: the upgraded cluster has none), on the given `(http, rpc)`
/// addresses or free ones, and waits until it is ready.
async fn start_member(
    bins: &Binaries,
    root: &Path,
    id: u64,
    data: &Path,
    addrs: Option<(String, String)>,
    extra: &[String],
) -> anyhow::Result<Member> {
    let (http, rpc) = match addrs {
        Some(a) => a,
        None => (format!("127.0.0.1:{}", free_port()?), format!("127.0.0.1:{}", free_port()?)),
    };
    let log = root.join(format!("node{id}.log"));
    let mut args: Vec<String> =
        vec!["--id".into(), id.to_string(), "--listen".into(), rpc, "--http".into(), http.clone()];
    args.extend(["--slots".into(), "2".into(), "--data-dir".into(), data.display().to_string()]);
    args.extend(extra.iter().cloned());
    let member =
        Member { id, http: http.clone(), log: log.clone(), _process: Process::spawn(&bins.node, &args, &log)? };
    let probe = Api::with_timeout(Duration::from_secs(2)).without_token();
    let ready = wait_until(WAIT, &format!("node {id} to be ready"), async || probe.ready(&http).await).await;
    if let Err(e) = ready {
        bail!("{e:#}\nits log ends with:\n{}", log_tail(&log, 40));
    }
    Ok(member)
}

/// The value of the sample `series` (name and labels, exactly as exposed)
/// in the node's `/metrics`.
async fn metric(api: &Api, addr: &str, series: &str) -> anyhow::Result<f64> {
    let r = api.raw(Method::GET, addr, "/metrics", None).await?;
    ensure!(r.status.is_success(), "GET {addr}/metrics: {} {}", r.status, r.body);
    let text = r.body.as_str().unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| {
            let name = series.split('{').next().unwrap_or(series);
            let near: Vec<&str> = text.lines().filter(|l| l.starts_with(name)).collect();
            format!("no {series} in the /metrics of {addr}; it has {near:?}")
        })
}

const ANONYMOUS: &str = "skein_auth_requests_total{outcome=\"anonymous\"}";
const UNAUTHENTICATED: &str = "skein_auth_requests_total{outcome=\"unauthenticated\"}";

fn body(v: Value) -> Option<Vec<u8>> {
    Some(v.to_string().into_bytes())
}

/// The 0.1.0 directory as node 1 of three (two new nodes join it): auth mode
/// `warn` until an anonymous caller, once the cluster is finalized, makes
/// the first admin token and enforces tokens with it; from then on every
/// node refuses anonymous calls, and the audit trail says who did what.
#[tokio::test(flavor = "multi_thread")]
async fn an_upgraded_cluster_moves_from_warn_to_enforced_tokens() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut members = Vec::new();
    if let Err(e) = warn_to_enforce(dir.path(), &mut members).await {
        let tails: String = members
            .iter()
            .map(|m| format!("---- node {} ({}) log {}:\n{}\n", m.id, m.http, m.log.display(), log_tail(&m.log, 40)))
            .collect();
        panic!("{e:?}\n==== the end of each node's log:\n{tails}");
    }
}

async fn warn_to_enforce(root: &Path, members: &mut Vec<Member>) -> anyhow::Result<()> {
    let expected = unpack(root)?;
    let bins = Binaries::locate()?;
    // Node 1 keeps the addresses 0.1.0 ran it on: they are in its
    // membership, which the joining nodes learn and dial.
    let recorded = |key: &str| expected[key].as_str().map(str::to_string).context("expected.json: http, rpc");
    let node1 = (recorded("http")?, recorded("rpc")?);
    members.push(start_member(&bins, root, 1, &root.join("node1"), Some(node1), &[]).await?);
    let first = members[0].http.clone();
    for id in [2, 3] {
        let join = ["--join".to_string(), first.clone()];
        members.push(start_member(&bins, root, id, &root.join(format!("joined{id}")), None, &join).await?);
    }
    let addrs: Vec<String> = members.iter().map(|m| m.http.clone()).collect();
    let anonymous = Api::new().without_token();
    // The harness's admin token: this cluster never made it.
    let unknown = Api::new();
    let leader = wait_for(WAIT, "three voters and a leader", async || {
        let s: Value = anonymous.call(Method::GET, &first, "/api/v1/cluster", None).await?;
        let nodes = s["nodes"].as_array().cloned().unwrap_or_default();
        let voters = nodes.iter().filter(|n| n["role"] == "leader" || n["role"] == "voter").count();
        if voters != 3 {
            bail!("{voters} voters: {s}");
        }
        Ok(s["leader"].as_u64())
    })
    .await?;
    let leader_addr = addrs.get(leader as usize - 1).context("the leader is one of the three")?.clone();

    say("upgraded from 0.1.0: every node in auth mode warn, below the format tokens need");
    for addr in &addrs {
        let auth: Value = anonymous.call(Method::GET, addr, "/api/v1/auth", None).await?;
        ensure!(auth["mode"] == "warn" && auth["tokens"] == 0, "{addr}: an upgraded cluster starts in warn: {auth}");
        let format = auth["format"].as_u64().context("the auth status names the format")?;
        ensure!(format < 3, "{addr}: the 0.1.0 directory is at format {format}, which has tokens: {auth}");
    }

    say("anonymous calls and calls with an unknown token are served, and counted");
    let node2 = &addrs[1];
    let before = metric(&anonymous, node2, ANONYMOUS).await?;
    let id = anonymous.enqueue(node2, &[json!({"queue": "warn", "kind": "noop"})]).await?[0];
    ensure!(anonymous.task(node2, id).await?.task.id.0 == id, "an anonymous read of task {id}");
    let _: Value = unknown.call(Method::GET, node2, "/api/v1/queues", None).await?;
    let after = metric(&anonymous, node2, ANONYMOUS).await?;
    // The enqueue, the two reads and the second scrape.
    ensure!(after >= before + 4.0, "{ANONYMOUS} went from {before} to {after}: 4 anonymous calls were served");

    say("before finalize: no token can be made, nor tokens enforced");
    let early = json!({"role": "admin", "name": "too-early"});
    let r = anonymous.raw(Method::POST, &leader_addr, "/api/v1/tokens", body(early)).await?;
    ensure!(r.status == StatusCode::CONFLICT, "a token below format 3: {} {}", r.status, r.body);
    let r = anonymous.raw(Method::POST, &leader_addr, "/api/v1/auth", body(json!({"mode": "enforce"}))).await?;
    ensure!(r.status == StatusCode::CONFLICT, "enforcing with no token: {} {}", r.status, r.body);

    say("finalize (anonymously, in warn) to the newest format");
    let latest = skein_raft::format::LATEST;
    let reply = wait_for(WAIT, "finalize to succeed", async || {
        let r = anonymous.raw(Method::POST, &leader_addr, "/api/v1/cluster/finalize", None).await?;
        if !r.status.is_success() {
            bail!("{} {}", r.status, r.body);
        }
        Ok(Some(r.body))
    })
    .await?;
    ensure!(reply == json!({"format": latest, "changed": true}), "finalize answered {reply}");
    for addr in &addrs {
        wait_until(WAIT, &format!("{addr} to apply format {latest}"), async || {
            let auth: Value = anonymous.call(Method::GET, addr, "/api/v1/auth", None).await?;
            ensure!(auth["mode"] == "warn", "{addr}: finalizing changed the auth mode: {auth}");
            Ok(auth["format"] == json!(latest))
        })
        .await?;
    }

    say("an anonymous caller makes the first admin token (through a follower), then enforces with it");
    let follower = addrs.iter().find(|a| **a != leader_addr).context("a follower")?;
    let r = anonymous
        .raw(Method::POST, follower, "/api/v1/tokens", body(json!({"role": "admin", "name": "first-admin"})))
        .await?;
    ensure!(r.status == StatusCode::CREATED, "the first token, anonymously: {} {}", r.status, r.body);
    ensure!(r.body["name"] == "first-admin" && r.body["role"] == "admin", "the new token: {}", r.body);
    let token = r.body["token"].as_str().context("no token in the answer")?.to_string();
    let admin = Api::new().with_token(&token);
    let r = admin.raw(Method::POST, node2, "/api/v1/auth", body(json!({"mode": "enforce"}))).await?;
    // The answer is the state of the node asked, which may not have applied
    // the change yet: every node's own answer is checked below.
    ensure!(r.status == StatusCode::OK, "enforcing: {} {}", r.status, r.body);

    say("enforced: anonymous calls and unknown tokens get 401 on every node; the new token works");
    for addr in &addrs {
        wait_until(Duration::from_secs(10), &format!("{addr} to refuse anonymous reads"), async || {
            Ok(anonymous.raw(Method::GET, addr, "/api/v1/queues", None).await?.status == StatusCode::UNAUTHORIZED)
        })
        .await?;
        let task = format!("/api/v1/tasks/{id}");
        let enqueue = json!({"queue": "warn", "kind": "noop"});
        let calls = [
            (Method::GET, "/api/v1/queues", None),
            (Method::GET, task.as_str(), None),
            (Method::GET, "/api/v1/auth", None),
            (Method::GET, "/metrics", None),
            (Method::POST, "/api/v1/tasks", body(enqueue.clone())),
            (Method::POST, "/api/v1/tokens", body(json!({"role": "admin", "name": "sneaky"}))),
        ];
        for (who, api) in [("anonymous", &anonymous), ("an unknown token", &unknown)] {
            for (method, path, b) in &calls {
                let r = api.raw(method.clone(), addr, path, b.clone()).await?;
                ensure!(
                    r.status == StatusCode::UNAUTHORIZED && r.error_code() == Some(ErrorCode::Unauthenticated),
                    "{method} {addr}{path} with {who} once enforced: {} {}",
                    r.status,
                    r.body
                );
            }
        }
        let auth: Value = admin.call(Method::GET, addr, "/api/v1/auth", None).await?;
        ensure!(auth["mode"] == "enforce" && auth["tokens"] == 1, "{addr}: {auth}");
        let new = admin.enqueue(addr, &[enqueue]).await?[0];
        ensure!(admin.task(addr, new).await?.task.id.0 == new, "{addr}: the admin token reads task {new}");
        ensure!(metric(&admin, addr, "skein_auth_enforced{}").await? == 1.0, "{addr}: skein_auth_enforced is not 1");
        ensure!(metric(&admin, addr, UNAUTHENTICATED).await? >= 12.0, "{addr}: the 401s are not counted");
    }

    say("the audit trail: the anonymous token creation, and the enforce by first-admin");
    let audit: Value = admin.call(Method::GET, &addrs[0], "/api/v1/audit", None).await?;
    let records = audit["records"].as_array().context("no audit records")?;
    let created = records
        .iter()
        .find(|r| r["action"] == "create token" && r["target"].as_str().is_some_and(|t| t.contains("first-admin")))
        .with_context(|| format!("no audit record of first-admin's creation: {audit}"))?;
    ensure!(created["principal"] == "anonymous" && created["outcome"] == "ok", "its creation: {created}");
    let enforced = records
        .iter()
        .find(|r| r["action"] == "configure auth")
        .with_context(|| format!("no audit record of the enforce: {audit}"))?;
    ensure!(
        enforced["principal"] == "first-admin"
            && enforced["outcome"] == "ok"
            && enforced["target"].as_str().is_some_and(|t| t.contains("mode enforce")),
        "the enforce: {enforced}"
    );
    let mine: Value = admin.call(Method::GET, &addrs[2], "/api/v1/audit?principal=anonymous", None).await?;
    let actions: Vec<&str> =
        mine["records"].as_array().into_iter().flatten().filter_map(|r| r["action"].as_str()).collect();
    ensure!(actions.contains(&"create token"), "node 3's audit of anonymous: {mine}");
    ensure!(
        records.iter().any(|r| r["action"] == "finalize" && r["principal"] == "anonymous" && r["outcome"] == "ok"),
        "the anonymous finalize is audited: {audit}"
    );
    Ok(())
}
