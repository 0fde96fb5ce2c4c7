//! `pointsman demo`: two built-in upstreams (`v1`, `v2`) that answer with
//! what they received, so a new user can watch routing decisions with curl.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use std::net::SocketAddr;
use tokio::net::TcpListener;

/// The demo's rule file, used when `routes/demo.yaml` is absent.
pub const DEMO_RULES: &str = include_str!("../routes/demo.yaml");

/// The address of demo upstream `v1`.
pub const V1: &str = "127.0.0.1:9001";
/// The address of demo upstream `v2`.
pub const V2: &str = "127.0.0.1:9002";

/// curl commands printed when the demo starts.
pub const TRY: &[&str] = &[
    "curl -i http://127.0.0.1:8080/",
    "curl -i -H 'x-beta: 1' http://127.0.0.1:8080/",
    "curl -i http://127.0.0.1:8080/api/v2/users/42",
    "curl -i -X POST -d '{\"total\": 1500}' http://127.0.0.1:8080/orders",
    "curl -i http://127.0.0.1:8080/status/legacy",
    "curl -i http://127.0.0.1:8080/docs/v1/intro",
    "curl -i -H 'x-user-id: alice' http://127.0.0.1:8080/checkout",
    "curl -i -H 'x-pointsman-force: checkout-redesign=redesign' http://127.0.0.1:8080/checkout",
    "curl -i -H 'x-user-id: bob' http://127.0.0.1:8080/shop",
    "curl -i -H 'x-pointsman-force: shop=canary' http://127.0.0.1:8080/shop",
    "curl -s http://127.0.0.1:9901/routes",
    "curl -s http://127.0.0.1:9901/experiments",
    "curl -s http://127.0.0.1:9901/canaries",
    "curl -s -X POST http://127.0.0.1:9901/canaries/shop/pause",
];

/// Binds a demo upstream that answers every request with a small JSON
/// description of it, tagged with `name`.
pub async fn bind_upstream(name: &'static str, addr: &str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(crate::server::plain::serve_plain(listener, move |req| {
        std::future::ready(answer(name, &req))
    }));
    Ok(local)
}

fn answer(name: &'static str, req: &Request<Bytes>) -> Response<Bytes> {
    let header = |h: &str| {
        req.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let body = serde_json::json!({
        "upstream": name,
        "method": req.method().as_str(),
        "path": req.uri().path_and_query().map(|p| p.as_str()),
        "host": header("host"),
        "variant": header("x-pointsman-variant"),
        "x_forwarded_for": header("x-forwarded-for"),
        "request_id": header("x-request-id"),
    });
    let mut text = body.to_string();
    text.push('\n');
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("x-upstream", name)
        .body(Bytes::from(text))
        .unwrap_or_else(|_| Response::new(Bytes::new()))
}
