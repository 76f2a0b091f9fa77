//! What a [`Context`] knows about itself right now, without waiting and without taking
//! anything out of it (tractor's `ctx.canceller`, `ctx.cancel_acked`, `ctx.maybe_error`,
//! `ctx.outcome`, `ctx.cid`): for logging, for a supervisor deciding what to do, for a
//! test asserting who cancelled what. [`Context::result`] and [`Context::failed`] still
//! work after any of these (each reads a copy).

use super::context::{Context, Outcome};
use super::inbox::Side;
use crate::base::error::{ActorError, Misuse};
use plough_ipc_wire::msg::{Aid, ErrorKind, Msg};
use serde::de::DeserializeOwned;

impl Context {
    /// Who cancelled this context, once it is known to be cancelled: parent side, this
    /// actor after [`Context::cancel`], or whoever the child's cancel answer names (the
    /// child itself, or another actor that cancelled it); child side, the actor whose
    /// cancel reached it (its parent, the actor that cancelled the whole child, or the
    /// child's own function). `None` while it is not cancelled.
    pub fn canceller(&self) -> Option<Aid> {
        match self.shared.side {
            Side::Parent => {
                if self.shared.flags().cancel_called {
                    return Some((*self.shared.conv.me).clone());
                }
                match &self.shared.conv.lock().outcome {
                    Some(Msg::Error(e)) if e.kind == ErrorKind::Cancelled => e.canceller.clone(),
                    _ => None,
                }
            }
            Side::Child => self.is_cancelled().then(|| self.canceller_here()),
        }
    }

    /// Parent side: whether the child acknowledged this parent's cancel — its function
    /// ended and it answered with `ContextCancelled` naming this actor (tractor's
    /// `cancel_acked`). `false` before [`Context::cancel`], while the answer is on its way,
    /// when the child returned or failed first, and when the connection was lost instead.
    /// Child side: always `false` (a parent acknowledges no cancel of its child's).
    pub fn cancel_acked(&self) -> bool {
        if self.shared.side == Side::Child || !self.shared.flags().cancel_called {
            return false;
        }
        let me = &self.shared.conv.me;
        matches!(
            &self.shared.conv.lock().outcome,
            Some(Msg::Error(e)) if e.kind == ErrorKind::Cancelled && e.canceller.as_ref() == Some(me)
        )
    }

    /// Whether the other side is done: parent side, the child's final answer arrived (a
    /// return, an error, its cancel) or the connection is gone; child side, the parent
    /// went away.
    pub fn is_finished(&self) -> bool {
        let ib = self.shared.conv.lock();
        ib.outcome.is_some() || ib.closed.is_some()
    }

    /// The error this context has failed with so far, if any, without waiting: what
    /// [`Context::failed`] would resolve with now (the peer's error, an overrun we caused,
    /// a lost connection; child side, a cancel too). A cancel by this parent is not a
    /// failure (tractor's `maybe_error`).
    pub fn maybe_error(&self) -> Option<ActorError> {
        if self.shared.side == Side::Child && self.is_cancelled() {
            return Some(self.cancelled_error());
        }
        let ib = self.shared.conv.lock();
        self.failure(&ib)
    }

    /// Parent side: the context's outcome if the child has already answered (tractor's
    /// `ctx.outcome`), as [`Context::result`] would return it, without waiting and without
    /// reading the stream; `None` while the child's function runs. It can be asked any
    /// number of times; `result` still works after it.
    ///
    /// # Errors
    ///
    /// As [`Context::result`]; in the child, [`Misuse::WrongSide`].
    pub fn outcome<R: DeserializeOwned>(&self) -> Option<Result<Outcome<R>, ActorError>> {
        if self.shared.side == Side::Child {
            return Some(Err(Misuse::WrongSide { call: "outcome", side: "parent" }.into()));
        }
        let now = {
            let ib = self.shared.conv.lock();
            match (&ib.outcome, &ib.closed) {
                (Some(m), _) => Ok(m.clone()),
                (None, Some(e)) => Err(e.clone()),
                (None, None) => return None,
            }
        };
        Some(self.settle(now))
    }
}
