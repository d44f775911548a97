//! `skein enqueue`: one task, or `--count N` of them in batches (load).

use std::io::Read;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use serde_json::{json, Value};
use skein_raft::api::{EnqueueBody, EnqueueReply, TaskSpec};

use super::{typed, Ctx};
use crate::args::{EnqueueArgs, Output};
use crate::render;

/// Tasks per request with `--count` (the node accepts more; smaller
/// batches keep each Raft entry and each answer modest).
pub const BATCH: u64 = 1000;

const PATH: &str = "/api/v1/tasks";

pub async fn run(ctx: &mut Ctx<'_>, args: EnqueueArgs) -> anyhow::Result<()> {
    let payload = match (args.payload, &args.payload_file) {
        (Some(p), _) => Some(p),
        (None, Some(path)) => Some(read_payload(path)?),
        (None, None) => None,
    };
    let spec = TaskSpec {
        queue: args.queue,
        kind: args.kind,
        payload,
        priority: args.priority,
        max_attempts: args.max_attempts,
        delay_ms: args.delay_ms,
        idempotency_key: args.key,
        depends_on: args.depends_on,
        owner: args.owner,
    };
    if args.count == 1 {
        let body = serde_json::to_value(EnqueueBody::One(spec))?;
        let reply = ctx.client.post(PATH, Some(body)).await?;
        return ctx.show(reply, "enqueue", render::enqueued);
    }
    load(ctx, spec, args.count).await
}

/// Sends `count` copies of `spec` in batches of [`BATCH`], one after another.
async fn load(ctx: &mut Ctx<'_>, spec: TaskSpec, count: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut tasks: Vec<Value> = Vec::new();
    let (mut first, mut last) = (u64::MAX, 0);
    let mut sent = 0;
    while sent < count {
        let n = BATCH.min(count - sent);
        let body = serde_json::to_value(EnqueueBody::Batch { tasks: vec![spec.clone(); n as usize] })?;
        let reply = ctx
            .client
            .post(PATH, Some(body))
            .await
            .with_context(|| format!("after enqueueing {sent} of {count} tasks"))?;
        let batch: EnqueueReply = typed(reply.clone(), "enqueue")?;
        for t in &batch.tasks {
            first = first.min(t.id.0);
            last = last.max(t.id.0);
        }
        sent += n;
        if ctx.output == Output::Json {
            if let Some(Value::Array(list)) = reply.get("tasks") {
                tasks.extend(list.iter().cloned());
            }
        }
    }
    if ctx.output == Output::Json {
        return ctx.json(&json!({ "tasks": tasks }));
    }
    let secs = started.elapsed().as_secs_f64();
    let rate = if secs > 0.0 { sent as f64 / secs } else { f64::INFINITY };
    ctx.line(&format!(
        "enqueued {sent} tasks to queue {:?} in {secs:.2} s ({rate:.0} tasks/s), ids {first}..={last}",
        spec.queue
    ))
}

/// Reads a payload file (`-`: standard input) as JSON.
fn read_payload(path: &Path) -> anyhow::Result<Value> {
    let text = if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("reading the payload from standard input")?;
        s
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading the payload file {}", path.display()))?
    };
    serde_json::from_str(&text).with_context(|| format!("the payload in {} is not valid JSON", path.display()))
}
