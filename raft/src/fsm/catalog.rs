//! The plan catalog: Backstage entities (migration plans and the plain
//! entities they depend on) kept in the replicated state, and running plans
//! as `migration` tasks.
//!
//! The state machine does not parse YAML or JSON: the node checks each
//! entity's fields (with `skein-plan`) and sends what scheduling needs as
//! plain fields, with the whole document as JSON text. Here the batch is
//! checked against the catalog as every replica sees it at that log index:
//! well-formed references, no entity twice, every `dependsOn` present, no
//! cycle. All or nothing, like an enqueue.
//!
//! Running a plan enqueues one task per plan under the idempotency key
//! `plan:<ref>#<generation>`. A plan's generation grows only when a new run
//! is enqueued: on its first run, with `force`, or when its last run ended
//! dead or cancelled. So running a plan that is pending, running or done
//! returns its task instead of migrating twice. Plans it depends on that
//! have not run (or failed) are run with it, and its task depends on theirs,
//! so it stays blocked until they succeeded. A dependency on a plain entity
//! is satisfied by the entity being in the catalog.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::cold::ColdSink;
use super::command::{NewTask, Rejection, Response, TaskRef};
use super::state::StateMachine;
use super::types::{Task, TaskId, TaskStatus};

/// At most this many entities in the catalog (plans are few; this bounds
/// memory, as every entry is kept in memory).
pub const MAX_CATALOG_ENTITIES: usize = 100_000;
/// The task kind that runs a plan.
pub const MIGRATION_KIND: &str = "migration";

/// An entity to store, as the node extracted it from its document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEntity {
    /// Canonical and lower case: `component:default/orders-v2`.
    pub entity_ref: String,
    /// A `Component` with `spec.type: migration-plan`.
    pub is_plan: bool,
    /// From the `honk/queue` annotation.
    pub queue: Option<String>,
    pub owner: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Canonical references.
    pub depends_on: Vec<String>,
    /// The whole entity as JSON text.
    pub document: String,
}

/// An entity in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    pub entity: NewEntity,
    /// Bumped each time the document changes.
    pub revision: u64,
    /// The generation of the plan's newest run (0: never run).
    pub generation: u64,
    pub created_ms: u64,
    pub updated_ms: u64,
}

impl CatalogEntry {
    /// The idempotency key of the plan's run in `generation`.
    pub fn run_key(&self, generation: u64) -> String {
        run_key(&self.entity.entity_ref, generation)
    }
}

/// The idempotency key of a plan's run.
pub fn run_key(entity_ref: &str, generation: u64) -> String {
    format!("plan:{entity_ref}#{generation}")
}

/// What storing one entity did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedEntity {
    pub entity_ref: String,
    /// New to the catalog.
    pub created: bool,
    /// Its document differs from the one stored before (always true when created).
    pub changed: bool,
    pub revision: u64,
}

/// A plan's run, as a `RunPlans` answered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRun {
    pub entity_ref: String,
    pub generation: u64,
    pub task: TaskId,
    /// `false`: the plan's current run was returned (it is pending, running
    /// or done), nothing new was enqueued.
    pub created: bool,
    pub status: TaskStatus,
    /// Asked for by name (not pulled in as a dependency).
    pub requested: bool,
}

/// One plan of a `RunPlans` answer in the making.
type Answer = (String, Option<(TaskId, TaskStatus)>, bool);

/// Where a plan's current run stands.
enum RunState {
    /// Never run.
    Never,
    /// Its run ended and was forgotten after the queue's retention.
    Forgotten,
    Live(TaskId, TaskStatus),
}

impl StateMachine {
    // ----- apply ------------------------------------------------------

    pub(super) fn apply_plans(&mut self, entities: &[NewEntity]) -> Response {
        if let Err(r) = self.check_plans(entities) {
            return Response::Rejected(r);
        }
        let now = self.core.clock_ms;
        let mut out = Vec::with_capacity(entities.len());
        for e in entities {
            let applied = match self.core.catalog.get_mut(&e.entity_ref) {
                Some(entry) => {
                    let changed = entry.entity != *e;
                    if changed {
                        entry.entity = e.clone();
                        entry.revision += 1;
                        entry.updated_ms = now;
                    }
                    AppliedEntity {
                        entity_ref: e.entity_ref.clone(),
                        created: false,
                        changed,
                        revision: entry.revision,
                    }
                }
                None => {
                    let entry = CatalogEntry {
                        entity: e.clone(),
                        revision: 1,
                        generation: 0,
                        created_ms: now,
                        updated_ms: now,
                    };
                    self.core.catalog.insert(e.entity_ref.clone(), entry);
                    AppliedEntity { entity_ref: e.entity_ref.clone(), created: true, changed: true, revision: 1 }
                }
            };
            out.push(applied);
        }
        Response::PlansApplied(out)
    }

    fn check_plans(&self, entities: &[NewEntity]) -> Result<(), Rejection> {
        let limits = &self.core.limits;
        if entities.is_empty() {
            return Err(Rejection::EmptyBatch);
        }
        if entities.len() as u64 > u64::from(limits.max_batch) {
            return Err(Rejection::BatchTooLarge { tasks: entities.len() as u64, limit: limits.max_batch.into() });
        }
        let invalid = |index: usize, e: &NewEntity, field: &str, reason: String| Rejection::InvalidEntity {
            index,
            entity: e.entity_ref.clone(),
            field: field.to_string(),
            reason,
        };
        let mut batch: BTreeMap<&str, usize> = BTreeMap::new();
        for (index, e) in entities.iter().enumerate() {
            if let Err(reason) = check_ref(&e.entity_ref) {
                return Err(invalid(index, e, "entity_ref", reason));
            }
            if batch.insert(e.entity_ref.as_str(), index).is_some() {
                return Err(invalid(index, e, "metadata.name", "defined twice in this batch".into()));
            }
            if e.document.len() as u64 > u64::from(limits.max_payload_bytes) {
                return Err(Rejection::PayloadTooLarge {
                    index,
                    bytes: e.document.len() as u64,
                    limit: limits.max_payload_bytes.into(),
                });
            }
            if let Some(q) = &e.queue {
                if let Err(Rejection::InvalidName { reason, .. }) =
                    super::apply::check_name(index, "queue", q, limits.max_name_bytes)
                {
                    return Err(invalid(index, e, "metadata.annotations.honk/queue", reason));
                }
            }
            if e.depends_on.len() as u64 > u64::from(limits.max_depends_on) {
                return Err(Rejection::TooManyDependencies {
                    index,
                    count: e.depends_on.len() as u64,
                    limit: limits.max_depends_on.into(),
                });
            }
            for (i, d) in e.depends_on.iter().enumerate() {
                if let Err(reason) = check_ref(d) {
                    return Err(invalid(index, e, &format!("spec.dependsOn[{i}]"), reason));
                }
                if *d == e.entity_ref {
                    return Err(invalid(
                        index,
                        e,
                        &format!("spec.dependsOn[{i}]"),
                        "an entity cannot depend on itself".into(),
                    ));
                }
            }
        }
        let added = batch.keys().filter(|r| !self.core.catalog.contains_key(**r)).count();
        if self.core.catalog.len() + added > MAX_CATALOG_ENTITIES {
            return Err(Rejection::InvalidEntity {
                index: 0,
                entity: entities[0].entity_ref.clone(),
                field: "metadata.name".into(),
                reason: format!("the catalog is full ({MAX_CATALOG_ENTITIES} entities)"),
            });
        }
        for (index, e) in entities.iter().enumerate() {
            for (i, d) in e.depends_on.iter().enumerate() {
                if !batch.contains_key(d.as_str()) && !self.core.catalog.contains_key(d) {
                    return Err(invalid(
                        index,
                        e,
                        &format!("spec.dependsOn[{i}]"),
                        format!("{d} is neither in this batch nor in the catalog"),
                    ));
                }
            }
        }
        // The graph after the batch: the catalog's edges, replaced by the batch's.
        let edges = |r: &str| -> &[String] {
            match batch.get(r) {
                Some(&i) => &entities[i].depends_on,
                None => self.core.catalog.get(r).map_or(&[], |c| c.entity.depends_on.as_slice()),
            }
        };
        if let Some(cycle) = find_cycle(batch.keys().copied(), edges) {
            let index = batch.get(cycle[0].as_str()).copied().unwrap_or(0);
            return Err(invalid(
                index,
                &entities[index],
                "spec.dependsOn",
                format!("dependency cycle: {} -> {}", cycle.join(" -> "), cycle[0]),
            ));
        }
        Ok(())
    }

    // ----- run --------------------------------------------------------

    pub(super) fn run_plans(
        &mut self,
        refs: &[String],
        force: bool,
        default_queue: &str,
        priority: i32,
        cold: &mut dyn ColdSink,
    ) -> Response {
        if refs.is_empty() {
            return Response::Rejected(Rejection::EmptyBatch);
        }
        let mut requested: BTreeSet<&str> = BTreeSet::new();
        for r in refs {
            match self.core.catalog.get(r.as_str()) {
                None => return Response::Rejected(Rejection::UnknownEntity(r.clone())),
                Some(c) if !c.entity.is_plan => {
                    return Response::Rejected(Rejection::InvalidEntity {
                        index: 0,
                        entity: r.clone(),
                        field: "spec.type".into(),
                        reason: "not a migration plan (a Component with spec.type: migration-plan)".into(),
                    })
                }
                Some(_) => {
                    requested.insert(r.as_str());
                }
            }
        }
        let order: Vec<String> = self.plans_in_dependency_order(&requested).into_iter().map(String::from).collect();
        // Decide each plan's run, dependencies first.
        let mut generations: BTreeMap<String, u64> = BTreeMap::new();
        let mut new_runs: BTreeSet<String> = BTreeSet::new();
        let mut tasks: Vec<NewTask> = Vec::new();
        // (plan, its existing run if not enqueued now, asked for by name)
        let mut answer: Vec<Answer> = Vec::new();
        for r in &order {
            let Some(entry) = self.core.catalog.get(r) else { continue };
            let state = self.run_state(entry);
            let asked = requested.contains(r.as_str());
            let rerun = (asked && force)
                || matches!(state, RunState::Never)
                || (asked && matches!(state, RunState::Forgotten))
                || matches!(state, RunState::Live(_, TaskStatus::Dead | TaskStatus::Cancelled));
            if !rerun {
                generations.insert(r.clone(), entry.generation);
                if let RunState::Live(id, status) = state {
                    answer.push((r.clone(), Some((id, status)), asked));
                }
                continue;
            }
            let generation = entry.generation + 1;
            generations.insert(r.clone(), generation);
            new_runs.insert(r.clone());
            let mut depends_on = Vec::new();
            for d in &entry.entity.depends_on {
                let Some(dep) = self.core.catalog.get(d) else { continue };
                if !dep.entity.is_plan {
                    continue; // a plain entity: satisfied by being in the catalog
                }
                if new_runs.contains(d) {
                    depends_on.push(TaskRef::Key(run_key(d, generations.get(d).copied().unwrap_or(1))));
                } else if let RunState::Live(..) = self.run_state(dep) {
                    depends_on.push(TaskRef::Key(dep.run_key(dep.generation)));
                }
                // Forgotten: it ended long ago; nothing to wait for.
            }
            let queue = entry.entity.queue.clone().unwrap_or_else(|| default_queue.to_string());
            tasks.push(NewTask {
                queue,
                kind: MIGRATION_KIND.into(),
                payload: format!("{{\"entity_ref\":\"{r}\",\"generation\":{generation}}}"),
                priority,
                max_attempts: None,
                delay_ms: 0,
                idempotency_key: Some(run_key(r, generation)),
                depends_on,
            });
            answer.push((r.clone(), None, asked));
        }
        let enqueued = if tasks.is_empty() {
            Vec::new()
        } else {
            match self.enqueue(&tasks, cold) {
                Response::Enqueued(e) => e,
                other => return other,
            }
        };
        let mut enqueued = enqueued.into_iter();
        let mut runs = Vec::with_capacity(answer.len());
        for (r, existing, asked) in answer {
            let generation = generations.get(&r).copied().unwrap_or(0);
            let (task, status, created) = match existing {
                Some((id, status)) => (id, status, false),
                None => match enqueued.next() {
                    Some(e) => (e.id, e.status, e.created),
                    None => continue,
                },
            };
            if created {
                if let Some(entry) = self.core.catalog.get_mut(&r) {
                    entry.generation = generation;
                }
            }
            runs.push(PlanRun { entity_ref: r, generation, task, created, status, requested: asked });
        }
        Response::PlansRun(runs)
    }

    /// The requested plans and the plans they depend on (transitively),
    /// each after its dependencies; plain entities are left out.
    fn plans_in_dependency_order<'a>(&'a self, requested: &BTreeSet<&'a str>) -> Vec<&'a str> {
        let mut order: Vec<&str> = Vec::new();
        let mut done: BTreeSet<&str> = BTreeSet::new();
        for start in requested {
            if done.contains(start) {
                continue;
            }
            let mut stack: Vec<(&str, usize)> = vec![(start, 0)];
            done.insert(start);
            while let Some((node, next)) = stack.last_mut() {
                let deps = self.core.catalog.get(*node).map_or(&[][..], |c| c.entity.depends_on.as_slice());
                if let Some(d) = deps.get(*next) {
                    *next += 1;
                    if let Some((k, c)) = self.core.catalog.get_key_value(d.as_str()) {
                        if c.entity.is_plan && done.insert(k.as_str()) {
                            stack.push((k.as_str(), 0));
                        }
                    }
                } else {
                    order.push(node);
                    stack.pop();
                }
            }
        }
        order
    }

    fn run_state(&self, entry: &CatalogEntry) -> RunState {
        if entry.generation == 0 {
            return RunState::Never;
        }
        match self.task_by_key(&entry.run_key(entry.generation)) {
            Some(t) => RunState::Live(t.id, t.status),
            None => RunState::Forgotten,
        }
    }

    // ----- queries ----------------------------------------------------

    /// An entity of the catalog by its canonical reference.
    pub fn catalog_entry(&self, entity_ref: &str) -> Option<&CatalogEntry> {
        self.core.catalog.get(entity_ref)
    }

    /// Every entity, by reference.
    pub fn catalog(&self) -> impl Iterator<Item = &CatalogEntry> {
        self.core.catalog.values()
    }

    pub fn catalog_len(&self) -> usize {
        self.core.catalog.len()
    }

    /// The task of a plan's newest run, while it is known.
    pub fn plan_task(&self, entry: &CatalogEntry) -> Option<&Task> {
        if entry.generation == 0 {
            return None;
        }
        self.task_by_key(&entry.run_key(entry.generation))
    }

    /// Plans whose owner is `owner` (when given) and that carry every label
    /// of `labels`, by reference.
    pub fn select_plans(&self, owner: Option<&str>, labels: &[(String, String)]) -> Vec<&CatalogEntry> {
        self.core
            .catalog
            .values()
            .filter(|c| c.entity.is_plan)
            .filter(|c| owner.is_none_or(|o| c.entity.owner.as_deref().is_some_and(|x| owner_matches(x, o))))
            .filter(|c| labels.iter().all(|(k, v)| c.entity.labels.get(k) == Some(v)))
            .collect()
    }
}

/// `team-infra` matches `group:default/team-infra` and the other way round,
/// as Backstage owners may be written either way.
fn owner_matches(owner: &str, wanted: &str) -> bool {
    let short = |s: &str| -> String {
        let s = s.rsplit_once(':').map_or(s, |(_, r)| r);
        let s = s.rsplit_once('/').map_or(s, |(_, r)| r);
        s.to_ascii_lowercase()
    };
    owner.eq_ignore_ascii_case(wanted) || short(owner) == short(wanted)
}

/// A canonical reference: `kind:namespace/name`, lower case, of letters,
/// digits and `-_.` (which is also what keeps the task payload, built here
/// without a JSON library, well-formed).
fn check_ref(r: &str) -> Result<(), String> {
    let bad = || format!("{r:?} is not a canonical entity reference (kind:namespace/name, lower case)");
    let (kind, rest) = r.split_once(':').ok_or_else(bad)?;
    let (ns, name) = rest.split_once('/').ok_or_else(bad)?;
    let part = |s: &str, extra: &[u8]| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || extra.contains(&b))
    };
    if part(kind, b"") && part(ns, b"-_.") && part(name, b"-_.") {
        Ok(())
    } else {
        Err(bad())
    }
}

/// A cycle reachable from `starts` in the graph `edges` describes.
fn find_cycle<'a>(
    starts: impl IntoIterator<Item = &'a str>,
    edges: impl Fn(&str) -> &'a [String],
) -> Option<Vec<String>> {
    let mut done: BTreeSet<&str> = BTreeSet::new();
    for start in starts {
        if done.contains(start) {
            continue;
        }
        let mut stack: Vec<(&str, usize)> = vec![(start, 0)];
        let mut active: BTreeSet<&str> = [start].into();
        while let Some((node, next)) = stack.last_mut() {
            let out = edges(node);
            if let Some(d) = out.get(*next) {
                *next += 1;
                let d = d.as_str();
                if active.contains(d) {
                    let pos = stack.iter().position(|(n, _)| *n == d).unwrap_or(0);
                    return Some(stack[pos..].iter().map(|(n, _)| n.to_string()).collect());
                }
                if !done.contains(d) {
                    active.insert(d);
                    stack.push((d, 0));
                }
            } else {
                active.remove(*node);
                done.insert(node);
                stack.pop();
            }
        }
    }
    None
}
