//! Membership seen from this node: joining a cluster at start-up, noticing
//! that it was removed (from the membership it applies, or by asking its
//! peers when it hears no leader), and stopping then.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use skein_raft::config::SkeinNode;
use skein_transport::{CallError, LeaseRequest, NodeError};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cluster::app::App;

/// Asks a member at `addr` (HTTP, or HTTPS when this node has TLS) to add
/// this node, retrying for a while: the member may itself be starting. The
/// call needs a token of role `operate` (`--token` / `SKEIN_TOKEN`) once
/// the cluster enforces tokens.
pub async fn join_cluster(app: &App, addr: &str, me: &SkeinNode, shutdown: &CancellationToken) -> anyhow::Result<()> {
    let id = app.id;
    let https = app.tls.is_some() && app.config.tls_mode != skein_tls::TlsMode::Off;
    let base = match addr.split_once("://") {
        Some(_) => addr.to_string(),
        None if https => format!("https://{addr}"),
        None => format!("http://{addr}"),
    };
    let url = format!("{}/api/v1/cluster/join", base.trim_end_matches('/'));
    let mut builder =
        reqwest::Client::builder().connect_timeout(Duration::from_secs(2)).timeout(Duration::from_secs(70));
    if let Some(dir) = &app.config.tls_dir {
        let trusted = skein_tls::client_trusting(&dir.join("ca.pem")).context("trusting the cluster's CA")?;
        builder = builder.use_preconfigured_tls(trusted);
    }
    let client = builder.build().context("building HTTP client")?;
    let body = skein_raft::api::JoinBody { id, rpc_addr: me.rpc_addr.clone(), http_addr: me.http_addr.clone() };
    let mut last_error = String::new();
    for attempt in 1..=10 {
        if shutdown.is_cancelled() {
            bail!("shut down while joining");
        }
        let mut request = client.post(&url).json(&body);
        if let Some(token) = &app.config.token {
            request = request.bearer_auth(token.expose());
        }
        match request.send().await {
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
pub async fn exit_when_removed(app: Arc<App>, shutdown: CancellationToken) {
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
