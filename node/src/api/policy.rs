//! What the fleet may run and touch (`/api/v1/policy`): the exec allow
//! list and the data roots. Reading them needs `read` (a caller refused
//! with 403 can see why); changing them needs `admin`.

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::Json;
use skein_raft::api::policy::{DenyRootBody, ExecRuleBody, PolicyModeBody, PolicyView, RootBody};
use skein_raft::api::ErrorCode;
use skein_raft::fsm::policy::{is_interpreter, Credentials, NewRoot};
use skein_raft::fsm::{Command, Response};
use skein_transport::NodeError;

use crate::api::auth::Who;
use crate::api::errors::{parse_json, ApiError, ApiResult};
use crate::cluster::app::SharedApp;

pub async fn show(State(app): State<SharedApp>) -> Json<PolicyView> {
    Json(PolicyView::from(app.store.state().policy()))
}

pub async fn set_mode(
    State(app): State<SharedApp>,
    Extension(who): Extension<Who>,
    body: Bytes,
) -> ApiResult<Json<PolicyView>> {
    let body: PolicyModeBody = parse_json(&body)?;
    let enforce = match body.mode.as_str() {
        "enforce" => true,
        "open" => false,
        other => return Err(ApiError::new(ErrorCode::Invalid, format!("mode is enforce or open, not {other:?}"))),
    };
    change(&app, &who, Command::ConfigurePolicy { enforce }, Vec::new()).await
}

pub async fn allow_exec(
    State(app): State<SharedApp>,
    Extension(who): Extension<Who>,
    body: Bytes,
) -> ApiResult<Json<PolicyView>> {
    let body: ExecRuleBody = parse_json(&body)?;
    let args = body.args.unwrap_or_default();
    let mut warnings = Vec::new();
    if is_interpreter(&body.program) && args.is_empty() {
        warnings.push(format!(
            "{} is a shell or an interpreter: allowed without fixed arguments, it runs anything a caller gives it. \
             Prefer `--args /path/to/script` (only that script).",
            body.program
        ));
    }
    change(&app, &who, Command::AllowExec { program: body.program, args }, warnings).await
}

pub async fn deny_exec(
    State(app): State<SharedApp>,
    Extension(who): Extension<Who>,
    body: Bytes,
) -> ApiResult<Json<PolicyView>> {
    let body: ExecRuleBody = parse_json(&body)?;
    change(&app, &who, Command::DenyExec { program: body.program, args: body.args }, Vec::new()).await
}

pub async fn allow_root(
    State(app): State<SharedApp>,
    Extension(who): Extension<Who>,
    body: Bytes,
) -> ApiResult<Json<PolicyView>> {
    let body: RootBody = parse_json(&body)?;
    let credentials = match body.credentials.as_deref() {
        None => Credentials::None,
        Some(c) => Credentials::parse(c).map_err(|e| ApiError::new(ErrorCode::Invalid, e))?,
    };
    let root = NewRoot {
        url: body.url,
        endpoint: body.endpoint,
        region: body.region,
        credentials,
        allow_http: body.allow_http,
    };
    // Checked here for a 400 with the reason; the state machine checks again.
    let root = root.validate().map_err(|e| ApiError::new(ErrorCode::Invalid, e))?;
    let mut warnings = Vec::new();
    if root.url == "file:///" {
        warnings.push("file:/// allows every local path the node's user can read and write".to_string());
    }
    change(&app, &who, Command::AllowRoot { root }, warnings).await
}

pub async fn deny_root(
    State(app): State<SharedApp>,
    Extension(who): Extension<Who>,
    body: Bytes,
) -> ApiResult<Json<PolicyView>> {
    let body: DenyRootBody = parse_json(&body)?;
    change(&app, &who, Command::DenyRoot { url: body.url }, Vec::new()).await
}

/// Proposes `command` as `who` and answers with the policy the leader applied.
async fn change(app: &SharedApp, who: &Who, command: Command, warnings: Vec<String>) -> ApiResult<Json<PolicyView>> {
    if app.store.state().format() < 4 {
        return Err(ApiError::new(
            ErrorCode::NeedsFormat,
            "the exec allow list and data roots need stored format 4: run `skein cluster finalize` once every node \
             runs 0.4.0",
        ));
    }
    match app.write_as(who.caller, command).await? {
        Response::Done => {}
        Response::Rejected(r) => return Err(r.into()),
        other => return Err(NodeError::Internal(format!("answered with {other:?}")).into()),
    }
    app.catch_up().await?;
    let mut view = PolicyView::from(app.store.state().policy());
    view.warnings = warnings;
    Ok(Json(view))
}
