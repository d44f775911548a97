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

const SIGNIN_HTML: &str = include_str!("dashboard/signin.html");

/// The page and its assets (no data in them), and signing in and out.
pub fn public_routes() -> Router<SharedApp> {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/dashboard.js", get(|| async { asset("text/javascript; charset=utf-8", DASHBOARD_JS) }))
        .route("/dashboard.css", get(|| async { asset("text/css; charset=utf-8", DASHBOARD_CSS) }))
        .route("/signin", get(|| async { asset("text/html; charset=utf-8", SIGNIN_HTML) }).post(sign_in))
        .route("/signout", axum::routing::post(sign_out))
}

/// What the dashboard polls (role `read`).
pub fn read_routes() -> Router<SharedApp> {
    Router::new().route("/api/v1/overview", get(overview)).route("/api/v1/stuck", get(stuck))
}

#[derive(Deserialize)]
struct SignIn {
    token: String,
}

/// Checks the token (role `read` at least) and keeps it in an HttpOnly,
/// SameSite=Strict cookie: page scripts cannot read it and other sites
/// cannot make the browser send it.
async fn sign_in(State(app): State<SharedApp>, axum::extract::Form(form): axum::extract::Form<SignIn>) -> Response {
    // Only a token's shape goes into the cookie (in `warn` any text would pass the check).
    if skein_tls::token::parse(&form.token).is_none() {
        return signin_failed("the token is malformed (expected skein_<id>_<secret>)");
    }
    if let Err(e) = crate::api::auth::check(&app, Some(form.token.trim()), skein_raft::fsm::Role::Read) {
        return signin_failed(&e.body.error.message);
    }
    let secure = if app.tls.is_some() { "; Secure" } else { "" };
    let cookie =
        format!("{}={}; HttpOnly; SameSite=Strict; Path=/{secure}", crate::api::auth::COOKIE, form.token.trim());
    (StatusCode::SEE_OTHER, [(header::SET_COOKIE, cookie), (header::LOCATION, "/".to_string())]).into_response()
}

async fn sign_out() -> Response {
    let cookie = format!("{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0", crate::api::auth::COOKIE);
    (StatusCode::SEE_OTHER, [(header::SET_COOKIE, cookie), (header::LOCATION, "/signin".to_string())]).into_response()
}

fn signin_failed(why: &str) -> Response {
    // The reason is ours (never the presented token); escape it anyway.
    let why = why.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let page = SIGNIN_HTML.replace("<!--error-->", &format!("<p class=\"error\">Not signed in: {why}</p>"));
    (StatusCode::UNAUTHORIZED, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

pub async fn metrics(State(app): State<SharedApp>) -> Response {
    let scrape = {
        let raft = app.raft.metrics().borrow().clone();
        Scrape {
            me: app.id,
            now_ms: now_ms(),
            cluster: app.cluster_status(),
            raft,
            snapshot_bytes: app.store.snapshot_bytes(),
            log_bytes: app.store.log_bytes(),
            certificates: app.tls.as_ref().map(|t| t.expiries()).unwrap_or_default(),
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
        assert!(DASHBOARD_JS.contains("/api/v1/overview") && DASHBOARD_JS.contains("/signin"));
        assert!(SIGNIN_HTML.contains("action=\"/signin\"") && SIGNIN_HTML.contains("<!--error-->"));
        // No CDN, no remote anything: the network may be closed.
        for asset in [INDEX_HTML, DASHBOARD_JS, DASHBOARD_CSS, SIGNIN_HTML] {
            assert!(!asset.contains("http://") && !asset.contains("https://"), "an asset refers to another host");
        }
    }
}
