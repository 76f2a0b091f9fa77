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
}

/// How one actor reaches its tree's registrar: it is the registrar (the state lives here),
/// or it registered with one over a connection (a client), or neither (yet).
#[derive(Default)]
pub(crate) struct RegistrarLink {
    state: Option<Arc<RegistrarState>>,
    client: Mutex<Option<RegistrarClient>>,
}

impl std::fmt::Debug for RegistrarLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrarLink")
            .field("is_registrar", &self.state.is_some())
            .field("client", &self.client.locked().is_some())
            .finish()
    }
}

impl RegistrarLink {
    /// The link of an actor that is its tree's registrar (`Some`), or will join one.
    pub(crate) fn new(state: Option<Arc<RegistrarState>>) -> Self {
        RegistrarLink { state, client: Mutex::new(None) }
    }

    /// The registrar's state, when this actor is the registrar.
    pub(crate) fn state(&self) -> Option<&Arc<RegistrarState>> {
        self.state.as_ref()
    }

    /// Uses `client` from now on (after a successful registration).
    pub(crate) fn set_client(&self, client: RegistrarClient) {
        *self.client.locked() = Some(client);
    }

    /// Takes the client away (the actor is exiting and unregisters).
    pub(crate) fn take_client(&self) -> Option<RegistrarClient> {
        self.client.locked().take()
    }

    fn client(&self) -> Option<RegistrarClient> {
        self.client.locked().clone()
    }

    /// Every live actor of the tree; `None` without a registrar.
    pub(crate) async fn list(&self) -> Option<Result<Vec<ActorEntry>, ActorError>> {
        match (&self.state, self.client()) {
            (Some(state), _) => Some(Ok(state.list())),
            (None, Some(c)) => Some(c.list().await),
            (None, None) => None,
        }
    }

    /// The actors named `name`; `None` without a registrar.
    pub(crate) async fn find(&self, name: &str) -> Option<Result<Vec<ActorEntry>, ActorError>> {
        match (&self.state, self.client()) {
            (Some(state), _) => Some(Ok(state.find(name))),
            (None, Some(c)) => Some(c.find(name).await),
            (None, None) => None,
        }
    }

    /// The actors named `name`, once there is one; a local wait ends empty when `stop`
    /// resolves. `None` without a registrar.
    pub(crate) async fn wait_for(
        &self,
        name: &str,
        stop: impl Future<Output = ()>,
    ) -> Option<Result<Vec<ActorEntry>, ActorError>> {
        match (&self.state, self.client()) {
            (Some(state), _) => Some(Ok(tokio::select! {
                e = state.wait_for(name) => e,
                () = stop => Vec::new(),
            })),
            (None, Some(c)) => Some(c.wait_for(name).await),
            (None, None) => None,
        }
    }

    /// Removes the entry of `uuid` (best effort).
    pub(crate) async fn forget(&self, uuid: &Uuid) {
        match (&self.state, self.client()) {
            (Some(state), _) => state.remove(uuid),
            (None, Some(c)) => {
                let _ = c.forget(uuid).await;
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
            function: REGISTRAR_LIST.to_owned(),
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
