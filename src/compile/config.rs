//! The compiled config: everything a request needs to be routed, as pure
//! values (no sockets, pools, timers or metrics). The runtime links it to
//! live state ([`crate::runtime::link`]) and swaps it in whole on reload.

use super::settings::Settings;
use crate::routing::{Expr, HasMatch, RouteTable};
use crate::split::{CanaryDef, Experiment};
use crate::upstream::def::{UpstreamDef, UpstreamId};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use std::sync::Arc;
use std::time::Duration;

/// A compiled, immutable config.
#[derive(Debug)]
pub struct Config {
    /// Routes in file order, indexed by host and path.
    pub routes: RouteTable<Route>,
    /// Upstream definitions, referenced by [`UpstreamId`].
    pub upstreams: Vec<UpstreamDef>,
    /// Every experiment, named and inline, in definition order (an
    /// experiment's `index` is its position here).
    pub experiments: Vec<Arc<Experiment>>,
    /// Every canary, in route order (a canary's `index` is its position).
    pub canaries: Vec<Arc<CanaryDef>>,
    /// What serves unmatched requests (and 502/503s with `failover`).
    pub fallback: Option<Fallback>,
    /// Listener, admin and limit settings.
    pub settings: Settings,
    /// Whether any route (or experiment targeting) inspects the body.
    pub needs_body: bool,
}

impl Config {
    /// A config of `routes` alone over `upstreams` (no fallback, default
    /// settings): for tests and benchmarks that build routes by hand.
    pub fn from_routes(routes: Vec<Route>, upstreams: Vec<UpstreamDef>) -> Config {
        let mut experiments = Vec::new();
        let mut canaries = Vec::new();
        for r in &routes {
            match &r.action {
                Action::Experiment { experiment, .. } => experiments.push(experiment.clone()),
                Action::Canary(c) => canaries.push(c.clone()),
                _ => {}
            }
        }
        Config {
            needs_body: routes.iter().any(|r| r.matcher.needs_body()),
            routes: RouteTable::new(routes),
            upstreams,
            experiments,
            canaries,
            fallback: None,
            settings: Settings::default(),
        }
    }

    /// The name of upstream `id` ("" if there is none).
    pub fn upstream_name(&self, id: UpstreamId) -> &str {
        self.upstreams.get(id).map_or("", |u| &u.name)
    }

    /// The experiment named `name`.
    pub fn experiment(&self, name: &str) -> Option<&Arc<Experiment>> {
        self.experiments.iter().find(|e| &*e.name == name)
    }

    /// The canary of route `name`.
    pub fn canary(&self, name: &str) -> Option<&Arc<CanaryDef>> {
        self.canaries.iter().find(|c| &*c.route == name)
    }
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
}

impl Route {
    /// A route with no forward options.
    pub fn new(name: &str, matcher: Expr, action: Action) -> Route {
        Route {
            name: name.into(),
            matcher,
            action,
            forward: Arc::default(),
        }
    }
}

impl HasMatch for Route {
    fn matcher(&self) -> &Expr {
        &self.matcher
    }
}

/// What a matched route does.
#[derive(Debug)]
pub enum Action {
    /// Forward to one upstream.
    Forward(UpstreamId),
    /// Split by an experiment; not-enrolled requests go to `default`.
    Experiment {
        /// The route's `to`.
        default: UpstreamId,
        /// The experiment deciding.
        experiment: Arc<Experiment>,
    },
    /// Split between stable and canary.
    Canary(Arc<CanaryDef>),
    /// Answer directly (boxed, as the redirect: every route holds an
    /// `Action`, few of them these, and inline they would triple its size).
    Respond(Box<Respond>),
    /// Answer with a redirect.
    Redirect(Box<Redirect>),
}

impl Action {
    /// The action's kind as `explain` and `/routes` name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Forward(_) => "to",
            Action::Experiment { .. } => "experiment",
            Action::Canary(_) => "canary",
            Action::Respond(_) => "respond",
            Action::Redirect(_) => "redirect",
        }
    }
}

/// Per-route forwarding options.
#[derive(Debug, Default)]
pub struct ForwardOptions {
    /// A path prefix removed before forwarding.
    pub strip_prefix: Option<String>,
    /// Edits of the upstream request's headers.
    pub request_headers: HeaderOps,
    /// Edits of the response's headers.
    pub response_headers: HeaderOps,
    /// Overrides the upstream's `request_timeout`.
    pub timeout: Option<Duration>,
    /// Shadow traffic.
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
    /// Replace (or add) these.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Append these.
    pub add: Vec<(HeaderName, HeaderValue)>,
    /// Remove these.
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
    /// The status.
    pub status: StatusCode,
    /// The body.
    pub body: Bytes,
    /// Extra response headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// A redirect answer (SPEC 2.2); `location` is the configured `to` exactly
/// as written.
#[derive(Debug, Clone)]
pub struct Redirect {
    /// The `to` as written: the `Location` itself when it has no
    /// placeholder.
    pub location: HeaderValue,
    /// A 3xx status.
    pub status: StatusCode,
    /// `to` cut at its placeholders, when it has any: filled in per
    /// request by concatenation, with no regex.
    pub template: Option<Box<[RedirectPart]>>,
    /// Removed from the path before it fills `{path}`.
    pub strip_prefix: Option<Box<str>>,
}

/// A piece of a redirect's `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedirectPart {
    /// Text as written.
    Text(Box<str>),
    /// `{host}`: the Host without its port.
    Host,
    /// `{path}`: the normalized path, after `strip_prefix`.
    Path,
    /// `{query}`: `?` and the raw query, or nothing.
    Query,
}

impl RedirectPart {
    /// Cuts `to` at its placeholders; `Err` names an unknown `{...}` or an
    /// unclosed `{`. A `to` without `{` is one text part.
    pub fn parse(to: &str) -> Result<Vec<RedirectPart>, String> {
        let mut parts = Vec::new();
        let mut rest = to;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(RedirectPart::Text(rest[..open].into()));
            }
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                return Err(format!("unclosed `{{` in `{to}`"));
            };
            parts.push(match &after[..close] {
                "host" => RedirectPart::Host,
                "path" => RedirectPart::Path,
                "query" => RedirectPart::Query,
                other => {
                    return Err(format!(
                        "unknown placeholder `{{{other}}}` (known: {{host}}, {{path}}, {{query}})"
                    ));
                }
            });
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(RedirectPart::Text(rest.into()));
        }
        Ok(parts)
    }
}

/// Shadow traffic: `percent` of the route's requests, chosen by request id.
#[derive(Debug, Clone)]
pub struct Mirror {
    /// Where copies go.
    pub upstream: UpstreamId,
    /// Share of the route's requests, 0–100.
    pub percent: f64,
}

/// The `fallback` section.
#[derive(Debug)]
pub struct Fallback {
    /// Forward or answer.
    pub action: FallbackAction,
    /// Also serve requests that would get 502/503.
    pub failover: bool,
}

/// What the fallback does.
#[derive(Debug)]
pub enum FallbackAction {
    /// Forward to an upstream.
    Forward(UpstreamId),
    /// Answer directly.
    Respond(Respond),
}

#[cfg(test)]
mod tests {
    /// Every route keeps one of each: with 10,000 routes each 8 bytes is
    /// 80 kB of idle memory (issue 6).
    #[test]
    fn per_route_types_stay_small() {
        use std::mem::size_of;
        assert_eq!(size_of::<crate::routing::matchers::Leaf>(), 32);
        assert_eq!(size_of::<crate::routing::Expr>(), 32);
        assert_eq!(size_of::<super::Action>(), 24);
        assert!(
            size_of::<super::Route>() <= 128,
            "{}",
            size_of::<super::Route>()
        );
    }
}
