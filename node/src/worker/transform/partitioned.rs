//! A partitioned plan's run: one dataset migrated by the whole fleet.
//!
//! `skein plan run` enqueues one task per run, as for any plan. For a
//! partitioned plan that task is the **planner**: it lists the partitioned
//! source, and enqueues one **partition** task per partition and one
//! **commit** task that depends on all of them (through **barrier** tasks
//! past `max_depends_on` partitions). Every one is an ordinary `migration`
//! task: leased, fenced, retried with backoff and dead-lettered like any
//! other, spread over the fleet by the usual leasing.
//!
//! - A partition stages its output under its own lease's token and
//!   reports the files in its result. The completion is fenced by the state
//!   machine, so the result recorded is that of the attempt that held the
//!   lease; a stale attempt's files are never referenced.
//! - The commit reads the partitions' results from the replicated store and
//!   publishes exactly those outputs as one version, under its own lease
//!   (confirmed right before it publishes) and the target's token order.
//! - The planner enqueues with `EnqueueChildren`, applied only while its
//!   lease is live (a stale planner adds nothing), under idempotency keys
//!   derived from the run (`plan:<ref>#<generation>/part-<i>`, `…/commit`):
//!   a planner retried after a crash gets the tasks that exist, so the
//!   commit publishes the partition set of the first enqueue, whatever a
//!   later listing says.
//!
//! Keys and the read side are in `views::runs`.

use serde_json::json;
use skein_migrate::{Attempt, MigrateError, Options, Partition, PartitionOutput};
use skein_raft::fsm::catalog::run_key;
use skein_raft::fsm::{Command, NewTask, Rejection, Response, TaskRef, TaskStatus};
use skein_transport::LeasedTask;
use tracing::info;

use crate::cluster::host::Host;
use crate::views::runs::{barrier_key, commit_key, partition_key};

/// One attempt of a migration task, as the transforms of a partitioned run
/// need it.
pub(super) struct RunOf<'a> {
    pub host: &'a Host,
    pub task: &'a LeasedTask,
    pub entity_ref: &'a str,
    pub generation: u64,
    pub spec: &'a skein_plan::MigrationSpec,
    pub attempt: Attempt,
    pub opts: &'a Options,
}

/// Plans the run: lists the partitioned source, enqueues the partition
/// tasks, barriers and commit; its result names the commit task.
pub(super) async fn plan(run: &RunOf<'_>) -> Result<serde_json::Value, MigrateError> {
    let host = run.host;
    let info = host
        .run_info(run.task.grant.task)
        .await
        .map_err(|e| MigrateError::Storage(format!("reading the planner's task: {e}")))?;
    // The run's own key (`plan:<ref>#<generation>`); a task enqueued
    // without one (the seed's API) names its run by its id.
    let key = info.key.unwrap_or_else(|| format!("{}@task-{}", run_key(run.entity_ref, 0), run.task.grant.task));
    // A retried planner: the run exists already; keep it as it is.
    if let Some((total, commit)) = info.planned {
        return Ok(planned(run, total, commit));
    }
    let parts = skein_migrate::plan_partitions(run.spec, run.opts).await?;
    let (max_batch, max_deps, priority) =
        (info.max_batch.max(2) as usize, info.max_depends_on.max(2) as usize, info.priority);
    let queue = run.task.grant.queue.clone();
    let task = |payload: serde_json::Value, key: String, depends_on: Vec<TaskRef>| NewTask {
        queue: queue.clone(),
        kind: skein_raft::fsm::catalog::MIGRATION_KIND.into(),
        payload: payload.to_string(),
        priority,
        max_attempts: None,
        delay_ms: 0,
        idempotency_key: Some(key),
        depends_on,
    };
    let mut tasks: Vec<NewTask> = Vec::with_capacity(parts.len() + parts.len() / max_deps + 2);
    for p in &parts {
        let payload = json!({"entity_ref": run.entity_ref, "generation": run.generation, "partition": p});
        tasks.push(task(payload, partition_key(&key, p.index), Vec::new()));
    }
    let part_refs: Vec<TaskRef> = parts.iter().map(|p| TaskRef::Key(partition_key(&key, p.index))).collect();
    let commit_deps = if part_refs.len() <= max_deps {
        part_refs
    } else {
        let mut barriers = Vec::new();
        for (k, chunk) in part_refs.chunks(max_deps).enumerate() {
            let payload = json!({"entity_ref": run.entity_ref, "generation": run.generation, "barrier": k});
            tasks.push(task(payload, barrier_key(&key, k), chunk.to_vec()));
            barriers.push(TaskRef::Key(barrier_key(&key, k)));
        }
        barriers
    };
    if commit_deps.len() > max_deps {
        return Err(MigrateError::Plan(format!(
            "{} partitions are more than a run can hold ({} x {}): partition coarser (files: N or bytes: SIZE)",
            parts.len(),
            max_deps,
            max_deps
        )));
    }
    let payload =
        json!({"entity_ref": run.entity_ref, "generation": run.generation, "commit": {"partitions": parts.len()}});
    tasks.push(task(payload, commit_key(&key), commit_deps));
    // In batches the state machine takes; dependencies name keys of earlier
    // batches or of their own, and every key makes a retry idempotent.
    let mut commit_id = None;
    for batch in tasks.chunks(max_batch) {
        // Fenced by this planner's lease: a stale planner adds nothing.
        let command = Command::EnqueueChildren {
            parent: run.task.grant.task,
            token: run.task.grant.token,
            tasks: batch.to_vec(),
        };
        match host.write(command).await {
            Ok(Response::Enqueued(e)) => commit_id = e.last().map(|e| e.id.0),
            Ok(Response::Rejected(r)) => return Err(rejected(r)),
            Ok(other) => return Err(MigrateError::Storage(format!("enqueueing the partitions: {other:?}"))),
            Err(e @ skein_transport::NodeError::NeedsFormat { .. }) => {
                return Err(MigrateError::Plan(format!("a partitioned run needs stored format 4 (0.4.0): {e}")))
            }
            Err(e) => return Err(MigrateError::Storage(format!("enqueueing the partitions: {e}"))),
        }
    }
    info!(plan = %run.entity_ref, generation = run.generation, partitions = parts.len(), "partitioned run planned");
    Ok(planned(run, parts.len(), commit_id.unwrap_or(0)))
}

fn planned(run: &RunOf<'_>, partitions: usize, commit_task: u64) -> serde_json::Value {
    json!({
        "entity_ref": run.entity_ref,
        "generation": run.generation,
        "planned": {"partitions": partitions, "commit_task": commit_task},
    })
}

fn rejected(r: Rejection) -> MigrateError {
    match r {
        // Too big or too many: the plan must partition differently.
        Rejection::PayloadTooLarge { .. } | Rejection::BatchTooLarge { .. } | Rejection::QueueFull { .. } => {
            MigrateError::Plan(format!("enqueueing the partitions was refused: {r}"))
        }
        // The lease moved on: another attempt plans the run.
        Rejection::StaleToken { .. } => MigrateError::Fenced(format!("enqueueing the partitions: {r}")),
        other => MigrateError::Storage(format!("enqueueing the partitions was refused: {other}")),
    }
}

/// Runs one partition: stages its output under this attempt's token; the
/// result (recorded through the fenced completion) names the files.
pub(super) async fn run_partition(run: &RunOf<'_>, part: &Partition) -> Result<serde_json::Value, MigrateError> {
    let out = skein_migrate::run_partition(run.spec, run.generation, part, run.attempt, run.opts).await?;
    Ok(json!({"entity_ref": run.entity_ref, "generation": run.generation, "partition": out}))
}

/// Publishes the run: every partition's recorded output, as one version.
pub(super) async fn commit(run: &RunOf<'_>) -> Result<serde_json::Value, MigrateError> {
    let results = run
        .host
        .partition_results(run.task.grant.task)
        .await
        .map_err(|e| MigrateError::Storage(format!("reading the partitions' results: {e}")))?;
    let mut outputs: Vec<PartitionOutput> = Vec::with_capacity(results.len());
    for r in results {
        let id = r.task;
        if r.status != TaskStatus::Succeeded {
            return Err(MigrateError::Storage(format!("partition task {id} is {} here, not succeeded", r.status)));
        }
        let text =
            r.result.ok_or_else(|| MigrateError::Storage(format!("partition task {id} has no result here yet")))?;
        #[derive(serde::Deserialize)]
        struct Done {
            partition: PartitionOutput,
        }
        let done: Done = serde_json::from_str(&text).map_err(|e| {
            MigrateError::Plan(format!("partition task {id}'s result is not a partition's output: {e}"))
        })?;
        outputs.push(done.partition);
    }
    outputs.sort_by_key(|o| o.index);
    let report = skein_migrate::commit(run.spec, run.generation, &outputs, run.attempt, run.opts).await?;
    info!(plan = %run.entity_ref, generation = run.generation, partitions = outputs.len(), rows = report.rows_written, target = %report.target, "partitioned run published");
    Ok(json!({
        "entity_ref": run.entity_ref,
        "generation": run.generation,
        "partitions": outputs.len(),
        "migration": report,
    }))
}
