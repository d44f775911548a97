//! `skein stuck`: tasks that look stuck, with every reason.

use super::Ctx;
use crate::args::StuckArgs;
use crate::render;
use skein_raft::api::StuckList;

pub async fn run(ctx: &mut Ctx<'_>, args: StuckArgs) -> anyhow::Result<()> {
    let query: Vec<(&str, String)> = args.queue.map(|q| ("queue", q)).into_iter().collect();
    let list = ctx.client.get("/api/v1/stuck", &query).await?;
    ctx.show(list, "stuck", |l: &StuckList| render::stuck(l))
}
