//! The halves of a plain socket (Unix or TCP) on the reactor for reading only, for a thread
//! confined to one CPU: there the peer's reads must not wake us.
//!
//! A tokio `UnixStream` or `TcpStream` registers its socket for both readiness kinds,
//! edge-triggered. Every time the peer reads from the connection the kernel frees
//! send-buffer room on our side and signals the socket writable: an event for our epoll
//! that wakes our thread if it sleeps, although nothing waits to write. In a request-reply
//! exchange that is one early wake-up per message: the caller is woken when the callee
//! reads the request, before the callee has answered.
//!
//! Whether that wake-up costs or helps depends on where the two run:
//! - **On one CPU** it preempts the very process that is computing the answer: two context
//!   switches and an `epoll_wait` for nothing, per message. Measured on a 2-vCPU VM with
//!   both processes pinned to one core: 2.76 context switches per round trip instead of 2.
//! - **On two CPUs** it is an early warning: the waiting side's (virtual) CPU leaves its
//!   idle state while the peer computes, and is ready when the answer comes. Without it the
//!   same round trip took about twice as long on that VM.
//!
//! So [`Connection::into_split`](super::Connection::into_split) uses these halves only
//! when the calling thread may run on a single CPU ([`confined_to_one_cpu`]: a `taskset`,
//! a cgroup cpuset of one CPU, a one-vCPU machine), which every process it forks inherits;
//! anywhere else it keeps tokio's halves. The choice is made once per connection.
//!
//! Here a write is tried on the socket directly; only one that would block registers a
//! second descriptor of the same socket (a `dup`) for writability, waits on it, and keeps
//! it while writes keep blocking. The first write that goes through at once drops it, and
//! with it the writable events: a connection pays for them only while its peer is not
//! keeping up. A process at its fd limit has no descriptor to spare for that: its blocked
//! write retries on a short timer instead ([`NO_FD_RETRY`]), and the connection lives on.
//!
//! The module's `unsafe` is of two kinds, each at one place: registering an owned
//! descriptor with the reactor (tokio asks its caller to vouch that the descriptor stays
//! open while registered: an `OwnedFd` owned by the registration does), and reading into
//! the unfilled, uninitialised part of a read buffer, as tokio's own streams do.

#![allow(unsafe_code)]

use std::future::Future;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// How long a write that would block waits before it writes again when the process has
/// no descriptor to spare for the writable registration (at its fd limit).
const NO_FD_RETRY: std::time::Duration = std::time::Duration::from_millis(2);

/// Whether the calling thread may run on one CPU only (its affinity mask, which a cgroup
/// cpuset narrows too). An affinity that cannot be read counts as not confined: tokio's
/// halves are right everywhere, only slower there.
pub(crate) fn confined_to_one_cpu() -> bool {
    rustix::thread::sched_getaffinity(None).is_ok_and(|set| set.count() == 1)
}

/// The reading half of a socket registered for reading only.
#[derive(Debug)]
pub(super) struct QuietRead {
    fd: Arc<AsyncFd<OwnedFd>>,
}

/// The writing half; dropping it shuts the socket down for writing.
#[derive(Debug)]
pub(super) struct QuietWrite {
    fd: Arc<AsyncFd<OwnedFd>>,
    wait: WriteWait,
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

/// Splits a connected stream socket, taken off tokio's reactor (`into_std`), into halves on
/// it again for reading only.
///
/// # Errors
/// The socket could not be registered (no reactor, or the kernel refused).
pub(super) fn split(fd: OwnedFd) -> io::Result<(QuietRead, QuietWrite)> {
    // Registering reports the socket's present state: bytes that arrived while it was off
    // the reactor are an event, not a lost wake-up.
    let fd = Arc::new(register(fd, Interest::READABLE)?);
    let read = QuietRead { fd: Arc::clone(&fd) };
    Ok((read, QuietWrite { fd, wait: WriteWait { state: Wait::Idle, dup } }))
}

/// `fd` on the reactor, for `interest`.
fn register(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the registration owns `fd`, which stays open (and the same descriptor) until
    // the registration is dropped.
    Ok(unsafe { AsyncFd::register_with_interest(fd, interest) }?)
}

impl AsyncRead for QuietRead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut ready = ready!(self.fd.poll_read_ready(cx))?;
            // SAFETY: `recv` only writes to the unfilled part, and `assume_init` below covers
            // exactly the bytes it wrote.
            let unfilled: &mut [MaybeUninit<u8>] = unsafe { buf.unfilled_mut() };
            let want = unfilled.len();
            match rustix::net::recv(self.fd.get_ref(), unfilled, rustix::net::RecvFlags::DONTWAIT) {
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
                    Ok(dup) => {
                        self.state = Wait::Registered(register(dup, Interest::WRITABLE)?);
                    }
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

impl Drop for QuietWrite {
    fn drop(&mut self) {
        let _ = shutdown_write(&self.fd);
    }
}

impl AsyncWrite for QuietWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.wait.poll_write(&this.fd, cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.wait.poll_write(&this.fd, cx, bufs)
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, RawFd};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pair() -> ((QuietRead, QuietWrite), (QuietRead, QuietWrite)) {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        for s in [&a, &b] {
            s.set_nonblocking(true).unwrap();
        }
        (split(a.into()).unwrap(), split(b.into()).unwrap())
    }

    /// The epoll event masks this process has registered for the socket behind `fd`, from
    /// `/proc/self/fdinfo` of every epoll instance (an entry names the descriptor number
    /// and the file's inode: a number alone may be a closed descriptor's stale entry). Each
    /// distinct mask once: mio keeps a duplicate of its epoll descriptor, which lists the
    /// same entries again.
    pub(crate) fn epoll_masks(fd: RawFd) -> Vec<u32> {
        let ino = rustix::fs::fstat(
            // SAFETY: `fd` is open for the duration of this call (the caller holds it).
            unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        )
        .unwrap()
        .st_ino;
        let mut out = Vec::new();
        for entry in std::fs::read_dir("/proc/self/fdinfo").unwrap() {
            let Ok(info) = std::fs::read_to_string(entry.unwrap().path()) else { continue };
            for line in info.lines() {
                let words: Vec<&str> = line.split_whitespace().collect();
                let field = |name: &str| {
                    words.iter().position(|w| *w == name).and_then(|i| words.get(i + 1)).copied()
                };
                let ino_of = words.iter().find_map(|w| w.strip_prefix("ino:"));
                if field("tfd:") == Some(&fd.to_string())
                    && ino_of.and_then(|i| u64::from_str_radix(i, 16).ok()) == Some(ino)
                    && let Some(mask) = field("events:")
                {
                    out.push(u32::from_str_radix(mask, 16).unwrap());
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    const EPOLLIN: u32 = 0x1;
    const EPOLLOUT: u32 = 0x4;

    #[tokio::test]
    async fn bytes_go_both_ways_and_a_dropped_writer_is_eof() {
        let ((mut ar, mut aw), (mut br, mut bw)) = pair();
        let masks = epoll_masks(ar.fd.get_ref().as_raw_fd());
        assert!(
            masks.len() == 1 && masks[0] & EPOLLIN != 0 && masks[0] & EPOLLOUT == 0,
            "on the reactor for reading only: {masks:x?}"
        );
        aw.write_all(b"ping").await.unwrap();
        let mut x = [0u8; 4];
        br.read_exact(&mut x).await.unwrap();
        assert_eq!(&x, b"ping");
        bw.write_all(b"pong").await.unwrap();
        ar.read_exact(&mut x).await.unwrap();
        assert_eq!(&x, b"pong");
        drop(aw);
        assert_eq!(br.read(&mut x).await.unwrap(), 0, "EOF once the writing half is gone");
    }

    /// A writer far ahead of its reader blocks, waits for room (in the state `waiting`
    /// checks) and every byte arrives in order; once the reader keeps up the wait and its
    /// writable registration go.
    async fn blocked_writer(dup: fn(&OwnedFd) -> io::Result<OwnedFd>, waiting: fn(&Wait) -> bool) {
        let ((_ar, mut aw), (mut br, _bw)) = pair();
        aw.wait.dup = dup;
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
        assert!(waiting(&aw.wait.state), "a blocked write waits: {:?}", aw.wait.state);
        if let Wait::Registered(dup) = &aw.wait.state {
            let masks = epoll_masks(dup.get_ref().as_raw_fd());
            assert!(masks.len() == 1 && masks[0] & EPOLLOUT != 0, "{masks:x?}");
        }
        let mut got = vec![0u8; LEN];
        let (w, r) = tokio::join!(aw.write_all(&data[sent..]), br.read_exact(&mut got));
        w.unwrap();
        r.unwrap();
        assert!(got == data, "the bytes arrive in order");
        aw.write_all(b"!").await.unwrap();
        assert!(matches!(aw.wait.state, Wait::Idle), "a write that went through at once ends it");
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

    #[tokio::test]
    async fn a_write_to_a_closed_peer_is_an_error_not_a_signal() {
        let ((_ar, mut aw), b) = pair();
        drop(b);
        let err = aw.write_all(b"x").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
