//! Bodies as the pipeline sees them, whatever the wire: [`ProxyBody`] for
//! anything streamed either way, and [`RequestBody`] for a client's request
//! body (read a prefix for inspection, hold small bodies, stream the rest
//! byte-identical).
//!
//! The server hands the client's body over as a [`ProxyBody`] whose errors
//! are [`ClientBodyError`]s, so a malformed or aborted request body is told
//! apart from an upstream failure wherever it surfaces.

use bytes::Bytes;
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

/// Set once the client's request body has failed while it was being sent
/// upstream. The response that comes back shares it: if that response is
/// cut short because the request body broke, the upstream is not to blame
/// (SPEC 5.1), whatever error the cut shows as.
#[derive(Debug, Clone, Default)]
pub struct BodyFailed(Arc<AtomicBool>);

impl BodyFailed {
    /// Whether the request body failed.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
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
        if let Poll::Ready(Some(Err(_))) = &polled {
            this.failed.0.store(true, Ordering::Relaxed);
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

/// A held body as a [`ProxyBody`].
pub fn full(bytes: Bytes) -> ProxyBody {
    http_body_util::Full::new(bytes)
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
            RequestBody::Stream(Prefixed {
                prefix: VecDeque::new(),
                prefix_len: 0,
                failed: None,
                rest: body,
            })
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
