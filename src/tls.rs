//! TLS on both sides: certificates for TLS listeners (parsed and checked at
//! compile time from the bytes read with the config, chosen by SNI at
//! handshake time) and the rustls client config toward `https://` upstream
//! endpoints.
//!
//! Certificates live in the compiled config ([`CertSet`]). A listener's
//! resolver ([`ListenerResolver`]) asks a [`CertSource`] (the live snapshot)
//! on every handshake, so a reload that changes a certificate (or the file
//! behind it) takes effect for the next handshake while open connections
//! keep theirs. Only the aws-lc-rs provider is used; TLS 1.2 and 1.3 only.

use crate::clock::rfc3339;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::version::{TLS12, TLS13};
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// A TLS handshake not finished within this time is dropped (SPEC 5), so
/// idle or half-sent ClientHellos cannot hold connections.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `check` warns about a certificate that expires within this time.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// The protocol versions served and spoken: TLS 1.2 and 1.3 only.
pub static VERSIONS: &[&SupportedProtocolVersion] = &[&TLS13, &TLS12];

/// 0 = use [`HANDSHAKE_TIMEOUT`].
static HANDSHAKE_OVERRIDE_MS: AtomicU64 = AtomicU64::new(0);

/// The handshake timeout in force.
pub fn handshake_timeout() -> Duration {
    match HANDSHAKE_OVERRIDE_MS.load(Ordering::Relaxed) {
        0 => HANDSHAKE_TIMEOUT,
        ms => Duration::from_millis(ms),
    }
}

/// Shortens the handshake timeout process-wide (for tests only).
#[doc(hidden)]
pub fn set_handshake_timeout_for_tests(d: Duration) {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
    HANDSHAKE_OVERRIDE_MS.store(ms, Ordering::Relaxed);
}

/// The one crypto provider used everywhere (aws-lc-rs).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

// === certificates ===

/// Why a certificate/key pair cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CertError {
    /// The certificate file cannot be read or holds no certificate.
    #[error("cannot read certificate {path}: {reason}")]
    Cert {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The key file cannot be read or holds no usable private key.
    #[error("cannot read private key {path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The private key is not the certificate's.
    #[error("certificate {cert} does not match private key {key}")]
    Mismatch {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
    },
    /// The certificate's validity has ended.
    #[error("certificate {path} expired on {not_after}")]
    Expired {
        /// The file.
        path: String,
        /// When it expired.
        not_after: String,
    },
}

impl CertError {
    /// Whether the problem is with the key file (so it is reported at `key:`).
    pub fn is_key(&self) -> bool {
        matches!(self, CertError::Key { .. })
    }
}

/// A certificate chain and its key, loaded from PEM files and checked against
/// each other.
#[derive(Clone)]
pub struct LoadedCert {
    /// The certificate chain file (PEM, leaf first).
    pub cert_path: PathBuf,
    /// The private key file (PEM).
    pub key_path: PathBuf,
    /// What rustls serves.
    pub key: Arc<CertifiedKey>,
    /// DNS names of the leaf (SANs; the subject CN when there are none),
    /// lowercased; wildcards kept as `*.example.com`.
    pub names: Vec<String>,
    /// End of the leaf's validity.
    pub not_after: SystemTime,
}

impl fmt::Debug for LoadedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedCert")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .field("names", &self.names)
            .field("not_after", &rfc3339(self.not_after))
            .finish_non_exhaustive()
    }
}

impl LoadedCert {
    /// How long until the leaf expires (zero once expired).
    pub fn expires_in(&self, now: SystemTime) -> Duration {
        self.not_after.duration_since(now).unwrap_or_default()
    }
}

/// Parses PEM certificates.
pub fn parse_certs(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate found".into());
    }
    Ok(certs)
}

/// A certificate or key file: its path and its content (or why it could
/// not be read).
#[derive(Debug, Clone, Copy)]
pub struct PemFile<'a> {
    /// Where it was read from.
    pub path: &'a Path,
    /// What was read.
    pub bytes: Result<&'a [u8], &'a str>,
}

/// Parses a certificate chain and its key and checks that they belong
/// together and that the leaf has not expired at `now`.
pub fn parse_pair(
    cert_file: PemFile<'_>,
    key_file: PemFile<'_>,
    now: SystemTime,
) -> Result<LoadedCert, CertError> {
    let (cert, key) = (cert_file.path, key_file.path);
    let cert_err = |reason: String| CertError::Cert {
        path: cert.display().to_string(),
        reason,
    };
    let key_err = |reason: String| CertError::Key {
        path: key.display().to_string(),
        reason,
    };
    let cert_bytes = cert_file.bytes.map_err(|e| cert_err(e.to_string()))?;
    let chain = parse_certs(cert_bytes).map_err(cert_err)?;
    let key_bytes = key_file.bytes.map_err(|e| key_err(e.to_string()))?;
    let key_der = PrivateKeyDer::from_pem_slice(key_bytes).map_err(|e| key_err(e.to_string()))?;
    let (names, not_after) = leaf_info(&chain[0]).map_err(cert_err)?;
    let certified = CertifiedKey::from_der(chain, key_der, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => CertError::Mismatch {
            cert: cert.display().to_string(),
            key: key.display().to_string(),
        },
        other => key_err(other.to_string()),
    })?;
    if not_after <= now {
        return Err(CertError::Expired {
            path: cert.display().to_string(),
            not_after: rfc3339(not_after),
        });
    }
    Ok(LoadedCert {
        cert_path: cert.to_path_buf(),
        key_path: key.to_path_buf(),
        key: Arc::new(certified),
        names,
        not_after,
    })
}

/// The leaf's DNS names and the end of its validity.
fn leaf_info(der: &CertificateDer<'_>) -> Result<(Vec<String>, SystemTime), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let ts = cert.validity().not_after.timestamp();
    let not_after = if ts >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(ts.unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH
    };
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.trim_end_matches('.').to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        for cn in cert.subject().iter_common_name() {
            if let Ok(s) = cn.as_str() {
                names.push(s.trim_end_matches('.').to_ascii_lowercase());
            }
        }
    }
    Ok((names, not_after))
}

/// A listener's certificates with an SNI index: exact names first, then
/// `*.example.com` covering exactly one more label (not the apex); the first
/// certificate when SNI is absent or unknown. Equal when the same files hold
/// the same certificates.
#[derive(Clone, Default)]
pub struct CertSet {
    certs: Arc<[LoadedCert]>,
    exact: Arc<HashMap<String, usize>>,
    wildcard: Arc<HashMap<String, usize>>,
}

impl CertSet {
    /// Indexes certificates; on a name shared by several, the first wins.
    pub fn new(certs: Vec<LoadedCert>) -> Self {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (i, c) in certs.iter().enumerate() {
            for n in &c.names {
                match n.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_string()).or_insert(i),
                    None => exact.entry(n.clone()).or_insert(i),
                };
            }
        }
        CertSet {
            certs: certs.into(),
            exact: Arc::new(exact),
            wildcard: Arc::new(wildcard),
        }
    }

    /// The certificates, in configuration order.
    pub fn certs(&self) -> &[LoadedCert] {
        &self.certs
    }

    /// The certificate for a server name (or the default one).
    pub fn resolve(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let idx = sni.and_then(|name| self.lookup(name)).unwrap_or(0);
        self.certs.get(idx).map(|c| c.key.clone())
    }

    fn lookup(&self, name: &str) -> Option<usize> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(i) = self.exact.get(&name) {
            return Some(*i);
        }
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent).copied()
    }
}

impl PartialEq for CertSet {
    fn eq(&self, other: &Self) -> bool {
        self.certs.len() == other.certs.len()
            && self.certs.iter().zip(other.certs.iter()).all(|(a, b)| {
                a.cert_path == b.cert_path && a.key_path == b.key_path && a.key.cert == b.key.cert
            })
    }
}

impl fmt::Debug for CertSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.certs.iter()).finish()
    }
}

// === listeners ===

/// Where a listener's current certificates come from (the live snapshot).
pub trait CertSource: Send + Sync + fmt::Debug {
    /// The certificates of the TLS listener bound to `addr` in the current
    /// config; `None` if it has none (a reload removed it: that takes a
    /// restart).
    fn certs(&self, addr: SocketAddr) -> Option<CertSet>;
}

/// Picks a listener's certificate from the current config at each
/// handshake; falls back to the certificates it started with if a reload
/// removed the listener.
#[derive(Debug)]
pub struct ListenerResolver {
    source: Arc<dyn CertSource>,
    addr: SocketAddr,
    initial: CertSet,
}

impl ResolvesServerCert for ListenerResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name();
        match self.source.certs(self.addr) {
            Some(current) => current.resolve(sni),
            None => self.initial.resolve(sni),
        }
    }
}

/// The rustls server config of the TLS listener bound to `addr`: TLS
/// 1.2/1.3, its ALPN list, certificates resolved through `source` (starting
/// with `initial`).
pub fn server_config(
    source: Arc<dyn CertSource>,
    addr: SocketAddr,
    initial: CertSet,
    alpn: &[String],
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let resolver = ListenerResolver {
        source,
        addr,
        initial,
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(Arc::new(config))
}

/// Whether a request's Host (port and trailing dot ignored) names the
/// server the client asked for by SNI. A mismatch is answered 421.
pub fn host_matches_sni(host: &str, sni: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.trim_end_matches('.')
        .eq_ignore_ascii_case(sni.trim_end_matches('.'))
}

// === upstreams ===

/// The rustls client config toward an upstream's `https://` endpoints:
/// verified against `ca` when given, else the bundled Mozilla roots; ALPN
/// is set by the connector.
pub fn client_config(ca: &[CertificateDer<'static>]) -> Result<ClientConfig, rustls::Error> {
    let mut roots = RootCertStore::empty();
    if ca.is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    } else {
        roots.add_parsable_certificates(ca.iter().cloned());
    }
    Ok(ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Parses a CA bundle and checks that it holds at least one usable CA.
pub fn parse_ca(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = parse_certs(bytes)?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs.iter().cloned());
    if added == 0 {
        return Err("no usable CA certificate".into());
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_matches_sni_ignores_port_case_and_trailing_dot() {
        assert!(host_matches_sni("A.example.com:8443", "a.example.com"));
        assert!(host_matches_sni("a.example.com.", "a.example.com"));
        assert!(host_matches_sni("[::1]:443", "::1"));
        assert!(!host_matches_sni("b.example.com", "a.example.com"));
    }
}
