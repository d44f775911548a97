//! What people look at: the web dashboard at `/` (plain HTML, CSS and JS
//! embedded in the binary: no build step, nothing fetched from elsewhere),
//! the JSON it polls (`/api/v1/overview`, one request per refresh), stuck
//! tasks (`/api/v1/stuck`) and Prometheus metrics (`/metrics`). What they
//! show is built in [`crate::views`] and [`crate::metrics`].

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use skein_raft::api::{ErrorCode, StuckList};
use skein_raft::fsm::TaskStatus;

use crate::api::errors::ApiError;
use crate::clock::now_ms;
use crate::cluster::app::SharedApp;
use crate::metrics::Scrape;
use crate::views::tasks::{self, nonempty, OverviewParams};

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const DASHBOARD_JS: &str = include_str!("dashboard/dashboard.js");
const DASHBOARD_CSS: &str = include_str!("dashboard/dashboard.css");

pub fn routes() -> Router<SharedApp> {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/dashboard.js", get(|| async { asset("text/javascript; charset=utf-8", DASHBOARD_JS) }))
        .route("/dashboard.css", get(|| async { asset("text/css; charset=utf-8", DASHBOARD_CSS) }))
        .route("/api/v1/overview", get(overview))
        .route("/api/v1/stuck", get(stuck))
        .route("/metrics", get(metrics))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

async fn metrics(State(app): State<SharedApp>) -> Response {
    let scrape = {
        let raft = app.raft.metrics().borrow().clone();
        Scrape {
            me: app.id,
            now_ms: now_ms(),
            cluster: app.cluster_status(),
            raft,
            snapshot_bytes: app.store.snapshot_bytes(),
            log_bytes: app.store.log_bytes(),
        }
    };
    match app.metrics.render(&app.store.state(), &scrape) {
        Ok(text) => ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "encoding the metrics failed").into_response(),
    }
}

async fn overview(State(app): State<SharedApp>, Query(p): Query<OverviewParams>) -> Response {
    let status = match nonempty(&p.status).map(str::parse::<TaskStatus>) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(message)) => return ApiError::new(ErrorCode::Invalid, message).into_response(),
    };
    Json(tasks::overview(&app.store, app.cluster_status(), &p, status, now_ms())).into_response()
}

#[derive(Debug, Default, Deserialize)]
struct StuckParams {
    queue: Option<String>,
}

async fn stuck(State(app): State<SharedApp>, Query(p): Query<StuckParams>) -> Json<StuckList> {
    Json(tasks::stuck(&app.store, nonempty(&p.queue), now_ms()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_reference_each_other() {
        assert!(INDEX_HTML.contains("/dashboard.js") && INDEX_HTML.contains("/dashboard.css"));
        assert!(DASHBOARD_JS.contains("/api/v1/overview"));
        // No CDN, no remote anything: the network may be closed.
        for asset in [INDEX_HTML, DASHBOARD_JS, DASHBOARD_CSS] {
            assert!(!asset.contains("http://") && !asset.contains("https://"), "an asset refers to another host");
        }
    }
}
