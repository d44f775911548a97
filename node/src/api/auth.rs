//! Who is calling, and whether the route allows it: the bearer token (or the
//! dashboard's cookie) checked against the tokens of this node's applied
//! state, and the role each route needs.
//!
//! This check is the only one reads get, and the first one writes get: a
//! write also carries its token's id into the log
//! ([`skein_raft::fsm::Command::AsCaller`]), where the state machine checks
//! the token again at the entry's position, with the owners. So a token
//! revoked at log index `i` writes nothing after `i` on any node, and its
//! reads stop on each node as soon as that node applies `i` (followers in
//! contact with the leader apply within a heartbeat).

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use skein_raft::api::ErrorCode;
use skein_raft::fsm::{Caller, Role};
use tracing::{debug, warn};

use crate::api::errors::ApiError;
use crate::clock::now_ms;
use crate::cluster::app::SharedApp;
use skein_tls::token as tokens;

/// The dashboard's cookie: HttpOnly, SameSite=Strict (set by the sign-in of
/// [`super::dashboard`]).
pub const COOKIE: &str = "skein_token";

/// The caller of a request that passed [`require`]: handlers propose their
/// writes as it.
#[derive(Debug, Clone)]
pub struct Who {
    pub caller: Caller,
    /// The token's name, or `anonymous`.
    pub name: String,
    /// The token's owners (empty: any).
    pub owners: Vec<String>,
}

impl Who {
    fn anonymous() -> Who {
        Who { caller: Caller::Anonymous, name: "anonymous".into(), owners: Vec::new() }
    }
}

/// The token a request presents: `Authorization: Bearer`, else the cookie.
pub fn presented(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            return Some(token.trim());
        }
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE).and_then(|rest| rest.strip_prefix('=')))
}

/// Checks a request against the role its route needs.
pub fn authenticate(app: &SharedApp, headers: &HeaderMap, needed: Role) -> Result<Who, ApiError> {
    check(app, presented(headers), needed)
}

/// Checks the token presented (if any) against the role `needed`.
pub fn check(app: &SharedApp, presented: Option<&str>, needed: Role) -> Result<Who, ApiError> {
    let state = app.store.state();
    let refuse = |code: ErrorCode, message: String| {
        let outcome = if code == ErrorCode::Forbidden { "forbidden" } else { "unauthenticated" };
        crate::metrics::Metrics::count(&app.metrics.auth, vec![("outcome", outcome.into())], 1);
        ApiError::new(code, message)
    };
    let anonymous = |why: &str| {
        crate::metrics::Metrics::count(&app.metrics.auth, vec![("outcome", "anonymous".into())], 1);
        if !why.is_empty() {
            warn!("{why}; served without one because the cluster's auth mode is warn");
        }
        Who::anonymous()
    };
    let enforced = state.auth_enforced();
    let Some(text) = presented else {
        if enforced {
            return Err(refuse(
                ErrorCode::Unauthenticated,
                "this cluster requires a token: send `Authorization: Bearer <token>` (skein --token or SKEIN_TOKEN)"
                    .into(),
            ));
        }
        return Ok(anonymous(""));
    };
    // Never echo what was presented: it may be a real token, mistyped.
    let Some((id, secret)) = tokens::parse(text) else {
        if !enforced {
            return Ok(anonymous("a malformed token was presented"));
        }
        return Err(refuse(ErrorCode::Unauthenticated, "the token is malformed (expected skein_<id>_<secret>)".into()));
    };
    let Some(token) = state.token(id).filter(|t| tokens::matches(&t.hash, secret)) else {
        if !enforced {
            // A cluster moving to tokens (`warn`): a client may hold one
            // before it is created here, or after it was revoked.
            return Ok(anonymous("an unknown or revoked token was presented"));
        }
        return Err(refuse(ErrorCode::Unauthenticated, "unknown or revoked token".into()));
    };
    let now = now_ms();
    if token.expired_at(now) {
        if !enforced {
            return Ok(anonymous("an expired token was presented"));
        }
        return Err(refuse(ErrorCode::Unauthenticated, format!("token {} has expired", token.name)));
    }
    if token.role < needed {
        return Err(refuse(
            ErrorCode::Forbidden,
            format!("this call needs role {needed}; token {} has role {}", token.name, token.role),
        ));
    }
    app.note_token_use(id, now);
    Ok(Who { caller: Caller::Token(id), name: token.name.clone(), owners: token.owners.clone() })
}

/// Middleware: lets the request through with a [`Who`] if its token has
/// `role` (`State` carries the role a route group needs).
pub async fn require(State((app, role)): State<(SharedApp, Role)>, mut req: Request, next: Next) -> Response {
    match authenticate(&app, req.headers(), role) {
        Ok(who) => {
            if matches!(who.caller, Caller::Anonymous) {
                debug!(method = %req.method(), path = %req.uri().path(), "served without a token (auth mode warn)");
            }
            req.extensions_mut().insert(who);
            next.run(req).await
        }
        Err(e) => {
            warn!(method = %req.method(), path = %req.uri().path(), code = %e.body.error.code, "refused");
            e.into_response()
        }
    }
}
