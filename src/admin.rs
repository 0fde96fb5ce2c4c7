//! The admin API (SPEC 8): health, readiness, config, reload, routes,
//! experiments, canaries, explain and metrics, on `admin.bind`
//! (127.0.0.1:9901 by default). With `admin.token_file`, POSTs need
//! `Authorization: Bearer <token>` (401 without, 403 when wrong).

use crate::reload::{ReloadError, Reloader, Trigger};
use crate::router::{Action, Snapshot};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;

/// Largest admin request body (explain requests).
const MAX_ADMIN_BODY: usize = 1 << 20;

/// What the admin endpoints read and act on.
pub struct AdminState {
    pub reloader: Arc<Reloader>,
    /// Set once listeners are bound and a config is active.
    pub ready: AtomicBool,
    /// Set on SIGTERM/SIGINT: `/readyz` answers 503.
    pub draining: AtomicBool,
    /// The bearer token POSTs need, if any.
    pub token: Option<String>,
    /// Renders `/metrics`.
    pub metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("ready", &self.ready)
            .field("draining", &self.draining)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

/// Reads the token file: surrounding whitespace trimmed.
pub fn read_token(path: &std::path::Path) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim().to_string())
}

/// Serves the admin API on `listener` until the process ends.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req).await) }
            });
            let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            b.http1()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10));
            let _ = b.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

type AdminResponse = Response<Full<Bytes>>;

async fn handle(state: &AdminState, req: Request<Incoming>) -> AdminResponse {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    if method == Method::POST
        && let Some(resp) = authorize(state, &req)
    {
        return resp;
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["healthz"]) => text(StatusCode::OK, "ok\n"),
        (&Method::GET, ["readyz"]) => {
            if state.draining.load(Ordering::Relaxed) {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else if state.ready.load(Ordering::Relaxed) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "starting\n")
            }
        }
        (&Method::GET, ["metrics"]) => match &state.metrics {
            Some(render) => Response::builder()
                .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
                .body(Full::new(Bytes::from(render())))
                .unwrap_or_else(|_| empty(StatusCode::INTERNAL_SERVER_ERROR)),
            None => text(StatusCode::NOT_IMPLEMENTED, "metrics not available\n"),
        },
        (&Method::GET, ["config"]) => json_response(StatusCode::OK, &*state.reloader.status()),
        (&Method::POST, ["reload"]) => match state.reloader.reload(Trigger::Admin).await {
            Ok(status) => json_response(StatusCode::OK, &*status),
            Err(ReloadError::Invalid(errors)) => json_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                &json!({
                    "error": errors.first().map(|d| d.to_string()),
                    "errors": errors.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
                }),
            ),
            Err(ReloadError::Unchanged) => json_response(StatusCode::OK, &*state.reloader.status()),
        },
        (&Method::GET, ["routes"]) => json_response(
            StatusCode::OK,
            &routes_json(&state.reloader.proxy().snapshot()),
        ),
        (&Method::GET, ["experiments"]) => json_response(
            StatusCode::OK,
            &experiments_json(&state.reloader.proxy().snapshot()),
        ),
        (&Method::GET, ["canaries"]) => json_response(
            StatusCode::OK,
            &canaries_json(&state.reloader.proxy().snapshot()),
        ),
        (&Method::POST, ["canaries", name, action]) => {
            canary_action(&state.reloader.proxy().snapshot(), name, action)
        }
        (&Method::POST, ["explain"]) => {
            let body = match Limited::new(req.into_body(), MAX_ADMIN_BODY)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
            };
            explain(&state.reloader.proxy().snapshot(), &body)
        }
        (
            _,
            ["healthz" | "readyz" | "metrics" | "config" | "routes" | "experiments" | "canaries"],
        )
        | (_, ["reload" | "explain"]) => {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}

/// 401 without (or with a malformed) bearer token, 403 with a wrong one.
fn authorize(state: &AdminState, req: &Request<Incoming>) -> Option<AdminResponse> {
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
    let name = |id: usize| snapshot.upstreams.get(id).map(|u| u.def.name.to_string());
    let routes: Vec<Value> = snapshot
        .routes
        .iter()
        .map(|r| {
            let action = match &r.action {
                Action::Forward(u) => json!({ "to": name(*u) }),
                Action::Experiment { default, experiment } => {
                    json!({ "to": name(*default), "experiment": &*experiment.name })
                }
                Action::Canary(c) => json!({
                    "canary": { "stable": name(c.def.stable), "canary": name(c.def.canary) }
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

fn experiments_json(snapshot: &Snapshot) -> Value {
    let list: Vec<Value> = snapshot
        .experiments
        .iter()
        .filter_map(|e| serde_json::to_value(e.stats()).ok())
        .collect();
    json!({ "experiments": list })
}

fn canaries_json(snapshot: &Snapshot) -> Value {
    let now = tokio::time::Instant::now();
    let list: Vec<Value> = snapshot
        .routes
        .iter()
        .filter_map(|r| match &r.action {
            Action::Canary(c) => serde_json::to_value(c.view(now)).ok(),
            _ => None,
        })
        .collect();
    json!({ "canaries": list })
}

fn canary_action(snapshot: &Snapshot, name: &str, action: &str) -> AdminResponse {
    let canary = snapshot.routes.iter().find_map(|r| match &r.action {
        Action::Canary(c) if &*r.name == name => Some(c),
        _ => None,
    });
    let Some(canary) = canary else {
        return error(StatusCode::NOT_FOUND, &format!("no canary named {name}"));
    };
    let Ok(action) = action.parse::<crate::split::CanaryAction>() else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("unknown action {action}: use pause, resume, promote or rollback"),
        );
    };
    match canary.act(action, tokio::time::Instant::now()) {
        Ok(view) => json_response(StatusCode::OK, &view),
        Err(e) => error(StatusCode::CONFLICT, &e.to_string()),
    }
}

fn explain(snapshot: &Snapshot, body: &[u8]) -> AdminResponse {
    match crate::explain::ExplainRequest::from_json(body) {
        Ok(req) => match crate::explain::explain(snapshot, &req) {
            Ok(trace) => json_response(StatusCode::OK, &trace),
            Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
        },
        Err(e) => error(StatusCode::BAD_REQUEST, &e),
    }
}

fn json_response<T: serde::Serialize + ?Sized>(status: StatusCode, value: &T) -> AdminResponse {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| empty(StatusCode::INTERNAL_SERVER_ERROR))
}

fn error(status: StatusCode, message: &str) -> AdminResponse {
    json_response(status, &json!({ "error": message }))
}

fn text(status: StatusCode, body: &'static str) -> AdminResponse {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap_or_else(|_| empty(StatusCode::INTERNAL_SERVER_ERROR))
}

fn empty(status: StatusCode) -> AdminResponse {
    let mut r = Response::new(Full::new(Bytes::new()));
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
