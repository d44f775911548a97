//! The server side: what a node implements ([`Handler`]) and the accept loop
//! that serves it ([`serve`]).
//!
//! Every connection is one task and every request one more, so a long-poll
//! lease never holds up the Raft RPCs that share its connection. Errors are
//! logged where the task that met them was spawned.
//!
//! With TLS ([`serve_with`], [`ServerTls`]) every connection first goes
//! through `skein_tls::accept` (in its own task, so a slow handshake holds
//! up no one), and the peer's certificate decides what it may do: a
//! certificate is good only for the node id it names (a request claiming
//! another sender closes the connection) and only while
//! [`Handler::admits`] that id. The wire format of errors is frozen, so a
//! refusal is a closed connection, never a new error.
//!
//! [`serve_limited`] holds at most what a [`ConnectionLimiter`] allows
//! open (per remote address and in all); a connection over it is closed
//! as soon as it is accepted, before any handshake.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use skein_raft::config::TypeConfig;
use skein_raft::fsm::{Command, HeartbeatAck, Rejection, Response, TaskStatus};
use skein_tls::rustls::ServerConfig;
use skein_tls::{ConnectionLimiter, MaybeTls, NodeIdentity, NodeTls, TlsMode};
use tarpc::context::Context;
use tarpc::server::{BaseChannel, Channel};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::codec;
use crate::rpc::{
    CompleteRequest, ExchangeReply, ExchangeRequest, HeartbeatRequest, JoinRequest, LeaseRequest, LeasedTask,
    NodeError, NodeVersion, SkeinRpc, WorkerAnswer, WorkerReadRequest,
};

/// At most this many requests of one connection run at once; more are
/// refused with a server error until some finish (the client sees
/// [`crate::CallError::Remote`] with [`NodeError::Unavailable`]).
pub const MAX_REQUESTS_PER_CONNECTION: usize = 1024;

/// What a node answers to the calls of [`SkeinRpc`]. Implemented by the
/// node over its `Raft` handle and state machine; a fake in tests.
///
/// Every method may run concurrently with any other (each request is its
/// own task), and its future is dropped if the caller's deadline passes or
/// the server shuts down, so a method must leave nothing half done when
/// cancelled at an `.await`.
pub trait Handler: Send + Sync + 'static {
    /// Raft: pass to `Raft::append_entries`.
    fn append_entries(
        &self,
        req: AppendEntriesRequest<TypeConfig>,
    ) -> impl Future<Output = Result<AppendEntriesResponse<u64>, RaftError<u64>>> + Send;

    /// Raft: pass to `Raft::vote`.
    fn vote(&self, req: VoteRequest<u64>) -> impl Future<Output = Result<VoteResponse<u64>, RaftError<u64>>> + Send;

    /// Raft: pass to `Raft::install_snapshot` (one chunk).
    fn install_snapshot(
        &self,
        req: InstallSnapshotRequest<TypeConfig>,
    ) -> impl Future<Output = Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>> + Send;

    /// Propose a forwarded client write; [`NodeError::NotLeader`] when this
    /// node does not lead.
    fn write(&self, command: Command) -> impl Future<Output = Result<Response, NodeError>> + Send;

    /// Lease tasks to a worker, waiting up to `req.wait_ms` for some.
    fn lease(&self, req: LeaseRequest) -> impl Future<Output = Result<Vec<LeasedTask>, NodeError>> + Send;

    /// Renew a worker's leases.
    fn heartbeat(&self, req: HeartbeatRequest) -> impl Future<Output = Result<HeartbeatAck, NodeError>> + Send;

    /// Record a worker's outcomes.
    fn complete(
        &self,
        req: CompleteRequest,
    ) -> impl Future<Output = Result<Vec<Result<TaskStatus, Rejection>>, NodeError>> + Send;

    /// Confirm leadership and answer the read index.
    fn read_index(&self) -> impl Future<Output = Result<u64, NodeError>> + Send;

    /// Add a node to the membership.
    fn join(&self, req: JoinRequest) -> impl Future<Output = Result<(), NodeError>> + Send;

    /// Remove a node from the membership.
    fn leave(&self, id: u64) -> impl Future<Output = Result<(), NodeError>> + Send;

    /// The node's release and newest stored format.
    fn node_version(&self) -> NodeVersion;

    /// Start an election now (the leader hands over).
    fn campaign(&self) -> impl Future<Output = Result<(), NodeError>> + Send;

    /// Answer a worker's read from the applied state.
    fn worker_read(&self, req: WorkerReadRequest) -> impl Future<Output = Result<WorkerAnswer, NodeError>> + Send;

    /// A worker's round: outcomes, renewals and a lease in one call.
    fn exchange(&self, req: ExchangeRequest) -> impl Future<Output = Result<ExchangeReply, NodeError>> + Send;

    /// Whether a peer with a certificate of node `node` may still call (a
    /// removed node may not). Asked before every request of a TLS
    /// connection; a refused one closes the connection. Plain connections
    /// (permissive mode) are not asked.
    fn admits(&self, node: u64) -> bool {
        let _ = node;
        true
    }

    /// Whether `node` is a Raft member: a worker certificate may speak
    /// for any worker (the cluster gives workers their ids), never for a
    /// member. Unsure (the default): a member.
    fn is_member(&self, node: u64) -> bool {
        let _ = node;
        true
    }
}

/// The calls a worker certificate may make: a worker's own. Never a Raft
/// call, a membership change, a read index or a campaign.
const WORKER_RPCS: &[&str] = &["lease", "heartbeat", "complete", "exchange", "worker_read", "write", "node_version"];

/// Why a request of `rpc` claiming `sender` is refused to a peer holding a
/// worker certificate of node `cert_id`, if it is.
fn worker_refusal<H: Handler>(handler: &H, rpc: &str, sender: Option<Option<u64>>, cert_id: u64) -> Option<String> {
    if !WORKER_RPCS.contains(&rpc) {
        return Some(format!("a worker certificate may not make {rpc} calls"));
    }
    match sender {
        Some(Some(claimed)) if claimed == cert_id || !handler.is_member(claimed) => None,
        Some(Some(claimed)) => Some(format!("it claims to be node {claimed}, a member, with a worker certificate")),
        Some(None) => Some("it names no sender".to_string()),
        None => None,
    }
}

/// The node a write speaks for, when a worker certificate sends it: only
/// the commands a worker sends (handing back or leaving, for a node; a
/// planner's follow-up tasks, fenced by its lease). `Err` for any other.
fn worker_write_sender(command: &Command) -> Result<Option<u64>, String> {
    match command {
        Command::ReleaseNode { node, .. } | Command::RemoveNode { node } => Ok(Some(*node)),
        Command::EnqueueChildren { .. } => Ok(None),
        other => Err(format!("a worker certificate may not write {}", other.name())),
    }
}

/// The TLS of an RPC server: [`ServerTls::off`], or a mode and the node's
/// certificates.
#[derive(Clone, Debug)]
pub struct ServerTls {
    mode: TlsMode,
    /// `None` exactly when the mode is off.
    config: Option<Arc<ServerConfig>>,
}

impl ServerTls {
    /// Plain TCP.
    pub fn off() -> ServerTls {
        ServerTls { mode: TlsMode::Off, config: None }
    }

    /// `mode` with `tls`'s RPC config (mutual TLS; it follows reloads).
    pub fn new(mode: TlsMode, tls: &NodeTls) -> ServerTls {
        match mode {
            TlsMode::Off => ServerTls::off(),
            _ => ServerTls { mode, config: Some(tls.rpc_server_config()) },
        }
    }

    /// The mode it serves.
    pub fn mode(&self) -> TlsMode {
        self.mode
    }
}

/// Serves `handler` on `listener` until `shutdown` completes, then closes
/// every connection (requests in flight are dropped: their callers see a lost
/// connection) and returns once every connection task has ended.
///
/// Accept errors (out of file descriptors, a connection reset before it was
/// accepted) are logged and retried after a pause; they never end the loop,
/// because a node that stops serving Raft stops being a member.
pub async fn serve<H: Handler>(listener: TcpListener, handler: Arc<H>, shutdown: impl Future<Output = ()>) {
    serve_with(listener, handler, shutdown, ServerTls::off()).await;
}

/// [`serve`] with TLS as `tls` says.
pub async fn serve_with<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()>,
    tls: ServerTls,
) {
    serve_limited(listener, handler, shutdown, tls, ConnectionLimiter::unlimited()).await;
}

/// [`serve_with`], holding at most what `limiter` allows open: a
/// connection over its limits is closed at once.
pub async fn serve_limited<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()>,
    tls: ServerTls,
    limiter: ConnectionLimiter,
) {
    let local = listener.local_addr().ok();
    info!(addr = ?local, tls = %tls.mode, limits = ?limiter.limits(), "rpc server listening");
    let stop = CancellationToken::new();
    let connections = TaskTracker::new();

    tokio::select! {
        () = accept_loop(&listener, &handler, &tls, &limiter, &stop, &connections) => {}
        () = shutdown => {}
    }

    // Stop accepting before closing what was accepted.
    drop(listener);
    stop.cancel();
    connections.close();
    connections.wait().await;
    info!(addr = ?local, "rpc server stopped");
}

/// Accepts connections for ever, spawning one task each on `connections`.
async fn accept_loop<H: Handler>(
    listener: &TcpListener,
    handler: &Arc<H>,
    tls: &ServerTls,
    limiter: &ConnectionLimiter,
    stop: &CancellationToken,
    connections: &TaskTracker,
) {
    let mut pause = Duration::from_millis(10);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => {
                pause = Duration::from_millis(10);
                accepted
            }
            Err(e) => {
                warn!(error = %e, pause_ms = pause.as_millis() as u64, "accepting a connection failed");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        // Over the limits: dropped, so closed (the limiter counts and logs it).
        let Ok(slot) = limiter.try_acquire(peer.ip()) else { continue };
        let handler = Arc::clone(handler);
        let tls = tls.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            // Holds the connection's place until the task ends.
            let _slot = slot;
            debug!(peer = %peer, "connection accepted");
            let stream = match tls.config {
                None => MaybeTls::Plain(stream),
                Some(config) => {
                    let handshake = tokio::select! {
                        () = stop.cancelled() => return,
                        handshake = skein_tls::accept(stream, tls.mode, config) => handshake,
                    };
                    match handshake {
                        Ok(stream) => stream,
                        Err(e) => {
                            // A peer of another CA, a plain client of a
                            // TLS-only server, a port scanner.
                            info!(peer = %peer, error = %e, "TLS handshake failed; connection dropped");
                            return;
                        }
                    }
                }
            };
            let identity = stream.peer();
            debug!(peer = %peer, identity = ?identity, "connection ready");
            // Cancelled to close this connection (a refused request).
            let close = stop.child_token();
            let service = Dispatch { handler, peer: identity.map(Arc::new), close: close.clone() };
            run_connection(stream, peer, service, close).await;
            debug!(peer = %peer, "connection closed");
        });
    }
}

/// Serves one connection until the client closes it, it fails, or `stop` is
/// cancelled. Each request is spawned on a `JoinSet` owned here, so that when
/// the connection ends its unfinished requests are aborted with it.
async fn run_connection<H: Handler>(stream: MaybeTls, peer: SocketAddr, service: Dispatch<H>, stop: CancellationToken) {
    if let Err(e) = stream.tcp().set_nodelay(true) {
        // Only latency suffers (Nagle's algorithm delays small frames).
        debug!(peer = %peer, error = %e, "setting TCP_NODELAY failed");
    }
    let transport = codec::transport(stream);
    let channel = BaseChannel::with_defaults(transport).max_concurrent_requests(MAX_REQUESTS_PER_CONNECTION);
    // A stream of request futures; polling it also reads requests and
    // writes responses. It ends once the client has closed its side and
    // every response is written (tarpc logs a transport error at `warn`).
    let requests = channel.execute(service.serve());
    futures::pin_mut!(requests);
    let mut running = JoinSet::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            next = requests.next() => match next {
                Some(request) => {
                    running.spawn(request);
                }
                None => break,
            },
            Some(done) = running.join_next(), if !running.is_empty() => {
                if let Err(e) = done {
                    if e.is_panic() {
                        error!(peer = %peer, error = %e, "rpc handler panicked");
                    }
                }
            }
        }
    }
    // Dropping `running` aborts whatever is still in flight.
}

/// The tarpc service over a [`Handler`], for one connection. Holds the
/// handler behind an `Arc`: tarpc takes the service by value for every
/// request.
struct Dispatch<H> {
    handler: Arc<H>,
    /// Who the connection's certificate names; `None` for plain.
    peer: Option<Arc<NodeIdentity>>,
    /// Closes the connection.
    close: CancellationToken,
}

impl<H> Clone for Dispatch<H> {
    fn clone(&self) -> Self {
        Dispatch { handler: Arc::clone(&self.handler), peer: self.peer.clone(), close: self.close.clone() }
    }
}

impl<H: Handler> Dispatch<H> {
    /// Lets a request of `rpc` through if the connection's peer may make
    /// it: its node is admitted and, if the request claims a sender
    /// (`sender`: `Some(claimed)`), the sender is that node. Otherwise
    /// closes the connection and never returns, so that no answer is
    /// written (the request's task is aborted with the connection).
    async fn check(&self, rpc: &'static str, sender: Option<Option<u64>>) {
        let Some(peer) = &self.peer else { return };
        let refusal = if !self.handler.admits(peer.id) {
            Some("its node is not admitted (removed?)".to_string())
        } else if peer.role == "worker" {
            worker_refusal(&*self.handler, rpc, sender, peer.id)
        } else {
            match sender {
                Some(Some(claimed)) if claimed == peer.id => None,
                Some(Some(claimed)) => Some(format!("it claims to be node {claimed}")),
                // A vote with no candidate: no node to match the certificate.
                Some(None) => Some("it names no sender".to_string()),
                None => None,
            }
        };
        if let Some(why) = refusal {
            self.refuse(rpc, &why).await;
        }
    }

    /// Refuses a request: closes the connection and never returns, so that
    /// no answer is written.
    async fn refuse(&self, rpc: &'static str, why: &str) {
        match &self.peer {
            Some(peer) => {
                warn!(rpc, certificate = %peer, certificate_id = peer.id, "refusing a request: {why}; closing the connection")
            }
            None => warn!(rpc, "refusing a request: {why}; closing the connection"),
        }
        self.close.cancel();
        std::future::pending::<()>().await;
    }
}

/// Every answer leaves through here: a node-local error becomes what every
/// release decodes ([`NodeError::for_the_wire`]).
impl<H: Handler> SkeinRpc for Dispatch<H> {
    async fn append_entries(
        self,
        _: Context,
        req: AppendEntriesRequest<TypeConfig>,
    ) -> Result<AppendEntriesResponse<u64>, RaftError<u64>> {
        self.check("append_entries", Some(req.vote.leader_id().voted_for())).await;
        self.handler.append_entries(req).await
    }

    async fn vote(self, _: Context, req: VoteRequest<u64>) -> Result<VoteResponse<u64>, RaftError<u64>> {
        self.check("vote", Some(req.vote.leader_id().voted_for())).await;
        self.handler.vote(req).await
    }

    async fn install_snapshot(
        self,
        _: Context,
        req: InstallSnapshotRequest<TypeConfig>,
    ) -> Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>> {
        self.check("install_snapshot", Some(req.vote.leader_id().voted_for())).await;
        self.handler.install_snapshot(req).await
    }

    async fn write(self, _: Context, command: Command) -> Result<Response, NodeError> {
        match self.peer.as_deref() {
            Some(peer) if peer.role == "worker" => match worker_write_sender(&command) {
                Ok(sender) => self.check("write", sender.map(Some)).await,
                Err(why) => self.refuse("write", &why).await,
            },
            _ => self.check("write", None).await,
        }
        self.handler.write(command).await.map_err(NodeError::for_the_wire)
    }

    async fn lease(self, _: Context, req: LeaseRequest) -> Result<Vec<LeasedTask>, NodeError> {
        self.check("lease", Some(Some(req.node))).await;
        self.handler.lease(req).await.map_err(NodeError::for_the_wire)
    }

    async fn heartbeat(self, _: Context, req: HeartbeatRequest) -> Result<HeartbeatAck, NodeError> {
        self.check("heartbeat", Some(Some(req.node))).await;
        self.handler.heartbeat(req).await.map_err(NodeError::for_the_wire)
    }

    async fn complete(self, _: Context, req: CompleteRequest) -> Result<Vec<Result<TaskStatus, Rejection>>, NodeError> {
        self.check("complete", Some(Some(req.node))).await;
        self.handler.complete(req).await.map_err(NodeError::for_the_wire)
    }

    async fn read_index(self, _: Context) -> Result<u64, NodeError> {
        self.check("read_index", None).await;
        self.handler.read_index().await.map_err(NodeError::for_the_wire)
    }

    async fn join(self, _: Context, req: JoinRequest) -> Result<(), NodeError> {
        self.check("join", Some(Some(req.id))).await;
        self.handler.join(req).await.map_err(NodeError::for_the_wire)
    }

    async fn leave(self, _: Context, id: u64) -> Result<(), NodeError> {
        self.check("leave", None).await;
        self.handler.leave(id).await.map_err(NodeError::for_the_wire)
    }

    async fn node_version(self, _: Context) -> NodeVersion {
        self.check("node_version", None).await;
        self.handler.node_version()
    }

    async fn campaign(self, _: Context) -> Result<(), NodeError> {
        self.check("campaign", None).await;
        self.handler.campaign().await.map_err(NodeError::for_the_wire)
    }

    async fn worker_read(self, _: Context, req: WorkerReadRequest) -> Result<WorkerAnswer, NodeError> {
        self.check("worker_read", Some(Some(req.node))).await;
        self.handler.worker_read(req).await.map_err(NodeError::for_the_wire)
    }

    async fn exchange(self, _: Context, req: ExchangeRequest) -> Result<ExchangeReply, NodeError> {
        self.check("exchange", Some(Some(req.node))).await;
        self.handler.exchange(req).await.map(ExchangeReply::for_the_wire).map_err(NodeError::for_the_wire)
    }
}
