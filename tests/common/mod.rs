//! Helpers for tests that run the real `pointsman` binary: free ports,
//! named upstreams on 127.0.0.1:0 (slow paths and an upgrade echo), the
//! child process with its log, an HTTP client, and polling with deadlines.
#![allow(dead_code)]

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::future::Future;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// A port that was free a moment ago (bound on 127.0.0.1:0, then released).
pub fn free_port() -> u16 {
    let l = StdListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// A test upstream that answers every request with its name.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub name: &'static str,
    /// Requests to `/slow` that have arrived.
    pub slow_started: Arc<AtomicUsize>,
}

/// Starts an upstream: `GET /slow?ms=N` waits N ms (default 1500); an
/// `Upgrade` request gets 101 and its stream is echoed; anything else
/// gets 200 with the name as the body.
pub async fn upstream(name: &'static str) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let slow_started = Arc::new(AtomicUsize::new(0));
    let started = slow_started.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let started = started.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| answer(name, started.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Upstream {
        addr,
        name,
        slow_started,
    }
}

async fn answer(
    name: &'static str,
    started: Arc<AtomicUsize>,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.headers().contains_key(header::UPGRADE) {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let (mut r, mut w) = tokio::io::split(TokioIo::new(up));
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        let resp = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "echo")
            .body(Full::new(Bytes::new()))
            .expect("101");
        return Ok(resp);
    }
    if req.uri().path() == "/slow" {
        started.fetch_add(1, Ordering::SeqCst);
        let ms = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("ms="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(1500);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    Ok(Response::new(Full::new(Bytes::from_static(
        name.as_bytes(),
    ))))
}

/// A rule file: one listener, the admin API, upstreams `a` and `b`, and a
/// catch-all route to `to`.
pub fn rules(listen: u16, admin: u16, a: &Upstream, b: &Upstream, to: &str) -> String {
    format!(
        r#"listen:
  - bind: "127.0.0.1:{listen}"
admin:
  bind: "127.0.0.1:{admin}"
limits:
  drain_timeout: 5s
upstreams:
  a:
    endpoints: ["{a}"]
  b:
    endpoints: ["{b}"]
routes:
  - name: main
    match: {{ path_prefix: / }}
    to: {to}
"#,
        a = a.addr,
        b = b.addr,
    )
}

/// Writes `text` to a hidden temporary file next to `path`, then renames it
/// over `path` (an editor's atomic save).
pub fn write_atomic(path: &Path, text: &str) {
    let name = path.file_name().expect("file name").to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).expect("write temp");
    std::fs::rename(&tmp, path).expect("rename");
}

/// The running binary; killed on drop, its log printed if the test failed.
#[derive(Debug)]
pub struct Pointsman {
    pub child: Child,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub log: PathBuf,
    _logdir: tempfile::TempDir,
}

impl Pointsman {
    /// Starts `pointsman run --config config` and waits for `/readyz`.
    pub async fn start(config: &Path, listen: u16, admin: u16) -> Pointsman {
        let logdir = tempfile::tempdir().expect("tempdir");
        let log = logdir.path().join("pointsman.log");
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_pointsman"))
            .arg("run")
            .arg("--config")
            .arg(config)
            .args(["--access-log", "off", "--threads", "2"])
            .env("POINTSMAN_LOG", "info,reload=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawn pointsman");
        let p = Pointsman {
            child,
            listen: SocketAddr::from(([127, 0, 0, 1], listen)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin)),
            log,
            _logdir: logdir,
        };
        let client = client();
        let url = p.admin_url("/readyz");
        let ready = eventually(Duration::from_secs(10), || async {
            matches!(get(&client, &url).await, Ok((StatusCode::OK, _)))
        })
        .await;
        assert!(ready, "pointsman did not get ready:\n{}", p.log_text());
        p
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal (`HUP`, `TERM`, `INT`) to the process.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the process to exit, up to `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `GET /config`.
    pub async fn config(&self) -> serde_json::Value {
        let (status, body) = get(&client(), &self.admin_url("/config"))
            .await
            .expect("GET /config");
        assert_eq!(status, StatusCode::OK);
        serde_json::from_str(&body).expect("config JSON")
    }

    /// `POST /reload`: the status and the JSON body.
    pub async fn post_reload(&self) -> (StatusCode, serde_json::Value) {
        let req = Request::post(self.admin_url("/reload"))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let resp = client().request(req).await.expect("POST /reload");
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, serde_json::from_slice(&body).expect("reload JSON"))
    }

    /// The active generation.
    pub async fn generation(&self) -> u64 {
        self.config().await["generation"]
            .as_u64()
            .expect("generation")
    }
}

impl Drop for Pointsman {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- pointsman log ---\n{}", self.log_text());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A keep-alive HTTP/1 client.
pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// `GET url`: the status and the body as text.
pub async fn get(client: &HttpClient, url: &str) -> Result<(StatusCode, String), String> {
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
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
