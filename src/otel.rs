//! OpenTelemetry's trace across plough's processes (cargo feature `opentelemetry`).
//!
//! With a `tracing-opentelemetry` layer in each process, every `tracing` span already
//! becomes an OpenTelemetry span; what it cannot see is that a `plough.serve` span in one
//! process is the child of a `plough.call` span in another. [`install`] tells plough to
//! send the caller span's OpenTelemetry context in each call's `Start`, and to make it
//! the serving span's remote parent: one OpenTelemetry trace across the tree, and
//! plough's `trace_id`/`span_id`/`parent_span_id` fields then hold OpenTelemetry's ids.
//!
//! Install it in `main`, before [`Runtime::run`](crate::Runtime::run), where the
//! subscriber is installed: `zygote` and `exec` children run `main` again, and
//! `main_thread_forkserver` children inherit both. `examples/otel.rs` shows the whole
//! pipeline (an SDK tracer provider, the layer, this hook).

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use plough_actor_core::trace::{
    PropagationAlreadySet, TraceContext, TracePropagation, set_propagation,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// plough's [`TracePropagation`] through `tracing-opentelemetry`'s span extension.
#[derive(Debug, Clone, Copy, Default)]
pub struct OtelPropagation;

impl TracePropagation for OtelPropagation {
    fn inject(&self, span: &tracing::Span) -> Option<TraceContext> {
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        sc.is_valid().then(|| TraceContext {
            trace_id: sc.trace_id().to_bytes(),
            span_id: sc.span_id().to_bytes(),
            flags: sc.trace_flags().to_u8(),
        })
    }

    fn extract(&self, span: &tracing::Span, remote: &TraceContext) -> Option<[u8; 8]> {
        let parent = SpanContext::new(
            TraceId::from_bytes(remote.trace_id),
            SpanId::from_bytes(remote.span_id),
            TraceFlags::new(remote.flags),
            true,
            TraceState::default(),
        );
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(parent));
        let own = span.context().span().span_context().span_id();
        (own != SpanId::INVALID).then(|| own.to_bytes())
    }
}

/// Installs [`OtelPropagation`] for this process.
///
/// # Errors
///
/// [`PropagationAlreadySet`] if a propagation is installed already.
pub fn install() -> Result<(), PropagationAlreadySet> {
    set_propagation(OtelPropagation)
}
