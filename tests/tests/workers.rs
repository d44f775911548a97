//! Worker nodes: `skein-node --role worker` processes outside Raft that
//! lease, heartbeat and complete over RPC to the members. Three members that
//! run nothing (`--slots 0`) and three workers that run everything: the
//! workers take every task, survive kill -9 and SIGSTOP (their leases expire
//! and the work runs elsewhere), one drains on SIGTERM and leaves, a
//! vanished one is removed after `--worker-silence`, and the Raft
//! membership stays the three members throughout.
//!
//! Needs the binaries: `cargo build --workspace --bins` first.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{ensure, Context};
use serde_json::json;
use skein_raft::api::ClusterStatus;
use skein_raft::fsm::{EventKind, TaskStatus};
use skein_testkit::{wait_until, Cluster, Spec};
use skein_tests::checks::{details, say, succeeded_once, wait_settled};

const Q: &str = "fleet";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_outside_raft_run_the_tasks_and_come_and_go() {
    let mut spec = Spec::new(3);
    spec.slots = 0;
    spec.args = vec!["--worker-silence".into(), "5".into()];
    let mut c = spec.start().await.expect("starting 3 members");
    let result = fleet(&mut c).await;
    c.finish(result);
}

/// The Raft members (voters and learners) in `s`, and the workers.
fn split(s: &ClusterStatus) -> (BTreeSet<u64>, BTreeSet<u64>) {
    let members = s.nodes.iter().filter(|n| n.role != "worker").map(|n| n.id).collect();
    let workers = s.nodes.iter().filter(|n| n.role == "worker").map(|n| n.id).collect();
    (members, workers)
}

async fn fleet(c: &mut Cluster) -> anyhow::Result<()> {
    let members: BTreeSet<u64> = [1, 2, 3].into();
    let leader = c.leader().await?;
    let addr = c.addr(leader);
    c.api.configure_queue(&addr, Q, json!({"lease_ms": 3000, "backoff_base_ms": 100, "backoff_cap_ms": 500})).await?;
    for id in [101, 102, 103] {
        c.add_worker(id, &["--slots", "2"]).await.with_context(|| format!("starting worker {id}"))?;
    }
    let s = c.status().await?;
    ensure!(split(&s) == (members.clone(), [101, 102, 103].into()), "after the workers joined: {:?}", split(&s));
    say("3 workers registered; the Raft membership is still the 3 members");

    // Work for all: 2 slots each, tasks of 1.5 s.
    let spec = json!({"queue": Q, "kind": "sleep", "payload": {"ms": 1500}});
    let mut ids = c.api.enqueue(&addr, &vec![spec.clone(); 18]).await?;
    wait_until(Duration::from_secs(15), "every worker to hold a lease", async || {
        let s = c.status().await?;
        Ok([101, 102, 103].iter().all(|w| s.nodes.iter().any(|n| n.id == *w && n.leases_held > 0)))
    })
    .await?;
    say("every worker holds leases");

    // kill -9 one worker and freeze another past its leases' 3 s.
    c.kill9(101)?;
    c.sigstop(102)?;
    say("worker 101 killed, worker 102 stopped");
    tokio::time::sleep(Duration::from_secs(5)).await;
    c.sigcont(102)?;
    say("worker 102 resumed");
    // The vanished worker is removed after its silence; the frozen one was
    // silent as long, so it is removed too, and it stops on its own.
    wait_until(Duration::from_secs(20), "worker 101 removed after its silence", async || {
        Ok(!split(&c.status().await?).1.contains(&101))
    })
    .await?;
    say("worker 101 removed after --worker-silence");

    // Meanwhile 103 runs the rest; everything ends, each task once.
    ids.extend(c.api.enqueue(&addr, &vec![spec.clone(); 6]).await?);
    wait_settled(&c.api, &addr, Q, true, Duration::from_secs(90)).await?;
    let all = details(&c.api, &[addr.clone()], &ids).await?;
    let mut ran_on = BTreeSet::new();
    for d in &all {
        let won = succeeded_once(d)?;
        ran_on.insert(won.node.context("a success names its node")?);
        for e in &d.history {
            if let (EventKind::Leased { .. }, Some(n)) = (&e.what, e.node) {
                ensure!(!members.contains(&n), "task {} was leased to member {n}, which has no slots", d.task.id);
            }
        }
    }
    say(format!("{} tasks succeeded once each, on workers {ran_on:?}", all.len()));
    ensure!(ran_on.contains(&103), "worker 103 ran nothing: {ran_on:?}");

    // SIGTERM drains worker 103: it finishes what it runs, leaves, exits 0.
    let more = c.api.enqueue(&addr, &vec![json!({"queue": Q, "kind": "sleep", "payload": {"ms": 800}}); 2]).await?;
    wait_until(Duration::from_secs(10), "worker 103 to hold a lease", async || {
        Ok(c.status().await?.nodes.iter().any(|n| n.id == 103 && n.leases_held > 0))
    })
    .await?;
    c.term(103)?;
    let status = c.wait_exit(103, Duration::from_secs(40)).await?;
    ensure!(status.success(), "worker 103 exited with {status} after SIGTERM");
    let s = c.status().await?;
    ensure!(!split(&s).1.contains(&103), "worker 103 left, but the cluster still lists it: {:?}", split(&s));
    let drained = details(&c.api, &[addr.clone()], &more).await?;
    for d in &drained {
        ensure!(d.task.status == TaskStatus::Succeeded, "task {} is {} after 103's drain", d.task.id, d.task.status);
    }
    say("worker 103 drained on SIGTERM: its tasks succeeded, it left and exited 0");

    let s = c.status().await?;
    ensure!(split(&s).0 == members, "the Raft membership changed: {:?}", split(&s).0);
    Ok(())
}

/// Three members started at once with `--bootstrap-expect 3`, each naming
/// all three in `--join` (itself included, as a StatefulSet's pods do): one
/// cluster forms. A member then loses its data directory and restarts with
/// the same flags: it joins that cluster again instead of starting a
/// second one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bootstrap_expect_forms_one_cluster_and_a_wiped_member_rejoins_it() {
    let mut spec = Spec::free(3).expect("free ports");
    spec.bootstrap_expect = true;
    let mut c = spec.start().await.expect("starting 3 members with --bootstrap-expect 3");
    let result = wiped(&mut c).await;
    c.finish(result);
}

async fn wiped(c: &mut Cluster) -> anyhow::Result<()> {
    let members: BTreeSet<u64> = [1, 2, 3].into();
    let s = c.status().await?;
    ensure!(split(&s).0 == members, "the cluster formed with {:?}", split(&s).0);
    let leader = c.leader().await?;
    say(format!("one cluster of 3 formed; node {leader} leads"));
    let spec = json!({"queue": Q, "kind": "noop", "payload": {}});
    let ids = c.api.enqueue(&c.addr(leader), &vec![spec; 20]).await?;

    // A follower loses its data directory and restarts with the same flags.
    let gone = c.live_ids().into_iter().find(|&id| id != leader).context("a follower")?;
    c.kill9(gone)?;
    let data = c.node(gone).data_dir();
    std::fs::remove_dir_all(&data)?;
    c.restart(gone)?;
    c.wait_ready(gone, Duration::from_secs(30)).await?;
    say(format!("node {gone} restarted on an empty data directory"));
    // It follows the one cluster, and has its tasks again.
    let addr = c.addr(gone);
    wait_until(Duration::from_secs(30), &format!("node {gone} to follow the cluster"), async || {
        let mine = c.api.cluster(&addr).await?;
        let theirs = c.status().await?;
        let ok = mine.leader == theirs.leader && split(&mine).0 == members;
        if !ok {
            say(format!(
                "node {gone} sees leader {:?} members {:?}; the others: leader {:?}",
                mine.leader,
                split(&mine).0,
                theirs.leader
            ));
        }
        Ok(ok)
    })
    .await?;
    let all = details(&c.api, &[addr.clone()], &ids).await?;
    ensure!(all.len() == ids.len(), "node {gone} knows {} of the {} tasks", all.len(), ids.len());
    ensure!(c.status().await?.term >= s.term, "the term went back");
    say(format!("node {gone} rejoined the cluster and has its {} tasks again", all.len()));
    Ok(())
}

/// Three voters and a standby learner (`--voters 3`, a 4th member): a voter
/// killed for good is replaced by the learner once the leader has not
/// reached it for `--replace-voter-after`, and leaves the membership; the
/// cluster keeps three voters and takes writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_voter_gone_for_good_is_replaced_by_the_standby_learner() {
    let mut spec = Spec::new(4);
    spec.voters = Some(3);
    spec.args = vec!["--replace-voter-after".into(), "3".into()];
    let mut c = spec.start().await.expect("starting 3 voters and a learner");
    let result = replaced(&mut c).await;
    c.finish(result);
}

async fn replaced(c: &mut Cluster) -> anyhow::Result<()> {
    let leader = c.leader().await?;
    let s = c.status().await?;
    let learner = s.nodes.iter().find(|n| n.role == "learner").map(|n| n.id).context("a standby learner")?;
    let dead = s
        .nodes
        .iter()
        .find(|n| n.role == "voter" && n.id != leader)
        .map(|n| n.id)
        .context("a voter that does not lead")?;
    c.kill9(dead)?;
    let started = std::time::Instant::now();
    say(format!("voter {dead} killed for good; node {learner} is the standby learner"));
    let left: Vec<u64> = [1, 2, 3, 4].into_iter().filter(|id| *id != dead).collect();
    c.wait_members(&left, 3, Duration::from_secs(30)).await?;
    say(format!("FIGURE node {learner} replaced voter {dead} {:?} after the kill", started.elapsed()));
    let ids = c.api.enqueue(&c.addr(c.leader().await?), &[json!({"queue": Q, "kind": "noop", "payload": {}})]).await?;
    ensure!(ids.len() == 1, "the cluster takes writes after the replacement");
    Ok(())
}
