//! Operations: readiness, the replica digest, backups.

use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::Json;
use serde_json::json;
use skein_raft::api::ErrorCode;
use tracing::info;

use crate::api::errors::{not_leader, ApiError, ApiResult};
use crate::cluster::app::SharedApp;

/// Alive, with this node's id and whether it is in a cluster yet (what
/// `--bootstrap-expect` members ask each other before any token exists);
/// and, for a node that joins without a token (with its certificate, over
/// RPC), this node's RPC address and the Raft members' ids (whether the
/// cluster still lists a member that lost its data).
pub async fn healthz(State(app): State<SharedApp>) -> Json<serde_json::Value> {
    let members: Vec<u64> =
        app.raft.metrics().borrow().membership_config.membership().nodes().map(|(id, _)| *id).collect();
    Json(json!({
        "status": "ok",
        "node_id": app.id,
        "initialized": !members.is_empty(),
        "rpc_addr": app.me.rpc_addr,
        "members": members,
    }))
}

pub async fn readyz(State(app): State<SharedApp>) -> HttpResponse {
    let m = app.raft.metrics().borrow().clone();
    match (m.current_leader, m.last_applied) {
        (Some(leader), Some(applied)) => {
            Json(json!({"status": "ready", "leader": leader, "applied_index": applied.index})).into_response()
        }
        _ => ApiError::new(ErrorCode::Unavailable, "no leader known yet, or nothing applied").into_response(),
    }
}

/// A hash of the applied state, for comparing replicas: equal digests at
/// equal applied indexes mean identical state machines.
pub async fn digest(State(app): State<SharedApp>) -> ApiResult<Json<serde_json::Value>> {
    let (applied, digest) = app.store.digest_at().map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    Ok(Json(json!({"node_id": app.id, "applied_index": applied, "digest": format!("{digest:016x}")})))
}

/// How long a backup may wait for the leader's snapshot to be written.
const BACKUP_SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(300);

/// `GET /api/v1/admin/backup`: the replicated state as one consistent,
/// checksummed snapshot file (payloads, results and histories included),
/// taken now on the leader while the cluster runs. A follower answers
/// `not_leader` naming the leader (the CLI follows it). `skein-node
/// --restore FILE --bootstrap` starts a new cluster from it.
pub async fn backup(State(app): State<SharedApp>) -> ApiResult<HttpResponse> {
    if !app.is_leader() {
        return Err(not_leader(&app, "backups are taken on the leader: ask it"));
    }
    app.snapshot_now(BACKUP_SNAPSHOT_TIMEOUT).await?;
    let internal = |e: String| ApiError::new(ErrorCode::Internal, e);
    let (meta, file) = app
        .store
        .current_snapshot()
        .map_err(|e| internal(e.to_string()))?
        .ok_or_else(|| internal("no snapshot after building one".into()))?;
    let len = file.metadata().map_err(|e| internal(format!("reading the snapshot: {e}")))?.len();
    info!(snapshot = %meta, bytes = len, "sending a backup");
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file)));
    let headers = [
        (axum::http::header::CONTENT_TYPE, "application/octet-stream".to_string()),
        (axum::http::header::CONTENT_LENGTH, len.to_string()),
        (axum::http::HeaderName::from_static("x-skein-snapshot"), meta.snapshot_id.clone()),
    ];
    Ok((headers, body).into_response())
}
