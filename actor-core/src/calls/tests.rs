//! The calls layer over a real socket pair: every context transition on both sides, the
//! stream (overrun, backpressure, close), cancellation from either side, and portals.
//!
//! The parent is the dialer of a [`pair`]; the child side is built here the way the
//! serving layer builds it ([`Context::serve`] on the `Start` the acceptor received), and
//! where the serving layer would answer (`Return`, `Error`) the test sends the reply
//! itself on the acceptor's channel.

use super::context::{Context, Outcome, ServedCall};
use super::fan_out::FanOut;
use super::portal::Portal;
use super::stream::{MsgStream, STREAM_BUFFER, STREAM_BUFFER_BYTES, StreamConfig};
use super::types::MsgTypes;
use crate::base::budgets::Budgets;
use crate::base::error::{ActorError, Misuse, OverrunBound, RemoteActorError, relay};
use crate::base::names::{CANCEL_ACTOR, CANCEL_CALL};
use crate::base::sync::LockExt;
use crate::connection::testing::{
    Pair, acceptor_aid, aid, assert_transport_closed, boom, dialer_aid, pair, pair_with, start_msg,
    within,
};
use futures::{FutureExt, StreamExt};
use plough_ipc_wire::msg::{Aid, CallKind, CancelAck, Cid, Msg, MsgKind, Start};
use plough_ipc_wire::payload::Payload;
use std::any::Any;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a test parent's `cancel` waits for the child's side.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(200);

/// The serving call of a test's child side.
struct TestCall {
    me: Aid,
    cid: Cid,
    token: CancellationToken,
    /// Who cancelled "the serving actor" (a third party), when set.
    actor_canceller: Mutex<Option<Aid>>,
}

impl ServedCall for TestCall {
    fn me(&self) -> &Aid {
        &self.me
    }
    fn cid(&self) -> Cid {
        self.cid
    }
    fn cancel_token(&self) -> CancellationToken {
        self.token.clone()
    }
    fn actor_canceller(&self) -> Option<Aid> {
        self.actor_canceller.locked().clone()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The child side of one served context.
struct Child {
    ctx: Context,
    call: Arc<TestCall>,
    start: Start,
}

impl Child {
    /// Sends what the serving layer would when the child's function returned `value`.
    async fn returns<T: serde::Serialize>(&self, p: &Pair, value: &T) {
        let payload = Payload::encode(value).unwrap();
        p.acceptor.send(Msg::Return { cid: self.start.cid, payload }).await.unwrap();
    }

    /// Sends what the serving layer would when the child's function failed with `err`.
    async fn fails(&self, p: &Pair, err: &ActorError) {
        let msg = relay(err, &acceptor_aid()).to_msg(Some(self.start.cid));
        p.acceptor.send(Msg::Error(Box::new(msg))).await.unwrap();
    }
}

/// What the serving layer does with a context `Start`: track the call (so a
/// `plough.cancel_call` reaches it) and build the child side.
async fn serve_next(p: &Pair, types: MsgTypes) -> Child {
    let start = p.acceptor_serve.next_start().await;
    let call = Arc::new(TestCall {
        me: acceptor_aid(),
        cid: start.cid,
        token: CancellationToken::new(),
        actor_canceller: Mutex::new(None),
    });
    p.acceptor.track_served(start.cid, call.token.clone());
    let ctx = Context::serve(&p.acceptor, Arc::clone(&call) as _, &start.function, types);
    Child { ctx, call, start }
}

/// Opens context `ctx("args")` from the dialer; the child answers `started(7)`.
async fn open(p: &Pair) -> (Context, Child) {
    let me = Arc::new(dialer_aid());
    let parent = Context::open::<u32>(
        &p.dialer,
        &me,
        "ctx",
        Payload::encode("args").unwrap(),
        CallKind::Context,
        SETTLE,
    );
    let child = async {
        let child = serve_next(p, MsgTypes::default()).await;
        child.ctx.started(&7u32).await.expect("started");
        child
    };
    let (parent, child) =
        within("the context to open", async { tokio::join!(parent, child) }).await;
    let (parent, first) = parent.expect("open");
    assert_eq!(first, 7);
    (parent, child)
}

/// Opens both sides' streams.
async fn streams(
    parent: &Context,
    child: &Child,
    child_config: StreamConfig,
) -> (MsgStream, MsgStream) {
    let ps = parent.open_stream().await.expect("parent stream");
    let cs = child.ctx.open_stream_with(child_config).await.expect("child stream");
    (ps, cs)
}

/// Waits until everything the dialer queued before now was routed by the acceptor: a
/// marker `Start` sent after it is served.
async fn acceptor_caught_up(p: &Pair) {
    p.dialer.send(start_msg(0, "marker", &(), &dialer_aid())).await.unwrap();
    let s = p.acceptor_serve.next_start().await;
    assert_eq!(&*s.function, "marker", "nothing else was served meanwhile: {s:?}");
}

#[track_caller]
fn assert_misuse(e: ActorError, expected: Misuse) {
    match e {
        ActorError::Misuse(m) => assert_eq!(m, expected),
        other => panic!("expected {expected:?}, got {other:?}"),
    }
}

#[track_caller]
fn assert_cancelled_by(e: ActorError, canceller: &Aid) {
    match e {
        ActorError::ContextCancelled { canceller: c } => assert_eq!(&c, canceller),
        other => panic!("expected ContextCancelled by {canceller}, got {other:?}"),
    }
}

#[track_caller]
fn assert_closed_by(e: ActorError, closer: &Aid) {
    match e {
        ActorError::StreamClosed { function, by } => {
            assert_eq!((function.as_str(), &by), ("ctx", closer));
        }
        other => panic!("expected StreamClosed by {closer}, got {other:?}"),
    }
}

#[track_caller]
fn assert_overrun(e: ActorError) {
    match e {
        ActorError::StreamOverrun { sender, receiver, .. } => {
            assert_eq!((sender, receiver), (acceptor_aid(), dialer_aid()));
        }
        other => panic!("expected StreamOverrun child -> parent, got {other:?}"),
    }
}

#[tokio::test]
async fn open_then_started_hands_the_parent_the_first_value() {
    let p = within("the pair", pair()).await;
    let (parent, child) = open(&p).await;
    assert_eq!(parent.cid() % 2, 1, "the dialer's cid");
    assert_eq!(child.ctx.cid(), parent.cid());
    assert_eq!(&*child.start.function, "ctx");
    assert_eq!(child.start.kind, CallKind::Context);
    assert_eq!(*child.start.caller, dialer_aid());
    assert_eq!(child.start.args.decode::<String>().unwrap(), "args");
    assert_eq!((parent.peer(), child.ctx.peer()), (&acceptor_aid(), &dialer_aid()));
    assert_eq!((parent.function(), child.ctx.function()), ("ctx", "ctx"));
    assert!(child.ctx.was_started());
    assert!(child.ctx.served().is_some() && parent.served().is_none());
    assert!(!parent.is_cancelled() && !child.ctx.is_cancelled());
}

#[tokio::test]
async fn child_misuse_started_twice_stream_before_started_second_stream_result() {
    let p = within("the pair", pair()).await;
    let me = Arc::new(dialer_aid());
    let parent = Context::open::<u32>(
        &p.dialer,
        &me,
        "ctx",
        Payload::encode(&()).unwrap(),
        CallKind::Context,
        SETTLE,
    );
    let child = async {
        let child = serve_next(&p, MsgTypes::default()).await;
        assert!(!child.ctx.was_started());
        let e = child.ctx.open_stream().await.unwrap_err();
        assert_misuse(e, Misuse::StreamBeforeStarted { function: "ctx".to_owned() });
        child.ctx.started(&1u32).await.unwrap();
        assert_misuse(
            child.ctx.started(&2u32).await.unwrap_err(),
            Misuse::StartedTwice { function: "ctx".to_owned() },
        );
        let _stream = child.ctx.open_stream().await.unwrap();
        let e = child.ctx.open_stream().await.unwrap_err();
        assert_misuse(e, Misuse::SecondStream { function: "ctx".to_owned() });
        let e = child.ctx.result::<()>().await.unwrap_err();
        assert_misuse(e, Misuse::WrongSide { call: "result", side: "parent" });
        child
    };
    let (parent, _child) = within("the context", async { tokio::join!(parent, child) }).await;
    assert_eq!(parent.unwrap().1, 1, "the first `started` value, not the second");
}

#[tokio::test]
async fn parent_misuse_started_a_second_stream_and_a_context_with_yourself() {
    let p = within("the pair", pair()).await;
    let (parent, _child) = open(&p).await;
    assert_misuse(
        parent.started(&1u32).await.unwrap_err(),
        Misuse::WrongSide { call: "started", side: "child" },
    );
    let _s = parent.open_stream().await.expect("the parent may stream at once");
    assert_misuse(
        parent.open_stream().await.unwrap_err(),
        Misuse::SecondStream { function: "ctx".to_owned() },
    );
    // The dialer's peer is the acceptor: opening "as" the acceptor is opening with yourself.
    let me = Arc::new(acceptor_aid());
    let e =
        Context::open::<()>(&p.dialer, &me, "ctx", Payload::default(), CallKind::Context, SETTLE)
            .await
            .unwrap_err();
    assert_misuse(e, Misuse::ContextWithSelf { function: "ctx".to_owned(), me: (*me).clone() });
}

#[tokio::test]
async fn open_fails_with_the_childs_early_error_return_or_bad_first_value() {
    let p = within("the pair", pair()).await;
    let me = Arc::new(dialer_aid());
    let open_u32 = || {
        Context::open::<u32>(&p.dialer, &me, "ctx", Payload::default(), CallKind::Context, SETTLE)
    };

    // An error before `started`.
    let (r, ()) = within("open", async {
        tokio::join!(open_u32(), async {
            let s = p.acceptor_serve.next_start().await;
            p.acceptor.send(boom(&acceptor_aid(), s.cid, "no")).await.unwrap();
        })
    })
    .await;
    match r.unwrap_err() {
        ActorError::Remote(e) => {
            assert_eq!((e.type_name.as_str(), e.message.as_str()), ("Boom", "no"));
            assert_eq!(e.source, acceptor_aid());
        }
        other => panic!("expected the child's error, got {other:?}"),
    }

    // A return without `started`.
    let (r, ()) = within("open", async {
        tokio::join!(open_u32(), async {
            let s = p.acceptor_serve.next_start().await;
            let payload = Payload::encode(&()).unwrap();
            p.acceptor.send(Msg::Return { cid: s.cid, payload }).await.unwrap();
        })
    })
    .await;
    assert_misuse(r.unwrap_err(), Misuse::NotAContext { function: "ctx".to_owned() });

    // A first value of another type.
    let (r, ()) = within("open", async {
        tokio::join!(open_u32(), async {
            let s = p.acceptor_serve.next_start().await;
            let payload = Payload::encode("seven").unwrap();
            p.acceptor.send(Msg::Started { cid: s.cid, payload }).await.unwrap();
        })
    })
    .await;
    match r.unwrap_err() {
        ActorError::MsgType(e) => assert_eq!(e.kind, Some(MsgKind::Started)),
        other => panic!("expected a type error, got {other:?}"),
    }
    assert!(!p.dialer.is_closed(), "a bad first value leaves the connection usable");
    // ... and the context it could not hand out is let go of: the child is cancelled.
    let cancel = p.acceptor_serve.next_start().await;
    assert_eq!(&*cancel.function, CANCEL_CALL);

    // The connection closing before `started`.
    let (r, ()) = within("open", async {
        tokio::join!(open_u32(), async {
            let _ = p.acceptor_serve.next_start().await;
            p.acceptor.shutdown();
        })
    })
    .await;
    assert_transport_closed(&r.unwrap_err(), &acceptor_aid(), "peer closed the connection");
}

#[tokio::test]
async fn stream_messages_flow_both_ways_in_order() {
    let p = within("the pair", pair()).await;
    let (parent, child) = open(&p).await;
    let (ps, cs) = streams(&parent, &child, StreamConfig::default()).await;
    within("the exchange", async {
        for n in 1..=3u32 {
            ps.send(&n).await.unwrap();
        }
        cs.send("a").await.unwrap();
        cs.send("b").await.unwrap();
        for n in 1..=3u32 {
            assert_eq!(cs.recv::<u32>().await.unwrap(), Some(n));
        }
        assert_eq!(ps.recv::<String>().await.unwrap().as_deref(), Some("a"));
        assert_eq!(ps.recv::<String>().await.unwrap().as_deref(), Some("b"));
    })
    .await;
    assert_eq!((ps.buffered(), cs.buffered()), (0, 0));
    assert_eq!(ps.config(), StreamConfig::default());
    assert_eq!(ps.context().cid(), parent.cid());
}

#[tokio::test]
async fn close_ends_the_stream_both_ways_at_once_for_the_closer() {
    let p = within("the pair", pair()).await;
    let (parent, child) = open(&p).await;
    let (ps, cs) = streams(&parent, &child, StreamConfig::default()).await;
    cs.send(&9u8).await.unwrap();
    ps.send(&1u8).await.unwrap();
    acceptor_caught_up(&p).await;
    // A recv waiting on the parent's stream when it closes ends too.
    let (waiting, ()) = within("the close", async {
        tokio::join!(async { ps.recv::<u8>().await }, async {
            ps.close().await.unwrap();
        })
    })
    .await;
    // The child's 9 may have arrived before the close or not: unread, it is discarded.
    assert!(matches!(waiting, Ok(None) | Ok(Some(9))), "{waiting:?}");
    ps.close().await.unwrap(); // idempotent: one Stop
    assert_eq!(ps.buffered(), 0, "what was buffered is discarded");
    assert_eq!(within("recv", ps.recv::<u8>()).await.unwrap(), None, "the closer's: at once");
    assert_misuse(ps.send(&2u8).await.unwrap_err(), Misuse::SendAfterClose);
    within("the child's reads", async {
        assert_eq!(cs.recv::<u8>().await.unwrap(), Some(1), "what was sent before the close");
        assert_eq!(cs.recv::<u8>().await.unwrap(), None, "then end of stream");
        assert_eq!(cs.recv::<u8>().await.unwrap(), None, "and it stays ended");
    })
    .await;
    // The peer's send: the stream is closed, by the parent.
    assert_closed_by(cs.send(&3u8).await.unwrap_err(), &dialer_aid());
    // Reopening the stream on either side is a clear error.
    let reopen = Misuse::SecondStream { function: "ctx".to_owned() };
    assert_misuse(parent.open_stream().await.unwrap_err(), reopen.clone());
    assert_misuse(child.ctx.open_stream().await.unwrap_err(), reopen);
    // The context goes on: its result is still to come.
    child.returns(&p, &4u8).await;
    assert_eq!(within("result", parent.result::<u8>()).await.unwrap(), Outcome::Returned(4));
}

#[tokio::test]
async fn a_backpressured_send_waiting_for_credit_fails_when_the_peer_closes() {
    let p = within("the pair", pair()).await;
    let (parent, child) = open(&p).await;
    let (ps, cs) = streams(&parent, &child, StreamConfig::backpressure()).await;
    for n in 0..STREAM_BUFFER as u32 {
        cs.send(&n).await.unwrap();
    }
    let (e, ()) = within("the waiting send", async {
        tokio::join!(cs.send(&0u32), async { ps.close().await.unwrap() })
    })
    .await;
    assert_closed_by(e.unwrap_err(), &dialer_aid());
    // And our own: a send waiting for credit fails as a send after close.
    let (e, ()) = within("our waiting send", async {
        tokio::join!(ps.send(&0u32), async { ps.close().await.unwrap() })
    })
    .await;
    assert_misuse(e.unwrap_err(), Misuse::SendAfterClose);
}

#[tokio::test]
async fn after_the_childs_close_and_return_the_parents_iteration_ends_at_once() {
    let p = within("the pair", pair()).await;
    let (parent, child) = open(&p).await;
    let cs = child.ctx.open_stream().await.unwrap();
    cs.send(&1u8).await.unwrap();
    cs.close().await.unwrap();
    child.returns(&p, &"done").await;
    // The parent opens its stream only now: what came before the close, then the end.
    let ps = parent.open_stream().await.unwrap();
    let got: Vec<u8> =
        within("the parent's items", ps.items::<u8>().map(Result::unwrap).collect()).await;
    assert_eq!(got, [1]);
    assert_eq!(within("recv", ps.recv::<u8>()).await.unwrap(), None);
    assert_closed_by(ps.send(&2u8).await.unwrap_err(), &acceptor_aid());
    assert_misuse(
        parent.open_stream().await.unwrap_err(),
        Misuse::SecondStream { function: "ctx".to_owned() },
    );
    let out = within("the result", parent.result::<String>()).await.unwrap();
    assert_eq!(out, Outcome::Returned("done".to_owned()));
}

#[tokio::test]
async fn a_childs_return_is_the_result_and_unread_messages_are_discarded_with_credit_back() {
    let p = within("the pair", pair()).await;
    let (parent, child) = open(&p).await;
    let (ps, cs) = streams(&parent, &child, StreamConfig::backpressure()).await;
    for n in 0..5u32 {
        cs.send(&n).await.unwrap();
    }
    let credit = || child.ctx.shared.conv.credit.available();
    let sent = 5 * Payload::encode(&0u32).unwrap().len() as i64;
    assert_eq!(credit(), ((STREAM_BUFFER - 5) as u64, STREAM_BUFFER_BYTES as i64 - sent));
    child.returns(&p, &"done").await;
    let out = within("the result", parent.result::<String>()).await.unwrap();
    assert_eq!(out, Outcome::Returned("done".to_owned()));
    assert_eq!(out.clone().returned().as_deref(), Some("done"));
    assert!(!out.is_cancelled());
    assert_eq!(ps.buffered(), 0, "the 5 unread messages were discarded");
    assert_eq!(within("end of stream", ps.recv::<u32>()).await.unwrap(), None);
    acceptor_caught_up(&p).await;
    assert_eq!(
        credit(),
        (STREAM_BUFFER as u64, STREAM_BUFFER_BYTES as i64),
        "the discarded messages' credit was granted back, messages and bytes"
    );
    assert_closed_by(ps.send(&1u8).await.unwrap_err(), &acceptor_aid());
}

#[tokio::test]
async fn a_result_of_another_type_is_a_type_error_of_kind_return() {
    let p = within("the pair", pair()).await;
    let (parent, child) = open(&p).await;
    child.returns(&p, &"not a number").await;
    match within("the result", parent.result::<u64>()).await.unwrap_err() {
        ActorError::MsgType(e) => assert_eq!(e.kind, Some(MsgKind::Return)),
        other => panic!("expected a type error, got {other:?}"),
    }
}

#[tokio::test]
async fn the_childs_error_is_raised_by_result_and_by_the_parents_stream() {
    let p = within("the pair", pair()).await;
    let (parent, child) = open(&p).await;
    let (ps, _cs) = streams(&parent, &child, StreamConfig::default()).await;
    let err = ActorError::from(RemoteActorError::user(acceptor_aid(), "Boom", "child broke"));
    child.fails(&p, &err).await;
    let e = within("the result", parent.result::<()>()).await.unwrap_err();
    let r = e.as_remote().expect("the child's error");
    assert_eq!((r.type_name.as_str(), r.message.as_str()), ("Boom", "child broke"));
    assert_eq!(r.relay_path, [acceptor_aid()], "relayed by the child on its way home");
    let e = within("recv", ps.recv::<u8>()).await.unwrap_err();
    assert_eq!(e.as_remote().unwrap().type_name, "Boom");
    assert_eq!(ps.send(&1u8).await.unwrap_err().as_remote().unwrap().type_name, "Boom");
}

#[tokio::test]
async fn the_parents_cancel_fails_the_childs_ops_and_returns_cancelled() {
    let p = within("the pair", pair()).await;
    let (parent, child) = open(&p).await;
    let ps = parent.open_stream().await.unwrap();
    parent.cancel().await.unwrap();
    assert!(parent.is_cancelled());
    within("the child's token", child.ctx.cancelled()).await;
    let cancel = p.acceptor_serve.next_start().await;
    assert_eq!((&*cancel.function, cancel.cid), (CANCEL_CALL, 0));
    assert_eq!(cancel.args.decode::<u64>().unwrap(), parent.cid());
    assert!(child.call.token.is_cancelled());

    let parent_aid = dialer_aid();
    assert_cancelled_by(child.ctx.open_stream().await.unwrap_err(), &parent_aid);
    assert_cancelled_by(child.ctx.started(&1u32).await.unwrap_err(), &parent_aid);
    assert_cancelled_by(ps.recv::<u8>().await.unwrap_err(), &parent_aid);
    assert_cancelled_by(ps.send(&1u8).await.unwrap_err(), &parent_aid);

    child.fails(&p, &child.ctx.cancelled_error()).await;
    let out = within("the result", parent.result::<()>()).await.unwrap();
    assert_eq!(out, Outcome::Cancelled { canceller: parent_aid });
    assert!(out.is_cancelled() && out.returned().is_none());
    parent.cancel().await.unwrap(); // once is enough: no second request
    acceptor_caught_up(&p).await;
}

#[tokio::test]
async fn a_cancel_wakes_the_childs_waiting_recv_and_its_send_waiting_for_credit() {
    let p = within("the pair", pair()).await;
    let (parent, child) = open(&p).await;
    let (_ps, cs) = streams(&parent, &child, StreamConfig::backpressure()).await;
    for n in 0..STREAM_BUFFER as u32 {
        cs.send(&n).await.unwrap();
    }
    let (r, s, ()) = within("the cancel", async {
        tokio::join!(cs.recv::<u8>(), cs.send(&0u32), async { parent.cancel().await.unwrap() })
    })
    .await;
    assert_cancelled_by(r.unwrap_err(), &dialer_aid());
    assert_cancelled_by(s.unwrap_err(), &dialer_aid());
}

#[tokio::test]
async fn the_childs_own_cancel_is_raised_in_the_parent_naming_the_child() {
    let p = within("the pair", pair()).await;
    let (parent, child) = open(&p).await;
    let (ps, cs) = streams(&parent, &child, StreamConfig::default()).await;
    child.ctx.cancel().await.unwrap();
    assert!(child.ctx.is_cancelled());
    assert_cancelled_by(cs.send(&1u8).await.unwrap_err(), &acceptor_aid());
    assert_cancelled_by(cs.recv::<u8>().await.unwrap_err(), &acceptor_aid());
    child.fails(&p, &child.ctx.cancelled_error()).await;
    let e = within("the result", parent.result::<()>()).await.unwrap_err();
    assert_cancelled_by(e, &acceptor_aid());
    assert!(!parent.is_cancelled(), "the parent did not cancel");
    assert_cancelled_by(within("recv", ps.recv::<u8>()).await.unwrap_err(), &acceptor_aid());
}

#[tokio::test]
async fn a_third_actors_cancel_is_raised_in_the_parent_naming_it() {
    let p = within("the pair", pair()).await;
    let (parent, child) = open(&p).await;
    let third = aid("third", 3);
    *child.call.actor_canceller.locked() = Some(third.clone());
    child.call.token.cancel(); // the serving actor was cancelled by `third`
    assert_cancelled_by(child.ctx.open_stream().await.unwrap_err(), &third);
    child.fails(&p, &child.ctx.cancelled_error()).await;
    assert_cancelled_by(within("the result", parent.result::<()>()).await.unwrap_err(), &third);
}

#[tokio::test]
async fn an_overrun_without_backpressure_is_reported_to_both_sides_after_the_buffer() {
    let p = within("the pair", pair()).await;
    let (parent, child) = open(&p).await;
    let (ps, cs) = streams(&parent, &child, StreamConfig::overrunning()).await;
    for n in 0..=STREAM_BUFFER as u32 {
        cs.send(&n).await.expect("the sender does not know yet");
    }
    // The parent never read: the 65th message overran it, and it told the child.
    assert_overrun(within("the child to hear", cs.recv::<u32>()).await.unwrap_err());
    assert_overrun(cs.send(&0u32).await.unwrap_err());
    assert_eq!(ps.buffered(), STREAM_BUFFER);
    within("the parent's reads", async {
        for n in 0..STREAM_BUFFER as u32 {
            assert_eq!(ps.recv::<u32>().await.unwrap(), Some(n), "what was buffered, in order");
        }
        assert_overrun(ps.recv::<u32>().await.unwrap_err());
        assert_overrun(ps.recv::<u32>().await.unwrap_err());
    })
    .await;
    // The stream broke, not the context.
    child.returns(&p, &5u8).await;
    assert_eq!(within("result", parent.result::<u8>()).await.unwrap(), Outcome::Returned(5));
}

#[tokio::test]
async fn with_backpressure_a_fast_sender_waits_and_nothing_is_lost() {
    let p = within("the pair", pair()).await;
    let (parent, child) = open(&p).await;
    let (ps, cs) = streams(&parent, &child, StreamConfig::backpressure()).await;
    const N: u32 = 2 * STREAM_BUFFER as u32 + 100;
    for n in 0..STREAM_BUFFER as u32 {
        cs.send(&n).await.unwrap();
    }
    assert_eq!(child.ctx.shared.conv.credit.available().0, 0);
    assert!(cs.send(&0u32).now_or_never().is_none(), "out of credit: the next send waits");
    let send = async {
        for n in STREAM_BUFFER as u32..N {
            cs.send(&n).await.unwrap();
        }
        cs.close().await.unwrap();
    };
    let read = async {
        let mut got = Vec::new();
        while let Some(n) = ps.recv::<u32>().await.unwrap() {
            assert!(ps.buffered() <= STREAM_BUFFER, "never more than the buffer");
            got.push(n);
        }
        got
    };
    let ((), got) = within("the whole stream", async { tokio::join!(send, read) }).await;
    assert_eq!(got, (0..N).collect::<Vec<_>>(), "every message, once, in order");
}

#[tokio::test]
async fn a_larger_receive_buffer_grants_the_sender_the_extra_credit() {
    let p = within("the pair", pair()).await;
    let (parent, child) = open(&p).await;
    let ps = parent.open_stream_with(StreamConfig::backpressure().with_buffer(256)).await.unwrap();
    acceptor_caught_up(&p).await; // the grant travelled ahead of the marker
    let cs = child.ctx.open_stream_with(StreamConfig::backpressure()).await.unwrap();
    assert_eq!(child.ctx.shared.conv.credit.available(), (256, STREAM_BUFFER_BYTES as i64));
    for n in 0..256u32 {
        cs.send(&n).await.unwrap();
    }
    assert!(cs.send(&0u32).now_or_never().is_none(), "256 outstanding: the next waits");
    within("the reads", async {
        for n in 0..256u32 {
            assert_eq!(ps.recv::<u32>().await.unwrap(), Some(n));
        }
    })
    .await;
}

#[tokio::test]
async fn dropping_the_parents_unfinished_context_cancels_the_child() {
    let p = within("the pair", pair()).await;
    let (parent, child) = open(&p).await;
    let cid = parent.cid();
    let stream = parent.open_stream().await.unwrap();
    drop(parent);
    acceptor_caught_up(&p).await; // the stream still holds the context: no cancel yet
    drop(stream);
    let cancel = p.acceptor_serve.next_start().await;
    assert_eq!((&*cancel.function, cancel.cid), (CANCEL_CALL, 0));
    assert_eq!(cancel.args.decode::<u64>().unwrap(), cid);
    assert_eq!(*cancel.caller, dialer_aid());
    within("the child's cancel", child.ctx.cancelled()).await;
    assert_cancelled_by(child.ctx.open_stream().await.unwrap_err(), &dialer_aid());
}

#[tokio::test]
async fn dropping_a_finished_parent_context_sends_nothing() {
    let p = within("the pair", pair()).await;
    let (parent, child) = open(&p).await;
    child.returns(&p, &()).await;
    assert_eq!(within("result", parent.result::<()>()).await.unwrap(), Outcome::Returned(()));
    drop(parent);
    acceptor_caught_up(&p).await; // no cancel_call ahead of the marker
    assert!(!child.call.token.is_cancelled());
}

#[tokio::test]
async fn a_transport_closed_mid_stream_fails_the_parent_with_transport_closed() {
    let p = within("the pair", pair()).await;
    let (parent, child) = open(&p).await;
    let (ps, cs) = streams(&parent, &child, StreamConfig::backpressure()).await;
    ps.send(&1u8).await.unwrap();
    assert_eq!(within("recv", cs.recv::<u8>()).await.unwrap(), Some(1));
    let waiting = ps.recv::<u8>();
    let ((), e) = within("the parent's recv", async {
        tokio::join!(async { p.acceptor.shutdown() }, waiting)
    })
    .await;
    assert_transport_closed(&e.unwrap_err(), &acceptor_aid(), "peer closed the connection");
    assert_transport_closed(&ps.send(&3u8).await.unwrap_err(), &acceptor_aid(), "peer closed");
    let e = within("the result", parent.result::<()>()).await.unwrap_err();
    assert_transport_closed(&e, &acceptor_aid(), "peer closed the connection");
    within("the child's end to close", p.acceptor.closed()).await;
    assert!(child.call.token.is_cancelled(), "a served call is cancelled when its caller goes");
}

#[tokio::test]
async fn a_transport_closed_mid_stream_fails_the_child_with_transport_closed() {
    let p = within("the pair", pair()).await;
    let (parent, child) = open(&p).await;
    let (_ps, cs) = streams(&parent, &child, StreamConfig::backpressure()).await;
    let waiting = cs.recv::<u8>();
    let ((), e) =
        within("the child's recv", async { tokio::join!(async { p.dialer.shutdown() }, waiting) })
            .await;
    assert_transport_closed(&e.unwrap_err(), &dialer_aid(), "peer closed the connection");
    assert_transport_closed(&cs.send(&2u8).await.unwrap_err(), &dialer_aid(), "peer closed");
}

#[tokio::test]
async fn a_connection_closed_after_we_asked_the_actor_to_cancel_is_that_cancel() {
    let p = within("the pair", pair()).await;
    let (parent, _child) = open(&p).await;
    p.dialer.set_cancel_requested();
    p.acceptor.shutdown(); // the child actor exits
    let e = within("the result", parent.result::<()>()).await.unwrap_err();
    assert_cancelled_by(e, &dialer_aid());
}

#[tokio::test]
async fn a_connection_closed_after_the_parents_cancel_is_cancelled() {
    let p = within("the pair", pair()).await;
    let (parent, _child) = open(&p).await;
    parent.cancel().await.unwrap();
    p.acceptor.shutdown();
    let out = within("the result", parent.result::<()>()).await.unwrap();
    assert_eq!(out, Outcome::Cancelled { canceller: dialer_aid() });
}

#[tokio::test]
async fn declared_types_are_checked_before_sending_and_bad_payloads_on_receipt() {
    let p = within("the pair", pair()).await;
    let me = Arc::new(dialer_aid());
    let parent = Context::open::<u32>(
        &p.dialer,
        &me,
        "typed",
        Payload::default(),
        CallKind::Context,
        SETTLE,
    );
    let child = async {
        let child = serve_next(&p, MsgTypes::new().started::<u32>().yields::<u32>()).await;
        match child.ctx.started("seven").await.unwrap_err() {
            ActorError::MsgType(e) => {
                assert_eq!((e.kind, e.expected.as_str()), (Some(MsgKind::Started), "u32"));
            }
            other => panic!("expected a type error, got {other:?}"),
        }
        assert!(!child.ctx.was_started(), "nothing was sent");
        child.ctx.started(&7u32).await.unwrap();
        child
    };
    let (parent, child) = within("the context", async { tokio::join!(parent, child) }).await;
    let (parent, first) = parent.unwrap();
    assert_eq!(first, 7);
    assert_eq!(child.ctx.declared_types().yields, Some("u32"));
    let (ps, cs) = streams(&parent, &child, StreamConfig::default()).await;
    match cs.send("x").await.unwrap_err() {
        ActorError::MsgType(e) => assert_eq!(e.kind, Some(MsgKind::Yield)),
        other => panic!("expected a type error, got {other:?}"),
    }
    cs.send(&1u32).await.unwrap();
    cs.send(&2u32).await.unwrap();
    match within("recv", ps.recv::<String>()).await.unwrap_err() {
        ActorError::MsgType(e) => assert_eq!(e.kind, Some(MsgKind::Yield)),
        other => panic!("expected a type error, got {other:?}"),
    }
    assert_eq!(within("recv", ps.recv::<u32>()).await.unwrap(), Some(2), "still usable");
    parent.declare_types(MsgTypes::new().yields::<u8>());
    assert!(matches!(ps.send(&1u32).await.unwrap_err(), ActorError::MsgType(_)));
}

#[tokio::test]
async fn portal_run_returns_the_value_or_the_remote_error() {
    let p = within("the pair", pair()).await;
    let portal = Portal::new(p.dialer.clone(), Arc::new(dialer_aid()), Duration::from_millis(100));
    assert_eq!(portal.aid(), &acceptor_aid());
    assert!(!portal.is_closed());
    assert_eq!(within("echo", portal.run::<_, u64>("echo", 41u64)).await.unwrap(), 41);
    let e = within("fail", portal.run::<_, u64>("fail", "why")).await.unwrap_err();
    let r = e.as_remote().expect("a remote error");
    assert_eq!((r.type_name.as_str(), &r.source), ("Boom", &acceptor_aid()));
    assert_eq!(r.message, "\"why\"");
    match within("echo", portal.run::<_, String>("echo", 5u64)).await.unwrap_err() {
        ActorError::MsgType(e) => assert_eq!(e.kind, Some(MsgKind::Return)),
        other => panic!("expected a type error, got {other:?}"),
    }
    // Finished calls send no cancel.
    acceptor_caught_up_skipping(&p, &["echo", "fail", "echo"]).await;
    // A StartAck ahead of the result is skipped; a remote cancel reads as ContextCancelled.
    let third = aid("third", 3);
    let (r, ()) = within("a cancelled call", async {
        tokio::join!(portal.run::<_, ()>("hang", ()), async {
            let s = p.acceptor_serve.next_start().await;
            assert_eq!(&*s.function, "hang");
            let ack = plough_ipc_wire::msg::StartAck { cid: s.cid, kind: CallKind::Function };
            p.acceptor.send(Msg::StartAck(ack)).await.unwrap();
            let cancelled = ActorError::ContextCancelled { canceller: third.clone() };
            let err = relay(&cancelled, &acceptor_aid()).to_msg(Some(s.cid));
            p.acceptor.send(Msg::Error(Box::new(err))).await.unwrap();
        })
    })
    .await;
    assert_cancelled_by(r.unwrap_err(), &third);
    acceptor_caught_up(&p).await;
}

/// [`acceptor_caught_up`], after taking the `Start`s named `first` (in order).
async fn acceptor_caught_up_skipping(p: &Pair, first: &[&str]) {
    for f in first {
        assert_eq!(&*p.acceptor_serve.next_start().await.function, *f);
    }
    acceptor_caught_up(p).await;
}

#[tokio::test]
async fn dropping_a_portal_run_mid_call_sends_cancel_call() {
    let p = within("the pair", pair()).await;
    let portal = Portal::new(p.dialer.clone(), Arc::new(dialer_aid()), Duration::from_millis(100));
    let hang = within("the call to arrive", async {
        tokio::select! {
            r = portal.run::<_, ()>("hang", ()) => panic!("hang answered: {r:?}"),
            s = p.acceptor_serve.next_start() => s,
        }
    })
    .await;
    assert_eq!(&*hang.function, "hang");
    let cancel = p.acceptor_serve.next_start().await;
    assert_eq!((&*cancel.function, cancel.cid), (CANCEL_CALL, 0));
    assert_eq!(cancel.args.decode::<u64>().unwrap(), hang.cid);
    assert_eq!(*cancel.caller, dialer_aid());
}

#[tokio::test]
async fn portal_cancel_actor_waits_for_the_ack() {
    let p = within("the pair", pair()).await;
    let portal = Portal::new(p.dialer.clone(), Arc::new(dialer_aid()), Duration::from_millis(100));
    let (acked, ()) = within("the ack", async {
        tokio::join!(portal.cancel_actor_within(crate::connection::testing::LIMIT), async {
            let s = p.acceptor_serve.next_start().await;
            assert_eq!(&*s.function, CANCEL_ACTOR);
            p.acceptor.send(Msg::CancelAck(CancelAck { cid: s.cid, acked: true })).await.unwrap();
        })
    })
    .await;
    assert!(acked);
    assert!(p.dialer.cancel_requested());
    // Nobody answers: not acknowledged within the portal's own timeout.
    assert!(!within("no ack", portal.cancel_actor()).await);
    assert_eq!(&*p.acceptor_serve.next_start().await.function, CANCEL_ACTOR);
}

#[tokio::test]
async fn open_stream_from_opens_a_stream_kind_context() {
    let p = within("the pair", pair()).await;
    let portal = Portal::new(p.dialer.clone(), Arc::new(dialer_aid()), Duration::from_millis(100));
    let (ps, child) = within("the stream", async {
        tokio::join!(portal.open_stream_from("numbers", 3u32), async {
            let child = serve_next(&p, MsgTypes::default()).await;
            child.ctx.started(&()).await.unwrap();
            child
        })
    })
    .await;
    let ps = ps.unwrap();
    assert_eq!(child.start.kind, CallKind::Stream);
    assert_eq!(child.start.args.decode::<u32>().unwrap(), 3);
    let cs = child.ctx.open_stream().await.unwrap();
    for n in 0..3u32 {
        cs.send(&n).await.unwrap();
    }
    child.returns(&p, &()).await;
    let got: Vec<u32> = within("items", ps.items::<u32>().map(Result::unwrap).collect()).await;
    assert_eq!(got, [0, 1, 2], "the buffered messages, then end of stream at the return");
}

/// A raw payload of `len` bytes whose first 8 are `index`.
fn blob(index: u64, len: usize) -> Payload {
    let mut v = vec![0x5a; len.max(8)];
    v[..8].copy_from_slice(&index.to_le_bytes());
    Payload::from(v)
}

fn index_of(p: &Payload) -> u64 {
    u64::from_le_bytes(p.as_bytes()[..8].try_into().unwrap())
}

const MIB: usize = 1 << 20;

#[tokio::test]
async fn an_overrun_of_the_byte_budget_names_the_bytes_on_both_sides_and_the_context_serves_on() {
    let p = within("the pair", pair()).await;
    let (parent, child) = open(&p).await;
    let (ps, cs) = streams(&parent, &child, StreamConfig::overrunning()).await;
    // 10 MiB fits the 16 MiB budget; a second 10 MiB does not (6 MiB of room left).
    for i in 0..3 {
        cs.send_payload(blob(i, 10 * MIB)).await.expect("the sender does not know yet");
    }
    match within("the child to hear", cs.recv::<u32>()).await.unwrap_err() {
        ActorError::StreamOverrun { bound, .. }
            if matches!(*bound, OverrunBound::Reported { .. }) =>
        {
            let detail = bound.to_string();
            assert!(detail.contains("bytes"), "{detail}");
            assert!(detail.contains(&STREAM_BUFFER_BYTES.to_string()), "{detail}");
        }
        other => panic!("expected the reported byte overrun, got {other:?}"),
    }
    assert_eq!((ps.buffered(), ps.buffered_bytes()), (1, 10 * MIB), "what was admitted");
    let first = within("the buffered message", ps.recv_payload()).await.unwrap().unwrap();
    assert_eq!(index_of(&first), 0);
    let e = within("the overrun", ps.recv_payload()).await.unwrap_err();
    let ActorError::StreamOverrun { bound, .. } = &e else { panic!("an overrun: {e:?}") };
    let (limit, buffered, arriving) = (STREAM_BUFFER_BYTES, 10 * MIB, 10 * MIB);
    assert_eq!(**bound, OverrunBound::Bytes { limit, buffered, arriving });
    assert!(e.to_string().contains("over the stream's budget of 16777216 bytes"), "{e}");
    assert_eq!(p.dialer.buffered_bytes().used(), 0, "nothing left charged to the connection");
    child.returns(&p, &5u8).await;
    assert_eq!(within("result", parent.result::<u8>()).await.unwrap(), Outcome::Returned(5));
}

#[tokio::test]
async fn with_backpressure_messages_larger_than_the_budget_go_one_at_a_time_in_order() {
    let p = within("the pair", pair()).await;
    let (parent, child) = open(&p).await;
    let (ps, cs) = streams(&parent, &child, StreamConfig::backpressure()).await;
    const N: u64 = 6;
    // 20 MiB each, over the whole 16 MiB budget; small ones between them.
    let send = async {
        for i in 0..N {
            cs.send_payload(blob(i, if i % 2 == 0 { 20 * MIB } else { 100 })).await.unwrap();
        }
        cs.close().await.unwrap();
    };
    let read = async {
        let mut got = Vec::new();
        let mut most = 0;
        loop {
            // A slow reader: the sender gets every chance to run ahead.
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
            most = most.max(ps.buffered_bytes());
            match ps.recv_payload().await.unwrap() {
                Some(m) => got.push((index_of(&m), m.len())),
                None => break,
            }
        }
        (got, most)
    };
    let ((), (got, most)) = within("the whole stream", async { tokio::join!(send, read) }).await;
    let expected: Vec<(u64, usize)> =
        (0..N).map(|i| (i, if i % 2 == 0 { 20 * MIB } else { 100 })).collect();
    assert_eq!(got, expected, "every message, once, in order");
    assert!(most <= 20 * MIB + MIB, "the buffer held {most} bytes");
}

#[tokio::test]
async fn the_streams_of_one_connection_share_its_byte_budget_and_one_over_it_overruns() {
    let budgets = Budgets { stream_buffers: 3 * MIB, ..Budgets::default() };
    let p = within("the pair", pair_with(&budgets)).await;
    let (parent_a, child_a) = open(&p).await;
    let (parent_b, child_b) = open(&p).await;
    let (pa, ca) = streams(&parent_a, &child_a, StreamConfig::default()).await;
    let (pb, cb) = streams(&parent_b, &child_b, StreamConfig::default()).await;
    // Each stream's own budget (16 MiB) admits 2 MiB; the connection's 3 MiB only one.
    ca.send_payload(blob(0, 2 * MIB)).await.unwrap();
    within("a's message", async {
        while pa.buffered() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    cb.send_payload(blob(0, 2 * MIB)).await.unwrap();
    let e = within("b's overrun", pb.recv_payload()).await.unwrap_err();
    let ActorError::StreamOverrun { bound, .. } = &e else { panic!("an overrun: {e:?}") };
    let (limit, buffered, arriving) = (3 * MIB, 2 * MIB, 2 * MIB);
    assert_eq!(**bound, OverrunBound::Connection { limit, buffered, arriving });
    assert!(matches!(
        within("b hears", cb.recv::<u8>()).await,
        Err(ActorError::StreamOverrun { .. })
    ));
    // Stream a is not affected, and once it is read the connection has room again.
    assert_eq!(index_of(&pa.recv_payload().await.unwrap().unwrap()), 0);
    assert_eq!(p.dialer.buffered_bytes().used(), 0);
    ca.send_payload(blob(1, 2 * MIB)).await.unwrap();
    assert_eq!(index_of(&within("a again", pa.recv_payload()).await.unwrap().unwrap()), 1);
    // A context dropped with messages still buffered gives their bytes back.
    ca.send_payload(blob(2, MIB)).await.unwrap();
    within("a's last message", async {
        while pa.buffered() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(p.dialer.buffered_bytes().used(), MIB);
    child_a.returns(&p, &()).await;
    child_b.returns(&p, &()).await;
    drop((pa, pb, parent_a, parent_b));
    assert_eq!(p.dialer.buffered_bytes().used(), 0);
}

#[tokio::test]
async fn a_buffer_of_one_holds_one_message_and_a_backpressured_sender_sends_one_at_a_time() {
    let p = within("the pair", pair()).await;
    let (parent, child) = open(&p).await;
    let ps = parent.open_stream_with(StreamConfig::backpressure().with_buffer(1)).await.unwrap();
    let cs = child.ctx.open_stream_with(StreamConfig::backpressure()).await.unwrap();
    assert_eq!(child.ctx.shared.conv.credit.available(), (1, STREAM_BUFFER_BYTES as i64));
    cs.send(&0u32).await.unwrap();
    assert!(cs.send(&1u32).now_or_never().is_none(), "one outstanding: the next waits");
    const N: u32 = 200;
    let send = async {
        for n in 1..N {
            cs.send(&n).await.unwrap();
        }
        cs.close().await.unwrap();
    };
    let read = async {
        let mut got = Vec::new();
        while let Some(n) = ps.recv::<u32>().await.unwrap() {
            assert!(ps.buffered() <= 1, "never more than the buffer of one");
            got.push(n);
        }
        got
    };
    let ((), got) = within("the whole stream", async { tokio::join!(send, read) }).await;
    assert_eq!(got, (0..N).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_buffer_of_one_is_overrun_by_the_second_message_of_a_sender_that_does_not_wait() {
    let p = within("the pair", pair()).await;
    let (parent, child) = open(&p).await;
    let ps = parent.open_stream_with(StreamConfig::overrunning().with_buffer(1)).await.unwrap();
    acceptor_caught_up(&p).await;
    let cs = child.ctx.open_stream_with(StreamConfig::overrunning()).await.unwrap();
    cs.send(&0u32).await.unwrap();
    cs.send(&1u32).await.unwrap();
    assert_overrun(within("the child to hear", cs.recv::<u32>()).await.unwrap_err());
    assert_eq!(within("the one buffered", ps.recv::<u32>()).await.unwrap(), Some(0));
    match within("the overrun", ps.recv::<u32>()).await.unwrap_err() {
        ActorError::StreamOverrun { bound, .. } => {
            assert_eq!(*bound, OverrunBound::Messages { limit: 1 });
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn allowing_overruns_a_receiver_keeps_what_it_cannot_buffer_bounded_by_its_bytes() {
    let p = within("the pair", pair()).await;
    let (parent, child) = open(&p).await;
    let ps = parent.open_stream_with(StreamConfig::default().allowing_overruns()).await.unwrap();
    acceptor_caught_up(&p).await;
    let cs = child.ctx.open_stream_with(StreamConfig::overrunning()).await.unwrap();
    const N: u32 = 1000;
    for n in 0..N {
        cs.send(&n).await.unwrap();
    }
    // The 1000 are all there before the parent reads any: far past its 64.
    let marker = 0xdead_u32;
    cs.send(&marker).await.unwrap();
    within("all 1001 to arrive", async {
        while ps.buffered() < N as usize + 1 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    for n in 0..N {
        assert_eq!(within("recv", ps.recv::<u32>()).await.unwrap(), Some(n));
    }
    assert_eq!(within("recv", ps.recv::<u32>()).await.unwrap(), Some(marker));
    // The bytes still bound it: 16 MiB of 4 MiB messages fit, the fifth overruns.
    for i in 0..5 {
        cs.send_payload(blob(i, 4 * MIB)).await.unwrap();
    }
    match within("the child to hear", cs.recv::<u32>()).await.unwrap_err() {
        ActorError::StreamOverrun { sender, .. } => assert_eq!(sender, acceptor_aid()),
        other => panic!("{other:?}"),
    }
    for i in 0..4 {
        let got = within("a blob", ps.recv_payload()).await.unwrap().unwrap();
        assert_eq!(index_of(&got), i);
    }
    match within("the overrun", ps.recv_payload()).await.unwrap_err() {
        ActorError::StreamOverrun { bound, .. } => {
            assert!(matches!(*bound, OverrunBound::Bytes { .. }), "{bound:?}");
        }
        other => panic!("{other:?}"),
    }
}

/// The child streams into a parent that never opened its stream and waits in `result`:
/// with or without backpressure, the 65th message overruns it, always.
#[tokio::test]
async fn a_stream_the_parent_never_opened_is_overrun_in_result_with_or_without_backpressure() {
    for backpressure in [false, true] {
        let p = within("the pair", pair()).await;
        let (parent, child) = open(&p).await;
        let config = StreamConfig { backpressure, ..StreamConfig::default() };
        let cs = child.ctx.open_stream_with(config).await.unwrap();
        let streaming = async {
            for n in 0..=STREAM_BUFFER as u32 {
                cs.send(&n).await.unwrap();
            }
            let e = cs.recv::<u32>().await.unwrap_err();
            assert_overrun(e.clone());
            child.fails(&p, &e).await;
        };
        let ((), r) =
            within("the overrun", async { tokio::join!(streaming, parent.result::<()>()) }).await;
        let e = r.unwrap_err();
        let remote = e.as_remote().unwrap_or_else(|| panic!("{e:?}"));
        assert_eq!(remote.kind, plough_ipc_wire::msg::ErrorKind::StreamOverrun, "{e}");
        assert_eq!(remote.overrun_sender, Some(acceptor_aid()), "backpressure {backpressure}");
    }
    // Fewer than the buffer: no overrun, the result.
    let p = within("the pair", pair()).await;
    let (parent, child) = open(&p).await;
    let cs = child.ctx.open_stream_with(StreamConfig::backpressure()).await.unwrap();
    let streaming = async {
        for n in 0..10u32 {
            cs.send(&n).await.unwrap();
        }
        child.returns(&p, &3u8).await;
    };
    let ((), r) =
        within("the result", async { tokio::join!(streaming, parent.result::<u8>()) }).await;
    assert_eq!(r.unwrap(), Outcome::Returned(3));
}

#[tokio::test]
async fn within_interrupts_the_body_at_the_childs_failure_or_our_reported_overrun() {
    // The child's failure interrupts a body that waits on something else.
    let p = within("the pair", pair()).await;
    let (parent, child) = open(&p).await;
    let body = parent.within(std::future::pending::<Result<(), ActorError>>());
    let err = ActorError::from(RemoteActorError::user(acceptor_aid(), "Boom", "child broke"));
    let (r, ()) =
        within("the interrupt", async { tokio::join!(body, child.fails(&p, &err)) }).await;
    assert_eq!(r.unwrap_err().as_remote().map(|r| r.type_name.as_str()), Some("Boom"));
    assert_eq!(within("failed", parent.failed()).await.as_remote().unwrap().type_name, "Boom");

    // Our stream overran a child that never opened its: the child's report interrupts.
    let p = within("the pair", pair()).await;
    let (parent, _child) = open(&p).await;
    let ps = parent.open_stream_with(StreamConfig::overrunning()).await.unwrap();
    for n in 0..=STREAM_BUFFER as u32 {
        ps.send(&n).await.unwrap();
    }
    let r = within("the interrupt", parent.within(std::future::pending::<Result<(), _>>())).await;
    match r.unwrap_err() {
        ActorError::StreamOverrun { sender, receiver, .. } => {
            assert_eq!((sender, receiver), (dialer_aid(), acceptor_aid()));
        }
        other => panic!("{other:?}"),
    }

    // A body that ends first is the result; our own cancel is no failure.
    let p = within("the pair", pair()).await;
    let (parent, child) = open(&p).await;
    assert_eq!(within("body", parent.within(async { Ok(5) })).await.unwrap(), 5);
    parent.cancel().await.unwrap();
    child.fails(&p, &child.ctx.cancelled_error()).await;
    assert!(within("result", parent.result::<()>()).await.unwrap().is_cancelled());
    assert!(parent.failed().now_or_never().is_none(), "our own cancel is not a failure");
    assert_eq!(within("body", parent.within(async { Ok(6) })).await.unwrap(), 6);
    // The child side: a cancel is its failure.
    let p = within("the pair", pair()).await;
    let (parent, child) = open(&p).await;
    parent.cancel().await.unwrap();
    let e =
        within("the child's interrupt", child.ctx.within(std::future::pending::<Result<(), _>>()))
            .await
            .unwrap_err();
    assert_cancelled_by(e, &dialer_aid());
}

// ---- Fan-out ----

const FAN_ITEMS: u64 = 1000;
const FAN_CAP: usize = 64;

/// A source that is always ready: the worst case for readers racing a puller.
async fn ready_source() -> FanOut<u64> {
    let (tx, rx) = tokio::sync::mpsc::channel(FAN_ITEMS as usize);
    for i in 0..FAN_ITEMS {
        tx.send(i).await.unwrap();
    }
    FanOut::from_receiver(rx, FAN_CAP)
}

/// Ten readers that keep up get every item, never `Lagged`; one that stalls until they
/// are done alone lags, by what it missed, and resumes with the oldest item held.
async fn ten_readers_keep_up_and_a_stalled_one_lags() {
    let fan = ready_source().await;
    let mut stalled = fan.subscribe().unwrap();
    let subs: Vec<_> = (0..10).map(|_| fan.subscribe().unwrap()).collect();
    let readers: Vec<_> = subs
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let mut got = Vec::new();
                while got.len() < FAN_ITEMS as usize {
                    got.push(s.recv().await.expect("a reader that keeps up never lags").unwrap());
                }
                got
            })
        })
        .collect();
    for r in readers {
        assert_eq!(within("a reader", r).await.unwrap(), (0..FAN_ITEMS).collect::<Vec<_>>());
    }
    match within("the stalled reader", stalled.recv()).await {
        Err(ActorError::Lagged { missed }) => assert_eq!(missed, FAN_ITEMS - FAN_CAP as u64),
        other => panic!("expected Lagged, got {other:?}"),
    }
    for i in FAN_ITEMS - FAN_CAP as u64..FAN_ITEMS {
        assert_eq!(within("resumed", stalled.recv()).await.unwrap(), Some(i));
    }
}

#[tokio::test]
async fn fan_out_readers_that_keep_up_get_every_item_and_only_a_stalled_one_lags() {
    ten_readers_keep_up_and_a_stalled_one_lags().await;
}

/// On several threads a reader's thread may be descheduled for longer than the ring
/// takes to fill (this machine is shared): it may then lag, but nothing hangs, nothing
/// is lost without being counted, and every reader sees the items in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_readers_on_several_threads_get_everything_in_order_or_are_told_what_they_missed() {
    for _ in 0..20 {
        let fan = ready_source().await;
        // All subscribed before any reads (on several threads, a spawned reader runs at
        // once).
        let subs: Vec<_> = (0..10).map(|_| fan.subscribe().unwrap()).collect();
        let readers: Vec<_> = subs
            .into_iter()
            .map(|mut s| {
                tokio::spawn(async move {
                    let (mut next, mut missed_total) = (0, 0);
                    loop {
                        match s.recv().await {
                            Ok(Some(v)) => {
                                assert_eq!(v, next, "in order");
                                next += 1;
                            }
                            Ok(None) => break,
                            Err(ActorError::Lagged { missed }) => {
                                next += missed;
                                missed_total += missed;
                            }
                            Err(e) => panic!("{e:?}"),
                        }
                    }
                    assert_eq!(next, FAN_ITEMS);
                    missed_total
                })
            })
            .collect();
        drop(fan);
        for r in readers {
            within("a reader", r).await.unwrap();
        }
    }
}

/// Of two readers the faster never lags; the slower lags only by what it missed, and
/// what it gets plus what it missed is everything, in order.
#[tokio::test]
async fn fan_out_the_faster_of_two_readers_never_lags() {
    let fan = ready_source().await;
    let (mut fast, mut slow) = (fan.subscribe().unwrap(), fan.subscribe().unwrap());
    let fast = async move {
        let mut n = 0;
        while n < FAN_ITEMS {
            assert_eq!(fast.recv().await.expect("the faster never lags"), Some(n));
            n += 1;
        }
    };
    let slow = async move {
        let (mut next, mut missed_total, mut got) = (0, 0, 0);
        while next < FAN_ITEMS {
            match slow.recv().await {
                Ok(Some(v)) => {
                    assert_eq!(v, next, "in order, no gap but the one it was told of");
                    next += 1;
                    got += 1;
                    if got % 10 == 0 {
                        // Busy elsewhere for a while: not in `recv`.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                Err(ActorError::Lagged { missed }) => {
                    next += missed;
                    missed_total += missed;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got + missed_total, FAN_ITEMS);
    };
    within("both readers", async { tokio::join!(fast, slow) }).await;
}

#[tokio::test]
async fn fan_out_without_raise_on_lag_skips_silently_to_the_oldest_item_held() {
    let fan = FanOut::from_stream(futures::stream::iter(0..FAN_ITEMS), FAN_CAP).raise_on_lag(false);
    let (mut reader, mut stalled) = (fan.subscribe().unwrap(), fan.subscribe().unwrap());
    for i in 0..FAN_ITEMS {
        assert_eq!(within("reader", reader.recv()).await.unwrap(), Some(i));
    }
    assert_eq!(within("reader", reader.recv()).await.unwrap(), None, "the source ended");
    for i in FAN_ITEMS - FAN_CAP as u64..FAN_ITEMS {
        assert_eq!(within("stalled", stalled.recv()).await.unwrap(), Some(i), "no Lagged");
    }
    assert_eq!(within("stalled", stalled.recv()).await.unwrap(), None);
    // A subscriber that joins after the end: end of stream.
    let mut late = fan.subscribe().unwrap();
    assert_eq!(within("late", late.recv()).await.unwrap(), None);
}

#[tokio::test]
async fn fan_out_close_ends_every_subscriber_at_once_closes_the_source_and_refuses_new_ones() {
    let (tx, rx) = tokio::sync::mpsc::channel::<u32>(8);
    let fan = FanOut::from_receiver(rx, 4);
    let (mut waiting, mut other) = (fan.subscribe().unwrap(), fan.subscribe().unwrap());
    tx.send(1).await.unwrap();
    assert_eq!(within("first", waiting.recv()).await.unwrap(), Some(1));
    // `waiting` pulls from an empty channel when the fan-out closes: it ends.
    let (r, closed) =
        within("the close", async { tokio::join!(waiting.recv(), fan.close()) }).await;
    closed.unwrap();
    assert_eq!(r.unwrap(), None);
    assert_eq!(within("other", other.recv()).await.unwrap(), None, "at once, 1 unread or not");
    assert!(tx.is_closed(), "the channel was closed with the fan-out");
    assert_misuse(fan.subscribe().unwrap_err(), Misuse::SubscribeAfterClose);
    fan.close().await.unwrap(); // idempotent
}

#[tokio::test]
async fn a_fanned_out_stream_still_sends_and_every_subscriber_gets_its_error() {
    let p = within("the pair", pair()).await;
    let (parent, child) = open(&p).await;
    let (ps, cs) = streams(&parent, &child, StreamConfig::default()).await;
    let fan = ps.fan_out::<u32>(16);
    let (mut a, mut b) = (fan.subscribe().unwrap(), fan.subscribe().unwrap());
    fan.stream().expect("a stream's fan-out has its stream").send(&7u32).await.unwrap();
    assert_eq!(within("the child's read", cs.recv::<u32>()).await.unwrap(), Some(7));
    for n in 0..3u32 {
        cs.send(&n).await.unwrap();
    }
    let err = ActorError::from(RemoteActorError::user(acceptor_aid(), "Boom", "child broke"));
    child.fails(&p, &err).await;
    for s in [&mut a, &mut b] {
        for n in 0..3u32 {
            assert_eq!(within("an item", s.recv()).await.unwrap(), Some(n));
        }
        let e = within("the error", s.recv()).await.unwrap_err();
        assert_eq!(e.as_remote().map(|r| r.type_name.as_str()), Some("Boom"));
        assert_eq!(within("then the end", s.recv()).await.unwrap(), None);
    }
    assert!(FanOut::<u32>::from_stream(futures::stream::empty(), 1).stream().is_none());
}
