//! [`SkeinCluster`]: real `skein-node` processes on loopback, started the
//! way the README says (the first with `--bootstrap`, the others `--join`),
//! each with free ports and its own directory under the bench's work
//! directory. Dropping the cluster kills its nodes.
//!
//! (skein-tests has a cluster harness too; the bench keeps its own small
//! one because it sets slots per run, logs in JSON for the latency
//! timestamps, and reads memory and disk figures of each node.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use skein_raft::api::ClusterStatus;

use crate::client::Api;
use crate::procs::{self, Child, Memory};

pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Flags added to every node's command line (`--node-arg`).
static NODE_ARGS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

pub fn set_node_args(args: Vec<String>) {
    let _ = NODE_ARGS.set(args);
}

/// One node: its addresses, its directory and its process.
#[derive(Debug)]
pub struct Node {
    pub id: u64,
    pub http: String,
    pub rpc: String,
    pub dir: PathBuf,
    pub process: Option<Child>,
}

impl Node {
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("node.log")
    }
}

pub struct SkeinCluster {
    pub api: Api,
    /// Short timeouts, for status polls that must not stall on a dead node.
    pub probe: Api,
    bin: PathBuf,
    root: PathBuf,
    slots: u32,
    pub nodes: BTreeMap<u64, Node>,
}

impl SkeinCluster {
    /// Starts `n` nodes with `slots` worker slots each, in a fresh directory
    /// under `root`; returns once every node is ready and the leader sees all
    /// of them, `min(n, 3)` voters.
    pub async fn start(bin: &Path, root: &Path, name: &str, n: usize, slots: u32) -> anyhow::Result<SkeinCluster> {
        let root = root.join(name);
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        let mut c = SkeinCluster {
            api: Api::new(Duration::from_secs(30)),
            probe: Api::new(Duration::from_secs(2)),
            bin: bin.to_path_buf(),
            root,
            slots,
            nodes: BTreeMap::new(),
        };
        let started = async {
            c.launch_new(1, vec!["--bootstrap".into()], READY_TIMEOUT).await?;
            let first = c.addr(1);
            for id in 2..=n as u64 {
                c.launch_new(id, vec!["--join".into(), first.clone()], READY_TIMEOUT).await?;
            }
            c.wait_members(n, n.min(3), Duration::from_secs(60)).await
        }
        .await;
        match started {
            Ok(()) => Ok(c),
            Err(e) => Err(e.context(format!("starting {n} skein nodes; their logs end with:\n{}", c.log_tails(15)))),
        }
    }

    pub fn addr(&self, id: u64) -> String {
        self.nodes.get(&id).map(|n| n.http.clone()).unwrap_or_default()
    }

    pub fn live_ids(&self) -> Vec<u64> {
        self.nodes.values().filter(|n| n.process.is_some()).map(|n| n.id).collect()
    }

    pub fn live_addrs(&self) -> Vec<String> {
        self.live_ids().into_iter().map(|id| self.addr(id)).collect()
    }

    async fn launch_new(&mut self, id: u64, extra: Vec<String>, ready_timeout: Duration) -> anyhow::Result<()> {
        for attempt in 1..=3 {
            let dir = self.root.join(format!("node{id}"));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let node = Node {
                id,
                http: format!("127.0.0.1:{}", procs::free_port()?),
                rpc: format!("127.0.0.1:{}", procs::free_port()?),
                dir,
                process: None,
            };
            self.nodes.insert(id, node);
            self.spawn(id, &extra)?;
            match self.wait_ready(id, ready_timeout).await {
                Ok(_) => return Ok(()),
                Err(e) if attempt < 3 && procs::log_tail(&self.nodes[&id].log_path(), 20).contains("in use") => {
                    eprintln!("bench: node {id} could not bind its ports ({e:#}); trying others");
                    if let Some(mut p) = self.nodes.get_mut(&id).and_then(|n| n.process.take()) {
                        p.kill9();
                    }
                }
                Err(e) => return Err(e),
            }
        }
        bail!("node {id} could not bind free ports three times")
    }

    fn spawn(&mut self, id: u64, extra: &[String]) -> anyhow::Result<()> {
        let slots = self.slots;
        let node = self.nodes.get_mut(&id).with_context(|| format!("no node {id}"))?;
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
            slots.to_string(),
            "--log-format".into(),
            "json".into(),
        ];
        args.extend(extra.iter().cloned());
        args.extend(NODE_ARGS.get().into_iter().flatten().cloned());
        node.process = Some(Child::spawn(&self.bin, &args, &node.log_path())?);
        Ok(())
    }

    /// Waits until node `id` answers `/readyz`; how long that took.
    pub async fn wait_ready(&mut self, id: u64, timeout: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let probe = self.probe.clone();
        let node = self.nodes.get_mut(&id).with_context(|| format!("no node {id}"))?;
        loop {
            let Some(p) = node.process.as_mut() else { bail!("node {id} is not running") };
            if !p.is_running() {
                node.process = None;
                bail!("node {id} exited; its log ends with:\n{}", procs::log_tail(&node.log_path(), 20));
            }
            if probe.ready(&node.http).await {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                bail!(
                    "node {id} not ready after {timeout:?}; its log ends with:\n{}",
                    procs::log_tail(&node.log_path(), 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The leader as a live node reports it and the leader confirms.
    pub async fn leader(&self) -> anyhow::Result<u64> {
        let mut seen = Vec::new();
        for id in self.live_ids() {
            match self.probe.cluster(&self.addr(id)).await {
                Ok(ClusterStatus { leader: Some(l), .. })
                    if self.nodes.get(&l).is_some_and(|n| n.process.is_some()) =>
                {
                    match self.probe.cluster(&self.addr(l)).await {
                        Ok(s) if s.leader == Some(l) => return Ok(l),
                        Ok(s) => seen.push(format!("node {id} names {l}, which names {:?}", s.leader)),
                        Err(e) => seen.push(format!("node {id} names {l}, which does not answer: {e:#}")),
                    }
                }
                Ok(s) => seen.push(format!("node {id}: leader {:?}", s.leader)),
                Err(e) => seen.push(format!("node {id}: {e:#}")),
            }
        }
        bail!("no leader confirmed: {}", seen.join("; "))
    }

    pub async fn wait_leader(&self, timeout: Duration) -> anyhow::Result<u64> {
        let start = Instant::now();
        loop {
            match self.leader().await {
                Ok(l) => return Ok(l),
                Err(e) if start.elapsed() > timeout => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    /// The cluster as the leader sees it.
    pub async fn status(&self) -> anyhow::Result<ClusterStatus> {
        let l = self.leader().await?;
        self.probe.cluster(&self.addr(l)).await
    }

    /// Waits until the leader sees `n` members, `voters` of them voters.
    pub async fn wait_members(&self, n: usize, voters: usize, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < timeout {
            match self.status().await {
                Ok(s) => {
                    let v = s.nodes.iter().filter(|x| x.role == "leader" || x.role == "voter").count();
                    if s.nodes.len() == n && v == voters {
                        return Ok(());
                    }
                    last = format!("{} members, {v} voters", s.nodes.len());
                }
                Err(e) => last = format!("{e:#}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the cluster did not reach {n} members with {voters} voters in {timeout:?} (last: {last})")
    }

    /// Waits until node `id` has applied at least `index`; how long it took.
    pub async fn wait_applied(&self, id: u64, index: u64, timeout: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        loop {
            if let Ok(s) = self.probe.cluster(&self.addr(id)).await {
                if s.applied_index.unwrap_or(0) >= index {
                    return Ok(start.elapsed());
                }
            }
            if start.elapsed() > timeout {
                bail!("node {id} did not apply index {index} within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn kill9(&mut self, id: u64) {
        if let Some(mut p) = self.nodes.get_mut(&id).and_then(|n| n.process.take()) {
            p.kill9();
        }
    }

    /// SIGTERM node `id`: a planned stop (it drains, hands leadership over
    /// if it leads, and exits); see [`SkeinCluster::wait_exit`].
    pub fn term(&self, id: u64) -> anyhow::Result<()> {
        let node = self.nodes.get(&id).with_context(|| format!("no node {id}"))?;
        node.process.as_ref().with_context(|| format!("node {id} is not running"))?.term()
    }

    /// Waits until node `id` has exited by itself (after [`SkeinCluster::term`]).
    pub async fn wait_exit(&mut self, id: u64, timeout: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let node = self.nodes.get_mut(&id).with_context(|| format!("no node {id}"))?;
        loop {
            if !node.process.as_mut().is_some_and(Child::is_running) {
                node.process = None;
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                bail!("node {id} still runs {timeout:?} after it was told to stop");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Starts node `id` again on its ports and data directory.
    pub fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        self.spawn(id, &[])
    }

    /// Starts a new node that joins through the leader; returns its id once
    /// it answers `/readyz` (it has applied something), within `timeout`.
    pub async fn add_node(&mut self, timeout: Duration) -> anyhow::Result<u64> {
        let id = self.nodes.keys().max().map_or(1, |m| m + 1);
        let via = self.addr(self.leader().await?);
        self.launch_new(id, vec!["--join".into(), via], timeout).await?;
        Ok(id)
    }

    pub fn memory(&self, id: u64) -> Option<Memory> {
        self.nodes.get(&id)?.process.as_ref()?.memory()
    }

    pub fn disk_bytes(&self, id: u64) -> u64 {
        self.nodes.get(&id).map_or(0, |n| procs::disk_bytes(&n.data_dir()))
    }

    pub fn log_paths(&self) -> Vec<PathBuf> {
        self.nodes.values().map(Node::log_path).collect()
    }

    pub fn log_tails(&self, lines: usize) -> String {
        self.nodes
            .values()
            .map(|n| {
                format!("---- node {} ({}):\n{}\n", n.id, n.log_path().display(), procs::log_tail(&n.log_path(), lines))
            })
            .collect()
    }

    /// Kills every node and removes the cluster's directory.
    pub fn stop(mut self) {
        for n in self.nodes.values_mut() {
            if let Some(mut p) = n.process.take() {
                p.kill9();
            }
        }
        if !crate::keep_dirs() {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}
