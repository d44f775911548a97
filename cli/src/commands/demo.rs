//! `skein demo`: the main job on one machine. Starts a local cluster of
//! `skein-node` processes (with skein-testkit's harness, the one the tests
//! and the bench use), stores the example plans, runs them all, waits for
//! every migration to end, prints the status table and stops the nodes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;
use skein_testkit::process::Binaries;
use skein_testkit::{Cluster, Dirs, Spec};

use super::{plan, status, Ctx};
use crate::addr::parse_addr_list;
use crate::args::{Output, StatusArgs};
use crate::client::Client;
use crate::plan_args::DemoArgs;

/// A file marking a folder as the demo's own (so it may be emptied).
const MARKER: &str = ".skein-demo";

pub async fn run(ctx: &mut Ctx<'_>, a: DemoArgs) -> anyhow::Result<()> {
    let examples = find_examples(a.examples.as_deref())?;
    let node_bin = match &a.node_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe().context("locating the skein binary")?.with_file_name("skein-node"),
    };
    if !node_bin.is_file() {
        bail!("no skein-node at {}: build it (scripts/demo.sh builds it, or: cargo build --workspace --bins --locked) or give --node-bin", node_bin.display());
    }
    let dir = prepare_dir(&a.dir)?;
    copy_dir(&examples, &dir.join("examples"))
        .with_context(|| format!("copying {} into {}", examples.display(), dir.display()))?;
    let say = |ctx: &mut Ctx<'_>, s: &str| if ctx.output == Output::Table { ctx.line(s) } else { Ok(()) };

    say(ctx, &format!("starting {} skein-node processes (logs in {}/node*.log)...", a.nodes, dir.display()))?;
    let cluster = start_cluster(&a, node_bin, &dir).await?;
    let addrs = cluster.live_addrs();
    // The harness gave the cluster this process's admin token.
    let token = skein_testkit::auth::admin_token().to_string();
    let client = Client::new(parse_addr_list(&addrs.join(",")).map_err(anyhow::Error::msg)?, Some(token), None)?;

    let mut dctx = Ctx { client: client.clone(), output: ctx.output, out: &mut *ctx.out };
    allow_examples(&client, &dir.join("examples")).await?;
    let plans = dir.join("examples").join("plans");
    say(&mut dctx, &format!("storing the plans of {}...", plans.display()))?;
    let entities = plan::read_entities(std::slice::from_ref(&plans))?;
    let n_plans = entities.iter().filter(|e| e.is_plan()).count();
    dctx.output = Output::Json;
    let mut sink = Vec::new();
    {
        let mut quiet = Ctx { client: client.clone(), output: Output::Json, out: &mut sink };
        plan::apply_entities(&mut quiet, entities, false).await?;
    }
    dctx.output = ctx.output;
    say(&mut dctx, &format!("running all {n_plans} plans (dependencies first)..."))?;
    let reply = client.post("/api/v1/plans/run", Some(json!({"all": true}))).await?;
    let ids: Vec<u64> = reply["runs"].as_array().into_iter().flatten().filter_map(|r| r["task"].as_u64()).collect();
    let started = Instant::now();
    plan::wait_for_tasks(&client, &ids, Duration::from_secs(a.timeout)).await?;
    // A partitioned plan's task only plans its run: wait for its partitions.
    let runs: Vec<(String, u64)> = reply["runs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| Some((r["entity_ref"].as_str()?.to_string(), r["generation"].as_u64()?)))
        .collect();
    let deadline = started + Duration::from_secs(a.timeout);
    for (r, p) in plan::wait_for_partitions(&client, &runs, deadline).await? {
        say(
            &mut dctx,
            &format!(
                "{r}: partitioned run {}: {}/{} partitions",
                p["status"].as_str().unwrap_or("?"),
                p["succeeded"],
                p["total"]
            ),
        )?;
    }
    say(&mut dctx, &format!("all {} migrations ended in {:.1} s\n", ids.len(), started.elapsed().as_secs_f64()))?;
    status::run(&mut dctx, StatusArgs { queue: None }).await?;
    say(&mut dctx, &format!("\nmigrated datasets: {}", dir.join("examples").join("out").display()))?;
    if a.keep {
        let pids: Vec<String> =
            cluster.live_ids().iter().filter_map(|&id| cluster.node(id).pid()).map(|p| p.to_string()).collect();
        say(
            &mut dctx,
            &format!(
                "the cluster keeps running: export SKEIN_ADDR={} SKEIN_TOKEN=$(cat {}.admin-token); stop it with: kill {}",
                addrs.join(","),
                cluster.node(1).data_dir().display(),
                pids.join(" ")
            ),
        )?;
    }
    Ok(())
}

/// The cluster enforces its policy, as every new cluster does: allow
/// exactly what the examples need, the examples' folder as a data root and
/// python3 running the one script of an `exec` step.
async fn allow_examples(client: &Client, examples: &Path) -> anyhow::Result<()> {
    client.post("/api/v1/policy/roots", Some(json!({"url": format!("file://{}/", examples.display())}))).await?;
    let python = skein_plan::on_path("python3").context("the examples' exec step needs python3 on PATH")?;
    let script = examples.join("transforms").join("mask_emails.py");
    let rule = json!({"program": python.display().to_string(), "args": [script.display().to_string()]});
    client.post("/api/v1/policy/exec", Some(rule)).await?;
    Ok(())
}

/// Starts the local nodes: node i on HTTP port BASE+i and RPC port
/// BASE+100+i, its data in `dir/node<i>/` and its log in `dir/node<i>.log`,
/// two worker slots each; node 1 bootstraps, the others join it. Returns
/// once every node is ready and a member. The nodes die with the returned
/// cluster (also when the demo fails), unless `--keep`.
async fn start_cluster(a: &DemoArgs, node_bin: PathBuf, dir: &Path) -> anyhow::Result<Cluster> {
    let port = |offset: u64, i: u64| format!("127.0.0.1:{}", u64::from(a.base_port) + offset + i);
    Spec {
        addrs: (1..=a.nodes).map(|i| (i, (port(0, i), port(100, i)))).collect(),
        slots: 2,
        bins: Some(Binaries::beside(node_bin)),
        dirs: Dirs::Flat(dir.to_path_buf()),
        keep_running: a.keep,
        membership_timeout: Duration::from_secs(60),
        enforce_policy: true,
        ..Spec::new(a.nodes as usize)
    }
    .start()
    .await
}

/// `examples/` with a `plans/` folder: the one given, else under the
/// current folder, else in the source tree this skein was built from.
fn find_examples(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let candidates: Vec<PathBuf> = match given {
        Some(p) => vec![p.to_path_buf()],
        None => vec![PathBuf::from("examples"), Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")],
    };
    for c in &candidates {
        if c.join("plans").is_dir() {
            return Ok(std::fs::canonicalize(c)?);
        }
    }
    bail!(
        "no examples folder with plans/ found (looked at {}); give --examples",
        candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", ")
    )
}

/// Empties the demo folder (only one the demo made before) and marks it.
fn prepare_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    if dir.exists() {
        let ours = dir.join(MARKER).exists() || std::fs::read_dir(dir)?.next().is_none();
        if !ours {
            bail!("{} exists and is not a demo folder; give another --dir", dir.display());
        }
        std::fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(MARKER), "made by skein demo; emptied by the next one\n")?;
    Ok(std::fs::canonicalize(dir)?)
}

/// Copies a folder tree, skipping `out/` (results of an earlier run).
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        let (src, dst) = (entry.path(), to.join(&name));
        if src.is_dir() {
            if name == "out" {
                continue;
            }
            copy_dir(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}
