//! A connection split into a reading and a writing half, so that a reader task and a
//! writer task use it at once without a lock between them: a Unix or TCP stream splits into
//! the kernel socket's own halves; only TLS, whose session state both directions share,
//! goes through `tokio::io::split`'s lock.

use super::fd_reserve::Slot;
use super::{Connection, Stream, not_secured};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, tcp, unix};

type Tls = Box<tokio_rustls::TlsStream<TcpStream>>;

/// The reading half of a [`Connection`] ([`Connection::into_split`]).
#[derive(Debug)]
pub struct ReadHalf {
    inner: ReadInner,
    /// Told when both halves are gone (the listener's fd reserve).
    _slot: Arc<Option<Slot>>,
}

/// The writing half of a [`Connection`] ([`Connection::into_split`]). Dropping it shuts
/// the connection down for writing: the peer reads EOF.
#[derive(Debug)]
pub struct WriteHalf {
    inner: WriteInner,
    _slot: Arc<Option<Slot>>,
}

#[derive(Debug)]
enum ReadInner {
    Tcp(tcp::OwnedReadHalf),
    Uds(unix::OwnedReadHalf),
    Tls(tokio::io::ReadHalf<Tls>),
    /// A TLS connection not secured yet: reads fail, as on the whole connection.
    Unsecured,
}

#[derive(Debug)]
enum WriteInner {
    Tcp(tcp::OwnedWriteHalf),
    Uds(unix::OwnedWriteHalf),
    Tls(tokio::io::WriteHalf<Tls>),
    Unsecured,
}

impl Connection {
    /// Splits the connection into its reading and writing halves (see the module docs).
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        let slot = Arc::new(self.slot);
        let (r, w) = match self.stream {
            Stream::Tcp(s) => {
                let (r, w) = s.into_split();
                (ReadInner::Tcp(r), WriteInner::Tcp(w))
            }
            Stream::Uds(s) => {
                let (r, w) = s.into_split();
                (ReadInner::Uds(r), WriteInner::Uds(w))
            }
            Stream::Tls(s) => {
                let (r, w) = tokio::io::split(s);
                (ReadInner::Tls(r), WriteInner::Tls(w))
            }
            Stream::Pending(_) => (ReadInner::Unsecured, WriteInner::Unsecured),
        };
        let read = ReadHalf { inner: r, _slot: Arc::clone(&slot) };
        (read, WriteHalf { inner: w, _slot: slot })
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            ReadInner::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            ReadInner::Uds(s) => Pin::new(s).poll_read(cx, buf),
            ReadInner::Tls(s) => Pin::new(s).poll_read(cx, buf),
            ReadInner::Unsecured => Poll::Ready(Err(not_secured())),
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().inner {
            WriteInner::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            WriteInner::Uds(s) => Pin::new(s).poll_write(cx, buf),
            WriteInner::Tls(s) => Pin::new(s).poll_write(cx, buf),
            WriteInner::Unsecured => Poll::Ready(Err(not_secured())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().inner {
            WriteInner::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            WriteInner::Uds(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            WriteInner::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            WriteInner::Unsecured => Poll::Ready(Err(not_secured())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            WriteInner::Tcp(s) => Pin::new(s).poll_flush(cx),
            WriteInner::Uds(s) => Pin::new(s).poll_flush(cx),
            WriteInner::Tls(s) => Pin::new(s).poll_flush(cx),
            WriteInner::Unsecured => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            WriteInner::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            WriteInner::Uds(s) => Pin::new(s).poll_shutdown(cx),
            WriteInner::Tls(s) => Pin::new(s).poll_shutdown(cx),
            WriteInner::Unsecured => Poll::Ready(Ok(())),
        }
    }
}
