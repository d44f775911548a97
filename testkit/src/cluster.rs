//! [`Cluster`]: real `skein-node` processes on loopback, started the way
//! the README says: node 1 with `--bootstrap`, then each other node with
//! `--join <node 1>`, one after another, each waited for until it is ready.
//!
//! A [`Spec`] says how: how many nodes, their ports (free ones, or fixed
//! before any node starts so that flags can name them), worker slots, flags
//! and environment, the `skein-node` binary (per node, for upgrades), where
//! the data and logs go ([`Dirs`]), and how long to wait. Node ids start at
//! 1. Each node's log is appended to across restarts.
//!
//! Dropping the `Cluster` kills every node (unless [`Spec::keep_running`]);
//! when the thread is panicking (a failed assertion) it then prints the
//! tail of each log, and keeps temporary directories if `SKEIN_TEST_KEEP`
//! is set.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use skein_raft::api::ClusterStatus;
use tempfile::TempDir;

use crate::api::{Api, REQUEST_TIMEOUT};
use crate::process::{free_port, log_tail, Binaries, Process};
use crate::wait::{wait_for_every, POLL};

/// How long a node may take to answer `/readyz` after it was started (default).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a started cluster may take to reach its full membership (default).
pub const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(30);
/// Worker slots per node (default).
pub const SLOTS: u32 = 4;
/// The timeout of the harness's own status polls: a stopped node must not
/// stall them.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Lines of each log printed when a test fails.
const TAIL_LINES: usize = 60;

/// Where a node's data directory and log file go.
#[derive(Debug, Clone, Default)]
pub enum Dirs {
    /// A new temporary directory per node (`skein-node<id>-XXXX/` under the
    /// system's temp dir) holding `data/` and `node.log`; removed with the
    /// cluster unless [`Spec::keep_dirs`], or a test failed with
    /// `SKEIN_TEST_KEEP` set.
    #[default]
    Temp,
    /// `<root>/node<id>/` holding `data/` and `node.log`; `root` is made if
    /// missing and removed with the cluster unless [`Spec::keep_dirs`].
    Under(PathBuf),
    /// `<root>/node<id>/` as the data directory and `<root>/node<id>.log`
    /// (the layout of `skein demo`); nothing is removed.
    Flat(PathBuf),
}

/// Ids from here on are the workers a test starts ([`Cluster::add_worker`]).
pub const WORKER_IDS: u64 = 100;

/// How to start a [`Cluster`]; [`Spec::new`] gives the tests' defaults.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Nodes `1..=nodes`.
    pub nodes: usize,
    /// Node id → (HTTP address, RPC address), fixed before any node starts
    /// (all of `1..=nodes`, or none: free ports are picked per node, and a
    /// port someone else took in between means another try).
    pub addrs: BTreeMap<u64, (String, String)>,
    /// Voters the cluster aims for. `Some(v)`: every node `1..=nodes` gets
    /// `--voters v`; `None`: no flag, the node's default of 3.
    pub voters: Option<usize>,
    /// `--slots` of every node.
    pub slots: u32,
    /// Flags every node gets on every start (restarts and added nodes too).
    pub args: Vec<String>,
    /// Node id → flags added on every start of that node.
    pub node_args: BTreeMap<u64, Vec<String>>,
    /// Extra environment of every node process.
    pub env: Vec<(String, String)>,
    /// The binaries; `None`: [`Binaries::locate`].
    pub bins: Option<Binaries>,
    /// The `skein-node` binary nodes `1..=nodes` start with, when not
    /// `bins.node` (e.g. an older release's, to upgrade).
    pub node_bin: Option<PathBuf>,
    pub dirs: Dirs,
    /// Keep the directories when the cluster goes.
    pub keep_dirs: bool,
    /// Leave the nodes running when the cluster is dropped.
    pub keep_running: bool,
    /// How long each node may take to be ready when it starts.
    pub ready_timeout: Duration,
    /// How long the started cluster may take to reach its membership.
    pub membership_timeout: Duration,
    /// The timeout of each request of [`Cluster::api`].
    pub request_timeout: Duration,
    /// The pause between two checks when the harness waits.
    pub poll: Duration,
    /// The cluster's CA (`ca.pem`) when the nodes serve HTTPS (`--tls-dir`):
    /// the harness's clients then speak HTTPS and trust only it.
    pub ca: Option<PathBuf>,
    /// Whether the started cluster enforces its exec allow list and data
    /// roots (a new cluster's default). `false` (the harness's default):
    /// the harness sets the policy to `open` once the cluster is up, so that
    /// tests of other things run any program on any path, as an upgraded
    /// cluster does; tests of the policy set it `true`.
    pub enforce_policy: bool,
    /// Start every node at once with `--bootstrap-expect <nodes>` and
    /// `--join` naming all of them (needs fixed addresses: [`Spec::free`]),
    /// instead of bootstrapping node 1 and joining the others to it.
    pub bootstrap_expect: bool,
}

impl Spec {
    /// `n` nodes on free ports in temporary directories, `--slots 4`, the
    /// binaries next to this executable, 30 s to be ready, 15 s per request.
    pub fn new(n: usize) -> Spec {
        Spec {
            nodes: n,
            addrs: BTreeMap::new(),
            voters: None,
            slots: SLOTS,
            args: Vec::new(),
            node_args: BTreeMap::new(),
            env: Vec::new(),
            bins: None,
            node_bin: None,
            dirs: Dirs::Temp,
            keep_dirs: false,
            keep_running: false,
            ready_timeout: READY_TIMEOUT,
            membership_timeout: MEMBERSHIP_TIMEOUT,
            request_timeout: REQUEST_TIMEOUT,
            poll: POLL,
            ca: None,
            enforce_policy: false,
            bootstrap_expect: false,
        }
    }

    /// [`Spec::new`] with addresses fixed now, on free loopback ports, so
    /// that each node's flags can name the others' (the chaos harness routes
    /// every link through a proxy), and `--voters 3`.
    pub fn free(n: usize) -> anyhow::Result<Spec> {
        let mut addrs = BTreeMap::new();
        for id in 1..=n as u64 {
            addrs.insert(id, (format!("127.0.0.1:{}", free_port()?), format!("127.0.0.1:{}", free_port()?)));
        }
        Ok(Spec { addrs, voters: Some(3), ..Spec::new(n) })
    }

    /// Starts the cluster; see [`Cluster::start_spec`].
    pub async fn start(self) -> anyhow::Result<Cluster> {
        Cluster::start_spec(self).await
    }
}

/// One node: its addresses, its files and its process (if running).
#[derive(Debug)]
pub struct Node {
    pub id: u64,
    /// The HTTP API, `127.0.0.1:port`.
    pub http: String,
    /// Raft and node-to-node RPCs, `127.0.0.1:port`.
    pub rpc: String,
    data: PathBuf,
    log: PathBuf,
    /// The node's own directory when it is a temporary one.
    temp: Option<TempDir>,
    /// `None` once the harness killed it or saw it exit.
    process: Option<Process>,
}

impl Node {
    pub fn data_dir(&self) -> PathBuf {
        self.data.clone()
    }

    pub fn log_path(&self) -> PathBuf {
        self.log.clone()
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }
}

/// A cluster of `skein-node` processes; see the module docs.
pub struct Cluster {
    /// For the caller's own calls ([`Spec::request_timeout`] per request).
    pub api: Api,
    /// For status polls: a stopped node must not stall them.
    probe: Api,
    bins: Binaries,
    nodes: BTreeMap<u64, Node>,
    spec: Spec,
    /// Node id → the `skein-node` binary it starts with, when not
    /// `bins.node` (see [`Cluster::set_node_binary`]).
    node_bins: BTreeMap<u64, PathBuf>,
}

impl Cluster {
    /// Starts `n` nodes on free ports with the defaults of [`Spec::new`];
    /// returns once every node is ready and the leader sees all `n` as
    /// members, `min(n, 3)` of them voters. On failure every started node is
    /// killed and the error carries their log tails.
    pub async fn start(n: usize) -> anyhow::Result<Cluster> {
        Cluster::start_with_env(n, Vec::new()).await
    }

    /// [`Cluster::start`], every node started with these extra environment
    /// variables (restarts and added nodes too).
    pub async fn start_with_env(n: usize, env: Vec<(String, String)>) -> anyhow::Result<Cluster> {
        ensure!(n >= 1, "a cluster needs at least one node");
        crate::say(format!("starting a cluster of {n} nodes"));
        Cluster::start_spec(Spec { env, ..Spec::new(n) }).await
    }

    /// Starts a cluster whose addresses are fixed ([`Spec::free`]), saying so.
    pub async fn start_layout(spec: Spec) -> anyhow::Result<Cluster> {
        ensure!(!spec.addrs.is_empty(), "a layout fixes the nodes' addresses");
        let voters = spec.voters.unwrap_or(3);
        crate::say(format!("starting a cluster of {} nodes ({voters} voters) on fixed addresses", spec.nodes));
        Cluster::start_spec(spec).await
    }

    /// Starts nodes `1..=spec.nodes` (node 1 with `--bootstrap`, the others
    /// `--join <node 1>`, each waited for until it is ready); returns once
    /// the leader sees them all as members, `min(n, voters)` of them voters.
    /// On failure every started node is killed (unless
    /// [`Spec::keep_running`]) and the error carries their log tails.
    pub async fn start_spec(mut spec: Spec) -> anyhow::Result<Cluster> {
        let n = spec.nodes;
        ensure!(n >= 1, "a cluster needs at least one node");
        ensure!(
            spec.addrs.is_empty() || spec.addrs.keys().copied().eq(1..=n as u64),
            "fixed addresses must be those of nodes 1..={n}"
        );
        if let Some(v) = spec.voters {
            for id in 1..=n as u64 {
                spec.node_args.entry(id).or_default().extend(["--voters".to_string(), v.to_string()]);
            }
        }
        if let Dirs::Under(root) | Dirs::Flat(root) = &spec.dirs {
            std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        }
        let bins = match spec.bins.clone() {
            Some(b) => b,
            None => Binaries::locate()?,
        };
        let node_bins = match &spec.node_bin {
            Some(bin) => (1..=n as u64).map(|id| (id, bin.clone())).collect(),
            None => BTreeMap::new(),
        };
        let (mut api, mut probe) = (Api::with_timeout(spec.request_timeout), Api::with_timeout(PROBE_TIMEOUT));
        if let Some(ca) = &spec.ca {
            api = api.with_ca(ca)?;
            probe = probe.with_ca(ca)?;
        }
        let mut c = Cluster { api, probe, bins, nodes: BTreeMap::new(), spec, node_bins };
        match c.start_nodes(n).await {
            Ok(()) => Ok(c),
            Err(e) => {
                Err(e.context(format!("starting a cluster of {n} nodes; their logs end with:\n{}", c.log_tails(30))))
            }
        }
    }

    async fn start_nodes(&mut self, n: usize) -> anyhow::Result<()> {
        if self.spec.bootstrap_expect {
            ensure!(!self.spec.addrs.is_empty(), "--bootstrap-expect needs fixed addresses (Spec::free)");
            let all: Vec<String> = self.spec.addrs.values().map(|(http, _)| http.clone()).collect();
            for id in 1..=n as u64 {
                let (data, log, temp) = self.node_files(id)?;
                let (http, rpc) = self.spec.addrs[&id].clone();
                self.nodes.insert(id, Node { id, http, rpc, data, log, temp, process: None });
                let flags = ["--bootstrap-expect".to_string(), n.to_string(), "--join".into(), all.join(",")];
                self.node_args_push(id, &flags);
                self.spawn(id, &[])?;
            }
            for id in 1..=n as u64 {
                self.wait_ready(id, self.spec.ready_timeout).await?;
            }
        } else {
            self.launch_new(1, vec!["--bootstrap".into()], self.spec.ready_timeout).await?;
            let first = self.addr(1);
            for id in 2..=n as u64 {
                self.launch_new(id, vec!["--join".into(), first.clone()], self.spec.ready_timeout).await?;
            }
        }
        let ids: Vec<u64> = (1..=n as u64).collect();
        let voters = n.min(self.spec.voters.unwrap_or(3));
        self.wait_members(&ids, voters, self.spec.membership_timeout).await?;
        // Only a node of this release knows the policy (an older one's
        // cluster has none to open).
        if !self.spec.enforce_policy && self.spec.node_bin.is_none() {
            let body = serde_json::json!({"mode": "open"}).to_string().into_bytes();
            // Until the bootstrap's first entry (the admin token, then
            // enforced auth) is applied, the token is not known yet: 401.
            let deadline = Instant::now() + Duration::from_secs(15);
            let mut reply =
                self.api.raw(reqwest::Method::POST, &self.addr(1), "/api/v1/policy", Some(body.clone())).await?;
            while reply.status == reqwest::StatusCode::UNAUTHORIZED && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
                reply =
                    self.api.raw(reqwest::Method::POST, &self.addr(1), "/api/v1/policy", Some(body.clone())).await?;
            }
            // 409 needs_format: a cluster below format 4 enforces no policy.
            ensure!(
                reply.status.is_success() || reply.status == reqwest::StatusCode::CONFLICT,
                "opening the policy answered {}: {}",
                reply.status,
                reply.body
            );
        }
        Ok(())
    }

    /// `POST /api/v1/policy`: `enforce` or `open`.
    pub async fn set_policy(&self, mode: &str) -> anyhow::Result<()> {
        let _: serde_json::Value = self
            .api
            .call(reqwest::Method::POST, &self.addr(1), "/api/v1/policy", Some(&serde_json::json!({"mode": mode})))
            .await?;
        Ok(())
    }

    /// The binaries in use (to start a process of one's own).
    pub fn bins(&self) -> &Binaries {
        &self.bins
    }

    /// A client with short timeouts, for status polls of one's own.
    pub fn probe(&self) -> &Api {
        &self.probe
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

    /// Every node's log file.
    pub fn log_paths(&self) -> Vec<PathBuf> {
        self.nodes.values().map(Node::log_path).collect()
    }

    /// A new node's files, emptied if an earlier node left some there.
    fn node_files(&self, id: u64) -> anyhow::Result<(PathBuf, PathBuf, Option<TempDir>)> {
        let fresh = |dir: &Path| -> anyhow::Result<()> {
            if dir.exists() {
                std::fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
            }
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
        };
        Ok(match &self.spec.dirs {
            Dirs::Temp => {
                let dir = tempfile::Builder::new()
                    .prefix(&format!("skein-node{id}-"))
                    .tempdir()
                    .context("creating a node directory")?;
                (dir.path().join("data"), dir.path().join("node.log"), Some(dir))
            }
            Dirs::Under(root) => {
                let dir = root.join(format!("node{id}"));
                fresh(&dir)?;
                (dir.join("data"), dir.join("node.log"), None)
            }
            Dirs::Flat(root) => {
                let data = root.join(format!("node{id}"));
                fresh(&data)?;
                (data, root.join(format!("node{id}.log")), None)
            }
        })
    }

    /// Creates node `id` with fresh ports and files and starts it with
    /// `extra` flags; waits until it is ready. A port taken by someone else
    /// between our probe and the node's bind means another try on new ports.
    async fn launch_new(&mut self, id: u64, extra: Vec<String>, ready_timeout: Duration) -> anyhow::Result<()> {
        let mut attempt = 1;
        loop {
            let (data, log, temp) = self.node_files(id)?;
            let fixed = self.spec.addrs.get(&id).cloned();
            let (http, rpc) = match &fixed {
                Some(a) => a.clone(),
                None => (format!("127.0.0.1:{}", free_port()?), format!("127.0.0.1:{}", free_port()?)),
            };
            let node = Node { id, http, rpc, data, log, temp, process: None };
            self.nodes.insert(id, node);
            self.spawn(id, &extra)?;
            match self.wait_ready(id, ready_timeout).await {
                Ok(_) => return Ok(()),
                Err(e)
                    if fixed.is_none() && attempt < 3 && log_tail(&self.node(id).log_path(), 20).contains("in use") =>
                {
                    eprintln!("harness: node {id} could not bind its ports ({e:#}); trying others");
                    // Dropping the node kills its process if it still runs.
                    self.nodes.remove(&id);
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Starts node `id`'s process on its ports and data directory.
    fn spawn(&mut self, id: u64, extra: &[String]) -> anyhow::Result<()> {
        let spec = &self.spec;
        let bin = self.node_bins.get(&id).unwrap_or(&self.bins.node);
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
            node.data.display().to_string(),
        ];
        let mut more: Vec<String> = spec.args.clone();
        more.extend(spec.node_args.get(&id).into_iter().flatten().cloned());
        more.extend(extra.iter().cloned());
        // Flags given for this node win over the harness's defaults.
        if !more.iter().any(|a| a == "--slots") {
            args.extend(["--slots".to_string(), spec.slots.to_string()]);
        }
        // The harness's nodes are members unless a test says otherwise
        // (`--role auto` would make a 5th node a worker); older releases
        // (upgrade tests) know no roles.
        if !more.iter().any(|a| a == "--role") && *bin == self.bins.node {
            args.extend(["--role".to_string(), "member".to_string()]);
        }
        args.extend(more.iter().cloned());
        // The cluster's first admin token is this process's (see `crate::auth`).
        // Older releases (upgrade tests) have no tokens and no such flag.
        if more.iter().any(|a| a == "--bootstrap" || a == "--bootstrap-expect") && *bin == self.bins.node {
            let file = PathBuf::from(format!("{}.admin-token", node.data.display()));
            std::fs::write(&file, crate::auth::admin_token()).with_context(|| format!("writing {}", file.display()))?;
            args.extend(["--admin-token-file".to_string(), file.display().to_string()]);
        }
        let mut env = spec.env.clone();
        env.push(("SKEIN_TOKEN".into(), crate::auth::admin_token().into()));
        let mut process = Process::spawn_with_env(bin, &args, &node.log, &env)?;
        if spec.keep_running {
            process.detach();
        }
        node.process = Some(process);
        Ok(())
    }

    /// Waits until node `id` answers `/readyz` with 200; how long that took.
    /// Fails at once if its process exits.
    pub async fn wait_ready(&mut self, id: u64, timeout: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let probe = self.probe.clone();
        let poll = self.spec.poll;
        let node = self.nodes.get_mut(&id).with_context(|| format!("no node {id}"))?;
        let addr = node.http.clone();
        let log = node.log.clone();
        let outcome = wait_for_every(timeout, poll, &format!("node {id} ({addr}) to be ready"), async || {
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
        Ok(started.elapsed())
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
        wait_for_every(timeout, self.spec.poll, "a leader", async || Ok(Some(self.leader().await?))).await
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
        self.wait_until_status(timeout, &what, |s| {
            let have: BTreeSet<u64> = s.nodes.iter().map(|n| n.id).collect();
            have == want && voter_count(s) == voters
        })
        .await
    }

    /// Waits until node `id` has applied at least `index`; how long it took.
    pub async fn wait_applied(&self, id: u64, index: u64, timeout: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let addr = self.addr(id);
        wait_for_every(timeout, self.spec.poll, &format!("node {id} to apply index {index}"), async || {
            Ok((self.probe.cluster(&addr).await?.applied_index.unwrap_or(0) >= index).then_some(()))
        })
        .await?;
        Ok(started.elapsed())
    }

    /// SIGKILL node `id` (and reap it).
    pub fn kill9(&mut self, id: u64) -> anyhow::Result<()> {
        let node = self.nodes.get_mut(&id).with_context(|| format!("no node {id}"))?;
        let mut p = node.process.take().with_context(|| format!("node {id} is not running"))?;
        p.kill9()?;
        Ok(())
    }

    /// SIGTERM node `id`: it drains, hands leadership over if it leads, and
    /// exits; see [`Cluster::wait_exit`].
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
        let poll = self.spec.poll;
        let node = self.nodes.get_mut(&id).with_context(|| format!("no node {id}"))?;
        let p = node.process.as_mut().with_context(|| format!("node {id} is not running"))?;
        let status = p.wait_exit_every(timeout, poll).await.with_context(|| format!("node {id}"))?;
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
        self.spec.node_args.insert(id, args);
    }

    /// Replaces the `skein-node` binary node `id` starts with from its next
    /// start on: stop it, set this, [`Cluster::restart`] it, and it runs
    /// another release on the same data directory (an upgrade or a
    /// downgrade).
    pub fn set_node_binary(&mut self, id: u64, bin: PathBuf) {
        self.node_bins.insert(id, bin);
    }

    /// The `skein-node` binary node `id` starts with.
    pub fn node_binary(&self, id: u64) -> &Path {
        self.node_bins.get(&id).unwrap_or(&self.bins.node)
    }

    /// Starts a new node that joins through the leader; waits until it is
    /// ready and a member. Its id is one above the highest so far.
    pub async fn add_node(&mut self) -> anyhow::Result<u64> {
        self.add_node_within(self.spec.ready_timeout).await
    }

    /// [`Cluster::add_node`], the new node given `ready_timeout` to be
    /// ready (a node that must first catch up with a large state).
    pub async fn add_node_within(&mut self, ready_timeout: Duration) -> anyhow::Result<u64> {
        let id = self.nodes.keys().max().map_or(1, |m| m + 1);
        let via = self.leader().await.context("finding a node to join through")?;
        self.launch_new(id, vec!["--join".into(), self.addr(via)], ready_timeout).await?;
        self.wait_until_status(self.spec.membership_timeout, &format!("node {id} in the membership"), |s| {
            s.nodes.iter().any(|n| n.id == id)
        })
        .await?;
        Ok(id)
    }

    /// Adds `flags` to what node `id` gets on every start.
    fn node_args_push(&mut self, id: u64, flags: &[String]) {
        self.spec.node_args.entry(id).or_default().extend(flags.iter().cloned());
    }

    /// Starts worker node `id` (`--role worker`, not a Raft member) with
    /// `extra` flags, registering through every member; waits until it is
    /// ready (a leader answered it).
    pub async fn add_worker(&mut self, id: u64, extra: &[&str]) -> anyhow::Result<()> {
        let members: Vec<String> =
            self.live_ids().into_iter().filter(|m| *m < WORKER_IDS).map(|m| self.addr(m)).collect();
        let mut flags = vec!["--role".to_string(), "worker".into(), "--join".into(), members.join(",")];
        flags.extend(extra.iter().map(|s| s.to_string()));
        self.launch_new(id, flags, self.spec.ready_timeout).await
    }

    /// Starts node `id` with `--role <role>` (`worker`, or `auto` to let
    /// the node decide from the cluster's membership) and `--join` naming
    /// every live member (ids below [`WORKER_IDS`]), plus `extra`; waits
    /// until it is ready. Unlike [`Cluster::add_worker`], these flags are
    /// kept: [`Cluster::restart`] starts the node the same way again (the
    /// chaos nemesis kills and restarts workers).
    pub async fn add_joining(&mut self, id: u64, role: &str, extra: &[&str]) -> anyhow::Result<()> {
        let members: Vec<String> =
            self.live_ids().into_iter().filter(|m| *m < WORKER_IDS).map(|m| self.addr(m)).collect();
        let mut flags = vec!["--role".to_string(), role.into(), "--join".into(), members.join(",")];
        flags.extend(extra.iter().map(|s| s.to_string()));
        self.node_args_push(id, &flags);
        self.launch_new(id, Vec::new(), self.spec.ready_timeout).await
    }

    /// Runs the `skein` CLI with `args` (at most 60 s).
    pub async fn cli(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        let mut cmd = tokio::process::Command::new(&self.bins.cli);
        cmd.args(args).env_remove("SKEIN_ADDR").env("SKEIN_TOKEN", crate::auth::admin_token()).kill_on_drop(true);
        tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .with_context(|| format!("skein {} did not finish within 60 s", args.join(" ")))?
            .with_context(|| format!("running {} {}", self.bins.cli.display(), args.join(" ")))
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
                node.log.display(),
                log_tail(&node.log, lines)
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

    /// Kills every node (unless [`Spec::keep_running`]) and removes the
    /// directories (unless [`Spec::keep_dirs`]): what dropping it does.
    pub fn stop(self) {
        drop(self);
    }

    async fn wait_until_status(
        &self,
        timeout: Duration,
        what: &str,
        mut ok: impl FnMut(&ClusterStatus) -> bool,
    ) -> anyhow::Result<()> {
        wait_for_every(timeout, self.spec.poll, what, async || {
            let s = self.status().await?;
            if ok(&s) {
                Ok(Some(()))
            } else {
                let nodes: Vec<String> = s.nodes.iter().map(|n| format!("{}:{}", n.id, n.role)).collect();
                bail!("the leader sees {}", nodes.join(", "))
            }
        })
        .await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let keep_running = self.spec.keep_running;
        // Kill first, so the logs we print are complete.
        if !keep_running {
            for node in self.nodes.values_mut() {
                if let Some(mut p) = node.process.take() {
                    let _ = p.kill9();
                }
            }
        }
        let panicking = std::thread::panicking();
        // A node's directory is some 70 MB (RocksDB): kept only on request.
        let asked = panicking && std::env::var_os("SKEIN_TEST_KEEP").is_some();
        let keep = self.spec.keep_dirs || keep_running || asked;
        for node in self.nodes.values_mut() {
            if let Some(dir) = node.temp.as_mut() {
                dir.disable_cleanup(keep);
            }
        }
        if panicking {
            let kept = if keep { "directories kept" } else { "set SKEIN_TEST_KEEP=1 to keep the directories" };
            eprintln!("==== the test failed; the end of each node's log ({kept}):");
            eprintln!("{}", self.log_tails(TAIL_LINES));
        }
        if let (Dirs::Under(root), false) = (&self.spec.dirs, keep) {
            let _ = std::fs::remove_dir_all(root);
        }
    }
}

/// How many voters (the leader included) a status lists.
pub fn voter_count(s: &ClusterStatus) -> usize {
    s.nodes.iter().filter(|n| n.role == "leader" || n.role == "voter").count()
}

impl Spec {
    /// The same cluster with mutual TLS and HTTPS: a CA made in `dir/ca`,
    /// a certificate for each node `1..=nodes + spare` (spares for nodes
    /// added later) in `dir/node-<id>`, given as `--tls-dir`, and the
    /// harness's clients trusting that CA.
    pub fn with_tls(mut self, dir: &Path, spare: usize) -> anyhow::Result<Spec> {
        skein_tls::install_provider();
        let ca = dir.join("ca");
        skein_tls::issue::make_ca(&ca).context("making the test CA")?;
        let hosts = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        for id in 1..=(self.nodes + spare) as u64 {
            let out = dir.join(format!("node-{id}"));
            skein_tls::issue::issue_node(&ca, id, "member", &hosts, &out)
                .with_context(|| format!("issuing node {id}'s certificate"))?;
            self.node_args.entry(id).or_default().extend(["--tls-dir".to_string(), out.display().to_string()]);
        }
        self.ca = Some(ca.join("ca.pem"));
        Ok(self)
    }
}
