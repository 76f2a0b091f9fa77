//! [`Context`]: one side of a long-lived conversation between two actors (see the layer
//! doc), and [`Outcome`], what it ended with.

use super::inbox::{Conv, Inbox, Side};
use super::stream::{INITIAL_CREDIT, MsgStream, StreamConfig};
use super::types::MsgTypes;
use super::wire::{cancel_call_msg, credit_msg, remote_to_error, type_error};
use crate::base::dump::{TaskGuard, TaskKind};
use crate::base::error::{ActorError, Misuse, encode};
use crate::base::metrics::{self, Side as MetricSide, StreamCounters};
use crate::base::sync::LockExt;
use crate::base::trace::CallTrace;
use crate::connection::{Channel, Credit};
use plough_ipc_wire::msg::{Aid, CallKind, Cid, Msg, MsgKind, Start};
use plough_ipc_wire::payload::Payload;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::any::Any;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio_util::sync::CancellationToken;

/// What a served context knows of the call that serves it. The serving layer's call
/// context implements it, so this layer never names that type.
pub(crate) trait ServedCall: Send + Sync + 'static {
    /// The serving actor.
    fn me(&self) -> &Aid;
    /// The call id (the context's).
    fn cid(&self) -> Cid;
    /// The call's cancellation token.
    fn cancel_token(&self) -> CancellationToken;
    /// Who cancelled the serving actor, once it is cancelled.
    fn actor_canceller(&self) -> Option<Aid>;
    /// The implementor itself, for the layer that knows its type.
    fn as_any(&self) -> &dyn Any;
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

#[derive(Default)]
pub(super) struct Flags {
    pub(super) started: bool,
    pub(super) stream_opened: bool,
    /// Parent: we called `cancel`.
    pub(super) cancel_called: bool,
    /// Child: the function cancelled itself.
    pub(super) self_cancelled: bool,
}

pub(super) struct Shared {
    pub(super) conv: Arc<Conv>,
    pub(super) channel: Channel,
    pub(super) cid: Cid,
    pub(super) function: String,
    pub(super) side: Side,
    /// Child: the call's token. Parent: cancelled by `cancel`.
    pub(super) cancel: CancellationToken,
    /// Child: the serving call's context.
    pub(super) served: Option<Arc<dyn ServedCall>>,
    pub(super) flags: Mutex<Flags>,
    /// What this side declared it sends.
    pub(super) types: Mutex<MsgTypes>,
    /// Its entry in the task table (listed by SIGUSR1 dumps while it lives).
    pub(super) task: TaskGuard,
    /// Parent: how long `cancel` waits for the child's side to be done.
    pub(super) settle: std::time::Duration,
    /// Parent: the caller's span, open while the context lives (the child side runs in
    /// its served task's span).
    pub(super) _span: tracing::Span,
}

impl Shared {
    pub(super) fn flags(&self) -> MutexGuard<'_, Flags> {
        self.flags.locked()
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
            self.channel.send_detached(cancel_call_msg(self.cid, &self.conv.me));
        }
    }
}

/// One side of a context. Cheap to clone; the parent's context is cancelled when its last
/// clone (and its stream) is dropped before the child finished.
#[derive(Clone)]
pub struct Context {
    pub(super) shared: Arc<Shared>,
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

impl Context {
    /// Opens context `function(args)` on `channel` (the parent side); returns it and the
    /// child's first value.
    pub(crate) async fn open<F: DeserializeOwned>(
        channel: &Channel,
        me: &Arc<Aid>,
        function: &str,
        args: Payload,
        kind: CallKind,
        settle: std::time::Duration,
    ) -> Result<(Context, F), ActorError> {
        if channel.peer() == &**me {
            return Err(Misuse::ContextWithSelf {
                function: function.to_owned(),
                me: (**me).clone(),
            }
            .into());
        }
        metrics::call(function, MetricSide::Caller, kind);
        let cid = channel.next_cid();
        let trace = CallTrace::caller(function, cid, kind, channel.peer());
        let span = trace.span.clone();
        let open = Self::open_traced(channel, me, function, args, kind, settle, cid, trace);
        let out = tracing::Instrument::instrument(open, span).await;
        if let Err(e) = &out {
            metrics::call_error(function, MetricSide::Caller, e.kind());
        }
        out
    }

    /// [`Context::open`] with its call id and span.
    #[allow(clippy::too_many_arguments)]
    async fn open_traced<F: DeserializeOwned>(
        channel: &Channel,
        me: &Arc<Aid>,
        function: &str,
        args: Payload,
        kind: CallKind,
        settle: std::time::Duration,
        cid: Cid,
        trace: CallTrace,
    ) -> Result<(Context, F), ActorError> {
        let peer = channel.peer().clone();
        let conv = Conv::new(Arc::clone(me), peer, cid, Side::Parent, channel.buffered_bytes());
        channel.register_conv(cid, function, Arc::clone(&conv) as _)?;
        let ctx = Context {
            shared: Arc::new(Shared {
                conv,
                channel: channel.clone(),
                cid,
                function: function.to_owned(),
                side: Side::Parent,
                cancel: CancellationToken::new(),
                settle,
                served: None,
                flags: Mutex::new(Flags { started: true, ..Flags::default() }),
                types: Mutex::new(MsgTypes::default()),
                task: TaskGuard::new(
                    TaskKind::Context,
                    cid,
                    Arc::clone(channel.peer_shared()),
                    function.to_owned(),
                    "opened: waiting for started",
                ),
                _span: trace.span,
            }),
        };
        let start = Start {
            cid,
            function: function.into(),
            args,
            caller: Arc::clone(me),
            kind,
            trace: trace.cx,
        };
        channel.send(Msg::Start(Box::new(start))).await?;
        // Wait for `Started` (or the child's early end).
        let first = ctx
            .wait(|ib| {
                if let Some(p) = ib.started.take() {
                    return Some(Ok(p));
                }
                match &ib.outcome {
                    Some(Msg::Error(e)) => Some(Err(remote_to_error(e.clone().into()))),
                    Some(_) => {
                        Some(Err(Misuse::NotAContext { function: function.to_owned() }.into()))
                    }
                    None => ib.closed.clone().map(Err),
                }
            })
            .await?;
        let first = first.decode::<F>().map_err(|e| type_error(e, MsgKind::Started))?;
        ctx.shared.task.set_state("started");
        Ok((ctx, first))
    }

    /// The child side, for the actor that serves `call`.
    pub(crate) fn serve(
        channel: &Channel,
        call: Arc<dyn ServedCall>,
        function: &str,
        types: MsgTypes,
    ) -> Context {
        let cid = call.cid();
        let (me, peer) = (Arc::new(call.me().clone()), channel.peer().clone());
        let conv = Conv::new(me, peer, cid, Side::Child, channel.buffered_bytes());
        // A closed channel is seen by the first stream operation.
        let _ = channel.register_conv(cid, function, Arc::clone(&conv) as _);
        Context {
            shared: Arc::new(Shared {
                conv,
                channel: channel.clone(),
                cid,
                function: function.to_owned(),
                side: Side::Child,
                cancel: call.cancel_token(),
                settle: std::time::Duration::ZERO,
                served: Some(call),
                flags: Mutex::new(Flags::default()),
                types: Mutex::new(types),
                task: TaskGuard::new(
                    TaskKind::Context,
                    cid,
                    Arc::clone(channel.peer_shared()),
                    function.to_owned(),
                    "serving: before started",
                ),
                _span: tracing::Span::none(),
            }),
        }
    }

    /// Waits until `ready` returns something. Child side: a cancel ends the wait with
    /// `ContextCancelled`.
    pub(super) async fn wait<T>(
        &self,
        mut ready: impl FnMut(&mut Inbox) -> Option<Result<T, ActorError>>,
    ) -> Result<T, ActorError> {
        let conv = &self.shared.conv;
        // Fast path: something is there already (a busy stream), no registration.
        if let Some(r) = ready(&mut conv.lock()) {
            return r;
        }
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        conv.waiters.fetch_add(1, Ordering::SeqCst);
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

    /// Child side: the call that serves this context.
    pub(crate) fn served(&self) -> Option<&dyn ServedCall> {
        self.shared.served.as_deref()
    }

    /// Whether the context was cancelled (child: by anyone; parent: by us).
    pub fn is_cancelled(&self) -> bool {
        self.shared.cancel.is_cancelled()
    }

    /// Resolves when [`Context::is_cancelled`] becomes true.
    pub async fn cancelled(&self) {
        self.shared.cancel.cancelled().await
    }

    /// Who cancelled, as this side knows it (once it is cancelled).
    pub(super) fn canceller_here(&self) -> Aid {
        let me = &self.shared.conv.me;
        match self.shared.side {
            Side::Parent => (**me).clone(),
            Side::Child if self.shared.flags().self_cancelled => (**me).clone(),
            Side::Child => self
                .served()
                .and_then(|call| call.actor_canceller())
                .unwrap_or_else(|| self.shared.conv.peer.clone()),
        }
    }

    /// Why this side's operations stop now that it is cancelled. A served context whose
    /// connection is gone was cancelled *because* of that (the connection cancels what it
    /// serves when it closes): the lost connection is the error, not a cancel by a parent
    /// that never asked.
    pub(crate) fn cancelled_error(&self) -> ActorError {
        if self.shared.side == Side::Child
            && let Some(closed) = self.shared.conv.lock().closed.clone()
        {
            return closed;
        }
        ActorError::ContextCancelled { canceller: self.canceller_here() }
    }

    /// Declares the types this side sends (replacing what was declared); see [`MsgTypes`].
    pub fn declare_types(&self, types: MsgTypes) {
        *self.shared.types.locked() = types;
    }

    /// What this side declared it sends.
    pub fn declared_types(&self) -> MsgTypes {
        self.shared.types.locked().clone()
    }

    /// Checks a value about to be sent as `kind` against this side's declaration.
    pub(crate) fn check_type<T: Serialize + ?Sized>(
        &self,
        kind: MsgKind,
        value: &T,
    ) -> Result<(), ActorError> {
        self.shared.types.locked().check(kind, value).map_err(ActorError::MsgType)
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
    /// Misuse (called twice, or in the parent) as [`ActorError::Misuse`]; a value of
    /// another type than declared ([`MsgTypes`]) as [`ActorError::MsgType`], before it is
    /// sent; a cancelled context as [`ActorError::ContextCancelled`]; a lost connection.
    pub async fn started<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), ActorError> {
        if self.shared.side == Side::Parent {
            return Err(Misuse::WrongSide { call: "started", side: "child" }.into());
        }
        self.check_type(MsgKind::Started, value)?;
        if self.is_cancelled() {
            return Err(self.cancelled_error());
        }
        {
            let mut f = self.shared.flags();
            if f.started {
                return Err(Misuse::StartedTwice { function: self.shared.function.clone() }.into());
            }
            f.started = true;
        }
        self.shared.task.set_state("serving: started");
        let payload = encode(value)?;
        self.shared.channel.send(Msg::Started { cid: self.shared.cid, payload }).await
    }

    /// Opens this side's stream with the default [`StreamConfig`]: lossless (its sends wait
    /// for credit), a buffer of [`STREAM_BUFFER`](crate::STREAM_BUFFER) messages. See
    /// [`Context::open_stream_with`].
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
    /// Misuse as [`ActorError::Misuse`]: before `started` (child), a second stream; a
    /// cancelled context as [`ActorError::ContextCancelled`].
    pub async fn open_stream_with(&self, config: StreamConfig) -> Result<MsgStream, ActorError> {
        if self.is_cancelled() {
            return Err(self.cancelled_error());
        }
        {
            let mut f = self.shared.flags();
            if !f.started {
                let function = self.shared.function.clone();
                return Err(Misuse::StreamBeforeStarted { function }.into());
            }
            if f.stream_opened {
                return Err(Misuse::SecondStream { function: self.shared.function.clone() }.into());
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
            // The sender started with one message and the default bytes of credit.
            let messages = config.buffer.saturating_sub(INITIAL_CREDIT);
            let bytes = config.buffer_bytes.saturating_sub(ib.byte_capacity);
            ib.capacity = config.buffer.max(1);
            ib.byte_capacity = ib.byte_capacity.max(config.buffer_bytes);
            ib.allow_overruns = config.allow_overruns;
            Credit { messages: u32::try_from(messages).unwrap_or(u32::MAX), bytes: bytes as u64 }
        };
        if extra != Credit::default() {
            // Give the sender the rest of our room.
            let (cid, me) = (self.shared.cid, &self.shared.conv.me);
            self.shared.channel.send(credit_msg(cid, me, extra)).await?;
        }
        Ok(MsgStream {
            counters: StreamCounters::new(&self.shared.function),
            ctx: self.clone(),
            config,
            send_closed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Cancels the context. Parent: asks the child to cancel its function and returns once
    /// the child's side is done — its function ended (its cleanup ran, the children of its
    /// nurseries are reaped and unregistered) and its answer arrived — or the connection
    /// is gone, waiting at most the ladder's `ack_timeout + exit_timeout`;
    /// [`Context::result`] then returns [`Outcome::Cancelled`] (unless the child had
    /// already returned or failed). Child: cancels its own function; the parent sees `ContextCancelled` raised
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
                let msg = cancel_call_msg(self.shared.cid, &self.shared.conv.me);
                self.shared.channel.send(msg).await?;
                // Done when the remote side is: its final answer came (after its cleanup,
                // its nurseries' children reaped), or the connection went — within what the
                // ladder gives an acknowledged cancel.
                let settled =
                    self.wait(|ib| (ib.outcome.is_some() || ib.closed.is_some()).then_some(Ok(())));
                let _ = tokio::time::timeout(self.shared.settle, settled).await;
                Ok(())
            }
            Side::Child => {
                self.shared.flags().self_cancelled = true;
                self.shared.cancel.cancel();
                Ok(())
            }
        }
    }

    /// Why this context failed, if it did: the peer's error (not a cancel of ours), the
    /// peer's report that we overran it, a lost connection (child side: a cancel is seen
    /// by [`Context::wait`]).
    pub(super) fn failure(&self, ib: &Inbox) -> Option<ActorError> {
        let me = &self.shared.conv.me;
        if let Some(e @ ActorError::StreamOverrun { sender, .. }) = &ib.stream_error
            && sender == &**me
        {
            return Some(e.clone());
        }
        // Parent side, the token is cancelled by `cancel` alone (read without the flags'
        // lock: we hold the inbox's).
        let cancel_called = self.shared.side == Side::Parent && self.shared.cancel.is_cancelled();
        if let Some(Msg::Error(e)) = &ib.outcome {
            return match remote_to_error(e.clone().into()) {
                ActorError::ContextCancelled { canceller }
                    if cancel_called && canceller == **me =>
                {
                    None
                }
                other => Some(other),
            };
        }
        if cancel_called {
            return None;
        }
        ib.closed.clone()
    }

    /// Resolves with the error once this context fails: the peer's error (the child's,
    /// parent side: a failure relayed from anywhere below it, such as an overrun of the
    /// child's stream), our own stream overrunning the peer (as it reported), a cancel
    /// by anyone but this parent (child side: any cancel), a lost connection. A child
    /// that returns, or this parent's own cancel, is not a failure: then it never
    /// resolves. See [`Context::within`].
    pub async fn failed(&self) -> ActorError {
        match self.wait(|ib| self.failure(ib).map(Ok)).await {
            Ok(e) | Err(e) => e,
        }
    }

    /// Runs `body` with this context open (tractor's `async with open_context` block):
    /// when the context fails first ([`Context::failed`]), `body` is dropped at once and
    /// the failure returned, whatever it was waiting on.
    ///
    /// # Errors
    ///
    /// `body`'s own error, or the context's failure.
    pub async fn within<T>(
        &self,
        body: impl std::future::Future<Output = Result<T, ActorError>>,
    ) -> Result<T, ActorError> {
        tokio::select! {
            biased;
            r = body => r,
            e = self.failed() => Err(e),
        }
    }

    /// Parent side: waits for the child's function to end and returns its result. Stream
    /// messages still unread are discarded (and credit granted back, so a backpressured
    /// child is never stuck), with a log line saying how many.
    ///
    /// A stream this side never opened cannot be read, so nothing is discarded: a child
    /// that streams more than [`STREAM_BUFFER`](crate::STREAM_BUFFER) messages into it
    /// overruns it (tractor's behaviour), and one that waits for credit is given enough
    /// to run into that overrun rather than wait forever.
    ///
    /// # Errors
    ///
    /// The child's error (a cancel by anyone but this parent is
    /// [`ActorError::ContextCancelled`] naming the canceller); a result that does not
    /// decode as `R` is [`ActorError::MsgType`] of kind `Return`; a lost connection; called
    /// in the child, [`ActorError::Misuse`].
    pub async fn result<R: DeserializeOwned>(&self) -> Result<Outcome<R>, ActorError> {
        if self.shared.side == Side::Child {
            return Err(Misuse::WrongSide { call: "result", side: "parent" }.into());
        }
        let mut discarded = 0usize;
        let mut grant = Credit::default();
        let cid = self.shared.cid;
        let channel = self.shared.channel.clone();
        let me = self.shared.conv.me.clone();
        let conv = &self.shared.conv;
        let opened = self.shared.flags().stream_opened;
        let mut into_the_overrun = !opened;
        let outcome = loop {
            let r = self
                .wait(|ib| {
                    if opened && ib.buffered() > 0 {
                        let (n, credit) = conv.discard(ib);
                        discarded += n;
                        grant = credit;
                        return Some(Ok(None));
                    }
                    if into_the_overrun && ib.buffered() > 0 && ib.outcome.is_none() {
                        // The child streams into a stream we never opened: let a
                        // backpressured child send past our buffer, into the overrun.
                        into_the_overrun = false;
                        let messages = u32::try_from(ib.capacity).unwrap_or(u32::MAX);
                        grant = Credit { messages, bytes: ib.byte_capacity as u64 };
                        return Some(Ok(None));
                    }
                    if let Some(m) = &ib.outcome {
                        return Some(Ok(Some(m.clone())));
                    }
                    ib.closed.clone().map(Err)
                })
                .await;
            if grant != Credit::default() {
                let _ = channel.send(credit_msg(cid, &me, std::mem::take(&mut grant))).await;
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
        self.settle(outcome)
    }

    /// Parent side: what the child's final answer (or the lost connection) means.
    pub(super) fn settle<R: DeserializeOwned>(
        &self,
        outcome: Result<Msg, ActorError>,
    ) -> Result<Outcome<R>, ActorError> {
        let me = (*self.shared.conv.me).clone();
        let cancel_called = self.shared.flags().cancel_called;
        let result = match outcome {
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
            Ok(other) => Err(ActorError::Protocol {
                peer: self.peer().to_string(),
                detail: format!("unexpected {} as a context's result", other.kind()),
            }),
            Err(e) if self.shared.channel.cancel_requested() || cancel_called => {
                tracing::debug!(error = %e, "connection closed after a cancel");
                if cancel_called {
                    Ok(Outcome::Cancelled { canceller: me })
                } else {
                    Err(ActorError::ContextCancelled { canceller: me })
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            metrics::call_error(&self.shared.function, MetricSide::Caller, e.kind());
        }
        result
    }
}
