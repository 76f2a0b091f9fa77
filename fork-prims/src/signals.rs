//! Signal masks and dispositions around our threads and in a forked child.
//!
//! Our helper threads (the forkserver, the reaper) block every signal, so a process-
//! directed signal (SIGINT, SIGTERM, SIGCHLD) is never delivered on them and they never
//! run another library's handler. A forked child starts on such a thread, so the child
//! prelude first resets dispositions the way `execve(2)` does (a handled signal goes back
//! to `SIG_DFL`, an ignored one stays ignored: the handler code belongs to the parent's
//! runtime, e.g. tokio's signal driver whose self-pipe the child does not own), then
//! unblocks everything.
//!
//! # Safety
//!
//! `pthread_sigmask` and `sigaction` calls on initialised, stack-owned `sigset_t` /
//! `sigaction` values; no handler is ever installed here, only `SIG_DFL`.
#![allow(unsafe_code)]

use std::io;
use std::mem::MaybeUninit;

/// Spawns a detached, named helper thread with every signal blocked (the caller's mask
/// is restored).
///
/// It is a bare `pthread_create`, not `std::thread::spawn`, on purpose: std's threads
/// inherit the spawner's *output capture* (libtest's per-test `print!` buffer, an
/// `Arc<Mutex<Vec<u8>>>`). A forked child runs on the forkserver thread; had it inherited
/// a capture, its `eprintln!` would take a mutex that another parent thread may have held
/// at the instant of the fork, and hang (seen under `cargo test`).
pub(crate) fn spawn_with_signals_blocked(
    name: &str,
    f: impl FnOnce() + Send + 'static,
) -> io::Result<()> {
    type Start = Box<dyn FnOnce() + Send>;
    extern "C" fn trampoline(arg: *mut libc::c_void) -> *mut libc::c_void {
        // SAFETY: `arg` is the `Box<Start>` leaked by the spawner below, handed to exactly
        // this thread.
        let start = unsafe { Box::from_raw(arg.cast::<Start>()) };
        // Unwinding out of an `extern "C"` fn aborts; report a panic and end the thread.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(start)).is_err() {
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                b"plough-fork-prims: helper thread panicked\n",
            );
        }
        std::ptr::null_mut()
    }

    let cname = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "thread name has a NUL"))?;
    let arg = Box::into_raw(Box::new(Box::new(f) as Start));
    let _guard = BlockAll::new()?;
    let mut thread = MaybeUninit::<libc::pthread_t>::uninit();
    // SAFETY: default attributes (null); `trampoline` takes ownership of `arg`.
    let rc = unsafe {
        libc::pthread_create(thread.as_mut_ptr(), std::ptr::null(), trampoline, arg.cast())
    };
    if rc != 0 {
        // SAFETY: the thread was not created, so `arg` is still ours.
        drop(unsafe { Box::from_raw(arg) });
        return Err(io::Error::from_raw_os_error(rc));
    }
    // SAFETY: pthread_create succeeded and initialised `thread`.
    let thread = unsafe { thread.assume_init() };
    // SAFETY: `thread` is a live thread we created and `cname` a valid C string (a name
    // over 15 bytes is refused with ERANGE, which we ignore).
    let _ = unsafe { libc::pthread_setname_np(thread, cname.as_ptr()) };
    // SAFETY: detach a thread we created and never join.
    unsafe { libc::pthread_detach(thread) };
    Ok(())
}

/// Blocks every signal on the calling thread until dropped.
struct BlockAll {
    old: libc::sigset_t,
}

impl BlockAll {
    fn new() -> io::Result<Self> {
        let all = filled_set();
        let mut old = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: `all` is initialised; pthread_sigmask writes the previous mask to `old`.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &all, old.as_mut_ptr()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        // SAFETY: pthread_sigmask succeeded, so it filled `old`.
        Ok(BlockAll { old: unsafe { old.assume_init() } })
    }
}

impl Drop for BlockAll {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved in `new`.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut());
        }
    }
}

fn filled_set() -> libc::sigset_t {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigfillset initialises the set it is given.
    unsafe { libc::sigfillset(set.as_mut_ptr()) };
    // SAFETY: initialised just above.
    unsafe { set.assume_init() }
}

/// In a forked child: every handled signal back to `SIG_DFL` (ignored ones stay ignored,
/// as across `execve`), then an empty signal mask.
pub(crate) fn reset_in_child() -> io::Result<()> {
    for sig in 1..libc::SIGRTMAX() + 1 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        let mut old = MaybeUninit::<libc::sigaction>::zeroed();
        // SAFETY: queries the current action into a zeroed, owned struct.
        let rc = unsafe { libc::sigaction(sig, std::ptr::null(), old.as_mut_ptr()) };
        if rc != 0 {
            continue; // glibc reserves a few real-time signals (EINVAL): not ours.
        }
        // SAFETY: sigaction succeeded and filled `old`.
        let old = unsafe { old.assume_init() };
        if old.sa_sigaction == libc::SIG_DFL || old.sa_sigaction == libc::SIG_IGN {
            continue;
        }
        // SAFETY: all-zero bytes are a valid `sigaction`: SIG_DFL (0), empty mask, no flags.
        let mut dfl: libc::sigaction = unsafe { std::mem::zeroed() };
        dfl.sa_sigaction = libc::SIG_DFL;
        // SAFETY: installs SIG_DFL from an initialised struct.
        let rc = unsafe { libc::sigaction(sig, &dfl, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    unblock_all()
}

/// An empty signal mask for the calling thread.
pub(crate) fn unblock_all() -> io::Result<()> {
    let mut empty = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set it is given.
    unsafe { libc::sigemptyset(empty.as_mut_ptr()) };
    // SAFETY: initialised just above.
    let empty = unsafe { empty.assume_init() };
    // SAFETY: sets the calling thread's mask from an initialised set.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}
