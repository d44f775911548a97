//! `skein token`, `skein auth`, `skein audit`.

use serde_json::json;
use skein_raft::api::{AuditList, AuthStatus, TokenCreated, TokenList};

use super::{now_ms, typed, Ctx};
use crate::args::{AuditArgs, AuthCommand, Output, TokenCommand};
use crate::render;

pub async fn token(ctx: &mut Ctx<'_>, cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create { role, owners, name, expires } => {
            let body = json!({"role": role, "owners": owners, "name": name, "expires_in_ms": expires});
            let reply = ctx.client.post("/api/v1/tokens", Some(body)).await?;
            created(ctx, reply)
        }
        TokenCommand::Rotate { id } => {
            let reply = ctx.client.post(&format!("/api/v1/tokens/{id}/rotate"), None).await?;
            created(ctx, reply)
        }
        TokenCommand::Revoke { id } => {
            let reply = ctx.client.delete(&format!("/api/v1/tokens/{id}")).await?;
            match ctx.output {
                Output::Json => ctx.json(&reply),
                Output::Table => ctx.line(&format!("token {id} revoked")),
            }
        }
        TokenCommand::List => {
            let reply = ctx.client.get("/api/v1/tokens", &[]).await?;
            ctx.show(reply, "token list", |l: &TokenList| render::tokens(&l.tokens, now_ms()))
        }
        TokenCommand::Generate => ctx.line(&skein_tls::token::issue().text),
    }
}

/// Prints a new token: the text alone on stdout's first line (so that
/// `skein token create ... | head -1 > file` works), details after.
fn created(ctx: &mut Ctx<'_>, reply: serde_json::Value) -> anyhow::Result<()> {
    if ctx.output == Output::Json {
        return ctx.json(&reply);
    }
    let t: TokenCreated = typed(reply, "token create")?;
    ctx.line(&t.token)?;
    let owners = if t.info.owners.is_empty() { "any owner".to_string() } else { t.info.owners.join(", ") };
    ctx.line(&format!(
        "# token {} ({}), role {}, acting for {owners}; shown once: keep it now (e.g. export SKEIN_TOKEN=...)",
        t.info.name, t.info.id, t.info.role
    ))
}

pub async fn auth(ctx: &mut Ctx<'_>, cmd: AuthCommand) -> anyhow::Result<()> {
    let reply = match cmd {
        AuthCommand::Status => ctx.client.get("/api/v1/auth", &[]).await?,
        AuthCommand::Enforce => ctx.client.post("/api/v1/auth", Some(json!({"mode": "enforce"}))).await?,
        AuthCommand::Warn => ctx.client.post("/api/v1/auth", Some(json!({"mode": "warn"}))).await?,
        AuthCommand::Retention { keep } => {
            ctx.client.post("/api/v1/auth", Some(json!({"audit_retention_ms": keep}))).await?
        }
    };
    ctx.show(reply, "auth status", |s: &AuthStatus| {
        format!(
            "mode: {}{}\nformat: {}\ntokens: {}\naudit retention: {}",
            s.mode,
            if s.mode == "warn" { " (calls without a token are served; skein auth enforce refuses them)" } else { "" },
            s.format,
            s.tokens,
            render::fmt_duration(s.audit_retention_ms)
        )
    })
}

pub async fn audit(ctx: &mut Ctx<'_>, a: AuditArgs) -> anyhow::Result<()> {
    let mut query = vec![("limit", a.limit.to_string())];
    if let Some(since) = a.since {
        query.push(("since_ms", now_ms().saturating_sub(since).to_string()));
    }
    if let Some(p) = a.principal {
        query.push(("principal", p));
    }
    let reply = ctx.client.get("/api/v1/audit", &query).await?;
    ctx.show(reply, "audit", |l: &AuditList| render::audit(&l.records))
}
