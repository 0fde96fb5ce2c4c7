//! Small gathered writes sent as one buffer.
//!
//! hyper writes a response's head and body as two slices, and Pointsman's
//! HTTP/1.1 client its request the same way: on a socket that is a
//! `writev`. On Linux a `writev` goes through the generic file-write path
//! before it reaches the socket, a `send` straight to it: 0.14–0.34 µs more
//! a call on loopback (`benches/send_writev.c`). Copying a few KiB costs
//! far less, so [`poll_write_gathered`] copies small writes into one stack
//! buffer and sends that; larger ones stay vectored, so bodies are never
//! copied.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most bytes copied into one `send`: copying 4 KiB costs tens of
/// nanoseconds, a fraction of what the `writev` would cost over a `send`.
const GATHER_MAX: usize = 4096;

/// A smaller stack buffer for the common case (a head and a short body),
/// so that zeroing the buffer costs little.
const GATHER_SMALL: usize = 512;

/// Writes `bufs` as [`AsyncWrite::poll_write_vectored`] does (the count of
/// bytes written, which may be fewer than all), with `poll_write` when there
/// is one slice or at most [`GATHER_MAX`] bytes in all.
pub fn poll_write_gathered<W: AsyncWrite + ?Sized>(
    io: Pin<&mut W>,
    cx: &mut Context<'_>,
    bufs: &[IoSlice<'_>],
) -> Poll<io::Result<usize>> {
    let mut filled = bufs.iter().filter(|b| !b.is_empty());
    let (first, second) = (filled.next(), filled.next());
    let Some(first) = first else {
        return io.poll_write(cx, &[]);
    };
    if second.is_none() {
        return io.poll_write(cx, first);
    }
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    if total <= GATHER_SMALL {
        poll_write_copied::<GATHER_SMALL, W>(io, cx, bufs)
    } else if total <= GATHER_MAX {
        poll_write_copied::<GATHER_MAX, W>(io, cx, bufs)
    } else {
        io.poll_write_vectored(cx, bufs)
    }
}

/// A stream whose vectored writes go through [`poll_write_gathered`]:
/// every upstream TCP stream, under Pointsman's HTTP/1.1 client (head and
/// body), rustls (its records) or hyper's h2 client (frame headers and
/// payloads).
#[derive(Debug)]
pub struct Gathered<T>(pub T);

impl<T: AsyncRead + Unpin> AsyncRead for Gathered<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Gathered<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        poll_write_gathered(Pin::new(&mut self.get_mut().0), cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// Copies `bufs` (at most `N` bytes in all) into a stack buffer and writes it.
fn poll_write_copied<const N: usize, W: AsyncWrite + ?Sized>(
    io: Pin<&mut W>,
    cx: &mut Context<'_>,
    bufs: &[IoSlice<'_>],
) -> Poll<io::Result<usize>> {
    let mut buf = [0u8; N];
    let mut len = 0;
    for b in bufs {
        buf[len..len + b.len()].copy_from_slice(b);
        len += b.len();
    }
    io.poll_write(cx, &buf[..len])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    /// Records each call: `write` or `writev`, and the bytes it was given.
    /// Accepts at most `limit` bytes a call, as a full socket would.
    struct Recorder {
        calls: Vec<(&'static str, Vec<u8>)>,
        limit: usize,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.limit);
            self.get_mut().calls.push(("write", buf.to_vec()));
            Poll::Ready(Ok(n))
        }
        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            let n = all.len().min(self.limit);
            self.get_mut().calls.push(("writev", all));
            Poll::Ready(Ok(n))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Writes `parts` once; the call made, and what it wrote.
    fn gather(parts: &[&[u8]], limit: usize) -> (&'static str, Vec<u8>, usize) {
        let mut io = Recorder {
            calls: Vec::new(),
            limit,
        };
        let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        let mut cx = Context::from_waker(Waker::noop());
        let Poll::Ready(Ok(n)) = poll_write_gathered(Pin::new(&mut io), &mut cx, &slices) else {
            panic!("the recorder is always ready");
        };
        assert_eq!(io.calls.len(), 1, "one call a write");
        let (kind, bytes) = io.calls.remove(0);
        (kind, bytes, n)
    }

    #[test]
    fn small_writes_go_out_as_one_buffer_in_order() {
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n".as_slice();
        let (kind, bytes, n) = gather(&[head, b"", b"hello"], usize::MAX);
        assert_eq!(kind, "write");
        assert_eq!(bytes, [head, b"hello"].concat());
        assert_eq!(n, head.len() + 5);
    }

    #[test]
    fn one_filled_slice_is_written_whatever_its_size() {
        let big = vec![7u8; GATHER_MAX * 4];
        let (kind, bytes, _) = gather(&[b"", &big], usize::MAX);
        assert_eq!((kind, bytes), ("write", big));
        assert_eq!(gather(&[], usize::MAX).0, "write");
    }

    #[test]
    fn every_size_up_to_the_limit_is_copied_whole_and_larger_stays_vectored() {
        for total in [2, GATHER_SMALL, GATHER_SMALL + 1, GATHER_MAX] {
            let a: Vec<u8> = (0..total / 2).map(|i| i as u8).collect();
            let b: Vec<u8> = (0..total - total / 2).map(|i| (i * 3) as u8).collect();
            let (kind, bytes, n) = gather(&[&a, &b], usize::MAX);
            assert_eq!((kind, n), ("write", total), "{total} bytes");
            assert_eq!(bytes, [a, b].concat());
        }
        let (kind, _, _) = gather(&[&[1; GATHER_MAX], b"x"], usize::MAX);
        assert_eq!(kind, "writev");
    }

    #[test]
    fn a_short_write_reports_what_was_taken() {
        let (_, _, n) = gather(&[b"abc", b"defg"], 5);
        assert_eq!(n, 5);
    }
}
