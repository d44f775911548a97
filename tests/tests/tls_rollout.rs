//! A running cluster on plain TCP moves to mutual TLS (RPC) and HTTPS (API)
//! without a gap (issue 14), the way an operator rolls certificates out:
//! certificates made with `skein_tls::issue` (what `skein cert` does), then
//! every node restarted in turn with `--tls-dir D --tls-mode permissive`
//! (TLS and plain on one port, dialling TLS first), then every node in turn
//! with `--tls-mode required`. A background load keeps enqueueing all along,
//! first over HTTP, then (once every node accepts HTTPS) over HTTPS:
//!
//! - after every restart the node is back, caught up, and the cluster has a
//!   confirmed leader;
//! - the longest stretch without an acknowledged write stays under
//!   [`MAX_GAP`];
//! - every acknowledged task exists at the end, and succeeded, and the
//!   replicas agree;
//! - at the end plain HTTP gets no answer from any node, nor plain TCP from
//!   the RPC ports, nor HTTPS trusting another CA; HTTPS trusting the
//!   cluster's CA works on every node.
//!
//! Needs the binaries: `cargo build --workspace --bins` first.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use reqwest::Method;
use serde_json::{json, Value};
use skein_testkit::{wait_for, wait_until, Api, Cluster, Load, LoadReport};
use skein_tests::checks::{all_succeeded, say, wait_replicas_agree, wait_settled};

const Q: &str = "rollout";
const WAIT: Duration = Duration::from_secs(30);
/// The longest the cluster may go without acknowledging a write while
/// nodes restart one at a time (a leader's SIGTERM hands leadership over).
const MAX_GAP: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_running_cluster_moves_to_mutual_tls_without_a_gap() {
    let certs = tempfile::tempdir().expect("a temp dir");
    let mut c = Cluster::start(3).await.expect("starting 3 nodes on plain TCP");
    let result = rollout(&mut c, certs.path()).await;
    c.finish(result);
}

/// A CA in `dir/ca` and a member certificate per node in `dir/node-<id>`,
/// as [`skein_testkit::Spec::with_tls`] makes them; the CA's `ca.pem`.
fn certificates(dir: &Path, ids: &[u64]) -> anyhow::Result<PathBuf> {
    skein_tls::install_provider();
    let ca = dir.join("ca");
    skein_tls::issue::make_ca(&ca).context("making the CA")?;
    let hosts = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    for &id in ids {
        skein_tls::issue::issue_node(&ca, id, "member", &hosts, &dir.join(format!("node-{id}")))
            .with_context(|| format!("issuing node {id}'s certificate"))?;
    }
    Ok(ca.join("ca.pem"))
}

/// The leader, as a node reports it and the leader confirms, asked over `api`.
async fn confirmed_leader(api: &Api, c: &Cluster) -> anyhow::Result<u64> {
    let mut seen = Vec::new();
    for id in c.ids() {
        match api.cluster(&c.addr(id)).await {
            Ok(s) => match s.leader {
                Some(l) if c.ids().contains(&l) => match api.cluster(&c.addr(l)).await {
                    Ok(ls) if ls.leader == Some(l) => return Ok(l),
                    Ok(ls) => seen.push(format!("node {id}: leader {l}, which names {:?}", ls.leader)),
                    Err(e) => seen.push(format!("node {id}: leader {l}, which does not answer: {e:#}")),
                },
                other => seen.push(format!("node {id}: leader {other:?}")),
            },
            Err(e) => seen.push(format!("node {id}: {e:#}")),
        }
    }
    bail!("no leader confirmed: {}", seen.join("; "))
}

/// Restarts node `id` (SIGTERM, then the same data directory) with TLS in
/// `mode`; returns once it answers `/readyz` over `api`, has applied what
/// the leader had applied when it came back, and the cluster has a leader.
async fn restart_in(c: &mut Cluster, api: &Api, certs: &Path, id: u64, mode: &str) -> anyhow::Result<u64> {
    let started = Instant::now();
    let dir = certs.join(format!("node-{id}")).display().to_string();
    c.set_node_args(id, vec!["--tls-dir".into(), dir, "--tls-mode".into(), mode.into()]);
    c.term(id)?;
    let status = c.wait_exit(id, WAIT).await?;
    ensure!(status.success(), "node {id} exited with {status} on SIGTERM");
    c.restart(id)?;
    let addr = c.addr(id);
    wait_until(WAIT, &format!("node {id} ({mode}) to be ready"), async || {
        ensure!(c.is_running(id), "node {id} exited after its restart in {mode} mode");
        api.ready(&addr).await
    })
    .await?;
    let leader = wait_for(WAIT, "a leader", async || Ok(Some(confirmed_leader(api, c).await?))).await?;
    let index = api.cluster(&c.addr(leader)).await?.applied_index.unwrap_or(0);
    wait_until(WAIT, &format!("node {id} to apply index {index}"), async || {
        Ok(api.cluster(&addr).await?.applied_index.unwrap_or(0) >= index)
    })
    .await?;
    let leader = wait_for(WAIT, "a leader", async || Ok(Some(confirmed_leader(api, c).await?))).await?;
    say(format!("node {id} back in {mode} mode in {:?}; node {leader} leads", started.elapsed()));
    Ok(leader)
}

/// Every acknowledgement of `reports` (each with its load's start), in time order.
fn ack_times(reports: &[(Instant, &LoadReport)]) -> Vec<Instant> {
    let mut at: Vec<Instant> = reports.iter().flat_map(|(start, r)| r.acked_at.iter().map(|d| *start + *d)).collect();
    at.sort();
    at
}

async fn rollout(c: &mut Cluster, certs: &Path) -> anyhow::Result<()> {
    let ids = c.ids();
    let all = c.live_addrs();
    let ca = certificates(certs, &ids)?;
    let plain = c.api.clone();
    let https = Api::new().with_ca(&ca)?;
    // Before: the nodes speak plain HTTP only.
    ensure!(https.ready(&all[0]).await.is_err(), "HTTPS answered before any node had a certificate");

    let spec = json!({"queue": Q, "kind": "noop"});
    let every = Duration::from_millis(100);
    let http_load = Load::start(plain.clone(), all.clone(), spec.clone(), 5, every);
    wait_until(WAIT, "the first tasks acknowledged", async || Ok(http_load.acked() >= 25)).await?;

    say("phase 1: every node in turn to --tls-mode permissive, the load on plain HTTP");
    for &id in &ids {
        let others: Vec<String> = ids.iter().filter(|&&o| o != id).map(|&o| c.addr(o)).collect();
        http_load.set_targets(others);
        restart_in(c, &plain, certs, id, "permissive").await?;
        http_load.set_targets(all.clone());
        // Permissive: the same port answers HTTPS too.
        ensure!(https.ready(&c.addr(id)).await?, "node {id} in permissive mode does not answer HTTPS");
        let before = http_load.acked();
        wait_until(WAIT, "more tasks acknowledged", async || Ok(http_load.acked() >= before + 25)).await?;
    }

    say("every node accepts HTTPS: the load moves to HTTPS");
    let https_load = Load::start(https.clone(), all.clone(), spec, 5, every);
    wait_until(WAIT, "the first tasks acknowledged over HTTPS", async || Ok(https_load.acked() >= 25)).await?;
    let http_started = http_load.started();
    let http_report = http_load.stop().await?;

    say("phase 2: every node in turn to --tls-mode required, the load on HTTPS");
    for &id in &ids {
        let others: Vec<String> = ids.iter().filter(|&&o| o != id).map(|&o| c.addr(o)).collect();
        https_load.set_targets(others);
        restart_in(c, &https, certs, id, "required").await?;
        https_load.set_targets(all.clone());
        let r = plain.raw(Method::GET, &c.addr(id), "/readyz", None).await;
        ensure!(r.is_err(), "node {id} in required mode answered plain HTTP: {r:?}");
        let before = https_load.acked();
        wait_until(WAIT, "more tasks acknowledged", async || Ok(https_load.acked() >= before + 25)).await?;
    }
    let https_started = https_load.started();
    let https_report = https_load.stop().await?;

    say("nothing acknowledged was lost, and the longest stretch without an acknowledgement was short");
    let acked: Vec<u64> = http_report.acked.iter().chain(&https_report.acked).copied().collect();
    let unique: BTreeSet<u64> = acked.iter().copied().collect();
    ensure!(unique.len() == acked.len(), "an id was acknowledged twice");
    let times = ack_times(&[(http_started, &http_report), (https_started, &https_report)]);
    let mut gap = times.first().map_or(Duration::MAX, |t| t.duration_since(http_started));
    for pair in times.windows(2) {
        gap = gap.max(pair[1].duration_since(pair[0]));
    }
    let failed = http_report.errors.len() + https_report.errors.len();
    say(format!(
        "FIGURE {} tasks acknowledged in {} requests ({failed} failed), longest gap between acknowledgements {gap:?}",
        acked.len(),
        http_report.batches + https_report.batches
    ));
    for e in http_report.errors.iter().chain(&https_report.errors).take(10) {
        say(format!("a failed enqueue: {e}"));
    }
    ensure!(gap < MAX_GAP, "the cluster acknowledged nothing for {gap:?} during the rollout");
    wait_settled(&https, &all[0], Q, true, Duration::from_secs(60)).await?;
    let tasks = https.tasks(&all[0], Some(Q), None).await?;
    all_succeeded(&tasks, &acked)?;
    wait_replicas_agree(&https, &all, WAIT).await?;

    say("at the end: HTTPS trusting the CA works on every node; plain HTTP, plain RPC and another CA get nothing");
    let other_ca = certificates(&certs.join("other"), &[])?;
    let stranger = Api::new().with_ca(&other_ca)?;
    let leader = confirmed_leader(&https, c).await?;
    for &id in &ids {
        let addr = c.addr(id);
        ensure!(https.ready(&addr).await?, "node {id} is not ready over HTTPS");
        let status = https.cluster(&addr).await?;
        ensure!(status.leader == Some(leader), "node {id} names leader {:?}, not {leader}", status.leader);
        let members: BTreeSet<u64> = status.nodes.iter().map(|n| n.id).collect();
        ensure!(members.iter().copied().eq(ids.iter().copied()), "node {id} sees members {members:?}");
        let metrics = https.raw(Method::GET, &addr, "/metrics", None).await?;
        ensure!(
            metrics
                .body
                .as_str()
                .is_some_and(|m| m.contains("skein_certificate_expiry_timestamp_seconds{cert=\"node\"}")),
            "node {id}'s /metrics shows no certificate"
        );
        for path in ["/readyz", "/api/v1/queues"] {
            let r = plain.raw(Method::GET, &addr, path, None).await;
            ensure!(r.is_err(), "plain HTTP GET {path} to node {id} was answered: {r:?}");
            let r = stranger.raw(Method::GET, &addr, path, None).await;
            ensure!(r.is_err(), "HTTPS trusting another CA, GET {path} to node {id} was answered: {r:?}");
        }
        let rpc = c.node(id).rpc.clone();
        ensure!(plain_rpc_gets_nothing(&rpc).await?, "plain TCP to node {id}'s RPC port got an answer");
    }
    let id = https.enqueue(&all[1], &[json!({"queue": Q, "kind": "noop"})]).await?[0];
    wait_until(WAIT, "a task after the rollout to succeed", async || {
        Ok(https.task(&all[2], id).await?.task.status == skein_raft::fsm::TaskStatus::Succeeded)
    })
    .await?;
    let _: Value = https.call(Method::GET, &all[0], "/api/v1/cluster", None).await?;
    Ok(())
}

/// Sends a plain length-prefixed frame to an RPC port: true when nothing
/// comes back but at most a TLS alert record.
async fn plain_rpc_gets_nothing(rpc: &str) -> anyhow::Result<bool> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(rpc).await?;
    s.write_all(&[0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]).await?;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(15), s.read(&mut buf)).await.unwrap_or(Ok(0)).unwrap_or(0);
    Ok(n == 0 || buf[0] == 0x15)
}
