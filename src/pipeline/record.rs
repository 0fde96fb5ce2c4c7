//! Record: what a finished request leaves behind. Metrics and the canary
//! guard's window are recorded whether or not the access log is on; the
//! access line is written when the response body is done.

use super::decide::Decision;
use crate::compile::Action;
use crate::forward::headers::X_POINTSMAN_VARIANT;
use crate::forward::{BoxError, ProxyBody, headers};
use crate::metrics::{ROUTE_FALLBACK, ROUTE_NONE, RequestSeries};
use crate::runtime::Snapshot;
use crate::runtime::exposure::ExposureRecord;
use crate::split::Arm;
use crate::split::sticky::StickyId;
use crate::upstream::def::UpstreamId;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// Who served a request, filled in as the pipeline goes.
#[derive(Debug, Default)]
pub(super) struct Served {
    /// The route that matched, by index (named in error bodies even when
    /// the fallback then failed too). Route, upstream and endpoint are
    /// kept as places in the snapshot, named only when a line is written:
    /// a clone of a shared name is two atomic writes to a cache line that
    /// every serving thread writes.
    pub(super) route: Option<usize>,
    /// The fallback served (the `route` label is `fallback`).
    pub(super) via_fallback: bool,
    pub(super) upstream: Option<UpstreamId>,
    /// The endpoint of `upstream` that answered, by index; `None` until
    /// one did.
    pub(super) endpoint: Option<usize>,
    /// The experiment variant or canary arm, when a split decided.
    pub(super) variant: Option<Arc<str>>,
    /// `Set-Cookie` for a sticky id minted for this request.
    pub(super) set_cookie: Option<HeaderValue>,
    /// The canary (by index) and arm that served, for its guard.
    pub(super) canary: Option<(usize, Arm)>,
    /// The experiment (by index) and variant enrolled: an exposure.
    pub(super) exposure: Option<(usize, usize)>,
    /// The experiment (by index) whose kill switch released the variant.
    pub(super) released: Option<usize>,
    /// `x-pointsman-variant` for the response (`expose_variant`).
    pub(super) expose: Option<HeaderValue>,
    /// The request series to count the answer in (`None`: the snapshot's
    /// `route="none"` series), found in the snapshot when the answer is
    /// counted: a place, not an `Arc` clone (an atomic increment and
    /// decrement a request).
    pub(super) series: Option<SeriesAt>,
    /// The status to count and log when the answer's own differs: a gRPC
    /// call the proxy failed is answered 200 (trailers-only) but counted,
    /// in metrics and the canary guard, as the 502/503/504 it stands for.
    pub(super) status: Option<StatusCode>,
    /// Exchanges tried with upstreams (retries and a failover included).
    pub(super) attempts: u32,
    /// The `x-pointsman-error` token of the proxy's own error answer.
    pub(super) error: Option<&'static str>,
    /// The client address once admitted (SPEC 5: trusted proxies'
    /// `X-Forwarded-For` believed); before that, the TCP peer is logged.
    pub(super) client_ip: Option<IpAddr>,
}

/// Where a request's series is among the snapshot's metric handles.
#[derive(Debug, Clone, Copy)]
pub(super) enum SeriesAt {
    /// Route `i`'s `respond`/`redirect` series.
    Direct(usize),
    /// Route `i`'s series for arm `j` (`RouteMetrics::arms`).
    Arm(usize, usize),
    /// The fallback's.
    Fallback,
}

impl SeriesAt {
    fn find(self, snapshot: &Snapshot) -> Option<&RequestSeries> {
        let route = |i| snapshot.route_metrics(i);
        match self {
            SeriesAt::Direct(i) => route(i)?.direct.as_deref(),
            SeriesAt::Arm(i, j) => route(i)?.arms.get(j).map(|s| &**s),
            SeriesAt::Fallback => snapshot.metrics().fallback.as_deref(),
        }
    }
}

impl Served {
    /// The name of the route that matched.
    pub(super) fn route_name<'s>(&self, snapshot: &'s Snapshot) -> Option<&'s str> {
        let route = snapshot.config.routes.routes().get(self.route?)?;
        Some(&route.name)
    }

    /// The name of the upstream sent to.
    pub(super) fn upstream_name<'s>(&self, snapshot: &'s Snapshot) -> Option<&'s str> {
        Some(&snapshot.upstream(self.upstream?)?.def.name)
    }

    /// The `host:port` of the endpoint that answered.
    fn endpoint_label<'s>(&self, snapshot: &'s Snapshot) -> Option<&'s str> {
        snapshot
            .upstream(self.upstream?)?
            .endpoint_label(self.endpoint?)
    }

    /// The `route` label: the route's name, `fallback` or `none`.
    fn route_label<'s>(&self, snapshot: &'s Snapshot) -> &'s str {
        if self.via_fallback {
            ROUTE_FALLBACK
        } else {
            self.route_name(snapshot).unwrap_or(ROUTE_NONE)
        }
    }
}

/// Finishes a response: the minted cookie and the request id on it, the
/// guard's window, the exposure and the request metrics counted, and the
/// access line attached to its body when the access log is on.
pub(super) fn finish(
    snapshot: &Snapshot,
    mut resp: Response<ProxyBody>,
    mut served: Served,
    request_id: HeaderValue,
    log: Option<Box<AccessLog>>,
    start: Instant,
) -> Response<ProxyBody> {
    if let Some(cookie) = served.set_cookie.take() {
        resp.headers_mut().append(header::SET_COOKIE, cookie);
    }
    let status = served.status.unwrap_or(resp.status());
    let elapsed = start.elapsed();
    if let Some((i, arm)) = served.canary
        && let Some(c) = snapshot.canary(i)
    {
        // The guard judges what the upstream did wrong: 5xx answers and
        // upstream failures (which are 5xx too), never a client's 4xx.
        c.record(arm, status.is_server_error(), elapsed);
    }
    if let Some((e, v)) = served.exposure
        && let Some(t) = snapshot.tally(e)
    {
        t.record(v, status.is_server_error(), elapsed);
    }
    if let Some(t) = served.released.and_then(|e| snapshot.tally(e)) {
        t.record_released();
    }
    if let Some(v) = served.expose.take() {
        resp.headers_mut().insert(X_POINTSMAN_VARIANT, v);
    }
    let series = served.series.and_then(|at| at.find(snapshot));
    if let Some(series) = series.or(snapshot.metrics().none.as_deref()) {
        series.observe(status.as_u16(), elapsed);
    }
    let Some(mut log) = log else {
        // No record to keep, no body wrapper to box.
        resp.headers_mut().insert(headers::X_REQUEST_ID, request_id);
        return resp;
    };
    resp.headers_mut()
        .insert(headers::X_REQUEST_ID, request_id.clone());
    log.request_id = request_id;
    log.status = status.as_u16();
    log.served = served;
    let (parts, body) = resp.into_parts();
    Response::from_parts(
        parts,
        Logged {
            inner: body,
            log: *log,
        }
        .boxed(),
    )
}

/// Notes an assignment by hash as soon as it is decided (while the sticky
/// id is borrowed from the request): the user counted, and for a first
/// exposure a line queued for the exposure log.
pub(super) fn expose(
    snapshot: &Snapshot,
    decision: &Decision,
    sticky: Option<&StickyId<'_>>,
    request_id: &HeaderValue,
) {
    let config = &snapshot.config;
    let (Some(route), Some(split), Some(id)) = (decision.route(config), &decision.split, sticky)
    else {
        return;
    };
    let Some(x) = split.exposure else { return };
    let (first, seed) = match &route.action {
        Action::Experiment { experiment, .. } => (
            snapshot
                .tally(experiment.index)
                .is_some_and(|t| t.enroll(x.index, &id.value)),
            &experiment.seed,
        ),
        Action::Canary(c) => (
            snapshot
                .canary(c.index)
                .is_some_and(|k| k.first_seen(x.index, &id.value)),
            &c.route,
        ),
        _ => return,
    };
    let log = snapshot.exposures();
    if !first || !log.enabled() {
        return;
    }
    let (Some(variant), Some(name)) = (split.variant.clone(), exposure_name(&route.action)) else {
        return;
    };
    log.push(ExposureRecord {
        at: std::time::SystemTime::now(),
        experiment: name,
        variant,
        user: id.value.to_string(),
        source: id.source.to_string(),
        seed: seed.clone(),
        hash_version: x.hash_version,
        bucket: x.bucket,
        route: route.name.clone(),
        request_id: request_id.clone(),
    });
}

/// The `experiment_id` of an exposure: the experiment, or the canary's
/// route.
fn exposure_name(action: &Action) -> Option<Arc<str>> {
    match action {
        Action::Experiment { experiment, .. } => Some(experiment.name.clone()),
        Action::Canary(c) => Some(c.route.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The route, upstream and endpoint are places in the snapshot, named
    /// from it; the fallback is named by a flag (re-house fix: no route
    /// name allocated per request).
    #[test]
    fn served_places_are_named_from_the_snapshot() {
        let text = r#"
listen: [{bind: "127.0.0.1:0"}]
upstreams:
  web: {endpoints: ["127.0.0.1:9001", "127.0.0.1:9002"]}
routes:
  - {name: first, match: {path_prefix: /a}, to: web}
  - {name: second, match: {path_prefix: /}, to: web}
"#;
        let config = crate::compile::compile_text("t.yaml", text)
            .expect("compiles")
            .config;
        let snapshot = crate::runtime::Runtime::new(None).link(config);
        let served = Served {
            route: Some(1),
            upstream: Some(0),
            endpoint: Some(1),
            ..Served::default()
        };
        assert_eq!(served.route_label(&snapshot), "second");
        assert_eq!(served.upstream_name(&snapshot), Some("web"));
        assert_eq!(served.endpoint_label(&snapshot), Some("127.0.0.1:9002"));
        let fallback = Served {
            via_fallback: true,
            ..Served::default()
        };
        assert_eq!(fallback.route_label(&snapshot), ROUTE_FALLBACK);
        assert_eq!(Served::default().route_label(&snapshot), ROUTE_NONE);
        assert_eq!(Served::default().endpoint_label(&snapshot), None);
    }
}

/// The access log record (SPEC 10), written when the response body is
/// done. Built only when the access log is on; its values are the
/// request's own (shared, not copied: `HeaderValue`s and the `Uri` are
/// reference-counted).
#[derive(Debug)]
pub(super) struct AccessLog {
    /// Where the record's route, upstream and endpoint are named.
    snapshot: Arc<Snapshot>,
    request_id: HeaderValue,
    peer: IpAddr,
    method: Method,
    host: HeaderValue,
    uri: Uri,
    version: Version,
    user_agent: Option<HeaderValue>,
    /// The status sent, or [`CLIENT_CLOSED`] until there is one.
    status: u16,
    served: Served,
    start: Instant,
    bytes_out: u64,
}

impl AccessLog {
    /// Starts a record for `req` from `peer` when the access log is on
    /// (`--access-log off` builds none). Boxed: the request's future holds
    /// it across every await, and a smaller future is cheaper to move.
    pub(super) fn begin<B>(
        snapshot: &Arc<Snapshot>,
        req: &Request<B>,
        peer: IpAddr,
        start: Instant,
        request_id: &HeaderValue,
    ) -> Option<Box<AccessLog>> {
        if !tracing::enabled!(target: "access", tracing::Level::INFO) {
            return None;
        }
        Some(Box::new(AccessLog {
            snapshot: snapshot.clone(),
            request_id: request_id.clone(),
            peer,
            method: req.method().clone(),
            host: super::admit::raw_host(req).unwrap_or(HeaderValue::from_static("")),
            uri: req.uri().clone(),
            version: req.version(),
            user_agent: req.headers().get(header::USER_AGENT).cloned(),
            status: CLIENT_CLOSED,
            served: Served::default(),
            start,
            bytes_out: 0,
        }))
    }

    /// What the pipeline decided so far, filled in as it goes.
    pub(super) fn served_mut(&mut self) -> &mut Served {
        &mut self.served
    }
}

/// The status logged for a request whose client left before it was
/// answered (NGINX's 499, "client closed request"): the record is dropped
/// with the request, before any status was chosen.
const CLIENT_CLOSED: u16 = 499;

/// The `protocol` field: the version the client spoke.
fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        let s = &self.served;
        let snapshot = &*self.snapshot;
        tracing::info!(
            target: "access",
            request_id = self.request_id.to_str().unwrap_or(""),
            client_ip = %s.client_ip.unwrap_or(self.peer),
            method = %self.method,
            host = self.host.to_str().unwrap_or(""),
            path = self.uri.path(),
            query = self.uri.query().unwrap_or(""),
            protocol = protocol(self.version),
            user_agent = self.user_agent.as_ref().and_then(|v| v.to_str().ok()).unwrap_or(""),
            status = self.status,
            route = s.route_label(snapshot),
            upstream = s.upstream_name(snapshot).unwrap_or(""),
            endpoint = s.endpoint_label(snapshot).unwrap_or(""),
            attempts = s.attempts,
            error = s.error.unwrap_or(""),
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
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.log.bytes_out += data.len() as u64;
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
