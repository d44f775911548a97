//! A planned restart of the leader: SIGTERM makes it hand leadership to an
//! up-to-date voter before Raft stops (`node/src/handover.rs`). No timing
//! is asserted here; the bench measures the write gap.
//!
//! Needs the binaries: `cargo build --workspace --bins` first.

use std::time::Duration;

use anyhow::{bail, ensure, Context};
use serde_json::json;
use skein_testkit::{wait_for, Cluster, Load};
use skein_tests::checks::{say, wait_settled};

/// Under a steady load, SIGTERM of the leader of 3 nodes: the old leader's
/// log says it handed over, to the voter it chose, which is the leader
/// afterwards, elected in the next term (one election, not a timeout's
/// retries); a write succeeds through every survivor, and every task
/// acknowledged before and during the handover succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_of_the_leader_hands_over_to_an_up_to_date_voter() {
    let mut c = Cluster::start(3).await.expect("starting 3 nodes");
    let result = handover(&mut c).await;
    c.finish(result);
}

async fn handover(c: &mut Cluster) -> anyhow::Result<()> {
    const Q: &str = "handover";
    let spec = json!({ "queue": Q, "kind": "noop", "payload": { "n": 1 } });
    let old = c.wait_leader(Duration::from_secs(15)).await?;
    // openraft: a leader grants no vote for election_timeout_max (800 ms)
    // after its election, so a younger one needs a second campaign (and a
    // second term). Not a timing assertion: a precondition of "one term".
    tokio::time::sleep(Duration::from_secs(1)).await;
    let term_before = c.api.cluster(&c.addr(old)).await?.term;
    let survivors: Vec<u64> = c.live_ids().into_iter().filter(|&id| id != old).collect();
    // Writes keep arriving, on the leader too, while it stops: the handover
    // must hold them back to win the old leader's vote.
    let load = Load::start(c.api.clone(), c.live_addrs(), spec.clone(), 10, Duration::from_millis(10));
    wait_for(Duration::from_secs(15), "some load acknowledged", async || Ok((load.acked() >= 50).then_some(())))
        .await?;
    say(format!("SIGTERM to the leader, node {old} (term {term_before})"));
    load.set_targets(survivors.iter().map(|&id| c.addr(id)).collect());
    c.term(old)?;
    let status = c.wait_exit(old, Duration::from_secs(60)).await?;
    ensure!(status.success(), "the old leader {old} exited with {status} after SIGTERM");

    let log = std::fs::read_to_string(c.node(old).log_path()).context("reading the old leader's log")?;
    let Some(line) = log.lines().rev().find(|l| l.contains("handed leadership over")) else {
        bail!("the old leader's log does not say it handed over; it ends with:\n{}", tail(&log, 30));
    };
    say(format!("old leader: {line}"));
    let chosen: u64 = field(line, "chosen")?;
    let to: u64 = field(line, "to")?;
    let logged_before: u64 = field(line, "term_before")?;
    ensure!(survivors.contains(&chosen), "node {old} chose node {chosen}, which is not one of {survivors:?}");
    ensure!(to == chosen, "node {old} chose node {chosen} but node {to} took over");
    ensure!(logged_before == term_before, "the handover started in term {logged_before}, not {term_before}");

    let new = c.wait_leader(Duration::from_secs(15)).await?;
    ensure!(new == chosen, "the leader after the handover is node {new}, not the chosen node {chosen}");
    let term_after = c.api.cluster(&c.addr(new)).await?.term;
    ensure!(
        term_after == term_before + 1,
        "the term went from {term_before} to {term_after}: the chosen voter should win the first election"
    );
    let chosen_log = std::fs::read_to_string(c.node(chosen).log_path())?;
    ensure!(
        chosen_log.contains("the leader hands over: campaigning"),
        "node {chosen} never heard the campaign call; its log ends with:\n{}",
        tail(&chosen_log, 30)
    );

    // Writes go on, through each survivor (a follower forwards).
    for &id in &survivors {
        let ids = c
            .api
            .enqueue(&c.addr(id), std::slice::from_ref(&spec))
            .await
            .with_context(|| format!("a write via node {id}"))?;
        ensure!(ids.len() == 1, "node {id} acknowledged {ids:?}");
    }
    let report = load.stop().await?;
    say(format!(
        "load: {} tasks acknowledged, {} failed requests {:?}",
        report.acked.len(),
        report.errors.len(),
        report.errors
    ));
    let leader_addr = c.addr(new);
    // (A lease the old leader's worker asked for just before SIGTERM may
    // be granted after its drain looked: it waits for its expiry, 30 s.)
    say("waiting for every task to succeed");
    wait_settled(&c.api, &leader_addr, Q, true, Duration::from_secs(60)).await?;
    let succeeded = c.api.counts(&leader_addr, Q).await?[&skein_raft::fsm::TaskStatus::Succeeded];
    ensure!(
        succeeded as usize >= report.acked.len() + survivors.len(),
        "{succeeded} tasks succeeded, fewer than the {} acknowledged",
        report.acked.len() + survivors.len()
    );
    Ok(())
}

/// `name=value` of a text log line, parsed.
fn field<T: std::str::FromStr>(line: &str, name: &str) -> anyhow::Result<T> {
    let prefix = format!("{name}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {name}=... in {line:?}"))
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
