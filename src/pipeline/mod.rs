//! The per-request pipeline, in the order a request travels:
//!
//! 1. [`admit`]: limits, Host, TLS server name, path, body, client address;
//! 2. [`decide`]: the route and the experiment or canary split (shared with
//!    `explain`);
//! 3. [`prepare`]: the upstream request's head;
//! 4. `dispatch`: answer, forward (balance, retry), mirror, fail over;
//! 5. `record`: metrics, the canary guard, exposures, the access log.
//!
//! The pipeline works on `http` types and the [`crate::forward`] body and
//! upgrade types; the server (and the upstream connections) translate from
//! and to the wire. It never fails: every failure is a response.
//!
//! Future size and depth: hyper moves each request's future once, so its
//! size is a cost per request, and every nested future is set up, moved
//! into its parent and polled through on every request. An `async fn`
//! keeps its arguments twice (as captured and as moved locals), so the
//! layers a request passes through (here and in `upstream`) are plain fns
//! returning one `async move` block; steps with nothing to wait for are
//! plain fns run inside their caller's future (`serve` runs the phases
//! itself, `dispatch` readies and finishes the send around the upstream's
//! future); cold branches (the fallback, the failover spare, the access
//! record, an h2 upstream's exchange) are boxed. The request is owned once,
//! by `serve`'s future, and the layers below borrow it (`&mut Outgoing`,
//! then the head as `&mut Parts`): a value passed down by value would be
//! kept again in each layer's state, and an HTTP/1.1 upstream encodes the
//! head from the borrow. `RUSTFLAGS=-Zprint-type-sizes` (nightly) shows
//! the sizes, `benches/callgrind.sh` the cost.

pub mod admit;
pub mod decide;
mod dispatch;
mod mirror;
pub mod prepare;
mod record;

use crate::forward::tunnel::PendingUpgrade;
use crate::forward::{AddedFields, RequestBody};
use crate::forward::{ForwardError, ProxyBody, grpc, headers};
use crate::routing::RequestContext;
use crate::runtime::Snapshot;
use crate::split::Purpose;
use http::request::Parts;
use http::{HeaderValue, Request, Response};
use record::{AccessLog, Served};
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Instant;

/// What the pipeline knows about the connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// Whether the listener terminates TLS.
    pub tls: bool,
    /// The TLS server name the client asked for; a request whose Host names
    /// another server is answered 421.
    pub sni: Option<Box<str>>,
    /// The peer's address as an `X-Forwarded-For` entry, made once for
    /// the connection's requests.
    pub peer_entry: HeaderValue,
}

impl ConnInfo {
    /// The facts of a client connection.
    pub fn new(peer: SocketAddr, tls: bool, sni: Option<Box<str>>) -> Self {
        ConnInfo {
            peer,
            tls,
            sni,
            peer_entry: crate::forward::headers::forwarded_for_entry(peer.ip()),
        }
    }

    /// `http` or `https` (for X-Forwarded-Proto).
    pub fn proto(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }
}

/// A request on its way out: the prepared head, the body, the normalized
/// path and the client side of an upgrade.
pub(super) struct Outgoing<'p> {
    pub(super) parts: Parts,
    /// The fields the proxy adds, written after the head's own.
    pub(super) added: AddedFields,
    pub(super) body: RequestBody,
    pub(super) path: &'p str,
    pub(super) upgrade: Option<PendingUpgrade>,
    /// The client sent `te: trailers` (kept toward h2 upstreams only; an
    /// HTTP/1.1 client that sent it gets the response's trailers).
    pub(super) te_trailers: bool,
    /// A gRPC call's deadline (`grpc-timeout`), when it has one.
    pub(super) deadline: Option<Instant>,
}

/// Runs one request through the pipeline on `snapshot`. `upgrade` is the
/// client side of an Upgrade request (WebSocket), joined to the upstream
/// only once it answers 101.
#[expect(
    clippy::manual_async_fn,
    reason = "smaller future: see the pipeline module"
)]
pub fn serve(
    snapshot: Arc<Snapshot>,
    mut req: Request<ProxyBody>,
    upgrade: Option<PendingUpgrade>,
    conn: impl Deref<Target = ConnInfo> + Send + 'static,
) -> impl Future<Output = Response<ProxyBody>> + Send + 'static {
    async move {
        // Owned by the future (dropped as it ends, however it ends): the
        // caller needs no async layer of its own to hold them.
        let start = Instant::now();
        let request_id = headers::request_id(req.headers());
        let mut log = AccessLog::begin(&snapshot, &req, conn.peer.ip(), start, &request_id);
        let (snapshot, conn) = (&*snapshot, &*conn);
        let h1 = req.version() <= http::Version::HTTP_11;
        // Kept in the access record when there is one, so a request whose
        // client leaves mid-way is logged with what was decided so far.
        let mut unlogged = Served::default();
        let served = match log.as_deref_mut() {
            Some(log) => log.served_mut(),
            None => &mut unlogged,
        };
        let grpc = grpc::is_grpc(req.headers());
        // The request's steps run in this future, not in one of their own:
        // an async layer fewer to set up, move and poll on every request.
        let result: Result<Response<ProxyBody>, ForwardError> = 'run: {
            let config = &snapshot.config;
            // Admitted before the path is looked at (a bad Host is answered
            // first), and in a block: what is moved into `out` keeps no
            // room of its own in the future while the request is dispatched.
            let uri = req.uri().clone();
            let (path, decision, mut out);
            {
                let admitted = match admit::admit(config, &mut req, conn) {
                    Ok(admitted) => admitted,
                    Err(e) => break 'run Err(e),
                };
                served.client_ip = Some(admitted.client_ip);
                path = match admit::path(&uri) {
                    Ok(path) => path,
                    Err(e) => break 'run Err(e),
                };
                let (mut parts, body) = req.into_parts();
                // A call's deadline counts from its arrival.
                let deadline = match grpc {
                    true => grpc::timeout(&parts.headers).map(|t| start + t),
                    false => None,
                };
                let mut body = RequestBody::streaming(body);
                if admit::reads_body(config, grpc) {
                    body = body
                        .inspect(config.settings.limits.inspect_body_bytes)
                        .await;
                }
                let body = match admit::body(config, body) {
                    Ok(body) => body,
                    Err(e) => break 'run Err(e),
                };
                decision = {
                    let ctx = RequestContext::new(
                        &parts.method,
                        admitted.host_str(),
                        &path,
                        uri.query(),
                        &parts.headers,
                        admitted.client_ip,
                        body.held().map(|b| b.as_ref()),
                    );
                    let (decision, sticky) =
                        decide::decide(config, snapshot, &ctx, conn.tls, Purpose::Serve);
                    record::expose(snapshot, &decision, sticky.as_ref(), &request_id);
                    decision
                };
                let trusted = &config.settings.trusted_proxies;
                let mut added = AddedFields::default();
                let te_trailers = prepare::head(
                    &mut parts,
                    &mut added,
                    &admitted,
                    trusted,
                    conn,
                    &request_id,
                    upgrade.is_some(),
                );
                out = Outgoing {
                    parts,
                    added,
                    body,
                    path: &path,
                    upgrade,
                    te_trailers,
                    deadline,
                };
            }
            dispatch::dispatch(snapshot, decision, &mut out, &request_id, served).await
        };
        let resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                if e.is_upstream_failure() {
                    // The reason an operator needs for a 502/503/504: the
                    // access line has only the token.
                    tracing::warn!(
                        request_id = request_id.to_str().unwrap_or(""),
                        route = served.route_name(snapshot).unwrap_or(""),
                        upstream = served.upstream_name(snapshot).unwrap_or(""),
                        error = %e,
                        "upstream failed"
                    );
                } else {
                    tracing::debug!(error = %e, "request failed");
                }
                served.error = e.token();
                let mut resp = error_response(&e, grpc, served, snapshot);
                if h1 && e.closes_connection() {
                    // Where the next request would start cannot be trusted.
                    resp.headers_mut()
                        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                }
                resp
            }
        };
        let served = std::mem::take(served);
        record::finish(snapshot, resp, served, request_id, log, start)
    }
}

/// The proxy's own answer to a failed request: a gRPC call gets the
/// trailers-only form, counted under the status it stands for.
fn error_response(
    e: &ForwardError,
    grpc: bool,
    served: &mut Served,
    snapshot: &Snapshot,
) -> Response<ProxyBody> {
    if grpc && let Some(resp) = e.to_grpc_response() {
        served.status = Some(e.status());
        return resp;
    }
    e.to_response(served.route_name(snapshot))
}
