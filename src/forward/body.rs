//! Request bodies: read a prefix for inspection, hold small bodies, stream
//! the rest byte-identical.

use crate::upstream::{BoxError, ProxyBody, full};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::body::{Body, Frame, SizeHint};
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// How long body inspection may wait for the body.
pub const INSPECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A request body as the pipeline holds it.
#[derive(Debug)]
pub enum RequestBody {
    /// No body, or one held in full: can be sent any number of times.
    Held(Bytes),
    /// A body still streaming (maybe after an already-read prefix): one use.
    Stream(Prefixed),
}

impl RequestBody {
    /// The held bytes, if the body can be resent.
    pub fn held(&self) -> Option<&Bytes> {
        match self {
            RequestBody::Held(b) => Some(b),
            RequestBody::Stream(_) => None,
        }
    }

    /// The body for one send; a stream is capped at `max` bytes (0 = no cap).
    pub fn into_proxy_body(self, max: u64) -> ProxyBody {
        match self {
            RequestBody::Held(b) => full(b),
            RequestBody::Stream(s) if max > 0 => {
                http_body_util::Limited::new(s, usize::try_from(max).unwrap_or(usize::MAX)).boxed()
            }
            RequestBody::Stream(s) => s.map_err(BoxError::from).boxed(),
        }
    }
}

/// Wraps an unread body.
pub fn streaming(body: Incoming) -> RequestBody {
    if body.is_end_stream() {
        RequestBody::Held(Bytes::new())
    } else {
        RequestBody::Stream(Prefixed {
            prefix: VecDeque::new(),
            prefix_len: 0,
            rest: body,
        })
    }
}

/// Reads up to `limit` bytes within [`INSPECT_TIMEOUT`]. A body that ends
/// within the limit is held; otherwise the read prefix is put back in front
/// of the rest of the stream. A read error also keeps what was read, so the
/// upstream sees the same failure.
pub async fn inspect(body: Incoming, limit: usize) -> RequestBody {
    match streaming(body) {
        RequestBody::Stream(p) => inspect_prefixed(p, limit).await,
        held => held,
    }
}

/// [`inspect`] on a body that may already have a prefix read.
pub async fn inspect_prefixed(mut p: Prefixed, limit: usize) -> RequestBody {
    let read = async {
        while p.prefix_len <= limit {
            match p.rest.frame().await {
                None => return true,
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        p.prefix_len += data.len();
                        p.prefix.push_back(data);
                    }
                    // Trailers of an inspected body are dropped.
                }
                Some(Err(_)) => return false,
            }
        }
        false
    };
    let ended = tokio::time::timeout(INSPECT_TIMEOUT, read)
        .await
        .unwrap_or(false);
    if ended && p.prefix_len <= limit {
        let mut buf = Vec::with_capacity(p.prefix_len);
        for chunk in &p.prefix {
            buf.extend_from_slice(chunk);
        }
        RequestBody::Held(Bytes::from(buf))
    } else {
        RequestBody::Stream(p)
    }
}

pin_project_lite::pin_project! {
    /// An already-read prefix followed by the rest of the stream.
    #[derive(Debug)]
    pub struct Prefixed {
        prefix: VecDeque<Bytes>,
        prefix_len: usize,
        #[pin]
        rest: Incoming,
    }
}

impl Body for Prefixed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.project();
        if let Some(chunk) = this.prefix.pop_front() {
            *this.prefix_len -= chunk.len();
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        this.rest.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty() && self.rest.is_end_stream()
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
