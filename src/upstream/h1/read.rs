//! The response side of an HTTP/1.1 exchange: the body read off the
//! connection as its framing says (a length, chunked with trailers, or to
//! the close), and the connection handed back for reuse only when the
//! exchange ended cleanly.

use super::{Conn, H1Error, Outgoing};
use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

/// A chunk-size line (with its extensions) or a trailer section longer
/// than this is refused.
const MAX_LINE: usize = 4 * 1024;
const MAX_TRAILERS: usize = super::READ_BUF;

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// This many bytes are still due.
    Length(u64),
    /// Chunked.
    Chunked,
    /// Until the upstream closes (never reusable).
    Close,
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

/// Where a connection goes once its exchange ended cleanly (the pool).
pub(crate) trait Release: Send + Sync {
    /// Takes `conn` back for another request.
    fn release(self: Arc<Self>, conn: Conn);
}

/// A response body read from an HTTP/1.1 upstream connection.
pub(crate) struct ResponseBody {
    /// `None` once the body ended (the connection released or closed).
    conn: Option<Conn>,
    framing: Framing,
    chunk: Chunk,
    /// The upstream allows another request on the connection.
    reusable: bool,
    /// The rest of a request the upstream answered early.
    pending: Option<Outgoing>,
    release: Option<Arc<dyn Release>>,
    /// Dropped unfinished, the rest is read in a task of its own so the
    /// connection can be released (`drain.rs`); off for a body being
    /// drained.
    drain_on_drop: bool,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("framing", &self.framing)
            .field("done", &self.conn.is_none())
            .finish_non_exhaustive()
    }
}

impl ResponseBody {
    pub(super) fn new(
        conn: Conn,
        framing: Framing,
        reusable: bool,
        pending: Option<Outgoing>,
    ) -> Self {
        ResponseBody {
            conn: Some(conn),
            framing,
            chunk: Chunk::Size,
            reusable: reusable && framing != Framing::Close,
            pending,
            release: None,
            drain_on_drop: true,
        }
    }

    /// A body with nothing in it and no connection (a `101`'s).
    pub(crate) fn empty() -> Self {
        ResponseBody {
            conn: None,
            framing: Framing::Length(0),
            chunk: Chunk::Size,
            reusable: false,
            pending: None,
            release: None,
            drain_on_drop: false,
        }
    }

    /// A body being drained is not drained again when dropped: its
    /// connection is closed.
    pub(super) fn no_drain_on_drop(&mut self) {
        self.drain_on_drop = false;
    }

    /// Hands the connection to `release` if the body ends cleanly; a body
    /// that ends already (no content) does so now.
    pub(crate) fn on_release(&mut self, release: Arc<dyn Release>) {
        self.release = Some(release);
        if self.framing == Framing::Length(0) {
            self.finish();
        }
    }

    /// The body ended: the connection is handed back when the request was
    /// written whole, the upstream keeps it open, and nothing was sent
    /// beyond the response (over-read); otherwise it is closed.
    fn finish(&mut self) {
        self.framing = Framing::Length(0);
        let Some(conn) = self.conn.take() else {
            return;
        };
        if self.reusable
            && self.pending.is_none()
            && conn.buf.is_empty()
            && let Some(release) = self.release.take()
        {
            release.release(conn);
        }
        self.pending = None;
    }

    /// Fails the body: the connection is closed.
    fn fail(&mut self, e: H1Error) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        self.conn = None;
        self.pending = None;
        self.framing = Framing::Length(0);
        Poll::Ready(Some(Err(e)))
    }

    pub(super) fn poll_body(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(out) = self.pending.as_mut() {
            match out.poll_drive(cx, &mut conn.io) {
                Poll::Ready(Ok(())) => self.pending = None,
                // The client's body failed: the answer cannot be finished.
                Poll::Ready(Err(e @ H1Error::RequestBody(_))) => return self.fail(e),
                // The upstream stopped reading: read on, never reuse.
                Poll::Ready(Err(_)) => {
                    self.pending = None;
                    self.reusable = false;
                }
                Poll::Pending => {}
            }
        }
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match self.framing {
                Framing::Length(0) => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Framing::Length(left) if !conn.buf.is_empty() => {
                    let n = conn
                        .buf
                        .len()
                        .min(usize::try_from(left).unwrap_or(usize::MAX));
                    let data = conn.buf.split_to(n).freeze();
                    self.framing = Framing::Length(left - n as u64);
                    if self.framing == Framing::Length(0) {
                        // The server may stop polling at the end it was told.
                        self.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Close if !conn.buf.is_empty() => {
                    let data = conn.buf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Chunked => match decode_chunked(&mut self.chunk, &mut conn.buf) {
                    Ok(Decoded::Frame(frame)) => return Poll::Ready(Some(Ok(frame))),
                    Ok(Decoded::End(trailers)) => {
                        self.finish();
                        return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
                    }
                    Ok(Decoded::More) => {}
                    Err(e) => return self.fail(e),
                },
                _ => {}
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if self.framing == Framing::Close => {
                    self.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => return self.fail(H1Error::Closed("response body ended")),
                Ok(_) => {}
                Err(e) => return self.fail(H1Error::Io(e)),
            }
        }
    }
}

impl ResponseBody {
    /// A body dropped before its end (the client went away) whose
    /// connection could serve again: the rest of it, to be read to its end
    /// elsewhere (`drain.rs`, which calls this when a body is dropped).
    pub(super) fn abandoned(&mut self) -> Option<ResponseBody> {
        if !self.drain_on_drop || !self.reusable || self.pending.is_some() {
            return None;
        }
        let (Some(conn), Some(release)) = (self.conn.take(), self.release.take()) else {
            return None;
        };
        let mut rest = ResponseBody::new(conn, self.framing, true, None);
        rest.chunk = self.chunk;
        rest.release = Some(release);
        rest.no_drain_on_drop();
        Some(rest)
    }
}

/// What the buffer gave of a chunked body.
enum Decoded {
    Frame(Frame<Bytes>),
    /// More must be read first.
    More,
    /// The last chunk, with its trailers if any.
    End(Option<HeaderMap>),
}

/// Decodes what `buf` holds of a chunked body at `chunk`.
fn decode_chunked(chunk: &mut Chunk, buf: &mut BytesMut) -> Result<Decoded, H1Error> {
    loop {
        match *chunk {
            Chunk::Size => {
                let Some(end) = line_end(buf, MAX_LINE)? else {
                    return Ok(Decoded::More);
                };
                let size = chunk_size(&buf[..end])?;
                buf.advance(end + 2);
                *chunk = if size == 0 {
                    Chunk::Trailers
                } else {
                    Chunk::Data(size)
                };
            }
            Chunk::Data(left) => {
                if buf.is_empty() {
                    return Ok(Decoded::More);
                }
                let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let data = buf.split_to(n).freeze();
                let left = left - n as u64;
                *chunk = if left == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left)
                };
                return Ok(Decoded::Frame(Frame::data(data)));
            }
            Chunk::DataEnd => {
                if buf.len() < 2 {
                    return Ok(Decoded::More);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(H1Error::Invalid("chunk data not followed by CRLF"));
                }
                buf.advance(2);
                *chunk = Chunk::Size;
            }
            Chunk::Trailers => {
                if buf.len() < 2 {
                    return Ok(Decoded::More);
                }
                if &buf[..2] == b"\r\n" {
                    buf.advance(2);
                    return Ok(Decoded::End(None));
                }
                let Some(end) = find(buf, b"\r\n\r\n") else {
                    if buf.len() > MAX_TRAILERS {
                        return Err(H1Error::Invalid("trailer section over 16 KiB"));
                    }
                    return Ok(Decoded::More);
                };
                let trailers = parse_trailers(&buf[..end + 4])?;
                buf.advance(end + 4);
                return Ok(Decoded::End(Some(trailers)));
            }
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = H1Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        self.get_mut().poll_body(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || self.framing == Framing::Length(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

/// Where the CRLF ending the first line of `buf` is; a bare LF or a line
/// longer than `max` is refused.
fn line_end(buf: &[u8], max: usize) -> Result<Option<usize>, H1Error> {
    match buf.iter().take(max + 2).position(|&b| b == b'\n') {
        Some(0) => Err(H1Error::Invalid("bare LF in a chunked body")),
        Some(i) if buf[i - 1] == b'\r' => Ok(Some(i - 1)),
        Some(_) => Err(H1Error::Invalid("bare LF in a chunked body")),
        None if buf.len() > max => Err(H1Error::Invalid("chunk-size line too long")),
        None => Ok(None),
    }
}

/// A chunk-size line: hex digits, then optional extensions after `;`.
fn chunk_size(line: &[u8]) -> Result<u64, H1Error> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(H1Error::Invalid("bad chunk size"));
    }
    let rest = &line[digits..];
    let ext = rest.iter().position(|&b| b != b' ' && b != b'\t');
    if let Some(i) = ext
        && (rest[i] != b';' || rest.iter().any(|&b| b == b'\r' || (b < 0x20 && b != b'\t')))
    {
        return Err(H1Error::Invalid("bad chunk extension"));
    }
    let text =
        std::str::from_utf8(&line[..digits]).map_err(|_| H1Error::Invalid("bad chunk size"))?;
    u64::from_str_radix(text, 16).map_err(|_| H1Error::Invalid("bad chunk size"))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A trailer section (the lines and the blank line that ends them).
fn parse_trailers(block: &[u8]) -> Result<HeaderMap, H1Error> {
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let (_, parsed) = match httparse::parse_headers(block, &mut fields) {
        Ok(httparse::Status::Complete(done)) => done,
        _ => return Err(H1Error::Invalid("malformed trailers")),
    };
    let mut map = HeaderMap::with_capacity(parsed.len());
    for h in parsed {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| H1Error::Invalid("bad trailer"))?;
        let value =
            HeaderValue::from_bytes(h.value).map_err(|_| H1Error::Invalid("bad trailer"))?;
        map.append(name, value);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_take_hex_and_extensions_only() {
        assert_eq!(chunk_size(b"1a").expect("hex"), 26);
        assert_eq!(chunk_size(b"A ; name=value").expect("ext"), 10);
        assert!(chunk_size(b"").is_err());
        assert!(chunk_size(b"0x5").is_err());
        assert!(chunk_size(b"5 5").is_err());
        assert!(chunk_size(b"11111111111111111").is_err());
    }

    #[test]
    fn chunked_bodies_decode_with_trailers_across_reads() {
        let wire = b"5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 9\r\n\r\nNEXT";
        // Fed one byte at a time, as the worst split of reads.
        let (mut chunk, mut buf) = (Chunk::Size, BytesMut::new());
        let (mut body, mut trailers) = (Vec::new(), None);
        for &b in wire.iter() {
            buf.extend_from_slice(&[b]);
            loop {
                match decode_chunked(&mut chunk, &mut buf).expect("valid") {
                    Decoded::Frame(f) => body.extend_from_slice(&f.into_data().expect("data")),
                    Decoded::More => break,
                    Decoded::End(t) => {
                        trailers = t;
                        break;
                    }
                }
            }
            if trailers.is_some() {
                break;
            }
        }
        assert_eq!(body, b"hello world");
        assert_eq!(trailers.expect("trailers")["x-sum"], "9");
        // Fed whole: the bytes after the body stay for whoever reads next.
        let (mut chunk, mut buf) = (Chunk::Size, BytesMut::from(&wire[..]));
        while let Decoded::Frame(_) = decode_chunked(&mut chunk, &mut buf).expect("valid") {}
        assert_eq!(&buf[..], b"NEXT", "nothing past the body is taken");
        let mut bad = BytesMut::from(&b"5\r\nhelloXY"[..]);
        let mut chunk = Chunk::Size;
        assert!(matches!(
            decode_chunked(&mut chunk, &mut bad),
            Ok(Decoded::Frame(_))
        ));
        assert!(decode_chunked(&mut chunk, &mut bad).is_err());
    }

    #[test]
    fn lines_end_in_crlf_only() {
        assert_eq!(line_end(b"5\r\nhello", 10).expect("crlf"), Some(1));
        assert_eq!(line_end(b"5", 10).expect("partial"), None);
        assert!(line_end(b"5\nhello", 10).is_err());
        assert!(line_end(b"\n", 10).is_err());
        assert!(line_end(&[b'1'; 20], 10).is_err());
    }
}
