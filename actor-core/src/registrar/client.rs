//! The registrar's clients: an actor's own connection to its tree's registrar
//! ([`RegistrarClient`]), how an actor reaches its registrar whether it is one or not
//! ([`RegistrarLink`]), and a passer-by's one-off listing ([`list_registry`]).

use super::entry::ActorEntry;
use super::state::RegistrarState;
use crate::base::error::{ActorError, RemoteActorError, encode};
use crate::base::names::{
    REGISTRAR_FIND, REGISTRAR_LIST, REGISTRAR_REGISTER, REGISTRAR_UNREGISTER, REGISTRAR_WAIT_FOR,
};
use crate::base::sync::LockExt;
use crate::calls::portal::Portal;
use futures::{SinkExt, StreamExt};
use plough_ipc_wire::Address;
use plough_ipc_wire::handshake::{self, Credentials, HandshakeConfig};
use plough_ipc_wire::msg::{Aid, CallKind, Msg, Start, Uuid};
use plough_ipc_wire::{Secret, runtime_dir};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

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
        self.portal.run::<_, ()>(REGISTRAR_REGISTER, entry).await
    }

    /// Unregisters `aid`, waiting at most `budget` for the answer, and closes the
    /// connection unless it is the parent's.
    pub(crate) async fn unregister(&self, aid: &Aid, budget: Duration) {
        let _ = tokio::time::timeout(budget, self.forget(&aid.uuid)).await;
        if !self.shared {
            self.portal.channel().shutdown();
        }
    }

    /// Removes the entry of `uuid` (a stale one, or our own).
    pub(crate) async fn forget(&self, uuid: &Uuid) -> Result<(), ActorError> {
        self.portal.run(REGISTRAR_UNREGISTER, uuid).await
    }

    pub(crate) async fn find(&self, name: &str) -> Result<Vec<ActorEntry>, ActorError> {
        self.portal.run(REGISTRAR_FIND, name).await
    }

    pub(crate) async fn wait_for(&self, name: &str) -> Result<Vec<ActorEntry>, ActorError> {
        self.portal.run(REGISTRAR_WAIT_FOR, name).await
    }

    pub(crate) async fn list(&self) -> Result<Vec<ActorEntry>, ActorError> {
        self.portal.run(REGISTRAR_LIST, ()).await
    }

    /// Whether the connection to the registrar is gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.portal.channel().is_closed()
    }

    /// Resolves when the connection to the registrar is gone.
    pub(crate) async fn closed(&self) {
        self.portal.channel().closed().await
    }

    /// Closes the connection unless it is the parent's (a registration that failed).
    pub(crate) fn close(&self) {
        if !self.shared {
            self.portal.channel().shutdown();
        }
    }
}

/// How one actor reaches its tree's registrar: it is the registrar (the state lives here),
/// or it registered with one over a connection (a client), or neither (yet, or for the
/// moment: the registrar it had is gone and a new one is being found).
///
/// The link changes over an actor's life — a root that joined a registrar becomes the
/// registrar itself when the old one dies, or joins the successor — so every change is
/// announced on a watch, and a lookup that finds the link broken (its call failed because
/// the registrar's connection closed, or no link is up) waits for the next change instead
/// of failing, for as long as the caller allows and only while someone is [`recovering`]
/// the link. Hazard designed out: a lookup during a registrar's failover failing with
/// "transport closed" although a successor is a few milliseconds away.
///
/// [`recovering`]: RegistrarLink::set_recovering
pub(crate) struct RegistrarLink {
    state: Mutex<Option<Arc<RegistrarState>>>,
    client: Mutex<Option<RegistrarClient>>,
    /// Someone re-establishes the link when it breaks (an actor that registered over a
    /// connection of its own).
    recovering: std::sync::atomic::AtomicBool,
    /// Bumped on every change of `state`, `client` or `recovering`.
    changed: watch::Sender<u64>,
}

impl Default for RegistrarLink {
    fn default() -> Self {
        RegistrarLink::new(None)
    }
}

impl std::fmt::Debug for RegistrarLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrarLink")
            .field("is_registrar", &self.state.locked().is_some())
            .field("client", &self.client.locked().is_some())
            .finish()
    }
}

/// What a lookup goes through: the local state, or a client.
enum Via {
    Local(Arc<RegistrarState>),
    Remote(RegistrarClient),
}

impl RegistrarLink {
    /// The link of an actor that is its tree's registrar (`Some`), or will join one.
    pub(crate) fn new(state: Option<Arc<RegistrarState>>) -> Self {
        RegistrarLink {
            state: Mutex::new(state),
            client: Mutex::new(None),
            recovering: std::sync::atomic::AtomicBool::new(false),
            changed: watch::channel(0).0,
        }
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// The registrar's state, when this actor is the registrar.
    pub(crate) fn state(&self) -> Option<Arc<RegistrarState>> {
        self.state.locked().clone()
    }

    /// This actor is the registrar from now on (it won the election after the registrar
    /// it had was lost); the client it had, if any, is dropped.
    pub(crate) fn become_registrar(&self, state: Arc<RegistrarState>) {
        *self.state.locked() = Some(state);
        *self.client.locked() = None;
        self.bump();
    }

    /// Uses `client` from now on (after a successful registration).
    pub(crate) fn set_client(&self, client: RegistrarClient) {
        *self.client.locked() = Some(client);
        self.bump();
    }

    /// Whether a broken link is re-established by someone (lookups then wait for it).
    pub(crate) fn set_recovering(&self, on: bool) {
        self.recovering.store(on, std::sync::atomic::Ordering::SeqCst);
        self.bump();
    }

    fn is_recovering(&self) -> bool {
        self.recovering.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Takes the client away (the actor is exiting and unregisters); nobody recovers the
    /// link from now on.
    pub(crate) fn take_client(&self) -> Option<RegistrarClient> {
        self.recovering.store(false, std::sync::atomic::Ordering::SeqCst);
        let client = self.client.locked().take();
        self.bump();
        client
    }

    /// The current client, if any.
    pub(crate) fn client(&self) -> Option<RegistrarClient> {
        self.client.locked().clone()
    }

    fn via(&self) -> Option<Via> {
        if let Some(state) = self.state() {
            return Some(Via::Local(state));
        }
        self.client().map(Via::Remote)
    }

    /// Runs `ask` over the link; while the link is broken and being recovered, waits for
    /// it (at most `gap` in all) and asks again. `None` without a registrar to ask.
    async fn ask<T, F, Fut>(&self, gap: Option<Duration>, ask: F) -> Option<Result<T, ActorError>>
    where
        F: Fn(Via) -> Fut,
        Fut: Future<Output = Result<T, ActorError>>,
    {
        let deadline = gap.map(|g| tokio::time::Instant::now() + g);
        let mut rx = self.changed.subscribe();
        loop {
            rx.borrow_and_update();
            let via = self.via();
            let last_error = match via {
                Some(via) => {
                    let remote = match &via {
                        Via::Remote(c) => Some(c.clone()),
                        Via::Local(_) => None,
                    };
                    match ask(via).await {
                        Ok(v) => return Some(Ok(v)),
                        // Only a lost link is waited out; the registrar's own answer is final.
                        Err(e) if remote.as_ref().is_some_and(|c| c.is_closed()) => Some(e),
                        Err(e) => return Some(Err(e)),
                    }
                }
                None => None,
            };
            if !self.is_recovering() {
                return last_error.map(Err);
            }
            let wait = rx.changed();
            let waited = match deadline {
                Some(d) => tokio::time::timeout_at(d, wait).await.ok(),
                None => Some(wait.await),
            };
            if !matches!(waited, Some(Ok(()))) {
                return last_error.map(Err);
            }
        }
    }

    /// Every live actor of the tree; `None` without a registrar. Waits out a failover of
    /// the registrar for at most `gap`.
    pub(crate) async fn list(&self, gap: Duration) -> Option<Result<Vec<ActorEntry>, ActorError>> {
        self.ask(Some(gap), |via| async move {
            match via {
                Via::Local(state) => Ok(state.list()),
                Via::Remote(c) => c.list().await,
            }
        })
        .await
    }

    /// The actors named `name`; `None` without a registrar. Waits out a failover of the
    /// registrar for at most `gap`.
    pub(crate) async fn find(
        &self,
        name: &str,
        gap: Duration,
    ) -> Option<Result<Vec<ActorEntry>, ActorError>> {
        self.ask(Some(gap), |via| async move {
            match via {
                Via::Local(state) => Ok(state.find(name)),
                Via::Remote(c) => c.find(name).await,
            }
        })
        .await
    }

    /// The actors named `name`, once there is one; the wait ends empty when `stop`
    /// resolves. A failover of the registrar meanwhile is waited out (the wait has no
    /// bound of its own). `None` without a registrar.
    pub(crate) async fn wait_for(
        &self,
        name: &str,
        stop: impl Future<Output = ()>,
    ) -> Option<Result<Vec<ActorEntry>, ActorError>> {
        let wait = self.ask(None, |via| async move {
            match via {
                Via::Local(state) => Ok(state.wait_for(name).await),
                Via::Remote(c) => c.wait_for(name).await,
            }
        });
        tokio::select! {
            found = wait => found,
            () = stop => Some(Ok(Vec::new())),
        }
    }

    /// Lists `entry`, one this actor answers for (a child on another host, which cannot
    /// register with this tree's registrar itself): in our own registrar, or with the one
    /// we are registered with, over our connection (so it goes when that connection
    /// does). `None` without a registrar.
    pub(crate) async fn register(&self, entry: ActorEntry) -> Option<Result<(), ActorError>> {
        match self.via()? {
            Via::Local(state) => {
                state.add(entry, None);
                Some(Ok(()))
            }
            Via::Remote(c) => Some(c.register(&entry).await),
        }
    }

    /// Removes the entry of `uuid` (best effort).
    pub(crate) async fn forget(&self, uuid: &Uuid) {
        match self.via() {
            Some(Via::Local(state)) => state.remove(uuid),
            Some(Via::Remote(c)) => {
                let _ = c.forget(uuid).await;
            }
            None => {}
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
    let unreachable =
        |detail: String| ActorError::TransportClosed { peer: registry.to_string(), detail };
    let me = Aid { name: "plough-ps".to_owned(), uuid: Uuid::new_v4(), pid: std::process::id() };
    let ask = async {
        let hs = HandshakeConfig::default().with_deadline(timeout);
        let secret =
            Secret::load(&runtime_dir::default_dir().join(plough_ipc_wire::auth::SECRET_FILE))
                .map_err(|e| unreachable(format!("cannot read the user's secret: {e}")))?;
        let creds = Credentials { aid: me.clone(), secret };
        let mut est = handshake::connect(registry, &creds, &hs)
            .await
            .map_err(|e| unreachable(error_chain(&e)))?;
        let start = Start {
            cid: 1,
            function: REGISTRAR_LIST.into(),
            args: encode(&())?,
            caller: me.clone().into(),
            kind: CallKind::Function,
            trace: None,
        };
        est.framed
            .send(Msg::Start(Box::new(start)))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
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
