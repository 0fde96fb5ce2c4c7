//! The floor under Pointsman's per-request cost: the least a reverse proxy
//! built on the same stack (tokio, hyper 1 HTTP/1.1 server and client
//! connections, mimalloc: the library's allocator, linked through its
//! runtime builder) can do per request.
//!
//! No routing, no header rewriting beyond `X-Forwarded-For`, no metrics,
//! no timeouts, no retries, no h2c detection: accept, read the request,
//! send it on a pooled upstream connection, read the whole response, write
//! it back. `benches/e2e.sh` runs it as the `hyper-floor` target, so the
//! table shows how much of the gap to NGINX is the stack and how much is
//! Pointsman's own work. It is a measuring stick, not a product.
//!
//! ```sh
//! cargo run --release --example hyper_floor -- 127.0.0.1:8081 127.0.0.1:8080 [THREADS]
//! ```
//!
//! With `origin` for the upstream it answers every request itself with the
//! benches' backend answer (`200`, `text/plain`, `hello from the backend`):
//! the server half of the stack alone, to set against NGINX serving the
//! same answer (`benches/e2e.sh`'s `hyper-origin` and `backend` rows).

use bytes::Bytes;
use crossbeam_queue::SegQueue;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};

/// Idle upstream connections, lock-free (as Pointsman's own pool).
type Pool = Arc<SegQueue<SendRequest<Incoming>>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: hyper_floor LISTEN UPSTREAM|origin [THREADS]";
    let listen: SocketAddr = args.next().ok_or(usage)?.parse()?;
    let upstream = args.next().ok_or(usage)?;
    let threads: usize = args.next().map(|t| t.parse()).transpose()?.unwrap_or(1);
    // One thread: the event loop of a Pointsman serving thread; more:
    // tokio's work-stealing runtime.
    let runtime = if threads > 1 {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    } else {
        pointsman::app::runtime()?
    };
    match upstream.as_str() {
        "origin" => runtime.block_on(origin(listen)),
        addr => runtime.block_on(serve(listen, addr.parse()?)),
    }
}

/// Answers every request itself: hyper's HTTP/1.1 server and tokio, nothing
/// else.
async fn origin(listen: SocketAddr) -> Result<(), BoxError> {
    let listener = TcpListener::bind(listen).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let service = service_fn(|_req: Request<Incoming>| async {
                let mut resp =
                    Response::new(Full::new(Bytes::from_static(b"hello from the backend\n")));
                let plain = hyper::header::HeaderValue::from_static("text/plain");
                resp.headers_mut()
                    .insert(hyper::header::CONTENT_TYPE, plain);
                Ok::<_, std::convert::Infallible>(resp)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn serve(listen: SocketAddr, upstream: SocketAddr) -> Result<(), BoxError> {
    let listener = TcpListener::bind(listen).await?;
    let pool: Pool = Arc::default();
    loop {
        let (stream, peer) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let pool = pool.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| proxy(req, peer, upstream, pool.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn proxy(
    mut req: Request<Incoming>,
    peer: SocketAddr,
    upstream: SocketAddr,
    pool: Pool,
) -> Result<Response<Full<Bytes>>, BoxError> {
    let pooled = pool.pop();
    let mut sender = match pooled {
        Some(s) => s,
        None => connect(upstream).await?,
    };
    // Ready once the connection task has seen the previous response end.
    if sender.ready().await.is_err() {
        sender = connect(upstream).await?;
    }
    let xff = hyper::header::HeaderValue::from_str(&peer.ip().to_string())?;
    req.headers_mut().append("x-forwarded-for", xff);
    let (parts, body) = sender.send_request(req).await?.into_parts();
    let body = body.collect().await?.to_bytes();
    pool.push(sender);
    Ok(Response::from_parts(parts, Full::new(body)))
}

async fn connect(upstream: SocketAddr) -> Result<SendRequest<Incoming>, BoxError> {
    let stream = TcpStream::connect(upstream).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}
