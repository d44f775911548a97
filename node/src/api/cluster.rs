//! `/api/v1/cluster`: status, join, drain, remove, finalize.

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::Json;
use serde_json::json;
use skein_raft::api::{ClusterStatus, ErrorCode, FinalizeReply, JoinBody};
use skein_raft::config::SkeinNode;
use skein_raft::fsm::{Command, Rejection};
use skein_transport::JoinRequest;
use tracing::info;

use crate::api::auth::Who;
use crate::api::errors::{done, not_leader, parse_json, ApiError, ApiResult};
use crate::cluster::app::SharedApp;
use crate::cluster::versions::{finalize_decision, Finalize};

pub async fn cluster(State(app): State<SharedApp>) -> Json<ClusterStatus> {
    Json(app.cluster_status())
}

/// `skein cluster finalize`: asks every member its version now, and raises
/// the cluster's stored format once all of them read the newest one. On the
/// leader only (a follower answers 421 with the leader), so that the check
/// and the proposal are one node's view.
pub async fn finalize(State(app): State<SharedApp>, Extension(who): Extension<Who>) -> ApiResult<Json<FinalizeReply>> {
    if !app.is_leader() {
        return Err(not_leader(&app, "the leader finalizes: ask it"));
    }
    let members = app.ask_member_versions().await;
    let cluster = app.store.state().format();
    match finalize_decision(cluster, skein_raft::format::LATEST, &members) {
        Finalize::AlreadyAt(format) => Ok(Json(FinalizeReply { format, changed: false })),
        Finalize::Upgrade(behind) => {
            let names: Vec<String> = behind.iter().map(|(id, what)| format!("node {id} {what}")).collect();
            Err(ApiError::new(
                ErrorCode::UpgradeNeeded,
                format!(
                    "not finalized: every member must run skein {} or later first; {}. Nothing changed: the \
                     cluster stays at format {cluster}, readable by the older release",
                    skein_raft::format::release_of(skein_raft::format::LATEST),
                    names.join(", ")
                ),
            ))
        }
        Finalize::Raise(format) => {
            info!(from = cluster, to = format, "finalizing the upgrade: raising the stored format");
            app.raise_format(format).await?;
            app.record(who.caller, "finalize", format!("format {format}")).await;
            Ok(Json(FinalizeReply { format, changed: true }))
        }
    }
}

pub async fn join(
    State(app): State<SharedApp>,
    Extension(who): Extension<Who>,
    body: Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    let j: JoinBody = parse_json(&body)?;
    let target = format!("node {} (rpc {}, http {})", j.id, j.rpc_addr, j.http_addr);
    app.join(JoinRequest { id: j.id, node: SkeinNode { rpc_addr: j.rpc_addr, http_addr: j.http_addr } }).await?;
    app.record(who.caller, "join node", target).await;
    Ok(Json(json!({})))
}

fn parse_node_id(raw: &str) -> ApiResult<u64> {
    raw.parse::<u64>().map_err(|_| ApiError::new(ErrorCode::Invalid, format!("node id must be a number, not {raw:?}")))
}

pub async fn drain_node(
    State(app): State<SharedApp>,
    Extension(who): Extension<Who>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let id = parse_node_id(&id)?;
    if app.raft.metrics().borrow().membership_config.membership().get_node(&id).is_none() {
        return Err(Rejection::UnknownNode(id).into());
    }
    done(app.write_as(who.caller, Command::DrainNode { node: id, draining: true }).await?)
}

pub async fn remove_node(
    State(app): State<SharedApp>,
    Extension(who): Extension<Who>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let id = parse_node_id(&id)?;
    app.leave(id).await?;
    app.record(who.caller, "remove node", format!("node {id}")).await;
    Ok(Json(json!({})))
}
