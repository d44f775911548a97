//! `skein tasks list|show|cancel|retry`.

use anyhow::bail;
use serde_json::{json, Value};
use skein_raft::api::{TaskDetail, TaskList};
use skein_raft::fsm::TaskStatus;

use super::{now_ms, typed, Ctx};
use crate::args::{ListArgs, Output, TasksCommand};
use crate::render;

pub async fn run(ctx: &mut Ctx<'_>, cmd: TasksCommand) -> anyhow::Result<()> {
    match cmd {
        TasksCommand::List(args) => list(ctx, args).await,
        TasksCommand::Show { id } => {
            let detail = ctx.client.get(&format!("/api/v1/tasks/{id}"), &[]).await?;
            let now = now_ms();
            ctx.show(detail, "tasks show", |d: &TaskDetail| render::task_detail(d, now))
        }
        TasksCommand::Cancel { id, reason } => {
            let body = reason.map(|r| json!({ "reason": r }));
            let reply = ctx.client.post(&format!("/api/v1/tasks/{id}/cancel"), body).await?;
            action(ctx, id, reply)
        }
        TasksCommand::Retry { id } => {
            let reply = ctx.client.post(&format!("/api/v1/tasks/{id}/retry"), None).await?;
            action(ctx, id, reply)
        }
    }
}

/// Prints the `{"id", "status"}` answer of cancel and retry.
fn action(ctx: &mut Ctx<'_>, id: u64, reply: Value) -> anyhow::Result<()> {
    if ctx.output == Output::Json {
        return ctx.json(&reply);
    }
    match reply.get("status").and_then(Value::as_str) {
        Some(status) => ctx.line(&format!("task {id} is now {status}")),
        None => ctx.line(&format!("task {id}: done")),
    }
}

/// The query of one page of `GET /api/v1/tasks`.
pub fn list_query(
    queue: Option<&str>,
    status: Option<TaskStatus>,
    limit: Option<u32>,
    cursor: Option<u64>,
) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    if let Some(queue) = queue {
        q.push(("queue", queue.to_string()));
    }
    if let Some(status) = status {
        q.push(("status", status.as_str().to_string()));
    }
    if let Some(limit) = limit {
        q.push(("limit", limit.to_string()));
    }
    if let Some(cursor) = cursor {
        q.push(("cursor", cursor.to_string()));
    }
    q
}

/// Fetches pages from `cursor` on, following `next_cursor` until the last
/// page when `all`; returns the tasks (as JSON) and the cursor left over.
pub async fn fetch_pages(
    ctx: &Ctx<'_>,
    queue: Option<&str>,
    status: Option<TaskStatus>,
    limit: Option<u32>,
    mut cursor: Option<u64>,
    all: bool,
) -> anyhow::Result<(Vec<Value>, Option<u64>)> {
    let mut tasks = Vec::new();
    loop {
        let page = ctx.client.get("/api/v1/tasks", &list_query(queue, status, limit, cursor)).await?;
        let next = page.get("next_cursor").and_then(Value::as_u64);
        if let Some(Value::Array(list)) = page.get("tasks") {
            tasks.extend(list.iter().cloned());
        } else {
            bail!("the node's answer to tasks list has no `tasks` (are the CLI and the node the same version?)");
        }
        match next {
            Some(n) if all => {
                if cursor.is_some_and(|c| n <= c) {
                    bail!("the node sent a cursor that does not advance ({n} after {cursor:?})");
                }
                cursor = Some(n);
            }
            _ => return Ok((tasks, next)),
        }
    }
}

async fn list(ctx: &mut Ctx<'_>, args: ListArgs) -> anyhow::Result<()> {
    let status = args.status.map(TaskStatus::from);
    let (tasks, next) = fetch_pages(ctx, args.queue.as_deref(), status, args.limit, args.cursor, args.all).await?;
    if ctx.output == Output::Json {
        return ctx.json(&json!({ "tasks": tasks, "next_cursor": next }));
    }
    let list: TaskList = typed(json!({ "tasks": tasks, "next_cursor": next }), "tasks list")?;
    ctx.line(&render::task_list(&list.tasks))?;
    if let Some(next) = list.next_cursor {
        ctx.line(&format!("\nmore tasks: add --cursor {next} for the next page, or --all for every page"))?;
    }
    Ok(())
}
