//! Seeing the fleet, end to end on 3-node clusters of the real binaries:
//!
//! - a real headless Chromium loads the dashboard of a cluster running a
//!   workload, and the rendered page's table rows, per-status counts and
//!   node list match the API (a screenshot is kept under
//!   `$CARGO_TARGET_DIR/artifacts/`);
//! - `/metrics` of every node parses as OpenMetrics text, and its counters
//!   match the API's numbers;
//! - `skein watch` follows a queue to its end;
//! - a task made stuck on purpose (an `exec` that never ends, past its
//!   queue's limit; a worker SIGSTOPped while holding leases) is listed by
//!   `skein stuck`, by the dashboard and by the metrics, and one task's log
//!   lines carry its id, attempt and token.
//!
//! Needs Debian's `chromium` (scripts/deps.sh installs it).

#[path = "observe/prom.rs"]
mod prom;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use reqwest::Method;
use serde_json::{json, Value};
use skein_raft::api::Overview;
use skein_raft::fsm::TaskStatus;
use skein_testkit::{wait_for, wait_until, Cluster};
use skein_tests::checks::{say, wait_replicas_agree};

const SETTLE: Duration = Duration::from_secs(60);

// ----- the browser ------------------------------------------------------------

/// Debian's Chromium, run headless with nothing that reaches out (no
/// updates, sync or QUIC) and a fresh profile per run.
struct Chromium {
    bin: PathBuf,
}

impl Chromium {
    fn locate() -> anyhow::Result<Chromium> {
        for name in ["chromium", "chromium-browser", "google-chrome"] {
            for dir in std::env::var("PATH").unwrap_or_default().split(':') {
                let p = Path::new(dir).join(name);
                if p.is_file() {
                    return Ok(Chromium { bin: p });
                }
            }
        }
        bail!("no chromium on PATH: install Debian's `chromium` (scripts/deps.sh does)")
    }

    /// Runs Chromium on `url` with `extra` flags; its standard output.
    async fn run(&self, url: &str, extra: &[String]) -> anyhow::Result<String> {
        let profile = tempfile::tempdir().context("a profile directory")?;
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            // Timers run on virtual time; a pending fetch holds it back.
            "--virtual-time-budget=6000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
            .await
            .context("chromium did not finish within 90 s")?
            .context("running chromium")?;
        ensure!(
            out.status.success(),
            "chromium failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).lines().rev().take(15).collect::<Vec<_>>().join("\n")
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The page's DOM once its scripts have run.
    async fn dom(&self, url: &str) -> anyhow::Result<String> {
        let dom = self.run(url, &["--dump-dom".into()]).await?;
        ensure!(
            dom.contains("data-loaded=\"1\""),
            "the dashboard never rendered the API's answer:\n{}",
            tail(&dom, 3000)
        );
        Ok(dom)
    }

    /// A PNG of the page, kept as an artifact of the run.
    async fn screenshot(&self, url: &str, name: &str) -> anyhow::Result<PathBuf> {
        let dir = artifacts_dir()?;
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        self.run(url, &[format!("--screenshot={}", path.display()), "--window-size=1400,1900".into()]).await?;
        let len = std::fs::metadata(&path).with_context(|| format!("no screenshot at {}", path.display()))?.len();
        ensure!(len > 10_000, "the screenshot {} is only {len} bytes", path.display());
        say(format!("screenshot of the dashboard: {}", path.display()));
        Ok(path)
    }
}

fn tail(s: &str, n: usize) -> &str {
    let start = s.len().saturating_sub(n);
    let start = (start..s.len()).find(|i| s.is_char_boundary(*i)).unwrap_or(s.len());
    &s[start..]
}

/// `$CARGO_TARGET_DIR/artifacts`, or `<target>/artifacts` next to the test binary.
fn artifacts_dir() -> anyhow::Result<PathBuf> {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe()?;
            exe.ancestors().nth(3).context("no target directory above the test binary")?.to_path_buf()
        }
    };
    let dir = target.join("artifacts");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

// ----- reading the rendered page ----------------------------------------------

/// The part of `html` from `start` to the next `end`.
fn between<'a>(html: &'a str, start: &str, end: &str) -> anyhow::Result<&'a str> {
    let from = html.find(start).with_context(|| format!("no {start:?} in the page"))?;
    let rest = &html[from..];
    let to = rest.find(end).with_context(|| format!("no {end:?} after {start:?}"))?;
    Ok(&rest[..to])
}

/// The attributes of every `<tag ...>` in `html`.
fn tags(html: &str, tag: &str) -> Vec<BTreeMap<String, String>> {
    let open = format!("<{tag} ");
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find(&open) {
        rest = &rest[i + open.len()..];
        let Some(end) = rest.find('>') else { break };
        out.push(attributes(&rest[..end]));
        rest = &rest[end..];
    }
    out
}

fn attributes(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s.trim();
    while let Some(eq) = rest.find("=\"") {
        let name = rest[..eq].trim().to_string();
        let after = &rest[eq + 2..];
        let Some(close) = after.find('"') else { break };
        let value =
            after[..close].replace("&quot;", "\"").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&");
        out.insert(name, value);
        rest = &after[close + 1..];
    }
    out
}

fn attr<'a>(a: &'a BTreeMap<String, String>, name: &str) -> anyhow::Result<&'a str> {
    a.get(name).map(String::as_str).with_context(|| format!("no {name} in {a:?}"))
}

/// Task rows `(id, status)` of the table `table_id`.
fn table_rows(dom: &str, table_id: &str) -> anyhow::Result<BTreeMap<u64, String>> {
    let table = between(dom, &format!("<table id=\"{table_id}\""), "</table>")?;
    let mut rows = BTreeMap::new();
    for a in tags(table, "tr").into_iter().filter(|a| a.contains_key("data-task-id")) {
        rows.insert(attr(&a, "data-task-id")?.parse()?, attr(&a, "data-status")?.to_string());
    }
    Ok(rows)
}

// ----- API helpers --------------------------------------------------------------

async fn overview(c: &Cluster, addr: &str, query: &str) -> anyhow::Result<Overview> {
    c.api.call(Method::GET, addr, &format!("/api/v1/overview?{query}"), None).await
}

async fn metrics(c: &Cluster, addr: &str) -> anyhow::Result<prom::Exposition> {
    let reply = c.api.raw(Method::GET, addr, "/metrics", None).await?;
    ensure!(reply.status.is_success(), "GET /metrics on {addr}: {}", reply.status);
    let text = reply.body.as_str().context("/metrics is not text")?.to_string();
    prom::parse(&text).map_err(|e| anyhow::anyhow!("/metrics of {addr} does not parse: {e}\n{}", tail(&text, 2000)))
}

async fn post(c: &Cluster, addr: &str, path: &str) -> anyhow::Result<()> {
    let _: Value = c.api.call(Method::POST, addr, path, None).await?;
    Ok(())
}

fn spec(queue: &str, kind: &str, payload: Value) -> Value {
    json!({"queue": queue, "kind": kind, "payload": payload})
}

fn counts_of(o: &Overview, queue: &str) -> BTreeMap<TaskStatus, u64> {
    let mut counts: BTreeMap<TaskStatus, u64> = TaskStatus::ALL.into_iter().map(|s| (s, 0)).collect();
    if let Some(q) = o.queues.iter().find(|q| q.name == queue) {
        counts.extend(q.counts.clone());
    }
    counts
}

// ----- the tests ------------------------------------------------------------------

/// The dashboard of a working cluster shows what the API says; the metrics
/// of every node agree with it; `skein watch` follows a queue to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_metrics_and_watch_match_the_api() {
    let chromium = Chromium::locate().expect("chromium");
    let cluster = Cluster::start(3).await.expect("cluster");
    let result = dashboard_metrics_and_watch(&cluster, &chromium).await;
    cluster.finish(result);
}

async fn dashboard_metrics_and_watch(c: &Cluster, chromium: &Chromium) -> anyhow::Result<()> {
    serve_the_dashboard_anonymously(c).await?;
    let leader = c.wait_leader(Duration::from_secs(10)).await?;
    let addrs = c.live_addrs();
    let a = &addrs[0];
    say(format!("cluster up, leader {leader}"));

    // A migration plan in the catalog, not run: the dashboard shows it with
    // its owner.
    let plan = json!({
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": "orders-v2", "annotations": {"honk/queue": "dataset-migrations"}},
        "spec": {
            "type": "migration-plan", "lifecycle": "production", "owner": "team-infra",
            "source": "/nonexistent/orders.csv", "target": {"url": "/nonexistent/out/", "format": "parquet"},
            "steps": [{"type": "copy"}],
        },
    });
    let _: Value = c.api.call(Method::POST, a, "/api/v1/plans", Some(&json!({"entities": [plan]}))).await?;

    // The workload: a queue that runs to its end (some tasks fail for good),
    // long tasks that keep running, and a paused queue that waits.
    post(c, a, "/api/v1/queues/later/pause").await?;
    let mut etl: Vec<Value> = (0..40)
        .map(|i| spec("etl", "sleep", json!({"ms": 300, "dataset": format!("ds-{i:03}"), "owner": "team-data"})))
        .collect();
    etl.extend((0..3).map(|i| {
        spec(
            "etl",
            "exec",
            json!({"command": ["sh", "-c", "echo broken input >&2; exit 3"], "dataset": format!("bad-{i}")}),
        )
    }));
    let long: Vec<Value> =
        (0..4).map(|i| spec("long", "sleep", json!({"ms": 600_000, "dataset": format!("big-{i}")}))).collect();
    let later: Vec<Value> = (0..5).map(|i| spec("later", "noop", json!({"dataset": format!("next-{i}")}))).collect();

    let watch = async {
        // Give the enqueue a head start so the queue exists.
        wait_until(Duration::from_secs(10), "queue etl to exist", async || {
            Ok(c.api.queues(a).await?.iter().any(|q| q.name == "etl"))
        })
        .await?;
        c.cli(&["--addr", a, "watch", "--queue", "etl", "--interval-ms", "200"]).await
    };
    let enqueue = async {
        c.api.enqueue(&addrs[0], &etl[..20]).await?;
        c.api.enqueue(&addrs[1], &etl[20..]).await?;
        c.api.enqueue(&addrs[2], &long).await?;
        c.api.enqueue(&addrs[1], &later).await?;
        anyhow::Ok(())
    };
    let (watched, enqueued) = tokio::join!(watch, enqueue);
    enqueued?;
    let watched = watched?;
    let out = String::from_utf8_lossy(&watched.stdout);
    ensure!(watched.status.success(), "skein watch failed: {out}{}", String::from_utf8_lossy(&watched.stderr));
    ensure!(
        out.contains("etl: 43/43 done") && out.contains("done in"),
        "skein watch did not follow etl to its end:\n{out}"
    );
    say(format!("skein watch followed etl to its end ({} lines)", out.lines().count()));

    // Wait for the steady state: etl ended, the long tasks running, `later` waiting.
    wait_until(SETTLE, "the workload to reach its steady state", async || {
        let o = overview(c, a, "limit=0&stuck=false").await?;
        let (e, l, p) = (counts_of(&o, "etl"), counts_of(&o, "long"), counts_of(&o, "later"));
        Ok(e[&TaskStatus::Succeeded] == 40
            && e[&TaskStatus::Dead] == 3
            && l[&TaskStatus::Leased] == 4
            && p[&TaskStatus::Pending] == 5)
    })
    .await?;
    wait_replicas_agree(&c.api, &addrs, SETTLE).await?;
    say("steady state: 40 succeeded, 3 dead, 4 running, 5 paused");

    // The page, as a browser renders it, from a follower.
    let follower = c.ids().into_iter().find(|id| *id != leader).context("a follower")?;
    let page = format!("http://{}/", c.addr(follower));
    let dom = chromium.dom(&page).await?;
    let api = overview(c, &c.addr(follower), "limit=500").await?;

    let rows = table_rows(&dom, "tasks")?;
    let want: BTreeMap<u64, String> = api.tasks.iter().map(|t| (t.id.0, t.status.to_string())).collect();
    ensure!(rows.len() == 52, "the page lists {} tasks, expected 52", rows.len());
    ensure!(rows == want, "the page's rows differ from the API's:\npage {rows:?}\napi  {want:?}");
    let names = between(&dom, "<table id=\"tasks\"", "</table>")?;
    ensure!(
        names.contains("ds-007") && names.contains("bad-2") && names.contains("team-data"),
        "dataset names or owners missing"
    );

    let counts = between(&dom, "<div id=\"counts\"", "</div>")?;
    for a in tags(counts, "span").into_iter().filter(|a| a.contains_key("data-count")) {
        let status = attr(&a, "data-status")?;
        let shown: u64 = attr(&a, "data-count")?.parse()?;
        let expected = if status == "total" {
            api.totals.values().sum()
        } else {
            api.totals.get(&status.parse::<TaskStatus>().map_err(anyhow::Error::msg)?).copied().unwrap_or(0)
        };
        ensure!(shown == expected, "the page counts {shown} {status}, the API {expected}");
    }
    let queues: BTreeMap<String, (String, String)> = tags(between(&dom, "<div id=\"queues\"", "</section>")?, "div")
        .into_iter()
        .filter_map(|a| {
            Some((a.get("data-queue")?.clone(), (a.get("data-done")?.clone(), a.get("data-total")?.clone())))
        })
        .collect();
    ensure!(queues.get("etl") == Some(&("43".into(), "43".into())), "etl's progress bar: {queues:?}");
    ensure!(queues.get("later") == Some(&("0".into(), "5".into())), "later's progress bar: {queues:?}");

    let cluster_api = c.api.cluster(&c.addr(follower)).await?;
    let nodes: BTreeSet<(u64, String)> = tags(between(&dom, "<table id=\"nodes\"", "</table>")?, "tr")
        .into_iter()
        .filter(|a| a.contains_key("data-node-id"))
        .map(|a| Ok((attr(&a, "data-node-id")?.parse()?, attr(&a, "data-role")?.to_string())))
        .collect::<anyhow::Result<_>>()?;
    let want_nodes: BTreeSet<(u64, String)> = cluster_api.nodes.iter().map(|n| (n.id, n.role.clone())).collect();
    ensure!(nodes == want_nodes, "the page's nodes {nodes:?} differ from the API's {want_nodes:?}");
    // (A loaded machine may have moved the leadership since the start.)
    let leading: Vec<u64> = nodes.iter().filter(|(_, role)| role == "leader").map(|(id, _)| *id).collect();
    ensure!(leading.len() == 1 && cluster_api.leader == Some(leading[0]), "the page shows leaders {leading:?}");
    ensure!(table_rows(&dom, "stuck")?.is_empty(), "nothing should be stuck");
    let plans = between(&dom, "<div id=\"plans\"", "</section>")?;
    ensure!(
        plans.contains("data-plan=\"component:default/orders-v2\" data-status=\"never_run\"")
            && plans.contains("team-infra"),
        "the plan is not shown: {plans}"
    );
    ensure!(between(&dom, "<select id=\"f-owner\"", "</select>")?.contains("team-infra"), "no plan owner to filter by");
    say("the rendered page matches the API: 52 rows, counts per status, 3 nodes");

    // A filtered view, as a link would open it.
    let dead_dom = chromium.dom(&format!("{page}?queue=etl&status=dead")).await?;
    let dead = table_rows(&dead_dom, "tasks")?;
    ensure!(dead.len() == 3 && dead.values().all(|s| s == "dead"), "the etl/dead view shows {dead:?}");
    chromium.screenshot(&page, "dashboard.png").await?;

    // Metrics: every node's parse, and its cluster-wide facts agree with the API.
    for id in c.ids() {
        let addr = c.addr(id);
        let m = metrics(c, &addr).await?;
        let queues = c.api.queues(&addr).await?;
        for q in &queues {
            for (status, n) in &q.counts {
                let got = m.get("skein_tasks", &[("queue", q.name.as_str()), ("status", status.as_str())]);
                ensure!(
                    got == Some(*n as f64),
                    "node {id}: skein_tasks{{{}, {status}}} = {got:?}, the API says {n}",
                    q.name
                );
            }
        }
        let status = c.api.cluster(&addr).await?;
        ensure!(m.get("skein_raft_term", &[]) == Some(status.term as f64), "node {id}: term");
        let leader = status.leader.context("a leader")?;
        ensure!(m.get("skein_raft_leader_id", &[]) == Some(leader as f64), "node {id}: leader");
        ensure!(m.get("skein_node_leases", &[("node", "1")]).is_some(), "node {id}: no skein_node_leases");
        ensure!(m.sum("skein_node_leases", &[]) == 4.0, "node {id}: 4 leases held in all");
        ensure!(m.sum("skein_stuck_tasks", &[]) == 0.0, "node {id}: nothing is stuck");
        let applied = m.get("skein_raft_applied_index", &[]).context("applied index")?;
        let last = m.get("skein_raft_last_log_index", &[]).context("last log index")?;
        ensure!(applied > 0.0 && applied <= last, "node {id}: applied {applied}, last log {last}");
        ensure!(
            m.get("skein_raft_commit_index", &[]).is_some() == (id == leader),
            "node {id}: commit index only on the leader"
        );
        ensure!(m.families["skein_task_duration_seconds"].kind == "histogram", "durations are a histogram");
        ensure!(m.families["skein_enqueued_tasks"].kind == "counter", "enqueues are a counter");
    }
    let checks = [
        ("skein_enqueued_tasks_total", vec![("queue", "etl")], 43.0),
        ("skein_enqueued_tasks_total", vec![("queue", "long")], 4.0),
        ("skein_enqueued_tasks_total", vec![("queue", "later")], 5.0),
        ("skein_leased_tasks_total", vec![("queue", "etl")], 43.0),
        ("skein_leased_tasks_total", vec![("queue", "long")], 4.0),
        ("skein_completed_tasks_total", vec![("queue", "etl"), ("outcome", "succeeded")], 40.0),
        ("skein_completed_tasks_total", vec![("queue", "etl"), ("outcome", "failed")], 3.0),
        ("skein_dead_tasks_total", vec![("queue", "etl")], 3.0),
        ("skein_task_duration_seconds_count", vec![("queue", "etl"), ("outcome", "succeeded")], 40.0),
        ("skein_lease_wait_seconds_count", vec![], 47.0),
        ("skein_running_tasks", vec![], 4.0),
        ("skein_raft_is_leader", vec![], 1.0),
    ];
    // Node-local events are counted where they happen, a moment after the
    // replicated state changed (a worker counts an outcome when the leader's
    // answer reaches it; the running gauge is refreshed on each heartbeat),
    // so the sums are polled until they match. An event lost or counted
    // twice never converges and fails here, with the last sums seen.
    let converging = std::time::Instant::now();
    let slept = wait_for(
        Duration::from_secs(15),
        "the node-local metrics summed over the nodes to match the API",
        async || {
            let mut expositions = Vec::new();
            for id in c.ids() {
                expositions.push(metrics(c, &c.addr(id)).await?);
            }
            let sum =
                |name: &str, labels: &[(&str, &str)]| expositions.iter().map(|m| m.sum(name, labels)).sum::<f64>();
            let wrong: Vec<String> = checks
                .iter()
                .filter_map(|(name, labels, want)| {
                    let got = sum(name, labels.as_slice());
                    (got != *want).then(|| format!("{name}{labels:?} summed over the nodes is {got}, expected {want}"))
                })
                .collect();
            ensure!(wrong.is_empty(), "{}", wrong.join("; "));
            Ok(Some(sum("skein_task_duration_seconds_sum", &[("queue", "etl"), ("outcome", "succeeded")])))
        },
    )
    .await?;
    ensure!(slept >= 40.0 * 0.3, "40 tasks of 300 ms ran {slept} s in all");
    say(format!(
        "/metrics of every node parses and matches the API (node-local sums converged in {:?})",
        converging.elapsed()
    ));
    Ok(())
}

/// An exec that never ends past its queue's limit, and a worker frozen
/// while holding leases: `skein stuck`, the dashboard and the metrics list
/// both; the hung task's log lines carry its id, attempt and token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_tasks_are_listed_by_the_cli_dashboard_and_metrics() {
    let chromium = Chromium::locate().expect("chromium");
    let mut cluster = Cluster::start(3).await.expect("cluster");
    let result = stuck_tasks(&mut cluster, &chromium).await;
    cluster.finish(result);
}

async fn stuck_tasks(c: &mut Cluster, chromium: &Chromium) -> anyhow::Result<()> {
    serve_the_dashboard_anonymously(c).await?;
    let leader = c.wait_leader(Duration::from_secs(10)).await?;
    let la = c.addr(leader);

    // 1. An exec that never ends, in a queue that calls 2 s too long.
    c.api.configure_queue(&la, "hang", json!({"stuck_run_ms": 2_000})).await?;
    let script = "echo opening the export >&2; sleep 600";
    let hung = c
        .api
        .enqueue(&la, &[spec("hang", "exec", json!({"command": ["sh", "-c", script], "dataset": "hung-export"}))])
        .await?[0];
    let stuck_cli = wait_for(SETTLE, "skein stuck to list the hung exec", async || {
        let out = c.cli(&["--addr", &la, "stuck"]).await?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        ensure!(out.status.success(), "skein stuck failed: {text}{}", String::from_utf8_lossy(&out.stderr));
        Ok((text.contains("hung-export") && text.contains("longer than the limit")).then_some(text))
    })
    .await?;
    say(format!("skein stuck lists the hung exec:\n{stuck_cli}"));

    // Its log lines carry its id, attempt and token.
    let detail = c.api.task(&la, hung).await?;
    let lease = detail.task.lease.clone().context("the hung task holds a lease")?;
    let log = std::fs::read_to_string(c.node(lease.node).log_path())?;
    let line = log
        .lines()
        .find(|l| l.contains("exec stderr") && l.contains("opening the export"))
        .context("no exec stderr line in the log of the node running the task")?;
    for field in [format!("task_id={hung}"), "attempt=1".to_string(), format!("token={}", lease.token)] {
        ensure!(line.contains(&field), "the exec stderr line lacks {field}: {line}");
    }

    // 2. A worker frozen while it holds leases of a queue that calls a
    //    node silent after 2 s (and whose leases last long enough to stay held).
    c.api.configure_queue(&la, "frozen", json!({"stuck_silence_ms": 2_000, "lease_ms": 120_000})).await?;
    let sleeps: Vec<Value> =
        (0..9).map(|i| spec("frozen", "sleep", json!({"ms": 600_000, "dataset": format!("part-{i}")}))).collect();
    c.api.enqueue(&la, &sleeps).await?;
    let victim = wait_for(SETTLE, "a follower holding frozen leases", async || {
        let tasks = c.api.tasks(&la, Some("frozen"), Some(TaskStatus::Leased)).await?;
        Ok(tasks.iter().filter_map(|t| t.lease.as_ref()).map(|l| l.node).find(|n| *n != leader))
    })
    .await?;
    let held: BTreeSet<u64> = c
        .api
        .tasks(&la, Some("frozen"), Some(TaskStatus::Leased))
        .await?
        .iter()
        .filter(|t| t.lease.as_ref().is_some_and(|l| l.node == victim))
        .map(|t| t.id.0)
        .collect();
    c.sigstop(victim)?;
    say(format!("node {victim} frozen (SIGSTOP) holding tasks {held:?}"));

    let text = wait_for(SETTLE, "skein stuck to list the frozen node's tasks", async || {
        let out = c.cli(&["--addr", &la, "stuck", "--queue", "frozen"]).await?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let all = held.iter().all(|id| {
            text.lines().any(|l| l.trim_start().starts_with(&format!("{id} ")) && l.contains("no heartbeat"))
        });
        Ok((all && text.contains(&format!("node {victim} (no heartbeat"))).then_some(text))
    })
    .await?;
    say(format!("skein stuck lists the frozen node's tasks:\n{text}"));

    // The dashboard (from the leader) lists both kinds, and the frozen node
    // is not healthy (once its heartbeat is 3 s old).
    wait_until(SETTLE, "the frozen node to look unhealthy", async || {
        let o = overview(c, &la, "limit=0&stuck=false").await?;
        Ok(o.nodes.iter().any(|n| n.node.id == victim && n.health != "ok"))
    })
    .await?;
    let page = format!("http://{la}/");
    let dom = chromium.dom(&page).await?;
    let stuck_rows = between(&dom, "<table id=\"stuck\"", "</table>")?;
    let reasons: BTreeMap<u64, String> = tags(stuck_rows, "tr")
        .into_iter()
        .filter(|a| a.contains_key("data-task-id"))
        .map(|a| Ok((attr(&a, "data-task-id")?.parse()?, attr(&a, "data-reasons")?.to_string())))
        .collect::<anyhow::Result<_>>()?;
    ensure!(reasons.get(&hung).is_some_and(|r| r.contains("running_too_long")), "the page's stuck view: {reasons:?}");
    for id in &held {
        ensure!(
            reasons.get(id).is_some_and(|r| r.contains("node_silent")),
            "task {id} not stuck on the page: {reasons:?}"
        );
    }
    ensure!(
        stuck_rows.contains("hung-export") && stuck_rows.contains("sent no heartbeat"),
        "stuck reasons are not shown in words"
    );
    let health: BTreeMap<u64, String> = tags(between(&dom, "<table id=\"nodes\"", "</table>")?, "tr")
        .into_iter()
        .filter_map(|a| Some((a.get("data-node-id")?.parse().ok()?, a.get("data-health")?.clone())))
        .collect();
    ensure!(health.get(&victim).is_some_and(|h| h != "ok"), "the frozen node looks healthy: {health:?}");
    ensure!(health.get(&leader).map(String::as_str) == Some("ok"), "the leader looks unhealthy: {health:?}");
    chromium.screenshot(&page, "dashboard-stuck.png").await?;
    say("the dashboard lists the hung exec and the frozen node's tasks");

    // And the metrics count them.
    let m = metrics(c, &la).await?;
    ensure!(m.get("skein_stuck_tasks", &[("queue", "hang")]) == Some(1.0), "skein_stuck_tasks{{hang}}");
    let silent = m.get("skein_stuck_reasons", &[("queue", "frozen"), ("reason", "node_silent")]);
    ensure!(
        silent == Some(held.len() as f64),
        "skein_stuck_reasons{{frozen, node_silent}} = {silent:?}, expected {}",
        held.len()
    );
    c.sigcont(victim)?;
    Ok(())
}

/// Headless chromium cannot sign in (a form post, then a cookie): these
/// tests put the cluster in auth mode `warn`, where the dashboard's polls
/// are served without a token. Signing in is tested in security.rs.
async fn serve_the_dashboard_anonymously(c: &Cluster) -> anyhow::Result<()> {
    let body = serde_json::json!({"mode": "warn"});
    let _: serde_json::Value = c.api.call(reqwest::Method::POST, &c.addr(1), "/api/v1/auth", Some(&body)).await?;
    Ok(())
}
