//! Applying commands: `apply(state, command) -> response`, total and
//! deterministic. A refused command is a [`Rejection`] value and changes
//! nothing; nothing here panics on any input.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::cold::ColdSink;
use super::command::{
    Command, Completion, Enqueued, Granted, HeartbeatAck, HeldLease, NewTask, Outcome, Rejection, Response, Stamped,
    TaskRef,
};
use super::state::{intern, StateMachine};
use super::types::{
    Event, EventKind, FencingToken, Lease, NodeId, NodeInfo, Progress, Queue, QueueConfig, QueuePatch, Task, TaskId,
    TaskStatus,
};

/// Most ended tasks one `CollectGarbage` forgets, so that one entry never
/// stalls the apply loop for long.
const GC_BATCH: usize = 10_000;

impl StateMachine {
    /// Applies one log entry's command. The only input besides the state is
    /// the command (with the leader's clock in it); the only output besides
    /// the new state is the response and the writes to `cold`.
    pub fn apply(&mut self, stamped: &Stamped, cold: &mut dyn ColdSink) -> Response {
        // The leader's clock may step back after a leader change; ours never does.
        self.core.clock_ms = self.core.clock_ms.max(stamped.now_ms);
        self.apply_command(&stamped.command, cold)
    }

    pub(super) fn apply_command(&mut self, command: &Command, cold: &mut dyn ColdSink) -> Response {
        // While enforcing, a client write must come as `AsCaller`: one that
        // does not (a node that had not yet applied the `enforce` when it
        // proposed) is refused here, not applied unchecked.
        if self.core.auth.enforce && !self.in_caller && super::auth::is_bare_client_write(command) {
            return Response::Rejected(Rejection::Unauthenticated("a client write must name its caller".into()));
        }
        match command {
            Command::Enqueue { tasks } => self.enqueue(tasks, cold),
            Command::Lease { node, queues, max } => self.lease(*node, queues, *max, cold),
            Command::Heartbeat { node, slots, held } => self.heartbeat(*node, *slots, held),
            Command::Complete { node, completions } => self.complete(*node, completions, cold),
            Command::ExpireLeases => self.expire_leases(cold),
            Command::Cancel { task, reason } => self.cancel(*task, reason, cold),
            Command::Retry { task } => self.retry(*task, cold),
            Command::SetQueuePaused { queue, paused } => match self.queue_for_admin(queue) {
                Ok(name) => {
                    if let Some(q) = self.core.queues.get_mut(&name) {
                        q.paused = *paused;
                    }
                    Response::Done
                }
                Err(r) => Response::Rejected(r),
            },
            Command::ConfigureQueue { queue, patch } => self.configure_queue(queue, patch),
            Command::DrainNode { node, draining } => {
                if self.core.removed.contains(node) {
                    return Response::Rejected(Rejection::NodeRemoved(*node));
                }
                self.touch_node(*node, None, false).draining = *draining;
                Response::Done
            }
            Command::ReleaseNode { node, forget } => {
                let released = self.release_node(*node, cold);
                if *forget {
                    self.core.nodes.remove(node);
                }
                Response::Released(released)
            }
            Command::CollectGarbage => self.collect_garbage(cold),
            Command::Batch(commands) => Response::Batch(commands.iter().map(|c| self.apply_command(c, cold)).collect()),
            Command::ApplyPlans { entities } => self.apply_plans(entities),
            Command::RunPlans { refs, force, default_queue, priority } => {
                self.run_plans(refs, *force, default_queue, *priority, cold)
            }
            Command::RemoveNode { node } => {
                let released = self.release_node(*node, cold);
                self.core.nodes.remove(node);
                self.core.removed.insert(*node);
                Response::Released(released)
            }
            Command::AdmitNode { node } => {
                self.core.removed.remove(node);
                Response::Done
            }
            Command::SetFormat { format } => {
                self.core.format.0 = self.core.format.0.max(*format);
                Response::Done
            }
            Command::RedriveQueue { queue, max } => self.redrive(queue, *max, cold),
            Command::AsCaller { caller, command } => self.apply_as_caller(*caller, command, cold),
            Command::EnqueueOwned { tasks, owner } => self.enqueue_owned(tasks, owner.as_deref(), cold),
            // Outside `AsCaller`: the node's own (the bootstrap's first token).
            Command::CreateToken { token } => self.create_token(token, "bootstrap"),
            Command::RevokeToken { id } => self.revoke_token(*id),
            Command::RotateToken { old, new } => self.rotate_token(*old, new, "bootstrap"),
            Command::TouchTokens { used } => self.touch_tokens(used),
            Command::ConfigureAuth { enforce, audit_retention_ms } => {
                self.configure_auth(*enforce, *audit_retention_ms)
            }
            Command::Record { .. } => Response::Done,
            Command::AllowExec { program, args } => self.allow_exec(program, args, "bootstrap"),
            Command::DenyExec { program, args } => self.deny_exec(program, args.as_deref()),
            Command::AllowRoot { root } => self.allow_root(root, "bootstrap"),
            Command::DenyRoot { url } => self.deny_root(url),
            Command::ConfigurePolicy { enforce } => self.configure_policy(*enforce),
            Command::EnqueueChildren { parent, token, tasks } => self.enqueue_children(*parent, *token, tasks, cold),
        }
    }

    /// Refuses a worker's command from a node removed from the cluster,
    /// before it can lease anything or re-create its record.
    fn check_not_removed(&self, node: NodeId) -> Result<(), Rejection> {
        if self.core.removed.contains(&node) {
            return Err(Rejection::NodeRemoved(node));
        }
        Ok(())
    }

    // ----- enqueue -------------------------------------------------------

    pub(super) fn enqueue(&mut self, tasks: &[NewTask], cold: &mut dyn ColdSink) -> Response {
        match self.check_enqueue(tasks) {
            Ok(plan) => Response::Enqueued(self.commit_enqueue(tasks, plan, cold)),
            Err(r) => Response::Rejected(r),
        }
    }

    /// Validates a whole batch before anything changes. Returns, for each
    /// task, either the existing task its key names or its resolved
    /// dependencies.
    fn check_enqueue(&self, tasks: &[NewTask]) -> Result<Vec<Planned>, Rejection> {
        let limits = &self.core.limits;
        if tasks.is_empty() {
            return Err(Rejection::EmptyBatch);
        }
        if tasks.len() as u64 > u64::from(limits.max_batch) {
            return Err(Rejection::BatchTooLarge { tasks: tasks.len() as u64, limit: limits.max_batch.into() });
        }
        let mut plan = Vec::with_capacity(tasks.len());
        // Keys made earlier in this batch: key -> position in the batch.
        let mut batch_keys: BTreeMap<&str, usize> = BTreeMap::new();
        let mut new_per_queue: BTreeMap<&str, u64> = BTreeMap::new();
        let mut next_id = self.core.next_task_id;
        for (index, t) in tasks.iter().enumerate() {
            check_name(index, "queue", &t.queue, limits.max_name_bytes)?;
            check_name(index, "kind", &t.kind, limits.max_name_bytes)?;
            if let Some(key) = &t.idempotency_key {
                if key.is_empty() || key.len() > 4 * limits.max_name_bytes as usize {
                    return Err(Rejection::InvalidName {
                        index,
                        field: "idempotency_key".into(),
                        reason: format!("must be 1 to {} bytes", 4 * limits.max_name_bytes),
                    });
                }
                if let Some(id) = self.core.keys.get(key.as_str()) {
                    plan.push(Planned::Existing(*id));
                    continue;
                }
                if let Some(&pos) = batch_keys.get(key.as_str()) {
                    plan.push(Planned::SameAs(pos));
                    continue;
                }
            }
            if t.payload.len() as u64 > u64::from(limits.max_payload_bytes) {
                return Err(Rejection::PayloadTooLarge {
                    index,
                    bytes: t.payload.len() as u64,
                    limit: limits.max_payload_bytes.into(),
                });
            }
            if t.depends_on.len() as u64 > u64::from(limits.max_depends_on) {
                return Err(Rejection::TooManyDependencies {
                    index,
                    count: t.depends_on.len() as u64,
                    limit: limits.max_depends_on.into(),
                });
            }
            let mut deps = Vec::with_capacity(t.depends_on.len());
            for dep in &t.depends_on {
                deps.push(self.resolve_dependency(index, dep, &batch_keys, &plan)?);
            }
            *new_per_queue.entry(t.queue.as_str()).or_default() += 1;
            if let Some(key) = &t.idempotency_key {
                batch_keys.insert(key.as_str(), index);
            }
            plan.push(Planned::New { id: TaskId(next_id), deps });
            next_id += 1;
        }
        let new_queues = new_per_queue.keys().filter(|q| !self.core.queues.contains_key(**q)).count();
        if self.core.queues.len() + new_queues > limits.max_queues as usize {
            return Err(Rejection::TooManyQueues { limit: limits.max_queues.into() });
        }
        for (queue, added) in new_per_queue {
            let depth = self.idx.queues.get(queue).map_or(0, |qi| qi.depth());
            let limit = self.core.queues.get(queue).map_or(QueueConfig::default().max_depth, |q| q.config.max_depth);
            if depth + added > limit {
                return Err(Rejection::QueueFull { queue: queue.to_string(), depth, limit });
            }
        }
        Ok(plan)
    }

    /// A dependency's task id, if it exists and can still succeed.
    fn resolve_dependency(
        &self,
        index: usize,
        dep: &TaskRef,
        batch_keys: &BTreeMap<&str, usize>,
        plan: &[Planned],
    ) -> Result<TaskId, Rejection> {
        let id = match dep {
            TaskRef::Id(id) => *id,
            TaskRef::Key(key) => match (self.core.keys.get(key.as_str()), batch_keys.get(key.as_str())) {
                (Some(id), _) => *id,
                // A task made earlier in this batch: new, so it can still succeed.
                (None, Some(&pos)) => match &plan[pos] {
                    Planned::New { id, .. } => return Ok(*id),
                    Planned::Existing(id) => *id,
                    Planned::SameAs(_) => {
                        return Err(Rejection::UnknownDependency { index, dependency: format!("key {key:?}") })
                    }
                },
                (None, None) => return Err(Rejection::UnknownDependency { index, dependency: format!("key {key:?}") }),
            },
        };
        match self.core.tasks.get(&id) {
            None => Err(Rejection::UnknownDependency { index, dependency: id.to_string() }),
            Some(t) if matches!(t.status, TaskStatus::Dead | TaskStatus::Cancelled) => {
                Err(Rejection::DependencyFailed { index, dependency: id, status: t.status })
            }
            Some(_) => Ok(id),
        }
    }

    fn commit_enqueue(&mut self, tasks: &[NewTask], plan: Vec<Planned>, cold: &mut dyn ColdSink) -> Vec<Enqueued> {
        let now = self.core.clock_ms;
        let mut out: Vec<Enqueued> = Vec::with_capacity(tasks.len());
        for (t, planned) in tasks.iter().zip(plan) {
            let (id, deps) = match planned {
                Planned::Existing(id) => {
                    let status = self.core.tasks.get(&id).map_or(TaskStatus::Succeeded, |t| t.status);
                    out.push(Enqueued { id, created: false, status });
                    continue;
                }
                Planned::SameAs(pos) => {
                    let first = out[pos].clone();
                    let status = self.core.tasks.get(&first.id).map_or(first.status, |t| t.status);
                    out.push(Enqueued { id: first.id, created: false, status });
                    continue;
                }
                Planned::New { id, deps } => (id, deps),
            };
            let queue = self.ensure_queue(&t.queue);
            let config = self.core.queues.get(&queue).map(|q| q.config.clone()).unwrap_or_default();
            let blocked =
                deps.iter().any(|d| self.core.tasks.get(d).is_none_or(|dt| dt.status != TaskStatus::Succeeded));
            let status = if blocked { TaskStatus::Blocked } else { TaskStatus::Pending };
            let key: Option<Arc<str>> = t.idempotency_key.as_deref().map(Arc::from);
            if let Some(k) = &key {
                self.core.keys.insert(k.clone(), id);
            }
            let task = Task {
                id,
                queue,
                kind: intern(&mut self.idx.kinds, &t.kind),
                priority: t.priority,
                status,
                attempt: 0,
                max_attempts: t.max_attempts.unwrap_or(config.max_attempts).max(1),
                not_before_ms: now.saturating_add(t.delay_ms),
                idempotency_key: key,
                depends_on: deps,
                lease: None,
                last_node: None,
                progress: None,
                last_error: None,
                expiry_streak: 0,
                payload_bytes: t.payload.len() as u32,
                created_ms: now,
                first_started_ms: None,
                last_started_ms: None,
                finished_ms: None,
                history_len: 0,
            };
            self.core.tasks.insert(id, task);
            self.core.next_task_id = id.0 + 1;
            self.index(id);
            cold.put_payload(id, &t.payload);
            self.record(id, None, None, EventKind::Enqueued { status }, cold);
            out.push(Enqueued { id, created: true, status });
        }
        out
    }

    // ----- lease ---------------------------------------------------------

    fn lease(&mut self, node: NodeId, queues: &[String], max: u32, cold: &mut dyn ColdSink) -> Response {
        if let Err(r) = self.check_not_removed(node) {
            return Response::Rejected(r);
        }
        let now = self.core.clock_ms;
        if self.touch_node(node, None, true).draining || max == 0 {
            return Response::Leased(Vec::new());
        }
        let names: Vec<Arc<str>> = if queues.is_empty() {
            self.core.queues.keys().cloned().collect()
        } else {
            queues.iter().filter_map(|q| self.core.queues.get_key_value(q.as_str()).map(|(k, _)| k.clone())).collect()
        };
        // The head of every queue that may lease now, best first.
        let mut heads: BTreeSet<((Reverse<i32>, TaskId), Arc<str>)> = BTreeSet::new();
        for name in &names {
            self.promote_due(name, now);
            if let Some(head) = self.leasable_head(name) {
                heads.insert((head, name.clone()));
            }
        }
        let mut granted = Vec::new();
        while granted.len() < max as usize {
            let Some(((_, id), name)) = heads.pop_first() else { break };
            granted.extend(self.grant(id, node, cold));
            if let Some(head) = self.leasable_head(&name) {
                heads.insert((head, name));
            }
        }
        Response::Leased(granted)
    }

    /// Moves a queue's delayed tasks whose time has come into its ready set.
    fn promote_due(&mut self, queue: &str, now: u64) {
        let Some(qi) = self.idx.queues.get_mut(queue) else { return };
        while let Some(&(at, id)) = qi.delayed.first() {
            if at > now {
                break;
            }
            qi.delayed.pop_first();
            if let Some(t) = self.core.tasks.get(&id) {
                qi.ready.insert((Reverse(t.priority), id));
            }
        }
    }

    /// The next task a queue would lease, unless it is paused or at its cap.
    fn leasable_head(&self, queue: &str) -> Option<(Reverse<i32>, TaskId)> {
        let q = self.core.queues.get(queue)?;
        let qi = self.idx.queues.get(queue)?;
        if q.paused {
            return None;
        }
        if q.config.concurrency > 0 && qi.counts[TaskStatus::Leased.index()] >= u64::from(q.config.concurrency) {
            return None;
        }
        qi.ready.first().copied()
    }

    /// Leases task `id` (pending and ready) to `node` under the next token.
    fn grant(&mut self, id: TaskId, node: NodeId, cold: &mut dyn ColdSink) -> Option<Granted> {
        let now = self.core.clock_ms;
        let lease_ms = self.lease_ms_of(id);
        let token = FencingToken(self.core.next_token);
        self.core.next_token += 1;
        self.unindex(id);
        let mut granted = None;
        if let Some(t) = self.core.tasks.get_mut(&id) {
            t.status = TaskStatus::Leased;
            t.attempt += 1;
            t.lease = Some(Lease { node, token, expires_ms: now.saturating_add(lease_ms) });
            t.last_node = Some(node);
            t.first_started_ms.get_or_insert(now);
            t.last_started_ms = Some(now);
            t.progress = None;
            granted = Some(Granted {
                task: id,
                queue: t.queue.to_string(),
                kind: t.kind.to_string(),
                attempt: t.attempt,
                token,
                expires_ms: now.saturating_add(lease_ms),
            });
        }
        self.index(id);
        let attempt = granted.as_ref()?.attempt;
        self.record(id, Some(node), Some(token), EventKind::Leased { attempt }, cold);
        granted
    }

    // ----- heartbeat and completion --------------------------------------

    /// Renews every lease `node` reports that is still its own; a lease past
    /// its expiry that the sweep has not yet taken back is still current.
    fn heartbeat(&mut self, node: NodeId, slots: u32, held: &[HeldLease]) -> Response {
        if let Err(r) = self.check_not_removed(node) {
            return Response::Rejected(r);
        }
        let now = self.core.clock_ms;
        let draining = self.touch_node(node, Some(slots), true).draining;
        let mut ack = HeartbeatAck { renewed: Vec::new(), revoked: Vec::new(), draining };
        for h in held {
            if !matches!(self.current_lease(h.task, h.token), Ok(l) if l.node == node) {
                ack.revoked.push((h.task, h.token));
                continue;
            }
            let lease_ms = self.lease_ms_of(h.task);
            self.unindex(h.task);
            if let Some(t) = self.core.tasks.get_mut(&h.task) {
                if let Some(lease) = &mut t.lease {
                    lease.expires_ms = now.saturating_add(lease_ms);
                    ack.renewed.push((h.task, lease.expires_ms));
                }
                if let Some(p) = &h.progress {
                    t.progress = Some(Progress {
                        fraction: if p.fraction.is_finite() { p.fraction.clamp(0.0, 1.0) } else { 0.0 },
                        message: truncate(&p.message, self.core.limits.max_error_bytes as usize),
                    });
                }
            }
            self.index(h.task);
        }
        Response::HeartbeatAck(ack)
    }

    fn complete(&mut self, node: NodeId, completions: &[Completion], cold: &mut dyn ColdSink) -> Response {
        if let Err(r) = self.check_not_removed(node) {
            return Response::Rejected(r);
        }
        self.touch_node(node, None, true);
        let results = completions.iter().map(|c| self.complete_one(node, c, cold)).collect();
        Response::Completed(results)
    }

    fn complete_one(&mut self, node: NodeId, c: &Completion, cold: &mut dyn ColdSink) -> Result<TaskStatus, Rejection> {
        self.current_lease(c.task, c.token)?;
        let status = match &c.outcome {
            Outcome::Succeeded { result } => {
                self.finish(c.task, TaskStatus::Succeeded, None, |t| t.expiry_streak = 0);
                cold.put_result(c.task, result);
                self.record(c.task, Some(node), Some(c.token), EventKind::Succeeded, cold);
                self.unblock_dependents(c.task, cold);
                TaskStatus::Succeeded
            }
            Outcome::Retryable { error } => {
                self.set_field(c.task, |t| t.expiry_streak = 0);
                self.fail_attempt(c.task, error, Some(node), Some(c.token), FailKind::Failed, cold)
            }
            Outcome::Permanent { error } => {
                self.kill(c.task, error, Some(node), Some(c.token), cold);
                TaskStatus::Dead
            }
        };
        Ok(status)
    }

    /// Enqueues `tasks` for the attempt of `parent` under `token`, if that
    /// lease is live; they belong to the parent's owner.
    fn enqueue_children(
        &mut self,
        parent: TaskId,
        token: FencingToken,
        tasks: &[NewTask],
        cold: &mut dyn ColdSink,
    ) -> Response {
        if let Err(r) = self.current_lease(parent, token) {
            return Response::Rejected(r);
        }
        let owner = self.core.auth.task_owners.get(&parent).cloned();
        let response = self.enqueue(tasks, cold);
        if let (Response::Enqueued(made), Some(owner)) = (&response, owner) {
            for e in made.iter().filter(|e| e.created) {
                self.core.auth.task_owners.insert(e.id, owner.clone());
            }
        }
        response
    }

    /// `Ok` when `token` is `task`'s live lease.
    fn current_lease(&self, task: TaskId, token: FencingToken) -> Result<&Lease, Rejection> {
        let t = self.core.tasks.get(&task).ok_or(Rejection::UnknownTask(task))?;
        match &t.lease {
            Some(lease) if lease.token == token => Ok(lease),
            other => Err(Rejection::StaleToken { task, token, current: other.as_ref().map(|l| l.token) }),
        }
    }

    // ----- failures, expiry, cancel, retry ------------------------------

    fn expire_leases(&mut self, cold: &mut dyn ColdSink) -> Response {
        let now = self.core.clock_ms;
        let due: Vec<TaskId> = self.idx.expiry.iter().take_while(|(at, _)| *at <= now).map(|(_, id)| *id).collect();
        let mut out = Vec::with_capacity(due.len());
        for id in due {
            let (node, token) = self.lease_holder(id);
            self.set_field(id, |t| t.expiry_streak += 1);
            let status = self.fail_attempt(id, "lease expired", node, token, FailKind::Expired, cold);
            out.push((id, status));
        }
        Response::Expired(out)
    }

    fn release_node(&mut self, node: NodeId, cold: &mut dyn ColdSink) -> Vec<(TaskId, TaskStatus)> {
        let held: Vec<TaskId> =
            self.idx.leases_by_node.get(&node).map(|s| s.iter().copied().collect()).unwrap_or_default();
        let mut out = Vec::with_capacity(held.len());
        for id in held {
            let (_, token) = self.lease_holder(id);
            let status =
                self.fail_attempt(id, "lease released by its node", Some(node), token, FailKind::Released, cold);
            out.push((id, status));
        }
        out
    }

    /// One attempt of a leased task ended without success: back to pending
    /// after a backoff, or dead once its attempts are spent.
    fn fail_attempt(
        &mut self,
        id: TaskId,
        error: &str,
        node: Option<NodeId>,
        token: Option<FencingToken>,
        kind: FailKind,
        cold: &mut dyn ColdSink,
    ) -> TaskStatus {
        let Some(t) = self.core.tasks.get(&id) else { return TaskStatus::Dead };
        if t.attempt >= t.max_attempts {
            let msg = format!("gave up after {} attempts: {error}", t.attempt);
            self.kill(id, &msg, node, token, cold);
            return TaskStatus::Dead;
        }
        let now = self.core.clock_ms;
        let retry_at = now.saturating_add(self.backoff_ms(id));
        let max_err = self.core.limits.max_error_bytes as usize;
        self.unindex(id);
        if let Some(t) = self.core.tasks.get_mut(&id) {
            t.status = TaskStatus::Pending;
            t.lease = None;
            t.not_before_ms = retry_at;
            t.last_error = Some(truncate(error, max_err));
        }
        self.index(id);
        let what = match kind {
            FailKind::Failed => EventKind::Failed { error: error.to_string(), retry_at_ms: retry_at },
            FailKind::Expired => EventKind::Expired { retry_at_ms: retry_at },
            FailKind::Released => EventKind::Released { retry_at_ms: retry_at },
        };
        self.record(id, node, token, what, cold);
        TaskStatus::Pending
    }

    /// Backoff before the next attempt: `min(cap, base * 2^(attempt-1))`,
    /// less up to a quarter derived from the task id so that tasks failing
    /// together do not all return together (deterministic, not random).
    fn backoff_ms(&self, id: TaskId) -> u64 {
        let Some(t) = self.core.tasks.get(&id) else { return 0 };
        let config = self.core.queues.get(&t.queue).map(|q| q.config.clone()).unwrap_or_default();
        let exp = t.attempt.saturating_sub(1).min(40);
        let full = config.backoff_base_ms.saturating_mul(1u64 << exp).min(config.backoff_cap_ms);
        let spread = id.0.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(u64::from(t.attempt)) % (full / 4 + 1);
        full - spread
    }

    /// Ends a task as dead and cancels what waits on it.
    fn kill(
        &mut self,
        id: TaskId,
        error: &str,
        node: Option<NodeId>,
        token: Option<FencingToken>,
        cold: &mut dyn ColdSink,
    ) {
        let max_err = self.core.limits.max_error_bytes as usize;
        self.finish(id, TaskStatus::Dead, Some(truncate(error, max_err)), |_| {});
        self.record(id, node, token, EventKind::Dead { error: error.to_string() }, cold);
        self.cancel_dependents(id, cold);
    }

    fn cancel(&mut self, id: TaskId, reason: &str, cold: &mut dyn ColdSink) -> Response {
        let Some(t) = self.core.tasks.get(&id) else { return Response::Rejected(Rejection::UnknownTask(id)) };
        if t.status.is_terminal() {
            return Response::Rejected(Rejection::WrongStatus {
                task: id,
                status: t.status,
                expected: "pending, blocked or leased".into(),
            });
        }
        let (node, token) = self.lease_holder(id);
        let reason = if reason.is_empty() { "cancelled by request" } else { reason };
        self.finish(
            id,
            TaskStatus::Cancelled,
            Some(truncate(reason, self.core.limits.max_error_bytes as usize)),
            |_| {},
        );
        self.record(id, node, token, EventKind::Cancelled { reason: reason.to_string() }, cold);
        self.cancel_dependents(id, cold);
        Response::Task { id, status: TaskStatus::Cancelled }
    }

    fn retry(&mut self, id: TaskId, cold: &mut dyn ColdSink) -> Response {
        let Some(t) = self.core.tasks.get(&id) else { return Response::Rejected(Rejection::UnknownTask(id)) };
        if !matches!(t.status, TaskStatus::Dead | TaskStatus::Cancelled) {
            return Response::Rejected(Rejection::WrongStatus {
                task: id,
                status: t.status,
                expected: "dead or cancelled".into(),
            });
        }
        let mut blocked = false;
        for dep in &t.depends_on {
            match self.core.tasks.get(dep).map(|d| d.status) {
                Some(TaskStatus::Succeeded) | None => {}
                Some(s @ (TaskStatus::Dead | TaskStatus::Cancelled)) => {
                    return Response::Rejected(Rejection::DependencyFailed { index: 0, dependency: *dep, status: s })
                }
                Some(_) => blocked = true,
            }
        }
        let now = self.core.clock_ms;
        let status = if blocked { TaskStatus::Blocked } else { TaskStatus::Pending };
        self.unindex(id);
        if let Some(t) = self.core.tasks.get_mut(&id) {
            t.status = status;
            t.attempt = 0;
            t.expiry_streak = 0;
            t.not_before_ms = now;
            t.finished_ms = None;
            t.progress = None;
        }
        self.index(id);
        self.record(id, None, None, EventKind::Retried, cold);
        Response::Task { id, status }
    }

    /// Retries up to `max` dead tasks of `queue`, those that ended first
    /// first. Dead tasks whose dependencies failed stay dead (as `Retry`
    /// refuses them).
    fn redrive(&mut self, queue: &str, max: u32, cold: &mut dyn ColdSink) -> Response {
        let Some(idx) = self.idx.queues.get(queue) else {
            return Response::Rejected(Rejection::UnknownQueue(queue.to_string()));
        };
        let dead: Vec<TaskId> = idx
            .finished
            .iter()
            .map(|&(_, id)| id)
            .filter(|id| self.core.tasks.get(id).is_some_and(|t| t.status == TaskStatus::Dead))
            .take(max as usize)
            .collect();
        Response::Batch(dead.into_iter().map(|id| self.retry(id, cold)).collect())
    }

    /// Blocked tasks waiting on `id` (which just succeeded) whose every
    /// dependency has now succeeded become pending.
    fn unblock_dependents(&mut self, id: TaskId, cold: &mut dyn ColdSink) {
        let Some(waiting) = self.idx.dependents.remove(&id) else { return };
        for w in waiting {
            let ready = self.core.tasks.get(&w).is_some_and(|t| {
                t.status == TaskStatus::Blocked
                    && t.depends_on
                        .iter()
                        .all(|d| self.core.tasks.get(d).is_none_or(|dt| dt.status == TaskStatus::Succeeded))
            });
            if ready {
                let now = self.core.clock_ms;
                self.unindex(w);
                if let Some(t) = self.core.tasks.get_mut(&w) {
                    t.status = TaskStatus::Pending;
                    t.not_before_ms = t.not_before_ms.max(now);
                }
                self.index(w);
                self.record(w, None, None, EventKind::Unblocked, cold);
            }
        }
    }

    /// Blocked tasks waiting on `id` (which ended without success) can never
    /// run: cancel them, and what waits on them, saying why.
    fn cancel_dependents(&mut self, id: TaskId, cold: &mut dyn ColdSink) {
        let mut stack = vec![id];
        while let Some(failed) = stack.pop() {
            let Some(waiting) = self.idx.dependents.remove(&failed) else { continue };
            let status = self.core.tasks.get(&failed).map_or(TaskStatus::Dead, |t| t.status);
            let reason = format!("dependency {failed} is {status}");
            for w in waiting {
                if self.core.tasks.get(&w).is_some_and(|t| t.status == TaskStatus::Blocked) {
                    let max_err = self.core.limits.max_error_bytes as usize;
                    self.finish(w, TaskStatus::Cancelled, Some(truncate(&reason, max_err)), |_| {});
                    self.record(w, None, None, EventKind::Cancelled { reason: reason.clone() }, cold);
                    stack.push(w);
                }
            }
        }
    }

    /// Moves a task to an ended status, dropping its lease.
    fn finish(&mut self, id: TaskId, status: TaskStatus, error: Option<String>, also: impl FnOnce(&mut Task)) {
        let now = self.core.clock_ms;
        self.unindex(id);
        if let Some(t) = self.core.tasks.get_mut(&id) {
            t.status = status;
            t.lease = None;
            t.finished_ms = Some(now);
            if error.is_some() {
                t.last_error = error;
            }
            also(t);
        }
        self.index(id);
    }

    /// Changes a field that no index depends on.
    fn set_field(&mut self, id: TaskId, f: impl FnOnce(&mut Task)) {
        if let Some(t) = self.core.tasks.get_mut(&id) {
            f(t);
        }
    }

    // ----- queues, nodes, garbage ---------------------------------------

    fn configure_queue(&mut self, queue: &str, patch: &QueuePatch) -> Response {
        let name = match self.queue_for_admin(queue) {
            Ok(n) => n,
            Err(r) => return Response::Rejected(r),
        };
        let Some(q) = self.core.queues.get_mut(&name) else {
            return Response::Rejected(Rejection::UnknownQueue(queue.into()));
        };
        // All or nothing: a refused patch leaves the settings as they were.
        match q.config.patch(patch) {
            Ok(()) => Response::Done,
            Err(why) => Response::Rejected(Rejection::InvalidConfig(why)),
        }
    }

    /// The queue an admin command names, made with the defaults if new.
    fn queue_for_admin(&mut self, queue: &str) -> Result<Arc<str>, Rejection> {
        check_name(0, "queue", queue, self.core.limits.max_name_bytes)?;
        if !self.core.queues.contains_key(queue) && self.core.queues.len() >= self.core.limits.max_queues as usize {
            return Err(Rejection::TooManyQueues { limit: self.core.limits.max_queues.into() });
        }
        Ok(self.ensure_queue(queue))
    }

    fn ensure_queue(&mut self, name: &str) -> Arc<str> {
        if let Some((k, _)) = self.core.queues.get_key_value(name) {
            return k.clone();
        }
        let k: Arc<str> = Arc::from(name);
        self.core.queues.insert(k.clone(), Queue { name: k.clone(), config: QueueConfig::default(), paused: false });
        self.idx.queues.insert(k.clone(), Default::default());
        k
    }

    /// The node's record, made on first sight; `seen` marks it alive now.
    fn touch_node(&mut self, node: NodeId, slots: Option<u32>, seen: bool) -> &mut NodeInfo {
        let now = self.core.clock_ms;
        let info = self.core.nodes.entry(node).or_insert(NodeInfo {
            id: node,
            slots: 0,
            draining: false,
            last_heartbeat_ms: now,
        });
        if let Some(s) = slots {
            info.slots = s;
        }
        if seen {
            info.last_heartbeat_ms = now;
        }
        info
    }

    fn collect_garbage(&mut self, cold: &mut dyn ColdSink) -> Response {
        let now = self.core.clock_ms;
        let mut doomed = Vec::new();
        for (name, qi) in &self.idx.queues {
            let retention = self.core.queues.get(name).map_or(0, |q| q.config.retention_ms);
            if retention == 0 {
                continue;
            }
            for &(at, id) in &qi.finished {
                if at.saturating_add(retention) > now || doomed.len() >= GC_BATCH {
                    break;
                }
                doomed.push(id);
            }
        }
        for id in &doomed {
            self.unindex(*id);
            if let Some(t) = self.core.tasks.remove(id) {
                if let Some(k) = &t.idempotency_key {
                    self.core.keys.remove(k);
                }
                self.idx.dependents.remove(id);
                cold.forget_task(*id, t.history_len);
            }
            self.forget_owner(*id);
        }
        self.collect_audit(cold);
        Response::Collected { tasks: doomed.len() as u64 }
    }

    // ----- small helpers -------------------------------------------------

    fn lease_ms_of(&self, id: TaskId) -> u64 {
        self.core
            .tasks
            .get(&id)
            .and_then(|t| self.core.queues.get(&t.queue))
            .map_or(QueueConfig::default().lease_ms, |q| q.config.lease_ms)
    }

    fn lease_holder(&self, id: TaskId) -> (Option<NodeId>, Option<FencingToken>) {
        match self.core.tasks.get(&id).and_then(|t| t.lease.as_ref()) {
            Some(l) => (Some(l.node), Some(l.token)),
            None => (None, None),
        }
    }

    /// Appends an event to a task's history, dropping the oldest past the limit.
    pub(super) fn record(
        &mut self,
        id: TaskId,
        node: Option<NodeId>,
        token: Option<FencingToken>,
        what: EventKind,
        cold: &mut dyn ColdSink,
    ) {
        let at_ms = self.core.clock_ms;
        let limit = self.core.limits.max_history_per_task.max(1);
        let Some(t) = self.core.tasks.get_mut(&id) else { return };
        let seq = t.history_len;
        t.history_len += 1;
        cold.put_event(id, seq, &Event { at_ms, node, token, what });
        if seq >= limit {
            cold.delete_event(id, seq - limit);
        }
    }
}

/// What `check_enqueue` decided for one task of a batch.
enum Planned {
    /// The key names a task enqueued before.
    Existing(TaskId),
    /// The key was used earlier in this batch, at this position.
    SameAs(usize),
    New {
        id: TaskId,
        deps: Vec<TaskId>,
    },
}

/// Fencing tokens carry the cluster's epoch in their top bits: a cluster
/// started from a backup (`skein-node --restore`) is in the next epoch, so
/// every token it grants is past any token the backed-up cluster granted,
/// even after the backup was taken (it cannot grant 2^48 leases).
pub const EPOCH_SHIFT: u32 = 48;

/// What [`StateMachine::begin_new_epoch`] changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEpoch {
    /// The new cluster's epoch (the backup's plus one).
    pub epoch: u64,
    /// The leases handed back, and where each task went.
    pub released: Vec<(TaskId, TaskStatus)>,
    /// How many node records were forgotten.
    pub forgotten_nodes: usize,
}

impl StateMachine {
    /// Turns a backup's state into the first state of a new cluster (no
    /// command: it runs once, before the new cluster's log starts). The old
    /// cluster's leases and nodes mean nothing to the new one: every lease
    /// is handed back as when a node restarts (pending again, or dead if it
    /// was the last attempt), the node records and the removed list are
    /// forgotten, and the token counter jumps to the next epoch, so that no
    /// token of the new cluster can equal or precede one the old cluster
    /// granted (targets keep the token that published them).
    pub fn begin_new_epoch(&mut self, cold: &mut dyn ColdSink) -> NewEpoch {
        let holders: Vec<NodeId> = self.idx.leases_by_node.keys().copied().collect();
        let mut released = Vec::new();
        for node in holders {
            released.extend(self.release_node(node, cold));
        }
        let forgotten_nodes = self.core.nodes.len();
        self.core.nodes.clear();
        self.core.removed.clear();
        let epoch = (self.core.next_token >> EPOCH_SHIFT) + 1;
        self.core.next_token = epoch << EPOCH_SHIFT;
        NewEpoch { epoch, released, forgotten_nodes }
    }
}

impl NewEpoch {
    /// The first token the new cluster grants.
    pub fn next_token(&self) -> u64 {
        self.epoch << EPOCH_SHIFT
    }
}

#[derive(Clone, Copy)]
enum FailKind {
    Failed,
    Expired,
    Released,
}

/// Queue and kind names: 1 to `max` bytes of letters, digits and `._:/-`.
pub(super) fn check_name(index: usize, field: &str, value: &str, max: u32) -> Result<(), Rejection> {
    let reason = if value.is_empty() {
        Some("must not be empty".to_string())
    } else if value.len() > max as usize {
        Some(format!("longer than {max} bytes"))
    } else if !value.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:/-".contains(&b)) {
        Some(format!("{value:?} may hold only letters, digits and . _ : / -"))
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Rejection::InvalidName { index, field: field.to_string(), reason }),
        None => Ok(()),
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}
