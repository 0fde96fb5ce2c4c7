//! Rule files → [`Snapshot`]: every semantic check, with positions.
//!
//! Compiling collects every problem instead of stopping at the first one,
//! and never touches the request path: reload calls it off to the side and
//! swaps the result in whole.
//!
//! Merging (SPEC 1): lists (`listen`, `routes`) concatenate in file order;
//! maps (`upstreams`, `experiments`) merge, a key defined twice is an error
//! naming both places; `admin`, `fallback`, `limits`, `trusted_proxies` and
//! `state_file` may appear in one file only.

use super::{
    Action, AdminSettings, Fallback, FallbackAction, ForwardOptions, HeaderOps, Limits, Listener,
    ListenerTls, Mirror, Redirect, Respond, Route, Settings, Snapshot, UpstreamId,
};
use crate::config::raw::{self, Spanned};
use crate::config::{Diagnostic, Diagnostics, Loaded, Source, parse_duration};
use crate::rules::{self, Expr};
use crate::split;
use crate::upstream::{
    Balance, Endpoint, HealthCheck, Outlier, Protocol, Upstream, UpstreamDef, UpstreamTls,
};
use http::{HeaderName, HeaderValue, StatusCode};
use ipnet::IpNet;
use serde_saphyr::Location;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// The default admin address.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9901";

/// A compiled config with what `check` reports about it.
#[derive(Debug)]
pub struct Compiled {
    pub snapshot: Snapshot,
    /// Warnings, in file order.
    pub warnings: Vec<Diagnostic>,
    pub summary: Summary,
}

/// Counts for `check`'s `ok:` line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub routes: usize,
    pub upstreams: usize,
    pub experiments: usize,
    pub canaries: usize,
}

/// What compile may reuse from the running config.
#[derive(Debug, Default, Clone, Copy)]
pub struct CompileEnv<'a> {
    /// The active snapshot: upstreams with an unchanged definition keep their
    /// runtime state (pools, balancer, health).
    pub previous: Option<&'a Snapshot>,
    /// Canary runtime state lives here, outside snapshots, keyed by route
    /// and definition hash, so an unchanged canary keeps state across
    /// reloads. `None` (for `check`, `explain`): canaries start afresh.
    pub canaries: Option<&'a split::CanaryRegistry>,
    /// Where request series are resolved; `None`: nothing is recorded.
    pub metrics: Option<&'a crate::metrics::Metrics>,
}

/// Compiles loaded rule files. On error, returns every error found (and the
/// warnings after them).
pub fn compile(loaded: &Loaded, env: CompileEnv<'_>) -> Result<Compiled, Vec<Diagnostic>> {
    let mut b = Builder::new(loaded, env);
    b.singletons();
    b.upstreams();
    b.experiments();
    let routes = b.routes();
    let fallback = b.fallback();
    let settings = b.settings();
    b.warn_unused_upstreams();
    if b.diags.has_errors() {
        // Warnings after errors mislead (an upstream looks unused because
        // the route naming it failed), so only errors are returned.
        let errors = b.diags.into_sorted();
        return Err(errors
            .into_iter()
            .filter(|d| d.severity == crate::config::Severity::Error)
            .collect());
    }
    let summary = Summary {
        routes: routes.len(),
        upstreams: b.upstreams.len(),
        experiments: b.experiment_count,
        canaries: routes
            .iter()
            .filter(|r| matches!(r.action, Action::Canary(_)))
            .count(),
    };
    let needs_body = routes.iter().any(|r| r.matcher.needs_body())
        || b.all_experiments
            .iter()
            .any(|e| e.targeting.as_ref().is_some_and(Expr::needs_body));
    let index = super::index::RouteIndex::build(&routes);
    let mut snapshot = Snapshot {
        routes,
        index,
        upstreams: b.upstreams,
        fallback,
        settings,
        experiments: b.all_experiments,
        needs_body,
        metrics: Default::default(),
    };
    if let Some(m) = b.env.metrics {
        crate::telemetry::attach(m, &mut snapshot);
    }
    let namespace_warnings = super::shadow::overlapping_namespaces(&b.namespaces);
    let mut warnings = b.diags.into_sorted();
    warnings.extend(super::shadow::shadowed_routes(&snapshot, &b.route_places));
    warnings.extend(namespace_warnings);
    warnings.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    Ok(Compiled {
        snapshot,
        warnings,
        summary,
    })
}

/// A place in a file: which file, where.
#[derive(Debug, Clone)]
pub(crate) struct Place {
    pub file: Arc<str>,
    pub at: Location,
}

impl std::fmt::Display for Place {
    /// `FILE:LINE:COL`, as in diagnostics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.at.line(), self.at.column())
    }
}

struct Builder<'a> {
    loaded: &'a Loaded,
    env: CompileEnv<'a>,
    diags: Diagnostics,
    upstreams: Vec<Arc<Upstream>>,
    upstream_ids: HashMap<String, (UpstreamId, Place)>,
    upstream_used: Vec<bool>,
    broken_upstreams: std::collections::HashSet<String>,
    experiments: HashMap<String, (Arc<split::Experiment>, Place)>,
    experiment_count: usize,
    all_experiments: Vec<Arc<split::Experiment>>,
    route_places: Vec<Place>,
    /// Namespace slices of compiled experiments, for the overlap warning.
    namespaces: Vec<super::shadow::NamespaceUse>,
    /// Experiments defined with errors: a route naming one is not an
    /// `undefined experiment` too.
    broken_experiments: std::collections::HashSet<String>,
    /// Shared by every route without forward options (most of them).
    no_forward_options: Arc<ForwardOptions>,
}

impl<'a> Builder<'a> {
    fn new(loaded: &'a Loaded, env: CompileEnv<'a>) -> Self {
        Builder {
            loaded,
            env,
            diags: Diagnostics::default(),
            upstreams: Vec::new(),
            upstream_ids: HashMap::new(),
            upstream_used: Vec::new(),
            broken_upstreams: Default::default(),
            experiments: HashMap::new(),
            experiment_count: 0,
            all_experiments: Vec::new(),
            route_places: Vec::new(),
            namespaces: Vec::new(),
            broken_experiments: Default::default(),
            no_forward_options: Arc::default(),
        }
    }

    fn files(&self) -> impl Iterator<Item = &'a Source> + use<'a> {
        self.loaded.sources.iter()
    }

    /// `admin`, `fallback`, `limits`, `trusted_proxies`, `state_file`: one file only.
    fn singletons(&mut self) {
        let mut seen: HashMap<&'static str, Arc<str>> = HashMap::new();
        for src in self.files() {
            let d = &src.doc;
            let present: [(&'static str, Option<Location>); 5] = [
                ("admin", d.admin.as_ref().map(|s| s.referenced)),
                ("fallback", d.fallback.as_ref().map(|s| s.referenced)),
                ("limits", d.limits.as_ref().map(|s| s.referenced)),
                (
                    "trusted_proxies",
                    d.trusted_proxies.as_ref().map(|s| s.referenced),
                ),
                ("state_file", d.state_file.as_ref().map(|s| s.referenced)),
            ];
            for (key, at) in present {
                let Some(at) = at else { continue };
                if let Some(first) = seen.get(key) {
                    self.diags.error(
                        &src.name,
                        at,
                        format!(
                            "`{key}` is already defined in {first}; it may appear in one file only"
                        ),
                    );
                } else {
                    seen.insert(key, src.name.clone());
                }
            }
        }
    }

    fn upstreams(&mut self) {
        for src in self.files() {
            for (key, up) in &src.doc.upstreams.0 {
                let place = Place {
                    file: src.name.clone(),
                    at: key.referenced,
                };
                if let Some((_, first)) = self.upstream_ids.get(&key.value) {
                    let msg = format!("upstream `{}` is already defined at {first}", key.value);
                    self.diags.error(&src.name, key.referenced, msg);
                    continue;
                }
                let Some(def) = self.upstream_def(src, &key.value, up) else {
                    // Known but broken: references to it are not errors too.
                    self.broken_upstreams.insert(key.value.clone());
                    continue;
                };
                let runtime = self
                    .reuse_upstream(&def)
                    .unwrap_or_else(|| Arc::new(Upstream::new(def)));
                let id = self.upstreams.len();
                self.upstreams.push(runtime);
                self.upstream_used.push(false);
                self.upstream_ids.insert(key.value.clone(), (id, place));
            }
        }
    }

    fn reuse_upstream(&self, def: &UpstreamDef) -> Option<Arc<Upstream>> {
        let prev = self.env.previous?;
        prev.upstreams.iter().find(|u| u.def == *def).cloned()
    }

    fn upstream_def(
        &mut self,
        src: &Source,
        name: &str,
        up: &Spanned<raw::Upstream>,
    ) -> Option<UpstreamDef> {
        let u = &up.value;
        let f = &src.name;
        let errors_before = self.diags.items().len();
        if u.endpoints.is_empty() {
            self.diags.error(
                f,
                up.referenced,
                format!("upstream `{name}` has no endpoints"),
            );
        }
        let mut endpoints = Vec::with_capacity(u.endpoints.len());
        for e in &u.endpoints {
            match parse_endpoint(&e.value) {
                Ok(ep) => endpoints.push(ep),
                Err(msg) => self.diags.error(f, e.referenced, msg),
            }
        }
        let balance = match u.balance.as_ref().map(|b| (b.value.as_str(), b.referenced)) {
            None | Some(("round_robin", _)) => Balance::RoundRobin,
            Some(("least_request", _)) => Balance::LeastRequest,
            Some(("random", _)) => Balance::Random,
            Some((other, at)) => {
                self.diags.error(
                    f,
                    at,
                    format!("unknown balance `{other}`: use round_robin, least_request or random"),
                );
                Balance::RoundRobin
            }
        };
        let protocol = match u
            .protocol
            .as_ref()
            .map(|p| (p.value.as_str(), p.referenced))
        {
            None | Some(("http1", _)) => Protocol::Http1,
            Some(("h2", _)) => Protocol::H2,
            Some((other, at)) => {
                self.diags.error(
                    f,
                    at,
                    format!("unknown protocol `{other}`: use http1 or h2"),
                );
                Protocol::Http1
            }
        };
        let connect_timeout = self.duration(f, u.connect_timeout.as_ref(), Duration::from_secs(2));
        let request_timeout = self.duration(f, u.request_timeout.as_ref(), Duration::from_secs(30));
        let tls = u.tls.as_ref().map(|t| self.upstream_tls(src, &t.value));
        let health_check = u.health_check.as_ref().map(|h| {
            let h = &h.value;
            if !h.path.value.starts_with('/') {
                self.diags.error(
                    f,
                    h.path.referenced,
                    "health_check path must start with `/`",
                );
            }
            HealthCheck {
                path: h.path.value.clone(),
                interval: self.duration(f, h.interval.as_ref(), Duration::from_secs(5)),
                timeout: self.duration(f, h.timeout.as_ref(), Duration::from_secs(1)),
                unhealthy_after: h.unhealthy_after.as_ref().map_or(3, |v| v.value.max(1)),
                healthy_after: h.healthy_after.as_ref().map_or(2, |v| v.value.max(1)),
            }
        });
        let outlier = u.outlier.as_ref().map(|o| Outlier {
            consecutive_failures: o.value.consecutive_failures.value.max(1),
            eject_for: self.duration(f, Some(&o.value.eject_for), Duration::from_secs(30)),
        });
        if self.diags.items().len() > errors_before {
            return None;
        }
        Some(UpstreamDef {
            name: Arc::from(name),
            endpoints,
            balance,
            connect_timeout,
            request_timeout,
            retries: u.retries.as_ref().map_or(1, |r| r.value),
            protocol,
            tls,
            health_check,
            outlier,
        })
    }

    fn duration(
        &mut self,
        f: &Arc<str>,
        d: Option<&Spanned<String>>,
        default: Duration,
    ) -> Duration {
        match d {
            None => default,
            Some(s) => match parse_duration(&s.value) {
                Ok(v) => v,
                Err(msg) => {
                    self.diags.error(f, s.referenced, msg);
                    default
                }
            },
        }
    }

    /// Resolves an upstream name, reporting an undefined one at its place.
    fn upstream_ref(&mut self, f: &Arc<str>, name: &Spanned<String>) -> Option<UpstreamId> {
        match self.upstream_ids.get(&name.value) {
            Some((id, _)) => {
                let id = *id;
                if let Some(u) = self.upstream_used.get_mut(id) {
                    *u = true;
                }
                Some(id)
            }
            None if self.broken_upstreams.contains(&name.value) => None,
            None => {
                let known: Vec<&str> = self.upstream_ids.keys().map(String::as_str).collect();
                let hint = if known.is_empty() {
                    "no upstreams are defined".to_string()
                } else {
                    let mut k = known;
                    k.sort_unstable();
                    format!("defined: {}", k.join(", "))
                };
                self.diags.error(
                    f,
                    name.referenced,
                    format!("undefined upstream `{}` ({hint})", name.value),
                );
                None
            }
        }
    }

    fn experiments(&mut self) {
        for src in self.files() {
            for (key, exp) in &src.doc.experiments.0 {
                if let Some((_, first)) = self.experiments.get(&key.value) {
                    let msg = format!("experiment `{}` is already defined at {first}", key.value);
                    self.diags.error(&src.name, key.referenced, msg);
                    continue;
                }
                self.experiment_count += 1;
                if let Some(e) =
                    self.compile_experiment(src, &key.value, &exp.value, exp.referenced)
                {
                    let place = Place {
                        file: src.name.clone(),
                        at: key.referenced,
                    };
                    let e = Arc::new(e);
                    self.all_experiments.push(e.clone());
                    self.experiments.insert(key.value.clone(), (e, place));
                } else {
                    self.broken_experiments.insert(key.value.clone());
                }
            }
        }
    }

    fn compile_experiment(
        &mut self,
        src: &Source,
        name: &str,
        raw: &raw::Experiment,
        at: Location,
    ) -> Option<split::Experiment> {
        let f = &src.name;
        let targeting = raw
            .matcher
            .as_ref()
            .map(|m| rules::compile(m, f, &mut self.diags));
        // Variants' `to` are resolved here so unknown names are reported once.
        let mut resolved: HashMap<String, Option<UpstreamId>> = HashMap::new();
        for v in &raw.variants.value {
            if let Some(to) = &v.value.to {
                let id = self.upstream_ref(f, to);
                resolved.insert(to.value.clone(), id);
            }
        }
        let resolve = |s: &Spanned<String>| resolved.get(&s.value).copied().flatten();
        let mut e =
            split::compile_experiment(name, raw, f, at, &mut self.diags, &resolve, targeting)?;
        // SPEC 7: exposure counts survive a reload that keeps the definition.
        if let Some(prev) = self.env.previous
            && let Some(old) = prev.experiments.iter().find(|o| *o.name == *name)
        {
            e.carry_over_from(old);
        }
        if let (Some(ns), Some((ns_name, start, end))) = (&raw.namespace, &e.namespace) {
            self.namespaces.push(super::shadow::NamespaceUse {
                experiment: name.to_string(),
                namespace: ns_name.to_string(),
                start: *start,
                end: *end,
                place: Place {
                    file: f.clone(),
                    at: ns.referenced,
                },
            });
        }
        Some(e)
    }

    fn routes(&mut self) -> Vec<Route> {
        // Kept for the config's lifetime: grown by doubling, 10,000 routes
        // would sit in room for 16,384 (issue 6).
        let mut routes = Vec::with_capacity(self.files().map(|s| s.doc.routes.len()).sum());
        let mut names: HashMap<String, Place> = HashMap::new();
        for src in self.files() {
            for r in &src.doc.routes {
                let f = &src.name;
                let name = &r.value.name;
                if name.value.is_empty() {
                    self.diags
                        .error(f, name.referenced, "route name may not be empty");
                } else if name.value == "fallback" || name.value == "none" {
                    self.diags.error(
                        f,
                        name.referenced,
                        format!(
                            "route name `{}` is reserved (it labels metrics of unrouted requests)",
                            name.value
                        ),
                    );
                } else if let Some(first) = names.get(&name.value) {
                    let msg = format!(
                        "duplicate route name `{}` (first defined at {first})",
                        name.value
                    );
                    self.diags.error(f, name.referenced, msg);
                } else if let Some((_, exp)) = self.experiments.get(&name.value) {
                    let msg = format!(
                        "route name `{}` is also an experiment's name ({exp}); routes and experiments share one namespace",
                        name.value
                    );
                    self.diags.error(f, name.referenced, msg);
                } else {
                    names.insert(
                        name.value.clone(),
                        Place {
                            file: f.clone(),
                            at: name.referenced,
                        },
                    );
                }
                if let Some(route) = self.route(src, r) {
                    self.route_places.push(Place {
                        file: f.clone(),
                        at: r.referenced,
                    });
                    routes.push(route);
                }
            }
        }
        routes.shrink_to_fit();
        routes
    }

    fn route(&mut self, src: &Source, r: &Spanned<raw::Route>) -> Option<Route> {
        let f = &src.name;
        let rv = &r.value;
        let before = self.diags.items().len();
        let matcher = match &rv.matcher {
            Some(m) => rules::compile(m, f, &mut self.diags),
            None => Expr::always(),
        };
        let shapes = [
            ("to", rv.to.is_some() && rv.experiment.is_none()),
            ("to + experiment", rv.experiment.is_some()),
            ("canary", rv.canary.is_some()),
            ("respond", rv.respond.is_some()),
            ("redirect", rv.redirect.is_some()),
        ];
        let given: Vec<&str> = shapes.iter().filter(|s| s.1).map(|s| s.0).collect();
        if given.len() != 1 {
            let msg = if given.is_empty() {
                format!(
                    "route `{}` has no action: give exactly one of `to`, `to` + `experiment`, `canary`, `respond`, `redirect`",
                    rv.name.value
                )
            } else {
                format!(
                    "route `{}` has several actions ({}): give exactly one",
                    rv.name.value,
                    given.join(", ")
                )
            };
            self.diags.error(f, r.referenced, msg);
            return None;
        }
        let forwarding = rv.to.is_some() || rv.canary.is_some();
        // Forward options are checked even when the action failed, so the
        // user sees every problem of the route at once.
        let action = if let Some(exp) = &rv.experiment {
            self.experiment_action(src, rv, exp)
        } else if let Some(to) = &rv.to {
            self.upstream_ref(f, to).map(Action::Forward)
        } else if let Some(c) = &rv.canary {
            self.canary_action(src, &rv.name.value, c)
        } else if let Some(resp) = &rv.respond {
            self.respond(f, resp).map(|r| Action::Respond(Box::new(r)))
        } else if let Some(red) = &rv.redirect {
            self.redirect(f, red).map(|r| Action::Redirect(Box::new(r)))
        } else {
            None
        };
        let forward = self.forward_options(src, rv, forwarding);
        let action = action?;
        if self.diags.items()[before..]
            .iter()
            .any(|d| d.severity == crate::config::Severity::Error)
        {
            return None;
        }
        let forward = if forward.is_empty() {
            self.no_forward_options.clone()
        } else {
            Arc::new(forward)
        };
        Some(Route {
            name: Arc::from(rv.name.value.as_str()),
            matcher,
            action,
            forward,
            metrics: Default::default(),
        })
    }

    fn experiment_action(
        &mut self,
        src: &Source,
        rv: &raw::Route,
        exp: &Spanned<raw::ExperimentRef>,
    ) -> Option<Action> {
        let f = &src.name;
        let Some(to) = &rv.to else {
            self.diags.error(
                f,
                exp.referenced,
                format!("route `{}` has an `experiment` but no `to` (where requests not in the experiment go)", rv.name.value),
            );
            return None;
        };
        let default = self.upstream_ref(f, to)?;
        let experiment = match &exp.value {
            raw::ExperimentRef::Named(name) => match self.experiments.get(name) {
                Some((e, _)) => e.clone(),
                None if self.broken_experiments.contains(name) => return None,
                None => {
                    self.diags
                        .error(f, exp.referenced, format!("undefined experiment `{name}`"));
                    return None;
                }
            },
            raw::ExperimentRef::Inline(def) => {
                let name = &rv.name.value;
                if let Some((_, first)) = self.experiments.get(name) {
                    let msg = format!(
                        "inline experiment of route `{name}` clashes with experiment `{name}` at {first}"
                    );
                    self.diags.error(f, exp.referenced, msg);
                    return None;
                }
                self.experiment_count += 1;
                let e = Arc::new(self.compile_experiment(src, name, def, exp.referenced)?);
                self.all_experiments.push(e.clone());
                e
            }
        };
        Some(Action::Experiment {
            default,
            experiment,
        })
    }

    fn canary_action(
        &mut self,
        src: &Source,
        route: &str,
        c: &Spanned<raw::Canary>,
    ) -> Option<Action> {
        let f = &src.name;
        let stable = self.upstream_ref(f, &c.value.stable);
        let canary = self.upstream_ref(f, &c.value.canary);
        let mut resolved: HashMap<String, Option<UpstreamId>> = HashMap::new();
        resolved.insert(c.value.stable.value.clone(), stable);
        resolved.insert(c.value.canary.value.clone(), canary);
        let resolve = |s: &Spanned<String>| resolved.get(&s.value).copied().flatten();
        let def =
            split::compile_canary(route, &c.value, f, c.referenced, &mut self.diags, &resolve)?;
        let now = tokio::time::Instant::now();
        let canary = match self.env.canaries {
            Some(registry) => registry.attach(def, now),
            None => split::Canary::detached(def, now),
        };
        Some(Action::Canary(Arc::new(canary)))
    }

    fn respond(&mut self, f: &Arc<str>, r: &Spanned<raw::Respond>) -> Option<Respond> {
        let status = self.status(f, &r.value.status, 200..=599)?;
        let headers = self.header_pairs(f, &r.value.headers);
        Some(Respond {
            status,
            body: bytes::Bytes::from(r.value.body.clone().unwrap_or_default()),
            headers,
        })
    }

    fn redirect(&mut self, f: &Arc<str>, r: &Spanned<raw::Redirect>) -> Option<Redirect> {
        let status = match &r.value.status {
            Some(s) => self.status(f, s, 300..=399)?,
            None => StatusCode::FOUND,
        };
        match HeaderValue::from_str(&r.value.to.value) {
            Ok(location) => Some(Redirect { location, status }),
            Err(_) => {
                self.diags.error(
                    f,
                    r.value.to.referenced,
                    "redirect `to` is not a valid Location value",
                );
                None
            }
        }
    }

    fn status(
        &mut self,
        f: &Arc<str>,
        s: &Spanned<u16>,
        range: std::ops::RangeInclusive<u16>,
    ) -> Option<StatusCode> {
        if !range.contains(&s.value) {
            self.diags.error(
                f,
                s.referenced,
                format!(
                    "status {} is outside {}–{}",
                    s.value,
                    range.start(),
                    range.end()
                ),
            );
            return None;
        }
        StatusCode::from_u16(s.value).ok()
    }

    fn header_pairs(
        &mut self,
        f: &Arc<str>,
        map: &raw::SpannedMap<raw::Scalar>,
    ) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::with_capacity(map.0.len());
        for (k, v) in &map.0 {
            let name = HeaderName::from_bytes(k.value.as_bytes());
            let value = HeaderValue::from_str(&v.value.to_text());
            match (name, value) {
                (Ok(n), Ok(v)) => out.push((n, v)),
                (Err(_), _) => self.diags.error(
                    f,
                    k.referenced,
                    format!("invalid header name `{}`", k.value),
                ),
                (_, Err(_)) => self.diags.error(f, v.referenced, "invalid header value"),
            }
        }
        out
    }

    fn header_ops(&mut self, f: &Arc<str>, ops: &Spanned<raw::HeaderOps>) -> HeaderOps {
        let set = self.header_pairs(f, &ops.value.set);
        let add = self.header_pairs(f, &ops.value.add);
        let mut remove = Vec::new();
        for r in &ops.value.remove {
            match HeaderName::from_bytes(r.value.as_bytes()) {
                Ok(n) => remove.push(n),
                Err(_) => self.diags.error(
                    f,
                    r.referenced,
                    format!("invalid header name `{}`", r.value),
                ),
            }
        }
        HeaderOps { set, add, remove }
    }

    fn forward_options(
        &mut self,
        src: &Source,
        rv: &raw::Route,
        forwarding: bool,
    ) -> ForwardOptions {
        let f = &src.name;
        if !forwarding {
            let only_forwarding: [(&str, Option<Location>); 5] = [
                (
                    "strip_prefix",
                    rv.strip_prefix.as_ref().map(|s| s.referenced),
                ),
                (
                    "request_headers",
                    rv.request_headers.as_ref().map(|s| s.referenced),
                ),
                (
                    "response_headers",
                    rv.response_headers.as_ref().map(|s| s.referenced),
                ),
                ("timeout", rv.timeout.as_ref().map(|s| s.referenced)),
                ("mirror", rv.mirror.as_ref().map(|s| s.referenced)),
            ];
            for (key, at) in only_forwarding {
                if let Some(at) = at {
                    self.diags.error(
                        f,
                        at,
                        format!("`{key}` applies only to forwarding routes (`to`, `experiment`, `canary`)"),
                    );
                }
            }
            return ForwardOptions::default();
        }
        let strip_prefix = rv.strip_prefix.as_ref().and_then(|p| {
            if p.value.starts_with('/') {
                Some(p.value.trim_end_matches('/').to_string())
            } else {
                self.diags
                    .error(f, p.referenced, "strip_prefix must start with `/`");
                None
            }
        });
        let request_headers = rv
            .request_headers
            .as_ref()
            .map(|h| self.header_ops(f, h))
            .unwrap_or_default();
        let response_headers = rv
            .response_headers
            .as_ref()
            .map(|h| self.header_ops(f, h))
            .unwrap_or_default();
        let timeout = rv
            .timeout
            .as_ref()
            .map(|t| self.duration(f, Some(t), Duration::ZERO));
        let mirror = rv.mirror.as_ref().and_then(|m| {
            let upstream = self.upstream_ref(f, &m.value.to)?;
            let percent = m.value.percent.as_ref().map_or(100.0, |p| p.value);
            if !(0.0..=100.0).contains(&percent) {
                let at = m
                    .value
                    .percent
                    .as_ref()
                    .map_or(m.referenced, |p| p.referenced);
                self.diags
                    .error(f, at, "mirror percent must be between 0 and 100");
                return None;
            }
            Some(Mirror { upstream, percent })
        });
        ForwardOptions {
            strip_prefix,
            request_headers,
            response_headers,
            timeout,
            mirror,
        }
    }

    fn fallback(&mut self) -> Option<Fallback> {
        let src = self.files().find(|s| s.doc.fallback.is_some())?;
        let fb = src.doc.fallback.as_ref()?;
        let f = &src.name;
        let action = match (&fb.value.to, &fb.value.respond) {
            (Some(to), None) => FallbackAction::Forward(self.upstream_ref(f, to)?),
            (None, Some(r)) => FallbackAction::Respond(self.respond(f, r)?),
            _ => {
                self.diags.error(
                    f,
                    fb.referenced,
                    "fallback needs exactly one of `to` or `respond`",
                );
                return None;
            }
        };
        Some(Fallback {
            action,
            failover: fb.value.failover.as_ref().is_some_and(|b| b.value),
        })
    }

    fn settings(&mut self) -> Settings {
        let mut listeners = Vec::new();
        let mut admin = AdminSettings {
            addr: SocketAddr::from(([127, 0, 0, 1], 9901)),
            token_file: None,
        };
        let mut trusted_proxies = Vec::new();
        let mut state_file = None;
        let mut limits = Limits::default();
        for src in self.files() {
            let f = &src.name;
            for l in &src.doc.listen {
                let Some(addr) = self.socket_addr(f, &l.value.bind) else {
                    continue;
                };
                let tls = l.value.tls.as_ref().map(|t| ListenerTls {
                    certificates: t
                        .value
                        .certificates
                        .iter()
                        .map(|c| {
                            (
                                src.resolve(&c.value.cert.value),
                                src.resolve(&c.value.key.value),
                            )
                        })
                        .collect(),
                    keys: self.listener_certs(src, &t.value),
                    alpn: t
                        .value
                        .alpn
                        .as_ref()
                        .map(|a| a.iter().map(|s| s.value.clone()).collect())
                        .unwrap_or_else(|| vec!["h2".into(), "http/1.1".into()]),
                });
                if let Some(t) = &l.value.tls
                    && t.value.certificates.is_empty()
                {
                    self.diags
                        .error(f, t.referenced, "tls needs at least one certificate");
                }
                listeners.push(Listener {
                    bind: l.value.bind.value.clone(),
                    addr,
                    tls,
                });
            }
            if let Some(a) = &src.doc.admin {
                if let Some(bind) = &a.value.bind
                    && let Some(addr) = self.socket_addr(f, bind)
                {
                    admin.addr = addr;
                }
                admin.token_file = a.value.token_file.as_ref().map(|t| src.resolve(&t.value));
            }
            if let Some(tp) = &src.doc.trusted_proxies {
                for net in &tp.value.0 {
                    match parse_net(net) {
                        Some(n) => trusted_proxies.push(n),
                        None => self.diags.error(
                            f,
                            tp.referenced,
                            format!("invalid CIDR or address `{net}` in trusted_proxies"),
                        ),
                    }
                }
            }
            if let Some(s) = &src.doc.state_file {
                state_file = Some(src.resolve(&s.value));
            }
            if let Some(l) = &src.doc.limits {
                limits = self.limits(f, &l.value);
            }
        }
        Settings {
            listeners,
            admin,
            trusted_proxies,
            state_file,
            limits,
        }
    }

    /// Loads a listener's certificates: unreadable, mismatched or expired
    /// ones are errors at their `cert:` (or `key:`) entry, ones expiring
    /// within 14 days a warning.
    fn listener_certs(&mut self, src: &Source, t: &raw::ListenTls) -> crate::tls::CertSet {
        let f = &src.name;
        let now = std::time::SystemTime::now();
        let mut loaded = Vec::new();
        for c in &t.certificates {
            let (cert, key) = (&c.value.cert, &c.value.key);
            match crate::tls::load_pair(&src.resolve(&cert.value), &src.resolve(&key.value), now) {
                Ok(l) => {
                    let left = l.expires_in(now);
                    if left < crate::tls::EXPIRY_WARNING {
                        self.diags.warning(
                            f,
                            cert.referenced,
                            format!(
                                "certificate {} expires in {} days ({})",
                                l.cert_path.display(),
                                left.as_secs().div_ceil(86400),
                                humantime::format_rfc3339_seconds(l.not_after)
                            ),
                        );
                    }
                    loaded.push(l);
                }
                Err(e) => {
                    let at = if e.is_key() {
                        key.referenced
                    } else {
                        cert.referenced
                    };
                    self.diags.error(f, at, e.to_string());
                }
            }
        }
        if let Some(alpn) = &t.alpn {
            for p in alpn {
                if !matches!(p.value.as_str(), "h2" | "http/1.1") {
                    self.diags.error(
                        f,
                        p.referenced,
                        format!("unknown ALPN protocol `{}`: use h2 or http/1.1", p.value),
                    );
                }
            }
        }
        crate::tls::CertSet::new(loaded)
    }

    /// An upstream's `tls`: the CA bundle is read now; `server_name` must be
    /// a DNS name or an IP address.
    fn upstream_tls(&mut self, src: &Source, t: &raw::UpstreamTls) -> UpstreamTls {
        let f = &src.name;
        let ca = t.ca.as_ref().map(|c| (src.resolve(&c.value), c.referenced));
        let mut ca_certs = Vec::new();
        if let Some((path, at)) = &ca {
            match crate::tls::load_ca(path) {
                Ok(certs) => ca_certs = certs,
                Err(e) => self.diags.error(
                    f,
                    *at,
                    format!("cannot read CA file {}: {e}", path.display()),
                ),
            }
        }
        if let Some(s) = &t.server_name
            && rustls_pki_types::ServerName::try_from(s.value.as_str()).is_err()
        {
            self.diags.error(
                f,
                s.referenced,
                format!(
                    "invalid server_name `{}`: use a DNS name or an IP address",
                    s.value
                ),
            );
        }
        UpstreamTls {
            ca: ca.map(|(p, _)| p),
            server_name: t.server_name.as_ref().map(|s| s.value.clone()),
            ca_certs,
        }
    }

    fn socket_addr(&mut self, f: &Arc<str>, bind: &Spanned<String>) -> Option<SocketAddr> {
        match bind.value.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.diags.error(
                    f,
                    bind.referenced,
                    format!(
                        "invalid bind address `{}`: use IP:PORT, e.g. \"0.0.0.0:8080\"",
                        bind.value
                    ),
                );
                None
            }
        }
    }

    fn limits(&mut self, f: &Arc<str>, l: &raw::Limits) -> Limits {
        let d = Limits::default();
        let size = |v: &Option<Spanned<u64>>, default: usize| {
            v.as_ref()
                .map_or(default, |s| usize::try_from(s.value).unwrap_or(usize::MAX))
        };
        let max_header_bytes = size(&l.max_header_bytes, d.max_header_bytes);
        if let Some(m) = &l.max_header_bytes
            && m.value < 8192
        {
            self.diags
                .error(f, m.referenced, "max_header_bytes must be at least 8192");
        }
        let max_headers = size(&l.max_headers, d.max_headers);
        if let Some(m) = &l.max_headers
            && m.value == 0
        {
            self.diags
                .error(f, m.referenced, "max_headers must be at least 1");
        }
        Limits {
            max_header_bytes,
            max_headers,
            inspect_body_bytes: size(&l.inspect_body_bytes, d.inspect_body_bytes),
            header_read_timeout: self.duration(
                f,
                l.header_read_timeout.as_ref(),
                d.header_read_timeout,
            ),
            idle_timeout: self.duration(f, l.idle_timeout.as_ref(), d.idle_timeout),
            max_connections: size(&l.max_connections, d.max_connections),
            max_body_bytes: l
                .max_body_bytes
                .as_ref()
                .map_or(d.max_body_bytes, |v| v.value),
            drain_timeout: self.duration(f, l.drain_timeout.as_ref(), d.drain_timeout),
        }
    }

    /// Warns about upstreams no route, experiment, canary, mirror or fallback uses.
    fn warn_unused_upstreams(&mut self) {
        let mut unused: Vec<(String, Place)> = self
            .upstream_ids
            .iter()
            .filter(|(_, (id, _))| !self.upstream_used.get(*id).copied().unwrap_or(true))
            .map(|(name, (_, place))| (name.clone(), place.clone()))
            .collect();
        unused.sort_by(|a, b| {
            (a.1.file.as_ref(), a.1.at.line(), a.1.at.column()).cmp(&(
                b.1.file.as_ref(),
                b.1.at.line(),
                b.1.at.column(),
            ))
        });
        for (name, place) in unused {
            self.diags.warning(
                &place.file,
                place.at,
                format!("upstream `{name}` is not used by any route"),
            );
        }
    }
}

/// Parses `host:port`, `http://host:port` or `https://host:port`.
fn parse_endpoint(text: &str) -> Result<Endpoint, String> {
    let (tls, rest) = if let Some(r) = text.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = text.strip_prefix("http://") {
        (false, r)
    } else {
        (false, text)
    };
    let rest = rest.trim_end_matches('/');
    let bad = || {
        format!("invalid endpoint `{text}`: use host:port, http://host:port or https://host:port")
    };
    let authority: http::uri::Authority = rest.parse().map_err(|_| bad())?;
    if authority.port_u16().is_none() || authority.host().is_empty() || rest.contains('/') {
        return Err(bad());
    }
    Ok(Endpoint {
        tls,
        authority: rest.to_string(),
    })
}

/// Parses a CIDR, or a bare address as a single-host network.
pub(crate) fn parse_net(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}
