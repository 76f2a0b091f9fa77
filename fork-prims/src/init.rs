//! PID 1: a program that starts as the first process of a pid namespace (a container run
//! without an init, `unshare --fork --pid`) gets a minimal init in front of it.
//!
//! PID 1 has two duties no ordinary program fulfils: every orphan of the namespace is
//! re-parented to it and stays a zombie until it reaps it, and the kernel drops every
//! signal sent to it whose action is the default (a SIGTERM from `docker stop` before a
//! handler is installed, or after it is removed, does nothing). Reaping "every child"
//! from inside the program would steal the children it waits for itself — plough's
//! [`ChildHandle`](crate::ChildHandle)s, which wait through pidfds, and those the
//! program starts with `std::process::Command` — and no `waitid` tells a re-parented
//! orphan from one of them before it is reaped.
//!
//! So, before `main` and before any thread exists (the startup hook calls [`split`]), a
//! process that finds itself PID 1 forks: the **parent stays PID 1 and never runs
//! `main`**: it only reaps every child that exits (`waitpid(-1)`, sound because it owns
//! nothing else) and passes signals on; the **child runs the program** as PID 2, its own
//! children its own to wait for. Concretely, PID 1:
//!
//! * passes SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2 and SIGWINCH sent by a
//!   process (`kill`, `docker stop`, `docker kill -s`) on to the program, which handles
//!   them as it would anywhere (a plough root: SIGINT and SIGTERM cancel the tree, 130
//!   and 143). One the kernel sent itself (a terminal's Ctrl-C) is not passed on: the
//!   program is in the same process group and got it already;
//! * reaps every orphan of the namespace as it exits;
//! * exits, when the program does, with its exit code — or 128 + the signal that killed
//!   it — which also ends the namespace (the kernel SIGKILLs what is left in it).
//!
//! The program sees `getppid() == 1` and a pid of 2. `PLOUGH_INIT=0` in the environment
//! turns this off: the program then is PID 1 itself, and neither reaps orphans nor
//! receives a signal while no handler is installed (a plough root handles SIGINT and
//! SIGTERM only while `Runtime::run` runs). A plough child process (`PLOUGH_BOOT` set) is
//! never split.
//!
//! # Safety
//!
//! `fork` before `main` with one thread, signal-mask changes and `sigwaitinfo` on
//! initialised stack values, `waitpid`, `kill` and `_exit`.
#![allow(unsafe_code)]

use std::mem::MaybeUninit;

/// Set to `0` to keep the program itself as PID 1 (no init in front of it).
pub const INIT_ENV: &str = "PLOUGH_INIT";

/// The signals PID 1 passes on to the program.
pub const FORWARDED_SIGNALS: [i32; 7] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

/// In a process that is PID 1 (and has not opted out with [`INIT_ENV`]): forks; the
/// child returns (and goes on to `main`), the parent becomes the init and never returns.
/// Anywhere else: returns at once. Must run before any thread exists.
pub(crate) fn split() {
    if !rustix::process::getpid().is_init() {
        return;
    }
    if std::env::var_os(INIT_ENV).is_some_and(|v| v == "0") {
        return;
    }
    let mut watched = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set it is given.
    unsafe { libc::sigemptyset(watched.as_mut_ptr()) };
    // SAFETY: initialised just above.
    let mut watched = unsafe { watched.assume_init() };
    for sig in FORWARDED_SIGNALS.iter().chain([&libc::SIGCHLD]) {
        // SAFETY: sets one bit of an initialised set.
        unsafe { libc::sigaddset(&mut watched, *sig) };
    }
    let mut old = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: reads `watched`, writes the previous mask to `old`; one thread.
    if unsafe { libc::sigprocmask(libc::SIG_BLOCK, &watched, old.as_mut_ptr()) } != 0 {
        return;
    }
    // SAFETY: sigprocmask succeeded and filled `old`.
    let old = unsafe { old.assume_init() };
    // SAFETY: before `main`, with this thread the only one: the child is a full copy of a
    // single-threaded process, free to run anything.
    let pid = unsafe { libc::fork() };
    if pid <= 0 {
        // The program (the child; or this process, if the fork failed, which then runs as
        // PID 1 itself): its signals come back as they were.
        // SAFETY: restores the mask read above.
        unsafe { libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
        if pid < 0 {
            eprintln!(
                "plough: running as PID 1 without an init (fork failed: {})",
                std::io::Error::last_os_error()
            );
        }
        return;
    }
    // PID 1 keeps them blocked: `serve` takes them with sigwaitinfo.
    let _ = rustix::thread::set_name(c"plough:init");
    serve(pid, &watched)
}

/// PID 1's loop: reap, pass signals on, leave with the program's status.
fn serve(program: libc::pid_t, watched: &libc::sigset_t) -> ! {
    loop {
        let mut info = MaybeUninit::<libc::siginfo_t>::zeroed();
        // SAFETY: `watched` is initialised and blocked; `info` is writable.
        let sig = unsafe { libc::sigwaitinfo(watched, info.as_mut_ptr()) };
        if sig < 0 {
            continue; // EINTR
        }
        // SAFETY: zero-initialised, and filled by a successful sigwaitinfo.
        let info = unsafe { info.assume_init() };
        if sig == libc::SIGCHLD {
            if let Some(code) = reap_all(program) {
                // SAFETY: leaves at once; nothing of the program ran in this process.
                unsafe { libc::_exit(code) }
            }
        } else if info.si_code != libc::SI_KERNEL {
            // SAFETY: `program` is our unreaped child (we leave as soon as we reap it), so
            // the pid names it.
            unsafe { libc::kill(program, sig) };
        }
    }
}

/// Reaps every child that has exited; the program's exit code (or 128 + its signal) if
/// it was one of them.
fn reap_all(program: libc::pid_t) -> Option<i32> {
    let mut code = None;
    loop {
        let mut status = 0;
        // SAFETY: `status` is a writable int; WNOHANG never blocks.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return code;
        }
        if pid == program {
            code = Some(if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            });
        }
    }
}
