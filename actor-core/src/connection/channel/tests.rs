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
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// A [`Conversation`] that records what the reader task hands it.
#[derive(Default)]
struct TestConv {
    delivered: Mutex<Vec<Msg>>,
    grants: Mutex<Vec<Credit>>,
    closed: Mutex<Option<ActorError>>,
    gone: CancellationToken,
}

impl Conversation for TestConv {
    fn deliver(&self, msg: Msg, _channel: &Channel) {
        self.delivered.locked().push(msg);
    }
    fn grant(&self, credit: Credit) {
        self.grants.locked().push(credit);
    }
    fn transport_closed(&self, err: ActorError) {
        *self.closed.locked() = Some(err);
        self.gone.cancel();
    }
}

/// Opens a call, sends its `Start` of `function(arg)`, returns its mailbox.
async fn start_call(ch: &Channel, function: &str, arg: u64) -> CallRx {
    let call = ch.open_call("f").expect("open a call");
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
        p.dialer.open_call("f").unwrap().cid(),
        p.dialer.next_cid(),
        p.dialer.open_call("f").unwrap().cid(),
    ];
    let a: Vec<Cid> = vec![
        p.acceptor.open_call("f").unwrap().cid(),
        p.acceptor.next_cid(),
        p.acceptor.open_call("f").unwrap().cid(),
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
    let mut call = ch.open_call("f").unwrap();
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
    assert_eq!(&*serve.next_start().await.function, "echo");
    assert!(serve.try_start().is_none(), "strays never reach Serve::serve");
    drop(call);
}

#[tokio::test]
async fn dropping_a_call_rx_forgets_the_call_and_its_late_reply_is_dropped() {
    let (ch, _serve, mut raw) = within("the pair", raw_pair()).await;
    let call = ch.open_call("f").unwrap();
    let kept = ch.open_call("f").unwrap();
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
    let mut calls: Vec<CallRx> = (0..3).map(|_| ch.open_call("f").unwrap()).collect();
    let conv = Arc::new(TestConv::default());
    ch.register_conv(ch.next_cid(), "ctx", Arc::clone(&conv) as _).unwrap();
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
    assert_transport_closed(&ch.open_call("f").unwrap_err(), &peer, "peer closed");
    let again = ch.register_conv(99, "ctx", Arc::new(TestConv::default()) as _).unwrap_err();
    assert_transport_closed(&again, &peer, "peer closed");
    drop(calls);
}

#[tokio::test]
async fn a_framing_error_closes_the_connection_naming_it() {
    let (ch, serve, mut raw) = within("the pair", raw_pair()).await;
    let mut call = ch.open_call("f").unwrap();
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
    let mut pending = p.dialer.open_call("f").unwrap();
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
    ch.register_conv(cid, "ctx", Arc::clone(&conv) as _).unwrap();
    raw.send(start_msg(cid, CREDIT, &(7u32, 700u64), &raw.aid)).await;
    raw.send(start_msg(cid + 100, CREDIT, &(5u32, 0u64), &raw.aid)).await; // nobody's
    raw.send(start_msg(cid, CREDIT, &"not a count", &raw.aid)).await; // undecodable
    raw.send(start_msg(cid, CREDIT, &(3u32, 1u64 << 40), &raw.aid)).await;
    // A marker behind them: once it is served, the credit was routed.
    raw.send(start_msg(2, "echo", &0u64, &raw.aid)).await;
    assert_eq!(&*serve.next_start().await.function, "echo");
    assert_eq!(
        *conv.grants.locked(),
        [Credit { messages: 7, bytes: 700 }, Credit { messages: 3, bytes: 1 << 40 }]
    );
    assert!(conv.delivered.locked().is_empty(), "credit is not a delivered message");
    assert_eq!(serve.served(), 1, "no credit reached Serve::serve");
    assert_eq!(raw.expect().await.cid(), Some(2));
}

#[tokio::test]
async fn a_conversation_gets_its_messages_until_unregistered() {
    let (ch, serve, mut raw) = within("the pair", raw_pair()).await;
    let cid = ch.next_cid();
    let conv = Arc::new(TestConv::default());
    ch.register_conv(cid, "ctx", Arc::clone(&conv) as _).unwrap();
    let started = Msg::Started { cid, payload: Payload::encode(&"hi").unwrap() };
    raw.send(started.clone()).await;
    raw.send(yield_msg(cid, 1)).await;
    raw.send(Msg::Stop { cid }).await;
    raw.send(start_msg(2, "marker", &(), &raw.aid)).await;
    assert_eq!(&*serve.next_start().await.function, "marker");
    assert_eq!(*conv.delivered.locked(), [started, yield_msg(cid, 1), Msg::Stop { cid }]);

    ch.unregister_conv(cid);
    raw.send(yield_msg(cid, 2)).await;
    raw.send(start_msg(4, "marker", &(), &raw.aid)).await;
    assert_eq!(&*serve.next_start().await.function, "marker");
    assert_eq!(conv.delivered.locked().len(), 3, "nothing after unregistering");
    assert!(!ch.is_closed());
}

/// Needs the current-thread runtime: the writer task cannot run between two
/// `send_detached`s, so the queue really fills up (the wire is held, as by a writer in the
/// middle of a write, so that nothing is written through).
#[tokio::test(flavor = "current_thread")]
async fn send_detached_never_waits_even_when_the_writer_queue_is_full() {
    let (ch, _serve, mut raw) = within("the pair", raw_pair()).await;
    const QUEUE: u64 = 256; // the writer queue's bound
    let busy = ch.inner.wire.try_lock().unwrap();
    for n in 0..QUEUE {
        ch.send_detached(yield_msg(1, n));
    }
    assert!(ch.send(yield_msg(1, u64::MAX)).now_or_never().is_none(), "the queue is full");
    let began = std::time::Instant::now();
    for n in QUEUE..QUEUE + 100 {
        ch.send_detached(yield_msg(1, n)); // returns at once, queue full or not
    }
    assert!(began.elapsed() < LIMIT);
    drop(busy);
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
    let mut ack = p.dialer.open_call("f").unwrap();
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

// ---- bad input fails one call, with a typed answer; a flood is refused, not queued ----

/// The frame of `msg` with the `u16` right after its cid's word (a `Start`'s `kind`)
/// replaced by `raw_kind`: an enum value this build may not know. `cid` must be a value
/// no earlier word of the frame holds.
fn with_raw_kind(msg: &Msg, cid: Cid, raw_kind: u16) -> Vec<u8> {
    let mut bytes = frame_bytes(msg);
    let at = word_of(&bytes, cid);
    bytes[at + 8..at + 10].copy_from_slice(&raw_kind.to_le_bytes());
    bytes
}

/// The frame of `msg` as it goes on the wire.
fn frame_bytes(msg: &Msg) -> Vec<u8> {
    use tokio_util::codec::Encoder;
    let mut buf = Default::default();
    plough_ipc_wire::FrameCodec::default().encode(msg, &mut buf).unwrap();
    buf.to_vec()
}

/// The byte offset of the (first) word holding `value`.
fn word_of(bytes: &[u8], value: u64) -> usize {
    bytes.chunks_exact(8).position(|w| w == value.to_le_bytes()).expect("the word") * 8
}

/// The frame of `msg` with its `Msg` union discriminant set to `discriminant` (a member
/// of a newer schema). The root struct's data word follows the segment table and the
/// root pointer; the discriminant is its low 16 bits.
fn with_discriminant(msg: &Msg, discriminant: u16) -> Vec<u8> {
    let mut bytes = frame_bytes(msg);
    bytes[16..18].copy_from_slice(&discriminant.to_le_bytes());
    bytes
}

async fn write_raw(raw: &mut RawPeer, bytes: &[u8]) {
    within("a raw write", raw.framed.get_mut().write_all(bytes)).await.unwrap();
}

/// Asserts `msg` is an `Error` of `kind` for call `cid` raised by `source`, whose message
/// contains `text`.
#[track_caller]
fn assert_error(msg: &Msg, cid: Cid, kind: ErrorKind, source: &Aid, text: &str) {
    match msg {
        Msg::Error(e) => {
            assert_eq!((e.cid, e.kind, &e.source), (Some(cid), kind, source), "{e:?}");
            assert_eq!(e.type_name, kind.type_name());
            assert!(e.message.contains(text), "{:?} does not contain {text:?}", e.message);
        }
        other => panic!("expected an Error for call {cid}, got {other:?}"),
    }
}

use crate::connection::testing::{RawPeer, raw_pair_with};
use plough_ipc_wire::msg::ErrorKind;

#[tokio::test]
async fn a_call_with_an_unknown_enum_value_is_answered_with_bad_message_and_the_next_call_answers()
{
    let (ch, serve, mut raw) = within("the pair", raw_pair()).await;
    // A `Start` whose `kind` is 9: no such CallKind in this build. (A cid no other word
    // of the frame holds, so the patch finds its word.)
    const CID: Cid = 0x0123_4567_89ab_cdee;
    let start = start_msg(CID, "echo", &1u64, &raw.aid);
    write_raw(&mut raw, &with_raw_kind(&start, CID, 9)).await;
    let answer = raw.expect().await;
    assert_error(&answer, CID, ErrorKind::BadMessage, &dialer_aid(), "unknown value 9 for `kind`");
    // The connection carries on: the next call is served and answered.
    raw.send(start_msg(4, "echo", &5u64, &raw.aid)).await;
    assert_eq!(
        raw.expect().await,
        Msg::Return { cid: 4, payload: Payload::encode(&5u64).unwrap() }
    );
    assert_eq!(serve.next_start().await.cid, 4);
    assert_eq!(serve.served(), 1, "the unreadable call never reached Serve::serve");
    assert_eq!(ch.calls_in_flight(), 0, "nothing stays counted");
    assert!(!ch.is_closed());
}

#[tokio::test]
async fn an_unknown_message_variant_fails_the_call_it_names_on_either_side() {
    let (ch, serve, mut raw) = within("the pair", raw_pair()).await;
    // A newer peer's member (discriminant 200) for a call of its own, cid 6.
    let newer = Msg::StartAck(plough_ipc_wire::msg::StartAck { cid: 6, ..Default::default() });
    write_raw(&mut raw, &with_discriminant(&newer, 200)).await;
    let answer = raw.expect().await;
    assert_error(&answer, 6, ErrorKind::BadMessage, &dialer_aid(), "unknown message variant 200");
    // The same for a reply to a call we made: our call fails, the peer gets nothing.
    let mut call = ch.open_call("f").unwrap();
    let reply =
        Msg::StartAck(plough_ipc_wire::msg::StartAck { cid: call.cid(), ..Default::default() });
    write_raw(&mut raw, &with_discriminant(&reply, 201)).await;
    let got = within("our call's error", call.recv()).await.unwrap();
    assert_error(&got, call.cid(), ErrorKind::BadMessage, &dialer_aid(), "variant 201");
    // An unknown member that names no call (no struct behind it) is skipped.
    write_raw(&mut raw, &with_discriminant(&Msg::Stop { cid: 0 }, 202)).await;
    raw.send(start_msg(8, "echo", &8u64, &raw.aid)).await;
    assert_eq!(raw.expect().await.cid(), Some(8), "the first answer after it is the echo's");
    assert_eq!(serve.next_start().await.cid, 8);
    assert!(!ch.is_closed());
}

#[tokio::test]
async fn a_malformed_reply_fails_our_call_and_a_malformed_context_message_fails_both_sides() {
    let (ch, _serve, mut raw) = within("the pair", raw_pair()).await;
    let mut call = ch.open_call("f").unwrap();
    // A `Return` whose payload pointer points far past the end of its segment.
    let reply = Msg::Return { cid: call.cid(), payload: Payload::from(vec![7u8; 8]) };
    let mut bytes = frame_bytes(&reply);
    let n = bytes.len();
    bytes[n - 16..n - 8].copy_from_slice(&0x0000_00ff_0000_0001u64.to_le_bytes());
    write_raw(&mut raw, &bytes).await;
    let got = within("our call's error", call.recv()).await.unwrap();
    assert_error(&got, call.cid(), ErrorKind::BadMessage, &dialer_aid(), "malformed return");
    // A context: its conversation hears of it, and so does the peer.
    let cid = ch.next_cid();
    let conv = Arc::new(TestConv::default());
    ch.register_conv(cid, "ctx", Arc::clone(&conv) as _).unwrap();
    let start = start_msg(cid, "ctx", &(), &raw.aid);
    write_raw(&mut raw, &with_raw_kind(&start, cid, 77)).await;
    assert_error(&raw.expect().await, cid, ErrorKind::BadMessage, &dialer_aid(), "77");
    let delivered = conv.delivered.locked().clone();
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_error(&delivered[0], cid, ErrorKind::BadMessage, &dialer_aid(), "77");
    // A context the peer opened and we serve: an unreadable `Yield` of it is answered, but
    // the context still runs until its own answer, so it stays counted in flight.
    raw.send(start_msg(2, "ctx", &(), &raw.aid)).await;
    assert_eq!(_serve.next_start().await.cid, 2);
    let served = Arc::new(TestConv::default());
    ch.register_conv(2, "ctx", Arc::clone(&served) as _).unwrap();
    let mut bytes = frame_bytes(&Msg::Yield { cid: 2, payload: Payload::from(vec![7u8; 8]) });
    let n = bytes.len();
    bytes[n - 16..n - 8].copy_from_slice(&0x0000_00ff_0000_0001u64.to_le_bytes());
    write_raw(&mut raw, &bytes).await;
    assert_error(&raw.expect().await, 2, ErrorKind::BadMessage, &dialer_aid(), "malformed yield");
    assert_eq!(served.delivered.locked().len(), 1);
    assert_eq!(ch.calls_in_flight(), 1, "the served context is still in flight");
    assert!(!ch.is_closed());
}

#[tokio::test]
async fn calls_over_the_cap_are_refused_with_too_many_calls_until_one_finishes() {
    const CAP: usize = 8;
    let budgets = Budgets { max_calls_in_flight: CAP, ..Budgets::default() };
    let (ch, serve, mut raw) = within("the pair", raw_pair_with(&budgets)).await;
    // `hold` is recorded and never answered: each stays in flight.
    let held: Vec<Cid> = (1..=CAP as u64).map(|i| 2 * i).collect();
    for &cid in &held {
        raw.send(start_msg(cid, "hold", &(), &raw.aid)).await;
    }
    for _ in 0..CAP {
        serve.next_start().await;
    }
    assert_eq!(ch.calls_in_flight(), CAP);
    // Over the cap: each refused at once, with its own cid, never served.
    let over: Vec<Cid> = (100..110).map(|i| 2 * i).collect();
    for &cid in &over {
        raw.send(start_msg(cid, "echo", &cid, &raw.aid)).await;
    }
    for &cid in &over {
        assert_error(&raw.expect().await, cid, ErrorKind::TooManyCalls, &dialer_aid(), "refused");
    }
    assert_eq!(serve.served(), CAP);
    // A cancel is never refused, nor counted: it reaches the saturated actor.
    let cancel = start_msg(300, crate::base::names::CANCEL_CALL, &held[1], &raw.aid);
    raw.send(cancel).await;
    match raw.expect().await {
        Msg::CancelAck(a) => assert_eq!(a.cid, 300),
        other => panic!("expected the cancel's ack, got {other:?}"),
    }
    assert_eq!(serve.next_start().await.cid, 300);
    assert_eq!(ch.calls_in_flight(), CAP);
    // Stream credit and a reply to our own call are not calls: never refused.
    let mut mine = ch.open_call("f").unwrap();
    raw.send(Msg::Return { cid: mine.cid(), payload: Payload::encode(&1u8).unwrap() }).await;
    assert!(matches!(within("our reply", mine.recv()).await.unwrap(), Msg::Return { .. }));
    // A stream overrun told mid-context is not an answer: the call stays in flight.
    let overrun = RemoteActorError::new(dialer_aid(), ErrorKind::StreamOverrun, "too fast");
    ch.send(Msg::Error(Box::new(overrun.to_msg(Some(held[0]))))).await.unwrap();
    assert_eq!(raw.expect().await.cid(), Some(held[0]));
    assert_eq!(ch.calls_in_flight(), CAP);
    // One held call is answered: one more call fits, and is served.
    ch.send(Msg::Return { cid: held[0], payload: Payload::encode(&()).unwrap() }).await.unwrap();
    assert_eq!(raw.expect().await.cid(), Some(held[0]));
    assert_eq!(ch.calls_in_flight(), CAP - 1);
    raw.send(start_msg(1000, "echo", &3u64, &raw.aid)).await;
    assert_eq!(
        raw.expect().await,
        Msg::Return { cid: 1000, payload: Payload::encode(&3u64).unwrap() }
    );
    assert_eq!(serve.served(), CAP + 2, "the held calls, the cancel, the echo");
    assert_eq!(ch.calls_in_flight(), CAP - 1, "the echo was answered: out of flight again");
    assert!(!ch.is_closed());
}

/// A peer that floods calls and never reads our answers: once the writer's queue is full
/// the reader stops reading that peer, instead of piling refusals up in memory (no task,
/// no message beyond the queue); when the peer reads again, every call gets its refusal.
#[tokio::test(flavor = "current_thread")]
async fn a_flood_over_the_cap_from_a_peer_that_does_not_read_is_backpressured_not_queued() {
    const FLOOD: usize = 20_000;
    let budgets = Budgets { max_calls_in_flight: 0, ..Budgets::default() };
    let (ch, serve, raw) = within("the pair", raw_pair_with(&budgets)).await;
    let peer = raw.aid.clone();
    let (mut read_half, mut write_half) = tokio::io::split(raw.framed.into_inner());
    // 20,000 Starts (about 2 MB, far more than both socket buffers hold); nothing read.
    let one = frame_bytes(&start_msg(2, "echo", &0u64, &peer));
    let flood: Vec<u8> = one.iter().copied().cycle().take(one.len() * FLOOD).collect();
    let tasks_before = tokio::runtime::Handle::current().metrics().num_alive_tasks();
    let writer =
        tokio::spawn(async move { write_half.write_all(&flood).await.map(|()| write_half) });
    // The writer's queue fills up (the socket towards the peer is full)...
    within("the writer queue to fill", async {
        while ch.inner.tx.capacity() > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    // ...and then the reader waits for room instead of reading on: the flood is stuck,
    // and no task was spawned per refusal.
    for _ in 0..1000 {
        tokio::task::yield_now().await;
    }
    assert!(!writer.is_finished(), "the flooder is backpressured");
    let tasks = tokio::runtime::Handle::current().metrics().num_alive_tasks();
    assert!(tasks <= tasks_before + 1, "{tasks} tasks alive, {tasks_before} before the flood");
    assert_eq!(ch.inner.tx.capacity(), 0);
    assert_eq!(serve.served(), 0, "no refused call reached Serve::serve");
    // The peer reads: every call has its refusal, in order, and the flood completes.
    let mut framed = tokio_util::codec::FramedRead::new(
        &mut read_half,
        plough_ipc_wire::FrameCodec::new(plough_ipc_wire::Limits::DEFAULT),
    );
    for _ in 0..FLOOD {
        let frame = within("a refusal", framed.next()).await.unwrap().unwrap();
        let msg = frame.decode().unwrap();
        assert_error(&msg, 2, ErrorKind::TooManyCalls, &dialer_aid(), "refused");
    }
    within("the flood to be written", writer).await.unwrap().unwrap();
    assert!(!ch.is_closed());
}

/// A peer that sends a segment table claiming 1,000 words, then 10 bytes, then nothing, is
/// dropped once its frame is [`Budgets::frame_read`] late, with the reason, while a call of
/// ours on the same connection is failed (not left waiting).
#[tokio::test]
async fn a_stalled_frame_is_dropped_at_the_frame_read_deadline() {
    let frame_read = Duration::from_millis(300);
    let budgets = Budgets { frame_read, ..Budgets::default() };
    let (ch, _serve, mut raw) = within("the pair", raw_pair_with(&budgets)).await;
    // Slow between frames is fine: nothing partial, no deadline.
    raw.send(start_msg(2, "echo", &1u64, &raw.aid)).await;
    assert_eq!(
        raw.expect().await,
        Msg::Return { cid: 2, payload: Payload::encode(&1u64).unwrap() }
    );
    let mut ours = ch.open_call("f").unwrap();
    let mut head = vec![0u8; 8];
    head[4..8].copy_from_slice(&1000u32.to_le_bytes());
    head.extend_from_slice(&[0xee; 10]);
    let sent = std::time::Instant::now();
    raw.framed.get_mut().write_all(&head).await.unwrap();
    within("the stalled peer's drop", ch.closed()).await;
    let took = sent.elapsed();
    assert!(took >= frame_read, "dropped after {took:?}, before the deadline");
    assert!(took < frame_read + Duration::from_millis(700), "dropped only after {took:?}");
    match ch.closed_error() {
        ActorError::TransportClosed { detail, .. } => {
            assert!(detail.contains("frame read deadline"), "{detail}")
        }
        other => panic!("expected TransportClosed, got {other:?}"),
    }
    assert!(matches!(
        within("our call's end", ours.recv()).await,
        Err(ActorError::TransportClosed { .. })
    ));
    assert!(raw.recv().await.is_none(), "the stalled peer sees its connection closed");
}

/// A peer that sends every frame slowly, in pieces, each frame within the deadline but all
/// of them together over it, is served: the deadline is per frame, from its first byte.
#[tokio::test]
async fn a_slow_peer_whose_frames_each_arrive_in_time_is_served() {
    let frame_read = Duration::from_millis(400);
    let budgets = Budgets { frame_read, ..Budgets::default() };
    let (ch, serve, mut raw) = within("the pair", raw_pair_with(&budgets)).await;
    let began = std::time::Instant::now();
    for i in 0..5u64 {
        let cid = 2 * (i + 1);
        let bytes = frame_bytes(&start_msg(cid, "echo", &i, &raw.aid));
        // Four pieces 50 ms apart: each frame takes ~150 ms of its 400 ms.
        for piece in bytes.chunks(bytes.len().div_ceil(4)) {
            raw.framed.get_mut().write_all(piece).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(raw.expect().await, Msg::Return { cid, payload: Payload::encode(&i).unwrap() });
    }
    assert!(began.elapsed() > frame_read * 2, "the frames together took longer than one deadline");
    assert_eq!(serve.served(), 5);
    assert!(!ch.is_closed());
}

/// Connections sharing a [`FrameBudget`](plough_ipc_wire::FrameBudget) (as an actor's
/// do): the one whose partial frame would take it over the budget is closed with the
/// reason; the one holding a partial frame within it, and others, serve on.
#[tokio::test]
async fn a_partial_frame_over_the_shared_budget_closes_its_connection_only() {
    let budget = plough_ipc_wire::FrameBudget::new(1500);
    let mut ends = Vec::new();
    for _ in 0..3 {
        let (mut ed, ea) =
            crate::connection::testing::established_pair(&dialer_aid(), &acceptor_aid()).await;
        ed.framed.codec_mut().set_frame_budget(budget.clone());
        let serve = crate::connection::testing::TestServe::new(dialer_aid());
        let ch =
            Channel::start(ed, true, dialer_aid(), &Budgets::default(), Arc::clone(&serve) as _);
        ends.push((ch, RawPeer::new(ea.framed, acceptor_aid(), ea.peer)));
    }
    // A table claiming 1,000 words (8,008 bytes: over the budget on its own) vs 100 words.
    let head = |words: u32| {
        let mut h = vec![0u8; 8];
        h[4..8].copy_from_slice(&words.to_le_bytes());
        h.extend_from_slice(&[0; 16]);
        h
    };
    ends[0].1.framed.get_mut().write_all(&head(100)).await.unwrap();
    within("the first partial frame charged", async {
        while budget.used() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(budget.used(), 8 + 800);
    ends[1].1.framed.get_mut().write_all(&head(1000)).await.unwrap();
    within("the hog's connection closed", ends[1].0.closed()).await;
    match ends[1].0.closed_error() {
        ActorError::TransportClosed { detail, .. } => {
            assert!(detail.contains("over the budget"), "{detail}")
        }
        other => panic!("expected TransportClosed, got {other:?}"),
    }
    assert_eq!(budget.used(), 8 + 800, "the refused frame was never charged");
    // The third connection serves calls, and so does the first once its frame completes.
    let (ch2, raw2) = &mut ends[2];
    raw2.send(start_msg(2, "echo", &5u64, &raw2.aid)).await;
    assert_eq!(
        raw2.expect().await,
        Msg::Return { cid: 2, payload: Payload::encode(&5u64).unwrap() }
    );
    assert!(!ch2.is_closed() && !ends[0].0.is_closed());
    // The first ends mid-frame: its charge is given back.
    let (ch0, raw0) = ends.remove(0);
    drop(raw0);
    within("the first connection's end", ch0.closed()).await;
    within("the charge given back", async {
        while budget.used() != 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_large_message_waits_for_the_writer_while_the_outgoing_bytes_are_over_the_budget() {
    // By copy: a lent payload would not queue its bytes.
    let budgets = Budgets { outgoing_bytes: MIB, shm_threshold: None, ..Budgets::default() };
    let (ch, _serve, mut raw) = within("the pair", raw_pair_with(&budgets)).await;
    let big = |i: u8| Msg::Return { cid: 2, payload: Payload::from(vec![i; 3 * MIB / 4]) };
    // The peer does not read: the first large message stays queued or half written.
    within("the first send", ch.send(big(1))).await.unwrap();
    let mut second = Box::pin(ch.send(big(2)));
    assert!((&mut second).now_or_never().is_none(), "3/4 MiB queued: the next waits");
    // Small messages are not held back.
    within("a small send", ch.send(start_msg(3, "small", &(), &dialer_aid()))).await.unwrap();
    // A message larger than the whole budget waits for the queue of large ones to empty.
    let huge = Msg::Return { cid: 4, payload: Payload::from(vec![9; 3 * MIB]) };
    let reader = async {
        let mut got = Vec::new();
        while got.len() < 4 {
            let m = raw.expect().await;
            got.push((m.cid(), m.payload().map(|p| p.len())));
        }
        got
    };
    let sends = async {
        second.await.unwrap();
        ch.send(huge).await.unwrap();
    };
    let (got, ()) = within("the peer reads", async { tokio::join!(reader, sends) }).await;
    let small = Payload::encode(&()).unwrap().len();
    assert_eq!(
        got,
        [
            (Some(2), Some(3 * MIB / 4)),
            (Some(3), Some(small)),
            (Some(2), Some(3 * MIB / 4)),
            (Some(4), Some(3 * MIB))
        ],
        "everything arrives, in the order it was queued"
    );
}

/// Needs the current-thread runtime: nothing is written until the test awaits, so the
/// items really pile up in the outbox, past its bound, with other messages among them.
#[tokio::test(flavor = "current_thread")]
async fn small_stream_items_leave_in_batches_and_keep_their_place_among_other_messages() {
    let (ch, _serve, mut raw) = within("the pair", raw_pair()).await;
    let n = OUTBOX as u64 + 300; // past the outbox's bound: a sender then waits for the writer
    let mut sent = vec![Msg::Stop { cid: 9 }];
    ch.send(Msg::Stop { cid: 9 }).await.unwrap();
    for i in 0..n {
        let m = if i == 100 {
            Msg::Stop { cid: 3 }
        } else {
            yield_msg(if i % 500 < 400 { 1 } else { 3 }, i)
        };
        sent.push(m.clone());
        ch.send(m).await.unwrap();
    }
    sent.push(Msg::Stop { cid: 1 });
    ch.send(Msg::Stop { cid: 1 }).await.unwrap();
    // Read the frames themselves: how many carried the items.
    let mut got = Vec::new();
    let mut frames = 0;
    while got.len() < sent.len() {
        let frame = within("a frame", raw.framed.next()).await.expect("a frame").expect("ok");
        frames += 1;
        match frame.decode().expect("a message") {
            Msg::Yields { cid, payloads } => {
                assert!(payloads.len() > 1, "a batch holds several items");
                got.extend(payloads.into_iter().map(|payload| Msg::Yield { cid, payload }));
            }
            m => got.push(m),
        }
    }
    if let Some(i) = (0..sent.len()).find(|&i| got.get(i) != sent.get(i)) {
        panic!(
            "message {i} differs: got {:?}, sent {:?}",
            &got[i..(i + 3).min(got.len())],
            &sent[i..(i + 3).min(sent.len())]
        );
    }
    assert!(frames < sent.len() / 10, "{frames} frames for {} messages", sent.len());
}

/// A sender that fills the outbox waits for the writer to take it, rather than sending its
/// next items through the queue one by one (several times an item's cost in a segment);
/// everything still arrives, in order, in batches.
#[tokio::test(flavor = "current_thread")]
async fn a_full_outbox_makes_the_next_item_wait_for_the_writer_not_the_queue() {
    let (ch, _serve, mut raw) = within("the pair", raw_pair()).await;
    let n = 2 * OUTBOX as u64 + 10;
    // The writer cannot run until we yield: the outbox fills without waiting.
    for i in 0..OUTBOX as u64 {
        ch.send(yield_msg(1, i)).now_or_never().expect("room in the outbox").unwrap();
    }
    let marker_only = QUEUE - 1;
    assert_eq!(ch.inner.tx.capacity(), marker_only, "the outbox's marker alone is queued");
    let mut next = std::pin::pin!(ch.send(yield_msg(1, OUTBOX as u64)));
    assert!(futures::poll!(next.as_mut()).is_pending(), "a full outbox makes the item wait");
    assert_eq!(ch.inner.tx.capacity(), marker_only, "the waiting item is not queued");
    within("room in the outbox", next).await.unwrap();
    for i in OUTBOX as u64 + 1..n {
        within("room in the outbox", ch.send(yield_msg(1, i))).await.unwrap();
    }
    ch.send(Msg::Stop { cid: 1 }).await.unwrap();
    let mut got = Vec::new();
    loop {
        let frame = within("a frame", raw.framed.next()).await.expect("a frame").expect("ok");
        match frame.decode().expect("a message") {
            Msg::Yields { cid: 1, payloads } => got.extend(payloads),
            Msg::Yield { cid: 1, payload } => got.push(payload),
            Msg::Stop { cid: 1 } => break,
            m => panic!("unexpected {m:?}"),
        }
    }
    let want: Vec<Payload> = (0..n)
        .map(|i| match yield_msg(1, i) {
            Msg::Yield { payload, .. } => payload,
            _ => unreachable!(),
        })
        .collect();
    assert!(got == want, "{} items arrive of {n}, in the order sent", got.len());
}

/// A sender waiting for room in a full outbox is not stranded when the connection goes:
/// it gets the connection's error.
#[tokio::test(flavor = "current_thread")]
async fn a_sender_waiting_for_the_outbox_learns_that_the_connection_is_gone() {
    let (ch, _serve, raw) = within("the pair", raw_pair()).await;
    for i in 0..OUTBOX as u64 {
        ch.send(yield_msg(1, i)).now_or_never().expect("room in the outbox").unwrap();
    }
    // The writer cannot take the outbox while we hold the wire.
    let busy = ch.inner.wire.try_lock().unwrap();
    let mut next = std::pin::pin!(ch.send(yield_msg(1, OUTBOX as u64)));
    assert!(futures::poll!(next.as_mut()).is_pending(), "a full outbox makes the item wait");
    drop(raw); // The reader reads EOF: the connection is gone.
    let sent = within("the connection's end", next).await;
    assert!(matches!(sent, Err(ActorError::TransportClosed { .. })), "{sent:?}");
    drop(busy);
}

/// A `Return` of `n` with `pad` bytes of padding (to fill the socket quickly).
fn return_msg(cid: Cid, n: u64, pad: usize) -> Msg {
    Msg::Return { cid, payload: Payload::encode(&(n, vec![0u8; pad])).unwrap() }
}

/// With the writer idle and nothing queued, a message is written by its sender (no trip
/// through the queue); while anything is queued, later messages queue behind it, so the
/// peer reads them in the order they were sent either way.
#[tokio::test(flavor = "current_thread")]
async fn a_message_is_written_through_only_behind_an_empty_queue() {
    let (ch, _serve, mut raw) = within("the pair", raw_pair()).await;
    // Idle: written at once, the queue untouched.
    ch.send_detached(return_msg(3, 0, 0));
    assert!(ch.queue_is_empty());
    assert_eq!(ch.inner.wire.try_lock().unwrap().sink.as_ref().unwrap().pending(), 0);
    // The writer busy: queued; once it is free, a later message still queues behind the
    // first (the current-thread writer has not run yet).
    let busy = ch.inner.wire.try_lock().unwrap();
    ch.send(return_msg(5, 1, 0)).await.unwrap();
    assert!(!ch.queue_is_empty());
    drop(busy);
    ch.send(return_msg(7, 2, 0)).await.unwrap();
    ch.send_detached(return_msg(9, 3, 0));
    for (cid, n) in [(3, 0), (5, 1), (7, 2), (9, 3)] {
        assert_eq!(raw.expect().await, return_msg(cid, n, 0), "in the order sent");
    }
}

/// A peer that does not read: a write-through never piles bytes up in the sink (it writes
/// only onto an empty one), so once the socket is full, messages wait in the bounded queue
/// and a sender ends up waiting; once the peer reads, everything arrives, in order.
#[tokio::test(flavor = "current_thread")]
async fn a_peer_that_does_not_read_meets_the_queue_bound_and_loses_nothing() {
    let (ch, _serve, mut raw) = within("the pair", raw_pair()).await;
    // The writer cannot run until we yield: fill the socket by writing through.
    let mut n = 0u64;
    let refused = loop {
        assert!(n < 100_000, "the socket never filled");
        let msg = return_msg(1, n, 1024);
        ch.note_outgoing(&msg);
        match ch.write_through(msg) {
            None => n += 1,
            Some(msg) => break msg,
        }
    };
    let pending = ch.inner.wire.try_lock().unwrap().sink.as_ref().unwrap().pending();
    assert!(pending > 0 && pending < 2048, "one message's rest waits in the sink: {pending}");
    assert_eq!(refused, return_msg(1, n, 1024), "the next one is given back, for the queue");
    // The queue fills behind it and the sender waits.
    let sender = {
        let ch = ch.clone();
        tokio::spawn(async move {
            for k in n..n + 1000 {
                ch.send(return_msg(1, k, 1024)).await.unwrap();
            }
        })
    };
    let full = std::time::Instant::now();
    while ch.inner.tx.capacity() > 0 {
        assert!(full.elapsed() < LIMIT, "the queue never filled");
        tokio::task::yield_now().await;
    }
    assert!(!sender.is_finished());
    for k in 0..n + 1000 {
        assert_eq!(raw.expect().await, return_msg(1, k, 1024));
    }
    within("the sender", sender).await.unwrap();
}

/// A message over the frame limit never reaches the writer (which could not encode it, and
/// would end the connection): an answer becomes an error answer for its call, anything
/// else is refused to its sender, and the connection carries on.
#[tokio::test]
async fn a_message_over_the_frame_limit_fails_alone_and_the_connection_carries_on() {
    let budgets = Budgets { shm_threshold: None, ..Budgets::default() };
    let (ch, _serve, mut raw) = within("the pair", raw_pair_with(&budgets)).await;
    let over = Payload::from(vec![1u8; 65 * MIB]);
    // A peer's call answered with too much: it gets an error answer instead.
    within("the answer", ch.send(Msg::Return { cid: 2, payload: over.clone() })).await.unwrap();
    match raw.expect().await {
        Msg::Error(e) => {
            assert_eq!((e.cid, e.kind), (Some(2), ErrorKind::PayloadEncode), "{e:?}");
            assert!(e.message.contains("frame limit"), "{}", e.message);
        }
        other => panic!("expected the error answer, got {other:?}"),
    }
    // The same through the reader's path (an answer given without waiting): handed back,
    // as any large one, for `send`, which answers with the error.
    let back = ch.send_without_waiting(Msg::Return { cid: 4, payload: over.clone() });
    ch.send(back.expect("a large answer is handed back")).await.unwrap();
    assert!(matches!(raw.expect().await, Msg::Error(e) if e.cid == Some(4)));
    // Our own call with too large arguments, or a stream item: refused to the sender.
    let start = match start_msg(3, "f", &(), &dialer_aid()) {
        Msg::Start(mut s) => {
            s.args = over.clone();
            Msg::Start(s)
        }
        _ => unreachable!(),
    };
    let e = ch.send(start).await.unwrap_err();
    assert!(
        matches!(&e, ActorError::Encode { detail, .. } if detail.contains("frame limit")),
        "{e}"
    );
    assert!(ch.send(Msg::Yield { cid: 5, payload: over }).await.is_err());
    // Nothing of them was written, and the connection carries on.
    ch.send(return_msg(7, 1, 0)).await.unwrap();
    assert_eq!(raw.expect().await, return_msg(7, 1, 0));
    assert!(!ch.is_closed());
}

const MIB: usize = 1 << 20;

/// A channel and a raw peer whose frames carry 1 MiB at most, so that a larger payload can
/// go only through shared memory (lent from 1 MiB on), `shm_lent` bytes of it at once.
async fn lending_pair(shm_lent: usize) -> (Channel, RawPeer) {
    let budgets = Budgets { shm_threshold: Some(MIB), shm_lent, ..Budgets::default() };
    let limits = plough_ipc_wire::Limits::default().with_max_frame_bytes(MIB);
    let (ch, _serve, raw) =
        within("the pair", crate::connection::testing::raw_pair_with_limits(&budgets, limits))
            .await;
    (ch, raw)
}

#[tokio::test]
async fn a_payload_only_shared_memory_can_carry_waits_for_lent_room_then_goes_lent() {
    // Room for two 2 MiB payloads lent at once.
    let (ch, mut raw) = lending_pair(4 * MIB).await;
    let big = |n: usize| Payload::from(vec![3u8; n]);
    let lent_return = |msg: Msg, want: u64| match msg {
        Msg::Return { cid, payload } if cid == want => {
            payload.shm_ref().expect("the answer is lent").ino
        }
        other => panic!("expected the lent answer to call {want}, got {other:?}"),
    };
    // Two fill the budget, and the peer holds on to both.
    let mut held = Vec::new();
    for cid in [2, 4] {
        within("a lent answer", ch.send(Msg::Return { cid, payload: big(2 * MIB) })).await.unwrap();
        held.push(lent_return(raw.expect().await, cid));
    }
    // A third waits for room: it is not refused, and not sent by copy (it cannot be).
    let sender = ch.clone();
    let third =
        tokio::spawn(
            async move { sender.send(Msg::Return { cid: 6, payload: big(2 * MIB) }).await },
        );
    // Meanwhile a message of the usual size goes past it.
    within("a small answer", ch.send(return_msg(7, 1, 0))).await.unwrap();
    assert_eq!(raw.expect().await, return_msg(7, 1, 0));
    assert!(!third.is_finished(), "nothing was returned: no room yet");
    // The peer opened the first: the third goes, lent.
    raw.send(lend::returned_msg(vec![held[0]], &raw.aid)).await;
    lent_return(raw.expect().await, 6);
    within("the third send", third).await.unwrap().expect("sent once there was room");
    // One longer than the whole budget never fits: answered with an error at once.
    within("the too-long answer", ch.send(Msg::Return { cid: 8, payload: big(5 * MIB) }))
        .await
        .unwrap();
    match raw.expect().await {
        Msg::Error(e) => assert_eq!((e.cid, e.kind), (Some(8), ErrorKind::PayloadEncode), "{e:?}"),
        other => panic!("expected the error answer, got {other:?}"),
    }
    assert!(!ch.is_closed());
}

#[tokio::test]
async fn a_sender_waiting_for_lent_room_learns_the_connection_closed() {
    let (ch, mut raw) = lending_pair(2 * MIB).await;
    let big = || Payload::from(vec![4u8; 2 * MIB]);
    within("a lent answer", ch.send(Msg::Return { cid: 2, payload: big() })).await.unwrap();
    assert!(matches!(raw.expect().await, Msg::Return { cid: 2, .. }));
    let sender = ch.clone();
    let waiting =
        tokio::spawn(async move { sender.send(Msg::Return { cid: 4, payload: big() }).await });
    drop(raw);
    let out = within("the waiting send", waiting).await.unwrap();
    assert!(out.is_err(), "the connection is gone: {out:?}");
}
