//! `skein demo`: the main job on one machine. Starts a local cluster of
//! `skein-node` processes, stores the example plans, runs them all, waits
//! for every migration to end, prints the status table and stops the nodes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;

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
    let mut cluster = LocalCluster { children: Vec::new(), keep: a.keep };
    let http = |i: u64| format!("127.0.0.1:{}", u64::from(a.base_port) + i);
    for i in 1..=a.nodes {
        let log = std::fs::File::create(dir.join(format!("node{i}.log")))?;
        let mut cmd = Command::new(&node_bin);
        cmd.args(["--id", &i.to_string()])
            .args(["--listen", &format!("127.0.0.1:{}", u64::from(a.base_port) + 100 + i)])
            .args(["--http", &http(i)])
            .arg("--data-dir")
            .arg(dir.join(format!("node{i}")))
            .args(["--slots", "2"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if i == 1 {
            cmd.arg("--bootstrap");
        } else {
            cmd.args(["--join", &http(1)]);
        }
        let child = cmd.spawn().with_context(|| format!("starting {}", node_bin.display()))?;
        cluster.children.push(child);
        if i == 1 {
            wait_ready(&http(1), &mut cluster, Duration::from_secs(30)).await?;
        }
    }
    let addrs: Vec<String> = (1..=a.nodes).map(http).collect();
    let client = Client::new(parse_addr_list(&addrs.join(",")).map_err(anyhow::Error::msg)?)?;
    wait_members(&client, a.nodes as usize, &mut cluster, Duration::from_secs(60)).await?;

    let mut dctx = Ctx { client: client.clone(), output: ctx.output, out: &mut *ctx.out };
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
    say(&mut dctx, &format!("all {} migrations ended in {:.1} s\n", ids.len(), started.elapsed().as_secs_f64()))?;
    status::run(&mut dctx, StatusArgs { queue: None }).await?;
    say(&mut dctx, &format!("\nmigrated datasets: {}", dir.join("examples").join("out").display()))?;
    if a.keep {
        let pids: Vec<String> = cluster.children.iter().map(|c| c.id().to_string()).collect();
        say(
            &mut dctx,
            &format!(
                "the cluster keeps running: export SKEIN_ADDR={}; stop it with: kill {}",
                addrs.join(","),
                pids.join(" ")
            ),
        )?;
    }
    Ok(())
}

/// The local nodes; killed on drop unless kept.
struct LocalCluster {
    children: Vec<Child>,
    keep: bool,
}

impl LocalCluster {
    fn check_alive(&mut self) -> anyhow::Result<()> {
        for (i, c) in self.children.iter_mut().enumerate() {
            if let Some(status) = c.try_wait()? {
                bail!("node {} exited ({status}); see its log node{}.log in the demo folder", i + 1, i + 1);
            }
        }
        Ok(())
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn wait_ready(addr: &str, cluster: &mut LocalCluster, timeout: Duration) -> anyhow::Result<()> {
    let client = Client::new(parse_addr_list(addr).map_err(anyhow::Error::msg)?)?;
    let deadline = Instant::now() + timeout;
    loop {
        cluster.check_alive()?;
        if client.get("/readyz", &[]).await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("node at {addr} was not ready after {} s", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_members(client: &Client, n: usize, cluster: &mut LocalCluster, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        cluster.check_alive()?;
        if let Ok(c) = client.get("/api/v1/cluster", &[]).await {
            let members = c["nodes"].as_array().map_or(0, Vec::len);
            if members >= n && c["leader"].is_u64() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("the cluster did not reach {n} members in {} s", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
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
