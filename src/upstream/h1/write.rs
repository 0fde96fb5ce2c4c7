//! The request side of an HTTP/1.1 exchange: the head encoded once, then
//! the body framed by its `Content-Length` or chunked, written as the
//! body yields it. The response may start before the body is through
//! (an early answer); whoever reads the response drives the rest.

use super::H1Error;
use crate::forward::AddedFields;
use crate::forward::body::ProxyBody;
use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, HOST, HeaderMap, HeaderName, HeaderValue};
use http::{Method, request::Parts};
use http_body::Body;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::AsyncWrite;

/// Bytes queued before they are written: enough to gather a head with a
/// held body into one write, without holding a large upload in memory.
const QUEUE_LIMIT: usize = 64 * 1024;

/// Slices given to one vectored write at most.
const MAX_SLICES: usize = 16;

/// How the request body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes are still due.
    Length(u64),
    Chunked,
}

/// A request on its way out: what is queued, the body still to be read,
/// and whether any byte has reached the connection yet (a request that
/// has not may go out again on another connection).
pub(crate) struct Outgoing {
    /// The head, until written (apart from the body's parts, so that a
    /// request without a body allocates no queue).
    head: Bytes,
    queue: VecDeque<Bytes>,
    queued: usize,
    body: ProxyBody,
    framing: Framing,
    /// The body has yielded its end (and its chunked terminator is queued).
    ended: bool,
    /// Some byte was handed to the connection.
    pub(crate) started: bool,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("queued", &self.queued)
            .field("framing", &self.framing)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl Outgoing {
    /// Encodes the head of `parts` (its URI as the request target, its
    /// headers in order, then the `added` ones) with the framing the body
    /// needs: the
    /// `Content-Length` it carries, else the body's exact size, else
    /// chunked (a known-empty body of a method without a body gets no
    /// framing header, as hyper does).
    pub(crate) fn new(
        parts: &Parts,
        added: &AddedFields,
        body: ProxyBody,
    ) -> Result<Self, H1Error> {
        Self::to_endpoint(parts, EndpointHead::default(), added, body)
    }

    /// [`Self::new`] with what the endpoint adds to the head: a CONNECT's
    /// target and a Host for a request without one. The head is borrowed,
    /// not changed: a retry to another endpoint encodes it again.
    pub(crate) fn to_endpoint(
        parts: &Parts,
        endpoint: EndpointHead<'_>,
        added: &AddedFields,
        body: ProxyBody,
    ) -> Result<Self, H1Error> {
        let (framing, add) = match declared_length(&parts.headers)? {
            Some(n) => (Framing::Length(n), Added::Nothing),
            None => match body.size_hint().exact() {
                Some(0) if !expects_body(&parts.method) => (Framing::Length(0), Added::Nothing),
                Some(n) => (Framing::Length(n), Added::Length(n)),
                None => (Framing::Chunked, Added::Chunked),
            },
        };
        let head = encode_head(parts, endpoint, added, add);
        let mut out = Outgoing {
            queued: head.len(),
            head,
            queue: VecDeque::new(),
            body,
            framing,
            ended: false,
            started: false,
        };
        if out.body.is_end_stream() {
            out.end()?;
        }
        Ok(out)
    }

    /// Writes what the body yields until all of it is written and flushed
    /// (`Ready(Ok)`), the body or the connection fails, or both wait.
    pub(crate) fn poll_drive<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut W,
    ) -> Poll<Result<(), H1Error>> {
        loop {
            self.fill(cx)?;
            if self.queued == 0 {
                if !self.ended {
                    // The body is waiting (its waker is registered).
                    return Poll::Pending;
                }
                ready!(Pin::new(&mut *io).poll_flush(cx))?;
                return Poll::Ready(Ok(()));
            }
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut count = 0;
            let parts = std::iter::once(&self.head).filter(|h| !h.is_empty());
            for (slot, chunk) in slices.iter_mut().zip(parts.chain(&self.queue)) {
                *slot = IoSlice::new(chunk);
                count += 1;
            }
            let n = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count]))?;
            if n == 0 {
                return Poll::Ready(Err(H1Error::Io(io::ErrorKind::WriteZero.into())));
            }
            self.started = true;
            self.consume(n);
        }
    }

    /// Whether everything, the body's end included, has been written.
    #[cfg(test)]
    fn is_done(&self) -> bool {
        self.ended && self.queued == 0
    }

    /// Queues what the body has ready, up to [`QUEUE_LIMIT`].
    fn fill(&mut self, cx: &mut Context<'_>) -> Result<(), H1Error> {
        while !self.ended && self.queued < QUEUE_LIMIT {
            let frame = match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => return Ok(()),
                Poll::Ready(None) => return self.end(),
                Poll::Ready(Some(Err(e))) => return Err(H1Error::RequestBody(e)),
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            match frame.into_data() {
                Ok(data) => self.data(data)?,
                Err(frame) => {
                    if let (Ok(trailers), Framing::Chunked) = (frame.into_trailers(), self.framing)
                    {
                        self.push(Bytes::from_static(b"0\r\n"));
                        let mut block = BytesMut::new();
                        encode_fields(&mut block, &trailers);
                        block.extend_from_slice(b"\r\n");
                        self.push(block.freeze());
                        self.ended = true;
                        return Ok(());
                    }
                    // Trailers of a body with a length have no place on
                    // the wire; they are dropped, as hyper does.
                }
            }
            if self.body.is_end_stream() {
                return self.end();
            }
        }
        Ok(())
    }

    fn data(&mut self, data: Bytes) -> Result<(), H1Error> {
        if data.is_empty() {
            return Ok(());
        }
        match &mut self.framing {
            Framing::Length(left) => {
                let len = data.len() as u64;
                if len > *left {
                    return Err(H1Error::Request("body longer than its Content-Length"));
                }
                *left -= len;
                self.push(data);
            }
            Framing::Chunked => {
                self.push(Bytes::from(format!("{:x}\r\n", data.len())));
                self.push(data);
                self.push(Bytes::from_static(b"\r\n"));
            }
        }
        Ok(())
    }

    /// The body ended: a length must be met; chunked gets its last chunk.
    fn end(&mut self) -> Result<(), H1Error> {
        match self.framing {
            Framing::Length(0) => {}
            Framing::Length(_) => {
                return Err(H1Error::Request("body shorter than its Content-Length"));
            }
            Framing::Chunked => self.push(Bytes::from_static(b"0\r\n\r\n")),
        }
        self.ended = true;
        Ok(())
    }

    fn push(&mut self, bytes: Bytes) {
        self.queued += bytes.len();
        self.queue.push_back(bytes);
    }

    fn consume(&mut self, mut n: usize) {
        self.queued -= n;
        let from_head = n.min(self.head.len());
        self.head.advance(from_head);
        n -= from_head;
        while n > 0 {
            let Some(front) = self.queue.front_mut() else {
                return;
            };
            if n < front.len() {
                front.advance(n);
                return;
            }
            n -= front.len();
            self.queue.pop_front();
        }
    }
}

/// The framing header the head gets beyond the request's own.
enum Added {
    Nothing,
    Length(u64),
    Chunked,
}

/// Methods whose requests are expected to carry a body: an empty one is
/// sent as `content-length: 0`.
fn expects_body(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET
            | Method::HEAD
            | Method::DELETE
            | Method::OPTIONS
            | Method::TRACE
            | Method::CONNECT
    )
}

/// The request's own `Content-Length` (the server checked the client's;
/// lines that disagree are refused rather than guessed at).
fn declared_length(headers: &HeaderMap) -> Result<Option<u64>, H1Error> {
    let mut found = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        let n = std::str::from_utf8(value.as_bytes())
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or(H1Error::Request("invalid Content-Length"))?;
        if found.is_some_and(|f| f != n) {
            return Err(H1Error::Request("Content-Length lines disagree"));
        }
        found = Some(n);
    }
    Ok(found)
}

/// What an endpoint adds to a request's head.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct EndpointHead<'a> {
    /// A CONNECT's target (authority form), in place of the URI's.
    pub(crate) authority: Option<&'a str>,
    /// The Host field of a request that has none.
    pub(crate) host: Option<&'a HeaderValue>,
}

fn encode_head(
    parts: &Parts,
    endpoint: EndpointHead<'_>,
    added: &AddedFields,
    add: Added,
) -> Bytes {
    // Origin form; authority form for CONNECT.
    let target = if parts.method == Method::CONNECT {
        endpoint
            .authority
            .or_else(|| parts.uri.authority().map(|a| a.as_str()))
    } else {
        parts.uri.path_and_query().map(|pq| pq.as_str())
    };
    let target = target.unwrap_or("/");
    let mut head = BytesMut::with_capacity(256 + 32 * (parts.headers.len() + added.len()));
    head.extend_from_slice(parts.method.as_str().as_bytes());
    head.extend_from_slice(b" ");
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    encode_fields(&mut head, &parts.headers);
    if let Some(host) = endpoint.host
        && !parts.headers.contains_key(HOST)
    {
        encode_fields(&mut head, [(&HOST, host)]);
    }
    encode_fields(&mut head, added.iter());
    match add {
        Added::Nothing => {}
        Added::Length(n) => {
            head.extend_from_slice(b"content-length: ");
            head.extend_from_slice(itoa_buf(n).as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        Added::Chunked => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    head.extend_from_slice(b"\r\n");
    head.freeze()
}

fn encode_fields<'f>(
    out: &mut BytesMut,
    fields: impl IntoIterator<Item = (&'f HeaderName, &'f HeaderValue)>,
) {
    for (name, value) in fields {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// `n` in decimal, without a heap allocation.
struct Digits {
    buf: [u8; 20],
    start: usize,
}

impl Digits {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

fn itoa_buf(mut n: u64) -> Digits {
    let mut d = Digits {
        buf: [0; 20],
        start: 20,
    };
    loop {
        d.start -= 1;
        d.buf[d.start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::NO_FIELDS;
    use crate::forward::body::full;
    use http::Request;

    fn written(req: Request<ProxyBody>) -> Result<String, H1Error> {
        written_to(req, EndpointHead::default())
    }

    fn written_to(req: Request<ProxyBody>, ep: EndpointHead<'_>) -> Result<String, H1Error> {
        let (parts, body) = req.into_parts();
        let mut out = Outgoing::to_endpoint(&parts, ep, &NO_FIELDS, body)?;
        let mut sink = Vec::new();
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        match out.poll_drive(&mut cx, &mut sink) {
            Poll::Ready(r) => r?,
            Poll::Pending => panic!("a held body never waits"),
        }
        assert!(out.is_done());
        Ok(String::from_utf8(sink).expect("utf-8"))
    }

    #[test]
    fn the_endpoint_adds_a_missing_host_and_a_connect_target() {
        let host = HeaderValue::from_static("backend:8080");
        let ep = EndpointHead {
            authority: Some("backend:8080"),
            host: Some(&host),
        };
        // A Host of its own is kept; the authority is a CONNECT's only.
        let cases = [
            (
                Method::GET,
                "/a",
                None,
                "GET /a HTTP/1.1\r\nhost: backend:8080\r\n\r\n",
            ),
            (
                Method::GET,
                "/a",
                Some("x"),
                "GET /a HTTP/1.1\r\nhost: x\r\n\r\n",
            ),
            (
                Method::CONNECT,
                "client.example:443",
                Some("x"),
                "CONNECT backend:8080 HTTP/1.1\r\nhost: x\r\n\r\n",
            ),
        ];
        for (method, target, own_host, want) in cases {
            let mut req = Request::builder().method(method).uri(target);
            if let Some(h) = own_host {
                req = req.header("host", h);
            }
            let req = req.body(full(Bytes::new())).expect("request");
            assert_eq!(written_to(req, ep).expect(target), want);
        }
    }

    #[test]
    fn a_get_has_no_framing_and_a_post_its_length() {
        let get = Request::get("/a?b=1")
            .header("host", "x")
            .body(full(Bytes::new()))
            .expect("request");
        assert_eq!(
            written(get).expect("get"),
            "GET /a?b=1 HTTP/1.1\r\nhost: x\r\n\r\n"
        );
        let post = Request::post("/p")
            .body(full(Bytes::from_static(b"hello")))
            .expect("request");
        assert_eq!(
            written(post).expect("post"),
            "POST /p HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello"
        );
        let empty = Request::post("/p")
            .body(full(Bytes::new()))
            .expect("request");
        assert_eq!(
            written(empty).expect("post"),
            "POST /p HTTP/1.1\r\ncontent-length: 0\r\n\r\n"
        );
    }

    #[test]
    fn the_target_is_in_origin_form() {
        let absolute = Request::get("http://a.example:8080/p?q=1")
            .body(full(Bytes::new()))
            .expect("request");
        assert_eq!(
            written(absolute).expect("get"),
            "GET /p?q=1 HTTP/1.1\r\n\r\n"
        );
    }

    #[test]
    fn a_body_must_match_its_declared_length() {
        let long = Request::post("/p")
            .header("content-length", "2")
            .body(full(Bytes::from_static(b"hello")))
            .expect("request");
        assert!(matches!(written(long), Err(H1Error::Request(_))));
        let short = Request::post("/p")
            .header("content-length", "9")
            .body(full(Bytes::from_static(b"hello")))
            .expect("request");
        assert!(matches!(written(short), Err(H1Error::Request(_))));
        let kept = Request::post("/p")
            .header("content-length", "5")
            .body(full(Bytes::from_static(b"hello")))
            .expect("request");
        assert_eq!(
            written(kept).expect("post"),
            "POST /p HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello"
        );
    }

    /// A body of unknown length that yields `frames`, each at once.
    struct Frames(VecDeque<http_body::Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = crate::forward::body::BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    #[test]
    fn a_body_of_unknown_length_is_chunked_with_its_trailers() {
        use http_body_util::BodyExt;
        let mut trailers = HeaderMap::new();
        trailers.insert("x-sum", "7".parse().expect("value"));
        let frames = Frames(VecDeque::from([
            http_body::Frame::data(Bytes::from_static(b"hello world, chunked")),
            http_body::Frame::trailers(trailers),
        ]));
        let req = Request::put("/u").body(frames.boxed()).expect("request");
        assert_eq!(
            written(req).expect("put"),
            "PUT /u HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n14\r\nhello world, chunked\r\n0\r\nx-sum: 7\r\n\r\n"
        );
    }
}
