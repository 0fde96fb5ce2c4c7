//! Upstream runtimes: endpoints, balancing, connection pools and sending
//! with the retry rules of SPEC 6. One [`Upstream`] per definition lives as
//! long as a snapshot uses it; the runtime hands the same one to every
//! config whose definition is unchanged, so pools survive reloads.
//!
//! This is one of the two places (with the server) that speak hyper: a
//! response comes back as a [`ProxyBody`] and, for a 101, a
//! [`PendingUpgrade`].

mod connect;
pub mod def;
mod pool;

pub use connect::POOL_IDLE_TIMEOUT;

use crate::forward::body::{BodyFailed, BoxError, ProxyBody, full};
use crate::forward::tunnel::{PendingUpgrade, UpgradedIo};
use crate::metrics::UpstreamErrors;
use connect::{Connector, classify_h1, classify_h2};
use def::{Balance, Protocol, UpstreamDef};
use http::{HeaderValue, Method, Request, Response, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioIo;
use pool::{EndpointPool, PooledBody};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

/// An upstream with its runtime state (pools, balancer, in-flight counts).
pub struct Upstream {
    /// The definition it was built from.
    pub def: UpstreamDef,
    endpoints: Box<[EndpointState]>,
    next: AtomicUsize,
    /// The pooled client for `protocol: h2`; HTTP/1.1 uses per-endpoint
    /// pools.
    client: Option<Client<Connector, ProxyBody>>,
    connector: Connector,
    /// `pointsman_upstream_errors_total` of this upstream, once linked to
    /// the process's metrics.
    errors: OnceLock<UpstreamErrors>,
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
    /// `host:port`, shared by every request's access-log record.
    label: Arc<str>,
    /// `scheme://host:port/`, dialled for new HTTP/1.1 connections.
    url: String,
    /// `host:port`, the authority of every request URI toward it.
    base: Option<http::uri::Authority>,
    /// Whether it is `https://`.
    tls: bool,
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
        /// The endpoint.
        endpoint: Arc<str>,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// The TLS handshake failed (e.g. the certificate did not verify).
    /// Retried only on another endpoint: the same one would fail again.
    #[error("TLS handshake with {endpoint} failed: {source}")]
    Tls {
        /// The endpoint.
        endpoint: Arc<str>,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// The upstream closed or reset before response headers.
    #[error("upstream {endpoint} closed or reset before response headers: {source}")]
    Reset {
        /// The endpoint.
        endpoint: Arc<str>,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// No response headers within the request timeout.
    #[error("no response headers from {endpoint} within {timeout:?}")]
    Timeout {
        /// The endpoint.
        endpoint: Arc<str>,
        /// The timeout that passed.
        timeout: Duration,
    },
    /// The request body passed `max_body_bytes` while streaming.
    #[error("request body over the limit")]
    BodyTooLarge,
    /// The client's request body failed (malformed, aborted): the client's
    /// fault, not the upstream's.
    #[error("the client's request body failed")]
    ClientBody,
    /// The upstream has no endpoints.
    #[error("upstream has no endpoints")]
    NoEndpoints,
}

impl SendError {
    /// Whether the upstream is to blame (counted in
    /// `pointsman_upstream_errors_total`, guards and ejection).
    pub fn is_upstream_fault(&self) -> bool {
        matches!(
            self,
            SendError::Connect { .. }
                | SendError::Tls { .. }
                | SendError::Reset { .. }
                | SendError::Timeout { .. }
        )
    }
}

/// A successful exchange: the response and which endpoint gave it.
pub struct Sent {
    /// The response; its body holds the endpoint's in-flight count.
    pub response: Response<ProxyBody>,
    /// The upstream side of a 101 (Switching Protocols).
    pub upgrade: Option<(PendingUpgrade, InFlight)>,
    /// The endpoint's `host:port`.
    pub endpoint: Arc<str>,
}

impl std::fmt::Debug for Sent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sent")
            .field("status", &self.response.status())
            .field("endpoint", &self.endpoint)
            .field("upgrade", &self.upgrade.is_some())
            .finish()
    }
}

impl Upstream {
    /// Creates the runtime state for a definition: one connector, pooled
    /// HTTP/1.1 connections per endpoint or one h2 client. Opens nothing
    /// until a request needs it.
    pub fn new(def: UpstreamDef) -> Self {
        let connector = connect::connector(&def);
        let client = (def.protocol == Protocol::H2).then(|| connect::h2_client(connector.clone()));
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
                let scheme = if e.tls { "https" } else { "http" };
                EndpointState {
                    base,
                    host,
                    tls: e.tls,
                    url: format!("{scheme}://{}/", e.authority),
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
            errors: OnceLock::new(),
        }
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.def.name
    }

    /// Counts this upstream's failures in `errors` from now on (set once,
    /// when first linked to the process's metrics).
    pub fn count_errors_in(&self, errors: UpstreamErrors) {
        let _ = self.errors.set(errors);
    }

    /// Counts a failure of this upstream under its SPEC 9 kind (failures
    /// that are not the upstream's are not counted).
    pub fn count_error(&self, e: &SendError) {
        let Some(errors) = self.errors.get() else {
            return;
        };
        match e {
            SendError::Connect { .. } | SendError::Tls { .. } => errors.connect(),
            SendError::Timeout { .. } => errors.timeout(),
            SendError::Reset { .. } => errors.reset(),
            SendError::NoEndpoints => errors.no_healthy(),
            SendError::BodyTooLarge | SendError::ClientBody => {}
        }
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

    /// Sends one request to endpoint `idx` (the request's URI holds the
    /// path and query; its version is set to what the upstream speaks).
    /// Waits at most `timeout` for response headers.
    pub async fn send_to(
        &self,
        idx: usize,
        req: Request<ProxyBody>,
        timeout: Duration,
    ) -> Result<Sent, SendError> {
        self.send_watched(idx, req, timeout, None).await
    }

    /// [`Self::send_to`] with a streamed request body watched by `failed`:
    /// a response cut short after that body failed is not counted as the
    /// upstream's reset.
    async fn send_watched(
        &self,
        idx: usize,
        req: Request<ProxyBody>,
        timeout: Duration,
        failed: Option<BodyFailed>,
    ) -> Result<Sent, SendError> {
        let result = self.exchange(idx, req, timeout, failed).await;
        if let Err(e) = &result {
            self.count_error(e);
        }
        result
    }

    async fn exchange(
        &self,
        idx: usize,
        mut req: Request<ProxyBody>,
        timeout: Duration,
        failed: Option<BodyFailed>,
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
            return self.send_h1(ep, base, req, timeout, failed).await;
        };
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(if ep.tls {
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
        *req.version_mut() = Version::HTTP_2;
        ep.in_flight.fetch_add(1, Ordering::Relaxed);
        let in_flight = InFlight(ep.in_flight.clone());
        match tokio::time::timeout(timeout, client.request(req)).await {
            Err(_) => Err(SendError::Timeout { endpoint, timeout }),
            Ok(Ok(response)) => {
                Ok(self.sent(response.map(PooledBody::plain), endpoint, in_flight, failed))
            }
            Ok(Err(e)) => Err(classify_h2(endpoint, e)),
        }
    }

    /// [`Self::send_to`] over HTTP/1.1: an idle pooled connection to the
    /// endpoint, else a new one. A request that a reused connection hands
    /// back unsent (it closed meanwhile) goes out on a new connection.
    async fn send_h1(
        &self,
        ep: &EndpointState,
        base: http::uri::Authority,
        mut req: Request<ProxyBody>,
        timeout: Duration,
        failed: Option<BodyFailed>,
    ) -> Result<Sent, SendError> {
        let endpoint = ep.label.clone();
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
                    None => (
                        Box::pin(connect::open_h1(&self.connector, &ep.url, &endpoint)).await?,
                        false,
                    ),
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
                Ok(self.sent(response, endpoint, in_flight, failed))
            }
        }
    }

    /// The exchange's answer: a 101 hands its upgrade on; any other
    /// response body counts a mid-response reset and holds the in-flight
    /// count.
    fn sent(
        &self,
        mut response: Response<PooledBody>,
        endpoint: Arc<str>,
        in_flight: InFlight,
        failed: Option<BodyFailed>,
    ) -> Sent {
        if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            let on = hyper::upgrade::on(&mut response);
            let pending: PendingUpgrade = Box::pin(async move {
                let io = on.await?;
                Ok(Box::new(TokioIo::new(io)) as Box<dyn UpgradedIo>)
            });
            return Sent {
                response: response.map(|_| full(bytes::Bytes::new())),
                upgrade: Some((pending, in_flight)),
                endpoint,
            };
        }
        let errors = self.errors.get().cloned();
        Sent {
            response: response.map(|inner| {
                UpstreamBody {
                    inner,
                    errors,
                    failed,
                    _in_flight: in_flight,
                }
                .boxed()
            }),
            upgrade: None,
            endpoint,
        }
    }

    /// Sends a request with the retry rules of SPEC 6. `held` is `Some`
    /// when the body is held in full (or absent: `Some(empty)`) and so can
    /// be sent again; a streamed body (`None` here, passed in `req`) is
    /// sent once.
    pub async fn send(
        &self,
        req: Request<ProxyBody>,
        held: Option<&bytes::Bytes>,
        timeout: Duration,
        failed: Option<BodyFailed>,
    ) -> Result<Sent, SendError> {
        let Some(mut idx) = self.pick(None) else {
            let e = SendError::NoEndpoints;
            self.count_error(&e);
            return Err(e);
        };
        let Some(held) = held else {
            return self.send_watched(idx, req, timeout, failed).await;
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

pin_project_lite::pin_project! {
    /// A response body from an endpoint: counts a reset mid-response
    /// (`kind="reset"`, SPEC 9) whether or not anything else watches, and
    /// holds the endpoint's in-flight count until it is done.
    struct UpstreamBody {
        #[pin]
        inner: PooledBody,
        errors: Option<UpstreamErrors>,
        // The request body's failure flag: a cut after it is the client's.
        failed: Option<BodyFailed>,
        _in_flight: InFlight,
    }
}

impl Body for UpstreamBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => {
                let clients_fault = this.failed.as_ref().is_some_and(BodyFailed::is_set);
                if let Some(errors) = this.errors.take()
                    && !clients_fault
                {
                    errors.reset();
                }
                Poll::Ready(Some(Err(e.into())))
            }
            other => other.map(|f| f.map(|r| r.map_err(BoxError::from))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Methods RFC 9110 calls idempotent.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}
