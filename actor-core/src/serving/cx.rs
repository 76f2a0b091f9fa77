//! [`Cx`]: what a handler knows about the call it serves.

use super::actor::Actor;
use crate::calls::context::{Context, ServedCall};
use plough_ipc_wire::msg::{Aid, Cid};
use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use tokio_util::sync::CancellationToken;

/// What a handler knows about the call it serves.
#[derive(Debug, Clone)]
pub struct Cx {
    /// Shared with the actor and every call it serves: a call clones no identity.
    actor: Arc<Aid>,
    caller: Arc<Aid>,
    cid: Cid,
    cancel: CancellationToken,
    /// The serving actor (absent only in this crate's unit tests of handlers).
    runtime: Option<Actor>,
    /// Nurseries open in this call: while any is, a cancelled call is given time to take
    /// its children down and report their real failures.
    open_nurseries: Arc<AtomicUsize>,
    /// For a context function: its side of the context.
    context: Option<Context>,
}

impl Cx {
    /// The context of call `cid` from `caller`, served by `actor`.
    pub(crate) fn new(
        actor: impl Into<Arc<Aid>>,
        caller: impl Into<Arc<Aid>>,
        cid: Cid,
        cancel: CancellationToken,
    ) -> Self {
        Cx {
            actor: actor.into(),
            caller: caller.into(),
            cid,
            cancel,
            runtime: None,
            open_nurseries: Default::default(),
            context: None,
        }
    }

    pub(crate) fn with_actor(mut self, actor: Actor) -> Self {
        self.runtime = Some(actor);
        self
    }

    pub(crate) fn with_context(mut self, ctx: Context) -> Self {
        self.context = Some(ctx);
        self
    }

    /// The actor runtime serving this call: open nurseries, find other actors.
    pub fn runtime(&self) -> &Actor {
        self.runtime.as_ref().expect("every Cx the runtime builds has its actor")
    }

    /// For a context function: its side of the context (the runtime always sets it: the
    /// call's kind was checked against the registration).
    pub(crate) fn context(&self) -> Option<&Context> {
        self.context.as_ref()
    }

    /// The call's cancellation token.
    pub(crate) fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// How many nurseries are open in this call right now.
    pub(crate) fn open_nurseries(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.open_nurseries)
    }

    /// The actor serving the call.
    pub fn actor(&self) -> &Aid {
        &self.actor
    }

    /// The actor that called.
    pub fn caller(&self) -> &Aid {
        &self.caller
    }

    /// [`Cx::caller`], shared.
    pub(crate) fn caller_shared(&self) -> &Arc<Aid> {
        &self.caller
    }

    /// The call id.
    pub fn cid(&self) -> Cid {
        self.cid
    }

    /// Resolves when the call is cancelled (by the caller, or because the actor is
    /// shutting down). Handlers that loop or wait should `select!` on it.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// Whether the call was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Who cancelled the call, once it is cancelled: for a context, as
    /// [`Context::canceller`]; for a plain function, the actor that cancelled this whole
    /// actor, else its caller (who cancelled the one call). `None` while it runs.
    pub fn canceller(&self) -> Option<Aid> {
        if !self.is_cancelled() {
            return None;
        }
        if let Some(ctx) = &self.context {
            return ctx.canceller();
        }
        Some(self.actor_canceller().unwrap_or_else(|| (*self.caller).clone()))
    }

    /// Resolves when a shutdown of the serving actor was asked for (a signal, its
    /// parent's cancel, its parent's death): see [`Actor::shutdown_requested`]. A call can
    /// also be cancelled alone ([`Cx::cancelled`]).
    pub async fn shutdown_requested(&self) {
        match &self.runtime {
            Some(actor) => actor.shutdown_requested().await,
            None => std::future::pending().await,
        }
    }
}

impl ServedCall for Cx {
    fn me(&self) -> &Aid {
        &self.actor
    }

    fn cid(&self) -> Cid {
        self.cid
    }

    fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    fn actor_canceller(&self) -> Option<Aid> {
        self.runtime.as_ref().and_then(Actor::canceller)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Context {
    /// Child side: the serving call's [`Cx`] (nurseries, the runtime); `None` in the
    /// parent.
    pub fn cx(&self) -> Option<&Cx> {
        self.served().and_then(|call| call.as_any().downcast_ref::<Cx>())
    }
}
