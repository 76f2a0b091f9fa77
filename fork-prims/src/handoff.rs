//! How a parent hands things to a process it starts: one message with file descriptors
//! over a `SOCK_SEQPACKET` Unix socket (the bytes in one datagram, the fds as
//! `SCM_RIGHTS`), and the environment variable that says such a socket is on fd 0. The
//! parent's boot for a child (`startup`) and the root's requests to its zygote (`zygote`)
//! travel this way.

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// The environment variable that starts a process as a plough child (`exec`) or a zygote
/// (`zygote`), with its socket on fd 0; removed before `main` (see `startup`).
pub const BOOT_ENV: &str = "PLOUGH_BOOT";

/// [`BOOT_ENV`]'s value for a child started with `exec`.
pub const EXEC_MODE: &str = "exec";

/// [`BOOT_ENV`]'s value for a zygote.
pub(crate) const ZYGOTE_MODE: &str = "zygote";

/// `/dev/null` onto fd 0.
pub(crate) fn null_stdin() -> io::Result<()> {
    use rustix::fs::{Mode, OFlags};
    let null = rustix::fs::open("/dev/null", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    rustix::stdio::dup2_stdin(&null)?;
    Ok(())
}

/// A child's fd 0 for [`BOOT_ENV`]`=`[`EXEC_MODE`]: a socket that already holds one
/// message, `payload` with `fds` (at most 8 fds, 64 KiB), for the child's startup hook to
/// take before `main` (see [`take_delivery`](crate::take_delivery)). Our end is closed
/// here: the message waits in the child's end until it reads it.
///
/// # Errors
///
/// Out of fds, or the message is too large.
pub fn boot_socket(payload: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<OwnedFd> {
    let (ours, theirs) = pair()?;
    send(ours.as_fd(), payload, fds)?;
    Ok(theirs)
}

/// The most fds one message carries.
pub(crate) const MAX_FDS: usize = 8;

/// The largest message body.
pub(crate) const MAX_BYTES: usize = 64 * 1024;

/// A socket pair for messages with fds: `(ours, theirs)`, both close-on-exec.
pub(crate) fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// Sends `bytes` with `fds` as one message (never raises SIGPIPE).
pub(crate) fn send(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if fds.len() > MAX_FDS || bytes.len() > MAX_BYTES {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "message too large"));
    }
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("the fds do not fit the control buffer"));
    }
    let sent = loop {
        match rustix::net::sendmsg(sock, &[IoSlice::new(bytes)], &mut control, SendFlags::NOSIGNAL)
        {
            Err(rustix::io::Errno::INTR) => continue,
            other => break other?,
        }
    };
    if sent != bytes.len() {
        return Err(io::Error::other(format!("short send: {sent} of {} bytes", bytes.len())));
    }
    Ok(())
}

/// What [`recv_lossy`] got: as [`Received`], with whether fds were cut.
pub(crate) type Lossy = Option<(Vec<u8>, Vec<OwnedFd>, bool)>;

/// What [`recv`] got: `None` at end of file (the peer closed its end).
pub(crate) type Received = Option<(Vec<u8>, Vec<OwnedFd>)>;

/// Receives one message. `nonblocking`: `WouldBlock` when none is queued.
///
/// # Errors
///
/// As [`recv_lossy`], and a message whose fds did not all arrive (`InvalidData`).
pub(crate) fn recv(sock: BorrowedFd<'_>, nonblocking: bool) -> io::Result<Received> {
    match recv_lossy(sock, nonblocking)? {
        Some((_, _, true)) => Err(io::Error::new(io::ErrorKind::InvalidData, "message truncated")),
        Some((bytes, fds, false)) => Ok(Some((bytes, fds))),
        None => Ok(None),
    }
}

/// [`recv`] that keeps a message whose fds were cut (`MSG_CTRUNC`: this process had no fd
/// left for them, the kernel dropped them): `(bytes, the fds that came, cut)`. The bytes
/// may name what the lost fds were for (the zygote's reply names the child whose pidfd
/// was lost).
///
/// # Errors
///
/// `recvmsg` failed, or the bytes were cut (`MSG_TRUNC`).
pub(crate) fn recv_lossy(sock: BorrowedFd<'_>, nonblocking: bool) -> io::Result<Lossy> {
    let mut buf = vec![0u8; MAX_BYTES];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut flags = RecvFlags::CMSG_CLOEXEC;
    if nonblocking {
        flags |= RecvFlags::DONTWAIT;
    }
    let got = loop {
        match rustix::net::recvmsg(sock, &mut [IoSliceMut::new(&mut buf)], &mut control, flags) {
            Err(rustix::io::Errno::INTR) => continue,
            other => break other?,
        }
    };
    let mut fds = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = msg {
            fds.extend(rights);
        }
    }
    if got.flags.contains(rustix::net::ReturnFlags::TRUNC) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "message truncated"));
    }
    let cut = got.flags.contains(rustix::net::ReturnFlags::CTRUNC);
    if got.bytes == 0 && fds.is_empty() && !cut {
        return Ok(None);
    }
    buf.truncate(got.bytes);
    Ok(Some((buf, fds, cut)))
}

/// The pid and uid of the process at the other end of a Unix socket.
pub(crate) fn peer(sock: impl AsFd) -> io::Result<(u32, u32)> {
    let cred = rustix::net::sockopt::socket_peercred(sock)?;
    Ok((cred.pid.as_raw_nonzero().get() as u32, cred.uid.as_raw()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_and_fds_cross_and_eof_is_none() {
        let (a, b) = pair().unwrap();
        let (r, w) = rustix::pipe::pipe().unwrap();
        send(a.as_fd(), b"hello", &[w.as_fd()]).unwrap();
        drop(w);
        let (bytes, mut fds) = recv(b.as_fd(), false).unwrap().unwrap();
        assert_eq!(bytes, b"hello");
        assert_eq!(fds.len(), 1);
        rustix::io::write(fds.pop().unwrap(), b"x").unwrap();
        let mut got = [0u8; 1];
        assert_eq!(rustix::io::read(&r, &mut got).unwrap(), 1);
        assert!(matches!(recv(b.as_fd(), true), Err(e) if e.kind() == io::ErrorKind::WouldBlock));
        assert_eq!(peer(&b).unwrap().0, std::process::id());
        drop(a);
        assert!(recv(b.as_fd(), false).unwrap().is_none());
    }
}
