//! Shared integration-test support, compiled into every test binary (hence
//! `dead_code` allowed): hand-built snapshots served by the proxy
//! in-process and a hyper client for it, here; test upstreams in
//! [`upstream`]; the real binary and CLI runs in [`binary`]; `pointsman
//! check` in [`check`]; a raw HTTP/1.1 client in [`http`]; Prometheus
//! exposition parsing in [`prom`]; a real gRPC stack in [`grpc`]; a
//! backend recording raw requests in [`recorder`]; hand-built HTTP/2 frames
//! in [`h2raw`]; a real `redis-server` in [`redis`].
#![allow(dead_code)]

pub mod binary;
pub mod check;
pub mod grpc;
pub mod h2raw;
pub mod http;
pub mod prom;
pub mod recorder;
pub mod redis;
pub mod upstream;

#[allow(unused_imports)]
pub use upstream::{Mode, Seen, TestUpstream, h2_upstream, upstream};

use ::http::Request;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioExecutor;
use pointsman::compile::Config;
use pointsman::runtime::{Live, Runtime};
use pointsman::server::Server;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A rule file for an in-process proxy, built as the YAML a user writes, so
/// tests never depend on how a config is represented inside. Fragments are
/// the entries of a YAML flow mapping (`name: a, to: up`).
#[derive(Debug, Clone)]
pub struct Rules {
    listen: Option<String>,
    upstreams: String,
    routes: String,
    fallback: Option<String>,
    limits: Vec<(String, String)>,
    top: String,
}

impl Default for Rules {
    /// One listener on 127.0.0.1:0, the admin on 127.0.0.1:0, short test
    /// limits (`header_read_timeout: 300ms`, `drain_timeout: 1s`).
    fn default() -> Self {
        Rules {
            listen: None,
            upstreams: String::new(),
            routes: String::new(),
            fallback: None,
            limits: vec![
                ("header_read_timeout".into(), "300ms".into()),
                ("drain_timeout".into(), "1s".into()),
            ],
            top: String::new(),
        }
    }
}

impl Rules {
    /// No routes, no upstreams.
    pub fn new() -> Rules {
        Rules::default()
    }

    /// An upstream over `addrs` with short test timeouts (`connect_timeout:
    /// 500ms`, `request_timeout: 5s`).
    pub fn upstream(self, name: &str, addrs: &[SocketAddr]) -> Rules {
        self.upstream_with(name, addrs, "")
    }

    /// [`Rules::upstream`] with more settings (`request_timeout: 200ms`,
    /// which override the test defaults).
    pub fn upstream_with(self, name: &str, addrs: &[SocketAddr], extra: &str) -> Rules {
        let eps: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        self.upstream_at(name, &eps, extra)
    }

    /// [`Rules::upstream_with`] over endpoints as written in a rule file
    /// (`https://127.0.0.1:8443`).
    pub fn upstream_at(mut self, name: &str, endpoints: &[String], extra: &str) -> Rules {
        let eps: Vec<String> = endpoints.iter().map(|a| format!("\"{a}\"")).collect();
        let mut fields = vec![format!("endpoints: [{}]", eps.join(", "))];
        for (k, v) in [("connect_timeout", "500ms"), ("request_timeout", "5s")] {
            if !extra.contains(k) {
                fields.push(format!("{k}: {v}"));
            }
        }
        if !extra.is_empty() {
            fields.push(extra.to_string());
        }
        let _ = writeln!(self.upstreams, "  {name}: {{ {} }}", fields.join(", "));
        self
    }

    /// A route, e.g. `name: beta, match: { path_prefix: /v1 }, to: up`.
    pub fn route(mut self, fields: &str) -> Rules {
        let _ = writeln!(self.routes, "  - {{ {fields} }}");
        self
    }

    /// The fallback, e.g. `to: up` or `to: good, failover: true`.
    pub fn fallback(mut self, fields: &str) -> Rules {
        self.fallback = Some(fields.to_string());
        self
    }

    /// A limit (replacing a test default).
    pub fn limit(mut self, key: &str, value: &str) -> Rules {
        self.limits.retain(|(k, _)| k != key);
        self.limits.push((key.into(), value.into()));
        self
    }

    /// The one listener on TLS with the certificate and key files at
    /// (absolute) `cert` and `key`, ALPN `h2` and `http/1.1`.
    pub fn tls(mut self, cert: &std::path::Path, key: &std::path::Path) -> Rules {
        self.listen = Some(format!(
            "listen:\n  - bind: \"127.0.0.1:0\"\n    tls:\n      certificates: [{{ cert: \"{}\", key: \"{}\" }}]\n      alpn: [h2, http/1.1]\n",
            cert.display(),
            key.display()
        ));
        self
    }

    /// A top-level line, e.g. `trusted_proxies: [127.0.0.0/8]`.
    pub fn top(mut self, line: &str) -> Rules {
        let _ = writeln!(self.top, "{line}");
        self
    }

    /// The rule file.
    pub fn text(&self) -> String {
        let mut t = self
            .listen
            .clone()
            .unwrap_or_else(|| "listen:\n  - bind: \"127.0.0.1:0\"\n".into());
        t.push_str("admin: { bind: \"127.0.0.1:0\" }\n");
        t.push_str(&self.top);
        if !self.upstreams.is_empty() {
            let _ = write!(t, "upstreams:\n{}", self.upstreams);
        }
        if !self.routes.is_empty() {
            let _ = write!(t, "routes:\n{}", self.routes);
        }
        if let Some(f) = &self.fallback {
            let _ = writeln!(t, "fallback: {{ {f} }}");
        }
        let limits: Vec<String> = self
            .limits
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let _ = writeln!(t, "limits: {{ {} }}", limits.join(", "));
        t
    }

    /// The compiled config; panics with the diagnostics when it is refused.
    pub fn config(&self) -> Config {
        let text = self.text();
        match pointsman::compile::compile_text("test.yaml", &text) {
            Ok(c) => c.config,
            Err(errors) => {
                let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
                panic!("test rules refused:\n{}\n---\n{text}", lines.join("\n"))
            }
        }
    }
}

/// The proxy, running; dropping `stop` shuts it down.
pub struct Running {
    pub addr: SocketAddr,
    pub live: Arc<Live>,
    pub stop: tokio::sync::oneshot::Sender<()>,
}

/// Compiles `rules`, links them to a fresh serving runtime (active health
/// checks run, as in `pointsman run`) and serves on 127.0.0.1:0.
pub async fn start(rules: Rules) -> Running {
    let runtime = Runtime::serving(None);
    let live = Live::new(runtime.link(rules.config()), runtime);
    let server = Server::bind(live.clone(), 1).unwrap();
    let addr = server.local_addrs().unwrap()[0];
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(async move {
        let _ = rx.await;
    }));
    Running { addr, live, stop }
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
