//! `GET /api/v1/scale?queue=Q&per_worker=N`: how many workers the backlog
//! needs, for an autoscaler (role `read`). The numbers and what they count
//! are [`crate::views::scale`]'s; this parses the query and reads this
//! node's applied state (a follower may be a moment behind the leader, like
//! every read).
//!
//! A queue this node does not know answers zeros, not 404: an autoscaler
//! polls before the first task of a queue arrives (queues are made by their
//! first enqueue), and KEDA reads an error answer as a failing scaler (an
//! error on the ScaledObject and, without a `fallback`, the replicas kept
//! where they are) where "nothing to do" should let it scale to zero. The other reads filtered by queue
//! (`/api/v1/tasks?queue=`, `/api/v1/stuck?queue=`) answer empty lists the
//! same way; an empty `queue=` means every queue, as there.

use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use skein_raft::api::ErrorCode;

use crate::api::errors::{ApiError, ApiResult};
use crate::cluster::app::SharedApp;
use crate::views::scale::{self, ScaleReply, MAX_PER_WORKER};

#[derive(Debug, Default, Deserialize)]
pub struct ScaleParams {
    /// One queue; absent or empty: every queue.
    queue: Option<String>,
    /// Slots of one worker, 1 to [`MAX_PER_WORKER`] (default 1). Taken as
    /// text so that a bad value gets a clear message.
    per_worker: Option<String>,
}

pub async fn scale(State(app): State<SharedApp>, Query(p): Query<ScaleParams>) -> ApiResult<Json<ScaleReply>> {
    let per_worker = per_worker(p.per_worker.as_deref())?;
    let queue = p.queue.as_deref().filter(|q| !q.is_empty());
    Ok(Json(scale::scale(&app.store.state(), queue, per_worker)))
}

/// `per_worker` as given: 1 to [`MAX_PER_WORKER`], 1 when absent.
pub fn per_worker(raw: Option<&str>) -> ApiResult<u64> {
    let Some(raw) = raw else { return Ok(1) };
    raw.trim().parse::<u64>().ok().filter(|n| (1..=MAX_PER_WORKER).contains(n)).ok_or_else(|| {
        ApiError::new(
            ErrorCode::Invalid,
            format!("per_worker is the number of task slots of one worker, 1 to {MAX_PER_WORKER}, not {raw:?}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_worker_is_1_to_10000() {
        assert_eq!(per_worker(None).ok(), Some(1));
        assert_eq!(per_worker(Some("1")).ok(), Some(1));
        assert_eq!(per_worker(Some("10000")).ok(), Some(10_000));
        for bad in ["0", "10001", "-1", "", "four", "1.5", "99999999999999999999999"] {
            let e = per_worker(Some(bad)).expect_err(bad);
            assert_eq!(e.body.error.code, ErrorCode::Invalid, "{bad}");
            assert!(e.body.error.message.contains("1 to 10000"), "{bad}: {}", e.body.error.message);
        }
    }
}
