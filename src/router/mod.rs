//! The compiled routing snapshot: everything a request needs to be routed,
//! built once from the rule files and swapped whole on reload.
//!
//! `compile` builds it; `index` narrows the candidate routes by host and path;
//! the first route in file order whose `match` holds wins.

pub mod compile;
pub mod index;
mod select;
mod shadow;
pub use select::Trial;

use crate::rules::Expr;
use crate::upstream::Upstream;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use ipnet::IpNet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Position of an upstream in [`Snapshot::upstreams`].
pub type UpstreamId = usize;

/// An immutable, compiled config. Requests load it once (an `ArcSwap` load)
/// and keep it until they finish.
#[derive(Debug)]
pub struct Snapshot {
    /// Routes in file order.
    pub routes: Vec<Route>,
    /// Narrows the routes a request has to try.
    pub index: index::RouteIndex,
    /// Upstreams, referenced by [`UpstreamId`].
    pub upstreams: Vec<Arc<Upstream>>,
    /// What serves unmatched requests (and 502/503s with `failover`).
    pub fallback: Option<Fallback>,
    /// Listener, admin and limit settings.
    pub settings: Settings,
    /// Every experiment, named and inline, in definition order.
    pub experiments: Vec<Arc<crate::split::Experiment>>,
    /// Whether any route (or experiment targeting) inspects the body.
    pub needs_body: bool,
    /// Metric handles of the fallback, `route="none"` and the upstreams.
    pub metrics: crate::telemetry::SnapshotMetrics,
}

/// One compiled route.
#[derive(Debug)]
pub struct Route {
    /// Unique route name (metrics label, admin API, forcing key).
    pub name: Arc<str>,
    /// The whole `match`, host and path included.
    pub matcher: Expr,
    /// What to do with a request this route matched.
    pub action: Action,
    /// Options of forwarding actions; routes without any share one
    /// allocation (the struct is ~200 bytes, most routes have none).
    pub forward: Arc<ForwardOptions>,
    /// Metric handles, resolved at compile time (`Default`: none).
    pub metrics: crate::telemetry::RouteMetrics,
}

/// What a matched route does.
#[derive(Debug)]
pub enum Action {
    /// Forward to one upstream.
    Forward(UpstreamId),
    /// Split by an experiment; not-enrolled requests go to `default`.
    Experiment {
        default: UpstreamId,
        experiment: Arc<crate::split::Experiment>,
    },
    /// Split between stable and canary.
    Canary(Arc<crate::split::Canary>),
    /// Answer directly (boxed, as the redirect: every route holds an
    /// `Action`, few of them these, and inline they would triple its size).
    Respond(Box<Respond>),
    /// Answer with a redirect.
    Redirect(Box<Redirect>),
}

/// Per-route forwarding options.
#[derive(Debug, Default)]
pub struct ForwardOptions {
    pub strip_prefix: Option<String>,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    /// Overrides the upstream's `request_timeout`.
    pub timeout: Option<Duration>,
    pub mirror: Option<Mirror>,
}

impl ForwardOptions {
    /// Whether no option is set (what `Default` gives).
    pub fn is_empty(&self) -> bool {
        self.strip_prefix.is_none()
            && self.request_headers.is_empty()
            && self.response_headers.is_empty()
            && self.timeout.is_none()
            && self.mirror.is_none()
    }
}

/// Header edits applied in order: remove, set, add.
#[derive(Debug, Default, Clone)]
pub struct HeaderOps {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderOps {
    /// Whether there is no edit.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// A fixed answer.
#[derive(Debug, Clone)]
pub struct Respond {
    pub status: StatusCode,
    pub body: Bytes,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// A redirect answer; `location` is the configured `to` exactly as written.
#[derive(Debug, Clone)]
pub struct Redirect {
    pub location: HeaderValue,
    pub status: StatusCode,
}

/// Shadow traffic: `percent` of the route's requests, chosen by request id.
#[derive(Debug, Clone)]
pub struct Mirror {
    pub upstream: UpstreamId,
    pub percent: f64,
}

/// The `fallback` section.
#[derive(Debug)]
pub struct Fallback {
    pub action: FallbackAction,
    /// Also serve requests that would get 502/503.
    pub failover: bool,
}

/// What the fallback does.
#[derive(Debug)]
pub enum FallbackAction {
    Forward(UpstreamId),
    Respond(Respond),
}

/// Settings outside the routes.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub listeners: Vec<Listener>,
    pub admin: AdminSettings,
    pub trusted_proxies: Vec<IpNet>,
    pub state_file: Option<PathBuf>,
    pub limits: Limits,
}

/// A public listener.
#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    /// The `bind` text as written (the metrics label).
    pub bind: String,
    pub addr: SocketAddr,
    pub tls: Option<ListenerTls>,
}

/// TLS settings of a listener; certificate paths already resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerTls {
    pub certificates: Vec<(PathBuf, PathBuf)>,
    pub alpn: Vec<String>,
    /// The certificates loaded from `certificates`, checked at compile time.
    pub keys: crate::tls::CertSet,
}

/// The admin listener.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminSettings {
    pub addr: SocketAddr,
    pub token_file: Option<PathBuf>,
}

impl Default for AdminSettings {
    /// 127.0.0.1:9901, no token.
    fn default() -> Self {
        AdminSettings {
            addr: SocketAddr::from(([127, 0, 0, 1], 9901)),
            token_file: None,
        }
    }
}

/// Request and connection limits (SPEC 2, `limits`).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub inspect_body_bytes: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// 0 = unlimited.
    pub max_body_bytes: u64,
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 65536,
            max_headers: 100,
            inspect_body_bytes: 65536,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10000,
            max_body_bytes: 0,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

impl Snapshot {
    /// A snapshot of `routes` alone (no upstreams, no fallback, default
    /// settings), indexed over exactly these routes.
    pub fn from_routes(routes: Vec<Route>) -> Snapshot {
        Snapshot {
            index: index::RouteIndex::build(&routes),
            needs_body: routes.iter().any(|r| r.matcher.needs_body()),
            routes,
            upstreams: Vec::new(),
            fallback: None,
            settings: Settings::default(),
            experiments: Vec::new(),
            metrics: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every route keeps one of each: with 10,000 routes each 8 bytes is
    /// 80 kB of idle memory (issue 6).
    #[test]
    fn per_route_types_stay_small() {
        use std::mem::size_of;
        assert_eq!(size_of::<crate::matchers::Leaf>(), 32);
        assert_eq!(size_of::<crate::rules::Expr>(), 32);
        assert_eq!(size_of::<super::Action>(), 24);
        assert!(
            size_of::<super::Route>() <= 128,
            "{}",
            size_of::<super::Route>()
        );
    }
}
