//! The cluster as this node sees it (`GET /api/v1/cluster`, `skein cluster
//! status`, the dashboard's nodes, the Raft gauges of `/metrics`).

use std::collections::{BTreeMap, BTreeSet};

use openraft::RaftMetrics;
use skein_raft::api::{ClusterNode, ClusterStatus};
use skein_raft::config::SkeinNode;
use skein_raft::fsm::StateMachine;

/// What a member said it runs, as far as this node knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberVersion {
    /// `None`: it could not be asked.
    pub release: Option<String>,
    pub format: u32,
}

/// The cluster's status from this node's Raft metrics, its applied state,
/// and the versions it heard from each member.
pub fn cluster_status(
    me: u64,
    m: &RaftMetrics<u64, SkeinNode>,
    state: &StateMachine,
    versions: &BTreeMap<u64, Option<MemberVersion>>,
) -> ClusterStatus {
    let membership = m.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    // The log index each member is known to have (the leader's view; a
    // follower knows none).
    let matched: BTreeMap<u64, u64> =
        m.replication.iter().flatten().filter_map(|(id, l)| Some((*id, l.as_ref()?.index))).collect();
    let commit_index =
        m.replication.as_ref().map(|_| commit_index(me, m.last_log_index.unwrap_or(0), &voters, &matched));
    let nodes = membership
        .nodes()
        .map(|(id, node)| {
            let info = state.nodes().get(id);
            let heard = versions.get(id).cloned().flatten();
            ClusterNode {
                id: *id,
                rpc_addr: node.rpc_addr.clone(),
                http_addr: node.http_addr.clone(),
                role: if m.current_leader == Some(*id) {
                    "leader"
                } else if voters.contains(id) {
                    "voter"
                } else {
                    "learner"
                }
                .into(),
                matched_index: if *id == me { m.last_log_index } else { matched.get(id).copied() },
                slots: info.map(|i| i.slots),
                leases_held: state.lease_count(*id) as u64,
                draining: info.is_some_and(|i| i.draining),
                last_heartbeat_ms: info.map(|i| i.last_heartbeat_ms),
                release: heard.as_ref().and_then(|r| r.release.clone()),
                format: heard.as_ref().map(|r| r.format),
            }
        })
        .collect::<Vec<_>>();
    // Workers: nodes the state machine knows (they registered, lease and
    // heartbeat) that are not Raft members. Their addresses are not
    // replicated: a worker is reached by no one, it calls the members.
    let workers = state.nodes().values().filter(|i| membership.get_node(&i.id).is_none()).map(|info| ClusterNode {
        id: info.id,
        rpc_addr: String::new(),
        http_addr: String::new(),
        role: "worker".into(),
        matched_index: None,
        slots: Some(info.slots),
        leases_held: state.lease_count(info.id) as u64,
        draining: info.draining,
        last_heartbeat_ms: Some(info.last_heartbeat_ms),
        release: None,
        format: None,
    });
    let nodes = nodes.into_iter().chain(workers).collect();
    ClusterStatus {
        node_id: me,
        leader: m.current_leader,
        term: m.current_term,
        commit_index,
        applied_index: m.last_applied.map(|l| l.index),
        nodes,
        format: Some(state.format()),
        release: Some(skein_raft::format::RELEASE.to_string()),
    }
}

/// On the leader, the commit index is the highest index a majority of
/// voters has (the leader counts its own last index); a follower does not
/// know it.
pub fn commit_index(leader: u64, leader_last: u64, voters: &BTreeSet<u64>, matched: &BTreeMap<u64, u64>) -> u64 {
    let mut idx: Vec<u64> =
        voters.iter().map(|v| if *v == leader { leader_last } else { matched.get(v).copied().unwrap_or(0) }).collect();
    idx.sort_unstable_by(|a, b| b.cmp(a));
    idx.get(voters.len() / 2).copied().unwrap_or(0)
}

/// How a node's heartbeat age reads on the dashboard.
pub fn heartbeat_health(age_ms: Option<u64>) -> &'static str {
    match age_ms {
        None => "unknown",
        Some(a) if a <= HEALTH_OK_MS => "ok",
        Some(a) if a <= HEALTH_LATE_MS => "late",
        Some(_) => "silent",
    }
}

/// A heartbeat at most this old is "ok"; up to [`HEALTH_LATE_MS`], "late";
/// older, "silent".
pub const HEALTH_OK_MS: u64 = 3_000;
pub const HEALTH_LATE_MS: u64 = 10_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_index_is_the_majoritys() {
        let voters: BTreeSet<u64> = [1, 2, 3].into();
        // (leader's last, matched of the others, expected)
        let cases: &[(u64, &[(u64, u64)], u64)] = &[
            (10, &[(2, 10), (3, 10)], 10),
            (10, &[(2, 7), (3, 4)], 7),
            (10, &[(2, 0)], 0),
            (10, &[(2, 9), (3, 12)], 10),
        ];
        for (last, matched, want) in cases {
            let matched: BTreeMap<u64, u64> = matched.iter().copied().collect();
            assert_eq!(commit_index(1, *last, &voters, &matched), *want, "{last} {matched:?}");
        }
        let five: BTreeSet<u64> = [1, 2, 3, 4, 5].into();
        let matched = BTreeMap::from([(2, 8), (3, 6), (4, 2), (5, 0)]);
        assert_eq!(commit_index(1, 9, &five, &matched), 6);
    }

    #[test]
    fn heartbeat_ages_read_as_health() {
        for (age, want) in
            [(None, "unknown"), (Some(0), "ok"), (Some(3_000), "ok"), (Some(3_001), "late"), (Some(10_001), "silent")]
        {
            assert_eq!(heartbeat_health(age), want, "{age:?}");
        }
    }
}
