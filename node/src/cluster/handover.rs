//! Planned leader handover: a leader that stops (SIGTERM) first makes an
//! up-to-date voter take over, so that writes pause for a round trip or two
//! instead of a failure detection and an election.
//!
//! openraft 0.9 has no leadership transfer. What it offers is an election
//! started on a chosen voter (`trigger().elect()`, our `campaign` RPC), and
//! a voter grants its vote only if
//! - the candidate's last log id is at least its own, and
//! - its *leader lease* has expired: a voter that has heard from a leader
//!   (its vote is committed) rejects every vote request for
//!   `election_timeout_max` (800 ms) after its vote was last touched. A
//!   follower's vote is touched by every append and heartbeat; the
//!   leader's own only when it was elected.
//!
//! So the leader, which has led for longer than that, grants the chosen
//! voter its vote at once, provided its log holds nothing the voter lacks.
//! With 3 voters that vote and the candidate's own make a majority: the
//! handover takes one `campaign` call and one vote round. With 4 or more
//! the candidate needs followers too, whose lease lasts 800 ms past the
//! leader's last message, so the leader waits that long first.
//!
//! The steps ([`hand_over`]):
//! 1. stop this node's elections and heartbeats (`runtime_config`), so it
//!    does not take leadership back and followers' leases can run out;
//! 2. stop proposing ([`crate::cluster::proposer::Proposer::hold`]): the batches in
//!    flight are answered, new writes wait in the proposer's queue;
//! 3. wait until a voter has matched the leader's last log index
//!    ([`choose_successor`]);
//! 4. ask it to campaign, and wait until a new leader shows in the metrics,
//!    asking again every [`CAMPAIGN_RETRY`] (a vote can be refused while a
//!    lease still runs);
//! 5. release the held writes: they fail here with `NotLeader` and go to
//!    the new leader.
//!
//! If the deadline passes first, the node restores its heartbeats and
//! elections and stops as it would have without a handover (the others
//! elect a leader once it is silent). Appends that bypass the proposer (a
//! membership change racing the handover) can make the leader refuse its
//! vote; the retries and the candidate's own election timer cover that.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::ServerState;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::cluster::app::App;

/// How long a stopping leader tries to hand over before it stops anyway.
pub const HANDOVER_TIMEOUT: Duration = Duration::from_secs(3);
/// How long after a `campaign` without a new leader it is asked again.
pub const CAMPAIGN_RETRY: Duration = Duration::from_millis(300);
/// A follower's leader lease: openraft's `election_timeout_max` (see
/// `raft_config` in lib.rs), plus a margin.
const FOLLOWER_LEASE: Duration = Duration::from_millis(800 + 50);
/// How long after its writes stopped the leader waits for a voter to have
/// its whole log (and to accept a `campaign`).
pub const CATCH_UP_PATIENCE: Duration = Duration::from_millis(500);
/// How long a node that handed over waits for its held writes to be sent on.
const SEND_ON_TIMEOUT: Duration = Duration::from_millis(500);
/// How often the metrics are looked at when they do not change.
const POLL: Duration = Duration::from_millis(20);

/// What a handover did, and how long each part took.
#[derive(Debug, Clone)]
pub struct HandoverReport {
    /// This node, the leader that handed over.
    pub from: u64,
    /// The voter chosen and asked to campaign.
    pub chosen: u64,
    /// The leader that took over (the chosen one, unless another won).
    pub to: u64,
    pub term_before: u64,
    pub term_after: u64,
    /// The leader's last log index when it stopped proposing.
    pub log_index: Option<u64>,
    /// `campaign` calls made.
    pub campaigns: u32,
    /// From the start until the batches in flight were answered.
    pub writes_stopped: Duration,
    /// From the start until the chosen voter had the whole log.
    pub caught_up: Duration,
    /// From the start until a new leader showed.
    pub total: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("this node is not the leader")]
    NotLeader,
    #[error("there is no other voter to hand over to")]
    NoOtherVoter,
    #[error("gave up after {after:?} waiting for {waiting_for}")]
    TimedOut { waiting_for: String, after: Duration },
    #[error("raft stopped during the handover")]
    RaftStopped,
    /// Every other voter refused or could not be reached (a whole cluster
    /// stopping at once): nobody to hand over to.
    #[error("no other voter would campaign")]
    NoVoterAnswered,
}

impl HandoverError {
    /// Whether there was nothing to hand over (not a failure).
    pub fn not_needed(&self) -> bool {
        matches!(self, HandoverError::NotLeader | HandoverError::NoOtherVoter)
    }
}

/// The voter to hand leadership to: among `voters` other than `me`, one
/// whose matched log index (`matched`, the leader's replication metrics) is
/// the leader's last log index, the lowest id first, leaving out those in
/// `exclude` (their `campaign` call failed). Learners are not in `voters`;
/// `matched` may name nodes no longer in the membership, which are not
/// chosen. `None` while no voter has the whole log.
pub fn choose_successor(
    me: u64,
    voters: &BTreeSet<u64>,
    matched: &BTreeMap<u64, Option<u64>>,
    last_index: Option<u64>,
    exclude: &BTreeSet<u64>,
) -> Option<u64> {
    last_index?;
    voters
        .iter()
        .copied()
        .filter(|id| *id != me && !exclude.contains(id))
        .find(|id| matched.get(id).is_some_and(|m| *m == last_index))
}

/// Voters not known to run a release with the `campaign` RPC (0.2.0 on):
/// a 0.1.0 node cannot decode it and drops the connection, and with it the
/// Raft messages in flight on it. A cluster mid-upgrade (or rolling back)
/// then stops its leader the old way: the voters elect one once it is silent.
fn cannot_campaign(app: &App) -> BTreeSet<u64> {
    let membership = app.raft.metrics().borrow().membership_config.clone();
    let voters: Vec<u64> = membership.membership().voter_ids().collect();
    voters.into_iter().filter(|id| app.versions.get(*id).is_none_or(|r| r.format() < 2)).collect()
}

/// Votes a candidate needs besides its own and the old leader's, which it
/// gets at once: those must come from followers, whose leases must first
/// run out. 0 for 2 or 3 voters, 1 for 4 or 5, 2 for 6 or 7.
pub fn follower_votes_needed(voters: usize) -> usize {
    (voters / 2 + 1).saturating_sub(2)
}

/// The hook of `run`'s shutdown, right before Raft stops: hands over if
/// this node leads and has another voter, and says what happened.
pub async fn at_shutdown(app: &App) {
    if app.is_removed() {
        return;
    }
    match hand_over(app, Instant::now() + HANDOVER_TIMEOUT).await {
        Ok(r) => {
            send_on_held_writes(app).await;
            info!(
                node_id = r.from,
                from = r.from,
                chosen = r.chosen,
                to = r.to,
                term_before = r.term_before,
                term_after = r.term_after,
                log_index = r.log_index,
                campaigns = r.campaigns,
                writes_stopped_ms = r.writes_stopped.as_millis() as u64,
                caught_up_ms = r.caught_up.as_millis() as u64,
                total_ms = r.total.as_millis() as u64,
                "handed leadership over"
            )
        }
        Err(e) if e.not_needed() => debug!(reason = %e, "no leadership to hand over"),
        Err(e) => warn!(error = %e, "could not hand leadership over; stopping anyway, the voters will elect a leader"),
    }
}

/// After a handover, the writes held in the proposer are proposed: here
/// they fail with `NotLeader` and go on to the new leader. Waits (a little)
/// until that has happened, so that Raft's shutdown does not answer them
/// "shutting down" instead.
async fn send_on_held_writes(app: &App) {
    let deadline = Instant::now() + SEND_ON_TIMEOUT;
    // Twice at least: the proposer may hold a write it took from the queue
    // while it waited for a slot.
    for round in 0.. {
        // Taken once every batch proposed meanwhile has been answered.
        let Ok(Some(_hold)) = tokio::time::timeout_at(deadline, app.proposer.hold()).await else { return };
        if (round > 0 && app.proposer.queued() == 0) || Instant::now() >= deadline {
            return;
        }
    }
}

/// Hands this node's leadership to an up-to-date voter before `deadline`;
/// see the module docs. On failure, the node's heartbeats and elections are
/// as they were and held writes are proposed again.
pub async fn hand_over(app: &App, deadline: Instant) -> Result<HandoverReport, HandoverError> {
    let started = Instant::now();
    let (term_before, voters) = {
        let m = app.raft.metrics();
        let m = m.borrow();
        if m.current_leader != Some(app.id) || m.state != ServerState::Leader {
            return Err(HandoverError::NotLeader);
        }
        let voters: BTreeSet<u64> = m.membership_config.membership().voter_ids().collect();
        (m.current_term, voters)
    };
    if !voters.iter().any(|id| *id != app.id) {
        return Err(HandoverError::NoOtherVoter);
    }
    info!(node_id = app.id, term = term_before, voters = ?voters, "stopping: handing leadership over first");
    let runtime = app.raft.runtime_config();
    runtime.elect(false);
    runtime.heartbeat(false);
    let result = run(app, started, term_before, deadline).await;
    if result.is_err() {
        runtime.heartbeat(true);
        runtime.elect(true);
    }
    result
}

async fn run(
    app: &App,
    started: Instant,
    term_before: u64,
    deadline: Instant,
) -> Result<HandoverReport, HandoverError> {
    let timed_out = |what: &str| HandoverError::TimedOut { waiting_for: what.to_string(), after: started.elapsed() };
    // Held until this function returns: then whatever queued meanwhile is
    // proposed, and fails over to the new leader.
    let _hold = tokio::time::timeout_at(deadline, app.proposer.hold())
        .await
        .map_err(|_| timed_out("the writes in flight to be answered"))?;
    let writes_stopped = started.elapsed();
    let mut metrics = app.raft.metrics();
    let mut failed = cannot_campaign(app);
    let mut chosen: Option<u64> = None;
    let mut log_index = None;
    let mut caught_up = None;
    let mut campaigns = 0u32;
    let mut last_campaign: Option<Instant> = None;
    loop {
        let (leader, state, term, voters, matched, last) = {
            let m = metrics.borrow_and_update();
            let voters: BTreeSet<u64> = m.membership_config.membership().voter_ids().collect();
            let matched: BTreeMap<u64, Option<u64>> = m
                .replication
                .as_ref()
                .map(|r| r.iter().map(|(id, log_id)| (*id, log_id.map(|l| l.index))).collect())
                .unwrap_or_default();
            (m.current_leader, m.state, m.current_term, voters, matched, m.last_log_index)
        };
        if let Some(to) = leader.filter(|l| *l != app.id) {
            return Ok(HandoverReport {
                from: app.id,
                chosen: chosen.unwrap_or(to),
                to,
                term_before,
                term_after: term,
                log_index,
                campaigns,
                writes_stopped,
                caught_up: caught_up.unwrap_or_default(),
                total: started.elapsed(),
            });
        }
        if state == ServerState::Shutdown {
            return Err(HandoverError::RaftStopped);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(timed_out(match chosen {
                None => "a voter to catch up",
                Some(_) => "the chosen voter to be elected",
            }));
        }
        // Once the writes stopped, a live voter has the whole log within a
        // round or two (every committed entry is on a majority already):
        // none means the others are stopping or gone.
        if chosen.is_none() && now >= started + writes_stopped + CATCH_UP_PATIENCE {
            return Err(timed_out("a voter with the whole log that would campaign"));
        }
        let due = last_campaign.is_none_or(|at| now >= at + CAMPAIGN_RETRY);
        if chosen.is_none() && state == ServerState::Leader {
            chosen = choose_successor(app.id, &voters, &matched, last, &failed);
            if chosen.is_some() {
                log_index = last;
                caught_up = Some(started.elapsed());
            }
        }
        let wait_until = match chosen {
            // Followers must grant votes too: let their leases run out
            // (nothing has been sent to them since the writes stopped).
            Some(_) if campaigns == 0 && follower_votes_needed(voters.len()) > 0 => {
                Some(started + writes_stopped + FOLLOWER_LEASE)
            }
            _ => None,
        };
        match chosen {
            Some(target) if due && wait_until.is_none_or(|at| now >= at) => {
                let addr = app.raft.metrics().borrow().membership_config.membership().get_node(&target).cloned();
                let Some(node) = addr else {
                    failed.insert(target);
                    chosen = None;
                    continue;
                };
                campaigns += 1;
                last_campaign = Some(Instant::now());
                debug!(node_id = app.id, target, campaigns, "asking the chosen voter to campaign");
                let answer = tokio::time::timeout_at(deadline, app.peers.campaign(&node.rpc_addr)).await;
                match answer {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        warn!(node_id = app.id, target, error = %e, "the chosen voter did not campaign; choosing another");
                        failed.insert(target);
                        chosen = None;
                        // The next one is asked at once.
                        last_campaign = None;
                        if voters.iter().all(|id| *id == app.id || failed.contains(id)) {
                            return Err(HandoverError::NoVoterAnswered);
                        }
                    }
                    Err(_) => return Err(timed_out("the chosen voter to answer its campaign call")),
                }
                continue;
            }
            _ => {}
        }
        let sleep = POLL.min(deadline.saturating_duration_since(Instant::now()));
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return Err(HandoverError::RaftStopped) },
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    fn matched(pairs: &[(u64, Option<u64>)]) -> BTreeMap<u64, Option<u64>> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn chooses_the_lowest_caught_up_voter_other_than_the_leader() {
        let voters = set(&[1, 2, 3]);
        let m = matched(&[(1, Some(10)), (2, Some(10)), (3, Some(10))]);
        assert_eq!(choose_successor(1, &voters, &m, Some(10), &set(&[])), Some(2));
        assert_eq!(choose_successor(2, &voters, &m, Some(10), &set(&[])), Some(1));
    }

    #[test]
    fn skips_voters_behind_the_leaders_last_index() {
        let voters = set(&[1, 2, 3]);
        let m = matched(&[(1, Some(10)), (2, Some(9)), (3, Some(10))]);
        assert_eq!(choose_successor(1, &voters, &m, Some(10), &set(&[])), Some(3));
        let behind = matched(&[(2, Some(9)), (3, None)]);
        assert_eq!(choose_successor(1, &voters, &behind, Some(10), &set(&[])), None);
    }

    #[test]
    fn skips_learners_and_nodes_not_in_the_membership() {
        // 4 is a learner (in the replication metrics, not a voter), 7 was
        // removed; both have the whole log.
        let voters = set(&[1, 2, 3]);
        let m = matched(&[(2, Some(5)), (3, Some(5)), (4, Some(10)), (7, Some(10))]);
        assert_eq!(choose_successor(1, &voters, &m, Some(10), &set(&[])), None);
    }

    #[test]
    fn skips_voters_whose_campaign_failed_and_unknown_progress() {
        let voters = set(&[1, 2, 3]);
        let m = matched(&[(2, Some(10)), (3, Some(10))]);
        assert_eq!(choose_successor(1, &voters, &m, Some(10), &set(&[2])), Some(3));
        assert_eq!(choose_successor(1, &voters, &m, Some(10), &set(&[2, 3])), None);
        // No progress known for 2 (not in the metrics): not chosen.
        assert_eq!(choose_successor(1, &voters, &matched(&[(3, Some(10))]), Some(10), &set(&[])), Some(3));
    }

    #[test]
    fn nothing_to_choose_alone_or_with_an_empty_log() {
        assert_eq!(choose_successor(1, &set(&[1]), &matched(&[(1, Some(3))]), Some(3), &set(&[])), None);
        assert_eq!(choose_successor(1, &set(&[1, 2]), &matched(&[(2, None)]), None, &set(&[])), None);
    }

    #[test]
    fn follower_votes_needed_besides_the_candidate_and_the_old_leader() {
        assert_eq!(follower_votes_needed(2), 0);
        assert_eq!(follower_votes_needed(3), 0);
        assert_eq!(follower_votes_needed(4), 1);
        assert_eq!(follower_votes_needed(5), 1);
        assert_eq!(follower_votes_needed(7), 2);
    }
}
