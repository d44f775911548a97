//! skein-tls: the TLS of a skein cluster.
//!
//! - [`NodeTls`]: a node's certificate, key and cluster CA, loaded from a
//!   directory (`ca.pem`, `node.pem`, `node.key`) and reloaded when the files
//!   change; the rustls configs of the node-to-node RPC (mutual TLS) and of
//!   the HTTPS API, which always use the files loaded last;
//! - [`peer_identity`]: which node a verified certificate names (a URI SAN
//!   `skein://<role>/<id>`);
//! - [`accept`], [`MaybeTls`] and [`HttpsListener`]: the server side of
//!   [`TlsMode`] `off`, `permissive` (TLS and plain on one port, told apart
//!   by the first byte) and `required`;
//! - [`limit`]: [`ConnectionLimiter`], the limits on connections open at
//!   once, per remote address and in all, of the HTTPS and RPC listeners;
//! - [`client_trusting`]: an HTTPS client config for the CLI and tests;
//! - [`issue`]: making the CA and node certificates (`skein cert`);
//! - [`token`]: API tokens as text, and the hash the cluster keeps of them.
//!
//! Only ring's crypto provider is used, named in every config (never the
//! process default), so a second provider linked into the binary never makes
//! rustls panic.

mod accept;
mod der;
pub mod issue;
pub mod limit;
mod node;
pub mod token;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

pub use accept::{accept, HttpsConnection, HttpsListener, MaybeTls, HANDSHAKE_TIMEOUT};
pub use limit::{ConnectionLimiter, ConnectionLimits, ConnectionSlot};
pub use node::{CertExpiry, NodeTls};
// The versions skein-tls is built against, for the node and the transport.
pub use {rustls, tokio_rustls};

/// The names of the files of a TLS directory (`--tls-dir`).
pub const CA_FILE: &str = "ca.pem";
/// The node's certificate (then any intermediates), PEM.
pub const CERT_FILE: &str = "node.pem";
/// The node's private key, PEM (PKCS#8).
pub const KEY_FILE: &str = "node.key";
/// The CA's private key, written by [`issue::make_ca`]; never on a node.
pub const CA_KEY_FILE: &str = "ca.key";

/// The URI scheme of a node certificate's identity: `skein://<role>/<id>`.
const IDENTITY_SCHEME: &str = "skein://";

/// Whether a listener (or a client) speaks TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain TCP only.
    Off,
    /// Both: a server serves TLS and plain connections on one port; a
    /// client tries TLS and falls back to plain. For migrating a running
    /// cluster to TLS one node at a time.
    Permissive,
    /// TLS only.
    Required,
}

impl FromStr for TlsMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(TlsMode::Off),
            "permissive" => Ok(TlsMode::Permissive),
            "required" => Ok(TlsMode::Required),
            other => Err(format!("unknown TLS mode {other:?}: expected off, permissive or required")),
        }
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsMode::Off => "off",
            TlsMode::Permissive => "permissive",
            TlsMode::Required => "required",
        })
    }
}

/// What went wrong loading or making certificates. The message names the
/// file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written, or its contents are wrong.
    #[error("{}: {what}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The files are each fine but do not fit together (a certificate not
    /// signed by the CA, a reload naming another node), or an argument is
    /// invalid.
    #[error("{0}")]
    Invalid(String),
}

impl TlsError {
    fn file(path: &Path, what: impl fmt::Display) -> TlsError {
        TlsError::File { path: path.to_path_buf(), what: what.to_string() }
    }
}

/// The node a certificate names.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeIdentity {
    /// The node's id.
    pub id: u64,
    /// `member` or `worker` (see [`issue::ROLES`]).
    pub role: String,
}

impl fmt::Display for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{IDENTITY_SCHEME}{}/{}", self.role, self.id)
    }
}

/// The identity the end-entity certificate of `certs` names, if it is a
/// skein node certificate: one URI SAN `skein://<role>/<id>`. Reads the
/// certificate without verifying it: give it only certificates rustls has
/// verified (a peer's, after the handshake).
pub fn peer_identity(certs: &[CertificateDer<'_>]) -> Option<NodeIdentity> {
    let mut found: Option<NodeIdentity> = None;
    for uri in der::uri_sans(certs.first()?) {
        let Some(rest) = uri.strip_prefix(IDENTITY_SCHEME) else { continue };
        let (role, id) = rest.split_once('/')?;
        let valid_role = !role.is_empty() && role.bytes().all(|b| b.is_ascii_lowercase());
        let id = id.parse::<u64>().ok().filter(|_| valid_role)?;
        let identity = NodeIdentity { id, role: role.to_string() };
        // Two identities in one certificate: trust neither.
        if found.as_ref().is_some_and(|f| *f != identity) {
            return None;
        }
        found = Some(identity);
    }
    found
}

/// Installs ring as the process's default rustls provider, for libraries
/// that build their own configs from the default (reqwest, object_store).
/// Idempotent: a provider already installed (by us or anyone) is kept.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// ring's provider, the one every config here names.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client config for HTTPS to a node: trusts the CA in `ca_pem` (a
/// certificate bundle: every certificate in it is trusted) and checks the
/// server's certificate names the host or IP dialled. No client
/// certificate: HTTP clients authenticate with bearer tokens. For reqwest:
/// `ClientBuilder::use_preconfigured_tls(cfg)`.
pub fn client_trusting(ca_pem: &Path) -> Result<rustls::ClientConfig, TlsError> {
    let roots = read_roots(ca_pem)?;
    let provider = provider();
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
        .build()
        .map_err(|e| TlsError::file(ca_pem, e))?;
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid(e.to_string()))?
        .with_webpki_verifier(verifier)
        .with_no_client_auth())
}

/// The certificates of a PEM file, at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| TlsError::file(path, e))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::file(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::file(path, "no certificate in it (expected PEM \"BEGIN CERTIFICATE\")"));
    }
    Ok(certs)
}

/// A root store of every certificate of a PEM file.
fn read_roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::file(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print() {
        for mode in [TlsMode::Off, TlsMode::Permissive, TlsMode::Required] {
            assert_eq!(mode.to_string().parse::<TlsMode>(), Ok(mode));
        }
        assert!("on".parse::<TlsMode>().is_err());
    }
}
