//! The client side: [`Peers`], one lazily dialled tarpc connection per peer
//! address, and [`CallError`], what a call can fail with.
//!
//! A connection is dialled on first use and kept. When it breaks, the next
//! call dials again; when a dial fails, the peer is not dialled again before
//! a backoff (doubling from [`PeersConfig::backoff_min`] up to
//! [`PeersConfig::backoff_max`]), and calls in that window fail at once with
//! [`CallError::Unreachable`] rather than wait. Every call has a deadline,
//! which covers the dial too.
//!
//! With [`PeersConfig::tls`] a dial is mutual TLS (the TLS handshake is part
//! of the dial). In permissive mode a peer whose handshake fails is dialled
//! again in plain TCP (a node not yet moved to TLS, during a rolling
//! migration). Every new dial tries TLS first: dials happen only when a
//! connection is made or broke, and a peer restarted with `required` must be
//! reached at once, not after some fallback period.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use skein_raft::config::TypeConfig;
use skein_raft::fsm::{Command, HeartbeatAck, Rejection, Response, TaskStatus};
use skein_tls::rustls::pki_types::ServerName;
use skein_tls::tokio_rustls::TlsConnector;
use skein_tls::{NodeTls, TlsMode};
use tarpc::client::RpcError;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{debug, info, trace};

use crate::codec;
use crate::rpc::{
    CompleteRequest, ExchangeReply, ExchangeRequest, HeartbeatRequest, JoinRequest, LeaseRequest, LeasedTask,
    NodeError, NodeVersion, SkeinRpcClient, WorkerAnswer, WorkerReadRequest,
};

/// How much later than a call's own deadline tarpc's is (see [`Peers`]'s
/// `call`). The server aborts a request at tarpc's deadline at the latest.
const TARPC_GRACE: Duration = Duration::from_millis(500);

/// No call waits longer than this, whatever it asks for.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The server name every TLS dial sends. Node certificates are checked for
/// the CA and for being a node certificate, not for a name: peers are
/// dialled by address, and which node answers there is the membership's
/// business.
const TLS_SERVER_NAME: &str = "node.skein";

/// How [`Peers`] calls and dials.
#[derive(Debug, Clone)]
pub struct PeersConfig {
    /// The deadline of a node-to-node call (write, heartbeat, complete,
    /// read index). Raft calls take openraft's `hard_ttl` instead.
    pub call_timeout: Duration,
    /// The deadline of join and leave: a membership change waits for a
    /// learner to catch up, which can take a snapshot transfer.
    pub membership_timeout: Duration,
    /// Added to a lease request's `wait_ms` to make its deadline, so that a
    /// long poll that waited its full time still has time to answer.
    pub lease_margin: Duration,
    /// The longest a dial may take, even when the call's deadline is later.
    pub connect_timeout: Duration,
    /// The pause after the first failed dial; it doubles with each further
    /// failure.
    pub backoff_min: Duration,
    /// The longest pause between dials of an unreachable peer.
    pub backoff_max: Duration,
    /// Dial these addresses instead of the advertised ones (advertised ->
    /// actual). Empty in production; fault-injection tests put a proxy on
    /// every link this way, to cut or delay one direction of one link.
    pub routes: HashMap<String, String>,
    /// Mutual TLS: the mode and this node's certificates. `None` (or mode
    /// off): plain TCP.
    pub tls: Option<(TlsMode, NodeTls)>,
}

impl Default for PeersConfig {
    fn default() -> Self {
        PeersConfig {
            call_timeout: Duration::from_secs(3),
            membership_timeout: Duration::from_secs(60),
            lease_margin: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            backoff_min: Duration::from_millis(25),
            backoff_max: Duration::from_secs(1),
            routes: HashMap::new(),
            tls: None,
        }
    }
}

/// Why a call to a peer failed.
///
/// Only [`CallError::Unreachable`] and [`CallError::TooLarge`] promise that
/// the request was not carried out; after [`CallError::Disconnected`] or
/// [`CallError::Timeout`] it may or may not have been (a forwarded write may
/// have committed), so only an idempotent call should be retried blindly.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// No connection could be made: refused, unresolvable, the dial timed
    /// out, or the peer is in its backoff after such a failure. The request
    /// was not sent.
    #[error("{peer} is unreachable: {reason}")]
    Unreachable {
        /// The peer's address.
        peer: String,
        /// What the last dial met.
        reason: String,
    },
    /// The connection broke with the call in flight; whether the peer
    /// carried it out is unknown. The next call dials again.
    #[error("connection to {peer} lost: {reason}")]
    Disconnected {
        /// The peer's address.
        peer: String,
        /// What broke it.
        reason: String,
    },
    /// No answer within the deadline; whether the peer carried the call out
    /// is unknown.
    #[error("call to {peer} timed out after {after:?}")]
    Timeout {
        /// The peer's address.
        peer: String,
        /// The deadline the call had.
        after: Duration,
    },
    /// The request could not be encoded, or its frame would exceed
    /// [`codec::MAX_FRAME_BYTES`]. It was not sent; sending it again will
    /// fail again.
    #[error("request to {peer} not sent: {reason}")]
    TooLarge {
        /// The peer's address.
        peer: String,
        /// The encoder's error.
        reason: String,
    },
    /// The peer answered with an error. (An overloaded peer's refusal to
    /// take more requests arrives as [`NodeError::Unavailable`].)
    #[error("{peer} answered: {error}")]
    Remote {
        /// The peer's address.
        peer: String,
        /// Its answer.
        error: NodeError,
    },
}

impl CallError {
    /// The peer's own error, if it answered with one.
    pub fn remote(&self) -> Option<&NodeError> {
        match self {
            CallError::Remote { error, .. } => Some(error),
            _ => None,
        }
    }

    /// The address of the peer the call went to.
    pub fn peer(&self) -> &str {
        match self {
            CallError::Unreachable { peer, .. }
            | CallError::Disconnected { peer, .. }
            | CallError::Timeout { peer, .. }
            | CallError::TooLarge { peer, .. }
            | CallError::Remote { peer, .. } => peer,
        }
    }

    /// Whether the request certainly did not take effect on the peer.
    pub fn is_not_sent(&self) -> bool {
        matches!(self, CallError::Unreachable { .. } | CallError::TooLarge { .. })
    }
}

/// One client connection per peer address, shared by every task of the node
/// (cheap to clone). Dials lazily, re-dials with backoff, bounds every call
/// with a deadline.
#[derive(Clone)]
pub struct Peers {
    inner: Arc<PeersInner>,
}

struct PeersInner {
    config: PeersConfig,
    /// Made once from `config.tls`; follows certificate reloads by itself.
    tls: Option<ClientTls>,
    /// Keyed by `rpc_addr`. A peer's entry lives until [`Peers::forget`]:
    /// the number of peers is the cluster's size, small.
    peers: Mutex<HashMap<String, Arc<Peer>>>,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

impl Default for Peers {
    fn default() -> Self {
        Peers::new(PeersConfig::default())
    }
}

impl Peers {
    /// No connections yet: each is dialled on its first call.
    pub fn new(config: PeersConfig) -> Self {
        let tls = match &config.tls {
            Some((mode @ (TlsMode::Permissive | TlsMode::Required), tls)) => {
                Some(ClientTls { mode: *mode, connector: TlsConnector::from(tls.rpc_client_config()) })
            }
            _ => None,
        };
        Peers { inner: Arc::new(PeersInner { config, tls, peers: Mutex::new(HashMap::new()) }) }
    }

    /// The timeouts and backoff in use.
    pub fn config(&self) -> &PeersConfig {
        &self.inner.config
    }

    /// Drops the connection to `addr` and its backoff (a node that left the
    /// cluster). Calls in flight on it still finish.
    pub fn forget(&self, addr: &str) {
        self.inner.peers.lock().unwrap_or_else(PoisonError::into_inner).remove(addr);
    }

    /// Forwards a client write to the leader at `addr`.
    pub async fn write(&self, addr: &str, command: Command) -> Result<Response, CallError> {
        let timeout = self.inner.config.call_timeout;
        let answer = self.call(addr, timeout, "write", |c, ctx| async move { c.write(ctx, command).await }).await?;
        remote(addr, answer)
    }

    /// Leases tasks from the leader at `addr`; the deadline is
    /// `req.wait_ms` plus [`PeersConfig::lease_margin`].
    pub async fn lease(&self, addr: &str, req: LeaseRequest) -> Result<Vec<LeasedTask>, CallError> {
        let timeout = Duration::from_millis(req.wait_ms).saturating_add(self.inner.config.lease_margin);
        let answer = self.call(addr, timeout, "lease", |c, ctx| async move { c.lease(ctx, req).await }).await?;
        remote(addr, answer)
    }

    /// Sends a worker's heartbeat to the leader at `addr`.
    pub async fn heartbeat(&self, addr: &str, req: HeartbeatRequest) -> Result<HeartbeatAck, CallError> {
        let timeout = self.inner.config.call_timeout;
        let answer = self.call(addr, timeout, "heartbeat", |c, ctx| async move { c.heartbeat(ctx, req).await }).await?;
        remote(addr, answer)
    }

    /// Reports outcomes to the leader at `addr`.
    pub async fn complete(
        &self,
        addr: &str,
        req: CompleteRequest,
    ) -> Result<Vec<Result<TaskStatus, Rejection>>, CallError> {
        let timeout = self.inner.config.call_timeout;
        let answer = self.call(addr, timeout, "complete", |c, ctx| async move { c.complete(ctx, req).await }).await?;
        remote(addr, answer)
    }

    /// A worker's round with the leader at `addr`; the deadline is the
    /// call timeout, plus `req.wait_ms` when the round may wait for a task.
    pub async fn exchange(&self, addr: &str, req: ExchangeRequest) -> Result<ExchangeReply, CallError> {
        let mut timeout = self.inner.config.call_timeout;
        if req.max > 0 {
            timeout = timeout.saturating_add(Duration::from_millis(req.wait_ms));
        }
        let answer = self.call(addr, timeout, "exchange", |c, ctx| async move { c.exchange(ctx, req).await }).await?;
        remote(addr, answer)
    }

    /// Reads what a worker's transform needs from the member at `addr`.
    pub async fn worker_read(&self, addr: &str, req: WorkerReadRequest) -> Result<WorkerAnswer, CallError> {
        let timeout = self.inner.config.call_timeout;
        let answer =
            self.call(addr, timeout, "worker_read", |c, ctx| async move { c.worker_read(ctx, req).await }).await?;
        remote(addr, answer)
    }

    /// Asks the leader at `addr` for a read index.
    pub async fn read_index(&self, addr: &str) -> Result<u64, CallError> {
        let timeout = self.inner.config.call_timeout;
        let answer = self.call(addr, timeout, "read_index", |c, ctx| async move { c.read_index(ctx).await }).await?;
        remote(addr, answer)
    }

    /// Asks the leader at `addr` to add a node.
    pub async fn join(&self, addr: &str, req: JoinRequest) -> Result<(), CallError> {
        let timeout = self.inner.config.membership_timeout;
        let answer = self.call(addr, timeout, "join", |c, ctx| async move { c.join(ctx, req).await }).await?;
        remote(addr, answer)
    }

    /// Asks the leader at `addr` to remove node `id`.
    pub async fn leave(&self, addr: &str, id: u64) -> Result<(), CallError> {
        let timeout = self.inner.config.membership_timeout;
        let answer = self.call(addr, timeout, "leave", |c, ctx| async move { c.leave(ctx, id).await }).await?;
        remote(addr, answer)
    }

    /// Asks the node at `addr` what it runs. `Ok(None)`: it answered, but
    /// not this call (it dropped the connection or sent something else), so
    /// it is a 0.1.0 node. Call this on a `Peers` of its own: a 0.1.0 node
    /// drops the connection, and with it every other call in flight on it.
    pub async fn node_version(&self, addr: &str) -> Result<Option<NodeVersion>, CallError> {
        let timeout = self.inner.config.call_timeout;
        let answer = self.call(addr, timeout, "node_version", |c, ctx| async move { c.node_version(ctx).await }).await;
        if answer.is_err() {
            self.forget(addr);
        }
        match answer {
            Ok(v) => Ok(Some(v)),
            Err(CallError::Disconnected { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Tells the voter at `addr` to start an election (a leader handing over).
    pub async fn campaign(&self, addr: &str) -> Result<(), CallError> {
        let timeout = self.inner.config.call_timeout;
        let answer = self.call(addr, timeout, "campaign", |c, ctx| async move { c.campaign(ctx).await }).await?;
        remote(addr, answer)
    }

    /// Raft: append entries, within `timeout`. The outer `Result` is the
    /// transport's, the inner one Raft's answer.
    pub async fn append_entries(
        &self,
        addr: &str,
        req: AppendEntriesRequest<TypeConfig>,
        timeout: Duration,
    ) -> Result<Result<AppendEntriesResponse<u64>, RaftError<u64>>, CallError> {
        self.call(addr, timeout, "append_entries", |c, ctx| async move { c.append_entries(ctx, req).await }).await
    }

    /// Raft: request a vote, within `timeout`.
    pub async fn vote(
        &self,
        addr: &str,
        req: VoteRequest<u64>,
        timeout: Duration,
    ) -> Result<Result<VoteResponse<u64>, RaftError<u64>>, CallError> {
        self.call(addr, timeout, "vote", |c, ctx| async move { c.vote(ctx, req).await }).await
    }

    /// Raft: send one snapshot chunk, within `timeout`.
    pub async fn install_snapshot(
        &self,
        addr: &str,
        req: InstallSnapshotRequest<TypeConfig>,
        timeout: Duration,
    ) -> Result<Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>, CallError> {
        self.call(addr, timeout, "install_snapshot", |c, ctx| async move { c.install_snapshot(ctx, req).await }).await
    }

    fn peer(&self, addr: &str) -> Arc<Peer> {
        let mut peers = self.inner.peers.lock().unwrap_or_else(PoisonError::into_inner);
        let dial = self.inner.config.routes.get(addr).map_or(addr, String::as_str);
        Arc::clone(peers.entry(addr.to_string()).or_insert_with(|| Arc::new(Peer::new(addr, dial))))
    }

    /// One call: a connection (dialled if needed), then the RPC, all within
    /// `timeout`.
    async fn call<T, F, Fut>(&self, addr: &str, timeout: Duration, rpc: &'static str, f: F) -> Result<T, CallError>
    where
        F: FnOnce(SkeinRpcClient, tarpc::context::Context) -> Fut,
        Fut: Future<Output = Result<T, RpcError>>,
    {
        // Clamped so that `now + timeout` cannot overflow (a lease's
        // `wait_ms` comes from the caller).
        let timeout = timeout.min(MAX_TIMEOUT);
        let peer = self.peer(addr);
        let deadline = Instant::now() + timeout;
        let timed_out = || CallError::Timeout { peer: addr.to_string(), after: timeout };

        let connecting = peer.connection(deadline, &self.inner.config, self.inner.tls.as_ref());
        let conn = match tokio::time::timeout_at(deadline, connecting).await {
            Ok(conn) => conn?,
            Err(_) => return Err(timed_out()),
        };

        let mut ctx = tarpc::context::current();
        // tarpc's deadline (a std Instant; it travels as "time left") is
        // set a little after ours, so that our timeout always fires first:
        // dropping the call sends the server a cancellation, where tarpc's
        // own expiry would log an error on both ends for every timeout.
        ctx.deadline = std::time::Instant::now() + deadline.saturating_duration_since(Instant::now()) + TARPC_GRACE;
        let answered_before = conn.answers.load(Ordering::Relaxed);
        trace!(peer = %addr, rpc, "calling");
        let result = tokio::time::timeout_at(deadline, f(conn.client.clone(), ctx)).await;
        match result {
            Ok(Ok(value)) => {
                conn.answers.fetch_add(1, Ordering::Relaxed);
                Ok(value)
            }
            Ok(Err(RpcError::DeadlineExceeded)) | Err(_) => {
                peer.note_timeout(&conn, answered_before);
                debug!(peer = %addr, rpc, timeout_ms = timeout.as_millis() as u64, "call timed out");
                Err(timed_out())
            }
            Ok(Err(e @ (RpcError::Shutdown | RpcError::Channel(_)))) => {
                conn.retire();
                debug!(peer = %addr, rpc, error = %e, "connection lost");
                Err(CallError::Disconnected { peer: addr.to_string(), reason: error_chain(&e) })
            }
            Ok(Err(RpcError::Send(e))) => {
                // The encoder refused the request; the connection is fine.
                debug!(peer = %addr, rpc, error = %e, "request not sent");
                Err(CallError::TooLarge { peer: addr.to_string(), reason: e.to_string() })
            }
            Ok(Err(RpcError::Server(e))) => {
                conn.answers.fetch_add(1, Ordering::Relaxed);
                debug!(peer = %addr, rpc, error = %e, "request refused by the server");
                Err(CallError::Remote { peer: addr.to_string(), error: NodeError::Unavailable(e.detail) })
            }
        }
    }
}

/// Flattens a node-to-node answer into the call's result.
fn remote<T>(addr: &str, answer: Result<T, NodeError>) -> Result<T, CallError> {
    answer.map_err(|error| CallError::Remote { peer: addr.to_string(), error })
}

/// An error and its sources, one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// One peer address: its connection, or why there is none.
struct Peer {
    /// The peer's advertised address (what errors and logs name).
    addr: String,
    /// Where to connect: `addr`, unless a route overrides it.
    dial: String,
    /// Held across a dial, so that concurrent callers wait for one dial
    /// instead of each making their own.
    state: tokio::sync::Mutex<PeerState>,
}

#[derive(Default)]
struct PeerState {
    conn: Option<Connection>,
    /// Dials that failed in a row; sets the backoff.
    failures: u32,
    /// After a failed dial, none before this.
    retry_at: Option<Instant>,
    /// What the last failed dial met, for the errors of the backoff window.
    last_error: String,
    /// How many connections were made, for the logs.
    generation: u64,
}

/// How [`Peers`] dials with TLS.
struct ClientTls {
    mode: TlsMode,
    connector: TlsConnector,
}

/// A connected socket, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A tarpc connection, live until retired.
#[derive(Clone)]
struct Connection {
    client: SkeinRpcClient,
    /// Set when the connection must not take new calls: its dispatch task
    /// ended (the socket is gone), or a call found it broken. Calls in
    /// flight on it still finish or time out.
    retired: Arc<AtomicBool>,
    /// Answers received on this connection; a call that times out with no
    /// answer received meanwhile suggests a dead (half-open) socket.
    answers: Arc<AtomicU64>,
    /// Which dial of the peer made it, for the logs.
    generation: u64,
}

impl Connection {
    fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }

    fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }
}

impl Peer {
    fn new(addr: &str, dial: &str) -> Self {
        Peer { addr: addr.to_string(), dial: dial.to_string(), state: tokio::sync::Mutex::new(PeerState::default()) }
    }

    /// The live connection, dialling one if there is none and the backoff
    /// allows. The dial is bounded by `deadline` and the connect timeout.
    async fn connection(
        &self,
        deadline: Instant,
        config: &PeersConfig,
        tls: Option<&ClientTls>,
    ) -> Result<Connection, CallError> {
        let mut state = self.state.lock().await;
        if let Some(conn) = &state.conn {
            if !conn.is_retired() {
                return Ok(conn.clone());
            }
            debug!(peer = %self.addr, generation = conn.generation, "connection gone, dialling again");
            state.conn = None;
        }

        let now = Instant::now();
        if let Some(at) = state.retry_at {
            if at > now {
                return Err(CallError::Unreachable {
                    peer: self.addr.clone(),
                    reason: format!("{} (next dial in {} ms)", state.last_error, (at - now).as_millis()),
                });
            }
        }

        let limit = config.connect_timeout.min(deadline.saturating_duration_since(now));
        let dialled = match tls {
            None => self.dial_tcp(limit).await.map(|s| Box::new(s) as Box<dyn Io>),
            Some(tls) => self.dial_tls(limit, tls).await,
        };
        let stream = match dialled {
            Ok(stream) => stream,
            Err(reason) => {
                state.failures = state.failures.saturating_add(1);
                let backoff = backoff(config, state.failures);
                state.retry_at = Some(now + backoff);
                debug!(
                    peer = %self.addr,
                    error = %reason,
                    failures = state.failures,
                    backoff_ms = backoff.as_millis() as u64,
                    "dial failed"
                );
                state.last_error = reason.clone();
                return Err(CallError::Unreachable { peer: self.addr.clone(), reason });
            }
        };
        state.failures = 0;
        state.retry_at = None;
        state.generation += 1;
        let conn = self.spawn_connection(stream, state.generation);
        debug!(peer = %self.addr, generation = state.generation, "connected");
        state.conn = Some(conn.clone());
        Ok(conn)
    }

    /// A TCP connection to the peer within `limit`, or why not.
    async fn dial_tcp(&self, limit: Duration) -> Result<TcpStream, String> {
        let stream = match tokio::time::timeout(limit, TcpStream::connect(self.dial.as_str())).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err(format!("connect timed out after {} ms", limit.as_millis())),
        };
        if let Err(e) = stream.set_nodelay(true) {
            debug!(peer = %self.addr, error = %e, "setting TCP_NODELAY failed");
        }
        Ok(stream)
    }

    /// A TLS connection to the peer (TCP and handshake each within
    /// `limit`); in permissive mode, plain TCP if the peer does not speak
    /// TLS.
    async fn dial_tls(&self, limit: Duration, tls: &ClientTls) -> Result<Box<dyn Io>, String> {
        let permissive = tls.mode == TlsMode::Permissive;
        let stream = self.dial_tcp(limit).await?;
        let name = ServerName::try_from(TLS_SERVER_NAME).expect("a valid DNS name");
        let reason = match tokio::time::timeout(limit, tls.connector.connect(name, stream)).await {
            Ok(Ok(stream)) => return Ok(Box::new(stream)),
            Ok(Err(e)) => format!("TLS handshake failed: {e}"),
            Err(_) => format!("TLS handshake timed out after {} ms", limit.as_millis()),
        };
        if !permissive {
            return Err(reason);
        }
        info!(peer = %self.addr, error = %reason, "peer does not speak TLS; using plain TCP (permissive mode)");
        Ok(Box::new(self.dial_tcp(limit).await?))
    }

    /// Starts tarpc's dispatch task for a new socket.
    fn spawn_connection(&self, stream: Box<dyn Io>, generation: u64) -> Connection {
        let tarpc::client::NewClient { client, dispatch } =
            SkeinRpcClient::new(tarpc::client::Config::default(), codec::transport(stream));
        let retired = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&retired);
        let addr = self.addr.clone();
        tokio::spawn(async move {
            match dispatch.await {
                Ok(()) => debug!(peer = %addr, generation, "connection closed"),
                Err(e) => debug!(peer = %addr, generation, error = %error_chain(&e), "connection failed"),
            }
            flag.store(true, Ordering::Release);
        });
        Connection { client, retired, answers: Arc::new(AtomicU64::new(0)), generation }
    }

    /// A call on `conn` timed out. If nothing at all came back on the
    /// connection since the call began, the socket is likely dead without
    /// knowing it (the peer's host vanished): retire it so that the next call
    /// dials. A merely slow call leaves a connection that still answers.
    fn note_timeout(&self, conn: &Connection, answered_before: u64) {
        if conn.answers.load(Ordering::Relaxed) == answered_before {
            debug!(peer = %self.addr, generation = conn.generation, "no answer on the connection, retiring it");
            conn.retire();
        }
    }
}

/// The pause after `failures` failed dials in a row (at least 1).
fn backoff(config: &PeersConfig, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    config.backoff_min.saturating_mul(1 << doublings).min(config.backoff_max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let config = PeersConfig::default();
        let pauses: Vec<u64> = (1..=8).map(|n| backoff(&config, n).as_millis() as u64).collect();
        assert_eq!(pauses, vec![25, 50, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff(&config, u32::MAX), config.backoff_max);
    }
}
