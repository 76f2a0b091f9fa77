//! [`Cx`]: what a handler knows about the call it serves.

use super::actor::Actor;
use crate::calls::context::{Context, ServedCall};
use plough_ipc_wire::msg::{Aid, Cid};
use std::any::Any;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, OnceLock};
use tokio_util::sync::CancellationToken;

/// What every clone of a served call's [`Cx`] shares, in one allocation: its
/// cancellation token, made the first time something needs it (most calls answer on
/// their first poll without looking, and a child token costs a lock of the actor's token
/// and a node in its tree, twice: made and dropped), and how many nurseries it has open.
#[derive(Debug)]
pub(crate) struct CallState {
    /// The serving actor's token: the call's is its child.
    parent: CancellationToken,
    token: OnceLock<CancellationToken>,
    /// Nurseries open in this call: while any is, a cancelled call is given time to take
    /// its children down and report their real failures.
    open_nurseries: AtomicUsize,
}

impl CallState {
    /// The call's token (a child of the actor's: cancelled with it, or on its own).
    pub(crate) fn token(&self) -> &CancellationToken {
        self.token.get_or_init(|| self.parent.child_token())
    }

    /// How many nurseries are open in this call right now.
    pub(crate) fn open_nurseries(&self) -> &AtomicUsize {
        &self.open_nurseries
    }
}

/// What a handler knows about the call it serves.
#[derive(Debug, Clone)]
pub struct Cx {
    /// Shared with the actor and every call it serves: a call clones no identity.
    actor: Arc<Aid>,
    caller: Arc<Aid>,
    cid: Cid,
    call: Arc<CallState>,
    /// The serving actor (absent only in this crate's unit tests of handlers).
    runtime: Option<Actor>,
    /// For a context function: its side of the context.
    context: Option<Context>,
}

impl Cx {
    /// The context of call `cid` from `caller`, served by `actor`, cancelled with
    /// `parent` (the serving actor's token) or on its own.
    pub(crate) fn new(
        actor: impl Into<Arc<Aid>>,
        caller: impl Into<Arc<Aid>>,
        cid: Cid,
        parent: CancellationToken,
    ) -> Self {
        Cx {
            actor: actor.into(),
            caller: caller.into(),
            cid,
            call: Arc::new(CallState {
                parent,
                token: OnceLock::new(),
                open_nurseries: AtomicUsize::new(0),
            }),
            runtime: None,
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
        self.call.token()
    }

    /// The call's shared state: for the runtime to take the token once the call needs
    /// one, and to see whether it has nurseries open.
    pub(crate) fn call_state(&self) -> Arc<CallState> {
        Arc::clone(&self.call)
    }

    /// The actor serving the call.
    pub fn actor(&self) -> &Aid {
        &self.actor
    }

    /// [`Cx::actor`], shared.
    pub(crate) fn actor_shared(&self) -> &Arc<Aid> {
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
        self.call.token().cancelled().await
    }

    /// Whether the call was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.call.token().is_cancelled()
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
        self.call.token().clone()
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

#[cfg(test)]
mod tests {
    use super::*;
    use plough_ipc_wire::msg::Uuid;

    fn cx(parent: &CancellationToken) -> Cx {
        let me = Aid { name: "callee".into(), uuid: Uuid([1; 16]), pid: 42 };
        let caller = Aid { name: "root".into(), uuid: Uuid([2; 16]), pid: 1 };
        Cx::new(me, caller, 7, parent.clone())
    }

    #[test]
    fn a_calls_token_made_late_still_follows_the_actors_and_is_one_for_all_clones() {
        let parent = CancellationToken::new();
        let (a, b) = (cx(&parent), cx(&parent));
        let a2 = a.clone();
        assert!(!a.is_cancelled());
        // Cancelled alone: the actor and other calls are untouched, every clone sees it.
        a.call_state().token().cancel();
        assert!(a2.is_cancelled() && a2.cancel_token().is_cancelled());
        assert!(!parent.is_cancelled() && !b.is_cancelled());
        // The actor's cancel reaches a call whose token was never asked for before.
        let c = cx(&parent);
        parent.cancel();
        assert!(b.is_cancelled() && c.clone().is_cancelled());
    }
}
