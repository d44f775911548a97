//! `skein scale`: how many workers the backlog needs (`GET /api/v1/scale`),
//! the figure an autoscaler reads.

use skein_raft::api::ScaleReply as Scale;

use super::Ctx;
use crate::args::ScaleArgs;
use crate::render::{finish, table};

pub async fn run(ctx: &mut Ctx<'_>, args: ScaleArgs) -> anyhow::Result<()> {
    let mut query: Vec<(&str, String)> = args.queue.map(|q| ("queue", q)).into_iter().collect();
    query.push(("per_worker", args.per_worker.to_string()));
    let answer = ctx.client.get("/api/v1/scale", &query).await?;
    ctx.show(answer, "scale", render)
}

/// One row: the queue (or `*`), the workers and what they are for.
pub fn render(s: &Scale) -> String {
    let mut t = table(&["QUEUE", "WORKERS", "PER WORKER", "TASKS", "RUNNING", "READY", "PAUSED"]);
    t.add_row(vec![
        s.queue.clone().unwrap_or_else(|| "*".to_string()),
        s.workers.to_string(),
        s.per_worker.to_string(),
        s.tasks.to_string(),
        s.running.to_string(),
        s.ready.to_string(),
        if s.paused { "yes" } else { "no" }.to_string(),
    ]);
    finish(t, &[1, 2, 3, 4, 5])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_row() {
        let s: Scale = serde_json::from_value(serde_json::json!({
            "queue": "etl", "tasks": 5, "per_worker": 2, "workers": 3, "ready": 15, "running": 5, "paused": false
        }))
        .expect("the node's answer");
        let text = render(&s);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("QUEUE") && lines[0].contains("WORKERS"), "{text}");
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(cells, ["etl", "3", "2", "5", "5", "15", "no"], "{text}");
        let all: Scale = serde_json::from_value(serde_json::json!({
            "queue": null, "tasks": 0, "per_worker": 1, "workers": 0, "ready": 0, "running": 0, "paused": false
        }))
        .expect("the node's answer");
        assert!(render(&all).lines().nth(1).is_some_and(|l| l.starts_with('*')));
    }
}
