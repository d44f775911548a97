//! skein-node: one member of a skein cluster.
//!
//! The flow of a request: HTTP API ([`http`]) → the leader, over RPC when
//! this node is a follower ([`app`], [`rpc`]) → the leader's batching
//! proposer ([`proposer`]) → Raft → the state machine on every node. Around
//! that:
//! - [`config`]: flags, `SKEIN_*` variables and the TOML file;
//! - [`leader`]: the leader's timed duties (lease expiry, garbage, promotions);
//! - [`worker`]: leasing, heartbeats, running tasks and reporting them;
//! - [`transform`]: what running a task of each kind means;
//! - [`dashboard`]: the web dashboard, its JSON, stuck tasks and `/metrics`
//!   ([`metrics`]);
//! - [`migration`]: the `migration` transform: a catalog plan run by `skein-migrate`;
//! - [`http`] also serves the plan catalog (`/api/v1/plans...`).
//!
//! [`run`] is what `main` calls, and what tests call in-process.

pub mod app;
pub mod config;
pub mod dashboard;
pub mod handover;
pub mod http;
pub mod journal;
pub mod leader;
pub mod metrics;
pub mod migration;
pub mod proposer;
pub mod rpc;
pub mod transform;
pub mod versions;
pub mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use skein_raft::config::{Raft, SkeinNode};
use skein_raft::fsm::Command;
use skein_transport::{CallError, LeaseRequest, Network, NodeError, Peers, PeersConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::app::App;
use crate::config::Config;
use crate::proposer::Proposer;
use crate::rpc::RpcHandler;
use crate::worker::Worker;

/// openraft's settings: quick failure detection (a leader silent for
/// 1.2-1.6 s is replaced: followers refuse votes for `election_timeout_max`
/// after the leader's last message, then wait an election timeout), snapshots every 10k entries so restart and
/// catch-up stay short, and bounded replication frames. openraft also uses
/// the heartbeat interval as the deadline of each append, fsync included.
fn raft_config() -> anyhow::Result<openraft::Config> {
    let config = openraft::Config {
        cluster_name: "skein".into(),
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 800,
        install_snapshot_timeout: 10_000,
        // With entries of up to ~1 MiB (the proposer's bound), an append
        // carries at most ~8 MiB: it must finish, fsync included, within the
        // heartbeat interval even while a lagging node catches up, or the
        // append times out, is sent again, and followers call elections
        // (seen in the depth benchmark with 64 entries of 2 MiB).
        max_payload_entries: 8,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(10_000),
        max_in_snapshot_log_to_keep: 1_000,
        ..Default::default()
    };
    config.validate().context("raft config")
}

/// Runs a node until `shutdown` is cancelled (SIGTERM, or a test), then
/// drains it: stop leasing, let running tasks finish for up to the drain
/// timeout, hand back the rest, hand leadership over if it leads
/// ([`handover`]), shut Raft down, close the database.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    // A restore first: it checks the backup before it creates anything.
    if let Some(backup) = &config.restore {
        let report = skein_raft::store::restore(&config.data_dir, backup)
            .with_context(|| format!("restoring {} into {}", backup.display(), config.data_dir.display()))?;
        info!(
            backup = %backup.display(),
            tasks = report.tasks,
            epoch = report.epoch.epoch,
            released = report.epoch.released.len(),
            backed_up_at = ?report.from,
            "restored a backup: starting a new cluster from it"
        );
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let (log_store, sm_store) = skein_raft::store::open(&config.data_dir)
        .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;
    let store = sm_store.handle();
    let rpc_listener =
        TcpListener::bind(config.listen).await.with_context(|| format!("listening for RPCs on {}", config.listen))?;
    let http_listener =
        TcpListener::bind(config.http).await.with_context(|| format!("listening for HTTP on {}", config.http))?;

    let peers = Peers::new(PeersConfig { routes: config.routes.clone(), ..PeersConfig::default() });
    let network = Network::new(config.id, peers.clone());
    let raft =
        Raft::new(config.id, Arc::new(raft_config()?), network, log_store, sm_store).await.context("starting raft")?;

    // Servers and the proposer live until the very end of the shutdown.
    let node_stop = CancellationToken::new();
    let me = SkeinNode { rpc_addr: config.listen.to_string(), http_addr: config.http.to_string() };
    let proposer = Proposer::spawn(raft.clone(), node_stop.clone());
    let app = Arc::new(App {
        id: config.id,
        me: me.clone(),
        config: config.clone(),
        raft: raft.clone(),
        store,
        peers,
        proposer,
        metrics: Arc::new(metrics::Metrics::new()),
        shutdown: shutdown.clone(),
        removed: std::sync::atomic::AtomicBool::new(false),
        versions: versions::MemberVersions::new(config.routes.clone()),
    });
    let rpc_task = tokio::spawn(skein_transport::serve(
        rpc_listener,
        Arc::new(RpcHandler(app.clone())),
        node_stop.clone().cancelled_owned(),
    ));
    let http_task = tokio::spawn(http::serve(http_listener, app.clone(), node_stop.clone()));
    info!(node_id = config.id, rpc = %config.listen, http = %config.http, "node started");

    let already_member = raft.metrics().borrow().membership_config.membership().get_node(&config.id).is_some();
    if config.bootstrap && !raft.is_initialized().await.context("reading raft state")? {
        info!(node_id = config.id, "bootstrapping a new cluster");
        // A restored directory not yet bootstrapped (this start, or one that
        // stopped before its bootstrap): its state is a snapshot with no log
        // position.
        let restored = app.store.snapshot_meta().is_some_and(|m| m.last_log_id.is_none());
        raft.initialize(BTreeMap::from([(config.id, me.clone())])).await.context("bootstrapping the cluster")?;
        if restored {
            seal_restored_state(&app).await.context("snapshotting the restored state")?;
        } else {
            start_at_newest_format(&app).await.context("setting the new cluster's stored format")?;
        }
    } else if let (Some(addr), false) = (&config.join, already_member) {
        if let Err(e) = join_cluster(addr, config.id, &me, &shutdown).await {
            node_stop.cancel();
            let _ = raft.shutdown().await;
            return Err(e);
        }
    } else if !already_member && !raft.is_initialized().await.unwrap_or(false) {
        warn!(
            node_id = config.id,
            "not a member of any cluster: start with --bootstrap or --join, or add it with POST /api/v1/cluster/join"
        );
    }

    tokio::spawn(leader::run(app.clone(), node_stop.clone()));
    tokio::spawn(versions::watch(app.clone(), node_stop.clone()));
    let stop_leasing = shutdown.child_token();
    let stop_worker = CancellationToken::new();
    let journal = match &config.journal {
        Some(path) => Some(journal::Journal::open(path, config.id)?),
        None => None,
    };
    let worker = Worker::spawn(app.clone(), journal, stop_leasing.clone(), stop_worker.clone());
    tokio::spawn(exit_when_removed(app.clone(), shutdown.clone()));
    tokio::spawn(probe_when_leaderless(app.clone(), shutdown.clone()));

    shutdown.cancelled().await;
    if app.is_removed() {
        // The removal handed our leases back and the leader refuses our
        // reports: what still runs is someone else's now. Stop it.
        info!(
            node_id = config.id,
            running = worker.running_count(),
            "removed: stopping running tasks without reporting them"
        );
        worker.abandon_all();
    } else {
        info!(node_id = config.id, running = worker.running_count(), "draining");
    }
    let deadline = tokio::time::Instant::now() + config.drain_timeout;
    while worker.running_count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if worker.running_count() > 0 {
        worker.abandon_all();
        match tokio::time::timeout(
            Duration::from_secs(3),
            app.write(Command::ReleaseNode { node: config.id, forget: false }),
        )
        .await
        {
            Ok(Ok(_)) => info!("handed back unfinished tasks"),
            _ => warn!("could not hand back unfinished tasks; their leases will expire"),
        }
    }
    stop_worker.cancel();
    // Right before Raft stops (a drain may take its 30 s leading), so the
    // write gap is the handover's alone.
    handover::at_shutdown(&app).await;
    if let Err(e) = raft.shutdown().await {
        warn!(error = %e, "raft shutdown");
    }
    node_stop.cancel();
    let _ = rpc_task.await;
    let _ = http_task.await;
    if app.is_removed() {
        info!(node_id = config.id, "stopped: this node was removed from the cluster");
    } else {
        info!(node_id = config.id, "stopped");
    }
    Ok(())
}

/// A restored state is in the node's snapshot, not in its log: a member that
/// joins would replay the log from its start and miss it. So, right after
/// the bootstrap, take a snapshot and purge the log up to it: every member
/// that joins then receives the snapshot first.
async fn seal_restored_state(app: &App) -> anyhow::Result<()> {
    let wait = |secs| app.raft.wait(Some(Duration::from_secs(secs)));
    wait(30).metrics(|m| m.last_applied.is_some(), "the bootstrap entry applied").await?;
    let applied = app.snapshot_now(Duration::from_secs(60)).await?.context("nothing applied after the bootstrap")?;
    app.raft.trigger().purge_log(applied.index).await?;
    wait(30).metrics(|m| m.purged.is_some_and(|p| p.index >= applied.index), "the log purged up to it").await?;
    info!(log_index = applied.index, "restored state snapshotted; members that join receive it");
    Ok(())
}

/// A new cluster has no older data and no older nodes: it starts at the
/// newest stored format this node writes (its first command), with no
/// finalize to run. (A cluster upgraded from 0.1.0 stays at format 1 until
/// `skein cluster finalize`; a restored one keeps its backup's format.)
async fn start_at_newest_format(app: &App) -> anyhow::Result<()> {
    if app.config.format <= skein_raft::format::FORMAT_0_1_0 {
        return Ok(());
    }
    app.raft
        .wait(Some(std::time::Duration::from_secs(30)))
        .metrics(|m| m.current_leader == Some(app.id), "leadership of the new cluster")
        .await?;
    Ok(app.raise_format(app.config.format).await?)
}

/// Asks a member at `addr` (HTTP) to add this node, retrying for a while:
/// the member may itself be starting.
async fn join_cluster(addr: &str, id: u64, me: &SkeinNode, shutdown: &CancellationToken) -> anyhow::Result<()> {
    let base = if addr.starts_with("http://") { addr.to_string() } else { format!("http://{addr}") };
    let url = format!("{}/api/v1/cluster/join", base.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(70))
        .build()
        .context("building HTTP client")?;
    let body = skein_raft::api::JoinBody { id, rpc_addr: me.rpc_addr.clone(), http_addr: me.http_addr.clone() };
    let mut last_error = String::new();
    for attempt in 1..=10 {
        if shutdown.is_cancelled() {
            bail!("shut down while joining");
        }
        match client.post(&url).json(&body).send().await {
            Ok(r) if r.status().is_success() => {
                info!(node_id = id, via = %addr, "joined the cluster as a learner");
                return Ok(());
            }
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                last_error = format!("{status}: {text}");
                if status.is_client_error() {
                    break;
                }
            }
            Err(e) => {
                last_error = if e.is_connect() {
                    "nothing answers there (connection refused or unreachable)".into()
                } else {
                    e.to_string()
                }
            }
        }
        warn!(node_id = id, attempt, error = %last_error, "join failed; retrying");
        tokio::time::sleep(Duration::from_millis(500 * attempt.min(4))).await;
    }
    bail!("could not join the cluster through {addr}: {last_error}")
}

/// A node removed from the membership has nothing left to do: it stops.
async fn exit_when_removed(app: Arc<App>, shutdown: CancellationToken) {
    let mut metrics = app.raft.metrics();
    let mut was_member = false;
    loop {
        let is_member = metrics.borrow().membership_config.membership().get_node(&app.id).is_some();
        if is_member {
            was_member = true;
        } else if was_member {
            app.note_removed("its membership no longer lists it");
            return;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = metrics.changed() => if r.is_err() { return },
        }
    }
}

/// How long a node goes without a leader before it asks its peers whether
/// it is still a member: several elections' worth (400-800 ms each).
const LEADERLESS_PROBE_AFTER: Duration = Duration::from_secs(3);

/// A node removed from the membership is no longer sent the log, so it may
/// never see its removal there: it sees the leader fall silent, campaigns
/// in vain and knows no leader to send its worker's calls to. So a node
/// without a leader for a while asks the members it knows of with a lease
/// probe (`max` 0, no wait: nothing is written). A follower answers with
/// its leader, which is asked in turn; the leader answers `Removed` if the
/// state machine has removed this node (committed state, so never a false
/// alarm), and anything else leaves the node running as it was.
async fn probe_when_leaderless(app: Arc<App>, shutdown: CancellationToken) {
    let mut leaderless_since: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if app.leader().is_some() {
            leaderless_since = None;
            continue;
        }
        let since = *leaderless_since.get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() < LEADERLESS_PROBE_AFTER {
            continue;
        }
        let members: Vec<SkeinNode> = {
            let m = app.raft.metrics();
            let m = m.borrow();
            m.membership_config.membership().nodes().filter(|(id, _)| **id != app.id).map(|(_, n)| n.clone()).collect()
        };
        let probe = LeaseRequest { node: app.id, queues: Vec::new(), max: 0, wait_ms: 0 };
        for member in members {
            let answer = app.peers.lease(&member.rpc_addr, probe.clone()).await;
            let answer = match answer {
                Err(CallError::Remote {
                    error: NodeError::NotLeader { leader_id: Some(leader), leader: Some(node) },
                    ..
                }) if leader != app.id => app.peers.lease(&node.rpc_addr, probe.clone()).await,
                other => other,
            };
            if let Err(CallError::Remote { error: NodeError::Removed(node), .. }) = answer {
                if node == app.id {
                    app.note_removed("the leader answered its probe: no leader had been heard of for a while");
                    return;
                }
            }
        }
    }
}
