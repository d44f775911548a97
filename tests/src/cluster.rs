//! [`Cluster`]: real `skein-node` processes on loopback.
//!
//! Node ids start at 1; node 1 bootstraps, the others join it. Each node
//! has free ports, `--slots 4`, and a temporary directory holding its data
//! (`data/`) and its log (`node.log`, appended to across restarts). Dropping
//! the `Cluster` kills every node; when the thread is panicking (a failed
//! assertion) it then prints the tail of each log, and keeps the
//! directories if `SKEIN_TEST_KEEP` is set.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use skein_raft::api::ClusterStatus;
use tempfile::TempDir;

use crate::api::Api;
use crate::process::{free_port, log_tail, Binaries, Process};
use crate::wait::wait_for;

/// How long a node may take to answer `/readyz` after it was started.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a started cluster may take to reach its full membership.
pub const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(30);
/// Worker slots per node.
pub const SLOTS: u32 = 4;
/// Lines of each log printed when a test fails.
const TAIL_LINES: usize = 60;

/// One node: its addresses, its directory and its process (if running).
#[derive(Debug)]
pub struct Node {
    pub id: u64,
    /// The HTTP API, `127.0.0.1:port`.
    pub http: String,
    /// Raft and node-to-node RPCs, `127.0.0.1:port`.
    pub rpc: String,
    dir: TempDir,
    /// `None` once the harness killed it or saw it exit.
    process: Option<Process>,
}

impl Node {
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("node.log")
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }
}

/// A cluster of `skein-node` processes; see the module docs.
pub struct Cluster {
    /// For the tests' own calls (15 s timeout per request).
    pub api: Api,
    /// For the harness's status polls: a stopped node must not stall them.
    probe: Api,
    bins: Binaries,
    nodes: BTreeMap<u64, Node>,
    /// Extra environment of every node process (see [`Cluster::start_with_env`]).
    env: Vec<(String, String)>,
    /// Flags a node gets on every start, restarts included (see [`Layout`]).
    node_args: BTreeMap<u64, Vec<String>>,
    /// Addresses chosen before the nodes start (see [`Layout`]).
    addrs: BTreeMap<u64, (String, String)>,
    /// Node id → the `skein-node` binary it starts with, when not
    /// `bins.node` (see [`Cluster::set_node_binary`]).
    node_bins: BTreeMap<u64, PathBuf>,
}

/// A cluster whose addresses are fixed before any node starts, so that
/// each node's flags can name the others' (the chaos harness routes every
/// link through a proxy: [`crate::proxy::Net`]).
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// Node id → (HTTP address, RPC address).
    pub addrs: BTreeMap<u64, (String, String)>,
    /// Node id → flags added on every start of that node.
    pub node_args: BTreeMap<u64, Vec<String>>,
    pub env: Vec<(String, String)>,
    /// Voters the cluster aims for (`--voters`; default 3).
    pub voters: usize,
    /// The `skein-node` binary every node starts with (default: the one
    /// [`Binaries::locate`] finds); e.g. an older release's, to upgrade.
    pub node_bin: Option<PathBuf>,
}

impl Layout {
    /// Free loopback ports for nodes `1..=n`.
    pub fn free(n: usize) -> anyhow::Result<Layout> {
        let mut addrs = BTreeMap::new();
        for id in 1..=n as u64 {
            addrs.insert(id, (format!("127.0.0.1:{}", free_port()?), format!("127.0.0.1:{}", free_port()?)));
        }
        Ok(Layout { addrs, voters: 3, ..Layout::default() })
    }
}

impl Cluster {
    /// Starts `n` nodes: node 1 with `--bootstrap`, then each other with
    /// `--join <node 1>`, one after another; returns once every node is
    /// ready and the leader sees all `n` as members, `min(n, 3)` of them
    /// voters. On failure every started node is killed and the error carries
    /// their log tails.
    pub async fn start(n: usize) -> anyhow::Result<Cluster> {
        Cluster::start_with_env(n, Vec::new()).await
    }

    /// [`Cluster::start`], every node started with these extra environment
    /// variables (restarts and added nodes too).
    pub async fn start_with_env(n: usize, env: Vec<(String, String)>) -> anyhow::Result<Cluster> {
        ensure!(n >= 1, "a cluster needs at least one node");
        crate::checks::say(format!("starting a cluster of {n} nodes"));
        Cluster::boot(n, 3, env, BTreeMap::new(), BTreeMap::new(), None).await
    }

    /// Starts the nodes of `layout` (ids `1..=n`) like [`Cluster::start`],
    /// on its addresses, each with its own flags, aiming for
    /// `layout.voters` voters.
    pub async fn start_layout(layout: Layout) -> anyhow::Result<Cluster> {
        let n = layout.addrs.len();
        ensure!(n >= 1, "a cluster needs at least one node");
        ensure!(layout.addrs.keys().copied().eq(1..=n as u64), "a layout's node ids are 1..=n");
        crate::checks::say(format!("starting a cluster of {n} nodes ({} voters) on fixed addresses", layout.voters));
        let mut node_args = layout.node_args;
        for id in 1..=n as u64 {
            node_args.entry(id).or_default().extend(["--voters".to_string(), layout.voters.to_string()]);
        }
        Cluster::boot(n, layout.voters, layout.env, node_args, layout.addrs, layout.node_bin).await
    }

    /// Starts nodes `1..=n` aiming for `voters` voters; on failure every
    /// started node is killed and the error carries their log tails.
    async fn boot(
        n: usize,
        voters: usize,
        env: Vec<(String, String)>,
        node_args: BTreeMap<u64, Vec<String>>,
        addrs: BTreeMap<u64, (String, String)>,
        node_bin: Option<PathBuf>,
    ) -> anyhow::Result<Cluster> {
        let node_bins = match node_bin {
            Some(bin) => (1..=n as u64).map(|id| (id, bin.clone())).collect(),
            None => BTreeMap::new(),
        };
        let mut c = Cluster {
            api: Api::new(),
            probe: Api::with_timeout(Duration::from_secs(2)),
            bins: Binaries::locate()?,
            nodes: BTreeMap::new(),
            env,
            node_args,
            addrs,
            node_bins,
        };
        match c.start_nodes(n, voters).await {
            Ok(()) => Ok(c),
            Err(e) => {
                Err(e.context(format!("starting a cluster of {n} nodes; their logs end with:\n{}", c.log_tails(30))))
            }
        }
    }

    async fn start_nodes(&mut self, n: usize, voters: usize) -> anyhow::Result<()> {
        self.launch_new(1, vec!["--bootstrap".into()]).await?;
        let first = self.addr(1);
        for id in 2..=n as u64 {
            self.launch_new(id, vec!["--join".into(), first.clone()]).await?;
        }
        let ids: Vec<u64> = (1..=n as u64).collect();
        self.wait_members(&ids, n.min(voters), MEMBERSHIP_TIMEOUT).await
    }

    /// The binaries in use (to start a process of one's own).
    pub fn bins(&self) -> &Binaries {
        &self.bins
    }

    pub fn node(&self, id: u64) -> &Node {
        match self.nodes.get(&id) {
            Some(n) => n,
            None => panic!("no node {id} in this cluster (nodes: {:?})", self.ids()),
        }
    }

    /// Node `id`'s HTTP address, `127.0.0.1:port`.
    pub fn addr(&self, id: u64) -> String {
        self.node(id).http.clone()
    }

    /// Every node the cluster ever had, running or not.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// Nodes whose process the harness has not seen die (a SIGSTOPped one counts).
    pub fn live_ids(&self) -> Vec<u64> {
        self.nodes.values().filter(|n| n.process.is_some()).map(|n| n.id).collect()
    }

    /// HTTP addresses of the live nodes.
    pub fn live_addrs(&self) -> Vec<String> {
        self.live_ids().into_iter().map(|id| self.addr(id)).collect()
    }

    /// Creates node `id` with fresh ports and directory and starts it with
    /// `extra` flags; waits until it is ready. A port taken by someone else
    /// between our probe and the node's bind means another try on new ports.
    async fn launch_new(&mut self, id: u64, extra: Vec<String>) -> anyhow::Result<()> {
        let mut attempt = 1;
        loop {
            let dir = tempfile::Builder::new()
                .prefix(&format!("skein-node{id}-"))
                .tempdir()
                .context("creating a node directory")?;
            let fixed = self.addrs.get(&id).cloned();
            let (http, rpc) = match &fixed {
                Some(a) => a.clone(),
                None => (format!("127.0.0.1:{}", free_port()?), format!("127.0.0.1:{}", free_port()?)),
            };
            let node = Node { id, http, rpc, dir, process: None };
            self.nodes.insert(id, node);
            self.spawn(id, &extra)?;
            match self.wait_ready(id, READY_TIMEOUT).await {
                Ok(()) => return Ok(()),
                Err(e)
                    if fixed.is_none() && attempt < 3 && log_tail(&self.node(id).log_path(), 20).contains("in use") =>
                {
                    eprintln!("harness: node {id} could not bind its ports ({e:#}); trying others");
                    self.nodes.remove(&id);
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Starts node `id`'s process on its ports and data directory.
    fn spawn(&mut self, id: u64, extra: &[String]) -> anyhow::Result<()> {
        let node = self.nodes.get_mut(&id).with_context(|| format!("no node {id}"))?;
        ensure!(node.process.is_none(), "node {id} is already running");
        let mut args: Vec<String> = vec![
            "--id".into(),
            id.to_string(),
            "--listen".into(),
            node.rpc.clone(),
            "--http".into(),
            node.http.clone(),
            "--data-dir".into(),
            node.data_dir().display().to_string(),
            "--slots".into(),
            SLOTS.to_string(),
        ];
        args.extend(self.node_args.get(&id).into_iter().flatten().cloned());
        args.extend(extra.iter().cloned());
        let bin = self.node_bins.get(&id).unwrap_or(&self.bins.node);
        node.process = Some(Process::spawn_with_env(bin, &args, &node.log_path(), &self.env)?);
        Ok(())
    }

    /// Waits until node `id` answers `/readyz` with 200; fails at once if its
    /// process exits.
    pub async fn wait_ready(&mut self, id: u64, timeout: Duration) -> anyhow::Result<()> {
        let probe = self.probe.clone();
        let node = self.nodes.get_mut(&id).with_context(|| format!("no node {id}"))?;
        let addr = node.http.clone();
        let log = node.log_path();
        let outcome = wait_for(timeout, &format!("node {id} ({addr}) to be ready"), async || {
            let Some(p) = node.process.as_mut() else { return Ok(Some(Err("it is not running".to_string()))) };
            if let Some(status) = p.exit_status()? {
                return Ok(Some(Err(format!("it exited with {status}"))));
            }
            Ok(probe.ready(&addr).await?.then_some(Ok(())))
        })
        .await?;
        if let Err(why) = outcome {
            node.process = None;
            bail!("node {id} did not become ready: {why}; its log ends with:\n{}", log_tail(&log, 20));
        }
        Ok(())
    }

    /// The leader, as a live node reports it and the leader confirms.
    pub async fn leader(&self) -> anyhow::Result<u64> {
        let mut seen = Vec::new();
        for id in self.live_ids() {
            let status = match self.probe.cluster(&self.addr(id)).await {
                Ok(s) => s,
                Err(e) => {
                    seen.push(format!("node {id}: {e:#}"));
                    continue;
                }
            };
            let Some(leader) = status.leader else {
                seen.push(format!("node {id}: no leader"));
                continue;
            };
            if self.nodes.get(&leader).is_none_or(|n| n.process.is_none()) {
                seen.push(format!("node {id}: leader {leader}, which is not running"));
                continue;
            }
            match self.probe.cluster(&self.addr(leader)).await {
                Ok(s) if s.leader == Some(leader) => return Ok(leader),
                Ok(s) => seen.push(format!("node {id}: leader {leader}, which names {:?}", s.leader)),
                Err(e) => seen.push(format!("node {id}: leader {leader}, which does not answer: {e:#}")),
            }
        }
        bail!("no leader confirmed: {}", seen.join("; "))
    }

    /// Waits for a confirmed leader.
    pub async fn wait_leader(&self, timeout: Duration) -> anyhow::Result<u64> {
        wait_for(timeout, "a leader", async || Ok(Some(self.leader().await?))).await
    }

    /// The cluster as the leader sees it.
    pub async fn status(&self) -> anyhow::Result<ClusterStatus> {
        let leader = self.leader().await?;
        self.probe.cluster(&self.addr(leader)).await
    }

    /// Waits until the leader's membership is exactly `ids`, `voters` of them
    /// voters (the leader included).
    pub async fn wait_members(&self, ids: &[u64], voters: usize, timeout: Duration) -> anyhow::Result<()> {
        let want: BTreeSet<u64> = ids.iter().copied().collect();
        let what = format!("members {want:?} with {voters} voters");
        wait_until_status(self, timeout, &what, |s| {
            let have: BTreeSet<u64> = s.nodes.iter().map(|n| n.id).collect();
            have == want && voter_count(s) == voters
        })
        .await
    }

    /// SIGKILL node `id` (and reap it).
    pub fn kill9(&mut self, id: u64) -> anyhow::Result<()> {
        let node = self.nodes.get_mut(&id).with_context(|| format!("no node {id}"))?;
        let mut p = node.process.take().with_context(|| format!("node {id} is not running"))?;
        p.kill9()?;
        Ok(())
    }

    /// SIGTERM node `id`: it drains and exits; see [`Cluster::wait_exit`].
    pub fn term(&mut self, id: u64) -> anyhow::Result<()> {
        self.signal(id, "TERM")
    }

    /// SIGSTOP node `id`: frozen, its connections open but silent.
    pub fn sigstop(&mut self, id: u64) -> anyhow::Result<()> {
        self.signal(id, "STOP")
    }

    pub fn sigcont(&mut self, id: u64) -> anyhow::Result<()> {
        self.signal(id, "CONT")
    }

    fn signal(&mut self, id: u64, name: &str) -> anyhow::Result<()> {
        let node = self.nodes.get_mut(&id).with_context(|| format!("no node {id}"))?;
        node.process.as_mut().with_context(|| format!("node {id} is not running"))?.signal(name)
    }

    /// Waits for node `id` to exit by itself; its exit status.
    pub async fn wait_exit(&mut self, id: u64, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let node = self.nodes.get_mut(&id).with_context(|| format!("no node {id}"))?;
        let p = node.process.as_mut().with_context(|| format!("node {id} is not running"))?;
        let status = p.wait_exit(timeout).await.with_context(|| format!("node {id}"))?;
        node.process = None;
        Ok(status)
    }

    /// Whether node `id`'s process still runs (reaps it if it exited).
    pub fn is_running(&mut self, id: u64) -> bool {
        let Some(node) = self.nodes.get_mut(&id) else { return false };
        let running = node.process.as_mut().is_some_and(Process::is_running);
        if !running {
            node.process = None;
        }
        running
    }

    /// Starts node `id` again on its ports and data directory, with neither
    /// `--bootstrap` nor `--join`. Does not wait: a node alone cannot elect
    /// a leader, so restart the others too, then [`Cluster::wait_ready`].
    pub fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        self.spawn(id, &[])
    }

    /// Replaces the flags node `id` gets on its next starts (a test that
    /// restarts a node as another version).
    pub fn set_node_args(&mut self, id: u64, args: Vec<String>) {
        self.node_args.insert(id, args);
    }

    /// Replaces the `skein-node` binary node `id` starts with from its next
    /// start on: stop it, set this, [`Cluster::restart`] it, and it runs
    /// another release on the same data directory (an upgrade or a
    /// downgrade).
    pub fn set_node_binary(&mut self, id: u64, bin: PathBuf) {
        self.node_bins.insert(id, bin);
    }

    /// The `skein-node` binary node `id` starts with.
    pub fn node_binary(&self, id: u64) -> &std::path::Path {
        self.node_bins.get(&id).unwrap_or(&self.bins.node)
    }

    /// Starts a new node that joins through a live node; waits until it is
    /// ready and a member. Its id is one above the highest so far.
    pub async fn add_node(&mut self) -> anyhow::Result<u64> {
        let id = self.nodes.keys().max().map_or(1, |m| m + 1);
        let via = self.leader().await.context("finding a node to join through")?;
        self.launch_new(id, vec!["--join".into(), self.addr(via)]).await?;
        wait_until_status(self, MEMBERSHIP_TIMEOUT, &format!("node {id} in the membership"), |s| {
            s.nodes.iter().any(|n| n.id == id)
        })
        .await?;
        Ok(id)
    }

    /// Runs the `skein` CLI with `args` (at most 60 s).
    pub async fn cli(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        let mut cmd = tokio::process::Command::new(&self.bins.cli);
        cmd.args(args).env_remove("SKEIN_ADDR").kill_on_drop(true);
        tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .with_context(|| format!("skein {} did not finish within 60 s", args.join(" ")))?
            .with_context(|| format!("running skein {}", args.join(" ")))
    }

    /// The tail of every node's log, for error messages.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for node in self.nodes.values() {
            out.push_str(&format!(
                "---- node {} (http {}, rpc {}, {}) log {}:\n{}\n",
                node.id,
                node.http,
                node.rpc,
                if node.process.is_some() { "running" } else { "not running" },
                node.log_path().display(),
                log_tail(&node.log_path(), lines)
            ));
        }
        out
    }

    /// Ends a test: an error fails it (panics), and the drop then prints
    /// the node logs.
    pub fn finish(self, result: anyhow::Result<()>) {
        if let Err(e) = result {
            panic!("{e:?}");
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Kill first, so the logs we print are complete.
        for node in self.nodes.values_mut() {
            if let Some(mut p) = node.process.take() {
                let _ = p.kill9();
            }
        }
        if std::thread::panicking() {
            // A node's directory is some 70 MB (RocksDB): kept only on request.
            let keep = std::env::var_os("SKEIN_TEST_KEEP").is_some();
            for node in self.nodes.values_mut() {
                node.dir.disable_cleanup(keep);
            }
            let kept = if keep { "directories kept" } else { "set SKEIN_TEST_KEEP=1 to keep the directories" };
            eprintln!("==== the test failed; the end of each node's log ({kept}):");
            eprintln!("{}", self.log_tails(TAIL_LINES));
        }
    }
}

/// How many voters (the leader included) a status lists.
pub fn voter_count(s: &ClusterStatus) -> usize {
    s.nodes.iter().filter(|n| n.role == "leader" || n.role == "voter").count()
}

async fn wait_until_status(
    c: &Cluster,
    timeout: Duration,
    what: &str,
    mut ok: impl FnMut(&ClusterStatus) -> bool,
) -> anyhow::Result<()> {
    wait_for(timeout, what, async || {
        let s = c.status().await?;
        if ok(&s) {
            Ok(Some(()))
        } else {
            let nodes: Vec<String> = s.nodes.iter().map(|n| format!("{}:{}", n.id, n.role)).collect();
            bail!("the leader sees {}", nodes.join(", "))
        }
    })
    .await
}
