//! How many workers the backlog needs (`GET /api/v1/scale`, the
//! `skein_scale_tasks` gauge of `/metrics`, `skein scale`): what an
//! autoscaler (KEDA's `metrics-api` or `prometheus` scaler, a fleet
//! manager) scales the worker replicas on.
//!
//! Per queue, the tasks that need a slot now:
//!
//! - **running**: its leased tasks. They always count, paused queue or
//!   not, cap or not: scaling below them would stop work in flight.
//! - **ready**: its pending tasks, i.e. those whose dependencies are met
//!   (a task waiting on a dependency is `blocked`, and needs no slot until
//!   it ends). Pending includes tasks waiting out a retry backoff and tasks
//!   enqueued with a `delay_ms`: they will need a worker soon, and a scaler
//!   that let their workers go would start them cold, or late. (The state
//!   keeps one count of pending tasks per queue; telling the delayed ones
//!   apart would mean looking at each.) A paused queue has no ready tasks:
//!   nothing of it is leased until it is resumed.
//! - **tasks** = running + ready, but no more than the queue's concurrency
//!   cap when it has one (a queue capped at 5 never runs more than 5 at
//!   once), unless more than the cap are running already (the cap was
//!   lowered under them): then just those running.
//!
//! Over all queues, the queues' `tasks` add up (each capped on its own),
//! and `workers` = ceil(tasks / per_worker), per_worker being the slots of
//! one worker replica.
//!
//! Cost: one read of each queue's counters (the state machine's per-queue
//! counts by status), never a scan of the tasks: constant in the number of
//! tasks queued, linear in the number of queues.

pub use skein_raft::api::ScaleReply;
use skein_raft::fsm::{QueueStats, StateMachine, TaskStatus};

/// The most slots one worker may be said to have.
pub const MAX_PER_WORKER: u64 = 10_000;

/// What one queue's backlog needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueNeed {
    /// Leased tasks.
    pub running: u64,
    /// Pending tasks (dependencies met, backoff or delay included); 0 when
    /// the queue is paused.
    pub ready: u64,
    /// Slots needed now: running + ready, within the concurrency cap.
    pub tasks: u64,
    pub paused: bool,
}

impl QueueNeed {
    /// The need of a queue with `pending` and `leased` tasks, its
    /// concurrency cap (0: none) and whether it is paused.
    pub fn of(pending: u64, leased: u64, concurrency: u32, paused: bool) -> QueueNeed {
        let ready = if paused { 0 } else { pending };
        let wanted = leased.saturating_add(ready);
        let tasks = if concurrency == 0 { wanted } else { wanted.min(u64::from(concurrency)).max(leased) };
        QueueNeed { running: leased, ready, tasks, paused }
    }

    /// The need of a queue as [`StateMachine::queue_stats`] lists it.
    pub fn of_stats(q: &QueueStats) -> QueueNeed {
        let count = |s: TaskStatus| q.counts.get(&s).copied().unwrap_or(0);
        QueueNeed::of(count(TaskStatus::Pending), count(TaskStatus::Leased), q.config.concurrency, q.paused)
    }
}

/// Workers of `per_worker` slots for `tasks` tasks (`per_worker` 0 reads as 1).
pub fn workers(tasks: u64, per_worker: u64) -> u64 {
    tasks.div_ceil(per_worker.max(1))
}

/// The need of each queue, by name.
pub fn queue_needs(state: &StateMachine) -> Vec<(String, QueueNeed)> {
    // `queue_stats` reads counters only; its clock serves the oldest
    // pending age, which is not used here.
    state.queue_stats(state.clock_ms()).iter().map(|q| (q.name.clone(), QueueNeed::of_stats(q))).collect()
}

/// The answer for `queue` (`None`: every queue) and workers of `per_worker`
/// slots. A queue the state does not know needs nothing: all zeros (an
/// autoscaler asks before the first task arrives).
pub fn scale(state: &StateMachine, queue: Option<&str>, per_worker: u64) -> ScaleReply {
    let needs: Vec<QueueNeed> =
        queue_needs(state).into_iter().filter(|(name, _)| queue.is_none_or(|q| q == name)).map(|(_, n)| n).collect();
    answer(queue, &needs, per_worker)
}

/// The answer summing `needs`.
pub fn answer(queue: Option<&str>, needs: &[QueueNeed], per_worker: u64) -> ScaleReply {
    let sum = |f: fn(&QueueNeed) -> u64| needs.iter().map(f).fold(0u64, u64::saturating_add);
    let tasks = sum(|n| n.tasks);
    ScaleReply {
        queue: queue.map(str::to_string),
        tasks,
        per_worker,
        workers: workers(tasks, per_worker),
        ready: sum(|n| n.ready),
        running: sum(|n| n.running),
        paused: !needs.is_empty() && needs.iter().all(|n| n.paused),
    }
}

#[cfg(test)]
mod tests {
    use skein_raft::fsm::{Command, DiscardCold, NewTask, Outcome, QueuePatch, Response, Stamped, TaskRef};

    use super::*;

    /// A state machine driven like the log drives it, at a clock of our own.
    struct Sm {
        sm: StateMachine,
        now: u64,
    }

    impl Sm {
        fn new() -> Sm {
            Sm { sm: StateMachine::new(), now: 1_000 }
        }

        fn run(&mut self, command: Command) -> Response {
            self.sm.apply(&Stamped { now_ms: self.now, command }, &mut DiscardCold)
        }

        fn enqueue(&mut self, queue: &str, n: usize) -> Vec<u64> {
            self.enqueue_tasks((0..n).map(|_| NewTask::new(queue, "noop", "{}")).collect())
        }

        fn enqueue_tasks(&mut self, tasks: Vec<NewTask>) -> Vec<u64> {
            match self.run(Command::Enqueue { tasks }) {
                Response::Enqueued(e) => e.iter().map(|e| e.id.0).collect(),
                other => panic!("enqueue: {other:?}"),
            }
        }

        /// Leases up to `max` tasks of `queue` to node 1.
        fn lease(&mut self, queue: &str, max: u32) -> Vec<skein_raft::fsm::Granted> {
            match self.run(Command::Lease { node: 1, queues: vec![queue.into()], max }) {
                Response::Leased(g) => g,
                other => panic!("lease: {other:?}"),
            }
        }

        fn configure(&mut self, queue: &str, patch: QueuePatch) {
            assert_eq!(self.run(Command::ConfigureQueue { queue: queue.into(), patch }), Response::Done);
        }

        fn pause(&mut self, queue: &str) {
            assert_eq!(self.run(Command::SetQueuePaused { queue: queue.into(), paused: true }), Response::Done);
        }
    }

    fn need(sm: &Sm, queue: &str) -> ScaleReply {
        scale(&sm.sm, Some(queue), 1)
    }

    #[test]
    fn one_queue_needs_its_running_and_ready_tasks() {
        let mut s = Sm::new();
        s.enqueue("q", 7);
        assert_eq!(s.lease("q", 3).len(), 3);
        let r = need(&s, "q");
        assert_eq!((r.running, r.ready, r.tasks, r.workers, r.paused), (3, 4, 7, 7, false));
        assert_eq!(r.queue.as_deref(), Some("q"));
    }

    #[test]
    fn a_cap_bounds_the_need_but_never_below_the_running() {
        assert_eq!(QueueNeed::of(100, 2, 5, false).tasks, 5);
        assert_eq!(QueueNeed::of(1, 2, 5, false).tasks, 3);
        assert_eq!(QueueNeed::of(0, 0, 5, false).tasks, 0);
        // The cap lowered under 7 running: those 7 still hold slots.
        assert_eq!(QueueNeed::of(10, 7, 5, false).tasks, 7);
        assert_eq!(QueueNeed::of(u64::MAX, u64::MAX, 0, false).tasks, u64::MAX);

        let mut s = Sm::new();
        s.configure("capped", QueuePatch { concurrency: Some(5), ..Default::default() });
        s.enqueue("capped", 20);
        assert_eq!(s.lease("capped", 10).len(), 5, "the cap holds leases to 5");
        let r = need(&s, "capped");
        assert_eq!((r.running, r.ready, r.tasks, r.workers), (5, 15, 5, 5));
    }

    #[test]
    fn a_paused_queue_needs_only_its_running_tasks() {
        let mut s = Sm::new();
        s.enqueue("p", 6);
        assert_eq!(s.lease("p", 2).len(), 2);
        s.pause("p");
        let r = need(&s, "p");
        assert_eq!((r.running, r.ready, r.tasks, r.workers, r.paused), (2, 0, 2, 2, true));
        assert_eq!(QueueNeed::of(9, 0, 0, true), QueueNeed { running: 0, ready: 0, tasks: 0, paused: true });
    }

    #[test]
    fn blocked_tasks_need_no_slot_and_backoff_ones_do() {
        let mut s = Sm::new();
        let first = s.enqueue("d", 1)[0];
        let mut waiting = NewTask::new("d", "noop", "{}");
        waiting.depends_on = vec![TaskRef::Id(skein_raft::fsm::TaskId(first))];
        s.enqueue_tasks(vec![waiting.clone(), waiting]);
        let r = need(&s, "d");
        assert_eq!((r.running, r.ready, r.tasks), (0, 1, 1), "two blocked tasks wait for the first");

        // The first fails once: pending again, in a backoff of its queue's
        // base (1 s by default), and still counted.
        let g = s.lease("d", 1).remove(0);
        let done = s.run(Command::Complete {
            node: 1,
            completions: vec![skein_raft::fsm::Completion {
                task: g.task,
                token: g.token,
                outcome: Outcome::Retryable { error: "flaky".into() },
            }],
        });
        assert!(matches!(done, Response::Completed(ref v) if v[0] == Ok(TaskStatus::Pending)), "{done:?}");
        assert!(s.lease("d", 1).is_empty(), "in its backoff, nothing is leased");
        let r = need(&s, "d");
        assert_eq!((r.running, r.ready, r.tasks, r.workers), (0, 1, 1, 1));

        // A task enqueued with a delay counts too.
        let mut later = NewTask::new("later", "noop", "{}");
        later.delay_ms = 60_000;
        s.enqueue_tasks(vec![later]);
        assert_eq!(need(&s, "later").tasks, 1);
    }

    #[test]
    fn an_unknown_queue_needs_nothing() {
        let mut s = Sm::new();
        s.enqueue("q", 3);
        let r = scale(&s.sm, Some("nope"), 4);
        assert_eq!(
            r,
            ScaleReply {
                queue: Some("nope".into()),
                tasks: 0,
                per_worker: 4,
                workers: 0,
                ready: 0,
                running: 0,
                paused: false
            }
        );
        let empty = scale(&StateMachine::new(), None, 1);
        assert_eq!((empty.tasks, empty.workers, empty.paused, empty.queue), (0, 0, false, None));
    }

    #[test]
    fn workers_round_up() {
        for (tasks, per, want) in
            [(0, 1, 0), (1, 1, 1), (1, 10, 1), (10, 10, 1), (11, 10, 2), (19, 4, 5), (20, 4, 5), (7, 0, 7)]
        {
            assert_eq!(workers(tasks, per), want, "{tasks} tasks, {per} per worker");
        }
        assert_eq!(workers(u64::MAX, 1), u64::MAX);
        assert_eq!(workers(u64::MAX, 2), u64::MAX / 2 + 1);
    }

    #[test]
    fn every_queue_sums_each_capped_and_rounds_once() {
        let mut s = Sm::new();
        s.configure("capped", QueuePatch { concurrency: Some(3), ..Default::default() });
        s.enqueue("capped", 10);
        s.enqueue("free", 4);
        s.enqueue("held", 8);
        s.pause("held");
        let r = scale(&s.sm, None, 4);
        // capped: 3 (of 10 ready); free: 4; held: 0 (paused).
        assert_eq!((r.tasks, r.ready, r.running, r.workers, r.paused), (7, 14, 0, 2, false));
        assert_eq!(r.queue, None);
        let by_queue: Vec<(String, u64)> = queue_needs(&s.sm).into_iter().map(|(q, n)| (q, n.tasks)).collect();
        assert_eq!(by_queue, vec![("capped".into(), 3), ("free".into(), 4), ("held".into(), 0)]);
        // Every queue paused: paused.
        s.pause("capped");
        s.pause("free");
        assert!(scale(&s.sm, None, 1).paused);
    }
}
