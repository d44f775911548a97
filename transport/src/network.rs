//! openraft's network over [`Peers`]: [`Network`] is the
//! `RaftNetworkFactory`, [`PeerNetwork`] the client to one target.
//!
//! One explicit mapping from a call's failure to openraft's `RPCError`:
//!
//! | [`CallError`] | `RPCError` | openraft then |
//! | --- | --- | --- |
//! | `Unreachable` (dial refused, failed, or in backoff) | `Unreachable` | backs off before retrying |
//! | `Disconnected` (connection lost mid-call) | `Network` | retries at once; the retry dials again, and if the peer is down that dial answers `Unreachable` |
//! | `Timeout` (the `hard_ttl` deadline passed) | `Timeout` | retries (an append) or counts no vote |
//! | `TooLarge` (the frame would exceed the cap) | `PayloadTooLarge` (appends: half the entries) | splits the append |
//! | `Remote` (the peer was too busy to take the call) | `Unreachable` | backs off |
//!
//! A `RaftError` the peer answers with is `RPCError::RemoteError`, carrying
//! the target's id and node.
//!
//! Snapshots use openraft 0.9's chunked transfer: the default
//! `full_snapshot` reads the snapshot file in chunks and calls
//! `install_snapshot` for each, every chunk with its own `hard_ttl`.

use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use skein_raft::config::{SkeinNode, TypeConfig};
use tracing::trace;

use crate::client::{CallError, Peers};

/// openraft's error for an RPC to a skein node.
pub type RaftRpcError<E = openraft::error::Infallible> = RPCError<u64, SkeinNode, RaftError<u64, E>>;

/// The `RaftNetworkFactory`: hands openraft a [`PeerNetwork`] per target,
/// all sharing one [`Peers`] (and so one connection per peer, also used by
/// the node-to-node calls).
#[derive(Debug, Clone)]
pub struct Network {
    /// This node's id: openraft's `Timeout` error names both ends.
    id: u64,
    peers: Peers,
}

impl Network {
    /// The network of node `id`, calling through `peers`.
    pub fn new(id: u64, peers: Peers) -> Self {
        Network { id, peers }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerNetwork;

    /// Dials nothing: the connection is made on the first RPC.
    async fn new_client(&mut self, target: u64, node: &SkeinNode) -> PeerNetwork {
        PeerNetwork { id: self.id, target, node: node.clone(), peers: self.peers.clone() }
    }
}

/// openraft's client to one target node.
#[derive(Debug, Clone)]
pub struct PeerNetwork {
    /// This node's id.
    id: u64,
    /// The target's id.
    target: u64,
    /// The target's addresses, as the membership has them.
    node: SkeinNode,
    peers: Peers,
}

impl PeerNetwork {
    /// Maps a transport failure of an RPC of kind `action` (see the table
    /// in the module's docs). `entries` is the number of entries of an
    /// append, to hint how to split one that was too large.
    fn transport_error<E: std::error::Error>(
        &self,
        action: RPCTypes,
        entries: usize,
        error: CallError,
    ) -> RPCError<u64, SkeinNode, E> {
        trace!(peer = %self.node.rpc_addr, node_id = self.target, rpc = %action, error = %error, "raft rpc failed");
        match error {
            CallError::Unreachable { .. } | CallError::Remote { .. } => RPCError::Unreachable(Unreachable::new(&error)),
            CallError::Disconnected { .. } => RPCError::Network(NetworkError::new(&error)),
            CallError::Timeout { after, .. } => {
                RPCError::Timeout(Timeout { action, id: self.id, target: self.target, timeout: after })
            }
            CallError::TooLarge { .. } => match action {
                RPCTypes::AppendEntries => {
                    RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint((entries as u64 / 2).max(1)))
                }
                // Votes are tiny and snapshot chunks have a fixed size: a
                // frame that does not fit is a configuration error that a
                // retry cannot cure, but openraft may try other chunk sizes.
                _ => RPCError::Network(NetworkError::new(&error)),
            },
        }
    }

    /// Wraps the target's own `RaftError`.
    fn remote_error<E: std::error::Error>(
        &self,
        error: RaftError<u64, E>,
    ) -> RPCError<u64, SkeinNode, RaftError<u64, E>> {
        RPCError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), error))
    }
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RaftRpcError> {
        let entries = rpc.entries.len();
        match self.peers.append_entries(&self.node.rpc_addr, rpc, option.hard_ttl()).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(self.remote_error(e)),
            Err(e) => Err(self.transport_error(RPCTypes::AppendEntries, entries, e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RaftRpcError<InstallSnapshotError>> {
        match self.peers.install_snapshot(&self.node.rpc_addr, rpc, option.hard_ttl()).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(self.remote_error(e)),
            Err(e) => Err(self.transport_error(RPCTypes::InstallSnapshot, 0, e)),
        }
    }

    async fn vote(&mut self, rpc: VoteRequest<u64>, option: RPCOption) -> Result<VoteResponse<u64>, RaftRpcError> {
        match self.peers.vote(&self.node.rpc_addr, rpc, option.hard_ttl()).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(self.remote_error(e)),
            Err(e) => Err(self.transport_error(RPCTypes::Vote, 0, e)),
        }
    }

    /// How long openraft waits before retrying a peer that was
    /// `Unreachable`: a constant 200 ms, well under the dial backoff's 1 s
    /// cap (a dial in backoff fails at once, so retrying sooner costs
    /// nothing).
    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> PeerNetwork {
        PeerNetwork {
            id: 1,
            target: 2,
            node: SkeinNode { rpc_addr: "127.0.0.1:9".into(), http_addr: String::new() },
            peers: Peers::default(),
        }
    }

    fn map(action: RPCTypes, entries: usize, error: CallError) -> RaftRpcError {
        net().transport_error(action, entries, error)
    }

    #[test]
    fn transport_failures_map_as_documented() {
        let peer = || "127.0.0.1:9".to_string();
        let unreachable = CallError::Unreachable { peer: peer(), reason: "refused".into() };
        assert!(matches!(map(RPCTypes::Vote, 0, unreachable), RPCError::Unreachable(_)));

        let busy = CallError::Remote { peer: peer(), error: crate::NodeError::Unavailable("busy".into()) };
        assert!(matches!(map(RPCTypes::Vote, 0, busy), RPCError::Unreachable(_)));

        let lost = CallError::Disconnected { peer: peer(), reason: "reset".into() };
        assert!(matches!(map(RPCTypes::AppendEntries, 3, lost), RPCError::Network(_)));

        let slow = CallError::Timeout { peer: peer(), after: Duration::from_millis(150) };
        match map(RPCTypes::AppendEntries, 3, slow) {
            RPCError::Timeout(t) => {
                assert_eq!(
                    (t.action, t.id, t.target, t.timeout),
                    (RPCTypes::AppendEntries, 1, 2, Duration::from_millis(150))
                );
            }
            other => panic!("{other:?}"),
        }

        let big = || CallError::TooLarge { peer: peer(), reason: "frame size too big".into() };
        match map(RPCTypes::AppendEntries, 10, big()) {
            RPCError::PayloadTooLarge(p) => assert_eq!(p.entries_hint(), 5),
            other => panic!("{other:?}"),
        }
        match map(RPCTypes::AppendEntries, 1, big()) {
            RPCError::PayloadTooLarge(p) => assert_eq!(p.entries_hint(), 1),
            other => panic!("{other:?}"),
        }
        assert!(matches!(map(RPCTypes::Vote, 0, big()), RPCError::Network(_)));
    }
}
