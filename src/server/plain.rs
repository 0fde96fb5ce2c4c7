//! A small HTTP/1.1 server for fixed handlers (the admin API and the demo
//! upstreams): the request body is collected (up to a limit) and the
//! handler answers with a whole body.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Largest request body a plain handler gets (explain requests).
pub const MAX_PLAIN_BODY: usize = 1 << 20;

/// Serves `handler` on `listener` until the process ends.
pub async fn serve_plain<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(Request<Bytes>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Bytes>> + Send + 'static,
{
    let handler = Arc::new(handler);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let handler = handler.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let resp = match Limited::new(body, MAX_PLAIN_BODY).collect().await {
                        Ok(b) => handler(Request::from_parts(parts, b.to_bytes())).await,
                        Err(_) => {
                            let mut r = Response::new(Bytes::from_static(b"body too large\n"));
                            *r.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
                            r
                        }
                    };
                    Ok::<_, Infallible>(resp.map(Full::new))
                }
            });
            let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            b.http1()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10));
            let _ = b.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}
