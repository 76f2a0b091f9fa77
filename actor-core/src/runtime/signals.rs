//! Signals as typed values (`rustix`'s [`Signal`]), never through tokio's signal driver,
//! whose process-global state a forked child would inherit broken (plough builds tokio
//! without it):
//!
//! * a **root** receives its signals through a process-wide handler writing to a pipe
//!   ([`Signals::process_wide`]): whichever thread the kernel delivers a signal to —
//!   threads the program started before `Runtime::run` included — the root sees it, and
//!   the handler that was installed before plough's (the program's own, e.g. tokio's
//!   `ctrl_c()`) runs for every signal too; the previous handlers come back when the root
//!   returns;
//! * a **child actor** (its own process: a forked child inherits the parent's handlers,
//!   which its prelude resets) reads them from a `signalfd` it makes itself
//!   ([`Signals::until_exit`]), blocked on its thread until the process exits.

use crate::base::dump;
use crate::base::runtime_vars;
use crate::serving::actor::Actor;
use plough_fork_prims::{Signal, SignalFd, SignalName, SignalPipe};

/// Signals this actor watches.
pub(super) enum Signals {
    /// A root's: a process-wide handler and a pipe.
    Pipe(SignalPipe),
    /// A child's: a signalfd, the signals blocked on its thread.
    Fd(SignalFd),
    /// None could be watched (logged): signals keep their default action.
    Unwatched,
}

impl Signals {
    /// A root's signals: handled process-wide until this is dropped (see the module doc).
    pub(super) fn process_wide(signals: &[Signal]) -> Self {
        let raw: Vec<i32> = signals.iter().map(|s| s.as_raw()).collect();
        match SignalPipe::new(&raw) {
            Ok(pipe) => Signals::Pipe(pipe),
            Err(e) => {
                tracing::warn!(error = %e, ?signals, "cannot handle signals");
                Signals::Unwatched
            }
        }
    }

    /// A child actor's signals, for the rest of the process: they stay blocked after this
    /// is dropped, so one that arrives while the process exits (an actor that already
    /// cancelled itself) cannot kill it halfway.
    pub(super) fn until_exit(signals: &[Signal]) -> Self {
        let raw: Vec<i32> = signals.iter().map(|s| s.as_raw()).collect();
        match SignalFd::new(&raw) {
            Ok(fd) => Signals::Fd(fd.keeping_blocked()),
            Err(e) => {
                tracing::warn!(error = %e, ?signals, "cannot watch signals");
                Signals::Unwatched
            }
        }
    }

    /// Whether the signals are watched.
    pub(super) fn is_watching(&self) -> bool {
        !matches!(self, Signals::Unwatched)
    }

    /// The next watched signal (pending forever when nothing is watched, or reading fails).
    pub(super) async fn recv(&self) -> Signal {
        loop {
            let raw = match self {
                Signals::Pipe(p) => p.recv().await,
                Signals::Fd(fd) => fd.recv().await,
                Signals::Unwatched => break,
            };
            match raw.map(Signal::from_named_raw) {
                Ok(Some(sig)) => return sig,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "reading signals failed");
                    break;
                }
            }
        }
        std::future::pending().await
    }
}

/// The signals an actor watches: `base` plus SIGUSR1 when task dumps are on.
pub(super) fn watched(base: &[Signal], dumps: bool) -> Vec<Signal> {
    let mut v = base.to_vec();
    if dumps {
        v.push(Signal::USR1);
    }
    v
}

/// A signal's name for log lines (`SIGTERM`).
pub(super) fn name(sig: Signal) -> SignalName {
    SignalName(sig.as_raw())
}

/// SIGUSR1: the task tree to stderr and the dump files, then the signal to every child.
pub(super) fn dump_and_relay(actor: &Actor) {
    let tree = actor.tree_uuid().to_string();
    let who =
        dump::Who { name: &actor.aid().name, label: runtime_vars::actor_label(), tree: &tree };
    if let Err(e) = dump::dump(&who) {
        tracing::warn!(error = %e, "cannot write the task dump to its files");
    }
    dump::relay_to_children();
}
