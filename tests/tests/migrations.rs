//! Dataset migrations end to end on clusters of real `skein-node`
//! processes: plans stored with `skein plan apply`, run with `skein plan
//! run` (and the seed's `POST /api/honk/tasks`), their steps (sql, copy,
//! exec, validate) over Parquet, CSV and JSON lines, `dependsOn` ordering,
//! a validation that fails for good, a node killed mid-migration, a paused
//! worker that must not overwrite the newer result, and the same against a
//! real S3 API (moto's server, started here on loopback).
//!
//! Needs the binaries (`cargo build --workspace --bins`) and, for the S3
//! test, `moto_server` (`scripts/deps.sh` installs it with pip).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context};
use reqwest::Method;
use serde_json::{json, Value};
use skein_raft::api::{PlanDetail, RunPlansReply};
use skein_raft::fsm::{EventKind, Task, TaskStatus};
use skein_testkit::{wait_for, wait_until, Cluster};
use skein_tests::checks::{say, succeeded_once};
use skein_tests::moto::Moto;

/// Every test body's own deadline (the cluster's start not counted).
const TEST_TIMEOUT: Duration = Duration::from_secs(180);
const QUEUE: &str = "dataset-migrations";

/// A fresh 3-node cluster and a folder for datasets, bounded in time.
async fn with_cluster<F>(env: Vec<(String, String)>, body: F)
where
    F: AsyncFnOnce(&mut Cluster, &Path) -> anyhow::Result<()>,
{
    skein_tests::bounded::with_cluster("skein-migrations-", 3, env, TEST_TIMEOUT, body).await
}

// ----- helpers ----------------------------------------------------------------

/// `id,name,amount,country` rows 1..=n, deterministic.
fn customers_csv(n: usize) -> String {
    let countries = ["UK", "US", "DE", "FR"];
    let mut s = String::from("id,name,amount,country\n");
    for i in 1..=n {
        s.push_str(&format!("{i},name-{i},{}.{:02},{}\n", i % 1000, i % 100, countries[i % 4]));
    }
    s
}

/// A plan document (YAML) with the given spec lines.
fn plan(name: &str, depends_on: &[&str], spec: &str) -> String {
    let deps =
        if depends_on.is_empty() { String::new() } else { format!("  dependsOn: [{}]\n", depends_on.join(", ")) };
    format!(
        "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\n  annotations:\n    honk/queue: {QUEUE}\nspec:\n  type: migration-plan\n  lifecycle: production\n  owner: team-infra\n{deps}{spec}"
    )
}

/// A plain dataset entity (not a plan).
fn dataset(name: &str) -> String {
    format!("apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: dataset\n  owner: team-data\n  lifecycle: production\n")
}

/// Writes the documents to `dir/file` and stores them with `skein plan apply`.
async fn apply(c: &Cluster, dir: &Path, file: &str, docs: &[String]) -> anyhow::Result<()> {
    let path = dir.join(file);
    std::fs::write(&path, docs.join("---\n"))?;
    let addr = c.addr(c.live_ids()[0]);
    let out = c.cli(&["--addr", &addr, "plan", "apply", &path.display().to_string()]).await?;
    ensure!(
        out.status.success(),
        "skein plan apply failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// `POST /api/v1/plans/run` through a follower.
async fn run_plans(c: &Cluster, body: Value) -> anyhow::Result<RunPlansReply> {
    let addr = c.addr(*c.live_ids().last().context("no live node")?);
    c.api.call(Method::POST, &addr, "/api/v1/plans/run", Some(&body)).await
}

/// Waits until task `id` has ended; returns it.
async fn wait_ended(c: &Cluster, id: u64, timeout: Duration) -> anyhow::Result<Task> {
    let addrs = c.live_addrs();
    wait_for(timeout, &format!("task {id} to end"), async || {
        let t = c.api.task(&addrs[0], id).await?.task;
        Ok(t.status.is_terminal().then_some(t))
    })
    .await
}

async fn wait_succeeded(c: &Cluster, id: u64, timeout: Duration) -> anyhow::Result<Task> {
    let t = wait_ended(c, id, timeout).await?;
    ensure!(t.status == TaskStatus::Succeeded, "task {id} ended {} ({:?})", t.status, t.last_error);
    Ok(t)
}

fn jsonl(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines().map(|l| serde_json::from_str(l).with_context(|| format!("line {l:?}"))).collect()
}

fn published_token(record: &Path) -> anyhow::Result<u64> {
    let v: Value =
        serde_json::from_slice(&std::fs::read(record).with_context(|| format!("reading {}", record.display()))?)?;
    v["token"].as_u64().context("published.json has no token")
}

/// When a task was first leased and when it succeeded, from its history.
async fn lease_and_success_ms(c: &Cluster, id: u64) -> anyhow::Result<(u64, u64)> {
    let d = c.api.task(&c.addr(c.live_ids()[0]), id).await?;
    let leased = d.history.iter().find(|e| matches!(e.what, EventKind::Leased { .. })).context("never leased")?.at_ms;
    let done = succeeded_once(&d)?.at_ms;
    Ok((leased, done))
}

// ----- the tests --------------------------------------------------------------

/// A chain of three plans (CSV -> Parquet -> JSON lines -> CSV) using sql,
/// copy, exec and validate steps, run by naming only the last: the others
/// run first, each blocked until the one before succeeded. Running again
/// changes nothing; --force runs the last one again; the seed's honk
/// request migrates a plan too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn steps_over_every_format_in_dependency_order() {
    with_cluster(Vec::new(), async |c, dir| {
        let d = dir.display();
        std::fs::create_dir_all(dir.join("data"))?;
        std::fs::write(dir.join("data/customers.csv"), customers_csv(50))?;
        let docs = vec![
            dataset("raw-customers"),
            plan("to-parquet", &["raw-customers"], &format!(
                "  source: {{url: \"file://{d}/data/customers.csv\", format: csv}}\n  target: {{url: \"{d}/out/parquet/\", format: parquet}}\n  steps:\n    - type: sql\n      query: \"SELECT id, name, ROUND(CAST(amount AS DOUBLE) * 100) AS amount_cents, country FROM source\"\n    - type: validate\n      row_count: equal\n      schema: [{{name: id, type: bigint}}, {{name: name, type: string}}, {{name: amount_cents, type: double}}, {{name: country, type: string}}]\n"
            )),
            plan("to-jsonl", &["to-parquet"], &format!(
                "  source: {{url: \"{d}/out/parquet/\", format: parquet}}\n  target: {d}/out/customers.jsonl\n  steps:\n    - type: copy\n      schema: {{amount_cents: bigint}}\n    - type: validate\n      row_count: equal\n      checksum: {{columns: [id, name, country]}}\n"
            )),
            plan("to-csv", &["component:default/to-jsonl"], &format!(
                "  source: {d}/out/customers.jsonl\n  target: {{url: \"{d}/out/us.csv\", format: csv}}\n  steps:\n    - type: exec\n      command: \"grep '\\\"US\\\"' \\\"$SKEIN_INPUT\\\" > \\\"$SKEIN_OUTPUT_DIR/us.jsonl\\\"\"\n    - type: sql\n      query: \"SELECT id, name, amount_cents FROM input ORDER BY id\"\n    - type: validate\n      row_count: \"target * 4 >= source - 4 AND target > 0\"\n      assert: \"SELECT * FROM target WHERE amount_cents < 0\"\n"
            )),
        ];
        apply(c, dir, "plans.yaml", &docs).await?;
        let addr = c.addr(c.live_ids()[0]);
        let out = c.cli(&["--addr", &addr, "-o", "json", "plan", "run", "to-csv"]).await?;
        ensure!(out.status.success(), "skein plan run: {}", String::from_utf8_lossy(&out.stderr));
        let runs: RunPlansReply = serde_json::from_slice(&out.stdout)?;
        let names: Vec<&str> = runs.runs.iter().map(|r| r.entity_ref.as_str()).collect();
        ensure!(names == ["component:default/to-parquet", "component:default/to-jsonl", "component:default/to-csv"], "runs: {names:?}");
        ensure!(runs.runs[2].status == TaskStatus::Blocked && runs.runs[1].status == TaskStatus::Blocked, "the later plans wait: {:?}", runs.runs);
        let ids: Vec<u64> = runs.runs.iter().map(|r| r.task.0).collect();
        for id in &ids {
            wait_succeeded(c, *id, Duration::from_secs(60)).await?;
        }
        say("the chain succeeded");
        // Each plan started only after the one it depends on succeeded.
        for pair in ids.windows(2) {
            let (_, first_done) = lease_and_success_ms(c, pair[0]).await?;
            let (second_leased, _) = lease_and_success_ms(c, pair[1]).await?;
            ensure!(second_leased >= first_done, "task {} was leased at {second_leased}, before task {} succeeded at {first_done}", pair[1], pair[0]);
        }
        // The Parquet, JSON lines and CSV outputs.
        let rows = jsonl(&dir.join("out/customers.jsonl"))?;
        ensure!(rows.len() == 50, "{} rows in customers.jsonl", rows.len());
        let by_id = rows.iter().find(|r| r["id"] == 7).context("row 7")?;
        ensure!(by_id["amount_cents"] == 707 && by_id["name"] == "name-7", "row 7: {by_id}");
        let csv = std::fs::read_to_string(dir.join("out/us.csv"))?;
        let expected: String = std::iter::once("id,name,amount_cents\n".to_string())
            .chain((1..=50).filter(|i| i % 4 == 1).map(|i| format!("{i},name-{i},{}\n", (i % 1000) * 100 + i % 100)))
            .collect();
        ensure!(csv == expected, "us.csv:\n{csv}\nexpected:\n{expected}");
        ensure!(!dir.join("out/parquet/_skein/attempts").read_dir()?.any(|_| true), "staging left behind");

        // Idempotent: running again returns the same tasks.
        let again = run_plans(c, json!({"refs": ["to-csv"]})).await?;
        ensure!(again.runs.iter().all(|r| !r.created), "ran twice: {:?}", again.runs);
        // --force runs the named plan again (only it), replacing its target.
        let token_before = published_token(&dir.join("out/_skein/us.csv/published.json"))?;
        let forced = run_plans(c, json!({"refs": ["to-csv"], "force": true})).await?;
        let f = forced.runs.iter().find(|r| r.entity_ref.ends_with("/to-csv")).context("to-csv run")?;
        ensure!(f.created && f.generation == 2, "forced run: {f:?}");
        ensure!(forced.runs.iter().filter(|r| r.created).count() == 1, "only to-csv runs again: {:?}", forced.runs);
        wait_succeeded(c, f.task.0, Duration::from_secs(60)).await?;
        let token_after = published_token(&dir.join("out/_skein/us.csv/published.json"))?;
        ensure!(token_after > token_before, "the forced run published under token {token_after}, after {token_before}");
        ensure!(std::fs::read_to_string(dir.join("out/us.csv"))? == expected, "us.csv changed");

        // The seed's request, as-is (no kind): a migration task for the plan.
        let reply = c
            .api
            .raw(Method::POST, &addr, "/api/honk/tasks", Some(json!({"queue": QUEUE, "payload": {"entity_ref": "component:default/to-jsonl"}}).to_string().into_bytes()))
            .await?;
        ensure!(reply.status == 201, "honk: {} {}", reply.status, reply.body);
        let id = reply.body["tasks"][0]["id"].as_u64().context("honk task id")?;
        let t = wait_succeeded(c, id, Duration::from_secs(60)).await?;
        ensure!(&*t.kind == "migration", "kind {}", t.kind);
        let d = c.api.task(&addr, id).await?;
        let result = d.result.context("no result")?;
        ensure!(result["migration"]["rows_written"] == 50, "result: {result}");

        // skein status names each dataset by its plan.
        let out = c.cli(&["--addr", &addr, "status", "--queue", QUEUE]).await?;
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(text.contains("component:default/to-csv") && text.contains("succeeded"), "status:\n{text}");
        Ok(())
    })
    .await;
}

/// A validation that does not hold ends the task dead at once (no retry),
/// with a reason saying what differed, and publishes nothing; plans waiting
/// on it are cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_validation_ends_dead_with_a_readable_reason() {
    with_cluster(Vec::new(), async |c, dir| {
        let d = dir.display();
        std::fs::write(dir.join("customers.csv"), customers_csv(10))?;
        let docs = vec![
            plan("only-uk", &[], &format!(
                "  source: {d}/customers.csv\n  target: {{url: \"{d}/uk/\", format: parquet}}\n  steps:\n    - type: sql\n      query: \"SELECT * FROM source WHERE country = 'UK'\"\n    - type: validate\n      row_count: equal\n"
            )),
            plan("after-uk", &["only-uk"], &format!("  source: {d}/customers.csv\n  target: {d}/after.jsonl\n  steps:\n    - type: copy\n")),
        ];
        apply(c, dir, "plans.yaml", &docs).await?;
        let runs = run_plans(c, json!({"refs": ["after-uk"]})).await?;
        let (uk, after) = (runs.runs[0].task.0, runs.runs[1].task.0);
        let t = wait_ended(c, uk, Duration::from_secs(60)).await?;
        ensure!(t.status == TaskStatus::Dead, "only-uk ended {}", t.status);
        ensure!(t.attempt == 1, "a failed validation is not retried: {} attempts", t.attempt);
        let why = t.last_error.clone().unwrap_or_default();
        ensure!(why.contains("validation failed: row count: source has 10 rows, target 2"), "reason: {why}");
        ensure!(!dir.join("uk/part-00000.parquet").exists(), "nothing published");
        let a = wait_ended(c, after, Duration::from_secs(10)).await?;
        ensure!(a.status == TaskStatus::Cancelled, "the dependent plan is {}", a.status);
        let addr = c.addr(1);
        let detail: PlanDetail = c.api.call(Method::GET, &addr, "/api/v1/plans/component/default/only-uk", None).await?;
        ensure!(detail.summary.task.as_ref().is_some_and(|t| t.status == TaskStatus::Dead), "plan show: {:?}", detail.summary.task);
        Ok(())
    })
    .await;
}

/// A migration long enough to kill its node halfway: the lease expires, the
/// task runs again on another node, and the target is whole and correct.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_mid_migration_is_rerun_elsewhere() {
    with_cluster(Vec::new(), async |c, dir| {
        let d = dir.display();
        const ROWS: usize = 100_000;
        std::fs::write(dir.join("big.csv"), customers_csv(ROWS))?;
        let addr = c.addr(1);
        c.api.configure_queue(&addr, QUEUE, json!({"lease_ms": 2000, "backoff_base_ms": 100, "backoff_cap_ms": 500})).await?;
        let docs = vec![plan("big", &[], &format!(
            "  source: {d}/big.csv\n  target: {d}/big.jsonl\n  steps:\n    - type: exec\n      command: [sleep, \"4\"]\n    - type: sql\n      query: \"SELECT id, name, country FROM source\"\n    - type: validate\n      row_count: equal\n      checksum: {{columns: [id, name, country]}}\n"
        ))];
        apply(c, dir, "plans.yaml", &docs).await?;
        let id = run_plans(c, json!({"refs": ["big"]})).await?.runs[0].task.0;
        let holder = wait_for(Duration::from_secs(20), "the task to be leased", async || {
            let t = c.api.task(&addr, id).await?.task;
            Ok(t.lease.map(|l| l.node))
        })
        .await?;
        say(format!("task {id} runs on node {holder}; killing it"));
        c.kill9(holder)?;
        let t = wait_succeeded(c, id, Duration::from_secs(90)).await?;
        ensure!(t.attempt >= 2, "{} attempts", t.attempt);
        ensure!(t.last_node != Some(holder), "ran again on the killed node {holder}?");
        let rows = jsonl(&dir.join("big.jsonl"))?;
        ensure!(rows.len() == ROWS, "{} rows of {ROWS}", rows.len());
        ensure!(rows.iter().filter_map(|r| r["id"].as_u64()).sum::<u64>() == (ROWS as u64) * (ROWS as u64 + 1) / 2, "ids differ");
        let live = c.addr(c.live_ids()[0]);
        let detail = c.api.task(&live, id).await?;
        let success = succeeded_once(&detail)?;
        ensure!(published_token(&dir.join("_skein/big.jsonl/published.json"))? == success.token.context("no token")?.0, "published under another token");
        ensure!(!dir.join("_skein/big.jsonl/attempts").read_dir()?.any(|_| true), "the killed attempt's staging was not cleaned");
        Ok(())
    })
    .await;
}

/// The fenced-output test: a worker paused (SIGSTOP) past its lease while a
/// second attempt runs and succeeds elsewhere, then resumed (SIGCONT): the
/// target holds the second attempt's output, and the first never publishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_worker_never_replaces_the_newer_result() {
    with_cluster(Vec::new(), async |c, dir| {
        let d = dir.display();
        std::fs::write(dir.join("src.csv"), customers_csv(5))?;
        let addr = c.addr(1);
        c.api.configure_queue(&addr, QUEUE, json!({"lease_ms": 2000, "backoff_base_ms": 100, "backoff_cap_ms": 500})).await?;
        // The output names the attempt's token, so the two attempts differ.
        let docs = vec![plan("fenced", &[], &format!(
            "  source: {d}/src.csv\n  target: {d}/fenced.jsonl\n  steps:\n    - type: exec\n      command: \"sleep 3; echo {{\\\\\\\"token\\\\\\\": $SKEIN_TOKEN}} > \\\"$SKEIN_OUTPUT_DIR/out.jsonl\\\"\"\n"
        ))];
        apply(c, dir, "plans.yaml", &docs).await?;
        let id = run_plans(c, json!({"refs": ["fenced"]})).await?.runs[0].task.0;
        let (first_node, first_token) = wait_for(Duration::from_secs(20), "the first lease", async || {
            let t = c.api.task(&addr, id).await?.task;
            Ok(t.lease.map(|l| (l.node, l.token.0)))
        })
        .await?;
        say(format!("attempt 1 (token {first_token}) runs on node {first_node}; pausing it"));
        c.sigstop(first_node)?;
        let others: Vec<u64> = c.live_ids().into_iter().filter(|n| *n != first_node).collect();
        let other = c.addr(others[0]);
        let t = wait_for(Duration::from_secs(60), "a second attempt to succeed", async || {
            let t = c.api.task(&other, id).await?.task;
            Ok((t.status == TaskStatus::Succeeded).then_some(t))
        })
        .await?;
        let detail = c.api.task(&other, id).await?;
        let second_token = succeeded_once(&detail)?.token.context("no token")?.0;
        ensure!(second_token > first_token, "succeeded under token {second_token}");
        ensure!(t.last_node != Some(first_node), "the paused node succeeded?");
        ensure!(jsonl(&dir.join("fenced.jsonl"))? == vec![json!({"token": second_token})], "target before resuming");
        say(format!("attempt under token {second_token} succeeded; resuming node {first_node}"));
        c.sigcont(first_node)?;
        // Give the resumed worker time to finish its step and try to publish.
        let log = c.node(first_node).log_path();
        wait_until(Duration::from_secs(30), "the resumed worker to give up its stale attempt", async || {
            let text = std::fs::read_to_string(&log)?;
            Ok(text.contains("lease ran out unrenewed") || text.contains("lease revoked") || text.contains("migration fenced"))
        })
        .await?;
        tokio::time::sleep(Duration::from_secs(4)).await;
        ensure!(jsonl(&dir.join("fenced.jsonl"))? == vec![json!({"token": second_token})], "the stale attempt replaced the target");
        ensure!(published_token(&dir.join("_skein/fenced.jsonl/published.json"))? == second_token, "published.json names another token");
        let detail = c.api.task(&other, id).await?;
        succeeded_once(&detail)?;
        ensure!(detail.task.status == TaskStatus::Succeeded, "task is {}", detail.task.status);
        Ok(())
    })
    .await;
}

/// `skein plan run --selector` runs exactly the plans whose owner and
/// labels match; `skein watch --plan` follows the chosen one to its end; its
/// progress reaches the API through the heartbeat while it runs; and with
/// `--log-format json` (here `SKEIN_LOG_FORMAT=json`) its log lines, an
/// exec step's stderr included, carry its task id, attempt and token; the
/// run counts in `skein_enqueued_tasks_total`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn selector_watch_progress_and_json_logs() {
    let env = vec![("SKEIN_LOG_FORMAT".to_string(), "json".to_string())];
    with_cluster(env, async |c, dir| {
        let d = dir.display();
        std::fs::write(dir.join("customers.csv"), customers_csv(20))?;
        let labelled = |name: &str, owner: &str, tier: &str, steps: &str| {
            format!(
                "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\n  labels: {{tier: {tier}}}\n  annotations:\n    honk/queue: {QUEUE}\nspec:\n  type: migration-plan\n  lifecycle: production\n  owner: {owner}\n  source: {d}/customers.csv\n  target: {d}/out/{name}.jsonl\n  steps:\n{steps}"
            )
        };
        let slow = "    - type: exec\n      command: \"echo preparing the gold export >&2; sleep 4\"\n    - type: sql\n      query: \"SELECT id, name FROM source\"\n    - type: validate\n      row_count: equal\n";
        let quick = "    - type: copy\n";
        let docs = vec![
            labelled("gold-infra", "group:default/team-infra", "gold", slow),
            labelled("bronze-infra", "team-infra", "bronze", quick),
            labelled("gold-data", "team-data", "gold", quick),
        ];
        apply(c, dir, "plans.yaml", &docs).await?;
        let addr = c.addr(c.live_ids()[0]);
        let out = c.cli(&["--addr", &addr, "-o", "json", "plan", "run", "--selector", "owner=team-infra,tier=gold"]).await?;
        ensure!(out.status.success(), "skein plan run --selector: {}", String::from_utf8_lossy(&out.stderr));
        let runs: RunPlansReply = serde_json::from_slice(&out.stdout)?;
        let names: Vec<&str> = runs.runs.iter().map(|r| r.entity_ref.as_str()).collect();
        ensure!(names == ["component:default/gold-infra"], "the selector chose {names:?}");
        let id = runs.runs[0].task.0;

        // While it runs: the watch, and the progress the API reports.
        let watch_args = ["--addr", addr.as_str(), "watch", "--plan", "gold-infra", "--interval-ms", "200"];
        let watch = c.cli(&watch_args);
        let progress = wait_for(Duration::from_secs(30), "the migration's progress to reach the API", async || {
            let t = c.api.task(&addr, id).await?.task;
            Ok(t.progress.filter(|p| t.status == TaskStatus::Leased && p.message.contains("step 1/3 (exec)")).map(|p| p.message))
        });
        let (watched, progress) = tokio::join!(watch, progress);
        say(format!("progress through the heartbeat: {:?}", progress?));
        let watched = watched?;
        let text = String::from_utf8_lossy(&watched.stdout);
        ensure!(watched.status.success(), "skein watch --plan failed: {text}{}", String::from_utf8_lossy(&watched.stderr));
        ensure!(
            text.contains("component:default/gold-infra: 100/100 done (succeeded)") && text.contains("done in"),
            "skein watch --plan did not follow the plan to its end:\n{text}"
        );
        ensure!(text.contains("step 1/3 (exec)"), "skein watch --plan never showed the step running:\n{text}");
        let t = wait_succeeded(c, id, Duration::from_secs(30)).await?;
        ensure!(jsonl(&dir.join("out/gold-infra.jsonl"))?.len() == 20, "gold-infra.jsonl");

        // Only the selected plan ran.
        let list: skein_raft::api::PlanList = c.api.call(Method::GET, &addr, "/api/v1/plans", None).await?;
        for p in &list.plans {
            let want = u64::from(p.entity_ref.ends_with("/gold-infra"));
            ensure!(p.generation == want, "{} ran {} times", p.entity_ref, p.generation);
        }

        // The run counts as one enqueue in the node-local metrics, summed over the nodes.
        let mut enqueued = 0.0;
        for a in c.live_addrs() {
            let text = c.api.raw(Method::GET, &a, "/metrics", None).await?.body.as_str().context("/metrics is not text")?.to_string();
            let series = format!("skein_enqueued_tasks_total{{queue=\"{QUEUE}\"}} ");
            enqueued += text.lines().filter_map(|l| l.strip_prefix(series.as_str())).map(|v| v.trim().parse::<f64>()).sum::<Result<f64, _>>()?;
        }
        ensure!(enqueued == 1.0, "skein_enqueued_tasks_total{{queue={QUEUE}}} summed over the nodes is {enqueued}, expected 1 (the plan run)");

        // The JSON log of the node that ran it tells the task's story.
        let detail = c.api.task(&addr, id).await?;
        let token = succeeded_once(&detail)?.token.context("no token")?.0;
        let node = t.last_node.context("no last node")?;
        let log = std::fs::read_to_string(c.node(node).log_path())?;
        let lines: Vec<Value> = log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        ensure!(lines.len() > 10, "node {node}'s log is not JSON lines:\n{}", log.lines().take(5).collect::<Vec<_>>().join("\n"));
        let stderr = lines
            .iter()
            .find(|l| l["fields"]["message"] == "exec step stderr" && l["fields"]["line"] == "preparing the gold export")
            .context("no exec step stderr line in the JSON log")?;
        let span = &stderr["span"];
        ensure!(
            span["task_id"] == id && span["attempt"] == t.attempt && span["token"] == token,
            "the exec step's stderr line does not carry task {id}, attempt {}, token {token}: {stderr}",
            t.attempt
        );
        let done = lines
            .iter()
            .find(|l| l["fields"]["message"] == "task succeeded" && l["fields"]["task_id"] == id)
            .context("no `task succeeded` line for the task")?;
        ensure!(done["fields"]["attempt"] == t.attempt && done["fields"]["token"] == token, "task succeeded line: {done}");
        Ok(())
    })
    .await;
}

// ----- S3 ---------------------------------------------------------------------

/// The same migrations against a real S3 API: a CSV in a bucket to a
/// Parquet folder in the bucket (sql, validate), then to JSON lines in the
/// bucket (copy, validate) and to a local file, ordered by dependsOn; the
/// publication record sits next to each target.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrations_against_s3() {
    let logs: PathBuf = std::env::temp_dir().join(format!("skein-moto-{}.log", std::process::id()));
    let moto = Moto::start(&logs).await.expect("moto's S3 server must start (run scripts/deps.sh)");
    moto.put("lake", Vec::new()).await.expect("creating bucket lake");
    moto.put("lake/src/customers.csv", customers_csv(40).into_bytes()).await.expect("uploading the source");
    let env = moto.env();
    with_cluster(env, async |c, dir| {
        let d = dir.display();
        let docs = vec![
            plan("s3-parquet", &[], "  source: {url: \"s3://lake/src/customers.csv\", format: csv}\n  target: {url: \"s3://lake/customers-v2/\", format: parquet}\n  steps:\n    - type: sql\n      query: \"SELECT id, name, CAST(amount AS DOUBLE) * 100 AS amount_cents FROM source\"\n    - type: validate\n      row_count: equal\n"),
            plan("s3-jsonl", &["s3-parquet"], "  source: {url: \"s3://lake/customers-v2/\", format: parquet}\n  target: s3://lake/export/customers.jsonl\n  steps:\n    - type: copy\n    - type: validate\n      checksum: {columns: [id, name]}\n"),
            plan("s3-to-local", &["s3-jsonl"], &format!("  source: s3://lake/export/customers.jsonl\n  target: {d}/local.csv\n  steps:\n    - type: sql\n      query: \"SELECT id, amount_cents FROM source ORDER BY id\"\n    - type: validate\n      row_count: equal\n")),
        ];
        apply(c, dir, "plans.yaml", &docs).await?;
        let runs = run_plans(c, json!({"refs": ["s3-to-local"]})).await?;
        ensure!(runs.runs.len() == 3, "{:?}", runs.runs);
        for r in &runs.runs {
            wait_succeeded(c, r.task.0, Duration::from_secs(90)).await?;
        }
        let exported = moto.get("lake/export/customers.jsonl").await?.context("no export object")?;
        let rows: Vec<Value> = String::from_utf8(exported)?.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
        ensure!(rows.len() == 40, "{} rows in s3://lake/export/customers.jsonl", rows.len());
        ensure!(moto.get("lake/customers-v2/part-00000.parquet").await?.is_some(), "no parquet part in the bucket");
        let record = moto.get("lake/customers-v2/_skein/published.json").await?.context("no publication record")?;
        let record: Value = serde_json::from_slice(&record)?;
        ensure!(record["task"] == runs.runs[0].task.0, "record: {record}");
        let csv = std::fs::read_to_string(dir.join("local.csv"))?;
        ensure!(csv.lines().count() == 41 && csv.starts_with("id,amount_cents\n1,"), "local.csv:\n{csv}");
        Ok(())
    })
    .await;
    drop(moto);
    let _ = std::fs::remove_file(logs);
}
