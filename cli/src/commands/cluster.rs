//! `skein cluster status|drain|remove|finalize`.

use serde_json::Value;
use skein_raft::api::{ClusterStatus, FinalizeReply};

use super::{now_ms, Ctx};
use crate::args::{ClusterCommand, Output};
use crate::render;

pub async fn run(ctx: &mut Ctx<'_>, cmd: ClusterCommand) -> anyhow::Result<()> {
    match cmd {
        ClusterCommand::Status => {
            let status = ctx.client.get("/api/v1/cluster", &[]).await?;
            let now = now_ms();
            ctx.show(status, "cluster status", |c: &ClusterStatus| render::cluster(c, now))
        }
        ClusterCommand::Drain { id } => {
            let reply = ctx.client.post(&format!("/api/v1/cluster/nodes/{id}/drain"), None).await?;
            done(
                ctx,
                reply,
                &format!(
                    "node {id} is draining: it takes no new tasks and its running ones finish or are handed back.\n\
                     Watch `skein cluster status` until it holds no leases, then `skein cluster remove {id}`."
                ),
            )
        }
        ClusterCommand::Finalize => {
            let reply = ctx.client.post("/api/v1/cluster/finalize", None).await?;
            let r: FinalizeReply = serde_json::from_value(reply.clone())?;
            let message = if r.changed {
                format!(
                    "finalized: the cluster now writes stored format {}; older releases can no longer read its data",
                    r.format
                )
            } else {
                format!("already finalized: the cluster is at stored format {}", r.format)
            };
            done(ctx, reply, &message)
        }
        ClusterCommand::Remove { id } => {
            let reply = ctx.client.delete(&format!("/api/v1/cluster/nodes/{id}")).await?;
            done(ctx, reply, &format!("node {id} removed from the cluster's membership"))
        }
    }
}

fn done(ctx: &mut Ctx<'_>, reply: Value, message: &str) -> anyhow::Result<()> {
    match ctx.output {
        Output::Json => ctx.json(&reply),
        Output::Table => ctx.line(message),
    }
}
