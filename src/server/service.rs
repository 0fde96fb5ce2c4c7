//! The hyper service of one connection: translates a hyper request into the
//! pipeline's types (the body as a [`ProxyBody`] whose errors are the
//! client's, an Upgrade as a [`PendingUpgrade`]) and counts the request in
//! flight on its connection until hyper is done with it, however it ends.

use super::sweep::Watch;
use crate::forward::body::{BoxError, ClientBodyError, ProxyBody, empty};
use crate::forward::headers;
use crate::forward::tunnel::{PendingUpgrade, UpgradedIo};
use crate::pipeline::{self, ConnInfo};
use crate::runtime::Live;
use http::{Request, Response};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

/// One connection's state shared by its requests.
#[derive(Debug)]
pub(super) struct Conn {
    pub(super) info: ConnInfo,
    /// Requests in flight, activity, and what the sweeper asks.
    pub(super) watch: Arc<Watch>,
}

/// Counts a request in flight until dropped, also when hyper drops the
/// request's future (an HTTP/2 RST_STREAM, a closed connection).
struct InFlight(Arc<Conn>);

impl InFlight {
    fn new(conn: Arc<Conn>) -> Self {
        conn.watch.in_flight.fetch_add(1, Ordering::Relaxed);
        conn.watch.started();
        InFlight(conn)
    }
}

/// The connection's facts, for the pipeline.
impl std::ops::Deref for InFlight {
    type Target = ConnInfo;

    fn deref(&self) -> &ConnInfo {
        &self.0.info
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.watch.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The hyper service for one connection. Its future is the request's own
/// (not boxed): hyper keeps it in a slot it allocates once per connection,
/// where boxing it here would copy the whole pipeline's state (~6 KB) into
/// a new allocation for every request. The pipeline's future owns the
/// snapshot and the in-flight count, so no async block wraps it here.
pub(super) fn proxy_service(
    live: Arc<Live>,
    conn: Arc<Conn>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<ProxyBody>,
    Error = Infallible,
    Future = Answered<impl Future<Output = Response<ProxyBody>> + Send + 'static>,
> + Clone
+ Send
+ Unpin
+ 'static {
    hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let in_flight = InFlight::new(conn.clone());
        let upgrade = (req.version() == http::Version::HTTP_11
            && headers::is_upgrade(req.headers()))
        .then(|| client_upgrade(&mut req));
        // Most requests have no body: theirs is `empty`, no allocation.
        let req = req.map(|body| match body.is_end_stream() {
            true => empty(),
            false => body
                .map_err(|e| BoxError::from(ClientBodyError(e.into())))
                .boxed(),
        });
        Answered {
            inner: pipeline::serve(live.snapshot(), req, upgrade, in_flight),
        }
    })
}

pin_project_lite::pin_project! {
    /// A request's future as hyper's service has it: one that never fails.
    pub(super) struct Answered<F> {
        #[pin]
        inner: F,
    }
}

impl<F: Future<Output = Response<ProxyBody>>> Future for Answered<F> {
    type Output = Result<Response<ProxyBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx).map(Ok)
    }
}

/// A request's future, boxed. hyper spawns each HTTP/2 stream as a task,
/// and tokio moves a task's future when it spawns it and writes over it
/// twice when it ends; a box is moved once, into the box.
pub(super) type BoxedResponse =
    Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

/// The client side of an Upgrade request.
fn client_upgrade(req: &mut Request<Incoming>) -> PendingUpgrade {
    let on = hyper::upgrade::on(req);
    Box::pin(async move {
        let io = on.await?;
        Ok(Box::new(TokioIo::new(io)) as Box<dyn UpgradedIo>)
    })
}
