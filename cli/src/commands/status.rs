//! `skein status`: every task as one row per dataset, with counts.
//!
//! The task list carries no payloads, and the dataset's name is in the
//! payload, so the payloads are fetched task by task (a few requests at a
//! time) unless the list already has them or they are empty.

use std::collections::HashMap;

use serde_json::{json, Value};
use skein_raft::fsm::Task;
use tokio::task::JoinSet;

use super::tasks::fetch_pages;
use super::{typed, Ctx};
use crate::args::{Output, StatusArgs};
use crate::client::ClientError;
use crate::render::{self, StatusRow};

/// Tasks per page when listing.
const PAGE: u32 = 1000;
/// Payload requests in flight at once.
const PARALLEL: usize = 16;
/// A payload this small (`{}`) cannot name a dataset: not worth a request.
const EMPTY_PAYLOAD_BYTES: u32 = 2;

pub async fn run(ctx: &mut Ctx<'_>, args: StatusArgs) -> anyhow::Result<()> {
    let (listed, _) = fetch_pages(ctx, args.queue.as_deref(), None, Some(PAGE), None, true).await?;
    let mut tasks: Vec<(Task, Option<Value>)> = Vec::with_capacity(listed.len());
    for mut value in listed {
        // A node may include the payload in the list; use it when it does.
        let payload = value.as_object_mut().and_then(|o| o.remove("payload"));
        tasks.push((typed(value, "tasks list")?, payload));
    }
    let wanted: Vec<u64> = tasks
        .iter()
        .filter(|(t, p)| p.is_none() && t.payload_bytes > EMPTY_PAYLOAD_BYTES)
        .map(|(t, _)| t.id.0)
        .collect();
    let mut payloads = fetch_payloads(ctx, wanted).await?;
    let rows: Vec<StatusRow> = tasks
        .iter_mut()
        .map(|(t, p)| {
            let payload = p.take().or_else(|| payloads.remove(&t.id.0));
            render::status_row(t, payload.as_ref())
        })
        .collect();
    match ctx.output {
        Output::Json => ctx.json(&json!({ "tasks": rows, "counts": render::status_counts(&rows) })),
        Output::Table => ctx.line(&render::status(&rows)),
    }
}

/// Fetches the payloads of `ids`, [`PARALLEL`] requests at a time. A task
/// that is gone by now (retention) simply has no payload.
async fn fetch_payloads(ctx: &Ctx<'_>, ids: Vec<u64>) -> anyhow::Result<HashMap<u64, Value>> {
    let mut out = HashMap::with_capacity(ids.len());
    let mut ids = ids.into_iter();
    let mut running = JoinSet::new();
    loop {
        while running.len() < PARALLEL {
            let Some(id) = ids.next() else { break };
            let client = ctx.client.clone();
            running.spawn(async move { (id, client.get(&format!("/api/v1/tasks/{id}"), &[]).await) });
        }
        let Some(done) = running.join_next().await else { break };
        match done? {
            (id, Ok(mut detail)) => {
                if let Some(payload) = detail.as_object_mut().and_then(|o| o.remove("payload")) {
                    out.insert(id, payload);
                }
            }
            (_, Err(ClientError::Api { status: 404, .. })) => {}
            (_, Err(e)) => return Err(e.into()),
        }
    }
    Ok(out)
}
