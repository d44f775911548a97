//! What nodes say to each other: the tarpc service, its request and
//! response types, and the error a node answers with.
//!
//! Two kinds of call share one service (and one connection per peer):
//!
//! - the Raft RPCs, which carry openraft's own messages and errors
//!   unchanged;
//! - the node-to-node calls: a follower forwards a client write to the
//!   leader, a worker leases tasks, heartbeats and reports completions to the
//!   leader, a node asks the leader for a read index, joins or leaves.
//!
//! Everything here goes over the wire in bincode 2 (see [`crate::codec`]),
//! so these types follow the log's rule: enums are append-only, and a field
//! never changes shape.

use openraft::error::{
    ChangeMembershipError, CheckIsLeaderError, ClientWriteError, Fatal, ForwardToLeader, InstallSnapshotError,
    RaftError,
};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::{Deserialize, Serialize};
use skein_raft::config::{SkeinNode, TypeConfig};
use skein_raft::fsm::{
    Command, Completion, Granted, HeartbeatAck, HeldLease, NodeId, Rejection, Response, TaskId, TaskStatus,
};

/// The service every node serves on its `rpc_addr`.
///
/// The node implements [`crate::Handler`], not this trait: tarpc's server
/// trait gives no `Send` bound on its futures, so a generic server could not
/// spawn them; the handler's methods promise `Send`, and a private adapter
/// implements this trait over it.
#[tarpc::service]
pub trait SkeinRpc {
    /// Raft: replicate log entries (and heartbeat).
    async fn append_entries(
        req: AppendEntriesRequest<TypeConfig>,
    ) -> Result<AppendEntriesResponse<u64>, RaftError<u64>>;
    /// Raft: ask for a vote.
    async fn vote(req: VoteRequest<u64>) -> Result<VoteResponse<u64>, RaftError<u64>>;
    /// Raft: one chunk of a snapshot (openraft 0.9's chunked transfer).
    async fn install_snapshot(
        req: InstallSnapshotRequest<TypeConfig>,
    ) -> Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>;
    /// A follower forwards a client write to the leader, which stamps,
    /// commits and applies it and answers with the state machine's response.
    async fn write(command: Command) -> Result<Response, NodeError>;
    /// A worker asks the leader for up to `max` tasks, waiting up to
    /// `wait_ms` when none is eligible (long poll).
    async fn lease(req: LeaseRequest) -> Result<Vec<LeasedTask>, NodeError>;
    /// A worker renews every lease it holds, once per interval.
    async fn heartbeat(req: HeartbeatRequest) -> Result<HeartbeatAck, NodeError>;
    /// A worker reports outcomes, each under its fencing token; one result per
    /// completion, in order.
    async fn complete(req: CompleteRequest) -> Result<Vec<Result<TaskStatus, Rejection>>, NodeError>;
    /// The leader confirms it still leads (a round to a quorum) and answers
    /// with the log index a linearizable read must see applied first.
    async fn read_index() -> Result<u64, NodeError>;
    /// Add a node to the cluster (as a learner; the leader promotes it).
    async fn join(req: JoinRequest) -> Result<(), NodeError>;
    /// Remove a node from the cluster.
    async fn leave(id: u64) -> Result<(), NodeError>;
    /// The node's release and the newest stored format it reads and writes.
    /// Added in 0.2.0: a 0.1.0 node cannot decode this call and drops the
    /// connection, which is how a caller tells it is 0.1.0 (ask on a
    /// connection of its own, see [`crate::Peers::node_version`]).
    async fn node_version() -> NodeVersion;
    /// The leader hands leadership over (a planned restart): the callee,
    /// an up-to-date voter, starts an election now. Added in 0.2.0.
    async fn campaign() -> Result<(), NodeError>;
    /// A worker (a node outside Raft, which holds no state) reads what its
    /// transforms need from a member's applied state, after a read barrier.
    /// Added in 0.5.0: an older member drops the connection.
    async fn worker_read(req: WorkerReadRequest) -> Result<WorkerAnswer, NodeError>;
    /// One round of a worker's protocol with the leader: its outcomes, its
    /// renewals and its next lease in one call (see [`ExchangeRequest`]).
    /// Added in 0.6.0: an older member drops the connection, and a worker
    /// then goes back to `lease`, `heartbeat` and `complete`.
    async fn exchange(req: ExchangeRequest) -> Result<ExchangeReply, NodeError>;
}

/// A worker's round with the leader: what `complete`, `heartbeat` and
/// `lease` carry, any of them, in one call. The leader proposes the
/// outcomes, the renewals and the lease together (one Raft entry when they
/// meet in its write batch), and answers each part on its own, so that one
/// part failing never loses another's answer (a lease granted while the
/// outcomes' write timed out still reaches the worker).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExchangeRequest {
    /// The worker's node id (its certificate must allow it, under TLS).
    pub node: NodeId,
    /// Its slots, for the scheduler (as in a heartbeat).
    pub slots: u32,
    /// Outcomes of finished tasks, each under its token; empty: none.
    pub completions: Vec<Completion>,
    /// `Some`: a heartbeat, every lease the worker still runs; `None`: no
    /// renewal in this round.
    pub held: Option<Vec<HeldLease>>,
    /// Queues to lease from (empty: all).
    pub queues: Vec<String>,
    /// Lease up to this many more tasks; 0: none.
    pub max: u32,
    /// How long the leader may wait for a task when nothing is eligible;
    /// it waits only in a round that reports nothing, so that outcomes
    /// and renewals are answered at once.
    pub wait_ms: u64,
}

/// The leader's answer to an [`ExchangeRequest`], part for part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExchangeReply {
    /// One result per completion, in order (empty when none were sent).
    pub completed: Result<Vec<Result<TaskStatus, Rejection>>, NodeError>,
    /// The heartbeat's answer, when the round carried one.
    pub heartbeat: Option<Result<HeartbeatAck, NodeError>>,
    /// The tasks leased (empty when none were asked for or none was free).
    pub leased: Result<Vec<LeasedTask>, NodeError>,
}

impl ExchangeReply {
    /// Every error of the reply made fit for the wire (see
    /// [`NodeError::for_the_wire`]).
    pub fn for_the_wire(self) -> ExchangeReply {
        ExchangeReply {
            completed: self.completed.map_err(NodeError::for_the_wire),
            heartbeat: self.heartbeat.map(|h| h.map_err(NodeError::for_the_wire)),
            leased: self.leased.map_err(NodeError::for_the_wire),
        }
    }
}

/// A worker's read: see [`SkeinRpc::worker_read`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerReadRequest {
    /// The worker asking (its certificate must name it, under TLS).
    pub node: NodeId,
    pub read: WorkerRead,
}

/// What a worker's transform reads from the replicated state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerRead {
    /// A plan's catalog document, with the policy to check it against.
    Plan { entity_ref: String },
    /// The exec allow list and data roots.
    Policy,
    /// What a partitioned run's planner needs about its own task.
    Run { task: TaskId },
    /// A partitioned run's partitions, with the results of those that succeeded.
    Results { commit: TaskId },
}

/// The answer to a [`WorkerRead`], variant for variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WorkerAnswer {
    Plan { document: Option<String>, policy: skein_raft::format::v4::Policy<'static> },
    Policy(skein_raft::format::v4::Policy<'static>),
    Run(RunInfo),
    Results(Vec<PartitionResult>),
}

/// A planner's task, as [`WorkerRead::Run`] answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The task's idempotency key, if it has one.
    pub key: Option<String>,
    /// The priority new tasks of the run inherit.
    pub priority: i32,
    /// The state machine's batch and dependency limits.
    pub max_batch: u32,
    pub max_depends_on: u32,
    /// A run planned already (a retried planner): its partition count and commit task.
    pub planned: Option<(usize, u64)>,
}

/// One partition task of a run, as [`WorkerRead::Results`] answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionResult {
    pub task: TaskId,
    pub status: TaskStatus,
    /// Its result, once it succeeded.
    pub result: Option<String>,
}

/// What a node runs: see [`SkeinRpc::node_version`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeVersion {
    /// The release, `0.2.0`.
    pub release: String,
    /// The newest stored format (`skein_raft::format`) it can read and write.
    pub format: u32,
}

/// A worker's request for tasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRequest {
    /// The node that will run the tasks (the lease holder).
    pub node: NodeId,
    /// Queues to lease from; empty means all.
    pub queues: Vec<String>,
    /// At most this many tasks (the worker's free slots).
    pub max: u32,
    /// How long the leader may hold the request when nothing is eligible,
    /// in milliseconds; 0 answers at once. The client's deadline is this
    /// plus a margin.
    pub wait_ms: u64,
}

/// A granted lease and what the worker needs to run it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeasedTask {
    /// The lease as the state machine granted it (task, token, expiry).
    pub grant: Granted,
    /// The task's payload (JSON text), read from the leader's cold store:
    /// payloads are not in the replicated in-memory state.
    pub payload: String,
}

/// One heartbeat of one worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    /// The worker's node id.
    pub node: NodeId,
    /// Concurrent transforms it runs (its capacity, for the scheduler).
    pub slots: u32,
    /// Every lease it still runs, with its token and progress.
    pub held: Vec<HeldLease>,
}

/// Outcomes of leased tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompleteRequest {
    /// The worker's node id.
    pub node: NodeId,
    /// One per finished task, each under the token it was leased with.
    pub completions: Vec<Completion>,
}

/// A node asking to become a cluster member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// Its Raft node id.
    pub id: NodeId,
    /// Its addresses, stored in the membership.
    pub node: SkeinNode,
}

/// Why a node could not do what a node-to-node call asked. Raft RPCs answer
/// with openraft's own `RaftError` instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum NodeError {
    /// The call needs the leader and this node is not it. `leader_id` and
    /// `leader` name the leader this node knows of, if any: retry there.
    #[error("not the leader{}", leader_hint(.leader_id, .leader))]
    NotLeader {
        /// The current leader's id, when known.
        leader_id: Option<u64>,
        /// The current leader's addresses, when known.
        leader: Option<SkeinNode>,
    },
    /// The cluster cannot serve the call now (no quorum, a timeout, a
    /// membership change in progress, shutting down). Retrying later may
    /// succeed.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The request itself is wrong (a malformed argument, an unknown node);
    /// retrying it unchanged will fail again.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The remote node failed (storage error, bug). Its log has the details.
    #[error("internal error: {0}")]
    Internal(String),
    /// The calling node was removed from the cluster: the leader will lease,
    /// renew and record nothing more for it. It should stop.
    #[error("node {0} was removed from the cluster")]
    Removed(NodeId),
    /// The command needs a newer stored format than the cluster's: some
    /// members must be upgraded, or the cluster finalized. Added in 0.2.0,
    /// sent only to a node that sent a 0.2.0 command.
    #[error("{message}")]
    NeedsFormat {
        /// The format the command needs.
        needs: u32,
        /// The cluster's format.
        cluster: u32,
        /// What to do, naming the nodes to upgrade.
        message: String,
    },
    /// The call was sent, or proposed, and no answer came back: it may or
    /// may not have taken effect (a timeout waiting for the majority, a
    /// connection lost with the call in flight). Retry with an idempotency
    /// key. Node-local, never sent between nodes (0.2.0 cannot decode it):
    /// a node answering an RPC sends it as [`NodeError::Unavailable`]
    /// ([`NodeError::for_the_wire`]), and a node that forwarded a write
    /// reads a remote `Unavailable` as unknown, since it was sent.
    #[error("outcome unknown: {0}")]
    #[serde(skip)]
    OutcomeUnknown(String),
}

fn leader_hint(leader_id: &Option<u64>, leader: &Option<SkeinNode>) -> String {
    match (leader_id, leader) {
        (Some(id), Some(node)) => format!(" (leader is node {id} at {})", node.rpc_addr),
        (Some(id), None) => format!(" (leader is node {id})"),
        (None, _) => " (no leader known)".to_string(),
    }
}

impl NodeError {
    /// Whether the same call may succeed if retried later or elsewhere
    /// (another leader, after an election).
    pub fn is_retryable(&self) -> bool {
        matches!(self, NodeError::NotLeader { .. } | NodeError::Unavailable(_) | NodeError::OutcomeUnknown(_))
    }

    /// This error as an RPC answer carries it: what every release decodes.
    pub fn for_the_wire(self) -> NodeError {
        match self {
            NodeError::OutcomeUnknown(m) => NodeError::Unavailable(format!("outcome unknown: {m}")),
            other => other,
        }
    }
}

impl From<ForwardToLeader<u64, SkeinNode>> for NodeError {
    fn from(f: ForwardToLeader<u64, SkeinNode>) -> Self {
        NodeError::NotLeader { leader_id: f.leader_id, leader: f.leader_node }
    }
}

impl From<Fatal<u64>> for NodeError {
    fn from(f: Fatal<u64>) -> Self {
        match f {
            Fatal::Stopped => NodeError::Unavailable("raft is shutting down".to_string()),
            other => NodeError::Internal(other.to_string()),
        }
    }
}

impl From<ChangeMembershipError<u64>> for NodeError {
    fn from(e: ChangeMembershipError<u64>) -> Self {
        match e {
            ChangeMembershipError::InProgress(_) => NodeError::Unavailable(e.to_string()),
            ChangeMembershipError::EmptyMembership(_) | ChangeMembershipError::LearnerNotFound(_) => {
                NodeError::Invalid(e.to_string())
            }
        }
    }
}

impl From<RaftError<u64, ClientWriteError<u64, SkeinNode>>> for NodeError {
    fn from(e: RaftError<u64, ClientWriteError<u64, SkeinNode>>) -> Self {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => f.into(),
            RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => c.into(),
            RaftError::Fatal(f) => f.into(),
        }
    }
}

impl From<RaftError<u64, CheckIsLeaderError<u64, SkeinNode>>> for NodeError {
    fn from(e: RaftError<u64, CheckIsLeaderError<u64, SkeinNode>>) -> Self {
        match e {
            RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)) => f.into(),
            RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)) => NodeError::Unavailable(q.to_string()),
            RaftError::Fatal(f) => f.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_outcome_travels_as_unavailable() {
        let e = NodeError::OutcomeUnknown("no majority answered in time".into());
        assert!(e.is_retryable());
        assert_eq!(e.for_the_wire(), NodeError::Unavailable("outcome unknown: no majority answered in time".into()));
        let other = NodeError::Invalid("x".into());
        assert_eq!(other.clone().for_the_wire(), other);
        // It cannot be sent: a node that tried would fail to encode, not
        // send bytes an older release misreads.
        let frame = crate::codec::encode(&Err::<(), _>(NodeError::OutcomeUnknown("x".into())));
        assert!(frame.is_err());
    }

    #[test]
    fn errors_read_well() {
        let e = NodeError::NotLeader {
            leader_id: Some(2),
            leader: Some(SkeinNode { rpc_addr: "h:1".into(), http_addr: "h:2".into() }),
        };
        assert_eq!(e.to_string(), "not the leader (leader is node 2 at h:1)");
        assert_eq!(
            NodeError::NotLeader { leader_id: None, leader: None }.to_string(),
            "not the leader (no leader known)"
        );
        assert!(e.is_retryable());
        assert!(!NodeError::Invalid("x".into()).is_retryable());
    }

    #[test]
    fn raft_errors_map_to_node_errors() {
        let stopped: NodeError = RaftError::<u64, ClientWriteError<u64, SkeinNode>>::Fatal(Fatal::Stopped).into();
        assert!(matches!(stopped, NodeError::Unavailable(_)));
        let forward: NodeError = RaftError::<u64, CheckIsLeaderError<u64, SkeinNode>>::APIError(
            CheckIsLeaderError::ForwardToLeader(ForwardToLeader { leader_id: Some(3), leader_node: None }),
        )
        .into();
        assert_eq!(forward, NodeError::NotLeader { leader_id: Some(3), leader: None });
    }
}
