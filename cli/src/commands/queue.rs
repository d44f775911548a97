//! `skein queue list|show|pause|resume|set|redrive`.

use serde_json::Value;
use skein_raft::api::{QueueList, RedriveReply};
use skein_raft::fsm::QueuePatch;

use super::Ctx;
use crate::args::{Output, QueueCommand};
use crate::client::path_segment;
use crate::render;

pub async fn run(ctx: &mut Ctx<'_>, cmd: QueueCommand) -> anyhow::Result<()> {
    match cmd {
        QueueCommand::List => {
            let list = ctx.client.get("/api/v1/queues", &[]).await?;
            ctx.show(list, "queue list", |l: &QueueList| render::queues(&l.queues))
        }
        QueueCommand::Show { queue } => {
            let list = ctx.client.get("/api/v1/queues", &[]).await?;
            let Some(one) = find_queue(list, &queue) else {
                anyhow::bail!(
                    "no queue named {queue:?} (a queue is made by its first enqueue or `skein queue set`; \
                     `skein queue list` lists them)"
                );
            };
            ctx.show(one, "queue show", render::queue_detail)
        }
        QueueCommand::Pause { queue } => {
            let reply = ctx.client.post(&format!("/api/v1/queues/{}/pause", path_segment(&queue)), None).await?;
            done(
                ctx,
                reply,
                &format!("queue {queue:?} paused: running tasks finish, no new ones start until `skein queue resume {queue}`"),
            )
        }
        QueueCommand::Resume { queue } => {
            let reply = ctx.client.post(&format!("/api/v1/queues/{}/resume", path_segment(&queue)), None).await?;
            done(ctx, reply, &format!("queue {queue:?} resumed"))
        }
        QueueCommand::Redrive { queue, max } => {
            let path = format!("/api/v1/queues/{}/redrive", path_segment(&queue));
            let reply = ctx.client.post_query(&path, &[("max", max.to_string())]).await?;
            ctx.show(reply, "queue redrive", |r: &RedriveReply| render::redrive(&queue, r))
        }
        QueueCommand::Set(args) => {
            let body = patch_body(&args.patch);
            let changes = describe(&body);
            let queue = args.queue;
            let reply = ctx.client.patch(&format!("/api/v1/queues/{}", path_segment(&queue)), body).await?;
            done(ctx, reply, &format!("queue {queue:?} updated: {changes}"))
        }
    }
}

fn done(ctx: &mut Ctx<'_>, reply: Value, message: &str) -> anyhow::Result<()> {
    match ctx.output {
        Output::Json => ctx.json(&reply),
        Output::Table => ctx.line(message),
    }
}

/// The queue named `name` in the answer to `GET /api/v1/queues`, as the
/// node sent it (so `-o json` prints the server's JSON).
fn find_queue(list: Value, name: &str) -> Option<Value> {
    let Value::Object(mut list) = list else { return None };
    let Value::Array(queues) = list.remove("queues")? else { return None };
    queues.into_iter().find(|q| q.get("name").and_then(Value::as_str) == Some(name))
}

/// The `QueuePatch` JSON, with only the settings given.
pub fn patch_body(patch: &QueuePatch) -> Value {
    let mut value = serde_json::to_value(patch).unwrap_or_default();
    if let Some(fields) = value.as_object_mut() {
        fields.retain(|_, v| !v.is_null());
    }
    value
}

/// `concurrency=4, lease_ms=60000`.
fn describe(body: &Value) -> String {
    body.as_object()
        .map(|o| o.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use serde_json::json;

    use super::*;
    use crate::args::{Cli, Command};

    #[test]
    fn patch_carries_only_the_given_settings() {
        let cli = Cli::try_parse_from(["skein", "queue", "set", "q", "--concurrency", "4", "--retention-ms", "0"])
            .expect("parses");
        let Command::Queue(QueueCommand::Set(args)) = cli.command else { panic!("not set") };
        let body = patch_body(&args.patch);
        assert_eq!(body, json!({"concurrency": 4, "retention_ms": 0}));
        assert_eq!(describe(&body), "concurrency=4, retention_ms=0");
        // The node reads it back as the same patch.
        let patch: QueuePatch = serde_json::from_value(body).expect("a QueuePatch");
        assert_eq!(patch, QueuePatch { concurrency: Some(4), retention_ms: Some(0), ..Default::default() });
    }

    #[test]
    fn finds_one_queue_in_the_list() {
        let list = json!({"queues": [{"name": "a", "paused": false}, {"name": "b", "paused": true}]});
        assert_eq!(find_queue(list.clone(), "b"), Some(json!({"name": "b", "paused": true})));
        assert_eq!(find_queue(list, "c"), None);
        assert_eq!(find_queue(json!({"nope": 1}), "a"), None);
    }
}
