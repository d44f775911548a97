//! Error answers: `{"error": {"code", "message", "leader"?}}` with the
//! status its [`ErrorCode`] has, from the node's and the state machine's
//! typed errors. The codes are one enum shared with the CLI
//! (`skein_raft::api::ErrorCode`): nothing compares strings.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::Json;
use serde::de::DeserializeOwned;
use skein_raft::api::{ErrorBody, ErrorCode, ErrorDetail};
use skein_raft::fsm::{Rejection, Response, TaskId};
use skein_transport::NodeError;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub body: ErrorBody,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { body: ErrorBody { error: ErrorDetail { code, message: message.into(), leader: None } } }
    }

    /// The same, naming the leader's HTTP address.
    pub fn with_leader(mut self, leader: Option<String>) -> Self {
        self.body.error.leader = leader;
        self
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.body.error.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> HttpResponse {
        (self.status(), Json(self.body)).into_response()
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        match e {
            // Retried for a while already (`cluster::routing`): nothing
            // was carried out.
            NodeError::NotLeader { leader, .. } => ApiError::new(
                ErrorCode::Unavailable,
                "no leader could be reached; the cluster may be electing one or have lost its majority",
            )
            .with_leader(leader.map(|l| l.http_addr)),
            NodeError::Unavailable(m) => ApiError::new(ErrorCode::Unavailable, m),
            // The code says what to do (retry with the idempotency key).
            NodeError::OutcomeUnknown(m) => ApiError::new(ErrorCode::OutcomeUnknown, m),
            NodeError::Invalid(m) => ApiError::new(ErrorCode::Invalid, m),
            NodeError::Internal(m) => ApiError::new(ErrorCode::Internal, m),
            e @ NodeError::Removed(_) => ApiError::new(ErrorCode::Removed, e.to_string()),
            NodeError::NeedsFormat { message, .. } => ApiError::new(ErrorCode::NeedsFormat, message),
        }
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        let code = match &r {
            Rejection::UnknownTask(_)
            | Rejection::UnknownQueue(_)
            | Rejection::UnknownNode(_)
            | Rejection::NodeRemoved(_) => ErrorCode::NotFound,
            Rejection::StaleToken { .. } => ErrorCode::StaleToken,
            Rejection::WrongStatus { .. } | Rejection::DependencyFailed { .. } => ErrorCode::Conflict,
            Rejection::PayloadTooLarge { .. } | Rejection::BatchTooLarge { .. } => ErrorCode::PayloadTooLarge,
            Rejection::QueueFull { .. } | Rejection::TooManyQueues { .. } => ErrorCode::QueueFull,
            Rejection::Unauthenticated(_) => ErrorCode::Unauthenticated,
            Rejection::Forbidden(_) => ErrorCode::Forbidden,
            _ => ErrorCode::Invalid,
        };
        ApiError::new(code, r.to_string())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Middleware: axum's own refusals of a request (a query string, a path
/// parameter or a form that does not parse, a body over the limit) are
/// plain text; this answers them like every other error, with the JSON
/// body and the status of their code (`invalid`: 400, `payload_too_large`:
/// 413), as the API's OpenAPI document says (and the fuzz run of
/// `tests/tests/openapi.rs` checks).
pub async fn json_rejections(response: HttpResponse) -> HttpResponse {
    let plain = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    if !response.status().is_client_error() || !plain {
        return response;
    }
    let code = match response.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        _ => ErrorCode::Invalid,
    };
    let text = axum::body::to_bytes(response.into_body(), 64 * 1024).await.unwrap_or_default();
    let message = String::from_utf8_lossy(&text).trim().to_string();
    ApiError::new(code, if message.is_empty() { "the request is malformed".to_string() } else { message })
        .into_response()
}

/// Parses a JSON body with a clear 400 instead of axum's plain-text one.
pub fn parse_json<T: DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    if body.is_empty() {
        return Err(ApiError::new(ErrorCode::Invalid, "the request needs a JSON body"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::new(ErrorCode::Invalid, format!("invalid JSON body: {e}")))
}

pub fn parse_task_id(raw: &str) -> ApiResult<TaskId> {
    raw.parse::<u64>()
        .map(TaskId)
        .map_err(|_| ApiError::new(ErrorCode::Invalid, format!("task id must be a number, not {raw:?}")))
}

/// A command's plain "done" answer as `{}`.
pub fn done(r: Response) -> ApiResult<Json<serde_json::Value>> {
    match r {
        Response::Done => Ok(Json(serde_json::json!({}))),
        Response::Rejected(r) => Err(r.into()),
        other => Err(NodeError::Internal(format!("answered with {other:?}")).into()),
    }
}

/// The 421 of a route only the leader answers, naming the leader.
pub fn not_leader(app: &crate::cluster::app::App, message: &str) -> ApiError {
    ApiError::new(ErrorCode::NotLeader, message).with_leader(app.leader().map(|(_, node)| node.http_addr))
}
