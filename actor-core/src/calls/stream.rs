//! A context's two-way stream ([`MsgStream`]) and how a side's stream behaves
//! ([`StreamConfig`]): buffers bounded in messages and bytes, optional credit
//! backpressure (see [`credit`](super::credit) for how the two sides agree on bytes).
//!
//! A stream is closed as a whole, as tractor's is: after either side's
//! [`MsgStream::close`] (or the end of its side of the context) both sides' `recv` is end
//! of stream, the closer's at once, the peer's after what was sent before; a `send` then
//! fails, the closer's as a misuse, the peer's with [`ActorError::StreamClosed`] naming the
//! closer.

use super::context::Context;
use super::fan_out::FanOut;
use super::inbox::Side;
use super::wire::{credit_msg, remote_to_error, type_error};
use crate::base::error::{ActorError, Misuse, encode};
use plough_ipc_wire::msg::{Msg, MsgKind};
use plough_ipc_wire::payload::Payload;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::atomic::{AtomicBool, Ordering};

/// How many stream messages a receiver buffers by default (and a backpressured sender
/// may have outstanding) per context and direction. A receiver may buffer more or fewer,
/// down to one (see [`StreamConfig::with_buffer`]); before it opens its stream it buffers
/// this many.
///
/// 4,096: credit is granted back after half a buffer is read, so a sender of small
/// messages has the other half in hand while a grant makes its round trip; the deeper the
/// buffer, the less it waits on one. Measured in the runtime bench's `stream64` rows (64-byte
/// messages, one stream): buffer 64, 0.9–1.0 M msgs/s; 1,024, 2.4–3.2 M; 4,096, 5.6–6.4 M.
/// Memory stays bounded by [`STREAM_BUFFER_BYTES`] whatever the count (4,096 small items
/// are a few hundred KiB).
pub const STREAM_BUFFER: usize = 4096;

/// The message credit a backpressured sender starts with: one message, whatever the
/// receiver's buffer (which may be as small as one). The receiver grants the rest of its
/// buffer when it opens its stream.
pub(crate) const INITIAL_CREDIT: usize = 1;

/// A receiver that allows overruns ([`StreamConfig::allow_overruns`]) buffers at most
/// its byte budget divided by this many messages (262,144 with the default budget), so
/// that a flood of empty messages is bounded too.
pub(crate) const OVERRUN_SLOT_BYTES: usize = 64;

/// How many payload bytes a receiver buffers by default (and a backpressured sender may
/// have outstanding) per context and direction: 16 MiB. A receiver may buffer more (see
/// [`StreamConfig::with_buffer_bytes`]); every sender starts with this much byte credit.
///
/// One message larger than the room left is admitted when the buffer holds at most 1 MiB
/// (so a 60 MiB message still goes, alone), which makes the most one stream buffer holds
/// its budget, or 1 MiB plus one message. The buffers of all the contexts of a connection
/// share [`Budgets::stream_buffers`](crate::Budgets::stream_buffers) besides.
pub const STREAM_BUFFER_BYTES: usize = 16 << 20;

/// How a side's stream behaves: how it sends ([`StreamConfig::backpressure`]) and how it
/// receives ([`StreamConfig::buffer`], [`StreamConfig::buffer_bytes`],
/// [`StreamConfig::allow_overruns`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamConfig {
    /// `send` waits for credit (the receiver's free buffer slots and bytes) instead of
    /// overrunning a slow receiver: lossless, bounded memory. On by default; off
    /// ([`StreamConfig::overrunning`]) is tractor's behaviour: a sender that runs past the
    /// receiver's buffer is an overrun, a typed error on both sides.
    pub backpressure: bool,
    /// How many messages this side buffers for receiving: at least 1. A larger buffer
    /// lets a backpressured sender run further ahead: more throughput for small messages,
    /// more memory. A buffer smaller than [`STREAM_BUFFER`] counts from when this side
    /// opens its stream: what a sender that does not wait for credit sent before is kept
    /// (at most [`STREAM_BUFFER`]).
    pub buffer: usize,
    /// How many payload bytes this side buffers for receiving: at least
    /// [`STREAM_BUFFER_BYTES`] (the byte credit every sender starts with). A message that
    /// would take the buffer over it is an overrun (or, with backpressure, waits).
    pub buffer_bytes: usize,
    /// Receiver side (tractor's `allow_overruns`): a sender that does not wait for credit
    /// may run past [`StreamConfig::buffer`]; the messages are kept, bounded by
    /// [`StreamConfig::buffer_bytes`] and the connection's budget only (and by one
    /// message per 64 bytes of that budget, for empty messages). An overrun is then only
    /// a message over the bytes. Off by default. A backpressured sender never needs it.
    pub allow_overruns: bool,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            backpressure: true,
            buffer: STREAM_BUFFER,
            buffer_bytes: STREAM_BUFFER_BYTES,
            allow_overruns: false,
        }
    }
}

impl StreamConfig {
    /// Backpressure on, default buffer: the default, spelled out.
    pub fn backpressure() -> Self {
        StreamConfig { backpressure: true, ..StreamConfig::default() }
    }

    /// Backpressure off (tractor's streams): `send` never waits, and a message past the
    /// receiver's buffer is an overrun ([`ActorError::StreamOverrun`] on both sides) —
    /// unless the receiver allows overruns ([`StreamConfig::allow_overruns`]).
    pub fn overrunning() -> Self {
        StreamConfig { backpressure: false, ..StreamConfig::default() }
    }

    /// This config with a receive buffer of `n` messages (raised to 1).
    pub fn with_buffer(self, n: usize) -> Self {
        StreamConfig { buffer: n.max(1), ..self }
    }

    /// This config receiving beyond its buffer (see [`StreamConfig::allow_overruns`]).
    pub fn allowing_overruns(self) -> Self {
        StreamConfig { allow_overruns: true, ..self }
    }

    /// This config with a receive budget of `n` payload bytes (raised to
    /// [`STREAM_BUFFER_BYTES`]).
    pub fn with_buffer_bytes(self, n: usize) -> Self {
        StreamConfig { buffer_bytes: n.max(STREAM_BUFFER_BYTES), ..self }
    }
}

/// This side's end of a context's two-way stream.
///
/// `send` and `recv` take `&self`, so one task may send while another receives (share it
/// in an `Arc`). End of stream (`Ok(None)` from `recv`) means a side closed the stream or
/// the peer's function returned; it is not an error.
pub struct MsgStream {
    pub(super) ctx: Context,
    pub(super) config: StreamConfig,
    pub(super) send_closed: AtomicBool,
    /// This end's message and byte counters (taken when it opened).
    pub(super) counters: crate::base::metrics::StreamCounters,
}

impl std::fmt::Debug for MsgStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsgStream").field("ctx", &self.ctx).field("config", &self.config).finish()
    }
}

impl MsgStream {
    /// The context this stream belongs to.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// How many received messages wait in this side's buffer (at most its
    /// [`StreamConfig::buffer`]).
    pub fn buffered(&self) -> usize {
        self.ctx.shared.conv.lock().buffered()
    }

    /// How many payload bytes the received messages waiting in this side's buffer hold (at
    /// most its [`StreamConfig::buffer_bytes`], or 1 MiB and one larger message: see
    /// [`STREAM_BUFFER_BYTES`]).
    pub fn buffered_bytes(&self) -> usize {
        self.ctx.shared.conv.lock().buffered_bytes()
    }

    /// How this side sends.
    pub fn config(&self) -> StreamConfig {
        self.config
    }

    /// Sends one message to the peer. With backpressure, waits for credit first: a free
    /// slot of the receiver's buffer and room for the payload's bytes (see
    /// [`STREAM_BUFFER_BYTES`] for a message larger than the receiver's whole budget).
    ///
    /// # Errors
    ///
    /// A value of another type than declared ([`MsgTypes`](crate::MsgTypes)) is [`ActorError::MsgType`]
    /// of kind `Yield`, before it is sent. [`ActorError::StreamOverrun`] once the peer
    /// reported that we overran it; the child's error once it failed;
    /// [`ActorError::StreamClosed`] once the peer closed the stream or its function
    /// returned; [`ActorError::ContextCancelled`] after a cancel; [`ActorError::Misuse`]
    /// after this side's [`MsgStream::close`]; a lost connection.
    pub async fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), ActorError> {
        self.ctx.check_type(MsgKind::Yield, value)?;
        self.send_payload(encode(value)?).await
    }

    /// [`MsgStream::send`] with an already-encoded payload.
    ///
    /// # Errors
    ///
    /// As [`MsgStream::send`].
    pub async fn send_payload(&self, payload: Payload) -> Result<(), ActorError> {
        if self.send_closed.load(Ordering::Relaxed) {
            return Err(Misuse::SendAfterClose.into());
        }
        self.check_send()?;
        if self.config.backpressure {
            let shared = &self.ctx.shared;
            // The common case, credit in hand, takes it without setting up the wait.
            let credit = match shared.conv.credit.try_acquire(payload.len()) {
                Some(c) => c,
                None => tokio::select! {
                    c = shared.conv.credit.acquire(payload.len()) => c,
                    () = shared.cancel.cancelled() => return Err(self.ctx.cancelled_error()),
                },
            };
            match credit {
                Ok(()) => {}
                Err(_) => {
                    if self.send_closed.load(Ordering::Relaxed) {
                        return Err(Misuse::SendAfterClose.into());
                    }
                    self.check_send()?;
                    return Err(ActorError::Protocol {
                        peer: self.ctx.peer().to_string(),
                        detail: "the stream ended while waiting for credit".to_owned(),
                    });
                }
            }
        }
        let bytes = payload.len();
        let channel = &self.ctx.shared.channel;
        if let Some(msg) = channel.try_send_item(Msg::Yield { cid: self.ctx.shared.cid, payload }) {
            channel.send(msg).await?;
        }
        self.counters.sent(bytes);
        Ok(())
    }

    fn check_send(&self) -> Result<(), ActorError> {
        if self.ctx.is_cancelled() {
            return Err(self.ctx.cancelled_error());
        }
        let ib = self.ctx.shared.conv.lock();
        if let Some(e) = &ib.stream_error
            && matches!(e, ActorError::StreamOverrun { sender, .. } if *sender == *self.ctx.shared.conv.me)
        {
            return Err(e.clone());
        }
        match &ib.outcome {
            Some(Msg::Error(e)) => return Err(remote_to_error(e.clone().into())),
            Some(_) => return Err(self.closed_by_peer()),
            None => {}
        }
        if let Some(e) = &ib.closed {
            return Err(e.clone());
        }
        if ib.peer_stopped {
            return Err(self.closed_by_peer());
        }
        Ok(())
    }

    fn closed_by_peer(&self) -> ActorError {
        let function = self.ctx.shared.function.clone();
        ActorError::StreamClosed { function, by: self.ctx.peer().clone() }
    }

    /// Receives the next message; `Ok(None)` at end of stream: at once after this side's
    /// [`MsgStream::close`], after the messages sent before it when the peer closed the
    /// stream or its function returned.
    ///
    /// # Errors
    ///
    /// A message that does not decode as `T` is [`ActorError::MsgType`] of kind `Yield`
    /// (the stream stays usable); after the buffered messages, an overrun
    /// ([`ActorError::StreamOverrun`]); the child's error (parent side);
    /// [`ActorError::ContextCancelled`] after a cancel; a lost connection.
    pub async fn recv<T: DeserializeOwned>(&self) -> Result<Option<T>, ActorError> {
        match self.recv_payload().await? {
            Some(p) => p.decode::<T>().map(Some).map_err(|e| type_error(e, MsgKind::Yield)),
            None => Ok(None),
        }
    }

    /// [`MsgStream::recv`] without decoding.
    ///
    /// # Errors
    ///
    /// As [`MsgStream::recv`].
    pub async fn recv_payload(&self) -> Result<Option<Payload>, ActorError> {
        let shared = &self.ctx.shared;
        if shared.side == Side::Parent && shared.flags().cancel_called {
            return Err(self.ctx.cancelled_error());
        }
        let mut grant = None;
        let conv = &shared.conv;
        let r = self
            .ctx
            .wait(|ib| {
                if ib.self_closed {
                    return Some(Ok(None));
                }
                if let Some((p, due)) = conv.pop(ib) {
                    grant = due;
                    return Some(Ok(Some(p)));
                }
                if let Some(e) = &ib.stream_error {
                    return Some(Err(e.clone()));
                }
                if ib.peer_stopped {
                    return Some(Ok(None));
                }
                match &ib.outcome {
                    Some(Msg::Error(e)) => return Some(Err(remote_to_error(e.clone().into()))),
                    Some(_) => return Some(Ok(None)),
                    None => {}
                }
                ib.closed.clone().map(Err)
            })
            .await;
        if let Some(grant) = grant {
            // Queued without waiting, so a `recv` dropped once it has its value (in a
            // `select!`, a fan-out) never loses the grant and strands a backpressured
            // sender. Best effort: if the connection is gone, credit is moot — and the
            // value already received must still be returned.
            shared.channel.send_detached(credit_msg(shared.cid, &shared.conv.me, grant));
        }
        if let Ok(Some(p)) = &r {
            self.counters.received(p.len());
        }
        r
    }

    /// Closes the stream (tractor's `MsgStream.aclose`): this side's `recv` is end of
    /// stream at once (what was buffered is discarded), the peer's after what we sent
    /// before; this side's `send` is then a misuse, the peer's
    /// [`ActorError::StreamClosed`]. The context goes on (its result is still to come).
    /// Idempotent.
    ///
    /// # Errors
    ///
    /// A lost connection.
    pub async fn close(&self) -> Result<(), ActorError> {
        if self.send_closed.swap(true, Ordering::Relaxed) {
            return Ok(());
        }
        let shared = &self.ctx.shared;
        let (discarded, _) = {
            let mut ib = shared.conv.lock();
            ib.self_closed = true;
            shared.conv.discard(&mut ib)
        };
        // A send of ours waiting for credit fails now, as a send after the close.
        shared.conv.credit.close();
        shared.conv.wake();
        if discarded > 0 {
            tracing::debug!(
                cid = shared.cid,
                discarded,
                "stream closed: discarded unread messages"
            );
        }
        shared.channel.send(Msg::Stop { cid: shared.cid }).await
    }

    /// The stream as an async [`futures::Stream`] of decoded messages; it ends at end of
    /// stream and after the first error.
    pub fn items<T: DeserializeOwned>(
        &self,
    ) -> impl futures::Stream<Item = Result<T, ActorError>> + '_ {
        futures::stream::unfold(false, move |done| async move {
            if done {
                return None;
            }
            match self.recv::<T>().await {
                Ok(Some(v)) => Some((Ok(v), false)),
                Ok(None) => None,
                Err(e) => Some((Err(e), true)),
            }
        })
    }

    /// Fans this stream out to several local subscribers (see [`FanOut`]): each receives
    /// every message from when it subscribed; one that falls more than `capacity`
    /// messages behind the fastest gets [`ActorError::Lagged`] with how many it missed.
    /// The fan-out can still send on the stream (through [`FanOut::stream`]).
    pub fn fan_out<T>(self, capacity: usize) -> FanOut<T>
    where
        T: DeserializeOwned + Clone + Send + 'static,
    {
        FanOut::over_stream(std::sync::Arc::new(self), capacity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_buffer_may_be_as_small_as_one_message_but_its_bytes_never_below_the_default() {
        assert_eq!(StreamConfig::default().buffer, STREAM_BUFFER);
        assert_eq!(StreamConfig::backpressure().with_buffer(1).buffer, 1);
        assert_eq!(StreamConfig::backpressure().with_buffer(0).buffer, 1);
        assert_eq!(StreamConfig::default().with_buffer(1000).buffer, 1000);
        assert_eq!(StreamConfig::default().buffer_bytes, STREAM_BUFFER_BYTES);
        let small = StreamConfig::default().with_buffer_bytes(1 << 20);
        assert_eq!(small.buffer_bytes, STREAM_BUFFER_BYTES);
        assert_eq!(small.with_buffer_bytes(64 << 20).buffer_bytes, 64 << 20);
        assert!(!StreamConfig::default().allow_overruns);
        assert!(StreamConfig::default().backpressure, "lossless by default");
        assert_eq!(StreamConfig::default(), StreamConfig::backpressure());
        assert!(!StreamConfig::overrunning().backpressure);
        assert!(StreamConfig::default().allowing_overruns().allow_overruns);
    }
}
