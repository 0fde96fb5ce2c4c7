//! Upstreams: endpoints, balancing, connection pools.
//! (The definition is the agreed interface; runtime state is owned by the
//! forwarding work.)

use crate::h1pool::{EndpointPool, PooledBody, Sender};
use http::{HeaderValue, Method, Request, Response, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// An upstream as configured, with every default applied. Two equal
/// definitions may share runtime state (pools, health) across reloads.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamDef {
    pub name: Arc<str>,
    pub endpoints: Vec<Endpoint>,
    pub balance: Balance,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Extra attempts (SPEC 6).
    pub retries: u32,
    pub protocol: Protocol,
    pub tls: Option<UpstreamTls>,
    pub health_check: Option<HealthCheck>,
    pub outlier: Option<Outlier>,
}

/// One endpoint: `host:port`, `http://host:port` or `https://host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub tls: bool,
    /// `host:port` as written (the metrics label and the dial address).
    pub authority: String,
}

/// How requests are spread over endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    #[default]
    RoundRobin,
    LeastRequest,
    Random,
}

/// The protocol spoken to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Http1,
    H2,
}

/// TLS toward `https://` endpoints; the CA path is already resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamTls {
    pub ca: Option<PathBuf>,
    pub server_name: Option<String>,
    /// The certificates of `ca`, read at compile time (so a changed CA file
    /// makes a different definition and a new pool).
    pub ca_certs: Vec<rustls_pki_types::CertificateDer<'static>>,
}

/// Active health checking.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_after: u32,
    pub healthy_after: u32,
}

/// Passive ejection.
#[derive(Debug, Clone, PartialEq)]
pub struct Outlier {
    pub consecutive_failures: u32,
    pub eject_for: Duration,
}

/// The body type sent to upstreams: a held body, a stream, or both.
pub type ProxyBody = http_body_util::combinators::BoxBody<bytes::Bytes, BoxError>;

/// A boxed, thread-safe error (the error type of [`ProxyBody`]).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The connector toward upstreams: TCP, with rustls on top for `https://`
/// endpoints (plain `http://` passes through).
pub type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// How long a pooled connection may sit idle. Kept below the usual backend
/// keep-alive (60 s in nginx, 75 s default) so we close first and never write
/// into a connection the backend is closing.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// An upstream with its runtime state (pool, balancer, in-flight counts).
pub struct Upstream {
    /// The definition it was built from.
    pub def: UpstreamDef,
    endpoints: Box<[EndpointState]>,
    next: AtomicUsize,
    /// The pooled client for `protocol: h2`; HTTP/1.1 uses the per-endpoint
    /// pools of [`crate::h1pool`].
    client: Option<Client<Connector, ProxyBody>>,
    connector: Connector,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("def", &self.def)
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

/// Runtime state of one endpoint.
#[derive(Debug)]
struct EndpointState {
    endpoint: Endpoint,
    /// `host:port`, shared by every request's access-log record.
    label: Arc<str>,
    /// `host:port`, the authority of every request URI toward it.
    base: Option<http::uri::Authority>,
    /// The Host header sent when the request has none (the authority,
    /// without the scheme's default port).
    host: Option<HeaderValue>,
    in_flight: Arc<AtomicUsize>,
    pool: Arc<EndpointPool>,
}

/// Counts one request in flight on an endpoint until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why an attempt toward an upstream failed before response headers.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The connection could not be made (refused, timed out, unresolvable).
    #[error("connect to {endpoint} failed: {source}")]
    Connect {
        endpoint: Arc<str>,
        #[source]
        source: BoxError,
    },
    /// The TLS handshake failed (e.g. the certificate did not verify).
    /// Retried only on another endpoint: the same one would fail again.
    #[error("TLS handshake with {endpoint} failed: {source}")]
    Tls {
        endpoint: Arc<str>,
        #[source]
        source: BoxError,
    },
    /// The upstream closed or reset before response headers.
    #[error("upstream {endpoint} closed or reset before response headers: {source}")]
    Reset {
        endpoint: Arc<str>,
        #[source]
        source: BoxError,
    },
    /// No response headers within the request timeout.
    #[error("no response headers from {endpoint} within {timeout:?}")]
    Timeout {
        endpoint: Arc<str>,
        timeout: Duration,
    },
    /// The request body passed `max_body_bytes` while streaming.
    #[error("request body over the limit")]
    BodyTooLarge,
    /// The upstream has no endpoints.
    #[error("upstream has no endpoints")]
    NoEndpoints,
}

/// A successful exchange: the response and which endpoint gave it.
#[derive(Debug)]
pub struct Sent {
    pub response: Response<PooledBody>,
    /// The endpoint's `host:port`.
    pub endpoint: Arc<str>,
    /// Counts the request as in flight; keep it for the response's life.
    pub in_flight: InFlight,
}

impl Upstream {
    /// Creates the runtime state for a definition: one pooled client
    /// (HTTP/1.1 keep-alive, or h2 with prior knowledge) shared by its
    /// endpoints.
    pub fn new(def: UpstreamDef) -> Self {
        let mut tcp = HttpConnector::new();
        tcp.set_connect_timeout(Some(def.connect_timeout));
        tcp.set_nodelay(true);
        tcp.enforce_http(false);
        let connector = https_connector(&def, tcp);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT);
        if def.protocol == Protocol::H2 {
            builder.http2_only(true);
        }
        let client = (def.protocol == Protocol::H2).then(|| builder.build(connector.clone()));
        let endpoints = def
            .endpoints
            .iter()
            .map(|e| {
                let base: Option<http::uri::Authority> = e.authority.parse().ok();
                let host = base.as_ref().and_then(|a| {
                    let default = if e.tls { 443 } else { 80 };
                    match a.port_u16() {
                        Some(p) if p != default => HeaderValue::from_str(a.as_str()).ok(),
                        _ => HeaderValue::from_str(a.host()).ok(),
                    }
                });
                EndpointState {
                    base,
                    host,
                    endpoint: e.clone(),
                    label: Arc::from(e.authority.as_str()),
                    in_flight: Arc::new(AtomicUsize::new(0)),
                    pool: EndpointPool::new(POOL_IDLE_TIMEOUT),
                }
            })
            .collect();
        Upstream {
            def,
            endpoints,
            next: AtomicUsize::new(0),
            client,
            connector,
        }
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.def.name
    }

    /// Requests currently in flight on each endpoint, in definition order.
    pub fn in_flight(&self) -> Vec<usize> {
        self.endpoints
            .iter()
            .map(|e| e.in_flight.load(Ordering::Relaxed))
            .collect()
    }

    /// Picks an endpoint index by the balance policy, avoiding `avoid` when
    /// another endpoint exists.
    pub fn pick(&self, avoid: Option<usize>) -> Option<usize> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        if n == 1 {
            return Some(0);
        }
        let i = match self.def.balance {
            Balance::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed) % n,
            Balance::Random => rand::random_range(0..n),
            Balance::LeastRequest => {
                // Scan from a rotating start so ties spread evenly.
                let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
                let mut best = start;
                let mut best_load = usize::MAX;
                for k in 0..n {
                    let j = (start + k) % n;
                    if Some(j) == avoid {
                        continue;
                    }
                    let load = self.endpoints[j].in_flight.load(Ordering::Relaxed);
                    if load < best_load {
                        best = j;
                        best_load = load;
                    }
                }
                best
            }
        };
        Some(if Some(i) == avoid { (i + 1) % n } else { i })
    }

    /// Sends one request to endpoint `idx`. `path_and_query` replaces the
    /// URI; the request's version is set to what the upstream speaks.
    /// Waits at most `timeout` for response headers.
    pub async fn send_to(
        &self,
        idx: usize,
        mut req: Request<ProxyBody>,
        timeout: Duration,
    ) -> Result<Sent, SendError> {
        let Some(ep) = self.endpoints.get(idx) else {
            return Err(SendError::NoEndpoints);
        };
        let endpoint = ep.label.clone();
        let Some(base) = ep.base.clone() else {
            return Err(SendError::Connect {
                endpoint,
                source: "invalid endpoint address".into(),
            });
        };
        let Some(client) = &self.client else {
            return self.send_h1(ep, base, endpoint, req, timeout).await;
        };
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(if ep.endpoint.tls {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        });
        parts.authority = Some(base);
        parts.path_and_query = req.uri().path_and_query().cloned();
        match Uri::from_parts(parts) {
            Ok(uri) => *req.uri_mut() = uri,
            Err(e) => {
                return Err(SendError::Connect {
                    endpoint,
                    source: e.into(),
                });
            }
        }
        *req.version_mut() = match self.def.protocol {
            Protocol::Http1 => Version::HTTP_11,
            Protocol::H2 => Version::HTTP_2,
        };
        ep.in_flight.fetch_add(1, Ordering::Relaxed);
        let in_flight = InFlight(ep.in_flight.clone());
        match tokio::time::timeout(timeout, client.request(req)).await {
            Err(_) => Err(SendError::Timeout { endpoint, timeout }),
            Ok(Ok(response)) => Ok(Sent {
                response: response.map(PooledBody::plain),
                endpoint,
                in_flight,
            }),
            Ok(Err(e)) => Err(classify(endpoint, e)),
        }
    }

    /// [`Self::send_to`] over HTTP/1.1: an idle pooled connection to the
    /// endpoint, else a new one. A request that a reused connection hands
    /// back unsent (it closed meanwhile) goes out on a new connection.
    async fn send_h1(
        &self,
        ep: &EndpointState,
        base: http::uri::Authority,
        endpoint: Arc<str>,
        mut req: Request<ProxyBody>,
        timeout: Duration,
    ) -> Result<Sent, SendError> {
        // Origin form (authority form for CONNECT), Host when absent.
        let uri = if req.method() == Method::CONNECT {
            Uri::from(base)
        } else {
            match req.uri().path_and_query() {
                Some(pq) => Uri::from(pq.clone()),
                None => Uri::from_static("/"),
            }
        };
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_11;
        if let Some(host) = &ep.host
            && !req.headers().contains_key(http::header::HOST)
        {
            req.headers_mut().insert(http::header::HOST, host.clone());
        }
        ep.in_flight.fetch_add(1, Ordering::Relaxed);
        let in_flight = InFlight(ep.in_flight.clone());
        let exchange = async {
            let mut req = req;
            loop {
                let (mut tx, reused) = match ep.pool.checkout() {
                    Some(tx) => (tx, true),
                    // Boxed: the connect future is large and cold; inline,
                    // it would bloat (and be memcpy'd with) every request's
                    // future.
                    None => (Box::pin(self.connect_h1(ep, &endpoint)).await?, false),
                };
                match tx.try_send_request(req).await {
                    Ok(response) => return Ok((response, tx)),
                    Err(mut e) => match e.take_message() {
                        Some(back) if reused => req = back,
                        _ => return Err(classify_h1(endpoint.clone(), e.into_error())),
                    },
                }
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            Err(_) => Err(SendError::Timeout { endpoint, timeout }),
            Ok(Err(e)) => Err(e),
            Ok(Ok((response, tx))) => {
                let response = if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                    response.map(PooledBody::plain)
                } else {
                    response.map(|b| PooledBody::pooled(b, tx, ep.pool.clone()))
                };
                Ok(Sent {
                    response,
                    endpoint,
                    in_flight,
                })
            }
        }
    }

    /// Opens a new HTTP/1.1 connection (TCP, TLS for `https://`) to `ep`.
    async fn connect_h1(
        &self,
        ep: &EndpointState,
        endpoint: &Arc<str>,
    ) -> Result<Sender, SendError> {
        use tower_service::Service;
        let uri = Uri::from_maybe_shared(format!(
            "{}://{}/",
            if ep.endpoint.tls { "https" } else { "http" },
            ep.endpoint.authority
        ))
        .map_err(|e| SendError::Connect {
            endpoint: endpoint.clone(),
            source: e.into(),
        })?;
        let mut connector = self.connector.clone();
        let connected = async {
            std::future::poll_fn(|cx| connector.poll_ready(cx)).await?;
            connector.call(uri).await
        }
        .await;
        let io = match connected {
            Ok(io) => io,
            Err(e) if is_tls_error(&*e) => {
                return Err(SendError::Tls {
                    endpoint: endpoint.clone(),
                    source: e,
                });
            }
            Err(e) => {
                return Err(SendError::Connect {
                    endpoint: endpoint.clone(),
                    source: e,
                });
            }
        };
        let (tx, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| SendError::Connect {
                endpoint: endpoint.clone(),
                source: e.into(),
            })?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection closed");
            }
        });
        Ok(tx)
    }

    /// Sends a request with the retry rules of SPEC 6. `body` is `Some` when
    /// the body is held in full (or absent: `Some(empty)`) and so can be sent
    /// again; a streamed body (`None` here, passed in `req`) is sent once.
    pub async fn send(
        &self,
        req: Request<ProxyBody>,
        held: Option<&bytes::Bytes>,
        timeout: Duration,
    ) -> Result<Sent, SendError> {
        let Some(mut idx) = self.pick(None) else {
            return Err(SendError::NoEndpoints);
        };
        let Some(held) = held else {
            return self.send_to(idx, req, timeout).await;
        };
        let idempotent = is_idempotent(req.method());
        let (parts, _) = req.into_parts();
        let mut attempts_left = self.def.retries;
        loop {
            let attempt = Request::from_parts(parts.clone(), full(held.clone()));
            match self.send_to(idx, attempt, timeout).await {
                Ok(sent) => return Ok(sent),
                Err(e) => {
                    let retryable = match &e {
                        SendError::Connect { .. } => true,
                        SendError::Tls { .. } => self.endpoints.len() > 1,
                        SendError::Reset { .. } => idempotent,
                        _ => false,
                    };
                    if !retryable || attempts_left == 0 {
                        return Err(e);
                    }
                    attempts_left -= 1;
                    tracing::debug!(upstream = %self.def.name, error = %e, "retrying");
                    match self.pick(Some(idx)) {
                        Some(next) => idx = next,
                        None => return Err(e),
                    }
                }
            }
        }
    }
}

/// Wraps the TCP connector with rustls for `https://` endpoints: roots from
/// `tls.ca` (else the bundled Mozilla roots), SNI and verification against
/// `tls.server_name` (else the endpoint's host), ALPN `h2` for `protocol:
/// h2` and `http/1.1` otherwise. A verification failure is a connect error.
fn https_connector(def: &UpstreamDef, tcp: HttpConnector) -> Connector {
    let ca = def.tls.as_ref().map_or(&[][..], |t| &t.ca_certs[..]);
    let config = crate::tls::client_config(ca).unwrap_or_else(|e| {
        // Not reachable with the fixed provider and versions; fail closed
        // (no roots: every https:// endpoint answers 502).
        tracing::error!(upstream = %def.name, error = %e, "cannot build TLS client config");
        rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
    });
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http();
    let name = def
        .tls
        .as_ref()
        .and_then(|t| t.server_name.clone())
        .and_then(|n| rustls_pki_types::ServerName::try_from(n).ok());
    let builder = match name {
        Some(n) => builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(n)),
        None => builder,
    };
    match def.protocol {
        Protocol::H2 => builder.enable_http2().wrap_connector(tcp),
        Protocol::Http1 => builder.enable_http1().wrap_connector(tcp),
    }
}

/// A held body as a [`ProxyBody`].
pub fn full(bytes: bytes::Bytes) -> ProxyBody {
    use http_body_util::BodyExt;
    http_body_util::Full::new(bytes)
        .map_err(|never| match never {})
        .boxed()
}

/// Methods RFC 9110 calls idempotent.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

fn classify_h1(endpoint: Arc<str>, e: hyper::Error) -> SendError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return SendError::BodyTooLarge;
        }
        source = s.source();
    }
    SendError::Reset {
        endpoint,
        source: e.into(),
    }
}

fn classify(endpoint: Arc<str>, e: hyper_util::client::legacy::Error) -> SendError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return SendError::BodyTooLarge;
        }
        source = s.source();
    }
    if e.is_connect() && is_tls_error(&e) {
        SendError::Tls {
            endpoint,
            source: e.into(),
        }
    } else if e.is_connect() {
        SendError::Connect {
            endpoint,
            source: e.into(),
        }
    } else {
        SendError::Reset {
            endpoint,
            source: e.into(),
        }
    }
}

/// Whether a connect error came from rustls. io::Error hides its inner
/// error from `source()` (and hyper-rustls wraps it twice), so look inside
/// each io::Error too.
fn is_tls_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && is_tls_error(inner)
        {
            return true;
        }
        source = s.source();
    }
    false
}
