//! A portal: the caller's side of a connection to another actor.

use crate::actor::{Actor, encode, internal};
use crate::channel::{CallRx, Channel};
use crate::context::{Context, MsgStream};
use crate::error::{ActorError, RemoteActorError};
use plough_ipc_wire::msg::{Aid, CallKind, Msg, MsgKind, Start};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Talks to one other actor: run its functions, cancel it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Portal {
    channel: Channel,
    actor: Actor,
}

/// Sends `plough.cancel_call` for a call abandoned mid-flight (its future was dropped).
struct CallGuard<'a> {
    channel: &'a Channel,
    cid: u64,
    me: &'a Aid,
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

pub(crate) fn cancel_call_msg(target: u64, me: &Aid) -> Msg {
    // The cancel request itself gets an odd/even cid of its own only if someone waits for
    // its ack; nobody does here, so it reuses the target's cid space with a marker of 0.
    Msg::Start(Start {
        cid: 0,
        function: internal::CANCEL_CALL.to_owned(),
        args: plough_ipc_wire::payload::Payload::encode(&target).expect("u64 encodes"),
        caller: me.clone(),
        kind: CallKind::Function,
    })
}

impl Portal {
    pub(crate) fn new(channel: Channel, actor: Actor) -> Self {
        Portal { channel, actor }
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

    async fn start(
        &self,
        function: &str,
        args: plough_ipc_wire::payload::Payload,
    ) -> Result<CallRx, ActorError> {
        let call = self.channel.open_call()?;
        let start = Start {
            cid: call.cid(),
            function: function.to_owned(),
            args,
            caller: self.actor.aid().clone(),
            kind: CallKind::Function,
        };
        self.channel.send(Msg::Start(start)).await?;
        Ok(call)
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

    /// [`Portal::run`] with already-encoded arguments.
    pub(crate) async fn run_raw<R: DeserializeOwned>(
        &self,
        function: &str,
        args: plough_ipc_wire::payload::Payload,
    ) -> Result<R, ActorError> {
        let mut call = self.start(function, args).await?;
        let me = self.actor.aid().clone();
        let mut guard = CallGuard { channel: &self.channel, cid: call.cid(), me: &me, done: false };
        let _task = crate::dump::TaskGuard::new(
            crate::dump::TaskKind::Calling,
            call.cid(),
            self.aid(),
            function,
            "waiting for the result",
        );
        loop {
            let msg = call.recv().await;
            match msg {
                Ok(Msg::StartAck(_)) => continue,
                Ok(Msg::Return { payload, .. }) => {
                    guard.done = true;
                    return payload.decode::<R>().map_err(|mut e| {
                        e.kind = Some(MsgKind::Return);
                        ActorError::MsgType(e)
                    });
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
    /// A portal to yourself is a misuse ([`ActorError::Runtime`]); the child's error
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
        Context::open(&self.channel, self.actor.aid(), function, encode(&args)?, CallKind::Context)
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
            self.actor.aid(),
            function,
            encode(&args)?,
            CallKind::Stream,
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
        let timeout = self.actor.inner.config.ladder.ack_timeout;
        self.cancel_actor_within(timeout).await
    }

    pub(crate) async fn cancel_actor_within(&self, timeout: Duration) -> bool {
        self.channel.set_cancel_requested();
        let ask = async {
            let mut call = self.start(internal::CANCEL_ACTOR, encode(&())?).await?;
            loop {
                if let Msg::CancelAck(ack) = call.recv().await? {
                    return Ok::<bool, ActorError>(ack.acked);
                }
            }
        };
        matches!(tokio::time::timeout(timeout, ask).await, Ok(Ok(true)))
    }
}

/// A remote error as the caller sees it: a cancellation is `ContextCancelled`.
pub(crate) fn remote_to_error(e: RemoteActorError) -> ActorError {
    match (&e.canceller, e.type_name.as_str()) {
        (Some(c), "ContextCancelled") if e.relay_path.is_empty() => {
            ActorError::ContextCancelled { canceller: c.clone() }
        }
        _ => ActorError::from(e),
    }
}
