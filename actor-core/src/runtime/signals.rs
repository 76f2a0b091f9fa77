//! Signals as typed values (`rustix`'s [`Signal`]), read from a `signalfd` this process
//! makes itself — never through tokio's signal driver, whose process-global state a
//! forked child would inherit broken (plough builds tokio without it).

use crate::base::dump;
use crate::base::runtime_vars;
use crate::serving::actor::Actor;
use plough_fork_prims::{Signal, SignalFd};

/// Signals this actor watches: blocked on its thread, read as events.
pub(super) struct Signals(Option<SignalFd>);

impl Signals {
    /// Watches `signals` (logged and left alone if the signalfd cannot be made); they are
    /// unblocked again when this is dropped.
    pub(super) fn watch(signals: &[Signal]) -> Self {
        Self::make(signals, false)
    }

    /// Watches `signals` for the rest of this process: they stay blocked after this is
    /// dropped, so one that arrives while the process exits (a child actor that already
    /// cancelled itself) cannot kill it halfway.
    pub(super) fn watch_until_exit(signals: &[Signal]) -> Self {
        Self::make(signals, true)
    }

    fn make(signals: &[Signal], until_exit: bool) -> Self {
        let raw: Vec<i32> = signals.iter().map(|s| s.as_raw()).collect();
        match SignalFd::new(&raw) {
            Ok(fd) if until_exit => Signals(Some(fd.keeping_blocked())),
            Ok(fd) => Signals(Some(fd)),
            Err(e) => {
                tracing::warn!(error = %e, ?signals, "cannot watch signals");
                Signals(None)
            }
        }
    }

    /// Whether the signals are watched.
    pub(super) fn is_watching(&self) -> bool {
        self.0.is_some()
    }

    /// The next watched signal (pending forever when nothing is watched, or reading fails).
    pub(super) async fn recv(&self) -> Signal {
        if let Some(fd) = &self.0 {
            loop {
                match fd.recv().await.map(Signal::from_named_raw) {
                    Ok(Some(sig)) => return sig,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the signalfd failed");
                        break;
                    }
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

/// SIGUSR1: the task tree to stderr and the dump file, then the signal to every child.
pub(super) fn dump_and_relay(actor: &Actor) {
    if let Err(e) = dump::dump(&actor.aid().name, runtime_vars::actor_label()) {
        tracing::warn!(error = %e, "cannot append the task dump to its file");
    }
    dump::relay_to_children();
}
