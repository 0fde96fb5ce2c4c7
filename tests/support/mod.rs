//! Test helpers: recording upstreams on 127.0.0.1:0, hand-built snapshots,
//! and the real proxy served in-process.
#![allow(dead_code)]

pub mod binary;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pointsman::router::{
    AdminSettings, Fallback, FallbackAction, Limits, Listener, Route, Settings, Snapshot,
};
use pointsman::server::{Proxy, Server};
use pointsman::upstream::{Balance, Endpoint, Protocol, Upstream, UpstreamDef};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What an upstream saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// How a test upstream behaves.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// 200 "ok", plus hop-by-hop headers that must not reach the client.
    Echo,
    /// Waits, then answers like Echo.
    Delay(Duration),
    /// Reads the head, then closes without answering.
    Close,
    /// Answers Upgrade requests with 101 and echoes the tunnel.
    Upgrade,
}

/// A running test upstream.
#[derive(Debug, Clone)]
pub struct TestUpstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub hits: Arc<AtomicUsize>,
}

impl TestUpstream {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request")
    }
}

pub async fn upstream(mode: Mode) -> TestUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = TestUpstream {
        addr: listener.local_addr().unwrap(),
        seen: Arc::default(),
        hits: Arc::default(),
    };
    let u = up.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let u = u.clone();
            tokio::spawn(async move {
                if let Mode::Close = mode {
                    let mut buf = vec![0u8; 65536];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    u.hits.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                let svc = service_fn(move |req| handle(u.clone(), mode, req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    up
}

/// An h2c (prior knowledge) upstream answering like Echo.
pub async fn h2_upstream() -> TestUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = TestUpstream {
        addr: listener.local_addr().unwrap(),
        seen: Arc::default(),
        hits: Arc::default(),
    };
    let u = up.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let u = u.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(u.clone(), Mode::Echo, req));
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    up
}

async fn handle(
    u: TestUpstream,
    mode: Mode,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    u.hits.fetch_add(1, Ordering::SeqCst);
    if let Mode::Delay(d) = mode {
        tokio::time::sleep(d).await;
    }
    let upgrade = matches!(mode, Mode::Upgrade) && req.headers().contains_key("upgrade");
    let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    u.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts.headers,
        body,
    });
    if let Some(on) = on_upgrade {
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        return Ok(Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "echo")
            .body(Full::default())
            .unwrap());
    }
    Ok(Response::builder()
        .header("connection", "x-int")
        .header("x-int", "secret")
        .header("keep-alive", "timeout=5")
        .header("x-upstream", u.addr.to_string())
        .body(Full::new(Bytes::from_static(b"ok")))
        .unwrap())
}

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
        routes,
        index: Default::default(),
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
            trusted_proxies: Vec::new(),
            state_file: None,
            limits,
        },
        experiments: Vec::new(),
        needs_body: false,
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
pub async fn send(c: &Client, req: Request<Full<Bytes>>) -> (http::response::Parts, Bytes) {
    let resp = c.request(req).await.expect("response");
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (parts, body)
}

pub fn get(addr: SocketAddr, path: &str) -> http::request::Builder {
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
