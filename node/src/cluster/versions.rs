//! Which release and stored format each member runs, and the version gate.
//!
//! A cluster upgraded from 0.1.0 stays at stored format 1 until an operator
//! finalizes (`skein cluster finalize`): until then every node writes only
//! what 0.1.0 reads, so any node can go back to the 0.1.0 binary. Finalizing
//! proposes `Command::SetFormat`, and only when every member reports a
//! release that reads the new format. Members are asked over RPC
//! (`node_version`, which 0.1.0 does not know: it drops the connection, and
//! is counted as 0.1.0); a member that cannot be reached counts as 0.1.0
//! too, since nothing proves otherwise.
//!
//! The decisions ([`finalize_decision`], [`needs_format_message`]) are pure;
//! [`super::version_watch`] keeps this node's picture of its peers fresh for `skein cluster
//! status` and for the 409 that names the nodes to upgrade.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use skein_raft::format;
use skein_transport::{NodeVersion, Peers, PeersConfig};

/// What a node of this build with `config` says it runs (lower only in
/// mixed-version tests, `--behave-as-format`).
pub fn own_version(config: &crate::config::Config) -> NodeVersion {
    let format = config.format;
    let release = if format == format::LATEST { format::RELEASE } else { format::release_of(format) };
    NodeVersion { release: release.to_string(), format }
}

/// What a member said when asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reported {
    /// It answered `node_version`.
    Version(NodeVersion),
    /// It answered, but not this call: a 0.1.0 node.
    Release010,
    /// It could not be reached.
    Unreachable(String),
}

impl Reported {
    /// The newest format the member provably reads: 1 unless it said more.
    pub fn format(&self) -> u32 {
        match self {
            Reported::Version(v) => v.format,
            Reported::Release010 | Reported::Unreachable(_) => format::FORMAT_0_1_0,
        }
    }

    /// The release, as `skein cluster status` shows it.
    pub fn release(&self) -> Option<String> {
        match self {
            Reported::Version(v) => Some(v.release.clone()),
            Reported::Release010 => Some("0.1.0".into()),
            Reported::Unreachable(_) => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Reported::Version(v) => format!("runs {} (format {})", v.release, v.format),
            Reported::Release010 => "runs 0.1.0 (format 1)".into(),
            Reported::Unreachable(why) => format!("did not answer ({why})"),
        }
    }
}

/// The members' versions as this node last heard them, and a connection
/// pool of its own for asking (a 0.1.0 node drops the connection it cannot
/// decode, which must not break the Raft traffic on the shared one).
pub struct MemberVersions {
    peers: Peers,
    known: Mutex<BTreeMap<u64, Reported>>,
}

impl MemberVersions {
    /// `peers` gives the routes and the TLS of the node's own connections.
    pub fn new(peers: &PeersConfig) -> Self {
        MemberVersions {
            peers: Peers::new(PeersConfig {
                routes: peers.routes.clone(),
                tls: peers.tls.clone(),
                ..PeersConfig::default()
            }),
            known: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn get(&self, id: u64) -> Option<Reported> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner).get(&id).cloned()
    }

    /// Asks the member at `rpc_addr` now, and remembers the answer.
    pub async fn ask(&self, id: u64, rpc_addr: &str) -> Reported {
        let reported = match self.peers.node_version(rpc_addr).await {
            Ok(Some(v)) => Reported::Version(v),
            Ok(None) => Reported::Release010,
            Err(e) => Reported::Unreachable(e.to_string()),
        };
        self.known.lock().unwrap_or_else(PoisonError::into_inner).insert(id, reported.clone());
        reported
    }

    /// Forgets members no longer in `ids`.
    pub fn retain(&self, ids: &[u64]) {
        self.known.lock().unwrap_or_else(PoisonError::into_inner).retain(|id, _| ids.contains(id));
    }
}

/// What `skein cluster finalize` should do.
#[derive(Debug, PartialEq, Eq)]
pub enum Finalize {
    /// Propose `SetFormat { format }`.
    Raise(u32),
    /// The cluster is already at the format every member reads.
    AlreadyAt(u32),
    /// These members must be upgraded first: (id, what they said).
    Upgrade(Vec<(u64, String)>),
}

/// Decides a finalize: raise the cluster to the newest format *every*
/// member reads, once that is past the cluster's and this build's newest.
pub fn finalize_decision(cluster_format: u32, latest: u32, members: &BTreeMap<u64, Reported>) -> Finalize {
    let behind: Vec<(u64, String)> =
        members.iter().filter(|(_, r)| r.format() < latest).map(|(id, r)| (*id, r.describe())).collect();
    if !behind.is_empty() {
        return Finalize::Upgrade(behind);
    }
    if cluster_format >= latest {
        Finalize::AlreadyAt(cluster_format)
    } else {
        Finalize::Raise(latest)
    }
}

/// The 409 for a command the cluster's format does not allow yet: it names
/// the members to upgrade (as far as this node knows them), else says to
/// finalize.
pub fn needs_format_message(
    command: &str,
    needs: u32,
    cluster_format: u32,
    members: &BTreeMap<u64, Option<Reported>>,
) -> String {
    let head = format!(
        "{command} needs stored format {needs} (skein {}), and this cluster is at format {cluster_format}",
        format::release_of(needs)
    );
    let behind: Vec<String> = members
        .iter()
        .filter_map(|(id, r)| match r {
            Some(r) if r.format() >= needs => None,
            Some(r) => Some(format!("node {id} {}", r.describe())),
            None => Some(format!("node {id} has not reported its version yet")),
        })
        .collect();
    if behind.is_empty() {
        format!("{head}: every member runs a release that knows it; run `skein cluster finalize` (there is no way back to older releases after it)")
    } else {
        format!(
            "{head}: upgrade {} to skein {} or later, then run `skein cluster finalize`",
            behind.join(", "),
            format::release_of(needs)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(release: &str, format: u32) -> Reported {
        Reported::Version(NodeVersion { release: release.into(), format })
    }

    #[test]
    fn finalize_waits_for_every_member() {
        let all_new = BTreeMap::from([(1, v("0.2.0", 2)), (2, v("0.2.0", 2)), (3, v("0.2.0", 2))]);
        assert_eq!(finalize_decision(1, 2, &all_new), Finalize::Raise(2));
        assert_eq!(finalize_decision(2, 2, &all_new), Finalize::AlreadyAt(2));

        let mixed = BTreeMap::from([(1, v("0.2.0", 2)), (2, Reported::Release010), (3, v("0.2.0", 1))]);
        let Finalize::Upgrade(behind) = finalize_decision(1, 2, &mixed) else { panic!("finalized a mixed cluster") };
        assert_eq!(behind.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![2, 3]);
        assert!(behind[0].1.contains("0.1.0"), "{behind:?}");

        let silent = BTreeMap::from([(1, v("0.2.0", 2)), (2, Reported::Unreachable("refused".into()))]);
        assert!(
            matches!(finalize_decision(1, 2, &silent), Finalize::Upgrade(b) if b[0].0 == 2),
            "a member that cannot be asked counts as 0.1.0"
        );
    }

    #[test]
    fn the_409_names_the_nodes_or_says_to_finalize() {
        let mixed = BTreeMap::from([(1, Some(v("0.2.0", 2))), (2, Some(Reported::Release010)), (3, None)]);
        let m = needs_format_message("redrive queue", 2, 1, &mixed);
        assert!(m.contains("node 2 runs 0.1.0") && m.contains("node 3 has not reported"), "{m}");
        assert!(!m.contains("node 1"), "{m}");
        assert!(m.contains("then run `skein cluster finalize`"), "{m}");

        let ready = BTreeMap::from([(1, Some(v("0.2.0", 2))), (2, Some(v("0.2.0", 2)))]);
        let m = needs_format_message("redrive queue", 2, 1, &ready);
        assert!(m.contains("run `skein cluster finalize`") && !m.contains("upgrade"), "{m}");
    }
}
