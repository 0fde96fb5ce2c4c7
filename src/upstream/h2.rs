//! HTTP/2 toward `protocol: h2` upstreams: one multiplexed connection per
//! endpoint, opened on first use and replaced once it closes or has sat
//! idle, and the request put on the h2 wire as RFC 9113 8.3.1 asks.
//!
//! The connection is the endpoint's, not the request's Host's: every call
//! to an endpoint shares it, whatever `:authority` it carries (a pool keyed
//! by the request's authority would dial the client's Host, or open one
//! connection per Host).

use crate::forward::body::ProxyBody;
use arc_swap::ArcSwapOption;
use http::uri::{Authority, Scheme};
use http::{Request, Uri, Version, header};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A request sender on one h2 connection (cheap to clone: a handle).
pub(crate) type H2Sender = hyper::client::conn::http2::SendRequest<ProxyBody>;

/// An open connection and when it was last handed out.
struct Shared {
    tx: H2Sender,
    opened: Instant,
    /// Milliseconds after `opened` that a request last took it.
    used_ms: AtomicU64,
}

/// The shared h2 connection of one endpoint. Lock-free: requests load it;
/// the one that finds it missing, closed or stale opens the next (a burst
/// on a cold endpoint may open a few; the last stored stays, the others
/// close when their requests are done).
pub(crate) struct H2Slot {
    current: ArcSwapOption<Shared>,
    idle_timeout: Duration,
}

impl std::fmt::Debug for H2Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Slot")
            .field("open", &self.current.load().is_some())
            .finish_non_exhaustive()
    }
}

impl H2Slot {
    /// An empty slot; a connection idle for `idle_timeout` is not reused.
    pub(crate) fn new(idle_timeout: Duration) -> Self {
        H2Slot {
            current: ArcSwapOption::empty(),
            idle_timeout,
        }
    }

    /// A sender on the endpoint's connection, if it is open and fresh.
    pub(crate) fn get(&self) -> Option<H2Sender> {
        let guard = self.current.load();
        let shared = guard.as_deref()?;
        let now = shared.opened.elapsed();
        let used = Duration::from_millis(shared.used_ms.load(Ordering::Relaxed));
        if shared.tx.is_closed() || now.saturating_sub(used) >= self.idle_timeout {
            return None;
        }
        let ms = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
        shared.used_ms.store(ms, Ordering::Relaxed);
        Some(shared.tx.clone())
    }

    /// Makes `tx` the endpoint's connection (the one before it closes once
    /// its streams are done).
    pub(crate) fn set(&self, tx: &H2Sender) {
        self.current.store(Some(Arc::new(Shared {
            tx: tx.clone(),
            opened: Instant::now(),
            used_ms: AtomicU64::new(0),
        })));
    }
}

/// Puts a request on the h2 wire toward an endpoint (RFC 9113 8.3.1): the
/// endpoint's scheme, the client's Host as `:authority` (the endpoint's
/// `base` when the request has none, or one that is no authority), no
/// `host` field, HTTP/2.
pub(crate) fn to_h2(
    req: &mut Request<ProxyBody>,
    tls: bool,
    base: Authority,
) -> Result<(), http::Error> {
    let authority = req
        .headers_mut()
        .remove(header::HOST)
        .and_then(|h| Authority::try_from(h.as_bytes()).ok())
        .unwrap_or(base);
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(if tls { Scheme::HTTPS } else { Scheme::HTTP });
    parts.authority = Some(authority);
    parts.path_and_query = req.uri().path_and_query().cloned();
    *req.uri_mut() = Uri::from_parts(parts)?;
    *req.version_mut() = Version::HTTP_2;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::full;

    fn request(host: Option<&str>) -> Request<ProxyBody> {
        let mut b = Request::post("/pkg.Svc/Call?x=1");
        if let Some(h) = host {
            b = b.header("host", h);
        }
        b.header("te", "trailers")
            .body(full(bytes::Bytes::new()))
            .unwrap()
    }

    #[test]
    fn the_host_becomes_the_authority_and_goes() {
        let base: Authority = "10.0.0.1:50051".parse().unwrap();
        let mut req = request(Some("grpc.example.com:8443"));
        to_h2(&mut req, false, base.clone()).unwrap();
        assert_eq!(req.uri(), "http://grpc.example.com:8443/pkg.Svc/Call?x=1");
        assert!(req.headers().get("host").is_none());
        assert_eq!(req.headers()["te"], "trailers");
        assert_eq!(req.version(), Version::HTTP_2);

        let mut req = request(None);
        to_h2(&mut req, true, base.clone()).unwrap();
        assert_eq!(req.uri(), "https://10.0.0.1:50051/pkg.Svc/Call?x=1");

        let mut req = request(Some("not an authority"));
        to_h2(&mut req, false, base).unwrap();
        assert_eq!(req.uri().authority().unwrap().as_str(), "10.0.0.1:50051");
        assert!(req.headers().get("host").is_none());
    }
}
