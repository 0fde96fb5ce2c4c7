//! Shared integration-test support, compiled into every test binary (hence
//! `dead_code` allowed): hand-built snapshots served by the proxy
//! in-process and a hyper client for it, here; test upstreams in
//! [`upstream`]; the real binary and CLI runs in [`binary`]; `pointsman
//! check` in [`check`]; a raw HTTP/1.1 client in [`http`]; Prometheus
//! exposition parsing in [`prom`].
#![allow(dead_code)]

pub mod binary;
pub mod check;
pub mod http;
pub mod prom;
pub mod upstream;

#[allow(unused_imports)]
pub use upstream::{Mode, Seen, TestUpstream, h2_upstream, upstream};

use ::http::Request;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioExecutor;
use pointsman::router::{
    AdminSettings, Fallback, FallbackAction, Limits, Listener, Route, Settings, Snapshot,
};
use pointsman::server::{Proxy, Server};
use pointsman::upstream::{Balance, Endpoint, Protocol, Upstream, UpstreamDef};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An upstream definition over `addrs` with short test timeouts.
pub fn def(name: &str, addrs: &[SocketAddr]) -> UpstreamDef {
    UpstreamDef {
        name: name.into(),
        endpoints: addrs
            .iter()
            .map(|a| Endpoint {
                tls: false,
                authority: a.to_string(),
            })
            .collect(),
        balance: Balance::RoundRobin,
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(5),
        retries: 1,
        protocol: Protocol::Http1,
        tls: None,
        health_check: None,
        outlier: None,
    }
}

/// Test limits: short timeouts.
pub fn limits() -> Limits {
    Limits {
        header_read_timeout: Duration::from_millis(300),
        drain_timeout: Duration::from_secs(1),
        ..Limits::default()
    }
}

/// A snapshot served on 127.0.0.1:0.
pub fn snapshot(
    upstreams: Vec<UpstreamDef>,
    routes: Vec<Route>,
    fallback: Option<FallbackAction>,
    limits: Limits,
) -> Snapshot {
    Snapshot {
        upstreams: upstreams
            .into_iter()
            .map(|d| Arc::new(Upstream::new(d)))
            .collect(),
        fallback: fallback.map(|action| Fallback {
            action,
            failover: false,
        }),
        settings: Settings {
            listeners: vec![Listener {
                bind: "127.0.0.1:0".into(),
                addr: "127.0.0.1:0".parse().unwrap(),
                tls: None,
            }],
            admin: AdminSettings {
                addr: "127.0.0.1:0".parse().unwrap(),
                token_file: None,
            },
            limits,
            ..Settings::default()
        },
        ..Snapshot::from_routes(routes)
    }
}

/// The proxy, running; dropping `stop` shuts it down.
pub struct Running {
    pub addr: SocketAddr,
    pub proxy: Arc<Proxy>,
    pub stop: tokio::sync::oneshot::Sender<()>,
}

pub async fn start(snapshot: Snapshot) -> Running {
    let proxy = Proxy::new(snapshot);
    let server = Server::bind(proxy.clone()).unwrap();
    let addr = server.local_addrs().unwrap()[0];
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(async move {
        let _ = rx.await;
    }));
    Running { addr, proxy, stop }
}

pub type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

pub fn client() -> Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new())
}

/// Sends a request and collects the answer.
pub async fn send(c: &Client, req: Request<Full<Bytes>>) -> (::http::response::Parts, Bytes) {
    let resp = c.request(req).await.expect("response");
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (parts, body)
}

pub fn get(addr: SocketAddr, path: &str) -> ::http::request::Builder {
    Request::get(format!("http://{addr}{path}"))
}

/// Writes raw bytes and reads until the peer closes or `wait` passes.
pub async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET url`: the status and the body as text.
pub async fn fetch(client: &Client, url: &str) -> Result<(::http::StatusCode, String), String> {
    let req = Request::get(url)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Polls `check` every 10 ms until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Writes `text` to a hidden temporary file next to `path`, then renames it
/// over `path` (an editor's, or a rotation tool's, atomic save).
pub fn write_atomic(path: &std::path::Path, text: &str) {
    let name = path.file_name().expect("file name").to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).expect("write temp");
    std::fs::rename(&tmp, path).expect("rename");
}
