//! Chaos under load: kill -9 the leader, freeze a worker past its leases,
//! take a leader's majority away. Nothing acknowledged is lost, every task
//! succeeds exactly once under its current lease, and no call hangs.
//!
//! Needs the binaries: `cargo build --workspace --bins` first.

use skein_raft::api::ErrorCode;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use reqwest::{Method, StatusCode};
use serde_json::json;
use skein_raft::fsm::{EventKind, FencingToken, TaskStatus};
use skein_testkit::{now_ms, wait_for, wait_until, Cluster, Load};
use skein_tests::checks::{all_succeeded, details, leases_by_node, say, succeeded_once, wait_settled};

/// kill -9 of the leader while a few hundred 100 ms tasks run (leases of
/// 2 s): a new leader within seconds, the dead node's leases expire and
/// their tasks run elsewhere, every acknowledged task succeeds once; the
/// killed node restarts on its data and catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_kill9_under_load_loses_nothing() {
    let mut c = Cluster::start(3).await.expect("starting 3 nodes");
    let result = leader_kill9(&mut c).await;
    c.finish(result);
}

async fn leader_kill9(c: &mut Cluster) -> anyhow::Result<()> {
    const Q: &str = "failover";
    let old = c.leader().await?;
    let followers: Vec<u64> = c.live_ids().into_iter().filter(|&id| id != old).collect();
    let follower_addrs: Vec<String> = followers.iter().map(|&id| c.addr(id)).collect();
    c.api
        .configure_queue(&c.addr(old), Q, json!({"lease_ms": 2000, "backoff_base_ms": 100, "backoff_cap_ms": 500}))
        .await?;
    let spec = json!({"queue": Q, "kind": "sleep", "payload": {"ms": 100}});
    let mut acked = Vec::new();
    for i in 0..6 {
        let addr = if i % 3 == 2 { c.addr(old) } else { follower_addrs[i % 2].clone() };
        acked.extend(c.api.enqueue(&addr, &vec![spec.clone(); 50]).await?);
    }
    // More keeps coming through the followers while the leader dies.
    let load = Load::start(c.api.clone(), follower_addrs.clone(), spec, 5, Duration::from_millis(100));

    let old_addr = c.addr(old);
    let held = wait_for(Duration::from_secs(20), &format!("leader {old} to run tasks"), async || {
        let leased = c.api.tasks(&old_addr, Some(Q), Some(TaskStatus::Leased)).await?;
        let mine: BTreeMap<u64, FencingToken> = leased
            .iter()
            .filter_map(|t| t.lease.as_ref().filter(|l| l.node == old).map(|l| (t.id.0, l.token)))
            .collect();
        Ok((!mine.is_empty()).then_some(mine))
    })
    .await?;
    let acked_before_kill = load.acked();
    let kill_ms = now_ms();
    let killed = Instant::now();
    c.kill9(old)?;
    say(format!("killed leader {old} (kill -9) holding {} leases: {:?}", held.len(), held.keys().collect::<Vec<_>>()));

    let new = c.wait_leader(Duration::from_secs(10)).await?;
    let election = killed.elapsed();
    say(format!("FIGURE new leader {new} confirmed {election:?} after the kill"));
    ensure!(new != old, "the dead node {old} is still named leader");
    ensure!(election < Duration::from_secs(5), "electing a new leader took {election:?}");

    wait_until(Duration::from_secs(15), "enqueues acknowledged after the failover", async || {
        Ok(load.acked() >= acked_before_kill + 50)
    })
    .await?;
    let report = load.stop().await?;
    say(format!(
        "load: {} tasks acknowledged in {} batches, {} requests failed: {:?}",
        report.acked.len(),
        report.batches,
        report.errors.len(),
        report.errors.iter().take(3).collect::<Vec<_>>()
    ));
    acked.extend(report.acked);

    let new_addr = c.addr(new);
    wait_settled(&c.api, &new_addr, Q, true, Duration::from_secs(60)).await?;
    let tasks = c.api.tasks(&new_addr, Some(Q), None).await?;
    all_succeeded(&tasks, &acked)?;
    let ids: Vec<u64> = tasks.iter().map(|t| t.id.0).collect();
    let all = details(&c.api, &c.live_addrs(), &ids).await?;
    for d in &all {
        succeeded_once(d)?;
    }

    // The dead node's tasks: finished by it before the kill, or expired and run elsewhere.
    let mut rerun = Vec::new();
    for (&id, &token) in &held {
        let d = all.iter().find(|d| d.task.id.0 == id).with_context(|| format!("task {id} not listed"))?;
        let win = succeeded_once(d)?;
        if win.token == Some(token) {
            ensure!(
                win.at_ms <= kill_ms,
                "task {id} succeeded under the dead node's token after the kill: {:?}",
                d.history
            );
            continue;
        }
        let expired = d.history.iter().any(|e| matches!(e.what, EventKind::Expired { .. }) && e.token == Some(token));
        ensure!(expired, "task {id}'s lease {token} on the dead node never expired: {:?}", d.history);
        ensure!(win.node != Some(old), "task {id} re-ran on the dead node: {:?}", d.history);
        rerun.push(d.task.finished_ms.unwrap_or(0));
    }
    ensure!(!rerun.is_empty(), "no task of the dead node was re-run (all {} finished before the kill?)", held.len());
    let first_after = tasks.iter().filter_map(|t| t.finished_ms).filter(|&f| f > kill_ms).min();
    say(format!(
        "FIGURE next task completed {} ms after the kill; {} of the dead node's {} tasks expired and re-ran, the last {} ms after the kill",
        first_after.map_or(-1, |f| (f - kill_ms) as i64),
        rerun.len(),
        held.len(),
        rerun.iter().max().map_or(0, |f| f.saturating_sub(kill_ms))
    ));
    say(format!("FIGURE leases per node: {:?}", leases_by_node(&all)));

    // The killed node comes back on its data and catches up.
    let restarting = Instant::now();
    c.restart(old)?;
    c.wait_ready(old, Duration::from_secs(30)).await?;
    let want = c.api.counts(&new_addr, Q).await?;
    wait_until(Duration::from_secs(20), &format!("node {old} to catch up"), async || {
        Ok(c.api.counts(&c.addr(old), Q).await? == want)
    })
    .await?;
    say(format!("FIGURE killed node {old} restarted and caught up in {:?}", restarting.elapsed()));
    Ok(())
}

/// A worker frozen (SIGSTOP) past its leases: its tasks expire and run
/// elsewhere; when it thaws (SIGCONT) its late outcomes are fenced off, so
/// every task still succeeds exactly once, and the node works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn frozen_worker_is_fenced() {
    let mut c = Cluster::start(3).await.expect("starting 3 nodes");
    let result = frozen_worker(&mut c).await;
    c.finish(result);
}

async fn frozen_worker(c: &mut Cluster) -> anyhow::Result<()> {
    const Q: &str = "zombie";
    let leader = c.leader().await?;
    let frozen = c.live_ids().into_iter().find(|&id| id != leader).context("no follower")?;
    let leader_addr = c.addr(leader);
    c.api
        .configure_queue(&leader_addr, Q, json!({"lease_ms": 2000, "backoff_base_ms": 100, "backoff_cap_ms": 500}))
        .await?;
    let spec = json!({"queue": Q, "kind": "sleep", "payload": {"ms": 1000}});
    let ids = c.api.enqueue(&leader_addr, &vec![spec; 36]).await?;
    let held = wait_for(Duration::from_secs(20), &format!("node {frozen} to run tasks"), async || {
        let leased = c.api.tasks(&leader_addr, Some(Q), Some(TaskStatus::Leased)).await?;
        let mine: BTreeMap<u64, FencingToken> = leased
            .iter()
            .filter_map(|t| t.lease.as_ref().filter(|l| l.node == frozen).map(|l| (t.id.0, l.token)))
            .collect();
        Ok((mine.len() >= 2).then_some(mine))
    })
    .await?;
    c.sigstop(frozen)?;
    say(format!("froze node {frozen} (SIGSTOP) holding {} leases", held.len()));
    wait_until(Duration::from_secs(20), "the frozen node's leases to be taken back", async || {
        for (&id, &token) in &held {
            let t = c.api.task(&leader_addr, id).await?.task;
            if t.lease.as_ref().is_some_and(|l| l.token == token) {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await?;
    say("the frozen node's leases expired; thawing it (SIGCONT)");
    let thawed_ms = now_ms();
    c.sigcont(frozen)?;

    wait_settled(&c.api, &leader_addr, Q, true, Duration::from_secs(60)).await?;
    let tasks = c.api.tasks(&leader_addr, Some(Q), None).await?;
    all_succeeded(&tasks, &ids)?;
    let all = details(&c.api, &c.live_addrs(), &ids).await?;
    let mut rerun = 0;
    for d in &all {
        let win = succeeded_once(d)?;
        if let Some(&token) = held.get(&d.task.id.0) {
            if win.token == Some(token) {
                // Only before the freeze: after it, that lease was taken back.
                ensure!(
                    win.at_ms < thawed_ms,
                    "task {} succeeded under the frozen node's lease after the thaw: {:?}",
                    d.task.id,
                    d.history
                );
            } else {
                rerun += 1;
            }
        }
    }
    ensure!(rerun > 0, "none of the frozen node's tasks ran elsewhere");
    say(format!("FIGURE {rerun} of the frozen node's {} tasks re-ran elsewhere; none succeeded twice", held.len()));

    // The thawed node is healthy and works again.
    let frozen_addr = c.addr(frozen);
    ensure!(c.api.healthy(&frozen_addr).await?, "the thawed node is not healthy");
    let more = c.api.enqueue(&leader_addr, &vec![json!({"queue": Q, "kind": "noop"}); 60]).await?;
    wait_settled(&c.api, &leader_addr, Q, true, Duration::from_secs(30)).await?;
    let again = details(&c.api, std::slice::from_ref(&leader_addr), &more).await?;
    let spread = leases_by_node(&again);
    say(format!("after the thaw, leases per node: {spread:?}"));
    ensure!(spread.contains_key(&frozen), "the thawed node {frozen} leased none of 60 new tasks: {spread:?}");
    Ok(())
}

/// A leader whose two followers are killed cannot commit: a write to it
/// must answer 503 within seconds, not hang, and say that its outcome is
/// unknown (it was proposed; a majority may still commit it later).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_without_majority_answers_503() {
    let mut c = Cluster::start(3).await.expect("starting 3 nodes");
    let result = lost_majority(&mut c).await;
    c.finish(result);
}

async fn lost_majority(c: &mut Cluster) -> anyhow::Result<()> {
    let leader = c.leader().await?;
    for id in c.live_ids().into_iter().filter(|&id| id != leader) {
        c.kill9(id)?;
    }
    let addr = c.addr(leader);
    let body = json!({"queue": "q", "kind": "noop"}).to_string().into_bytes();
    let reply = c.api.raw(Method::POST, &addr, "/api/v1/tasks", Some(body)).await;
    let reply = match reply {
        Ok(r) => r,
        Err(e) => bail!("the write to leader {leader} without a majority got no answer: {e:#}"),
    };
    say(format!("FIGURE write to a leader without majority: {} in {:?}: {}", reply.status, reply.elapsed, reply.body));
    ensure!(reply.status == StatusCode::SERVICE_UNAVAILABLE, "expected 503, got {} {}", reply.status, reply.body);
    ensure!(reply.error_code() == Some(ErrorCode::OutcomeUnknown), "error code {:?}", reply.error_code());
    ensure!(reply.elapsed < Duration::from_secs(10), "the 503 took {:?}", reply.elapsed);
    ensure!(c.api.healthy(&addr).await?, "the leader is not healthy afterwards");
    Ok(())
}
