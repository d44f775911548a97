//! Partitioned plans end to end on 3-node clusters of real `skein-node`
//! processes: one dataset of hundreds of files migrated by the whole fleet
//! (one task per partition, one commit that publishes them as one version)
//! while a node is paused and another killed; a reader that polls the
//! target during the publish; a failed partition run again alone; a join
//! of two sources; the same partitioned plan on S3 (moto); a run under a
//! memory pool smaller than its data; a worker scaled down by SIGTERM
//! mid-run, whose unfinished partitions are handed back and run elsewhere
//! while the finished ones are kept.
//!
//! Needs the binaries (`cargo build --workspace --bins`) and, for the S3
//! test, moto's server (`scripts/deps.sh`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context};
use reqwest::Method;
use serde_json::{json, Value};
use skein_raft::api::{PlanDetail, RunPartitions, RunPlansReply, TaskDetail};
use skein_raft::fsm::{EventKind, Task, TaskStatus};
use skein_testkit::{wait_for, Cluster};
use skein_tests::checks::{details, say, succeeded_once};
use skein_tests::moto::Moto;

/// Every test body's own deadline (the cluster's start not counted).
const TEST_TIMEOUT: Duration = Duration::from_secs(240);
const QUEUE: &str = "dataset-migrations";

/// A fresh 3-node cluster and a folder for datasets, bounded in time.
async fn with_cluster<F>(env: Vec<(String, String)>, body: F)
where
    F: AsyncFnOnce(&mut Cluster, &Path) -> anyhow::Result<()>,
{
    skein_tests::bounded::with_cluster("skein-partitions-", 3, env, TEST_TIMEOUT, body).await
}

// ----- helpers ----------------------------------------------------------------

/// `id,name,amount,country` rows `first..first+n`, deterministic.
fn customers_csv(first: usize, n: usize) -> String {
    let countries = ["UK", "US", "DE", "FR"];
    let mut s = String::from("id,name,amount,country\n");
    for i in first..first + n {
        s.push_str(&format!("{i},name-{i},{}.{:02},{}\n", i % 1000, i % 100, countries[i % 4]));
    }
    s
}

/// `files` CSV files of `rows` rows each under `dir/src/`, ids 1..=files*rows.
fn write_source(dir: &Path, files: usize, rows: usize) -> anyhow::Result<PathBuf> {
    let src = dir.join("src");
    std::fs::create_dir_all(&src)?;
    for f in 0..files {
        std::fs::write(src.join(format!("part-{f:05}.csv")), customers_csv(1 + f * rows, rows))?;
    }
    Ok(src)
}

fn plan(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\n  annotations:\n    honk/queue: {QUEUE}\nspec:\n  type: migration-plan\n  lifecycle: production\n  owner: team-infra\n{spec}"
    )
}

async fn apply(c: &Cluster, dir: &Path, docs: &[String]) -> anyhow::Result<()> {
    let path = dir.join("plans.yaml");
    std::fs::write(&path, docs.join("---\n"))?;
    let out = c.cli(&["--addr", &c.addr(c.live_ids()[0]), "plan", "apply", &path.display().to_string()]).await?;
    ensure!(
        out.status.success(),
        "plan apply: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

async fn run_plans(c: &Cluster, body: Value) -> anyhow::Result<RunPlansReply> {
    let addr = c.addr(*c.live_ids().last().context("no live node")?);
    c.api.call(Method::POST, &addr, "/api/v1/plans/run", Some(&body)).await
}

async fn detail(c: &Cluster, name: &str) -> anyhow::Result<PlanDetail> {
    let addr = c.addr(c.live_ids()[0]);
    c.api.call(Method::GET, &addr, &format!("/api/v1/plans/component/default/{name}"), None::<&Value>).await
}

/// Waits until the plan's partitioned run of `generation` has ended (as
/// the node asked has applied it); returns it.
async fn wait_run_ended(c: &Cluster, name: &str, generation: u64, timeout: Duration) -> anyhow::Result<RunPartitions> {
    let last = std::sync::Mutex::new(String::from("nothing yet"));
    let ended = wait_for(timeout, &format!("{name}'s partitioned run {generation} to end"), async || {
        let s = detail(c, name).await?.summary;
        if let Ok(mut l) = last.lock() {
            *l = format!(
                "generation {}, task {:?}, partitions {:?}",
                s.generation,
                s.task.as_ref().map(|t| (t.id, t.status)),
                s.partitions
            );
        }
        let p = s.partitions.filter(|_| s.generation == generation);
        Ok(p.filter(|p| matches!(p.status.as_str(), "succeeded" | "failed" | "cancelled")))
    })
    .await;
    ended
        .with_context(|| format!("the plan's detail last said: {}", last.lock().map(|l| l.clone()).unwrap_or_default()))
}

/// Sets its flag when dropped: stops a blocking reader thread even when
/// the test body is dropped at its deadline (the runtime waits for
/// blocking threads before it ends).
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The run's partition tasks, by index, through the API.
async fn partition_tasks(c: &Cluster, name: &str, generation: u64, total: u64) -> anyhow::Result<Vec<Task>> {
    let addr = c.addr(c.live_ids()[0]);
    let mut out = Vec::new();
    let page: Value =
        c.api.call(Method::GET, &addr, &format!("/api/v1/tasks?queue={QUEUE}&limit=10000"), None::<&Value>).await?;
    let prefix = format!("plan:component:default/{name}#{generation}/part-");
    for t in page["tasks"].as_array().context("tasks")? {
        let key = t["idempotency_key"].as_str().unwrap_or("");
        if key.starts_with(&prefix) {
            out.push(serde_json::from_value::<Task>(t.clone())?);
        }
    }
    ensure!(out.len() as u64 == total, "{} partition tasks listed, {total} expected", out.len());
    Ok(out)
}

/// What a reader that follows the protocol sees in a local versioned
/// target: `_manifest.json`, then every file it lists; `None` when nothing
/// is published yet, `Err` when a file it lists is gone (a newer version
/// replaced it: read again).
fn read_version(target: &Path) -> std::io::Result<Option<(u64, u64)>> {
    let manifest = match std::fs::read(target.join("_manifest.json")) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let m: Value = serde_json::from_slice(&manifest).map_err(std::io::Error::other)?;
    let token = m["token"].as_u64().unwrap_or(0);
    let mut rows = 0u64;
    for f in m["files"].as_array().cloned().unwrap_or_default() {
        let rel = f["path"].as_str().or(f.as_str()).unwrap_or_default().to_string();
        let text = std::fs::read_to_string(target.join(&rel))?;
        rows += text.lines().filter(|l| !l.trim().is_empty()).count() as u64;
    }
    Ok(Some((token, rows)))
}

/// Every data file under a folder (not `_`- or `.`-prefixed), relative.
fn data_files(dir: &Path) -> anyhow::Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('_') || name.starts_with('.') {
                continue;
            }
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            } else {
                out.insert(e.path().strip_prefix(dir)?.display().to_string());
            }
        }
    }
    Ok(out)
}

/// A node holding at least one lease right now, other than `except`.
async fn a_lease_holder(c: &Cluster, except: &[u64]) -> anyhow::Result<u64> {
    wait_for(Duration::from_secs(30), "a node holding a partition's lease", async || {
        let addr = c.addr(c.live_ids()[0]);
        let page: Value = c
            .api
            .call(Method::GET, &addr, &format!("/api/v1/tasks?queue={QUEUE}&status=leased&limit=100"), None::<&Value>)
            .await?;
        let holder = page["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["lease"]["node"].as_u64())
            .find(|n| !except.contains(n));
        Ok(holder)
    })
    .await
}

// ----- the tests --------------------------------------------------------------

/// 200 CSV files, one partition each, to JSON lines partitioned by country:
/// a node is paused (SIGSTOP) past its leases and resumed, another killed,
/// mid-run. The run ends with every partition succeeded once, one commit,
/// the target complete and validated, no file from a stale token; a reader
/// polling the target throughout (and through a second, forced run) only
/// ever sees nothing or a complete version.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partitioned_run_survives_a_paused_and_a_killed_node() {
    with_cluster(Vec::new(), async |c, dir| {
        const FILES: usize = 200;
        const ROWS: usize = 50;
        const TOTAL: u64 = (FILES * ROWS) as u64;
        let src = write_source(dir, FILES, ROWS)?;
        let target = dir.join("out");
        let addr = c.addr(1);
        c.api.configure_queue(&addr, QUEUE, json!({"lease_ms": 2000, "backoff_base_ms": 100, "backoff_cap_ms": 500})).await?;
        // Each partition sleeps a little, so the run lasts long enough to
        // pause and kill nodes in the middle of it.
        let docs = vec![plan("by-country", &format!(
            "  source: {{url: \"file://{}/\", format: csv, partition: file}}\n  target: {{url: \"file://{}/\", format: jsonl, partition_by: [country]}}\n  steps:\n    - type: exec\n      command: [sleep, \"0.2\"]\n    - type: sql\n      query: \"SELECT id, name, country FROM source\"\n    - type: validate\n      row_count: equal\n      checksum: {{columns: [id, name]}}\n",
            src.display(), target.display()
        ))];
        apply(c, dir, &docs).await?;

        // The reader: protocol-following, from before the first publish to the end.
        let stop = Arc::new(AtomicBool::new(false));
        let _stop_reader = StopOnDrop(stop.clone());
        let reads = Arc::new(AtomicU64::new(0));
        let reader = {
            let (stop, reads, target) = (stop.clone(), reads.clone(), target.clone());
            tokio::task::spawn_blocking(move || -> anyhow::Result<(u64, u64)> {
                let (mut complete, mut retried) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    match read_version(&target) {
                        Ok(None) => {}
                        Ok(Some((token, rows))) => {
                            ensure!(rows == TOTAL, "a reader saw {rows} rows of {TOTAL} in the version of token {token}");
                            complete += 1;
                        }
                        Err(_) => retried += 1,
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
                Ok((complete, retried))
            })
        };

        let run = run_plans(c, json!({"refs": ["by-country"]})).await?;
        let generation = run.runs[0].generation;
        wait_for(Duration::from_secs(60), "30 partitions done", async || {
            Ok(detail(c, "by-country").await?.summary.partitions.filter(|p| p.succeeded >= 30).map(|_| ()))
        })
        .await?;
        let leader = c.leader().await?;
        let paused = a_lease_holder(c, &[leader]).await?;
        say(format!("pausing node {paused} (it holds partition leases)"));
        c.sigstop(paused)?;
        tokio::time::sleep(Duration::from_secs(5)).await;
        c.sigcont(paused)?;
        say(format!("resumed node {paused}"));
        wait_for(Duration::from_secs(90), "100 partitions done", async || {
            Ok(detail(c, "by-country").await?.summary.partitions.filter(|p| p.succeeded >= 100).map(|_| ()))
        })
        .await?;
        let killed = a_lease_holder(c, &[paused]).await?;
        say(format!("killing node {killed} (it holds partition leases)"));
        c.kill9(killed)?;
        let r = wait_run_ended(c, "by-country", generation, Duration::from_secs(150)).await?;
        ensure!(r.status == "succeeded" && r.succeeded == FILES as u64 && r.failed == 0, "run: {r:?}");
        // /metrics counts the run's partitions by status: one series per plan and status.
        let live = c.addr(c.live_ids()[0]);
        ensure!(c.api.raw(Method::GET, &live, "/metrics", None).await?.status.is_success(), "GET /metrics");
        let metrics = c.api.raw(Method::GET, &live, "/metrics", None).await?;
        let text = metrics.body.as_str().map(str::to_string).unwrap_or_else(|| metrics.body.to_string());
        let series = format!("skein_plan_partitions{{plan=\"component:default/by-country\",status=\"succeeded\"}} {FILES}");
        ensure!(text.lines().any(|l| l.starts_with(&series)), "no {series} in /metrics");
        ensure!(text.lines().filter(|l| l.starts_with("skein_plan_partitions{")).count() == 5, "one series per status");

        // Every partition succeeded exactly once, under one token; the
        // version holds exactly the files their results name.
        let parts = partition_tasks(c, "by-country", generation, FILES as u64).await?;
        let live = c.addr(c.live_ids()[0]);
        let mut named: BTreeSet<String> = BTreeSet::new();
        let mut reran = 0;
        for t in &parts {
            let d = c.api.task(&live, t.id.0).await?;
            let ok = succeeded_once(&d)?;
            let result: Value = d.result.clone().context("no result")?;
            ensure!(result["partition"]["token"].as_u64() == ok.token.map(|t| t.0), "partition {} result under another token", t.id);
            for f in result["partition"]["files"].as_array().context("files")? {
                named.insert(f["path"].as_str().context("path")?.to_string());
            }
            if t.attempt > 1 {
                reran += 1;
            }
        }
        say(format!("{reran} partitions ran more than once (paused or killed mid-run)"));
        let commit = c.api.task(&live, r.commit_task.0).await?;
        let commit_token = succeeded_once(&commit)?.token.context("no token")?.0;
        let record: Value = serde_json::from_slice(&std::fs::read(dir.join("_skein/out/published.json"))?)?;
        ensure!(record["token"] == commit_token, "published.json {record} is not the commit's token {commit_token}");
        let (token, rows) = read_version(&target)?.context("nothing published")?;
        ensure!(token == commit_token && rows == TOTAL, "version token {token} rows {rows}");
        let on_disk = data_files(&target)?;
        ensure!(on_disk.len() == named.len(), "{} files on disk, {} named by the partitions' results", on_disk.len(), named.len());
        ensure!(on_disk.iter().all(|f| f.starts_with("country=")), "a file outside the hive folders: {on_disk:?}");

        // A second, forced run publishes over the first while the reader reads.
        let before = reads.load(Ordering::Relaxed);
        let run2 = run_plans(c, json!({"refs": ["by-country"], "force": true})).await?;
        ensure!(run2.runs[0].generation == generation + 1, "{:?}", run2.runs);
        let r2 = wait_run_ended(c, "by-country", generation + 1, Duration::from_secs(120)).await?;
        ensure!(r2.status == "succeeded", "second run: {r2:?}");
        let (token2, rows2) = read_version(&target)?.context("nothing published")?;
        ensure!(token2 > commit_token && rows2 == TOTAL, "second version token {token2} rows {rows2}");
        stop.store(true, Ordering::Relaxed);
        let (complete, retried) = reader.await??;
        say(format!(
            "the reader read {} times during the second run; {complete} complete versions seen, {retried} reads raced a swap and were retried, none partial",
            reads.load(Ordering::Relaxed) - before
        ));
        ensure!(complete > 0, "the reader never saw a version");
        Ok(())
    })
    .await;
}

/// One bad source file fails its partition for good; the run's commit is
/// cancelled and the rest kept. Fixed, `skein plan run REF --partition P`
/// runs that one partition again, and the run publishes; the partitions
/// that had succeeded ran once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_partition_runs_again_alone() {
    with_cluster(Vec::new(), async |c, dir| {
        let src = write_source(dir, 12, 20)?;
        // Partition 5 cannot be cast: its ids are words.
        std::fs::write(src.join("part-00005.csv"), "id,name,amount,country\nnot-a-number,x,1.00,UK\n")?;
        let target = dir.join("typed");
        let docs = vec![plan("typed", &format!(
            "  source: {{url: \"file://{}/\", format: csv, partition: file}}\n  target: {{url: \"file://{}/\", format: parquet}}\n  steps:\n    - type: sql\n      query: \"SELECT CAST(id AS BIGINT) AS id, name FROM source\"\n",
            src.display(), target.display()
        ))];
        apply(c, dir, &docs).await?;
        let addr = c.addr(1);
        c.api.configure_queue(&addr, QUEUE, json!({"max_attempts": 2, "backoff_base_ms": 100, "backoff_cap_ms": 200})).await?;
        run_plans(c, json!({"refs": ["typed"]})).await?;
        let r = wait_run_ended(c, "typed", 1, Duration::from_secs(90)).await?;
        ensure!(r.status == "failed" && r.failed == 1 && r.succeeded == 11, "{r:?}");
        ensure!(r.failed_partitions == vec![5], "failed: {:?}", r.failed_partitions);
        ensure!(!target.exists(), "a failed run published something");
        let out = c.cli(&["--addr", &addr, "plan", "show", "typed"]).await?;
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(text.contains("--partition 5"), "plan show does not say how to run it again:\n{text}");

        // A partition that succeeded is not run again by --partition.
        let refused = c.cli(&["--addr", &addr, "plan", "run", "typed", "--partition", "3"]).await?;
        ensure!(!refused.status.success(), "--partition of a succeeded partition was accepted");
        ensure!(String::from_utf8_lossy(&refused.stderr).contains("succeeded"), "{}", String::from_utf8_lossy(&refused.stderr));

        std::fs::write(src.join("part-00005.csv"), customers_csv(101, 20))?;
        let out = c.cli(&["--addr", &addr, "plan", "run", "typed", "--partition", "5", "--wait", "--timeout", "90"]).await?;
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(out.status.success(), "plan run --partition 5: {text}{}", String::from_utf8_lossy(&out.stderr));
        ensure!(text.contains("partitioned run succeeded"), "{text}");
        // Only partition 5 was retried; every other ran once.
        let parts = partition_tasks(c, "typed", 1, 12).await?;
        for t in &parts {
            let d = c.api.task(&addr, t.id.0).await?;
            let retried = d.history.iter().filter(|e| matches!(e.what, EventKind::Retried)).count();
            let leased = d.history.iter().filter(|e| matches!(e.what, EventKind::Leased { .. })).count();
            let is_five = t.idempotency_key.as_deref().is_some_and(|k| k.ends_with("/part-5"));
            ensure!(t.status == TaskStatus::Succeeded, "partition task {} is {}", t.id, t.status);
            ensure!(
                (retried, leased) == if is_five { (1, 2) } else { (0, 1) },
                "partition task {} (partition 5: {is_five}) was retried {retried} times and leased {leased} times",
                t.id
            );
        }
        ensure!(target.join("_manifest.json").exists(), "no version published");

        // A partition task forged through the API (its files outside the
        // partitioned source) reads nothing and publishes nothing.
        let outside = dir.join("secret.csv");
        std::fs::write(&outside, "id,name,amount,country\n1,secret,1.00,UK\n")?;
        let payload = json!({"entity_ref": "component:default/typed", "generation": 77,
            "partition": {"index": 0, "files": [format!("file://{}", outside.display())], "bytes": 40}});
        let ids = c.api.enqueue(&addr, &[json!({"queue": QUEUE, "kind": "migration", "payload": payload})]).await?;
        let t = wait_for(Duration::from_secs(30), "the forged partition to end", async || {
            let t = c.api.task(&addr, ids[0]).await?.task;
            Ok(t.status.is_terminal().then_some(t))
        })
        .await?;
        let error = t.last_error.clone().unwrap_or_default();
        ensure!(t.status == TaskStatus::Dead && error.contains("inside the partitioned source"), "forged partition: {} {error}", t.status);
        ensure!(!dir.join("_skein/typed/runs/77").exists(), "the forged partition staged output");
        Ok(())
    })
    .await;
}

/// `sources:` with two datasets joined in SQL; an unpartitioned plan whose
/// target is split by a column (many files, published as one version).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_join_of_two_sources() {
    with_cluster(Vec::new(), async |c, dir| {
        let mut orders = String::from("order_id,customer_id,total\n");
        for i in 1..=300 {
            orders.push_str(&format!("{i},{},{}.50\n", 1 + i % 40, i % 97));
        }
        std::fs::write(dir.join("orders.csv"), orders)?;
        std::fs::write(dir.join("customers.csv"), customers_csv(1, 40))?;
        let d = dir.display();
        let docs = vec![plan("orders-enriched", &format!(
            "  sources:\n    orders: {{url: \"file://{d}/orders.csv\"}}\n    customers: {{url: \"file://{d}/customers.csv\"}}\n  target: {{url: \"file://{d}/enriched/\", format: jsonl, partition_by: [country]}}\n  steps:\n    - type: sql\n      query: \"SELECT o.order_id, o.total, c.name, c.country FROM orders o JOIN customers c ON o.customer_id = c.id\"\n    - type: validate\n      assert: \"SELECT 1 FROM target WHERE name IS NULL\"\n"
        ))];
        apply(c, dir, &docs).await?;
        let run = run_plans(c, json!({"refs": ["orders-enriched"]})).await?;
        let live = c.addr(c.live_ids()[0]);
        let t = wait_for(Duration::from_secs(60), "the join to end", async || {
            let t = c.api.task(&live, run.runs[0].task.0).await?.task;
            Ok(t.status.is_terminal().then_some(t))
        })
        .await?;
        ensure!(t.status == TaskStatus::Succeeded, "join ended {} ({:?})", t.status, t.last_error);
        let (_, rows) = read_version(&dir.join("enriched"))?.context("nothing published")?;
        ensure!(rows == 300, "{rows} joined rows of 300");
        let files = data_files(&dir.join("enriched"))?;
        let countries: BTreeSet<&str> = files.iter().filter_map(|f| f.split('/').next()).collect();
        ensure!(countries.len() == 4, "hive folders: {countries:?}");
        Ok(())
    })
    .await;
}

/// The partitioned plan on S3 (moto): 30 objects, 3 per partition, to a
/// Parquet folder in the bucket; readers find the version through
/// `_skein/current.json`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partitioned_run_on_s3() {
    let logs: PathBuf = std::env::temp_dir().join(format!("skein-moto-partitions-{}.log", std::process::id()));
    let moto = Moto::start(&logs).await.expect("moto's S3 server must start (run scripts/deps.sh)");
    moto.put("lake", Vec::new()).await.expect("creating bucket lake");
    for f in 0..30 {
        moto.put(&format!("lake/events/part-{f:03}.csv"), customers_csv(1 + f * 10, 10).into_bytes())
            .await
            .expect("uploading");
    }
    with_cluster(moto.env(), async |c, dir| {
        let docs = vec![plan("s3-partitioned", "  source: {url: \"s3://lake/events/\", format: csv, partition: {files: 3}}\n  target: {url: \"s3://lake/events-v2/\", format: parquet}\n  steps:\n    - type: sql\n      query: \"SELECT id, name, country FROM source\"\n    - type: validate\n      row_count: equal\n")];
        apply(c, dir, &docs).await?;
        run_plans(c, json!({"refs": ["s3-partitioned"]})).await?;
        let r = wait_run_ended(c, "s3-partitioned", 1, Duration::from_secs(120)).await?;
        ensure!(r.status == "succeeded" && r.total == 10, "{r:?}");
        let pointer = moto.get("lake/events-v2/_skein/current.json").await?.context("no pointer")?;
        let pointer: Value = serde_json::from_slice(&pointer)?;
        ensure!(pointer["rows"] == 300, "pointer: {pointer}");
        let files = pointer["files"].as_array().context("files")?;
        ensure!(!files.is_empty(), "pointer: {pointer}");
        let version = pointer["version"].as_str().context("version")?;
        let prefix = version.strip_prefix("s3://").context("an s3 URL")?.trim_end_matches('/');
        ensure!(moto.get(&format!("{prefix}/_SUCCESS")).await?.is_some(), "no _SUCCESS in {version}");
        Ok(())
    })
    .await;
    drop(moto);
    let _ = std::fs::remove_file(logs);
}

/// A node whose migrations get a 16 MiB memory pool: a sort over a source
/// several times larger spills and succeeds; a hash join whose build side
/// is larger than the pool fails with an error naming the limit (and the
/// node lives on).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_migration_bounded_by_its_memory_pool() {
    // One query thread: two sort streams' merge buffers (which DataFusion 55
    // cannot spill) could starve each other in so small a pool.
    let env = vec![
        ("SKEIN_MIGRATE_MEMORY".to_string(), "16MiB".to_string()),
        ("SKEIN_MIGRATE_THREADS".to_string(), "1".to_string()),
    ];
    with_cluster(env, async |c, dir| {
        // About 60 MiB of CSV.
        let src = write_source(dir, 20, 40_000)?;
        let d = dir.display();
        let docs = vec![
            plan("sorted", &format!(
                "  source: {{url: \"file://{}/\", format: csv}}\n  target: {{url: \"file://{d}/sorted/\", format: parquet, max_rows_per_file: 200000}}\n  steps:\n    - type: sql\n      query: \"SELECT id, name, amount, country FROM source ORDER BY name DESC\"\n    - type: validate\n      row_count: equal\n",
                src.display()
            )),
            plan("joined", &format!(
                "  sources:\n    a: {{url: \"file://{0}/\", format: csv}}\n    b: {{url: \"file://{0}/\", format: csv}}\n  target: {{url: \"file://{d}/joined/\", format: parquet}}\n  steps:\n    - type: sql\n      query: \"SELECT a.id, b.name FROM a JOIN b ON a.name = b.name\"\n",
                src.display()
            )),
        ];
        apply(c, dir, &docs).await?;
        let run = run_plans(c, json!({"refs": ["sorted", "joined"]})).await?;
        let live = c.addr(c.live_ids()[0]);
        let mut ended = Vec::new();
        for r in &run.runs {
            let t = wait_for(Duration::from_secs(180), "the migration to end", async || {
                let t = c.api.task(&live, r.task.0).await?.task;
                Ok(t.status.is_terminal().then_some(t))
            })
            .await?;
            ended.push((r.entity_ref.clone(), t));
        }
        for (name, t) in &ended {
            say(format!("{name}: {} ({:?})", t.status, t.last_error));
        }
        let sorted = &ended.iter().find(|(n, _)| n.ends_with("/sorted")).context("sorted")?.1;
        ensure!(sorted.status == TaskStatus::Succeeded, "the sort did not spill: {:?}", sorted.last_error);
        let joined = &ended.iter().find(|(n, _)| n.ends_with("/joined")).context("joined")?.1;
        ensure!(joined.status == TaskStatus::Dead, "the join over the pool ended {}", joined.status);
        let error = joined.last_error.clone().unwrap_or_default();
        ensure!(error.contains("--migrate-memory"), "the error does not name the limit: {error}");
        ensure!(c.live_ids().len() == 3, "a node died");
        for id in c.live_ids() {
            c.api.call::<Value>(Method::GET, &c.addr(id), "/api/v1/cluster", None::<&Value>).await?;
        }
        Ok(())
    })
    .await;
}

/// The worker SIGTERM stops in the scale-down test (`--drain-timeout 1`),
/// and the one that stays.
const STOPPED: u64 = 101;
const STAYS: u64 = 102;

/// The wall clock in ms, as the leader stamps it into the history (the
/// nodes run on this host).
fn wall_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The leases in a task's history.
fn leases(d: &TaskDetail) -> usize {
    d.history.iter().filter(|e| matches!(e.what, EventKind::Leased { .. })).count()
}

/// The `id` of every row of the version published in a local target, in
/// the order read: its manifest's token, and the ids.
fn version_ids(target: &Path) -> anyhow::Result<(u64, Vec<u64>)> {
    let m: Value = serde_json::from_slice(&std::fs::read(target.join("_manifest.json"))?)?;
    let mut ids = Vec::new();
    for f in m["files"].as_array().context("the manifest lists no files")? {
        let rel = f["path"].as_str().or(f.as_str()).context("a file without a path")?;
        for line in std::fs::read_to_string(target.join(rel))?.lines().filter(|l| !l.trim().is_empty()) {
            let row: Value = serde_json::from_str(line).with_context(|| format!("a row of {rel}: {line}"))?;
            ids.push(row["id"].as_u64().with_context(|| format!("a row of {rel} without an id: {line}"))?);
        }
    }
    Ok((m["token"].as_u64().unwrap_or(0), ids))
}

/// Scaling down loses no finished work. Three members that run nothing
/// (`--slots 0`) and two workers run a partitioned plan of 12 partitions of
/// about 4 s each (an `exec` sleep). Worker 101 (`--drain-timeout 1`) is
/// sent SIGTERM right after it took new partitions, with some already
/// succeeded: it exits 0 and leaves; the partitions it held are handed back
/// (`released` by it under its token, never `expired`) and succeed on the
/// other worker; every partition that had succeeded before the SIGTERM
/// keeps its history unchanged (one lease, one success), every other ran
/// once, the planner ran once and the run's generation did not change (the
/// run goes on from its finished partitions, not from zero); the commit
/// publishes, and the target holds every row exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_stopped_mid_run_hands_back_its_partitions_and_the_finished_ones_are_kept() {
    // Three members that run nothing.
    let spec = skein_testkit::Spec { slots: 0, ..skein_testkit::Spec::new(3) };
    skein_tests::bounded::with_spec("skein-partitions-", spec, TEST_TIMEOUT, scale_down).await
}

async fn scale_down(c: &mut Cluster, dir: &Path) -> anyhow::Result<()> {
    const NAME: &str = "handed-back";
    const FILES: usize = 12;
    const ROWS: usize = 40;
    const TOTAL: u64 = (FILES * ROWS) as u64;
    let src = write_source(dir, FILES, ROWS)?;
    let target = dir.join("kept");
    let addr = c.addr(1);
    c.api
        .configure_queue(&addr, QUEUE, json!({"lease_ms": 10000, "backoff_base_ms": 100, "backoff_cap_ms": 500}))
        .await?;
    // Each partition sleeps 4 s: a SIGTERM right after a lease leaves far
    // more than the stopped worker's 1 s of drain.
    let docs = vec![plan(NAME, &format!(
        "  source: {{url: \"file://{}/\", format: csv, partition: file}}\n  target: {{url: \"file://{}/\", format: jsonl}}\n  steps:\n    - type: exec\n      command: [sleep, \"4\"]\n    - type: sql\n      query: \"SELECT id, name, country FROM source\"\n    - type: validate\n      row_count: equal\n      checksum: {{columns: [id, name]}}\n",
        src.display(), target.display()
    ))];
    apply(c, dir, &docs).await?;
    c.add_joining(STOPPED, "worker", &["--slots", "2", "--drain-timeout", "1"]).await?;
    c.add_joining(STAYS, "worker", &["--slots", "2"]).await?;
    let s = c.status().await?;
    let workers: BTreeSet<u64> = s.nodes.iter().filter(|n| n.role == "worker").map(|n| n.id).collect();
    ensure!(workers == [STOPPED, STAYS].into(), "the workers are {workers:?}");

    let run: RunPlansReply =
        c.api.call(Method::POST, &addr, "/api/v1/plans/run", Some(&json!({"refs": [NAME]}))).await?;
    let (generation, planner) = (run.runs[0].generation, run.runs[0].task.0);
    let planned = wait_for(Duration::from_secs(60), "the planner to enqueue the partitions", async || {
        let s = detail(c, NAME).await?.summary;
        Ok(s.partitions.filter(|_| s.generation == generation))
    })
    .await?;
    ensure!(planned.total == FILES as u64, "{} partitions planned, {FILES} expected", planned.total);
    let ids: Vec<u64> = partition_tasks(c, NAME, generation, planned.total).await?.iter().map(|t| t.id.0).collect();

    // The moment: some partitions succeeded, and every partition worker
    // 101 holds was leased to it less than 1.5 s ago.
    let before =
        wait_for(Duration::from_secs(90), "worker 101 to take fresh partitions after some succeeded", async || {
            let all = details(&c.api, std::slice::from_ref(&addr), &ids).await?;
            let now = wall_ms();
            let done = all.iter().filter(|d| d.task.status == TaskStatus::Succeeded).count();
            let held: Vec<&TaskDetail> = all
                .iter()
                .filter(|d| {
                    d.task.status == TaskStatus::Leased && d.task.lease.as_ref().is_some_and(|l| l.node == STOPPED)
                })
                .collect();
            let fresh = held.iter().all(|d| {
                let leased = d.history.iter().rev().find(|e| matches!(e.what, EventKind::Leased { .. }));
                leased.is_some_and(|e| e.at_ms + 1500 > now)
            });
            Ok((done >= 2 && !held.is_empty() && fresh).then_some(all))
        })
        .await?;
    c.term(STOPPED)?;
    let termed = std::time::Instant::now();
    let held: BTreeMap<u64, u64> = before
        .iter()
        .filter_map(|d| d.task.lease.as_ref().filter(|l| l.node == STOPPED).map(|l| (d.task.id.0, l.token.0)))
        .collect();
    let done: Vec<&TaskDetail> = before.iter().filter(|d| d.task.status == TaskStatus::Succeeded).collect();
    say(format!(
        "SIGTERM to worker {STOPPED} holding partition tasks {:?} (task → token); {} partitions had succeeded",
        held,
        done.len()
    ));

    // It drains for its 1 s, hands back what still runs, leaves, exits 0.
    let status = c.wait_exit(STOPPED, Duration::from_secs(30)).await?;
    ensure!(status.success(), "worker {STOPPED} exited with {status} after SIGTERM");
    say(format!("FIGURE worker {STOPPED} exited 0 {:?} after SIGTERM", termed.elapsed()));
    let log = std::fs::read_to_string(c.node(STOPPED).log_path())?;
    ensure!(log.contains("handed back unfinished tasks"), "worker {STOPPED}'s log does not say it handed tasks back");
    let s = c.status().await?;
    ensure!(!s.nodes.iter().any(|n| n.id == STOPPED), "worker {STOPPED} left, but the cluster still lists it");

    let r = wait_run_ended(c, NAME, generation, Duration::from_secs(120)).await?;
    ensure!(r.status == "succeeded" && r.succeeded == FILES as u64, "the run ended {r:?}");
    say(format!("FIGURE the run succeeded {:?} after the SIGTERM", termed.elapsed()));
    let now = detail(c, NAME).await?.summary;
    ensure!(now.generation == generation, "the run's generation went from {generation} to {}", now.generation);
    let after = details(&c.api, std::slice::from_ref(&addr), &ids).await?;
    ensure!(after.len() == FILES, "{} partition tasks after the run", after.len());

    // The partitions that had succeeded: untouched.
    for old in &done {
        let new = after.iter().find(|d| d.task.id == old.task.id).context("a partition task vanished")?;
        succeeded_once(new)?;
        ensure!(
            new.history == old.history && new.task.attempt == old.task.attempt && leases(new) == 1,
            "partition task {}, succeeded before the SIGTERM, changed: {:?} → {:?}",
            new.task.id,
            old.history,
            new.history
        );
    }
    // The ones worker 101 held: released by it under its token, then
    // succeeded once on the other worker.
    for (&task, &token) in &held {
        let d = after.iter().find(|d| d.task.id.0 == task).context("a held partition task vanished")?;
        let released = d.history.iter().any(|e| {
            matches!(e.what, EventKind::Released { .. })
                && e.node == Some(STOPPED)
                && e.token.map(|t| t.0) == Some(token)
        });
        ensure!(
            released,
            "partition task {task} held by worker {STOPPED} (token {token}) was not released by it: {:?}",
            d.history
        );
        let won = succeeded_once(d)?;
        ensure!(won.node == Some(STAYS), "handed-back partition task {task} succeeded on {:?}", won.node);
    }
    // No partition expired; each ran once, plus once per hand-back, and
    // only worker 101 handed any back.
    let mut handed_back = 0;
    for d in &after {
        let won = succeeded_once(d)?;
        ensure!(
            !d.history.iter().any(|e| matches!(e.what, EventKind::Expired { .. } | EventKind::Failed { .. })),
            "partition task {} expired or failed: {:?}",
            d.task.id,
            d.history
        );
        let released: Vec<&skein_raft::fsm::Event> =
            d.history.iter().filter(|e| matches!(e.what, EventKind::Released { .. })).collect();
        ensure!(
            released.iter().all(|e| e.node == Some(STOPPED)),
            "partition task {} released by another node: {:?}",
            d.task.id,
            d.history
        );
        ensure!(
            leases(d) == 1 + released.len(),
            "partition task {} was leased {} times, released {} times: {:?}",
            d.task.id,
            leases(d),
            released.len(),
            d.history
        );
        let partition: Value = d.result.clone().context("no result")?;
        ensure!(
            partition["partition"]["token"].as_u64() == won.token.map(|t| t.0),
            "partition task {} result under another token",
            d.task.id
        );
        handed_back += released.len();
    }
    ensure!(handed_back == held.len(), "{handed_back} partitions handed back, worker {STOPPED} held {}", held.len());
    // The planner ran once: the run was not started again.
    let p = c.api.task(&addr, planner).await?;
    succeeded_once(&p)?;
    ensure!(leases(&p) == 1, "the planner was leased {} times: {:?}", leases(&p), p.history);

    // The commit published every row exactly once.
    let commit = c.api.task(&addr, r.commit_task.0).await?;
    let commit_token = succeeded_once(&commit)?.token.context("no token")?.0;
    let (token, mut rows) = version_ids(&target)?;
    ensure!(token == commit_token, "the version's token {token} is not the commit's {commit_token}");
    let read = rows.len();
    rows.sort_unstable();
    rows.dedup();
    ensure!(
        read as u64 == TOTAL && rows == (1..=TOTAL).collect::<Vec<u64>>(),
        "the target holds {read} rows, {} distinct, of ids 1..={TOTAL}",
        rows.len()
    );
    say(format!(
        "worker {STOPPED} handed back {} partitions, which succeeded on worker {STAYS}; the {} that had succeeded ran once; {TOTAL} rows published once",
        held.len(),
        done.len()
    ));
    Ok(())
}
