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

/// Ready while the worker can lease: the leader answered a call of its
/// within a lease's span and no lease has run out unrenewed since (see
/// [`crate::cluster::remote::readiness`]). Cut off from every member, it
/// answers 503 with the reason; once the leader answers again, 200.
async fn readyz(State(remote): State<Arc<Remote>>) -> Response {
    match remote.readiness() {
        Ok(()) => {
            let leader = remote.leader().map(|(id, _)| id);
            Json(json!({"status": "ready", "role": "worker", "node_id": remote.id, "leader": leader})).into_response()
        }
        Err(why) => ApiError::new(ErrorCode::Unavailable, why).into_response(),
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cluster::remote::tests::{answered, remote};

    async fn status(remote: &Arc<Remote>) -> (StatusCode, String) {
        let r = readyz(State(remote.clone())).await;
        let status = r.status();
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// `/readyz` follows the worker's contact with the leader: 503 before
    /// any answer, 200 once the leader answers, 503 naming the cause once a
    /// lease ran out unrenewed or a lease's span passed without an answer
    /// (cut off from every member), and 200 again once the leader answers.
    #[tokio::test(start_paused = true)]
    async fn readyz_says_503_while_the_worker_is_cut_off() {
        let r = Arc::new(remote());
        let (code, body) = status(&r).await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains("no leader has answered"), "{body}");

        answered(&r).await;
        let (code, body) = status(&r).await;
        assert_eq!(code, StatusCode::OK, "{body}");

        // A lease runs out unrenewed: the worker fenced itself.
        tokio::time::advance(Duration::from_secs(5)).await;
        r.note_self_fenced(tokio::time::Instant::now());
        let (code, body) = status(&r).await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains("a lease ran out unrenewed"), "{body}");

        tokio::time::advance(Duration::from_secs(1)).await;
        answered(&r).await;
        assert_eq!(status(&r).await.0, StatusCode::OK);

        // An idle worker (no lease to run out) hears nothing for a lease's span.
        tokio::time::advance(crate::cluster::remote::ready_window() + Duration::from_millis(1)).await;
        let (code, body) = status(&r).await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains("no call answered for"), "{body}");

        answered(&r).await;
        assert_eq!(status(&r).await.0, StatusCode::OK);
    }
}
