//! TLS end to end, with a test CA made at test time (rcgen, aws-lc-rs) and
//! nothing beyond 127.0.0.1:
//!
//! - `sni_chooses_among_certificates_and_wildcards`: exact names, a wildcard
//!   (not its apex), the first certificate as default; `X-Forwarded-Proto:
//!   https`; a Host other than the SNI is 421.
//! - `h2_by_alpn_is_routed_like_h1`
//! - `tls_1_1_client_hello_is_refused` and `tls12_only_client_still_works`
//! - `half_sent_client_hello_is_dropped_at_the_handshake_timeout`
//! - `websocket_style_upgrade_over_tls`
//! - `rotated_certificate_serves_new_handshakes_and_keeps_open_connections`
//! - `broken_replacement_is_rejected_and_the_old_certificate_kept`
//! - `certificate_file_rotation_is_picked_up_by_the_running_binary`
//! - `https_upstream_is_verified_against_the_ca`
//! - `check_reports_certificate_problems_with_positions`

use crate::support;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use pointsman::reload::{self, ReloadError, Reloader, Trigger};
use pointsman::runtime::{Live, Runtime};
use pointsman::server::Server;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use support::Mode;
use support::check::check_lines;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

// === certificates ===

/// A test CA (shared with the gRPC tests).
pub struct Ca {
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

pub fn ca() -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "pointsman test CA");
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A certificate the CA signed, and its key.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    der: CertificateDer<'static>,
}

/// A leaf for `names`, valid from `from_days` to `to_days` around now.
fn leaf_valid(ca: &Ca, names: &[&str], from_days: i64, to_days: i64) -> Leaf {
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::days(from_days);
    params.not_after = now + time::Duration::days(to_days);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    Leaf {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().clone(),
    }
}

pub fn leaf(ca: &Ca, names: &[&str]) -> Leaf {
    leaf_valid(ca, names, -1, 365)
}

fn write_leaf(dir: &Path, stem: &str, l: &Leaf) {
    // Written to a temporary name and renamed, as rotation tools do.
    for (ext, text) in [("pem", &l.cert_pem), ("key", &l.key_pem)] {
        support::write_atomic(&dir.join(format!("{stem}.{ext}")), text);
    }
}

// === proxy ===

struct Running {
    addr: SocketAddr,
    reloader: Arc<Reloader>,
}

/// Loads `dir/pointsman.yaml` and serves it in-process.
async fn start(dir: &Path) -> Running {
    let config = dir.join("pointsman.yaml");
    let loaded = match reload::load_and_compile(&config) {
        Ok(c) => c,
        Err(e) => panic!("config: {e:?}"),
    };
    let runtime = Runtime::new(None);
    let live = Live::new(runtime.link(loaded.compiled.config), runtime);
    let server = Server::bind(live.clone(), 1).unwrap();
    let addr = server.local_addrs().unwrap()[0];
    let reloader = Reloader::new(config, live, loaded.started);
    tokio::spawn(server.serve(std::future::pending()));
    Running { addr, reloader }
}

fn tls_config(certs: &[&str], upstream: SocketAddr) -> String {
    let mut y = String::from("listen:\n  - bind: \"127.0.0.1:0\"\n    tls:\n      certificates:\n");
    for c in certs {
        y.push_str(&format!("        - {{ cert: {c}.pem, key: {c}.key }}\n"));
    }
    y.push_str(&format!(
        "admin: {{ bind: \"127.0.0.1:0\" }}\nupstreams:\n  web: {{ endpoints: [\"{upstream}\"] }}\nroutes:\n  - name: all\n    to: web\n    experiment: {{ issue_cookie: pm_uid, variants: [{{ name: a, weight: 1 }}] }}\n"
    ));
    y
}

/// An upstream in `mode` behind the proxy serving one certificate (`a`,
/// for `a.test`, from a new CA) on its TLS listener.
struct OneCert {
    up: support::TestUpstream,
    dir: tempfile::TempDir,
    ca: Ca,
    leaf: Leaf,
    p: Running,
}

async fn one_cert(mode: Mode) -> OneCert {
    let up = support::upstream(mode).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let leaf = leaf(&ca, &["a.test"]);
    write_leaf(dir.path(), "a", &leaf);
    std::fs::write(
        dir.path().join("pointsman.yaml"),
        tls_config(&["a"], up.addr),
    )
    .unwrap();
    let p = start(dir.path()).await;
    OneCert {
        up,
        dir,
        ca,
        leaf,
        p,
    }
}

// === clients ===

/// Accepts any server certificate (the SNI tests look at which one came).
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn any_cert_client(alpn: &[&str]) -> ClientConfig {
    let provider = pointsman::tls::provider();
    let mut c = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(pointsman::tls::VERSIONS)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    c.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    c
}

fn ca_client(ca: &Ca, alpn: &[&str]) -> ClientConfig {
    ca_client_with(ca, pointsman::tls::VERSIONS, alpn)
}

/// Trusts `ca` only and speaks the TLS `versions` given.
fn ca_client_with(
    ca: &Ca,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&str],
) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(CertificateDer::pem_slice_iter(ca.pem.as_bytes()).flatten());
    let mut c = ClientConfig::builder_with_provider(pointsman::tls::provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    c
}

use rustls::pki_types::pem::PemObject;

async fn connect(addr: SocketAddr, sni: &str, config: ClientConfig) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(sni.to_string()).unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap()
}

fn served_cert(s: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    s.get_ref().1.peer_certificates().unwrap()[0].clone()
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn h1<S>(s: S) -> Sender
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn get(sender: &mut Sender, host: &str) -> (StatusCode, http::HeaderMap, Bytes) {
    get_path(sender, "/", host).await
}

async fn get_path(
    sender: &mut Sender,
    path: &str,
    host: &str,
) -> (StatusCode, http::HeaderMap, Bytes) {
    let req = Request::get(path)
        .header("host", host)
        .body(Empty::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, body)
}

// === tests ===

#[tokio::test]
async fn sni_chooses_among_certificates_and_wildcards() {
    let up = support::upstream(Mode::Echo).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let a = leaf(&ca, &["a.test"]);
    let b = leaf(&ca, &["b.test", "B2.test"]);
    let w = leaf(&ca, &["*.w.test"]);
    write_leaf(dir.path(), "a", &a);
    write_leaf(dir.path(), "b", &b);
    write_leaf(dir.path(), "w", &w);
    std::fs::write(
        dir.path().join("pointsman.yaml"),
        tls_config(&["a", "b", "w"], up.addr),
    )
    .unwrap();
    let p = start(dir.path()).await;

    for (sni, want) in [
        ("a.test", &a.der),
        ("b.test", &b.der),
        ("b2.test", &b.der),
        ("x.w.test", &w.der),
        ("w.test", &a.der),       // the apex is not covered by *.w.test
        ("y.x.w.test", &a.der),   // nor are deeper names
        ("unknown.test", &a.der), // unknown: the first certificate
        ("127.0.0.1", &a.der),    // an IP: no SNI is sent
    ] {
        let s = connect(p.addr, sni, any_cert_client(&["http/1.1"])).await;
        assert_eq!(&served_cert(&s), want, "SNI {sni}");
    }

    // Verified against the CA, a request goes through with XFP https and a
    // minted cookie marked Secure; a Host other than the SNI is 421.
    let s = connect(p.addr, "x.w.test", ca_client(&ca, &["http/1.1"])).await;
    let mut sender = h1(s).await;
    let (status, headers, body) = get(&mut sender, "x.w.test:443").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "ok");
    assert_eq!(up.last().headers["x-forwarded-proto"], "https");
    let cookie = headers["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");
    let (status, _, _) = get(&mut sender, "a.test").await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn h2_by_alpn_is_routed_like_h1() {
    let s = one_cert(Mode::Echo).await;
    let (up, ca, p) = (&s.up, &s.ca, &s.p);

    let s = connect(p.addr, "a.test", ca_client(ca, &["h2", "http/1.1"])).await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get("https://a.test/x")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
    let seen = up.last();
    assert_eq!(seen.uri, "/x");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");

    // Without ALPN h2 the same listener speaks HTTP/1.1.
    let s = connect(p.addr, "a.test", ca_client(ca, &["http/1.1"])).await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (status, _, _) = get(&mut h1(s).await, "a.test").await;
    assert_eq!(status, StatusCode::OK);
}

/// A TLS 1.1 ClientHello (legacy version 3.2, no supported_versions).
fn tls11_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02];
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // session id
    // ECDHE-ECDSA/RSA-AES128-GCM (which the server has), then two CBC suites.
    body.extend_from_slice(&[0x00, 0x08, 0xc0, 0x2b, 0xc0, 0x2f, 0xc0, 0x13, 0x00, 0x2f]);
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    let sni = b"a.test";
    let mut ext = vec![0x00, 0x00];
    let list_len = sni.len() + 3;
    ext.extend_from_slice(&((list_len + 2) as u16).to_be_bytes());
    ext.extend_from_slice(&(list_len as u16).to_be_bytes());
    ext.push(0);
    ext.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    ext.extend_from_slice(sni);
    // signature_algorithms (rustls wants it before it looks at the version).
    ext.extend_from_slice(&[0x00, 0x0d, 0x00, 0x06, 0x00, 0x04, 0x04, 0x03, 0x04, 0x01]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![0x01, 0, 0, 0];
    hs[1..4].copy_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

#[tokio::test]
async fn tls_1_1_client_hello_is_refused() {
    let s = one_cert(Mode::Echo).await;
    let p = &s.p;

    let mut tcp = TcpStream::connect(p.addr).await.unwrap();
    tcp.write_all(&tls11_client_hello()).await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "connection not closed");
    // A fatal protocol_version alert, never a ServerHello.
    assert_eq!(got.first(), Some(&0x15), "{got:02x?}");
    assert_eq!(got.get(5..7), Some(&[2u8, 70][..]), "{got:02x?}");
    println!("TLS 1.1 answer: {got:02x?}");
}

#[tokio::test]
async fn tls12_only_client_still_works() {
    let s = one_cert(Mode::Echo).await;
    let (ca, p) = (&s.ca, &s.p);
    let c = ca_client_with(ca, &[&rustls::version::TLS12], &[]);
    let s = connect(p.addr, "a.test", c).await;
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
}

#[tokio::test]
async fn half_sent_client_hello_is_dropped_at_the_handshake_timeout() {
    assert_eq!(pointsman::tls::HANDSHAKE_TIMEOUT, Duration::from_secs(10));
    let s = one_cert(Mode::Echo).await;
    let p = &s.p;
    // Shortened for the test; other tests' handshakes take milliseconds.
    pointsman::tls::set_handshake_timeout_for_tests(Duration::from_secs(2));
    let hello = tls11_client_hello();
    let started = std::time::Instant::now();
    let mut idle = TcpStream::connect(p.addr).await.unwrap();
    let mut half = TcpStream::connect(p.addr).await.unwrap();
    half.write_all(&hello[..20]).await.unwrap();
    for s in [&mut idle, &mut half] {
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(8), s.read(&mut buf))
            .await
            .expect("closed by the handshake timeout")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1900), "{took:?}");
    println!("idle and half-sent ClientHellos closed after {took:?}");
}

#[tokio::test]
async fn websocket_style_upgrade_over_tls() {
    let s = one_cert(Mode::Upgrade).await;
    let (ca, p) = (&s.ca, &s.p);
    let mut s = connect(p.addr, "a.test", ca_client(ca, &["http/1.1"])).await;
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: a.test\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).await.unwrap(), 1);
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s.write_all(b"ping over tls").await.unwrap();
    let mut buf = [0u8; 13];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping over tls");
}

#[tokio::test]
async fn rotated_certificate_serves_new_handshakes_and_keeps_open_connections() {
    let s = one_cert(Mode::Echo).await;
    let (dir, ca, old, p) = (&s.dir, &s.ca, &s.leaf, &s.p);

    let s = connect(p.addr, "a.test", ca_client(ca, &["http/1.1"])).await;
    assert_eq!(served_cert(&s), old.der);
    let mut open = h1(s).await;
    assert_eq!(get(&mut open, "a.test").await.0, StatusCode::OK);

    // Same YAML, new certificate and key: the file watcher's trigger sees a
    // new hash (certificate files are config files) and reloads.
    let new = leaf(ca, &["a.test"]);
    write_leaf(dir.path(), "a", &new);
    let status = p.reloader.reload(Trigger::FileChange).await.unwrap();
    assert_eq!(status.generation, 2);
    assert!(matches!(
        p.reloader.reload(Trigger::FileChange).await,
        Err(ReloadError::Unchanged)
    ));

    let s = connect(p.addr, "a.test", ca_client(ca, &["http/1.1"])).await;
    assert_eq!(served_cert(&s), new.der);
    // The connection opened before the rotation still works.
    assert_eq!(get(&mut open, "a.test").await.0, StatusCode::OK);
    assert_eq!(get(&mut h1(s).await, "a.test").await.0, StatusCode::OK);
}

#[tokio::test]
async fn broken_replacement_is_rejected_and_the_old_certificate_kept() {
    let s = one_cert(Mode::Echo).await;
    let (dir, ca, good, p) = (&s.dir, &s.ca, &s.leaf, &s.p);

    // A new certificate whose key was not replaced: mismatch.
    let other = leaf(ca, &["a.test"]);
    std::fs::write(dir.path().join("a.pem"), &other.cert_pem).unwrap();
    let err = p.reloader.reload(Trigger::Admin).await.unwrap_err();
    let text = err.to_string();
    println!("rejected: {text}");
    assert!(text.contains("pointsman.yaml:5:"), "{text}");
    assert!(text.contains("a.pem does not match private key"), "{text}");
    assert_eq!(
        p.reloader.status().last_reload.as_ref().unwrap().result,
        "failure"
    );
    assert_eq!(p.reloader.status().generation, 1);

    // Garbage in the certificate file: rejected too.
    std::fs::write(dir.path().join("a.pem"), "not a certificate").unwrap();
    let err = p.reloader.reload(Trigger::FileChange).await.unwrap_err();
    assert!(err.to_string().contains("cannot read certificate"), "{err}");

    let s = connect(p.addr, "a.test", ca_client(ca, &["http/1.1"])).await;
    assert_eq!(served_cert(&s), good.der);
    assert_eq!(get(&mut h1(s).await, "a.test").await.0, StatusCode::OK);
}

#[tokio::test]
async fn certificate_file_rotation_is_picked_up_by_the_running_binary() {
    // The certificates live in their own folder, apart from the rule file:
    // only the watch on the files TLS names can see them change.
    let up = support::upstream(Mode::Echo).await;
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    let ca = ca();
    let old = leaf(&ca, &["a.test"]);
    write_leaf(&certs, "a", &old);
    let rules = format!(
        "listen:\n  - bind: \"{{LISTEN}}\"\n    tls:\n      certificates:\n        - {{ cert: certs/a.pem, key: certs/a.key }}\n\
         admin: {{ bind: \"{{ADMIN}}\" }}\nupstreams:\n  web: {{ endpoints: [\"{}\"] }}\nroutes:\n  - name: all\n    to: web\n",
        up.addr
    );
    let proxy = support::binary::Binary::launch()
        .in_dir(dir.path())
        .start(&rules);
    let s = connect(proxy.addr, "a.test", ca_client(&ca, &["http/1.1"])).await;
    assert_eq!(served_cert(&s), old.der);
    let mut open = h1(s).await;

    let new = leaf(&ca, &["a.test"]);
    write_leaf(&certs, "a", &new);
    let written = std::time::Instant::now();
    loop {
        let s = connect(proxy.addr, "a.test", ca_client(&ca, &["http/1.1"])).await;
        if served_cert(&s) == new.der {
            break;
        }
        assert!(
            written.elapsed() < Duration::from_secs(1),
            "the rotated certificate was not served within 1 s: {}",
            proxy.log_text()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // The connection opened before the rotation keeps working.
    assert_eq!(get(&mut open, "a.test").await.0, StatusCode::OK);
}

/// An HTTPS upstream (both HTTP/1.1 and h2 by ALPN) answering "secure";
/// counts the TCP connections it accepted.
pub async fn https_upstream(l: &Leaf, accepted: Arc<AtomicUsize>) -> SocketAddr {
    let chain = vec![l.der.clone()];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(l.key_pem.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(pointsman::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let body = format!("secure {:?}", req.version());
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(Bytes::from(body)),
                        ))
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

/// `GET path` over plain HTTP/1.1 with `Host: proxy.test`.
async fn plain_get(addr: SocketAddr, path: &str) -> (StatusCode, http::HeaderMap, Bytes) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    get_path(&mut h1(tcp).await, path, "proxy.test").await
}

#[tokio::test]
async fn https_upstream_is_verified_against_the_ca() {
    let ca = ca();
    let stranger = self::ca();
    let accepted = Arc::new(AtomicUsize::new(0));
    let up = https_upstream(&leaf(&ca, &["up.test"]), accepted.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
    std::fs::write(dir.path().join("other-ca.pem"), &stranger.pem).unwrap();
    let yaml = format!(
        r#"listen:
  - bind: "127.0.0.1:0"
admin: {{ bind: "127.0.0.1:0" }}
upstreams:
  good:
    endpoints: ["https://{up}"]
    tls: {{ ca: ca.pem, server_name: up.test }}
  good-h2:
    endpoints: ["https://{up}"]
    protocol: h2
    tls: {{ ca: ca.pem, server_name: up.test }}
  wrong-ca:
    endpoints: ["https://{up}"]
    retries: 3
    tls: {{ ca: other-ca.pem, server_name: up.test }}
  wrong-name:
    endpoints: ["https://{up}"]
    tls: {{ ca: ca.pem, server_name: other.test }}
routes:
  - {{ name: good, match: {{ path: /good }}, to: good }}
  - {{ name: good-h2, match: {{ path: /h2 }}, to: good-h2 }}
  - {{ name: wrong-ca, match: {{ path: /wrong-ca }}, to: wrong-ca }}
  - {{ name: wrong-name, match: {{ path: /wrong-name }}, to: wrong-name }}
"#
    );
    std::fs::write(dir.path().join("pointsman.yaml"), yaml).unwrap();
    let p = start(dir.path()).await;

    let (status, _, body) = plain_get(p.addr, "/good").await;
    assert_eq!(
        (status, &body[..]),
        (StatusCode::OK, &b"secure HTTP/1.1"[..])
    );
    let (status, _, body) = plain_get(p.addr, "/h2").await;
    assert_eq!(
        (status, &body[..]),
        (StatusCode::OK, &b"secure HTTP/2.0"[..])
    );
    for path in ["/wrong-ca", "/wrong-name"] {
        let started = std::time::Instant::now();
        let before = accepted.load(Ordering::SeqCst);
        let (status, headers, _) = plain_get(p.addr, path).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{path}");
        assert_eq!(headers["x-pointsman-error"], "upstream_connect", "{path}");
        assert!(started.elapsed() < Duration::from_secs(2), "{path}");
        // A certificate that does not verify is not retried on the same
        // endpoint (wrong-ca has `retries: 3`).
        assert_eq!(accepted.load(Ordering::SeqCst) - before, 1, "{path}");
    }
}

#[test]
fn check_reports_certificate_problems_with_positions() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let good = leaf(&ca, &["a.test"]);
    let other = leaf(&ca, &["a.test"]);
    // mismatch: a certificate with another certificate's key.
    std::fs::write(dir.path().join("mismatch.pem"), &good.cert_pem).unwrap();
    std::fs::write(dir.path().join("mismatch.key"), &other.key_pem).unwrap();
    write_leaf(
        dir.path(),
        "expired",
        &leaf_valid(&ca, &["a.test"], -30, -1),
    );
    write_leaf(dir.path(), "soon", &leaf_valid(&ca, &["a.test"], -30, 7));
    let up = "upstreams:\n  web: { endpoints: [\"127.0.0.1:9\"] }\nroutes:\n  - { name: all, to: web }\n";

    let bad: PathBuf = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        format!(
            "listen:\n  - bind: \"127.0.0.1:0\"\n    tls:\n      certificates:\n        - cert: mismatch.pem\n          key: mismatch.key\n        - cert: expired.pem\n          key: expired.key\n        - cert: missing.pem\n          key: expired.key\n{up}"
        ),
    )
    .unwrap();
    let (code, lines) = check_lines(&bad);
    println!("{}", lines.join("\n"));
    assert_eq!(code, 1);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(
        lines[0],
        "DIR/bad.yaml:5:17: error: certificate DIR/mismatch.pem does not match private key DIR/mismatch.key"
    );
    assert!(
        lines[1].starts_with("DIR/bad.yaml:7:17: error: certificate DIR/expired.pem expired on "),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with("DIR/bad.yaml:9:17: error: cannot read certificate DIR/missing.pem: "),
        "{}",
        lines[2]
    );

    let soon = dir.path().join("soon.yaml");
    std::fs::write(
        &soon,
        format!(
            "listen:\n  - bind: \"127.0.0.1:0\"\n    tls:\n      certificates:\n        - {{ cert: soon.pem, key: soon.key }}\n{up}"
        ),
    )
    .unwrap();
    let (code, lines) = check_lines(&soon);
    println!("{}", lines.join("\n"));
    assert_eq!(code, 0);
    let warning = lines.iter().find(|l| l.contains("warning")).unwrap();
    assert!(
        warning
            .starts_with("DIR/soon.yaml:5:19: warning: certificate DIR/soon.pem expires in 7 days"),
        "{warning}"
    );
}
