//! What a forked child does before its closure runs, and how it ends.
//!
//! In order: (1) signal dispositions reset and mask cleared; (2) its own process group,
//! so the tree can be signalled as a unit; (3) the parent-death signal, then a `getppid()`
//! re-check because the parent may have died before `prctl` ran; (4) every inherited fd
//! closed except the keep-set; (5) the registered child hooks. Then the closure runs
//! under `catch_unwind`, and the child leaves with `_exit`: it never returns or unwinds
//! into the frames it inherited from the parent, and it runs no `atexit` handler or
//! destructor of the parent's.
//!
//! # Async-signal-safety
//!
//! POSIX allows only async-signal-safe calls in the child of a multi-threaded process.
//! We go further, deliberately: the child allocates (a `Vec` for the fd list, the child
//! closure's own work) and builds a tokio runtime. That is sound here because
//! (a) we fork with glibc's `fork()`, whose own atfork handlers reset malloc's arena locks
//! in the child, (b) the forkserver thread holds no lock of ours across `fork` except
//! those it takes on purpose in the prepare phase (stdout, stderr) and releases in both
//! processes, and (c) the child never touches state owned by the parent's other threads
//! (see `per_process`). What remains outside our control is listed in the crate docs'
//! *Caveats*.
//!
//! # Safety
//!
//! `_exit(2)` and `prctl`-free raw calls only; see each block.
#![allow(unsafe_code)]

use rustix::process::{Pid, Signal};
use std::io::{self, Write};
use std::os::fd::RawFd;

/// Exit codes a forked child uses for its own failures.
pub mod exit_code {
    /// The child's closure panicked (the panic message went to stderr). Matches the
    /// code Rust uses for a panicking `main`.
    pub const PANICKED: i32 = 101;
    /// The parent died before the parent-death signal was armed: the child leaves
    /// instead of living on as an orphan.
    pub const PARENT_GONE: i32 = 124;
    /// The prelude itself failed (the reason went to stderr).
    pub const PRELUDE_FAILED: i32 = 125;
}

/// How a child is prepared. `Default`: stdio kept, own process group, SIGTERM when the
/// parent dies, signals reset, killed with its group if its handle is dropped unwaited.
#[derive(Debug, Clone)]
pub struct ForkOptions {
    /// fds the child keeps besides stdio (e.g. its handshake socket).
    pub keep_fds: Vec<RawFd>,
    /// Keep fds 0, 1 and 2 (those that are open).
    pub keep_stdio: bool,
    /// `setpgid(0, 0)` in the child (and `setpgid(pid, pid)` in the parent, so the group
    /// exists before `fork` returns to the caller).
    pub new_process_group: bool,
    /// `PR_SET_PDEATHSIG`: the signal the child gets when the forking thread's process
    /// dies. The forkserver thread lives as long as the process, so this means "when the
    /// parent process dies".
    pub parent_death_signal: Option<Signal>,
    /// Reset handled signals to `SIG_DFL` and unblock all (keep `true` unless you know).
    pub reset_signals: bool,
    /// Close every inherited fd outside the keep-set.
    pub scrub_fds: bool,
    /// The handle SIGKILLs the child (and group) when dropped before being reaped.
    pub kill_on_drop: bool,
    /// Test hook: runs in the child just before the parent-death signal is armed (lets a
    /// test make the parent die first, to prove the `getppid()` re-check).
    #[doc(hidden)]
    pub before_parent_death_signal: Option<fn()>,
}

impl Default for ForkOptions {
    fn default() -> Self {
        ForkOptions {
            keep_fds: Vec::new(),
            keep_stdio: true,
            new_process_group: true,
            parent_death_signal: Some(Signal::TERM),
            reset_signals: true,
            scrub_fds: true,
            kill_on_drop: true,
            before_parent_death_signal: None,
        }
    }
}

impl ForkOptions {
    /// Adds an fd to the keep-set.
    pub fn keep_fd(mut self, fd: RawFd) -> Self {
        self.keep_fds.push(fd);
        self
    }

    /// Sets [`ForkOptions::new_process_group`].
    pub fn new_process_group(mut self, yes: bool) -> Self {
        self.new_process_group = yes;
        self
    }

    /// Sets [`ForkOptions::parent_death_signal`].
    pub fn parent_death_signal(mut self, signal: Option<Signal>) -> Self {
        self.parent_death_signal = signal;
        self
    }

    /// Sets [`ForkOptions::kill_on_drop`].
    pub fn kill_on_drop(mut self, yes: bool) -> Self {
        self.kill_on_drop = yes;
        self
    }

    /// The full keep-set, validated in the parent before forking.
    pub(crate) fn keep_set(&self) -> io::Result<Vec<RawFd>> {
        let mut keep = crate::scrub::validate_keep_set(&self.keep_fds)?;
        if self.keep_stdio {
            // Stdio that is closed in the parent is simply not kept.
            keep.extend((0..3).filter(|fd| crate::scrub::validate_keep_set(&[*fd]).is_ok()));
            keep.sort_unstable();
            keep.dedup();
        }
        Ok(keep)
    }
}

/// Everything the child needs, computed in the parent before `fork`.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) opts: ForkOptions,
    pub(crate) keep: Vec<RawFd>,
    pub(crate) parent: Pid,
}

/// Runs in the child right after `fork`; never returns.
pub(crate) fn child_main(
    plan: &Plan,
    hooks: &[std::sync::Arc<crate::hooks::ForkHooks>],
    body: Box<dyn FnOnce() -> i32 + Send>,
) -> ! {
    if let Err(err) = prelude(plan, hooks) {
        let _ = writeln!(io::stderr(), "plough-fork-prims: child prelude failed: {err}");
        exit(exit_code::PRELUDE_FAILED);
    }
    let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(code) => code,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".to_owned());
            let _ = writeln!(
                io::stderr(),
                "plough-fork-prims: forked child {} panicked: {msg}",
                rustix::process::getpid().as_raw_nonzero()
            );
            // The payload may own parent-inherited state; never run its destructor.
            std::mem::forget(payload);
            exit_code::PANICKED
        }
    };
    exit(code)
}

fn prelude(plan: &Plan, hooks: &[std::sync::Arc<crate::hooks::ForkHooks>]) -> io::Result<()> {
    let opts = &plan.opts;
    if opts.reset_signals {
        crate::signals::reset_in_child().map_err(|e| ctx(e, "resetting signals"))?;
    }
    if opts.new_process_group {
        rustix::process::setpgid(None, None).map_err(|e| ctx(e.into(), "setpgid(0, 0)"))?;
    }
    if let Some(sig) = opts.parent_death_signal {
        if let Some(hook) = opts.before_parent_death_signal {
            hook();
        }
        rustix::process::set_parent_process_death_signal(Some(sig))
            .map_err(|e| ctx(e.into(), "prctl(PR_SET_PDEATHSIG)"))?;
        if rustix::process::getppid() != Some(plan.parent) {
            exit(exit_code::PARENT_GONE);
        }
    }
    if opts.scrub_fds {
        // SAFETY: we are the only thread of a freshly forked child; nothing here owns an
        // fd outside the keep-set that it will use again (inherited owners are never
        // dropped: see `per_process` and `ChildHandle`'s Drop).
        unsafe { crate::scrub::close_inherited_fds(&plan.keep) }
            .map_err(|e| ctx(e, "closing inherited fds"))?;
    }
    for h in hooks {
        if let Some(child) = &h.child {
            child();
        }
    }
    Ok(())
}

fn ctx(err: io::Error, what: &str) -> io::Error {
    io::Error::new(err.kind(), format!("{what}: {err}"))
}

/// Flushes stdout (the child's own output) and leaves with `_exit`.
pub(crate) fn exit(code: i32) -> ! {
    let _ = io::stdout().flush();
    // SAFETY: _exit is async-signal-safe and never returns; it skips atexit handlers and
    // stdio buffers of the parent, which is the point.
    unsafe { libc::_exit(code) }
}
