//! Receiving signals in a process whose other threads we do not control: [`SignalPipe`].
//!
//! A [`SignalFd`](crate::SignalFd) sees a process-directed signal only if every thread
//! blocks it; a program's own threads, started before ours, usually do not, and the
//! kernel then delivers the signal there, where its default action kills the process.
//! A `SignalPipe` instead installs a process-wide handler (`sigaction`): whichever thread
//! the kernel picks runs it; it first calls the handler that was installed before (so the
//! program's own handling, e.g. tokio's `ctrl_c()`, still sees every signal), then writes
//! the signal's number to a pipe that [`SignalPipe::recv`] reads.
//!
//! Dropping it stops the writes and restores the previous handler — unless a handler was
//! installed over ours meanwhile (e.g. tokio's `ctrl_c()` first called after us, which
//! chains to ours): that one stays, and ours, in its chain, only passes the signal on to
//! what was there before. A later `SignalPipe` then reuses our handler where it is rather
//! than installing it again on top (which would make the chain call itself). A signal the
//! process ignores (`SIG_IGN`, e.g. under `nohup`) stays ignored. One `SignalPipe` per
//! signal at a time.
//!
//! The pipe itself lives as long as the process and its write end is never closed, so a
//! handler running on another thread while a `SignalPipe` is dropped can never write into
//! a reused fd number; a new `SignalPipe` first drains what an earlier one left unread.
//!
//! Use it in a root process, never in a forked child: a forked child inherits the handler,
//! and the child prelude resets handled signals to `SIG_DFL` (see `signals`; a child made
//! with `ForkOptions { reset_signals: false }` keeps this handler, whose writes then go
//! to the parent's pipe number), which is why child actors use a `SignalFd` of their own.
//!
//! # Safety
//!
//! `sigaction` on owned, initialised values; the handler only does async-signal-safe
//! things: atomics, errno save and restore, a call to the previous handler (which had to
//! be async-signal-safe already), and a non-blocking `write` to a pipe.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use tokio::net::unix::pipe;

/// A set of signals delivered, from any thread, as bytes on a pipe. One per signal at a
/// time in a process.
pub struct SignalPipe {
    rx: pipe::Receiver,
    signals: Vec<i32>,
}

impl std::fmt::Debug for SignalPipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalPipe").field("signals", &self.signals).finish()
    }
}

/// Per signal number: whether ours is in the process's handler chain, whether a pipe
/// wants it now, and the handler ours chains to.
struct Slot {
    /// Our handler is installed (on top, or in the chain of one installed over it).
    installed: AtomicBool,
    /// A live `SignalPipe` wants this signal written to the pipe.
    active: AtomicBool,
    prev_handler: AtomicUsize,
    prev_flags: AtomicI32,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot {
    installed: AtomicBool::new(false),
    active: AtomicBool::new(false),
    prev_handler: AtomicUsize::new(libc::SIG_DFL),
    prev_flags: AtomicI32::new(0),
};

static SLOTS: [Slot; 65] = [EMPTY; 65];

/// The signal mask of the action ours replaced, per signal (restored with it).
static SAVED_MASKS: std::sync::Mutex<[Option<libc::sigset_t>; 65]> =
    std::sync::Mutex::new([None; 65]);

/// The write end every handler writes to; -1 until the pipe exists.
static WRITE_FD: AtomicI32 = AtomicI32::new(-1);

/// The process-lifetime pipe: `(read end, write end)`, both non-blocking.
static PIPE: OnceLock<(OwnedFd, OwnedFd)> = OnceLock::new();

fn slot(sig: i32) -> Option<&'static Slot> {
    usize::try_from(sig).ok().and_then(|i| SLOTS.get(i))
}

fn our_handler() -> usize {
    handler as *const () as usize
}

/// The action currently installed for `sig`.
fn current(sig: i32) -> io::Result<libc::sigaction> {
    // SAFETY: an all-zero sigaction is a valid value to read into.
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: reads the current action into an owned buffer.
    if unsafe { libc::sigaction(sig, std::ptr::null(), &mut act) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(act)
}

impl SignalPipe {
    /// Handles `signals` process-wide from now on. Must be called inside a tokio runtime
    /// with I/O enabled.
    ///
    /// # Errors
    ///
    /// A signal another live `SignalPipe` handles (`AddrInUse`), a bad signal number,
    /// `pipe`, reactor registration or `sigaction` failures (what was set up so far is
    /// undone when the error drops the half-made pipe).
    pub fn new(signals: &[i32]) -> io::Result<Self> {
        let pipe = match PIPE.get() {
            Some(p) => p,
            None => {
                let flags = rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK;
                let made = rustix::pipe::pipe_with(flags)?;
                let p = PIPE.get_or_init(|| made);
                WRITE_FD.store(p.1.as_raw_fd(), Ordering::SeqCst);
                p
            }
        };
        let rx = pipe::Receiver::from_owned_fd(pipe.0.try_clone()?)?;
        // What an earlier pipe left unread is not ours.
        let mut stale = [0u8; 64];
        while matches!(rx.try_read(&mut stale), Ok(n) if n > 0) {}
        let mut unique = signals.to_vec();
        unique.sort_unstable();
        unique.dedup();
        let mut this = SignalPipe { rx, signals: Vec::new() };
        for sig in unique {
            let Some(slot) = slot(sig) else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("bad signal {sig}"),
                ));
            };
            if slot.active.load(Ordering::SeqCst) {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("signal {sig} is already handled by another SignalPipe"),
                ));
            }
            if !slot.installed.load(Ordering::SeqCst) {
                let old = current(sig)?;
                if old.sa_sigaction == libc::SIG_IGN {
                    continue;
                }
                // Published before the handler can run (the `sigaction` below orders them).
                slot.prev_handler.store(old.sa_sigaction, Ordering::SeqCst);
                slot.prev_flags.store(old.sa_flags, Ordering::SeqCst);
                // SAFETY: an all-zero sigaction is a valid value; the fields are set below.
                let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
                new.sa_sigaction = our_handler();
                new.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
                // The previous handler ran with its own mask; keep it while we call it.
                new.sa_mask = old.sa_mask;
                // SAFETY: installs a handler that is async-signal-safe (see `handler`).
                if unsafe { libc::sigaction(sig, &new, std::ptr::null_mut()) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                slot.installed.store(true, Ordering::SeqCst);
                if let Some(m) = crate::sync::LockExt::locked(&SAVED_MASKS).get_mut(sig as usize) {
                    *m = Some(old.sa_mask);
                }
            }
            slot.active.store(true, Ordering::SeqCst);
            this.signals.push(sig);
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
    // SAFETY: the address of this thread's errno; a handler leaves errno as it found it.
    let errno_at = unsafe { libc::__errno_location() };
    // SAFETY: a valid, thread-local location.
    let errno = unsafe { *errno_at };
    if let Some(slot) = slot(sig) {
        // The program's own handler first.
        let prev = slot.prev_handler.load(Ordering::SeqCst);
        if prev != libc::SIG_DFL && prev != libc::SIG_IGN && prev != our_handler() {
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
        let fd = WRITE_FD.load(Ordering::SeqCst);
        if slot.active.load(Ordering::SeqCst) && fd >= 0 {
            let byte = u8::try_from(sig).unwrap_or(u8::MAX);
            // SAFETY: a non-blocking write of one owned byte to a pipe that is never
            // closed; a full pipe drops it (the reader already has signals to read).
            let _ = unsafe { libc::write(fd, (&raw const byte).cast(), 1) };
        }
    }
    // SAFETY: as above.
    unsafe { *errno_at = errno };
}

impl Drop for SignalPipe {
    fn drop(&mut self) {
        for &sig in &self.signals {
            let Some(slot) = slot(sig) else { continue };
            // From now on the handler, wherever it still runs, only chains.
            slot.active.store(false, Ordering::SeqCst);
            // Someone installed a handler over ours meanwhile (tokio's `ctrl_c()` called
            // after us chains to ours): theirs stays, and ours stays in their chain.
            if current(sig).is_ok_and(|now| now.sa_sigaction == our_handler()) {
                // SAFETY: an all-zero sigaction is a valid value; the fields are set below.
                let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
                old.sa_sigaction = slot.prev_handler.load(Ordering::SeqCst);
                old.sa_flags = slot.prev_flags.load(Ordering::SeqCst);
                let saved =
                    crate::sync::LockExt::locked(&SAVED_MASKS).get(sig as usize).copied().flatten();
                match saved {
                    Some(mask) => old.sa_mask = mask,
                    None => {
                        // SAFETY: `sa_mask` is an owned, initialised set.
                        unsafe { libc::sigemptyset(&mut old.sa_mask) };
                    }
                }
                // SAFETY: restores the action that was there before ours.
                if unsafe { libc::sigaction(sig, &old, std::ptr::null_mut()) } == 0 {
                    slot.installed.store(false, Ordering::SeqCst);
                }
            }
        }
    }
}
