//! skein-transport: how skein nodes talk to each other, over TCP with tarpc.
//!
//! - [`rpc`]: the [`SkeinRpc`] tarpc service (the Raft RPCs and the
//!   node-to-node calls: forwarded writes, lease, heartbeat, complete, read
//!   index, join, leave), their request types and [`NodeError`];
//! - [`codec`]: the wire format, length-delimited frames of bincode 2
//!   (serde mode), and its size cap;
//! - [`server`]: the [`Handler`] a node implements and [`serve`], the accept
//!   loop (a task per connection, a task per request); [`serve_with`] adds
//!   mutual TLS ([`ServerTls`]), [`serve_limited`] limits on connections;
//! - [`client`]: [`Peers`], one lazily dialled connection per peer with
//!   backoff and a deadline on every call (over TLS with
//!   [`PeersConfig::tls`]), and [`CallError`];
//! - [`network`]: openraft's `RaftNetworkFactory` and `RaftNetwork` over
//!   [`Peers`], with the one mapping from transport failures to openraft's
//!   `RPCError`.
//!
//! The flow of a forwarded write: follower [`Peers::write`] → tarpc over
//! TCP → the leader's [`serve`] → its [`Handler::write`] → Raft.

pub mod client;
pub mod codec;
pub mod network;
pub mod rpc;
pub mod server;

pub use client::{CallError, Peers, PeersConfig};
pub use network::{Network, PeerNetwork};
pub use rpc::{
    CompleteRequest, ExchangeReply, ExchangeRequest, HeartbeatRequest, JoinRequest, LeaseRequest, LeasedTask,
    NodeError, NodeVersion, PartitionResult, RunInfo, SkeinRpc, SkeinRpcClient, WorkerAnswer, WorkerRead,
    WorkerReadRequest,
};
pub use server::{serve, serve_limited, serve_with, Handler, ServerTls};
/// The TLS library the transport uses (its modes, a node's certificates).
pub use skein_tls;
