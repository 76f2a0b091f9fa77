//! The registrar: which actors of a tree are alive, and where they listen.
//!
//! The root becomes the registrar when nothing answers on the registry address (or joins
//! the one that does). Every actor registers itself over a connection it keeps open, and
//! unregisters on exit; when that connection drops (the actor crashed or was killed), its
//! entries go with it, so lookups never hand out a dead actor. Duplicate names are allowed:
//! every actor of that name is listed.

use crate::actor::{Actor, encode};
use crate::channel::Channel;
use crate::error::{ActorError, RemoteActorError};
use crate::portal::Portal;
use plough_ipc_wire::Address;
use plough_ipc_wire::msg::{Aid, Msg, Start, Uuid};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;

pub(crate) const PREFIX: &str = "plough.registrar.";
const REGISTER: &str = "plough.registrar.register";
const UNREGISTER: &str = "plough.registrar.unregister";
const FIND: &str = "plough.registrar.find";
const WAIT_FOR: &str = "plough.registrar.wait_for";
const LIST: &str = "plough.registrar.list";

/// One live actor, as the registrar knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorEntry {
    /// Its identity.
    pub aid: Aid,
    /// Where it listens (`tcp://…` or `uds://…`).
    pub addr: String,
    /// Its parent actor (`None` for a root).
    #[serde(default)]
    pub parent: Option<Aid>,
    /// How it was started: `root`, `exec`, `main_thread_forkserver`.
    #[serde(default)]
    pub method: String,
    /// When it came up, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub started_ms: u64,
}

impl ActorEntry {
    /// The entry of an actor coming up now.
    pub fn new(aid: Aid, addr: String, parent: Option<Aid>, method: &str) -> Self {
        let started_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        ActorEntry { aid, addr, parent, method: method.to_owned(), started_ms }
    }

    /// The listening address, parsed.
    ///
    /// # Errors
    ///
    /// The registrar stored an address that does not parse (a bug or a foreign peer).
    pub fn address(&self) -> Result<Address, ActorError> {
        self.addr
            .parse()
            .map_err(|e| ActorError::Runtime(format!("bad address for {}: {e}", self.aid)))
    }
}

struct Slot {
    entry: ActorEntry,
    /// The peer whose connection registered it (`None`: the registrar itself).
    via: Option<Uuid>,
}

pub(crate) struct RegistrarState {
    slots: Mutex<Vec<Slot>>,
    version: watch::Sender<u64>,
}

impl RegistrarState {
    pub(crate) fn new() -> Self {
        RegistrarState { slots: Mutex::new(Vec::new()), version: watch::channel(0).0 }
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    pub(crate) fn add(&self, entry: ActorEntry, via: Option<Uuid>) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.retain(|s| s.entry.aid.uuid != entry.aid.uuid);
        slots.push(Slot { entry, via });
        drop(slots);
        self.bump();
    }

    pub(crate) fn remove(&self, uuid: &Uuid) {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).retain(|s| &s.entry.aid.uuid != uuid);
        self.bump();
    }

    pub(crate) fn find(&self, name: &str) -> Vec<ActorEntry> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.iter().filter(|s| s.entry.aid.name == name).map(|s| s.entry.clone()).collect()
    }

    pub(crate) fn list(&self) -> Vec<ActorEntry> {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|s| s.entry.clone())
            .collect()
    }

    pub(crate) async fn wait_for(&self, name: &str) -> Vec<ActorEntry> {
        let mut rx = self.version.subscribe();
        loop {
            let found = self.find(name);
            if !found.is_empty() {
                return found;
            }
            if rx.changed().await.is_err() {
                return Vec::new();
            }
        }
    }

    /// The registering connection dropped: the actors registered over it are gone.
    pub(crate) fn connection_closed(&self, channel: &Channel) {
        let peer = channel.peer().uuid;
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let before = slots.len();
        slots.retain(|s| s.via != Some(peer));
        let changed = slots.len() != before;
        drop(slots);
        if changed {
            tracing::debug!(peer = %channel.peer(), "registrar: dropped the entries of a closed connection");
            self.bump();
        }
    }

    pub(crate) fn serve(&self, actor: &Actor, channel: &Channel, start: Start) {
        let (actor, channel) = (actor.clone(), channel.clone());
        let cid = start.cid;
        let via = channel.peer().uuid;
        let Some(state) = actor.inner.registrar.clone() else { return };
        let me = actor.aid().clone();
        let bad = |e: plough_ipc_wire::MsgTypeError| {
            let mut r = RemoteActorError::new(me.clone(), "MsgTypeError", e.to_string());
            r.type_error = Some((&e).into());
            r
        };
        type Answer = Result<plough_ipc_wire::payload::Payload, RemoteActorError>;
        // Everything but `wait_for` is answered here, in the order the calls arrive: a
        // registration is recorded before the registrar reads anything else its sender
        // sent (such as a reply that makes a caller look the new actor up).
        let now: Option<Answer> = match start.function.as_str() {
            REGISTER => Some(match start.args.decode::<ActorEntry>() {
                Ok(entry) => {
                    state.add(entry, Some(via));
                    Ok(encode(&()).expect("unit encodes"))
                }
                Err(e) => Err(bad(e)),
            }),
            UNREGISTER => Some(match start.args.decode::<Uuid>() {
                Ok(uuid) => {
                    state.remove(&uuid);
                    Ok(encode(&()).expect("unit encodes"))
                }
                Err(e) => Err(bad(e)),
            }),
            FIND => Some(match start.args.decode::<String>() {
                Ok(name) => Ok(encode(&state.find(&name)).expect("entries encode")),
                Err(e) => Err(bad(e)),
            }),
            LIST => Some(Ok(encode(&state.list()).expect("entries encode"))),
            WAIT_FOR => None,
            other => Some(Err(RemoteActorError::new(
                me.clone(),
                "NoSuchFunction",
                format!("the registrar has no function `{other}`"),
            ))),
        };
        let wait_name = match now {
            Some(_) => Ok(String::new()),
            None => start.args.decode::<String>().map_err(bad),
        };
        actor.inner.tasks.clone().spawn(async move {
            let result = match (now, wait_name) {
                (Some(answer), _) => answer,
                (None, Err(e)) => Err(e),
                (None, Ok(name)) => {
                    let found = tokio::select! {
                        f = state.wait_for(&name) => f,
                        () = channel.closed() => return,
                        () = actor.cancelled() => Vec::new(),
                    };
                    Ok(encode(&found).expect("entries encode"))
                }
            };
            let msg = match result {
                Ok(payload) => Msg::Return { cid, payload },
                Err(e) => Msg::Error(e.to_msg(Some(cid))),
            };
            let _ = channel.send(msg).await;
        });
    }
}

/// An actor's connection to its tree's registrar (when it is not the registrar itself).
#[derive(Debug, Clone)]
pub(crate) struct RegistrarClient {
    portal: Portal,
    /// The connection is also the one to our parent (the parent is the registrar): it is
    /// not ours to close when we unregister.
    shared: bool,
}

impl RegistrarClient {
    /// Over a connection of its own.
    pub(crate) fn new(portal: Portal) -> Self {
        RegistrarClient { portal, shared: false }
    }

    /// Over the connection to our parent, which is the registrar.
    pub(crate) fn via_parent(portal: Portal) -> Self {
        RegistrarClient { portal, shared: true }
    }

    pub(crate) async fn register(&self, entry: &ActorEntry) -> Result<(), ActorError> {
        self.portal.run::<_, ()>(REGISTER, entry).await
    }

    pub(crate) async fn unregister(&self, aid: &Aid) {
        let _ = tokio::time::timeout(
            Duration::from_millis(500),
            self.portal.run::<_, ()>(UNREGISTER, aid.uuid),
        )
        .await;
        if !self.shared {
            self.portal.channel().shutdown();
        }
    }

    pub(crate) async fn find(&self, name: &str) -> Result<Vec<ActorEntry>, ActorError> {
        self.portal.run(FIND, name).await
    }

    pub(crate) async fn wait_for(&self, name: &str) -> Result<Vec<ActorEntry>, ActorError> {
        self.portal.run(WAIT_FOR, name).await
    }

    pub(crate) async fn list(&self) -> Result<Vec<ActorEntry>, ActorError> {
        self.portal.run(LIST, ()).await
    }
}

impl Actor {
    fn registrar_client(&self) -> Option<RegistrarClient> {
        self.inner.registrar_client.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn no_registrar(&self) -> ActorError {
        ActorError::Runtime(format!("actor {} is not connected to a registrar", self.aid()))
    }

    /// Every live actor of the tree, as the registrar knows them.
    ///
    /// # Errors
    ///
    /// The registrar is unreachable.
    pub async fn list_actors(&self) -> Result<Vec<ActorEntry>, ActorError> {
        match (&self.inner.registrar, self.registrar_client()) {
            (Some(state), _) => Ok(state.list()),
            (None, Some(c)) => c.list().await,
            (None, None) => Err(self.no_registrar()),
        }
    }

    /// The registered actors named `name` (several when names are shared).
    ///
    /// # Errors
    ///
    /// The registrar is unreachable.
    pub async fn query_actor(&self, name: &str) -> Result<Vec<ActorEntry>, ActorError> {
        match (&self.inner.registrar, self.registrar_client()) {
            (Some(state), _) => Ok(state.find(name)),
            (None, Some(c)) => c.find(name).await,
            (None, None) => Err(self.no_registrar()),
        }
    }

    /// A portal to an actor named `name`, if one is registered (the first one that
    /// answers). An entry that no longer answers is removed from the registrar.
    ///
    /// # Errors
    ///
    /// The registrar is unreachable.
    pub async fn find_actor(&self, name: &str) -> Result<Option<Portal>, ActorError> {
        for entry in self.query_actor(name).await? {
            if let Some(p) = self.connect_entry(&entry).await? {
                return Ok(Some(p));
            }
        }
        Ok(None)
    }

    /// Waits until an actor named `name` registers, and returns a portal to it.
    ///
    /// # Errors
    ///
    /// The registrar is unreachable, or this actor is cancelled while waiting.
    pub async fn wait_for_actor(&self, name: &str) -> Result<Portal, ActorError> {
        loop {
            let entries = match (&self.inner.registrar, self.registrar_client()) {
                (Some(state), _) => tokio::select! {
                    e = state.wait_for(name) => e,
                    () = self.cancelled() => Vec::new(),
                },
                (None, Some(c)) => c.wait_for(name).await?,
                (None, None) => return Err(self.no_registrar()),
            };
            if self.is_cancelled() {
                let canceller = self.canceller().unwrap_or_else(|| self.aid().clone());
                return Err(ActorError::ContextCancelled { canceller });
            }
            for entry in &entries {
                if let Some(p) = self.connect_entry(entry).await? {
                    return Ok(p);
                }
            }
        }
    }

    /// Connects to a registry entry; a stale one (nothing answers) is dropped.
    async fn connect_entry(&self, entry: &ActorEntry) -> Result<Option<Portal>, ActorError> {
        match self.connect(&entry.address()?).await {
            Ok(p) if p.aid().uuid == entry.aid.uuid => Ok(Some(p)),
            Ok(p) => {
                p.channel().shutdown();
                self.forget_entry(entry).await;
                Ok(None)
            }
            Err(_) => {
                self.forget_entry(entry).await;
                Ok(None)
            }
        }
    }

    async fn forget_entry(&self, entry: &ActorEntry) {
        tracing::debug!(stale = %entry.aid, "registrar entry does not answer: removing it");
        match (&self.inner.registrar, self.registrar_client()) {
            (Some(state), _) => state.remove(&entry.aid.uuid),
            (None, Some(c)) => {
                let _ = c.portal.run::<_, ()>(UNREGISTER, entry.aid.uuid).await;
            }
            (None, None) => {}
        }
    }
}

/// The live actors registered at `registry`, asked as a passer-by: a transient connection
/// that calls the registrar's `list` without registering anything (what `plough ps`
/// does).
///
/// # Errors
///
/// [`ActorError::TransportClosed`] when nothing (or no plough registrar) answers there;
/// the registrar's own error otherwise.
pub async fn list_registry(
    registry: &Address,
    timeout: Duration,
) -> Result<Vec<ActorEntry>, ActorError> {
    use futures::{SinkExt, StreamExt};
    use plough_ipc_wire::handshake::{self, HandshakeConfig};
    use plough_ipc_wire::msg::{CallKind, Hello};
    let unreachable =
        |detail: String| ActorError::TransportClosed { peer: registry.to_string(), detail };
    let me = Aid {
        name: "plough-ps".to_owned(),
        uuid: crate::actor::new_uuid(),
        pid: std::process::id(),
    };
    let ask = async {
        let hs = HandshakeConfig::default().with_deadline(timeout);
        let hello = Hello { aid: me.clone(), tree_proof: Default::default() };
        let mut est = handshake::connect(registry, &hello, &hs)
            .await
            .map_err(|e| unreachable(error_chain(&e)))?;
        let start = Start {
            cid: 1,
            function: LIST.to_owned(),
            args: encode(&())?,
            caller: me.clone(),
            kind: CallKind::Function,
        };
        est.framed.send(Msg::Start(start)).await.map_err(|e| unreachable(e.to_string()))?;
        while let Some(frame) = est.framed.next().await {
            let frame = frame.map_err(|e| unreachable(e.to_string()))?;
            match frame.decode() {
                Ok(Msg::Return { cid: 1, payload }) => return Ok(payload.decode()?),
                Ok(Msg::Error(e)) if e.cid == Some(1) => {
                    return Err(RemoteActorError::from(e).into());
                }
                _ => {}
            }
        }
        Err(unreachable("the registrar closed the connection".to_owned()))
    };
    tokio::time::timeout(timeout, ask)
        .await
        .map_err(|_| unreachable(format!("no answer within {timeout:?}")))?
}

/// An error and its sources, `: `-separated (`failed to connect to …: Connection refused`).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
