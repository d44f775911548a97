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

use crate::clock::now_ms;
use crate::cluster::app::SharedApp;
use crate::metrics::Metrics;

const TICK: Duration = Duration::from_millis(200);
const GC_EVERY: Duration = Duration::from_secs(60);
/// A learner this close to the leader's last log index counts as caught up.
const CAUGHT_UP_ENTRIES: u64 = 100;

pub async fn run(app: SharedApp, shutdown: CancellationToken) {
    let mut schedule = Schedule::new(Instant::now());
    let mut heard = VotersHeard::default();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(TICK) => {}
        }
        if !app.is_leader() {
            continue;
        }
        let next_expiry = app.store.state().next_expiry_ms();
        let due = schedule.due(Instant::now(), now_ms(), next_expiry);
        if due.expire {
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
        if due.collect {
            if let Ok(Response::Collected { tasks }) = app.proposer.propose(Command::CollectGarbage).await {
                if tasks > 0 {
                    info!(tasks, "forgot ended tasks past retention");
                }
            }
        }
        promote_learners(&app).await;
        replace_dead_voter(&app, &mut heard).await;
        reconcile_removed(&app).await;
    }
}

/// Which timed duties are due on a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// A lease has run out (by the leader's clock): sweep.
    pub expire: bool,
    /// [`GC_EVERY`] has passed since the last collection.
    pub collect: bool,
}

/// When the leader's timed duties are due: lease expiry as soon as the
/// earliest lease's expiry has passed, garbage collection every
/// [`GC_EVERY`] (counted from when this node started, then from each
/// collection). Promotions and the reconciliation of node records are
/// checked on every tick ([`learner_to_promote`], [`reconciliation`]).
#[derive(Debug)]
pub struct Schedule {
    last_gc: Instant,
}

impl Schedule {
    pub fn new(now: Instant) -> Schedule {
        Schedule { last_gc: now }
    }

    /// The duties due at `now` (`now_ms` by the wall clock the leases are
    /// stamped with), given the earliest lease expiry; a collection is
    /// counted as done once reported due.
    pub fn due(&mut self, now: Instant, now_ms: u64, next_expiry_ms: Option<u64>) -> Due {
        let collect = now.duration_since(self.last_gc) >= GC_EVERY;
        if collect {
            self.last_gc = now;
        }
        Due { expire: next_expiry_ms.is_some_and(|at| at <= now_ms), collect }
    }
}

/// The state machine refuses nodes removed from the membership
/// (`RemoveNode`, proposed by the removal itself) and accepts them again
/// when they rejoin (`AdmitNode`, proposed by the join). Should the leader
/// that changed the membership have stopped before proposing those (or
/// removed itself), this catches up: a node the state machine knows
/// (it leased or heartbeated) that the membership does not list, and that
/// has been silent for `--worker-silence`, is removed; a removed node the
/// membership lists again is admitted.
///
/// Workers are nodes the state machine knows that are not in Raft, so the
/// same rule removes a worker that vanished without leaving: a live worker
/// heartbeats every second and is never silent that long. Its leases
/// expire as usual long before.
///
/// The applied state is read before the membership: the membership read
/// after is at least as new, and a removal changes the membership before
/// its `RemoveNode` and a join before its node can heartbeat, so what this
/// sees in that order is never a change on its way, only one left undone.
async fn reconcile_removed(app: &SharedApp) {
    let (known, removed, clock): (Vec<(u64, u64)>, Vec<u64>, u64) = {
        let state = app.store.state();
        (
            state.nodes().values().map(|n| (n.id, n.last_heartbeat_ms)).collect(),
            state.removed_nodes().iter().copied().collect(),
            state.clock_ms(),
        )
    };
    let members: BTreeSet<u64> =
        app.raft.metrics().borrow().membership_config.membership().nodes().map(|(id, _)| *id).collect();
    // The state's clock lags the wall clock between commands: take the later.
    let now = clock.max(now_ms());
    let silence = app.config.worker_silence.as_millis() as u64;
    for command in reconciliation(&known, &removed, &members, now, silence) {
        match &command {
            Command::RemoveNode { node } => info!(
                node_id = node,
                silent_s = silence / 1000,
                "node outside the membership silent too long: handing back its leases and refusing it"
            ),
            Command::AdmitNode { node } => info!(node_id = node, "removed node is a member again: accepting it"),
            _ => {}
        }
        if let Err(e) = app.proposer.propose(command.clone()).await {
            warn!(command = command.name(), error = %e, "reconciling the node records failed; will retry");
        }
    }
}

/// What makes the state machine's node records agree with the membership:
/// `RemoveNode` for a node it knows (with when it was last heard, `known`)
/// that the membership does not list and that has been silent for
/// `silence_ms` at `now_ms`, `AdmitNode` for a removed node the membership
/// lists again.
pub fn reconciliation(
    known: &[(u64, u64)],
    removed: &[u64],
    members: &BTreeSet<u64>,
    now_ms: u64,
    silence_ms: u64,
) -> Vec<Command> {
    let remove = known
        .iter()
        .filter(|(id, heard)| !members.contains(id) && now_ms.saturating_sub(*heard) >= silence_ms)
        .map(|&(node, _)| Command::RemoveNode { node });
    let admit = removed.iter().filter(|id| members.contains(id)).map(|&node| Command::AdmitNode { node });
    remove.chain(admit).collect()
}

/// When this leader last saw each voter make progress: its matched log
/// index changed, or it had everything.
#[derive(Debug, Default)]
struct VotersHeard {
    seen: BTreeMap<u64, (Option<u64>, Instant)>,
}

/// A voter this leader has not reached for `--replace-voter-after` is
/// replaced by an up-to-date standby learner, in one membership change
/// (the learner becomes a voter, the dead voter leaves), then refused like
/// any removed node. A majority must still answer: this only runs on a
/// leader that can commit.
async fn replace_dead_voter(app: &SharedApp, heard: &mut VotersHeard) {
    let Some(after) = app.config.replace_voter_after else { return };
    let Replication { voters, learners, matched, last_log } = replication(app);
    let now = Instant::now();
    heard.seen.retain(|id, _| voters.contains(id));
    let mut dead = None;
    for &v in voters.iter().filter(|v| **v != app.id) {
        let index = matched.get(&v).copied().flatten();
        let entry = heard.seen.entry(v).or_insert((index, now));
        if entry.0 != index || index == Some(last_log) {
            *entry = (index, now);
        } else if now.duration_since(entry.1) >= after {
            dead = Some(v);
        }
    }
    let Some(dead) = dead else { return };
    let Some(standby) = learner_to_promote(0, 1, &learners, &matched_indexes(&matched), last_log) else { return };
    warn!(
        dead,
        standby,
        after_s = after.as_secs(),
        "a voter has not been reached for too long: replacing it with a standby learner"
    );
    let mut new_voters = voters.clone();
    new_voters.remove(&dead);
    new_voters.insert(standby);
    if let Err(e) = app.raft.change_membership(ChangeMembers::ReplaceAllVoters(new_voters), false).await {
        warn!(dead, standby, error = %e, "replacing the voter failed; will retry");
        return;
    }
    heard.seen.remove(&dead);
    if let Err(e) = app.leave_on_leader(dead).await {
        warn!(dead, error = %e, "the replaced voter is a learner now; removing it failed, will retry");
    }
}

/// The membership and replication progress as this leader sees them.
struct Replication {
    voters: BTreeSet<u64>,
    learners: Vec<u64>,
    /// Each follower's matched log index (`None`: nothing matched yet).
    matched: BTreeMap<u64, Option<u64>>,
    last_log: u64,
}

fn replication(app: &SharedApp) -> Replication {
    let m = app.raft.metrics();
    let m = m.borrow();
    let membership = m.membership_config.membership();
    Replication {
        voters: membership.voter_ids().collect(),
        learners: membership.learner_ids().collect(),
        matched: m.replication.iter().flatten().map(|(id, l)| (*id, l.as_ref().map(|l| l.index))).collect(),
        last_log: m.last_log_index.unwrap_or(0),
    }
}

fn matched_indexes(matched: &BTreeMap<u64, Option<u64>>) -> BTreeMap<u64, u64> {
    matched.iter().filter_map(|(id, i)| Some((*id, (*i)?))).collect()
}

/// Promotes caught-up learners, one at a time, while voters < the target.
async fn promote_learners(app: &SharedApp) {
    let Replication { voters, learners, matched, last_log } = replication(app);
    let matched = matched_indexes(&matched);
    let caught_up = learner_to_promote(voters.len(), app.config.voters, &learners, &matched, last_log);
    if let Some(id) = caught_up {
        info!(node_id = id, voters = voters.len() + 1, target = app.config.voters, "promoting learner to voter");
        let ids: BTreeSet<u64> = [id].into();
        if let Err(e) = app.raft.change_membership(ChangeMembers::AddVoterIds(ids), false).await {
            warn!(node_id = id, error = %e, "promotion failed; will retry");
        }
    }
}

/// The learner to promote to voter now, if any: while the cluster has
/// fewer voters than its target, the first learner (by id) whose matched
/// log index is within [`CAUGHT_UP_ENTRIES`] of the leader's last one. One
/// at a time: each promotion is a membership change of its own.
pub fn learner_to_promote(
    voters: usize,
    target: usize,
    learners: &[u64],
    matched: &BTreeMap<u64, u64>,
    last_log: u64,
) -> Option<u64> {
    if voters >= target {
        return None;
    }
    learners.iter().copied().find(|id| matched.get(id).is_some_and(|m| m + CAUGHT_UP_ENTRIES >= last_log))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duties_fall_due_on_time() {
        let start = Instant::now();
        let mut schedule = Schedule::new(start);
        let s = Duration::from_secs;
        // (seconds since start, wall ms, earliest expiry, expected)
        let steps: &[(u64, u64, Option<u64>, Due)] = &[
            (0, 1_000, None, Due { expire: false, collect: false }),
            (1, 1_000, Some(1_001), Due { expire: false, collect: false }),
            (2, 1_001, Some(1_001), Due { expire: true, collect: false }), // at its expiry
            (59, 5_000, Some(1_001), Due { expire: true, collect: false }),
            (60, 5_000, None, Due { expire: false, collect: true }), // a minute since start
            (61, 5_000, None, Due { expire: false, collect: false }), // counted from the last
            (119, 5_000, None, Due { expire: false, collect: false }),
            (120, 5_000, Some(4_000), Due { expire: true, collect: true }),
        ];
        for (secs, wall, expiry, want) in steps {
            assert_eq!(schedule.due(start + s(*secs), *wall, *expiry), *want, "at {secs} s");
        }
    }

    #[test]
    fn a_caught_up_learner_is_promoted_while_voters_are_short() {
        let matched = BTreeMap::from([(4, 1_000), (5, 950), (6, 10)]);
        // (voters, target, learners, leader's last index, expected)
        let cases: &[(usize, usize, &[u64], u64, Option<u64>)] = &[
            (1, 3, &[4, 5], 1_000, Some(4)),
            (2, 3, &[6, 5], 1_000, Some(5)), // 6 lags; 5 is within 100
            (2, 3, &[6], 1_000, None),       // nobody caught up yet
            (3, 3, &[4, 5], 1_000, None),    // enough voters
            (5, 3, &[4], 1_000, None),
            (1, 3, &[], 1_000, None),
            (1, 3, &[7], 1_000, None),    // not replicated to at all
            (1, 3, &[4], 1_100, Some(4)), // exactly 100 behind
            (1, 3, &[4], 1_101, None),
        ];
        for (voters, target, learners, last, want) in cases {
            assert_eq!(
                learner_to_promote(*voters, *target, learners, &matched, *last),
                *want,
                "{voters} voters of {target}, learners {learners:?}, last {last}"
            );
        }
    }

    #[test]
    fn node_records_follow_the_membership() {
        let members: BTreeSet<u64> = [1, 2, 3].into();
        let (now, silence) = (100_000, 60_000);
        let heard = |ids: &[u64], at: u64| ids.iter().map(|&id| (id, at)).collect::<Vec<_>>();
        let cases: Vec<(Vec<(u64, u64)>, &[u64], Vec<Command>)> = vec![
            (heard(&[1, 2, 3], 0), &[], vec![]),
            // Outside the membership and silent: removed; heard lately (a worker): kept.
            (heard(&[1, 2, 3, 4], 0), &[], vec![Command::RemoveNode { node: 4 }]),
            (heard(&[1, 2, 3, 4], now - 1_000), &[], vec![]),
            (heard(&[1, 2, 3, 4], now - silence), &[], vec![Command::RemoveNode { node: 4 }]),
            (heard(&[1, 2], 0), &[3], vec![Command::AdmitNode { node: 3 }]),
            (heard(&[1, 4], 0), &[2, 5], vec![Command::RemoveNode { node: 4 }, Command::AdmitNode { node: 2 }]),
            (vec![], &[7], vec![]), // removed and gone: nothing to do
        ];
        for (known, removed, want) in cases {
            assert_eq!(
                reconciliation(&known, removed, &members, now, silence),
                want,
                "known {known:?}, removed {removed:?}"
            );
        }
    }
}
