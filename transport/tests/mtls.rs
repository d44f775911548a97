//! Mutual TLS between nodes, over loopback TCP: the server ([`serve_with`])
//! admits only certificates of its CA, only for the node id they name, only
//! while the handler admits that node; the client ([`PeersConfig::tls`])
//! dials TLS, and in permissive mode falls back to plain.
//!
//! Certificates are made per test with `skein_tls::issue` in a tempdir.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::Vote;
use skein_raft::config::{SkeinNode, TypeConfig};
use skein_raft::fsm::{Command, HeartbeatAck, Rejection, Response, TaskStatus};
use skein_transport::skein_tls::{issue, NodeTls, TlsMode};
use skein_transport::{
    serve_with, CompleteRequest, Handler, HeartbeatRequest, JoinRequest, LeaseRequest, LeasedTask, NodeError,
    NodeVersion, Peers, PeersConfig, ServerTls,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Counts the requests that reached it; refuses the nodes in `removed`.
#[derive(Default)]
struct Fake {
    calls: AtomicUsize,
    removed: Mutex<HashSet<u64>>,
}

impl Fake {
    fn called(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }
}

impl Handler for Fake {
    async fn append_entries(
        &self,
        _: AppendEntriesRequest<TypeConfig>,
    ) -> Result<AppendEntriesResponse<u64>, RaftError<u64>> {
        self.called();
        Ok(AppendEntriesResponse::Success)
    }

    async fn vote(&self, req: VoteRequest<u64>) -> Result<VoteResponse<u64>, RaftError<u64>> {
        self.called();
        Ok(VoteResponse { vote: req.vote, vote_granted: true, last_log_id: None })
    }

    async fn install_snapshot(
        &self,
        req: InstallSnapshotRequest<TypeConfig>,
    ) -> Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>> {
        self.called();
        Ok(InstallSnapshotResponse { vote: req.vote })
    }

    async fn write(&self, _: Command) -> Result<Response, NodeError> {
        self.called();
        Ok(Response::Done)
    }

    async fn lease(&self, _: LeaseRequest) -> Result<Vec<LeasedTask>, NodeError> {
        self.called();
        Ok(Vec::new())
    }

    async fn heartbeat(&self, _: HeartbeatRequest) -> Result<HeartbeatAck, NodeError> {
        self.called();
        Ok(HeartbeatAck { renewed: Vec::new(), revoked: Vec::new(), draining: false })
    }

    async fn complete(&self, _: CompleteRequest) -> Result<Vec<Result<TaskStatus, Rejection>>, NodeError> {
        self.called();
        Ok(Vec::new())
    }

    async fn read_index(&self) -> Result<u64, NodeError> {
        self.called();
        Ok(42)
    }

    async fn join(&self, _: JoinRequest) -> Result<(), NodeError> {
        self.called();
        Ok(())
    }

    async fn leave(&self, _: u64) -> Result<(), NodeError> {
        self.called();
        Ok(())
    }

    fn node_version(&self) -> NodeVersion {
        self.called();
        NodeVersion { release: "test".into(), format: 2 }
    }

    async fn campaign(&self) -> Result<(), NodeError> {
        self.called();
        Ok(())
    }

    async fn worker_read(
        &self,
        _: skein_transport::WorkerReadRequest,
    ) -> Result<skein_transport::WorkerAnswer, NodeError> {
        self.called();
        Err(NodeError::Invalid("this fake holds no state".into()))
    }

    async fn exchange(&self, _: skein_transport::ExchangeRequest) -> Result<skein_transport::ExchangeReply, NodeError> {
        self.called();
        Err(NodeError::Invalid("this fake holds no state".into()))
    }

    /// Nodes below 100 are members; the rest are workers.
    fn is_member(&self, node: u64) -> bool {
        node < 100
    }

    fn admits(&self, node: u64) -> bool {
        !self.removed.lock().expect("lock").contains(&node)
    }
}

/// A CA with node certificates: `server` (node 1) and `client` (node 7),
/// and `stranger` (node 7 too) of another CA.
struct Certs {
    _root: tempfile::TempDir,
    server: NodeTls,
    client: NodeTls,
    stranger: NodeTls,
}

fn certs() -> Certs {
    let root = tempfile::tempdir().expect("tempdir");
    let node = |ca: &Path, id: u64, name: &str| {
        let dir = root.path().join(name);
        issue::issue_node(ca, id, "member", &["127.0.0.1".to_string()], &dir).expect("issue");
        NodeTls::load(&dir).expect("load")
    };
    let ca = root.path().join("ca");
    issue::make_ca(&ca).expect("ca");
    let other = root.path().join("other-ca");
    issue::make_ca(&other).expect("ca");
    let server = node(&ca, 1, "n1");
    let client = node(&ca, 7, "n7");
    let stranger = node(&other, 7, "stranger");
    Certs { server, client, stranger, _root: root }
}

/// Serves `fake` in `tls` until the returned token is cancelled.
async fn start(fake: &Arc<Fake>, tls: ServerTls) -> (String, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(serve_with(listener, Arc::clone(fake), async move { stopped.cancelled().await }, tls));
    (addr.to_string(), stop)
}

/// A client: short deadlines and backoff, so refusals come back fast.
fn peers(tls: Option<(TlsMode, NodeTls)>) -> Peers {
    Peers::new(PeersConfig {
        call_timeout: Duration::from_secs(3),
        backoff_min: Duration::from_millis(1),
        backoff_max: Duration::from_millis(5),
        tls,
        ..PeersConfig::default()
    })
}

fn heartbeat(node: u64) -> HeartbeatRequest {
    HeartbeatRequest { node, slots: 1, held: Vec::new() }
}

fn lease(node: u64) -> LeaseRequest {
    LeaseRequest { node, queues: vec!["q".into()], max: 1, wait_ms: 0 }
}

fn join(id: u64) -> JoinRequest {
    JoinRequest { id, node: SkeinNode { rpc_addr: "127.0.0.1:1".into(), http_addr: "127.0.0.1:2".into() } }
}

fn vote(candidate: u64) -> VoteRequest<u64> {
    VoteRequest { vote: Vote::new(1, candidate), last_log_id: None }
}

fn append(leader: u64) -> AppendEntriesRequest<TypeConfig> {
    AppendEntriesRequest {
        vote: Vote::new_committed(1, leader),
        prev_log_id: None,
        entries: Vec::new(),
        leader_commit: None,
    }
}

const RAFT_TIMEOUT: Duration = Duration::from_secs(3);

async fn bounded<F: Future<Output = ()>>(body: F) {
    tokio::time::timeout(Duration::from_secs(60), body).await.expect("test finished within 60 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_cas_certificate_gets_no_rpc() {
    bounded(async {
        let certs = certs();
        let fake = Arc::new(Fake::default());
        let (addr, stop) = start(&fake, ServerTls::new(TlsMode::Required, &certs.server)).await;

        for mode in [TlsMode::Required, TlsMode::Permissive] {
            let stranger = peers(Some((mode, certs.stranger.clone())));
            assert!(stranger.write(&addr, Command::ExpireLeases).await.is_err(), "{mode}: write");
            assert!(stranger.read_index(&addr).await.is_err(), "{mode}: read_index");
            assert!(stranger.heartbeat(&addr, heartbeat(7)).await.is_err(), "{mode}: heartbeat");
            assert!(stranger.vote(&addr, vote(7), RAFT_TIMEOUT).await.is_err(), "{mode}: vote");
        }
        assert_eq!(fake.calls(), 0, "a request of another CA's node reached the handler");

        // The control: the CA's own node gets through.
        let client = peers(Some((TlsMode::Required, certs.client.clone())));
        assert_eq!(client.read_index(&addr).await.expect("read_index"), 42);
        assert_eq!(fake.calls(), 1);
        stop.cancel();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_speaks_only_for_its_node() {
    bounded(async {
        let certs = certs();
        let fake = Arc::new(Fake::default());
        let (addr, stop) = start(&fake, ServerTls::new(TlsMode::Required, &certs.server)).await;
        let client = peers(Some((TlsMode::Required, certs.client.clone())));

        // As node 3, with node 7's certificate: refused, the connection
        // closed, nothing reaches the handler. As node 7: served.
        assert!(client.heartbeat(&addr, heartbeat(3)).await.is_err(), "heartbeat as 3");
        client.heartbeat(&addr, heartbeat(7)).await.expect("heartbeat as 7");
        assert!(client.lease(&addr, lease(3)).await.is_err(), "lease as 3");
        client.lease(&addr, lease(7)).await.expect("lease as 7");
        let complete = |node| CompleteRequest { node, completions: Vec::new() };
        assert!(client.complete(&addr, complete(3)).await.is_err(), "complete as 3");
        client.complete(&addr, complete(7)).await.expect("complete as 7");
        assert!(client.join(&addr, join(3)).await.is_err(), "join as 3");
        client.join(&addr, join(7)).await.expect("join as 7");
        assert!(client.vote(&addr, vote(3), RAFT_TIMEOUT).await.is_err(), "vote for 3");
        client.vote(&addr, vote(7), RAFT_TIMEOUT).await.expect("transport").expect("vote for 7");
        assert!(client.append_entries(&addr, append(3), RAFT_TIMEOUT).await.is_err(), "append from 3");
        client.append_entries(&addr, append(7), RAFT_TIMEOUT).await.expect("transport").expect("append from 7");
        assert_eq!(fake.calls(), 6, "only node 7's own requests reached the handler");

        // Calls that name no sender need any node certificate.
        client.write(&addr, Command::ExpireLeases).await.expect("write");
        client.leave(&addr, 3).await.expect("leave");
        client.campaign(&addr).await.expect("campaign");
        assert_eq!(client.read_index(&addr).await.expect("read_index"), 42);
        assert_eq!(fake.calls(), 10);
        stop.cancel();
    })
    .await;
}

/// A worker certificate (`skein cert node --role worker`, id 1000) from
/// `certs`' CA.
fn worker_certificate(certs: &Certs) -> NodeTls {
    let dir = certs._root.path().join("worker");
    issue::issue_node(&certs._root.path().join("ca"), 1000, "worker", &["127.0.0.1".to_string()], &dir)
        .expect("issue a worker certificate");
    NodeTls::load(&dir).expect("load")
}

/// A worker certificate (`skein cert node --role worker`) may make a
/// worker's calls for any worker id (the cluster gives workers their ids),
/// and nothing else: never for a member, never a Raft call, a membership
/// change or a write other than a worker's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_certificate_speaks_for_workers_only() {
    bounded(async {
        let certs = certs();
        let worker = worker_certificate(&certs);
        let fake = Arc::new(Fake::default());
        let (addr, stop) = start(&fake, ServerTls::new(TlsMode::Required, &certs.server)).await;
        let client = peers(Some((TlsMode::Required, worker)));

        // As workers 1000 and 5000: served. As member 3: refused.
        client.heartbeat(&addr, heartbeat(1000)).await.expect("heartbeat as 1000");
        client.heartbeat(&addr, heartbeat(5000)).await.expect("heartbeat as 5000");
        client.lease(&addr, lease(5000)).await.expect("lease as 5000");
        assert!(client.heartbeat(&addr, heartbeat(3)).await.is_err(), "heartbeat as member 3");
        assert!(client.lease(&addr, lease(3)).await.is_err(), "lease as member 3");
        client.write(&addr, Command::ReleaseNode { node: 5000, forget: false }).await.expect("hand back as 5000");
        let read = |node| skein_transport::WorkerReadRequest { node, read: skein_transport::WorkerRead::Policy };
        // Reaches the handler (this fake holds no state, and says so).
        assert!(matches!(
            client.worker_read(&addr, read(5000)).await,
            Err(skein_transport::CallError::Remote { error: NodeError::Invalid(_), .. })
        ));
        assert!(client.worker_read(&addr, read(3)).await.is_err(), "worker_read as member 3");
        assert_eq!(fake.calls(), 5, "the worker's own calls reached the handler");

        // Nothing a member does.
        assert!(client.write(&addr, Command::ReleaseNode { node: 3, forget: false }).await.is_err(), "for 3");
        assert!(client.write(&addr, Command::ExpireLeases).await.is_err(), "write ExpireLeases");
        assert!(client.vote(&addr, vote(1000), RAFT_TIMEOUT).await.is_err(), "vote");
        assert!(client.append_entries(&addr, append(1000), RAFT_TIMEOUT).await.is_err(), "append");
        assert!(client.join(&addr, join(1000)).await.is_err(), "join");
        assert!(client.read_index(&addr).await.is_err(), "read_index");
        assert!(client.campaign(&addr).await.is_err(), "campaign");
        assert_eq!(fake.calls(), 5, "a refused call reached the handler");
        stop.cancel();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_nodes_are_refused() {
    bounded(async {
        let certs = certs();
        let fake = Arc::new(Fake::default());
        let (addr, stop) = start(&fake, ServerTls::new(TlsMode::Required, &certs.server)).await;
        let client = peers(Some((TlsMode::Required, certs.client.clone())));
        client.write(&addr, Command::ExpireLeases).await.expect("admitted");

        fake.removed.lock().expect("lock").insert(7);
        assert!(client.write(&addr, Command::ExpireLeases).await.is_err(), "a removed node's write");
        assert!(client.read_index(&addr).await.is_err(), "a removed node's read_index");
        assert_eq!(fake.calls(), 1);

        fake.removed.lock().expect("lock").clear();
        client.write(&addr, Command::ExpireLeases).await.expect("admitted again, on a new connection");
        assert_eq!(fake.calls(), 2);
        stop.cancel();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_clients_get_nothing_from_a_required_server() {
    bounded(async {
        let certs = certs();
        let fake = Arc::new(Fake::default());
        let (addr, stop) = start(&fake, ServerTls::new(TlsMode::Required, &certs.server)).await;
        let plain = peers(None);
        assert!(plain.write(&addr, Command::ExpireLeases).await.is_err());
        assert!(plain.read_index(&addr).await.is_err());
        let off = peers(Some((TlsMode::Off, certs.client.clone())));
        assert!(off.read_index(&addr).await.is_err(), "mode off dials plain");
        assert_eq!(fake.calls(), 0);
        stop.cancel();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissive_serves_tls_and_plain() {
    bounded(async {
        let certs = certs();
        let fake = Arc::new(Fake::default());
        let (addr, stop) = start(&fake, ServerTls::new(TlsMode::Permissive, &certs.server)).await;

        let plain = peers(None);
        assert_eq!(plain.read_index(&addr).await.expect("plain"), 42);
        // Plain connections carry no identity to check.
        plain.heartbeat(&addr, heartbeat(3)).await.expect("plain heartbeat");

        for mode in [TlsMode::Required, TlsMode::Permissive] {
            let client = peers(Some((mode, certs.client.clone())));
            assert_eq!(client.read_index(&addr).await.expect("tls"), 42);
            assert!(client.heartbeat(&addr, heartbeat(3)).await.is_err(), "{mode}: TLS peers are checked");
            client.heartbeat(&addr, heartbeat(7)).await.expect("heartbeat as 7");
        }
        assert_eq!(fake.calls(), 6);
        stop.cancel();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissive_clients_fall_back_to_plain() {
    bounded(async {
        let certs = certs();
        let fake = Arc::new(Fake::default());
        let (addr, stop) = start(&fake, ServerTls::off()).await;

        let required = peers(Some((TlsMode::Required, certs.client.clone())));
        assert!(required.read_index(&addr).await.is_err(), "required never falls back");
        let permissive = peers(Some((TlsMode::Permissive, certs.client.clone())));
        assert_eq!(permissive.read_index(&addr).await.expect("fell back to plain"), 42);
        permissive.forget(&addr); // drops the connection and what was learnt
        assert_eq!(permissive.read_index(&addr).await.expect("again"), 42);
        assert_eq!(fake.calls(), 2);
        stop.cancel();
    })
    .await;
}

/// `exchange` (0.6.0) is checked like the calls it carries: a member
/// certificate speaks only for its own id, a worker certificate only for
/// workers, and a peer without a certificate of this cluster gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_is_checked_like_the_worker_calls() {
    bounded(async {
        let certs = certs();
        let worker = worker_certificate(&certs);
        let fake = Arc::new(Fake::default());
        let (addr, stop) = start(&fake, ServerTls::new(TlsMode::Required, &certs.server)).await;
        let round = |node| skein_transport::ExchangeRequest {
            node,
            slots: 1,
            completions: Vec::new(),
            held: Some(Vec::new()),
            queues: Vec::new(),
            max: 1,
            wait_ms: 0,
        };
        let reached = |r: Result<skein_transport::ExchangeReply, skein_transport::CallError>| {
            matches!(r, Err(skein_transport::CallError::Remote { error: NodeError::Invalid(_), .. }))
        };
        let member = peers(Some((TlsMode::Required, certs.client)));
        assert!(reached(member.exchange(&addr, round(7)).await), "member 7 for itself reaches the handler");
        assert!(!reached(member.exchange(&addr, round(8)).await), "member 7 claiming node 8 is refused");
        let workers = peers(Some((TlsMode::Required, worker)));
        assert!(reached(workers.exchange(&addr, round(5000)).await), "a worker certificate for worker 5000");
        assert!(!reached(workers.exchange(&addr, round(3)).await), "a worker certificate claiming member 3");
        let stranger = peers(Some((TlsMode::Required, certs.stranger)));
        assert!(!reached(stranger.exchange(&addr, round(7)).await), "another CA's certificate");
        assert!(!reached(peers(None).exchange(&addr, round(7)).await), "no TLS at all");
        assert_eq!(fake.calls(), 2, "only the two allowed rounds reached the handler");
        stop.cancel();
    })
    .await;
}
