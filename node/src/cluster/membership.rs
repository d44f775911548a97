//! Membership seen from this node: joining a cluster at start-up, noticing
//! that it was removed (from the membership it applies, or by asking its
//! peers when it hears no leader), and stopping then.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use reqwest::Method;
use skein_raft::config::SkeinNode;
use skein_transport::{CallError, JoinRequest, LeaseRequest, NodeError};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cluster::app::App;

/// Asks the cluster at `join` (members' HTTP addresses) to add this node
/// as a learner, retrying for a while: the members may be starting too.
///
/// A node joins with a token or with its certificate, never with an admin
/// token: given a token (`--token` / `SKEIN_TOKEN`, role `operate`), it
/// asks a member's API (`POST /api/v1/cluster/join`, audited); without one
/// but with TLS (`--tls-dir`), it sends the node-to-node `join` call to a
/// member's RPC address (which the member's public `/healthz` gives), where
/// mutual TLS checks that its member certificate names this node's id (a
/// worker certificate may not join). That is how the members of a
/// `--bootstrap-expect` cluster join its first member on their first
/// start, before any token but the first admin token exists.
pub async fn join_cluster(app: &App, join: &str, me: &SkeinNode, shutdown: &CancellationToken) -> anyhow::Result<()> {
    if joins_with_certificate(&app.config) {
        join_with_certificate(app, join, me, shutdown).await?;
        info!(node_id = app.id, via = %join, "joined the cluster as a learner (with this node's certificate)");
        return Ok(());
    }
    let body = skein_raft::api::JoinBody { id: app.id, rpc_addr: me.rpc_addr.clone(), http_addr: me.http_addr.clone() };
    let _: serde_json::Value = ask_members(
        &app.config,
        join,
        Method::POST,
        "/api/v1/cluster/join",
        Some(&body),
        10,
        "joining the cluster",
        shutdown,
    )
    .await?;
    info!(node_id = app.id, via = %join, "joined the cluster as a learner");
    Ok(())
}

/// Whether this node joins with its certificate: it has no token, and a
/// certificate to show (`--tls-dir`, TLS on). A node with neither asks the
/// API without a token, as before: served only by a cluster that does not
/// enforce tokens yet.
fn joins_with_certificate(config: &crate::config::Config) -> bool {
    config.token.is_none() && config.tls_dir.is_some() && config.tls_mode != skein_tls::TlsMode::Off
}

/// Joins over RPC, authenticated by this node's certificate (see
/// [`join_cluster`]): asks each member of `join` for its RPC address
/// (public `/healthz`), sends the `join` call there and follows "not the
/// leader" answers, for up to 20 rounds with a growing pause between them.
async fn join_with_certificate(
    app: &App,
    join: &str,
    me: &SkeinNode,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let client = http_client(&app.config)?;
    let req = JoinRequest { id: app.id, node: me.clone() };
    let mut last_error = String::new();
    for round in 1..=20u64 {
        for base in join_urls(&app.config, join) {
            if shutdown.is_cancelled() {
                bail!("shut down while joining the cluster");
            }
            let rpc = match health(&client, &base).await {
                Ok(Health { initialized: Some(true), rpc_addr: Some(rpc), .. }) => rpc,
                Ok(Health { initialized: Some(true), .. }) => {
                    last_error = format!(
                        "{base} does not publish its RPC address (an older release): give this node a token \
                         of role operate (SKEIN_TOKEN) to join through its API"
                    );
                    continue;
                }
                Ok(_) => {
                    last_error = format!("{base} is not in a cluster yet");
                    continue;
                }
                Err(e) => {
                    last_error = format!("{base}: {e}");
                    continue;
                }
            };
            let answer = match app.peers.join(&rpc, req.clone()).await {
                Err(CallError::Remote { error: NodeError::NotLeader { leader: Some(leader), .. }, .. }) => {
                    app.peers.join(&leader.rpc_addr, req.clone()).await
                }
                other => other,
            };
            match answer {
                Ok(()) => return Ok(()),
                Err(CallError::Remote {
                    error: e @ (NodeError::Invalid(_) | NodeError::NeedsFormat { .. }), ..
                }) => {
                    bail!("joining the cluster was refused: {e}")
                }
                Err(e) => last_error = format!("{base} (RPC {rpc}): {e}"),
            }
        }
        warn!(round, error = %last_error, "joining the cluster with this node's certificate failed; retrying");
        tokio::select! {
            _ = shutdown.cancelled() => bail!("shut down while joining the cluster"),
            _ = tokio::time::sleep(Duration::from_millis(500 * round.min(4))) => {}
        }
    }
    bail!(
        "joining the cluster through {join} without a token failed: {last_error}. Without a token a node joins \
         with its certificate (--tls-dir: a member certificate naming node {}; a member refuses any other and \
         closes the connection); or give it a token of role operate (--token / SKEIN_TOKEN)",
        app.id
    )
}

/// A member's public `/healthz`.
async fn health(client: &reqwest::Client, base: &str) -> anyhow::Result<Health> {
    let answer = client.get(format!("{base}/healthz")).timeout(Duration::from_secs(2)).send().await;
    match answer {
        Ok(r) if r.status().is_success() => Ok(r.json::<Health>().await?),
        Ok(r) => bail!("/healthz answered {}", r.status()),
        Err(e) if e.is_connect() => bail!("nothing answers there (connection refused or unreachable)"),
        Err(e) => Err(e.into()),
    }
}

/// Sends a request to the first member of `join` (comma-separated HTTP
/// addresses) that answers, with the node's token: `method` with `body`, if
/// any. Tries every member, for `rounds` rounds with a growing
/// pause between them (the members may be starting too); a refusal (4xx
/// other than 429) will not change, and ends it at once.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn ask_members<T: serde::de::DeserializeOwned>(
    config: &crate::config::Config,
    join: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<&(impl serde::Serialize + Sync)>,
    rounds: u64,
    what: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<T> {
    let client = http_client(config)?;
    let mut last_error = String::new();
    for round in 1..=rounds {
        for base in join_urls(config, join) {
            if shutdown.is_cancelled() {
                bail!("shut down while {what}");
            }
            let url = format!("{base}{path}");
            let mut request = client.request(method.clone(), &url);
            if let Some(b) = body {
                request = request.json(b);
            }
            if let Some(token) = &config.token {
                request = request.bearer_auth(token.expose());
            }
            match request.send().await {
                Ok(r) if r.status().is_success() => {
                    return r.json().await.with_context(|| format!("{what}: reading {base}'s answer"));
                }
                Ok(r) => {
                    let status = r.status();
                    last_error = format!("{base}: {status}: {}", r.text().await.unwrap_or_default());
                    if status.is_client_error() && status != reqwest::StatusCode::TOO_MANY_REQUESTS {
                        bail!("{what} was refused: {last_error}");
                    }
                }
                Err(e) if e.is_connect() => {
                    last_error = format!("{base}: nothing answers there (connection refused or unreachable)")
                }
                Err(e) => last_error = format!("{base}: {e}"),
            }
        }
        warn!(round, error = %last_error, "{what} failed; retrying");
        tokio::select! {
            _ = shutdown.cancelled() => bail!("shut down while {what}"),
            _ = tokio::time::sleep(Duration::from_millis(500 * round.min(4))) => {}
        }
    }
    bail!("{what} through {join} failed: {last_error}")
}

/// A member restarted with addresses other than the membership's: asks the
/// leader (once one is known) to record the new ones, so that the others
/// dial it there.
pub async fn announce_address(app: Arc<App>, me: SkeinNode, shutdown: CancellationToken) {
    let req = skein_transport::JoinRequest { id: app.id, node: me.clone() };
    loop {
        match app.join(req.clone()).await {
            Ok(()) => {
                info!(node_id = app.id, rpc = %me.rpc_addr, http = %me.http_addr, "the membership has this node's new addresses");
                return;
            }
            Err(e) => warn!(node_id = app.id, error = %e, "could not record this node's new addresses yet; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// How many Raft members (voters and learners, not workers) the cluster
/// has, asked of the first member of `join` (comma-separated HTTP
/// addresses) that answers: what `--role auto` decides on.
pub async fn count_members(
    config: &crate::config::Config,
    join: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<usize> {
    let status = cluster_status(config, join, 10, "asking the cluster whether it needs a member", shutdown).await?;
    Ok(status.nodes.iter().filter(|n| n.role != "worker").count())
}

/// The cluster's status (`GET /api/v1/cluster`) from the first member of
/// `join` that answers, in up to `rounds` rounds.
async fn cluster_status(
    config: &crate::config::Config,
    join: &str,
    rounds: u64,
    what: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<skein_raft::api::ClusterStatus> {
    let none: Option<&()> = None;
    ask_members(config, join, Method::GET, "/api/v1/cluster", none, rounds, what, shutdown).await
}

/// The cluster's status (`GET /api/v1/cluster`, with the node's token)
/// from the first member of `join` that answers within `each`: one try
/// per member, so that a frozen member (its socket accepts, nothing
/// answers) holds the caller up for `each` only.
pub(crate) async fn cluster_status_once(
    config: &crate::config::Config,
    join: &str,
    each: Duration,
) -> anyhow::Result<skein_raft::api::ClusterStatus> {
    let client = http_client(config)?;
    let mut errors = Vec::new();
    for base in join_urls(config, join) {
        let mut request = client.get(format!("{base}/api/v1/cluster")).timeout(each);
        if let Some(token) = &config.token {
            request = request.bearer_auth(token.expose());
        }
        match request.send().await {
            Ok(r) if r.status().is_success() => match r.json().await {
                Ok(status) => return Ok(status),
                Err(e) => errors.push(format!("{base}: {e}")),
            },
            Ok(r) => errors.push(format!("{base}: {}", r.status())),
            Err(e) => errors.push(format!("{base}: {e}")),
        }
    }
    bail!("no member of {join} answered: {}", errors.join("; "))
}

/// An HTTP client for calls to the members, trusting the cluster's CA.
fn http_client(config: &crate::config::Config) -> anyhow::Result<reqwest::Client> {
    let mut builder =
        reqwest::Client::builder().connect_timeout(Duration::from_secs(2)).timeout(Duration::from_secs(70));
    if let Some(dir) = &config.tls_dir {
        let trusted = skein_tls::client_trusting(&dir.join("ca.pem")).context("trusting the cluster's CA")?;
        builder = builder.use_preconfigured_tls(trusted);
    }
    builder.build().context("building HTTP client")
}

/// The base URLs of `join` (comma-separated, with or without a scheme).
fn join_urls(config: &crate::config::Config, join: &str) -> Vec<String> {
    let https = config.tls_dir.is_some() && config.tls_mode != skein_tls::TlsMode::Off;
    join.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|addr| match addr.split_once("://") {
            Some(_) => addr.trim_end_matches('/').to_string(),
            None if https => format!("https://{addr}"),
            None => format!("http://{addr}"),
        })
        .collect()
}

/// What a `--bootstrap-expect` member does once it knows enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// Every expected member is up and none has a cluster: this node has
    /// the lowest id among them, and starts it.
    Bootstrap,
    /// A member already has a cluster: join it.
    Join,
}

/// What `/healthz` says about a node (absent fields: an older release, or
/// a `--bootstrap-expect` member still waiting, which has no cluster).
#[derive(Debug, serde::Deserialize)]
struct Health {
    node_id: Option<u64>,
    initialized: Option<bool>,
    /// A member's RPC address, as the others dial it (absent: an older release).
    #[serde(default)]
    rpc_addr: Option<String>,
    /// The Raft members (voters and learners) a member knows (absent: an older release).
    #[serde(default)]
    members: Option<Vec<u64>>,
}

/// `--bootstrap-expect N` on a node without a cluster: asks the members of
/// `join` (their public `/healthz`) every second until either one of them
/// has a cluster (then this node joins it: a member that lost its data
/// directory never starts a second cluster), or `expect` nodes, this one
/// included, answer without one and this node has the lowest id among them
/// (then it bootstraps, and the others join it).
pub async fn await_expected(
    config: &crate::config::Config,
    expect: usize,
    join: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<Expected> {
    if expect <= 1 {
        return Ok(Expected::Bootstrap);
    }
    let me = config.id;
    let client = http_client(config)?;
    let mut said = tokio::time::Instant::now();
    loop {
        if shutdown.is_cancelled() {
            bail!("shut down while waiting for the expected members");
        }
        let mut waiting: std::collections::BTreeSet<u64> = [me].into();
        for base in join_urls(config, join) {
            let answer = client.get(format!("{base}/healthz")).timeout(Duration::from_secs(2)).send().await;
            let Ok(health) = (match answer {
                Ok(r) => r.json::<Health>().await,
                Err(e) => Err(e),
            }) else {
                continue;
            };
            match health {
                Health { initialized: Some(true), node_id, .. } => {
                    info!(node_id = me, via = %base, member = ?node_id, "a cluster exists already: joining it (never starting a second one)");
                    return Ok(Expected::Join);
                }
                Health { node_id: Some(id), .. } => {
                    waiting.insert(id);
                }
                Health { node_id: None, .. } => {}
            }
        }
        if waiting.len() >= expect && waiting.first() == Some(&me) {
            info!(node_id = me, members = ?waiting, "every expected member is up: this one has the lowest id and bootstraps");
            return Ok(Expected::Bootstrap);
        }
        if said.elapsed() >= Duration::from_secs(10) {
            info!(node_id = me, heard = ?waiting, expect, "waiting for the expected members (--bootstrap-expect)");
            said = tokio::time::Instant::now();
        }
        tokio::select! {
            _ = shutdown.cancelled() => bail!("shut down while waiting for the expected members"),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// A member that lost its data directory and finds its cluster: Raft
/// assumes a member never forgets its log nor its vote, and a leader
/// replicating to a member whose log went backwards fails. So before this
/// node opens a store or answers any Raft call, its old identity is removed
/// from the membership (as an operator would replace a dead voter); it then
/// joins as a new learner, is sent the log from the start, and is promoted
/// again while the cluster lacks voters.
pub async fn forget_old_identity(
    config: &crate::config::Config,
    join: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    if joins_with_certificate(config) {
        // No token to read the membership with: a member's public
        // `/healthz` lists the members' ids. On a first start this node is
        // not among them, and it joins with its certificate.
        if !listed_publicly(config, join, shutdown).await? {
            return Ok(());
        }
        bail!(
            "this member (node {}) lost its data, and the cluster still lists it: removing its old identity \
             before it joins again needs a token of role operate (--token / SKEIN_TOKEN; on Kubernetes the \
             skein-join-token Secret)",
            config.id
        );
    }
    let status = cluster_status(config, join, 20, "reading the cluster's membership", shutdown).await?;
    if !status.nodes.iter().any(|n| n.id == config.id && n.role != "worker") {
        return Ok(());
    }
    warn!(
        node_id = config.id,
        "this member lost its data, and the cluster still lists it: removing its old identity, then joining afresh"
    );
    let path = format!("/api/v1/cluster/nodes/{}", config.id);
    let _: serde_json::Value =
        ask_members(config, join, Method::DELETE, &path, None::<&()>, 20, "removing the old identity", shutdown)
            .await?;
    Ok(())
}

/// Whether the cluster at `join` lists this node as a Raft member, as the
/// first member that has a cluster says on its public `/healthz` (asked in
/// up to 20 rounds, the members may be starting). An older member, which
/// does not say, cannot tell: an error asking for a token.
async fn listed_publicly(
    config: &crate::config::Config,
    join: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<bool> {
    let client = http_client(config)?;
    let mut last_error = String::new();
    for round in 1..=20u64 {
        for base in join_urls(config, join) {
            if shutdown.is_cancelled() {
                bail!("shut down while reading the cluster's membership");
            }
            match health(&client, &base).await {
                Ok(Health { initialized: Some(true), members: Some(members), .. }) => {
                    return Ok(members.contains(&config.id));
                }
                Ok(Health { initialized: Some(true), .. }) => bail!(
                    "{base} does not list its members publicly (an older release): give this node a token \
                     of role operate (--token / SKEIN_TOKEN) to join"
                ),
                Ok(_) => last_error = format!("{base} is not in a cluster yet"),
                Err(e) => last_error = format!("{base}: {e}"),
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => bail!("shut down while reading the cluster's membership"),
            _ = tokio::time::sleep(Duration::from_millis(500 * round.min(4))) => {}
        }
    }
    bail!("reading the cluster's membership through {join} failed: {last_error}")
}

/// A node removed from the membership has nothing left to do: it stops.
///
/// Its membership no longer listing it is not proof enough: a member that
/// joined again after losing its data replays a log that removed it and
/// added it back, and between two appends it sees the removal alone. So the
/// leader is asked (a lease probe, nothing written), and only its answer
/// that this node was removed (committed state) stops it.
pub async fn exit_when_removed(app: Arc<App>, shutdown: CancellationToken) {
    let mut metrics = app.raft.metrics();
    let mut was_member = false;
    loop {
        let is_member = metrics.borrow().membership_config.membership().get_node(&app.id).is_some();
        if is_member {
            was_member = true;
        } else if was_member {
            let probe = LeaseRequest { node: app.id, queues: Vec::new(), max: 0, wait_ms: 0 };
            if matches!(app.lease(probe).await, Err(NodeError::Removed(id)) if id == app.id) {
                // `App::lease` noted it and began the shutdown.
                return;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
            }
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
pub async fn probe_when_leaderless(app: Arc<App>, shutdown: CancellationToken) {
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
