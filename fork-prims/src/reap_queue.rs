//! The background reaper for dropped, still-running children.
//!
//! `Drop` cannot wait, so a handle dropped while its child runs hands the child here: one
//! per-process thread (`plough-reaper`, created on first use, all signals blocked) polls
//! the pidfds of the pending children and reaps each as it exits. Children without a pidfd
//! are polled with `waitid(P_PID, WNOHANG)` every 50 ms. Each entry is reaped by its own
//! pid: never `waitpid(-1)`.
//!
//! Out of fds is designed in, not a panic: the thread's wake-up eventfd is made when the
//! first child is handed over, which is exactly when a process that ran out of fds drops
//! the child of a failed spawn. Without it the thread polls every 50 ms (as for a child
//! without a pidfd), so the child is still reaped.
//!
//! Below `child` (whose `Drop` hands children here) and `forkserver`: this module knows
//! neither. Waiting for both to be idle is `drain`'s.

use crate::per_process::PerProcess;
use crate::sync::LockExt;
use rustix::event::{EventfdFlags, PollFd, PollFlags};
use rustix::process::{Pid, WaitId, WaitIdOptions};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

#[derive(Debug)]
struct Entry {
    pid: Pid,
    pidfd: Option<OwnedFd>,
}

#[derive(Debug)]
struct Reaper {
    incoming: Mutex<Vec<Entry>>,
    pending: AtomicUsize,
    /// `None` when no fd was left for it: the thread then polls on a 50 ms tick.
    wake: Option<OwnedFd>,
    started: AtomicBool,
}

static REAPER: PerProcess<Reaper> = PerProcess::new();

/// Hands an unreaped child to the reaper thread.
pub(crate) fn hand_off(pid: Pid, pidfd: Option<OwnedFd>) {
    let reaper = REAPER.get_or_init(new_reaper, drop);
    reaper.pending.fetch_add(1, Ordering::SeqCst);
    reaper.incoming.locked().push(Entry { pid, pidfd });
    if !reaper.started.swap(true, Ordering::SeqCst) {
        let spawned =
            crate::signals::spawn_with_signals_blocked("plough-reaper", move || run(reaper));
        if spawned.is_err() {
            // No thread: reap what we can now; the rest stays a zombie until we exit.
            reaper.started.store(false, Ordering::SeqCst);
        }
    }
    if let Some(wake) = &reaper.wake {
        let _ = rustix::io::write(wake, &1u64.to_ne_bytes());
    }
}

/// How many dropped children of this process the reaper still waits for.
pub fn pending_reaps() -> usize {
    REAPER.get().map_or(0, |r| r.pending.load(Ordering::SeqCst))
}

fn new_reaper() -> Reaper {
    let wake = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).ok();
    Reaper {
        incoming: Mutex::new(Vec::new()),
        pending: AtomicUsize::new(0),
        wake,
        started: AtomicBool::new(false),
    }
}

fn run(reaper: &'static Reaper) {
    let mut mine: Vec<Entry> = Vec::new();
    loop {
        mine.append(&mut reaper.incoming.locked());
        let before = mine.len();
        mine.retain(|e| !reap(e));
        reaper.pending.fetch_sub(before - mine.len(), Ordering::SeqCst);

        let tick = reaper.wake.is_none() || mine.iter().any(|e| e.pidfd.is_none());
        let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(mine.len() + 1);
        if let Some(wake) = &reaper.wake {
            fds.push(PollFd::new(wake, PollFlags::IN));
        }
        fds.extend(
            mine.iter().filter_map(|e| e.pidfd.as_ref()).map(|fd| PollFd::new(fd, PollFlags::IN)),
        );
        let timeout = tick.then_some(rustix::time::Timespec { tv_sec: 0, tv_nsec: 50_000_000 });
        let _ = rustix::event::poll(&mut fds, timeout.as_ref());
        if let Some(wake) = &reaper.wake {
            let mut buf = [0u8; 8];
            let _ = rustix::io::read(wake, &mut buf);
        }
    }
}

/// `true` once the entry is reaped (or is not ours to reap any more).
fn reap(e: &Entry) -> bool {
    let opts = WaitIdOptions::EXITED | WaitIdOptions::NOHANG;
    let res = match &e.pidfd {
        Some(fd) => rustix::process::waitid(WaitId::PidFd(fd.as_fd()), opts),
        None => rustix::process::waitid(WaitId::Pid(e.pid), opts),
    };
    let done = !matches!(res, Ok(None) | Err(rustix::io::Errno::INTR));
    if matches!(res, Ok(Some(_))) {
        // A child dropped unwaited was usually killed: if it was an actor, it could not
        // remove its marker and socket file. (Only a marker whose start time is not live
        // is touched, so a recycled pid's new marker stays.)
        let pid = e.pid.as_raw_nonzero().get() as u32;
        let _ = crate::marker::clear_dead_pid(&crate::marker::default_runtime_dir(), pid);
    }
    done
}
