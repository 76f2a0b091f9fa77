//! The forkserver thread: the one thread of this process that forks.
//!
//! Forking from an arbitrary thread of a process that runs an async runtime hands the
//! child a copy of whatever that thread and every other thread held at that instant:
//! runtime worker state, parked-thread queues, locks mid-acquisition. This thread never
//! runs the async runtime, holds none of our locks between requests, and blocks every
//! signal; all forks of the process are serialised through it. It lives as long as the
//! process, which matters: `PR_SET_PDEATHSIG` fires when the *thread* that forked the
//! child exits, not the process.
//!
//! Requests arrive over a channel; for each the thread takes the fork locks (the hook
//! list, stdout, stderr), runs the prepare hooks, calls `libc::fork()` (not a raw
//! `clone`: glibc's own atfork handlers must run so that malloc works in the child),
//! releases the locks on both sides, runs the parent hooks, and answers with a
//! [`ChildHandle`] whose pidfd was opened before anything could reap the child.
//!
//! # Safety
//!
//! The one `fork()` call; see its SAFETY comment and `prelude`'s module docs.
#![allow(unsafe_code)]

use crate::child::ChildHandle;
use crate::per_process::PerProcess;
use crate::prelude::{ForkOptions, Plan};
use std::io::{self, Write};
use std::sync::mpsc;

type Body = Box<dyn FnOnce() -> i32 + Send>;
type Reply = Box<dyn FnOnce(io::Result<ChildHandle>) + Send>;

enum Request {
    Fork {
        plan: Plan,
        body: Body,
        reply: Reply,
    },
    /// Work that must run on a thread that lives as long as the process (starting a
    /// process whose parent-death signal must not fire when a short-lived thread exits).
    Call(Box<dyn FnOnce() + Send>),
}

#[derive(Debug)]
struct Server {
    tx: mpsc::Sender<Request>,
    /// Requests submitted and not yet answered (their child may be about to exist).
    in_flight: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

static SERVER: PerProcess<Server> = PerProcess::new();

/// Name of the forkserver thread (visible in `/proc/<pid>/task/*/comm`).
pub const FORKSERVER_THREAD_NAME: &str = "plough-forkserv";

fn server() -> io::Result<&'static Server> {
    SERVER.try_get_or_init(
        || {
            let (tx, rx) = mpsc::channel::<Request>();
            let in_flight = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let counter = std::sync::Arc::clone(&in_flight);
            crate::signals::spawn_with_signals_blocked(FORKSERVER_THREAD_NAME, move || {
                serve(rx, &counter)
            })
            .map_err(|e| {
                io::Error::new(e.kind(), format!("cannot start the forkserver thread: {e}"))
            })?;
            Ok(Server { tx, in_flight })
        },
        // A losing server's sender drops: its thread sees the channel close and exits.
        drop,
    )
}

/// Whether this process's forkserver thread is running.
pub fn forkserver_started() -> bool {
    SERVER.get().is_some()
}

fn serve(rx: mpsc::Receiver<Request>, in_flight: &std::sync::atomic::AtomicUsize) {
    for request in rx {
        match request {
            Request::Fork { plan, body, reply } => {
                // If the requester is gone, `reply` drops the handle here, which kills the
                // child and queues it for the reaper before the request stops counting as
                // in flight.
                reply(fork_one(plan, body));
            }
            Request::Call(f) => f(),
        }
        in_flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        // The fork locks were just released: let a thread that waits for one of them (the
        // runtime's, for its task table) run before the next fork takes them again — in a
        // burst of forks it would otherwise starve, and with it every child waiting for it
        // to answer.
        std::thread::yield_now();
    }
}

/// Fork requests of this process not answered yet.
pub(crate) fn forks_in_flight() -> usize {
    SERVER.get().map_or(0, |s| s.in_flight.load(std::sync::atomic::Ordering::SeqCst))
}

fn fork_one(plan: Plan, body: Body) -> io::Result<ChildHandle> {
    // The fork locks, in a fixed order; released on both sides right after `fork`.
    let hooks = crate::hooks::lock();
    for h in hooks.iter().rev() {
        if let Some(prepare) = &h.prepare {
            prepare();
        }
    }
    let mut stdout = io::stdout().lock();
    let _ = stdout.flush(); // or the child would print the parent's buffered output again
    let stderr = io::stderr().lock();

    // SAFETY: fork(2) through glibc (its atfork handlers make malloc usable in the child).
    // The child runs only `child_main` on this thread, which never returns: it leaves with
    // `_exit`. The locks we hold are ours on both sides and are released below.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        drop(stderr);
        drop(stdout);
        let snapshot = hooks.clone();
        drop(hooks);
        crate::prelude::child_main(&plan, &snapshot, body);
    }
    let err = (pid < 0).then(io::Error::last_os_error);
    drop(stderr);
    drop(stdout);
    for h in hooks.iter() {
        if let Some(parent) = &h.parent {
            parent();
        }
    }
    drop(hooks);
    // `body` was moved into the child's copy of memory; the parent's copy is dropped here.
    drop(body);
    if let Some(err) = err {
        return Err(io::Error::new(err.kind(), format!("fork() failed: {err}")));
    }
    let pid = rustix::process::Pid::from_raw(pid).expect("fork returned a positive pid");
    let pgid = if plan.opts.new_process_group {
        // Also from this side, so the group exists before the caller can signal it. EACCES
        // (the child already exec'd) or ESRCH (already gone) are fine: the child set it.
        let _ = rustix::process::setpgid(Some(pid), Some(pid));
        Some(pid)
    } else {
        None
    };
    ChildHandle::new_forked(pid, pgid, plan.opts.kill_on_drop)
}

fn plan(opts: &ForkOptions) -> io::Result<Plan> {
    Ok(Plan { keep: opts.keep_set()?, opts: opts.clone(), parent: rustix::process::getpid() })
}

/// Forks a child through the forkserver thread and returns its handle; the child runs the
/// prelude (see [`ForkOptions`]) and then `body`, and exits with `body`'s return value.
/// Blocks the calling thread until the fork is done (well under a millisecond for a small
/// process); from async code use [`fork`].
///
/// # Errors
///
/// An invalid keep-set (negative or closed fd) — nothing is forked; `fork()` failing
/// (`EAGAIN` under `RLIMIT_NPROC`, `ENOMEM`) — the forkserver stays usable; the
/// forkserver thread could not be started.
///
/// # Caveats
///
/// Do not hold `std::io::stdout().lock()` or `stderr().lock()` while waiting for a fork:
/// the forkserver takes both locks around `fork`.
pub fn fork_blocking(
    opts: &ForkOptions,
    body: impl FnOnce() -> i32 + Send + 'static,
) -> io::Result<ChildHandle> {
    let (tx, rx) = mpsc::sync_channel(1);
    submit(opts, Box::new(body), Box::new(move |res| drop(tx.send(res))))?;
    rx.recv().map_err(|_| io::Error::other("the forkserver thread is gone"))?
}

/// Async [`fork_blocking`]: the request waits on the forkserver without blocking a
/// runtime worker.
///
/// If this future is dropped before the fork completes, the child is still forked and its
/// handle dropped on the forkserver thread: with `kill_on_drop` (the default) it is killed
/// and reaped, never orphaned.
///
/// # Errors
///
/// As [`fork_blocking`].
#[cfg(feature = "async")]
pub async fn fork(
    opts: &ForkOptions,
    body: impl FnOnce() -> i32 + Send + 'static,
) -> io::Result<ChildHandle> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    submit(opts, Box::new(body), Box::new(move |res| drop(tx.send(res))))?;
    rx.await.map_err(|_| io::Error::other("the forkserver thread is gone"))?
}

fn submit(opts: &ForkOptions, body: Body, reply: Reply) -> io::Result<()> {
    let plan = plan(opts)?;
    let server = server()?;
    server.in_flight.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    send(server, Request::Fork { plan, body, reply })
}

fn send(server: &Server, request: Request) -> io::Result<()> {
    server.tx.send(request).map_err(|_| {
        server.in_flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        io::Error::other("the forkserver thread is gone")
    })
}

/// Runs `f` on the forkserver thread (signals blocked, lives as long as the process) and
/// returns its result; blocks the caller meanwhile.
///
/// # Errors
///
/// The forkserver thread cannot be started or is gone.
pub(crate) fn on_server_thread<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> io::Result<R> {
    let server = server()?;
    let (tx, rx) = mpsc::sync_channel(1);
    server.in_flight.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    send(server, Request::Call(Box::new(move || drop(tx.send(f())))))?;
    rx.recv().map_err(|_| io::Error::other("the forkserver thread is gone"))
}
