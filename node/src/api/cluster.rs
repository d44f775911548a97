//! `/api/v1/cluster`: status, join, drain, remove, finalize.

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::Json;
use serde_json::json;
use skein_raft::api::{ClusterStatus, ErrorCode, FinalizeReply, JoinBody, MemberAddr, WorkerJoinBody, WorkerJoined};
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

/// Where auto-assigned worker ids start: far above the ids people give
/// members (1, 2, 3...), so the two never meet.
const WORKER_IDS_FROM: u64 = 1 << 32;

/// `POST /api/v1/cluster/workers`: a worker joins the fleet (or says it is
/// back after a restart). It becomes known to the state machine, replicated
/// like everything else (`AdmitNode`, then a first `Heartbeat` that records
/// its slots), and is told its id and the members to reach the leader
/// through. It is not added to Raft: it is sent no log.
pub async fn register_worker(
    State(app): State<SharedApp>,
    Extension(who): Extension<Who>,
    body: Bytes,
) -> ApiResult<Json<WorkerJoined>> {
    let w: WorkerJoinBody = parse_json(&body)?;
    let cluster = app.store.state().format();
    if w.format < cluster {
        return Err(ApiError::new(
            ErrorCode::UpgradeNeeded,
            format!(
                "this worker runs {} (stored format {}), and the cluster is at format {cluster}: run skein {} or \
                 later on it",
                w.release,
                w.format,
                skein_raft::format::release_of(cluster)
            ),
        ));
    }
    if w.slots == 0 || w.slots > 100_000 {
        return Err(ApiError::new(ErrorCode::Invalid, format!("slots must be 1 to 100000, not {}", w.slots)));
    }
    if w.http_addr.len() > 300 {
        return Err(ApiError::new(ErrorCode::Invalid, "http_addr is longer than 300 bytes"));
    }
    let membership = app.raft.metrics().borrow().membership_config.clone();
    let membership = membership.membership();
    let id = match w.id {
        Some(0) => return Err(ApiError::new(ErrorCode::Invalid, "a worker's id must be at least 1")),
        Some(id) if membership.get_node(&id).is_some() => {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("node {id} is a Raft member of this cluster: a worker needs an id of its own"),
            ))
        }
        Some(id) => id,
        None => {
            let state = app.store.state();
            loop {
                let id = WORKER_IDS_FROM + rand::random::<u64>() % (1 << 52);
                if !state.nodes().contains_key(&id) && !state.removed_nodes().contains(&id) {
                    break id;
                }
            }
        }
    };
    let first = Command::Batch(vec![
        Command::AdmitNode { node: id },
        Command::Heartbeat { node: id, slots: w.slots, held: Vec::new() },
    ]);
    match app.write(first).await? {
        skein_raft::fsm::Response::Batch(rs)
            if rs.iter().all(|r| !matches!(r, skein_raft::fsm::Response::Rejected(_))) => {}
        other => return Err(ApiError::new(ErrorCode::Internal, format!("registering the worker answered {other:?}"))),
    }
    app.record(who.caller, "register worker", format!("node {id} (http {}, {} slots)", w.http_addr, w.slots)).await;
    info!(node_id = id, http = %w.http_addr, slots = w.slots, "worker registered");
    let members = membership
        .nodes()
        .map(|(id, n)| MemberAddr { id: *id, rpc_addr: n.rpc_addr.clone(), http_addr: n.http_addr.clone() })
        .collect();
    Ok(Json(WorkerJoined { id, members, leader: app.leader().map(|(id, _)| id) }))
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
    let member = app.raft.metrics().borrow().membership_config.membership().get_node(&id).is_some();
    if !member && !app.store.state().nodes().contains_key(&id) {
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
