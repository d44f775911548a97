//! The chaos checker: reads a run's [`Evidence`] and finds every violation
//! of skein's promises, plus the figures a run reports. It is pure (no I/O),
//! so its tests feed it histories with each kind of violation.
//!
//! Violations:
//! - an acknowledged enqueue missing from the final state, or not ended
//!   (succeeded, dead or cancelled) after the workload drained;
//! - a success committed under a token that was not the task's current
//!   lease at that moment (from the task's own history, and from every
//!   worker journal's accepted successes), or two successes of one task;
//! - two different tasks for one idempotency key;
//! - nodes whose state machines disagree (digests at one applied index);
//! - a lease held by a killed node that outlived its lease time plus a
//!   slack.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;
use skein_raft::fsm::{EventKind, TaskStatus};

use super::history::{Evidence, FaultKind, FinalTask, NodeDigest, OpKind, Outcome};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "violation")]
pub enum Violation {
    /// Acknowledged, yet not in the final state.
    Lost { task: u64 },
    /// Acknowledged, yet neither succeeded, dead nor cancelled at the end.
    NotEnded { task: u64, status: TaskStatus },
    /// A success under a token that was not the current lease.
    StaleCommit { task: u64, token: u64, why: String },
    /// Two successes of one task.
    DoubleCommit { task: u64, tokens: Vec<u64> },
    /// One idempotency key, several tasks.
    DuplicateKey { key: String, tasks: Vec<u64> },
    /// Nodes disagree about the final state.
    Divergent { digests: Vec<(u64, Option<u64>, String)> },
    /// Every enqueue of this key was answered "not carried out" (a 4xx, a
    /// 503 `unavailable`, or refused before sending), yet a task holds it.
    RefusedButApplied { key: String, task: u64 },
    /// A killed node's lease stood too long.
    LeasedToDead { task: u64, node: u64, token: u64, killed_ms: u64, ended_ms: Option<u64> },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Lost { task } => write!(f, "task {task} was acknowledged but is missing from the final state"),
            Violation::NotEnded { task, status } => {
                write!(f, "task {task} was acknowledged but is {status} after the workload drained")
            }
            Violation::StaleCommit { task, token, why } => {
                write!(f, "task {task} succeeded under token {token}, not its current lease: {why}")
            }
            Violation::DoubleCommit { task, tokens } => write!(f, "task {task} succeeded twice (tokens {tokens:?})"),
            Violation::DuplicateKey { key, tasks } => {
                write!(f, "idempotency key {key:?} names several tasks: {tasks:?}")
            }
            Violation::Divergent { digests } => {
                write!(f, "nodes disagree about the final state (node, applied, digest): {digests:?}")
            }
            Violation::RefusedButApplied { key, task } => {
                write!(f, "every enqueue of key {key:?} was answered as not carried out, yet task {task} holds it")
            }
            Violation::LeasedToDead { task, node, token, killed_ms, ended_ms } => match ended_ms {
                Some(end) => write!(
                    f,
                    "task {task}'s lease {token} on node {node}, killed at {killed_ms}, stood {} ms after the kill",
                    end.saturating_sub(*killed_ms)
                ),
                None => write!(f, "task {task}'s lease {token} on node {node}, killed at {killed_ms}, never ended"),
            },
        }
    }
}

/// Figures of a run, violations or not.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// Operations by kind (`enqueue`, `list`, `read`) and outcome.
    pub ops: BTreeMap<String, BTreeMap<String, usize>>,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, usize>,
    pub tasks_acknowledged: usize,
    pub tasks_in_final_state: usize,
    /// Final statuses of the acknowledged tasks.
    pub final_status: BTreeMap<String, usize>,
    /// The longest stretch of the workload without an acknowledged write.
    pub longest_write_gap_ms: u64,
    /// For each kill -9 of the leader: ms to the next task success.
    pub leader_kill_to_next_success_ms: Vec<Option<u64>>,
    /// Tasks whose transform started more than once (allowed: at-least-once).
    pub ran_more_than_once: usize,
    /// Successes a worker was told about, from the journals.
    pub journal_commits: usize,
    /// Successes checked against a history that no longer held their lease.
    pub unverifiable: usize,
    /// Faults whose nodes included a worker node (runs with workers).
    pub faults_on_workers: usize,
    /// Recorded successes reported by a worker node, and by a member.
    pub worker_successes: usize,
    pub member_successes: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub violations: Vec<Violation>,
    pub stats: Stats,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Checks a run; see the module docs.
pub fn check(ev: &Evidence) -> Report {
    let mut v = Vec::new();
    let mut stats = Stats::default();
    let tasks: BTreeMap<u64, &FinalTask> = ev.tasks.iter().map(|t| (t.id, t)).collect();
    stats.tasks_in_final_state = tasks.len();

    // Acknowledged enqueues: present and ended.
    let acked: BTreeSet<u64> = ev
        .ops
        .iter()
        .filter(|o| o.is_write() && o.outcome == Outcome::Ok)
        .flat_map(|o| o.ids.iter().copied())
        .collect();
    stats.tasks_acknowledged = acked.len();
    for &id in &acked {
        match tasks.get(&id) {
            None => v.push(Violation::Lost { task: id }),
            Some(t) => {
                *stats.final_status.entry(t.status.to_string()).or_default() += 1;
                if !matches!(t.status, TaskStatus::Succeeded | TaskStatus::Dead | TaskStatus::Cancelled) {
                    v.push(Violation::NotEnded { task: id, status: t.status });
                }
            }
        }
    }

    // Successes in each task's history: one, under the current lease.
    for t in tasks.values() {
        check_history(t, &mut v, &mut stats);
    }

    // Successes the workers were told about: one per task, and the one the
    // state machine recorded.
    let mut commits: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for j in ev.journal.iter().filter(|j| j.is_commit()) {
        commits.entry(j.task).or_default().push(j.token);
    }
    stats.journal_commits = commits.values().map(Vec::len).sum();
    for (&task, tokens) in &commits {
        if tokens.len() > 1 {
            v.push(Violation::DoubleCommit { task, tokens: tokens.clone() });
        }
        let recorded = tasks.get(&task).and_then(|t| success_token(t));
        for &token in tokens {
            if recorded != Some(token) {
                let why = match recorded {
                    Some(r) => format!("a worker was told token {token} succeeded; the state machine recorded {r}"),
                    None => format!("a worker was told token {token} succeeded; the state machine recorded no success"),
                };
                v.push(Violation::StaleCommit { task, token, why });
            }
        }
    }

    // Idempotency keys: one task per key, in the answers and at the end.
    let mut by_key: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for o in ev.ops.iter().filter(|o| o.outcome == Outcome::Ok) {
        if let OpKind::Enqueue { key: Some(key), .. } = &o.kind {
            by_key.entry(key.clone()).or_default().extend(&o.ids);
        }
    }
    for t in tasks.values() {
        if let Some(key) = &t.key {
            by_key.entry(key.clone()).or_default().insert(t.id);
        }
    }
    for (key, ids) in by_key {
        if ids.len() > 1 {
            v.push(Violation::DuplicateKey { key, tasks: ids.into_iter().collect() });
        }
    }

    // What the nodes said was not carried out was not: a key all of whose
    // enqueues failed names no task.
    let mut answers: BTreeMap<&str, bool> = BTreeMap::new();
    for o in &ev.ops {
        if let OpKind::Enqueue { key: Some(key), .. } = &o.kind {
            *answers.entry(key.as_str()).or_insert(true) &= o.outcome == Outcome::Failed;
        }
    }
    for t in tasks.values() {
        if let Some(key) = &t.key {
            if answers.get(key.as_str()) == Some(&true) {
                v.push(Violation::RefusedButApplied { key: key.clone(), task: t.id });
            }
        }
    }

    // Replicas agree.
    let differs = |a: &NodeDigest, b: &NodeDigest| a.applied_index != b.applied_index || a.digest != b.digest;
    if ev.digests.first().is_some_and(|first| ev.digests.iter().any(|d| differs(d, first))) {
        v.push(Violation::Divergent {
            digests: ev.digests.iter().map(|d| (d.node, d.applied_index, d.digest.clone())).collect(),
        });
    }

    // Killed nodes' leases end within lease time plus slack.
    for f in ev.faults.iter().filter(|f| f.kind == FaultKind::Kill) {
        for &node in &f.nodes {
            for t in tasks.values() {
                check_dead_lease(t, node, f.start_ms, ev.lease_ms + ev.dead_lease_slack_ms, &mut v);
            }
        }
    }

    // Figures.
    for o in &ev.ops {
        let kind = match o.kind {
            OpKind::Enqueue { .. } => "enqueue",
            OpKind::ListLeased => "list",
            OpKind::Read { .. } => "read",
        };
        let outcome = match o.outcome {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Unknown => "unknown",
        };
        *stats.ops.entry(kind.into()).or_default().entry(outcome.into()).or_default() += 1;
    }
    for f in &ev.faults {
        *stats.faults.entry(f.kind.name().into()).or_default() += 1;
    }
    stats.longest_write_gap_ms = longest_gap(ev);
    let mut successes: Vec<u64> = tasks
        .values()
        .flat_map(|t| t.history.iter().filter(|e| e.what == EventKind::Succeeded).map(|e| e.at_ms))
        .collect();
    successes.sort_unstable();
    for f in ev.faults.iter().filter(|f| f.kind == FaultKind::Kill && f.leader_hit) {
        let next = successes.iter().find(|&&s| s > f.start_ms).map(|s| s - f.start_ms);
        stats.leader_kill_to_next_success_ms.push(next);
    }
    let mut starts: BTreeMap<u64, usize> = BTreeMap::new();
    for j in ev.journal.iter().filter(|j| j.ev == "start") {
        *starts.entry(j.task).or_default() += 1;
    }
    stats.ran_more_than_once = starts.values().filter(|&&n| n > 1).count();
    let is_worker = |n: &u64| ev.workers.contains(n);
    stats.faults_on_workers = ev.faults.iter().filter(|f| f.nodes.iter().any(is_worker)).count();
    for e in tasks.values().flat_map(|t| t.history.iter()).filter(|e| e.what == EventKind::Succeeded) {
        match e.node {
            Some(n) if is_worker(&n) => stats.worker_successes += 1,
            Some(_) => stats.member_successes += 1,
            None => {}
        }
    }
    Report { violations: v, stats }
}

/// The token of the task's recorded success, if it has one.
fn success_token(t: &FinalTask) -> Option<u64> {
    t.history.iter().find(|e| e.what == EventKind::Succeeded).and_then(|e| e.token.map(|k| k.0))
}

/// One success at most, under the lease granted last before it and not
/// ended before it.
fn check_history(t: &FinalTask, v: &mut Vec<Violation>, stats: &mut Stats) {
    let successes: Vec<usize> =
        t.history.iter().enumerate().filter(|(_, e)| e.what == EventKind::Succeeded).map(|(i, _)| i).collect();
    if successes.len() > 1 {
        let tokens = successes.iter().filter_map(|&i| t.history[i].token.map(|k| k.0)).collect();
        v.push(Violation::DoubleCommit { task: t.id, tokens });
    }
    if successes.is_empty() && t.status == TaskStatus::Succeeded {
        // Its success event aged out of the bounded history: cannot judge.
        stats.unverifiable += 1;
    }
    for &i in &successes {
        let e = &t.history[i];
        let token = e.token.map_or(0, |k| k.0);
        let Some(li) = t.history[..i].iter().rposition(|e| matches!(e.what, EventKind::Leased { .. })) else {
            stats.unverifiable += 1;
            continue;
        };
        let lease = &t.history[li];
        if lease.token.map(|k| k.0) != Some(token) {
            let why = format!("the lease granted last before it was token {:?}", lease.token.map(|k| k.0));
            v.push(Violation::StaleCommit { task: t.id, token, why });
            continue;
        }
        if lease.node != e.node {
            let why =
                format!("lease {token} was granted to node {:?}, the success came from node {:?}", lease.node, e.node);
            v.push(Violation::StaleCommit { task: t.id, token, why });
            continue;
        }
        if let Some(end) = t.history[li + 1..i].iter().find(|e| ends_lease(&e.what)) {
            let why = format!("lease {token} had already ended ({:?} at {})", end.what, end.at_ms);
            v.push(Violation::StaleCommit { task: t.id, token, why });
        }
    }
}

/// An event that ends whatever lease the task had.
fn ends_lease(what: &EventKind) -> bool {
    matches!(
        what,
        EventKind::Succeeded
            | EventKind::Failed { .. }
            | EventKind::Expired { .. }
            | EventKind::Dead { .. }
            | EventKind::Cancelled { .. }
            | EventKind::Released { .. }
            | EventKind::Leased { .. }
    )
}

/// A lease `node` held when it was killed must end within `limit_ms`.
fn check_dead_lease(t: &FinalTask, node: u64, killed_ms: u64, limit_ms: u64, v: &mut Vec<Violation>) {
    for (i, e) in t.history.iter().enumerate() {
        if !matches!(e.what, EventKind::Leased { .. }) || e.node != Some(node) || e.at_ms > killed_ms {
            continue;
        }
        let end = t.history[i + 1..].iter().find(|e| ends_lease(&e.what)).map(|e| e.at_ms);
        if end.is_some_and(|end| end <= killed_ms) {
            continue; // over before the kill
        }
        if end.is_none_or(|end| end > killed_ms + limit_ms) {
            v.push(Violation::LeasedToDead {
                task: t.id,
                node,
                token: e.token.map_or(0, |k| k.0),
                killed_ms,
                ended_ms: end,
            });
        }
    }
}

/// The longest stretch of the workload with no acknowledged write.
fn longest_gap(ev: &Evidence) -> u64 {
    let mut times: Vec<u64> = ev
        .ops
        .iter()
        .filter(|o| o.is_write() && o.outcome == Outcome::Ok)
        .map(|o| o.complete_ms.clamp(ev.workload_start_ms, ev.workload_end_ms))
        .collect();
    times.push(ev.workload_start_ms);
    times.push(ev.workload_end_ms);
    times.sort_unstable();
    times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::history::{Fault, JournalLine, Op};
    use skein_raft::fsm::{Event, FencingToken};

    fn ev(at_ms: u64, node: Option<u64>, token: Option<u64>, what: EventKind) -> Event {
        Event { at_ms, node, token: token.map(FencingToken), what }
    }

    /// Task `id` enqueued at 100, leased by node 1 under token `id * 10`
    /// at 200, succeeded at 300.
    fn good_task(id: u64) -> FinalTask {
        let k = id * 10;
        FinalTask {
            id,
            status: TaskStatus::Succeeded,
            key: None,
            history: vec![
                ev(100, None, None, EventKind::Enqueued { status: TaskStatus::Pending }),
                ev(200, Some(1), Some(k), EventKind::Leased { attempt: 1 }),
                ev(300, Some(1), Some(k), EventKind::Succeeded),
            ],
        }
    }

    fn enqueue(ids: &[u64], key: Option<&str>, outcome: Outcome) -> Op {
        Op {
            client: 0,
            node: 1,
            kind: OpKind::Enqueue { count: ids.len().max(1), key: key.map(String::from), try_no: 1 },
            invoke_ms: 90,
            complete_ms: 95,
            outcome,
            ids: ids.to_vec(),
            error: None,
        }
    }

    fn commit(task: u64, token: u64, node: u64) -> JournalLine {
        JournalLine {
            ev: "accepted".into(),
            node,
            task,
            token,
            attempt: None,
            outcome: Some("succeeded".into()),
            status: Some("succeeded".into()),
            ms: 300,
        }
    }

    fn digest(node: u64, applied: u64, d: &str) -> NodeDigest {
        NodeDigest { node, applied_index: Some(applied), digest: d.into() }
    }

    /// A clean run of three tasks on three agreeing nodes.
    fn clean() -> Evidence {
        Evidence {
            ops: vec![enqueue(&[1, 2], None, Outcome::Ok), enqueue(&[3], Some("k"), Outcome::Ok)],
            journal: vec![commit(1, 10, 1), commit(2, 20, 1), commit(3, 30, 1)],
            tasks: vec![good_task(1), good_task(2), FinalTask { key: Some("k".into()), ..good_task(3) }],
            digests: vec![digest(1, 50, "ab"), digest(2, 50, "ab"), digest(3, 50, "ab")],
            lease_ms: 1_000,
            dead_lease_slack_ms: 500,
            workload_start_ms: 0,
            workload_end_ms: 400,
            ..Evidence::default()
        }
    }

    #[test]
    fn a_run_with_workers_counts_their_work_and_holds_them_to_the_same_rules() {
        let mut e = clean();
        e.workers = vec![101];
        // Task 2 ran on worker 101, which was paused after it.
        e.tasks[1] = FinalTask {
            history: vec![
                ev(100, None, None, EventKind::Enqueued { status: TaskStatus::Pending }),
                ev(200, Some(101), Some(20), EventKind::Leased { attempt: 1 }),
                ev(300, Some(101), Some(20), EventKind::Succeeded),
            ],
            ..good_task(2)
        };
        e.journal[1] = commit(2, 20, 101);
        let pause = Fault { kind: FaultKind::Pause, nodes: vec![101], leader_hit: false, start_ms: 350, end_ms: 380 };
        e.faults = vec![pause];
        let r = check(&e);
        assert!(r.ok(), "{:?}", r.violations);
        let s = &r.stats;
        assert_eq!((s.worker_successes, s.member_successes, s.faults_on_workers), (1, 2, 1));

        // Killed at 250, its lease stood until 1_800 (limit: 1_000 + 500).
        e.tasks[1].history = vec![
            ev(100, None, None, EventKind::Enqueued { status: TaskStatus::Pending }),
            ev(200, Some(101), Some(20), EventKind::Leased { attempt: 1 }),
            ev(1_800, Some(101), Some(20), EventKind::Expired { retry_at_ms: 1_850 }),
            ev(1_900, Some(102), Some(21), EventKind::Leased { attempt: 2 }),
            ev(2_000, Some(102), Some(21), EventKind::Succeeded),
        ];
        e.journal[1] = commit(2, 21, 102);
        e.faults.push(Fault { kind: FaultKind::Kill, nodes: vec![101], leader_hit: false, start_ms: 250, end_ms: 260 });
        let r = check(&e);
        assert_eq!(
            r.violations,
            vec![Violation::LeasedToDead { task: 2, node: 101, token: 20, killed_ms: 250, ended_ms: Some(1_800) }]
        );
        assert_eq!(r.stats.worker_successes, 0, "102 is no worker of this run");
    }

    #[test]
    fn a_clean_run_passes_with_its_figures() {
        let r = check(&clean());
        assert!(r.ok(), "{:?}", r.violations);
        assert_eq!((r.stats.tasks_acknowledged, r.stats.journal_commits, r.stats.unverifiable), (3, 3, 0));
        assert_eq!(r.stats.longest_write_gap_ms, 400 - 95);
        assert_eq!(r.stats.ops["enqueue"]["ok"], 2);
    }

    #[test]
    fn a_lost_acknowledged_task_is_reported() {
        let mut e = clean();
        e.tasks.retain(|t| t.id != 2);
        e.journal.retain(|j| j.task != 2);
        assert_eq!(check(&e).violations, vec![Violation::Lost { task: 2 }]);
    }

    #[test]
    fn an_unended_task_is_reported_but_an_unacknowledged_one_may_be_missing() {
        let mut e = clean();
        e.ops.push(enqueue(&[], None, Outcome::Unknown));
        e.tasks[0].status = TaskStatus::Pending;
        e.tasks[0].history.truncate(1);
        e.journal.retain(|j| j.task != 1);
        assert_eq!(check(&e).violations, vec![Violation::NotEnded { task: 1, status: TaskStatus::Pending }]);
    }

    #[test]
    fn a_success_under_a_stale_token_is_reported() {
        // Leased under 20, expired, re-leased under 21, but the success
        // was recorded under the old 20.
        let mut e = clean();
        e.tasks[1].history = vec![
            ev(100, None, None, EventKind::Enqueued { status: TaskStatus::Pending }),
            ev(200, Some(1), Some(20), EventKind::Leased { attempt: 1 }),
            ev(250, Some(1), Some(20), EventKind::Expired { retry_at_ms: 260 }),
            ev(270, Some(2), Some(21), EventKind::Leased { attempt: 2 }),
            ev(300, Some(1), Some(20), EventKind::Succeeded),
        ];
        let r = check(&e);
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert!(matches!(&r.violations[0], Violation::StaleCommit { task: 2, token: 20, .. }), "{:?}", r.violations);
        // The same token after its lease expired, with no new lease yet.
        e.tasks[1].history.remove(3);
        assert!(matches!(&check(&e).violations[..], [Violation::StaleCommit { task: 2, token: 20, .. }]));
    }

    #[test]
    fn a_worker_told_of_a_success_the_state_machine_does_not_hold_is_reported() {
        let mut e = clean();
        e.journal.push(commit(3, 29, 2));
        let r = check(&e);
        assert!(
            r.violations.contains(&Violation::DoubleCommit { task: 3, tokens: vec![30, 29] }),
            "{:?}",
            r.violations
        );
        assert!(r.violations.iter().any(|v| matches!(v, Violation::StaleCommit { task: 3, token: 29, .. })));
    }

    #[test]
    fn a_double_success_in_the_history_is_reported() {
        let mut e = clean();
        let h = &mut e.tasks[0].history;
        h.push(ev(400, Some(2), Some(11), EventKind::Leased { attempt: 2 }));
        h.push(ev(500, Some(2), Some(11), EventKind::Succeeded));
        let r = check(&e);
        assert!(
            r.violations.contains(&Violation::DoubleCommit { task: 1, tokens: vec![10, 11] }),
            "{:?}",
            r.violations
        );
    }

    #[test]
    fn two_tasks_for_one_key_are_reported() {
        let mut e = clean();
        e.ops.push(enqueue(&[4], Some("k"), Outcome::Ok));
        e.tasks.push(FinalTask { key: Some("k".into()), ..good_task(4) });
        e.journal.push(commit(4, 40, 1));
        assert_eq!(check(&e).violations, vec![Violation::DuplicateKey { key: "k".into(), tasks: vec![3, 4] }]);
    }

    #[test]
    fn a_refused_write_that_took_effect_is_reported() {
        let mut e = clean();
        e.ops.push(enqueue(&[], Some("z"), Outcome::Failed));
        e.ops.push(enqueue(&[], Some("z"), Outcome::Failed));
        e.tasks.push(FinalTask { key: Some("z".into()), ..good_task(4) });
        e.journal.push(commit(4, 40, 1));
        assert_eq!(check(&e).violations, vec![Violation::RefusedButApplied { key: "z".into(), task: 4 }]);
        // One try of the key that may have taken effect: the task may exist.
        e.ops.push(enqueue(&[], Some("z"), Outcome::Unknown));
        assert_eq!(check(&e).violations, vec![]);
    }

    #[test]
    fn divergent_digests_are_reported() {
        let mut e = clean();
        e.digests[2] = digest(3, 50, "cd");
        assert!(matches!(&check(&e).violations[..], [Violation::Divergent { .. }]));
        let mut e = clean();
        e.digests[1] = digest(2, 49, "ab");
        assert!(matches!(&check(&e).violations[..], [Violation::Divergent { .. }]), "unequal applied indexes");
    }

    #[test]
    fn a_dead_nodes_lease_that_stands_too_long_is_reported() {
        let mut e = clean();
        // Node 1 killed at 250 while holding task 1's lease (granted at 200).
        e.faults.push(Fault { kind: FaultKind::Kill, nodes: vec![1], leader_hit: true, start_ms: 250, end_ms: 3_000 });
        let h = &mut e.tasks[0].history;
        h.truncate(2);
        h.push(ev(1_600, None, Some(10), EventKind::Expired { retry_at_ms: 1_700 }));
        h.push(ev(1_800, Some(2), Some(11), EventKind::Leased { attempt: 2 }));
        h.push(ev(1_900, Some(2), Some(11), EventKind::Succeeded));
        e.journal[0] = commit(1, 11, 2);
        let r = check(&e);
        assert!(r.ok(), "expired within lease + slack: {:?}", r.violations);
        assert_eq!(r.stats.leader_kill_to_next_success_ms, vec![Some(50)]);
        // The same expiry 2 s after the kill: past 1 000 + 500 ms.
        e.tasks[0].history[2].at_ms = 2_250;
        let r = check(&e);
        assert_eq!(
            r.violations,
            vec![Violation::LeasedToDead { task: 1, node: 1, token: 10, killed_ms: 250, ended_ms: Some(2_250) }]
        );
    }

    #[test]
    fn tasks_that_ran_twice_are_counted_not_failed() {
        let mut e = clean();
        for (node, token) in [(1, 9), (1, 10)] {
            e.journal.push(JournalLine {
                ev: "start".into(),
                node,
                task: 1,
                token,
                attempt: Some(1),
                outcome: None,
                status: None,
                ms: 150,
            });
        }
        let r = check(&e);
        assert!(r.ok());
        assert_eq!(r.stats.ran_more_than_once, 1);
    }
}
