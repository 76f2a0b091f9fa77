//! The termination ladder: SIGINT, a bounded wait, then SIGKILL.
//!
//! An [`Interrupt`] ends the wait early: `plough-reap` makes one from its own SIGINT and
//! SIGTERM, so Ctrl-C while it waits out a grace period means "kill them now", and the
//! report is still printed.
//!
//! Signals go through pidfds (`pidfd_open` + `pidfd_send_signal`): the pidfd is opened
//! first, the process is then re-checked (same start time, running, ours), and from that
//! moment the fd names that process and no other, so a pid recycled between the check
//! and the signal cannot be hit. Waiting polls the pidfds, which become readable when
//! their process exits — for processes that are not our children too.
//!
//! # References
//! `pidfd_open(2)`, `pidfd_send_signal(2)`, `poll(2)`.

use crate::procs::{ProcInfo, our_uid};
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::fd::OwnedFd;
use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};
use serde::Serialize;
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Ends grace periods early: readable once the process got SIGINT or SIGTERM (see
/// [`Interrupt::on_sigint_and_sigterm`]). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Interrupt(Arc<OwnedFd>);

impl Interrupt {
    /// From now on SIGINT and SIGTERM no longer end this process: each makes every grace
    /// period (the current one and any later one) end at once, so the ladder goes straight
    /// to SIGKILL. The signal handler only writes a byte to a pipe (`signal-hook`).
    ///
    /// # Errors
    ///
    /// The socket pair or the handler cannot be set up.
    pub fn on_sigint_and_sigterm() -> std::io::Result<Interrupt> {
        let (read, write) = std::os::unix::net::UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        signal_hook::low_level::pipe::register(signal_hook::consts::SIGINT, write.try_clone()?)?;
        signal_hook::low_level::pipe::register(signal_hook::consts::SIGTERM, write)?;
        Ok(Interrupt(Arc::new(read.into())))
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// How long to wait after SIGKILL before declaring a process unkillable.
pub const KILL_WAIT: Duration = Duration::from_secs(2);

/// A process to terminate: pid plus the start time that proves it is the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The pid.
    pub pid: u32,
    /// Its start time (clock ticks since boot).
    pub start_time: u64,
}

/// What the ladder did to one process.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// It exited after SIGINT, within the grace period.
    ExitedAfterSigint {
        /// Seconds from SIGINT to exit.
        secs: f64,
    },
    /// It was still running when the grace period ended and was SIGKILLed.
    Sigkilled {
        /// Seconds from SIGINT to SIGKILL.
        after_secs: f64,
    },
    /// It was gone (or no longer the same process, or not ours) before any signal.
    AlreadyGone,
    /// It survived SIGKILL for [`KILL_WAIT`] (e.g. stuck in uninterruptible sleep).
    StillRunning,
    /// The signal could not be sent.
    Failed {
        /// The error.
        error: String,
    },
    /// `--dry-run`: nothing was sent.
    WouldReap,
}

impl Outcome {
    /// Whether the process is known to be gone now.
    pub fn is_gone(&self) -> bool {
        matches!(
            self,
            Outcome::ExitedAfterSigint { .. } | Outcome::Sigkilled { .. } | Outcome::AlreadyGone
        )
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::ExitedAfterSigint { secs } => write!(f, "exited after SIGINT in {secs:.1} s"),
            Outcome::Sigkilled { after_secs } => write!(f, "SIGKILLed after {after_secs:.1} s"),
            Outcome::AlreadyGone => f.write_str("already gone"),
            Outcome::StillRunning => {
                write!(f, "still running {:.1} s after SIGKILL", KILL_WAIT.as_secs_f64())
            }
            Outcome::Failed { error } => write!(f, "failed to signal: {error}"),
            Outcome::WouldReap => {
                f.write_str("would send SIGINT, then SIGKILL after the grace period")
            }
        }
    }
}

/// Opens a pidfd for `t` and checks, after opening, that it is still the same running
/// process of ours. `Ok(None)` when it is gone or not the same.
fn open_verified(t: Target) -> rustix::io::Result<Option<OwnedFd>> {
    let Some(pid) = Pid::from_raw(t.pid as i32) else { return Ok(None) };
    let fd = match pidfd_open(pid, PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::SRCH) => return Ok(None),
        Err(e) => return Err(e),
    };
    let same = ProcInfo::read(t.pid).is_some_and(|p| {
        p.start_time == t.start_time && p.is_running() && p.is_owned_by(our_uid())
    });
    Ok(same.then_some(fd))
}

/// Waits until every fd in `fds` whose slot in `done` is `None` is readable (its process
/// exited), `deadline` passes, or `interrupt` becomes readable; records
/// `start.elapsed()` at each exit.
fn wait_exits(
    fds: &[Option<OwnedFd>],
    done: &mut [Option<Duration>],
    start: Instant,
    deadline: Instant,
    interrupt: Option<BorrowedFd<'_>>,
) {
    loop {
        let pending: Vec<usize> =
            (0..fds.len()).filter(|&i| fds[i].is_some() && done[i].is_none()).collect();
        if pending.is_empty() {
            return;
        }
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        let left = deadline - now;
        let mut pfds: Vec<PollFd<'_>> = pending
            .iter()
            .filter_map(|&i| fds[i].as_ref().map(|fd| PollFd::new(fd, PollFlags::IN)))
            .collect();
        // Last, so the indices of `pending` still match the first entries.
        if let Some(fd) = &interrupt {
            pfds.push(PollFd::new(fd, PollFlags::IN));
        }
        let ts =
            Timespec { tv_sec: left.as_secs() as i64, tv_nsec: i64::from(left.subsec_nanos()) };
        match poll(&mut pfds, Some(&ts)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(_) => {
                // Cannot poll: fall back to a short sleep so the deadline still bounds us.
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let ready: Vec<bool> = pfds.iter().map(|p| !p.revents().is_empty()).collect();
        let at = start.elapsed();
        for (k, &i) in pending.iter().enumerate() {
            if ready[k] {
                done[i] = Some(at);
            }
        }
        if interrupt.is_some() && ready.last() == Some(&true) {
            return;
        }
    }
}

/// Runs the ladder on all `targets` at once: SIGINT to each, wait up to `grace` for
/// them to exit, SIGKILL the rest, wait up to [`KILL_WAIT`]. Returns one outcome per
/// target, in order. Bounded by `grace + KILL_WAIT`.
pub fn terminate(targets: &[Target], grace: Duration) -> Vec<Outcome> {
    terminate_until(targets, grace, None)
}

/// [`terminate`], with the grace period cut short when `interrupt` fires.
pub fn terminate_until(
    targets: &[Target],
    grace: Duration,
    interrupt: Option<&Interrupt>,
) -> Vec<Outcome> {
    let mut outcomes: Vec<Option<Outcome>> = vec![None; targets.len()];
    let mut fds: Vec<Option<OwnedFd>> = Vec::with_capacity(targets.len());
    for (i, t) in targets.iter().enumerate() {
        match open_verified(*t) {
            Ok(Some(fd)) => fds.push(Some(fd)),
            Ok(None) => {
                outcomes[i] = Some(Outcome::AlreadyGone);
                fds.push(None);
            }
            Err(e) => {
                outcomes[i] = Some(Outcome::Failed { error: e.to_string() });
                fds.push(None);
            }
        }
    }
    let start = Instant::now();
    for (i, fd) in fds.iter_mut().enumerate() {
        if let Some(f) = fd {
            if let Err(e) = pidfd_send_signal(&*f, Signal::INT) {
                if e == rustix::io::Errno::SRCH {
                    outcomes[i] = Some(Outcome::AlreadyGone);
                } else {
                    outcomes[i] = Some(Outcome::Failed { error: e.to_string() });
                }
                *fd = None;
            }
        }
    }
    let mut exited: Vec<Option<Duration>> = vec![None; targets.len()];
    wait_exits(&fds, &mut exited, start, start + grace, interrupt.map(Interrupt::fd));
    let killed_at = start.elapsed();
    let mut killed = vec![false; targets.len()];
    for (i, fd) in fds.iter().enumerate() {
        if let (Some(f), None) = (fd, exited[i]) {
            match pidfd_send_signal(f, Signal::KILL) {
                Ok(()) => killed[i] = true,
                // Exited between the poll and the kill.
                Err(rustix::io::Errno::SRCH) => exited[i] = Some(killed_at),
                Err(e) => outcomes[i] = Some(Outcome::Failed { error: e.to_string() }),
            }
        }
    }
    let kill_start = Instant::now();
    wait_exits(&fds, &mut exited, start, kill_start + KILL_WAIT, None);
    for i in 0..targets.len() {
        if outcomes[i].is_some() {
            continue;
        }
        outcomes[i] = Some(match (killed[i], exited[i]) {
            (false, Some(d)) => Outcome::ExitedAfterSigint { secs: d.as_secs_f64() },
            (true, Some(_)) => Outcome::Sigkilled { after_secs: killed_at.as_secs_f64() },
            _ => Outcome::StillRunning,
        });
    }
    outcomes.into_iter().map(|o| o.unwrap_or(Outcome::AlreadyGone)).collect()
}
