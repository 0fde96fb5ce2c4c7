//! The admin API (SPEC 8): health, readiness, config, reload, routes,
//! experiments, canaries, upstreams, series, explain and metrics, and the
//! dashboard ([`dashboard`], SPEC 8.1) at `/`, on `admin.bind`
//! (127.0.0.1:9901 by default). With `admin.token_file`, POSTs need
//! `Authorization: Bearer <token>` (401 without, 403 when wrong). The
//! server hands requests over with their bodies read
//! ([`crate::server::plain`]).

pub mod dashboard;

use crate::compile::Action;
use crate::fleet::{Fleet, FleetActionError};
use crate::reload::{ReloadError, Reloader, Trigger};
use crate::runtime::Snapshot;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What the admin endpoints read and act on.
pub struct AdminState {
    /// Reloads the config; holds the live snapshot.
    pub reloader: Arc<Reloader>,
    /// Set once listeners are bound and a config is active.
    pub ready: AtomicBool,
    /// Set on SIGTERM/SIGINT: `/readyz` answers 503.
    pub draining: AtomicBool,
    /// The bearer token POSTs need, if any.
    pub token: Option<String>,
    /// The fleet this replica belongs to (SPEC 11): operator actions act
    /// on it, and `/experiments` and `/canaries` show its figures.
    pub fleet: Option<Arc<Fleet>>,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("ready", &self.ready)
            .field("draining", &self.draining)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("fleet", &self.fleet.as_ref().map(|f| f.status()))
            .finish_non_exhaustive()
    }
}

/// Reads the token file: surrounding whitespace trimmed.
pub fn read_token(path: &std::path::Path) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim().to_string())
}

type AdminResponse = Response<Bytes>;

/// Answers one admin request.
pub async fn handle(state: Arc<AdminState>, req: Request<Bytes>) -> AdminResponse {
    let method = req.method().clone();
    if method == Method::POST
        && let Some(resp) = cross_origin(&req).or_else(|| authorize(&state, &req))
    {
        return resp;
    }
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let snapshot = || state.reloader.live().snapshot();
    let fleet = state.fleet.as_deref();
    match (&method, segments.as_slice()) {
        (&Method::GET, [""]) => dashboard::page(),
        (&Method::GET, [asset]) if dashboard::is_asset(asset) => dashboard::asset(asset),
        (&Method::GET, ["series"]) => compact_json(&series_json(&snapshot())),
        (&Method::GET, ["healthz"]) => text(StatusCode::OK, "ok\n"),
        (&Method::GET, ["readyz"]) => readyz(&state),
        (&Method::GET, ["metrics"]) => metrics(&state),
        (&Method::GET, ["config"]) => json_response(StatusCode::OK, &*state.reloader.status()),
        (&Method::POST, ["reload"]) => reload(&state).await,
        (&Method::GET, ["routes"]) => json_response(StatusCode::OK, &routes_json(&snapshot())),
        (&Method::GET, ["experiments"]) => {
            json_response(StatusCode::OK, &experiments_json(&snapshot(), fleet))
        }
        (&Method::GET, ["canaries"]) => {
            json_response(StatusCode::OK, &canaries_json(&snapshot(), fleet))
        }
        (&Method::GET, ["upstreams"]) => {
            json_response(StatusCode::OK, &upstreams_json(&snapshot()))
        }
        (&Method::POST, ["canaries", name, action]) => {
            let resp = canary_action(snapshot(), fleet, name, action).await;
            durable(&state).await;
            resp
        }
        (&Method::POST, ["experiments", name, action]) => {
            let variant = query_param(req.uri().query(), "variant");
            let resp = experiment_action(snapshot(), fleet, name, action, variant).await;
            durable(&state).await;
            resp
        }
        (&Method::POST, ["explain"]) => explain(&snapshot(), req.body()),
        (
            _,
            [
                "healthz" | "readyz" | "metrics" | "config" | "routes" | "experiments" | "canaries"
                | "upstreams" | "series" | "",
            ],
        )
        | (_, ["reload" | "explain"]) => {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}

/// Waits (off the serving threads) until an operator's action is in the
/// `state_file`, so a 200 means it survives a crash right after.
async fn durable(state: &AdminState) {
    let runtime = state.reloader.live().runtime().clone();
    let _ = tokio::task::spawn_blocking(move || runtime.flush_state()).await;
}

fn readyz(state: &AdminState) -> AdminResponse {
    if state.draining.load(Ordering::Relaxed) {
        text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else if state.ready.load(Ordering::Relaxed) {
        text(StatusCode::OK, "ready\n")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

fn metrics(state: &AdminState) -> AdminResponse {
    let live = state.reloader.live();
    let Some(m) = live.runtime().metrics() else {
        return text(StatusCode::NOT_IMPLEMENTED, "metrics not available\n");
    };
    let body = crate::runtime::scrape::render(m, &live.snapshot());
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
        .body(Bytes::from(body))
        .unwrap_or_else(|_| empty(StatusCode::INTERNAL_SERVER_ERROR))
}

async fn reload(state: &AdminState) -> AdminResponse {
    match state.reloader.reload(Trigger::Admin).await {
        Ok(status) => json_response(StatusCode::OK, &*status),
        Err(ReloadError::Invalid(errors)) => json_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!({
                "error": errors.first().map(|d| d.to_string()),
                "errors": errors.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            }),
        ),
        Err(ReloadError::Unchanged) => json_response(StatusCode::OK, &*state.reloader.status()),
    }
}

/// 403 for a POST a browser sent from another site's page (its `Origin` is
/// not this admin address, or `Sec-Fetch-Site` says `cross-site`): without
/// `token_file`, any page the operator opens could otherwise roll a canary
/// back. Clients that send no `Origin` (curl, the CLI, scripts) pass.
fn cross_origin(req: &Request<Bytes>) -> Option<AdminResponse> {
    let headers = req.headers();
    let cross_site = headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
    let foreign = headers.get(header::ORIGIN).is_some_and(|origin| {
        let host = headers.get(header::HOST).map(|h| h.as_bytes());
        let origin_host = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, h)| h.as_bytes());
        !matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
    });
    (cross_site || foreign).then(|| {
        error(
            StatusCode::FORBIDDEN,
            "cross-origin POST refused: admin actions are taken from this address's own dashboard, curl or the CLI",
        )
    })
}

/// 401 without (or with a malformed) bearer token, 403 with a wrong one.
fn authorize(state: &AdminState, req: &Request<Bytes>) -> Option<AdminResponse> {
    let expected = state.token.as_deref()?;
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    match given {
        None => Some(error(StatusCode::UNAUTHORIZED, "missing bearer token")),
        Some(t) if constant_time_eq(t.as_bytes(), expected.as_bytes()) => None,
        Some(_) => Some(error(StatusCode::FORBIDDEN, "wrong token")),
    }
}

/// Compares without an early exit, so timing does not reveal the prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

fn routes_json(snapshot: &Snapshot) -> Value {
    let config = &snapshot.config;
    let name = |id: usize| config.upstreams.get(id).map(|u| u.name.to_string());
    let routes: Vec<Value> = config
        .routes
        .routes()
        .iter()
        .map(|r| {
            crate::yielding::yield_point();
            let action = match &r.action {
                Action::Forward(u) => json!({ "to": name(*u) }),
                Action::Experiment { default, experiment } => {
                    json!({ "to": name(*default), "experiment": &*experiment.name })
                }
                Action::Canary(c) => json!({
                    "canary": { "stable": name(c.stable), "canary": name(c.canary) }
                }),
                Action::Respond(r) => json!({ "respond": { "status": r.status.as_u16() } }),
                Action::Redirect(r) => json!({
                    "redirect": { "to": r.location.to_str().unwrap_or(""), "status": r.status.as_u16() }
                }),
            };
            json!({ "name": &*r.name, "match": r.matcher.summary(), "action": action })
        })
        .collect();
    json!({ "routes": routes })
}

fn experiments_json(snapshot: &Snapshot, fleet: Option<&Fleet>) -> Value {
    let list: Vec<Value> = snapshot
        .config
        .experiments
        .iter()
        .filter_map(|e| experiment_entry(snapshot, fleet, e))
        .collect();
    let mut v = json!({ "experiments": list });
    with_fleet_status(&mut v, fleet);
    v
}

/// One experiment's `/experiments` entry: its tally's stats and the kill
/// switch's state. In fleet mode the figures are the fleet's (as of the
/// last sync), with this replica's own under `replica`.
fn experiment_entry(
    snapshot: &Snapshot,
    fleet: Option<&Fleet>,
    e: &crate::split::Experiment,
) -> Option<Value> {
    let live = snapshot.experiment_state(e.index)?;
    let own = live.tally.stats(e);
    let figures = fleet.and_then(|f| f.experiment_figures(e));
    let mut v = match &figures {
        Some(f) => serde_json::to_value(f.counts.stats(e)).ok()?,
        None => serde_json::to_value(&own).ok()?,
    };
    let mode = live.mode();
    if let Some(o) = v.as_object_mut() {
        if let Some(f) = &figures {
            o.insert("replicas".into(), json!(f.replicas));
            o.insert("replica".into(), serde_json::to_value(&own).ok()?);
        }
        o.insert("state".into(), json!(mode.as_str()));
        if let crate::split::experiment::Mode::Released(i) = mode {
            o.insert(
                "released_variant".into(),
                json!(e.variants.get(i).map(|x| &*x.name)),
            );
        }
    }
    Some(v)
}

async fn experiment_action(
    snapshot: Arc<Snapshot>,
    fleet: Option<&Fleet>,
    name: &str,
    action: &str,
    variant: Option<String>,
) -> AdminResponse {
    let Some(e) = snapshot.config.experiment(name) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no experiment named {name}"),
        );
    };
    let Some(live) = snapshot.experiment_state(e.index) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no experiment named {name}"),
        );
    };
    let action = match action.parse::<crate::runtime::ExperimentAction>() {
        Ok(a) => a,
        Err(err) => return error(StatusCode::NOT_FOUND, &err.to_string()),
    };
    let result = match fleet {
        Some(f) => {
            f.act_on_experiment(snapshot.clone(), e.clone(), action, variant)
                .await
        }
        None => live
            .act(e, action, variant.as_deref())
            .map(|_| ())
            .map_err(FleetActionError::from),
    };
    match result {
        Ok(()) => match experiment_entry(&snapshot, fleet, e) {
            Some(entry) => json_response(StatusCode::OK, &entry),
            None => empty(StatusCode::INTERNAL_SERVER_ERROR),
        },
        Err(err) => action_error(&err),
    }
}

/// 404 for an unknown experiment action or variant, 409 for an action the
/// state refuses, 503 when the fleet's store is needed and away.
fn action_error(err: &FleetActionError) -> AdminResponse {
    use crate::runtime::ExperimentActionError as E;
    let status = match err {
        FleetActionError::Experiment(E::UnknownAction(_) | E::UnknownVariant { .. }) => {
            StatusCode::NOT_FOUND
        }
        FleetActionError::Experiment(E::NotApplicable { .. }) | FleetActionError::Canary(_) => {
            StatusCode::CONFLICT
        }
        FleetActionError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, &err.to_string())
}

/// Adds `fleet: {name, replica, connected, sync_interval_ms}` in fleet mode.
fn with_fleet_status(v: &mut Value, fleet: Option<&Fleet>) {
    if let (Some(f), Some(o)) = (fleet, v.as_object_mut())
        && let Ok(status) = serde_json::to_value(f.status())
    {
        o.insert("fleet".into(), status);
    }
}

/// The decoded value of query parameter `name`.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    crate::routing::context::query_values(query?, name)
        .next()
        .map(|v| v.into_owned())
}

fn canaries_json(snapshot: &Snapshot, fleet: Option<&Fleet>) -> Value {
    let list: Vec<Value> = snapshot
        .canaries()
        .iter()
        .filter_map(|c| canary_entry(c, fleet))
        .collect();
    let mut v = json!({ "canaries": list });
    with_fleet_status(&mut v, fleet);
    v
}

/// One canary's `/canaries` entry. In fleet mode the guard window is the
/// fleet's sum (as of the last sync), with this replica's own under
/// `replica`.
fn canary_entry(c: &crate::split::Canary, fleet: Option<&Fleet>) -> Option<Value> {
    let view = c.view(tokio::time::Instant::now());
    let mut v = serde_json::to_value(&view).ok()?;
    if let (Some(f), Some(o)) = (fleet.and_then(|f| f.canary_figures(c)), v.as_object_mut()) {
        o.insert("stable".into(), serde_json::to_value(f.stable).ok()?);
        o.insert("canary".into(), serde_json::to_value(f.canary).ok()?);
        o.insert("replicas".into(), json!(f.replicas));
        o.insert("revision".into(), json!(f.revision));
        o.insert(
            "replica".into(),
            json!({ "stable": view.stable, "canary": view.canary }),
        );
    }
    Some(v)
}

/// Per upstream, in config order: balance, protocol, and each endpoint's
/// health, ejection, in-flight requests, last check and last failure.
fn upstreams_json(snapshot: &Snapshot) -> Value {
    let list: Vec<Value> = snapshot
        .upstreams()
        .iter()
        .filter_map(|u| serde_json::to_value(u.view()).ok())
        .collect();
    json!({ "upstreams": list })
}

/// `GET /series`: the dashboard's charts, per canary and experiment the
/// last 15 minutes of each arm (requests, 5xx answers, error rate, p99) in
/// points of [`timeline::BUCKET`], oldest first.
fn series_json(snapshot: &Snapshot) -> Value {
    use crate::split::timeline::{self, Series};
    let now = crate::runtime::timelines::unix_ms(std::time::SystemTime::now());
    let span = timeline::BUCKET.as_millis() as u64 * timeline::BUCKETS as u64;
    let since = now.saturating_sub(span);
    let entry = |name: &str, arms: Vec<&str>, s: Series| {
        let arms: Vec<Value> = arms
            .into_iter()
            .zip(&s.arms)
            .map(|(arm, points)| {
                json!({
                    "name": arm,
                    "requests": points.iter().map(|p| p.requests).collect::<Vec<_>>(),
                    "errors": points.iter().map(|p| p.errors).collect::<Vec<_>>(),
                    "error_rate": points
                        .iter()
                        .map(|p| (p.requests > 0).then(|| p.errors as f64 / p.requests as f64))
                        .collect::<Vec<_>>(),
                    "p99_ms": points.iter().map(|p| p.p99_ms).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({ "name": name, "at": s.at, "arms": arms })
    };
    let canaries: Vec<Value> = snapshot
        .canaries()
        .iter()
        .map(|c| entry(&c.def().route, vec!["stable", "canary"], c.series(since)))
        .collect();
    let experiments: Vec<Value> = snapshot
        .config
        .experiments
        .iter()
        .filter_map(|e| {
            let tally = snapshot.tally(e.index)?;
            let arms = e.variants.iter().map(|v| &*v.name).collect();
            Some(entry(&e.name, arms, tally.series(since)))
        })
        .collect();
    json!({
        "now": now,
        "bucket_ms": timeline::BUCKET.as_millis() as u64,
        "buckets": timeline::BUCKETS,
        "canaries": canaries,
        "experiments": experiments,
    })
}

async fn canary_action(
    snapshot: Arc<Snapshot>,
    fleet: Option<&Fleet>,
    name: &str,
    action: &str,
) -> AdminResponse {
    let Some(canary) = snapshot.canary_named(name) else {
        return error(StatusCode::NOT_FOUND, &format!("no canary named {name}"));
    };
    let Ok(action) = action.parse::<crate::split::CanaryAction>() else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("unknown action {action}: use pause, resume, promote or rollback"),
        );
    };
    let result = match fleet {
        Some(f) => f.act_on_canary(canary.clone(), action).await,
        None => canary
            .act(action, tokio::time::Instant::now())
            .map(|_| ())
            .map_err(FleetActionError::from),
    };
    match result {
        Ok(()) => match canary_entry(canary, fleet) {
            Some(entry) => json_response(StatusCode::OK, &entry),
            None => empty(StatusCode::INTERNAL_SERVER_ERROR),
        },
        Err(err) => action_error(&err),
    }
}

fn explain(snapshot: &Snapshot, body: &[u8]) -> AdminResponse {
    match crate::explain::ExplainRequest::from_json(body) {
        Ok(req) => match crate::explain::explain(&snapshot.config, snapshot, &req) {
            Ok(trace) => json_response(StatusCode::OK, &trace),
            Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
        },
        Err(e) => error(StatusCode::BAD_REQUEST, &e),
    }
}

fn json_response<T: serde::Serialize + ?Sized>(status: StatusCode, value: &T) -> AdminResponse {
    let mut body = Vec::new();
    if serde_json::to_writer_pretty(crate::yielding::YieldingWriter(&mut body), value).is_err() {
        body.clear();
    }
    body.push(b'\n');
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Bytes::from(body))
        .unwrap_or_else(|_| empty(StatusCode::INTERNAL_SERVER_ERROR))
}

/// JSON without indentation: for answers read by the dashboard rather
/// than by people (long arrays of numbers).
fn compact_json(value: &Value) -> AdminResponse {
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Bytes::from(body))
        .unwrap_or_else(|_| empty(StatusCode::INTERNAL_SERVER_ERROR))
}

fn error(status: StatusCode, message: &str) -> AdminResponse {
    json_response(status, &json!({ "error": message }))
}

fn text(status: StatusCode, body: &'static str) -> AdminResponse {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Bytes::from_static(body.as_bytes()))
        .unwrap_or_else(|_| empty(StatusCode::INTERNAL_SERVER_ERROR))
}

fn empty(status: StatusCode) -> AdminResponse {
    let mut r = Response::new(Bytes::new());
    *r.status_mut() = status;
    r
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn constant_time_eq_compares_whole_tokens() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"s3cret", b"s3creX"));
        assert!(!constant_time_eq(b"s3cret", b"s3cre"));
        assert!(!constant_time_eq(b"s3cre", b"s3cret"));
        assert!(!constant_time_eq(b"", b"x"));
        // Same bytes, different length: the length difference alone counts.
        assert!(!constant_time_eq(b"ab\0", b"ab"));
    }
}
