//! Table-driven tests of each command: a state, a command, and the exact
//! response and state that must follow.

use super::*;

const Q: &str = "q";

/// A state machine with its cold store, driven like the log would drive it.
struct Harness {
    sm: StateMachine,
    cold: MemCold,
    now: u64,
}

impl Harness {
    fn new() -> Self {
        Harness { sm: StateMachine::new(), cold: MemCold::default(), now: 1_000 }
    }

    fn run(&mut self, command: Command) -> Response {
        let r = self.sm.apply(&Stamped { now_ms: self.now, command }, &mut self.cold);
        self.sm.check_invariants().unwrap();
        r
    }

    fn enqueue(&mut self, tasks: Vec<NewTask>) -> Vec<Enqueued> {
        match self.run(Command::Enqueue { tasks }) {
            Response::Enqueued(e) => e,
            other => panic!("enqueue: {other:?}"),
        }
    }

    fn enqueue_one(&mut self, t: NewTask) -> TaskId {
        self.enqueue(vec![t])[0].id
    }

    fn lease(&mut self, node: NodeId, max: u32) -> Vec<Granted> {
        match self.run(Command::Lease { node, queues: vec![], max }) {
            Response::Leased(g) => g,
            other => panic!("lease: {other:?}"),
        }
    }

    fn complete(
        &mut self,
        node: NodeId,
        task: TaskId,
        token: FencingToken,
        outcome: Outcome,
    ) -> Result<TaskStatus, Rejection> {
        match self.run(Command::Complete { node, completions: vec![Completion { task, token, outcome }] }) {
            Response::Completed(mut v) => v.remove(0),
            other => panic!("complete: {other:?}"),
        }
    }

    fn status(&self, id: TaskId) -> TaskStatus {
        self.sm.task(id).unwrap().status
    }

    fn configure(&mut self, patch: QueuePatch) {
        assert_eq!(self.run(Command::ConfigureQueue { queue: Q.into(), patch }), Response::Done);
    }
}

fn ok() -> Outcome {
    Outcome::Succeeded { result: "{\"ok\":true}".into() }
}

fn task() -> NewTask {
    NewTask::new(Q, "noop", "{}")
}

#[test]
fn enqueue_creates_pending_tasks_with_payload_and_history() {
    let mut h = Harness::new();
    let out = h.enqueue(vec![task(), NewTask::new(Q, "sleep", "{\"ms\":5}")]);
    assert_eq!(
        out,
        vec![
            Enqueued { id: TaskId(0), created: true, status: TaskStatus::Pending },
            Enqueued { id: TaskId(1), created: true, status: TaskStatus::Pending },
        ]
    );
    let t = h.sm.task(TaskId(1)).unwrap();
    assert_eq!((&*t.queue, &*t.kind, t.attempt, t.created_ms), (Q, "sleep", 0, 1_000));
    assert_eq!(h.cold.payloads[&TaskId(1)], "{\"ms\":5}");
    assert_eq!(h.cold.history(TaskId(1)).len(), 1);
    assert_eq!(h.sm.queue(Q).unwrap().config, QueueConfig::default());
}

#[test]
fn idempotency_key_enqueued_twice_gives_one_task() {
    let mut h = Harness::new();
    let mut t = task();
    t.idempotency_key = Some("k1".into());
    let first = h.enqueue(vec![t.clone()]);
    let second = h.enqueue(vec![t.clone(), t]);
    assert!(first[0].created);
    assert_eq!(second[0], Enqueued { id: first[0].id, created: false, status: TaskStatus::Pending });
    assert_eq!(second[1], Enqueued { id: first[0].id, created: false, status: TaskStatus::Pending });
    assert_eq!(h.sm.task_count(), 1);
}

#[test]
fn a_leased_task_enqueues_children_only_under_its_live_lease() {
    let mut h = Harness::new();
    let parent = h.enqueue_one(task());
    let g = h.lease(1, 1).remove(0);
    let mut child = task();
    child.idempotency_key = Some("run/part-0".into());
    let mut commit = task();
    commit.depends_on = vec![TaskRef::Key("run/part-0".into())];
    let made = match h.run(Command::EnqueueChildren { parent, token: g.token, tasks: vec![child.clone(), commit] }) {
        Response::Enqueued(e) => e,
        other => panic!("enqueue children: {other:?}"),
    };
    assert_eq!(made.len(), 2);
    assert_eq!(h.status(made[1].id), TaskStatus::Blocked);
    // A stale token (the lease moved on) adds nothing.
    let stale = FencingToken(g.token.0 + 100);
    let before = h.sm.task_count();
    assert_eq!(
        h.run(Command::EnqueueChildren { parent, token: stale, tasks: vec![task()] }),
        Response::Rejected(Rejection::StaleToken { task: parent, token: stale, current: Some(g.token) })
    );
    assert_eq!(h.sm.task_count(), before);
    // Nor does the parent once it ended.
    assert_eq!(h.complete(1, parent, g.token, ok()), Ok(TaskStatus::Succeeded));
    assert!(matches!(
        h.run(Command::EnqueueChildren { parent, token: g.token, tasks: vec![task()] }),
        Response::Rejected(Rejection::StaleToken { current: None, .. })
    ));
    assert_eq!(h.sm.task_count(), before);
    // Not a client write: applied while tokens are enforced, without a caller.
    assert!(super::auth::required_role(&Command::EnqueueChildren { parent, token: g.token, tasks: vec![] }).is_none());
}

#[test]
fn enqueue_rejections_change_nothing() {
    let limits = Limits { max_payload_bytes: 8, max_batch: 2, ..Limits::default() };
    let cases: Vec<(Vec<NewTask>, Rejection)> = vec![
        (vec![], Rejection::EmptyBatch),
        (vec![task(), task(), task()], Rejection::BatchTooLarge { tasks: 3, limit: 2 }),
        (
            vec![task(), NewTask::new(Q, "noop", "[1,2,3,4,5]")],
            Rejection::PayloadTooLarge { index: 1, bytes: 11, limit: 8 },
        ),
        (
            vec![NewTask::new("bad queue", "noop", "{}")],
            Rejection::InvalidName {
                index: 0,
                field: "queue".into(),
                reason: "\"bad queue\" may hold only letters, digits and . _ : / -".into(),
            },
        ),
        (
            vec![{
                let mut t = task();
                t.depends_on = vec![TaskRef::Id(TaskId(42))];
                t
            }],
            Rejection::UnknownDependency { index: 0, dependency: "42".into() },
        ),
        (
            vec![{
                let mut t = task();
                t.depends_on = vec![TaskRef::Key("nope".into())];
                t
            }],
            Rejection::UnknownDependency { index: 0, dependency: "key \"nope\"".into() },
        ),
    ];
    for (tasks, want) in cases {
        let mut h = Harness::new();
        h.sm = StateMachine::with_limits(limits.clone());
        let mut before = h.sm.clone();
        // The clock moves with every entry, refused or not; nothing else may.
        before.core.clock_ms = h.now;
        assert_eq!(h.run(Command::Enqueue { tasks }), Response::Rejected(want));
        assert_eq!(h.sm, before);
        assert!(h.cold.payloads.is_empty());
    }
}

#[test]
fn queue_depth_limit_rejects_with_queue_full() {
    let mut h = Harness::new();
    h.configure(QueuePatch { max_depth: Some(2), ..Default::default() });
    h.enqueue(vec![task()]);
    assert_eq!(
        h.run(Command::Enqueue { tasks: vec![task(), task()] }),
        Response::Rejected(Rejection::QueueFull { queue: Q.into(), depth: 1, limit: 2 })
    );
}

#[test]
fn lease_takes_priority_first_then_oldest() {
    let mut h = Harness::new();
    let low = h.enqueue_one(task());
    let mut hi = task();
    hi.priority = 5;
    let high = h.enqueue_one(hi);
    let low2 = h.enqueue_one(task());
    let g = h.lease(1, 10);
    assert_eq!(g.iter().map(|g| g.task).collect::<Vec<_>>(), vec![high, low, low2]);
    assert_eq!(g.iter().map(|g| g.token.0).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert!(g.iter().all(|g| g.attempt == 1 && g.expires_ms == 1_000 + 30_000));
    assert_eq!(h.status(low), TaskStatus::Leased);
    assert_eq!(h.sm.lease_count(1), 3);
}

#[test]
fn lease_respects_max_and_not_before() {
    let mut h = Harness::new();
    let mut delayed = task();
    delayed.delay_ms = 500;
    let d = h.enqueue_one(delayed);
    let now_task = h.enqueue_one(task());
    assert_eq!(h.lease(1, 0), vec![]);
    assert_eq!(h.lease(1, 5).iter().map(|g| g.task).collect::<Vec<_>>(), vec![now_task]);
    h.now += 499;
    assert!(!h.sm.can_lease(&[], h.now));
    assert_eq!(h.lease(1, 5), vec![]);
    h.now += 1;
    assert!(h.sm.can_lease(&[Q.to_string()], h.now));
    assert_eq!(h.lease(1, 5).iter().map(|g| g.task).collect::<Vec<_>>(), vec![d]);
}

#[test]
fn paused_queue_leases_nothing_until_resumed() {
    let mut h = Harness::new();
    h.enqueue_one(task());
    assert!(h.sm.can_lease(&[], h.now));
    assert_eq!(h.run(Command::SetQueuePaused { queue: Q.into(), paused: true }), Response::Done);
    assert!(!h.sm.can_lease(&[], h.now));
    assert_eq!(h.lease(1, 5), vec![]);
    assert_eq!(h.run(Command::SetQueuePaused { queue: Q.into(), paused: false }), Response::Done);
    assert_eq!(h.lease(1, 5).len(), 1);
}

#[test]
fn concurrency_cap_limits_leases_per_queue() {
    let mut h = Harness::new();
    h.configure(QueuePatch { concurrency: Some(2), ..Default::default() });
    h.enqueue(vec![task(), task(), task()]);
    assert_eq!(h.lease(1, 10).len(), 2);
    assert_eq!(h.lease(2, 10).len(), 0);
}

#[test]
fn lease_only_named_queues() {
    let mut h = Harness::new();
    h.enqueue(vec![NewTask::new("a", "noop", "{}"), NewTask::new("b", "noop", "{}")]);
    match h.run(Command::Lease { node: 1, queues: vec!["b".into(), "missing".into()], max: 10 }) {
        Response::Leased(g) => assert_eq!(g.iter().map(|g| g.queue.as_str()).collect::<Vec<_>>(), vec!["b"]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn draining_node_is_leased_nothing() {
    let mut h = Harness::new();
    h.enqueue_one(task());
    assert_eq!(h.run(Command::DrainNode { node: 1, draining: true }), Response::Done);
    assert_eq!(h.lease(1, 5), vec![]);
    assert_eq!(h.lease(2, 5).len(), 1);
}

#[test]
fn completion_with_current_token_succeeds_and_stores_result() {
    let mut h = Harness::new();
    let id = h.enqueue_one(task());
    let g = h.lease(1, 1).remove(0);
    h.now += 10;
    assert_eq!(h.complete(1, id, g.token, ok()), Ok(TaskStatus::Succeeded));
    let t = h.sm.task(id).unwrap();
    assert_eq!((t.status, t.lease.clone(), t.finished_ms), (TaskStatus::Succeeded, None, Some(1_010)));
    assert_eq!(h.cold.results[&id], "{\"ok\":true}");
    assert_eq!(h.sm.lease_count(1), 0);
}

#[test]
fn stale_token_completion_is_rejected() {
    let mut h = Harness::new();
    h.configure(QueuePatch { lease_ms: Some(1_000), backoff_base_ms: Some(0), ..Default::default() });
    let id = h.enqueue_one(task());
    let first = h.lease(1, 1).remove(0);
    h.now += 1_000;
    h.run(Command::ExpireLeases);
    let second = h.lease(2, 1).remove(0);
    assert!(second.token > first.token);
    assert_eq!(
        h.complete(1, id, first.token, ok()),
        Err(Rejection::StaleToken { task: id, token: first.token, current: Some(second.token) })
    );
    assert_eq!(h.status(id), TaskStatus::Leased);
    assert_eq!(h.complete(2, id, second.token, ok()), Ok(TaskStatus::Succeeded));
    // Once done, even the last token is stale.
    assert_eq!(
        h.complete(2, id, second.token, ok()),
        Err(Rejection::StaleToken { task: id, token: second.token, current: None })
    );
    assert_eq!(h.complete(2, TaskId(99), second.token, ok()), Err(Rejection::UnknownTask(TaskId(99))));
}

#[test]
fn expired_lease_returns_task_with_attempt_and_backoff() {
    let mut h = Harness::new();
    h.configure(QueuePatch { lease_ms: Some(1_000), backoff_base_ms: Some(400), ..Default::default() });
    let id = h.enqueue_one(task());
    h.lease(1, 1);
    h.now += 999;
    assert_eq!(h.run(Command::ExpireLeases), Response::Expired(vec![]));
    h.now += 1;
    assert_eq!(h.run(Command::ExpireLeases), Response::Expired(vec![(id, TaskStatus::Pending)]));
    let t = h.sm.task(id).unwrap().clone();
    assert_eq!((t.status, t.attempt, t.expiry_streak, t.lease.clone()), (TaskStatus::Pending, 1, 1, None));
    // Backoff is base * 2^0, less at most a quarter.
    assert!(t.not_before_ms > 2_000 + 300 && t.not_before_ms <= 2_000 + 400, "{}", t.not_before_ms);
    assert_eq!(h.lease(2, 1), vec![]);
    h.now = t.not_before_ms;
    let g = h.lease(2, 1).remove(0);
    assert_eq!(g.attempt, 2);
}

#[test]
fn backoff_doubles_and_is_capped() {
    let mut h = Harness::new();
    h.configure(QueuePatch {
        backoff_base_ms: Some(1_000),
        backoff_cap_ms: Some(3_000),
        max_attempts: Some(10),
        ..Default::default()
    });
    let id = h.enqueue_one(task());
    let mut waits = vec![];
    for _ in 0..4 {
        let g = h.lease(1, 1).remove(0);
        h.complete(1, id, g.token, Outcome::Retryable { error: "flaky".into() }).unwrap();
        let nb = h.sm.task(id).unwrap().not_before_ms;
        waits.push(nb - h.now);
        h.now = nb;
    }
    let full = [1_000, 2_000, 3_000, 3_000];
    for (w, f) in waits.iter().zip(full) {
        assert!(*w <= f && *w >= f - f / 4, "waits {waits:?}");
    }
}

#[test]
fn max_attempts_leads_to_dead() {
    let mut h = Harness::new();
    h.configure(QueuePatch { max_attempts: Some(2), backoff_base_ms: Some(0), ..Default::default() });
    let id = h.enqueue_one(task());
    let g = h.lease(1, 1).remove(0);
    assert_eq!(h.complete(1, id, g.token, Outcome::Retryable { error: "e1".into() }), Ok(TaskStatus::Pending));
    let g = h.lease(1, 1).remove(0);
    assert_eq!(h.complete(1, id, g.token, Outcome::Retryable { error: "e2".into() }), Ok(TaskStatus::Dead));
    let t = h.sm.task(id).unwrap();
    assert_eq!(t.last_error.as_deref(), Some("gave up after 2 attempts: e2"));
    assert_eq!(h.lease(1, 1), vec![]);
}

#[test]
fn expiry_at_max_attempts_is_dead() {
    let mut h = Harness::new();
    h.configure(QueuePatch { max_attempts: Some(1), lease_ms: Some(100), ..Default::default() });
    let id = h.enqueue_one(task());
    h.lease(1, 1);
    h.now += 100;
    assert_eq!(h.run(Command::ExpireLeases), Response::Expired(vec![(id, TaskStatus::Dead)]));
}

#[test]
fn permanent_failure_is_dead_at_once() {
    let mut h = Harness::new();
    let id = h.enqueue_one(task());
    let g = h.lease(1, 1).remove(0);
    assert_eq!(h.complete(1, id, g.token, Outcome::Permanent { error: "bad input".into() }), Ok(TaskStatus::Dead));
    assert_eq!(h.sm.task(id).unwrap().last_error.as_deref(), Some("bad input"));
}

#[test]
fn blocked_task_becomes_pending_when_dependency_succeeds() {
    let mut h = Harness::new();
    let mut a = task();
    a.idempotency_key = Some("a".into());
    let mut b = task();
    b.depends_on = vec![TaskRef::Key("a".into())];
    let out = h.enqueue(vec![a, b]);
    let (a, b) = (out[0].id, out[1].id);
    assert_eq!(out[1].status, TaskStatus::Blocked);
    let g = h.lease(1, 10);
    assert_eq!(g.len(), 1, "only the dependency is leasable");
    h.complete(1, a, g[0].token, ok()).unwrap();
    assert_eq!(h.status(b), TaskStatus::Pending);
    assert_eq!(h.lease(1, 10)[0].task, b);
}

#[test]
fn task_with_two_dependencies_waits_for_both() {
    let mut h = Harness::new();
    let a = h.enqueue_one(task());
    let b = h.enqueue_one(task());
    let mut c = task();
    c.depends_on = vec![TaskRef::Id(a), TaskRef::Id(b)];
    let c = h.enqueue_one(c);
    let g = h.lease(1, 10);
    h.complete(1, a, g[0].token, ok()).unwrap();
    assert_eq!(h.status(c), TaskStatus::Blocked);
    h.complete(1, b, g[1].token, ok()).unwrap();
    assert_eq!(h.status(c), TaskStatus::Pending);
}

#[test]
fn dead_dependency_cancels_dependents_transitively() {
    let mut h = Harness::new();
    let a = h.enqueue_one(task());
    let mut b = task();
    b.depends_on = vec![TaskRef::Id(a)];
    let b = h.enqueue_one(b);
    let mut c = task();
    c.depends_on = vec![TaskRef::Id(b)];
    let c = h.enqueue_one(c);
    let g = h.lease(1, 10).remove(0);
    h.complete(1, a, g.token, Outcome::Permanent { error: "boom".into() }).unwrap();
    assert_eq!((h.status(b), h.status(c)), (TaskStatus::Cancelled, TaskStatus::Cancelled));
    assert_eq!(h.sm.task(b).unwrap().last_error.as_deref(), Some("dependency 0 is dead"));
    assert_eq!(h.sm.task(c).unwrap().last_error.as_deref(), Some("dependency 1 is cancelled"));
    // A new task cannot depend on a dead one.
    let mut d = task();
    d.depends_on = vec![TaskRef::Id(a)];
    assert_eq!(
        h.run(Command::Enqueue { tasks: vec![d] }),
        Response::Rejected(Rejection::DependencyFailed { index: 0, dependency: a, status: TaskStatus::Dead })
    );
    // Retrying the dependency, then its dependents, runs them all.
    assert_eq!(h.run(Command::Retry { task: a }), Response::Task { id: a, status: TaskStatus::Pending });
    assert_eq!(h.run(Command::Retry { task: b }), Response::Task { id: b, status: TaskStatus::Blocked });
}

#[test]
fn cancel_and_retry() {
    let mut h = Harness::new();
    let id = h.enqueue_one(task());
    let g = h.lease(1, 1).remove(0);
    assert_eq!(
        h.run(Command::Cancel { task: id, reason: String::new() }),
        Response::Task { id, status: TaskStatus::Cancelled }
    );
    assert_eq!(h.sm.lease_count(1), 0);
    assert_eq!(
        h.complete(1, id, g.token, ok()),
        Err(Rejection::StaleToken { task: id, token: g.token, current: None })
    );
    assert_eq!(
        h.run(Command::Cancel { task: id, reason: String::new() }),
        Response::Rejected(Rejection::WrongStatus {
            task: id,
            status: TaskStatus::Cancelled,
            expected: "pending, blocked or leased".into()
        })
    );
    assert_eq!(h.run(Command::Retry { task: id }), Response::Task { id, status: TaskStatus::Pending });
    assert_eq!(h.sm.task(id).unwrap().attempt, 0);
    assert_eq!(
        h.run(Command::Retry { task: id }),
        Response::Rejected(Rejection::WrongStatus {
            task: id,
            status: TaskStatus::Pending,
            expected: "dead or cancelled".into()
        })
    );
    assert_eq!(h.run(Command::Retry { task: TaskId(7) }), Response::Rejected(Rejection::UnknownTask(TaskId(7))));
}

#[test]
fn heartbeat_renews_own_leases_and_revokes_others() {
    let mut h = Harness::new();
    h.configure(QueuePatch { lease_ms: Some(1_000), ..Default::default() });
    let a = h.enqueue_one(task());
    let b = h.enqueue_one(task());
    let g = h.lease(1, 2);
    h.now += 500;
    let held = vec![
        HeldLease {
            task: a,
            token: g[0].token,
            progress: Some(ReportedProgress { fraction: 2.0, message: "half".into() }),
        },
        HeldLease { task: b, token: FencingToken(99), progress: None },
    ];
    match h.run(Command::Heartbeat { node: 1, slots: 4, held }) {
        Response::HeartbeatAck(ack) => {
            assert_eq!(ack.renewed, vec![(a, 2_500)]);
            assert_eq!(ack.revoked, vec![(b, FencingToken(99))]);
            assert!(!ack.draining);
        }
        other => panic!("{other:?}"),
    }
    let t = h.sm.task(a).unwrap();
    assert_eq!(t.progress, Some(Progress { fraction: 1.0, message: "half".into() }));
    assert_eq!(h.sm.nodes()[&1].slots, 4);
    // Another node cannot renew node 1's lease even with the right token.
    match h.run(Command::Heartbeat {
        node: 2,
        slots: 1,
        held: vec![HeldLease { task: a, token: g[0].token, progress: None }],
    }) {
        Response::HeartbeatAck(ack) => assert_eq!(ack.revoked, vec![(a, g[0].token)]),
        other => panic!("{other:?}"),
    }
    h.now = 2_000;
    assert_eq!(h.run(Command::ExpireLeases), Response::Expired(vec![(b, TaskStatus::Pending)]));
}

#[test]
fn release_node_returns_its_leases() {
    let mut h = Harness::new();
    h.configure(QueuePatch { backoff_base_ms: Some(0), ..Default::default() });
    h.enqueue(vec![task(), task()]);
    h.lease(1, 1);
    h.lease(2, 1);
    match h.run(Command::ReleaseNode { node: 1, forget: true }) {
        Response::Released(r) => assert_eq!(r, vec![(TaskId(0), TaskStatus::Pending)]),
        other => panic!("{other:?}"),
    }
    assert!(!h.sm.nodes().contains_key(&1));
    assert_eq!(h.sm.lease_count(2), 1);
    assert_eq!(h.lease(3, 5).len(), 1);
}

/// A backup's state becomes a new cluster's: leases handed back, nodes
/// forgotten, and tokens in the next epoch, past every old one.
#[test]
fn a_new_epoch_releases_leases_forgets_nodes_and_jumps_tokens() {
    let mut h = Harness::new();
    h.configure(QueuePatch { backoff_base_ms: Some(0), ..Default::default() });
    h.enqueue(vec![task(), task(), task()]);
    let old = h.lease(1, 2);
    h.run(Command::RemoveNode { node: 7 });
    assert!(h.sm.is_removed(7));
    let highest = old.iter().map(|g| g.token).max().unwrap();

    let epoch = h.sm.begin_new_epoch(&mut h.cold);
    h.sm.check_invariants().unwrap();
    assert_eq!(epoch.epoch, 1);
    assert_eq!(epoch.next_token(), 1 << EPOCH_SHIFT);
    assert_eq!(epoch.released, vec![(TaskId(0), TaskStatus::Pending), (TaskId(1), TaskStatus::Pending)]);
    assert_eq!(epoch.forgotten_nodes, 1);
    assert!(h.sm.nodes().is_empty() && !h.sm.is_removed(7));
    assert_eq!(h.sm.lease_count(1), 0);
    assert!(matches!(h.cold.history(TaskId(0)).last().map(|e| &e.what), Some(EventKind::Released { .. })));

    // The new cluster's first lease: the next epoch's first token.
    let new = h.lease(2, 3);
    assert_eq!(new.len(), 3);
    assert!(new.iter().all(|g| g.token > highest && g.token.0 >> EPOCH_SHIFT == 1));
    assert_eq!(new.iter().map(|g| g.token.0).min(), Some(1 << EPOCH_SHIFT));

    // A restore of a restored cluster goes one epoch further.
    assert_eq!(h.sm.begin_new_epoch(&mut h.cold).epoch, 2);
}

/// A removed node is refused every worker command, whatever it carries,
/// and none of them re-creates its record; admitting it again lifts that.
#[test]
fn removed_node_is_refused_leases_heartbeats_and_completions() {
    let mut h = Harness::new();
    h.configure(QueuePatch { backoff_base_ms: Some(0), ..Default::default() });
    h.enqueue(vec![task(), task(), task()]);
    let held = h.lease(1, 1);
    assert_eq!(h.run(Command::DrainNode { node: 1, draining: true }), Response::Done);
    match h.run(Command::RemoveNode { node: 1 }) {
        Response::Released(r) => assert_eq!(r, vec![(held[0].task, TaskStatus::Pending)]),
        other => panic!("{other:?}"),
    }
    assert!(h.sm.is_removed(1));
    assert!(!h.sm.nodes().contains_key(&1));
    let (task, token) = (held[0].task, held[0].token);
    let refused = Response::Rejected(Rejection::NodeRemoved(1));
    let table: Vec<(&str, Command)> = vec![
        ("lease", Command::Lease { node: 1, queues: vec![], max: 5 }),
        ("lease of a named queue", Command::Lease { node: 1, queues: vec![Q.into()], max: 1 }),
        ("empty heartbeat", Command::Heartbeat { node: 1, slots: 4, held: vec![] }),
        (
            "heartbeat of its old lease",
            Command::Heartbeat { node: 1, slots: 4, held: vec![HeldLease { task, token, progress: None }] },
        ),
        (
            "completion under its old token",
            Command::Complete { node: 1, completions: vec![Completion { task, token, outcome: ok() }] },
        ),
        ("empty completion", Command::Complete { node: 1, completions: vec![] }),
        ("drain", Command::DrainNode { node: 1, draining: false }),
    ];
    for (what, command) in table {
        let before = h.sm.clone();
        h.now += 10;
        assert_eq!(h.run(command), refused, "{what}");
        // Nothing changed but the clock: no lease, no record, no drain flag lost.
        assert!(!h.sm.nodes().contains_key(&1), "{what} re-created the node's record");
        assert_eq!(h.sm.lease_count(1), 0, "{what}");
        let mut expected = before;
        expected.core.clock_ms = h.now;
        assert!(h.sm == expected, "{what} changed the state");
    }
    // Inside a batch the other commands still apply.
    match h.run(Command::Batch(vec![
        Command::Lease { node: 1, queues: vec![], max: 1 },
        Command::Lease { node: 2, queues: vec![], max: 1 },
    ])) {
        Response::Batch(r) => {
            assert_eq!(r[0], refused);
            assert!(matches!(&r[1], Response::Leased(g) if g.len() == 1));
        }
        other => panic!("{other:?}"),
    }
    // Removing twice is harmless; other nodes are untouched.
    assert_eq!(h.run(Command::RemoveNode { node: 1 }), Response::Released(vec![]));
    assert_eq!(h.sm.lease_count(2), 1);
    // Admitted again (it rejoined), it works like any node, and survives a snapshot.
    assert_eq!(h.run(Command::AdmitNode { node: 1 }), Response::Done);
    assert!(!h.sm.is_removed(1));
    assert_eq!(h.lease(1, 1).len(), 1);
    assert_eq!(h.run(Command::AdmitNode { node: 7 }), Response::Done);
    assert_eq!(h.run(Command::RemoveNode { node: 3 }), Response::Released(vec![]));
    let restored = through_snapshot(&h.sm);
    assert_eq!(restored, h.sm);
    assert!(restored.is_removed(3) && !restored.is_removed(1));
}

#[test]
fn configure_queue_validates() {
    let mut h = Harness::new();
    for (patch, msg) in [
        (QueuePatch { lease_ms: Some(10), ..Default::default() }, "lease_ms must be at least 100"),
        (QueuePatch { max_attempts: Some(0), ..Default::default() }, "max_attempts must be at least 1"),
        (
            QueuePatch { backoff_base_ms: Some(10), backoff_cap_ms: Some(5), ..Default::default() },
            "backoff_base_ms must not exceed backoff_cap_ms",
        ),
    ] {
        assert_eq!(
            h.run(Command::ConfigureQueue { queue: Q.into(), patch }),
            Response::Rejected(Rejection::InvalidConfig(msg.into()))
        );
    }
    assert_eq!(h.sm.queue(Q).unwrap().config, QueueConfig::default());
}

#[test]
fn a_refused_patch_changes_no_setting() {
    let mut h = Harness::new();
    h.configure(QueuePatch { concurrency: Some(2), ..Default::default() });
    let before = h.sm.queue(Q).unwrap().config.clone();
    let patch = QueuePatch { concurrency: Some(5), lease_ms: Some(10), ..Default::default() };
    assert_eq!(
        h.run(Command::ConfigureQueue { queue: Q.into(), patch: patch.clone() }),
        Response::Rejected(Rejection::InvalidConfig("lease_ms must be at least 100".into()))
    );
    assert_eq!(h.sm.queue(Q).unwrap().config, before);
    let mut config = before.clone();
    assert_eq!(config.patch(&patch), Err("lease_ms must be at least 100".to_string()));
    assert_eq!(config, before);
}

#[test]
fn the_settings_table_describes_queue_config() {
    use super::types::{SettingType, QUEUE_SETTINGS};
    // One row per field, in the fields' (serialized) order.
    let json = serde_json::to_string(&QueueConfig::default()).unwrap();
    let keys: Vec<&str> = json
        .trim_matches(|c| c == '{' || c == '}')
        .split(',')
        .map(|kv| kv.split(':').next().unwrap().trim_matches('"'))
        .collect();
    let names: Vec<&str> = QUEUE_SETTINGS.iter().map(|s| s.name).collect();
    assert_eq!(names, keys);

    let defaults = QueueConfig::default();
    assert_eq!(defaults.validate(), Ok(()));
    assert!(QueuePatch::default().is_empty());
    for s in QUEUE_SETTINGS {
        assert_eq!(defaults.get(s.name), Some(s.default), "{}", s.name);
        assert!(!s.help.is_empty() && !s.help.ends_with('.'), "{}: one line, no final period", s.name);
        // Each row sets its own field, and only it: in the patch, then in
        // the settings (unless a check refuses the value).
        let mut one = QueuePatch::default();
        one.set(s.name, s.default + 1).unwrap();
        assert!(!one.is_empty());
        let body = serde_json::to_value(&one).unwrap();
        let set: Vec<&String> =
            body.as_object().unwrap().iter().filter(|(_, v)| !v.is_null()).map(|(k, _)| k).collect();
        assert_eq!(set, [s.name], "{}", s.name);
        let mut config = QueueConfig::default();
        match config.patch(&one) {
            Ok(()) => assert_eq!(config.get(s.name), Some(s.default + 1), "{}", s.name),
            Err(_) => assert_eq!(config, defaults, "{}", s.name),
        }
        let too_big = u64::from(u32::MAX) + 1;
        assert_eq!(one.set(s.name, too_big).is_ok(), s.ty == SettingType::U64, "{}", s.name);
    }
    assert_eq!(defaults.get("no_such_setting"), None);
    assert!(QueuePatch::default().set("no_such_setting", 1).is_err());
}

#[test]
fn a_queue_patch_refuses_unknown_keys() {
    let patch: QueuePatch = serde_json::from_str(r#"{"lease_ms": 1000, "concurrency": null}"#).unwrap();
    assert_eq!(patch, QueuePatch { lease_ms: Some(1_000), ..Default::default() });
    assert!(serde_json::from_str::<QueuePatch>(r#"{"lease_msec": 1000}"#).is_err());
    assert!(serde_json::from_str::<QueuePatch>(r#"{"max_attempts": 4294967296}"#).is_err());
}

#[test]
fn history_is_bounded_per_task() {
    let mut h = Harness::new();
    h.sm = StateMachine::with_limits(Limits { max_history_per_task: 3, ..Limits::default() });
    h.configure(QueuePatch { max_attempts: Some(100), backoff_base_ms: Some(0), ..Default::default() });
    let id = h.enqueue_one(task());
    for _ in 0..5 {
        let g = h.lease(1, 1).remove(0);
        h.complete(1, id, g.token, Outcome::Retryable { error: "again".into() }).unwrap();
    }
    let hist = h.cold.history(id);
    assert_eq!(hist.len(), 3);
    assert_eq!(h.sm.task(id).unwrap().history_len, 11);
    assert!(matches!(hist.last().unwrap().what, EventKind::Failed { .. }));
}

#[test]
fn garbage_collection_forgets_old_ended_tasks() {
    let mut h = Harness::new();
    h.configure(QueuePatch { retention_ms: Some(1_000), ..Default::default() });
    let mut t = task();
    t.idempotency_key = Some("k".into());
    let id = h.enqueue_one(t);
    let keep = h.enqueue_one(task());
    let g = h.lease(1, 1).remove(0);
    h.complete(1, id, g.token, ok()).unwrap();
    h.now += 999;
    assert_eq!(h.run(Command::CollectGarbage), Response::Collected { tasks: 0 });
    h.now += 1;
    assert_eq!(h.run(Command::CollectGarbage), Response::Collected { tasks: 1 });
    assert!(h.sm.task(id).is_none() && h.sm.task(keep).is_some());
    assert!(h.sm.task_by_key("k").is_none());
    assert!(!h.cold.payloads.contains_key(&id) && h.cold.history(id).is_empty());
}

#[test]
fn clock_never_steps_back() {
    let mut h = Harness::new();
    h.now = 5_000;
    h.enqueue_one(task());
    h.now = 4_000;
    let id = h.enqueue_one(task());
    assert_eq!(h.sm.clock_ms(), 5_000);
    assert_eq!(h.sm.task(id).unwrap().created_ms, 5_000);
}

#[test]
fn batch_applies_in_order() {
    let mut h = Harness::new();
    let r = h.run(Command::Batch(vec![
        Command::Enqueue { tasks: vec![task()] },
        Command::Lease { node: 1, queues: vec![], max: 1 },
        Command::Cancel { task: TaskId(5), reason: String::new() },
    ]));
    match r {
        Response::Batch(v) => {
            assert!(matches!(v[0], Response::Enqueued(_)));
            assert!(matches!(&v[1], Response::Leased(g) if g.len() == 1));
            assert_eq!(v[2], Response::Rejected(Rejection::UnknownTask(TaskId(5))));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn queries_page_and_count() {
    let mut h = Harness::new();
    h.enqueue((0..5).map(|_| task()).collect());
    h.enqueue(vec![NewTask::new("other", "noop", "{}")]);
    h.lease(1, 1);
    let p1 = h.sm.tasks(Some(Q), Some(TaskStatus::Pending), None, 2);
    assert_eq!(p1.tasks.iter().map(|t| t.id.0).collect::<Vec<_>>(), vec![1, 2]);
    let p2 = h.sm.tasks(Some(Q), Some(TaskStatus::Pending), p1.next, 2);
    assert_eq!(p2.tasks.iter().map(|t| t.id.0).collect::<Vec<_>>(), vec![3, 4]);
    assert_eq!(p2.next, None);
    let stats = h.sm.queue_stats(1_500);
    let q = stats.iter().find(|s| s.name == Q).unwrap();
    assert_eq!(q.counts[&TaskStatus::Pending], 4);
    assert_eq!(q.counts[&TaskStatus::Leased], 1);
    assert_eq!(q.oldest_pending_age_ms, Some(500));
    assert_eq!(h.sm.leases_of(1).len(), 1);
}

/// The state through its stored shapes (format 1's core, then the format)
/// and back.
fn through_snapshot(sm: &StateMachine) -> StateMachine {
    use crate::format::{v1::CoreOut, StateV4};
    let config = bincode::config::standard();
    // Version 4's shape (version 3's plus the format), whatever the format.
    let bytes = bincode::serde::encode_to_vec((CoreOut(&sm.core), sm.format()), config).unwrap();
    let (StateV4(back), used): (StateV4, usize) = bincode::serde::decode_from_slice(&bytes, config).unwrap();
    assert_eq!(used, bytes.len());
    back
}

#[test]
fn set_format_only_raises_the_format_and_survives_a_snapshot() {
    let mut h = Harness::new();
    assert_eq!(h.sm.format(), 1, "a new state is format 1 until told otherwise");
    assert_eq!(h.run(Command::SetFormat { format: 2 }), Response::Done);
    assert_eq!(h.sm.format(), 2);
    assert_eq!(h.run(Command::SetFormat { format: 1 }), Response::Done);
    assert_eq!(h.sm.format(), 2, "never lowered");
    assert_eq!(through_snapshot(&h.sm).format(), 2);
}

#[test]
fn redrive_retries_the_dead_tasks_of_a_queue_only() {
    let mut h = Harness::new();
    let mut spec = task();
    spec.max_attempts = Some(1);
    let ids: Vec<TaskId> = h.enqueue(vec![spec.clone(), spec.clone(), spec]).iter().map(|e| e.id).collect();
    let granted = h.lease(1, 3);
    let fail =
        |g: &Granted| Completion { task: g.task, token: g.token, outcome: Outcome::Permanent { error: "no".into() } };
    h.run(Command::Complete { node: 1, completions: vec![fail(&granted[0]), fail(&granted[1])] });
    h.run(Command::Complete {
        node: 1,
        completions: vec![Completion {
            task: granted[2].task,
            token: granted[2].token,
            outcome: Outcome::Succeeded { result: "null".into() },
        }],
    });
    assert_eq!(
        h.run(Command::RedriveQueue { queue: "nope".into(), max: 10 }),
        Response::Rejected(Rejection::UnknownQueue("nope".into()))
    );
    let q = h.sm.task(ids[0]).unwrap().queue.to_string();
    assert_eq!(
        h.run(Command::RedriveQueue { queue: q.clone(), max: 1 }),
        Response::Batch(vec![Response::Task { id: granted[0].task, status: TaskStatus::Pending }]),
        "at most max, those that ended first first"
    );
    assert_eq!(
        h.run(Command::RedriveQueue { queue: q.clone(), max: 10 }),
        Response::Batch(vec![Response::Task { id: granted[1].task, status: TaskStatus::Pending }]),
        "the succeeded task stays as it is"
    );
    assert_eq!(h.run(Command::RedriveQueue { queue: q, max: 10 }), Response::Batch(vec![]));
    h.sm.check_invariants().unwrap();
}

#[test]
fn snapshot_round_trip_rebuilds_indexes() {
    let mut h = Harness::new();
    h.enqueue((0..4).map(|_| task()).collect());
    h.lease(1, 2);
    let restored = through_snapshot(&h.sm);
    assert_eq!(restored, h.sm);
    restored.check_invariants().unwrap();
    assert_eq!(restored.lease_count(1), 2);
}

// ----- stuck tasks ------------------------------------------------------------

/// The reasons `stuck` gives for each task it lists, at `now`.
fn stuck_reasons(h: &Harness, now: u64) -> Vec<(u64, Vec<StuckReason>)> {
    h.sm.stuck(now, None).tasks.into_iter().map(|s| (s.task.id.0, s.reasons)).collect()
}

#[test]
fn stuck_after_k_lease_expiries_in_a_row() {
    let mut h = Harness::new();
    h.configure(QueuePatch {
        lease_ms: Some(1_000),
        backoff_base_ms: Some(0),
        stuck_expiries: Some(2),
        ..Default::default()
    });
    let id = h.enqueue_one(task());
    for round in 1..=2u32 {
        assert_eq!(h.lease(1, 1).len(), 1);
        h.now += 1_001;
        assert!(matches!(h.run(Command::ExpireLeases), Response::Expired(v) if v.len() == 1));
        let reasons = stuck_reasons(&h, h.now);
        if round < 2 {
            assert_eq!(reasons, vec![], "one expiry is not stuck yet");
        } else {
            assert_eq!(reasons, vec![(id.0, vec![StuckReason::LeaseExpiries { expiries: 2, limit: 2 }])]);
        }
    }
    // A completion (even a retryable failure) ends the streak.
    let g = h.lease(1, 1).remove(0);
    assert_eq!(h.complete(1, id, g.token, Outcome::Retryable { error: "again".into() }), Ok(TaskStatus::Pending));
    assert_eq!(stuck_reasons(&h, h.now), vec![]);
    // Off when the limit is 0.
    h.configure(QueuePatch { stuck_expiries: Some(0), ..Default::default() });
    assert_eq!(h.sm.queue(Q).unwrap().config.stuck_expiries, 0);
}

#[test]
fn stuck_when_running_past_the_limit_or_its_node_is_silent() {
    let mut h = Harness::new();
    h.configure(QueuePatch { stuck_run_ms: Some(5_000), stuck_silence_ms: Some(3_000), ..Default::default() });
    let id = h.enqueue_one(task());
    let g = h.lease(7, 1).remove(0);
    assert_eq!(stuck_reasons(&h, h.now + 2_000), vec![]);
    // The node keeps sending heartbeats: only the run time counts.
    h.now += 5_500;
    let held = vec![HeldLease { task: id, token: g.token, progress: None }];
    assert!(matches!(h.run(Command::Heartbeat { node: 7, slots: 1, held }), Response::HeartbeatAck(_)));
    assert_eq!(
        stuck_reasons(&h, h.now + 500),
        vec![(id.0, vec![StuckReason::RunningTooLong { running_ms: 6_000, limit_ms: 5_000 }])]
    );
    // Then it goes quiet.
    let report = h.sm.stuck(h.now + 4_000, None);
    assert_eq!(report.tasks[0].reasons[1], StuckReason::NodeSilent { node: 7, silent_ms: 4_000, limit_ms: 3_000 });
    assert_eq!(report.silent_nodes, vec![SilentNode { node: 7, silent_ms: 4_000, leases: 1 }]);
    assert_eq!(report.tasks[0].reasons[1].kind(), "node_silent");
    assert_eq!(
        report.tasks[0].reasons[1].to_string(),
        "node 7 holds the lease but sent no heartbeat for 4.0s (limit 3.0s)"
    );
    // Another queue's filter sees nothing.
    assert_eq!(h.sm.stuck(h.now + 4_000, Some("other")).tasks, vec![]);
}

#[test]
fn stuck_when_far_beyond_the_queues_typical_duration() {
    let mut h = Harness::new();
    h.configure(QueuePatch { stuck_silence_ms: Some(0), lease_ms: Some(1_000_000), ..Default::default() });
    for _ in 0..query::TYPICAL_MIN_SAMPLES {
        let id = h.enqueue_one(task());
        let g = h.lease(1, 1).remove(0);
        h.now += 2_000;
        assert_eq!(h.complete(1, id, g.token, ok()), Ok(TaskStatus::Succeeded));
    }
    assert_eq!(h.sm.typical_duration_ms(Q), Some(2_000));
    let slow = h.enqueue_one(task());
    h.lease(1, 1);
    let start = h.now;
    // 10x typical is 20 s, but nothing is flagged before the floor (60 s).
    assert_eq!(stuck_reasons(&h, start + 30_000), vec![]);
    assert_eq!(
        stuck_reasons(&h, start + 61_000),
        vec![(slow.0, vec![StuckReason::BeyondTypical { running_ms: 61_000, typical_ms: 2_000, factor: 10 }])]
    );
}

#[test]
fn tasks_blocked_behind_a_stuck_one_are_stuck_too() {
    let mut h = Harness::new();
    h.configure(QueuePatch { stuck_run_ms: Some(1_000), stuck_silence_ms: Some(0), ..Default::default() });
    let a = h.enqueue_one(task());
    let mut b = task();
    b.depends_on = vec![TaskRef::Id(a)];
    let b = h.enqueue_one(b);
    let mut c = task();
    c.depends_on = vec![TaskRef::Id(b)];
    let c = h.enqueue_one(c);
    h.lease(1, 1);
    assert_eq!(
        stuck_reasons(&h, h.now + 2_000),
        vec![
            (a.0, vec![StuckReason::RunningTooLong { running_ms: 2_000, limit_ms: 1_000 }]),
            (b.0, vec![StuckReason::DependencyStuck { dependency: a }]),
            (c.0, vec![StuckReason::DependencyStuck { dependency: b }]),
        ]
    );
}

// ----- the plan catalog ------------------------------------------------------

mod catalog {
    use super::*;
    use crate::fsm::catalog::run_key;

    fn entity(name: &str, is_plan: bool, deps: &[&str]) -> NewEntity {
        NewEntity {
            entity_ref: format!("component:default/{name}"),
            is_plan,
            queue: is_plan.then(|| "dataset-migrations".to_string()),
            owner: Some("team-infra".into()),
            labels: [("tier".to_string(), if name.ends_with('2') { "gold" } else { "silver" }.to_string())].into(),
            depends_on: deps.iter().map(|d| format!("component:default/{d}")).collect(),
            document: format!("{{\"metadata\":{{\"name\":\"{name}\"}}}}"),
        }
    }

    fn r(name: &str) -> String {
        format!("component:default/{name}")
    }

    fn apply(h: &mut Harness, entities: Vec<NewEntity>) -> Response {
        h.run(Command::ApplyPlans { entities })
    }

    fn run(h: &mut Harness, names: &[&str], force: bool) -> Result<Vec<PlanRun>, Rejection> {
        let refs = names.iter().map(|n| r(n)).collect();
        match h.run(Command::RunPlans { refs, force, default_queue: "plans".into(), priority: 0 }) {
            Response::PlansRun(runs) => Ok(runs),
            Response::Rejected(rej) => Err(rej),
            other => panic!("run plans: {other:?}"),
        }
    }

    /// dataset (plain) <- a (plan) <- b (plan)
    fn chain() -> Harness {
        let mut h = Harness::new();
        let out = apply(
            &mut h,
            vec![entity("b", true, &["a"]), entity("a", true, &["dataset"]), entity("dataset", false, &[])],
        );
        assert!(matches!(out, Response::PlansApplied(ref v) if v.len() == 3 && v.iter().all(|a| a.created)), "{out:?}");
        h
    }

    #[test]
    fn apply_stores_and_reapply_is_a_no_op_until_the_document_changes() {
        let mut h = chain();
        assert_eq!(h.sm.catalog_len(), 3);
        let again = apply(&mut h, vec![entity("a", true, &["dataset"])]);
        assert_eq!(
            again,
            Response::PlansApplied(vec![AppliedEntity {
                entity_ref: r("a"),
                created: false,
                changed: false,
                revision: 1
            }])
        );
        let mut changed = entity("a", true, &["dataset"]);
        changed.document = "{\"v\":2}".into();
        assert_eq!(
            apply(&mut h, vec![changed]),
            Response::PlansApplied(vec![AppliedEntity {
                entity_ref: r("a"),
                created: false,
                changed: true,
                revision: 2
            }])
        );
        assert_eq!(h.sm.catalog_entry(&r("a")).unwrap().entity.document, "{\"v\":2}");
    }

    #[test]
    fn bad_batches_are_refused_whole() {
        let cases: Vec<(Vec<NewEntity>, &str)> = vec![
            (
                vec![entity("x", true, &[]), entity("y", true, &["missing"])],
                "spec.dependsOn[0]: component:default/missing is neither",
            ),
            (vec![entity("x", true, &["y"]), entity("y", true, &["x"])], "dependency cycle"),
            (vec![entity("x", true, &["x"])], "cannot depend on itself"),
            (vec![entity("x", true, &[]), entity("x", true, &[])], "defined twice"),
            (
                vec![NewEntity { entity_ref: "Component:default/X".into(), ..entity("x", true, &[]) }],
                "not a canonical entity reference",
            ),
            (vec![NewEntity { queue: Some("bad queue".into()), ..entity("x", true, &[]) }], "honk/queue"),
        ];
        for (batch, want) in cases {
            let mut h = Harness::new();
            match apply(&mut h, batch) {
                Response::Rejected(rej) => assert!(rej.to_string().contains(want), "{rej} should say {want}"),
                other => panic!("{other:?}"),
            }
            assert_eq!(h.sm.catalog_len(), 0, "nothing stored after a refusal");
        }
        assert_eq!(apply(&mut Harness::new(), vec![]), Response::Rejected(Rejection::EmptyBatch));
    }

    #[test]
    fn a_cycle_through_the_existing_catalog_is_refused() {
        let mut h = chain();
        // dataset now depending on b closes dataset <- a <- b <- dataset.
        match apply(&mut h, vec![entity("dataset", false, &["b"])]) {
            Response::Rejected(Rejection::InvalidEntity { field, reason, .. }) => {
                assert_eq!(field, "spec.dependsOn");
                assert!(reason.contains("dependency cycle"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(h.sm.catalog_entry(&r("dataset")).unwrap().entity.depends_on.is_empty());
    }

    #[test]
    fn running_a_plan_runs_its_dependencies_first_and_blocks_on_them() {
        let mut h = chain();
        let runs = run(&mut h, &["b"], false).unwrap();
        assert_eq!(runs.len(), 2, "{runs:?}");
        let (a, b) = (&runs[0], &runs[1]);
        assert_eq!(
            (a.entity_ref.as_str(), a.requested, a.created, a.status),
            (r("a").as_str(), false, true, TaskStatus::Pending)
        );
        assert_eq!(
            (b.entity_ref.as_str(), b.requested, b.created, b.status),
            (r("b").as_str(), true, true, TaskStatus::Blocked)
        );
        assert_eq!((a.generation, b.generation), (1, 1));
        let tb = h.sm.task(b.task).unwrap();
        assert_eq!((&*tb.kind, &*tb.queue), ("migration", "dataset-migrations"));
        assert_eq!(tb.depends_on, vec![a.task]);
        assert_eq!(tb.idempotency_key.as_deref(), Some(run_key(&r("b"), 1).as_str()));
        assert_eq!(h.cold.payloads[&b.task], format!("{{\"entity_ref\":\"{}\",\"generation\":1}}", r("b")));

        // Running again changes nothing: the same tasks come back.
        let again = run(&mut h, &["b", "a"], false).unwrap();
        assert!(again.iter().all(|x| !x.created), "{again:?}");
        assert_eq!(h.sm.task_count(), 2);

        // a succeeds: b may run.
        let g = h.lease(1, 1);
        assert_eq!(g[0].task, a.task);
        h.complete(1, a.task, g[0].token, ok()).unwrap();
        assert_eq!(h.status(b.task), TaskStatus::Pending);
    }

    #[test]
    fn force_starts_a_new_generation_of_the_requested_plans_only() {
        let mut h = chain();
        let first = run(&mut h, &["b"], false).unwrap();
        let g = h.lease(1, 1);
        h.complete(1, first[0].task, g[0].token, ok()).unwrap();
        let forced = run(&mut h, &["b"], true).unwrap();
        let a = forced.iter().find(|x| x.entity_ref == r("a")).unwrap();
        let b = forced.iter().find(|x| x.entity_ref == r("b")).unwrap();
        assert_eq!((a.created, a.generation, a.status), (false, 1, TaskStatus::Succeeded));
        assert_eq!((b.created, b.generation), (true, 2));
        // b's first generation is still blocked; the new one depends on a's done run and may go.
        assert_eq!(b.status, TaskStatus::Pending);
        assert_eq!(h.sm.catalog_entry(&r("b")).unwrap().generation, 2);
        assert_eq!(h.sm.plan_task(h.sm.catalog_entry(&r("b")).unwrap()).unwrap().id, b.task);
    }

    #[test]
    fn a_dead_run_is_run_again_without_force() {
        let mut h = chain();
        let first = run(&mut h, &["a"], false).unwrap();
        let g = h.lease(1, 1);
        h.complete(1, first[0].task, g[0].token, Outcome::Permanent { error: "validation failed".into() }).unwrap();
        assert_eq!(h.status(first[0].task), TaskStatus::Dead);
        // b needs a: a runs again (generation 2) and b waits for that run.
        let runs = run(&mut h, &["b"], false).unwrap();
        let a = runs.iter().find(|x| x.entity_ref == r("a")).unwrap();
        assert_eq!((a.created, a.generation, a.status), (true, 2, TaskStatus::Pending));
        let b = runs.iter().find(|x| x.entity_ref == r("b")).unwrap();
        assert_eq!(h.sm.task(b.task).unwrap().depends_on, vec![a.task]);
    }

    #[test]
    fn only_plans_in_the_catalog_can_run() {
        let mut h = chain();
        assert_eq!(run(&mut h, &["nope"], false), Err(Rejection::UnknownEntity(r("nope"))));
        assert!(matches!(run(&mut h, &["dataset"], false), Err(Rejection::InvalidEntity { .. })));
        assert_eq!(h.sm.task_count(), 0);
    }

    #[test]
    fn plans_without_a_queue_use_the_default_and_selection_filters() {
        let mut h = Harness::new();
        let mut p = entity("p2", true, &[]);
        p.queue = None;
        p.owner = Some("group:default/team-data".into());
        apply(&mut h, vec![p, entity("p1", true, &[]), entity("d", false, &[])]);
        let runs = run(&mut h, &["p2"], false).unwrap();
        assert_eq!(&*h.sm.task(runs[0].task).unwrap().queue, "plans");
        let refs = |v: Vec<&CatalogEntry>| v.into_iter().map(|c| c.entity.entity_ref.clone()).collect::<Vec<_>>();
        assert_eq!(refs(h.sm.select_plans(None, &[])), vec![r("p1"), r("p2")]);
        assert_eq!(refs(h.sm.select_plans(Some("team-data"), &[])), vec![r("p2")]);
        assert_eq!(refs(h.sm.select_plans(Some("team-infra"), &[("tier".into(), "silver".into())])), vec![r("p1")]);
        assert!(h.sm.select_plans(Some("team-infra"), &[("tier".into(), "gold".into())]).is_empty());
    }

    #[test]
    fn the_catalog_survives_a_snapshot() {
        let mut h = chain();
        run(&mut h, &["b"], false).unwrap();
        let restored = super::through_snapshot(&h.sm);
        assert_eq!(restored, h.sm);
        assert_eq!(restored.catalog_len(), 3);
        assert_eq!(restored.catalog_entry(&r("b")).unwrap().generation, 1);
    }
}

// ----- tokens, owners and the audit trail (format 3) -------------------------

mod auth {
    use super::*;
    use crate::fsm::auth::{canonical_owner, required_role, DEFAULT_AUDIT_RETENTION_MS, MAX_TOKENS};

    const HOUR: u64 = 3_600_000;
    const READ: u64 = 1;
    const SUBMIT: u64 = 2;
    const OPERATE: u64 = 3;
    const ADMIN: u64 = 4;
    /// A submit token that acts only for `group:default/team-x`.
    const SCOPED: u64 = 5;

    fn new_token(id: u64, name: &str, role: Role, owners: &[&str], expires_ms: Option<u64>) -> NewToken {
        NewToken {
            id,
            name: name.into(),
            role,
            owners: owners.iter().map(|o| o.to_string()).collect(),
            hash: vec![id as u8; 32],
            expires_ms,
        }
    }

    /// The bootstrap's tokens: one per role, and one scoped to team-x.
    fn with_tokens() -> Harness {
        let mut h = Harness::new();
        h.run(Command::SetFormat { format: 3 });
        for t in [
            new_token(READ, "reader", Role::Read, &[], None),
            new_token(SUBMIT, "submitter", Role::Submit, &[], None),
            new_token(OPERATE, "operator", Role::Operate, &[], None),
            new_token(ADMIN, "admin", Role::Admin, &[], None),
            new_token(SCOPED, "team-x-bot", Role::Submit, &["Team-X"], None),
        ] {
            assert_eq!(h.run(Command::CreateToken { token: t }), Response::Done);
        }
        h
    }

    fn as_token(id: u64, command: Command) -> Command {
        Command::AsCaller { caller: Caller::Token(id), command: Box::new(command) }
    }

    fn anonymous(command: Command) -> Command {
        Command::AsCaller { caller: Caller::Anonymous, command: Box::new(command) }
    }

    fn owned(owner: Option<&str>) -> Command {
        Command::EnqueueOwned { tasks: vec![task()], owner: owner.map(String::from) }
    }

    fn created(r: &Response) -> TaskId {
        match r {
            Response::Enqueued(e) if e[0].created => e[0].id,
            other => panic!("expected a new task: {other:?}"),
        }
    }

    fn is_forbidden(r: &Response) -> bool {
        matches!(r, Response::Rejected(Rejection::Forbidden(_)))
    }

    fn is_unauthenticated(r: &Response) -> bool {
        matches!(r, Response::Rejected(Rejection::Unauthenticated(_)))
    }

    /// The newest audit record.
    fn last_audit(h: &Harness) -> AuditRecord {
        h.cold.audit.values().next_back().cloned().expect("an audit record")
    }

    fn requested(by: &str, action: &str) -> EventKind {
        EventKind::Requested { by: by.into(), action: action.into() }
    }

    #[test]
    fn a_revoked_token_writes_nothing_after_the_revocation_entry() {
        let mut h = with_tokens();
        created(&h.run(as_token(SUBMIT, Command::Enqueue { tasks: vec![task()] })));
        // Two nodes accepted writes of the token while it existed; the
        // revocation was ordered between them in the log.
        assert_eq!(h.run(as_token(ADMIN, Command::RevokeToken { id: SUBMIT })), Response::Done);
        let before = (h.sm.clone(), h.cold.payloads.clone(), h.cold.events.clone());
        for command in
            [Command::Enqueue { tasks: vec![task()] }, Command::Cancel { task: TaskId(0), reason: "x".into() }]
        {
            let r = h.run(as_token(SUBMIT, command));
            assert!(is_unauthenticated(&r), "{r:?}");
        }
        assert_eq!(h.sm.task_count(), 1);
        assert_eq!(h.status(TaskId(0)), TaskStatus::Pending, "the cancel was not applied");
        assert_eq!((&h.cold.payloads, &h.cold.events), (&before.1, &before.2), "no task data written");
        assert!(h.sm.token(SUBMIT).is_none());
        let audit = last_audit(&h);
        assert_eq!(audit.principal, "0000000000000002", "a revoked token is named by its id");
        assert!(audit.outcome.starts_with("refused: unauthenticated"), "{audit:?}");
        // Revoking it again is refused.
        let again = h.run(as_token(ADMIN, Command::RevokeToken { id: SUBMIT }));
        assert!(matches!(again, Response::Rejected(Rejection::InvalidToken(_))), "{again:?}");
    }

    #[test]
    fn an_expired_token_is_refused_at_apply_even_if_accepted_before_expiry() {
        let mut h = with_tokens();
        h.run(Command::CreateToken { token: new_token(9, "short", Role::Submit, &[], Some(5_000)) });
        // The node checked it at 4 999 and proposed; the entry applies at 4 999: fine.
        h.now = 4_999;
        assert!(!h.sm.token(9).unwrap().expired_at(h.now), "valid when the node accepted it");
        created(&h.run(as_token(9, Command::Enqueue { tasks: vec![task()] })));
        // The same kind of entry, accepted at 4 999 but applied at 5 000.
        h.now = 5_000;
        let r = h.run(as_token(9, Command::Enqueue { tasks: vec![task()] }));
        assert!(is_unauthenticated(&r), "{r:?}");
        assert_eq!(h.sm.task_count(), 1);
        // A leader whose clock is behind does not bring it back to life.
        h.now = 4_000;
        let r = h.run(as_token(9, Command::Enqueue { tasks: vec![task()] }));
        assert!(is_unauthenticated(&r), "the state machine's clock never steps back: {r:?}");
        assert_eq!(h.sm.task_count(), 1);
        assert_eq!(last_audit(&h).principal, "short");
        assert!(last_audit(&h).outcome.contains("expired"), "{:?}", last_audit(&h));
    }

    /// Every client command, with the role it needs (written out here, not
    /// taken from `required_role`), and the commands no client may send.
    fn role_table() -> (Vec<(Command, Role)>, Vec<Command>) {
        let client = vec![
            (Command::Enqueue { tasks: vec![task()] }, Role::Submit),
            (owned(Some("team-x")), Role::Submit),
            (Command::Cancel { task: TaskId(0), reason: "x".into() }, Role::Submit),
            (Command::Retry { task: TaskId(0) }, Role::Submit),
            (Command::ApplyPlans { entities: vec![] }, Role::Submit),
            (Command::RunPlans { refs: vec![], force: false, default_queue: Q.into(), priority: 0 }, Role::Submit),
            (Command::SetQueuePaused { queue: Q.into(), paused: true }, Role::Operate),
            (Command::ConfigureQueue { queue: Q.into(), patch: QueuePatch::default() }, Role::Operate),
            (Command::DrainNode { node: 1, draining: true }, Role::Operate),
            (Command::RedriveQueue { queue: Q.into(), max: 1 }, Role::Operate),
            (Command::SetFormat { format: 3 }, Role::Operate),
            (Command::Record { action: "add node".into(), target: "node 4".into() }, Role::Operate),
            (Command::CreateToken { token: new_token(20, "new", Role::Read, &[], None) }, Role::Admin),
            (Command::RevokeToken { id: 20 }, Role::Admin),
            (Command::RotateToken { old: 20, new: new_token(21, "", Role::Read, &[], None) }, Role::Admin),
            (Command::ConfigureAuth { enforce: Some(true), audit_retention_ms: None }, Role::Admin),
            (
                Command::Batch(vec![Command::Enqueue { tasks: vec![task()] }, Command::RevokeToken { id: 20 }]),
                Role::Admin,
            ),
            (Command::Batch(vec![Command::Retry { task: TaskId(0) }]), Role::Submit),
        ];
        let nodes_only = vec![
            Command::Lease { node: 1, queues: vec![], max: 1 },
            Command::Heartbeat { node: 1, slots: 1, held: vec![] },
            Command::Complete { node: 1, completions: vec![] },
            Command::ExpireLeases,
            Command::ReleaseNode { node: 1, forget: false },
            Command::CollectGarbage,
            Command::RemoveNode { node: 1 },
            Command::AdmitNode { node: 1 },
            Command::TouchTokens { used: vec![(READ, 1)] },
            as_token(ADMIN, Command::Enqueue { tasks: vec![task()] }),
            Command::Batch(vec![Command::Enqueue { tasks: vec![task()] }, Command::ExpireLeases]),
        ];
        (client, nodes_only)
    }

    #[test]
    fn each_role_may_send_the_commands_of_its_role_and_below_only() {
        let (client, nodes_only) = role_table();
        for (command, needed) in &client {
            assert_eq!(required_role(command), Some(*needed), "{command:?}");
            for (id, role) in
                [(READ, Role::Read), (SUBMIT, Role::Submit), (OPERATE, Role::Operate), (ADMIN, Role::Admin)]
            {
                let mut h = with_tokens();
                let audits = h.cold.audit.len();
                let r = h.run(as_token(id, command.clone()));
                let audit = last_audit(&h);
                assert_eq!(h.cold.audit.len(), audits + 1, "one audit record per request");
                if role < *needed {
                    assert!(is_forbidden(&r), "{role} sending {command:?}: {r:?}");
                    let why = r.clone();
                    assert!(format!("{why:?}").contains(&format!("needs role {needed}")), "{why:?}");
                    assert_eq!(
                        audit.outcome,
                        format!(
                            "refused: {}",
                            match r {
                                Response::Rejected(j) => j,
                                _ => unreachable!(),
                            }
                        )
                    );
                } else {
                    assert!(!is_forbidden(&r) && !is_unauthenticated(&r), "{role} sending {command:?}: {r:?}");
                }
            }
        }
        for command in &nodes_only {
            assert_eq!(required_role(command), None, "{command:?}");
            let mut h = with_tokens();
            let before = h.sm.clone();
            let r = h.run(as_token(ADMIN, command.clone()));
            assert!(is_forbidden(&r) && format!("{r:?}").contains("not a client command"), "{command:?}: {r:?}");
            assert_eq!(h.sm.task_count(), before.task_count());
            assert_eq!(h.sm.nodes(), before.nodes());
        }
    }

    #[test]
    fn a_redrive_is_not_for_an_owner_scoped_token() {
        let mut h = with_tokens();
        let scoped_operator = new_token(9, "team-x-ops", Role::Operate, &["team-x"], None);
        assert_eq!(h.run(Command::CreateToken { token: scoped_operator }), Response::Done);
        let redrive = Command::RedriveQueue { queue: "q".into(), max: 10 };
        let r = h.run(as_token(9, redrive.clone()));
        assert!(is_forbidden(&r), "a redrive retries every owner's dead tasks: {r:?}");
        assert!(!is_forbidden(&h.run(as_token(OPERATE, redrive))));
    }

    #[test]
    fn an_owner_scoped_token_acts_only_for_its_owners() {
        let mut h = with_tokens();
        assert_eq!(h.sm.token(SCOPED).unwrap().owners, vec!["group:default/team-x".to_string()]);
        // Enqueue: only with one of its owners, however spelled.
        for owner in ["team-x", "default/team-x", "group:default/team-x", " Group:Default/Team-X "] {
            let id = created(&h.run(as_token(SCOPED, owned(Some(owner)))));
            assert_eq!(h.sm.task_owner(id), Some("group:default/team-x"), "{owner}");
        }
        for command in [
            owned(Some("team-y")),
            owned(Some("group:other/team-x")),
            owned(None),
            Command::Enqueue { tasks: vec![task()] },
        ] {
            let r = h.run(as_token(SCOPED, command.clone()));
            assert!(is_forbidden(&r), "{command:?}: {r:?}");
        }
        assert_eq!(h.sm.task_count(), 4);
        // Cancel and retry: only its owners' tasks.
        let mine = TaskId(0);
        let theirs = created(&h.run(as_token(SUBMIT, owned(Some("team-y")))));
        let nobodys = created(&h.run(as_token(SUBMIT, Command::Enqueue { tasks: vec![task()] })));
        assert_eq!(h.sm.task_owner(nobodys), None);
        for id in [theirs, nobodys, TaskId(999)] {
            let r = h.run(as_token(SCOPED, Command::Cancel { task: id, reason: "x".into() }));
            assert!(is_forbidden(&r), "cancel {id}: {r:?}");
        }
        assert_eq!(h.status(theirs), TaskStatus::Pending);
        assert_eq!(
            h.run(as_token(SCOPED, Command::Cancel { task: mine, reason: "x".into() })),
            Response::Task { id: mine, status: TaskStatus::Cancelled }
        );
        assert_eq!(
            h.run(as_token(SCOPED, Command::Retry { task: mine })),
            Response::Task { id: mine, status: TaskStatus::Pending }
        );
        h.run(as_token(SUBMIT, Command::Cancel { task: theirs, reason: "x".into() }));
        assert!(is_forbidden(&h.run(as_token(SCOPED, Command::Retry { task: theirs }))));
        assert_eq!(h.status(theirs), TaskStatus::Cancelled);

        // Plans: apply only entities of its owners (new and replaced), run only its owners' plans.
        let plan = |name: &str, owner: Option<&str>| NewEntity {
            entity_ref: format!("component:default/{name}"),
            is_plan: true,
            queue: Some(Q.into()),
            owner: owner.map(String::from),
            labels: Default::default(),
            depends_on: vec![],
            document: format!("{{\"name\":\"{name}\",\"owner\":{owner:?}}}"),
        };
        let apply =
            |h: &mut Harness, id: u64, e: NewEntity| h.run(as_token(id, Command::ApplyPlans { entities: vec![e] }));
        assert!(matches!(apply(&mut h, SCOPED, plan("x1", Some("team-x"))), Response::PlansApplied(_)));
        assert!(is_forbidden(&apply(&mut h, SCOPED, plan("y1", Some("team-y")))));
        assert!(is_forbidden(&apply(&mut h, SCOPED, plan("none", None))));
        assert!(matches!(apply(&mut h, SUBMIT, plan("y1", Some("team-y"))), Response::PlansApplied(_)));
        // Taking over another owner's entity: the one it replaces is not its own.
        assert!(is_forbidden(&apply(&mut h, SCOPED, plan("y1", Some("team-x")))));
        assert_eq!(h.sm.catalog_entry("component:default/y1").unwrap().entity.owner.as_deref(), Some("team-y"));
        // Giving its own entity away is refused too.
        assert!(is_forbidden(&apply(&mut h, SCOPED, plan("x1", Some("team-y")))));
        let run = |h: &mut Harness, id: u64, name: &str| {
            h.run(as_token(
                id,
                Command::RunPlans {
                    refs: vec![format!("component:default/{name}")],
                    force: false,
                    default_queue: Q.into(),
                    priority: 0,
                },
            ))
        };
        assert!(is_forbidden(&run(&mut h, SCOPED, "y1")));
        assert!(is_forbidden(&run(&mut h, SCOPED, "ghost")), "an unknown plan has no owner");
        let Response::PlansRun(runs) = run(&mut h, SCOPED, "x1") else { panic!("x1 runs") };
        assert_eq!(h.sm.task_owner(runs[0].task), Some("group:default/team-x"), "a run belongs to its plan's owner");
        let Response::PlansRun(runs) = run(&mut h, SUBMIT, "y1") else { panic!("y1 runs") };
        assert_eq!(h.sm.task_owner(runs[0].task), Some("group:default/team-y"));
        assert!(is_forbidden(&h.run(as_token(SCOPED, Command::Cancel { task: runs[0].task, reason: "x".into() }))));
    }

    #[test]
    fn anonymous_writes_are_served_in_warn_and_refused_when_enforcing() {
        let mut h = with_tokens();
        assert!(!h.sm.auth_enforced(), "warn until told otherwise");
        let id = created(&h.run(anonymous(Command::Enqueue { tasks: vec![task()] })));
        assert_eq!(last_audit(&h).principal, "anonymous");
        assert_eq!(last_audit(&h).outcome, "ok");
        assert_eq!(h.cold.history(id).last().unwrap().what, requested("anonymous", "enqueue"));
        // Not even in warn mode may anyone send a node's command.
        assert!(is_forbidden(&h.run(anonymous(Command::ExpireLeases))));

        let refused =
            h.run(as_token(OPERATE, Command::ConfigureAuth { enforce: Some(true), audit_retention_ms: None }));
        assert!(is_forbidden(&refused), "only admins: {refused:?}");
        assert_eq!(
            h.run(as_token(ADMIN, Command::ConfigureAuth { enforce: Some(true), audit_retention_ms: None })),
            Response::Done
        );
        assert!(h.sm.auth_enforced());
        let r = h.run(anonymous(Command::Enqueue { tasks: vec![task()] }));
        assert!(is_unauthenticated(&r), "{r:?}");
        assert_eq!(h.sm.task_count(), 1);
        let audit = last_audit(&h);
        assert_eq!((audit.principal.as_str(), audit.action.as_str()), ("anonymous", "enqueue"));
        assert_eq!(audit.outcome, "refused: unauthenticated: a token is required");
        // A token still works; and back to warn.
        created(&h.run(as_token(SUBMIT, Command::Enqueue { tasks: vec![task()] })));
        // While enforcing, a client's write that does not name its caller is refused.
        for bare in [
            Command::Enqueue { tasks: vec![task()] },
            Command::ConfigureAuth { enforce: Some(false), audit_retention_ms: None },
            Command::Batch(vec![Command::Enqueue { tasks: vec![task()] }]),
        ] {
            let r = h.run(bare.clone());
            let r = match r {
                Response::Batch(mut rs) => rs.remove(0),
                r => r,
            };
            assert!(is_unauthenticated(&r), "{bare:?}: {r:?}");
        }
        assert_eq!(h.sm.task_count(), 2);
        assert!(h.sm.auth_enforced());
        let back = h.run(as_token(ADMIN, Command::ConfigureAuth { enforce: Some(false), audit_retention_ms: None }));
        assert_eq!(back, Response::Done);
        assert!(!h.sm.auth_enforced(), "back to warn");
        created(&h.run(anonymous(Command::Enqueue { tasks: vec![task()] })));
        // The retention must be above zero; nothing else changes then.
        let r = h.run(Command::ConfigureAuth { enforce: Some(true), audit_retention_ms: Some(0) });
        assert!(matches!(r, Response::Rejected(Rejection::InvalidConfig(_))), "{r:?}");
        assert!(!h.sm.auth_enforced(), "a refused ConfigureAuth changes nothing");
        assert_eq!(h.sm.audit_retention_ms(), DEFAULT_AUDIT_RETENTION_MS);
    }

    #[test]
    fn each_request_writes_one_audit_record() {
        let mut h = with_tokens();
        assert!(h.cold.audit.is_empty(), "bare commands are not audited");
        h.now = 7_000;
        h.run(as_token(SUBMIT, Command::Enqueue { tasks: vec![task(), NewTask::new(Q, "noop", "{}")] }));
        h.run(as_token(READ, Command::Cancel { task: TaskId(1), reason: "x".into() }));
        h.run(as_token(SUBMIT, Command::Cancel { task: TaskId(9), reason: "x".into() }));
        h.run(as_token(ADMIN, Command::CreateToken { token: new_token(30, "ci", Role::Submit, &[], None) }));
        h.run(as_token(ADMIN, Command::RotateToken { old: 30, new: new_token(31, "", Role::Read, &[], None) }));
        h.run(as_token(OPERATE, Command::Record { action: "add node".into(), target: "node 4".into() }));
        h.run(as_token(
            SUBMIT,
            Command::Batch(vec![
                Command::Retry { task: TaskId(0) },
                Command::Cancel { task: TaskId(0), reason: "y".into() },
            ]),
        ));
        let audit = |principal: &str, action: &str, target: &str, outcome: &str| AuditRecord {
            at_ms: 7_000,
            principal: principal.into(),
            action: action.into(),
            target: target.into(),
            outcome: outcome.into(),
        };
        let want = vec![
            audit("submitter", "enqueue", "2 task(s) in q", "ok"),
            audit(
                "reader",
                "cancel",
                "task 1",
                "refused: forbidden: cancel needs role submit; token reader has role read",
            ),
            audit("submitter", "cancel", "task 9", "refused: no task 9"),
            audit("admin", "create token", "token ci (000000000000001e, role submit)", "ok"),
            audit("admin", "rotate token", "token 000000000000001e -> 000000000000001f", "ok"),
            audit("operator", "add node", "node 4", "ok"),
            audit(
                "submitter",
                "batch",
                "task 0; task 0",
                "refused in part: task 0 is pending, expected dead or cancelled",
            ),
        ];
        assert_eq!(h.cold.audit.values().cloned().collect::<Vec<_>>(), want);
        assert_eq!(h.cold.audit.keys().copied().collect::<Vec<_>>(), (0..7).collect::<Vec<_>>());
        // Who made a token: the admin, or the bootstrap outside a request.
        assert_eq!(h.sm.token(31).unwrap().created_by, "admin");
        assert_eq!(h.sm.token(ADMIN).unwrap().created_by, "bootstrap");
        assert_eq!(h.sm.audit_range(0), (0, 7));
    }

    #[test]
    fn audit_records_are_dropped_an_hour_at_a_time_past_the_retention() {
        let mut h = with_tokens();
        h.run(Command::ConfigureAuth { enforce: None, audit_retention_ms: Some(2 * HOUR) });
        let record = |h: &mut Harness, at: u64| {
            h.now = at;
            h.run(as_token(OPERATE, Command::Record { action: "add node".into(), target: format!("at {at}") }));
        };
        for at in [10 * 60_000, 50 * 60_000, HOUR + 30 * 60_000] {
            record(&mut h, at);
        }
        let seqs = |h: &Harness| h.cold.audit.keys().copied().collect::<Vec<_>>();
        assert_eq!(h.sm.audit_range(HOUR + 1), (2, 3), "the hour of 1:30 starts at record 2");
        assert_eq!(h.sm.audit_range(2 * HOUR), (2, 3), "no record in hour 2: from the hour before");
        assert_eq!(h.sm.audit_range(0), (0, 3));
        // Hour 0 ends at 1:00; with 2 hours of retention it goes at 3:00, not before.
        h.now = 3 * HOUR - 1;
        h.run(Command::CollectGarbage);
        assert_eq!(seqs(&h), vec![0, 1, 2]);
        h.now = 3 * HOUR;
        h.run(Command::CollectGarbage);
        assert_eq!(seqs(&h), vec![2], "both records of hour 0 went together");
        assert_eq!(h.sm.audit_range(0), (2, 3));
        record(&mut h, 3 * HOUR + 5 * 60_000);
        // Hour 1 goes at 4:00, hour 3 at 6:00.
        h.now = 4 * HOUR;
        h.run(Command::CollectGarbage);
        assert_eq!(seqs(&h), vec![3]);
        assert_eq!(h.sm.audit_range(0), (3, 4));
        h.now = 6 * HOUR;
        h.run(Command::CollectGarbage);
        assert!(h.cold.audit.is_empty(), "{:?}", h.cold.audit);
        assert_eq!(h.sm.audit_range(0), (4, 4));
        record(&mut h, 6 * HOUR + 1);
        assert_eq!(seqs(&h), vec![4], "sequence numbers are never reused");
        // The default retention keeps them 90 days.
        let mut h = with_tokens();
        record(&mut h, 1_000);
        h.now = DEFAULT_AUDIT_RETENTION_MS;
        h.run(Command::CollectGarbage);
        assert_eq!(h.cold.audit.len(), 1);
        h.now = DEFAULT_AUDIT_RETENTION_MS + HOUR;
        h.run(Command::CollectGarbage);
        assert!(h.cold.audit.is_empty());
    }

    #[test]
    fn requested_events_name_the_principal_and_the_action() {
        let mut h = with_tokens();
        let mut keyed = task();
        keyed.idempotency_key = Some("k".into());
        let Response::Enqueued(made) = h.run(as_token(SUBMIT, Command::Enqueue { tasks: vec![keyed.clone(), task()] }))
        else {
            panic!("enqueued")
        };
        for e in &made {
            let kinds: Vec<EventKind> = h.cold.history(e.id).into_iter().map(|e| e.what).collect();
            assert_eq!(
                kinds,
                vec![EventKind::Enqueued { status: TaskStatus::Pending }, requested("submitter", "enqueue")]
            );
        }
        // A key seen before makes no task, and no event.
        h.run(as_token(SCOPED, owned(Some("team-x"))));
        h.run(as_token(ADMIN, Command::Enqueue { tasks: vec![keyed] }));
        assert_eq!(h.cold.history(made[0].id).len(), 2);
        h.run(as_token(OPERATE, Command::Cancel { task: made[0].id, reason: "x".into() }));
        h.run(anonymous(Command::Retry { task: made[0].id }));
        let last: Vec<EventKind> = h.cold.history(made[0].id).into_iter().skip(2).map(|e| e.what).collect();
        assert_eq!(
            last,
            vec![
                EventKind::Cancelled { reason: "x".into() },
                requested("operator", "cancel"),
                EventKind::Retried,
                requested("anonymous", "retry"),
            ]
        );
        let e = h.cold.history(made[0].id).pop().unwrap();
        assert_eq!((e.at_ms, e.node, e.token), (h.now, None, None));
        assert_eq!(h.cold.history(TaskId(2)).last().unwrap().what, requested("team-x-bot", "enqueue"));
        // Bare commands (the nodes' own, or before format 3) write none.
        let bare = h.enqueue_one(task());
        assert_eq!(h.cold.history(bare).len(), 1);
        // Plan runs, and the items of a batch, each name their request.
        h.run(Command::ApplyPlans {
            entities: vec![NewEntity {
                entity_ref: "component:default/p".into(),
                is_plan: true,
                queue: None,
                owner: Some("team-x".into()),
                labels: Default::default(),
                depends_on: vec![],
                document: "{}".into(),
            }],
        });
        let run = Command::RunPlans {
            refs: vec!["component:default/p".into()],
            force: false,
            default_queue: Q.into(),
            priority: 0,
        };
        let Response::Batch(rs) =
            h.run(as_token(SUBMIT, Command::Batch(vec![run, Command::Enqueue { tasks: vec![task()] }])))
        else {
            panic!("a batch")
        };
        let Response::PlansRun(runs) = &rs[0] else { panic!("{rs:?}") };
        let plan_task = runs[0].task;
        assert_eq!(h.cold.history(plan_task).last().unwrap().what, requested("submitter", "run plans"));
        assert_eq!(h.sm.task_owner(plan_task), Some("group:default/team-x"), "in a batch too");
        let other = created(&rs[1]);
        assert_eq!(h.cold.history(other).last().unwrap().what, requested("submitter", "enqueue"));
    }

    #[test]
    fn a_token_record_never_serializes_its_hash() {
        let mut h = with_tokens();
        let secret_hash = vec![0xAB; 32];
        let mut t = new_token(40, "ci", Role::Submit, &["team-x"], Some(9_000));
        t.hash = secret_hash.clone();
        h.run(Command::CreateToken { token: t });
        let record = h.sm.token(40).unwrap();
        assert_eq!(record.hash, secret_hash, "the state keeps the hash");
        let json = serde_json::to_value(record).unwrap();
        let keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        assert!(!keys.contains(&"hash"), "{json}");
        assert!(!json.to_string().contains("171"), "no byte of the hash: {json}");
        assert_eq!(json["name"], "ci");
        assert_eq!(json["owners"][0], "group:default/team-x");
    }

    #[test]
    fn tokens_are_checked_created_rotated_and_touched() {
        let mut h = with_tokens();
        let invalid = |r: Response| matches!(r, Response::Rejected(Rejection::InvalidToken(_)));
        assert!(invalid(h.run(Command::CreateToken { token: new_token(READ, "dup", Role::Read, &[], None) })));
        let mut short = new_token(50, "x", Role::Read, &[], None);
        short.hash = vec![1; 31];
        assert!(invalid(h.run(Command::CreateToken { token: short })));
        assert!(invalid(h.run(Command::CreateToken { token: new_token(50, "", Role::Read, &[], None) })));
        assert!(invalid(h.run(Command::CreateToken { token: new_token(50, "x", Role::Read, &[""], None) })));
        assert!(h.sm.token(50).is_none());

        h.now = 2_000;
        h.run(Command::CreateToken { token: new_token(50, "ci", Role::Submit, &["team-x"], Some(12_000)) });
        h.run(Command::TouchTokens { used: vec![(50, 2_500), (99, 1)] });
        h.run(Command::TouchTokens { used: vec![(50, 2_400)] });
        assert_eq!(h.sm.token(50).unwrap().last_used_ms, Some(2_500), "never goes back");
        h.now = 5_000;
        // Rotation: same name, role, owners and lifetime (10 s), a new id and hash.
        assert!(invalid(
            h.run(as_token(ADMIN, Command::RotateToken { old: 50, new: new_token(50, "", Role::Read, &[], None) }))
        ));
        assert!(invalid(
            h.run(as_token(ADMIN, Command::RotateToken { old: 50, new: new_token(READ, "", Role::Read, &[], None) }))
        ));
        assert!(h.sm.token(50).is_some(), "a refused rotation keeps the old token");
        assert_eq!(
            h.run(as_token(
                ADMIN,
                Command::RotateToken { old: 50, new: new_token(51, "other", Role::Admin, &[], None) }
            )),
            Response::Done
        );
        assert!(h.sm.token(50).is_none());
        let t = h.sm.token(51).unwrap();
        assert_eq!(
            (&*t.name, t.role, &t.owners, t.created_ms, t.expires_ms, t.last_used_ms, &*t.created_by, &t.hash),
            (
                "ci",
                Role::Submit,
                &vec!["group:default/team-x".to_string()],
                5_000,
                Some(15_000),
                None,
                "admin",
                &vec![51u8; 32]
            )
        );
        assert!(is_unauthenticated(&h.run(as_token(50, owned(Some("team-x"))))));
        created(&h.run(as_token(51, owned(Some("team-x")))));
        assert!(invalid(h.run(Command::RotateToken { old: 50, new: new_token(52, "", Role::Read, &[], None) })));
    }

    #[test]
    fn a_token_can_be_rotated_at_the_token_limit() {
        let mut h = Harness::new();
        let all =
            (0..MAX_TOKENS as u64).map(|id| Command::CreateToken { token: new_token(id, "t", Role::Read, &[], None) });
        h.sm.apply(&Stamped { now_ms: 1, command: Command::Batch(all.collect()) }, &mut h.cold);
        assert_eq!(h.sm.tokens().count(), MAX_TOKENS);
        let one_more = new_token(MAX_TOKENS as u64, "t", Role::Read, &[], None);
        let r =
            h.sm.apply(&Stamped { now_ms: 1, command: Command::CreateToken { token: one_more.clone() } }, &mut h.cold);
        assert!(matches!(r, Response::Rejected(Rejection::InvalidToken(_))), "{r:?}");
        let r =
            h.sm.apply(&Stamped { now_ms: 1, command: Command::RotateToken { old: 0, new: one_more } }, &mut h.cold);
        assert_eq!(r, Response::Done, "a rotation replaces a token, it adds none");
        assert_eq!(h.sm.tokens().count(), MAX_TOKENS);
    }

    #[test]
    fn owners_of_forgotten_tasks_are_forgotten() {
        let mut h = with_tokens();
        h.configure(QueuePatch { retention_ms: Some(1_000), ..QueuePatch::default() });
        let id = created(&h.run(as_token(SUBMIT, owned(Some("team-x")))));
        h.run(Command::Cancel { task: id, reason: "x".into() });
        assert!(h.sm.task_owner(id).is_some());
        h.now += 1_000;
        assert_eq!(h.run(Command::CollectGarbage), Response::Collected { tasks: 1 });
        assert_eq!(h.sm.task_owner(id), None);
        assert_eq!(through_v5(&h.sm), h.sm);
    }

    #[test]
    fn owners_are_canonical_group_references() {
        for (given, want) in [
            ("team-x", "group:default/team-x"),
            ("Default/Team-X", "group:default/team-x"),
            ("group:default/team-x", "group:default/team-x"),
            ("user:default/ann", "user:default/ann"),
            ("group:other/team-x", "group:other/team-x"),
        ] {
            assert_eq!(canonical_owner(given), want, "{given}");
            assert_eq!(canonical_owner(want), want, "idempotent");
        }
    }

    /// The state through a version 5 snapshot's shapes and back.
    fn through_v5(sm: &StateMachine) -> StateMachine {
        use crate::format::{StateV5, StoredState};
        let config = bincode::config::standard();
        assert_eq!(StoredState(sm).snapshot_version(), 5);
        let bytes = bincode::serde::encode_to_vec(StoredState(sm), config).unwrap();
        let (StateV5(back), used): (StateV5, usize) = bincode::serde::decode_from_slice(&bytes, config).unwrap();
        assert_eq!(used, bytes.len());
        back.check_invariants().unwrap();
        back
    }

    #[test]
    fn the_auth_state_survives_a_version_5_snapshot() {
        let mut h = with_tokens();
        h.run(Command::CreateToken { token: new_token(60, "exp", Role::Read, &[], Some(99_000)) });
        h.run(Command::TouchTokens { used: vec![(60, 1_500)] });
        h.run(Command::ConfigureAuth { enforce: Some(true), audit_retention_ms: Some(HOUR) });
        let id = created(&h.run(as_token(SCOPED, owned(Some("team-x")))));
        let back = through_v5(&h.sm);
        assert_eq!(back, h.sm);
        assert_eq!(back.token(60), h.sm.token(60));
        assert_eq!(back.token(SCOPED).unwrap().hash, vec![SCOPED as u8; 32], "the hash is stored");
        assert!(back.auth_enforced());
        assert_eq!(back.audit_retention_ms(), HOUR);
        assert_eq!(back.task_owner(id), Some("group:default/team-x"));
        assert_eq!(back.audit_range(0), h.sm.audit_range(0));
        // Below format 3 the snapshot is version 4, and holds no auth section.
        let mut old = Harness::new();
        old.run(Command::SetFormat { format: 2 });
        assert_eq!(crate::format::StoredState(&old.sm).snapshot_version(), 4);
    }
}
