//! The per-request pipeline as a hyper service: snapshot → context →
//! route → action → forward → response, with one access log line.

use crate::context::{RequestContext, normalize_path};
use crate::forward::{self, ForwardError, Forwarded, RequestBody, body, headers};
use crate::metrics::{RequestSeries, UpstreamErrors};
use crate::router::{Action, FallbackAction, Respond, Route, Snapshot};
use crate::server::Proxy;
use crate::split;
use crate::upstream::{BoxError, ProxyBody, full};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

/// What the pipeline knows about the connection a request came on.
#[derive(Debug)]
pub struct ConnInfo {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// `http` or `https` (for X-Forwarded-Proto).
    pub proto: &'static str,
    /// The TLS server name the client asked for; a request whose Host names
    /// another server is answered 421.
    pub sni: Option<Box<str>>,
    /// Requests in flight on this connection (for the idle timeout).
    pub in_flight: AtomicUsize,
}

/// The hyper service for one connection.
#[derive(Debug, Clone)]
pub struct ProxyService {
    proxy: Arc<Proxy>,
    conn: Arc<ConnInfo>,
}

impl ProxyService {
    /// A service for one connection from `conn.peer`.
    pub fn new(proxy: Arc<Proxy>, conn: Arc<ConnInfo>) -> Self {
        ProxyService { proxy, conn }
    }
}

impl hyper::service::Service<Request<Incoming>> for ProxyService {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let proxy = self.proxy.clone();
        let conn = self.conn.clone();
        Box::pin(async move {
            conn.in_flight.fetch_add(1, Ordering::Relaxed);
            let resp = handle(&proxy, req, &conn).await;
            conn.in_flight.fetch_sub(1, Ordering::Relaxed);
            Ok(resp)
        })
    }
}

/// What the access log line says about who served a request.
#[derive(Debug, Default)]
struct Served {
    route: Option<Arc<str>>,
    upstream: Option<Arc<str>>,
    endpoint: Arc<str>,
    /// The experiment variant or canary arm, when a split decided.
    variant: Option<Arc<str>>,
    /// `Set-Cookie` for a sticky id minted for this request.
    set_cookie: Option<HeaderValue>,
    /// The canary that served, for its guard's observations.
    canary: Option<(Arc<split::Canary>, split::Arm)>,
    /// The request series to count the answer in (resolved at compile
    /// time; `None`: the snapshot's `route="none"` series).
    series: Option<Arc<RequestSeries>>,
    /// The serving upstream's error counters, for a mid-response reset.
    errors: Option<Arc<UpstreamErrors>>,
}

/// The variant header sent upstream (SPEC 3).
const X_POINTSMAN_VARIANT: HeaderName = HeaderName::from_static("x-pointsman-variant");

/// Runs one request through the pipeline. Never fails: every failure is a
/// response.
pub async fn handle(proxy: &Proxy, req: Request<Incoming>, conn: &ConnInfo) -> Response<ProxyBody> {
    let start = Instant::now();
    // One load per request; the Arc keeps this generation alive until done.
    let snapshot = proxy.snapshot();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let request_id = headers::request_id(req.headers());
    // With the access log off (`--access-log off`), no record is built.
    let log_on = tracing::enabled!(target: "access", tracing::Level::INFO);
    let host = if log_on {
        raw_host(&req).unwrap_or(HeaderValue::from_static(""))
    } else {
        HeaderValue::from_static("")
    };
    let mut served = Served::default();
    let (mut resp, failed) = match run(&snapshot, req, conn, &uri, &request_id, &mut served).await {
        Ok(resp) => (resp, false),
        Err(e) => {
            tracing::debug!(error = %e, "request failed");
            (e.to_response(served.route.as_deref()), true)
        }
    };
    if let Some(cookie) = served.set_cookie.take() {
        resp.headers_mut().append(header::SET_COOKIE, cookie);
    }
    if let Some((canary, arm)) = &served.canary {
        // The guard judges 5xx answers and upstream failures alike.
        let error = failed || resp.status().is_server_error();
        canary.record(*arm, error, start.elapsed());
    }
    // Metrics are recorded whether or not the access log is on.
    if let Some(series) = served.series.as_ref().or(snapshot.metrics.none.as_ref()) {
        series.observe(resp.status().as_u16(), start.elapsed());
    }
    if !log_on {
        // No record to keep, no body wrapper to box.
        resp.headers_mut().insert(headers::X_REQUEST_ID, request_id);
        return resp;
    }
    resp.headers_mut()
        .insert(headers::X_REQUEST_ID, request_id.clone());
    let (parts, body) = resp.into_parts();
    let log = AccessLog {
        request_id,
        method,
        host,
        uri,
        status: parts.status,
        served,
        start,
        bytes_out: 0,
    };
    Response::from_parts(parts, Logged { inner: body, log }.boxed())
}

/// Host as received: the absolute-form / :authority authority, else Host.
fn raw_host<B>(req: &Request<B>) -> Option<HeaderValue> {
    if let Some(a) = req.uri().authority() {
        return HeaderValue::from_str(a.as_str()).ok();
    }
    req.headers().get(header::HOST).cloned()
}

async fn run(
    snapshot: &Snapshot,
    mut req: Request<Incoming>,
    conn: &ConnInfo,
    uri: &Uri,
    request_id: &HeaderValue,
    served: &mut Served,
) -> Result<Response<ProxyBody>, ForwardError> {
    let limits = &snapshot.settings.limits;
    // hyper enforces the count on HTTP/1.1; HTTP/2 is checked here.
    if req.headers().len() > limits.max_headers {
        return Err(ForwardError::HeadersTooLarge);
    }
    if req.headers().get_all(header::HOST).iter().count() > 1 {
        return Err(ForwardError::BadRequest("more than one Host"));
    }
    let host_value = raw_host(&req);
    let raw_host = match &host_value {
        Some(v) => v
            .to_str()
            .map_err(|_| ForwardError::BadRequest("unreadable Host"))?,
        None => "",
    };
    if let Some(sni) = &conn.sni
        && !raw_host.is_empty()
        && !crate::tls::host_matches_sni(raw_host, sni)
    {
        return Err(ForwardError::Misdirected);
    }
    let path = normalize_path(uri.path()).map_err(|_| ForwardError::BadRequest("bad path"))?;
    if limits.max_body_bytes > 0
        && let Some(len) = content_length(req.headers())
        && len > limits.max_body_bytes
    {
        return Err(ForwardError::BodyTooLarge);
    }
    let trusted = &snapshot.settings.trusted_proxies;
    let peer_ip = conn.peer.ip();
    let client_ip = headers::client_ip(peer_ip, req.headers(), trusted);
    let on_upgrade = (req.version() == http::Version::HTTP_11
        && headers::is_upgrade(req.headers()))
    .then(|| hyper::upgrade::on(&mut req));
    let (mut parts, incoming) = req.into_parts();

    let mut body = if snapshot.needs_body {
        body::inspect(incoming, limits.inspect_body_bytes).await
    } else {
        body::streaming(incoming)
    };
    if let Some(held) = body.held()
        && limits.max_body_bytes > 0
        && held.len() as u64 > limits.max_body_bytes
    {
        return Err(ForwardError::BodyTooLarge);
    }

    let tls = conn.proto == "https";
    let (route, split) = {
        let ctx = RequestContext::new(
            &parts.method,
            raw_host,
            &path,
            uri.query(),
            &parts.headers,
            client_ip,
            body.held().map(|b| b.as_ref()),
        );
        let route = snapshot.select(&ctx);
        let split = route.and_then(|r| match &r.action {
            Action::Experiment {
                default,
                experiment,
            } => Some(split::decide_experiment(
                *default,
                experiment,
                &ctx,
                tls,
                split::Purpose::Serve,
            )),
            Action::Canary(c) => Some(split::decide_canary(c, &ctx, tls, split::Purpose::Serve)),
            _ => None,
        });
        (route, split)
    };

    // Rewrite the head once; every target below starts from it.
    let upgrade = on_upgrade.is_some();
    headers::strip_hop_by_hop(&mut parts.headers, upgrade, false);
    headers::strip_internal(&mut parts.headers);
    if let Some(v) = &host_value
        && uri.authority().is_some()
    {
        // h2 / absolute-form requests carry the host in the URI; others
        // already have this very Host header.
        parts.headers.insert(header::HOST, v.clone());
    }
    headers::add_forwarded(
        &mut parts.headers,
        peer_ip,
        headers::is_trusted(peer_ip, trusted),
        conn.proto,
        host_value.as_ref(),
    );
    parts
        .headers
        .insert(headers::X_REQUEST_ID, request_id.clone());

    let Some(route) = route else {
        return fallback(snapshot, parts, body, &path, on_upgrade, served, None).await;
    };
    served.route = Some(route.name.clone());
    served.series = route.metrics.direct.clone();
    let upstream_id = match &route.action {
        Action::Respond(r) => return Ok(respond(r)),
        Action::Redirect(r) => {
            let mut resp = Response::new(full(Bytes::new()));
            *resp.status_mut() = r.status;
            resp.headers_mut()
                .insert(header::LOCATION, r.location.clone());
            return Ok(resp);
        }
        Action::Forward(id) => *id,
        Action::Experiment { default, .. } => split.as_ref().map_or(*default, |d| d.upstream),
        Action::Canary(c) => split.as_ref().map_or(c.def.stable, |d| d.upstream),
    };
    if let Some(v) = split.as_ref().and_then(|d| d.variant_header.clone()) {
        parts.headers.insert(X_POINTSMAN_VARIANT, v);
    }
    served.variant = split.as_ref().and_then(|d| d.variant.clone());
    served.set_cookie = split.as_ref().and_then(|d| d.set_cookie.clone());
    served.canary = match (&route.action, split.as_ref().and_then(|d| d.arm)) {
        (Action::Canary(c), Some(arm)) => Some((c.clone(), arm)),
        _ => None,
    };
    served.series = route
        .metrics
        .arms
        .get(arm_index(&route.action, split.as_ref()))
        .cloned();

    if let Some(m) = &route.forward.mirror
        && headers::id_in_share(request_id, m.percent)
    {
        // Read the body now if it fits; a larger one is not mirrored.
        body = match body {
            RequestBody::Stream(s) => body::inspect_prefixed(s, limits.inspect_body_bytes).await,
            held => held,
        };
        let counters = route.metrics.mirror.clone();
        if let (Some(held), Some(up)) = (body.held(), snapshot.upstreams.get(m.upstream)) {
            let mut copy = parts.clone();
            headers::apply_ops(&mut copy.headers, &route.forward.request_headers);
            let path = forward::upstream_path(&path, None, route.forward.strip_prefix.as_deref());
            let timeout = up.def.request_timeout;
            forward::mirror(up.clone(), copy, held.clone(), path, timeout, counters);
        } else if let Some(c) = counters {
            c.skipped();
        }
    }

    let held = body.held().cloned();
    let failover_parts = match (&snapshot.fallback, &held) {
        (Some(f), Some(_)) if f.failover && !upgrade => Some(parts.clone()),
        _ => None,
    };
    match forward_route(
        snapshot,
        route,
        upstream_id,
        parts,
        body,
        &path,
        on_upgrade,
        served,
    )
    .await
    {
        Ok(resp) => Ok(resp),
        Err(e) if e.fails_over() => match (failover_parts, held) {
            (Some(parts), Some(held)) => {
                tracing::debug!(route = %route.name, error = %e, "failing over to the fallback");
                fallback(
                    snapshot,
                    parts,
                    RequestBody::Held(held),
                    &path,
                    None,
                    served,
                    Some(e),
                )
                .await
            }
            _ => Err(e),
        },
        Err(e) => Err(e),
    }
}

#[allow(clippy::too_many_arguments)]
async fn forward_route(
    snapshot: &Snapshot,
    route: &Route,
    upstream_id: usize,
    parts: http::request::Parts,
    body: RequestBody,
    path: &str,
    on_upgrade: Option<hyper::upgrade::OnUpgrade>,
    served: &mut Served,
) -> Result<Response<ProxyBody>, ForwardError> {
    let Some(upstream) = snapshot.upstreams.get(upstream_id) else {
        return Err(ForwardError::NoHealthyUpstream("unknown upstream".into()));
    };
    served.upstream = Some(upstream.def.name.clone());
    let Forwarded { response, endpoint } = forward::forward(
        upstream,
        parts,
        body,
        path,
        Some(&route.forward),
        snapshot.settings.limits.max_body_bytes,
        on_upgrade,
    )
    .await
    .inspect_err(|e| snapshot.metrics.upstream_error(upstream_id, e))?;
    served.endpoint = endpoint;
    served.errors = snapshot.metrics.upstream_errors.get(upstream_id).cloned();
    Ok(response)
}

/// Serves through the fallback; `failed` is the error that caused a
/// failover (answered with if the fallback fails too, route name kept).
#[allow(clippy::too_many_arguments)]
async fn fallback(
    snapshot: &Snapshot,
    parts: http::request::Parts,
    body: RequestBody,
    path: &str,
    on_upgrade: Option<hyper::upgrade::OnUpgrade>,
    served: &mut Served,
    failed: Option<ForwardError>,
) -> Result<Response<ProxyBody>, ForwardError> {
    let Some(fb) = &snapshot.fallback else {
        return Err(failed.unwrap_or(ForwardError::NoRoute));
    };
    let matched = served.route.take();
    served.route = Some(Arc::from("fallback"));
    served.series = snapshot.metrics.fallback.clone();
    let result = match &fb.action {
        FallbackAction::Respond(r) => Ok(respond(r)),
        FallbackAction::Forward(id) => match snapshot.upstreams.get(*id) {
            None => Err(ForwardError::NoHealthyUpstream("unknown upstream".into())),
            Some(up) => {
                served.upstream = Some(up.def.name.clone());
                forward::forward(
                    up,
                    parts,
                    body,
                    path,
                    None,
                    snapshot.settings.limits.max_body_bytes,
                    on_upgrade,
                )
                .await
                .inspect_err(|e| snapshot.metrics.upstream_error(*id, e))
                .map(|f| {
                    served.endpoint = f.endpoint;
                    served.errors = snapshot.metrics.upstream_errors.get(*id).cloned();
                    f.response
                })
            }
        },
    };
    if result.is_err() {
        // The JSON body names the route that matched, not the fallback.
        served.route = matched;
    }
    result
}

/// Which of the route's [`crate::telemetry::RouteMetrics::arms`] served:
/// 0 for `to`, a not-enrolled experiment request and the canary's stable
/// arm; `1 + i` for experiment variant `i`; 1 for the canary arm.
fn arm_index(action: &Action, split: Option<&split::SplitDecision>) -> usize {
    match (action, split) {
        (Action::Experiment { experiment, .. }, Some(d)) => d.variant.as_ref().map_or(0, |v| {
            // The decision's name is the variant's own Arc: compare pointers.
            experiment
                .variants
                .iter()
                .position(|x| Arc::ptr_eq(&x.name, v))
                .map_or(0, |i| i + 1)
        }),
        (Action::Canary(_), Some(d)) => usize::from(d.arm == Some(split::Arm::Canary)),
        _ => 0,
    }
}

fn respond(r: &Respond) -> Response<ProxyBody> {
    let mut resp = Response::new(full(r.body.clone()));
    *resp.status_mut() = r.status;
    for (k, v) in &r.headers {
        resp.headers_mut().append(k.clone(), v.clone());
    }
    resp
}

fn content_length(h: &http::HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The access log record, written when the response body is done.
#[derive(Debug)]
struct AccessLog {
    request_id: HeaderValue,
    method: Method,
    host: HeaderValue,
    uri: Uri,
    status: StatusCode,
    served: Served,
    start: Instant,
    bytes_out: u64,
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        let s = &self.served;
        tracing::info!(
            target: "access",
            request_id = self.request_id.to_str().unwrap_or(""),
            method = %self.method,
            host = self.host.to_str().unwrap_or(""),
            path = self.uri.path(),
            status = self.status.as_u16(),
            route = s.route.as_deref().unwrap_or("none"),
            upstream = s.upstream.as_deref().unwrap_or(""),
            endpoint = &*s.endpoint,
            variant = s.variant.as_deref().unwrap_or(""),
            duration_ms = self.start.elapsed().as_millis() as u64,
            bytes_out = self.bytes_out,
        );
    }
}

pin_project_lite::pin_project! {
    /// A response body that counts its bytes and logs when dropped.
    struct Logged {
        #[pin]
        inner: ProxyBody,
        log: AccessLog,
    }
}

impl Body for Logged {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.log.bytes_out += data.len() as u64;
                }
            }
            Poll::Ready(Some(Err(_))) => {
                // The upstream reset mid-response (SPEC 9: kind="reset").
                if let Some(errors) = this.log.served.errors.take() {
                    errors.reset();
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
