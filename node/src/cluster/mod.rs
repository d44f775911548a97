//! This node as a member of the cluster: the shared context and the one
//! place that routes a call to the leader ([`app`], deciding with
//! [`routing`]), the leader's batching
//! write path ([`proposer`]), its timed duties ([`leader`]), the answers to
//! other nodes' RPCs ([`rpc`]), membership seen from this node
//! ([`membership`]), the members' versions and the version gate
//! ([`versions`], [`version_watch`]), and the planned leader handover
//! ([`handover`]); and the worker's side of it: [`host`] (what the worker
//! runs on, a member or a worker node), [`remote`] (a worker node's link to
//! the members) and [`reads`] (a member's answers to a worker's reads).

pub mod app;
pub mod handover;
pub mod host;
pub mod leader;
pub mod membership;
pub mod proposer;
pub mod reads;
pub mod remote;
pub mod routing;
pub mod rpc;
pub mod version_watch;
pub mod versions;
