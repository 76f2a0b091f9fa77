//! **calls** — the layer above connection: what one actor can do with another over a
//! connection. [`Portal`](portal::Portal) runs functions and opens contexts;
//! [`Context`](context::Context) is the long-lived conversation, with its two-way
//! [`MsgStream`](stream::MsgStream) and local [`FanOut`](fan_out::FanOut); the inbox a
//! context's messages are delivered into ([`inbox`]) is this layer's
//! [`Conversation`](crate::connection::Conversation). A portal knows the caller's identity
//! and its budgets, never the caller's actor: nothing here reaches up to serving.
//!
//! # Contexts
//!
//! The parent opens a context on a portal
//! ([`Portal::open_context`](crate::Portal::open_context)); the child's context
//! function calls [`Context::started`](crate::Context::started) exactly once (its value is the parent's first
//! value), may open a two-way [`MsgStream`](crate::MsgStream), and returns a result that the parent collects
//! with [`Context::result`](crate::Context::result). Either side may cancel.
//!
//! Three hazards are designed out here:
//!
//! * **A silent drop.** Every stream buffer is bounded ([`STREAM_BUFFER`](crate::STREAM_BUFFER) messages and
//!   [`STREAM_BUFFER_BYTES`](crate::STREAM_BUFFER_BYTES) of payload; all of a connection's together by
//!   [`Budgets::stream_buffers`](crate::Budgets::stream_buffers)). The
//!   connection's reader task must never wait on one slow consumer (that would stall every
//!   other conversation on the connection), so a message that finds the buffer full is an
//!   *overrun*: the receiver keeps what it buffered, reports [`ActorError::StreamOverrun`](crate::ActorError::StreamOverrun)
//!   after it, and tells the sender, whose next `send`/`recv` fails with the same typed
//!   error. By default a sender never overruns ([`StreamConfig::backpressure`](crate::StreamConfig::backpressure)): it holds
//!   credit for the receiver's free buffer slots and bytes, waits when it has too little,
//!   and the receiver grants credit back as it consumes. Memory stays bounded and nothing
//!   is dropped, whatever the speed mismatch. A sender starts with one message of credit
//!   (a receive buffer may be that small); the receiver grants the rest of its buffer when
//!   it opens its stream.
//!
//!   A side may opt out ([`StreamConfig::overrunning`](crate::StreamConfig::overrunning), tractor's streams): then even a
//!   prompt receiver can be overrun by a fast sender, since the reader task delivers
//!   everything one socket read brought (hundreds of small messages) before the receiving
//!   task runs — unless the receiver allows overruns
//!   ([`StreamConfig::allow_overruns`](crate::StreamConfig::allow_overruns): it keeps what it cannot buffer, bounded by bytes).
//!   A larger receive buffer ([`StreamConfig::with_buffer`](crate::StreamConfig::with_buffer)) lets a sender run further ahead.
//!
//!   Credit grants travel as the reserved function `plough.credit` (a `Start` whose cid
//!   is the context's and whose argument is the pair `(messages, bytes)` freed; see
//!   [`credit`] for how both sides agree on bytes), handled by the connection before
//!   the actor sees it. No schema change was needed, grants are batched (one per half
//!   buffer or 1 MiB consumed, so their size does not matter), and an old peer that does not know
//!   them answers a harmless `NoSuchFunction` instead of failing to decode a new variant.
//! * **A cancel that masks a failure.** A cancelled child is given a grace period to
//!   finish its own cleanup; a real error it raises meanwhile is what the parent gets.
//! * **Ambiguity about who cancelled.** The parent that called [`Context::cancel`](crate::Context::cancel) gets
//!   [`Outcome::Cancelled`](crate::Outcome::Cancelled) *returned*; any other cancel (the child itself, a third actor,
//!   `cancel_actor`) is *raised* as [`ActorError::ContextCancelled`](crate::ActorError::ContextCancelled) naming the canceller.

pub(crate) mod context;
pub(crate) mod credit;
pub(crate) mod fan_out;
#[cfg(feature = "testing")]
pub(crate) mod fault;
pub(crate) mod inbox;
pub(crate) mod introspect;
pub(crate) mod portal;
pub(crate) mod shared;
pub(crate) mod stream;
pub(crate) mod typed;
pub(crate) mod types;
pub(crate) mod wire;

#[cfg(test)]
mod tests;
