//! `/api/v1/queues`: list, pause, resume, configure, redrive.

use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::Json;
use serde::Deserialize;
use skein_raft::api::{ErrorCode, QueueList, RedriveReply, RetriedTask};
use skein_raft::fsm::{Command, QueuePatch, Response};
use skein_transport::NodeError;

use crate::api::auth::Who;
use crate::api::errors::{done, parse_json, ApiError, ApiResult};
use crate::clock::now_ms;
use crate::cluster::app::SharedApp;

pub async fn list_queues(State(app): State<SharedApp>) -> Json<QueueList> {
    Json(QueueList { queues: app.store.state().queue_stats(now_ms()) })
}

pub async fn pause_queue(
    State(app): State<SharedApp>,
    Extension(who): Extension<Who>,
    Path(name): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    done(app.write_as(who.caller, Command::SetQueuePaused { queue: name, paused: true }).await?)
}

pub async fn resume_queue(
    State(app): State<SharedApp>,
    Extension(who): Extension<Who>,
    Path(name): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    done(app.write_as(who.caller, Command::SetQueuePaused { queue: name, paused: false }).await?)
}

pub async fn configure_queue(
    State(app): State<SharedApp>,
    Extension(who): Extension<Who>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    // The body is the log's own patch: one declaration of the settings
    // (`queue_settings!` in skein-raft), unknown keys refused.
    let patch: QueuePatch = parse_json(&body)?;
    done(app.write_as(who.caller, Command::ConfigureQueue { queue: name, patch }).await?)
}

#[derive(Deserialize)]
pub struct RedriveQuery {
    max: Option<u32>,
}

/// The most dead tasks one redrive retries, and its default.
const MAX_REDRIVE: u32 = 10_000;

pub async fn redrive_queue(
    State(app): State<SharedApp>,
    Extension(who): Extension<Who>,
    Path(name): Path<String>,
    Query(q): Query<RedriveQuery>,
) -> ApiResult<Json<RedriveReply>> {
    let max = q.max.unwrap_or(MAX_REDRIVE);
    if max == 0 || max > MAX_REDRIVE {
        return Err(ApiError::new(ErrorCode::Invalid, format!("max must be 1 to {MAX_REDRIVE}")));
    }
    match app.write_as(who.caller, Command::RedriveQueue { queue: name, max }).await? {
        Response::Batch(each) => {
            let mut reply = RedriveReply { tasks: Vec::new(), refused: Vec::new() };
            for r in each {
                match r {
                    Response::Task { id, status } => reply.tasks.push(RetriedTask { id, status }),
                    Response::Rejected(why) => reply.refused.push(why.to_string()),
                    other => return Err(NodeError::Internal(format!("redrive answered with {other:?}")).into()),
                }
            }
            Ok(Json(reply))
        }
        Response::Rejected(r) => Err(r.into()),
        other => Err(NodeError::Internal(format!("redrive answered with {other:?}")).into()),
    }
}
