//! skein-node: one member of a skein cluster.
//!
//! The folders are the layers of the node, and imports only go down
//! (ARCHITECTURE.md, "The node's layers"; `node/build.rs` checks it):
//!
//! - [`api`]: the HTTP API, the dashboard's routes and `/metrics`;
//! - [`worker`]: leasing, heartbeats, running tasks ([`worker::transform`])
//!   and reporting them;
//! - [`cluster`]: the shared context and the routing of a call to the
//!   leader, the batching proposer, the leader's duties, the node-to-node
//!   RPC answers, membership, versions and the leader handover;
//! - [`metrics`]: this node's counters and the OpenMetrics page;
//! - [`views`]: pure read models of the state (cluster status, status rows,
//!   stuck tasks) shared by the API, the dashboard and the metrics;
//! - [`config`] and [`clock`] at the bottom.
//!
//! [`run`] (here, at the top) starts them and stops them in order; it is what
//! `main` calls, and what tests call in-process.

pub mod api;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod metrics;
pub mod policy;
pub mod views;
pub mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use skein_raft::config::{Raft, SkeinNode};
use skein_raft::fsm::Command;
use skein_tls::token as tokens;
use skein_transport::{Network, Peers, PeersConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::cluster::app::App;
use crate::cluster::host::Host;
use crate::cluster::proposer::Proposer;
use crate::cluster::remote::{self, Remote};
use crate::cluster::rpc::RpcHandler;
use crate::cluster::{handover, leader, membership, version_watch, versions};
use crate::config::{Config, NodeRole};
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

/// The steps of a node's shutdown, in the order [`run`] takes them (a test
/// checks the order; the log shows each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Leasing stopped; running tasks get up to the drain timeout.
    Draining,
    /// Tasks still running were stopped and handed back (or none were left),
    /// and the worker's loops ended.
    WorkerStopped,
    /// A leader handed leadership over (a no-op on a follower).
    HandedOver,
    /// Raft stopped: no more votes, appends or applies.
    RaftStopped,
    /// The HTTP and RPC servers stopped accepting and closed their
    /// connections; the proposer and the background duties ended.
    ServersStopped,
    /// Every task the node started has ended (one `TaskTracker`).
    TasksEnded,
    /// The last handle on RocksDB was dropped: the database is closed.
    StoreClosed,
}

/// Runs a node until `shutdown` is cancelled (SIGTERM, or a test), then
/// stops it in the order of [`Stage`]. Returns only once every task it
/// started has ended and the database is closed.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    run_observed(config, shutdown, |stage| info!(?stage, "shutdown")).await
}

/// [`run`], telling `observe` each [`Stage`] of the shutdown as it is reached.
pub async fn run_observed(config: Config, shutdown: CancellationToken, observe: impl Fn(Stage)) -> anyhow::Result<()> {
    match decide_role(&config, &shutdown).await? {
        NodeRole::Worker => return run_worker(config, shutdown, observe).await,
        NodeRole::Member | NodeRole::Auto => {}
    }
    // `--bootstrap-expect` on a node without a store decides before it
    // opens one or answers any Raft call (see `membership::forget_old_identity`).
    let has_store = config.data_dir.join("db").join("CURRENT").exists();
    let expected = match config.bootstrap_expect {
        Some(n) if !has_store => Some(expect_members(&config, n, &shutdown).await?),
        _ => None,
    };
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
    let tls = load_tls(&config)?;
    let rpc_listener =
        TcpListener::bind(config.listen).await.with_context(|| format!("listening for RPCs on {}", config.listen))?;
    let http_listener =
        TcpListener::bind(config.http).await.with_context(|| format!("listening for HTTP on {}", config.http))?;

    let peers = Peers::new(PeersConfig {
        routes: config.routes.clone(),
        tls: tls.clone().map(|t| (config.tls_mode, t)),
        ..PeersConfig::default()
    });
    let versions = versions::MemberVersions::new(peers.config());
    let network = Network::new(config.id, peers.clone());
    let raft =
        Raft::new(config.id, Arc::new(raft_config()?), network, log_store, sm_store).await.context("starting raft")?;

    // Every task the node starts, from here on, is spawned on `tasks`.
    let tasks = TaskTracker::new();
    // Servers, the proposer and the background duties live until the very
    // end of the shutdown.
    let node_stop = CancellationToken::new();
    let me = SkeinNode { rpc_addr: config.advertise_rpc.clone(), http_addr: config.advertise_http.clone() };
    let proposer = Proposer::spawn(raft.clone(), node_stop.clone(), &tasks);
    let metrics = Arc::new(metrics::Metrics::new());
    let app = Arc::new(App {
        id: config.id,
        me: me.clone(),
        config: config.clone(),
        raft: raft.clone(),
        store,
        peers,
        proposer,
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
        removed: std::sync::atomic::AtomicBool::new(false),
        versions,
        tasks: tasks.clone(),
        tls: tls.clone(),
        token_uses: Default::default(),
    });
    let rpc_tls = match &tls {
        Some(t) => skein_transport::ServerTls::new(config.tls_mode, t),
        None => skein_transport::ServerTls::off(),
    };
    let rpc_server = tasks.spawn(skein_transport::serve_limited(
        rpc_listener,
        Arc::new(RpcHandler(app.clone())),
        node_stop.clone().cancelled_owned(),
        rpc_tls,
        api::limits::connection_limiter("rpc", &config.limits, &metrics),
    ));
    let http_listener = https_listener(&config, tls.as_ref(), http_listener, &metrics)?;
    let http_server = tasks.spawn(api::serve(http_listener, app.clone(), node_stop.clone()));
    if let Some(t) = &tls {
        // Certificates rotate without a restart: new files are picked up here.
        tasks.spawn(t.spawn_reloader(Duration::from_secs(5), node_stop.clone()));
    }
    tasks.spawn(report_token_use(app.clone(), node_stop.clone()));
    info!(node_id = config.id, rpc = %config.listen, http = %config.http, "node started");

    if let Err(e) = start_membership(&app, &me, expected, &shutdown).await {
        node_stop.cancel();
        let _ = raft.shutdown().await;
        tasks.close();
        tasks.wait().await;
        return Err(e);
    }

    tasks.spawn(leader::run(app.clone(), node_stop.clone()));
    tasks.spawn(version_watch::watch(app.clone(), node_stop.clone()));
    let stop_leasing = shutdown.child_token();
    let stop_worker = CancellationToken::new();
    let journal = match &config.journal {
        Some(path) => Some(worker::journal::Journal::open(path, config.id)?),
        None => None,
    };
    let host = Host::Member(app.clone());
    let worker = Worker::spawn(host.clone(), journal, stop_leasing.clone(), stop_worker.clone());
    tasks.spawn(membership::exit_when_removed(app.clone(), shutdown.clone()));
    tasks.spawn(membership::probe_when_leaderless(app.clone(), shutdown.clone()));

    shutdown.cancelled().await;
    observe(Stage::Draining);
    drain(&host, &worker).await;
    stop_worker.cancel();
    worker.stopped().await;
    drop(worker);
    drop(host);
    observe(Stage::WorkerStopped);
    // Right before Raft stops (a drain may take its 30 s leading), so the
    // write gap is the handover's alone.
    handover::at_shutdown(&app).await;
    observe(Stage::HandedOver);
    if let Err(e) = raft.shutdown().await {
        warn!(error = %e, "raft shutdown");
    }
    observe(Stage::RaftStopped);
    node_stop.cancel();
    let _ = http_server.await;
    let _ = rpc_server.await;
    observe(Stage::ServersStopped);
    tasks.close();
    wait_for_tasks(&tasks).await;
    observe(Stage::TasksEnded);
    let removed = app.is_removed();
    // The last handles on the store: the state machine's (in `app.store`
    // and in Raft) and the log's (in Raft). Every task holding a clone has
    // ended above, so dropping these closes RocksDB.
    drop(app);
    drop(raft);
    observe(Stage::StoreClosed);
    if removed {
        info!(node_id = config.id, "stopped: this node was removed from the cluster");
    } else {
        info!(node_id = config.id, "stopped");
    }
    Ok(())
}

/// `--bootstrap-expect n` on a node without a store: meanwhile its HTTP
/// address answers `/healthz` (its id, no cluster) so that the expected
/// members find each other; then, if a cluster exists already, its old
/// identity there (if any) is removed before it joins afresh.
async fn expect_members(
    config: &Config,
    n: usize,
    shutdown: &CancellationToken,
) -> anyhow::Result<membership::Expected> {
    let join = config.join.as_deref().unwrap_or_default();
    let listener =
        TcpListener::bind(config.http).await.with_context(|| format!("listening for HTTP on {}", config.http))?;
    let tls = load_tls(config)?;
    let listener = https_listener(config, tls.as_ref(), listener, &metrics::Metrics::new())?;
    let stop = CancellationToken::new();
    let waiting = tokio::spawn(api::waiting::serve(listener, config.id, stop.clone()));
    let decided = membership::await_expected(config, n, join, shutdown).await;
    stop.cancel();
    let _ = waiting.await;
    let expected = decided?;
    if expected == membership::Expected::Join {
        membership::forget_old_identity(config, join, shutdown).await?;
    }
    Ok(expected)
}

/// The HTTP listener: HTTPS under `--tls-mode`, with the connection limits
/// per caller.
fn https_listener(
    config: &Config,
    tls: Option<&skein_tls::NodeTls>,
    listener: TcpListener,
    metrics: &metrics::Metrics,
) -> anyhow::Result<skein_tls::HttpsListener> {
    let limiter = api::limits::connection_limiter("http", &config.limits, metrics);
    skein_tls::HttpsListener::with_limits(listener, config.tls_mode, tls, limiter).context("serving HTTPS")
}

/// The node's certificates (`--tls-dir`), which must name its id (a worker
/// started without `--id` takes the certificate's).
fn load_tls(config: &Config) -> anyhow::Result<Option<skein_tls::NodeTls>> {
    let Some(dir) = &config.tls_dir else { return Ok(None) };
    skein_tls::install_provider();
    let tls = skein_tls::NodeTls::load(dir).with_context(|| format!("loading certificates from {}", dir.display()))?;
    if config.id != 0 && tls.node_id() != config.id && tls.role() != "worker" {
        anyhow::bail!(
            "the certificate in {} names node {}, but this is node {}: issue one with `skein cert node --id {}`",
            dir.display(),
            tls.node_id(),
            config.id,
            config.id
        );
    }
    Ok(Some(tls))
}

/// Bootstraps a new cluster, joins one, or says that this node is not a
/// member of any, as its flags and its data directory say.
async fn start_membership(
    app: &Arc<App>,
    me: &SkeinNode,
    expected: Option<membership::Expected>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let config = &app.config;
    let raft = &app.raft;
    let already_member = raft.metrics().borrow().membership_config.membership().get_node(&config.id).is_some();
    let initialized = raft.is_initialized().await.context("reading raft state")?;
    if let (Some(expect), false) = (config.bootstrap_expect, initialized) {
        let join = config.join.as_deref().unwrap_or_default();
        let expected = match expected {
            Some(e) => e,
            None => membership::await_expected(config, expect, join, shutdown).await?,
        };
        match expected {
            membership::Expected::Bootstrap => bootstrap(app, me).await?,
            membership::Expected::Join => membership::join_cluster(app, join, me, shutdown).await?,
        }
    } else if config.bootstrap && !initialized {
        bootstrap(app, me).await?;
    } else if let (Some(addr), false) = (&config.join, already_member) {
        membership::join_cluster(app, addr, me, shutdown).await?;
    } else if already_member {
        let known = raft.metrics().borrow().membership_config.membership().get_node(&config.id).cloned();
        if known.as_ref() != Some(me) {
            // Restarted with new addresses (--advertise-*): tell the leader.
            app.tasks.spawn(membership::announce_address(app.clone(), me.clone(), shutdown.clone()));
        }
    } else if !already_member && !raft.is_initialized().await.unwrap_or(false) {
        warn!(
            node_id = config.id,
            "not a member of any cluster: start with --bootstrap or --join, or add it with POST /api/v1/cluster/join"
        );
    }
    Ok(())
}

/// Starts a new cluster with this node as its first voter: from a restored
/// backup, or empty, at the newest stored format and with its first admin
/// token.
async fn bootstrap(app: &Arc<App>, me: &SkeinNode) -> anyhow::Result<()> {
    info!(node_id = app.id, "bootstrapping a new cluster");
    // A restored directory not yet bootstrapped (this start, or one that
    // stopped before its bootstrap): its state is a snapshot with no log
    // position.
    let restored = app.store.snapshot_meta().is_some_and(|m| m.last_log_id.is_none());
    app.raft.initialize(BTreeMap::from([(app.id, me.clone())])).await.context("bootstrapping the cluster")?;
    if restored {
        seal_restored_state(app).await.context("snapshotting the restored state")?;
    } else {
        start_at_newest_format(app).await.context("setting the new cluster's stored format")?;
        secure_new_cluster(app).await.context("making the first admin token")?;
    }
    Ok(())
}

/// The drain: leasing has stopped (its token is a child of `shutdown`);
/// running tasks get up to the drain timeout to finish, and what still runs
/// then is stopped and handed back. A removed node stops its tasks at once.
async fn drain(host: &Host, worker: &Worker) {
    let id = host.id();
    if host.is_removed() {
        // The removal handed our leases back and the leader refuses our
        // reports: what still runs is someone else's now. Stop it.
        info!(node_id = id, running = worker.running_count(), "removed: stopping running tasks without reporting them");
        worker.abandon_all();
    } else {
        info!(node_id = id, running = worker.running_count(), "draining");
    }
    let deadline = tokio::time::Instant::now() + host.config().drain_timeout;
    while worker.running_count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if worker.running_count() > 0 {
        worker.abandon_all();
        match tokio::time::timeout(Duration::from_secs(3), host.write(Command::ReleaseNode { node: id, forget: false }))
            .await
        {
            Ok(Ok(_)) => info!("handed back unfinished tasks"),
            _ => warn!("could not hand back unfinished tasks; their leases will expire"),
        }
    }
}

/// Whether this start makes a Raft member or a worker (`--role`). `auto`
/// makes a member of a node that bootstraps, has a store already (a
/// member restarting) or has nowhere to join; otherwise it asks the
/// cluster, and becomes a worker once the cluster has its `--voters`
/// voters and `--standby-learners` learners.
async fn decide_role(config: &Config, shutdown: &CancellationToken) -> anyhow::Result<NodeRole> {
    match config.role {
        NodeRole::Member | NodeRole::Worker => return Ok(config.role),
        NodeRole::Auto => {}
    }
    let has_store = config.data_dir.join("db").join("CURRENT").exists();
    let Some(join) = &config.join else { return Ok(NodeRole::Member) };
    if config.bootstrap || config.bootstrap_expect.is_some() || has_store || config.restore.is_some() {
        return Ok(NodeRole::Member);
    }
    let wanted = config.voters + config.standby_learners;
    let members = membership::count_members(config, join, shutdown)
        .await
        .with_context(|| format!("could not join the cluster through {join}"))?;
    if members >= wanted {
        info!(
            members,
            voters = config.voters,
            standby_learners = config.standby_learners,
            "the cluster has its members: joining as a worker"
        );
        Ok(NodeRole::Worker)
    } else {
        info!(members, wanted, "the cluster needs members: joining as one");
        Ok(NodeRole::Member)
    }
}

/// Runs a worker node until `shutdown`: it registers with the cluster,
/// serves its health and metrics, leases and runs tasks over RPC to the
/// members, and at shutdown drains, then leaves (the state machine forgets
/// it). It holds no log, no snapshot and no state: `--data-dir` is only its
/// migrations' scratch space.
async fn run_worker(mut config: Config, shutdown: CancellationToken, observe: impl Fn(Stage)) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let tls = load_tls(&config)?;
    if let (Some(t), 0) = (&tls, config.id) {
        // A member certificate names this node's id; a worker certificate
        // may speak for any worker, and the cluster gives this one its id.
        if t.role() != "worker" {
            config.id = t.node_id();
        }
    }
    let http_listener =
        TcpListener::bind(config.http).await.with_context(|| format!("listening for HTTP on {}", config.http))?;
    let joined = remote::register(&config, config.id, &shutdown).await?;
    config.id = joined.id;
    let peers = Peers::new(PeersConfig {
        routes: config.routes.clone(),
        tls: tls.clone().map(|t| (config.tls_mode, t)),
        ..PeersConfig::default()
    });
    let metrics = Arc::new(metrics::Metrics::new());
    let remote = Arc::new(Remote::new(joined.id, config.clone(), peers, metrics.clone(), shutdown.clone(), &joined));
    info!(node_id = joined.id, members = joined.members.len(), leader = ?joined.leader, http = %config.http, "worker started: registered with the cluster");

    let tasks = TaskTracker::new();
    let node_stop = CancellationToken::new();
    let http_listener = https_listener(&config, tls.as_ref(), http_listener, &metrics)?;
    let http_server = tasks.spawn(api::worker_http::serve(http_listener, remote.clone(), node_stop.clone()));
    if let Some(t) = &tls {
        tasks.spawn(t.spawn_reloader(Duration::from_secs(5), node_stop.clone()));
    }
    tasks.spawn(remote::refresh_members(remote.clone(), node_stop.clone()));
    let journal = match &config.journal {
        Some(path) => Some(worker::journal::Journal::open(path, config.id)?),
        None => None,
    };
    let stop_leasing = shutdown.child_token();
    let stop_worker = CancellationToken::new();
    let host = Host::Worker(remote.clone());
    let worker = Worker::spawn(host.clone(), journal, stop_leasing, stop_worker.clone());

    shutdown.cancelled().await;
    observe(Stage::Draining);
    drain(&host, &worker).await;
    stop_worker.cancel();
    worker.stopped().await;
    drop(worker);
    observe(Stage::WorkerStopped);
    if !remote.is_removed() {
        // Leave: the state machine forgets this worker (a restart
        // registers again).
        match tokio::time::timeout(Duration::from_secs(5), host.write(Command::RemoveNode { node: config.id })).await {
            Ok(Ok(_)) => info!(node_id = config.id, "left the cluster"),
            _ => warn!(node_id = config.id, "could not say it left; the leader removes it after --worker-silence"),
        }
    }
    node_stop.cancel();
    let _ = http_server.await;
    observe(Stage::ServersStopped);
    tasks.close();
    wait_for_tasks(&tasks).await;
    observe(Stage::TasksEnded);
    info!(node_id = config.id, removed = remote.is_removed(), "worker stopped");
    Ok(())
}

/// Waits for every tracked task, saying every few seconds which count is
/// still running (a task that ignores its stop token would hang here, and
/// the log should say so rather than the node going quiet).
async fn wait_for_tasks(tasks: &TaskTracker) {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await {
            Ok(()) => return,
            Err(_) => warn!(running = tasks.len(), "shutdown: waiting for the node's tasks to end"),
        }
    }
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

/// A new cluster is secure from its first second: its first admin token is
/// created with it (from `--admin-token-file`, or new and written to
/// `<data-dir>/admin.token`, mode 0600), and calls without a token are
/// refused from then on.
async fn secure_new_cluster(app: &App) -> anyhow::Result<()> {
    if app.store.state().format() < 3 {
        return Ok(()); // a mixed-version test behaving as an older release
    }
    let (id, hash, written) = match &app.config.admin_token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let (id, secret) = tokens::parse(&text).with_context(|| {
                format!("{} does not hold a skein token (make one with `skein token generate`)", path.display())
            })?;
            (id, tokens::hash(secret).to_vec(), None)
        }
        None => {
            let issued = tokens::issue();
            let path = app.config.data_dir.join(ADMIN_TOKEN_FILE);
            write_secret(&path, &issued.text)?;
            (issued.id, issued.hash, Some(path))
        }
    };
    let token = skein_raft::fsm::NewToken {
        id,
        name: "admin".into(),
        role: skein_raft::fsm::Role::Admin,
        owners: Vec::new(),
        hash,
        expires_ms: None,
    };
    // Nothing runs and nothing is touched until an admin allows it
    // (`skein exec allow`, `skein roots allow`): format 4's policy.
    let mut first = vec![Command::CreateToken { token }];
    if app.store.state().format() >= 4 {
        first.push(Command::ConfigurePolicy { enforce: true });
    }
    first.push(Command::ConfigureAuth { enforce: Some(true), audit_retention_ms: None });
    let first = Command::Batch(first);
    match app.proposer.propose(first).await? {
        skein_raft::fsm::Response::Batch(rs) if rs.iter().all(|r| matches!(r, skein_raft::fsm::Response::Done)) => {}
        other => anyhow::bail!("the first admin token was refused: {other:?}"),
    }
    match written {
        Some(path) => info!(file = %path.display(), "the first admin token is in this file (mode 0600); auth: enforce"),
        None => info!("the first admin token is the one of --admin-token-file; auth: enforce"),
    }
    Ok(())
}

/// Where a bootstrapping node writes the first admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Writes `text` to a new file only its owner can read.
fn write_secret(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(format!("{text}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// Replicates which tokens were used through this node, every few seconds.
async fn report_token_use(app: Arc<App>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(10)) => app.report_token_use().await,
        }
    }
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
