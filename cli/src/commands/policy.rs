//! `skein exec`, `skein roots`, `skein policy`.

use serde_json::{json, Value};
use skein_raft::api::policy::PolicyView;

use super::Ctx;
use crate::policy_args::{ExecCommand, PolicyCommand, RootsCommand};
use crate::render;

pub async fn exec(ctx: &mut Ctx<'_>, cmd: ExecCommand) -> anyhow::Result<()> {
    let reply = match cmd {
        ExecCommand::Allow { program, args } => {
            ctx.client.post("/api/v1/policy/exec", Some(json!({"program": program, "args": args}))).await?
        }
        ExecCommand::Deny { program, args } => {
            ctx.client.post("/api/v1/policy/exec/deny", Some(json!({"program": program, "args": args}))).await?
        }
        ExecCommand::List => ctx.client.get("/api/v1/policy", &[]).await?,
    };
    show(ctx, reply, |p| render::exec_rules(p))
}

pub async fn roots(ctx: &mut Ctx<'_>, cmd: RootsCommand) -> anyhow::Result<()> {
    let reply = match cmd {
        RootsCommand::Allow { url, endpoint, region, credentials, allow_http } => {
            let body = json!({"url": url, "endpoint": endpoint, "region": region, "credentials": credentials,
                "allow_http": allow_http});
            ctx.client.post("/api/v1/policy/roots", Some(body)).await?
        }
        RootsCommand::Deny { url } => ctx.client.post("/api/v1/policy/roots/deny", Some(json!({"url": url}))).await?,
        RootsCommand::List => ctx.client.get("/api/v1/policy", &[]).await?,
    };
    show(ctx, reply, |p| render::data_roots(p))
}

pub async fn policy(ctx: &mut Ctx<'_>, cmd: PolicyCommand) -> anyhow::Result<()> {
    let reply = match cmd {
        PolicyCommand::Show => ctx.client.get("/api/v1/policy", &[]).await?,
        PolicyCommand::Enforce => ctx.client.post("/api/v1/policy", Some(json!({"mode": "enforce"}))).await?,
        PolicyCommand::Open => ctx.client.post("/api/v1/policy", Some(json!({"mode": "open"}))).await?,
    };
    show(ctx, reply, |p| format!("{}\n\n{}", render::exec_rules(p), render::data_roots(p)))
}

/// Prints the policy; its warnings go to stderr, whatever the output format.
fn show(ctx: &mut Ctx<'_>, reply: Value, table: impl FnOnce(&PolicyView) -> String) -> anyhow::Result<()> {
    if let Ok(view) = serde_json::from_value::<PolicyView>(reply.clone()) {
        for w in &view.warnings {
            eprintln!("warning: {w}");
        }
    }
    ctx.show(reply, "policy", table)
}
