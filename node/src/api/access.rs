//! Who may do what: tokens (`/api/v1/tokens`), the auth mode
//! (`/api/v1/auth`) and the audit trail (`/api/v1/audit`).

use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use skein_raft::api::{
    AuditEntry, AuditList, AuthBody, AuthStatus, CreateTokenBody, ErrorCode, TokenCreated, TokenInfo, TokenList,
};
use skein_raft::fsm::auth::{canonical_owner, hex_id};
use skein_raft::fsm::{Command, NewToken, Response};
use skein_transport::NodeError;

use crate::api::auth::Who;
use crate::api::errors::{done, parse_json, ApiError, ApiResult};
use crate::clock::now_ms;
use crate::cluster::app::SharedApp;
use skein_tls::token as tokens;

/// The most audit records one page holds.
const MAX_AUDIT_PAGE: usize = 10_000;

pub async fn create_token(
    State(app): State<SharedApp>,
    Extension(who): Extension<Who>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<TokenCreated>)> {
    let body: CreateTokenBody = parse_json(&body)?;
    let issued = tokens::issue();
    let name = body.name.unwrap_or_else(|| format!("{}-{}", body.role, &hex_id(issued.id)[..8]));
    let token = NewToken {
        id: issued.id,
        name,
        role: body.role,
        owners: body.owners.iter().map(|o| canonical_owner(o)).collect(),
        hash: issued.hash,
        expires_ms: body.expires_in_ms.map(|d| now_ms().saturating_add(d)),
    };
    expect_done(app.write_as(who.caller, Command::CreateToken { token }).await?)?;
    created(&app, issued.id, issued.text).await
}

pub async fn rotate_token(
    State(app): State<SharedApp>,
    Extension(who): Extension<Who>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<TokenCreated>)> {
    let old = parse_token_id(&id)?;
    let issued = tokens::issue();
    let new = NewToken {
        id: issued.id,
        name: String::new(),
        role: skein_raft::fsm::Role::Read,
        owners: Vec::new(),
        hash: issued.hash,
        expires_ms: None,
    };
    expect_done(app.write_as(who.caller, Command::RotateToken { old, new }).await?)?;
    created(&app, issued.id, issued.text).await
}

pub async fn revoke_token(
    State(app): State<SharedApp>,
    Extension(who): Extension<Who>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let id = parse_token_id(&id)?;
    done(app.write_as(who.caller, Command::RevokeToken { id }).await?)
}

pub async fn list_tokens(State(app): State<SharedApp>) -> Json<TokenList> {
    Json(TokenList { tokens: app.store.state().tokens().map(TokenInfo::from).collect() })
}

pub async fn auth_status(State(app): State<SharedApp>) -> Json<AuthStatus> {
    let state = app.store.state();
    Json(AuthStatus {
        mode: if state.auth_enforced() { "enforce" } else { "warn" }.into(),
        format: state.format(),
        tokens: state.tokens().count(),
        audit_retention_ms: state.audit_retention_ms(),
    })
}

pub async fn configure_auth(
    State(app): State<SharedApp>,
    Extension(who): Extension<Who>,
    body: Bytes,
) -> ApiResult<Json<AuthStatus>> {
    let body: AuthBody = parse_json(&body)?;
    let enforce = match body.mode.as_deref() {
        None => None,
        Some("enforce") => Some(true),
        Some("warn") => Some(false),
        Some(other) => {
            return Err(ApiError::new(ErrorCode::Invalid, format!("mode is enforce or warn, not {other:?}")))
        }
    };
    if enforce == Some(true) && app.store.state().tokens().next().is_none() {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "the cluster has no token yet: enforcing now would lock everyone out. Create an admin token first \
             (skein token create --role admin)",
        ));
    }
    let command = Command::ConfigureAuth { enforce, audit_retention_ms: body.audit_retention_ms };
    expect_done(app.write_as(who.caller, command).await?)?;
    // Answer with the state the leader applied, not this node's older one.
    app.catch_up().await?;
    Ok(auth_status(State(app)).await)
}

#[derive(Debug, Default, Deserialize)]
pub struct AuditParams {
    /// Records at or after this time (Unix ms).
    since_ms: Option<u64>,
    /// Only this principal's (a token's name, or `anonymous`).
    principal: Option<String>,
    /// Records after this sequence number (a previous page's `next`).
    after: Option<u64>,
    limit: Option<usize>,
}

pub async fn audit(State(app): State<SharedApp>, Query(p): Query<AuditParams>) -> ApiResult<Json<AuditList>> {
    let limit = p.limit.unwrap_or(1_000).clamp(1, MAX_AUDIT_PAGE);
    let since = p.since_ms.unwrap_or(0);
    let (from, _) = app.store.state().audit_range(since);
    let mut from = p.after.map_or(from, |a| from.max(a + 1));
    let mut records = Vec::new();
    let mut next = None;
    // Read in chunks, filtering, until the page is full or the log ends.
    'scan: loop {
        let chunk = app.store.audit(from, 1_000).map_err(|e| NodeError::Internal(e.to_string()))?;
        let Some(&(last, _)) = chunk.last() else { break };
        for (seq, record) in chunk {
            if record.at_ms < since || p.principal.as_deref().is_some_and(|who| who != record.principal) {
                continue;
            }
            if records.len() == limit {
                next = Some(seq - 1);
                break 'scan;
            }
            records.push(AuditEntry { seq, record });
        }
        from = last + 1;
    }
    Ok(Json(AuditList { records, next }))
}

/// The new token as this node's state has it (after catching up with the
/// leader, which applied it), and its text.
async fn created(app: &SharedApp, id: u64, text: String) -> ApiResult<(StatusCode, Json<TokenCreated>)> {
    app.catch_up().await?;
    let info = app
        .store
        .state()
        .token(id)
        .map(TokenInfo::from)
        .ok_or_else(|| NodeError::Internal("the token is not in this node's state yet".into()))?;
    Ok((StatusCode::CREATED, Json(TokenCreated { info, token: text })))
}

fn expect_done(r: Response) -> ApiResult<()> {
    match r {
        Response::Done => Ok(()),
        Response::Rejected(r) => Err(r.into()),
        other => Err(NodeError::Internal(format!("answered with {other:?}")).into()),
    }
}

fn parse_token_id(raw: &str) -> ApiResult<u64> {
    u64::from_str_radix(raw, 16)
        .ok()
        .filter(|_| raw.len() == 16)
        .ok_or_else(|| ApiError::new(ErrorCode::Invalid, format!("a token id is 16 hex digits, not {raw:?}")))
}
