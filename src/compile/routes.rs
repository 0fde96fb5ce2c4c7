//! Routes and the fallback: matchers, actions (`to`, experiments,
//! canaries, `respond`, `redirect`) and forwarding options.

use super::canary::compile_canary;
use super::config::{
    Action, Fallback, FallbackAction, ForwardOptions, HeaderOps, Mirror, Redirect, RedirectPart,
    Respond, Route,
};
use super::matchers::compile as compile_match;
use super::{Builder, Place};
use crate::config::raw::{self, Spanned};
use crate::config::{Location, Severity, Source};
use crate::routing::Expr;
use crate::upstream::def::UpstreamId;
use foldhash::{HashMap, HashMapExt};
use http::{HeaderName, HeaderValue, StatusCode};
use std::sync::Arc;
use std::time::Duration;

/// Raw routes compiled (and dropped) between two returns of their memory
/// to the OS: at 10,000 routes a start-up's peak of 27 MB resident becomes
/// 22 MB, and a reload takes no longer for the ten calls.
const ROUTES_PER_RELEASE: usize = 1000;

impl Builder<'_> {
    /// Compiles the routes, `raw` holding each file's in load order; each
    /// raw route is dropped once compiled.
    pub(super) fn routes(&mut self, raw: Vec<Vec<Spanned<raw::Route>>>) -> Vec<Route> {
        // Kept for the config's lifetime: grown by doubling, 10,000 routes
        // would sit in room for 16,384 (issue 6).
        let mut routes = Vec::with_capacity(raw.iter().map(Vec::len).sum());
        let mut names: HashMap<String, Place> = HashMap::new();
        // The allocator keeps freed pages for a second before it returns
        // them, and compiled routes are not of the raw ones' sizes, so they
        // do not reuse them: without a release now and then, the whole
        // parse tree would stay resident until the compile ends.
        let mut compiled = 0usize;
        for (src, file_routes) in self.files().zip(raw) {
            for r in file_routes {
                crate::yielding::yield_point();
                compiled += 1;
                if compiled.is_multiple_of(ROUTES_PER_RELEASE) {
                    crate::allocator::release_free_memory();
                }
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
                if let Some(route) = self.route(src, &r) {
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
            Some(m) => compile_match(m, f, &mut self.diags),
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
            let strip = rv.strip_prefix.as_deref();
            self.redirect(f, red, strip)
                .map(|r| Action::Redirect(Box::new(r)))
        } else {
            None
        };
        let forward = self.forward_options(src, rv, forwarding);
        let action = action?;
        if self.diags.items()[before..]
            .iter()
            .any(|d| d.severity == Severity::Error)
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
                self.compile_experiment(src, name, def, exp.referenced)?
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
        let mut def = compile_canary(route, &c.value, f, c.referenced, &mut self.diags, &resolve)?;
        def.index = self.canaries.len();
        let def = Arc::new(def);
        self.canaries.push(def.clone());
        Some(Action::Canary(def))
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

    /// A redirect: `to` cut at its placeholders once, here (SPEC 2.2), and
    /// the route's `strip_prefix`, which acts on `{path}` only.
    fn redirect(
        &mut self,
        f: &Arc<str>,
        r: &Spanned<raw::Redirect>,
        strip_prefix: Option<&Spanned<String>>,
    ) -> Option<Redirect> {
        let status = match &r.value.status {
            Some(s) => self.status(f, s, 300..=399)?,
            None => StatusCode::FOUND,
        };
        let to = &r.value.to;
        let Ok(location) = HeaderValue::from_str(&to.value) else {
            self.diags.error(
                f,
                to.referenced,
                "redirect `to` is not a valid Location value",
            );
            return None;
        };
        let parts = match RedirectPart::parse(&to.value) {
            Ok(p) => p,
            Err(e) => {
                self.diags
                    .error(f, to.referenced, format!("redirect `to`: {e}"));
                return None;
            }
        };
        let strip_prefix = match strip_prefix {
            None => None,
            Some(p) if !p.value.starts_with('/') => {
                self.diags
                    .error(f, p.referenced, "strip_prefix must start with `/`");
                return None;
            }
            Some(p) if !parts.contains(&RedirectPart::Path) => {
                self.diags.error(
                    f,
                    p.referenced,
                    "`strip_prefix` on a redirect acts on `{path}`, and `to` has none",
                );
                return None;
            }
            Some(p) => Some(p.value.trim_end_matches('/').into()),
        };
        let fixed = matches!(parts.as_slice(), [] | [RedirectPart::Text(_)]);
        Some(Redirect {
            location,
            status,
            template: (!fixed).then(|| parts.into_boxed_slice()),
            strip_prefix,
        })
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
            // A redirect's `strip_prefix` is its own (see `redirect`).
            let strip_prefix = rv.strip_prefix.as_ref().filter(|_| rv.redirect.is_none());
            let only_forwarding: [(&str, Option<Location>); 5] = [
                ("strip_prefix", strip_prefix.map(|s| s.referenced)),
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
                        format!("`{key}` applies only to forwarding routes (`to`, `experiment`, `canary`){}", if key == "strip_prefix" { " and redirects" } else { "" }),
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

    pub(super) fn fallback(&mut self) -> Option<Fallback> {
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
}
