//! A connected stream socket (Unix or TCP) on the reactor, read and written with plain
//! `recv`/`sendmsg` calls.
//!
//! A write is tried on the socket directly. One that would block waits on a second
//! descriptor of the same socket (a `dup`) registered for writability, kept while writes
//! keep blocking and dropped by the first write that goes through at once; a process at
//! its fd limit has no descriptor to spare for it, and its blocked write retries on a
//! short timer instead ([`NO_FD_RETRY`]), so the connection lives on.
//!
//! The socket itself is registered for both readiness kinds, as tokio's own streams are.
//! Registered for reading alone, the peer's reads would no longer wake us (each one frees
//! send-buffer room, an edge-triggered writable event): on one core that saves a context
//! switch and an `epoll_wait` per message, but across cores of a VM those early wake-ups
//! are what keeps the waiting side's vCPU awake for the answer that follows, and a
//! cross-core round trip measured twice as slow without them (`cargo bench -p plough
//! --bench runtime -- --only rpc`, 2026-12-03). Interest is fixed at registration, so the
//! choice is made here, for the common, unpinned, case.
//!
//! The module's `unsafe` is of two kinds, each at one place: registering an owned
//! descriptor with the reactor (tokio asks its caller to vouch that the descriptor stays
//! open while registered: an `OwnedFd` owned by the registration does), and reading into
//! the unfilled, uninitialised part of a read buffer.

#![allow(unsafe_code)]

use std::future::Future;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// A connected stream socket, registered for reading (see the module docs).
#[derive(Debug)]
pub(super) struct Socket {
    fd: Arc<AsyncFd<OwnedFd>>,
    writer: WriteWait,
    /// A TCP socket's own address.
    local: Option<SocketAddr>,
}

/// The reading half of a split [`Socket`].
#[derive(Debug)]
pub(super) struct SocketRead {
    fd: Arc<AsyncFd<OwnedFd>>,
}

/// The writing half of a split [`Socket`]; dropping it shuts the socket down for writing.
#[derive(Debug)]
pub(super) struct SocketWrite {
    fd: Arc<AsyncFd<OwnedFd>>,
    writer: WriteWait,
}

/// How a write that would block waits for room, while writes keep blocking.
#[derive(Debug)]
struct WriteWait {
    state: Wait,
    /// How it gets the descriptor it registers ([`dup`]; a failing one in tests).
    dup: fn(&OwnedFd) -> io::Result<OwnedFd>,
}

#[derive(Debug)]
enum Wait {
    /// The last write went through.
    Idle,
    /// A duplicate of the socket, registered for writability.
    Registered(AsyncFd<OwnedFd>),
    /// The process had no descriptor to duplicate it with: retried after [`NO_FD_RETRY`].
    Retrying(Pin<Box<tokio::time::Sleep>>),
}

impl Default for WriteWait {
    fn default() -> Self {
        Self { state: Wait::Idle, dup }
    }
}

/// How long a write that would block waits before it writes again when the process has
/// no descriptor to spare for the writable registration (at its fd limit).
const NO_FD_RETRY: std::time::Duration = std::time::Duration::from_millis(2);

impl Socket {
    /// Takes over a tokio stream: off the reactor, and back on it for reading only.
    ///
    /// # Errors
    /// The socket could not be registered.
    pub(super) fn from_tokio(stream: tokio::net::UnixStream) -> io::Result<Self> {
        Self::new(OwnedFd::from(stream.into_std()?), None)
    }

    /// [`Socket::from_tokio`] for a TCP stream.
    ///
    /// # Errors
    /// Its address could not be read, or it could not be registered.
    pub(super) fn from_tcp(stream: tokio::net::TcpStream) -> io::Result<Self> {
        let local = stream.local_addr()?;
        Self::new(OwnedFd::from(stream.into_std()?), Some(local))
    }

    fn new(fd: OwnedFd, local: Option<SocketAddr>) -> io::Result<Self> {
        let fd = register(fd, Interest::READABLE | Interest::WRITABLE)?;
        Ok(Self { fd: Arc::new(fd), writer: WriteWait::default(), local })
    }

    /// A TCP socket's own address.
    pub(super) fn local_addr(&self) -> Option<SocketAddr> {
        self.local
    }

    /// Reads what has arrived into `buf` without taking it, waiting for something to.
    pub(super) async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut ready = self.fd.readable().await?;
            match rustix::net::recv(
                self.fd.get_ref(),
                &mut *buf,
                rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT,
            ) {
                Ok((n, _)) => return Ok(n),
                Err(rustix::io::Errno::AGAIN) => ready.clear_ready(),
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    pub(super) fn into_split(self) -> (SocketRead, SocketWrite) {
        let read = SocketRead { fd: Arc::clone(&self.fd) };
        (read, SocketWrite { fd: self.fd, writer: self.writer })
    }
}

/// `fd` on the reactor, for `interest`.
fn register(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the registration owns `fd`, which stays open (and the same descriptor) until
    // the registration is dropped.
    Ok(unsafe { AsyncFd::register_with_interest(fd, interest) }?)
}

/// Reads into `buf`, waiting for the socket to be readable.
fn poll_read(
    fd: &AsyncFd<OwnedFd>,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    loop {
        let mut ready = ready!(fd.poll_read_ready(cx))?;
        // SAFETY: `recv` only writes to the unfilled part, and `assume_init` below covers
        // exactly the bytes it wrote.
        let unfilled: &mut [MaybeUninit<u8>] = unsafe { buf.unfilled_mut() };
        let want = unfilled.len();
        match rustix::net::recv(fd.get_ref(), unfilled, rustix::net::RecvFlags::DONTWAIT) {
            Ok((_, n)) => {
                // A short read emptied the socket: the next read waits for an event
                // instead of costing a `recv` that would fail (as tokio's streams do).
                if n < want {
                    ready.clear_ready();
                }
                // SAFETY: `recv` initialised the first `n` bytes of the unfilled part.
                unsafe { buf.assume_init(n) };
                buf.advance(n);
                return Poll::Ready(Ok(()));
            }
            Err(rustix::io::Errno::AGAIN) => ready.clear_ready(),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Poll::Ready(Err(e.into())),
        }
    }
}

impl WriteWait {
    /// Writes what it can of `bufs`; a write that would block waits for room.
    fn poll_write(
        &mut self,
        fd: &AsyncFd<OwnedFd>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut first = true;
        loop {
            let sent = rustix::net::sendmsg(
                fd.get_ref(),
                bufs,
                &mut rustix::net::SendAncillaryBuffer::default(),
                rustix::net::SendFlags::DONTWAIT | rustix::net::SendFlags::NOSIGNAL,
            );
            match sent {
                Ok(n) => {
                    if first {
                        // The peer keeps up again: no more writable events.
                        self.state = Wait::Idle;
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(rustix::io::Errno::AGAIN) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Poll::Ready(Err(e.into())),
            }
            first = false;
            match &mut self.state {
                Wait::Registered(wait) => {
                    let mut ready = ready!(wait.poll_write_ready(cx))?;
                    ready.clear_ready();
                }
                Wait::Retrying(sleep) => {
                    ready!(sleep.as_mut().poll(cx));
                    self.state = Wait::Idle;
                }
                // Registering checks the socket's state at once: room that came free since
                // the failed write is an event, not a lost wake-up.
                Wait::Idle => match (self.dup)(fd.get_ref()) {
                    Ok(dup) => self.state = Wait::Registered(register(dup, Interest::WRITABLE)?),
                    // No descriptor to spare: the write still waits, retrying on a timer,
                    // rather than failing its connection.
                    Err(e) if plough_fork_prims::is_out_of_fds(&e) => {
                        self.state = Wait::Retrying(Box::pin(tokio::time::sleep(NO_FD_RETRY)));
                    }
                    Err(e) => return Poll::Ready(Err(e)),
                },
            }
        }
    }
}

/// The descriptor a blocked write waits on: a duplicate of the socket's.
fn dup(fd: &OwnedFd) -> io::Result<OwnedFd> {
    Ok(rustix::io::fcntl_dupfd_cloexec(fd, 3)?)
}

fn shutdown_write(fd: &AsyncFd<OwnedFd>) -> io::Result<()> {
    match rustix::net::shutdown(fd.get_ref(), rustix::net::Shutdown::Write) {
        // The peer is gone already: nothing is left to shut.
        Ok(()) | Err(rustix::io::Errno::NOTCONN) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

impl Drop for SocketWrite {
    fn drop(&mut self) {
        let _ = shutdown_write(&self.fd);
    }
}

/// `AsyncRead` for a type with a socket.
macro_rules! async_read {
    ($t:ty) => {
        impl AsyncRead for $t {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                poll_read(&self.fd, cx, buf)
            }
        }
    };
}

async_read!(Socket);
async_read!(SocketRead);

/// `AsyncWrite` for a type with a socket and its [`WriteWait`].
macro_rules! async_write {
    ($t:ty) => {
        impl AsyncWrite for $t {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                let this = self.get_mut();
                this.writer.poll_write(&this.fd, cx, &[IoSlice::new(buf)])
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                let this = self.get_mut();
                this.writer.poll_write(&this.fd, cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                true
            }

            fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }

            fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(shutdown_write(&self.fd))
            }
        }
    };
}

async_write!(Socket);
async_write!(SocketWrite);

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pair() -> (Socket, Socket) {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        (Socket::from_tokio(a).unwrap(), Socket::from_tokio(b).unwrap())
    }

    #[tokio::test]
    async fn bytes_go_both_ways_and_a_dropped_writer_is_eof() {
        let (a, mut b) = pair();
        let (mut ar, mut aw) = a.into_split();
        aw.write_all(b"ping").await.unwrap();
        let mut x = [0u8; 4];
        b.read_exact(&mut x).await.unwrap();
        assert_eq!(&x, b"ping");
        b.write_all(b"pong").await.unwrap();
        ar.read_exact(&mut x).await.unwrap();
        assert_eq!(&x, b"pong");
        drop(aw);
        assert_eq!(b.read(&mut x).await.unwrap(), 0, "EOF once the writing half is gone");
    }

    /// A writer far ahead of its reader blocks, waits for room (in the state `waiting`
    /// checks) and every byte arrives in order; once the reader keeps up the wait goes.
    async fn blocked_writer(dup: fn(&OwnedFd) -> io::Result<OwnedFd>, waiting: fn(&Wait) -> bool) {
        let (a, b) = pair();
        let (_ar, mut aw) = a.into_split();
        aw.writer.dup = dup;
        let (mut br, _bw) = b.into_split();
        const LEN: usize = 8 << 20;
        let data: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
        // Fill the socket until a write would block (8 MiB is more than its buffers).
        let mut sent = 0;
        std::future::poll_fn(|cx| {
            loop {
                match Pin::new(&mut aw).poll_write(cx, &data[sent..]) {
                    Poll::Ready(Ok(n)) => sent += n,
                    Poll::Ready(Err(e)) => panic!("write failed: {e}"),
                    Poll::Pending => return Poll::Ready(()),
                }
            }
        })
        .await;
        assert!(sent < LEN, "a socket buffer took {sent} bytes");
        assert!(waiting(&aw.writer.state), "a blocked write waits: {:?}", aw.writer.state);
        let mut got = vec![0u8; LEN];
        let (w, r) = tokio::join!(aw.write_all(&data[sent..]), br.read_exact(&mut got));
        w.unwrap();
        r.unwrap();
        assert!(got == data, "the bytes arrive in order");
        aw.write_all(b"!").await.unwrap();
        assert!(matches!(aw.writer.state, Wait::Idle), "a write that went through at once ends it");
        let mut x = [0u8; 1];
        br.read_exact(&mut x).await.unwrap();
        assert_eq!(&x, b"!");
    }

    #[tokio::test]
    async fn a_blocked_writer_waits_on_a_writable_registration_and_loses_nothing() {
        blocked_writer(dup, |w| matches!(w, Wait::Registered(_))).await;
    }

    /// At the fd limit a blocked write has no descriptor to register: it retries on a
    /// timer instead of failing its connection.
    #[tokio::test]
    async fn a_blocked_writer_with_no_fd_to_spare_retries_and_loses_nothing() {
        fn out_of_fds(_: &OwnedFd) -> io::Result<OwnedFd> {
            Err(rustix::io::Errno::MFILE.into())
        }
        blocked_writer(out_of_fds, |w| matches!(w, Wait::Retrying(_))).await;
    }

    /// Over TCP too: a peek sees what arrived without taking it, and the socket knows its
    /// own address.
    #[tokio::test]
    async fn a_tcp_socket_peeks_without_taking_and_knows_its_address() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (dialed, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(l.local_addr().unwrap()), l.accept());
        let dialed = dialed.unwrap();
        let expected = dialed.local_addr().unwrap();
        let (mut a, mut b) =
            (Socket::from_tcp(dialed).unwrap(), Socket::from_tcp(accepted.unwrap().0).unwrap());
        assert_eq!(a.local_addr(), Some(expected));
        a.write_all(b"hello").await.unwrap();
        let mut first = [0u8; 1];
        assert_eq!(b.peek(&mut first).await.unwrap(), 1);
        assert_eq!(&first, b"h");
        let mut all = [0u8; 5];
        b.read_exact(&mut all).await.unwrap();
        assert_eq!(&all, b"hello", "the peeked byte was not taken");
    }

    #[tokio::test]
    async fn a_write_to_a_closed_peer_is_an_error_not_a_signal() {
        let (mut a, b) = pair();
        drop(b);
        let err = a.write_all(b"x").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
