//! Admit: what the proxy checks before it routes a request (limits, Host,
//! TLS server name, path) and what it derives from the connection (the
//! client address). A refused request is answered by the proxy itself and
//! never forwarded.

use super::ConnInfo;
use crate::compile::Config;
use crate::forward::{ForwardError, ProxyBody, RequestBody, headers};
use crate::routing::normalize_path;
use http::{HeaderMap, HeaderValue, Request, Uri, header};
use std::borrow::Cow;
use std::net::IpAddr;

/// What admission found out about a request.
#[derive(Debug)]
pub struct Admitted {
    /// The Host as received: the absolute-form / `:authority` authority,
    /// else the Host header.
    pub host: Option<HeaderValue>,
    /// The client address (SPEC 5).
    pub client_ip: IpAddr,
}

impl Admitted {
    /// The Host as text ("" when absent).
    pub fn host_str(&self) -> &str {
        self.host
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// Checks the request head against the limits and the connection.
pub fn admit<B>(
    config: &Config,
    req: &Request<B>,
    conn: &ConnInfo,
) -> Result<Admitted, ForwardError> {
    let limits = &config.settings.limits;
    // hyper enforces the count on HTTP/1.1; HTTP/2 is checked here.
    if req.headers().len() > limits.max_headers {
        return Err(ForwardError::HeadersTooLarge);
    }
    if req.headers().get_all(header::HOST).iter().count() > 1 {
        return Err(ForwardError::BadRequest("more than one Host"));
    }
    let host = raw_host(req);
    let host_text = match &host {
        Some(v) => v
            .to_str()
            .map_err(|_| ForwardError::BadRequest("unreadable Host"))?,
        None => "",
    };
    if let Some(sni) = &conn.sni
        && !host_text.is_empty()
        && !crate::tls::host_matches_sni(host_text, sni)
    {
        return Err(ForwardError::Misdirected);
    }
    if limits.max_body_bytes > 0
        && let Some(len) = content_length(req.headers())
        && len > limits.max_body_bytes
    {
        return Err(ForwardError::BodyTooLarge);
    }
    let trusted = &config.settings.trusted_proxies;
    Ok(Admitted {
        client_ip: headers::client_ip(conn.peer.ip(), req.headers(), trusted),
        host,
    })
}

/// The normalized path (SPEC 5); a path that climbs above `/` is a 400.
pub fn path(uri: &Uri) -> Result<Cow<'_, str>, ForwardError> {
    normalize_path(uri.path()).map_err(|_| ForwardError::BadRequest("bad path"))
}

/// The request body as routing needs it: read (up to
/// `inspect_body_bytes`) when a matcher inspects bodies, else streamed.
/// A gRPC call's body is never read ahead: it is a stream of
/// length-prefixed messages (never JSON to `body_json`), and a streaming
/// call's client may send nothing before the first answer.
/// A body held in full over `max_body_bytes` is a 413; a body that the
/// client broke while it was read is a 400.
pub async fn body(
    config: &Config,
    body: ProxyBody,
    grpc: bool,
) -> Result<RequestBody, ForwardError> {
    let limits = &config.settings.limits;
    let body = RequestBody::streaming(body);
    let body = if config.needs_body && !grpc {
        body.inspect(limits.inspect_body_bytes).await
    } else {
        body
    };
    if body.failed() {
        return Err(ForwardError::ClientBody);
    }
    if let Some(held) = body.held()
        && limits.max_body_bytes > 0
        && held.len() as u64 > limits.max_body_bytes
    {
        return Err(ForwardError::BodyTooLarge);
    }
    Ok(body)
}

/// Host as received: the absolute-form / :authority authority, else Host.
pub fn raw_host<B>(req: &Request<B>) -> Option<HeaderValue> {
    if let Some(a) = req.uri().authority() {
        return HeaderValue::from_str(a.as_str()).ok();
    }
    req.headers().get(header::HOST).cloned()
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}
