//! What the tests assert about tasks, shared by the test files: a queue
//! that has settled, every acknowledged task succeeded, and a history that
//! shows exactly one success under the lease that was current.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use futures::StreamExt;
use skein_raft::api::TaskDetail;
use skein_raft::fsm::{Event, EventKind, Task, TaskStatus};
/// The tests' running commentary (one clock with the harness's own lines).
pub use skein_testkit::say;
use skein_testkit::{wait_for, Api};

/// Waits until `queue` has no task pending, blocked or leased, as the node
/// at `addr` sees it; fails at once if a task went `dead` or `cancelled`
/// and `all_succeed`. Returns the counts.
pub async fn wait_settled(
    api: &Api,
    addr: &str,
    queue: &str,
    all_succeed: bool,
    timeout: Duration,
) -> anyhow::Result<BTreeMap<TaskStatus, u64>> {
    let outcome = wait_for(timeout, &format!("queue {queue:?} to settle on {addr}"), async || {
        let counts = api.counts(addr, queue).await?;
        let failed = counts[&TaskStatus::Dead] + counts[&TaskStatus::Cancelled];
        if all_succeed && failed > 0 {
            return Ok(Some(Err(counts)));
        }
        let open = counts[&TaskStatus::Pending] + counts[&TaskStatus::Blocked] + counts[&TaskStatus::Leased];
        if open > 0 {
            bail!("still open: {counts:?}");
        }
        Ok(Some(Ok(counts)))
    })
    .await?;
    match outcome {
        Ok(counts) => Ok(counts),
        Err(counts) => {
            let dead = api.tasks(addr, Some(queue), Some(TaskStatus::Dead)).await.unwrap_or_default();
            let errors: Vec<String> =
                dead.iter().take(5).map(|t| format!("task {}: {:?}", t.id, t.last_error)).collect();
            bail!("queue {queue:?} has tasks that did not succeed: {counts:?}; e.g. {errors:?}")
        }
    }
}

/// Checks that every id in `acked` is a task of `tasks`, and that every
/// task of `tasks` succeeded.
pub fn all_succeeded(tasks: &[Task], acked: &[u64]) -> anyhow::Result<()> {
    let by_id: BTreeMap<u64, &Task> = tasks.iter().map(|t| (t.id.0, t)).collect();
    let missing: Vec<u64> = acked.iter().copied().filter(|id| !by_id.contains_key(id)).collect();
    ensure!(
        missing.is_empty(),
        "{} acknowledged tasks are unknown to the cluster: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    let not_ok: Vec<String> = tasks
        .iter()
        .filter(|t| t.status != TaskStatus::Succeeded)
        .take(20)
        .map(|t| format!("{}={} ({:?})", t.id, t.status, t.last_error))
        .collect();
    ensure!(not_ok.is_empty(), "tasks that did not succeed: {not_ok:?}");
    Ok(())
}

/// Fetches the details of `ids`, spread over the nodes at `addrs`, 16 at a time.
pub async fn details(api: &Api, addrs: &[String], ids: &[u64]) -> anyhow::Result<Vec<TaskDetail>> {
    ensure!(!addrs.is_empty(), "no node to ask");
    let results: Vec<anyhow::Result<TaskDetail>> = futures::stream::iter(ids.iter().enumerate().map(|(i, &id)| {
        let addr = addrs[i % addrs.len()].clone();
        async move { api.task(&addr, id).await.with_context(|| format!("task {id} from {addr}")) }
    }))
    .buffer_unordered(16)
    .collect()
    .await;
    results.into_iter().collect()
}

/// The history of a task that succeeded: exactly one `succeeded` event, and
/// it carries the token and the node of the last lease before it (the
/// success was fenced by the lease that was current). Returns that lease.
pub fn succeeded_once(d: &TaskDetail) -> anyhow::Result<&Event> {
    let id = d.task.id;
    ensure!(d.task.status == TaskStatus::Succeeded, "task {id} is {}, not succeeded", d.task.status);
    let wins: Vec<usize> =
        d.history.iter().enumerate().filter(|(_, e)| matches!(e.what, EventKind::Succeeded)).map(|(i, _)| i).collect();
    ensure!(wins.len() == 1, "task {id} has {} succeeded events: {:?}", wins.len(), d.history);
    let win = &d.history[wins[0]];
    let lease = d.history[..wins[0]]
        .iter()
        .rev()
        .find(|e| matches!(e.what, EventKind::Leased { .. }))
        .with_context(|| format!("task {id} succeeded without a lease: {:?}", d.history))?;
    ensure!(
        lease.token == win.token && lease.node == win.node,
        "task {id} succeeded under token {:?} of node {:?}, but its lease was token {:?} of node {:?}",
        win.token,
        win.node,
        lease.token,
        lease.node
    );
    Ok(lease)
}

/// Nodes that leased tasks, with how many leases each, over `details`.
pub fn leases_by_node(details: &[TaskDetail]) -> BTreeMap<u64, usize> {
    let mut out = BTreeMap::new();
    for d in details {
        for e in &d.history {
            if let (EventKind::Leased { .. }, Some(node)) = (&e.what, e.node) {
                *out.entry(node).or_insert(0) += 1;
            }
        }
    }
    out
}

/// Waits until every node at `addrs` reports the same task counts for every
/// queue (followers have applied what the leader has); returns them.
pub async fn wait_replicas_agree(
    api: &Api,
    addrs: &[String],
    timeout: Duration,
) -> anyhow::Result<BTreeMap<String, BTreeMap<TaskStatus, u64>>> {
    wait_for(timeout, "every node to report the same queue counts", async || {
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut first = None;
        for addr in addrs {
            let counts = api.all_counts(addr).await?;
            seen.insert(format!("{counts:?}"));
            first.get_or_insert(counts);
        }
        if seen.len() > 1 {
            bail!("the nodes differ: {seen:?}");
        }
        Ok(first)
    })
    .await
}
