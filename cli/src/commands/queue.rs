//! `skein queue list|pause|resume|set|redrive`.

use serde_json::Value;
use skein_raft::api::{QueueList, RedriveReply};
use skein_raft::fsm::QueuePatch;

use super::Ctx;
use crate::args::{Output, QueueCommand, QueueSetArgs};
use crate::client::path_segment;
use crate::render;

pub async fn run(ctx: &mut Ctx<'_>, cmd: QueueCommand) -> anyhow::Result<()> {
    match cmd {
        QueueCommand::List => {
            let list = ctx.client.get("/api/v1/queues", &[]).await?;
            ctx.show(list, "queue list", |l: &QueueList| render::queues(&l.queues))
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
            let queue = args.queue.clone();
            let body = patch_body(args);
            let changes = describe(&body);
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

/// The `QueuePatch` JSON, with only the settings given.
pub fn patch_body(a: QueueSetArgs) -> Value {
    let patch = QueuePatch {
        lease_ms: a.lease_ms,
        max_attempts: a.max_attempts,
        backoff_base_ms: a.backoff_base_ms,
        backoff_cap_ms: a.backoff_cap_ms,
        concurrency: a.concurrency,
        max_depth: a.max_depth,
        retention_ms: a.retention_ms,
        stuck_expiries: a.stuck_expiries,
        stuck_run_ms: a.stuck_run_ms,
        stuck_factor: a.stuck_factor,
        stuck_silence_ms: a.stuck_silence_ms,
    };
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
        let body = patch_body(args);
        assert_eq!(body, json!({"concurrency": 4, "retention_ms": 0}));
        assert_eq!(describe(&body), "concurrency=4, retention_ms=0");
        // The node reads it back as the same patch.
        let patch: QueuePatch = serde_json::from_value(body).expect("a QueuePatch");
        assert_eq!(patch, QueuePatch { concurrency: Some(4), retention_ms: Some(0), ..Default::default() });
    }
}
