//! The registrar as a service: the reserved `plough.registrar.*` functions, answered from
//! the state in the order their calls arrive.

use super::entry::ActorEntry;
use super::state::RegistrarState;
use crate::base::error::{RemoteActorError, encode};
use crate::base::names::{
    REGISTRAR_FIND, REGISTRAR_LIST, REGISTRAR_REGISTER, REGISTRAR_UNREGISTER, REGISTRAR_WAIT_FOR,
};
use crate::connection::Channel;
use plough_ipc_wire::msg::{Aid, ErrorKind, Msg, Start, Uuid};
use plough_ipc_wire::payload::Payload;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Answers one registrar call (`start.function` has the registrar prefix) that arrived
/// over `channel`. `tasks` runs the reply (and a pending `wait_for`); `stop` ends a
/// pending `wait_for` with no entries (the serving actor is going away).
pub(crate) fn serve(
    state: &Arc<RegistrarState>,
    me: &Aid,
    channel: &Channel,
    start: Start,
    tasks: &TaskTracker,
    stop: &CancellationToken,
) {
    let (state, channel, stop) = (Arc::clone(state), channel.clone(), stop.clone());
    let cid = start.cid;
    let via = channel.peer().uuid;
    let me = me.clone();
    let bad = |e: plough_ipc_wire::MsgTypeError| {
        let mut r = RemoteActorError::new(me.clone(), ErrorKind::MsgType, e.to_string());
        r.type_error = Some((&e).into());
        r
    };
    type Answer = Result<Payload, RemoteActorError>;
    // Everything but `wait_for` is answered here, in the order the calls arrive: a
    // registration is recorded before the registrar reads anything else its sender
    // sent (such as a reply that makes a caller look the new actor up).
    let now: Option<Answer> = match &*start.function {
        REGISTRAR_REGISTER => Some(match start.args.decode::<ActorEntry>() {
            Ok(entry) => {
                state.add(entry, Some(via));
                Ok(encode(&()).expect("unit encodes"))
            }
            Err(e) => Err(bad(e)),
        }),
        REGISTRAR_UNREGISTER => Some(match start.args.decode::<Uuid>() {
            Ok(uuid) => {
                state.remove(&uuid);
                Ok(encode(&()).expect("unit encodes"))
            }
            Err(e) => Err(bad(e)),
        }),
        REGISTRAR_FIND => Some(match start.args.decode::<String>() {
            Ok(name) => Ok(encode(&state.find(&name)).expect("entries encode")),
            Err(e) => Err(bad(e)),
        }),
        REGISTRAR_LIST => Some(Ok(encode(&state.list()).expect("entries encode"))),
        REGISTRAR_WAIT_FOR => None,
        other => Some(Err(RemoteActorError::new(
            me.clone(),
            ErrorKind::NoSuchFunction,
            format!("the registrar has no function `{other}`"),
        ))),
    };
    let wait_name = match now {
        Some(_) => Ok(String::new()),
        None => start.args.decode::<String>().map_err(bad),
    };
    tasks.spawn(async move {
        let result = match (now, wait_name) {
            (Some(answer), _) => answer,
            (None, Err(e)) => Err(e),
            (None, Ok(name)) => {
                let found = tokio::select! {
                    f = state.wait_for(&name) => f,
                    () = channel.closed() => return,
                    () = stop.cancelled() => Vec::new(),
                };
                Ok(encode(&found).expect("entries encode"))
            }
        };
        let msg = match result {
            Ok(payload) => Msg::Return { cid, payload },
            Err(e) => Msg::Error(Box::new(e.to_msg(Some(cid)))),
        };
        let _ = channel.send(msg).await;
    });
}
