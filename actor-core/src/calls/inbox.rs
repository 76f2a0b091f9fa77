//! A context's inbox: what the connection's reader task delivers a context's messages
//! into (this layer's [`Conversation`]), and the wake-ups of the tasks that wait on it.
//!
//! Delivery never blocks: a stream buffer is bounded, in messages and in bytes (its own
//! budget and its connection's), and a message that finds it full is an overrun that both
//! sides are told about, never a silent drop (see the layer doc). The bounds hold whatever
//! the sender does: one that ignores its credit is overrun like any other.

use super::credit::{GRANT_BYTES, SendCredit, admits};
use super::stream::{OVERRUN_SLOT_BYTES, STREAM_BUFFER, STREAM_BUFFER_BYTES};
use crate::base::error::{ActorError, OverrunBound, RemoteActorError};
use crate::base::sync::LockExt;
use crate::connection::{BufferedBytes, Channel, Conversation, Credit};
use plough_ipc_wire::msg::{Aid, Cid, ErrorKind, Msg};
use plough_ipc_wire::payload::Payload;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// Which end of the conversation this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// We opened it (through a portal).
    Parent,
    /// We serve it (our context function runs).
    Child,
}

/// What arrived for one context, shared with the connection's reader task.
pub(crate) struct Inbox {
    /// The buffer's bound: [`STREAM_BUFFER`] until this side opens its stream, then its
    /// [`StreamConfig::buffer`](super::stream::StreamConfig::buffer).
    pub(crate) capacity: usize,
    /// This side accepts messages beyond `capacity`, bounded by bytes only
    /// ([`StreamConfig::allow_overruns`](super::stream::StreamConfig::allow_overruns)).
    pub(crate) allow_overruns: bool,
    /// The buffer's byte budget: [`STREAM_BUFFER_BYTES`] until this side opens its stream
    /// with more.
    pub(crate) byte_capacity: usize,
    /// The child's first value (parent side), until taken.
    pub(crate) started: Option<Payload>,
    /// Stream messages not yet received, at most `capacity`, and of at most
    /// `byte_capacity` bytes but for the oversized message [`admits`] allows.
    yields: VecDeque<Payload>,
    /// The payload bytes in `yields`, all charged to the connection's budget too.
    buffered_bytes: usize,
    /// Consumed since the last credit grant; its bytes are still charged to the
    /// connection's budget, and released with the grant (one atomic operation per batch,
    /// not per message).
    consumed: Credit,
    /// The peer closed the stream (its `Stop` arrived).
    pub(crate) peer_stopped: bool,
    /// This side closed the stream: what arrives for it is dropped, `recv` is end of
    /// stream.
    pub(crate) self_closed: bool,
    /// The child's final message (parent side): `Return` or `Error`.
    pub(crate) outcome: Option<Msg>,
    /// The stream failed (an overrun, either direction); reported after the buffer.
    pub(crate) stream_error: Option<ActorError>,
    /// We dropped a message on overrun: drop the rest too (no gaps).
    pub(crate) overrun: bool,
    /// The connection is gone.
    pub(crate) closed: Option<ActorError>,
}

impl Inbox {
    /// How many messages wait in the buffer.
    pub(crate) fn buffered(&self) -> usize {
        self.yields.len()
    }

    /// How many payload bytes wait in the buffer.
    pub(crate) fn buffered_bytes(&self) -> usize {
        self.buffered_bytes
    }
}

/// The routed half of a context: what the connection's reader task delivers into.
pub(crate) struct Conv {
    /// Shared: the `Start`s it sends (credit, cancel) name it without a copy.
    pub(crate) me: Arc<Aid>,
    pub(crate) peer: Aid,
    pub(crate) cid: Cid,
    pub(crate) side: Side,
    pub(crate) inbox: Mutex<Inbox>,
    pub(crate) notify: Notify,
    /// How many tasks wait on `notify`: delivery skips the notification (a lock) when
    /// nobody waits, which is the common case of a busy stream.
    pub(crate) waiters: AtomicUsize,
    /// Our credit for sending in backpressure mode; closed when the conversation ends.
    pub(crate) credit: SendCredit,
    /// What the stream buffers of the connection hold in all.
    connection_bytes: Arc<BufferedBytes>,
}

impl Conv {
    pub(crate) fn new(
        me: Arc<Aid>,
        peer: Aid,
        cid: Cid,
        side: Side,
        connection_bytes: Arc<BufferedBytes>,
    ) -> Arc<Conv> {
        Arc::new(Conv {
            me,
            peer,
            cid,
            side,
            inbox: Mutex::new(Inbox {
                capacity: STREAM_BUFFER,
                allow_overruns: false,
                byte_capacity: STREAM_BUFFER_BYTES,
                started: None,
                yields: VecDeque::new(),
                buffered_bytes: 0,
                consumed: Credit::default(),
                peer_stopped: false,
                self_closed: false,
                outcome: None,
                stream_error: None,
                overrun: false,
                closed: None,
            }),
            notify: Notify::new(),
            waiters: AtomicUsize::new(0),
            credit: SendCredit::new(),
            connection_bytes,
        })
    }

    /// Takes the next buffered message, and the credit to grant back if a batch is due
    /// (half the message buffer, or [`GRANT_BYTES`], consumed since the last grant).
    pub(crate) fn pop(&self, ib: &mut Inbox) -> Option<(Payload, Option<Credit>)> {
        let p = ib.yields.pop_front()?;
        ib.buffered_bytes -= p.len();
        ib.consumed.messages += 1;
        ib.consumed.bytes += p.len() as u64;
        let due = ib.consumed.messages as usize >= (ib.capacity / 2).max(1)
            || ib.consumed.bytes >= GRANT_BYTES as u64;
        if !due {
            return Some((p, None));
        }
        let grant = std::mem::take(&mut ib.consumed);
        self.connection_bytes.release(grant.bytes as usize);
        Some((p, Some(grant)))
    }

    /// Discards every buffered message; returns how many, and the credit to grant back
    /// (everything consumed and not granted yet).
    pub(crate) fn discard(&self, ib: &mut Inbox) -> (usize, Credit) {
        let n = ib.yields.len();
        let bytes = std::mem::take(&mut ib.buffered_bytes);
        ib.yields.clear();
        let mut credit = std::mem::take(&mut ib.consumed);
        self.connection_bytes.release(bytes + credit.bytes as usize);
        credit.messages = credit.messages.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        credit.bytes += bytes as u64;
        (n, credit)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.locked()
    }

    /// Wakes the waiters. A waiter registers (and counts itself) *before* it looks at the
    /// inbox under its lock, and we count them *after* changing the inbox under that lock,
    /// so a waiter either sees the change or is woken.
    pub(crate) fn wake(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.notify.notify_waiters();
        }
    }
}

impl Conv {
    /// Buffers a stream message, or says which bound it would break: the buffer's
    /// messages, its bytes ([`admits`]), the connection's bytes.
    fn admit(&self, ib: &mut Inbox, payload: Payload) -> Result<(), OverrunBound> {
        let len = payload.len();
        // Allowing overruns, the bytes bound the buffer, each message charged at least
        // `OVERRUN_SLOT_BYTES` in this count (so empty messages cannot pile up unbounded).
        let limit = if ib.allow_overruns {
            ib.capacity.max(ib.byte_capacity / OVERRUN_SLOT_BYTES)
        } else {
            ib.capacity
        };
        if ib.yields.len() >= limit {
            return Err(OverrunBound::Messages { limit });
        }
        if !admits(ib.buffered_bytes, ib.byte_capacity, len) {
            let (limit, buffered) = (ib.byte_capacity, ib.buffered_bytes);
            return Err(OverrunBound::Bytes { limit, buffered, arriving: len });
        }
        if let Err(buffered) = self.connection_bytes.charge(len) {
            let limit = self.connection_bytes.limit();
            return Err(OverrunBound::Connection { limit, buffered, arriving: len });
        }
        ib.buffered_bytes += len;
        ib.yields.push_back(payload);
        Ok(())
    }
}

impl Conv {
    /// Buffers one stream item, or tells both sides of the overrun it makes (and drops it
    /// and every later one). Returns whether later items are still taken.
    fn stream_item(&self, ib: &mut Inbox, payload: Payload, channel: &Channel) -> bool {
        if ib.overrun || ib.self_closed {
            return false;
        }
        let Err(bound) = self.admit(ib, payload) else { return true };
        ib.overrun = true;
        tracing::warn!(cid = self.cid, sender = %self.peer, %bound, "stream overrun: telling the sender");
        let mut e = RemoteActorError::new(
            (*self.me).clone(),
            ErrorKind::StreamOverrun,
            format!("{} sent faster than {} read: {bound}", self.peer, self.me),
        );
        e.overrun_sender = Some(self.peer.clone());
        channel.send_detached(Msg::Error(Box::new(e.to_msg(Some(self.cid)))));
        ib.stream_error = Some(ActorError::StreamOverrun {
            sender: self.peer.clone(),
            receiver: (*self.me).clone(),
            bound: Box::new(bound),
        });
        false
    }
}

impl Drop for Conv {
    fn drop(&mut self) {
        // What is still buffered leaves the connection's budget with the conversation.
        let ib = self.inbox.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        let held = std::mem::take(&mut ib.buffered_bytes) + ib.consumed.bytes as usize;
        self.connection_bytes.release(held);
    }
}

impl Conversation for Conv {
    /// The peer granted more credit.
    fn grant(&self, credit: Credit) {
        self.credit.grant(credit);
    }

    /// Delivers one message from the peer. Runs on the reader task: never blocks.
    fn deliver(&self, msg: Msg, channel: &Channel) {
        let mut ib = self.lock();
        match msg {
            Msg::Started { payload, .. } if self.side == Side::Parent => {
                ib.started = Some(payload);
            }
            Msg::Yield { payload, .. } => {
                self.stream_item(&mut ib, payload, channel);
            }
            Msg::Yields { payloads, .. } => {
                for payload in payloads {
                    if !self.stream_item(&mut ib, payload, channel) {
                        break;
                    }
                }
            }
            Msg::Stop { .. } => {
                // The stream is closed both ways: a sender waiting for credit fails now.
                ib.peer_stopped = true;
                self.credit.close();
            }
            Msg::Error(e)
                if e.kind == ErrorKind::StreamOverrun
                    && e.overrun_sender.as_ref() == Some(&self.me) =>
            {
                // The peer tells us we overran it: our stream is broken, the context not.
                let detail = match e.message.split_once(" read: ") {
                    Some((_, bound)) => bound.to_owned(),
                    None => e.message.clone(),
                };
                ib.stream_error = Some(ActorError::StreamOverrun {
                    sender: (*self.me).clone(),
                    receiver: self.peer.clone(),
                    bound: Box::new(OverrunBound::Reported { detail }),
                });
                self.credit.close();
            }
            m @ (Msg::Return { .. } | Msg::Error(_)) if self.side == Side::Parent => {
                if ib.outcome.is_none() {
                    ib.outcome = Some(m);
                }
                self.credit.close();
            }
            Msg::CancelAck(_) | Msg::StartAck(_) => return,
            other => {
                tracing::warn!(cid = self.cid, kind = %other.kind(), "unexpected message in a context");
                return;
            }
        }
        drop(ib);
        self.wake();
    }

    /// The connection is gone.
    fn transport_closed(&self, err: ActorError) {
        self.lock().closed.get_or_insert(err);
        self.credit.close();
        self.wake();
    }
}
