//! The messages this layer builds, and how a remote error reads to a caller.

use crate::base::error::{ActorError, RemoteActorError};
use crate::base::names::{CANCEL_CALL, CREDIT};
use crate::connection::Credit;
use plough_ipc_wire::msg::{Aid, CallKind, Cid, ErrorKind, Msg, MsgKind, Start};
use plough_ipc_wire::payload::Payload;
use std::sync::Arc;

/// `plough.cancel_call` for call `target`: nobody waits for its ack, so it carries cid 0.
pub(crate) fn cancel_call_msg(target: Cid, me: &Arc<Aid>) -> Msg {
    Msg::Start(Box::new(Start {
        cid: 0,
        function: CANCEL_CALL.into(),
        args: Payload::encode(&target).expect("u64 encodes"),
        caller: Arc::clone(me),
        kind: CallKind::Function,
        trace: None,
    }))
}

/// A stream-credit grant for context `cid`: `(messages, bytes)` as its argument.
pub(crate) fn credit_msg(cid: Cid, me: &Arc<Aid>, credit: Credit) -> Msg {
    Msg::Start(Box::new(Start {
        cid,
        function: CREDIT.into(),
        args: Payload::encode(&(credit.messages, credit.bytes)).expect("integers encode"),
        caller: Arc::clone(me),
        kind: CallKind::Function,
        trace: None,
    }))
}

/// A remote error as the caller sees it: a cancellation is `ContextCancelled`.
pub(crate) fn remote_to_error(e: RemoteActorError) -> ActorError {
    match (&e.canceller, e.kind) {
        (Some(c), ErrorKind::Cancelled) if e.relay_path.is_empty() => {
            ActorError::ContextCancelled { canceller: c.clone() }
        }
        _ => ActorError::from(e),
    }
}

/// A payload that did not decode, as the error of a message of `kind`.
pub(crate) fn type_error(mut e: plough_ipc_wire::MsgTypeError, kind: MsgKind) -> ActorError {
    e.kind = Some(kind);
    ActorError::MsgType(e)
}
