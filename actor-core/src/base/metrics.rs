//! Metrics through the [`metrics`](https://docs.rs/metrics) facade: plough records, the
//! program's recorder (Prometheus, StatsD, OpenTelemetry, a test's) exports. Without a
//! recorder every call here is a no-op; plough has no exporter of its own.
//!
//! The names, labels and what each counts are listed in the crate's public
//! `metrics` module (`crate::metrics`), which re-exports these constants.

#[cfg(test)]
use super::budgets::Budgets;
use plough_ipc_wire::msg::{CallKind, ErrorKind};
use std::time::Duration;

/// Counter: child spawns, by `backend` and `outcome`.
pub const SPAWNS: &str = "plough_spawns_total";
/// Histogram (seconds): spawn latency, by `backend`.
pub const SPAWN_DURATION: &str = "plough_spawn_duration_seconds";
/// Gauge: live children of this process, by `backend`.
pub const ACTORS_LIVE: &str = "plough_actors_live";
/// Counter: supervisor restarts.
pub const RESTARTS: &str = "plough_restarts_total";
/// Counter: calls (functions, contexts, streams) started, by `function`, `side`, `kind`.
pub const CALLS: &str = "plough_calls_total";
/// Counter: calls that failed, by `function`, `side`, `error`.
pub const CALL_ERRORS: &str = "plough_call_errors_total";
/// Counter: stream messages, by `function` and `direction`.
pub const STREAM_MESSAGES: &str = "plough_stream_messages_total";
/// Counter: stream payload bytes, by `function` and `direction`.
pub const STREAM_BYTES: &str = "plough_stream_bytes_total";
/// Counter: ladder escalations, by `rung`.
pub const LADDER_ESCALATIONS: &str = "plough_ladder_escalations_total";

/// Label: the spawn backend's key (`zygote`, `exec`, `main_thread_forkserver`).
pub const LABEL_BACKEND: &str = "backend";
/// Label: `ok` or `error`.
pub const LABEL_OUTCOME: &str = "outcome";
/// Label: a registered function name.
pub const LABEL_FUNCTION: &str = "function";
/// Label: `caller` or `callee`.
pub const LABEL_SIDE: &str = "side";
/// Label: `function`, `context` or `stream`.
pub const LABEL_KIND: &str = "kind";
/// Label: the error's kind (`user` for a handler's own error).
pub const LABEL_ERROR: &str = "error";
/// Label: `sent` or `received`.
pub const LABEL_DIRECTION: &str = "direction";
/// Label: the ladder's rung: `sigterm`, `sigkill` (after SIGTERM), `forced` (a second
/// stop signal skipped the wait).
pub const LABEL_RUNG: &str = "rung";

/// The `function` label of a call to a function the callee does not have.
pub const UNKNOWN_FUNCTION: &str = "<unknown>";

/// Which end of a call counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Caller,
    Callee,
}

impl Side {
    fn label(self) -> &'static str {
        match self {
            Side::Caller => "caller",
            Side::Callee => "callee",
        }
    }
}

/// The ladder's rungs past the IPC cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rung {
    Sigterm,
    Sigkill,
    Forced,
}

fn error_label(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::User => "user",
        k => k.type_name(),
    }
}

/// A spawn by `backend` ended (`ok`: the child booted) after `took`.
pub(crate) fn spawned(backend: &'static str, ok: bool, took: Duration) {
    let outcome = if ok { "ok" } else { "error" };
    ::metrics::counter!(SPAWNS, LABEL_BACKEND => backend, LABEL_OUTCOME => outcome).increment(1);
    ::metrics::histogram!(SPAWN_DURATION, LABEL_BACKEND => backend).record(took.as_secs_f64());
}

/// One more (or, dropped, one less) live child of `backend`.
#[derive(Debug)]
pub(crate) struct LiveChild(&'static str);

impl LiveChild {
    pub(crate) fn new(backend: &'static str) -> LiveChild {
        ::metrics::gauge!(ACTORS_LIVE, LABEL_BACKEND => backend).increment(1.0);
        LiveChild(backend)
    }
}

impl Drop for LiveChild {
    fn drop(&mut self) {
        ::metrics::gauge!(ACTORS_LIVE, LABEL_BACKEND => self.0).decrement(1.0);
    }
}

/// A supervisor restarted a child.
pub(crate) fn restarted() {
    ::metrics::counter!(RESTARTS).increment(1);
}

/// A call of `function` started, seen from `side`.
///
/// Every call counts, so the key (the name, its labels, a copy of the function's name) is
/// built once per thread ([`CallKeys`]) rather than at each call: building it cost about
/// as much as the rest of a caller's bookkeeping. The counter is still registered with
/// the recorder in effect at each call, so a recorder installed, or made local to a
/// scope, later counts every call from then on.
pub(crate) fn call(function: &str, side: Side, kind: CallKind) {
    static METADATA: ::metrics::Metadata<'static> =
        ::metrics::Metadata::new(module_path!(), ::metrics::Level::INFO, Some(module_path!()));
    CALL_KEYS.with_borrow_mut(|keys| {
        keys.with(function, side, kind, |key| {
            ::metrics::with_recorder(|r| r.register_counter(key, &METADATA)).increment(1);
        });
    });
}

/// The keys of `plough_calls_total` a thread has counted with, by function (and side and
/// kind). At most [`Budgets::CALL_COUNTERS`](super::budgets::Budgets::CALL_COUNTERS)
/// functions are kept; a call of any other has its key built for it.
struct CallKeys(foldhash::HashMap<Box<str>, [Option<::metrics::Key>; 6]>);

thread_local! {
    static CALL_KEYS: std::cell::RefCell<CallKeys> =
        std::cell::RefCell::new(CallKeys(foldhash::HashMap::default()));
}

impl CallKeys {
    fn with(
        &mut self,
        function: &str,
        side: Side,
        kind: CallKind,
        f: impl FnOnce(&::metrics::Key),
    ) {
        let slot = match side {
            Side::Caller => 0,
            Side::Callee => 3,
        } + match kind {
            CallKind::Function => 0,
            CallKind::Context => 1,
            CallKind::Stream => 2,
        };
        let build = || {
            ::metrics::Key::from_parts(
                CALLS,
                vec![
                    ::metrics::Label::new(LABEL_FUNCTION, function.to_owned()),
                    ::metrics::Label::from_static_parts(LABEL_SIDE, side.label()),
                    ::metrics::Label::from_static_parts(LABEL_KIND, super::trace::kind_name(kind)),
                ],
            )
        };
        if let Some(keys) = self.0.get_mut(function) {
            return f(keys[slot].get_or_insert_with(build));
        }
        let key = build();
        f(&key);
        if self.0.len() < super::budgets::Budgets::CALL_COUNTERS {
            let mut keys: [Option<::metrics::Key>; 6] = Default::default();
            keys[slot] = Some(key);
            self.0.insert(function.into(), keys);
        }
    }
}

/// A call of `function` failed with `error`, seen from `side`.
pub(crate) fn call_error(function: &str, side: Side, error: ErrorKind) {
    ::metrics::counter!(
        CALL_ERRORS,
        LABEL_FUNCTION => function.to_owned(),
        LABEL_SIDE => side.label(),
        LABEL_ERROR => error_label(error),
    )
    .increment(1);
}

/// The ladder reached `rung` for a child.
pub(crate) fn escalated(rung: Rung) {
    let rung = match rung {
        Rung::Sigterm => "sigterm",
        Rung::Sigkill => "sigkill",
        Rung::Forced => "forced",
    };
    ::metrics::counter!(LADDER_ESCALATIONS, LABEL_RUNG => rung).increment(1);
}

/// The counters of one stream end, taken once when it opens (a message costs an atomic
/// add with a recorder, nothing without).
#[derive(Debug, Clone)]
pub(crate) struct StreamCounters {
    sent: (::metrics::Counter, ::metrics::Counter),
    received: (::metrics::Counter, ::metrics::Counter),
}

impl StreamCounters {
    pub(crate) fn new(function: &str) -> StreamCounters {
        let pair = |direction: &'static str| {
            (
                ::metrics::counter!(STREAM_MESSAGES, LABEL_FUNCTION => function.to_owned(), LABEL_DIRECTION => direction),
                ::metrics::counter!(STREAM_BYTES, LABEL_FUNCTION => function.to_owned(), LABEL_DIRECTION => direction),
            )
        };
        StreamCounters { sent: pair("sent"), received: pair("received") }
    }

    pub(crate) fn sent(&self, bytes: usize) {
        self.sent.0.increment(1);
        self.sent.1.increment(bytes as u64);
    }

    pub(crate) fn received(&self, bytes: usize) {
        self.received.0.increment(1);
        self.received.1.increment(bytes as u64);
    }
}

/// Gives the installed recorder each metric's unit and description. Call it once, after
/// installing the recorder (plough never installs one).
pub fn describe() {
    use ::metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(SPAWNS, Unit::Count, "child actor spawns, by backend and outcome");
    describe_histogram!(SPAWN_DURATION, Unit::Seconds, "spawn until the child booted");
    describe_gauge!(ACTORS_LIVE, Unit::Count, "children of this process not yet exited");
    describe_counter!(RESTARTS, Unit::Count, "supervisor restarts");
    describe_counter!(CALLS, Unit::Count, "calls, contexts and streams started");
    describe_counter!(CALL_ERRORS, Unit::Count, "calls that ended in an error");
    describe_counter!(STREAM_MESSAGES, Unit::Count, "stream messages");
    describe_counter!(STREAM_BYTES, Unit::Bytes, "stream payload bytes");
    describe_counter!(LADDER_ESCALATIONS, Unit::Count, "children the ladder had to signal");
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    type Seen = Vec<(
        metrics_util::CompositeKey,
        Option<::metrics::Unit>,
        Option<::metrics::SharedString>,
        DebugValue,
    )>;

    /// `plough_calls_total` for `function` and `side` in a snapshot (taking a snapshot
    /// resets the recorder's counters).
    fn calls(seen: &Seen, function: &str, side: &str) -> u64 {
        seen.iter()
            .filter(|(key, ..)| {
                let key = key.key();
                key.name() == CALLS
                    && key.labels().any(|l| l.key() == LABEL_FUNCTION && l.value() == function)
                    && key.labels().any(|l| l.key() == LABEL_SIDE && l.value() == side)
            })
            .map(|(.., value)| match value {
                DebugValue::Counter(n) => *n,
                other => panic!("a counter, not {other:?}"),
            })
            .sum()
    }

    #[test]
    fn cached_call_keys_count_with_the_recorder_in_effect() {
        let (a, b) = (DebuggingRecorder::new(), DebuggingRecorder::new());
        let (snap_a, snap_b) = (a.snapshotter(), b.snapshotter());
        // Before any recorder: counted nowhere (its key is kept).
        call("f", Side::Caller, CallKind::Function);
        ::metrics::with_local_recorder(&a, || {
            for _ in 0..3 {
                call("f", Side::Caller, CallKind::Function);
            }
            call("f", Side::Callee, CallKind::Function);
        });
        ::metrics::with_local_recorder(&b, || call("f", Side::Caller, CallKind::Function));
        ::metrics::with_local_recorder(&a, || call("f", Side::Caller, CallKind::Function));
        let (seen_a, seen_b) = (snap_a.snapshot().into_vec(), snap_b.snapshot().into_vec());
        assert_eq!(calls(&seen_a, "f", "caller"), 4, "each call counted once, by its recorder");
        assert_eq!(calls(&seen_a, "f", "callee"), 1);
        assert_eq!(calls(&seen_b, "f", "caller"), 1);
        drop((a, b, snap_a, snap_b));
        // A recorder made anew in the same place (a test's loop): each counts its own.
        for round in 1..=3 {
            let r = DebuggingRecorder::new();
            let snap = r.snapshotter();
            ::metrics::with_local_recorder(&r, || {
                for _ in 0..round {
                    call("f", Side::Caller, CallKind::Function);
                }
            });
            assert_eq!(calls(&snap.snapshot().into_vec(), "f", "caller"), round);
        }
    }

    #[test]
    fn functions_past_the_cache_bound_are_still_counted() {
        let rec = DebuggingRecorder::new();
        let snap = rec.snapshotter();
        ::metrics::with_local_recorder(&rec, || {
            for i in 0..Budgets::CALL_COUNTERS + 10 {
                call(&format!("f{i}"), Side::Callee, CallKind::Context);
            }
            let last = format!("f{}", Budgets::CALL_COUNTERS + 9);
            call(&last, Side::Callee, CallKind::Context);
            let seen = snap.snapshot().into_vec();
            assert_eq!(calls(&seen, &last, "callee"), 2, "an uncached function counts every call");
            assert_eq!(calls(&seen, "f0", "callee"), 1, "a cached one counts too");
        });
        assert!(
            CALL_KEYS.with_borrow(|c| c.0.len()) <= Budgets::CALL_COUNTERS,
            "the cache stays within its bound"
        );
    }
}
