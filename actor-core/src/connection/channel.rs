//! A live, handshaken connection to one peer actor, and the calls multiplexed over it.
//!
//! One reader task routes every incoming message: a `Start` goes to the local actor to be
//! served; anything carrying the cid of a call *we* made goes to that call's mailbox. One
//! writer task coalesces: it writes every queued message, then flushes once, so a burst of
//! small messages costs one syscall, and the small stream items of one call queued
//! together leave as one frame (see the `batch` module). Its queue is bounded in messages
//! and, for large ones, in bytes ([`Budgets::outgoing_bytes`](crate::Budgets::outgoing_bytes)):
//! a peer that does not read makes our senders wait, not our memory grow.
//!
//! The common case skips the writer: a message sent while nothing is queued and the
//! writer is idle is written by its sender, straight to the socket
//! ([`Channel::write_through`]), so a call and its answer cost no task switch on either
//! side. The socket's writing end (the sink, a [`FrameWriter`] that sends large payloads
//! from their own bytes) sits under one lock that the writer holds from taking a message
//! off its queue until it has written it, so a message written through never overtakes
//! one queued before it; and a write-through goes only onto an empty sink, so what the
//! socket does not take waits in the bounded queue, not in a buffer.
//!
//! Both sides start calls on the same connection, so call ids are split by parity: the
//! side that dialed uses odd cids, the side that accepted even ones. A cid therefore
//! names one conversation unambiguously, whichever side's messages carry it.
//!
//! Functions and contexts are routed differently on purpose. A function's replies go to
//! an unbounded mailbox (a call has at most a few replies). A context's messages go to its
//! [`Conversation`], whose stream buffer is *bounded*: the reader task
//! never blocks on a slow consumer (that would stall every other conversation on the
//! connection), so a full buffer is an overrun that both sides are told about, never a
//! silent drop, and a sender that opted into backpressure waits for credit instead.
//! Credit grants travel as the reserved function `plough.credit` and are handled here,
//! before the actor sees them. What the stream buffers of all the contexts of a connection
//! hold is bounded in bytes too ([`Budgets::stream_buffers`](crate::Budgets::stream_buffers),
//! see [`BufferedBytes`]).
//!
//! A message that fails to decode (an unknown variant or enum value from a newer peer, a
//! malformed field, a decode limit hit) fails only the call it belongs to, with an error
//! of kind [`ErrorKind::BadMessage`]: the call id is read from the frame's fixed-size
//! fields ([`Frame::call_id`](plough_ipc_wire::Frame::call_id)), the local side of that
//! call (a call we made, a context of either side) gets the error in its mailbox, and when
//! the call is one the peer made (a `Start` we could not read, a message of a context it
//! opened) the peer is answered with the same error, so nobody waits forever. A message
//! that names no call is logged and skipped. Either way the next frame still arrives. A
//! framing error or EOF ends the connection: every call in flight sees its mailbox close
//! and reports `TransportClosed`.
//!
//! A frame must arrive within [`Budgets::frame_read`](crate::Budgets::frame_read) of its
//! first byte: the codec's [`PartialFrameClock`] says when the partial frame in the read
//! buffer started, and the reader drops a peer whose frame is overdue with a logged reason
//! (`frame read deadline`), whatever its calls are doing. The timer is checked only after
//! the stream has read all it can, so a frame whose bytes wait in the socket is never
//! taken for stalled.
//!
//! The calls a peer has us serve at once are capped
//! ([`Budgets::max_calls_in_flight`](crate::Budgets::max_calls_in_flight)): a call is in
//! flight from its `Start` until its final answer (`Return`, `Error` or `CancelAck` for its
//! cid, as the serving layer sends it; not a stream-overrun `Error`, which is told
//! mid-stream) is queued, and a `Start` over the cap is answered at once with an
//! [`ErrorKind::TooManyCalls`] error instead of being served. The runtime's cancels
//! (`plough.cancel_actor`, `plough.cancel_call`) are neither counted nor refused: they are
//! answered at once, and must reach an actor most of all when it is saturated. Such answers, like the
//! `BadMessage` ones, are queued by the reader task itself, waiting when the writer's queue
//! is full: a peer that floods us without reading our answers stalls its own connection,
//! and costs no memory beyond the queue.

use super::batch::{BATCH_ITEM_BYTES, Batcher};
use super::lend::{self, Lender, Lending};
use super::mailbox::{Mailbox, Post, mailbox};
use super::{BufferedBytes, Conversation, Credit, Serve};
use crate::base::budgets::Budgets;
use crate::base::error::{ActorError, During, RemoteActorError};
use crate::base::fate::Fate;
use crate::base::names::{CANCEL_ACTOR, CANCEL_CALL, CREDIT, SHM_OPENED};
use crate::base::sync::{LockExt, cancelled};
use foldhash::{HashMap, HashMapExt};
use futures::{SinkExt, StreamExt};
use plough_ipc_wire::handshake::Established;
use plough_ipc_wire::msg::{Aid, Cid, ErrorKind, Msg};
use plough_ipc_wire::transport::WriteHalf;
use plough_ipc_wire::{FrameError, FrameWriter, MsgError, PartialFrameClock};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::codec::{Framed, FramedParts};
use tokio_util::sync::CancellationToken;

/// A connection to one peer actor. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Channel {
    inner: Arc<Inner>,
}

struct Inner {
    /// Shared: every call we make on it names its peer in the task table.
    peer: Arc<Aid>,
    /// Who we are: the source of the errors this layer raises for a peer's call.
    me: Aid,
    /// Whether we dialed (our cids are odd) or accepted (even).
    dialer: bool,
    tx: mpsc::Sender<Queued>,
    /// Wakes the writer: something was queued, or a write-through left bytes unwritten.
    work: Notify,
    /// Wakes senders waiting for room in a full [`Outbox`]: the writer took a segment.
    outbox_room: Notify,
    /// The largest frame the connection carries ([`Limits::max_frame`]).
    ///
    /// [`Limits::max_frame`]: plough_ipc_wire::Limits::max_frame
    max_frame: usize,
    /// The writing end, shared by the writer task and senders that write through
    /// ([`Channel::write_through`]).
    wire: tokio::sync::Mutex<Wire>,
    /// Small stream items for the writer ([`Outbox`]).
    outbox: Mutex<Outbox>,
    /// Bytes of large messages queued for the writer ([`Budgets::outgoing_bytes`]).
    outgoing: Arc<Semaphore>,
    /// The permits of [`Inner::outgoing`] one message may take at most.
    outgoing_max: u32,
    calls: Mutex<HashMap<Cid, Route>>,
    served: Mutex<HashMap<Cid, CancellationToken>>,
    /// The peer's calls we serve and have not answered yet: cid → how many `Start`s with
    /// it are open (a well-behaved peer never reuses a cid; a count keeps a hostile or
    /// buggy one from getting calls uncounted).
    in_flight: Mutex<InFlight>,
    /// [`Budgets::max_calls_in_flight`].
    max_in_flight: usize,
    /// What the stream buffers of this connection's contexts hold in all
    /// ([`Budgets::stream_buffers`]).
    buffered: Arc<BufferedBytes>,
    next_cid: AtomicU64,
    /// Cancelled when the connection is gone (either direction).
    closed: CancellationToken,
    /// Set just before `closed` is cancelled: what the hot path reads (a token's
    /// `is_cancelled` takes a lock).
    is_closed: AtomicBool,
    /// Cancelled to ask the writer to flush and close.
    shutdown: CancellationToken,
    reason: Mutex<Option<String>>,
    /// We asked the peer to cancel itself (its exit is then expected).
    cancel_requested: AtomicBool,
    /// How the peer's process ends, when the peer is a child of ours.
    fate: OnceLock<Fate>,
    /// How long a lost connection waits for the peer's fate ([`Budgets::exit_status`]).
    exit_status: Duration,
    /// The peer died: how, and the oldest of our calls then in flight.
    death: Mutex<Option<(plough_fork_prims::ExitStatus, During)>>,
    /// Large payloads lent through shared memory, both ways.
    lender: Lender,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("peer", &self.inner.peer.to_string())
            .field("closed", &self.inner.closed.is_cancelled())
            .finish()
    }
}

/// The peer's calls we serve, counted against [`Budgets::max_calls_in_flight`].
#[derive(Default)]
struct InFlight {
    by_cid: HashMap<Cid, u32>,
    total: usize,
}

impl InFlight {
    /// Counts a new call, unless `cap` calls are open already.
    fn admit(&mut self, cid: Cid, cap: usize) -> bool {
        if self.total >= cap {
            return false;
        }
        *self.by_cid.entry(cid).or_default() += 1;
        self.total += 1;
        true
    }

    /// The call `cid` was answered (finally).
    fn finish(&mut self, cid: Cid) {
        if let std::collections::hash_map::Entry::Occupied(mut e) = self.by_cid.entry(cid) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
            self.total -= 1;
        }
    }
}

/// What the writer's queue holds.
enum Queued {
    /// A message, with the permits of [`Budgets::outgoing_bytes`] it holds until it is
    /// written (large messages only).
    Msg(Msg, Option<OwnedSemaphorePermit>),
    /// The small stream items in the [`Outbox`], in their place in the queue.
    Outbox,
}

/// The writing end of the connection: the sink and the batcher of the writer task, taken
/// by a sender that writes through while the writer is idle.
struct Wire {
    /// `None` once the writer has ended: the socket's writing half is gone with it, so the
    /// peer reads EOF even while handles of this channel live on.
    sink: Option<FrameWriter<WriteHalf>>,
    batcher: Batcher,
    /// A write-through failed to encode: the writer ends the connection with this reason.
    failed: Option<String>,
}

impl From<Msg> for Queued {
    fn from(msg: Msg) -> Self {
        Queued::Msg(msg, None)
    }
}

/// Small stream items on their way to the writer, kept out of the queue: queueing one is
/// a push under a lock the writer takes once per batch, not a trip through the channel.
///
/// The items stay in their place among the other messages. They are held in segments,
/// each with one [`Queued::Outbox`] marker in the queue (queued under the same lock as the
/// segment is opened), and the writer writes one segment per marker. An item joins the
/// last segment while it is *open*: until a message goes through the queue behind its
/// marker (which closes it), or the writer takes it. So everything queued before an item
/// is written before it, and everything queued after it (a `Stop`, a `Return`) after it.
/// While the outbox is full, [`Channel::send`] waits for the writer to take a segment
/// (a sender that cannot wait gets the item back); while no marker fits in the queue, an
/// item goes through the queue like any other message.
#[derive(Default)]
struct Outbox {
    segments: std::collections::VecDeque<Vec<Msg>>,
    /// The last segment still takes items.
    open: bool,
    /// The items in all segments.
    len: usize,
    /// Emptied segments, kept for their capacity.
    free: Vec<Vec<Msg>>,
}

/// The outbox holds at most this many items (one batch's worth, see the `batch` module).
const OUTBOX: usize = super::batch::BATCH_ITEMS;

/// A payload this large (64 KiB) or larger is charged to [`Budgets::outgoing_bytes`] while
/// its message waits for the writer; smaller ones are bounded by the length of the queue.
pub(crate) const LARGE_MESSAGE: usize = 64 << 10;

/// How many messages the writer's queue holds.
const QUEUE: usize = 256;

/// Where the messages of one conversation go.
enum Route {
    /// A function call we made (to this function): its replies.
    Call(Post, Arc<str>),
    /// A context of this function, opened by us or served by us (cids of both sides never
    /// collide).
    Conv(Arc<dyn Conversation>, Arc<str>),
}

impl Route {
    fn function(&self) -> &str {
        match self {
            Route::Call(_, f) | Route::Conv(_, f) => f,
        }
    }
}

/// The replies to one call we made; dropping it forgets the call.
#[derive(Debug)]
pub(crate) struct CallRx {
    cid: Cid,
    function: Arc<str>,
    rx: Mailbox,
    channel: Channel,
}

impl CallRx {
    pub(crate) fn cid(&self) -> Cid {
        self.cid
    }

    /// The function called.
    pub(crate) fn function(&self) -> &Arc<str> {
        &self.function
    }

    /// The next reply; once the connection is gone, `ActorDied` during this call when
    /// the peer is a child of ours that died, `TransportClosed` otherwise.
    pub(crate) async fn recv(&mut self) -> Result<Msg, ActorError> {
        match self.rx.recv().await {
            Some(m) => Ok(m),
            None => Err(self.channel.closed_error().in_call(&self.function, self.cid)),
        }
    }
}

impl Drop for CallRx {
    fn drop(&mut self) {
        self.channel.inner.calls.locked().remove(&self.cid);
    }
}

impl Channel {
    /// Starts the reader and writer tasks of an established connection. `dialer`: whether
    /// we opened the connection (odd cids) or accepted it (even cids); `me`: who we are;
    /// `budgets`: its [`Budgets::max_calls_in_flight`] caps the calls the peer has us serve.
    pub(crate) fn start(
        est: Established,
        dialer: bool,
        me: Aid,
        budgets: &Budgets,
        server: Arc<dyn Serve>,
    ) -> Channel {
        let (tx, mut rx) = mpsc::channel::<Queued>(QUEUE);
        let outgoing_max = u32::try_from(budgets.outgoing_bytes.min(Semaphore::MAX_PERMITS))
            .unwrap_or(u32::MAX)
            .max(1);
        let lender = Lender::new(&est, budgets);
        let peer = Arc::new(est.peer.clone());
        let batcher = Batcher::new(est.peer_batches);
        let clock = est.framed.codec().partial_frame_clock();
        // Reads keep the handshake's codec (its clock, its frame budget) and the bytes it
        // buffered; writes go through a `FrameWriter`, which sends large payloads from
        // their own bytes.
        let parts = est.framed.into_parts();
        let limits = *parts.codec.limits();
        let (read_half, write_half) = parts.io.into_split();
        // `from_parts`, not `FramedRead::new`: frames already in the buffer must be decoded
        // before the socket is read again (the peer may have sent all it will send).
        let mut read_parts = FramedParts::new::<Msg>(read_half, parts.codec);
        read_parts.read_buf = parts.read_buf;
        let mut stream = Framed::from_parts(read_parts);
        let sink =
            FrameWriter::with_buffer(write_half, &limits, parts.write_buf).sent_by(me.clone());
        let inner = Arc::new(Inner {
            lender,
            peer,
            me,
            dialer,
            tx,
            work: Notify::new(),
            outbox_room: Notify::new(),
            max_frame: limits.max_frame(),
            wire: tokio::sync::Mutex::new(Wire { sink: Some(sink), batcher, failed: None }),
            outbox: Mutex::new(Outbox::default()),
            outgoing: Arc::new(Semaphore::new(outgoing_max as usize)),
            outgoing_max,
            calls: Mutex::new(HashMap::new()),
            served: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(InFlight::default()),
            max_in_flight: budgets.max_calls_in_flight,
            buffered: Arc::new(BufferedBytes::new(budgets.stream_buffers)),
            next_cid: AtomicU64::new(if dialer { 1 } else { 2 }),
            closed: CancellationToken::new(),
            is_closed: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
            reason: Mutex::new(None),
            cancel_requested: AtomicBool::new(false),
            fate: OnceLock::new(),
            exit_status: budgets.exit_status,
            death: Mutex::new(None),
        });
        let channel = Channel { inner };
        let frame_read = budgets.frame_read;

        // Writer: woken when something is queued, it takes the wire (waiting for a sender
        // writing through to finish), writes everything queued and flushes once; on
        // shutdown, drains and closes. The large messages' permits are held until their
        // bytes are flushed.
        let w = channel.clone();
        tokio::spawn(async move {
            let result: Result<(), String> = async {
                let mut written = Vec::new();
                let mut items = Vec::new();
                loop {
                    tokio::select! {
                        biased;
                        () = w.inner.work.notified() => {}
                        () = w.inner.shutdown.cancelled() => break,
                        () = w.inner.closed.cancelled() => return Ok(()),
                    };
                    let mut wire = w.inner.wire.lock().await;
                    w.drain(&mut rx, &mut wire, &mut written, &mut items).await?;
                    written.clear();
                }
                let mut wire = w.inner.wire.lock().await;
                w.drain(&mut rx, &mut wire, &mut written, &mut items).await?;
                // Segments we lent die with our fds: before closing, wait for the peer to
                // open them (or for the connection to go; the caller bounds the flush).
                tokio::select! {
                    () = w.inner.lender.drained() => {}
                    () = w.inner.closed.cancelled() => {}
                }
                match wire.sink.as_mut() {
                    Some(sink) => sink.close().await.map_err(|e| e.to_string()),
                    None => Ok(()),
                }
            }
            .await;
            // However the writer ends, the writing half goes with it.
            drop(w.inner.wire.lock().await.sink.take());
            if let Err(e) = result {
                w.finish(format!("write failed: {e}")).await;
            }
        });

        // Reader: route until EOF, a framing error, or shutdown.
        let r = channel.clone();
        tokio::spawn(async move {
            let mut overdue = std::pin::pin!(tokio::time::sleep(frame_read));
            // Made once: a fresh one for every frame would join and leave the token's
            // waiters each time (and `cancelled`'s is cheap to poll again).
            let mut closed = std::pin::pin!(cancelled(&r.inner.closed));
            let reason = loop {
                let next = tokio::select! {
                    biased;
                    () = closed.as_mut() => break None,
                    n = next_within(&mut stream, &clock, frame_read, overdue.as_mut()) => n,
                };
                let answer = match next {
                    Err(late) => {
                        let reason = format!(
                            "frame read deadline: a frame started {:.1?} ago has not arrived (the limit is {frame_read:?})",
                            late
                        );
                        tracing::warn!(peer = %r.inner.peer, "dropping the connection: {reason}");
                        break Some(reason);
                    }
                    Ok(next) => next,
                };
                let answer = match answer {
                    None => break Some("peer closed the connection".to_owned()),
                    Some(Err(e @ FrameError::OverBudget { .. })) => {
                        let reason = format!("framing error: {e}");
                        tracing::warn!(peer = %r.inner.peer, "dropping the connection: {reason}");
                        break Some(reason);
                    }
                    Some(Err(e)) => break Some(format!("framing error: {e}")),
                    // The peer's own calls name it as their caller: shared, not copied.
                    Some(Ok(frame)) => match frame.decode_from(&r.inner.peer) {
                        Ok(msg) => r.borrowed(msg, &*server),
                        Err(e) => r.undecodable(frame.call_id(), &e),
                    },
                };
                // An answer of this layer's own (a refused or unreadable call): queued in
                // order, waiting for room, so a flood cannot pile answers up in memory. Not
                // counted as a call's final answer: a refused or unreadable `Start` was
                // never counted, and a context whose message was unreadable still runs
                // until its own answer.
                if let Some(answer) = answer {
                    let Some(answer) = r.write_through(answer) else { continue };
                    tokio::select! {
                        sent = r.enqueue(answer.into()) => if sent.is_err() { break None },
                        () = closed.as_mut() => break None,
                    }
                }
            };
            if let Some(reason) = reason {
                r.finish(reason).await;
            }
            server.closed(&r);
        });
        channel
    }

    /// Maps a payload lent through shared memory (see [`lend`]), tells the peer it may
    /// drop the segment, and routes the message; a refused reference fails its call.
    fn borrowed(&self, mut msg: Msg, server: &dyn Serve) -> Option<Msg> {
        let (done, refused) = match self.inner.lender.incoming(&mut msg) {
            Ok(done) => (done, None),
            Err((e, done)) => (done, Some(e)),
        };
        if let Some(ino) = done {
            self.send_detached(lend::returned_msg(vec![ino], &self.inner.me));
        }
        match refused {
            None => self.route(msg, server),
            Some(e) => {
                let reason = format!("{e}");
                self.undecodable(msg.cid(), &MsgError::Malformed { kind: Some(msg.kind()), reason })
            }
        }
    }

    /// Routes one message; returns the answer this layer sends itself, if any (a `Start`
    /// over the cap).
    fn route(&self, msg: Msg, server: &dyn Serve) -> Option<Msg> {
        if let Msg::Start(start) = msg {
            if *start.function == *SHM_OPENED {
                if let Ok(inos) = start.args.decode::<Vec<u64>>() {
                    self.inner.lender.returned(&inos);
                }
                return None;
            }
            if *start.function == *CREDIT {
                let calls = self.inner.calls.locked();
                if let (Some(Route::Conv(c, _)), Ok((messages, bytes))) =
                    (calls.get(&start.cid), start.args.decode::<(u32, u64)>())
                {
                    c.grant(Credit { messages, bytes });
                }
                return None;
            }
            let cid = start.cid;
            // Cancels are never refused (the ladder's graceful step, or a caller that gave
            // up, must reach a saturated actor) nor counted: they are answered at once.
            let control = *start.function == *CANCEL_ACTOR || *start.function == *CANCEL_CALL;
            if !control && !self.inner.in_flight.locked().admit(cid, self.inner.max_in_flight) {
                tracing::debug!(peer = %self.inner.peer, cid, cap = self.inner.max_in_flight, "refusing a call over the cap");
                let e = RemoteActorError::new(
                    self.inner.me.clone(),
                    ErrorKind::TooManyCalls,
                    format!(
                        "actor {} already serves {} calls from {}: call `{}` refused",
                        self.inner.me, self.inner.max_in_flight, self.inner.peer, start.function
                    ),
                );
                return Some(Msg::Error(Box::new(e.to_msg(Some(cid)))));
            }
            server.serve(self, *start);
            return None;
        }
        let Some(cid) = msg.cid() else {
            tracing::warn!(peer = %self.inner.peer, kind = %msg.kind(), "unexpected message without a call id");
            return None;
        };
        let calls = self.inner.calls.locked();
        match calls.get(&cid) {
            Some(Route::Call(post, _)) => post.post(msg),
            Some(Route::Conv(c, _)) => {
                let c = Arc::clone(c);
                drop(calls);
                c.deliver(msg, self);
            }
            None => {
                tracing::debug!(peer = %self.inner.peer, cid, kind = %msg.kind(), "reply for a call nobody waits for")
            }
        }
        None
    }

    /// Whether `cid` is one of the peer's (it made that call), not ours.
    fn is_peers(&self, cid: Cid) -> bool {
        // Ours are odd when we dialed, even when we accepted.
        (cid % 2 == 1) != self.inner.dialer
    }

    /// A frame that did not decode: fails the call it names (see the module docs).
    /// Returns the answer for the peer, when the call is one it made.
    fn undecodable(&self, cid: Option<Cid>, err: &MsgError) -> Option<Msg> {
        let Some(cid) = cid else {
            tracing::warn!(peer = %self.inner.peer, error = %err, "skipping a message that did not decode and names no call");
            return None;
        };
        tracing::warn!(peer = %self.inner.peer, cid, error = %err, "a message that did not decode fails its call");
        let error = RemoteActorError::new(
            self.inner.me.clone(),
            ErrorKind::BadMessage,
            format!(
                "actor {} could not read a message from {} for call {cid}: {err}",
                self.inner.me, self.inner.peer
            ),
        )
        .to_msg(Some(cid));
        let conv = {
            let calls = self.inner.calls.locked();
            match calls.get(&cid) {
                Some(Route::Call(post, _)) => {
                    // A reply to our call: the call fails here; the peer is done with it.
                    post.post(Msg::Error(Box::new(error)));
                    return None;
                }
                Some(Route::Conv(c, _)) => Some(Arc::clone(c)),
                None => None,
            }
        };
        match conv {
            // A context, ours or the peer's: both sides fail it.
            Some(c) => c.deliver(Msg::Error(Box::new(error.clone())), self),
            // Not a call of ours in flight: nobody here waits for it.
            None if !self.is_peers(cid) => {
                tracing::debug!(peer = %self.inner.peer, cid, "the unreadable message was for a call nobody waits for");
                return None;
            }
            None => {}
        }
        Some(Msg::Error(Box::new(error)))
    }

    /// Notes what we send: a final answer to a call the peer made (`Return`, `CancelAck`,
    /// an `Error` other than a stream overrun, which a context tells its peer mid-stream)
    /// ends it in flight.
    fn note_outgoing(&self, msg: &Msg) {
        let cid = match msg {
            Msg::Return { cid, .. }
            | Msg::CancelAck(plough_ipc_wire::msg::CancelAck { cid, .. }) => *cid,
            // A stream overrun is told mid-context, not as its answer.
            Msg::Error(e) if e.kind != ErrorKind::StreamOverrun => match e.cid {
                Some(cid) => cid,
                None => return,
            },
            _ => return,
        };
        // Whatever the cid's parity: a peer that numbers its calls wrongly still has them
        // leave the count when they are answered.
        self.inner.in_flight.locked().finish(cid);
    }

    /// The connection is lost: when the peer is a child of ours that we did not ask to
    /// stop, first learn how it ended (waiting at most [`Budgets::exit_status`]), so that
    /// every call in flight is told it died rather than that a connection closed.
    async fn finish(&self, reason: String) {
        // A child we asked to go (the ladder, `cancel_actor`) did not die: it was stopped.
        if let Some(fate) = self.inner.fate.get()
            && !self.is_closed()
            && !self.cancel_requested()
            && let Some(status) = fate.within(self.inner.exit_status).await
        {
            let calls = self.inner.calls.locked();
            let oldest = calls
                .iter()
                .filter(|(cid, _)| !self.is_peers(**cid))
                .min_by_key(|(cid, _)| **cid)
                .map_or(During::Idle, |(cid, r)| During::Call {
                    function: r.function().to_owned(),
                    cid: *cid,
                });
            drop(calls);
            self.inner.death.locked().get_or_insert((status, oldest));
        }
        self.mark_closed(reason);
    }

    fn mark_closed(&self, reason: String) {
        let mut r = self.inner.reason.locked();
        if r.is_none() {
            tracing::debug!(peer = %self.inner.peer, %reason, "connection closed");
            *r = Some(reason);
        }
        drop(r);
        self.inner.is_closed.store(true, Ordering::Release);
        self.inner.closed.cancel();
        // Close every call's mailbox: their `recv` reports TransportClosed.
        let calls = std::mem::take(&mut *self.inner.calls.locked());
        let err = self.closed_error();
        for (cid, route) in calls {
            if let Route::Conv(c, function) = route {
                c.transport_closed(err.clone().in_call(&function, cid));
            }
        }
        for (_, t) in self.inner.served.locked().drain() {
            t.cancel();
        }
        *self.inner.in_flight.locked() = InFlight::default();
        self.inner.lender.clear();
    }

    /// How many of the peer's calls we serve and have not answered yet.
    #[cfg(test)]
    pub(crate) fn calls_in_flight(&self) -> usize {
        self.inner.in_flight.locked().total
    }

    /// The peer's identity (from the handshake).
    pub(crate) fn peer(&self) -> &Aid {
        &self.inner.peer
    }

    /// [`Channel::peer`], shared.
    pub(crate) fn peer_shared(&self) -> &Arc<Aid> {
        &self.inner.peer
    }

    /// Whether the connection is gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.inner.is_closed.load(Ordering::Acquire)
    }

    /// Resolves when the connection is gone.
    pub(crate) async fn closed(&self) {
        self.inner.closed.cancelled().await
    }

    /// Why the connection is gone: [`ActorError::ActorDied`] when the peer is a child of
    /// ours whose process ended (during the oldest of our calls then in flight), else
    /// [`ActorError::TransportClosed`] with what is known.
    pub(crate) fn closed_error(&self) -> ActorError {
        if let Some((status, during)) = self.inner.death.locked().clone() {
            return ActorError::ActorDied {
                actor: (*self.inner.peer).clone(),
                status,
                during,
                stderr: String::new(),
            };
        }
        let detail = self.inner.reason.locked().clone().unwrap_or_default();
        ActorError::TransportClosed { peer: self.inner.peer.to_string(), detail }
    }

    /// The peer is a child of ours: `fate` says how its process ends. Set once.
    pub(crate) fn set_fate(&self, fate: Fate) {
        let _ = self.inner.fate.set(fate);
    }

    /// The part of [`Channel::send`] that never waits: a small stream item joins the
    /// outbox (`None`). Anything else, an item the outbox has no room for, or any message
    /// once the connection is gone, is given back for `send`. A stream's hot path calls
    /// this first, so an item in the common case costs no future of `send`'s size.
    pub(crate) fn try_send_item(&self, msg: Msg) -> Option<Msg> {
        if self.is_closed() || !Self::outbox_item(&msg) {
            return Some(msg);
        }
        self.to_outbox(msg)
    }

    /// Whether `msg` is a stream item small enough for the [`Outbox`].
    fn outbox_item(msg: &Msg) -> bool {
        matches!(msg, Msg::Yield { payload, .. } if payload.len() <= BATCH_ITEM_BYTES)
    }

    /// Whether the [`Outbox`] holds all the items it may.
    fn outbox_full(&self) -> bool {
        self.inner.outbox.locked().len >= OUTBOX
    }

    /// An item the outbox had no room for waits for the writer to take a segment and then
    /// joins the outbox (`None`), rather than going through the queue alone: a producer
    /// that keeps ahead of the writer would otherwise send a queue's worth of items one by
    /// one after every full outbox, each costing several times what an item in a segment
    /// costs. Given back when the outbox is not full but still refused it (no room in the
    /// queue for its marker).
    async fn room_in_outbox(&self, mut msg: Msg) -> Result<Option<Msg>, ActorError> {
        while self.outbox_full() {
            if self.is_closed() {
                return Err(self.closed_error());
            }
            let room = self.inner.outbox_room.notified();
            let mut room = std::pin::pin!(room);
            room.as_mut().enable();
            if self.outbox_full() {
                tokio::select! {
                    biased;
                    () = self.inner.closed.cancelled() => return Err(self.closed_error()),
                    () = room => {}
                }
            }
            let Some(back) = self.try_send_item(msg) else { return Ok(None) };
            msg = back;
        }
        Ok(Some(msg))
    }

    /// Queues a message for the peer. One with a large payload ([`LARGE_MESSAGE`]) first
    /// waits for room in [`Budgets::outgoing_bytes`]: for the writer to have written what
    /// is queued before it (one larger than the whole budget waits for all of it).
    pub(crate) async fn send(&self, msg: Msg) -> Result<(), ActorError> {
        if !Self::outbox_item(&msg) {
            return self.send_queued(msg).await;
        }
        // Given back (the outbox full, or the connection gone): the wait and the queued
        // path each check the connection first.
        let Some(msg) = self.try_send_item(msg) else { return Ok(()) };
        let Some(msg) = self.room_in_outbox(msg).await? else { return Ok(()) };
        // Boxed: this rare path does not grow the future of every `send`.
        Box::pin(self.send_queued(msg)).await
    }

    /// [`Channel::send`] for a message that does not go in the [`Outbox`]: through the
    /// writer's queue, or written through.
    async fn send_queued(&self, mut msg: Msg) -> Result<(), ActorError> {
        if self.is_closed() {
            return Err(self.closed_error());
        }
        // A payload that only shared memory can carry (over the frame limit) waits for
        // the peer to return lent segments when they fill the budget, as a message waits
        // for room in the queue: it is not refused for a moment's lack of room.
        while let Lending::Full { len } = self.inner.lender.outgoing(&mut msg)
            && msg.frame_len_bound() > self.inner.max_frame
        {
            tokio::select! {
                biased;
                () = self.inner.closed.cancelled() => return Err(self.closed_error()),
                () = self.inner.lender.room_for(len) => {}
            }
            // A connection that ended returned everything: it is not lent for nothing.
            if self.is_closed() {
                return Err(self.closed_error());
            }
        }
        let msg = self.fitted(msg)?;
        let len = msg.payload().map_or(0, |p| p.len());
        let bytes = if len >= LARGE_MESSAGE {
            let n = u32::try_from(len).unwrap_or(u32::MAX).min(self.inner.outgoing_max);
            let room = Arc::clone(&self.inner.outgoing).acquire_many_owned(n);
            tokio::select! {
                permit = room => Some(permit.map_err(|_| self.closed_error())?),
                () = self.inner.closed.cancelled() => return Err(self.closed_error()),
            }
        } else {
            None
        };
        self.note_outgoing(&msg);
        self.close_outbox_segment();
        let msg = match bytes {
            None => match self.write_through(msg) {
                None => return Ok(()),
                Some(msg) => msg,
            },
            Some(_) => msg,
        };
        match self.enqueue(Queued::Msg(msg, bytes)).await {
            Ok(()) => Ok(()),
            Err(_) => Err(self.lost().await),
        }
    }

    /// `msg` if its frame fits the connection's limit. One that does not cannot go (the
    /// writer could not encode it, and the connection would end): a `Return`, an answer
    /// the peer waits for, becomes an error answer of kind `PayloadEncode` for that call;
    /// anything else is refused with [`ActorError::Encode`], for the sender to handle.
    fn fitted(&self, msg: Msg) -> Result<Msg, ActorError> {
        let len = msg.frame_len_bound();
        if len <= self.inner.max_frame {
            return Ok(msg);
        }
        let detail = format!(
            "a {} message of up to {len} bytes exceeds the connection's frame limit of {} bytes \
             (a payload this large goes through shared memory to a local peer that reads \
             it; otherwise, send it in parts, e.g. as stream items)",
            msg.kind(),
            self.inner.max_frame
        );
        match msg {
            Msg::Return { cid, .. } => {
                tracing::warn!(peer = %self.inner.peer, cid, "{detail}: answering with an error");
                let e =
                    RemoteActorError::new(self.inner.me.clone(), ErrorKind::PayloadEncode, detail);
                Ok(Msg::Error(Box::new(e.to_msg(Some(cid)))))
            }
            _ => Err(ActorError::Encode { what: "a message", detail }),
        }
    }

    /// Queues for the writer, and wakes it.
    async fn enqueue(&self, q: Queued) -> Result<(), mpsc::error::SendError<Queued>> {
        self.inner.tx.send(q).await?;
        self.inner.work.notify_one();
        Ok(())
    }

    /// Writes a message straight to the socket, without the writer task, when nothing is
    /// queued before it and the writer is idle; gives it back otherwise. One attempt that
    /// never waits: what the socket does not take now stays in the sink, in order, for the
    /// writer, which is woken to write it. This is the common case of a call and its
    /// answer, which then cost no task switch on either side.
    ///
    /// Order is kept: a message written through follows everything queued before it,
    /// since it is written only when the queue is empty, under the wire's lock, which the
    /// writer holds from taking a message off the queue until it has written it.
    fn write_through(&self, msg: Msg) -> Option<Msg> {
        if !self.queue_is_empty() {
            return Some(msg);
        }
        let Ok(mut wire) = self.inner.wire.try_lock() else { return Some(msg) };
        if !self.queue_is_empty() || wire.failed.is_some() {
            return Some(msg);
        }
        // Only onto an empty sink: bytes the socket did not take yet are the writer's to
        // finish, and a peer that does not read must meet the queue's bound, not a buffer
        // that grows with every write-through.
        let Some(sink) = wire.sink.as_mut().filter(|s| s.pending() == 0) else {
            return Some(msg);
        };
        if let Err(e) = futures::Sink::start_send(std::pin::Pin::new(&mut *sink), msg) {
            wire.failed = Some(e.to_string());
            self.inner.work.notify_one();
            return None;
        }
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match futures::Sink::poll_flush(std::pin::Pin::new(sink), &mut cx) {
            std::task::Poll::Ready(Ok(())) => {}
            // The writer writes the rest (or meets the same error and ends the connection).
            _ => self.inner.work.notify_one(),
        }
        None
    }

    /// Nothing waits in the writer's queue (nor in the outbox, whose items have a marker
    /// there).
    fn queue_is_empty(&self) -> bool {
        self.inner.tx.capacity() == QUEUE
    }

    /// Puts a small stream item in the [`Outbox`]; gives it back when it must go through
    /// the queue instead (the outbox is full, or the marker finds no room in the queue).
    fn to_outbox(&self, msg: Msg) -> Option<Msg> {
        let mut o = self.inner.outbox.locked();
        if o.len >= OUTBOX {
            o.open = false;
            return Some(msg);
        }
        if !o.open {
            // The marker is queued under the lock, so a segment never lacks its marker
            // nor a marker its segment.
            match self.inner.tx.try_reserve() {
                Ok(permit) => {
                    permit.send(Queued::Outbox);
                    self.inner.work.notify_one();
                }
                Err(_) => return Some(msg),
            }
            let segment = o.free.pop().unwrap_or_default();
            o.segments.push_back(segment);
            o.open = true;
        }
        o.len += 1;
        o.segments.back_mut().expect("an open segment").push(msg);
        None
    }

    /// A message is about to go through the queue: later items must follow it.
    fn close_outbox_segment(&self) {
        self.inner.outbox.locked().open = false;
    }

    /// The writer's round, holding the wire: everything queued, then one flush.
    async fn drain(
        &self,
        rx: &mut mpsc::Receiver<Queued>,
        wire: &mut Wire,
        written: &mut Vec<Option<OwnedSemaphorePermit>>,
        spare: &mut Vec<Msg>,
    ) -> Result<(), String> {
        if let Some(e) = wire.failed.take() {
            return Err(e);
        }
        let Wire { sink: Some(sink), batcher, .. } = wire else { return Ok(()) };
        while let Ok(q) = rx.try_recv() {
            self.write(q, batcher, sink, written, spare).await?;
        }
        batcher.finish(sink).await.map_err(|e| e.to_string())?;
        sink.flush().await.map_err(|e| e.to_string())
    }

    /// The writer's step for one queued entry: the message, or the outbox's items, into
    /// the batcher. `written` keeps the large messages' permits until the flush; `spare`
    /// holds the segment being written.
    async fn write<S>(
        &self,
        q: Queued,
        batcher: &mut Batcher,
        sink: &mut S,
        written: &mut Vec<Option<OwnedSemaphorePermit>>,
        spare: &mut Vec<Msg>,
    ) -> Result<(), String>
    where
        S: futures::Sink<Msg, Error = FrameError> + Unpin,
    {
        match q {
            Queued::Msg(msg, bytes) => {
                batcher.feed(sink, msg).await.map_err(|e| e.to_string())?;
                written.push(bytes);
            }
            Queued::Outbox => {
                {
                    let mut o = self.inner.outbox.locked();
                    let segment = o.segments.pop_front().unwrap_or_default();
                    o.len -= segment.len();
                    if o.segments.is_empty() {
                        o.open = false;
                    }
                    // `spare` was emptied writing the previous segment: its capacity goes
                    // back for a later one.
                    let emptied = std::mem::replace(spare, segment);
                    if o.free.len() < 2 {
                        o.free.push(emptied);
                    }
                }
                self.inner.outbox_room.notify_waiters();
                for msg in spare.drain(..) {
                    if let Some(msg) = batcher.try_hold(msg) {
                        batcher.feed(sink, msg).await.map_err(|e| e.to_string())?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The writer is gone: why, once the connection is marked closed (a child's fate is
    /// looked up first, so wait for that, within [`Budgets::exit_status`]).
    async fn lost(&self) -> ActorError {
        let _ = tokio::time::timeout(self.inner.exit_status, self.inner.closed.cancelled()).await;
        self.closed_error()
    }

    /// Registers a new outgoing call and returns its mailbox; the caller sends the `Start`.
    pub(crate) fn open_call(&self, function: &str) -> Result<CallRx, ActorError> {
        if self.is_closed() {
            return Err(self.closed_error());
        }
        let cid = self.inner.next_cid.fetch_add(2, Ordering::Relaxed);
        let (post, rx) = mailbox();
        let function: Arc<str> = Arc::from(function);
        self.inner.calls.locked().insert(cid, Route::Call(post, Arc::clone(&function)));
        Ok(CallRx { cid, function, rx, channel: self.clone() })
    }

    /// A fresh cid for a context we open.
    pub(crate) fn next_cid(&self) -> Cid {
        self.inner.next_cid.fetch_add(2, Ordering::Relaxed)
    }

    /// Routes the messages of context `cid` of `function` (opened or served by us) to
    /// `conv`.
    pub(crate) fn register_conv(
        &self,
        cid: Cid,
        function: &str,
        conv: Arc<dyn Conversation>,
    ) -> Result<(), ActorError> {
        if self.is_closed() {
            return Err(self.closed_error().in_call(function, cid));
        }
        self.inner.calls.locked().insert(cid, Route::Conv(conv, Arc::from(function)));
        Ok(())
    }

    /// The budget every context of this connection charges its buffered stream bytes to.
    pub(crate) fn buffered_bytes(&self) -> Arc<BufferedBytes> {
        Arc::clone(&self.inner.buffered)
    }

    /// Stops routing context `cid`.
    pub(crate) fn unregister_conv(&self, cid: Cid) {
        self.inner.calls.locked().remove(&cid);
    }

    /// [`Channel::send`] without waiting, as [`Channel::send_detached`] queues: its payload
    /// lent through shared memory if it is that large, then queued unless it is still a
    /// large one ([`LARGE_MESSAGE`]), which must wait for its bytes' budget: that one is
    /// given back, for `send`.
    pub(crate) fn send_without_waiting(&self, mut msg: Msg) -> Option<Msg> {
        self.inner.lender.outgoing(&mut msg);
        // A large one goes through `send`, which checks it against the frame limit;
        // `send_detached` checks the rest.
        if msg.payload().is_some_and(|p| p.len() >= LARGE_MESSAGE) {
            return Some(msg);
        }
        self.send_detached(msg);
        None
    }

    /// Queues a message without waiting (for the reader task, which must never block):
    /// at once when the writer's queue has room, else from a short-lived task.
    pub(crate) fn send_detached(&self, msg: Msg) {
        let msg = match self.fitted(msg) {
            Ok(msg) => msg,
            Err(e) => {
                tracing::warn!(peer = %self.inner.peer, "not sent: {e}");
                return;
            }
        };
        self.note_outgoing(&msg);
        self.close_outbox_segment();
        let Some(msg) = self.write_through(msg) else { return };
        match self.inner.tx.try_send(msg.into()) {
            Ok(()) => self.inner.work.notify_one(),
            Err(mpsc::error::TrySendError::Full(msg)) => {
                let ch = self.clone();
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move {
                        // Noted above already: not through `send`.
                        if !ch.is_closed() {
                            let _ = ch.enqueue(msg).await;
                        }
                    });
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Tracks a call we serve, so the peer can cancel it.
    pub(crate) fn track_served(&self, cid: Cid, token: CancellationToken) {
        self.inner.served.locked().insert(cid, token);
    }

    pub(crate) fn untrack_served(&self, cid: Cid) {
        self.inner.served.locked().remove(&cid);
    }

    /// Cancels a call we serve (the peer asked). Returns whether it was running.
    pub(crate) fn cancel_served(&self, cid: Cid) -> bool {
        match self.inner.served.locked().get(&cid) {
            Some(t) => {
                t.cancel();
                true
            }
            None => false,
        }
    }

    /// Records that we asked the peer to cancel itself.
    pub(crate) fn set_cancel_requested(&self) {
        self.inner.cancel_requested.store(true, Ordering::SeqCst);
    }

    /// Whether we asked the peer to cancel itself.
    pub(crate) fn cancel_requested(&self) -> bool {
        self.inner.cancel_requested.load(Ordering::SeqCst)
    }

    /// Flushes what is queued and closes the connection (the peer sees EOF).
    pub(crate) fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    /// Drops the connection at once, as a broken transport would: nothing queued is
    /// written, every call on it fails with `TransportClosed` naming `reason`, the peer
    /// sees EOF. (Fault injection for tests: `Portal::break_connection`.)
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub(crate) fn sever(&self, reason: &str) {
        self.mark_closed(reason.to_owned());
    }
}

/// The next item of `stream`, or `Err(elapsed)` once the partial frame `clock` times has
/// been arriving for longer than `limit`. `timer` is reused between calls. The stream is
/// polled first, so bytes already in the socket complete a frame before the timer is
/// looked at; the clock only changes while the stream is polled (the codec sets it), so
/// the timer is re-armed from it after every poll.
async fn next_within<S>(
    stream: &mut S,
    clock: &PartialFrameClock,
    limit: std::time::Duration,
    mut timer: std::pin::Pin<&mut tokio::time::Sleep>,
) -> Result<Option<Result<plough_ipc_wire::Frame, FrameError>>, std::time::Duration>
where
    S: futures::Stream<Item = Result<plough_ipc_wire::Frame, FrameError>> + Unpin,
{
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(n) = stream.poll_next_unpin(cx) {
            return std::task::Poll::Ready(Ok(n));
        }
        let Some(since) = clock.since() else { return std::task::Poll::Pending };
        let at = tokio::time::Instant::from_std(since) + limit;
        if timer.deadline() != at {
            timer.as_mut().reset(at);
        }
        match timer.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => std::task::Poll::Ready(Err(since.elapsed())),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    })
    .await
}

#[cfg(test)]
mod tests;
