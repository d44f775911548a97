//! Backup and restore (issue 12): `skein admin backup FILE` of a loaded,
//! running cluster, restored with `skein-node --restore FILE --bootstrap`
//! into a new cluster that others join. The new cluster has the backup's
//! tasks (payloads, results, histories) and plans, its members agree, its
//! leases start over, and its fencing tokens are past every token the old
//! cluster granted, even after the backup: a plan the old cluster published
//! again after the backup is published again by the new one. Damaged
//! backups and non-empty directories are refused before anything changes.
//!
//! Needs the binaries: `cargo build --workspace --bins` first.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context};
use reqwest::Method;
use serde_json::{json, Value};
use skein_raft::api::RunPlansReply;
use skein_raft::fsm::{TaskStatus, EPOCH_SHIFT};
use skein_testkit::process::free_port;
use skein_testkit::{wait_for, wait_until, Cluster, Spec};
use skein_tests::checks::say;

const QUEUE: &str = "migrations";

fn plan_yaml(dir: &Path) -> String {
    format!(
        "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: customers-v2\n  annotations:\n    \
         honk/queue: {QUEUE}\nspec:\n  type: migration-plan\n  lifecycle: production\n  owner: team-data\n  \
         source: {{url: \"{src}\", format: csv}}\n  target: {{url: \"{dst}\", format: parquet}}\n  steps:\n    \
         - type: sql\n      query: \"SELECT id, name FROM source\"\n",
        src = dir.join("customers.csv").display(),
        dst = dir.join("out/customers.parquet").display(),
    )
}

fn published_token(dir: &Path) -> anyhow::Result<u64> {
    let record = dir.join("out/_skein/customers.parquet/published.json");
    let v: Value =
        serde_json::from_slice(&std::fs::read(&record).with_context(|| format!("reading {}", record.display()))?)?;
    v["token"].as_u64().context("published.json has no token")
}

/// Runs the plan (forced when `force`) through `addr` and waits for its task to succeed.
async fn run_plan(c: &Cluster, addr: &str, force: bool) -> anyhow::Result<u64> {
    let reply: RunPlansReply = c
        .api
        .call(Method::POST, addr, "/api/v1/plans/run", Some(&json!({"refs": ["customers-v2"], "force": force})))
        .await?;
    let id = reply.runs.first().context("no run")?.task.0;
    let task = wait_for(Duration::from_secs(60), "the migration to end", async || {
        let t = c.api.task(addr, id).await?.task;
        Ok(t.status.is_terminal().then_some(t))
    })
    .await?;
    ensure!(task.status == TaskStatus::Succeeded, "migration {id} ended {} ({:?})", task.status, task.last_error);
    Ok(id)
}

/// Every task as the API shows it (with payload, result and history), by id.
async fn details(c: &Cluster, addr: &str) -> anyhow::Result<BTreeMap<u64, Value>> {
    let mut out = BTreeMap::new();
    for t in c.api.tasks(addr, None, None).await? {
        out.insert(t.id.0, c.api.call(Method::GET, addr, &format!("/api/v1/tasks/{}", t.id.0), None).await?);
    }
    Ok(out)
}

async fn digests(c: &Cluster) -> anyhow::Result<Vec<(u64, String)>> {
    let mut out = Vec::new();
    for id in c.live_ids() {
        let d: Value = c.api.call(Method::GET, &c.addr(id), "/api/v1/admin/digest", None).await?;
        out.push((d["applied_index"].as_u64().unwrap_or(0), d["digest"].as_str().unwrap_or("").to_string()));
    }
    Ok(out)
}

/// `skein-node --restore` run by hand: must exit non-zero, saying `expect`.
fn refused_restore(c: &Cluster, backup: &Path, data_dir: &Path, expect: &str) -> anyhow::Result<()> {
    let out = std::process::Command::new(&c.bins().node)
        .args(["--id", "1", "--listen", &format!("127.0.0.1:{}", free_port()?)])
        .args(["--http", &format!("127.0.0.1:{}", free_port()?), "--bootstrap", "--data-dir"])
        .arg(data_dir)
        .arg("--restore")
        .arg(backup)
        .output()
        .context("running skein-node --restore")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "a restore of {} into {} succeeded", backup.display(), data_dir.display());
    ensure!(stderr.contains(expect), "the refusal does not say {expect:?}:\n{stderr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_of_a_running_cluster_restores_into_a_new_one() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let old = Cluster::start(3).await.expect("the old cluster");
    let result = run(&old, dir.path()).await;
    old.finish(result);
}

async fn run(old: &Cluster, dir: &Path) -> anyhow::Result<()> {
    let mut csv = String::from("id,name\n");
    for i in 1..=200 {
        csv.push_str(&format!("{i},name-{i}\n"));
    }
    std::fs::write(dir.join("customers.csv"), csv)?;
    std::fs::write(dir.join("plan.yaml"), plan_yaml(dir))?;
    let addr = old.addr(old.leader().await?);
    let out = old.cli(&["--addr", &addr, "plan", "apply", &dir.join("plan.yaml").display().to_string()]).await?;
    ensure!(out.status.success(), "plan apply: {}", String::from_utf8_lossy(&out.stderr));
    run_plan(old, &addr, false).await?;
    let first_publish = published_token(dir)?;

    // Load: finished tasks, and tasks leased while the backup is taken.
    let done = old.api.enqueue(&addr, &vec![json!({"queue": "etl", "kind": "noop", "payload": {"n": 1}}); 20]).await?;
    wait_until(Duration::from_secs(30), "the noop tasks to succeed", async || {
        Ok(old.api.counts(&addr, "etl").await?.get(&TaskStatus::Succeeded) == Some(&(done.len() as u64)))
    })
    .await?;
    let slow =
        old.api.enqueue(&addr, &vec![json!({"queue": "slow", "kind": "sleep", "payload": {"ms": 60_000}}); 3]).await?;
    wait_until(Duration::from_secs(30), "the sleep tasks to be leased", async || {
        Ok(old.api.counts(&addr, "slow").await?.get(&TaskStatus::Leased) == Some(&3))
    })
    .await?;

    // The backup, asked of a follower: the CLI follows it to the leader.
    let leader = old.leader().await?;
    let follower = old.addr(old.live_ids().into_iter().find(|id| *id != leader).context("no follower")?);
    let backup = dir.join("cluster.backup");
    let out = old.cli(&["--addr", &follower, "admin", "backup", &backup.display().to_string()]).await?;
    ensure!(out.status.success(), "skein admin backup: {}", String::from_utf8_lossy(&out.stderr));
    ensure!(
        String::from_utf8_lossy(&out.stdout).contains("backup written to"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    say(format!("backup of {} bytes taken through follower {follower}", std::fs::metadata(&backup)?.len()));
    let at_backup = details(old, &addr).await?;
    let old_max_token = at_backup
        .values()
        .flat_map(|t| t["history"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e["token"].as_u64())
        .max()
        .context("no token in the old cluster")?;

    // After the backup the old cluster publishes the plan again.
    run_plan(old, &addr, true).await?;
    let after_backup_publish = published_token(dir)?;
    ensure!(after_backup_publish > first_publish);

    // Refused, before anything is touched.
    let bytes = std::fs::read(&backup)?;
    let damaged = dir.join("damaged.backup");
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 3] ^= 0x01;
    std::fs::write(&damaged, flipped)?;
    refused_restore(old, &damaged, &dir.join("never-1"), "corrupt snapshot")?;
    ensure!(!dir.join("never-1").exists(), "a refused restore created its data directory");
    std::fs::write(&damaged, &bytes[..bytes.len() / 2])?;
    refused_restore(old, &damaged, &dir.join("never-2"), "corrupt snapshot")?;
    let used = dir.join("used");
    std::fs::create_dir_all(&used)?;
    std::fs::write(used.join("something"), b"x")?;
    refused_restore(old, &backup, &used, "not empty")?;

    // Restored: node 1 from the backup, two more join it.
    say(format!("damaged backups and a used directory refused; restoring (old tokens up to {old_max_token})"));
    let mut layout = Spec::free(3)?;
    layout.node_args.insert(1, vec!["--restore".into(), backup.display().to_string()]);
    let new = Cluster::start_layout(layout).await.context("the restored cluster")?;
    let result = check_restored(&new, dir, &at_backup, &slow, old_max_token, after_backup_publish).await;
    new.finish(result);
    Ok(())
}

async fn check_restored(
    new: &Cluster,
    dir: &Path,
    at_backup: &BTreeMap<u64, Value>,
    slow: &[u64],
    old_max_token: u64,
    after_backup_publish: u64,
) -> anyhow::Result<()> {
    let addr = new.addr(new.leader().await?);
    // Every member has the backup's state (the joiners through the snapshot).
    wait_until(Duration::from_secs(30), "the restored members to agree", async || {
        let d = digests(new).await?;
        Ok(d.len() == 3 && d.windows(2).all(|w| w[0] == w[1]))
    })
    .await?;
    let restored = details(new, &addr).await?;
    ensure!(restored.len() == at_backup.len(), "{} tasks restored, the backup had {}", restored.len(), at_backup.len());
    for (id, before) in at_backup {
        let after = &restored[id];
        if slow.contains(id) {
            // Held by the old cluster's nodes: handed back.
            ensure!(after["status"] == "pending" || after["status"] == "leased", "slow task {id}: {}", after["status"]);
            continue;
        }
        for field in ["status", "queue", "kind", "attempt", "payload", "result", "history", "created_ms", "finished_ms"]
        {
            ensure!(
                after[field] == before[field],
                "task {id}: {field} is {} after the restore, was {}",
                after[field],
                before[field]
            );
        }
    }
    say(format!("{} tasks restored as they were; members agree", restored.len()));
    let plans: Value = new.api.call(Method::GET, &addr, "/api/v1/plans", None).await?;
    ensure!(plans["plans"].as_array().is_some_and(|p| p.len() == 1), "plans: {plans}");

    // New leases are of the new epoch, past every old token; the plan the
    // old cluster published after the backup is published again.
    let id = run_plan(new, &addr, true).await?;
    let detail = new.api.task(&addr, id).await?;
    let token = detail.history.iter().filter_map(|e| e.token).map(|t| t.0).max().context("no token")?;
    ensure!(token >> EPOCH_SHIFT == 1 && token > old_max_token && token > after_backup_publish, "token {token}");
    let published = published_token(dir)?;
    ensure!(published == token, "the restored cluster's run published token {published}, not its own {token}");
    say(format!("the restored cluster published under token {token} (epoch 1), after the old {after_backup_publish}"));
    Ok(())
}
