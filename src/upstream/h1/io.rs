//! The byte stream under an HTTP/1.1 upstream connection: clear TCP or
//! rustls over TCP, and the stream an upgrade hands on (the bytes already
//! read first).

use crate::forward::tunnel::replay;
use crate::gather::Gathered;
use bytes::Bytes;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A connection's transport.
#[derive(Debug)]
pub(crate) enum Io {
    /// `http://`.
    Plain(Gathered<TcpStream>),
    /// `https://` (boxed: rustls's state is large and cold here).
    Tls(Box<TlsStream<Gathered<TcpStream>>>),
}

impl Io {
    /// Moves the socket to the calling thread's event loop, for a
    /// connection another serving thread opened: a second descriptor of
    /// the socket is registered here, then the first one is deregistered
    /// from the opening thread's loop and closed. The TCP connection, and
    /// a TLS session over it, go on as they were. Fails, and the caller
    /// closes the connection, if the upstream closed it or (clear text)
    /// sent bytes unasked: the opening loop may not have seen that yet.
    #[cfg(unix)]
    pub(crate) fn move_here(&mut self) -> io::Result<()> {
        use std::os::fd::AsFd;
        let tls = matches!(self, Io::Tls(_));
        let socket = match self {
            Io::Plain(s) => &mut s.0,
            Io::Tls(s) => &mut s.get_mut().0.0,
        };
        let second = std::net::TcpStream::from(socket.as_fd().try_clone_to_owned()?);
        // One look at the socket itself (a TLS session may have records
        // waiting, such as session tickets, that rustls reads).
        match second.peek(&mut [0u8; 1]) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Ok(n) if n > 0 && tls => {}
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "an idle upstream connection closed or sent bytes unasked",
                ));
            }
            Err(e) => return Err(e),
        }
        let moved = TcpStream::from_std(second)?;
        drop(std::mem::replace(socket, moved));
        Ok(())
    }

    /// Elsewhere a socket cannot move: the connection is closed instead.
    #[cfg(not(unix))]
    pub(crate) fn move_here(&mut self) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The upstream side of an upgrade: the bytes that came after the 101's
/// head, then the connection.
#[derive(Debug)]
pub(crate) struct Rewind {
    pub(crate) early: Bytes,
    pub(crate) io: Io,
}

impl AsyncRead for Rewind {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if replay(&mut this.early, buf) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
