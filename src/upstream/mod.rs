//! Upstream runtimes: endpoints, balancing ([`balance`]), connection pools
//! and sending with the retry rules of SPEC 6, endpoint health and passive
//! ejection ([`health`]), active health checks ([`check`]) and the admin
//! view ([`view`]). One [`Upstream`] per definition lives as long as a
//! snapshot uses it; the runtime hands the same one to every config whose
//! definition is unchanged, so pools, health and ejection state (and the
//! checks) survive reloads.
//!
//! HTTP/1.1 upstreams are spoken by Pointsman's own client connection
//! ([`h1`]); `protocol: h2` upstreams by hyper's (this is one of the two
//! places, with the server, that use hyper). Either way a response comes
//! back as a [`ProxyBody`] and, for a 101, a [`PendingUpgrade`].

mod balance;
mod check;
mod connect;
pub mod def;
mod h1;
mod h2;
mod health;
mod pool;
pub mod view;

pub use connect::POOL_IDLE_TIMEOUT;

use crate::forward::AddedFields;
use crate::forward::body::{BodyFailed, BoxError, ProxyBody, full};
use crate::forward::tunnel::{PendingUpgrade, UpgradedIo};
use crate::metrics::{EndpointCounters, UpstreamErrors};
use balance::Tried;
use connect::{Connector, H1Dialer, classify, h1_fault};
use def::{Outlier, Protocol, UpstreamDef};
use h2::H2Slot;
use health::{EndpointMetrics, FaultKind, LogLimit, Vitals, now_ms};
use http::request::Parts;
use http::{HeaderValue, Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use pool::EndpointPool;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

/// An upstream with its runtime state (pools, balancer, in-flight counts,
/// health and ejection).
pub struct Upstream {
    /// The definition it was built from.
    pub def: UpstreamDef,
    endpoints: Box<[EndpointState]>,
    /// The round-robin position of first attempts, one for each serving
    /// thread (each thread goes round the endpoints in turn, as NGINX's
    /// workers do): one position for all threads was a cache line every
    /// request wrote.
    next: Box<[RoundRobin]>,
    /// Set while one failure decides an ejection (so two cannot both pass
    /// `max_ejected_percent`); a failure that finds it set leaves the
    /// decision to the next one.
    ejecting: AtomicBool,
    /// The warn lines of `no_healthy` answers.
    no_healthy_log: LogLimit,
    /// Opens `protocol: h2` connections.
    connector: Connector,
    /// Opens `protocol: http1` connections.
    dialer: H1Dialer,
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
    /// Its place in the upstream's endpoints (what [`Sent`] names).
    index: usize,
    /// Its label (`host:port`, named in access-log records), health and
    /// ejection.
    vitals: Arc<Vitals>,
    /// `scheme://host:port/`, dialled for new connections.
    url: String,
    /// `host:port`, the authority of every request URI toward it.
    base: Option<http::uri::Authority>,
    /// Whether it is `https://`.
    tls: bool,
    /// The name a `https://` endpoint is verified against (HTTP/1.1).
    sni: Option<rustls_pki_types::ServerName<'static>>,
    /// The Host header sent when the request has none (the authority,
    /// without the scheme's default port).
    host: Option<HeaderValue>,
    /// A share for each serving thread (its requests in flight).
    shares: Box<[Arc<EndpointShare>]>,
    /// Idle HTTP/1.1 connections (`protocol: http1`).
    pool: Arc<EndpointPool>,
    /// The shared connection (`protocol: h2`).
    h2: H2Slot,
}

impl EndpointState {
    /// Requests in flight on it: the sum of the threads' shares.
    fn in_flight(&self) -> usize {
        self.shares
            .iter()
            .map(|s| s.in_flight.load(Ordering::Relaxed))
            .sum()
    }
}

/// An endpoint as one serving thread's requests hold it: that thread's
/// part of the in-flight count, and the way to the endpoint's vitals and
/// idle pool. Each request writes the count and the count of the `Arc`
/// it holds twice; with one of each for all threads, those writes moved
/// the same cache lines between cores on every request. So each thread
/// has its own share, in an allocation aligned to a line pair of its own
/// (adjacent-line prefetch).
#[derive(Debug)]
#[repr(align(128))]
struct EndpointShare {
    in_flight: AtomicUsize,
    vitals: Arc<Vitals>,
    pool: Arc<EndpointPool>,
}

impl h1::Release for EndpointShare {
    fn release(self: Arc<Self>, conn: h1::Conn) {
        self.pool.put(conn);
    }
}

/// One serving thread's round-robin position, on a line pair of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct RoundRobin(AtomicUsize);

/// Counts one request in flight on an endpoint until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<EndpointShare>);

impl InFlight {
    /// Counted in the calling serving thread's share.
    fn new(ep: &EndpointState) -> Self {
        let share = &ep.shares[crate::worker::slot(ep.shares.len())];
        share.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(share.clone())
    }

    fn vitals(&self) -> &Vitals {
        &self.0.vitals
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
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
    /// The request timeout passed while the proxy was still waiting for the
    /// client's request body (a slow upload): the client's fault.
    #[error("the client's request body did not arrive within {0:?}")]
    ClientTimeout(Duration),
    /// Every endpoint of the upstream is unhealthy or ejected (or it has
    /// none).
    #[error("every endpoint of upstream {upstream} is unhealthy or ejected")]
    NoHealthy {
        /// The upstream.
        upstream: Arc<str>,
    },
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

    /// The kind of an endpoint's fault, for logs and the admin API.
    fn fault_kind(&self) -> Option<FaultKind> {
        Some(match self {
            SendError::Connect { .. } | SendError::Tls { .. } => FaultKind::Connect,
            SendError::Timeout { .. } => FaultKind::Timeout,
            SendError::Reset { .. } => FaultKind::Reset,
            _ => return None,
        })
    }

    /// Why, without the endpoint: the cause and its sources, joined by
    /// `: ` (what a log line's `reason` and the admin API show).
    pub fn reason(&self) -> String {
        use std::error::Error;
        let mut text = match self {
            SendError::Connect { .. } => String::from("connect failed"),
            SendError::Tls { .. } => String::from("TLS handshake failed"),
            SendError::Reset { .. } => String::from("closed or reset before response headers"),
            other => return other.to_string(),
        };
        let mut source = self.source();
        while let Some(s) = source {
            let part = s.to_string();
            // hyper repeats its cause in its own text; keep what is new.
            if !text.ends_with(&part) {
                text.push_str(": ");
                text.push_str(&part);
            }
            source = s.source();
        }
        text
    }
}

/// A successful exchange: the response and which endpoint gave it.
pub struct Sent {
    /// The response; its body holds the endpoint's in-flight count.
    pub response: Response<ProxyBody>,
    /// The upstream side of a 101 (Switching Protocols).
    pub upgrade: Option<(PendingUpgrade, InFlight)>,
    /// The endpoint that answered, by index ([`Upstream::endpoint_label`]
    /// names it): a request carries no copy of a shared name.
    pub endpoint: usize,
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
    /// HTTP/1.1 connections or one shared h2 connection per endpoint. Opens nothing
    /// until a request needs it.
    pub fn new(def: UpstreamDef) -> Self {
        Upstream::with_threads(def, crate::worker::count())
    }

    /// [`Upstream::new`] for `threads` serving threads: a pool queue, an
    /// in-flight share and a round-robin position for each.
    fn with_threads(def: UpstreamDef, threads: usize) -> Self {
        let connector = connect::connector(&def);
        let dialer = H1Dialer::new(&def);
        let name = def.name.clone();
        let endpoints = def
            .endpoints
            .iter()
            .enumerate()
            .map(|(index, e)| {
                let base: Option<http::uri::Authority> = e.authority.parse().ok();
                let host = base.as_ref().and_then(|a| {
                    let default = if e.tls { 443 } else { 80 };
                    match a.port_u16() {
                        Some(p) if p != default => HeaderValue::from_str(a.as_str()).ok(),
                        _ => HeaderValue::from_str(a.host()).ok(),
                    }
                });
                let scheme = if e.tls { "https" } else { "http" };
                let sni = e
                    .tls
                    .then(|| connect::server_name(&def, base.as_ref()))
                    .flatten();
                let vitals = Arc::new(Vitals::new(name.clone(), Arc::from(e.authority.as_str())));
                let pool = EndpointPool::with_queues(POOL_IDLE_TIMEOUT, threads);
                let shares = (0..threads.max(1))
                    .map(|_| {
                        Arc::new(EndpointShare {
                            in_flight: AtomicUsize::new(0),
                            vitals: vitals.clone(),
                            pool: pool.clone(),
                        })
                    })
                    .collect();
                EndpointState {
                    index,
                    sni,
                    base,
                    host,
                    tls: e.tls,
                    url: format!("{scheme}://{}/", e.authority),
                    vitals,
                    shares,
                    pool,
                    h2: H2Slot::new(POOL_IDLE_TIMEOUT),
                }
            })
            .collect();
        Upstream {
            def,
            endpoints,
            next: (0..threads.max(1)).map(|_| RoundRobin::default()).collect(),
            ejecting: AtomicBool::new(false),
            no_healthy_log: LogLimit::default(),
            connector,
            dialer,
            errors: OnceLock::new(),
        }
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.def.name
    }

    /// Records into the process's metrics from now on (set once, when
    /// first linked): this upstream's failures in `errors`, and each
    /// endpoint's ejections and health checks in `endpoint(host:port)`'s
    /// counters.
    pub fn record_into(&self, errors: UpstreamErrors, endpoint: impl Fn(&str) -> EndpointCounters) {
        for ep in &self.endpoints {
            let v = &ep.vitals;
            let _ = v.metrics.set(EndpointMetrics {
                errors: errors.clone(),
                counters: endpoint(&v.label),
            });
        }
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
            SendError::NoHealthy { .. } => errors.no_healthy(),
            SendError::BodyTooLarge | SendError::ClientBody | SendError::ClientTimeout(_) => {}
        }
    }

    /// Endpoint `idx`'s `host:port`.
    pub fn endpoint_label(&self, idx: usize) -> Option<&str> {
        self.endpoints.get(idx).map(|e| &*e.vitals.label)
    }

    /// Requests currently in flight on each endpoint, in definition order.
    pub fn in_flight(&self) -> Vec<usize> {
        self.endpoints
            .iter()
            .map(EndpointState::in_flight)
            .collect()
    }

    /// Whether endpoint `idx` may take requests now: healthy and not
    /// ejected (what `pointsman_upstream_endpoint_healthy` shows).
    pub fn serving(&self, idx: usize) -> bool {
        let now = now_ms();
        self.endpoints
            .get(idx)
            .is_some_and(|e| e.vitals.available(now))
    }

    /// Picks an endpoint for a request's first attempt among the healthy,
    /// non-ejected ones (moving the round-robin position). `None`: none is
    /// left.
    pub fn pick(&self) -> Option<usize> {
        self.pick_after(&Tried::default())
    }

    /// [`Self::pick`] for a retry: another endpoint than those `tried`,
    /// the round-robin position untouched.
    fn pick_after(&self, tried: &Tried) -> Option<usize> {
        let eps = Available {
            endpoints: &self.endpoints,
            now: std::cell::OnceCell::new(),
        };
        let next = &self.next[crate::worker::slot(self.next.len())];
        balance::pick(self.def.balance, &eps, &next.0, tried)
    }

    /// Counts and logs a request no endpoint can take.
    fn no_healthy(&self) -> SendError {
        let e = SendError::NoHealthy {
            upstream: self.def.name.clone(),
        };
        self.count_error(&e);
        if let Some(left_out) = self.no_healthy_log.admit(now_ms()) {
            tracing::warn!(
                target: "upstream",
                upstream = %self.def.name,
                kind = "no_healthy",
                reason = "every endpoint is unhealthy or ejected",
                left_out,
                "upstream failure"
            );
        }
        e
    }

    /// Notes how an attempt on endpoint `idx` ended: an answer below 500
    /// resets its faults in a row; a 5xx answer or an upstream failure
    /// adds one (and may eject it). Client faults change nothing.
    fn note_outcome(&self, idx: usize, result: &Result<Sent, SendError>) {
        let Some(ep) = self.endpoints.get(idx) else {
            return;
        };
        let v = &ep.vitals;
        let faults = match result {
            Ok(sent) if sent.response.status().is_server_error() => {
                v.answered_5xx(sent.response.status().as_u16())
            }
            Ok(_) => {
                v.answered();
                return;
            }
            Err(e) => {
                self.count_error(e);
                match e.fault_kind() {
                    Some(kind) => v.failed(kind, e.reason()),
                    None => return,
                }
            }
        };
        if let Some(o) = &self.def.outlier
            && faults >= o.consecutive_failures
        {
            self.eject(idx, o, result);
        }
    }

    /// Ejects endpoint `idx` unless it is already ejected or
    /// `max_ejected_percent` of the endpoints are.
    fn eject(&self, idx: usize, o: &Outlier, last: &Result<Sent, SendError>) {
        if self.ejecting.swap(true, Ordering::Acquire) {
            return;
        }
        let now = now_ms();
        let ejected = self
            .endpoints
            .iter()
            .filter(|e| e.vitals.ejected(now))
            .count();
        let limit = health::max_ejectable(self.endpoints.len(), o.max_ejected_percent);
        if let Some(ep) = self.endpoints.get(idx)
            && !ep.vitals.ejected(now)
        {
            if ejected < limit {
                let last = match last {
                    Ok(sent) => format!("answered {}", sent.response.status().as_u16()),
                    Err(e) => format!(
                        "{}: {}",
                        e.fault_kind().map_or("", FaultKind::as_str),
                        e.reason()
                    ),
                };
                ep.vitals.eject(o, now, &last);
            } else {
                tracing::debug!(
                    target: "upstream",
                    upstream = %self.def.name,
                    endpoint = %ep.vitals.label,
                    "not ejected: max_ejected_percent of the endpoints are ejected"
                );
            }
        }
        self.ejecting.store(false, Ordering::Release);
    }

    /// Sends one request to endpoint `idx`: `head` (its URI holds the path
    /// and query; its version is set to what the upstream speaks) with the
    /// `added` fields after its own. Waits at most `timeout` for response
    /// headers. The head is borrowed: an HTTP/1.1 upstream's head is
    /// encoded from it in place, an h2 upstream's takes it.
    pub fn send_to<'a>(
        &'a self,
        idx: usize,
        head: &'a mut Parts,
        added: &'a AddedFields,
        body: ProxyBody,
        timeout: Duration,
    ) -> impl Future<Output = Result<Sent, SendError>> + Send + 'a {
        // Not an `async fn`: a layer of its own would hold a second copy of
        // its arguments in every request's future.
        self.send_once(
            idx,
            head,
            added,
            OutBody::Stream(body, None),
            timeout,
            false,
        )
    }

    /// [`Self::send_to`] with the body as [`Self::send`] has it: a streamed
    /// one watched by its failure flag (a response cut short after that
    /// body failed is not counted as the upstream's reset). `again` keeps
    /// the head for another attempt (an h2 upstream gets a copy of it).
    #[expect(
        clippy::manual_async_fn,
        reason = "smaller future: see the pipeline module"
    )]
    fn send_once<'a>(
        &'a self,
        idx: usize,
        head: &'a mut Parts,
        added: &'a AddedFields,
        body: OutBody,
        timeout: Duration,
        again: bool,
    ) -> impl Future<Output = Result<Sent, SendError>> + Send + 'a {
        async move {
            let (body, failed) = body.into_parts();
            let waiting_on_client = failed.clone();
            let mut result = match self.endpoint(idx) {
                Err(e) => Err(e),
                Ok((ep, base)) => match self.def.protocol {
                    Protocol::Http1 => self.send_h1(ep, head, added, body, timeout, failed).await,
                    Protocol::H2 => {
                        let parts = match again {
                            true => head.clone(),
                            false => take_head(head),
                        };
                        let mut req = Request::from_parts(parts, body);
                        added.insert_into(req.headers_mut());
                        // Boxed: an h2 exchange's state is larger than an
                        // HTTP/1.1 one's, and inline it would set the size
                        // of every request's future (which is moved).
                        Box::pin(self.send_h2(ep, base.clone(), req, timeout, failed)).await
                    }
                },
            };
            if let Err(SendError::Timeout { timeout, .. }) = &result
                && waiting_on_client
                    .as_ref()
                    .is_some_and(BodyFailed::waiting_on_client)
            {
                result = Err(SendError::ClientTimeout(*timeout));
            }
            self.note_outcome(idx, &result);
            result
        }
    }

    /// Endpoint `idx` and the authority requests to it carry.
    fn endpoint(&self, idx: usize) -> Result<(&EndpointState, &http::uri::Authority), SendError> {
        let Some(ep) = self.endpoints.get(idx) else {
            return Err(SendError::NoHealthy {
                upstream: self.def.name.clone(),
            });
        };
        match &ep.base {
            Some(base) => Ok((ep, base)),
            None => Err(SendError::Connect {
                endpoint: ep.vitals.label.clone(),
                source: "invalid endpoint address".into(),
            }),
        }
    }

    /// [`Self::send_to`] over h2: on the endpoint's shared connection, else
    /// a new one. A request that the shared connection hands back unsent
    /// (it closed meanwhile) goes out on a new connection.
    #[expect(
        clippy::manual_async_fn,
        reason = "smaller future: see the pipeline module"
    )]
    fn send_h2(
        &self,
        ep: &EndpointState,
        base: http::uri::Authority,
        mut req: Request<ProxyBody>,
        timeout: Duration,
        failed: Option<BodyFailed>,
    ) -> impl Future<Output = Result<Sent, SendError>> {
        async move {
            let endpoint = &ep.vitals.label;
            if let Err(e) = h2::to_h2(&mut req, ep.tls, base) {
                return Err(SendError::Connect {
                    endpoint: endpoint.clone(),
                    source: e.into(),
                });
            }
            let in_flight = InFlight::new(ep);
            let exchange = async {
                // Once the shared connection handed a request back, the next
                // attempt opens a new one (so this loop runs at most twice).
                let mut reuse = true;
                loop {
                    let shared = if reuse { ep.h2.get() } else { None };
                    let (mut tx, reused) = match shared {
                        Some(tx) => (tx, true),
                        // Boxed for the same reason as in `send_h1`.
                        None => {
                            let tx = Box::pin(connect::open_h2(&self.connector, &ep.url, endpoint))
                                .await?;
                            ep.h2.set(&tx);
                            (tx, false)
                        }
                    };
                    match tx.try_send_request(req).await {
                        Ok(response) => return Ok(response),
                        Err(mut e) => match e.take_message() {
                            Some(back) if reused => {
                                req = back;
                                reuse = false;
                            }
                            _ => return Err(classify(endpoint.clone(), e.into_error())),
                        },
                    }
                }
            };
            match tokio::time::timeout(timeout, exchange).await {
                Err(_) => Err(SendError::Timeout {
                    endpoint: endpoint.clone(),
                    timeout,
                }),
                Ok(Err(e)) => Err(e),
                Ok(Ok(response)) => Ok(sent(
                    response.map(Inner::H2),
                    None,
                    ep.index,
                    in_flight,
                    failed,
                )),
            }
        }
    }

    /// [`Self::send_to`] over HTTP/1.1: an idle pooled connection to the
    /// endpoint, else a new one. A request that a reused connection hands
    /// back unsent (it closed meanwhile) goes out on a new connection.
    #[expect(
        clippy::manual_async_fn,
        reason = "smaller future: see the pipeline module"
    )]
    fn send_h1<'a>(
        &'a self,
        ep: &'a EndpointState,
        head: &'a Parts,
        added: &'a AddedFields,
        body: ProxyBody,
        timeout: Duration,
        failed: Option<BodyFailed>,
    ) -> impl Future<Output = Result<Sent, SendError>> + Send + 'a {
        async move {
            let endpoint = &ep.vitals.label;
            let head_request = head.method == Method::HEAD;
            let wants_upgrade = head.headers.contains_key(http::header::UPGRADE);
            // The head goes out in origin form (authority form for
            // CONNECT), with a Host when the request has none.
            let adds = h1::EndpointHead {
                authority: ep
                    .base
                    .as_ref()
                    .filter(|_| head.method == Method::CONNECT)
                    .map(|base| base.as_str()),
                host: ep.host.as_ref(),
            };
            let mut out = h1::Outgoing::to_endpoint(head, adds, added, body)
                .map_err(|e| h1_fault(endpoint.clone(), e))?;
            let in_flight = InFlight::new(ep);
            // The deadline is kept by the connection's own timer (see
            // `h1::Conn`), and by a timer of its own for a connect.
            // One clock read for the deadline and the pool's idle check.
            let now = tokio::time::Instant::now();
            let deadline = now + timeout;
            let timed_out = || SendError::Timeout {
                endpoint: endpoint.clone(),
                timeout,
            };
            // One loop in this future, not an async block of its own: a
            // layer fewer to set up, move and poll on every request.
            let answer = loop {
                let (conn, reused) = match ep.pool.checkout(now.into_std()) {
                    Some(conn) => (conn, true),
                    // Boxed: the connect future is large and cold; inline,
                    // it would bloat (and be memcpy'd with) every request's
                    // future.
                    None => {
                        let open = self
                            .dialer
                            .open(&ep.vitals.label, ep.sni.as_ref(), endpoint);
                        match tokio::time::timeout_at(deadline, Box::pin(open)).await {
                            Ok(conn) => (conn?, false),
                            Err(_) => return Err(timed_out()),
                        }
                    }
                };
                // The share this request is counted in takes the
                // connection back to its pool.
                let release: Arc<dyn h1::Release> = in_flight.0.clone();
                let attempt = h1::exchange(
                    conn,
                    out,
                    head_request,
                    wants_upgrade,
                    Some(deadline),
                    Some(release),
                );
                match attempt.await {
                    Ok(answer) => break answer,
                    Err(h1::Failed {
                        unsent: Some(back), ..
                    }) if reused => out = back,
                    Err(h1::Failed {
                        error: h1::H1Error::Timeout,
                        ..
                    }) => return Err(timed_out()),
                    Err(failed) => return Err(h1_fault(endpoint.clone(), failed.error)),
                }
            };
            let h1::Answer { response, upgraded } = answer;
            let upgrade = upgraded.map(|io| -> PendingUpgrade {
                Box::pin(async move { Ok(Box::new(io) as Box<dyn UpgradedIo>) })
            });
            Ok(sent(
                response.map(Inner::H1),
                upgrade,
                ep.index,
                in_flight,
                failed,
            ))
        }
    }

    /// Sends a request with the retry rules of SPEC 6. A body held in full
    /// (or absent: empty) can be sent again; a streamed one is sent once,
    /// watched by `failed` (a cut after the client's body failed is the
    /// client's). Retries go to another endpoint (a single endpoint is not
    /// retried) without moving the round-robin position. The head is
    /// borrowed (see [`Self::send_to`]); an h2 upstream gets a copy of it
    /// only when a retry may follow (retries left, more than one endpoint,
    /// a held body). `attempts` counts each exchange tried (the
    /// access log's `attempts`, SPEC 10), whether the send ends well or
    /// not.
    #[expect(
        clippy::manual_async_fn,
        reason = "smaller future: see the pipeline module"
    )]
    pub fn send<'a>(
        &'a self,
        head: &'a mut Parts,
        added: &'a AddedFields,
        body: OutBody,
        timeout: Duration,
        attempts: &'a mut u32,
    ) -> impl Future<Output = Result<Sent, SendError>> + Send + 'a {
        async move {
            let Some(mut idx) = self.pick() else {
                return Err(self.no_healthy());
            };
            let held = match body {
                OutBody::Held(held) if self.def.retries > 0 && self.endpoints.len() > 1 => held,
                body => {
                    *attempts += 1;
                    return self.send_once(idx, head, added, body, timeout, false).await;
                }
            };
            let idempotent = is_idempotent(&head.method);
            let mut tried = Tried::default();
            let mut attempts_left = self.def.retries;
            loop {
                tried.add(idx);
                *attempts += 1;
                let body = OutBody::Held(held.clone());
                // The last attempt allowed needs no copy of the head after it.
                let again = attempts_left > 0;
                let e = match self.send_once(idx, head, added, body, timeout, again).await {
                    Ok(sent) => return Ok(sent),
                    Err(e) => e,
                };
                let retryable = match &e {
                    SendError::Connect { .. } | SendError::Tls { .. } => true,
                    SendError::Reset { .. } => idempotent,
                    _ => false,
                };
                if !retryable || attempts_left == 0 {
                    return Err(e);
                }
                let Some(next) = self.pick_after(&tried) else {
                    return Err(e);
                };
                attempts_left -= 1;
                tracing::debug!(upstream = %self.def.name, error = %e, "retrying on another endpoint");
                idx = next;
            }
        }
    }
}

/// The head, taken out of `head` (left empty): the last use of it.
fn take_head(head: &mut Parts) -> Parts {
    std::mem::replace(head, Request::new(()).into_parts().0)
}

/// The exchange's answer: a 101 hands its upgrade on; any other
/// response body counts a mid-response reset and holds the in-flight
/// count.
fn sent(
    response: Response<Inner>,
    upgrade: Option<PendingUpgrade>,
    endpoint: usize,
    in_flight: InFlight,
    failed: Option<BodyFailed>,
) -> Sent {
    if let Some(pending) = upgrade {
        return Sent {
            response: response.map(|_| full(bytes::Bytes::new())),
            upgrade: Some((pending, in_flight)),
            endpoint,
        };
    }
    Sent {
        response: response.map(|inner| {
            UpstreamBody {
                inner,
                in_flight: Some(in_flight),
                failed,
            }
            .boxed()
        }),
        upgrade: None,
        endpoint,
    }
}

/// A request body on its way to an upstream.
#[derive(Debug)]
pub enum OutBody {
    /// Held in full (or absent: empty): can be sent again on a retry.
    Held(bytes::Bytes),
    /// Streaming: sent once, with the flag its failure sets (the client's
    /// fault, SPEC 5.1), when watched.
    Stream(ProxyBody, Option<BodyFailed>),
}

impl OutBody {
    /// The body to send, and the flag that watches it.
    fn into_parts(self) -> (ProxyBody, Option<BodyFailed>) {
        match self {
            OutBody::Held(held) => (full(held), None),
            OutBody::Stream(body, failed) => (body, failed),
        }
    }
}

/// The endpoints as the balancer sees them at one moment.
struct Available<'a> {
    endpoints: &'a [EndpointState],
    /// [`now_ms`], read at the first look that needs it.
    now: std::cell::OnceCell<u64>,
}

impl balance::Endpoints for Available<'_> {
    fn count(&self) -> usize {
        self.endpoints.len()
    }

    fn available(&self, i: usize) -> bool {
        self.endpoints
            .get(i)
            .is_some_and(|e| e.vitals.available_at(|| *self.now.get_or_init(now_ms)))
    }

    fn load(&self, i: usize) -> usize {
        self.endpoints
            .get(i)
            .map_or(usize::MAX, EndpointState::in_flight)
    }
}

/// A response body as its connection reads it.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "H1 is nearly every response; boxing it would allocate per response"
)]
enum Inner {
    H1(h1::ResponseBody),
    H2(hyper::body::Incoming),
}

/// A response body from an endpoint: counts and logs a reset
/// mid-response (`kind="reset"`, SPEC 9) whether or not anything else
/// watches, and holds the endpoint's in-flight count until it is done.
struct UpstreamBody {
    inner: Inner,
    // Taken at the first error: one reset is counted once.
    in_flight: Option<InFlight>,
    // The request body's failure flag: a cut after it is the client's.
    failed: Option<BodyFailed>,
}

impl Body for UpstreamBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = match &mut this.inner {
            Inner::H1(b) => Pin::new(b).poll_frame(cx).map_err(BoxError::from),
            Inner::H2(b) => Pin::new(b).poll_frame(cx).map_err(BoxError::from),
        };
        match polled {
            Poll::Ready(Some(Err(e))) => {
                let clients_fault = this.failed.as_ref().is_some_and(BodyFailed::is_set);
                if !clients_fault && let Some(v) = this.in_flight.as_ref().map(InFlight::vitals) {
                    if let Some(m) = v.metrics.get() {
                        m.errors.reset();
                    }
                    v.reset_mid_response(format!("reset mid-response: {e}"));
                }
                this.in_flight = None;
                Poll::Ready(Some(Err(e)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::H1(b) => b.is_end_stream(),
            Inner::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::H1(b) => b.size_hint(),
            Inner::H2(b) => b.size_hint(),
        }
    }
}

/// Methods RFC 9110 calls idempotent.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_serving_thread_counts_its_requests_in_flight_in_a_share_of_its_own() {
        assert!(std::mem::align_of::<EndpointShare>() >= 128);
        let up = Upstream::with_threads(UpstreamDef::new("web", &["127.0.0.1:1"]), 2);
        let ep = &up.endpoints[0];
        crate::worker::set_index(0);
        let first = InFlight::new(ep);
        crate::worker::set_index(1);
        let second = InFlight::new(ep);
        let third = InFlight::new(ep);
        crate::worker::set_index(0);
        let counts: Vec<usize> = ep
            .shares
            .iter()
            .map(|s| s.in_flight.load(Ordering::Relaxed))
            .collect();
        assert_eq!(counts, [1, 2], "each thread counts in its own share");
        assert!(!Arc::ptr_eq(&first.0, &second.0));
        assert_eq!(up.in_flight(), [3], "the count is the shares' sum");
        drop((first, second, third));
        assert_eq!(up.in_flight(), [0]);
    }

    #[test]
    fn each_serving_thread_goes_round_the_endpoints_from_its_own_position() {
        let def = UpstreamDef::new("web", &["127.0.0.1:1", "127.0.0.1:2"]);
        let up = Upstream::with_threads(def, 2);
        crate::worker::set_index(0);
        let zero: Vec<_> = (0..3).map(|_| up.pick()).collect();
        crate::worker::set_index(1);
        let one: Vec<_> = (0..3).map(|_| up.pick()).collect();
        crate::worker::set_index(0);
        assert_eq!(zero, [Some(0), Some(1), Some(0)]);
        assert_eq!(
            one,
            [Some(0), Some(1), Some(0)],
            "not where thread 0 left off"
        );
    }
}
