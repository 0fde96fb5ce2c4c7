//! `explain`: the decision trace for one described request, without
//! contacting any upstream. Shared by `pointsman explain` (on a compiled
//! config, canaries at their starting weight) and `POST /explain` (on the
//! live snapshot), which print the same trace. The decision is the request
//! path's own ([`crate::pipeline::decide`]).

use crate::compile::{Config, FallbackAction};
use crate::pipeline::decide::decide;
use crate::routing::{RequestContext, normalize_path};
use crate::runtime::SplitState;
use crate::split::{Purpose, SplitTrace};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

/// A request described by hand.
#[derive(Debug, Clone, Default)]
pub struct ExplainRequest {
    /// The method (default GET).
    pub method: String,
    /// Absolute (`http://host/path?q`) or a path (`/path?q`, Host from the
    /// headers).
    pub url: String,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// The client address (default 127.0.0.1).
    pub client_ip: Option<IpAddr>,
    /// The body, for `body_json` matchers.
    pub body: Option<Vec<u8>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRequest {
    #[serde(default)]
    method: Option<String>,
    url: String,
    #[serde(default)]
    headers: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    client_ip: Option<IpAddr>,
    #[serde(default)]
    body: Option<String>,
}

impl ExplainRequest {
    /// Parses the `POST /explain` body:
    /// `{method, url, headers, client_ip, body}`; header values are a string
    /// or a list of strings.
    pub fn from_json(body: &[u8]) -> Result<ExplainRequest, String> {
        let j: JsonRequest =
            serde_json::from_slice(body).map_err(|e| format!("invalid explain request: {e}"))?;
        let mut headers = Vec::new();
        for (name, value) in j.headers {
            match value {
                serde_json::Value::String(s) => headers.push((name, s)),
                serde_json::Value::Array(list) => {
                    for v in list {
                        let Some(s) = v.as_str() else {
                            return Err(format!("header {name}: values must be strings"));
                        };
                        headers.push((name.clone(), s.to_owned()));
                    }
                }
                _ => return Err(format!("header {name}: a string or a list of strings")),
            }
        }
        Ok(ExplainRequest {
            method: j.method.unwrap_or_else(|| "GET".into()),
            url: j.url,
            headers,
            client_ip: j.client_ip,
            body: j.body.map(String::into_bytes),
        })
    }
}

/// Why a request could not be explained.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("invalid method {0:?}")]
    /// The method is not a valid token.
    Method(String),
    #[error("invalid URL {0:?}: give http://host/path or /path")]
    /// The URL is neither absolute nor a path.
    Url(String),
    #[error("invalid header {0:?}")]
    /// A header name or value is invalid.
    Header(String),
    #[error("the path climbs above / (the proxy answers 400)")]
    /// The path climbs above `/`.
    Path,
}

/// The decision trace.
#[derive(Debug, Clone, Serialize)]
pub struct Trace {
    /// The request as routing saw it.
    pub request: RequestSummary,
    /// Each route tried in file order, up to the one that matched.
    pub routes: Vec<RouteTrial>,
    /// The matching route, or `fallback` / `none`.
    pub route: String,
    /// `to`, `experiment`, `canary`, `respond`, `redirect`, or `no_route`.
    pub action: &'static str,
    /// The experiment or canary step, on a split route.
    pub split: Option<SplitTrace>,
    /// The upstream the request would go to.
    pub upstream: Option<String>,
    /// For respond / redirect / no route: the status answered.
    pub status: Option<u16>,
}

/// The request as routing saw it.
#[derive(Debug, Clone, Serialize)]
pub struct RequestSummary {
    /// The method.
    pub method: String,
    /// The Host, lowercased, port removed.
    pub host: String,
    /// The normalized path.
    pub path: String,
    /// The raw query, without `?`.
    pub query: Option<String>,
    /// The client address.
    pub client_ip: IpAddr,
    /// Whether the body was inspected (within `inspect_body_bytes`).
    pub body_inspected: bool,
}

/// One route tried.
#[derive(Debug, Clone, Serialize)]
pub struct RouteTrial {
    /// The route's name.
    pub name: String,
    /// Whether it matched (the last route tried, if any did).
    pub matched: bool,
    /// The first predicate that failed.
    pub failed: Option<String>,
}

/// Explains a request against a config, with canary weights and kill
/// switches from `state`. Contacts no upstream and counts no assignment.
pub fn explain(
    config: &Config,
    state: &dyn SplitState,
    req: &ExplainRequest,
) -> Result<Trace, ExplainError> {
    let Described {
        method,
        headers,
        uri,
        raw_host,
    } = describe(req)?;
    let path = normalize_path(uri.path()).map_err(|_| ExplainError::Path)?;
    let client_ip = req.client_ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let limit = config.settings.limits.inspect_body_bytes;
    let body = req.body.as_deref().filter(|b| b.len() <= limit);
    let ctx = RequestContext::new(
        &method,
        &raw_host,
        &path,
        uri.query(),
        &headers,
        client_ip,
        body,
    );
    let request = RequestSummary {
        method: method.to_string(),
        host: ctx.host.to_string(),
        path: path.to_string(),
        query: uri.query().map(str::to_owned),
        client_ip,
        body_inspected: body.is_some(),
    };
    let routes: Vec<RouteTrial> = config
        .routes
        .trace(&ctx)
        .into_iter()
        .map(|t| RouteTrial {
            name: config
                .routes
                .routes()
                .get(t.route)
                .map(|r| r.name.to_string())
                .unwrap_or_default(),
            matched: t.failed.is_none(),
            failed: t.failed,
        })
        .collect();
    let (decision, _) = decide(config, state, &ctx, false, Purpose::Explain);
    let upstream_name = |id: usize| config.upstreams.get(id).map(|u| u.name.to_string());
    let mut trace = Trace {
        request,
        routes,
        route: "none".into(),
        action: "no_route",
        split: None,
        upstream: None,
        status: None,
    };
    let Some(route) = decision.route(config) else {
        match config.fallback.as_ref().map(|f| &f.action) {
            Some(FallbackAction::Forward(id)) => {
                trace.route = "fallback".into();
                trace.action = "to";
                trace.upstream = upstream_name(*id);
            }
            Some(FallbackAction::Respond(r)) => {
                trace.route = "fallback".into();
                trace.action = "respond";
                trace.status = Some(r.status.as_u16());
            }
            None => trace.status = Some(404),
        }
        return Ok(trace);
    };
    trace.route = route.name.to_string();
    trace.action = route.action.kind();
    trace.upstream = decision.upstream(config).and_then(upstream_name);
    trace.status = match &route.action {
        crate::compile::Action::Respond(r) => Some(r.status.as_u16()),
        crate::compile::Action::Redirect(r) => Some(r.status.as_u16()),
        _ => None,
    };
    trace.split = decision.split.and_then(|d| d.trace).map(|t| *t);
    Ok(trace)
}

/// A described request as it would arrive.
struct Described {
    method: Method,
    headers: HeaderMap,
    uri: http::Uri,
    /// The Host as received: an absolute URL's authority, else `Host`.
    raw_host: String,
}

fn describe(req: &ExplainRequest) -> Result<Described, ExplainError> {
    let method = Method::from_bytes(req.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| ExplainError::Method(req.method.clone()))?;
    let mut headers = HeaderMap::new();
    for (n, v) in &req.headers {
        let name = HeaderName::from_bytes(n.trim().as_bytes())
            .map_err(|_| ExplainError::Header(n.clone()))?;
        let value = HeaderValue::from_str(v.trim()).map_err(|_| ExplainError::Header(n.clone()))?;
        headers.append(name, value);
    }
    let uri: http::Uri = req
        .url
        .parse()
        .map_err(|_| ExplainError::Url(req.url.clone()))?;
    let host_header = headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // As on the wire: an absolute URL's authority wins over Host.
    let raw_host = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or(host_header)
        .unwrap_or_default();
    if uri.authority().is_some()
        && !headers.contains_key(http::header::HOST)
        && let Ok(v) = HeaderValue::from_str(&raw_host)
    {
        headers.insert(http::header::HOST, v);
    }
    Ok(Described {
        method,
        headers,
        uri,
        raw_host,
    })
}

impl Trace {
    /// The human-readable trace `pointsman explain` prints.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let r = &self.request;
        let q = r
            .query
            .as_deref()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        let host = if r.host.is_empty() { "(none)" } else { &r.host };
        let _ = writeln!(
            out,
            "request: {} {}{} host {} client {}",
            r.method, r.path, q, host, r.client_ip
        );
        for t in &self.routes {
            match &t.failed {
                None => {
                    let _ = writeln!(out, "  route {}: matched", t.name);
                }
                Some(why) => {
                    let _ = writeln!(out, "  route {}: no ({why})", t.name);
                }
            }
        }
        let _ = writeln!(out, "route: {} ({})", self.route, self.action);
        if let Some(s) = &self.split {
            let id = match (&s.sticky_id, &s.sticky_source, s.excluded) {
                (Some(id), Some(src), _) => {
                    let minted = if s.minted { ", minted" } else { "" };
                    format!("sticky id {id:?} from {src}{minted}")
                }
                // Targeting is judged before any id is looked for.
                (_, _, Some("targeting")) => "targeting did not match".to_string(),
                (_, _, Some("stopped")) => "stopped by the kill switch".to_string(),
                _ => "no sticky id".to_string(),
            };
            let bucket = s
                .bucket
                .map(|b| format!(", bucket {b:.4}"))
                .unwrap_or_default();
            let range = s
                .range
                .map(|(a, b)| format!(", range [{a:.4}, {b:.4})"))
                .unwrap_or_default();
            let weight = s
                .weight
                .map(|w| format!(", weight {w}%"))
                .unwrap_or_default();
            let outcome = match (&s.variant, s.excluded) {
                (Some(v), _) if s.forced => format!("variant {v} (forced)"),
                (Some(v), _) => format!("variant {v}"),
                (None, Some(why)) => format!("not enrolled ({why})"),
                (None, None) => "not enrolled".to_string(),
            };
            let _ = writeln!(
                out,
                "{} {}: {id}{bucket}{range}{weight} → {outcome}",
                s.kind, s.name
            );
        }
        match (&self.upstream, self.status) {
            (Some(u), _) => {
                let _ = writeln!(out, "upstream: {u}");
            }
            (None, Some(s)) => {
                let _ = writeln!(out, "answer: {s}");
            }
            (None, None) => {}
        }
        out
    }
}
