//! Spans: one per actor, one per call on each side, and the trace context that links a
//! caller's span to the callee's across processes.
//!
//! `tracing` links spans inside one process only; a call's two ends live in two. So
//! plough gives each of its spans W3C-style ids of its own (a 16-byte trace id, an 8-byte
//! span id), records them as the span's fields (`trace_id`, `span_id`, `parent_span_id`,
//! lowercase hex), and sends the caller span's ids in the call's `Start`: the callee's
//! `plough.serve` span takes the caller's trace id and names the caller's span as its
//! parent. Any subscriber that records fields sees one trace across the tree; none needs
//! to know plough.
//!
//! Inside a process the ids follow the task: a served call's task (and the root's body)
//! runs with its span's ids in a task-local, so a call it makes is that span's child. A
//! task the program spawns itself (`tokio::spawn`) starts without them (as it starts
//! without the `tracing` span unless it is instrumented): its calls begin a new trace.
//!
//! A subscriber with its own ids (`tracing-opentelemetry`) plugs in through
//! [`TracePropagation`]: it is asked for the ids to send and told the ids that arrived, so
//! that its own trace is the one that crosses processes (see the `plough` crate's
//! `opentelemetry` feature). Without one, and when no subscriber is interested in a span,
//! a call costs a disabled span and a copy of the ids it inherited — nothing is minted.

use plough_ipc_wire::msg::{Aid, CallKind, Cid, TraceContext, Uuid};
use std::fmt;
use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::Span;
use tracing::field::Empty;

/// The name of an actor's span (fields: `name`, `uuid`, `pid`, `spawn_method`, `host`,
/// `trace_id`, `span_id`).
pub const ACTOR_SPAN: &str = "plough.actor";
/// The name of the caller's span of a call, context or stream (fields: `function`, `cid`,
/// `kind`, `peer`, `trace_id`, `span_id`, `parent_span_id`).
pub const CALL_SPAN: &str = "plough.call";
/// The name of the callee's span of a call, context or stream it serves (the same fields
/// as [`CALL_SPAN`]; `parent_span_id` is the caller's span).
pub const SERVE_SPAN: &str = "plough.serve";

/// Lets a subscriber with ids of its own (OpenTelemetry's) carry its trace across
/// processes instead of plough's ids. Installed once per process with
/// [`set_propagation`], before the runtime starts (a forked child inherits it; an exec'd
/// child runs `main` again and installs it there).
pub trait TracePropagation: Send + Sync + 'static {
    /// The context to send for a call made inside `span` (plough's caller span, just
    /// created), or `None` to send plough's own ids.
    fn inject(&self, span: &Span) -> Option<TraceContext>;
    /// Tells `span` (plough's serving span, not yet entered) that its remote parent is
    /// `remote`. Returns the span's own id when the subscriber has one (plough records it
    /// as `span_id`), `None` for plough to mint one.
    fn extract(&self, span: &Span, remote: &TraceContext) -> Option<[u8; 8]>;
}

static PROPAGATION: OnceLock<Box<dyn TracePropagation>> = OnceLock::new();

/// [`set_propagation`] was called before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a trace propagation is already installed in this process")]
pub struct PropagationAlreadySet;

/// Installs `p` as this process's trace propagation (see [`TracePropagation`]).
///
/// # Errors
///
/// [`PropagationAlreadySet`] if one is installed already (it stays).
pub fn set_propagation(p: impl TracePropagation) -> Result<(), PropagationAlreadySet> {
    PROPAGATION.set(Box::new(p)).map_err(|_| PropagationAlreadySet)
}

fn propagation() -> Option<&'static dyn TracePropagation> {
    PROPAGATION.get().map(|b| &**b)
}

tokio::task_local! {
    static CURRENT: Option<TraceContext>;
}

/// The trace context of the plough span this task runs in (a served call's, or the
/// root's actor span in its body); `None` outside one.
pub fn current() -> Option<TraceContext> {
    CURRENT.try_with(|c| *c).ok().flatten()
}

/// Runs `fut` with `cx` as its task's [`current`] trace context.
pub(crate) fn in_trace<F: Future>(
    cx: Option<TraceContext>,
    fut: F,
) -> impl Future<Output = F::Output> {
    CURRENT.scope(cx, fut)
}

/// `fut` with this task's span and trace context, for a task it spawns on its behalf (a
/// `run_in_actor` call is then the child of the span that asked for it).
pub(crate) fn inherit<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    tracing::Instrument::instrument(in_trace(current(), fut), Span::current())
}

/// The id source: splitmix64 over a counter, reseeded from each actor's (random) uuid so
/// that a forked child does not repeat its parent's ids.
static ID_STATE: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);

fn reseed(uuid: &Uuid) {
    let (a, b) = uuid.0.split_at(8);
    let seed = u64::from_le_bytes(a.try_into().expect("8 bytes"))
        ^ u64::from_le_bytes(b.try_into().expect("8 bytes")).rotate_left(29)
        ^ u64::from(std::process::id());
    ID_STATE.store(seed, Ordering::Relaxed);
}

fn next_u64() -> u64 {
    let mut z = ID_STATE.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    // W3C: all zero is the invalid id.
    if z == 0 { 1 } else { z }
}

fn new_span_id() -> [u8; 8] {
    next_u64().to_be_bytes()
}

fn new_trace_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&next_u64().to_be_bytes());
    id[8..].copy_from_slice(&next_u64().to_be_bytes());
    id
}

/// Lowercase hex of an id, as the span fields hold it.
struct Hex<'a>(&'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

fn record(span: &Span, own: &TraceContext, parent: Option<[u8; 8]>) {
    span.record("trace_id", tracing::field::display(Hex(&own.trace_id)));
    span.record("span_id", tracing::field::display(Hex(&own.span_id)));
    if let Some(p) = parent {
        span.record("parent_span_id", tracing::field::display(Hex(&p)));
    }
}

/// The name a span's `kind` field gives a call kind.
pub(crate) fn kind_name(kind: CallKind) -> &'static str {
    match kind {
        CallKind::Function => "function",
        CallKind::Context => "context",
        CallKind::Stream => "stream",
    }
}

/// An actor's span and its ids: the parent of the calls it serves (and, in the root, of
/// the calls its body makes).
#[derive(Debug, Clone)]
pub(crate) struct ActorTrace {
    span: Span,
    cx: Option<TraceContext>,
}

impl ActorTrace {
    /// The span of actor `aid`, started by `spawn_method` (`root` for a root). Reseeds the
    /// id source: call it once per actor, in the actor's own process.
    pub(crate) fn new(aid: &Aid, spawn_method: &str) -> ActorTrace {
        reseed(&aid.uuid);
        let host = host_name();
        let span = tracing::info_span!(
            "plough.actor",
            name = %aid.name,
            uuid = %aid.uuid,
            pid = aid.pid,
            spawn_method,
            host = %host,
            trace_id = Empty,
            span_id = Empty,
        );
        if span.is_disabled() {
            return ActorTrace { span, cx: None };
        }
        let cx = propagation().and_then(|p| p.inject(&span)).unwrap_or_else(|| TraceContext {
            trace_id: new_trace_id(),
            span_id: new_span_id(),
            flags: TraceContext::SAMPLED,
        });
        record(&span, &cx, None);
        ActorTrace { span, cx: Some(cx) }
    }

    /// The actor's span.
    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    /// Runs `fut` inside the actor's span, its ids the task's [`current`] context.
    pub(crate) fn run<F: Future>(&self, fut: F) -> impl Future<Output = F::Output> {
        tracing::Instrument::instrument(in_trace(self.cx, fut), self.span.clone())
    }
}

/// This host's name (`/proc/sys/kernel/hostname`: the UTS namespace the actor runs in).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// A call's span on one side, and the trace context its work carries: on the caller's
/// side what goes into the `Start`, on the callee's what the served task runs with.
#[derive(Debug, Clone)]
pub(crate) struct CallTrace {
    pub(crate) span: Span,
    pub(crate) cx: Option<TraceContext>,
}

impl CallTrace {
    /// The caller's span of call `cid` of `function` on `peer`, a child of the task's
    /// current span. When no subscriber wants it, the context passed on is the one the
    /// task already has (so a callee's span still finds its nearest traced ancestor).
    pub(crate) fn caller(function: &str, cid: Cid, kind: CallKind, peer: &Aid) -> CallTrace {
        let span = tracing::info_span!(
            "plough.call",
            function,
            cid,
            kind = kind_name(kind),
            peer = %peer,
            trace_id = Empty,
            span_id = Empty,
            parent_span_id = Empty,
        );
        let parent = current();
        if span.is_disabled() {
            return CallTrace { span, cx: parent };
        }
        let own = propagation().and_then(|p| p.inject(&span)).unwrap_or_else(|| TraceContext {
            trace_id: parent.map_or_else(new_trace_id, |p| p.trace_id),
            span_id: new_span_id(),
            flags: parent.map_or(TraceContext::SAMPLED, |p| p.flags),
        });
        record(&span, &own, parent.map(|p| p.span_id));
        CallTrace { span, cx: Some(own) }
    }

    /// The callee's span of call `cid` of `function` from `peer`, a child of the actor's
    /// span in this process and of `remote` (the caller's span) in the trace; without a
    /// remote context, of the actor's.
    pub(crate) fn serve(
        actor: &ActorTrace,
        function: &str,
        cid: Cid,
        kind: CallKind,
        peer: &Aid,
        remote: Option<TraceContext>,
    ) -> CallTrace {
        let span = tracing::info_span!(
            parent: actor.span(),
            "plough.serve",
            function,
            cid,
            kind = kind_name(kind),
            peer = %peer,
            trace_id = Empty,
            span_id = Empty,
            parent_span_id = Empty,
        );
        let parent = remote.or(actor.cx);
        if span.is_disabled() {
            return CallTrace { span, cx: parent };
        }
        let own_id = match (remote, propagation()) {
            (Some(r), Some(p)) => p.extract(&span, &r),
            _ => None,
        };
        let own = TraceContext {
            trace_id: parent.map_or_else(new_trace_id, |p| p.trace_id),
            span_id: own_id.unwrap_or_else(new_span_id),
            flags: parent.map_or(TraceContext::SAMPLED, |p| p.flags),
        };
        record(&span, &own, parent.map(|p| p.span_id));
        CallTrace { span, cx: Some(own) }
    }

    /// Runs `fut` inside this span, with its context as the task's [`current`].
    pub(crate) fn run<F: Future>(self, fut: F) -> impl Future<Output = F::Output> {
        tracing::Instrument::instrument(in_trace(self.cx, fut), self.span)
    }

    /// Polls `fut` once, as [`CallTrace::run`] polls it (inside this span, with its
    /// context as the task's [`current`]), with a waker that does nothing: its output if
    /// it is ready. A later poll must be from [`CallTrace::run`], in a task.
    pub(crate) fn poll_once<F: Future + Unpin>(&self, fut: &mut F) -> Option<F::Output> {
        let _in_span = self.span.enter();
        CURRENT.sync_scope(self.cx, || futures::FutureExt::now_or_never(fut))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_never_zero_and_do_not_repeat_after_a_reseed_from_another_uuid() {
        reseed(&Uuid([1; 16]));
        let a: Vec<[u8; 8]> = (0..64).map(|_| new_span_id()).collect();
        reseed(&Uuid([2; 16]));
        let b: Vec<[u8; 8]> = (0..64).map(|_| new_span_id()).collect();
        let all: std::collections::HashSet<_> = a.iter().chain(&b).collect();
        assert_eq!(all.len(), 128);
        assert!(all.iter().all(|id| **id != [0; 8]));
        assert!(new_trace_id() != [0; 16]);
    }

    #[test]
    fn hex_is_lowercase_and_padded() {
        assert_eq!(Hex(&[0x0a, 0xff, 0x00]).to_string(), "0aff00");
    }
}
