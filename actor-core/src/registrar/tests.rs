//! The registrar layer: its state on its own, its service over a real socket pair, and
//! its client over a portal against that service.

use super::client::{RegistrarClient, RegistrarLink};
use super::entry::ActorEntry;
use super::service;
use super::state::RegistrarState;
use crate::base::names::{
    REGISTRAR_FIND, REGISTRAR_LIST, REGISTRAR_PREFIX, REGISTRAR_REGISTER, REGISTRAR_UNREGISTER,
    REGISTRAR_WAIT_FOR,
};
use crate::calls::portal::Portal;
use crate::connection::testing::{TestServe, aid, channels, start_msg, within};
use crate::connection::{CallRx, Channel, Serve};
use futures::FutureExt;
use plough_ipc_wire::msg::{Aid, ErrorMsg, Msg, Start};
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

fn entry(name: &str, n: u8) -> ActorEntry {
    ActorEntry {
        aid: aid(name, n),
        addr: format!("uds:///run/plough/{name}-{n}.sock"),
        parent: Some(aid("root", 0)),
        method: "exec".to_owned(),
        started_ms: u64::from(n),
    }
}

fn names(entries: &[ActorEntry]) -> Vec<(&str, u8)> {
    entries.iter().map(|e| (e.aid.name.as_str(), e.aid.uuid.0[0])).collect()
}

// ---- the state ----

#[test]
fn registered_entries_are_found_and_listed_as_registered() {
    let s = RegistrarState::new();
    assert!(s.list().is_empty() && s.find("a").is_empty());
    s.add(entry("a", 1), None);
    s.add(entry("b", 2), Some(aid("peer", 9).uuid));
    assert_eq!(s.find("a"), [entry("a", 1)]);
    assert_eq!(s.find("b"), [entry("b", 2)]);
    assert!(s.find("c").is_empty());
    assert_eq!(s.list(), [entry("a", 1), entry("b", 2)]);
}

#[test]
fn duplicate_names_are_all_listed() {
    let s = RegistrarState::new();
    s.add(entry("worker", 1), None);
    s.add(entry("other", 2), None);
    s.add(entry("worker", 3), None);
    assert_eq!(names(&s.find("worker")), [("worker", 1), ("worker", 3)]);
    assert_eq!(s.list().len(), 3);
}

#[test]
fn registering_the_same_uuid_again_replaces_the_entry() {
    let s = RegistrarState::new();
    s.add(entry("a", 1), None);
    s.add(entry("b", 2), None);
    let mut moved = entry("a", 1);
    moved.addr = "tcp://127.0.0.1:4000".to_owned();
    moved.aid.name = "renamed".to_owned();
    s.add(moved.clone(), None);
    assert_eq!(s.list(), [entry("b", 2), moved.clone()], "one entry per uuid, the latest");
    assert!(s.find("a").is_empty());
    assert_eq!(s.find("renamed"), [moved]);
}

#[test]
fn remove_takes_only_that_uuid() {
    let s = RegistrarState::new();
    s.add(entry("w", 1), None);
    s.add(entry("w", 2), None);
    s.remove(&aid("w", 1).uuid);
    assert_eq!(s.list(), [entry("w", 2)]);
    s.remove(&aid("nobody", 7).uuid); // unknown: nothing happens
    assert_eq!(s.list(), [entry("w", 2)]);
}

#[test]
fn a_closed_connection_removes_exactly_the_entries_registered_over_it() {
    let s = RegistrarState::new();
    let (p, q) = (aid("p", 10), aid("q", 11));
    s.add(entry("a", 1), Some(p.uuid));
    s.add(entry("b", 2), Some(q.uuid));
    s.add(entry("c", 3), Some(p.uuid));
    s.add(entry("me", 4), None);
    // An entry *named* like p, registered over q, is not p's.
    s.add(ActorEntry { aid: p.clone(), ..entry("p", 10) }, Some(q.uuid));
    s.connection_closed(&p);
    assert_eq!(names(&s.list()), [("b", 2), ("me", 4), ("p", 10)]);
    s.connection_closed(&aid("stranger", 12));
    assert_eq!(s.list().len(), 3, "an unknown peer removes nothing");
    s.connection_closed(&q);
    assert_eq!(names(&s.list()), [("me", 4)]);
}

#[tokio::test]
async fn wait_for_resolves_when_a_matching_entry_arrives_and_not_before() {
    let s = RegistrarState::new();
    let wait = s.wait_for("w");
    tokio::pin!(wait);
    assert!(futures::poll!(&mut wait).is_pending(), "nothing named w yet");
    s.add(entry("other", 1), None);
    assert!(futures::poll!(&mut wait).is_pending(), "another name does not end the wait");
    s.remove(&aid("other", 1).uuid);
    s.connection_closed(&aid("p", 9));
    assert!(futures::poll!(&mut wait).is_pending());
    s.add(entry("w", 2), None);
    match futures::poll!(&mut wait) {
        Poll::Ready(found) => assert_eq!(found, [entry("w", 2)]),
        Poll::Pending => panic!("w is registered: the wait is over"),
    }
    // Already there: at once.
    assert_eq!(s.wait_for("w").now_or_never(), Some(vec![entry("w", 2)]));
}

// ---- the service over a socket pair ----

/// What the serving layer does for a registrar: its functions go to the service, a
/// closed connection drops the entries registered over it.
struct RegistrarServe {
    state: Arc<RegistrarState>,
    me: Aid,
    tasks: TaskTracker,
    stop: CancellationToken,
    closed: CancellationToken,
}

impl Serve for RegistrarServe {
    fn serve(&self, channel: &Channel, start: Start) {
        assert!(start.function.starts_with(REGISTRAR_PREFIX), "{start:?}");
        service::serve(&self.state, &self.me, channel, start, &self.tasks, &self.stop);
    }
    fn closed(&self, channel: &Channel) {
        self.state.connection_closed(channel.peer());
        self.closed.cancel();
    }
}

fn registrar_aid() -> Aid {
    aid("registrar", 100)
}

/// One registrar state, served over a connection per client.
struct Registrar {
    state: Arc<RegistrarState>,
    tasks: TaskTracker,
    stop: CancellationToken,
}

/// A client's connection to the [`Registrar`].
struct Client {
    aid: Aid,
    /// The client's end.
    ch: Channel,
    /// The registrar's end.
    served: Channel,
    /// Cancelled once the registrar's end saw the connection close.
    closed: CancellationToken,
}

impl Registrar {
    fn new() -> Self {
        Registrar {
            state: Arc::new(RegistrarState::new()),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
        }
    }

    async fn connect(&self, name: &str, n: u8) -> Client {
        let closed = CancellationToken::new();
        let serve = RegistrarServe {
            state: Arc::clone(&self.state),
            me: registrar_aid(),
            tasks: self.tasks.clone(),
            stop: self.stop.clone(),
            closed: closed.clone(),
        };
        let me = aid(name, n);
        let (ch, served) = within(
            "the connection",
            channels(&me, TestServe::new(me.clone()) as _, &registrar_aid(), Arc::new(serve)),
        )
        .await;
        Client { aid: me, ch, served, closed }
    }
}

impl Client {
    /// Sends `function(args)` without waiting for the answer.
    async fn call(&self, function: &str, args: &impl serde::Serialize) -> CallRx {
        let call = self.ch.open_call("f").unwrap();
        self.ch.send(start_msg(call.cid(), function, args, &self.aid)).await.unwrap();
        call
    }

    fn portal(&self) -> Portal {
        Portal::new(self.ch.clone(), Arc::new(self.aid.clone()), Duration::from_millis(100))
    }
}

async fn returned<T: DeserializeOwned>(call: &mut CallRx) -> T {
    match within("the registrar's answer", call.recv()).await.unwrap() {
        Msg::Return { cid, payload } => {
            assert_eq!(cid, call.cid());
            payload.decode().expect("the answer's type")
        }
        other => panic!("expected a Return, got {other:?}"),
    }
}

async fn failed(call: &mut CallRx) -> ErrorMsg {
    match within("the registrar's answer", call.recv()).await.unwrap() {
        Msg::Error(e) => {
            assert_eq!(e.cid, Some(call.cid()));
            assert_eq!(e.source, registrar_aid());
            *e
        }
        other => panic!("expected an Error, got {other:?}"),
    }
}

#[tokio::test]
async fn the_service_answers_each_call_from_the_state_as_it_arrived() {
    let r = Registrar::new();
    let c = r.connect("client", 1).await;
    let (w, x) = (entry("w", 2), entry("x", 3));
    // One burst, nothing awaited in between: each answer reflects the calls before it.
    let mut find_before = c.call(REGISTRAR_FIND, &"w").await;
    let mut wait = c.call(REGISTRAR_WAIT_FOR, &"w").await;
    let mut reg_w = c.call(REGISTRAR_REGISTER, &w).await;
    let mut find_after = c.call(REGISTRAR_FIND, &"w").await;
    let mut list_one = c.call(REGISTRAR_LIST, &()).await;
    let mut reg_x = c.call(REGISTRAR_REGISTER, &x).await;
    let mut list_two = c.call(REGISTRAR_LIST, &()).await;
    assert_eq!(returned::<Vec<ActorEntry>>(&mut find_before).await, []);
    returned::<()>(&mut reg_w).await;
    assert_eq!(returned::<Vec<ActorEntry>>(&mut find_after).await, vec![w.clone()]);
    assert_eq!(returned::<Vec<ActorEntry>>(&mut list_one).await, vec![w.clone()]);
    returned::<()>(&mut reg_x).await;
    assert_eq!(returned::<Vec<ActorEntry>>(&mut list_two).await, [w.clone(), x.clone()]);
    assert_eq!(returned::<Vec<ActorEntry>>(&mut wait).await, vec![w.clone()]);

    let mut unreg = c.call(REGISTRAR_UNREGISTER, &w.aid.uuid).await;
    let mut find_gone = c.call(REGISTRAR_FIND, &"w").await;
    let mut list_left = c.call(REGISTRAR_LIST, &()).await;
    returned::<()>(&mut unreg).await;
    assert_eq!(returned::<Vec<ActorEntry>>(&mut find_gone).await, []);
    assert_eq!(returned::<Vec<ActorEntry>>(&mut list_left).await, vec![x.clone()]);
    assert_eq!(r.state.list(), [x]);
}

#[tokio::test]
async fn a_served_wait_for_answers_when_a_match_registers_and_not_before() {
    let r = Registrar::new();
    let (a, b) = (r.connect("a", 1).await, r.connect("b", 2).await);
    let mut wait = a.call(REGISTRAR_WAIT_FOR, &"late").await;
    // Another call on the same connection, answered after the wait_for arrived.
    let mut reg = a.call(REGISTRAR_REGISTER, &entry("early", 3)).await;
    returned::<()>(&mut reg).await;
    assert!(wait.recv().now_or_never().is_none(), "no answer while nothing is named late");
    // A registration over another connection ends it.
    let mut reg = b.call(REGISTRAR_REGISTER, &entry("late", 4)).await;
    returned::<()>(&mut reg).await;
    assert_eq!(returned::<Vec<ActorEntry>>(&mut wait).await, [entry("late", 4)]);
}

#[tokio::test]
async fn bad_arguments_are_answered_with_a_msg_type_error() {
    let r = Registrar::new();
    let c = r.connect("client", 1).await;
    for function in [REGISTRAR_REGISTER, REGISTRAR_UNREGISTER, REGISTRAR_FIND, REGISTRAR_WAIT_FOR] {
        let mut call = c.call(function, &[1u8, 2, 3]).await;
        let e = failed(&mut call).await;
        assert_eq!(e.type_name, "MsgTypeError", "{function}");
        let t = e.type_error.expect("the type error's details");
        assert!(!t.expected_type.is_empty(), "{function}: {t:?}");
        assert!(e.canceller.is_none());
    }
    assert!(r.state.list().is_empty(), "nothing was registered");
    let mut ok = c.call(REGISTRAR_LIST, &()).await;
    assert_eq!(returned::<Vec<ActorEntry>>(&mut ok).await, [], "the connection still serves");
}

#[tokio::test]
async fn an_unknown_registrar_function_is_no_such_function() {
    let r = Registrar::new();
    let c = r.connect("client", 1).await;
    let mut call = c.call("plough.registrar.x", &()).await;
    let e = failed(&mut call).await;
    assert_eq!(e.type_name, "NoSuchFunction");
    assert_eq!(e.message, "the registrar has no function `plough.registrar.x`");
}

#[tokio::test]
async fn a_closed_connection_takes_its_registrations_and_only_them() {
    let r = Registrar::new();
    r.state.add(entry("registrar", 100), None);
    let (a, b) = (r.connect("a", 1).await, r.connect("b", 2).await);
    for (c, e) in [(&a, entry("a", 1)), (&a, entry("a-helper", 5)), (&b, entry("b", 2))] {
        returned::<()>(&mut c.call(REGISTRAR_REGISTER, &e).await).await;
    }
    assert_eq!(r.state.list().len(), 4);
    a.ch.shutdown();
    within("the registrar to see a go", a.closed.cancelled()).await;
    assert_eq!(names(&r.state.list()), [("registrar", 100), ("b", 2)]);
    assert!(!b.closed.is_cancelled() && !b.ch.is_closed());
    assert!(a.served.is_closed());
}

#[tokio::test]
async fn a_pending_wait_for_ends_empty_on_stop_and_silently_when_its_caller_goes() {
    let r = Registrar::new();
    let (a, b) = (r.connect("a", 1).await, r.connect("b", 2).await);
    let mut stopped = a.call(REGISTRAR_WAIT_FOR, &"never").await;
    let mut orphaned = b.call(REGISTRAR_WAIT_FOR, &"never").await;
    returned::<Vec<ActorEntry>>(&mut b.call(REGISTRAR_LIST, &()).await).await; // both arrived
    b.ch.shutdown();
    let e = within("b's call to close", orphaned.recv()).await.unwrap_err();
    assert!(matches!(e, crate::base::error::ActorError::TransportClosed { .. }), "{e:?}");
    r.stop.cancel();
    assert_eq!(returned::<Vec<ActorEntry>>(&mut stopped).await, [], "stop: no entries");
    r.tasks.close();
    within("every service task to end", r.tasks.wait()).await;
}

// ---- the client ----

#[tokio::test]
async fn a_registrar_client_over_a_portal_registers_finds_waits_and_unregisters() {
    let r = Registrar::new();
    let (a, b) = (r.connect("a", 1).await, r.connect("b", 2).await);
    let (ca, cb) = (RegistrarClient::new(a.portal()), RegistrarClient::new(b.portal()));
    let me = entry("a", 1);
    within("register", ca.register(&me)).await.unwrap();
    assert_eq!(within("find", cb.find("a")).await.unwrap(), vec![me.clone()]);
    assert_eq!(within("list", cb.list()).await.unwrap(), vec![me.clone()]);
    assert!(within("find", cb.find("zzz")).await.unwrap().is_empty());
    assert_eq!(within("wait_for", cb.wait_for("a")).await.unwrap(), vec![me.clone()]);

    // A wait that a later registration ends.
    let (found, ()) = within("a pending wait", async {
        tokio::join!(cb.wait_for("later"), async {
            // `b`'s wait_for is queued ahead of this marker, on b's connection.
            let _ = within("list", cb.list()).await.unwrap();
            ca.register(&entry("later", 7)).await.unwrap();
        })
    })
    .await;
    assert_eq!(found.unwrap(), [entry("later", 7)]);

    within("forget", cb.forget(&aid("later", 7).uuid)).await.unwrap();
    assert_eq!(names(&r.state.list()), [("a", 1)]);

    // Unregistering removes the entry, then closes a connection of the client's own.
    within("unregister", ca.unregister(&me.aid, Duration::from_secs(1))).await;
    assert!(r.state.find("a").is_empty());
    within("a's connection to close", a.closed.cancelled()).await;
    within("a's end to close", a.ch.closed()).await;
    let e = within("register", ca.register(&me)).await.unwrap_err();
    assert!(matches!(e, crate::base::error::ActorError::TransportClosed { .. }), "{e:?}");
}

#[tokio::test]
async fn a_client_via_the_parent_leaves_the_shared_connection_open() {
    let r = Registrar::new();
    let c = r.connect("child", 1).await;
    let client = RegistrarClient::via_parent(c.portal());
    let me = entry("child", 1);
    within("register", client.register(&me)).await.unwrap();
    within("unregister", client.unregister(&me.aid, Duration::from_secs(1))).await;
    assert!(r.state.list().is_empty());
    assert_eq!(within("list", client.list()).await.unwrap(), [], "still connected");
    assert!(!c.ch.is_closed() && !c.closed.is_cancelled());
}

#[tokio::test]
async fn a_link_answers_from_its_state_from_its_client_or_not_at_all() {
    let none = RegistrarLink::new(None);
    assert!(none.list(GAP).await.is_none() && none.find("a", GAP).await.is_none());
    assert!(none.wait_for("a", std::future::pending()).await.is_none());
    none.forget(&aid("a", 1).uuid).await; // no registrar: nothing to do

    let state = Arc::new(RegistrarState::new());
    let local = RegistrarLink::new(Some(Arc::clone(&state)));
    assert!(local.state().is_some());
    state.add(entry("a", 1), None);
    assert_eq!(local.find("a", GAP).await.unwrap().unwrap(), [entry("a", 1)]);
    assert_eq!(local.list(GAP).await.unwrap().unwrap(), [entry("a", 1)]);
    let stop = CancellationToken::new();
    stop.cancel();
    let stopped = local.wait_for("never", stop.cancelled()).await.unwrap().unwrap();
    assert!(stopped.is_empty(), "a local wait ends empty when stopped");
    local.forget(&aid("a", 1).uuid).await;
    assert!(state.list().is_empty());

    let r = Registrar::new();
    let c = r.connect("c", 2).await;
    let remote = RegistrarLink::new(None);
    remote.set_client(RegistrarClient::new(c.portal()));
    r.state.add(entry("b", 3), None);
    assert_eq!(within("find", remote.find("b", GAP)).await.unwrap().unwrap(), [entry("b", 3)]);
    let waited = within("wait_for", remote.wait_for("b", std::future::pending())).await;
    assert_eq!(waited.unwrap().unwrap(), [entry("b", 3)]);
    within("forget", remote.forget(&aid("b", 3).uuid)).await;
    assert!(r.state.list().is_empty());
    assert!(remote.take_client().is_some() && remote.list(GAP).await.is_none());
}

/// How long the link tests let a lookup wait out a failover.
const GAP: Duration = Duration::from_secs(5);

/// A lookup whose registrar connection closes waits for the link that replaces it (while
/// someone recovers the link) and answers from there; without a recovery, and once the
/// gap is over, it fails with the closed connection's error.
#[tokio::test]
async fn a_lookup_waits_out_a_registrar_failover_and_fails_only_without_one() {
    let old = Registrar::new();
    let c = old.connect("me", 1).await;
    let link = Arc::new(RegistrarLink::new(None));
    link.set_client(RegistrarClient::new(c.portal()));
    link.set_recovering(true);
    c.ch.shutdown();
    within("the old connection to close", c.ch.closed()).await;

    // During the gap: the lookups wait (they are pending), then the successor answers.
    let new = Registrar::new();
    new.state.add(entry("b", 3), None);
    let (l2, l3) = (Arc::clone(&link), Arc::clone(&link));
    let find = tokio::spawn(async move { l2.find("b", GAP).await });
    let wait = tokio::spawn(async move { l3.wait_for("b", std::future::pending()).await });
    tokio::task::yield_now().await;
    assert!(!find.is_finished() && !wait.is_finished(), "a lookup failed during the gap");
    let c2 = new.connect("me", 1).await;
    link.set_client(RegistrarClient::new(c2.portal()));
    assert_eq!(within("find", find).await.unwrap().unwrap().unwrap(), [entry("b", 3)]);
    assert_eq!(within("wait_for", wait).await.unwrap().unwrap().unwrap(), [entry("b", 3)]);

    // A successor that becomes the registrar itself answers locally.
    c2.ch.shutdown();
    within("the second connection to close", c2.ch.closed()).await;
    let l4 = Arc::clone(&link);
    let list = tokio::spawn(async move { l4.list(GAP).await });
    let mine = Arc::new(RegistrarState::new());
    mine.add(entry("me", 1), None);
    link.become_registrar(Arc::clone(&mine));
    assert_eq!(within("list", list).await.unwrap().unwrap().unwrap(), [entry("me", 1)]);
    assert!(link.client().is_none());

    // No recovery: a closed link is an error at once.
    let lone = RegistrarLink::new(None);
    let c3 = Registrar::new().connect("me", 1).await;
    lone.set_client(RegistrarClient::new(c3.portal()));
    c3.ch.shutdown();
    within("the third connection to close", c3.ch.closed()).await;
    let e = within("find", lone.find("b", GAP)).await.unwrap().unwrap_err();
    assert!(matches!(e, crate::base::error::ActorError::TransportClosed { .. }), "{e:?}");

    // Recovery that does not finish within the gap: the error, after the gap.
    lone.set_recovering(true);
    let short = Duration::from_millis(50);
    let t = tokio::time::Instant::now();
    let e = within("find", lone.find("b", short)).await.unwrap().unwrap_err();
    assert!(t.elapsed() >= short, "gave up before the gap was over");
    assert!(matches!(e, crate::base::error::ActorError::TransportClosed { .. }), "{e:?}");
}
