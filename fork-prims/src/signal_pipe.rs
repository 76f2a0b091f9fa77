//! Receiving signals in a process whose other threads we do not control: [`SignalPipe`].
//!
//! A [`SignalFd`](crate::SignalFd) sees a process-directed signal only if every thread
//! blocks it; a program's own threads, started before ours, usually do not, and the
//! kernel then delivers the signal there, where its default action kills the process.
//! A `SignalPipe` instead installs a process-wide handler (`sigaction`): whichever thread
//! the kernel picks runs it; it first calls the handler that was installed before (so the
//! program's own handling, e.g. tokio's `ctrl_c()`, still sees every signal), then writes
//! the signal's number to a pipe that [`SignalPipe::recv`] reads. Dropping it restores the
//! previous handlers — unless a handler was installed over ours meanwhile (e.g. tokio's
//! `ctrl_c()` first called after us, which chains to ours): that one stays, and ours, in
//! its chain, only passes the signal on to what was there before. A signal the process
//! ignores (`SIG_IGN`, e.g. under `nohup`) stays ignored.
//!
//! Use it in a root process, never in a forked child: a forked child inherits the handler
//! and this module's globals, and the child prelude resets handled signals to `SIG_DFL`
//! (see `signals`), which is why child actors use a `SignalFd` of their own.
//!
//! # Safety
//!
//! `sigaction` on owned, initialised values; the handler only does async-signal-safe
//! things: atomic loads, a call to the previous handler (which had to be
//! async-signal-safe already), and a non-blocking `write` to a pipe.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use tokio::net::unix::pipe;

/// A set of signals delivered, from any thread, as bytes on a pipe. One per signal at a
/// time in a process.
pub struct SignalPipe {
    rx: pipe::Receiver,
    /// The write end the handler uses (kept open while the handlers are installed).
    _tx: OwnedFd,
    /// Each signal we handle, with the action we replaced (restored on drop).
    replaced: Vec<(i32, libc::sigaction)>,
}

impl std::fmt::Debug for SignalPipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let signals: Vec<i32> = self.replaced.iter().map(|(s, _)| *s).collect();
        f.debug_struct("SignalPipe").field("signals", &signals).finish()
    }
}

/// Per signal number: the pipe the handler writes to, and the handler it chains to.
struct Slot {
    /// The pipe's write end; -1: none.
    fd: AtomicI32,
    prev_handler: AtomicUsize,
    prev_flags: AtomicI32,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot {
    fd: AtomicI32::new(-1),
    prev_handler: AtomicUsize::new(libc::SIG_DFL),
    prev_flags: AtomicI32::new(0),
};

static SLOTS: [Slot; 65] = [EMPTY; 65];

fn slot(sig: i32) -> Option<&'static Slot> {
    usize::try_from(sig).ok().and_then(|i| SLOTS.get(i))
}

impl SignalPipe {
    /// Handles `signals` process-wide from now on. Must be called inside a tokio runtime
    /// with I/O enabled.
    ///
    /// # Errors
    ///
    /// `pipe`, reactor registration or `sigaction` failures (what was installed so far is
    /// restored).
    pub fn new(signals: &[i32]) -> io::Result<Self> {
        let (read, write) = rustix::pipe::pipe_with(
            rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
        )?;
        let rx = pipe::Receiver::from_owned_fd(read)?;
        let mut this = SignalPipe { rx, _tx: write, replaced: Vec::new() };
        let fd = this._tx.as_raw_fd();
        for &sig in signals {
            let Some(slot) = slot(sig) else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("bad signal {sig}"),
                ));
            };
            // SAFETY: an all-zero sigaction is a valid value to read into.
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: reads the current action into an owned buffer.
            if unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) } != 0 {
                return Err(io::Error::last_os_error());
            }
            if old.sa_sigaction == libc::SIG_IGN {
                continue;
            }
            // Published before the handler can run (the `sigaction` below orders them).
            slot.prev_handler.store(old.sa_sigaction, Ordering::SeqCst);
            slot.prev_flags.store(old.sa_flags, Ordering::SeqCst);
            slot.fd.store(fd, Ordering::SeqCst);
            // SAFETY: an all-zero sigaction is a valid value; the fields are set below.
            let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
            new.sa_sigaction = handler as *const () as usize;
            new.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
            // SAFETY: `sa_mask` is an owned, initialised set.
            unsafe { libc::sigemptyset(&mut new.sa_mask) };
            // SAFETY: installs a handler that is async-signal-safe (see `handler`).
            if unsafe { libc::sigaction(sig, &new, std::ptr::null_mut()) } != 0 {
                slot.fd.store(-1, Ordering::SeqCst);
                return Err(io::Error::last_os_error());
            }
            this.replaced.push((sig, old));
        }
        Ok(this)
    }

    /// Waits for the next signal; returns its number. Cancel-safe.
    ///
    /// # Errors
    ///
    /// Reactor or `read` failures.
    pub async fn recv(&self) -> io::Result<i32> {
        loop {
            self.rx.readable().await?;
            let mut b = [0u8; 1];
            match self.rx.try_read(&mut b) {
                Ok(1) => return Ok(i32::from(b[0])),
                Ok(_) => return Err(io::Error::other("the signal pipe closed")),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Runs on whichever thread the kernel delivered `sig` to.
extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let Some(slot) = slot(sig) else { return };
    // The program's own handler first.
    let prev = slot.prev_handler.load(Ordering::SeqCst);
    if prev != libc::SIG_DFL && prev != libc::SIG_IGN {
        if slot.prev_flags.load(Ordering::SeqCst) & libc::SA_SIGINFO != 0 {
            type Action = extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void);
            // SAFETY: `prev` was installed as an `sa_sigaction` handler (SA_SIGINFO set).
            let f: Action = unsafe { std::mem::transmute::<usize, Action>(prev) };
            f(sig, info, ctx);
        } else {
            type Handler = extern "C" fn(libc::c_int);
            // SAFETY: `prev` was installed as an `sa_handler` handler (SA_SIGINFO clear).
            let f: Handler = unsafe { std::mem::transmute::<usize, Handler>(prev) };
            f(sig);
        }
    }
    let fd = slot.fd.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: the address of this thread's errno (a handler must leave errno as it
        // found it).
        let errno_at = unsafe { libc::__errno_location() };
        // SAFETY: a valid, thread-local location.
        let errno = unsafe { *errno_at };
        let byte = u8::try_from(sig).unwrap_or(u8::MAX);
        // SAFETY: a non-blocking write of one owned byte; a full pipe drops it (the
        // reader already has signals to read).
        let _ = unsafe { libc::write(fd, (&raw const byte).cast(), 1) };
        // SAFETY: as above.
        unsafe { *errno_at = errno };
    }
}

impl Drop for SignalPipe {
    fn drop(&mut self) {
        for (sig, old) in self.replaced.drain(..) {
            // From now on the handler, wherever it still runs, only chains.
            if let Some(slot) = slot(sig) {
                slot.fd.store(-1, Ordering::SeqCst);
            }
            // SAFETY: an all-zero sigaction is a valid value to read into.
            let mut now: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: reads the current action into an owned buffer.
            let read = unsafe { libc::sigaction(sig, std::ptr::null(), &mut now) } == 0;
            // Someone installed a handler over ours meanwhile (tokio's `ctrl_c()` called
            // after us chains to ours): theirs stays; ours, left in their chain, now only
            // calls what was there before us.
            if read && now.sa_sigaction == handler as *const () as usize {
                // SAFETY: restores the action saved in `new`.
                unsafe { libc::sigaction(sig, &old, std::ptr::null_mut()) };
            }
        }
    }
}
