//! A context's two-way stream ([`MsgStream`]) and how a side's stream behaves
//! ([`StreamConfig`]): buffers bounded in messages and bytes, optional credit
//! backpressure (see [`credit`](super::credit) for how the two sides agree on bytes).

use super::context::Context;
use super::fan_out::{FanOut, Hub};
use super::inbox::Side;
use super::wire::{credit_msg, remote_to_error, type_error};
use crate::base::error::{ActorError, Misuse, encode};
use plough_ipc_wire::msg::{Msg, MsgKind};
use plough_ipc_wire::payload::Payload;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// How many stream messages a receiver buffers by default (and a backpressured sender
/// may have outstanding) per context and direction. A receiver may buffer more (see
/// [`StreamConfig::with_buffer`]); every sender starts with this much credit.
pub const STREAM_BUFFER: usize = 64;

/// How many payload bytes a receiver buffers by default (and a backpressured sender may
/// have outstanding) per context and direction: 16 MiB. A receiver may buffer more (see
/// [`StreamConfig::with_buffer_bytes`]); every sender starts with this much byte credit.
///
/// One message larger than the room left is admitted when the buffer holds at most 1 MiB
/// (so a 60 MiB message still goes, alone), which makes the most one stream buffer holds
/// its budget, or 1 MiB plus one message. The buffers of all the contexts of a connection
/// share [`Budgets::stream_buffers`](crate::Budgets::stream_buffers) besides.
pub const STREAM_BUFFER_BYTES: usize = 16 << 20;

/// How a side's stream behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamConfig {
    /// `send` waits for credit (the receiver's free buffer slots and bytes) instead of
    /// overrunning a slow receiver: lossless, bounded memory. Off by default (tractor's
    /// behaviour: an overrun is an error).
    pub backpressure: bool,
    /// How many messages this side buffers for receiving: at least [`STREAM_BUFFER`]
    /// (the credit every sender starts with). A larger buffer lets a backpressured sender
    /// run further ahead: more throughput for small messages, more memory.
    pub buffer: usize,
    /// How many payload bytes this side buffers for receiving: at least
    /// [`STREAM_BUFFER_BYTES`] (the byte credit every sender starts with). A message that
    /// would take the buffer over it is an overrun (or, with backpressure, waits).
    pub buffer_bytes: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            backpressure: false,
            buffer: STREAM_BUFFER,
            buffer_bytes: STREAM_BUFFER_BYTES,
        }
    }
}

impl StreamConfig {
    /// Backpressure on, default buffer.
    pub fn backpressure() -> Self {
        StreamConfig { backpressure: true, ..StreamConfig::default() }
    }

    /// This config with a receive buffer of `n` messages (raised to [`STREAM_BUFFER`]).
    pub fn with_buffer(self, n: usize) -> Self {
        StreamConfig { buffer: n.max(STREAM_BUFFER), ..self }
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
/// in an `Arc`). End of stream (`Ok(None)` from `recv`) means the peer closed its sending
/// half or its function returned; it is not an error.
pub struct MsgStream {
    pub(super) ctx: Context,
    pub(super) config: StreamConfig,
    pub(super) send_closed: AtomicBool,
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
    /// reported that we overran it; the
    /// child's error, or a misuse error, once it has ended; [`ActorError::ContextCancelled`]
    /// after a cancel; [`ActorError::Misuse`] after [`MsgStream::close`]; a lost
    /// connection.
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
            let credit = tokio::select! {
                c = shared.conv.credit.acquire(payload.len()) => c,
                () = shared.cancel.cancelled() => return Err(self.ctx.cancelled_error()),
            };
            match credit {
                Ok(()) => {}
                Err(_) => {
                    self.check_send()?;
                    return Err(ActorError::Protocol {
                        peer: self.ctx.peer().to_string(),
                        detail: "the stream ended while waiting for credit".to_owned(),
                    });
                }
            }
        }
        self.ctx.shared.channel.send(Msg::Yield { cid: self.ctx.shared.cid, payload }).await
    }

    fn check_send(&self) -> Result<(), ActorError> {
        if self.ctx.is_cancelled() {
            return Err(self.ctx.cancelled_error());
        }
        let ib = self.ctx.shared.conv.lock();
        if let Some(e) = &ib.stream_error
            && matches!(e, ActorError::StreamOverrun { sender, .. } if *sender == self.ctx.shared.conv.me)
        {
            return Err(e.clone());
        }
        match &ib.outcome {
            Some(Msg::Error(e)) => return Err(remote_to_error(e.clone().into())),
            Some(_) => {
                let function = self.ctx.shared.function.clone();
                return Err(Misuse::SendAfterReturn { function }.into());
            }
            None => {}
        }
        match &ib.closed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Receives the next message; `Ok(None)` at end of stream.
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
            // Best effort: if the connection is gone, credit is moot — and the value (or
            // the peer's final error) already received must still be returned, not
            // replaced by a TransportClosed from the grant.
            let _ = shared.channel.send(credit_msg(shared.cid, &shared.conv.me, grant)).await;
        }
        r
    }

    /// Closes this side's sending half: the peer's `recv` reports end of stream. Idempotent.
    ///
    /// # Errors
    ///
    /// A lost connection.
    pub async fn close(&self) -> Result<(), ActorError> {
        if self.send_closed.swap(true, Ordering::Relaxed) {
            return Ok(());
        }
        self.ctx.shared.channel.send(Msg::Stop { cid: self.ctx.shared.cid }).await
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
    /// messages behind gets [`ActorError::Lagged`] with how many it missed.
    pub fn fan_out<T>(self, capacity: usize) -> FanOut<T>
    where
        T: DeserializeOwned + Clone + Send + 'static,
    {
        let (tx, _) = tokio::sync::broadcast::channel(capacity.max(1));
        FanOut::new(Hub { tx, stream: Mutex::new(Some(self)), pump: Mutex::new(None) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_buffer_is_never_below_the_initial_credit() {
        assert_eq!(StreamConfig::default().buffer, STREAM_BUFFER);
        assert_eq!(StreamConfig::backpressure().with_buffer(1).buffer, STREAM_BUFFER);
        assert_eq!(StreamConfig::default().with_buffer(1000).buffer, 1000);
        assert_eq!(StreamConfig::default().buffer_bytes, STREAM_BUFFER_BYTES);
        let small = StreamConfig::default().with_buffer_bytes(1 << 20);
        assert_eq!(small.buffer_bytes, STREAM_BUFFER_BYTES);
        assert_eq!(small.with_buffer_bytes(64 << 20).buffer_bytes, 64 << 20);
    }
}
