//! Receiving signals through a `signalfd` created in this process.
//!
//! tokio's signal driver keeps process-global state (a self-pipe registered once per
//! process, and `sigaction` handlers that write to it). A forked child inherits that
//! state initialised, but its fds are closed by the scrub — or, worse, their numbers
//! reused. So an actor that may be a forked child receives its signals here instead: the
//! signals are blocked on the calling thread (the actor's runtime thread; our helper
//! threads block everything) and read from a `signalfd(2)` registered with the reactor.
//!
//! # Safety
//!
//! `pthread_sigmask`, `signalfd` and `read` on owned, initialised values.
#![allow(unsafe_code)]

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// A set of signals delivered as readable events instead of handlers.
///
/// Dropping it drains signals still queued (so they are consumed, not delivered) and
/// restores the thread's previous signal mask — unless it was made
/// [`keeping_blocked`](SignalFd::keeping_blocked).
pub struct SignalFd {
    fd: AsyncFd<OwnedFd>,
    old_mask: libc::sigset_t,
    /// Restore `old_mask` on drop.
    restore: bool,
}

impl std::fmt::Debug for SignalFd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalFd").field("fd", &self.fd.get_ref()).finish()
    }
}

impl SignalFd {
    /// Blocks `signals` on the calling thread and opens a signalfd for them. Must be
    /// called inside a tokio runtime with I/O enabled, on the thread whose mask matters
    /// (for a current-thread runtime: the one running it).
    ///
    /// # Errors
    ///
    /// `sigprocmask`, `signalfd` or reactor registration failures.
    pub fn new(signals: &[i32]) -> io::Result<Self> {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set.
        unsafe { libc::sigemptyset(set.as_mut_ptr()) };
        // SAFETY: initialised just above.
        let mut set = unsafe { set.assume_init() };
        for &s in signals {
            // SAFETY: adds a signal number to an initialised set (EINVAL for a bad one).
            if unsafe { libc::sigaddset(&mut set, s) } != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("bad signal number {s}"),
                ));
            }
        }
        let mut old = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: blocks the set on this thread and saves the previous mask.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, old.as_mut_ptr()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        // SAFETY: pthread_sigmask succeeded and filled `old`.
        let old_mask = unsafe { old.assume_init() };
        // SAFETY: creates a new fd from an initialised mask.
        let raw = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh fd we own.
        let owned = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: the AsyncFd owns `owned`; nothing else closes or replaces it.
        let fd = unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE)? };
        Ok(SignalFd { fd, old_mask, restore: true })
    }

    /// The same signalfd, but dropping it leaves its signals blocked: for a process that
    /// exits once it is done with them, so that a signal arriving during the exit stays
    /// pending (and dies with the process) instead of killing it halfway by its default
    /// action.
    pub fn keeping_blocked(mut self) -> Self {
        self.restore = false;
        self
    }

    /// Waits for the next signal; returns its number. Cancel-safe.
    ///
    /// # Errors
    ///
    /// Reactor or `read` failures.
    pub async fn recv(&self) -> io::Result<i32> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut info = MaybeUninit::<libc::signalfd_siginfo>::uninit();
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            // SAFETY: reads at most `size` bytes into a buffer of that size.
            let n = unsafe {
                libc::read(self.fd.get_ref().as_raw_fd(), info.as_mut_ptr().cast(), size)
            };
            if n == size as isize {
                // SAFETY: the kernel filled the whole struct.
                return Ok(unsafe { info.assume_init() }.ssi_signo as i32);
            }
            let err = io::Error::last_os_error();
            if n < 0 && err.kind() == io::ErrorKind::WouldBlock {
                guard.clear_ready();
                continue;
            }
            if n < 0 && err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(if n < 0 { err } else { io::Error::other("short read from signalfd") });
        }
    }
}

impl Drop for SignalFd {
    fn drop(&mut self) {
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        let mut info = MaybeUninit::<libc::signalfd_siginfo>::uninit();
        // SAFETY: non-blocking reads into a buffer of the right size, until EAGAIN.
        while unsafe { libc::read(self.fd.get_ref().as_raw_fd(), info.as_mut_ptr().cast(), size) }
            == size as isize
        {}
        if self.restore {
            // SAFETY: restores the mask saved in `new`.
            unsafe {
                libc::pthread_sigmask(libc::SIG_SETMASK, &self.old_mask, std::ptr::null_mut())
            };
        }
    }
}
