//! The hyper service of one connection: translates a hyper request into the
//! pipeline's types (the body as a [`ProxyBody`] whose errors are the
//! client's, an Upgrade as a [`PendingUpgrade`]) and counts the request in
//! flight on its connection until hyper is done with it, however it ends.

use crate::forward::body::{BoxError, ClientBodyError, ProxyBody};
use crate::forward::headers;
use crate::forward::tunnel::{PendingUpgrade, UpgradedIo};
use crate::pipeline::{self, ConnInfo};
use crate::runtime::Live;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// One connection's state shared by its requests.
#[derive(Debug)]
pub(super) struct Conn {
    pub(super) info: ConnInfo,
    /// Requests in flight (for the idle timeout).
    pub(super) in_flight: AtomicUsize,
    /// Whether a request head has arrived (until then the connection has
    /// the header read timeout to send one).
    pub(super) started: AtomicBool,
}

/// The hyper service for one connection.
#[derive(Debug, Clone)]
pub(super) struct ProxyService {
    live: Arc<Live>,
    conn: Arc<Conn>,
}

impl ProxyService {
    pub(super) fn new(live: Arc<Live>, conn: Arc<Conn>) -> Self {
        ProxyService { live, conn }
    }
}

/// Counts a request in flight until dropped, also when hyper drops the
/// request's future (an HTTP/2 RST_STREAM, a closed connection).
struct InFlight(Arc<Conn>);

impl InFlight {
    fn new(conn: Arc<Conn>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::Relaxed);
        if !conn.started.load(Ordering::Relaxed) {
            conn.started.store(true, Ordering::Relaxed);
        }
        InFlight(conn)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl hyper::service::Service<Request<Incoming>> for ProxyService {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        let in_flight = InFlight::new(self.conn.clone());
        let upgrade = (req.version() == http::Version::HTTP_11
            && headers::is_upgrade(req.headers()))
        .then(|| client_upgrade(&mut req));
        let req = req.map(|body| {
            body.map_err(|e| BoxError::from(ClientBodyError(e.into())))
                .boxed()
        });
        let live = self.live.clone();
        Box::pin(async move {
            let snapshot = live.snapshot();
            let resp = pipeline::serve(&snapshot, req, upgrade, &in_flight.0.info).await;
            drop(in_flight);
            Ok(resp)
        })
    }
}

/// The client side of an Upgrade request.
fn client_upgrade(req: &mut Request<Incoming>) -> PendingUpgrade {
    let on = hyper::upgrade::on(req);
    Box::pin(async move {
        let io = on.await?;
        Ok(Box::new(TokioIo::new(io)) as Box<dyn UpgradedIo>)
    })
}
