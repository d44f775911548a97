//! Making certificates: the cluster's CA ([`make_ca`]) and node
//! certificates signed by it ([`issue_node`]). What `skein cert` runs.
//!
//! Keys are ECDSA P-256. A node certificate names its node in a URI SAN
//! `skein://<role>/<id>` (what [`crate::peer_identity`] reads back), and
//! carries the DNS name `node-<id>.skein` and every host given, for
//! clients that check names (HTTPS). It is good for both serverAuth and
//! clientAuth: a node is the server and the client of node-to-node RPC.
//!
//! The CA's distinguished name is derived from its key (a fingerprint of
//! the public key), so that issuing can rebuild the issuer's name from
//! `ca.key` alone, without parsing `ca.pem` (which would take an X.509
//! parser), and so that two CAs never share a name. Every certificate
//! issued is checked against `ca.pem` before it is written.

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use ring::rand::SecureRandom;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::ParsedCertificate;

use crate::{read_roots, TlsError, CA_FILE, CA_KEY_FILE, CERT_FILE, KEY_FILE};

/// The roles a node certificate may name.
pub const ROLES: &[&str] = &["member", "worker"];

/// How long a CA is valid, in days (10 years).
pub const CA_DAYS: u32 = 3650;

/// How long a node certificate is valid by default, in days.
pub const NODE_DAYS: u32 = 365;

/// Certificates start this long before they are made, for peers whose
/// clocks are a little behind.
const BACKDATE: time::Duration = time::Duration::hours(1);

/// Makes a new CA in `dir` (created if needed): `ca.pem` (the certificate,
/// for every node's `--tls-dir`) and `ca.key` (mode 0600; keep it off the
/// nodes). Refuses to overwrite an existing `ca.key`: every certificate it
/// signed would stop verifying.
pub fn make_ca(dir: &Path) -> Result<(), TlsError> {
    let key_path = dir.join(CA_KEY_FILE);
    if key_path.exists() {
        return Err(TlsError::file(
            &key_path,
            "already exists; refusing to replace a CA (every certificate it signed would stop verifying). \
             Move it away first to really start a new CA",
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| TlsError::file(dir, e))?;
    let key = KeyPair::generate().map_err(|e| TlsError::Invalid(format!("generating the CA key: {e}")))?;
    let mut params = ca_params(&key);
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + time::Duration::days(i64::from(CA_DAYS));
    params.serial_number = Some(random_serial()?);
    let cert = params.self_signed(&key).map_err(|e| TlsError::Invalid(format!("making the CA certificate: {e}")))?;
    // The key first, so that a ca.pem never exists without its key.
    write_file(&key_path, key.serialize_pem().as_bytes(), true)?;
    write_file(&dir.join(CA_FILE), cert.pem().as_bytes(), false)
}

/// The CA's parameters that the certificates it signs depend on (its name,
/// its usages); the same every time for the same key.
fn ca_params(key: &KeyPair) -> CertificateParams {
    let fingerprint = ring::digest::digest(&ring::digest::SHA256, &key.subject_public_key_info());
    let short: String = fingerprint.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::OrganizationName, "skein");
    params.distinguished_name.push(DnType::CommonName, format!("skein cluster CA {short}"));
    // Path length 0: it signs node certificates only, no intermediates.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
}

/// Issues a certificate for node `id` with [`NODE_DAYS`] of validity; see
/// [`issue_node_with_days`].
pub fn issue_node(ca_dir: &Path, id: u64, role: &str, hosts: &[String], out_dir: &Path) -> Result<(), TlsError> {
    issue_node_with_days(ca_dir, id, role, hosts, out_dir, NODE_DAYS)
}

/// Issues a certificate for node `id` in role `role` (one of [`ROLES`]),
/// signed by the CA in `ca_dir`, valid for `days`, naming `hosts` (IP
/// addresses become IP names, anything else DNS names) besides
/// `node-<id>.skein`. Writes `node.pem`, `node.key` (0600) and a copy of the
/// CA's `ca.pem` to `out_dir` (created if needed), which then works as the
/// node's `--tls-dir`. Each file is replaced atomically, so a node reloading
/// from `out_dir` never reads half a file.
pub fn issue_node_with_days(
    ca_dir: &Path,
    id: u64,
    role: &str,
    hosts: &[String],
    out_dir: &Path,
    days: u32,
) -> Result<(), TlsError> {
    if id == 0 {
        return Err(TlsError::Invalid("node id 0 is not a valid node id".into()));
    }
    if !ROLES.contains(&role) {
        return Err(TlsError::Invalid(format!("unknown role {role:?}: expected one of {}", ROLES.join(", "))));
    }
    if days == 0 {
        return Err(TlsError::Invalid("a certificate must be valid for at least one day".into()));
    }
    let ca_key_path = ca_dir.join(CA_KEY_FILE);
    let ca_pem_path = ca_dir.join(CA_FILE);
    let ca_key_pem = std::fs::read_to_string(&ca_key_path).map_err(|e| TlsError::file(&ca_key_path, e))?;
    let ca_key =
        KeyPair::from_pem(&ca_key_pem).map_err(|e| TlsError::file(&ca_key_path, format!("not a CA key: {e}")))?;
    let ca_pem = std::fs::read(&ca_pem_path).map_err(|e| TlsError::file(&ca_pem_path, e))?;
    let issuer = Issuer::new(ca_params(&ca_key), ca_key);

    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::OrganizationName, "skein");
    params.distinguished_name.push(DnType::CommonName, format!("skein node {id} ({role})"));
    let ia5 = |s: String| Ia5String::try_from(s.clone()).map_err(|e| TlsError::Invalid(format!("host {s:?}: {e}")));
    params.subject_alt_names =
        vec![SanType::URI(ia5(format!("skein://{role}/{id}"))?), SanType::DnsName(ia5(format!("node-{id}.skein"))?)];
    for host in hosts {
        // `[::1]` as written in URLs.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        params.subject_alt_names.push(match bare.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(ia5(bare.to_string())?),
        });
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + time::Duration::days(i64::from(days));
    params.serial_number = Some(random_serial()?);

    let key = KeyPair::generate().map_err(|e| TlsError::Invalid(format!("generating the node key: {e}")))?;
    let cert =
        params.signed_by(&key, &issuer).map_err(|e| TlsError::Invalid(format!("signing the node certificate: {e}")))?;

    // A ca.pem that is not ca.key's (or not made by `make_ca`) would make
    // certificates no node accepts: find out now, not at the node.
    let roots = read_roots(&ca_pem_path)?;
    let der = CertificateDer::from(cert.der().to_vec());
    let parsed = ParsedCertificate::try_from(&der).map_err(|e| TlsError::Invalid(e.to_string()))?;
    let algs = rustls::crypto::ring::default_provider().signature_verification_algorithms;
    rustls::client::verify_server_cert_signed_by_trust_anchor(&parsed, &roots, &[], UnixTime::now(), algs.all)
        .map_err(|e| {
            TlsError::Invalid(format!(
                "{} and {} do not belong together (was the CA made by `skein cert ca`?): {e}",
                ca_pem_path.display(),
                ca_key_path.display()
            ))
        })?;

    std::fs::create_dir_all(out_dir).map_err(|e| TlsError::file(out_dir, e))?;
    write_file(&out_dir.join(CA_FILE), &ca_pem, false)?;
    // The key before the certificate: a reloading node that reads in
    // between sees a mismatch and retries on the next change.
    write_file(&out_dir.join(KEY_FILE), key.serialize_pem().as_bytes(), true)?;
    write_file(&out_dir.join(CERT_FILE), cert.pem().as_bytes(), false)
}

/// A random positive 16-byte serial number.
fn random_serial() -> Result<SerialNumber, TlsError> {
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| TlsError::Invalid("the system random number generator failed".into()))?;
    bytes[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&bytes))
}

/// Writes `path` atomically (a temporary file in the same directory, then a
/// rename); `secret`: readable by the owner only, from its creation on.
fn write_file(path: &Path, contents: &[u8], secret: bool) -> Result<(), TlsError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let written = options.open(&tmp).and_then(|mut f| {
        f.write_all(contents)?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(TlsError::file(path, e));
    }
    Ok(())
}
