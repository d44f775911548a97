//! The HTTP API every node serves (README.md documents each route).
//!
//! One file per resource. Writes go through
//! [`crate::cluster::app::App::write`], which forwards to the leader; reads
//! come from this node's applied state, which a follower may have a moment
//! behind the leader. A lookup of a task this node has not seen yet first
//! catches up with the leader (a read index), so a client that enqueued
//! through one node and reads through another sees its task.

use std::net::SocketAddr;

use axum::extract::DefaultBodyLimit;
use axum::response::Response as HttpResponse;
use axum::routing::{get, post};
use axum::Router;
use skein_raft::api::ErrorCode;
use skein_raft::fsm::Role;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::cluster::app::SharedApp;

pub mod access;
pub mod admin;
pub mod auth;
pub mod cluster;
pub mod dashboard;
pub mod errors;
pub mod limits;
pub mod openapi;
pub mod plans;
pub mod policy;
pub mod queues;
pub mod scale;
pub mod tasks;
pub mod waiting;
pub mod worker_http;

pub use errors::{ApiError, ApiResult};

/// The largest request body: a batch of many tasks. One task's payload has
/// its own, smaller limit (the state machine's `max_payload_bytes`).
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Every route, grouped by the role it needs (see [`auth`]): the role of
/// a route is where the route is written. Each route but `/healthz`,
/// `/readyz` and `/metrics` (when public) also counts against its caller's
/// request limit ([`limits`]), after the token check.
pub fn router(app: SharedApp) -> Router {
    let limited = axum::middleware::from_fn_with_state(
        limits::RequestLimiter::new(app.config.limits, &app.metrics),
        limits::per_caller,
    );
    let needs =
        |role: Role| (axum::middleware::from_fn_with_state((app.clone(), role), auth::require), limited.clone());
    let public = Router::new()
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .route("/api/v1/openapi.json", get(openapi::serve))
        .merge(dashboard::public_routes().route_layer(limited.clone()));
    let mut read = Router::new()
        .route("/api/v1/tasks", get(tasks::list_tasks))
        .route("/api/v1/tasks/{id}", get(tasks::show_task))
        .route("/api/v1/queues", get(queues::list_queues))
        .route("/api/v1/cluster", get(cluster::cluster))
        .route("/api/v1/plans", get(plans::list))
        .route("/api/v1/plans/{entity_ref}", get(plans::show_one))
        .route("/api/v1/plans/{kind}/{namespace}/{name}", get(plans::show_three))
        .route("/api/v1/auth", get(access::auth_status))
        .route("/api/v1/policy", get(policy::show))
        .route("/api/v1/scale", get(scale::scale))
        .merge(dashboard::read_routes());
    let metrics = Router::new().route("/metrics", get(dashboard::metrics));
    let public = if app.config.metrics_public {
        public.merge(metrics)
    } else {
        read = read.merge(metrics);
        public
    };
    let submit = Router::new()
        .route("/api/honk/tasks", post(tasks::honk_enqueue))
        .route("/api/v1/tasks", post(tasks::enqueue))
        .route("/api/v1/tasks/{id}/cancel", post(tasks::cancel_task))
        .route("/api/v1/tasks/{id}/retry", post(tasks::retry_task))
        .route("/api/v1/plans", post(plans::apply))
        .route("/api/v1/plans/run", post(plans::run));
    let operate = Router::new()
        .route("/api/v1/queues/{name}", axum::routing::patch(queues::configure_queue))
        .route("/api/v1/queues/{name}/pause", post(queues::pause_queue))
        .route("/api/v1/queues/{name}/resume", post(queues::resume_queue))
        .route("/api/v1/queues/{name}/redrive", post(queues::redrive_queue))
        .route("/api/v1/cluster/join", post(cluster::join))
        .route("/api/v1/cluster/workers", post(cluster::register_worker))
        .route("/api/v1/cluster/finalize", post(cluster::finalize))
        .route("/api/v1/cluster/nodes/{id}", axum::routing::delete(cluster::remove_node))
        .route("/api/v1/cluster/nodes/{id}/drain", post(cluster::drain_node))
        .route("/api/v1/admin/digest", get(admin::digest))
        .route("/api/v1/audit", get(access::audit));
    let admin = Router::new()
        // A backup holds every payload and every token's hash.
        .route("/api/v1/admin/backup", get(admin::backup))
        .route("/api/v1/tokens", post(access::create_token).get(access::list_tokens))
        .route("/api/v1/tokens/{id}", axum::routing::delete(access::revoke_token))
        .route("/api/v1/tokens/{id}/rotate", post(access::rotate_token))
        .route("/api/v1/auth", post(access::configure_auth))
        .route("/api/v1/policy", post(policy::set_mode))
        .route("/api/v1/policy/exec", post(policy::allow_exec))
        .route("/api/v1/policy/exec/deny", post(policy::deny_exec))
        .route("/api/v1/policy/roots", post(policy::allow_root))
        .route("/api/v1/policy/roots/deny", post(policy::deny_root));
    public
        .merge(read.route_layer(needs(Role::Read)))
        .merge(submit.route_layer(needs(Role::Submit)))
        .merge(operate.route_layer(needs(Role::Operate)))
        .merge(admin.route_layer(needs(Role::Admin)))
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such route") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(errors::json_rejections))
        .layer(axum::middleware::map_response(with_release))
        .with_state(app)
}

/// The header every answer carries: the node's release. A client that gets
/// an answer without it talks to a 0.1.0 node, and can say so.
pub const RELEASE_HEADER: &str = "x-skein-release";

async fn with_release(mut response: HttpResponse) -> HttpResponse {
    response.headers_mut().insert(
        axum::http::HeaderName::from_static(RELEASE_HEADER),
        axum::http::HeaderValue::from_static(skein_raft::format::RELEASE),
    );
    response
}

/// Serves the API until `shutdown`.
pub async fn serve(
    listener: skein_tls::HttpsListener,
    app: SharedApp,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr: Option<SocketAddr> = axum::serve::Listener::local_addr(&listener).ok();
    info!(addr = ?addr, "http api listening");
    let service = router(app).into_make_service_with_connect_info::<limits::ClientAddr>();
    axum::serve(listener, service).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}
