//! The connection layer over a real socket pair: multiplexing, routing, closing, credit,
//! the writer queue.

use super::*;
use crate::base::error::ActorError;
use crate::connection::testing::{
    LIMIT, acceptor_aid, assert_transport_closed, dialer_aid, pair, raw_pair, start_msg, within,
};
use futures::FutureExt;
use plough_ipc_wire::msg::Msg;
use plough_ipc_wire::payload::Payload;
use std::collections::BTreeSet;
use tokio::io::AsyncWriteExt;

/// A [`Conversation`] that records what the reader task hands it.
#[derive(Default)]
struct TestConv {
    delivered: Mutex<Vec<Msg>>,
    grants: Mutex<Vec<u32>>,
    closed: Mutex<Option<ActorError>>,
    gone: CancellationToken,
}

impl Conversation for TestConv {
    fn deliver(&self, msg: Msg, _channel: &Channel) {
        self.delivered.locked().push(msg);
    }
    fn grant(&self, n: u32) {
        self.grants.locked().push(n);
    }
    fn transport_closed(&self, err: ActorError) {
        *self.closed.locked() = Some(err);
        self.gone.cancel();
    }
}

/// Opens a call, sends its `Start` of `function(arg)`, returns its mailbox.
async fn start_call(ch: &Channel, function: &str, arg: u64) -> CallRx {
    let call = ch.open_call().expect("open a call");
    ch.send(start_msg(call.cid(), function, &arg, &dialer_aid())).await.expect("send the start");
    call
}

/// Calls `echo(arg)` and returns what came back, with the call's cid.
async fn echo(ch: &Channel, arg: u64) -> (Cid, u64) {
    let mut call = start_call(ch, "echo", arg).await;
    match within("an echo reply", call.recv()).await.expect("a reply") {
        Msg::Return { cid, payload } => {
            assert_eq!(cid, call.cid(), "the reply carries its call's cid");
            (cid, payload.decode().expect("a u64"))
        }
        other => panic!("expected a Return, got {other:?}"),
    }
}

fn routes(ch: &Channel) -> usize {
    ch.inner.calls.locked().len()
}

fn yield_msg(cid: Cid, n: u64) -> Msg {
    Msg::Yield { cid, payload: Payload::encode(&n).unwrap() }
}

#[tokio::test]
async fn cids_are_odd_for_the_dialer_and_even_for_the_acceptor() {
    let p = within("the pair", pair()).await;
    let d: Vec<Cid> = vec![
        p.dialer.open_call().unwrap().cid(),
        p.dialer.next_cid(),
        p.dialer.open_call().unwrap().cid(),
    ];
    let a: Vec<Cid> = vec![
        p.acceptor.open_call().unwrap().cid(),
        p.acceptor.next_cid(),
        p.acceptor.open_call().unwrap().cid(),
    ];
    assert_eq!(d, [1, 3, 5], "calls and contexts share the dialer's odd cids");
    assert_eq!(a, [2, 4, 6], "calls and contexts share the acceptor's even cids");
    assert_eq!(p.dialer.peer(), &acceptor_aid());
    assert_eq!(p.acceptor.peer(), &dialer_aid());
}

#[tokio::test]
async fn concurrent_calls_from_both_sides_each_get_their_own_reply() {
    let p = within("the pair", pair()).await;
    const N: u64 = 40;
    let from = |ch: &Channel, base: u64| {
        let ch = ch.clone();
        futures::future::join_all((0..N).map(move |i| {
            let ch = ch.clone();
            async move { (base + i, echo(&ch, base + i).await) }
        }))
    };
    let (d, a) = within("every reply", async {
        tokio::join!(from(&p.dialer, 1000), from(&p.acceptor, 2000))
    })
    .await;
    let mut cids = BTreeSet::new();
    for (sent, (cid, got)) in &d {
        assert_eq!(got, sent, "dialer call {cid} got another call's reply");
        assert_eq!(cid % 2, 1, "dialer cid {cid} is odd");
        assert!(cids.insert(*cid));
    }
    for (sent, (cid, got)) in &a {
        assert_eq!(got, sent, "acceptor call {cid} got another call's reply");
        assert_eq!(cid % 2, 0, "acceptor cid {cid} is even");
        assert!(cids.insert(*cid));
    }
    assert_eq!(cids.len() as u64, 2 * N);
    assert_eq!(p.acceptor_serve.served() as u64, N);
    assert_eq!(p.dialer_serve.served() as u64, N);
    assert_eq!(routes(&p.dialer), 0, "finished calls are forgotten");
    assert_eq!(routes(&p.acceptor), 0);
}

#[tokio::test]
async fn a_reply_nobody_waits_for_is_dropped_and_the_connection_carries_on() {
    let (ch, serve, mut raw) = within("the pair", raw_pair()).await;
    let mut call = ch.open_call().unwrap();
    assert_eq!(call.cid(), 1);
    // Replies for calls nobody made, a message without a cid, then the real reply.
    raw.send(Msg::Return { cid: 77, payload: Payload::encode(&"stray").unwrap() }).await;
    raw.send(crate::connection::testing::boom(&raw.aid, 79, "stray")).await;
    raw.send(yield_msg(81, 0)).await;
    raw.send(Msg::Hello(Default::default())).await;
    raw.send(Msg::Return { cid: 1, payload: Payload::encode(&"mine").unwrap() }).await;
    match within("the reply", call.recv()).await.unwrap() {
        Msg::Return { cid: 1, payload } => assert_eq!(payload.decode::<String>().unwrap(), "mine"),
        other => panic!("expected my Return, got {other:?}"),
    }
    // Still serving: a Start after the strays is answered.
    raw.send(start_msg(2, "echo", &9u64, &raw.aid)).await;
    assert_eq!(
        raw.expect().await,
        Msg::Return { cid: 2, payload: Payload::encode(&9u64).unwrap() }
    );
    assert!(!ch.is_closed());
    assert_eq!(serve.next_start().await.function, "echo");
    assert!(serve.try_start().is_none(), "strays never reach Serve::serve");
    drop(call);
}

#[tokio::test]
async fn dropping_a_call_rx_forgets_the_call_and_its_late_reply_is_dropped() {
    let (ch, _serve, mut raw) = within("the pair", raw_pair()).await;
    let call = ch.open_call().unwrap();
    let kept = ch.open_call().unwrap();
    assert_eq!(routes(&ch), 2);
    let forgotten = call.cid();
    drop(call);
    assert_eq!(routes(&ch), 1, "the dropped call's route is gone, the other stays");
    assert!(!ch.inner.calls.locked().contains_key(&forgotten));
    // Its late reply harms nothing; the other call still gets its own.
    let mut kept = kept;
    raw.send(Msg::Return { cid: forgotten, payload: Payload::encode(&1u8).unwrap() }).await;
    raw.send(Msg::Return { cid: kept.cid(), payload: Payload::encode(&2u8).unwrap() }).await;
    match within("the kept call's reply", kept.recv()).await.unwrap() {
        Msg::Return { cid, payload } => {
            assert_eq!(cid, kept.cid());
            assert_eq!(payload.decode::<u8>().unwrap(), 2);
        }
        other => panic!("expected a Return, got {other:?}"),
    }
    assert!(!ch.is_closed());
}

#[tokio::test]
async fn eof_closes_every_call_and_conversation_with_transport_closed_and_tells_serve() {
    let (ch, serve, raw) = within("the pair", raw_pair()).await;
    let mut calls: Vec<CallRx> = (0..3).map(|_| ch.open_call().unwrap()).collect();
    let conv = Arc::new(TestConv::default());
    ch.register_conv(ch.next_cid(), Arc::clone(&conv) as _).unwrap();
    let served = CancellationToken::new();
    ch.track_served(42, served.clone());
    let peer = raw.aid.clone();

    drop(raw); // The peer goes away: EOF.

    for call in &mut calls {
        let e = within("the mailbox to close", call.recv()).await.unwrap_err();
        assert_transport_closed(&e, &peer, "peer closed the connection");
    }
    within("the conversation to hear", conv.gone.cancelled()).await;
    assert_transport_closed(
        conv.closed.locked().as_ref().unwrap(),
        &peer,
        "peer closed the connection",
    );
    serve.wait_closed().await;
    assert_eq!(serve.closed_calls(), 1);
    assert!(served.is_cancelled(), "a call we served is cancelled when its caller is gone");
    assert!(ch.is_closed());
    within("closed()", ch.closed()).await;
    assert_eq!(routes(&ch), 0);
    assert_transport_closed(&ch.send(yield_msg(1, 0)).await.unwrap_err(), &peer, "peer closed");
    assert_transport_closed(&ch.open_call().unwrap_err(), &peer, "peer closed");
    let again = ch.register_conv(99, Arc::new(TestConv::default()) as _).unwrap_err();
    assert_transport_closed(&again, &peer, "peer closed");
    drop(calls);
}

#[tokio::test]
async fn a_framing_error_closes_the_connection_naming_it() {
    let (ch, serve, mut raw) = within("the pair", raw_pair()).await;
    let mut call = ch.open_call().unwrap();
    // Not a frame: a segment table claiming billions of segments.
    raw.framed.get_mut().write_all(&[0xff; 64]).await.unwrap();
    let e = within("the mailbox to close", call.recv()).await.unwrap_err();
    assert_transport_closed(&e, &raw.aid, "framing error");
    serve.wait_closed().await;
    assert_eq!(serve.closed_calls(), 1);
}

#[tokio::test]
async fn a_peer_channel_shutting_down_closes_both_ends() {
    let p = within("the pair", pair()).await;
    let mut pending = p.dialer.open_call().unwrap();
    p.acceptor.shutdown();
    let e = within("the dialer's call to close", pending.recv()).await.unwrap_err();
    assert_transport_closed(&e, &acceptor_aid(), "peer closed the connection");
    p.dialer_serve.wait_closed().await;
    p.acceptor_serve.wait_closed().await;
    assert_eq!((p.dialer_serve.closed_calls(), p.acceptor_serve.closed_calls()), (1, 1));
    assert!(p.dialer.is_closed());
    within("the acceptor to close", p.acceptor.closed()).await;
}

#[tokio::test]
async fn shutdown_flushes_every_queued_message_before_closing() {
    let (ch, serve, mut raw) = within("the pair", raw_pair()).await;
    // Queue 200 messages without yielding (the writer has not run), then shut down.
    for n in 0..200 {
        ch.send_detached(yield_msg(1, n));
    }
    ch.shutdown();
    for n in 0..200 {
        assert_eq!(raw.recv().await, Some(yield_msg(1, n)), "message {n} arrives, in order");
    }
    assert_eq!(raw.recv().await, None, "then EOF");
    assert!(!ch.is_closed(), "our reading half stays open until the peer closes");
    drop(raw);
    serve.wait_closed().await;
    assert!(ch.is_closed());
}

#[tokio::test]
async fn credit_goes_to_its_conversation_and_never_to_serve() {
    let (ch, serve, mut raw) = within("the pair", raw_pair()).await;
    let cid = ch.next_cid();
    let conv = Arc::new(TestConv::default());
    ch.register_conv(cid, Arc::clone(&conv) as _).unwrap();
    raw.send(start_msg(cid, CREDIT, &7u32, &raw.aid)).await;
    raw.send(start_msg(cid + 100, CREDIT, &5u32, &raw.aid)).await; // nobody's
    raw.send(start_msg(cid, CREDIT, &"not a count", &raw.aid)).await; // undecodable
    raw.send(start_msg(cid, CREDIT, &3u32, &raw.aid)).await;
    // A marker behind them: once it is served, the credit was routed.
    raw.send(start_msg(2, "echo", &0u64, &raw.aid)).await;
    assert_eq!(serve.next_start().await.function, "echo");
    assert_eq!(*conv.grants.locked(), [7, 3]);
    assert!(conv.delivered.locked().is_empty(), "credit is not a delivered message");
    assert_eq!(serve.served(), 1, "no credit reached Serve::serve");
    assert_eq!(raw.expect().await.cid(), Some(2));
}

#[tokio::test]
async fn a_conversation_gets_its_messages_until_unregistered() {
    let (ch, serve, mut raw) = within("the pair", raw_pair()).await;
    let cid = ch.next_cid();
    let conv = Arc::new(TestConv::default());
    ch.register_conv(cid, Arc::clone(&conv) as _).unwrap();
    let started = Msg::Started { cid, payload: Payload::encode(&"hi").unwrap() };
    raw.send(started.clone()).await;
    raw.send(yield_msg(cid, 1)).await;
    raw.send(Msg::Stop { cid }).await;
    raw.send(start_msg(2, "marker", &(), &raw.aid)).await;
    assert_eq!(serve.next_start().await.function, "marker");
    assert_eq!(*conv.delivered.locked(), [started, yield_msg(cid, 1), Msg::Stop { cid }]);

    ch.unregister_conv(cid);
    raw.send(yield_msg(cid, 2)).await;
    raw.send(start_msg(4, "marker", &(), &raw.aid)).await;
    assert_eq!(serve.next_start().await.function, "marker");
    assert_eq!(conv.delivered.locked().len(), 3, "nothing after unregistering");
    assert!(!ch.is_closed());
}

/// Needs the current-thread runtime: the writer task cannot run between two
/// `send_detached`s, so the queue really fills up.
#[tokio::test(flavor = "current_thread")]
async fn send_detached_never_waits_even_when_the_writer_queue_is_full() {
    let (ch, _serve, mut raw) = within("the pair", raw_pair()).await;
    const QUEUE: u64 = 256; // the writer queue's bound
    for n in 0..QUEUE {
        ch.send_detached(yield_msg(1, n));
    }
    assert!(ch.send(yield_msg(1, u64::MAX)).now_or_never().is_none(), "the queue is full");
    let began = std::time::Instant::now();
    for n in QUEUE..QUEUE + 100 {
        ch.send_detached(yield_msg(1, n)); // returns at once, queue full or not
    }
    assert!(began.elapsed() < LIMIT);
    for n in 0..QUEUE {
        assert_eq!(raw.expect().await, yield_msg(1, n), "the queued ones first, in order");
    }
    let mut overflow = BTreeSet::new();
    for _ in QUEUE..QUEUE + 100 {
        match raw.expect().await {
            Msg::Yield { payload, .. } => {
                assert!(overflow.insert(payload.decode::<u64>().unwrap()))
            }
            other => panic!("expected a Yield, got {other:?}"),
        }
    }
    assert_eq!(overflow, (QUEUE..QUEUE + 100).collect::<BTreeSet<_>>(), "then each overflow once");
}

#[tokio::test]
async fn served_calls_are_cancelled_by_cid_and_untracked() {
    let p = within("the pair", pair()).await;
    let (a, b) = (CancellationToken::new(), CancellationToken::new());
    p.acceptor.track_served(10, a.clone());
    p.acceptor.track_served(12, b.clone());
    assert!(p.acceptor.cancel_served(10));
    assert!(a.is_cancelled() && !b.is_cancelled());
    p.acceptor.untrack_served(12);
    assert!(!p.acceptor.cancel_served(12), "an untracked call is not running");
    assert!(!p.acceptor.cancel_served(14), "an unknown call is not running");
    assert!(!b.is_cancelled());
    // Over the wire: the peer's plough.cancel_call reaches the TestServe, which cancels.
    let c = CancellationToken::new();
    p.acceptor.track_served(16, c.clone());
    let mut ack = p.dialer.open_call().unwrap();
    let cancel = start_msg(ack.cid(), crate::base::names::CANCEL_CALL, &16u64, &dialer_aid());
    p.dialer.send(cancel).await.unwrap();
    match within("the ack", ack.recv()).await.unwrap() {
        Msg::CancelAck(a) => assert!(a.acked),
        other => panic!("expected a CancelAck, got {other:?}"),
    }
    assert!(c.is_cancelled());
    assert!(!p.acceptor.cancel_requested());
    p.acceptor.set_cancel_requested();
    assert!(p.acceptor.cancel_requested());
}
