//! Property tests: random command sequences against a small reference model.
//!
//! Invariants checked after every command: the state machine's own index
//! invariants (each task in exactly one state, leases consistent); the
//! model agrees on every task's status and on which completions are accepted;
//! fencing tokens only grow; at most one live lease per task. At the end:
//! two replicas fed the same log are byte-identical, and a replica restored
//! from a snapshot taken midway ends identical too.

use std::collections::BTreeMap;

use proptest::prelude::*;
use skein_raft::fsm::*;

const NODES: u64 = 3;

#[derive(Debug, Clone)]
enum Op {
    Enqueue {
        n: usize,
        key: Option<u8>,
        dep: Option<usize>,
        queue: u8,
    },
    Lease {
        node: u64,
        max: u32,
        queue: Option<u8>,
    },
    /// Complete the `pick`-th leased task (by id order), with its current
    /// token or a stale one.
    Complete {
        pick: usize,
        stale: bool,
        outcome: u8,
    },
    Heartbeat {
        node: u64,
    },
    Advance {
        ms: u64,
    },
    Expire,
    Cancel {
        pick: usize,
    },
    Retry {
        pick: usize,
    },
    Pause {
        queue: u8,
        paused: bool,
    },
    Release {
        node: u64,
    },
    /// The node leaves the cluster (`RemoveNode`), or joins it again.
    Remove {
        node: u64,
    },
    Admit {
        node: u64,
    },
    Snapshot,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..4, proptest::option::of(0u8..6), proptest::option::of(0usize..40), 0u8..2)
            .prop_map(|(n, key, dep, queue)| Op::Enqueue { n, key, dep, queue }),
        4 => (1..=NODES, 0u32..4, proptest::option::of(0u8..2)).prop_map(|(node, max, queue)| Op::Lease { node, max, queue }),
        5 => (0usize..20, proptest::bool::weighted(0.2), 0u8..3).prop_map(|(pick, stale, outcome)| Op::Complete { pick, stale, outcome }),
        2 => (1..=NODES).prop_map(|node| Op::Heartbeat { node }),
        3 => (1u64..4_000).prop_map(|ms| Op::Advance { ms }),
        2 => Just(Op::Expire),
        1 => (0usize..40).prop_map(|pick| Op::Cancel { pick }),
        1 => (0usize..40).prop_map(|pick| Op::Retry { pick }),
        1 => (0u8..2, any::<bool>()).prop_map(|(queue, paused)| Op::Pause { queue, paused }),
        1 => (1..=NODES).prop_map(|node| Op::Release { node }),
        1 => (1..=NODES).prop_map(|node| Op::Remove { node }),
        1 => (1..=NODES).prop_map(|node| Op::Admit { node }),
        1 => Just(Op::Snapshot),
    ]
}

/// The reference: what each task's status must be, and its live token.
#[derive(Debug, Clone)]
struct ModelTask {
    status: TaskStatus,
    token: Option<FencingToken>,
    node: Option<u64>,
    deps: Vec<TaskId>,
}

#[derive(Default)]
struct Model {
    tasks: BTreeMap<TaskId, ModelTask>,
    keys: BTreeMap<String, TaskId>,
    max_token: Option<FencingToken>,
    /// Nodes removed and not admitted again: refused every worker command.
    removed: std::collections::BTreeSet<u64>,
}

impl Model {
    /// Cancels everything blocked on `id`, transitively.
    fn cancel_dependents(&mut self, id: TaskId) {
        let mut stack = vec![id];
        while let Some(f) = stack.pop() {
            let waiting: Vec<TaskId> = self
                .tasks
                .iter()
                .filter(|(_, t)| t.status == TaskStatus::Blocked && t.deps.contains(&f))
                .map(|(i, _)| *i)
                .collect();
            for w in waiting {
                self.tasks.get_mut(&w).unwrap().status = TaskStatus::Cancelled;
                stack.push(w);
            }
        }
    }

    fn unblock_dependents(&mut self) {
        let ready: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(_, t)| {
                t.status == TaskStatus::Blocked
                    && t.deps.iter().all(|d| self.tasks.get(d).is_some_and(|dt| dt.status == TaskStatus::Succeeded))
            })
            .map(|(i, _)| *i)
            .collect();
        for r in ready {
            self.tasks.get_mut(&r).unwrap().status = TaskStatus::Pending;
        }
    }
}

struct Run {
    sm: StateMachine,
    cold: MemCold,
    model: Model,
    now: u64,
    log: Vec<Stamped>,
    /// A snapshot taken midway and the log position it covers.
    snapshot: Option<(Vec<u8>, usize)>,
}

impl Run {
    fn apply(&mut self, command: Command) -> Response {
        let stamped = Stamped { now_ms: self.now, command };
        let r = self.sm.apply(&stamped, &mut self.cold);
        self.log.push(stamped);
        r
    }

    fn leased(&self) -> Vec<(TaskId, ModelTask)> {
        self.model.tasks.iter().filter(|(_, t)| t.status == TaskStatus::Leased).map(|(i, t)| (*i, t.clone())).collect()
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Enqueue { n, key, dep, queue } => {
                let dep_id = dep.and_then(|d| self.model.tasks.keys().nth(d).copied());
                let mut tasks = Vec::new();
                for _ in 0..*n {
                    let mut t = NewTask::new(&format!("q{queue}"), "noop", "{}");
                    t.max_attempts = Some(2);
                    t.idempotency_key = key.map(|k| format!("k{k}"));
                    t.depends_on = dep_id.map(TaskRef::Id).into_iter().collect();
                    tasks.push(t);
                }
                let dep_failed = dep_id
                    .is_some_and(|d| matches!(self.model.tasks[&d].status, TaskStatus::Dead | TaskStatus::Cancelled));
                let key_known = key.is_some_and(|k| self.model.keys.contains_key(&format!("k{k}")));
                match self.apply(Command::Enqueue { tasks }) {
                    Response::Enqueued(out) => {
                        prop_assert!(!dep_failed || key_known);
                        for e in out {
                            if e.created {
                                let blocked =
                                    dep_id.is_some_and(|d| self.model.tasks[&d].status != TaskStatus::Succeeded);
                                let status = if blocked { TaskStatus::Blocked } else { TaskStatus::Pending };
                                prop_assert_eq!(e.status, status);
                                self.model.tasks.insert(
                                    e.id,
                                    ModelTask { status, token: None, node: None, deps: dep_id.into_iter().collect() },
                                );
                                if let Some(k) = key {
                                    self.model.keys.insert(format!("k{k}"), e.id);
                                }
                            } else {
                                prop_assert_eq!(Some(&e.id), key.and_then(|k| self.model.keys.get(&format!("k{k}"))));
                            }
                        }
                    }
                    Response::Rejected(Rejection::DependencyFailed { .. }) => prop_assert!(dep_failed),
                    other => prop_assert!(false, "enqueue gave {:?}", other),
                }
            }
            Op::Lease { node, max, queue } => {
                let queues = queue.map(|q| vec![format!("q{q}")]).unwrap_or_default();
                let removed = self.model.removed.contains(node);
                match self.apply(Command::Lease { node: *node, queues, max: *max }) {
                    Response::Rejected(Rejection::NodeRemoved(n)) => {
                        prop_assert!(removed && n == *node, "lease refused to node {}", n)
                    }
                    Response::Leased(_) if removed => prop_assert!(false, "removed node {} leased", node),
                    Response::Leased(granted) => {
                        prop_assert!(granted.len() <= *max as usize);
                        for g in granted {
                            prop_assert!(self.model.max_token.is_none_or(|m| g.token > m), "token did not grow");
                            self.model.max_token = Some(g.token);
                            let t = self.model.tasks.get_mut(&g.task).unwrap();
                            prop_assert_eq!(t.status, TaskStatus::Pending, "leased a task that was not pending");
                            t.status = TaskStatus::Leased;
                            t.token = Some(g.token);
                            t.node = Some(*node);
                        }
                    }
                    other => prop_assert!(false, "lease gave {:?}", other),
                }
            }
            Op::Complete { pick, stale, outcome } => {
                let leased = self.leased();
                if leased.is_empty() {
                    return Ok(());
                }
                let (id, mt) = &leased[pick % leased.len()];
                let current = mt.token.unwrap();
                let token = if *stale { FencingToken(current.0.saturating_sub(1)) } else { current };
                let outcome = match outcome {
                    0 => Outcome::Succeeded { result: "1".into() },
                    1 => Outcome::Retryable { error: "retry".into() },
                    _ => Outcome::Permanent { error: "fatal".into() },
                };
                let node = mt.node.unwrap();
                let r = self.apply(Command::Complete {
                    node,
                    completions: vec![Completion { task: *id, token, outcome: outcome.clone() }],
                });
                let Response::Completed(mut v) = r else { return Err(TestCaseError::fail("complete")) };
                let result = v.remove(0);
                if token != current {
                    prop_assert!(matches!(result, Err(Rejection::StaleToken { .. })), "stale token accepted");
                    return Ok(());
                }
                let status = result.map_err(|e| TestCaseError::fail(format!("current token refused: {e}")))?;
                let want = match outcome {
                    Outcome::Succeeded { .. } => TaskStatus::Succeeded,
                    Outcome::Retryable { .. } => {
                        let attempt = self.sm.task(*id).unwrap().attempt;
                        if attempt >= 2 {
                            TaskStatus::Dead
                        } else {
                            TaskStatus::Pending
                        }
                    }
                    Outcome::Permanent { .. } => TaskStatus::Dead,
                };
                prop_assert_eq!(status, want);
                self.set_status(*id, status);
            }
            Op::Heartbeat { node } => {
                let held: Vec<HeldLease> = self
                    .leased()
                    .into_iter()
                    .filter(|(_, t)| t.node == Some(*node))
                    .map(|(id, t)| HeldLease { task: id, token: t.token.unwrap(), progress: None })
                    .collect();
                let n = held.len();
                let removed = self.model.removed.contains(node);
                match self.apply(Command::Heartbeat { node: *node, slots: 2, held }) {
                    Response::Rejected(Rejection::NodeRemoved(n)) => {
                        prop_assert!(removed && n == *node, "heartbeat refused to node {}", n)
                    }
                    Response::HeartbeatAck(_) if removed => {
                        prop_assert!(false, "removed node {} heartbeat accepted", node)
                    }
                    Response::HeartbeatAck(ack) => {
                        prop_assert_eq!(ack.renewed.len(), n);
                        prop_assert!(ack.revoked.is_empty());
                    }
                    other => prop_assert!(false, "heartbeat gave {:?}", other),
                }
            }
            Op::Advance { ms } => self.now += ms,
            Op::Expire => match self.apply(Command::ExpireLeases) {
                Response::Expired(v) => {
                    for (id, status) in v {
                        prop_assert_eq!(self.model.tasks[&id].status, TaskStatus::Leased);
                        self.set_status(id, status);
                    }
                }
                other => prop_assert!(false, "expire gave {:?}", other),
            },
            Op::Cancel { pick } => {
                let Some(id) = self.model.tasks.keys().nth(*pick).copied() else { return Ok(()) };
                let terminal = self.model.tasks[&id].status.is_terminal();
                match self.apply(Command::Cancel { task: id, reason: String::new() }) {
                    Response::Task { status, .. } => {
                        prop_assert!(!terminal);
                        self.set_status(id, status);
                    }
                    Response::Rejected(Rejection::WrongStatus { .. }) => prop_assert!(terminal),
                    other => prop_assert!(false, "cancel gave {:?}", other),
                }
            }
            Op::Retry { pick } => {
                let Some(id) = self.model.tasks.keys().nth(*pick).copied() else { return Ok(()) };
                match self.apply(Command::Retry { task: id }) {
                    Response::Task { status, .. } => {
                        prop_assert!(matches!(self.model.tasks[&id].status, TaskStatus::Dead | TaskStatus::Cancelled));
                        self.model.tasks.get_mut(&id).unwrap().status = status;
                    }
                    Response::Rejected(_) => {}
                    other => prop_assert!(false, "retry gave {:?}", other),
                }
            }
            Op::Pause { queue, paused } => {
                self.apply(Command::SetQueuePaused { queue: format!("q{queue}"), paused: *paused });
            }
            Op::Release { node } => match self.apply(Command::ReleaseNode { node: *node, forget: false }) {
                Response::Released(v) => {
                    for (id, status) in v {
                        prop_assert_eq!(self.model.tasks[&id].node, Some(*node));
                        self.set_status(id, status);
                    }
                }
                other => prop_assert!(false, "release gave {:?}", other),
            },
            Op::Remove { node } => match self.apply(Command::RemoveNode { node: *node }) {
                Response::Released(v) => {
                    for (id, status) in v {
                        prop_assert_eq!(self.model.tasks[&id].node, Some(*node));
                        self.set_status(id, status);
                    }
                    prop_assert!(self.leased().iter().all(|(_, t)| t.node != Some(*node)), "removed node kept a lease");
                    self.model.removed.insert(*node);
                }
                other => prop_assert!(false, "remove gave {:?}", other),
            },
            Op::Admit { node } => {
                prop_assert_eq!(self.apply(Command::AdmitNode { node: *node }), Response::Done);
                self.model.removed.remove(node);
            }
            Op::Snapshot => {
                if self.snapshot.is_none() {
                    let bytes = bytes(&self.sm);
                    self.snapshot = Some((bytes, self.log.len()));
                }
            }
        }
        Ok(())
    }

    /// Moves a model task to `status`, with what follows for its dependents.
    fn set_status(&mut self, id: TaskId, status: TaskStatus) {
        let t = self.model.tasks.get_mut(&id).unwrap();
        t.status = status;
        if status != TaskStatus::Leased {
            t.token = None;
            t.node = None;
        }
        match status {
            TaskStatus::Succeeded => self.model.unblock_dependents(),
            TaskStatus::Dead | TaskStatus::Cancelled => self.model.cancel_dependents(id),
            _ => {}
        }
    }

    fn check(&self) -> Result<(), TestCaseError> {
        self.sm.check_invariants().map_err(TestCaseError::fail)?;
        prop_assert_eq!(self.sm.task_count(), self.model.tasks.len());
        let counts = self.sm.total_counts();
        prop_assert_eq!(counts.values().sum::<u64>() as usize, self.model.tasks.len(), "a task in no state or two");
        for (id, mt) in &self.model.tasks {
            let t = self.sm.task(*id).unwrap();
            prop_assert_eq!(t.status, mt.status, "task {} status", id);
            prop_assert_eq!(t.lease.as_ref().map(|l| l.token), mt.token, "task {} token", id);
        }
        let mut leased: Vec<TaskId> = (1..=NODES).flat_map(|n| self.sm.leases_of(n)).map(|t| t.id).collect();
        let total = leased.len();
        leased.dedup();
        prop_assert_eq!(leased.len(), total, "a task leased to two nodes");
        Ok(())
    }
}

fn bytes(sm: &StateMachine) -> Vec<u8> {
    bincode::serde::encode_to_vec(skein_raft::format::StoredState(sm), bincode::config::standard()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn random_commands_match_the_model(ops in proptest::collection::vec(op(), 1..120)) {
        let mut run = Run {
            sm: StateMachine::new(),
            cold: MemCold::default(),
            model: Model::default(),
            now: 1_000,
            log: Vec::new(),
            snapshot: None,
        };
        for op in &ops {
            run.step(op)?;
            run.check()?;
        }

        // A second replica fed the same log ends byte-identical, cold data too.
        let mut replica = StateMachine::new();
        let mut replica_cold = MemCold::default();
        for entry in &run.log {
            replica.apply(entry, &mut replica_cold);
        }
        prop_assert_eq!(bytes(&replica), bytes(&run.sm));
        prop_assert_eq!(&replica_cold, &run.cold);

        // A replica restored from the midway snapshot, then fed the rest.
        if let Some((snap, at)) = &run.snapshot {
            let (skein_raft::format::StateV3(mut restored), _): (skein_raft::format::StateV3, usize) =
                bincode::serde::decode_from_slice(snap, bincode::config::standard()).unwrap();
            restored.check_invariants().map_err(TestCaseError::fail)?;
            let mut cold = MemCold::default();
            for entry in &run.log[*at..] {
                restored.apply(entry, &mut cold);
            }
            prop_assert_eq!(bytes(&restored), bytes(&run.sm));
        }
    }
}
