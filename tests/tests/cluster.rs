//! Clusters of real `skein-node` processes doing ordinary work: tasks spread
//! over the nodes and each succeeds once; exec tasks succeed, retry and die;
//! the membership changes under load and a full restart keeps every task.
//!
//! Needs the binaries: `cargo build --workspace --bins` first.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use serde_json::{json, Value};
use skein_raft::fsm::{EventKind, TaskStatus};
use skein_testkit::{now_ms, wait_for, wait_until, Cluster, Load};
use skein_tests::checks::{
    all_succeeded, details, leases_by_node, say, succeeded_once, wait_replicas_agree, wait_settled,
};

/// 2,000 noop tasks, half through the `skein` CLI (to a follower), the rest
/// through the HTTP API of a follower and of the leader: all succeed, each
/// exactly once under its current lease, and all three nodes ran some.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_spread_over_nodes_and_each_succeeds_once() {
    let mut c = Cluster::start(3).await.expect("starting 3 nodes");
    let result = spread(&mut c).await;
    c.finish(result);
}

async fn spread(c: &mut Cluster) -> anyhow::Result<()> {
    const Q: &str = "spread";
    const CLI_TASKS: usize = 1_000;
    const HTTP_TASKS: usize = 1_000;
    let leader = c.leader().await?;
    let followers: Vec<u64> = c.live_ids().into_iter().filter(|&id| id != leader).collect();
    let (via_cli, via_http) = (followers[0], followers[1]);
    say(format!("leader {leader}; CLI enqueues through node {via_cli}, HTTP through nodes {via_http} and {leader}"));

    let started = Instant::now();
    let cli_addr = c.addr(via_cli);
    let count = CLI_TASKS.to_string();
    let cli_args = ["--addr", &cli_addr, "-o", "json", "enqueue", "--queue", Q, "--kind", "noop", "--count", &count];
    let cli = c.cli(&cli_args);
    let http = async {
        let spec = json!({"queue": Q, "kind": "noop"});
        let mut ids = Vec::new();
        for (i, node) in [via_http, leader].iter().cycle().take(HTTP_TASKS / 100).enumerate() {
            let batch =
                c.api.enqueue(&c.addr(*node), &vec![spec.clone(); 100]).await.with_context(|| format!("batch {i}"))?;
            ids.extend(batch);
        }
        anyhow::Ok(ids)
    };
    let (cli_out, http_ids) = tokio::join!(cli, http);
    let cli_out = cli_out?;
    ensure!(
        cli_out.status.success(),
        "skein enqueue failed ({}): {}",
        cli_out.status,
        String::from_utf8_lossy(&cli_out.stderr)
    );
    let cli_json: Value = serde_json::from_slice(&cli_out.stdout)
        .with_context(|| format!("skein -o json enqueue printed: {}", String::from_utf8_lossy(&cli_out.stdout)))?;
    let cli_ids: Vec<u64> = cli_json["tasks"]
        .as_array()
        .context("no tasks in the CLI's answer")?
        .iter()
        .map(|t| t["id"].as_u64().context("a task without an id"))
        .collect::<anyhow::Result<_>>()?;
    ensure!(cli_ids.len() == CLI_TASKS, "the CLI acknowledged {} tasks, not {CLI_TASKS}", cli_ids.len());
    let mut acked = http_ids?;
    acked.extend(cli_ids);
    let distinct: BTreeSet<u64> = acked.iter().copied().collect();
    ensure!(distinct.len() == CLI_TASKS + HTTP_TASKS, "{} acknowledged ids, {} distinct", acked.len(), distinct.len());
    let enqueued_in = started.elapsed();
    say(format!("FIGURE enqueued {} tasks in {enqueued_in:?}", acked.len()));

    let leader_addr = c.addr(leader);
    let counts = wait_settled(&c.api, &leader_addr, Q, true, Duration::from_secs(90)).await?;
    let ran_in = started.elapsed();
    ensure!(counts[&TaskStatus::Succeeded] == acked.len() as u64, "counts {counts:?} for {} tasks", acked.len());
    say(format!(
        "FIGURE all {} succeeded {ran_in:?} after the first enqueue ({:.0} tasks/s end to end)",
        acked.len(),
        acked.len() as f64 / ran_in.as_secs_f64()
    ));

    // Every node has applied it all and lists the same tasks.
    let addrs = c.live_addrs();
    wait_replicas_agree(&c.api, &addrs, Duration::from_secs(20)).await?;
    for addr in &addrs {
        let tasks = c.api.tasks(addr, Some(Q), None).await?;
        ensure!(tasks.len() == acked.len(), "{addr} lists {} tasks, {} were acknowledged", tasks.len(), acked.len());
        all_succeeded(&tasks, &acked)?;
    }

    // Each history: one success, under the lease that was current.
    let all = details(&c.api, &addrs, &acked).await?;
    for d in &all {
        succeeded_once(d)?;
        let last_lease = d.history.iter().rev().find_map(|e| match e.what {
            EventKind::Leased { attempt } => Some(attempt),
            _ => None,
        });
        ensure!(
            last_lease == Some(d.task.attempt),
            "task {}: attempt {} but last lease {last_lease:?}",
            d.task.id,
            d.task.attempt
        );
    }
    let spread = leases_by_node(&all);
    say(format!("FIGURE leases per node: {spread:?}"));
    let nodes: BTreeSet<u64> = spread.keys().copied().collect();
    ensure!(nodes == c.ids().into_iter().collect(), "only nodes {nodes:?} ran tasks: {spread:?}");
    Ok(())
}

/// Exec tasks: exit 0 succeeds (with the last JSON line of stdout as the
/// result), exit 75 on the first attempt is retried and succeeds on the
/// second, exit 1 is dead at once with the exit code in its error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exec_tasks_succeed_retry_and_die() {
    let mut c = Cluster::start(3).await.expect("starting 3 nodes");
    let result = exec(&mut c).await;
    c.finish(result);
}

async fn exec(c: &mut Cluster) -> anyhow::Result<()> {
    const Q: &str = "exec";
    let leader = c.leader().await?;
    let follower = c.live_ids().into_iter().find(|&id| id != leader).context("no follower")?;
    let addr = c.addr(follower);
    c.api.configure_queue(&addr, Q, json!({"backoff_base_ms": 50, "backoff_cap_ms": 100})).await?;
    let exec = |script: &str| json!({"queue": Q, "kind": "exec", "payload": {"command": ["sh", "-c", script]}});
    let specs = [
        exec("exit 0"),
        exec(
            r#"if [ "$SKEIN_ATTEMPT" = 1 ]; then echo 'busy, later' >&2; exit 75; fi; echo "{\"attempt\": $SKEIN_ATTEMPT}""#,
        ),
        exec("echo 'broken input' >&2; exit 1"),
        exec(r#"echo noise; echo '{"rows": 3}'"#),
    ];
    let ids = c.api.enqueue(&addr, &specs).await?;
    let [ok, retried, failed, with_result] = ids[..] else { anyhow::bail!("expected 4 ids, got {ids:?}") };

    let ended = wait_for(Duration::from_secs(30), "the exec tasks to end", async || {
        let mut out = Vec::new();
        for &id in &ids {
            let d = c.api.task(&addr, id).await?;
            if !d.task.status.is_terminal() {
                return Ok(None);
            }
            out.push(d);
        }
        Ok(Some(out))
    })
    .await?;
    let by_id: BTreeMap<u64, _> = ended.into_iter().map(|d| (d.task.id.0, d)).collect();

    let d = &by_id[&ok];
    succeeded_once(d)?;
    ensure!(d.task.attempt == 1, "exit 0 took {} attempts", d.task.attempt);

    let d = &by_id[&retried];
    succeeded_once(d)?;
    ensure!(d.task.attempt == 2, "the exit-75 task succeeded at attempt {}, not 2: {:?}", d.task.attempt, d.history);
    let failures: Vec<&str> = d
        .history
        .iter()
        .filter_map(|e| match &e.what {
            EventKind::Failed { error, .. } => Some(error.as_str()),
            _ => None,
        })
        .collect();
    ensure!(failures.len() == 1 && failures[0].contains("75"), "expected one failed event (exit 75): {:?}", d.history);
    ensure!(d.result == Some(json!({"attempt": 2})), "result of the retried task: {:?}", d.result);

    let d = &by_id[&failed];
    ensure!(d.task.status == TaskStatus::Dead, "exit 1 left the task {}", d.task.status);
    ensure!(d.task.attempt == 1, "a permanent failure was retried: attempt {}", d.task.attempt);
    let error = d.task.last_error.as_deref().unwrap_or_default();
    ensure!(error.contains("exit code 1"), "last_error {error:?} does not mention exit code 1");
    ensure!(d.history.iter().any(|e| matches!(e.what, EventKind::Dead { .. })), "no dead event: {:?}", d.history);

    let d = &by_id[&with_result];
    succeeded_once(d)?;
    ensure!(d.result == Some(json!({"rows": 3})), "result {:?}, expected the last JSON line of stdout", d.result);
    Ok(())
}

/// The error of a failed exec task ends with the program's stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exec_error_carries_stderr() {
    let mut c = Cluster::start(3).await.expect("starting 3 nodes");
    let result = exec_stderr(&mut c).await;
    c.finish(result);
}

async fn exec_stderr(c: &mut Cluster) -> anyhow::Result<()> {
    const Q: &str = "exec-stderr";
    let addr = c.addr(c.leader().await?);
    let spec =
        json!({"queue": Q, "kind": "exec", "payload": {"command": ["sh", "-c", "echo 'broken input' >&2; exit 1"]}});
    let ids = c.api.enqueue(&addr, &vec![spec; 20]).await?;
    wait_settled(&c.api, &addr, Q, false, Duration::from_secs(30)).await?;
    let tasks = c.api.tasks(&addr, Some(Q), None).await?;
    ensure!(tasks.len() == ids.len(), "{} tasks listed, {} enqueued", tasks.len(), ids.len());
    let errors: Vec<String> = tasks.iter().map(|t| t.last_error.clone().unwrap_or_default()).collect();
    let without: Vec<&String> = errors.iter().filter(|e| !e.contains("broken input")).collect();
    ensure!(
        without.is_empty(),
        "{} of {} errors lack the program's stderr ('broken input'), e.g. {:?}",
        without.len(),
        errors.len(),
        without[0]
    );
    Ok(())
}

/// Under load (sleep 50 ms tasks): a 4th node joins and runs tasks; a
/// voter is drained and removed (the learner is promoted in its place),
/// with no task lost or left leased; then the whole cluster is stopped with
/// SIGTERM and restarted on its data, and every task and count is as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn membership_changes_under_load_then_full_restart() {
    let mut c = Cluster::start(3).await.expect("starting 3 nodes");
    let result = membership(&mut c).await;
    c.finish(result);
}

async fn membership(c: &mut Cluster) -> anyhow::Result<()> {
    const Q: &str = "elastic";
    // Short leases, so that a lease lost with a node is soon back.
    c.api.configure_queue(&c.addr(c.leader().await?), Q, json!({"lease_ms": 5000})).await?;
    let spec = json!({"queue": Q, "kind": "sleep", "payload": {"ms": 50}});
    let load = Load::start(c.api.clone(), c.live_addrs(), spec, 10, Duration::from_millis(100));
    wait_until(Duration::from_secs(15), "the first tasks acknowledged", async || Ok(load.acked() >= 50)).await?;

    // A 4th node joins and takes tasks.
    let joining = Instant::now();
    let new = c.add_node().await?;
    say(format!("FIGURE node {new} joined (ready and a member) in {:?}", joining.elapsed()));
    load.set_targets(c.live_addrs());
    let new_addr = c.addr(new);
    wait_until(Duration::from_secs(20), &format!("node {new} to hold a lease"), async || {
        let s = c.status().await?;
        if s.nodes.iter().any(|n| n.id == new && n.leases_held > 0) {
            return Ok(true);
        }
        let leased = c.api.tasks(&new_addr, Some(Q), Some(TaskStatus::Leased)).await?;
        Ok(leased.iter().any(|t| t.lease.as_ref().is_some_and(|l| l.node == new)))
    })
    .await?;
    say(format!("node {new} runs tasks"));

    // Drain a voter that does not lead, then remove it.
    let leader = c.leader().await?;
    let gone = c.live_ids().into_iter().find(|&id| id != leader && id != new).context("no voter to drain")?;
    load.set_targets(c.live_addrs().into_iter().filter(|a| *a != c.addr(gone)).collect());
    let leader_addr = c.addr(leader);
    let draining = Instant::now();
    c.api.drain(&leader_addr, gone).await?;
    let drained_ms = now_ms();
    wait_until(Duration::from_secs(20), &format!("node {gone} drained (no leases)"), async || {
        let s = c.status().await?;
        let n = s.nodes.iter().find(|n| n.id == gone).context("drained node not in the membership")?;
        Ok(n.draining && n.leases_held == 0)
    })
    .await?;
    say(format!("FIGURE node {gone} drained in {:?}", draining.elapsed()));
    c.api.remove(&leader_addr, gone).await?;
    let remaining: Vec<u64> = c.live_ids().into_iter().filter(|&id| id != gone).collect();
    c.wait_members(&remaining, 3, Duration::from_secs(30)).await.context("after the removal, node 4 promoted")?;
    say(format!(
        "FIGURE node {gone} removed and node {new} promoted to voter {:?} after the drain",
        draining.elapsed()
    ));
    // It stops by itself (see removed_node_stops_and_gets_no_more_work).
    let status = c.wait_exit(gone, Duration::from_secs(15)).await.context("the removed node did not stop by itself")?;
    ensure!(status.success(), "the removed node {gone} exited with {status}");

    // A little more load on the new membership, then let it all finish.
    let before = load.acked();
    wait_until(Duration::from_secs(15), "more tasks acknowledged", async || Ok(load.acked() >= before + 100)).await?;
    let report = load.stop().await?;
    say(format!(
        "load: {} tasks acknowledged in {} batches, {} failed requests",
        report.acked.len(),
        report.batches,
        report.errors.len()
    ));
    let leader = c.leader().await?;
    wait_settled(&c.api, &c.addr(leader), Q, true, Duration::from_secs(60)).await?;
    let tasks = c.api.tasks(&c.addr(leader), Some(Q), None).await?;
    all_succeeded(&tasks, &report.acked)?;
    let ids: Vec<u64> = tasks.iter().map(|t| t.id.0).collect();
    let all = details(&c.api, &c.live_addrs(), &ids).await?;
    for d in &all {
        succeeded_once(d)?;
        for e in &d.history {
            if matches!(e.what, EventKind::Leased { .. }) && e.node == Some(gone) {
                ensure!(
                    e.at_ms <= drained_ms,
                    "task {} leased to draining or removed node {gone} at {} (drained at {drained_ms})",
                    d.task.id,
                    e.at_ms
                );
            }
        }
    }
    let spread = leases_by_node(&all);
    say(format!("FIGURE leases per node: {spread:?}"));
    ensure!(spread.get(&new).copied().unwrap_or(0) > 0, "the new node {new} ran nothing: {spread:?}");

    // Stop everything, start it again on the same data: nothing changes.
    let addrs = c.live_addrs();
    let counts_before = wait_replicas_agree(&c.api, &addrs, Duration::from_secs(20)).await?;
    let tasks_before = all_tasks(c, &c.addr(leader)).await?;
    let stopping = Instant::now();
    for id in c.live_ids() {
        c.term(id)?;
    }
    for id in c.live_ids() {
        let status = c.wait_exit(id, Duration::from_secs(30)).await?;
        ensure!(status.success(), "node {id} exited with {status} after SIGTERM");
    }
    say(format!("FIGURE all nodes stopped (SIGTERM) in {:?}", stopping.elapsed()));
    let restarting = Instant::now();
    for &id in &remaining {
        c.restart(id)?;
    }
    for &id in &remaining {
        c.wait_ready(id, Duration::from_secs(30)).await?;
    }
    let leader = c.wait_leader(Duration::from_secs(10)).await?;
    say(format!("FIGURE restarted, leader {leader}, in {:?}", restarting.elapsed()));
    let counts_after = wait_replicas_agree(&c.api, &addrs, Duration::from_secs(30)).await?;
    ensure!(counts_after == counts_before, "counts before the stop {counts_before:?}, after {counts_after:?}");
    for addr in &addrs {
        let tasks_after = all_tasks(c, addr).await?;
        ensure!(tasks_after == tasks_before, "{addr} lists other tasks after the restart than before");
    }
    replicas_identical(c, &addrs).await?;
    Ok(())
}

/// Every task of every queue: id → (status, attempt, finished_ms).
async fn all_tasks(c: &Cluster, addr: &str) -> anyhow::Result<BTreeMap<u64, (TaskStatus, u32, Option<u64>)>> {
    Ok(c.api
        .tasks(addr, None, None)
        .await?
        .into_iter()
        .map(|t| (t.id.0, (t.status, t.attempt, t.finished_ms)))
        .collect())
}

/// Two nodes at the same applied index have the same state digest.
async fn replicas_identical(c: &Cluster, addrs: &[String]) -> anyhow::Result<()> {
    let mut seen: BTreeMap<u64, (String, String)> = BTreeMap::new();
    let outcome = wait_for(Duration::from_secs(15), "two nodes at the same applied index", async || {
        let samples = futures::future::join_all(addrs.iter().map(|a| c.api.digest(a))).await;
        for (addr, sample) in addrs.iter().zip(samples) {
            let (Some(index), digest) = sample? else { continue };
            match seen.get(&index) {
                Some((other, d)) if other != addr && *d != digest => {
                    return Ok(Some(Err(format!("at index {index}: {other} has {d}, {addr} has {digest}"))))
                }
                Some((other, _)) if other != addr => return Ok(Some(Ok(index))),
                Some(_) => {}
                None => {
                    seen.insert(index, (addr.clone(), digest));
                }
            }
        }
        Ok(None)
    })
    .await?;
    match outcome {
        Ok(index) => {
            say(format!("replicas agree: equal digests at applied index {index}"));
            Ok(())
        }
        Err(why) => anyhow::bail!("replicas diverge: {why}"),
    }
}

/// A drained node, once removed from the membership, is leased nothing
/// more and stops by itself (lib.rs `exit_when_removed`) instead of running
/// on and campaigning as a voter.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn removed_node_stops_and_gets_no_more_work() {
    let mut c = Cluster::start(3).await.expect("starting 3 nodes");
    let result = removed_node(&mut c).await;
    c.finish(result);
}

async fn removed_node(c: &mut Cluster) -> anyhow::Result<()> {
    const Q: &str = "removal";
    let leader = c.leader().await?;
    let gone = c.live_ids().into_iter().find(|&id| id != leader).context("no follower")?;
    let leader_addr = c.addr(leader);
    let spec = json!({"queue": Q, "kind": "sleep", "payload": {"ms": 50}});
    let targets = c.live_addrs().into_iter().filter(|a| *a != c.addr(gone)).collect();
    let load = Load::start(c.api.clone(), targets, spec, 10, Duration::from_millis(100));
    wait_until(Duration::from_secs(15), "the first tasks acknowledged", async || Ok(load.acked() >= 50)).await?;
    c.api.drain(&leader_addr, gone).await?;
    wait_until(Duration::from_secs(20), &format!("node {gone} drained (no leases)"), async || {
        let s = c.status().await?;
        Ok(s.nodes.iter().any(|n| n.id == gone && n.draining && n.leases_held == 0))
    })
    .await?;
    let removing_ms = now_ms();
    c.api.remove(&leader_addr, gone).await?;
    let remaining: Vec<u64> = c.live_ids().into_iter().filter(|&id| id != gone).collect();
    c.wait_members(&remaining, 2, Duration::from_secs(30)).await?;
    let removed = Instant::now();
    let gone_addr = c.addr(gone);
    let exited = c.wait_exit(gone, Duration::from_secs(15)).await;
    let mut problems = Vec::new();
    if let Ok(status) = &exited {
        say(format!(
            "FIGURE removed node {gone} exited by itself ({status}) {:?} after the membership change",
            removed.elapsed()
        ));
        if !status.success() {
            problems.push(format!("the removed node {gone} exited with {status}, not 0"));
        }
        // Restarted on its data directory, it may still believe it is a
        // member (the log stopped coming before the final membership): it
        // finds no leader, asks the members it knows, and stops again.
        c.restart(gone)?;
        let restarted = Instant::now();
        match c.wait_exit(gone, Duration::from_secs(20)).await {
            Ok(status) if status.success() => {
                say(format!("FIGURE removed node {gone}, restarted, stopped again in {:?}", restarted.elapsed()))
            }
            Ok(status) => problems.push(format!("the removed node {gone}, restarted, exited with {status}, not 0")),
            Err(_) => {
                problems.push(format!(
                    "the removed node {gone}, restarted on its data, still runs {:?} later",
                    restarted.elapsed()
                ));
                c.term(gone)?;
                c.wait_exit(gone, Duration::from_secs(30)).await?;
            }
        }
    } else {
        let view = c.api.cluster(&gone_addr).await?;
        let members: Vec<String> = view.nodes.iter().map(|n| format!("{}:{}", n.id, n.role)).collect();
        problems.push(format!(
            "node {gone} still runs {:?} after its removal; it sees term {} (the cluster's is {}), leader {:?}, members {members:?}",
            removed.elapsed(),
            view.term,
            c.status().await?.term,
            view.leader
        ));
        c.term(gone)?;
        c.wait_exit(gone, Duration::from_secs(30)).await?;
    }
    let report = load.stop().await?;
    wait_settled(&c.api, &leader_addr, Q, true, Duration::from_secs(60)).await?;
    let tasks = c.api.tasks(&leader_addr, Some(Q), None).await?;
    all_succeeded(&tasks, &report.acked)?;
    let ids: Vec<u64> = tasks.iter().map(|t| t.id.0).collect();
    let all = details(&c.api, &c.live_addrs(), &ids).await?;
    let late: Vec<String> = all
        .iter()
        .flat_map(|d| d.history.iter().map(move |e| (d.task.id, e)))
        .filter(|(_, e)| matches!(e.what, EventKind::Leased { .. }) && e.node == Some(gone) && e.at_ms >= removing_ms)
        .map(|(id, e)| format!("task {id} at +{} ms", e.at_ms - removing_ms))
        .collect();
    if !late.is_empty() {
        problems.push(format!(
            "{} tasks leased to node {gone} after its removal began: {:?}",
            late.len(),
            &late[..late.len().min(5)]
        ));
    }
    ensure!(problems.is_empty(), "{}", problems.join("; "));
    Ok(())
}
