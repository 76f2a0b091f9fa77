//! Test harness: two ends of one real connection in one process, over
//! `UnixStream::pair()` (no process, no socket file), each handshaken with ipc-wire's own
//! [`handshake`](plough_ipc_wire::handshake::handshake) and, when asked, running a
//! [`Channel`] with a recording [`TestServe`].
//!
//! Everything here waits on events under a [`LIMIT`], never on a sleep.

use super::{Channel, Serve};
use crate::base::budgets::Budgets;
use crate::base::names::CANCEL_CALL;
use crate::base::sync::LockExt;
use futures::{SinkExt, StreamExt};
use plough_ipc_wire::handshake::{
    self, Credentials, Established, FramedConnection, HandshakeConfig,
};
use plough_ipc_wire::msg::{Aid, CancelAck, Msg, Start, Uuid};
use plough_ipc_wire::payload::Payload;
use plough_ipc_wire::transport::Connection;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long any one wait of a test may take before the test fails.
pub(crate) const LIMIT: Duration = Duration::from_secs(5);

/// `fut`, or a panic naming `what` after [`LIMIT`].
pub(crate) async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(LIMIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {LIMIT:?} waiting for {what}"),
    }
}

/// A test actor identity: `name@pid` with a uuid made of `n`.
pub(crate) fn aid(name: &str, n: u8) -> Aid {
    Aid { name: name.to_owned(), uuid: Uuid([n; 16]), pid: 1000 + u32::from(n) }
}

/// The dialer's identity in [`pair`] and [`raw_pair`].
pub(crate) fn dialer_aid() -> Aid {
    aid("dialer", 1)
}

/// The acceptor's identity in [`pair`] and [`raw_pair`].
pub(crate) fn acceptor_aid() -> Aid {
    aid("acceptor", 2)
}

/// Two handshaken ends of one `UnixStream::pair()`: `a` said it is `a_aid`, `b` said it
/// is `b_aid` (so `a.peer` is `b_aid`'s `Hello` and the other way round).
pub(crate) async fn established_pair(a_aid: &Aid, b_aid: &Aid) -> (Established, Established) {
    established_pair_with(a_aid, b_aid, plough_ipc_wire::Limits::default()).await
}

/// [`established_pair`] with both ends under `limits`.
pub(crate) async fn established_pair_with(
    a_aid: &Aid,
    b_aid: &Aid,
    limits: plough_ipc_wire::Limits,
) -> (Established, Established) {
    let (sa, sb) = tokio::net::UnixStream::pair().expect("socketpair");
    let ca = Connection::from_unix(sa).expect("peer credentials of a socketpair end");
    let cb = Connection::from_unix(sb).expect("peer credentials of a socketpair end");
    let config = HandshakeConfig::default().with_deadline(LIMIT).with_limits(limits);
    let (ha, hb) = (creds(a_aid), creds(b_aid));
    let (ea, eb) =
        tokio::join!(handshake::initiate(ca, &ha, &config), handshake::respond(cb, &hb, &config));
    let (ea, eb) = (ea.expect("handshake a"), eb.expect("handshake b"));
    assert_eq!(&ea.peer, b_aid);
    assert_eq!(&eb.peer, a_aid);
    (ea, eb)
}

/// `aid` with the tests' tree secret.
fn creds(aid: &Aid) -> Credentials {
    Credentials { aid: aid.clone(), secret: plough_ipc_wire::Secret::from_bytes([0x42; 32]) }
}

/// Both ends of one connection, each a running [`Channel`] served by a [`TestServe`].
pub(crate) struct Pair {
    /// The end that "dialed" (odd cids), speaking as [`dialer_aid`].
    pub(crate) dialer: Channel,
    /// The end that "accepted" (even cids), speaking as [`acceptor_aid`].
    pub(crate) acceptor: Channel,
    /// What the peer asked of the dialer.
    pub(crate) dialer_serve: Arc<TestServe>,
    /// What the peer asked of the acceptor.
    pub(crate) acceptor_serve: Arc<TestServe>,
}

/// A connected [`Pair`] of channels.
pub(crate) async fn pair() -> Pair {
    pair_with(&Budgets::default()).await
}

/// [`pair`] with both channels under `budgets`.
pub(crate) async fn pair_with(budgets: &Budgets) -> Pair {
    let (dialer_serve, acceptor_serve) =
        (TestServe::new(dialer_aid()), TestServe::new(acceptor_aid()));
    let (ed, ea) = established_pair(&dialer_aid(), &acceptor_aid()).await;
    let dialer = Channel::start(ed, true, dialer_aid(), budgets, Arc::clone(&dialer_serve) as _);
    let acceptor =
        Channel::start(ea, false, acceptor_aid(), budgets, Arc::clone(&acceptor_serve) as _);
    Pair { dialer, acceptor, dialer_serve, acceptor_serve }
}

/// Two running channels over one socket pair, with the given identities and servers:
/// `(dialer, acceptor)`.
pub(crate) async fn channels(
    dialer: &Aid,
    dialer_serve: Arc<dyn Serve>,
    acceptor: &Aid,
    acceptor_serve: Arc<dyn Serve>,
) -> (Channel, Channel) {
    let (ed, ea) = established_pair(dialer, acceptor).await;
    let b = Budgets::default();
    (
        Channel::start(ed, true, dialer.clone(), &b, dialer_serve),
        Channel::start(ea, false, acceptor.clone(), &b, acceptor_serve),
    )
}

/// One end a running [`Channel`] (the dialer, served by a [`TestServe`]), the other a
/// bare framed connection the test drives by hand ([`RawPeer`]).
pub(crate) async fn raw_pair() -> (Channel, Arc<TestServe>, RawPeer) {
    raw_pair_with(&Budgets::default()).await
}

/// [`raw_pair`] with the channel under `budgets`.
pub(crate) async fn raw_pair_with(budgets: &Budgets) -> (Channel, Arc<TestServe>, RawPeer) {
    raw_pair_with_limits(budgets, plough_ipc_wire::Limits::default()).await
}

/// [`raw_pair`] with the channel under `budgets`, and both ends under `limits`.
pub(crate) async fn raw_pair_with_limits(
    budgets: &Budgets,
    limits: plough_ipc_wire::Limits,
) -> (Channel, Arc<TestServe>, RawPeer) {
    let (ed, ea) = established_pair_with(&dialer_aid(), &acceptor_aid(), limits).await;
    let serve = TestServe::new(dialer_aid());
    let channel = Channel::start(ed, true, dialer_aid(), budgets, Arc::clone(&serve) as _);
    (channel, serve, RawPeer::new(ea.framed, acceptor_aid(), ea.peer))
}

/// The far end of a connection, driven message by message.
#[derive(Debug)]
pub(crate) struct RawPeer {
    pub(crate) framed: FramedConnection,
    /// Who this end said it is.
    pub(crate) aid: Aid,
    /// Who the channel is: its own calls name no caller, and are read as this one's.
    peer: Arc<Aid>,
    /// The rest of a batch of stream items read (`recv` hands them out one by one).
    batch: std::collections::VecDeque<Msg>,
}

impl RawPeer {
    pub(crate) fn new(framed: FramedConnection, aid: Aid, peer: Aid) -> Self {
        RawPeer { framed, aid, peer: Arc::new(peer), batch: Default::default() }
    }

    /// Sends one message (flushed).
    pub(crate) async fn send(&mut self, msg: Msg) {
        within("a raw send", self.framed.send(msg)).await.expect("raw send");
    }

    /// The next message, or `None` at EOF. A batch of stream items (`Yields`) is handed
    /// out as one `Yield` per item, as the receiving side sees it.
    pub(crate) async fn recv(&mut self) -> Option<Msg> {
        if let Some(m) = self.batch.pop_front() {
            return Some(m);
        }
        let next = within("a message from the channel", self.framed.next()).await;
        match next
            .map(|frame| frame.expect("a frame").decode_from(&self.peer).expect("a message"))?
        {
            Msg::Yields { cid, payloads } => {
                self.batch.extend(payloads.into_iter().map(|payload| Msg::Yield { cid, payload }));
                self.batch.pop_front()
            }
            m => Some(m),
        }
    }

    /// The next message, which must be there.
    pub(crate) async fn expect(&mut self) -> Msg {
        self.recv().await.expect("a message, not EOF")
    }
}

/// A `Start` of `function(args)` with call id `cid`, from `caller`.
pub(crate) fn start_msg(
    cid: u64,
    function: &str,
    args: &impl serde::Serialize,
    caller: &Aid,
) -> Msg {
    Msg::Start(Box::new(Start {
        cid,
        function: function.into(),
        args: Payload::encode(args).expect("test args encode"),
        caller: caller.clone().into(),
        kind: plough_ipc_wire::msg::CallKind::Function,
        trace: None,
    }))
}

/// A [`Serve`] that records every `Start` (in arrival order) and answers a few:
/// * `echo` — `Return` with the arguments as they came;
/// * `fail` — an `Error` of type `Boom` whose message is the arguments rendered;
/// * `plough.cancel_call` — cancels the served call it names (as the serving layer does)
///   and acks with whether it was running;
/// * anything else — recorded only (the test answers, or nobody does).
///
/// Counts [`Serve::closed`] calls and lets a test wait for the first.
#[derive(Debug)]
pub(crate) struct TestServe {
    /// Who serves (the local end's identity), the source of its errors.
    me: Aid,
    tx: mpsc::UnboundedSender<Start>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Start>>>,
    closed: CancellationToken,
    closed_calls: AtomicUsize,
    served: AtomicUsize,
}

impl TestServe {
    /// A recorder serving as `me`.
    pub(crate) fn new(me: Aid) -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        Arc::new(TestServe {
            me,
            tx,
            rx: Mutex::new(Some(rx)),
            closed: CancellationToken::new(),
            closed_calls: AtomicUsize::new(0),
            served: AtomicUsize::new(0),
        })
    }

    /// The next `Start` the peer sent (in arrival order).
    pub(crate) async fn next_start(&self) -> Start {
        let mut rx = self.rx.locked().take().expect("one next_start at a time");
        let got = within("a Start to be served", rx.recv()).await;
        *self.rx.locked() = Some(rx);
        got.expect("the recorder lives as long as the test")
    }

    /// A `Start` already recorded and not yet taken, if any.
    pub(crate) fn try_start(&self) -> Option<Start> {
        self.rx.locked().as_mut().expect("no next_start in progress").try_recv().ok()
    }

    /// How many `Start`s reached [`Serve::serve`].
    pub(crate) fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }

    /// Waits until [`Serve::closed`] was called.
    pub(crate) async fn wait_closed(&self) {
        within("Serve::closed", self.closed.cancelled()).await
    }

    /// How many times [`Serve::closed`] was called.
    pub(crate) fn closed_calls(&self) -> usize {
        self.closed_calls.load(Ordering::SeqCst)
    }
}

/// The `Error` a [`TestServe`] answers `fail` with.
pub(crate) fn boom(source: &Aid, cid: u64, message: &str) -> Msg {
    Msg::Error(Box::new(
        crate::base::error::RemoteActorError::user(source.clone(), "Boom", message)
            .to_msg(Some(cid)),
    ))
}

impl Serve for TestServe {
    fn serve(&self, channel: &Channel, start: Start) {
        self.served.fetch_add(1, Ordering::SeqCst);
        let reply = match &*start.function {
            "echo" => Some(Msg::Return { cid: start.cid, payload: start.args.clone() }),
            "fail" => {
                let what = plough_ipc_wire::payload::render(start.args.as_bytes());
                Some(boom(&self.me, start.cid, &what))
            }
            CANCEL_CALL => {
                let acked = start.args.decode::<u64>().is_ok_and(|t| channel.cancel_served(t));
                Some(Msg::CancelAck(CancelAck { cid: start.cid, acked }))
            }
            _ => None,
        };
        if let Some(reply) = reply {
            let ch = channel.clone();
            tokio::spawn(async move {
                let _ = ch.send(reply).await;
            });
        }
        let _ = self.tx.send(start);
    }

    fn closed(&self, _channel: &Channel) {
        self.closed_calls.fetch_add(1, Ordering::SeqCst);
        self.closed.cancel();
    }
}

/// Asserts that `e` is `TransportClosed` for `peer` with a detail starting with `detail`.
#[track_caller]
pub(crate) fn assert_transport_closed(
    e: &crate::base::error::ActorError,
    peer: &Aid,
    detail: &str,
) {
    match e {
        crate::base::error::ActorError::TransportClosed { peer: p, detail: d } => {
            assert_eq!(p, &peer.to_string());
            assert!(d.starts_with(detail), "detail {d:?} does not start with {detail:?}");
        }
        other => panic!("expected TransportClosed from {peer}, got {other:?}"),
    }
}
