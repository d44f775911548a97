//! The worker's lease tracker: every lease this node holds, from its grant
//! until the leader has the task's outcome or the lease is given up, and
//! the decisions about them: what to renew, what to fence, what to report
//! and what each answer means.
//!
//! Pure: no I/O, no locks, no clock. What depends on time takes `now` (or
//! the [`Moment`] a call was made) as an argument, and what is to be done
//! comes back as a value ([`Stop`], [`Completion`], [`Answer`]); the worker
//! (`super`) does it: cancels, logs, counts, sends.
//!
//! `H` is the worker's handle on a lease's transform (its `TaskContext`,
//! whose token stops it). The tracker only keeps it, and hands it back in a
//! [`Stop`], so one map holds everything about a lease.
//!
//! The rules (see ARCHITECTURE.md, "Leases and fencing" and "The worker"):
//! - a lease runs out on our clock at the moment we *asked* for it (or sent
//!   the heartbeat that renewed it) plus what the leader gave, so our
//!   deadline is never later than the leader's;
//! - a lease is fenced (stopped, not reported) at its deadline exactly;
//! - a lease the leader revokes is stopped, unless its transform already
//!   finished: its report ends it, whatever the leader answers;
//! - a finished lease frees its slot (it is no longer [`Leases::busy`]) but
//!   stays held, renewed by heartbeats, until its report is answered or
//!   the lease runs out;
//! - every answer to a report ends the lease; only an outcome the state
//!   machine recorded under a lease we still held is counted.

use std::collections::BTreeMap;
use std::time::Duration;

use skein_raft::fsm::{
    Completion, FencingToken, Granted, HeartbeatAck, HeldLease, Outcome, Rejection, ReportedProgress, TaskId,
    TaskStatus,
};
use tokio::time::Instant;

/// One moment read on both clocks: the monotonic one, which our deadlines
/// are counted on, and the wall clock (ms since the epoch), which the
/// leader's expiries are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moment {
    pub at: Instant,
    pub ms: u64,
}

impl Moment {
    /// Our deadline for a lease the leader says runs out at `expires_ms`,
    /// counted from this moment (when we asked for the lease, or sent the
    /// heartbeat that renewed it: no later than the leader's clock read).
    pub fn deadline(self, expires_ms: u64) -> Instant {
        self.at + Duration::from_millis(expires_ms.saturating_sub(self.ms))
    }
}

/// Why a lease is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// It ran out before we could renew it.
    Expired,
    /// The leader says it is no longer ours.
    Revoked,
    /// The leader granted us the same task again under a newer token.
    Replaced,
    /// The node stops (shutdown after the drain, or removed).
    Abandoned,
}

/// A lease the tracker has let go of: stop its transform (cancel `handle`)
/// and report nothing for it.
#[derive(Debug)]
pub struct Stop<H> {
    pub task: TaskId,
    pub token: FencingToken,
    pub attempt: u32,
    pub why: Why,
    /// Whether its transform had finished (its outcome goes unreported).
    pub finished: bool,
    pub handle: H,
}

/// A lease an answer to its report ended, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub attempt: u32,
    pub queue: String,
    /// How long its transform ran (`None` if it had not finished).
    pub ran: Option<Duration>,
}

/// What an answer to one report means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The state machine recorded the outcome of a lease we still held; the
    /// task is now `status`. Count it.
    Recorded { status: TaskStatus, ended: Ended },
    /// It refused the outcome (a stale token, most often); the lease ended
    /// all the same.
    Refused { ended: Ended },
    /// The lease had already left the tracker while its report was on its
    /// way (fenced, or replaced by a newer lease of the task): nothing to
    /// count, nothing to end.
    NotHeld,
}

impl Answer {
    /// The attempt of the lease it ended (0 when it ended none), for logs.
    pub fn attempt(&self) -> u32 {
        match self {
            Answer::Recorded { ended, .. } | Answer::Refused { ended } => ended.attempt,
            Answer::NotHeld => 0,
        }
    }
}

struct Lease<H> {
    token: FencingToken,
    attempt: u32,
    queue: String,
    /// When it runs out unless renewed (our clock).
    deadline: Instant,
    /// When its transform started.
    started: Instant,
    /// Once the transform finished: its outcome, until the leader has it.
    finished: Option<Finished>,
    handle: H,
}

struct Finished {
    outcome: Outcome,
    ran: Duration,
}

/// Every lease this node holds, by task.
pub struct Leases<H> {
    held: BTreeMap<TaskId, Lease<H>>,
}

impl<H> Default for Leases<H> {
    fn default() -> Self {
        Leases { held: BTreeMap::new() }
    }
}

impl<H> Leases<H> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Tracks a lease granted to a request made at `asked`, whose transform
    /// starts `now` under `handle`. A lease of the same task still held
    /// under an older token is given back to be stopped: the leader has
    /// ended it, and its transform's outcome must not be taken for the new
    /// lease's.
    pub fn granted(&mut self, grant: &Granted, asked: Moment, now: Instant, handle: H) -> Option<Stop<H>> {
        let lease = Lease {
            token: grant.token,
            attempt: grant.attempt,
            queue: grant.queue.clone(),
            deadline: asked.deadline(grant.expires_ms),
            started: now,
            finished: None,
            handle,
        };
        let old = self.held.insert(grant.task, lease)?;
        Some(stop(grant.task, old, Why::Replaced))
    }

    /// What the next heartbeat says we hold: every lease, finished or not
    /// (a finished one waits for its report, which needs the lease), each
    /// with its transform's latest progress.
    pub fn to_heartbeat(&self, progress: impl Fn(&H) -> Option<ReportedProgress>) -> Vec<HeldLease> {
        self.held.iter().map(|(id, l)| HeldLease { task: *id, token: l.token, progress: progress(&l.handle) }).collect()
    }

    /// Applies the answer to a heartbeat sent at `sent`: renewed leases run
    /// out at their new expiry counted from `sent`; revoked ones still held
    /// under the revoked token are given back to be stopped, unless their
    /// transform has finished (the report ends those: this heartbeat may
    /// have been applied just after the report was).
    pub fn apply_ack(&mut self, ack: &HeartbeatAck, sent: Moment) -> Vec<Stop<H>> {
        for (id, expires_ms) in &ack.renewed {
            if let Some(l) = self.held.get_mut(id) {
                l.deadline = sent.deadline(*expires_ms);
            }
        }
        let mut stops = Vec::new();
        for (id, token) in &ack.revoked {
            if self.held.get(id).is_some_and(|l| l.token == *token && l.finished.is_none()) {
                if let Some(l) = self.held.remove(id) {
                    stops.push(stop(*id, l, Why::Revoked));
                }
            }
        }
        stops
    }

    /// Gives back every lease that has run out at `now` (a deadline equal
    /// to `now` has run out), finished or not: by now the leader may have
    /// given the task to another node.
    pub fn fence(&mut self, now: Instant) -> Vec<Stop<H>> {
        let expired: Vec<TaskId> = self.held.iter().filter(|(_, l)| l.deadline <= now).map(|(id, _)| *id).collect();
        expired.into_iter().filter_map(|id| Some(stop(id, self.held.remove(&id)?, Why::Expired))).collect()
    }

    /// The earliest deadline of a held lease: when the next [`fence`] will
    /// have something to do, unless a renewal comes first.
    ///
    /// [`fence`]: Leases::fence
    pub fn next_deadline(&self) -> Option<Instant> {
        self.held.values().map(|l| l.deadline).min()
    }

    /// Records that the transform of `task`'s lease `token` finished `now`
    /// with `outcome`. `false` (nothing recorded) when that lease is no
    /// longer held, or already finished: the outcome is not to be reported.
    pub fn finished(&mut self, task: TaskId, token: FencingToken, outcome: Outcome, now: Instant) -> bool {
        match self.held.get_mut(&task) {
            Some(l) if l.token == token && l.finished.is_none() => {
                l.finished = Some(Finished { outcome, ran: now.saturating_duration_since(l.started) });
                true
            }
            _ => false,
        }
    }

    /// The outcomes to report now: every finished lease that has not run
    /// out at `now`, under its token.
    pub fn reports(&self, now: Instant) -> Vec<Completion> {
        self.held
            .iter()
            .filter(|(_, l)| l.deadline > now)
            .filter_map(|(id, l)| {
                let f = l.finished.as_ref()?;
                Some(Completion { task: *id, token: l.token, outcome: f.outcome.clone() })
            })
            .collect()
    }

    /// Applies the state machine's answer to one report: whatever it is,
    /// the lease it was sent under is ours no longer. (A report that got no
    /// answer at all needs no call: its lease stays, to be reported again
    /// while it lasts.)
    pub fn answered(&mut self, report: &Completion, answer: &Result<TaskStatus, Rejection>) -> Answer {
        let ended = match self.held.get(&report.task) {
            Some(l) if l.token == report.token => self.held.remove(&report.task),
            _ => None,
        };
        let Some(l) = ended else { return Answer::NotHeld };
        let ended = Ended { attempt: l.attempt, queue: l.queue, ran: l.finished.map(|f| f.ran) };
        match answer {
            Ok(status) => Answer::Recorded { status: *status, ended },
            Err(_) => Answer::Refused { ended },
        }
    }

    /// Leases whose transform still runs: what occupies a slot. A finished
    /// lease waiting for its report's answer frees its slot, so the next
    /// lease overlaps the report.
    pub fn busy(&self) -> usize {
        self.held.values().filter(|l| l.finished.is_none()).count()
    }

    /// Every lease held, running or waiting for its report's answer.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Gives back every lease, to be stopped without reporting (the node
    /// stops; the leader hands the leases back when told).
    pub fn abandon_all(&mut self) -> Vec<Stop<H>> {
        std::mem::take(&mut self.held).into_iter().map(|(id, l)| stop(id, l, Why::Abandoned)).collect()
    }

    /// `task`'s deadline, if we hold a lease of it.
    pub fn deadline(&self, task: TaskId) -> Option<Instant> {
        self.held.get(&task).map(|l| l.deadline)
    }

    /// Whether we hold `task`'s lease `token`.
    pub fn holds(&self, task: TaskId, token: FencingToken) -> bool {
        self.held.get(&task).is_some_and(|l| l.token == token)
    }
}

fn stop<H>(task: TaskId, l: Lease<H>, why: Why) -> Stop<H> {
    Stop { task, token: l.token, attempt: l.attempt, why, finished: l.finished.is_some(), handle: l.handle }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wall clock (ms) at `t0` in these tests.
    const WALL: u64 = 1_700_000_000_000;
    const LEASE_MS: u64 = 30_000;
    const TASK: TaskId = TaskId(7);
    const TOKEN: FencingToken = FencingToken(40);

    fn grant(task: TaskId, token: FencingToken, expires_ms: u64) -> Granted {
        Granted { task, queue: "q".into(), kind: "noop".into(), attempt: 2, token, expires_ms }
    }

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    /// `ms` after `t0`, on both clocks.
    fn moment(t0: Instant, ms: u64) -> Moment {
        Moment { at: t0 + Duration::from_millis(ms), ms: WALL + ms }
    }

    fn ok() -> Outcome {
        Outcome::Succeeded { result: "null".into() }
    }

    /// Task 7 leased under token 40 by a request made at `t0`, granted for
    /// 30 s by a leader whose clock read 100 ms later (so its deadline is
    /// `t0` + 30.1 s); optionally its transform finished 1 s later.
    fn one(t0: Instant, finished: bool) -> Leases<&'static str> {
        let mut l = Leases::new();
        assert!(l.granted(&grant(TASK, TOKEN, WALL + 100 + LEASE_MS), moment(t0, 0), ms(t0, 150), "ctx").is_none());
        if finished {
            assert!(l.finished(TASK, TOKEN, ok(), ms(t0, 1_150)));
        }
        l
    }

    fn ack(renewed: &[(TaskId, u64)], revoked: &[(TaskId, FencingToken)]) -> HeartbeatAck {
        HeartbeatAck { renewed: renewed.to_vec(), revoked: revoked.to_vec(), draining: false }
    }

    #[test]
    fn a_lease_runs_from_when_it_was_asked_for() {
        let t0 = Instant::now();
        // (case, the leader's expiry relative to WALL, our deadline relative to t0)
        let cases: &[(&str, i64, u64)] = &[
            ("granted at once", 30_000, 30_000),
            ("granted 2 s after asking (a long-poll)", 32_000, 32_000),
            ("leader's clock 500 ms behind ours", 29_500, 29_500),
            ("expiry before we asked (a clock far off): already run out", -1_000, 0),
        ];
        for (case, expires, deadline) in cases {
            let mut l: Leases<()> = Leases::new();
            let expires_ms = (WALL as i64 + expires) as u64;
            l.granted(&grant(TASK, TOKEN, expires_ms), moment(t0, 0), ms(t0, 10), ());
            assert_eq!(l.deadline(TASK), Some(ms(t0, *deadline)), "{case}");
            assert_eq!(l.next_deadline(), Some(ms(t0, *deadline)), "{case}");
        }
    }

    #[test]
    fn a_renewal_counts_from_when_the_heartbeat_was_sent() {
        let t0 = Instant::now();
        // The heartbeat goes out at t0 + 5 s; (case, the renewal's expiry
        // relative to the send's wall clock, our new deadline relative to t0).
        let cases: &[(&str, Option<i64>, u64)] = &[
            ("applied at once", Some(30_000), 35_000),
            ("applied 200 ms after the send", Some(30_200), 35_200),
            ("the leader's clock 1 s behind", Some(29_000), 34_000),
            ("expiry before the send (a clock step): runs out at the send", Some(-10), 5_000),
            ("not renewed: the deadline stays the grant's", None, 30_100),
        ];
        for (case, expires, deadline) in cases {
            let mut l = one(t0, false);
            let sent = moment(t0, 5_000);
            let renewed: Vec<(TaskId, u64)> =
                expires.iter().map(|e| (TASK, (sent.ms as i64 + e) as u64)).chain([(TaskId(99), WALL)]).collect();
            let stops = l.apply_ack(&ack(&renewed, &[]), sent);
            assert!(stops.is_empty(), "{case}");
            assert_eq!(l.deadline(TASK), Some(ms(t0, *deadline)), "{case}");
            assert_eq!((l.len(), l.deadline(TaskId(99))), (1, None), "{case}: a renewal of a lease not held adds none");
        }
    }

    #[test]
    fn a_revoke_stops_only_the_same_lease_and_only_while_it_runs() {
        let t0 = Instant::now();
        // (case, transform finished, revoked (task, token), stopped)
        let cases: &[(&str, bool, (TaskId, FencingToken), bool)] = &[
            ("our lease, running", false, (TASK, TOKEN), true),
            ("an older lease of the task", false, (TASK, FencingToken(39)), false),
            ("a newer lease of the task", false, (TASK, FencingToken(41)), false),
            ("another task", false, (TaskId(8), TOKEN), false),
            ("our lease, finished: its report ends it", true, (TASK, TOKEN), false),
        ];
        for (case, finished, revoked, stopped) in cases {
            let mut l = one(t0, *finished);
            let stops = l.apply_ack(&ack(&[], &[*revoked]), moment(t0, 5_000));
            let got: Vec<(TaskId, FencingToken, u32, Why, &str)> =
                stops.into_iter().map(|s| (s.task, s.token, s.attempt, s.why, s.handle)).collect();
            let want = if *stopped { vec![(TASK, TOKEN, 2, Why::Revoked, "ctx")] } else { vec![] };
            assert_eq!(got, want, "{case}");
            assert_eq!(l.holds(TASK, TOKEN), !stopped, "{case}");
        }
    }

    #[test]
    fn a_finished_lease_outlives_a_revoke_until_its_report_or_deadline() {
        let t0 = Instant::now();
        let mut l = one(t0, true);
        assert!(l.apply_ack(&ack(&[], &[(TASK, TOKEN)]), moment(t0, 2_000)).is_empty());
        assert_eq!(l.reports(ms(t0, 2_000)).len(), 1, "still reported");
        assert!(l.fence(ms(t0, 30_099)).is_empty(), "not fenced before its deadline");
        let fenced = l.fence(ms(t0, 30_100));
        assert_eq!(fenced.iter().map(|s| (s.why, s.finished)).collect::<Vec<_>>(), [(Why::Expired, true)]);
        assert!(l.is_empty());
    }

    #[test]
    fn fence_stops_a_lease_at_exactly_its_deadline() {
        let t0 = Instant::now();
        // The deadline is t0 + 30.1 s. (case, finished, now relative to t0, fenced)
        let cases: &[(&str, bool, u64, bool)] = &[
            ("1 ms before", false, 30_099, false),
            ("at the deadline", false, 30_100, true),
            ("after it", false, 31_000, true),
            ("finished, 1 ms before", true, 30_099, false),
            ("finished, at the deadline: its report is dropped", true, 30_100, true),
        ];
        for (case, finished, now, fenced) in cases {
            let mut l = one(t0, *finished);
            let stops = l.fence(ms(t0, *now));
            let got: Vec<(TaskId, FencingToken, Why, bool)> =
                stops.iter().map(|s| (s.task, s.token, s.why, s.finished)).collect();
            let want = if *fenced { vec![(TASK, TOKEN, Why::Expired, *finished)] } else { vec![] };
            assert_eq!(got, want, "{case}");
            assert_eq!(l.len(), usize::from(!fenced), "{case}");
            assert_eq!(l.reports(ms(t0, *now)).is_empty(), *fenced || !finished, "{case}");
        }
    }

    #[test]
    fn fence_takes_only_the_leases_that_ran_out() {
        let t0 = Instant::now();
        let mut l: Leases<u32> = Leases::new();
        for (task, lease_ms) in [(1, 3_000), (2, 5_000), (3, 3_000)] {
            l.granted(&grant(TaskId(task), FencingToken(task), WALL + lease_ms), moment(t0, 0), t0, task as u32);
        }
        assert_eq!(l.next_deadline(), Some(ms(t0, 3_000)));
        let first: Vec<u32> = l.fence(ms(t0, 3_000)).into_iter().map(|s| s.handle).collect();
        assert_eq!(first, [1, 3]);
        assert_eq!(l.next_deadline(), Some(ms(t0, 5_000)));
        assert!(l.fence(ms(t0, 4_999)).is_empty());
        assert_eq!(l.fence(ms(t0, 5_000)).len(), 1);
        assert_eq!(l.next_deadline(), None);
    }

    #[test]
    fn every_answer_to_a_report_ends_the_lease() {
        let t0 = Instant::now();
        let ended = Ended { attempt: 2, queue: "q".into(), ran: Some(Duration::from_secs(1)) };
        let stale = Rejection::StaleToken { task: TASK, token: TOKEN, current: Some(FencingToken(41)) };
        let cases: Vec<(&str, Result<TaskStatus, Rejection>, Answer)> = vec![
            (
                "succeeded",
                Ok(TaskStatus::Succeeded),
                Answer::Recorded { status: TaskStatus::Succeeded, ended: ended.clone() },
            ),
            (
                "failed, to be retried",
                Ok(TaskStatus::Pending),
                Answer::Recorded { status: TaskStatus::Pending, ended: ended.clone() },
            ),
            (
                "failed for good",
                Ok(TaskStatus::Dead),
                Answer::Recorded { status: TaskStatus::Dead, ended: ended.clone() },
            ),
            ("stale token", Err(stale), Answer::Refused { ended: ended.clone() }),
            ("unknown task", Err(Rejection::UnknownTask(TASK)), Answer::Refused { ended: ended.clone() }),
        ];
        for (case, result, want) in cases {
            let mut l = one(t0, true);
            let reports = l.reports(ms(t0, 2_000));
            assert_eq!(reports, [Completion { task: TASK, token: TOKEN, outcome: ok() }], "{case}");
            let answer = l.answered(&reports[0], &result);
            assert_eq!(answer, want, "{case}");
            assert_eq!(answer.attempt(), 2, "{case}");
            assert!(l.is_empty(), "{case}: the lease ended");
            assert!(l.reports(ms(t0, 2_000)).is_empty(), "{case}: nothing more to report");
        }
    }

    #[test]
    fn an_answer_for_a_lease_no_longer_held_changes_nothing() {
        let t0 = Instant::now();
        let report = Completion { task: TASK, token: TOKEN, outcome: ok() };
        // (case, the tracker when the answer comes)
        let cases: Vec<(&str, Leases<&str>)> = vec![
            ("fenced while the report was on its way", {
                let mut l = one(t0, true);
                l.fence(ms(t0, 30_100));
                l
            }),
            ("leased to us again under a newer token", {
                let mut l = one(t0, true);
                l.granted(&grant(TASK, FencingToken(41), WALL + 60_000), moment(t0, 29_000), ms(t0, 29_000), "new");
                l
            }),
        ];
        for (case, mut l) in cases {
            let before = l.len();
            assert_eq!(l.answered(&report, &Ok(TaskStatus::Succeeded)), Answer::NotHeld, "{case}");
            assert_eq!(l.len(), before, "{case}");
            assert_eq!(Answer::NotHeld.attempt(), 0);
        }
    }

    #[test]
    fn an_unanswered_report_is_kept_while_the_lease_lasts() {
        let t0 = Instant::now();
        let mut l = one(t0, true);
        let report = vec![Completion { task: TASK, token: TOKEN, outcome: ok() }];
        // The report fails (no answer): nothing to tell the tracker; it is
        // due again, and heartbeats still renew its lease.
        assert_eq!(l.reports(ms(t0, 1_200)), report);
        assert_eq!(l.to_heartbeat(|_| None).len(), 1, "a finished lease is still heartbeated");
        l.apply_ack(&ack(&[(TASK, WALL + 10_000 + LEASE_MS)], &[]), moment(t0, 10_000));
        assert_eq!(l.reports(ms(t0, 39_999)), report);
        // No more renewals: at its deadline it is no longer reported, and
        // the fence drops it.
        assert!(l.reports(ms(t0, 40_000)).is_empty());
        let fenced = l.fence(ms(t0, 40_000));
        assert_eq!(
            fenced.iter().map(|s| (s.task, s.why, s.finished)).collect::<Vec<_>>(),
            [(TASK, Why::Expired, true)]
        );
        assert!(l.is_empty());
    }

    #[test]
    fn an_outcome_is_kept_only_for_the_lease_that_ran_it() {
        let t0 = Instant::now();
        // (case, finished already, the outcome's (task, token), kept)
        let cases: &[(&str, bool, (TaskId, FencingToken), bool)] = &[
            ("our lease", false, (TASK, TOKEN), true),
            ("an older lease's transform, cancelled just as it ended", false, (TASK, FencingToken(39)), false),
            ("a task not held (stopped meanwhile)", false, (TaskId(8), TOKEN), false),
            ("finished twice: the first outcome stands", true, (TASK, TOKEN), false),
        ];
        for (case, finished, (task, token), kept) in cases {
            let mut l = one(t0, *finished);
            let retry = Outcome::Retryable { error: "again".into() };
            assert_eq!(l.finished(*task, *token, retry, ms(t0, 2_000)), *kept, "{case}");
            let outcomes: Vec<Outcome> = l.reports(ms(t0, 2_000)).into_iter().map(|c| c.outcome).collect();
            let want = match (finished, kept) {
                (true, _) => vec![ok()],
                (false, true) => vec![Outcome::Retryable { error: "again".into() }],
                (false, false) => vec![],
            };
            assert_eq!(outcomes, want, "{case}");
        }
    }

    #[test]
    fn a_new_lease_of_a_held_task_replaces_the_old_one() {
        let t0 = Instant::now();
        let mut l = one(t0, false);
        let old = l.granted(&grant(TASK, FencingToken(41), WALL + 60_000), moment(t0, 31_000), ms(t0, 31_000), "new");
        let old = old.map(|s| (s.task, s.token, s.why, s.finished, s.handle));
        assert_eq!(old, Some((TASK, TOKEN, Why::Replaced, false, "ctx")));
        assert!(l.holds(TASK, FencingToken(41)) && !l.holds(TASK, TOKEN));
        assert_eq!(l.deadline(TASK), Some(ms(t0, 60_000)));
        assert!(!l.finished(TASK, TOKEN, ok(), ms(t0, 31_500)), "the old transform's outcome is not the new lease's");
        assert_eq!(l.busy(), 1);
    }

    #[test]
    fn busy_counts_running_transforms_and_len_every_lease() {
        let t0 = Instant::now();
        let mut l: Leases<()> = Leases::new();
        let report = |task: u64| Completion { task: TaskId(task), token: FencingToken(task), outcome: ok() };
        // (step, busy, len) after each step
        type Step = Box<dyn Fn(&mut Leases<()>)>;
        let steps: Vec<(&str, Step, usize, usize)> = vec![
            ("empty", Box::new(|_| {}), 0, 0),
            (
                "three leased",
                Box::new(move |l| {
                    for t in 1..=3 {
                        l.granted(&grant(TaskId(t), FencingToken(t), WALL + 30_000), moment(t0, 0), t0, ());
                    }
                }),
                3,
                3,
            ),
            (
                "one finished: its slot is free, its lease still held",
                Box::new(move |l| assert!(l.finished(TaskId(1), FencingToken(1), ok(), ms(t0, 1_000)))),
                2,
                3,
            ),
            (
                "its report answered",
                Box::new(move |l| {
                    assert!(matches!(l.answered(&report(1), &Ok(TaskStatus::Succeeded)), Answer::Recorded { .. }))
                }),
                2,
                2,
            ),
            (
                "another revoked",
                Box::new(move |l| {
                    assert_eq!(l.apply_ack(&ack(&[], &[(TaskId(2), FencingToken(2))]), moment(t0, 2_000)).len(), 1)
                }),
                1,
                1,
            ),
            ("the last abandoned", Box::new(|l| assert_eq!(l.abandon_all().len(), 1)), 0, 0),
        ];
        for (step, f, busy, len) in steps {
            f(&mut l);
            assert_eq!((l.busy(), l.len(), l.is_empty()), (busy, len, len == 0), "{step}");
        }
    }

    #[test]
    fn the_heartbeat_carries_every_lease_with_its_progress() {
        let t0 = Instant::now();
        let mut l: Leases<Option<f32>> = Leases::new();
        l.granted(&grant(TaskId(1), FencingToken(10), WALL + 30_000), moment(t0, 0), t0, Some(0.5));
        l.granted(&grant(TaskId(2), FencingToken(20), WALL + 30_000), moment(t0, 0), t0, None);
        l.finished(TaskId(2), FencingToken(20), ok(), ms(t0, 100));
        let progress = |h: &Option<f32>| h.map(|fraction| ReportedProgress { fraction, message: "half".into() });
        let held = l.to_heartbeat(progress);
        assert_eq!(
            held,
            [
                HeldLease {
                    task: TaskId(1),
                    token: FencingToken(10),
                    progress: Some(ReportedProgress { fraction: 0.5, message: "half".into() })
                },
                HeldLease { task: TaskId(2), token: FencingToken(20), progress: None },
            ]
        );
    }

    #[test]
    fn abandon_all_hands_back_every_lease() {
        let t0 = Instant::now();
        let mut l = one(t0, false);
        l.granted(&grant(TaskId(8), FencingToken(50), WALL + 30_000), moment(t0, 0), t0, "other");
        l.finished(TaskId(8), FencingToken(50), ok(), ms(t0, 10));
        let stops: Vec<(TaskId, Why, bool, &str)> =
            l.abandon_all().into_iter().map(|s| (s.task, s.why, s.finished, s.handle)).collect();
        assert_eq!(stops, [(TASK, Why::Abandoned, false, "ctx"), (TaskId(8), Why::Abandoned, true, "other")]);
        assert!(l.is_empty() && l.reports(t0).is_empty() && l.next_deadline().is_none());
    }
}
