//! A nursery child's process, local or on another host: the ladder and the watches speak
//! to [`ChildProcess`], which is either this process's own handle on it (pidfd, process
//! group, reaping) or the host daemon's, reached through a [`Host`](super::remote::Host).
//!
//! The ladder is the same for both (IPC cancel → wait for the exit → SIGTERM to the group
//! → wait → SIGKILL to the group → reaped); for a remote child each process step is a
//! call to the daemon that holds it, and "reaped" is the daemon's report of its exit
//! status. A remote child whose host is lost (its lease ran out) has no status: its waits
//! fail with [`ChildProcess::lost`] saying why.

use super::remote::RemoteProcess;
use plough_fork_prims::{ChildHandle, ExitStatus, Signal};
use std::io;

/// A child's process: here, or on a host daemon.
pub(crate) enum ChildProcess {
    /// A process of ours.
    Local(ChildHandle),
    /// A process of a host daemon's.
    Remote(RemoteProcess),
}

impl From<ChildHandle> for ChildProcess {
    fn from(h: ChildHandle) -> Self {
        ChildProcess::Local(h)
    }
}

impl ChildProcess {
    /// Its pid (on its own host).
    pub(crate) fn pid(&self) -> u32 {
        match self {
            ChildProcess::Local(h) => h.pid(),
            ChildProcess::Remote(r) => r.pid(),
        }
    }

    /// Its status if it has been reaped; an error for a remote child whose host is lost.
    pub(crate) fn try_wait(&self) -> io::Result<Option<ExitStatus>> {
        match self {
            ChildProcess::Local(h) => h.try_wait(),
            ChildProcess::Remote(r) => r.try_wait(),
        }
    }

    /// Waits until it has exited and been reaped (cancel-safe).
    pub(crate) async fn wait(&self) -> io::Result<ExitStatus> {
        match self {
            ChildProcess::Local(h) => h.wait().await,
            ChildProcess::Remote(r) => r.wait().await,
        }
    }

    /// Sends `signal` to the process.
    pub(crate) fn signal(&self, signal: Signal) -> io::Result<()> {
        match self {
            ChildProcess::Local(h) => h.signal(signal),
            ChildProcess::Remote(r) => r.signal(signal, false),
        }
    }

    /// SIGKILL to the process.
    pub(crate) fn kill(&self) -> io::Result<()> {
        match self {
            ChildProcess::Local(h) => h.kill(),
            ChildProcess::Remote(r) => r.signal(Signal::KILL, false),
        }
    }

    /// Sends `signal` to its process group.
    pub(crate) fn kill_group(&self, signal: Signal) -> io::Result<()> {
        match self {
            ChildProcess::Local(h) => h.kill_group(signal),
            ChildProcess::Remote(r) => r.signal(signal, true),
        }
    }

    /// For a remote child whose host is lost: the host and why.
    pub(crate) fn lost(&self) -> Option<(String, String)> {
        match self {
            ChildProcess::Local(_) => None,
            ChildProcess::Remote(r) => r.lost(),
        }
    }

    /// The host it runs on, for a remote child.
    pub(crate) fn host(&self) -> Option<&str> {
        match self {
            ChildProcess::Local(_) => None,
            ChildProcess::Remote(r) => Some(r.host_name()),
        }
    }
}
