//! A worker node's HTTP endpoint. A worker holds no state, so it serves no
//! API: only its health (`/healthz`, `/readyz`) and, with
//! `--metrics-public`, its own metrics (leases, outcomes, durations). Tokens
//! are checked against the replicated token table, which a worker does not
//! have: a scraper needing a token scrapes the members, whose `/metrics`
//! show every worker's leases.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use skein_raft::api::ErrorCode;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::api::errors::ApiError;
use crate::cluster::remote::Remote;

fn router(remote: Arc<Remote>) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok", "role": "worker"})) }))
        .route("/readyz", get(readyz));
    if remote.config.metrics_public {
        router = router.route("/metrics", get(metrics));
    } else {
        router = router.route("/metrics", get(metrics_refused));
    }
    router.with_state(remote)
}

/// Ready once a leader answered: the worker can lease.
async fn readyz(State(remote): State<Arc<Remote>>) -> Response {
    match remote.leader() {
        Some((leader, _)) if !remote.is_removed() => {
            Json(json!({"status": "ready", "role": "worker", "node_id": remote.id, "leader": leader})).into_response()
        }
        _ => ApiError::new(ErrorCode::Unavailable, "no leader heard yet").into_response(),
    }
}

async fn metrics(State(remote): State<Arc<Remote>>) -> Response {
    match remote.metrics.render_local() {
        Ok(text) => ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "encoding the metrics failed").into_response(),
    }
}

async fn metrics_refused() -> Response {
    ApiError::new(
        ErrorCode::Forbidden,
        "a worker serves /metrics only with --metrics-public (it holds no token table to check a token against); \
         the members' /metrics show every worker",
    )
    .into_response()
}

/// Serves until `stop`.
pub async fn serve(
    listener: skein_tls::HttpsListener,
    remote: Arc<Remote>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let addr = axum::serve::Listener::local_addr(&listener).ok();
    info!(addr = ?addr, "worker http listening");
    axum::serve(listener, router(remote).into_make_service())
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}
