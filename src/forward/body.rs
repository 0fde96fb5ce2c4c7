//! Bodies as the pipeline sees them, whatever the wire: [`ProxyBody`] for
//! anything streamed either way, and [`RequestBody`] for a client's request
//! body (read a prefix for inspection, hold small bodies, stream the rest
//! byte-identical).
//!
//! The server hands the client's body over as a [`ProxyBody`] whose errors
//! are [`ClientBodyError`]s, so a malformed or aborted request body is told
//! apart from an upstream failure wherever it surfaces.

use bytes::Bytes;
use crossbeam_queue::ArrayQueue;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

/// A boxed, thread-safe error (the error type of [`ProxyBody`]).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body streamed to or from a peer.
pub type ProxyBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// How long body inspection may wait for the body.
pub const INSPECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The client's request body failed (malformed chunked framing, an abort,
/// a stream reset): the client's fault, never an upstream's (SPEC 5.1).
#[derive(Debug, thiserror::Error)]
#[error("client request body: {0}")]
pub struct ClientBodyError(#[source] pub BoxError);

impl ClientBodyError {
    /// Whether `e`, or anything in its source chain, is a client body error.
    pub fn is_in(e: &(dyn std::error::Error + 'static)) -> bool {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(s) = source {
            if s.is::<ClientBodyError>() {
                return true;
            }
            source = s.source();
        }
        false
    }
}

/// How the client's streamed request body is doing while it is sent
/// upstream. The response that comes back shares it: if that response is
/// cut short because the request body broke, the upstream is not to blame
/// (SPEC 5.1), whatever error the cut shows as; and a request timeout
/// while the proxy waits for the client's next bytes is the client's
/// (a slow upload), not the upstream's.
#[derive(Debug, Clone, Default)]
pub struct BodyFailed(Arc<BodyWatch>);

#[derive(Debug, Default)]
struct BodyWatch {
    failed: AtomicBool,
    /// The upstream side asked for more and the client has not sent it.
    waiting: AtomicBool,
}

impl BodyFailed {
    /// Whether the request body failed.
    pub fn is_set(&self) -> bool {
        self.0.failed.load(Ordering::Relaxed)
    }

    /// Whether the send is waiting for the client's next bytes (the body
    /// is neither done nor held back by the upstream).
    pub fn waiting_on_client(&self) -> bool {
        self.0.waiting.load(Ordering::Relaxed)
    }
}

pin_project_lite::pin_project! {
    /// A streamed request body that sets its [`BodyFailed`] on an error.
    pub struct Watched {
        #[pin]
        inner: ProxyBody,
        failed: BodyFailed,
    }
}

impl Watched {
    /// Watches `inner`; the flag is shared with whoever keeps the clone.
    pub fn new(inner: ProxyBody, failed: BodyFailed) -> Watched {
        Watched { inner, failed }
    }
}

impl Body for Watched {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        let watch = &this.failed.0;
        match &polled {
            Poll::Pending => watch.waiting.store(true, Ordering::Relaxed),
            Poll::Ready(Some(Err(_))) => {
                watch.failed.store(true, Ordering::Relaxed);
                watch.waiting.store(false, Ordering::Relaxed);
            }
            Poll::Ready(_) => watch.waiting.store(false, Ordering::Relaxed),
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A held body as a [`ProxyBody`] ([`empty`] when there are no bytes).
pub fn full(bytes: Bytes) -> ProxyBody {
    if bytes.is_empty() {
        return empty();
    }
    http_body_util::Full::new(bytes)
        .map_err(|never| match never {})
        .boxed()
}

/// No body, as a [`ProxyBody`] that allocates nothing: the body and its
/// error mapping take no room, and a box of nothing is no allocation.
/// Most requests (every GET) and many responses have no body.
pub fn empty() -> ProxyBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

/// A request body as the pipeline holds it.
#[derive(Debug)]
pub enum RequestBody {
    /// No body, or one held in full: can be sent any number of times.
    Held(Bytes),
    /// A body still streaming (maybe after an already-read prefix): one use.
    Stream(Prefixed),
}

impl RequestBody {
    /// Wraps an unread body.
    pub fn streaming(body: ProxyBody) -> RequestBody {
        if body.is_end_stream() {
            RequestBody::Held(Bytes::new())
        } else {
            RequestBody::Stream(Prefixed::new(body))
        }
    }

    /// Whether reading the body for inspection already failed (the error is
    /// kept and handed on when the body is sent).
    pub fn failed(&self) -> bool {
        matches!(self, RequestBody::Stream(p) if p.failed.is_some())
    }

    /// The held bytes, if the body can be resent.
    pub fn held(&self) -> Option<&Bytes> {
        match self {
            RequestBody::Held(b) => Some(b),
            RequestBody::Stream(_) => None,
        }
    }

    /// Reads up to `limit` bytes within [`INSPECT_TIMEOUT`]. A body that
    /// ends within the limit is held; otherwise the read prefix is put back
    /// in front of the rest of the stream. A read error also keeps what was
    /// read, so the upstream request fails the same way.
    pub async fn inspect(self, limit: usize) -> RequestBody {
        match self {
            RequestBody::Stream(p) => p.inspect(limit).await,
            held => held,
        }
    }

    /// Lends a streamed body to the next send, so that it can be taken
    /// back if that send never reads it (`None` for a held body: it can be
    /// sent again anyway).
    pub fn lend(&mut self) -> Option<Unread> {
        let RequestBody::Stream(_) = self else {
            return None;
        };
        let RequestBody::Stream(stream) = std::mem::replace(self, RequestBody::Held(Bytes::new()))
        else {
            return None;
        };
        let body = stream.boxed();
        let lent = Lent {
            end: body.is_end_stream(),
            hint: body.size_hint(),
            slot: Arc::new(ArrayQueue::new(1)),
            body: None,
        };
        // A new queue of one has room.
        let _ = lent.slot.push(body);
        let unread = Unread(lent.slot.clone());
        *self = RequestBody::Stream(Prefixed::new(lent.boxed()));
        Some(unread)
    }

    /// The body for one send; a stream is capped at `max` bytes (0 = no
    /// cap).
    pub fn into_proxy_body(self, max: u64) -> ProxyBody {
        match self {
            RequestBody::Held(b) => full(b),
            RequestBody::Stream(s) if max > 0 => {
                http_body_util::Limited::new(s, usize::try_from(max).unwrap_or(usize::MAX)).boxed()
            }
            RequestBody::Stream(s) => s.boxed(),
        }
    }
}

/// A streamed body lent to one send: until the send reads it, it can be
/// taken back (SPEC 6: a streamed body of a request that failed to
/// connect, or found no healthy endpoint, was never read and fails over to
/// the fallback).
pub struct Unread(Arc<ArrayQueue<ProxyBody>>);

impl std::fmt::Debug for Unread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unread")
            .field("unread", &!self.0.is_empty())
            .finish()
    }
}

impl Unread {
    /// The body, if the send never started reading it.
    pub fn take_back(self) -> Option<ProxyBody> {
        self.0.pop()
    }
}

/// The lent side of an [`Unread`]: takes the body on its first read and
/// answers `is_end_stream` and `size_hint` as the body did when lent.
struct Lent {
    slot: Arc<ArrayQueue<ProxyBody>>,
    body: Option<ProxyBody>,
    end: bool,
    hint: SizeHint,
}

impl Body for Lent {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.body.is_none() {
            this.body = this.slot.pop();
        }
        match &mut this.body {
            Some(body) => Pin::new(body).poll_frame(cx),
            // Taken back while still being sent: never end it as if whole.
            None => Poll::Ready(Some(Err("the request body was taken back".into()))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().map_or(self.end, Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body.as_ref().map_or(self.hint, Body::size_hint)
    }
}

pin_project_lite::pin_project! {
    /// An already-read prefix followed by the rest of the stream.
    pub struct Prefixed {
        prefix: VecDeque<Bytes>,
        prefix_len: usize,
        // A read error met while inspecting, handed on after the prefix.
        failed: Option<BoxError>,
        #[pin]
        rest: ProxyBody,
    }
}

impl std::fmt::Debug for Prefixed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prefixed")
            .field("prefix_len", &self.prefix_len)
            .finish_non_exhaustive()
    }
}

impl Prefixed {
    fn new(rest: ProxyBody) -> Self {
        Prefixed {
            prefix: VecDeque::new(),
            prefix_len: 0,
            failed: None,
            rest,
        }
    }

    async fn inspect(mut self, limit: usize) -> RequestBody {
        let read = async {
            while self.prefix_len <= limit {
                match self.rest.frame().await {
                    None => return true,
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            self.prefix_len += data.len();
                            self.prefix.push_back(data);
                        }
                        // Trailers of an inspected body are dropped.
                    }
                    Some(Err(e)) => {
                        self.failed = Some(e);
                        return false;
                    }
                }
            }
            false
        };
        let ended = tokio::time::timeout(INSPECT_TIMEOUT, read)
            .await
            .unwrap_or(false);
        if ended && self.prefix_len <= limit {
            let mut buf = Vec::with_capacity(self.prefix_len);
            for chunk in &self.prefix {
                buf.extend_from_slice(chunk);
            }
            RequestBody::Held(Bytes::from(buf))
        } else {
            RequestBody::Stream(self)
        }
    }
}

impl Body for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if let Some(chunk) = this.prefix.pop_front() {
            *this.prefix_len -= chunk.len();
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if let Some(e) = this.failed.take() {
            return Poll::Ready(Some(Err(e)));
        }
        this.rest.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty() && self.failed.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self.rest.size_hint();
        let n = self.prefix_len as u64;
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(n));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(n));
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A streamed body of ready chunks, with no length known up front.
    struct Chunks(VecDeque<&'static str>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            let next = self.get_mut().0.pop_front();
            Poll::Ready(next.map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes())))))
        }
    }

    fn stream() -> RequestBody {
        RequestBody::streaming(Chunks(["ab", "cd"].into()).boxed())
    }

    async fn text(body: ProxyBody) -> String {
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[tokio::test]
    async fn a_lent_body_comes_back_whole_if_never_read() {
        let mut body = stream();
        let unread = body.lend().expect("a stream is lent");
        // The send failed before reading: the lent side is dropped unread.
        drop(body.into_proxy_body(0));
        let back = unread.take_back().expect("never read");
        assert_eq!(text(back).await, "abcd");
    }

    #[tokio::test]
    async fn a_lent_body_once_read_is_not_taken_back() {
        let mut body = stream();
        let unread = body.lend().expect("a stream is lent");
        let mut sent = body.into_proxy_body(0);
        let first = sent.frame().await.expect("a frame").expect("data");
        assert_eq!(first.into_data().ok(), Some(Bytes::from_static(b"ab")));
        assert!(unread.take_back().is_none());
        assert_eq!(text(sent).await, "cd");
    }

    #[test]
    fn a_held_body_is_not_lent() {
        let mut body = RequestBody::Held(Bytes::from_static(b"x"));
        assert!(body.lend().is_none());
        assert_eq!(body.held(), Some(&Bytes::from_static(b"x")));
    }

    #[test]
    fn an_empty_body_ends_at_once_and_takes_no_room() {
        let body = empty();
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
        let held = full(Bytes::new());
        assert!(held.is_end_stream());
        assert_eq!(held.size_hint().exact(), Some(0));
        // What `empty` boxes is zero-sized, so boxing it allocates nothing.
        let inner = http_body_util::Empty::<Bytes>::new().map_err(|never| match never {});
        assert_eq!(std::mem::size_of_val(&inner), 0);
    }
}
