//! This node's answers to the RPCs other nodes send it: Raft's own, passed
//! to openraft, and the node-to-node calls, which need the leader.

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use skein_raft::config::TypeConfig;
use skein_raft::fsm::{Command, HeartbeatAck, Rejection, Response, TaskStatus};
use skein_transport::{
    CompleteRequest, ExchangeReply, ExchangeRequest, Handler, HeartbeatRequest, JoinRequest, LeaseRequest, LeasedTask,
    NodeError, NodeVersion, WorkerAnswer, WorkerReadRequest,
};

use crate::cluster::app::SharedApp;

/// The RPC handler: a thin layer over [`crate::cluster::app::App`].
pub struct RpcHandler(pub SharedApp);

impl RpcHandler {
    fn not_leader(&self) -> Option<NodeError> {
        if self.0.is_leader() {
            return None;
        }
        let (leader_id, leader) = self.0.leader().unzip();
        Some(NodeError::NotLeader { leader_id, leader })
    }
}

impl Handler for RpcHandler {
    /// A removed node's certificate stays valid until it expires: its
    /// connections are refused from the `RemoveNode` on.
    fn admits(&self, node: u64) -> bool {
        !self.0.store.state().is_removed(node)
    }

    fn is_member(&self, node: u64) -> bool {
        self.0.raft.metrics().borrow().membership_config.membership().get_node(&node).is_some()
    }

    async fn append_entries(
        &self,
        req: AppendEntriesRequest<TypeConfig>,
    ) -> Result<AppendEntriesResponse<u64>, RaftError<u64>> {
        self.0.raft.append_entries(req).await
    }

    async fn vote(&self, req: VoteRequest<u64>) -> Result<VoteResponse<u64>, RaftError<u64>> {
        self.0.raft.vote(req).await
    }

    async fn install_snapshot(
        &self,
        req: InstallSnapshotRequest<TypeConfig>,
    ) -> Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>> {
        self.0.raft.install_snapshot(req).await
    }

    async fn write(&self, command: Command) -> Result<Response, NodeError> {
        // Forwarded once only: the proposer answers NotLeader if we lost
        // leadership meanwhile, and the sender retries elsewhere.
        self.0.check_format(&command)?;
        self.0.proposer.propose(command).await
    }

    async fn lease(&self, req: LeaseRequest) -> Result<Vec<LeasedTask>, NodeError> {
        if let Some(e) = self.not_leader() {
            return Err(e);
        }
        self.0.lease_on_leader(req).await
    }

    async fn heartbeat(&self, req: HeartbeatRequest) -> Result<HeartbeatAck, NodeError> {
        self.0.heartbeat_on_leader(req).await
    }

    async fn complete(&self, req: CompleteRequest) -> Result<Vec<Result<TaskStatus, Rejection>>, NodeError> {
        self.0.complete_on_leader(req).await
    }

    async fn read_index(&self) -> Result<u64, NodeError> {
        let log_id = self.0.raft.ensure_linearizable().await?;
        Ok(log_id.map_or(0, |l| l.index))
    }

    async fn join(&self, req: JoinRequest) -> Result<(), NodeError> {
        if let Some(e) = self.not_leader() {
            return Err(e);
        }
        self.0.join_on_leader(req).await
    }

    async fn leave(&self, id: u64) -> Result<(), NodeError> {
        if let Some(e) = self.not_leader() {
            return Err(e);
        }
        self.0.leave_on_leader(id).await
    }

    fn node_version(&self) -> NodeVersion {
        self.0.node_version()
    }

    async fn campaign(&self) -> Result<(), NodeError> {
        self.0.campaign().await
    }

    async fn worker_read(&self, req: WorkerReadRequest) -> Result<WorkerAnswer, NodeError> {
        if self.0.store.state().is_removed(req.node) {
            return Err(NodeError::Removed(req.node));
        }
        self.0.worker_read(&req.read).await
    }

    async fn exchange(&self, req: ExchangeRequest) -> Result<ExchangeReply, NodeError> {
        if let Some(e) = self.not_leader() {
            return Err(e);
        }
        Ok(self.0.exchange_on_leader(req).await)
    }
}
