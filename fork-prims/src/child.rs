//! A handle on a child process we own: wait for it, signal it, kill its group, and never
//! leave a zombie behind.
//!
//! The handle holds a pidfd opened right after the fork, while the child cannot yet have
//! been reaped, so every later signal and wait names exactly that process: no pid-reuse
//! race. Waiting is `waitid(P_PIDFD, WEXITED | WNOHANG)` after the pidfd turns readable;
//! this crate never calls `waitpid(-1)`, so it never steals another library's children.
//!
//! Without pidfds (kernels before 5.3, or a seccomp filter that refuses `pidfd_open`) the
//! handle falls back to `waitid(P_PID)` polled with a backoff, and to `kill(2)` guarded by
//! "not reaped yet" — sound, because an unreaped child's pid cannot be reused.

use crate::status::ExitStatus;
use crate::sync::LockExt;
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Which processes a signal goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillTarget {
    /// The child process alone.
    Process,
    /// Every process in the child's process group (the child and whatever it started
    /// that did not leave the group).
    Group,
}

/// A child process of this process.
///
/// Created by the forkserver ([`crate::fork`]) or adopted from a process spawned some
/// other way ([`ChildHandle::adopt`], [`ChildHandle::from_std`]).
///
/// # Drop
///
/// Dropping the handle never leaves a zombie: an exited child is reaped at once; one still
/// running is SIGKILLed (with its group) when `kill_on_drop` is set — the default for
/// forked children — and in every case handed to a background reaper thread that reaps it
/// when it exits. A handle that was inherited across a fork (its owner is another process)
/// is forgotten without touching its fd or pid.
pub struct ChildHandle {
    pid: Pid,
    /// The process allowed to wait for the child (its parent).
    owner: Pid,
    pidfd: Option<OwnedFd>,
    pgid: Option<Pid>,
    /// Serialises reaping and caches its result: a second `waitid` would see ECHILD.
    status: Mutex<Option<ExitStatus>>,
    kill_on_drop: AtomicBool,
}

impl fmt::Debug for ChildHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildHandle")
            .field("pid", &self.pid.as_raw_nonzero())
            .field("pgid", &self.pgid.map(Pid::as_raw_nonzero))
            .field("pidfd", &self.pidfd.is_some())
            .field("status", &self.exit_status())
            .finish()
    }
}

impl ChildHandle {
    /// Builds the handle for a child we just forked (pidfd opened here, before anything
    /// can reap it).
    ///
    /// # Errors
    ///
    /// No pidfd could be opened (out of fds): the child is killed and reaped first, so a
    /// failed handle never leaves a zombie or an orphan.
    pub(crate) fn new_forked(pid: Pid, pgid: Option<Pid>, kill_on_drop: bool) -> io::Result<Self> {
        let pidfd = open_pidfd(pid).inspect_err(|_| kill_and_reap(pid))?;
        Ok(ChildHandle {
            pid,
            owner: rustix::process::getpid(),
            pidfd,
            pgid,
            status: Mutex::new(None),
            kill_on_drop: AtomicBool::new(kill_on_drop),
        })
    }

    /// The handle for a child a zygote cloned for us (`CLONE_PARENT`): its pid and the
    /// pidfd the kernel made at clone time. It leads its own process group (set here too,
    /// so the group exists before the caller can signal it).
    ///
    /// # Errors
    ///
    /// `pidfd` does not name an unreaped child of this process.
    pub(crate) fn from_clone(pid: u32, pidfd: OwnedFd, kill_on_drop: bool) -> io::Result<Self> {
        let raw = i32::try_from(pid).ok().and_then(Pid::from_raw).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("{pid} is not a valid pid"))
        })?;
        rustix::process::waitid(
            WaitId::PidFd(pidfd.as_fd()),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT,
        )
        .map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("pid {pid} from the zygote is not an unreaped child of this process ({e})"),
            )
        })?;
        // EACCES (it exec'd) or ESRCH (already gone) are fine: the child set it itself.
        let _ = rustix::process::setpgid(Some(raw), Some(raw));
        Ok(ChildHandle {
            pid: raw,
            owner: rustix::process::getpid(),
            pidfd: Some(pidfd),
            pgid: Some(raw),
            status: Mutex::new(None),
            kill_on_drop: AtomicBool::new(kill_on_drop),
        })
    }

    /// Takes ownership of an unreaped child of this process that was spawned some other
    /// way (e.g. `exec` through `std::process::Command`). The handle's process group is the
    /// child's own if it leads one (`getpgid(pid) == pid`).
    ///
    /// The caller promises that `pid` is a child of this process that nothing else will
    /// wait for (no `std::process::Child::wait`, no tokio `Child`, no `SIGCHLD` set to
    /// `SIG_IGN`). `kill_on_drop` starts `false`.
    ///
    /// # Errors
    ///
    /// `ECHILD`-style error if `pid` is not a child of this process, or if it was already
    /// reaped.
    pub fn adopt(pid: u32) -> io::Result<Self> {
        Self::adopt_inner(pid, true)
    }

    /// [`ChildHandle::adopt`] without a pidfd, to exercise the fallback paths.
    #[doc(hidden)]
    pub fn adopt_without_pidfd(pid: u32) -> io::Result<Self> {
        Self::adopt_inner(pid, false)
    }

    fn adopt_inner(pid: u32, use_pidfd: bool) -> io::Result<Self> {
        let raw = i32::try_from(pid).ok().and_then(Pid::from_raw).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{pid} is not a valid pid"))
        })?;
        // Proves that `pid` is our unreaped child without reaping it.
        rustix::process::waitid(
            WaitId::Pid(raw),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT,
        )
        .map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("cannot adopt pid {pid}: not an unreaped child of this process ({e})"),
            )
        })?;
        let pgid = rustix::process::getpgid(Some(raw)).ok().filter(|&g| g == raw);
        Ok(ChildHandle {
            pid: raw,
            owner: rustix::process::getpid(),
            pidfd: if use_pidfd { open_pidfd(raw)? } else { None },
            pgid,
            status: Mutex::new(None),
            kill_on_drop: AtomicBool::new(false),
        })
    }

    /// Takes ownership of a `std::process::Child` (its stdio pipes, if any, are closed:
    /// take them first). See [`ChildHandle::adopt`].
    ///
    /// # Errors
    ///
    /// As [`ChildHandle::adopt`].
    ///
    /// Unlike [`ChildHandle::adopt`], a child this fails to own (no pidfd: out of fds) is
    /// killed and reaped before the error returns: `child` was its only other owner, and
    /// it is gone.
    pub fn from_std(child: std::process::Child) -> io::Result<Self> {
        let pid = child.id();
        drop(child); // std never waits on drop
        Self::adopt(pid).inspect_err(|_| {
            if let Some(raw) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
                kill_and_reap(raw);
            }
        })
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.pid.as_raw_nonzero().get() as u32
    }

    /// The child's process group, when it leads its own.
    pub fn pgid(&self) -> Option<u32> {
        self.pgid.map(|g| g.as_raw_nonzero().get() as u32)
    }

    /// The pidfd, when the kernel gave one.
    pub fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_ref().map(AsFd::as_fd)
    }

    /// The exit status, if the child has been reaped (by `try_wait` or `wait`).
    pub fn exit_status(&self) -> Option<ExitStatus> {
        *self.status.locked()
    }

    /// Whether dropping a still-running child SIGKILLs it (and its group).
    pub fn set_kill_on_drop(&self, kill: bool) {
        self.kill_on_drop.store(kill, Ordering::Relaxed);
    }

    /// Reaps the child if it has exited; `Ok(None)` while it runs. The status is cached:
    /// every later call returns the same value.
    ///
    /// # Errors
    ///
    /// The `waitid` error, e.g. `ECHILD` when called from a process that is not the
    /// child's parent.
    pub fn try_wait(&self) -> io::Result<Option<ExitStatus>> {
        let mut status = self.status.locked();
        if status.is_none() {
            *status = self.reap_nohang()?;
        }
        Ok(*status)
    }

    fn reap_nohang(&self) -> io::Result<Option<ExitStatus>> {
        self.check_owner()?;
        let opts = WaitIdOptions::EXITED | WaitIdOptions::NOHANG;
        let res = match &self.pidfd {
            Some(fd) => rustix::process::waitid(WaitId::PidFd(fd.as_fd()), opts),
            None => rustix::process::waitid(WaitId::Pid(self.pid), opts),
        };
        let res = res.map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("waitid on pid {} failed: {e}", self.pid()),
            )
        })?;
        Ok(res.as_ref().and_then(ExitStatus::from_waitid))
    }

    fn check_owner(&self) -> io::Result<()> {
        if rustix::process::getpid() == self.owner {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "pid {} is a child of pid {}, not of this process (handle inherited across fork)",
                self.pid(),
                self.owner.as_raw_nonzero()
            )))
        }
    }

    /// Blocks the calling thread until the child exits, then reaps it.
    ///
    /// # Errors
    ///
    /// As [`ChildHandle::try_wait`], plus `poll` errors.
    pub fn wait_blocking(&self) -> io::Result<ExitStatus> {
        let mut backoff = Backoff::new();
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            match &self.pidfd {
                Some(fd) => {
                    let mut fds = [rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN)];
                    match rustix::event::poll(&mut fds, None) {
                        Ok(_) | Err(rustix::io::Errno::INTR) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                None => std::thread::sleep(backoff.next()),
            }
        }
    }

    /// Waits for the child to exit and reaps it.
    ///
    /// Cancel-safe: dropping the future mid-wait loses nothing; a later `wait` (or
    /// `try_wait`) returns the same status. Several tasks may wait at once.
    ///
    /// # Errors
    ///
    /// As [`ChildHandle::try_wait`]. (Out of fds, it polls with a backoff of at most
    /// 50 ms instead of waiting on the pidfd.)
    #[cfg(feature = "async")]
    pub async fn wait(&self) -> io::Result<ExitStatus> {
        use tokio::io::{Interest, unix::AsyncFd};
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        // A duplicate of the pidfd per waiter: epoll refuses the same fd registered twice.
        // Without one (out of fds, or the reactor refuses to register it) the wait polls instead, as
        // without a pidfd: a waiter never fails, nor takes a live child for dead, for want
        // of an fd.
        let registered = self.pidfd.as_ref().and_then(|fd| {
            let dup = fd.try_clone().ok()?;
            #[allow(unsafe_code)]
            // SAFETY: `dup` is an `OwnedFd` we just created; the `AsyncFd` owns it and
            // nothing else closes or replaces it while registered.
            unsafe { AsyncFd::register_with_interest(dup, Interest::READABLE) }.ok()
        });
        match registered {
            Some(afd) => loop {
                let mut ready = afd.readable().await?;
                if let Some(status) = self.try_wait()? {
                    return Ok(status);
                }
                ready.clear_ready();
            },
            None => {
                let mut backoff = Backoff::new();
                loop {
                    tokio::time::sleep(backoff.next()).await;
                    if let Some(status) = self.try_wait()? {
                        return Ok(status);
                    }
                }
            }
        }
    }

    /// Sends `signal` to the child. A child that already exited is not an error.
    ///
    /// # Errors
    ///
    /// `EPERM` and the like from `pidfd_send_signal(2)` / `kill(2)`.
    pub fn signal(&self, signal: Signal) -> io::Result<()> {
        self.check_owner()?;
        let status = self.status.locked();
        if status.is_some() {
            return Ok(()); // reaped: the pid may belong to someone else now
        }
        let res = match &self.pidfd {
            Some(fd) => rustix::process::pidfd_send_signal(fd, signal),
            // Safe while we hold `status` unreaped: the pid cannot be reused.
            None => rustix::process::kill_process(self.pid, signal),
        };
        drop(status);
        ignore_esrch(res, || format!("sending {signal:?} to pid {}", self.pid()))
    }

    /// SIGKILLs the child alone.
    ///
    /// # Errors
    ///
    /// As [`ChildHandle::signal`].
    pub fn kill(&self) -> io::Result<()> {
        self.signal(Signal::KILL)
    }

    /// Sends `signal` to the child's whole process group (e.g. SIGTERM, then SIGKILL).
    ///
    /// # Errors
    ///
    /// `InvalidInput` when the child does not lead a process group of its own.
    ///
    /// # Caveats
    ///
    /// Use it before the child is reaped, as the cancellation ladder does: while the
    /// leader is unreaped, or while any member is alive, the group id cannot be reused.
    /// Signalling an empty group after the leader was reaped is a (vanishingly unlikely)
    /// pid-reuse race.
    pub fn kill_group(&self, signal: Signal) -> io::Result<()> {
        self.check_owner()?;
        let pgid = self.pgid.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("pid {} does not lead a process group of its own", self.pid()),
            )
        })?;
        ignore_esrch(rustix::process::kill_process_group(pgid, signal), || {
            format!("sending {signal:?} to process group {}", pgid.as_raw_nonzero())
        })
    }

    /// Sends `signal` to the target.
    ///
    /// # Errors
    ///
    /// As [`ChildHandle::signal`] / [`ChildHandle::kill_group`].
    pub fn send(&self, target: KillTarget, signal: Signal) -> io::Result<()> {
        match target {
            KillTarget::Process => self.signal(signal),
            KillTarget::Group => self.kill_group(signal),
        }
    }
}

impl Drop for ChildHandle {
    fn drop(&mut self) {
        if rustix::process::getpid() != self.owner {
            // Inherited across a fork: the fd number may be reused here, the pid is not
            // our child. Touch nothing.
            std::mem::forget(self.pidfd.take());
            return;
        }
        // Whether it was reaped before (by `wait`) or here, a child that did not exit
        // cleanly could not remove an actor marker of its own: clear it (a no-op for
        // processes that are not plough actors, and for a marker that is live again: a
        // recycled pid's).
        match self.try_wait() {
            Ok(Some(status)) => {
                if !status.success() {
                    let pid = self.pid.as_raw_nonzero().get() as u32;
                    let _ =
                        crate::marker::clear_dead_pid(&crate::marker::default_runtime_dir(), pid);
                }
                return;
            }
            Err(_) => return,
            Ok(None) => {}
        }
        if self.kill_on_drop.load(Ordering::Relaxed) {
            let _ = match self.pgid {
                Some(_) => self.kill_group(Signal::KILL),
                None => self.kill(),
            };
        }
        crate::reap_queue::hand_off(self.pid, self.pidfd.take());
    }
}

/// SIGKILLs an unreaped child of ours that no handle owns (its handle could not be made)
/// with its process group, waits for it (immediate after SIGKILL) and reaps it by its pid,
/// then clears an actor marker it may have written.
pub(crate) fn kill_and_reap(pid: Pid) {
    // Only an unreaped child of ours: then the pid cannot have been reused.
    let ours = rustix::process::waitid(
        WaitId::Pid(pid),
        WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT,
    );
    if ours.is_err() {
        return;
    }
    let _ = rustix::process::kill_process_group(pid, Signal::KILL);
    let _ = rustix::process::kill_process(pid, Signal::KILL);
    while let Err(rustix::io::Errno::INTR) =
        rustix::process::waitid(WaitId::Pid(pid), WaitIdOptions::EXITED)
    {}
    let raw = pid.as_raw_nonzero().get() as u32;
    let _ = crate::marker::clear_dead_pid(&crate::marker::default_runtime_dir(), raw);
}

/// Opens a pidfd for `pid`; `None` when the kernel (or a seccomp filter) has none.
fn open_pidfd(pid: Pid) -> io::Result<Option<OwnedFd>> {
    use std::sync::atomic::AtomicU8;
    static UNSUPPORTED: AtomicU8 = AtomicU8::new(0);
    if UNSUPPORTED.load(Ordering::Relaxed) == 1 {
        return Ok(None);
    }
    match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => Ok(Some(fd)),
        Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM) => {
            UNSUPPORTED.store(1, Ordering::Relaxed);
            Ok(None)
        }
        Err(e) => Err(io::Error::new(
            io::Error::from(e).kind(),
            format!(
                "pidfd_open({}) failed: {e} (was SIGCHLD set to SIG_IGN, auto-reaping it?)",
                pid.as_raw_nonzero()
            ),
        )),
    }
}

fn ignore_esrch(res: rustix::io::Result<()>, what: impl FnOnce() -> String) -> io::Result<()> {
    match res {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(e) => Err(io::Error::new(io::Error::from(e).kind(), format!("{}: {e}", what()))),
    }
}

/// Poll intervals for the no-pidfd fallback: 1 ms doubling to 50 ms.
#[derive(Debug)]
pub(crate) struct Backoff(Duration);

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff(Duration::from_millis(1))
    }
    pub(crate) fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(Duration::from_millis(50));
        d
    }
}
