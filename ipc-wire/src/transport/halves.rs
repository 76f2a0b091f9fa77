//! A connection split into a reading and a writing half, so that a reader task and a
//! writer task use it at once without a lock between them: a Unix or TCP stream splits into
//! the kernel socket's own halves; only TLS, whose session state both directions share,
//! goes through `tokio::io::split`'s lock. On a thread confined to one CPU a Unix or TCP
//! stream is registered for reading only instead (see [`quiet`](super::quiet)).

use super::fd_reserve::Slot;
use super::quiet::{self, QuietRead, QuietWrite};
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
    /// A Unix or TCP stream registered for reading only.
    Quiet(QuietRead),
    /// A TLS connection not secured yet: reads fail, as on the whole connection.
    Unsecured,
    /// A stream that could not be put back on the reactor: reads fail (rare: the kernel
    /// refused the registration).
    Unregistered,
}

#[derive(Debug)]
enum WriteInner {
    Tcp(tcp::OwnedWriteHalf),
    Uds(unix::OwnedWriteHalf),
    Tls(tokio::io::WriteHalf<Tls>),
    Quiet(QuietWrite),
    Unsecured,
    Unregistered,
}

impl Connection {
    /// Splits the connection into its reading and writing halves (see the module docs).
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        let slot = Arc::new(self.slot);
        let (r, w) = match self.stream {
            Stream::Tcp(s) if quiet::confined_to_one_cpu() => {
                quiet_halves(s.into_std().map(std::os::fd::OwnedFd::from))
            }
            Stream::Uds(s) if quiet::confined_to_one_cpu() => {
                quiet_halves(s.into_std().map(std::os::fd::OwnedFd::from))
            }
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

/// The halves of a socket taken off the reactor (`into_std`), back on it for reading only.
fn quiet_halves(fd: io::Result<std::os::fd::OwnedFd>) -> (ReadInner, WriteInner) {
    match fd.and_then(quiet::split) {
        Ok((r, w)) => (ReadInner::Quiet(r), WriteInner::Quiet(w)),
        Err(e) => {
            tracing::warn!(error = %e, "a connection could not be registered with the reactor");
            (ReadInner::Unregistered, WriteInner::Unregistered)
        }
    }
}

/// A read or write on a connection that could not be registered with the reactor.
fn unregistered() -> io::Error {
    io::Error::other("the connection could not be registered with the reactor")
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
            ReadInner::Quiet(s) => Pin::new(s).poll_read(cx, buf),
            ReadInner::Unsecured => Poll::Ready(Err(not_secured())),
            ReadInner::Unregistered => Poll::Ready(Err(unregistered())),
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
            WriteInner::Quiet(s) => Pin::new(s).poll_write(cx, buf),
            WriteInner::Unsecured => Poll::Ready(Err(not_secured())),
            WriteInner::Unregistered => Poll::Ready(Err(unregistered())),
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
            WriteInner::Quiet(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            WriteInner::Unsecured => Poll::Ready(Err(not_secured())),
            WriteInner::Unregistered => Poll::Ready(Err(unregistered())),
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
            WriteInner::Quiet(s) => Pin::new(s).poll_flush(cx),
            WriteInner::Unsecured => Poll::Ready(Ok(())),
            WriteInner::Unregistered => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            WriteInner::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            WriteInner::Uds(s) => Pin::new(s).poll_shutdown(cx),
            WriteInner::Tls(s) => Pin::new(s).poll_shutdown(cx),
            WriteInner::Quiet(s) => Pin::new(s).poll_shutdown(cx),
            WriteInner::Unsecured => Poll::Ready(Ok(())),
            WriteInner::Unregistered => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::quiet::tests::epoll_masks;
    use std::os::fd::AsRawFd;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const EPOLLOUT: u32 = 0x4;

    /// Splits one end of a Unix socketpair on a runtime of a thread of its own with the
    /// affinity `cpus` (the test's thread keeps its own), and returns the epoll masks of the
    /// split socket and whether bytes still went both ways.
    fn split_on(cpus: Option<rustix::thread::CpuSet>) -> (Vec<u32>, bool) {
        std::thread::spawn(move || {
            if let Some(cpus) = cpus {
                rustix::thread::sched_setaffinity(None, &cpus).unwrap();
            }
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let (a, mut b) = tokio::net::UnixStream::pair().unwrap();
                let fd = a.as_raw_fd();
                let (mut r, mut w) = Connection::from_unix(a).unwrap().into_split();
                let masks = epoll_masks(fd);
                w.write_all(b"ping").await.unwrap();
                let mut x = [0u8; 4];
                b.read_exact(&mut x).await.unwrap();
                b.write_all(b"pong").await.unwrap();
                r.read_exact(&mut x).await.unwrap();
                (masks, &x == b"pong")
            })
        })
        .join()
        .unwrap()
    }

    #[test]
    fn on_one_cpu_a_split_socket_is_on_the_reactor_for_reading_only() {
        let mut one = rustix::thread::CpuSet::new();
        one.set(rustix::thread::sched_getcpu());
        let (masks, works) = split_on(Some(one));
        assert!(works, "bytes go both ways");
        assert!(masks.len() == 1 && masks[0] & EPOLLOUT == 0, "read-only: {masks:x?}");
    }

    #[test]
    fn on_several_cpus_a_split_socket_keeps_tokios_registration() {
        if quiet::confined_to_one_cpu() {
            return; // a one-CPU machine has nothing else to show
        }
        let (masks, works) = split_on(None);
        assert!(works, "bytes go both ways");
        assert!(masks.len() == 1 && masks[0] & EPOLLOUT != 0, "readable and writable: {masks:x?}");
    }
}
