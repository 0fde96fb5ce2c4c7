//! Pointsman's own HTTP/1.1 client connection toward upstreams (as
//! Pingora has), in place of hyper's: one exchange runs in the request's
//! own task, with no connection task, channel or wake-up between them, and
//! an idle connection is a socket and its buffer, nothing more.
//!
//! - [`Outgoing`] writes the request (`write.rs`); [`exchange`] reads the
//!   response head with `httparse`, skipping `1xx` answers, and frames
//!   the body (RFC 9112 6.3); [`ResponseBody`] reads it (`read.rs`).
//! - A connection is reused only after a response read exactly to its
//!   framed end, with the whole request written and no byte beyond it
//!   (pool poisoning, RELIABILITY row 26); anything else closes it.
//! - A `101` is accepted only for a request that asked to upgrade.
//! - An answer its client abandoned is read to its end in a task of its
//!   own when it is small and quick (`drain.rs`), so the connection is
//!   kept rather than closed.

mod drain;
mod io;
mod read;
mod write;

pub(crate) use io::{Io, Rewind};
pub(crate) use read::{Release, ResponseBody};
pub(crate) use write::{EndpointHead, Outgoing};

use bytes::{Bytes, BytesMut};
use drain::Awaiting;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode, Version};
use read::Framing;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep};

/// What one connection reads ahead at most (hyper's default is about
/// 400 KiB). The response body is read from the socket only as the client
/// side takes it, so this, with what the client side buffers, is what a
/// client that stops reading holds (SPEC 5.1). It also caps a response
/// head: a larger one is a 502, as with HAProxy's 16 KiB buffers (NGINX
/// allows 4 or 8 KiB by default).
pub(crate) const READ_BUF: usize = 16 * 1024;

/// Header lines a response head may have.
const MAX_HEADERS: usize = 128;

/// Why an HTTP/1.1 exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum H1Error {
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The upstream closed the connection early.
    #[error("connection closed before the {0}")]
    Closed(&'static str),
    /// The upstream's answer broke HTTP/1.1.
    #[error("invalid response: {0}")]
    Invalid(&'static str),
    /// The request could not be framed as it was.
    #[error("invalid request: {0}")]
    Request(&'static str),
    /// The request body failed (the client's side).
    #[error("the request body failed: {0}")]
    RequestBody(#[source] crate::forward::body::BoxError),
    /// No response head by the exchange's deadline.
    #[error("no response head by the deadline")]
    Timeout,
}

/// An open connection: its transport and what was read and not yet used.
#[derive(Debug)]
pub(crate) struct Conn {
    io: Io,
    buf: BytesMut,
    /// The deadline of the exchange under way, made by the first exchange
    /// that has one. One timer per connection, moved later for each
    /// request: tokio then only updates the entry's time (an atomic), where
    /// a timer per request would take the timer wheel's lock twice.
    deadline: Option<Pin<Box<Sleep>>>,
    /// Where each field of the response head being parsed lies, kept
    /// between responses so that parsing one allocates nothing for it.
    spans: Vec<Span>,
}

/// A field's name and value as offsets into its head.
type Span = (usize, usize, usize, usize);

impl Conn {
    /// A connection over `io`, nothing read yet.
    pub(crate) fn new(io: Io) -> Self {
        Conn {
            io,
            buf: BytesMut::new(),
            deadline: None,
            spans: Vec::new(),
        }
    }

    /// Arms the connection's timer for `deadline`.
    fn arm(&mut self, deadline: Instant) {
        match &mut self.deadline {
            Some(sleep) => sleep.as_mut().reset(deadline),
            None => self.deadline = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
    }

    /// Whether the armed deadline has passed (registering the task to be
    /// woken at it).
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline
            .as_mut()
            .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready())
    }

    /// Whether an idle connection can take a request: the upstream has
    /// neither closed it nor sent anything unasked. Costs no system call
    /// when nothing happened on the socket since it was last read.
    pub(crate) fn is_reusable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut byte = [0u8; 1];
        let mut probe = ReadBuf::new(&mut byte);
        Pin::new(&mut self.io)
            .poll_read(&mut cx, &mut probe)
            .is_pending()
    }

    /// The connection with its socket moved to the calling thread's event
    /// loop (see [`Io::move_here`]); an error closes it.
    pub(crate) fn move_here(mut self) -> std::io::Result<Conn> {
        self.io.move_here()?;
        // The timer belongs to the loop that opened the connection; the
        // next exchange makes one on this loop.
        self.deadline = None;
        Ok(self)
    }

    /// The transport, for tests that use the socket directly.
    #[cfg(test)]
    pub(crate) fn io_mut(&mut self) -> &mut Io {
        &mut self.io
    }

    /// Reads more into the buffer (`Ok(0)` at the end of the stream).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf
                .reserve(READ_BUF.saturating_sub(self.buf.len()).max(1024));
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }
}

/// A response head read off the wire, its body not yet.
pub(crate) struct Answer {
    /// The response; a `101`'s body is empty.
    pub(crate) response: Response<ResponseBody>,
    /// For a `101`: the connection, now a byte stream.
    pub(crate) upgraded: Option<Rewind>,
}

/// Why an exchange failed, with the request when no byte of it was
/// written (it may go out again on another connection).
pub(crate) struct Failed {
    pub(crate) error: H1Error,
    pub(crate) unsent: Option<Outgoing>,
}

/// Sends `out` on `conn` and reads the response head, failing with
/// [`H1Error::Timeout`] if it has not come by `deadline`. The request body
/// goes on being written while the head is awaited (an upstream may
/// answer early), and after it by the response body.
#[expect(
    clippy::manual_async_fn,
    reason = "smaller future: see the pipeline module"
)]
pub(crate) fn exchange(
    mut conn: Conn,
    mut out: Outgoing,
    head_request: bool,
    wants_upgrade: bool,
    deadline: Option<Instant>,
    release: Option<Arc<dyn Release>>,
) -> impl Future<Output = Result<Answer, Failed>> {
    async move {
        if let Some(deadline) = deadline {
            conn.arm(deadline);
        }
        // Dropped before the head came, the answer is drained (`drain.rs`).
        let mut awaiting = Awaiting::new(conn, head_request, release);
        // A write that fails is not fatal until the head cannot be read: an
        // upstream may answer and close without reading the whole body.
        let mut writing = true;
        let mut write_error = None;
        let head = std::future::poll_fn(|cx| {
            let Some(conn) = awaiting.conn.as_mut() else {
                return Poll::Ready(Err(H1Error::Closed("response head")));
            };
            if writing {
                match out.poll_drive(cx, &mut conn.io) {
                    Poll::Ready(Ok(())) => {
                        writing = false;
                        awaiting.written = true;
                    }
                    Poll::Ready(Err(H1Error::Io(e))) => {
                        writing = false;
                        write_error = Some(e);
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            }
            match poll_head(cx, conn) {
                Poll::Pending if deadline.is_some() && conn.poll_expired(cx) => {
                    Poll::Ready(Err(H1Error::Timeout))
                }
                polled => polled,
            }
        })
        .await;
        let release = awaiting.release();
        let Some(mut conn) = awaiting.take() else {
            return Err(Failed {
                error: H1Error::Closed("response head"),
                unsent: None,
            });
        };
        let head = match head {
            Ok(head) => head,
            Err(error) => {
                let error = match (error, write_error) {
                    (H1Error::Closed(_), Some(e)) => H1Error::Io(e),
                    (error, _) => error,
                };
                let unsent = (!out.started).then_some(out);
                return Err(Failed { error, unsent });
            }
        };
        let fail = |error| Failed {
            error,
            unsent: None,
        };
        if head.status == StatusCode::SWITCHING_PROTOCOLS {
            if !wants_upgrade {
                return Err(fail(H1Error::Invalid(
                    "101 to a request that did not ask to upgrade",
                )));
            }
            let mut response = Response::new(ResponseBody::empty());
            *response.status_mut() = head.status;
            *response.headers_mut() = head.headers;
            let early = conn.buf.split().freeze();
            return Ok(Answer {
                response,
                upgraded: Some(Rewind { early, io: conn.io }),
            });
        }
        let framing = framing(&head, head_request).map_err(fail)?;
        let reusable = head.keep_alive && write_error.is_none();
        // Still writing: the response body drives the rest of the request.
        let pending = writing.then_some(out);
        let mut body = ResponseBody::new(conn, framing, reusable, pending);
        if let Some(release) = release {
            body.on_release(release);
        }
        let mut response = Response::new(body);
        *response.status_mut() = head.status;
        *response.headers_mut() = head.headers;
        *response.version_mut() = Version::HTTP_11;
        Ok(Answer {
            response,
            upgraded: None,
        })
    }
}

/// A parsed response head, with what its framing headers said (noted
/// while parsing, so they are not looked up again).
struct Head {
    status: StatusCode,
    headers: HeaderMap,
    /// HTTP/1.1 without `Connection: close`.
    keep_alive: bool,
    /// `Transfer-Encoding`: whether its final coding is `chunked`.
    chunked: Option<bool>,
    /// `Content-Length`, once all its values agree.
    length: Result<Option<u64>, &'static str>,
}

/// Reads until a final response head (`1xx` other than `101` skipped).
fn poll_head(cx: &mut Context<'_>, conn: &mut Conn) -> Poll<Result<Head, H1Error>> {
    loop {
        if !conn.buf.is_empty()
            && let Some(head) = parse_head(&mut conn.buf, &mut conn.spans)?
        {
            if head.status.is_informational() && head.status != StatusCode::SWITCHING_PROTOCOLS {
                continue;
            }
            return Poll::Ready(Ok(head));
        }
        if conn.buf.len() >= READ_BUF {
            return Poll::Ready(Err(H1Error::Invalid("response head over 16 KiB")));
        }
        match std::task::ready!(conn.poll_fill(cx)) {
            Ok(0) => return Poll::Ready(Err(H1Error::Closed("response head"))),
            Ok(_) => {}
            Err(e) => return Poll::Ready(Err(H1Error::Io(e))),
        }
    }
}

/// Parses one response head off the front of `buf`, if complete. Header
/// values share the head's bytes (no copy per value); `spans` is scratch
/// space.
fn parse_head(buf: &mut BytesMut, spans: &mut Vec<Span>) -> Result<Option<Head>, H1Error> {
    // Uninitialised slots: nothing is written before the parser fills them.
    let mut fields = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut res,
        buf,
        &mut fields,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(H1Error::Invalid("too many header lines"));
        }
        Err(_) => return Err(H1Error::Invalid("malformed head")),
    };
    // `let ... else` rather than `ok_or`: an error built eagerly is dropped
    // on every success, a call into H1Error's drop each time.
    let Some(status) = res.code.and_then(|c| StatusCode::from_u16(c).ok()) else {
        return Err(H1Error::Invalid("bad status code"));
    };
    let http11 = res.version == Some(1);
    let base = buf.as_ptr() as usize;
    // Where each name and value lies in the head, to slice the frozen head.
    let count = res.headers.len();
    spans.clear();
    for h in res.headers.iter() {
        let name = h.name.as_ptr() as usize - base;
        let value = h.value.as_ptr() as usize - base;
        spans.push((name, name + h.name.len(), value, value + h.value.len()));
    }
    let head: Bytes = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(count);
    let mut close = !http11;
    let mut chunked = None;
    let mut length = Ok(None);
    for &(n0, n1, v0, v1) in spans.iter() {
        let Some(name) = field_name(&head[n0..n1]) else {
            return Err(H1Error::Invalid("bad header name"));
        };
        let value = field_value(head.slice(v0..v1));
        if name == header::CONTENT_LENGTH {
            length = length.and_then(|known| content_length(&value, known));
        } else if name == header::TRANSFER_ENCODING {
            let last = value
                .as_bytes()
                .rsplit(|&b| b == b',')
                .next()
                .unwrap_or(&[]);
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name == header::CONNECTION {
            // Hop-by-hop, read here, and removed before the response goes
            // on: a `Connection` that names no other header is not kept
            // (saves an insert and a removal on every response).
            let v = value.as_bytes();
            if v.eq_ignore_ascii_case(b"keep-alive") {
                continue;
            }
            if v.eq_ignore_ascii_case(b"close") {
                close = true;
                continue;
            }
            close |= has_token(&value, "close");
        }
        headers.append(name, value);
    }
    Ok(Some(Head {
        status,
        headers,
        keep_alive: !close,
        chunked,
        length,
    }))
}

/// A field value httparse has accepted, without checking its bytes again.
/// httparse allows in a value exactly what `HeaderValue` does (HTAB, SP to
/// `~`, and 0x80 to 0xFF; `value_bytes_httparse_accepts_are_header_values`
/// checks every byte), and the default config refuses folded lines.
fn field_value(bytes: Bytes) -> HeaderValue {
    // SAFETY: the bytes are a value httparse has parsed, which holds only
    // bytes `HeaderValue` allows (see above); hyper's client does the same.
    #[allow(unsafe_code)]
    unsafe {
        HeaderValue::from_maybe_shared_unchecked(bytes)
    }
}

/// A response field name. The names nearly every response carries are
/// matched as servers spell them, a byte comparison; the others (and
/// other spellings) go through `HeaderName::from_bytes`, which lowercases
/// and looks each one up.
fn field_name(bytes: &[u8]) -> Option<HeaderName> {
    let known = match bytes {
        b"Content-Type" | b"content-type" => header::CONTENT_TYPE,
        b"Content-Length" | b"content-length" => header::CONTENT_LENGTH,
        b"Date" | b"date" => header::DATE,
        b"Server" | b"server" => header::SERVER,
        b"Connection" | b"connection" => header::CONNECTION,
        b"Transfer-Encoding" | b"transfer-encoding" => header::TRANSFER_ENCODING,
        b"Cache-Control" | b"cache-control" => header::CACHE_CONTROL,
        b"Last-Modified" | b"last-modified" => header::LAST_MODIFIED,
        b"ETag" | b"etag" => header::ETAG,
        b"Vary" | b"vary" => header::VARY,
        _ => return HeaderName::from_bytes(bytes).ok(),
    };
    Some(known)
}

/// How the body of a response to a request is delimited (RFC 9112 6.3).
/// Both `Transfer-Encoding` and `Content-Length`, or lengths that
/// disagree, are refused (a 502), not guessed at.
fn framing(head: &Head, head_request: bool) -> Result<Framing, H1Error> {
    let status = head.status.as_u16();
    if head_request || status == 204 || status == 304 || head.status.is_informational() {
        return Ok(Framing::Length(0));
    }
    match (head.chunked, head.length) {
        (Some(_), Ok(Some(_)) | Err(_)) => Err(H1Error::Invalid(
            "both Transfer-Encoding and Content-Length",
        )),
        // Chunked when it is the final coding; otherwise the body runs to
        // the close.
        (Some(true), Ok(None)) => Ok(Framing::Chunked),
        (Some(false) | None, Ok(None)) => Ok(Framing::Close),
        (None, Ok(Some(n))) => Ok(Framing::Length(n)),
        (None, Err(e)) => Err(H1Error::Invalid(e)),
    }
}

/// One `Content-Length` line (a list of equal values is allowed) with
/// the value seen before it, if any: all must agree.
fn content_length(value: &HeaderValue, known: Option<u64>) -> Result<Option<u64>, &'static str> {
    let mut length = known;
    for part in value.as_bytes().split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return Err("bad Content-Length");
        }
        let n = part.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        if length.is_some_and(|l| l != n) {
            return Err("Content-Length values disagree");
        }
        length = Some(n);
    }
    Ok(length)
}

fn has_token(value: &HeaderValue, token: &str) -> bool {
    value
        .to_str()
        .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Option<Head>, H1Error> {
        parse_head(&mut BytesMut::from(text), &mut Vec::new())
    }

    /// What makes `field_value` sound: for every byte, in a short value
    /// and in the middle of a long one (httparse's SIMD path), httparse
    /// accepts the head exactly when `HeaderValue` accepts the value.
    #[test]
    fn value_bytes_httparse_accepts_are_header_values() {
        for b in 0..=255u8 {
            for pad in [1, 40] {
                let mut value = vec![b'a'; pad];
                value.push(b);
                value.extend(std::iter::repeat_n(b'a', pad));
                let mut text = b"HTTP/1.1 200 OK\r\nX-A: ".to_vec();
                text.extend_from_slice(&value);
                text.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
                let parsed = parse_head(&mut BytesMut::from(&text[..]), &mut Vec::new());
                let accepted = matches!(parsed, Ok(Some(_)));
                let valid = HeaderValue::from_bytes(&value).is_ok();
                assert_eq!(accepted, valid, "byte {b:#04x}, padding {pad}");
                if let Ok(Some(h)) = parsed {
                    assert_eq!(h.headers["x-a"].as_bytes(), &value[..]);
                }
            }
        }
    }

    fn framed(text: &str) -> Result<Framing, H1Error> {
        let h = head(text)?.expect("complete");
        framing(&h, false)
    }

    #[test]
    fn heads_parse_with_their_values_and_keep_alive() {
        let h = head("HTTP/1.1 200 OK\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 3\r\n\r\nabc")
            .expect("valid")
            .expect("complete");
        assert_eq!(h.status, 200);
        let a: Vec<_> = h.headers.get_all("x-a").iter().collect();
        assert_eq!(a, ["1", "2"]);
        assert!(h.keep_alive);
        assert!(
            head("HTTP/1.1 200 OK\r\nX-A: 1\r\n")
                .expect("valid")
                .is_none()
        );
        let closing = head("HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert!(!closing.keep_alive);
        let old = head("HTTP/1.0 200 OK\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert!(!old.keep_alive);
        let bare = head("HTTP/1.1 204\r\n\r\n")
            .expect("no reason phrase")
            .expect("complete");
        assert_eq!(bare.status, 204);
        assert!(head("HTTP/1.1 2000 OK\r\n\r\n").is_err());
        assert!(head("HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n").is_err());
    }

    #[test]
    fn field_names_as_servers_spell_them_and_any_other() {
        for (raw, want) in [
            ("Content-Type", header::CONTENT_TYPE),
            ("content-length", header::CONTENT_LENGTH),
            ("ETag", header::ETAG),
            ("CONTENT-TYPE", header::CONTENT_TYPE),
            ("X-Custom", HeaderName::from_static("x-custom")),
        ] {
            assert_eq!(field_name(raw.as_bytes()), Some(want), "{raw}");
        }
        assert_eq!(field_name(b"Bad Name"), None);
        assert_eq!(field_name(b""), None);
    }

    #[test]
    fn a_connection_naming_only_itself_is_not_kept() {
        let h = head("HTTP/1.1 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert!(h.keep_alive);
        assert!(!h.headers.contains_key(header::CONNECTION));
        let naming = head("HTTP/1.1 200 OK\r\nConnection: close, x-hop\r\nX-Hop: 1\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert!(!naming.keep_alive);
        // Kept: the headers it names are removed with it later.
        assert_eq!(naming.headers[header::CONNECTION], "close, x-hop");
    }

    #[test]
    fn bodies_are_framed_as_rfc_9112_says() {
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n").expect("length"),
            Framing::Length(5)
        );
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n")
                .expect("repeated"),
            Framing::Length(5)
        );
        assert!(framed("HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n").is_err());
        assert!(framed("HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n").is_err());
        assert!(
            framed("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n")
                .is_err()
        );
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").expect("te"),
            Framing::Chunked
        );
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n").expect("te"),
            Framing::Close
        );
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\n\r\n").expect("close"),
            Framing::Close
        );
        assert_eq!(
            framed("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n").expect("304"),
            Framing::Length(0)
        );
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert_eq!(framing(&h, true).expect("head"), Framing::Length(0));
    }
}
