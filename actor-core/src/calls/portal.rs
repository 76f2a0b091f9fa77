//! A portal: the caller's side of a connection to another actor.
//!
//! A portal is the connection plus who calls (the caller's identity) and how long it waits
//! for a cancel to be acknowledged; it holds no actor, so nothing here keeps the caller's
//! actor alive or reaches up into the serving layer.

use super::context::Context;
use super::stream::MsgStream;
use super::wire::{cancel_call_msg, remote_to_error, type_error};
use crate::base::dump::{TaskGuard, TaskKind};
use crate::base::error::{ActorError, RemoteActorError, encode};
use crate::base::metrics::{self, Side};
use crate::base::names::CANCEL_ACTOR;
use crate::base::trace::CallTrace;
use crate::connection::{CallRx, Channel};
use plough_ipc_wire::msg::{Aid, CallKind, Msg, MsgKind, Start, TraceContext};
use plough_ipc_wire::payload::Payload;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;

/// Talks to one other actor: run its functions, cancel it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Portal {
    channel: Channel,
    /// Who calls through this portal.
    /// Shared: each call's `Start` names it without a copy.
    me: Arc<Aid>,
    /// The default wait of [`Portal::cancel_actor`].
    ack_timeout: Duration,
    /// How long [`Context::cancel`] waits for the remote side to be done.
    settle: Duration,
}

/// Sends `plough.cancel_call` for a call abandoned mid-flight (its future was dropped).
struct CallGuard<'a> {
    channel: &'a Channel,
    cid: u64,
    me: &'a Arc<Aid>,
    done: bool,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        if !self.done && !self.channel.is_closed() {
            let ch = self.channel.clone();
            let msg = cancel_call_msg(self.cid, self.me);
            // Best effort: the connection may be gone, the runtime may be shutting down.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = ch.send(msg).await;
                });
            }
        }
    }
}

impl Portal {
    /// A portal over `channel` for caller `me`; `ack_timeout` bounds
    /// [`Portal::cancel_actor`].
    pub(crate) fn new(channel: Channel, me: Arc<Aid>, ack_timeout: Duration) -> Self {
        Portal { channel, me, ack_timeout, settle: ack_timeout }
    }

    /// Sets how long [`Context::cancel`] on a context of this portal waits for the remote
    /// side to finish (what the ladder gives an acknowledged cancel).
    pub(crate) fn settle_within(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
    }

    /// The actor on the other side.
    pub fn aid(&self) -> &Aid {
        self.channel.peer()
    }

    /// Whether the connection to the actor is gone.
    pub fn is_closed(&self) -> bool {
        self.channel.is_closed()
    }

    /// Resolves when the connection to the actor is gone (e.g. it exited).
    pub async fn closed(&self) {
        self.channel.closed().await
    }

    pub(crate) fn channel(&self) -> &Channel {
        &self.channel
    }

    async fn start(&self, function: &str, args: Payload) -> Result<CallRx, ActorError> {
        let call = self.channel.open_call(function)?;
        self.send_start(&call, args, None).await?;
        Ok(call)
    }

    async fn send_start(
        &self,
        call: &CallRx,
        args: Payload,
        trace: Option<TraceContext>,
    ) -> Result<(), ActorError> {
        let start = Start {
            cid: call.cid(),
            function: Arc::clone(call.function()),
            args,
            caller: Arc::clone(&self.me),
            kind: CallKind::Function,
            trace,
        };
        self.channel.send(Msg::Start(Box::new(start))).await
    }

    /// Runs `function(args)` in the actor and returns its result.
    ///
    /// Dropping the future mid-call asks the actor to cancel the call.
    ///
    /// # Errors
    ///
    /// The function's own error as [`ActorError::Remote`] (an unknown function is a
    /// `NoSuchFunction` remote error naming it and the actor); a result that does not
    /// decode as `R` is [`ActorError::MsgType`]; a lost connection is
    /// [`ActorError::TransportClosed`]; a cancelled call is
    /// [`ActorError::ContextCancelled`].
    pub async fn run<A, R>(&self, function: &str, args: A) -> Result<R, ActorError>
    where
        A: Serialize,
        R: DeserializeOwned,
    {
        self.run_raw(function, encode(&args)?).await
    }

    /// Runs a function registered with [`Registry::func_bytes`](crate::Registry::func_bytes):
    /// `args` go as they are, and the result comes back as the bytes the function
    /// returned, neither encoded nor decoded (no copy in user space on either side; the
    /// bytes arrive sharing the frame they came in, or the shared-memory mapping). As
    /// [`Portal::run`] otherwise: dropping the future mid-call asks the actor to cancel
    /// the call.
    ///
    /// # Errors
    ///
    /// As [`Portal::run`], but for [`ActorError::MsgType`]: nothing is decoded here.
    pub async fn run_bytes(
        &self,
        function: &str,
        args: bytes::Bytes,
    ) -> Result<bytes::Bytes, ActorError> {
        self.run_payload(function, Payload::from(args)).await.map(Payload::into_bytes)
    }

    /// [`Portal::run`] with already-encoded arguments.
    pub(crate) async fn run_raw<R: DeserializeOwned>(
        &self,
        function: &str,
        args: Payload,
    ) -> Result<R, ActorError> {
        let payload = self.run_payload(function, args).await?;
        payload.decode::<R>().map_err(|e| type_error(e, MsgKind::Return))
    }

    /// [`Portal::run_raw`] with the result left encoded.
    pub(crate) async fn run_payload(
        &self,
        function: &str,
        args: Payload,
    ) -> Result<Payload, ActorError> {
        metrics::call(function, Side::Caller, CallKind::Function);
        let out = match self.channel.open_call(function) {
            Ok(call) => {
                let trace = CallTrace::caller(function, call.cid(), CallKind::Function, self.aid());
                let span = trace.span.clone();
                tracing::Instrument::instrument(self.traced_call(call, args, trace.cx), span).await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = &out {
            metrics::call_error(function, Side::Caller, e.kind());
        }
        out
    }

    /// [`Portal::run_payload`] on an opened call, inside its span.
    async fn traced_call(
        &self,
        mut call: CallRx,
        args: Payload,
        trace: Option<TraceContext>,
    ) -> Result<Payload, ActorError> {
        self.send_start(&call, args, trace).await?;
        let mut guard =
            CallGuard { channel: &self.channel, cid: call.cid(), me: &self.me, done: false };
        let _task = TaskGuard::new(
            TaskKind::Calling,
            call.cid(),
            std::sync::Arc::clone(self.channel.peer_shared()),
            std::sync::Arc::clone(call.function()),
            "waiting for the result",
        );
        loop {
            let msg = call.recv().await;
            match msg {
                Ok(Msg::StartAck(_)) => continue,
                Ok(Msg::Return { payload, .. }) => {
                    guard.done = true;
                    return Ok(payload);
                }
                Ok(Msg::Error(e)) => {
                    guard.done = true;
                    return Err(remote_to_error(RemoteActorError::from(e)));
                }
                Ok(other) => {
                    tracing::warn!(peer = %self.aid(), kind = %other.kind(), "unexpected message in a function call");
                }
                Err(e) => {
                    guard.done = true;
                    return Err(e);
                }
            }
        }
    }

    /// Opens context `function(args)` in the actor: returns this side of the
    /// [`Context`] and the value the child passed to `started`.
    ///
    /// Dropping the context (and its stream) before the child finished cancels it.
    ///
    /// # Errors
    ///
    /// A portal to yourself is a misuse ([`ActorError::Misuse`]); the child's error
    /// before `started` (an unknown or non-context function is a remote error naming it);
    /// a first value that does not decode as `F` is [`ActorError::MsgType`] of kind
    /// `Started` (the connection stays usable); a lost connection.
    pub async fn open_context<A, F>(
        &self,
        function: &str,
        args: A,
    ) -> Result<(Context, F), ActorError>
    where
        A: Serialize,
        F: DeserializeOwned,
    {
        Context::open(
            &self.channel,
            &self.me,
            function,
            encode(&args)?,
            CallKind::Context,
            self.settle,
        )
        .await
    }

    /// Starts one-way stream function `function(args)` (registered with
    /// [`Registry::stream`](crate::Registry::stream)) and returns the stream of its values;
    /// `recv` reports end of stream when it is done, or its error.
    ///
    /// # Errors
    ///
    /// As [`Portal::open_context`].
    pub async fn open_stream_from<A: Serialize>(
        &self,
        function: &str,
        args: A,
    ) -> Result<MsgStream, ActorError> {
        let (ctx, ()) = Context::open(
            &self.channel,
            &self.me,
            function,
            encode(&args)?,
            CallKind::Stream,
            self.settle,
        )
        .await?;
        ctx.open_stream().await
    }

    /// Asks the actor to cancel itself (gracefully: it cancels its calls and nurseries and
    /// exits). Waits at most the configured acknowledgement timeout (0.5 s by default).
    ///
    /// Returns whether the actor acknowledged; `false` when it did not answer in time or
    /// the connection is already gone.
    pub async fn cancel_actor(&self) -> bool {
        self.cancel_actor_within(self.ack_timeout).await
    }

    pub(crate) async fn cancel_actor_within(&self, timeout: Duration) -> bool {
        self.channel.set_cancel_requested();
        let ask = async {
            let mut call = self.start(CANCEL_ACTOR, encode(&())?).await?;
            loop {
                if let Msg::CancelAck(ack) = call.recv().await? {
                    return Ok::<bool, ActorError>(ack.acked);
                }
            }
        };
        matches!(tokio::time::timeout(timeout, ask).await, Ok(Ok(true)))
    }
}
