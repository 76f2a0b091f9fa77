//! How a child process ended, and how we say it.

use std::fmt;

/// How a reaped child process ended.
///
/// `Display` gives the phrases plough uses everywhere: `exited with code 1`,
/// `killed by SIGKILL`, `killed by SIGSEGV (core dumped)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitStatus {
    /// The process called `exit`/`_exit` (or returned from `main`) with this code.
    Exited(i32),
    /// The process was terminated by a signal.
    Signaled {
        /// The raw signal number.
        signal: i32,
        /// Whether the kernel wrote a core dump.
        core_dumped: bool,
    },
}

impl ExitStatus {
    /// `true` for `Exited(0)`.
    pub fn success(self) -> bool {
        self == ExitStatus::Exited(0)
    }

    /// The exit code, when the process exited rather than being killed.
    pub fn code(self) -> Option<i32> {
        match self {
            ExitStatus::Exited(code) => Some(code),
            ExitStatus::Signaled { .. } => None,
        }
    }

    /// The terminating signal, when the process was killed.
    pub fn signal(self) -> Option<i32> {
        match self {
            ExitStatus::Exited(_) => None,
            ExitStatus::Signaled { signal, .. } => Some(signal),
        }
    }

    /// Builds the status from a `waitid` result.
    pub(crate) fn from_waitid(status: &rustix::process::WaitIdStatus) -> Option<Self> {
        if let Some(code) = status.exit_status() {
            Some(ExitStatus::Exited(code))
        } else {
            status
                .terminating_signal()
                .map(|signal| ExitStatus::Signaled { signal, core_dumped: status.dumped() })
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ExitStatus::Exited(code) => write!(f, "exited with code {code}"),
            ExitStatus::Signaled { signal, core_dumped } => {
                write!(f, "killed by {}", SignalName(signal))?;
                if core_dumped {
                    f.write_str(" (core dumped)")?;
                }
                Ok(())
            }
        }
    }
}

/// Displays a raw signal number by its conventional name (`SIGKILL`, `SIGRTMIN+3`),
/// or `signal 99` for a number Linux does not define.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalName(pub i32);

impl fmt::Display for SignalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [&str; 32] = [
            "",
            "SIGHUP",
            "SIGINT",
            "SIGQUIT",
            "SIGILL",
            "SIGTRAP",
            "SIGABRT",
            "SIGBUS",
            "SIGFPE",
            "SIGKILL",
            "SIGUSR1",
            "SIGSEGV",
            "SIGUSR2",
            "SIGPIPE",
            "SIGALRM",
            "SIGTERM",
            "SIGSTKFLT",
            "SIGCHLD",
            "SIGCONT",
            "SIGSTOP",
            "SIGTSTP",
            "SIGTTIN",
            "SIGTTOU",
            "SIGURG",
            "SIGXCPU",
            "SIGXFSZ",
            "SIGVTALRM",
            "SIGPROF",
            "SIGWINCH",
            "SIGIO",
            "SIGPWR",
            "SIGSYS",
        ];
        let sig = self.0;
        let (rtmin, rtmax) = (libc::SIGRTMIN(), libc::SIGRTMAX());
        match usize::try_from(sig) {
            Ok(i @ 1..=31) => f.write_str(NAMES[i]),
            _ if sig == rtmin => f.write_str("SIGRTMIN"),
            _ if sig == rtmax => f.write_str("SIGRTMAX"),
            _ if sig > rtmin && sig < rtmax => write!(f, "SIGRTMIN+{}", sig - rtmin),
            _ => write!(f, "signal {sig}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_read_as_codes() {
        assert_eq!(ExitStatus::Exited(0).to_string(), "exited with code 0");
        assert_eq!(ExitStatus::Exited(1).to_string(), "exited with code 1");
        assert_eq!(ExitStatus::Exited(255).to_string(), "exited with code 255");
        assert!(ExitStatus::Exited(0).success());
        assert!(!ExitStatus::Exited(3).success());
        assert_eq!(ExitStatus::Exited(3).code(), Some(3));
    }

    #[test]
    fn signals_read_by_name() {
        let killed = ExitStatus::Signaled { signal: libc::SIGKILL, core_dumped: false };
        assert_eq!(killed.to_string(), "killed by SIGKILL");
        assert_eq!(killed.signal(), Some(9));
        assert_eq!(killed.code(), None);
        let segv = ExitStatus::Signaled { signal: libc::SIGSEGV, core_dumped: true };
        assert_eq!(segv.to_string(), "killed by SIGSEGV (core dumped)");
        assert_eq!(SignalName(libc::SIGTERM).to_string(), "SIGTERM");
        assert_eq!(SignalName(libc::SIGRTMIN() + 2).to_string(), "SIGRTMIN+2");
        assert_eq!(SignalName(200).to_string(), "signal 200");
        assert_eq!(SignalName(0).to_string(), "signal 0");
    }
}
