//! What a `--bootstrap-expect` member serves while it waits for the others,
//! before it has a store or a cluster: `/healthz` with its id and
//! `initialized: false`, so that the expected members find each other, and
//! 503 for everything else.

use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Serves until `stop`.
pub async fn serve(listener: skein_tls::HttpsListener, id: u64, stop: CancellationToken) -> std::io::Result<()> {
    let router = Router::new()
        .route("/healthz", get(move || async move { Json(json!({"status": "ok", "node_id": id, "initialized": false})) }))
        .fallback(|| async {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": {"code": "unavailable", "message": "waiting for the expected members (--bootstrap-expect)"}})))
        });
    axum::serve(listener, router.into_make_service())
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}
