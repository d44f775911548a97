//! skein-tls end to end: certificates made with `issue`, loaded as
//! `NodeTls`, served over real sockets on 127.0.0.1.
//!
//! The "RPC" here is a line echo: the server answers `peer <id>` (or
//! `plain`) for the identity its accepted connection carries, so a test sees
//! both that a connection was served and whom the server took it for.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use skein_tls::rustls::pki_types::pem::PemObject;
use skein_tls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use skein_tls::tokio_rustls::TlsConnector;
use skein_tls::{accept, client_trusting, issue, peer_identity, HttpsListener, NodeIdentity, NodeTls, TlsMode};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const DAY: i64 = 86_400;

fn hosts() -> Vec<String> {
    vec!["127.0.0.1".into(), "localhost".into()]
}

/// A new CA in `root/name`.
fn new_ca(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    issue::make_ca(&dir).expect("make_ca");
    dir
}

/// A node certificate of `ca` in `root/name`, loaded.
fn new_node(ca: &Path, id: u64, root: &Path, name: &str) -> NodeTls {
    let dir = root.join(name);
    issue::issue_node(ca, id, "member", &hosts(), &dir).expect("issue_node");
    NodeTls::load(&dir).expect("load")
}

fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64
}

/// A line-echo server in `mode` whose config is built once, here.
async fn echo_server(tls: &NodeTls, mode: TlsMode) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = tls.rpc_server_config();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let config = Arc::clone(&config);
            tokio::spawn(async move {
                let Ok(io) = accept(stream, mode, config).await else { return };
                let reply = match io.peer() {
                    Some(NodeIdentity { id, .. }) => format!("peer {id}\n"),
                    None => "plain\n".to_string(),
                };
                let mut io = BufReader::new(io);
                let mut line = String::new();
                if io.read_line(&mut line).await.is_ok() {
                    let _ = io.get_mut().write_all(reply.as_bytes()).await;
                    let _ = io.get_mut().flush().await;
                }
            });
        }
    });
    (addr, task)
}

/// One echo over mutual TLS as `client`: the server's answer and
/// certificates. Any failure (handshake, a closed connection, no answer) is
/// an error.
async fn call_tls(addr: SocketAddr, client: &NodeTls) -> Result<(String, Vec<CertificateDer<'static>>), String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let connector = TlsConnector::from(client.rpc_client_config());
    let name = ServerName::try_from("node.skein").expect("name");
    let mut tls = connector.connect(name, stream).await.map_err(|e| format!("handshake: {e}"))?;
    let certs: Vec<_> =
        tls.get_ref().1.peer_certificates().unwrap_or_default().iter().map(|c| c.clone().into_owned()).collect();
    tls.write_all(b"hi\n").await.map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(tls).read_line(&mut line).await.map_err(|e| format!("reading: {e}"))?;
    if line.is_empty() {
        return Err("closed without an answer".into());
    }
    Ok((line.trim().to_string(), certs))
}

/// One echo in plain TCP; `Ok("")` if the server closed without answering.
async fn call_plain(addr: SocketAddr) -> Result<String, String> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    stream.write_all(b"hi\n").await.map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).await.map_err(|e| e.to_string())?;
    Ok(line.trim().to_string())
}

/// A client that trusts `trust` (a ca.pem) and presents the certificate
/// of `cert_dir`, if any, whatever CA signed it: to test the server's side
/// of the check alone.
async fn call_raw(addr: SocketAddr, trust: &Path, cert_dir: Option<&Path>) -> Result<String, String> {
    let mut roots = skein_tls::rustls::RootCertStore::empty();
    roots.add(first_cert(trust)).expect("root");
    let provider = Arc::new(skein_tls::rustls::crypto::ring::default_provider());
    let builder = skein_tls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let cfg = match cert_dir {
        None => builder.with_no_client_auth(),
        Some(dir) => {
            let chain = vec![first_cert(&dir.join("node.pem"))];
            let key = PrivateKeyDer::from_pem_file(dir.join("node.key")).expect("key");
            builder.with_client_auth_cert(chain, key).expect("client cert")
        }
    };
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("node-1.skein").expect("name");
    let mut tls = TlsConnector::from(Arc::new(cfg)).connect(name, stream).await.map_err(|e| e.to_string())?;
    tls.write_all(b"hi\n").await.map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(tls).read_line(&mut line).await.map_err(|e| e.to_string())?;
    if line.is_empty() {
        return Err("closed without an answer".into());
    }
    Ok(line.trim().to_string())
}

fn first_cert(path: &Path) -> CertificateDer<'static> {
    CertificateDer::pem_file_iter(path).expect("open").next().expect("one cert").expect("pem")
}

async fn bounded<F: std::future::Future<Output = ()>>(body: F) {
    tokio::time::timeout(Duration::from_secs(60), body).await.expect("test finished within 60 s");
}

#[test]
fn issued_certificates_name_their_node_and_dates() {
    let root = tempfile::tempdir().expect("tempdir");
    let ca = new_ca(root.path(), "ca");
    let out = root.path().join("n7");
    issue::issue_node(&ca, 7, "worker", &hosts(), &out).expect("issue");

    let identity = peer_identity(&[first_cert(&out.join("node.pem"))]).expect("a node certificate");
    assert_eq!(identity, NodeIdentity { id: 7, role: "worker".into() });
    assert_eq!(identity.to_string(), "skein://worker/7");
    // The CA certificate is no node certificate.
    assert_eq!(peer_identity(&[first_cert(&ca.join("ca.pem"))]), None);

    let tls = NodeTls::load(&out).expect("out dir works as --tls-dir");
    assert_eq!(tls.node_id(), 7);
    let expiries = tls.expiries();
    let ca_expiry = expiries.iter().find(|e| e.name == "ca").expect("ca expiry").not_after_unix;
    let node_expiry = expiries.iter().find(|e| e.name == "node").expect("node expiry").not_after_unix;
    assert!((ca_expiry - (now_unix() + 3650 * DAY)).abs() < 2 * DAY, "ca expires {ca_expiry}");
    assert!((node_expiry - (now_unix() + 365 * DAY)).abs() < 2 * DAY, "node expires {node_expiry}");

    issue::issue_node_with_days(&ca, 8, "member", &[], &root.path().join("n8"), 30).expect("issue");
    let n8 = NodeTls::load(&root.path().join("n8")).expect("load");
    let node_expiry = n8.expiries().iter().find(|e| e.name == "node").expect("node").not_after_unix;
    assert!((node_expiry - (now_unix() + 30 * DAY)).abs() < DAY, "node expires {node_expiry}");

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for key in [ca.join("ca.key"), out.join("node.key")] {
            let mode = std::fs::metadata(&key).expect("key").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
    }

    let again = issue::make_ca(&ca).expect_err("a second CA over the first is refused");
    assert!(again.to_string().contains("ca.key"), "{again}");
    assert!(issue::issue_node(&ca, 9, "admin", &[], &root.path().join("n9")).is_err(), "unknown role");
    assert!(issue::issue_node(&ca, 0, "member", &[], &root.path().join("n0")).is_err(), "id 0");
    // A ca.pem of another CA next to this ca.key: caught when issuing.
    let other = new_ca(root.path(), "other");
    std::fs::copy(other.join("ca.pem"), ca.join("ca.pem")).expect("copy");
    let err = issue::issue_node(&ca, 10, "member", &[], &root.path().join("n10")).expect_err("mismatched CA files");
    assert!(err.to_string().contains("do not belong together"), "{err}");
}

#[test]
fn load_errors_name_the_file() {
    let root = tempfile::tempdir().expect("tempdir");
    let err = NodeTls::load(&root.path().join("nowhere")).expect_err("missing");
    assert!(err.to_string().contains("ca.pem"), "{err}");

    let ca = new_ca(root.path(), "ca");
    let a = root.path().join("a");
    let b = root.path().join("b");
    issue::issue_node(&ca, 1, "member", &[], &a).expect("issue");
    issue::issue_node(&ca, 2, "member", &[], &b).expect("issue");
    std::fs::copy(b.join("node.key"), a.join("node.key")).expect("copy");
    let err = NodeTls::load(&a).expect_err("key of another certificate");
    assert!(err.to_string().contains("node.key"), "{err}");

    let other = new_ca(root.path(), "other");
    std::fs::copy(other.join("ca.pem"), b.join("ca.pem")).expect("copy");
    let err = NodeTls::load(&b).expect_err("certificate of another CA");
    assert!(err.to_string().contains("does not verify"), "{err}");

    std::fs::write(b.join("node.pem"), "not pem").expect("write");
    let err = NodeTls::load(&b).expect_err("garbage");
    assert!(err.to_string().contains("node.pem"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_only_the_cas_nodes() {
    bounded(async {
        let root = tempfile::tempdir().expect("tempdir");
        let ca = new_ca(root.path(), "ca");
        let server = new_node(&ca, 1, root.path(), "n1");
        let client = new_node(&ca, 7, root.path(), "n7");
        let other_ca = new_ca(root.path(), "other-ca");
        let stranger = new_node(&other_ca, 7, root.path(), "stranger");

        let (addr, task) = echo_server(&server, TlsMode::Required).await;
        let (answer, certs) = call_tls(addr, &client).await.expect("a node of the CA is served");
        assert_eq!(answer, "peer 7");
        assert_eq!(peer_identity(&certs).map(|p| p.id), Some(1), "the server presents its node certificate");

        // Both ends refuse: the stranger trusts another CA...
        let refused = call_tls(addr, &stranger).await;
        assert!(refused.is_err(), "another CA's node was served: {refused:?}");
        // ...and the server refuses its certificate even from a client that
        // trusts the server.
        let ca_pem = ca.join("ca.pem");
        assert_eq!(call_raw(addr, &ca_pem, Some(&root.path().join("n7"))).await.expect("control"), "peer 7");
        let refused = call_raw(addr, &ca_pem, Some(&root.path().join("stranger"))).await;
        assert!(refused.is_err(), "another CA's certificate was served: {refused:?}");
        let refused = call_raw(addr, &ca_pem, None).await;
        assert!(refused.is_err(), "a client without a certificate was served: {refused:?}");
        let plain = call_plain(addr).await;
        // (At most a TLS alert record comes back, never an answer.)
        assert!(!matches!(&plain, Ok(line) if line == "plain" || line.starts_with("peer")), "plain got {plain:?}");

        task.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissive_serves_tls_and_plain_off_serves_plain() {
    bounded(async {
        let root = tempfile::tempdir().expect("tempdir");
        let ca = new_ca(root.path(), "ca");
        let server = new_node(&ca, 1, root.path(), "n1");
        let client = new_node(&ca, 7, root.path(), "n7");

        let (addr, task) = echo_server(&server, TlsMode::Permissive).await;
        assert_eq!(call_tls(addr, &client).await.expect("tls").0, "peer 7");
        assert_eq!(call_plain(addr).await.expect("plain"), "plain");
        task.abort();

        let (addr, task) = echo_server(&server, TlsMode::Off).await;
        assert_eq!(call_plain(addr).await.expect("plain"), "plain");
        assert!(call_tls(addr, &client).await.is_err(), "an off server speaks no TLS");
        task.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_serve_new_files_with_the_same_config() {
    bounded(async {
        let root = tempfile::tempdir().expect("tempdir");
        let ca = new_ca(root.path(), "ca");
        let server = new_node(&ca, 1, root.path(), "n1");
        let client = new_node(&ca, 7, root.path(), "n7");
        let dir = root.path().join("n1");
        let (addr, task) = echo_server(&server, TlsMode::Required).await;

        let (_, certs) = call_tls(addr, &client).await.expect("first");
        assert_eq!(certs[0], first_cert(&dir.join("node.pem")));
        assert!(!server.reload_if_changed().expect("unchanged"), "nothing changed yet");

        // A renewed certificate, same CA.
        issue::issue_node_with_days(&ca, 1, "member", &hosts(), &dir, 30).expect("renew");
        let renewed = first_cert(&dir.join("node.pem"));
        assert_ne!(certs[0], renewed);
        assert!(server.reload_if_changed().expect("reload"), "the new files are loaded");
        assert!(!server.reload_if_changed().expect("unchanged"));
        let (answer, certs) = call_tls(addr, &client).await.expect("after renewal");
        assert_eq!(answer, "peer 7");
        assert_eq!(certs[0], renewed, "the renewed certificate is served by the config built before");

        // Broken files and a certificate naming another node: refused, the
        // files in use stay.
        std::fs::write(dir.join("node.pem"), "garbage").expect("write");
        assert!(server.reload_if_changed().is_err());
        assert_eq!(call_tls(addr, &client).await.expect("still served").1[0], renewed);
        issue::issue_node(&ca, 2, "member", &hosts(), &dir).expect("issue for node 2");
        let err = server.reload_if_changed().expect_err("another node's certificate");
        assert!(err.to_string().contains("names node 2"), "{err}");
        assert_eq!(call_tls(addr, &client).await.expect("still served").1[0], renewed);

        // A new CA: new certificates for both, then the old client is refused.
        let new_ca_dir = new_ca(root.path(), "ca2");
        issue::issue_node(&new_ca_dir, 1, "member", &hosts(), &dir).expect("issue");
        assert!(server.reload_if_changed().expect("reload"));
        let refused = call_tls(addr, &client).await;
        assert!(refused.is_err(), "a client of the old CA was served: {refused:?}");
        let new_pem = new_ca_dir.join("ca.pem");
        let refused = call_raw(addr, &new_pem, Some(&root.path().join("n7"))).await;
        assert!(refused.is_err(), "the server took a certificate of the old CA: {refused:?}");
        let new_client = new_node(&new_ca_dir, 7, root.path(), "n7-new");
        assert_eq!(call_tls(addr, &new_client).await.expect("new CA's client").0, "peer 7");
        // And the server, as a client, now trusts only the new CA's servers.
        let (old_addr, old_task) = echo_server(&client, TlsMode::Required).await;
        assert!(call_tls(old_addr, &server).await.is_err(), "the old CA's server was trusted");
        old_task.abort();
        task.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloader_task_picks_up_new_files_and_stops() {
    bounded(async {
        let root = tempfile::tempdir().expect("tempdir");
        let ca = new_ca(root.path(), "ca");
        let server = new_node(&ca, 1, root.path(), "n1");
        let stop = tokio_util::sync::CancellationToken::new();
        let reloader = server.spawn_reloader(Duration::from_millis(50), stop.clone());
        let before = server.expiries();
        issue::issue_node_with_days(&ca, 1, "member", &hosts(), &root.path().join("n1"), 30).expect("renew");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while server.expiries() == before {
            assert!(tokio::time::Instant::now() < deadline, "reloader did not pick up the renewal");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), reloader).await.expect("stops").expect("task");
    })
    .await;
}

async fn serve_http(mode: TlsMode, tls: &NodeTls) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let listener = HttpsListener::new(listener, mode, Some(tls)).expect("listener");
    let app = axum::Router::new().route("/hello", axum::routing::get(|| async { "hi" }));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, task)
}

async fn get(client: &reqwest::Client, url: &str) -> Result<String, String> {
    let answer = client.get(url).send().await.map_err(|e| format!("{e:?}"))?;
    answer.text().await.map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_listener_serves_axum() {
    bounded(async {
        skein_tls::install_provider();
        skein_tls::install_provider(); // idempotent
        let root = tempfile::tempdir().expect("tempdir");
        let ca = new_ca(root.path(), "ca");
        let server = new_node(&ca, 1, root.path(), "n1");
        let plain = reqwest::Client::builder().build().expect("client");
        let https = |addr: SocketAddr, ca: &Path| {
            let cfg = client_trusting(&ca.join("ca.pem")).expect("client config");
            reqwest::Client::builder()
                .tls_backend_preconfigured(cfg)
                .resolve("node-1.skein", addr)
                .resolve("node-2.skein", addr)
                .build()
                .expect("client")
        };

        let (addr, task) = serve_http(TlsMode::Required, &server).await;
        let client = https(addr, &ca);
        // A client that connects and says nothing holds no one up.
        let silent = TcpStream::connect(addr).await.expect("connect");
        let port = addr.port();
        assert_eq!(get(&client, &format!("https://127.0.0.1:{port}/hello")).await.expect("by IP"), "hi");
        assert_eq!(get(&client, &format!("https://localhost:{port}/hello")).await.expect("by host"), "hi");
        assert_eq!(get(&client, &format!("https://node-1.skein:{port}/hello")).await.expect("by node name"), "hi");
        // The name is checked: the certificate does not name node-2.
        let other_name = get(&client, &format!("https://node-2.skein:{port}/hello")).await;
        assert!(other_name.is_err(), "{other_name:?}");
        assert!(get(&plain, &format!("http://127.0.0.1:{port}/hello")).await.is_err(), "plain HTTP on required");
        // A client of another CA does not trust it.
        let other = new_ca(root.path(), "other");
        let strict = https(addr, &other);
        assert!(get(&strict, &format!("https://127.0.0.1:{port}/hello")).await.is_err(), "another CA trusted it");
        drop(silent);
        task.abort();

        let (addr, task) = serve_http(TlsMode::Permissive, &server).await;
        let _silent = TcpStream::connect(addr).await.expect("connect");
        let port = addr.port();
        assert_eq!(get(&https(addr, &ca), &format!("https://127.0.0.1:{port}/hello")).await.expect("https"), "hi");
        assert_eq!(get(&plain, &format!("http://127.0.0.1:{port}/hello")).await.expect("http"), "hi");
        task.abort();
    })
    .await;
}

#[tokio::test]
async fn https_listener_needs_certificates_unless_off() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    assert!(HttpsListener::new(listener, TlsMode::Required, None).is_err());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    HttpsListener::new(listener, TlsMode::Off, None).expect("off needs none");
}
