//! Rule files → a compiled [`Config`]: every semantic check, with positions.
//!
//! Compiling is pure: it reads nothing (the loader already read the rule
//! files and the certificates they name), opens no socket, builds no pool,
//! starts no timer and registers no metric, so `check`, `explain`,
//! `assign` and `diff` compile exactly what `run` would serve. It collects
//! every problem instead of stopping at the first one. The runtime links
//! the result to live state ([`crate::runtime`]).
//!
//! Merging (SPEC 1): lists (`listen`, `routes`) concatenate in file order;
//! maps (`upstreams`, `experiments`) merge, a key defined twice is an error
//! naming both places; `admin`, `fallback`, `limits`, `trusted_proxies` and
//! `state_file` may appear in one file only.

pub mod canary;
pub mod config;
pub mod experiment;
pub mod matchers;
mod routes;
pub mod settings;
mod sticky;
mod upstreams;
mod warnings;

pub use config::{
    Action, Config, Fallback, FallbackAction, ForwardOptions, HeaderOps, Mirror, Redirect,
    RedirectPart, Respond, Route,
};
pub use settings::{
    AdminSettings, ExposureTarget, FleetSettings, Limits, Listener, ListenerTls, Settings,
    UnderscoreHeaders,
};

use crate::config::raw::{self, Spanned};
use crate::config::{Diagnostic, Diagnostics, Loaded, Location, Severity, Source, parse_duration};
use crate::routing::{Expr, RouteTable};
use crate::split::{CanaryDef, Experiment};
use crate::upstream::def::{UpstreamDef, UpstreamId};
// Compile-time maps keyed by names from the rule files (trusted input):
// foldhash, not SipHash, for a reload of many routes.
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::sync::Arc;
use std::time::Duration;

/// A compiled config with what `check` reports about it.
#[derive(Debug)]
pub struct Compiled {
    /// The config.
    pub config: Config,
    /// Warnings, in file order.
    pub warnings: Vec<Diagnostic>,
    /// Counts for `check`'s `ok:` line.
    pub summary: Summary,
}

/// Counts for `check`'s `ok:` line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Routes.
    pub routes: usize,
    /// Upstreams.
    pub upstreams: usize,
    /// Experiments, inline ones included.
    pub experiments: usize,
    /// Canary routes.
    pub canaries: usize,
}

/// Compiles loaded rule files. On error, returns every error found.
///
/// Takes the files by value: each raw route is dropped as soon as it is
/// compiled, so a large rule set's parse tree and its compiled routes are
/// not all held at once (at 10,000 routes each is several megabytes, and a
/// reload holds the live snapshot besides).
pub fn compile(mut loaded: Loaded) -> Result<Compiled, Vec<Diagnostic>> {
    let raw_routes: Vec<Vec<Spanned<raw::Route>>> = loaded
        .sources
        .iter_mut()
        .map(|s| std::mem::take(&mut s.doc.routes))
        .collect();
    // The parser's scratch memory is free by now: back to the OS before the
    // compile allocates (see `Builder::routes`).
    crate::allocator::release_free_memory();
    let mut b = Builder::new(&loaded);
    b.singletons();
    b.upstreams();
    b.experiments();
    let routes = b.routes(raw_routes);
    let fallback = b.fallback();
    let settings = b.settings();
    b.warn_unused_upstreams();
    b.fleet_excludes_state_file();
    if b.diags.has_errors() {
        // Warnings after errors mislead (an upstream looks unused because
        // the route naming it failed), so only errors are returned.
        let errors = b.diags.into_sorted();
        return Err(errors
            .into_iter()
            .filter(|d| d.severity == Severity::Error)
            .collect());
    }
    let summary = Summary {
        routes: routes.len(),
        upstreams: b.upstreams.len(),
        experiments: b.experiment_count,
        canaries: b.canaries.len(),
    };
    let needs_body = routes.iter().any(|r| r.matcher.needs_body())
        || b.all_experiments
            .iter()
            .any(|e| e.targeting.as_ref().is_some_and(Expr::needs_body));
    let config = Config {
        routes: RouteTable::new(routes),
        upstreams: b.upstreams,
        experiments: b.all_experiments,
        canaries: b.canaries,
        fallback,
        settings,
        needs_body,
    };
    let mut warnings = b.diags.into_sorted();
    warnings.extend(warnings::shadowed_routes(&config, &b.route_places));
    warnings.extend(warnings::overlapping_namespaces(&b.namespaces));
    warnings.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    Ok(Compiled {
        config,
        warnings,
        summary,
    })
}

/// A place in a file: which file, where.
#[derive(Debug, Clone)]
pub(crate) struct Place {
    pub(crate) file: Arc<str>,
    pub(crate) at: Location,
}

impl std::fmt::Display for Place {
    /// `FILE:LINE:COL`, as in diagnostics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.at.line(), self.at.column())
    }
}

/// The compile state: what has been defined so far, and the diagnostics.
struct Builder<'a> {
    loaded: &'a Loaded,
    diags: Diagnostics,
    upstreams: Vec<UpstreamDef>,
    upstream_ids: HashMap<String, (UpstreamId, Place)>,
    upstream_used: Vec<bool>,
    broken_upstreams: HashSet<String>,
    experiments: HashMap<String, (Arc<Experiment>, Place)>,
    experiment_count: usize,
    all_experiments: Vec<Arc<Experiment>>,
    canaries: Vec<Arc<CanaryDef>>,
    route_places: Vec<Place>,
    /// Namespace slices of compiled experiments, for the overlap warning.
    namespaces: Vec<warnings::NamespaceUse>,
    /// Experiments defined with errors: a route naming one is not an
    /// `undefined experiment` too.
    broken_experiments: HashSet<String>,
    /// Shared by every route without forward options (most of them).
    no_forward_options: Arc<ForwardOptions>,
}

impl<'a> Builder<'a> {
    fn new(loaded: &'a Loaded) -> Self {
        Builder {
            loaded,
            diags: Diagnostics::default(),
            upstreams: Vec::new(),
            upstream_ids: HashMap::new(),
            upstream_used: Vec::new(),
            broken_upstreams: HashSet::new(),
            experiments: HashMap::new(),
            experiment_count: 0,
            all_experiments: Vec::new(),
            canaries: Vec::new(),
            route_places: Vec::new(),
            namespaces: Vec::new(),
            broken_experiments: HashSet::new(),
            no_forward_options: Arc::default(),
        }
    }

    fn files(&self) -> impl Iterator<Item = &'a Source> + use<'a> {
        self.loaded.sources.iter()
    }

    /// `admin`, `fallback`, `limits`, `trusted_proxies`, `state_file`,
    /// `exposure_log`: one file only.
    fn singletons(&mut self) {
        let mut seen: HashMap<&'static str, Arc<str>> = HashMap::new();
        for src in self.files() {
            let d = &src.doc;
            let present: [(&'static str, Option<Location>); 7] = [
                ("admin", d.admin.as_ref().map(|s| s.referenced)),
                ("fallback", d.fallback.as_ref().map(|s| s.referenced)),
                ("limits", d.limits.as_ref().map(|s| s.referenced)),
                (
                    "trusted_proxies",
                    d.trusted_proxies.as_ref().map(|s| s.referenced),
                ),
                ("state_file", d.state_file.as_ref().map(|s| s.referenced)),
                (
                    "exposure_log",
                    d.exposure_log.as_ref().map(|s| s.referenced),
                ),
                ("fleet", d.fleet.as_ref().map(|s| s.referenced)),
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

    /// SPEC 11: `fleet` and `state_file` are alternatives.
    fn fleet_excludes_state_file(&mut self) {
        let fleet = self
            .files()
            .find_map(|s| s.doc.fleet.as_ref().map(|f| (s, f)));
        let state = self.files().find_map(|s| s.doc.state_file.as_ref());
        if let (Some((src, fl)), Some(_)) = (fleet, state) {
            self.diags.error(
                &src.name,
                fl.referenced,
                "`fleet` and `state_file` are alternatives: with fleet mode, state lives in Redis; remove `state_file`",
            );
        }
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

    fn experiments(&mut self) {
        for src in self.files() {
            for (key, exp) in &src.doc.experiments.0 {
                if let Some((_, first)) = self.experiments.get(&key.value) {
                    let msg = format!("experiment `{}` is already defined at {first}", key.value);
                    self.diags.error(&src.name, key.referenced, msg);
                    continue;
                }
                match self.compile_experiment(src, &key.value, &exp.value, exp.referenced) {
                    Some(e) => {
                        let place = Place {
                            file: src.name.clone(),
                            at: key.referenced,
                        };
                        self.experiments.insert(key.value.clone(), (e, place));
                    }
                    None => {
                        self.broken_experiments.insert(key.value.clone());
                    }
                }
            }
        }
    }

    /// Compiles one experiment (named or inline) and lists it.
    fn compile_experiment(
        &mut self,
        src: &Source,
        name: &str,
        raw: &raw::Experiment,
        at: Location,
    ) -> Option<Arc<Experiment>> {
        self.experiment_count += 1;
        let f = &src.name;
        let targeting = raw
            .matcher
            .as_ref()
            .map(|m| matchers::compile(m, f, &mut self.diags));
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
            experiment::compile_experiment(name, raw, f, at, &mut self.diags, &resolve, targeting)?;
        if let (Some(ns), Some((ns_name, start, end))) = (&raw.namespace, &e.namespace) {
            self.namespaces.push(warnings::NamespaceUse {
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
        e.index = self.all_experiments.len();
        let e = Arc::new(e);
        self.all_experiments.push(e.clone());
        Some(e)
    }
}

/// Compiles rule-file text (one file named `name`), for tests, benchmarks
/// and tools: the same as loading a file with that content.
pub fn compile_text(name: &str, text: &str) -> Result<Compiled, Vec<Diagnostic>> {
    let file: Arc<str> = Arc::from(name);
    let doc = crate::config::parse(&file, text).map_err(|d| vec![d])?;
    let sources = vec![Source {
        name: file,
        path: name.into(),
        dir: std::path::PathBuf::from("."),
        doc,
    }];
    let files = crate::config::files::Files::read(&sources);
    let loaded = Loaded {
        sources,
        files,
        sha256: String::new(),
    };
    compile(loaded)
}
