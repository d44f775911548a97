//! [`NodeTls`]: a node's TLS files, loaded, reloaded, and the configs that
//! use them.
//!
//! Every config reads the *current* files through a certificate resolver and
//! verifiers that look at the shared state on each handshake, so replacing
//! the files and reloading (a renewed certificate, a new CA) needs no new
//! config: listeners and clients keep theirs. Connections already open keep
//! the certificates they were made with.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{
    ClientHello, NoServerSessionStorage, ParsedCertificate, ResolvesServerCert, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    der, peer_identity, provider, read_certs, read_roots, NodeIdentity, TlsError, CA_FILE, CERT_FILE, KEY_FILE,
};

/// When a certificate expires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertExpiry {
    /// `"ca"` (one per certificate of `ca.pem`) or `"node"`.
    pub name: &'static str,
    /// Its notAfter, in seconds since the Unix epoch.
    pub not_after_unix: i64,
}

/// A node's TLS: the CA, its certificate and key, from a directory. Cheap
/// to clone; clones share the state, so a reload through one is seen by all.
#[derive(Clone)]
pub struct NodeTls {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    provider: Arc<CryptoProvider>,
    /// The id the node's certificate names; a reload that names another is
    /// refused (a node's identity never changes under it).
    id: u64,
    current: RwLock<Arc<Loaded>>,
    /// The files' (mtime, length) when last read, whether or not that read
    /// succeeded: a broken file is reported once, not at every tick.
    stamps: Mutex<Stamps>,
}

type Stamps = [Option<(SystemTime, u64)>; 3];

/// The files as last loaded successfully.
struct Loaded {
    key: Arc<CertifiedKey>,
    roots: Arc<RootCertStore>,
    /// webpki's client verifier over `roots` (built once per load).
    client_verifier: Arc<dyn ClientCertVerifier>,
    identity: NodeIdentity,
    expiries: Vec<CertExpiry>,
}

impl fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeTls")
            .field("dir", &self.inner.dir)
            .field("identity", &self.inner.current().identity)
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn current(&self) -> Arc<Loaded> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }
}

impl NodeTls {
    /// Loads `dir/ca.pem`, `dir/node.pem` and `dir/node.key`, and checks
    /// that they fit: the key is the certificate's, the certificate is a
    /// skein node certificate, signed by the CA and valid now.
    pub fn load(dir: &Path) -> Result<NodeTls, TlsError> {
        let provider = provider();
        let stamps = stamps(dir);
        let loaded = load(dir, &provider)?;
        Ok(NodeTls {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                provider,
                id: loaded.identity.id,
                current: RwLock::new(Arc::new(loaded)),
                stamps: Mutex::new(stamps),
            }),
        })
    }

    /// The id this node's certificate names.
    pub fn node_id(&self) -> u64 {
        self.inner.id
    }

    /// The role this node's certificate names: `member` or `worker`.
    pub fn role(&self) -> String {
        self.inner.current().identity.role.clone()
    }

    /// The directory the files are read from.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Reads the three files again if any changed (mtime or length) since
    /// they were last read. `Ok(true)`: the new files are in use from the
    /// next handshake on. On an error the files in use stay, and the same
    /// files are not tried again until they change again.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = stamps(&self.inner.dir);
        {
            let mut seen = self.inner.stamps.lock().unwrap_or_else(PoisonError::into_inner);
            if *seen == now {
                return Ok(false);
            }
            *seen = now;
        }
        let loaded = load(&self.inner.dir, &self.inner.provider)?;
        if loaded.identity.id != self.inner.id {
            return Err(TlsError::Invalid(format!(
                "{}: names node {}, but this node is {}; keeping the current certificate",
                self.inner.dir.join(CERT_FILE).display(),
                loaded.identity.id,
                self.inner.id
            )));
        }
        *self.inner.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(loaded);
        Ok(true)
    }

    /// Calls [`NodeTls::reload_if_changed`] every `every` until `shutdown`,
    /// logging each reload and each failure.
    pub fn spawn_reloader(&self, every: Duration, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let tls = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await; // the first tick is immediate; the files were just loaded
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let reloading = tls.clone();
                // Small files, but still file I/O: off the async threads.
                match tokio::task::spawn_blocking(move || reloading.reload_if_changed()).await {
                    Ok(Ok(true)) => {
                        info!(dir = %tls.dir().display(), expiries = ?tls.expiries(), "TLS files reloaded")
                    }
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => warn!(error = %e, "TLS files changed but cannot be used; keeping the previous ones"),
                    Err(e) => warn!(error = %e, "TLS reload task failed"),
                }
            }
        })
    }

    /// The node-to-node RPC server's config: presents this node's
    /// certificate and requires a client certificate that chains to the CA
    /// and is a skein node certificate.
    pub fn rpc_server_config(&self) -> Arc<ServerConfig> {
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&self.inner.provider))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_client_cert_verifier(Arc::new(CurrentClientVerifier(Arc::clone(&self.inner))))
            .with_cert_resolver(Arc::new(CurrentCert(Arc::clone(&self.inner))));
        // No resumption: a resumed session skips the client verifier, so a
        // client of a replaced CA could resume its way back in. RPC
        // connections are long-lived; a full handshake per connection is cheap.
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Arc::new(config)
    }

    /// The node-to-node RPC client's config: presents this node's
    /// certificate; accepts a server whose certificate chains to the CA and
    /// is a skein node certificate (of any id: the caller dials an address,
    /// not an id). The server name is not checked.
    pub fn rpc_client_config(&self) -> Arc<ClientConfig> {
        let mut config = ClientConfig::builder_with_provider(Arc::clone(&self.inner.provider))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NodeServerVerifier(Arc::clone(&self.inner))))
            .with_client_cert_resolver(Arc::new(CurrentCert(Arc::clone(&self.inner))));
        config.resumption = Resumption::disabled();
        Arc::new(config)
    }

    /// The HTTPS API's config: this node's certificate, no client
    /// certificates (HTTP clients authenticate with bearer tokens).
    pub fn https_server_config(&self) -> Arc<ServerConfig> {
        let config = ServerConfig::builder_with_provider(Arc::clone(&self.inner.provider))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(CurrentCert(Arc::clone(&self.inner))));
        Arc::new(config)
    }

    /// When the CA(s) and the node's certificate in use expire.
    pub fn expiries(&self) -> Vec<CertExpiry> {
        self.inner.current().expiries.clone()
    }
}

/// The files' (mtime, length); `None` for a file that cannot be read.
fn stamps(dir: &Path) -> Stamps {
    [CA_FILE, CERT_FILE, KEY_FILE].map(|name| {
        let meta = std::fs::metadata(dir.join(name)).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    })
}

fn load(dir: &Path, provider: &Arc<CryptoProvider>) -> Result<Loaded, TlsError> {
    let ca_path = dir.join(CA_FILE);
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);

    let roots = Arc::new(read_roots(&ca_path)?);
    let ca_certs = read_certs(&ca_path)?;
    let chain = read_certs(&cert_path)?;
    let key_bytes = std::fs::read(&key_path).map_err(|e| TlsError::file(&key_path, e))?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes)
        .map_err(|e| TlsError::file(&key_path, format!("not a PEM private key: {e}")))?;

    let identity = peer_identity(&chain).ok_or_else(|| {
        TlsError::file(
            &cert_path,
            "not a skein node certificate (no `skein://<role>/<id>` URI name; make one with `skein cert node`)",
        )
    })?;
    let parsed = ParsedCertificate::try_from(&chain[0]).map_err(|e| TlsError::file(&cert_path, e))?;
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &parsed,
        &roots,
        &chain[1..],
        UnixTime::now(),
        provider.signature_verification_algorithms.all,
    )
    .map_err(|e| {
        TlsError::Invalid(format!("{} does not verify against {}: {e}", cert_path.display(), ca_path.display()))
    })?;
    let key = CertifiedKey::from_der(chain.clone(), key, provider)
        .map_err(|e| TlsError::file(&key_path, format!("cannot be used with {}: {e}", cert_path.display())))?;
    let client_verifier = WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(provider))
        .build()
        .map_err(|e| TlsError::file(&ca_path, e))?;

    let mut expiries: Vec<CertExpiry> = ca_certs
        .iter()
        .filter_map(|c| der::not_after(c))
        .map(|t| CertExpiry { name: "ca", not_after_unix: t })
        .collect();
    if let Some(t) = der::not_after(&chain[0]) {
        expiries.push(CertExpiry { name: "node", not_after_unix: t });
    }
    Ok(Loaded { key: Arc::new(key), roots, client_verifier, identity, expiries })
}

/// Resolves to the node's current certificate, as server and as client.
#[derive(Debug)]
struct CurrentCert(Arc<Inner>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0.current().key))
    }
}

impl ResolvesClientCert for CurrentCert {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0.current().key))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inner").field("dir", &self.dir).field("id", &self.id).finish_non_exhaustive()
    }
}

fn not_a_node_cert() -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
}

/// The RPC server's check of a client: webpki's, against the current CA,
/// then "is a skein node certificate".
#[derive(Debug)]
struct CurrentClientVerifier(Arc<Inner>);

impl ClientCertVerifier for CurrentClientVerifier {
    /// No hints: our clients present their one certificate anyway, and the
    /// hints would have to borrow from the current state.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.0.current().client_verifier.verify_client_cert(end_entity, intermediates, now)?;
        if peer_identity(std::slice::from_ref(end_entity)).is_none() {
            return Err(not_a_node_cert());
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The RPC client's check of a server: chains to the current CA (for
/// serverAuth, valid now) and is a skein node certificate. Not the name:
/// peers are dialled by address, and any node may answer at an address.
#[derive(Debug)]
struct NodeServerVerifier(Arc<Inner>);

impl ServerCertVerifier for NodeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.0.current().roots,
            intermediates,
            now,
            self.0.provider.signature_verification_algorithms.all,
        )?;
        if peer_identity(std::slice::from_ref(end_entity)).is_none() {
            return Err(not_a_node_cert());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.provider.signature_verification_algorithms.supported_schemes()
    }
}
