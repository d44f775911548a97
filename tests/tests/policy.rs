//! What the fleet may run and touch, against real nodes of a cluster that
//! enforces its policy from its first entry (a new cluster's default):
//!
//! - an `exec` task naming a program that is not allowed is refused at
//!   enqueue (403) and never runs; allowing it (`skein exec allow`) makes
//!   it run; a task accepted while allowed and denied before it started is
//!   refused by the worker, and its side effect never happens;
//! - fixed leading arguments allow one script, not the interpreter;
//! - plans whose source or target is outside the data roots, holds `..`,
//!   goes through a symbolic link out of a root, or whose SQL is DDL or
//!   `COPY`, are refused when applied; a symlink swapped in after the apply
//!   is refused by the worker, which writes nothing;
//! - the policy routes need `admin` to change and `read` to see.
//!
//! Needs the binaries (`cargo build --workspace --bins`).

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context};
use reqwest::Method;
use serde_json::{json, Value};
use skein_raft::api::ErrorCode;
use skein_raft::fsm::{Task, TaskStatus};
use skein_testkit::{wait_for, Cluster, Spec};

const TEST_TIMEOUT: Duration = Duration::from_secs(180);
const QUEUE: &str = "policy";

async fn with_enforcing_cluster<F>(body: F)
where
    F: AsyncFnOnce(&mut Cluster, &Path) -> anyhow::Result<()>,
{
    let dir = tempfile::Builder::new().prefix("skein-policy-").tempdir().expect("a temp dir");
    let spec = Spec { enforce_policy: true, ..Spec::new(3) };
    let mut c = Cluster::start_spec(spec).await.expect("starting 3 nodes");
    let result = match tokio::time::timeout(TEST_TIMEOUT, body(&mut c, dir.path())).await {
        Ok(r) => r,
        Err(_) => Err(anyhow::anyhow!("the test did not finish within {TEST_TIMEOUT:?}")),
    };
    c.finish(result);
}

/// Runs the CLI against node 1 and returns its stdout; fails with its stderr.
async fn cli_ok(c: &Cluster, args: &[&str]) -> anyhow::Result<String> {
    let addr = c.addr(1);
    let mut all = vec!["--addr", addr.as_str()];
    all.extend_from_slice(args);
    let out = c.cli(&all).await?;
    ensure!(out.status.success(), "skein {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

/// The error code and message of a refused request.
async fn refused(c: &Cluster, method: Method, path: &str, body: Value) -> anyhow::Result<(u16, ErrorCode, String)> {
    let reply = c.api.raw(method, &c.addr(1), path, Some(body.to_string().into_bytes())).await?;
    ensure!(!reply.status.is_success(), "{path} was accepted: {}", reply.body);
    let code: ErrorCode = serde_json::from_value(reply.body["error"]["code"].clone()).context("an error code")?;
    let message = reply.body["error"]["message"].as_str().unwrap_or_default().to_string();
    Ok((reply.status.as_u16(), code, message))
}

fn exec_task(program: &str, args: &[&str], key: &str) -> Value {
    let mut command = vec![program.to_string()];
    command.extend(args.iter().map(|a| a.to_string()));
    json!({"queue": QUEUE, "kind": "exec", "idempotency_key": key, "payload": {"command": command}, "max_attempts": 1})
}

async fn wait_ended(c: &Cluster, id: u64) -> anyhow::Result<Task> {
    wait_for(Duration::from_secs(60), &format!("task {id} to end"), async || {
        let t = c.api.task(&c.addr(1), id).await?.task;
        Ok(matches!(t.status, TaskStatus::Succeeded | TaskStatus::Dead | TaskStatus::Cancelled).then_some(t))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_only_allowed_programs() {
    with_enforcing_cluster(async |c, dir| {
        let touch = "/usr/bin/touch";
        let witness = dir.join("touched");
        let w = witness.display().to_string();

        // A new cluster allows nothing.
        let shown = cli_ok(c, &["exec", "list"]).await?;
        ensure!(shown.contains("policy: enforce") && shown.contains("no programs allowed"), "{shown}");
        let (status, code, message) = refused(c, Method::POST, "/api/v1/tasks", exec_task(touch, &[&w], "t1")).await?;
        ensure!(status == 403 && code == ErrorCode::Forbidden, "{status} {code:?} {message}");
        ensure!(message.contains(touch) && message.contains("skein exec allow /usr/bin/touch"), "{message}");
        // The seed's route too.
        let honk = json!({"queue": QUEUE, "kind": "exec", "payload": {"command": [touch, &w]}});
        let (status, ..) = refused(c, Method::POST, "/api/honk/tasks", honk).await?;
        ensure!(status == 403, "honk: {status}");
        // Programs are named by absolute path only.
        let (_, _, message) = refused(c, Method::POST, "/api/v1/tasks", exec_task("touch", &[&w], "t0")).await?;
        ensure!(message.contains("absolute"), "{message}");

        // Allowed: it runs.
        cli_ok(c, &["exec", "allow", touch]).await?;
        let id = c.api.enqueue(&c.addr(1), &[exec_task(touch, &[&w], "t2")]).await?[0];
        let t = wait_ended(c, id).await?;
        ensure!(t.status == TaskStatus::Succeeded, "allowed exec ended {:?}: {:?}", t.status, t.last_error);
        ensure!(witness.exists(), "the allowed program did not run");
        std::fs::remove_file(&witness)?;

        // Accepted while allowed, denied before it started: the worker refuses it.
        c.api.pause(&c.addr(1), QUEUE).await?;
        let id = c.api.enqueue(&c.addr(1), &[exec_task(touch, &[&w], "t3")]).await?[0];
        cli_ok(c, &["exec", "deny", touch]).await?;
        c.api.resume(&c.addr(1), QUEUE).await?;
        let t = wait_ended(c, id).await?;
        ensure!(t.status == TaskStatus::Dead, "a denied program's task ended {:?}", t.status);
        let error = t.last_error.clone().unwrap_or_default();
        ensure!(error.contains("refused") && error.contains("not on the exec allow list"), "{error}");
        ensure!(!witness.exists(), "the worker ran a program no longer allowed");

        // Leading arguments: the interpreter with one script, nothing else.
        let sh = "/bin/sh";
        let script = dir.join("ok.sh");
        std::fs::write(&script, format!("touch {w}\n"))?;
        let s = script.display().to_string();
        let out = cli_ok(c, &["exec", "allow", sh, "--args", &s]).await?;
        ensure!(!out.contains("runs anything a caller gives it"), "a fixed script is not warned about: {out}");
        let (status, _, message) =
            refused(c, Method::POST, "/api/v1/tasks", exec_task(sh, &["-c", &format!("touch {w}")], "t4")).await?;
        ensure!(status == 403 && message.contains("only with the leading arguments"), "{status} {message}");
        let id = c.api.enqueue(&c.addr(1), &[exec_task(sh, &[&s], "t5")]).await?[0];
        ensure!(wait_ended(c, id).await?.status == TaskStatus::Succeeded, "the allowed script failed");
        ensure!(witness.exists(), "the allowed script did not run");
        // A bare shell is allowed with a warning.
        let out = cli_ok(c, &["exec", "allow", sh]).await?;
        ensure!(out.contains("warning:") && out.contains("runs anything"), "no warning for a bare shell: {out}");

        // Changing the lists needs admin; reading them needs read.
        let reader = c.api.clone().with_token(&create_token(c, "read").await?);
        let reply = reader.raw(Method::GET, &c.addr(1), "/api/v1/policy", None).await?;
        ensure!(reply.status == 200, "a reader sees the policy: {}", reply.status);
        let operator = c.api.clone().with_token(&create_token(c, "operate").await?);
        for (path, body) in [
            ("/api/v1/policy/exec", json!({"program": "/usr/bin/true"})),
            ("/api/v1/policy/exec/deny", json!({"program": sh})),
            ("/api/v1/policy/roots", json!({"url": "/"})),
            ("/api/v1/policy/roots/deny", json!({"url": "/"})),
            ("/api/v1/policy", json!({"mode": "open"})),
        ] {
            let reply = operator.raw(Method::POST, &c.addr(1), path, Some(body.to_string().into_bytes())).await?;
            ensure!(reply.status == 403, "{path} with an operate token answered {}", reply.status);
            let anon = c.api.clone().without_token();
            let reply = anon.raw(Method::POST, &c.addr(1), path, Some(body.to_string().into_bytes())).await?;
            ensure!(reply.status == 401, "{path} without a token answered {}", reply.status);
        }
        // Every change is audited.
        let audit: Value = c.api.call(Method::GET, &c.addr(1), "/api/v1/audit?limit=1000", None).await?;
        let actions: Vec<&str> =
            audit["records"].as_array().into_iter().flatten().filter_map(|r| r["action"].as_str()).collect();
        ensure!(actions.contains(&"allow exec") && actions.contains(&"deny exec"), "audit: {actions:?}");
        Ok(())
    })
    .await;
}

async fn create_token(c: &Cluster, role: &str) -> anyhow::Result<String> {
    let created: Value = c.api.call(Method::POST, &c.addr(1), "/api/v1/tokens", Some(&json!({"role": role}))).await?;
    Ok(created["token"].as_str().context("a token")?.to_string())
}

/// A plan over `source` (CSV) and `target` (JSON lines) with the given steps.
fn plan(name: &str, source: &str, target: &str, steps: Value) -> Value {
    json!({
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name, "annotations": {"honk/queue": QUEUE}},
        "spec": {
            "type": "migration-plan", "lifecycle": "production", "owner": "team-infra",
            "source": {"url": source, "format": "csv"},
            "target": {"url": target, "format": "jsonl"},
            "steps": steps,
        },
    })
}

fn copy() -> Value {
    json!([{"type": "copy"}])
}

async fn apply_plan(c: &Cluster, entity: Value) -> anyhow::Result<(u16, String)> {
    let body = json!({"entities": [entity]}).to_string().into_bytes();
    let reply = c.api.raw(Method::POST, &c.addr(1), "/api/v1/plans", Some(body)).await?;
    let message = reply.body["error"]["message"].as_str().unwrap_or_default().to_string();
    Ok((reply.status.as_u16(), message))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_touch_only_data_roots() {
    with_enforcing_cluster(async |c, dir| {
        let root = dir.join("data");
        let outside = dir.join("secret");
        std::fs::create_dir_all(root.join("in"))?;
        std::fs::create_dir_all(&outside)?;
        std::fs::write(root.join("in/customers.csv"), "id,name\n1,ann\n2,bob\n")?;
        std::fs::write(outside.join("keys.csv"), "id,key\n1,hunter2\n")?;
        let r = root.display().to_string();
        let src = format!("{r}/in/customers.csv");
        let dst = format!("{r}/out/customers.jsonl");

        // No roots yet: refused, saying how to allow one.
        let (status, message) = apply_plan(c, plan("p0", &src, &dst, copy())).await?;
        ensure!(status == 403 && message.contains("skein roots allow"), "{status} {message}");
        let out = cli_ok(c, &["roots", "allow", &format!("file://{r}/")]).await?;
        ensure!(out.contains(&format!("file://{r}/")), "{out}");
        // An object-store root must name its endpoint and credentials.
        let addr = c.addr(1);
        let bad = c.cli(&["--addr", &addr, "roots", "allow", "s3://lake/raw/"]).await?;
        ensure!(!bad.status.success(), "an s3 root without an endpoint was allowed");
        ensure!(String::from_utf8_lossy(&bad.stderr).contains("endpoint"), "{}", String::from_utf8_lossy(&bad.stderr));

        // Outside the root, `..`, skein's own folders, a link out: refused.
        std::os::unix::fs::symlink(outside.join("keys.csv"), root.join("in/link.csv"))?;
        for (name, source, target, why) in [
            ("p1", outside.join("keys.csv").display().to_string(), dst.clone(), "not under an allowed data root"),
            ("p2", src.clone(), outside.join("out.jsonl").display().to_string(), "not under an allowed data root"),
            ("p3", format!("{r}/in/../../secret/keys.csv"), dst.clone(), "`..`"),
            ("p4", src.clone(), format!("{r}/out/_skein/x.jsonl"), "_skein"),
            ("p5", format!("{r}/in/link.csv"), dst.clone(), "link"),
        ] {
            let (status, message) = apply_plan(c, plan(name, &source, &target, copy())).await?;
            ensure!(status == 403 && message.contains(why), "{name}: {status} {message}");
        }
        // SQL that is not a query.
        for (name, sql) in [
            ("p6", "COPY source TO '/tmp/x.csv'"),
            ("p7", "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'"),
            ("p8", "SET datafusion.execution.batch_size = 1"),
        ] {
            let steps = json!([{"type": "sql", "query": sql}]);
            let (status, message) = apply_plan(c, plan(name, &src, &dst, steps)).await?;
            ensure!(status >= 400 && message.contains("only query"), "{name}: {status} {message}");
        }
        // An exec step needs its program allowed too.
        let steps = json!([{"type": "exec", "command": ["/usr/bin/true"]}, {"type": "copy"}]);
        let (status, message) = apply_plan(c, plan("p9", &src, &dst, steps)).await?;
        ensure!(status == 403 && message.contains("/usr/bin/true"), "{status} {message}");

        // Inside the root: applied, and it runs.
        let (status, message) = apply_plan(c, plan("good", &src, &dst, copy())).await?;
        ensure!(status == 200, "{status} {message}");
        let run: Value =
            c.api.call(Method::POST, &c.addr(1), "/api/v1/plans/run", Some(&json!({"refs": ["good"]}))).await?;
        let id = run["runs"][0]["task"].as_u64().context("a task")?;
        let t = wait_ended(c, id).await?;
        ensure!(t.status == TaskStatus::Succeeded, "the good plan ended {:?}: {:?}", t.status, t.last_error);
        ensure!(Path::new(&dst).exists(), "no output");

        // A link swapped in after the apply: the worker refuses and writes nothing.
        let swapped = format!("{r}/in/swap.csv");
        let swapped_out = format!("{r}/out/swap.jsonl");
        std::fs::write(&swapped, "id,name\n1,ann\n")?;
        let (status, message) = apply_plan(c, plan("swap", &swapped, &swapped_out, copy())).await?;
        ensure!(status == 200, "{status} {message}");
        c.api.pause(&c.addr(1), QUEUE).await?;
        let run: Value =
            c.api.call(Method::POST, &c.addr(1), "/api/v1/plans/run", Some(&json!({"refs": ["swap"]}))).await?;
        let id = run["runs"][0]["task"].as_u64().context("a task")?;
        std::fs::remove_file(&swapped)?;
        std::os::unix::fs::symlink(outside.join("keys.csv"), &swapped)?;
        c.api.resume(&c.addr(1), QUEUE).await?;
        let t = wait_ended(c, id).await?;
        ensure!(t.status == TaskStatus::Dead, "the swapped plan ended {:?}", t.status);
        let error = t.last_error.clone().unwrap_or_default();
        ensure!(error.contains("link") || error.contains("not under"), "{error}");
        ensure!(!Path::new(&swapped_out).exists(), "the worker wrote through a swapped link");

        // A root denied after apply: running the plan is refused.
        cli_ok(c, &["roots", "deny", &format!("file://{r}/")]).await?;
        let reply = c
            .api
            .raw(
                Method::POST,
                &c.addr(1),
                "/api/v1/plans/run",
                Some(json!({"refs": ["good"], "force": true}).to_string().into_bytes()),
            )
            .await?;
        ensure!(reply.status == 403, "running a plan outside every root answered {}", reply.status);
        Ok(())
    })
    .await;
}
