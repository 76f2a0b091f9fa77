//! Contexts: the long-lived conversation between two actors.
//!
//! The parent opens a context on a portal
//! ([`Portal::open_context`](crate::Portal::open_context)); the child's context
//! function calls [`Context::started`] exactly once (its value is the parent's first
//! value), may open a two-way [`MsgStream`], and returns a result that the parent collects
//! with [`Context::result`]. Either side may cancel.
//!
//! Three hazards are designed out here:
//!
//! * **A silent drop.** Every stream buffer is bounded ([`STREAM_BUFFER`] messages). The
//!   connection's reader task must never wait on one slow consumer (that would stall every
//!   other conversation on the connection), so a message that finds the buffer full is an
//!   *overrun*: the receiver keeps what it buffered, reports [`ActorError::StreamOverrun`]
//!   after it, and tells the sender, whose next `send`/`recv` fails with the same typed
//!   error. A sender that opted into backpressure ([`StreamConfig::backpressure`]) never
//!   overruns: it holds credit for the receiver's free buffer slots, waits when it has
//!   none, and the receiver grants credit back as it consumes. Memory stays bounded and
//!   nothing is dropped, whatever the speed mismatch.
//!
//!   Without backpressure even a prompt receiver can be overrun by a fast sender: the
//!   reader task delivers everything one socket read brought (hundreds of small messages)
//!   before the receiving task runs. Bulk streams should opt in; a larger receive buffer
//!   ([`StreamConfig::with_buffer`]) lets a backpressured sender run further ahead.
//!
//!   Credit grants travel as the reserved function `plough.credit` (a `Start` whose cid
//!   is the context's and whose argument is the count), handled by the connection before
//!   the actor sees it. No schema change was needed, grants are batched (one per half
//!   buffer consumed, so their size does not matter), and an old peer that does not know
//!   them answers a harmless `NoSuchFunction` instead of failing to decode a new variant.
//! * **A cancel that masks a failure.** A cancelled child is given a grace period to
//!   finish its own cleanup; a real error it raises meanwhile is what the parent gets.
//! * **Ambiguity about who cancelled.** The parent that called [`Context::cancel`] gets
//!   [`Outcome::Cancelled`] *returned*; any other cancel (the child itself, a third actor,
//!   `cancel_actor`) is *raised* as [`ActorError::ContextCancelled`] naming the canceller.

use crate::channel::{CREDIT, Channel};
use crate::error::{ActorError, RemoteActorError};
use crate::handler::Cx;
use crate::portal::remote_to_error;
use plough_ipc_wire::msg::{Aid, CallKind, Cid, Msg, MsgKind, Start};
use plough_ipc_wire::payload::Payload;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

/// How many stream messages a receiver buffers by default (and a backpressured sender
/// may have outstanding) per context and direction. A receiver may buffer more (see
/// [`StreamConfig::with_buffer`]); every sender starts with this much credit.
pub const STREAM_BUFFER: usize = 64;

/// Which end of the conversation this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// We opened it (through a portal).
    Parent,
    /// We serve it (our context function runs).
    Child,
}

/// What a context ended with, as its parent sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<R> {
    /// The child's function returned this value.
    Returned(R),
    /// This parent cancelled the context (with [`Context::cancel`]) before it returned.
    Cancelled {
        /// Who cancelled: this actor.
        canceller: Aid,
    },
}

impl<R> Outcome<R> {
    /// The returned value, if the child returned.
    pub fn returned(self) -> Option<R> {
        match self {
            Outcome::Returned(r) => Some(r),
            Outcome::Cancelled { .. } => None,
        }
    }

    /// Whether this parent cancelled the context.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Outcome::Cancelled { .. })
    }
}

/// How a side's stream behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamConfig {
    /// `send` waits for credit (the receiver's free buffer slots) instead of overrunning a
    /// slow receiver: lossless, bounded memory. Off by default (tractor's behaviour: an
    /// overrun is an error).
    pub backpressure: bool,
    /// How many messages this side buffers for receiving: at least [`STREAM_BUFFER`]
    /// (the credit every sender starts with). A larger buffer lets a backpressured sender
    /// run further ahead: more throughput for small messages, more memory.
    pub buffer: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig { backpressure: false, buffer: STREAM_BUFFER }
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
}

/// The payload types a context declares for what it sends: its first value
/// (`Started`), its stream messages (`Yield`) and its result (`Return`). A side that
/// sends a value of another type gets [`ActorError::MsgType`] *before* anything is sent,
/// naming the kind, the declared type and what it tried to send; the receiver's own
/// types are checked on receipt, when it decodes. Declare them at registration
/// ([`Registry::declare`](crate::Registry::declare)) or on a context
/// ([`Context::declare_types`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MsgTypes {
    /// The declared type of `Started`.
    pub started: Option<&'static str>,
    /// The declared type of stream messages.
    pub yields: Option<&'static str>,
    /// The declared type of the result.
    pub returns: Option<&'static str>,
}

impl MsgTypes {
    /// Nothing declared.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares the type of `Started`.
    pub fn started<T: ?Sized>(self) -> Self {
        MsgTypes { started: Some(std::any::type_name::<T>()), ..self }
    }

    /// Declares the type of stream messages.
    pub fn yields<T: ?Sized>(self) -> Self {
        MsgTypes { yields: Some(std::any::type_name::<T>()), ..self }
    }

    /// Declares the type of the result.
    pub fn returns<T: ?Sized>(self) -> Self {
        MsgTypes { returns: Some(std::any::type_name::<T>()), ..self }
    }

    /// Checks a value about to be sent as `kind` against the declaration.
    ///
    /// # Errors
    ///
    /// [`MsgTypeError`](plough_ipc_wire::MsgTypeError) naming `kind`, the declared type
    /// and a rendering of the value (with its type).
    pub fn check<T: Serialize + ?Sized>(
        &self,
        kind: MsgKind,
        value: &T,
    ) -> Result<(), plough_ipc_wire::MsgTypeError> {
        let declared = match kind {
            MsgKind::Started => self.started,
            MsgKind::Yield => self.yields,
            MsgKind::Return => self.returns,
            _ => None,
        };
        let sending = std::any::type_name::<T>();
        match declared {
            Some(d) if d != sending => {
                let rendering = Payload::encode(value)
                    .map(|p| plough_ipc_wire::payload::render(&p))
                    .unwrap_or_else(|e| e.to_string());
                Err(plough_ipc_wire::MsgTypeError {
                    expected: d.to_owned(),
                    kind: Some(kind),
                    arrived: format!("{rendering} ({sending})"),
                    reason: format!("declared `{d}`, sending a `{sending}`"),
                })
            }
            _ => Ok(()),
        }
    }
}

/// What arrived for one context, shared with the connection's reader task.
struct Inbox {
    /// The buffer's bound: [`STREAM_BUFFER`] until this side opens its stream with more.
    capacity: usize,
    /// The child's first value (parent side), until taken.
    started: Option<Payload>,
    /// Stream messages not yet received, at most [`STREAM_BUFFER`].
    yields: VecDeque<Payload>,
    /// Consumed since the last credit grant.
    consumed: u32,
    /// The peer closed its sending half.
    peer_stopped: bool,
    /// The child's final message (parent side): `Return` or `Error`.
    outcome: Option<Msg>,
    /// The stream failed (an overrun, either direction); reported after the buffer.
    stream_error: Option<ActorError>,
    /// We dropped a message on overrun: drop the rest too (no gaps).
    overrun: bool,
    /// The connection is gone.
    closed: Option<ActorError>,
}

/// The routed half of a context: what the connection's reader task delivers into.
pub(crate) struct Conv {
    me: Aid,
    peer: Aid,
    cid: Cid,
    side: Side,
    inbox: Mutex<Inbox>,
    notify: Notify,
    /// How many tasks wait on `notify`: delivery skips the notification (a lock) when
    /// nobody waits, which is the common case of a busy stream.
    waiters: std::sync::atomic::AtomicUsize,
    /// Our credit for sending in backpressure mode; closed when the conversation ends.
    credit: Semaphore,
}

impl Conv {
    fn new(me: Aid, peer: Aid, cid: Cid, side: Side) -> Arc<Conv> {
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
            waiters: std::sync::atomic::AtomicUsize::new(0),
            credit: Semaphore::new(STREAM_BUFFER),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The peer granted `n` more messages of credit.
    pub(crate) fn grant(&self, n: u32) {
        if !self.credit.is_closed() {
            self.credit.add_permits(n as usize);
        }
    }

    /// Delivers one message from the peer. Runs on the reader task: never blocks.
    pub(crate) fn deliver(&self, msg: Msg, channel: &Channel) {
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
                        "StreamOverrun",
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
                if e.type_name == "StreamOverrun"
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

    /// Wakes the waiters. A waiter registers (and counts itself) *before* it looks at the
    /// inbox under its lock, and we count them *after* changing the inbox under that lock,
    /// so a waiter either sees the change or is woken.
    fn wake(&self) {
        if self.waiters.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            self.notify.notify_waiters();
        }
    }

    /// The connection is gone.
    pub(crate) fn transport_closed(&self, err: ActorError) {
        self.lock().closed.get_or_insert(err);
        self.credit.close();
        self.wake();
    }
}

#[derive(Default)]
struct Flags {
    started: bool,
    stream_opened: bool,
    /// Parent: we called `cancel`.
    cancel_called: bool,
    /// Child: the function cancelled itself.
    self_cancelled: bool,
}

struct Shared {
    conv: Arc<Conv>,
    channel: Channel,
    cid: Cid,
    function: String,
    side: Side,
    /// Child: the call's token. Parent: cancelled by `cancel`.
    cancel: CancellationToken,
    /// Child: the serving call's context.
    cx: Option<Cx>,
    flags: Mutex<Flags>,
    /// What this side declared it sends.
    types: Mutex<MsgTypes>,
    /// Its entry in the task table (listed by SIGUSR1 dumps while it lives).
    task: crate::dump::TaskGuard,
}

impl Shared {
    fn flags(&self) -> MutexGuard<'_, Flags> {
        self.flags.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.channel.unregister_conv(self.cid);
        // A parent that lets go of an unfinished context cancels it: the child must not
        // stream into the void.
        if self.side == Side::Parent
            && self.conv.lock().outcome.is_none()
            && !self.channel.is_closed()
        {
            self.channel.send_detached(crate::portal::cancel_call_msg(self.cid, &self.conv.me));
        }
    }
}

/// One side of a context. Cheap to clone; the parent's context is cancelled when its last
/// clone (and its stream) is dropped before the child finished.
#[derive(Clone)]
pub struct Context {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("function", &self.shared.function)
            .field("cid", &self.shared.cid)
            .field("side", &self.shared.side)
            .field("peer", &self.shared.conv.peer.to_string())
            .finish()
    }
}

fn misuse(msg: impl Into<String>) -> ActorError {
    ActorError::Runtime(msg.into())
}

fn type_error(e: plough_ipc_wire::MsgTypeError, kind: MsgKind) -> ActorError {
    let mut e = e;
    e.kind = Some(kind);
    ActorError::MsgType(e)
}

impl Context {
    /// Opens context `function(args)` on `channel` (the parent side); returns it and the
    /// child's first value.
    pub(crate) async fn open<F: DeserializeOwned>(
        channel: &Channel,
        me: &Aid,
        function: &str,
        args: Payload,
        kind: CallKind,
    ) -> Result<(Context, F), ActorError> {
        if channel.peer() == me {
            return Err(misuse(format!(
                "cannot open context `{function}` with yourself ({me}): a context needs two actors"
            )));
        }
        let cid = channel.next_cid();
        let conv = Conv::new(me.clone(), channel.peer().clone(), cid, Side::Parent);
        channel.register_conv(cid, Arc::clone(&conv))?;
        let ctx = Context {
            shared: Arc::new(Shared {
                conv,
                channel: channel.clone(),
                cid,
                function: function.to_owned(),
                side: Side::Parent,
                cancel: CancellationToken::new(),
                cx: None,
                flags: Mutex::new(Flags { started: true, ..Flags::default() }),
                types: Mutex::new(MsgTypes::default()),
                task: crate::dump::TaskGuard::new(
                    crate::dump::TaskKind::Context,
                    cid,
                    channel.peer(),
                    function,
                    "opened: waiting for started",
                ),
            }),
        };
        let start = Start { cid, function: function.to_owned(), args, caller: me.clone(), kind };
        channel.send(Msg::Start(start)).await?;
        // Wait for `Started` (or the child's early end).
        let first = ctx
            .wait(|ib| {
                if let Some(p) = ib.started.take() {
                    return Some(Ok(p));
                }
                match &ib.outcome {
                    Some(Msg::Error(e)) => Some(Err(remote_to_error(e.clone().into()))),
                    Some(_) => Some(Err(misuse(format!(
                        "`{function}` returned without calling `started` (is it a context?)"
                    )))),
                    None => ib.closed.clone().map(Err),
                }
            })
            .await?;
        let first = first.decode::<F>().map_err(|e| type_error(e, MsgKind::Started))?;
        ctx.shared.task.set_state("started");
        Ok((ctx, first))
    }

    /// The child side, for the actor that serves `cx`.
    pub(crate) fn serve(channel: &Channel, cx: &Cx, function: &str, types: MsgTypes) -> Context {
        let conv = Conv::new(cx.actor().clone(), channel.peer().clone(), cx.cid(), Side::Child);
        // A closed channel is seen by the first stream operation.
        let _ = channel.register_conv(cx.cid(), Arc::clone(&conv));
        Context {
            shared: Arc::new(Shared {
                conv,
                channel: channel.clone(),
                cid: cx.cid(),
                function: function.to_owned(),
                side: Side::Child,
                cancel: cx.cancel_token(),
                cx: Some(cx.clone()),
                flags: Mutex::new(Flags::default()),
                types: Mutex::new(types),
                task: crate::dump::TaskGuard::new(
                    crate::dump::TaskKind::Context,
                    cx.cid(),
                    channel.peer(),
                    function,
                    "serving: before started",
                ),
            }),
        }
    }

    /// Waits until `ready` returns something. Child side: a cancel ends the wait with
    /// `ContextCancelled`.
    async fn wait<T>(
        &self,
        mut ready: impl FnMut(&mut Inbox) -> Option<Result<T, ActorError>>,
    ) -> Result<T, ActorError> {
        let conv = &self.shared.conv;
        // Fast path: something is there already (a busy stream), no registration.
        if let Some(r) = ready(&mut conv.lock()) {
            return r;
        }
        struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        conv.waiters.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _waiting = Waiting(&conv.waiters);
        loop {
            let notified = conv.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(r) = ready(&mut conv.lock()) {
                return r;
            }
            if self.shared.side == Side::Child {
                tokio::select! {
                    () = notified => {}
                    () = self.shared.cancel.cancelled() => return Err(self.cancelled_error()),
                }
            } else {
                notified.await;
            }
        }
    }

    /// The call id of this context.
    pub fn cid(&self) -> Cid {
        self.shared.cid
    }

    /// The actor on the other side.
    pub fn peer(&self) -> &Aid {
        &self.shared.conv.peer
    }

    /// The function this context runs.
    pub fn function(&self) -> &str {
        &self.shared.function
    }

    /// Child side: the serving call's [`Cx`] (nurseries, the runtime); `None` in the
    /// parent.
    pub fn cx(&self) -> Option<&Cx> {
        self.shared.cx.as_ref()
    }

    /// Whether the context was cancelled (child: by anyone; parent: by us).
    pub fn is_cancelled(&self) -> bool {
        self.shared.cancel.is_cancelled()
    }

    /// Resolves when [`Context::is_cancelled`] becomes true.
    pub async fn cancelled(&self) {
        self.shared.cancel.cancelled().await
    }

    /// Who cancelled, as this side knows it.
    fn canceller(&self) -> Aid {
        let me = &self.shared.conv.me;
        match self.shared.side {
            Side::Parent => me.clone(),
            Side::Child if self.shared.flags().self_cancelled => me.clone(),
            Side::Child => self
                .shared
                .cx
                .as_ref()
                .and_then(|cx| cx.runtime_opt().and_then(|a| a.canceller()))
                .unwrap_or_else(|| self.shared.conv.peer.clone()),
        }
    }

    pub(crate) fn cancelled_error(&self) -> ActorError {
        ActorError::ContextCancelled { canceller: self.canceller() }
    }

    /// Declares the types this side sends (replacing what was declared); see [`MsgTypes`].
    pub fn declare_types(&self, types: MsgTypes) {
        *self.shared.types.lock().unwrap_or_else(|p| p.into_inner()) = types;
    }

    /// What this side declared it sends.
    pub fn declared_types(&self) -> MsgTypes {
        self.shared.types.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Checks a value about to be sent as `kind` against this side's declaration.
    pub(crate) fn check_type<T: Serialize + ?Sized>(
        &self,
        kind: MsgKind,
        value: &T,
    ) -> Result<(), ActorError> {
        self.shared
            .types
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .check(kind, value)
            .map_err(ActorError::MsgType)
    }

    /// Whether the child called `started` (for the serving task).
    pub(crate) fn was_started(&self) -> bool {
        self.shared.flags().started
    }

    /// Child side: sends the parent its first value. Call it exactly once, before opening
    /// a stream.
    ///
    /// # Errors
    ///
    /// Misuse (called twice, or in the parent) as [`ActorError::Runtime`]; a value of
    /// another type than declared ([`MsgTypes`]) as [`ActorError::MsgType`], before it is
    /// sent; a cancelled context as [`ActorError::ContextCancelled`]; a lost connection.
    pub async fn started<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), ActorError> {
        if self.shared.side == Side::Parent {
            return Err(misuse("`started` is the child's call; the parent receives the value"));
        }
        self.check_type(MsgKind::Started, value)?;
        if self.is_cancelled() {
            return Err(self.cancelled_error());
        }
        {
            let mut f = self.shared.flags();
            if f.started {
                return Err(misuse(format!(
                    "`started` called twice in context `{}`",
                    self.shared.function
                )));
            }
            f.started = true;
        }
        self.shared.task.set_state("serving: started");
        let payload = crate::actor::encode(value)?;
        self.shared.channel.send(Msg::Started { cid: self.shared.cid, payload }).await
    }

    /// Opens this side's stream, overrunning a slow peer (see [`Context::open_stream_with`]).
    ///
    /// # Errors
    ///
    /// As [`Context::open_stream_with`].
    pub async fn open_stream(&self) -> Result<MsgStream, ActorError> {
        self.open_stream_with(StreamConfig::default()).await
    }

    /// Opens this side's end of the context's (one) two-way stream.
    ///
    /// # Errors
    ///
    /// Misuse as [`ActorError::Runtime`]: before `started` (child), a second stream; a
    /// cancelled context as [`ActorError::ContextCancelled`].
    pub async fn open_stream_with(&self, config: StreamConfig) -> Result<MsgStream, ActorError> {
        if self.is_cancelled() {
            return Err(self.cancelled_error());
        }
        {
            let mut f = self.shared.flags();
            if !f.started {
                return Err(misuse(format!(
                    "open_stream before `started` in context `{}`: call `started` first",
                    self.shared.function
                )));
            }
            if f.stream_opened {
                return Err(misuse(format!(
                    "context `{}` already has its stream (one stream per context)",
                    self.shared.function
                )));
            }
            f.stream_opened = true;
        }
        self.shared.task.set_state(if config.backpressure {
            "streaming (backpressure)"
        } else {
            "streaming"
        });
        let extra = {
            let mut ib = self.shared.conv.lock();
            let extra = config.buffer.saturating_sub(ib.capacity);
            ib.capacity = ib.capacity.max(config.buffer);
            extra
        };
        if extra > 0 {
            // The sender started with STREAM_BUFFER credit: give it the rest of our room.
            let n = u32::try_from(extra).unwrap_or(u32::MAX);
            let (cid, me) = (self.shared.cid, &self.shared.conv.me);
            self.shared.channel.send(credit_msg(cid, me, n)).await?;
        }
        Ok(MsgStream {
            ctx: self.clone(),
            config,
            send_closed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Cancels the context. Parent: asks the child to cancel its function; [`Context::result`]
    /// then returns [`Outcome::Cancelled`] (unless the child had already returned or
    /// failed). Child: cancels its own function; the parent sees `ContextCancelled` raised
    /// with this child as canceller.
    ///
    /// # Errors
    ///
    /// A lost connection (the parent's request could not be sent).
    pub async fn cancel(&self) -> Result<(), ActorError> {
        match self.shared.side {
            Side::Parent => {
                {
                    let mut f = self.shared.flags();
                    if f.cancel_called {
                        return Ok(());
                    }
                    f.cancel_called = true;
                }
                self.shared.cancel.cancel();
                if self.shared.conv.lock().outcome.is_some() {
                    return Ok(());
                }
                let msg = crate::portal::cancel_call_msg(self.shared.cid, &self.shared.conv.me);
                self.shared.channel.send(msg).await
            }
            Side::Child => {
                self.shared.flags().self_cancelled = true;
                self.shared.cancel.cancel();
                Ok(())
            }
        }
    }

    /// Parent side: waits for the child's function to end and returns its result. Stream
    /// messages still unread are discarded (and credit granted back, so a backpressured
    /// child is never stuck), with a log line saying how many.
    ///
    /// # Errors
    ///
    /// The child's error (a cancel by anyone but this parent is
    /// [`ActorError::ContextCancelled`] naming the canceller); a result that does not
    /// decode as `R` is [`ActorError::MsgType`] of kind `Return`; a lost connection; called
    /// in the child, [`ActorError::Runtime`].
    pub async fn result<R: DeserializeOwned>(&self) -> Result<Outcome<R>, ActorError> {
        if self.shared.side == Side::Child {
            return Err(misuse("`result` is the parent's call; the child returns its result"));
        }
        let mut discarded = 0usize;
        let mut grant = 0u32;
        let cid = self.shared.cid;
        let channel = self.shared.channel.clone();
        let me = self.shared.conv.me.clone();
        let outcome = loop {
            let r = self
                .wait(|ib| {
                    if !ib.yields.is_empty() {
                        let n = ib.yields.len();
                        ib.yields.clear();
                        discarded += n;
                        grant += n as u32;
                        return Some(Ok(None));
                    }
                    if let Some(m) = &ib.outcome {
                        return Some(Ok(Some(m.clone())));
                    }
                    ib.closed.clone().map(Err)
                })
                .await;
            if grant > 0 {
                let _ = channel.send(credit_msg(cid, &me, grant)).await;
                grant = 0;
            }
            match r {
                Ok(Some(m)) => break Ok(m),
                Ok(None) => continue,
                Err(e) => break Err(e),
            }
        };
        if discarded > 0 {
            tracing::info!(cid, discarded, "context result: discarded unread stream messages");
        }
        let cancel_called = self.shared.flags().cancel_called;
        match outcome {
            Ok(Msg::Return { payload, .. }) => payload
                .decode::<R>()
                .map(Outcome::Returned)
                .map_err(|e| type_error(e, MsgKind::Return)),
            Ok(Msg::Error(e)) => match remote_to_error(e.into()) {
                ActorError::ContextCancelled { canceller } if cancel_called && canceller == me => {
                    Ok(Outcome::Cancelled { canceller })
                }
                other => Err(other),
            },
            Ok(other) => Err(misuse(format!("unexpected {} as a context's result", other.kind()))),
            Err(e) if self.shared.channel.cancel_requested() || cancel_called => {
                tracing::debug!(error = %e, "connection closed after a cancel");
                if cancel_called {
                    Ok(Outcome::Cancelled { canceller: me })
                } else {
                    Err(ActorError::ContextCancelled { canceller: me })
                }
            }
            Err(e) => Err(e),
        }
    }
}

fn credit_msg(cid: Cid, me: &Aid, n: u32) -> Msg {
    Msg::Start(Start {
        cid,
        function: CREDIT.to_owned(),
        args: Payload::encode(&n).expect("u32 encodes"),
        caller: me.clone(),
        kind: CallKind::Function,
    })
}

/// This side's end of a context's two-way stream.
///
/// `send` and `recv` take `&self`, so one task may send while another receives (share it
/// in an `Arc`). End of stream (`Ok(None)` from `recv`) means the peer closed its sending
/// half or its function returned; it is not an error.
pub struct MsgStream {
    ctx: Context,
    config: StreamConfig,
    send_closed: std::sync::atomic::AtomicBool,
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
        self.ctx.shared.conv.lock().yields.len()
    }

    /// How this side sends.
    pub fn config(&self) -> StreamConfig {
        self.config
    }

    /// Sends one message to the peer. With backpressure, waits for credit first.
    ///
    /// # Errors
    ///
    /// A value of another type than declared ([`MsgTypes`]) is [`ActorError::MsgType`]
    /// of kind `Yield`, before it is sent. [`ActorError::StreamOverrun`] once the peer
    /// reported that we overran it; the
    /// child's error, or a misuse error, once it has ended; [`ActorError::ContextCancelled`]
    /// after a cancel; [`ActorError::Runtime`] after [`MsgStream::close`]; a lost
    /// connection.
    pub async fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), ActorError> {
        self.ctx.check_type(MsgKind::Yield, value)?;
        self.send_payload(crate::actor::encode(value)?).await
    }

    /// [`MsgStream::send`] with an already-encoded payload.
    ///
    /// # Errors
    ///
    /// As [`MsgStream::send`].
    pub async fn send_payload(&self, payload: Payload) -> Result<(), ActorError> {
        if self.send_closed.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(misuse("send on a stream whose sending half is closed"));
        }
        self.check_send()?;
        if self.config.backpressure {
            let shared = &self.ctx.shared;
            let permit = tokio::select! {
                p = shared.conv.credit.acquire() => p,
                () = shared.cancel.cancelled() => return Err(self.ctx.cancelled_error()),
            };
            match permit {
                Ok(p) => p.forget(),
                Err(_) => {
                    self.check_send()?;
                    return Err(misuse("the stream ended while waiting for credit"));
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
                return Err(misuse(format!(
                    "send after `{}` returned: nobody reads this stream",
                    self.ctx.shared.function
                )));
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
        let mut grant = 0u32;
        let r = self
            .ctx
            .wait(|ib| {
                if let Some(p) = ib.yields.pop_front() {
                    ib.consumed += 1;
                    if ib.consumed as usize >= ib.capacity / 2 {
                        grant = std::mem::take(&mut ib.consumed);
                    }
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
        if grant > 0 {
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
        if self.send_closed.swap(true, std::sync::atomic::Ordering::Relaxed) {
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
        FanOut { hub: Arc::new(Hub { tx, stream: Mutex::new(Some(self)), pump: Mutex::new(None) }) }
    }
}

struct Hub<T> {
    /// Items; `Ok(None)` marks the end of the stream (the hub keeps a sender, so the
    /// channel itself never closes while subscribers may still join).
    tx: tokio::sync::broadcast::Sender<Result<Option<T>, ActorError>>,
    /// The stream, until the first subscriber's `recv` starts the pump.
    stream: Mutex<Option<MsgStream>>,
    pump: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl<T> Drop for Hub<T> {
    fn drop(&mut self) {
        if let Some(h) = self.pump.lock().unwrap_or_else(|p| p.into_inner()).take() {
            h.abort();
        }
    }
}

/// A stream shared by several local tasks (tractor's `MsgStream.subscribe`). The pump
/// that reads the stream starts with the first [`Subscriber::recv`] and stops when the
/// `FanOut` and every subscriber are dropped.
pub struct FanOut<T> {
    hub: Arc<Hub<T>>,
}

impl<T> std::fmt::Debug for FanOut<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanOut").field("subscribers", &self.hub.tx.receiver_count()).finish()
    }
}

impl<T: DeserializeOwned + Clone + Send + 'static> FanOut<T> {
    /// A new subscriber; it receives every message read from now on.
    pub fn subscribe(&self) -> Subscriber<T> {
        Subscriber { rx: self.hub.tx.subscribe(), hub: Arc::clone(&self.hub), done: false }
    }
}

/// One local receiver of a [`FanOut`].
pub struct Subscriber<T> {
    rx: tokio::sync::broadcast::Receiver<Result<Option<T>, ActorError>>,
    hub: Arc<Hub<T>>,
    done: bool,
}

impl<T> std::fmt::Debug for Subscriber<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber").field("done", &self.done).finish()
    }
}

impl<T: DeserializeOwned + Clone + Send + 'static> Subscriber<T> {
    /// The next message; `Ok(None)` at end of stream.
    ///
    /// # Errors
    ///
    /// [`ActorError::Lagged`] when this subscriber fell behind by more than the fan-out's
    /// capacity (it then continues with the oldest message still held); the stream's own
    /// errors, delivered to every subscriber.
    pub async fn recv(&mut self) -> Result<Option<T>, ActorError> {
        if self.done {
            return Ok(None);
        }
        self.start_pump();
        match self.rx.recv().await {
            Ok(Ok(Some(v))) => Ok(Some(v)),
            Ok(Ok(None)) => {
                self.done = true;
                Ok(None)
            }
            Ok(Err(e)) => {
                self.done = true;
                Err(e)
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                Err(ActorError::Lagged { missed })
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                self.done = true;
                Ok(None)
            }
        }
    }

    fn start_pump(&self) {
        let Some(stream) = self.hub.stream.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let tx = self.hub.tx.clone();
        let pump = tokio::spawn(async move {
            loop {
                match stream.recv::<T>().await {
                    Ok(Some(v)) => {
                        let _ = tx.send(Ok(Some(v)));
                    }
                    Ok(None) => {
                        let _ = tx.send(Ok(None));
                        break;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        break;
                    }
                }
            }
        });
        *self.hub.pump.lock().unwrap_or_else(|p| p.into_inner()) = Some(pump);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_types_reject_other_types_naming_kind_declared_and_sent() {
        let types = MsgTypes::new().started::<u32>().yields::<String>();
        assert!(types.check(MsgKind::Started, &7u32).is_ok());
        assert!(types.check(MsgKind::Return, &"anything").is_ok(), "undeclared: unchecked");
        let e = types.check(MsgKind::Yield, &5i64).unwrap_err();
        assert_eq!(e.kind, Some(MsgKind::Yield));
        assert_eq!(e.expected, "alloc::string::String");
        assert_eq!(e.arrived, "5 (i64)");
    }

    #[test]
    fn a_stream_buffer_is_never_below_the_initial_credit() {
        assert_eq!(StreamConfig::default().buffer, STREAM_BUFFER);
        assert_eq!(StreamConfig::backpressure().with_buffer(1).buffer, STREAM_BUFFER);
        assert_eq!(StreamConfig::default().with_buffer(1000).buffer, 1000);
    }
}
