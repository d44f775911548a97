//! The `migration` transform: runs a plan of the replicated catalog with
//! `skein-migrate`, on whichever node holds the task's lease.
//!
//! The payload names the plan: `{"entity_ref": "component:default/name"}`
//! (what `skein plan run` and the seed's `POST /api/honk/tasks` send). The
//! plan is read from this node's applied state; if this node has not seen
//! it yet (it may be a moment behind), it first catches up with the leader.
//!
//! Fencing: the output is staged under the lease's token and published only
//! after the lease is confirmed current through the state machine (a
//! heartbeat for this one lease, which renews it), under the target's
//! token-ordered publication record. A lease found revoked means another
//! attempt owns the task: this one reports nothing. See ARCHITECTURE.md,
//! "Fenced output".

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;
use skein_migrate::{Attempt, FenceFn, MigrateError, Options, Progress};
use skein_plan::{EntityRef, Plan};
use skein_raft::fsm::{HeldLease, Outcome};
use skein_transport::{HeartbeatRequest, LeasedTask};
use tracing::{info, warn};

use super::{TaskContext, Transform};
use crate::cluster::host::Host;

/// A `migration` task's payload. `generation` is set by `skein plan run`;
/// the last three mark the tasks of a partitioned run (see
/// [`super::partitioned`]), at most one of them.
#[derive(Deserialize)]
pub(super) struct Payload {
    pub entity_ref: String,
    #[serde(default)]
    pub generation: Option<u64>,
    #[serde(default)]
    pub partition: Option<skein_migrate::Partition>,
    #[serde(default)]
    pub commit: Option<serde_json::Value>,
    #[serde(default)]
    pub barrier: Option<u64>,
}

/// Marks the generation of a run enqueued without one (see `run`).
const HONK_RUN: u64 = 1 << 62;

/// Prefix of a fence error when the lease could not be confirmed (as
/// opposed to found revoked): the attempt then fails retryably.
const UNCONFIRMED: &str = "could not confirm the lease";

pub struct Migration;

impl Transform for Migration {
    fn kind(&self) -> &'static str {
        "migration"
    }

    fn run<'a>(&'a self, task: &'a LeasedTask, ctx: &'a TaskContext) -> BoxFuture<'a, Option<Outcome>> {
        Box::pin(run(task, ctx))
    }
}

async fn run(task: &LeasedTask, ctx: &TaskContext) -> Option<Outcome> {
    let g = &task.grant;
    let permanent = |error: String| Some(Outcome::Permanent { error });
    let p: Payload = match serde_json::from_str(&task.payload) {
        Ok(p) => p,
        Err(e) => {
            return permanent(format!("migration payload must be {{\"entity_ref\": \"component:default/name\"}}: {e}"))
        }
    };
    let entity_ref = match EntityRef::parse(&p.entity_ref, Some("component")) {
        Ok(r) => r.to_string(),
        Err(e) => return permanent(format!("migration payload: {e}")),
    };
    let Some(host) = ctx.host.clone() else {
        return permanent("this node has no plan catalog".into());
    };
    // The plan and the policy as the cluster applied them (a worker asks
    // the leader; a member reads its own state, catching up if need be).
    let (document, policy) = match host.plan(&entity_ref).await {
        Ok(read) => read,
        Err(e) => return Some(Outcome::Retryable { error: format!("reading plan {entity_ref}: {e}") }),
    };
    let Some(document) = document else {
        return permanent(format!("no plan {entity_ref} in the catalog (store it with `skein plan apply`)"));
    };
    let plan = match Plan::from_json(&document, "catalog") {
        Ok(p) => p,
        Err(e) => return permanent(format!("plan {entity_ref}: {e}")),
    };

    // Checked again before anything is opened (skein-migrate also resolves
    // links right before it opens).
    let policy = Arc::new(policy);
    if let Err(e) = crate::policy::check_migration(&policy, &plan.migration) {
        warn!(task_id = g.task.0, plan = %entity_ref, error = %e, "migration refused by the policy");
        return permanent(format!("refused: plan {entity_ref}: {e}"));
    }

    let attempt = Attempt { task: g.task.0, attempt: g.attempt, token: g.token.0 };
    let config = host.config();
    let mut opts = Options::new(config.data_dir.join("scratch")).with_policy(policy);
    opts.memory_limit = config.migrate_memory;
    opts.target_partitions = config.migrate_threads;
    let progress_ctx = ctx.clone();
    opts.progress = Some(Arc::new(move |p: &Progress| progress_ctx.report(p.fraction(), p.message())));
    opts.fence = Some(fence(host.clone(), task));
    let spec = &plan.migration;
    // A run without a generation (the seed's `POST /api/honk/tasks`) is
    // told apart by its task id, kept clear of real generations.
    let generation = p.generation.unwrap_or(g.task.0 | HONK_RUN);
    let run = super::partitioned::RunOf {
        host: &host,
        task,
        entity_ref: &entity_ref,
        generation,
        spec,
        attempt,
        opts: &opts,
    };
    let work = async {
        if p.barrier.is_some() {
            // A barrier only gathers partitions for the commit (see partitioned.rs).
            return Ok(serde_json::json!({"entity_ref": entity_ref, "generation": generation, "barrier": p.barrier}));
        }
        if let Some(part) = &p.partition {
            return super::partitioned::run_partition(&run, part).await;
        }
        if p.commit.is_some() {
            return super::partitioned::commit(&run).await;
        }
        if spec.partitioned().is_some() {
            return super::partitioned::plan(&run).await;
        }
        info!(task_id = g.task.0, attempt = g.attempt, token = g.token.0, plan = %entity_ref, "migration started");
        let report = skein_migrate::run(spec, attempt, &opts).await?;
        info!(task_id = g.task.0, token = g.token.0, plan = %entity_ref, rows = report.rows_written, target = %report.target, "migration published");
        Ok(serde_json::json!({"entity_ref": entity_ref, "migration": report}))
    };
    let result = tokio::select! {
        r = work => r,
        _ = ctx.cancel.cancelled() => return None,
    };
    outcome(g, result)
}

/// The task's outcome for an attempt's result.
fn outcome(g: &skein_raft::fsm::Granted, result: Result<serde_json::Value, MigrateError>) -> Option<Outcome> {
    match result {
        Ok(value) => Some(Outcome::Succeeded { result: value.to_string() }),
        Err(MigrateError::Fenced(why)) if why.starts_with(UNCONFIRMED) => Some(Outcome::Retryable { error: why }),
        Err(e) if e.is_fenced() => {
            // Another attempt owns the task now: report nothing (the
            // heartbeat drops this one when the leader says it is revoked).
            warn!(task_id = g.task.0, token = g.token.0, error = %e, "migration fenced; not publishing");
            None
        }
        Err(e) if e.is_retryable() => Some(Outcome::Retryable { error: e.to_string() }),
        Err(e) => Some(Outcome::Permanent { error: e.to_string() }),
    }
}

/// Confirms (and renews) this task's lease through the state machine.
fn fence(host: Host, task: &LeasedTask) -> FenceFn {
    let (id, token) = (task.grant.task, task.grant.token);
    Arc::new(move || {
        let host = host.clone();
        Box::pin(async move {
            let req = HeartbeatRequest {
                node: host.id(),
                slots: host.config().slots,
                held: vec![HeldLease { task: id, token, progress: None }],
            };
            match host.heartbeat(req).await {
                Ok(ack) if ack.renewed.iter().any(|(t, _)| *t == id) => Ok(()),
                Ok(_) => Err(format!("the lease of task {id} under token {token} is no longer current")),
                Err(e) => Err(format!("{UNCONFIRMED} of task {id} before publishing: {e}")),
            }
        })
    })
}
