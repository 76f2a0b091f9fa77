//! A context's inbox: what the connection's reader task delivers a context's messages
//! into (this layer's [`Conversation`]), and the wake-ups of the tasks that wait on it.
//!
//! Delivery never blocks: a stream buffer is bounded, and a message that finds it full is
//! an overrun that both sides are told about, never a silent drop (see the layer doc).

use super::stream::STREAM_BUFFER;
use crate::base::error::{ActorError, RemoteActorError};
use crate::base::sync::LockExt;
use crate::connection::{Channel, Conversation};
use plough_ipc_wire::msg::{Aid, Cid, ErrorKind, Msg};
use plough_ipc_wire::payload::Payload;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{Notify, Semaphore};

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
    /// The buffer's bound: [`STREAM_BUFFER`] until this side opens its stream with more.
    pub(crate) capacity: usize,
    /// The child's first value (parent side), until taken.
    pub(crate) started: Option<Payload>,
    /// Stream messages not yet received, at most [`STREAM_BUFFER`].
    pub(crate) yields: VecDeque<Payload>,
    /// Consumed since the last credit grant.
    pub(crate) consumed: u32,
    /// The peer closed its sending half.
    pub(crate) peer_stopped: bool,
    /// The child's final message (parent side): `Return` or `Error`.
    pub(crate) outcome: Option<Msg>,
    /// The stream failed (an overrun, either direction); reported after the buffer.
    pub(crate) stream_error: Option<ActorError>,
    /// We dropped a message on overrun: drop the rest too (no gaps).
    pub(crate) overrun: bool,
    /// The connection is gone.
    pub(crate) closed: Option<ActorError>,
}

/// The routed half of a context: what the connection's reader task delivers into.
pub(crate) struct Conv {
    pub(crate) me: Aid,
    pub(crate) peer: Aid,
    pub(crate) cid: Cid,
    pub(crate) side: Side,
    pub(crate) inbox: Mutex<Inbox>,
    pub(crate) notify: Notify,
    /// How many tasks wait on `notify`: delivery skips the notification (a lock) when
    /// nobody waits, which is the common case of a busy stream.
    pub(crate) waiters: AtomicUsize,
    /// Our credit for sending in backpressure mode; closed when the conversation ends.
    pub(crate) credit: Semaphore,
}

impl Conv {
    pub(crate) fn new(me: Aid, peer: Aid, cid: Cid, side: Side) -> Arc<Conv> {
        Arc::new(Conv {
            me,
            peer,
            cid,
            side,
            inbox: Mutex::new(Inbox {
                capacity: STREAM_BUFFER,
                started: None,
                yields: VecDeque::new(),
                consumed: 0,
                peer_stopped: false,
                outcome: None,
                stream_error: None,
                overrun: false,
                closed: None,
            }),
            notify: Notify::new(),
            waiters: AtomicUsize::new(0),
            credit: Semaphore::new(STREAM_BUFFER),
        })
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

impl Conversation for Conv {
    /// The peer granted `n` more messages of credit.
    fn grant(&self, n: u32) {
        if !self.credit.is_closed() {
            self.credit.add_permits(n as usize);
        }
    }

    /// Delivers one message from the peer. Runs on the reader task: never blocks.
    fn deliver(&self, msg: Msg, channel: &Channel) {
        let mut ib = self.lock();
        match msg {
            Msg::Started { payload, .. } if self.side == Side::Parent => {
                ib.started = Some(payload);
            }
            Msg::Yield { payload, .. } => {
                if ib.overrun {
                    return;
                }
                if ib.yields.len() >= ib.capacity {
                    ib.overrun = true;
                    ib.stream_error = Some(ActorError::StreamOverrun {
                        sender: self.peer.clone(),
                        receiver: self.me.clone(),
                    });
                    tracing::warn!(cid = self.cid, sender = %self.peer, capacity = ib.capacity, "stream overrun: the buffer is full; telling the sender");
                    let mut e = RemoteActorError::new(
                        self.me.clone(),
                        ErrorKind::StreamOverrun,
                        format!("{} sent faster than {} read", self.peer, self.me),
                    );
                    e.overrun_sender = Some(self.peer.clone());
                    channel.send_detached(Msg::Error(e.to_msg(Some(self.cid))));
                } else {
                    ib.yields.push_back(payload);
                }
            }
            Msg::Stop { .. } => ib.peer_stopped = true,
            Msg::Error(e)
                if e.kind == ErrorKind::StreamOverrun
                    && e.overrun_sender.as_ref() == Some(&self.me) =>
            {
                // The peer tells us we overran it: our stream is broken, the context not.
                ib.stream_error = Some(ActorError::StreamOverrun {
                    sender: self.me.clone(),
                    receiver: self.peer.clone(),
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
