//! What only the leader does, on a timer: take back expired leases, forget
//! ended tasks past their retention, promote caught-up learners to voters
//! while the cluster has fewer voters than it aims for, and keep the state
//! machine's removed nodes in line with the membership.
//!
//! Each duty is a command through the log, so a new leader picks up where
//! the old one stopped; none of them needs state of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::ChangeMembers;
use skein_raft::fsm::{Command, Response, TaskId, TaskStatus};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::app::SharedApp;
use crate::metrics::Metrics;
use crate::proposer::now_ms;

const TICK: Duration = Duration::from_millis(200);
const GC_EVERY: Duration = Duration::from_secs(60);
/// A learner this close to the leader's last log index counts as caught up.
const CAUGHT_UP_ENTRIES: u64 = 100;

pub async fn run(app: SharedApp, shutdown: CancellationToken) {
    let mut last_gc = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(TICK) => {}
        }
        if !app.is_leader() {
            continue;
        }
        let due = app.store.state().next_expiry_ms().is_some_and(|at| at <= now_ms());
        if due {
            // The leases as they were, for the log lines: the sweep ends them.
            let leases: BTreeMap<TaskId, (String, u32, u64, u64)> = app
                .store
                .state()
                .leases_due(now_ms())
                .into_iter()
                .filter_map(|t| {
                    Some((t.id, (t.queue.to_string(), t.attempt, t.lease.as_ref()?.token.0, t.lease.as_ref()?.node)))
                })
                .collect();
            match app.proposer.propose(Command::ExpireLeases).await {
                Ok(Response::Expired(tasks)) if !tasks.is_empty() => {
                    for (id, status) in &tasks {
                        let (queue, attempt, token, node) = leases.get(id).cloned().unwrap_or_default();
                        warn!(task_id = id.0, attempt, token, node_id = node, %status, "lease expired");
                        let m = &app.metrics;
                        match status {
                            TaskStatus::Dead => Metrics::count(&m.dead, vec![("queue", queue)], 1),
                            _ => Metrics::count(&m.retries, vec![("queue", queue), ("cause", "expired".into())], 1),
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "expiring leases failed"),
            }
        }
        if last_gc.elapsed() >= GC_EVERY {
            last_gc = Instant::now();
            if let Ok(Response::Collected { tasks }) = app.proposer.propose(Command::CollectGarbage).await {
                if tasks > 0 {
                    info!(tasks, "forgot ended tasks past retention");
                }
            }
        }
        promote_learners(&app).await;
        reconcile_removed(&app).await;
    }
}

/// The state machine refuses nodes removed from the membership
/// (`RemoveNode`, proposed by the removal itself) and accepts them again
/// when they rejoin (`AdmitNode`, proposed by the join). Should the leader
/// that changed the membership have stopped before proposing those (or
/// removed itself), this catches up: a node the state machine knows
/// (it leased or heartbeated) that the membership no longer lists is
/// removed; a removed node the membership lists again is admitted.
///
/// The applied state is read before the membership: the membership read
/// after is at least as new, and a removal changes the membership before
/// its `RemoveNode` and a join before its node can heartbeat, so what this
/// sees in that order is never a change on its way, only one left undone.
async fn reconcile_removed(app: &SharedApp) {
    let (known, removed): (Vec<u64>, Vec<u64>) = {
        let state = app.store.state();
        (state.nodes().keys().copied().collect(), state.removed_nodes().iter().copied().collect())
    };
    let members: BTreeSet<u64> =
        app.raft.metrics().borrow().membership_config.membership().nodes().map(|(id, _)| *id).collect();
    for node in known.into_iter().filter(|id| !members.contains(id)) {
        info!(
            node_id = node,
            "node left the membership but still had its record: handing back its leases and refusing it"
        );
        if let Err(e) = app.proposer.propose(Command::RemoveNode { node }).await {
            warn!(node_id = node, error = %e, "removing node from the state machine failed; will retry");
        }
    }
    for node in removed.into_iter().filter(|id| members.contains(id)) {
        info!(node_id = node, "removed node is a member again: accepting it");
        if let Err(e) = app.proposer.propose(Command::AdmitNode { node }).await {
            warn!(node_id = node, error = %e, "admitting node failed; will retry");
        }
    }
}

/// Promotes caught-up learners, one at a time, while voters < the target.
async fn promote_learners(app: &SharedApp) {
    let (voters, learners, matched, last_log) = {
        let m = app.raft.metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let learners: Vec<u64> = membership.learner_ids().collect();
        let matched = m.replication.clone().unwrap_or_default();
        (voters, learners, matched, m.last_log_index.unwrap_or(0))
    };
    if voters.len() >= app.config.voters || learners.is_empty() {
        return;
    }
    let caught_up = learners
        .into_iter()
        .find(|id| matched.get(id).and_then(|l| l.as_ref()).is_some_and(|l| l.index + CAUGHT_UP_ENTRIES >= last_log));
    if let Some(id) = caught_up {
        info!(node_id = id, voters = voters.len() + 1, target = app.config.voters, "promoting learner to voter");
        let ids: BTreeSet<u64> = [id].into();
        if let Err(e) = app.raft.change_membership(ChangeMembers::AddVoterIds(ids), false).await {
            warn!(node_id = id, error = %e, "promotion failed; will retry");
        }
    }
}
