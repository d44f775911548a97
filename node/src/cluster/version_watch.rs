//! Keeps this node's picture of its members' releases and formats fresh
//! (for `skein cluster status` and for the 409 that names the nodes to
//! upgrade); the decisions on them are in [`super::versions`].

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cluster::app::App;

/// How often [`watch`] asks every member again (a member may have been
/// restarted with another binary).
const WATCH_EVERY: Duration = Duration::from_secs(10);

/// Keeps this node's picture of its members' versions fresh: asks each
/// member at once when this node starts and whenever the membership or the
/// leader changes, and every [`WATCH_EVERY`].
pub async fn watch(app: Arc<App>, shutdown: CancellationToken) {
    let mut metrics = app.raft.metrics();
    loop {
        let ids: Vec<u64> = {
            let m = metrics.borrow();
            m.membership_config.membership().nodes().map(|(id, _)| *id).collect()
        };
        app.versions.retain(&ids);
        let _ = app.ask_member_versions().await;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(WATCH_EVERY) => {}
            changed = wait_for_membership_or_leader_change(&mut metrics) => if !changed { return },
        }
    }
}

/// Waits until the membership or the leader differs from now; `false` when
/// Raft stopped.
async fn wait_for_membership_or_leader_change(
    metrics: &mut tokio::sync::watch::Receiver<openraft::RaftMetrics<u64, skein_raft::config::SkeinNode>>,
) -> bool {
    let before = {
        let m = metrics.borrow();
        (m.current_leader, m.membership_config.log_id().map(|l| l.index))
    };
    loop {
        if metrics.changed().await.is_err() {
            return false;
        }
        let m = metrics.borrow();
        if (m.current_leader, m.membership_config.log_id().map(|l| l.index)) != before {
            return true;
        }
    }
}
