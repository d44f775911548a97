//! openraft's type configuration for skein: what a log entry carries, what
//! applying one answers, and how a node is addressed.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::fsm::{Response, Stamped};

/// How to reach a cluster member. Stored in the Raft membership, so every
/// node learns every other node's addresses from the log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkeinNode {
    /// The tarpc address (Raft and node-to-node RPCs), `host:port`.
    pub rpc_addr: String,
    /// The HTTP API address, `host:port`.
    pub http_addr: String,
}

impl fmt::Display for SkeinNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rpc={} http={}", self.rpc_addr, self.http_addr)
    }
}

openraft::declare_raft_types!(
    /// skein's Raft types. Snapshots are files, so that a large state is
    /// streamed to a lagging follower instead of held in memory.
    pub TypeConfig:
        D = Stamped,
        R = Response,
        NodeId = u64,
        Node = SkeinNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<u64>;
pub type Vote = openraft::Vote<u64>;
pub type StoredMembership = openraft::StoredMembership<u64, SkeinNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<u64, SkeinNode>;
pub type StorageError = openraft::StorageError<u64>;
