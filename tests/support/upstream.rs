//! Test upstreams on 127.0.0.1:0: recording ones driven by a [`Mode`] (for
//! the in-process proxy), named ones answering with their name (for the
//! real binary), and the plumbing they share ([`bind`], [`serve`],
//! [`in_background`]).

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

// === plumbing ===

/// A listener on 127.0.0.1:0 and its address.
pub async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    (listener, addr)
}

/// Serves HTTP/1.1 (upgrades allowed) with `handler` on every connection
/// `listener` accepts, in a background task.
pub fn serve<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    serve_counted(listener, Arc::default(), handler);
}

/// [`serve`], counting the connections it accepts in `conns`.
fn serve_counted<F, Fut>(listener: TcpListener, conns: Arc<AtomicUsize>, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            conns.fetch_add(1, Ordering::SeqCst);
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let answer = handler(req);
                    async move { Ok::<_, Infallible>(answer.await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
}

/// Runs `make` on a runtime of its own in a background thread (for tests
/// that block) and returns what it returned; the runtime, and the tasks
/// `make` spawned, live on.
pub fn in_background<T, F, Fut>(make: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let _ = tx.send(make().await);
            std::future::pending::<()>().await
        });
    });
    rx.recv().expect("background upstream")
}

/// Answers an `Upgrade` request with 101 and echoes the tunnel.
fn upgrade_echo(req: &mut Request<Incoming>) -> Response<Full<Bytes>> {
    let on = hyper::upgrade::on(req);
    tokio::spawn(async move {
        if let Ok(up) = on.await {
            let (mut r, mut w) = tokio::io::split(TokioIo::new(up));
            let _ = tokio::io::copy(&mut r, &mut w).await;
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "echo")
        .body(Full::default())
        .expect("101")
}

/// The `x-pointsman-variant` a request carries, if any.
fn variant(req: &Request<Incoming>) -> Option<String> {
    req.headers()
        .get("x-pointsman-variant")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

// === recording upstreams ===

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
    /// Waits the milliseconds of the request's `x-delay-ms` (none without
    /// it), then answers like Echo.
    DelayAsked,
    /// Reads the head, then closes without answering.
    Close,
    /// Answers Upgrade requests with 101 and echoes the tunnel.
    Upgrade,
}

/// A running recording upstream.
#[derive(Debug, Clone)]
pub struct TestUpstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub hits: Arc<AtomicUsize>,
    /// Connections accepted.
    pub conns: Arc<AtomicUsize>,
}

impl TestUpstream {
    fn new(addr: SocketAddr) -> TestUpstream {
        TestUpstream {
            addr,
            seen: Arc::default(),
            hits: Arc::default(),
            conns: Arc::default(),
        }
    }
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
    pub fn conns(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
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

/// A recording HTTP/1.1 upstream behaving as `mode` says.
pub async fn upstream(mode: Mode) -> TestUpstream {
    let (listener, addr) = bind().await;
    let up = TestUpstream::new(addr);
    let u = up.clone();
    if let Mode::Close = mode {
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(close_after_head(stream, u.clone()));
            }
        });
    } else {
        let conns = up.conns.clone();
        serve_counted(listener, conns, move |req| handle(u.clone(), mode, req));
    }
    up
}

async fn close_after_head(mut stream: TcpStream, u: TestUpstream) {
    let mut buf = vec![0u8; 65536];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    u.hits.fetch_add(1, Ordering::SeqCst);
}

/// An h2c (prior knowledge) upstream answering like Echo.
pub async fn h2_upstream() -> TestUpstream {
    let (listener, addr) = bind().await;
    let up = TestUpstream::new(addr);
    let u = up.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let u = u.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let answer = handle(u.clone(), Mode::Echo, req);
                    async move { Ok::<_, Infallible>(answer.await) }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    up
}

async fn handle(u: TestUpstream, mode: Mode, mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    u.hits.fetch_add(1, Ordering::SeqCst);
    if let Mode::Delay(d) = mode {
        tokio::time::sleep(d).await;
    }
    if let Mode::DelayAsked = mode {
        let ms = req
            .headers()
            .get("x-delay-ms")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let upgrade = matches!(mode, Mode::Upgrade) && req.headers().contains_key("upgrade");
    let switched = upgrade.then(|| upgrade_echo(&mut req));
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
    if let Some(resp) = switched {
        return resp;
    }
    Response::builder()
        .header("connection", "x-int")
        .header("x-int", "secret")
        .header("keep-alive", "timeout=5")
        .header("x-upstream", u.addr.to_string())
        .body(Full::new(Bytes::from_static(b"ok")))
        .unwrap()
}

// === named upstreams ===

/// An upstream that answers with its name.
#[derive(Debug, Clone)]
pub struct Named {
    pub addr: SocketAddr,
    pub name: &'static str,
    /// Requests to `/slow` that have arrived.
    pub slow_started: Arc<AtomicUsize>,
    /// When set, every answer is a 500 (still with the name as the body).
    pub fail: Arc<AtomicBool>,
}

/// Starts a named upstream: `GET /slow?ms=N` waits N ms (default 1500); an
/// `Upgrade` request gets 101 and its stream is echoed; anything else gets
/// 200 (500 while `fail` is set) with the name as the body and the
/// `x-pointsman-variant` it received (or `none`) as `x-seen-variant`.
pub async fn named(name: &'static str) -> Named {
    let (listener, addr) = bind().await;
    let up = Named {
        addr,
        name,
        slow_started: Arc::default(),
        fail: Arc::default(),
    };
    let (started, fail) = (up.slow_started.clone(), up.fail.clone());
    serve(listener, move |mut req| {
        let (started, fail) = (started.clone(), fail.clone());
        async move {
            if req.headers().contains_key(header::UPGRADE) {
                return upgrade_echo(&mut req);
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
            let failing = fail.load(Ordering::SeqCst);
            Response::builder()
                .status(if failing { 500 } else { 200 })
                .header("x-seen-variant", variant(&req).unwrap_or("none".into()))
                .body(Full::new(Bytes::from_static(name.as_bytes())))
                .expect("answer")
        }
    });
    up
}

/// An upstream answering 200 with `NAME|VARIANT` as the body, VARIANT being
/// the `x-pointsman-variant` it received (empty when none).
pub async fn tagged(name: &'static str) -> SocketAddr {
    let (listener, addr) = bind().await;
    serve(listener, move |req| async move {
        let body = format!("{name}|{}", variant(&req).unwrap_or_default());
        Response::new(Full::new(Bytes::from(body)))
    });
    addr
}

// === switchable upstreams (health checks) ===

/// How a [`Switch`] upstream behaves at the moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Health {
    /// 200 for `/healthz` and for requests (body: the name).
    Ok = 0,
    /// `/healthz` answers 503; requests still get 200.
    FailsHealthz = 1,
    /// Every request, `/healthz` included, gets 500.
    Answers500 = 2,
    /// Every connection is closed before an answer.
    Closes = 3,
    /// Connections are accepted and never answered.
    Blackhole = 4,
    /// Nothing listens: connections are refused.
    Refuses = 5,
}

/// An HTTP/1.1 upstream whose behaviour can be switched while it runs, and
/// that counts health probes and other requests apart.
#[derive(Debug, Clone)]
pub struct Switch {
    pub addr: SocketAddr,
    pub name: &'static str,
    mode: Arc<std::sync::atomic::AtomicU8>,
    /// `GET /healthz` received (any answer).
    pub probes: Arc<AtomicUsize>,
    /// Other requests received.
    pub requests: Arc<AtomicUsize>,
    /// The `user-agent` of the last probe.
    pub probe_agent: Arc<Mutex<Option<String>>>,
    accept: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl Switch {
    /// Starts one in `Health::Ok` on a fresh port.
    pub async fn start(name: &'static str) -> Switch {
        let (listener, addr) = bind().await;
        let s = Switch {
            addr,
            name,
            mode: Arc::default(),
            probes: Arc::default(),
            requests: Arc::default(),
            probe_agent: Arc::default(),
            accept: Arc::default(),
        };
        s.listen(listener);
        s
    }

    fn mode(&self) -> Health {
        match self.mode.load(Ordering::SeqCst) {
            0 => Health::Ok,
            1 => Health::FailsHealthz,
            2 => Health::Answers500,
            3 => Health::Closes,
            4 => Health::Blackhole,
            _ => Health::Refuses,
        }
    }

    /// Switches to `mode` (stopping or restarting the listener as needed).
    pub async fn set(&self, mode: Health) {
        let was = self.mode();
        self.mode.store(mode as u8, Ordering::SeqCst);
        if mode == Health::Refuses && was != Health::Refuses {
            if let Some(task) = self.accept.lock().unwrap().take() {
                task.abort();
            }
            // The aborted task drops the listener at its next poll.
            tokio::time::sleep(Duration::from_millis(20)).await;
        } else if was == Health::Refuses && mode != Health::Refuses {
            let listener = TcpListener::bind(self.addr).await.expect("rebind");
            self.listen(listener);
        }
    }

    pub fn probes(&self) -> usize {
        self.probes.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn listen(&self, listener: TcpListener) {
        let s = self.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let s = s.clone();
                        async move { s.answer(req).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        *self.accept.lock().unwrap() = Some(task);
    }

    async fn answer(&self, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, String> {
        let probe = req.uri().path() == "/healthz";
        if probe {
            self.probes.fetch_add(1, Ordering::SeqCst);
            let agent = req.headers().get(header::USER_AGENT);
            *self.probe_agent.lock().unwrap() =
                agent.and_then(|v| v.to_str().ok()).map(str::to_owned);
        } else {
            self.requests.fetch_add(1, Ordering::SeqCst);
        }
        let status = match self.mode() {
            Health::Ok => 200,
            Health::FailsHealthz if probe => 503,
            Health::FailsHealthz => 200,
            Health::Answers500 => 500,
            // An error from the service: hyper closes without answering.
            Health::Closes | Health::Refuses => return Err("closed".into()),
            Health::Blackhole => std::future::pending().await,
        };
        let _ = req.into_body().collect().await;
        Ok(Response::builder()
            .status(status)
            .body(Full::new(Bytes::from_static(self.name.as_bytes())))
            .expect("answer"))
    }
}
