//! One actor: the process-level state every root and child has.
//!
//! An actor owns its IPC listener, the connections to its peers, the tasks serving calls,
//! and one cancellation token that every served call and every nursery opened in it
//! derives from. Cancelling the actor (its parent asked, its parent vanished, SIGINT at
//! the root) cancels all of that; [`Actor::shutdown`] then waits, within a bound, for the
//! calls and nurseries to finish their own cancellation (which takes their children down
//! through the ladder), unregisters, flushes and closes every connection, and removes the
//! socket file. Its fields are private: the layers above use the methods below.

use super::exposure::Exposure;
use super::registry::Registry;
use crate::base::budgets::Budgets;
use crate::base::config::RuntimeConfig;
use crate::base::error::{ActorError, RemoteActorError};
use crate::base::ids;
use crate::base::runtime_vars;
use crate::base::spawn::{ChildMain, SpawnBackend};
use crate::base::spawn_method::SpawnMethod;
use crate::base::sync::LockExt;
use crate::calls::portal::Portal;
use crate::connection::Channel;
use crate::registrar::client::RegistrarLink;
use crate::registrar::state::RegistrarState;
use plough_fork_prims::marker::{ActorMarker, MarkerInfo, default_runtime_dir};
use plough_ipc_wire::handshake::{self, Acceptor, Credentials, Established, HandshakeConfig};
use plough_ipc_wire::msg::{Aid, ErrorKind, ErrorMsg, Msg, Uuid};
use plough_ipc_wire::{Address, Listener, TlsFiles, TlsIdentity};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A handle on the actor running in this process. Cheap to clone.
#[derive(Clone)]
pub struct Actor {
    inner: Arc<ActorInner>,
}

impl std::fmt::Debug for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Actor")
            .field("aid", &self.inner.aid.to_string())
            .field("addr", &self.inner.addr.to_string())
            .finish()
    }
}

struct ActorInner {
    aid: Arc<Aid>,
    /// The tree's secret: proved on every connection, handed to every child it spawns.
    secret: plough_ipc_wire::Secret,
    registry: Registry,
    config: RuntimeConfig,
    backend: Option<Arc<dyn SpawnBackend>>,
    child_main: ChildMain,
    cancel: CancellationToken,
    /// Cancelled to escalate: every ladder of this actor skips to SIGKILL (a second signal).
    hard: CancellationToken,
    canceller: Mutex<Option<Aid>>,
    tasks: TaskTracker,
    /// The accept loops: each owns its listener, whose socket file goes with it. Waited
    /// for before the marker goes, so the marker outlives every file it names (a SIGKILL
    /// between the two would leave a socket file that no marker leads the reaper to).
    accepting: TaskTracker,
    addr: Address,
    /// Children being spawned, by uuid: their connection goes to whoever waits.
    /// Children being spawned, by uuid: the one-time key each must prove when it connects
    /// back (see `plough_ipc_wire::PeerKeys`), and who waits for its connection.
    pending_spawns: Mutex<HashMap<Uuid, (plough_ipc_wire::Secret, oneshot::Sender<Channel>)>>,
    /// How many spawned children have connected back so far: booting children measure
    /// this actor's boot progress with it.
    boots_done: std::sync::atomic::AtomicU64,
    channels: Mutex<Vec<Channel>>,
    /// The connections this actor dialed with [`Actor::connect`], by address: reused by
    /// every later `connect` to the same address while open (lookups and portals share
    /// one multiplexed connection per peer instead of one each).
    dialed: Mutex<HashMap<Address, Channel>>,
    registrar: RegistrarLink,
    /// The address every actor of the tree registers with.
    registry_addr: Address,
    is_root: bool,
    /// This process's actor marker (removed at the end of shutdown).
    marker: Mutex<Option<ActorMarker>>,
    /// The partial frames of every connection this actor serves are charged to this
    /// ([`Budgets::partial_frames`]).
    frame_budget: plough_ipc_wire::FrameBudget,
    /// This host's TLS identity and its files, for a tree that spans hosts: every dial
    /// uses it, every child's boot names the files.
    tls: Option<(TlsFiles, TlsIdentity)>,
    /// The actor's span: the parent of every call it serves.
    trace: crate::base::trace::ActorTrace,
    /// Which registered functions it serves (see `exposure`).
    exposure: Exposure,
    /// A child's connection to its parent, and the parent's address (see `lineage`).
    parent: std::sync::OnceLock<(Address, Channel)>,
    /// Where else it listens (`RuntimeConfig::bind_addrs`, `SpawnOptions::bind`).
    more_addrs: Mutex<Vec<Address>>,
}

/// What an actor is made of (the runtime layer assembles it).
pub(crate) struct ActorParts {
    pub(crate) aid: Aid,
    pub(crate) secret: plough_ipc_wire::Secret,
    pub(crate) registry: Registry,
    pub(crate) config: RuntimeConfig,
    pub(crate) backend: Option<Arc<dyn SpawnBackend>>,
    pub(crate) child_main: ChildMain,
    pub(crate) listener: Listener,
    /// `Some` when this actor is its tree's registrar.
    pub(crate) registrar: Option<Arc<RegistrarState>>,
    pub(crate) registry_addr: Address,
    pub(crate) is_root: bool,
    /// This host's TLS identity (see [`RuntimeConfig::tls`]).
    pub(crate) tls: Option<(TlsFiles, TlsIdentity)>,
    /// The actor's span (made in its own process: it reseeds the span ids).
    pub(crate) trace: crate::base::trace::ActorTrace,
    /// Which registered functions it serves.
    pub(crate) exposure: Exposure,
}

/// A child being spawned: resolves to its connection once it has connected back and
/// handshaken; dropping it forgets the child.
pub(crate) struct PendingChild {
    actor: Actor,
    uuid: Uuid,
    rx: oneshot::Receiver<Channel>,
}

impl PendingChild {
    /// The child's connection, or `None` if the actor stopped accepting.
    pub(crate) async fn connected(&mut self) -> Option<Channel> {
        (&mut self.rx).await.ok()
    }
}

impl Drop for PendingChild {
    fn drop(&mut self) {
        self.actor.inner.pending_spawns.locked().remove(&self.uuid);
    }
}

impl Actor {
    /// Builds the actor and starts accepting connections.
    pub(crate) fn start(parts: ActorParts) -> Actor {
        let addr = parts.listener.local_addr().clone();
        let frame_budget = plough_ipc_wire::FrameBudget::new(parts.config.budgets.partial_frames);
        let actor = Actor {
            inner: Arc::new(ActorInner {
                aid: Arc::new(parts.aid),
                secret: parts.secret,
                registry: parts.registry,
                config: parts.config,
                backend: parts.backend,
                child_main: parts.child_main,
                cancel: CancellationToken::new(),
                hard: CancellationToken::new(),
                canceller: Mutex::new(None),
                tasks: TaskTracker::new(),
                accepting: TaskTracker::new(),
                addr,
                pending_spawns: Mutex::new(HashMap::new()),
                channels: Mutex::new(Vec::new()),
                dialed: Mutex::new(HashMap::new()),
                boots_done: std::sync::atomic::AtomicU64::new(0),
                registrar: RegistrarLink::new(parts.registrar),
                registry_addr: parts.registry_addr,
                is_root: parts.is_root,
                marker: Mutex::new(None),
                frame_budget,
                tls: parts.tls,
                trace: parts.trace,
                exposure: parts.exposure,
                parent: std::sync::OnceLock::new(),
                more_addrs: Mutex::new(Vec::new()),
            }),
        };
        actor.serve_listener(parts.listener);
        actor
    }

    /// Accepts connections on `listener` too, as on the actor's own: a root that becomes
    /// the registrar after the old one was lost serves the registry address this way.
    /// The accept loop owns the listener: it ends (and a socket file goes) when the actor
    /// is cancelled. During shutdown nobody new may join.
    pub(crate) fn serve_listener(&self, listener: Listener) {
        // The listener keeps fds free for spawning, reaping and cancelling (see
        // `Budgets::fd_reserve`).
        let listener = listener.with_fd_reserve(self.budgets().listener_fd_reserve());
        let inner = Arc::downgrade(&self.inner);
        let keys: plough_ipc_wire::PeerKeys = Arc::new(move |uuid| {
            Some(inner.upgrade()?.pending_spawns.locked().get(uuid)?.0.clone())
        });
        let mut acceptor = Acceptor::new(listener, self.credentials(), self.handshake_config())
            .with_peer_keys(keys);
        let a = self.clone();
        let stop = self.inner.cancel.clone();
        self.inner.accepting.spawn(async move {
            loop {
                tokio::select! {
                    est = acceptor.accept() => a.accepted(est),
                    () = stop.cancelled() => break,
                }
            }
            drop(acceptor);
        });
    }

    /// Who this actor is on every connection, and the tree's secret it proves.
    pub(crate) fn credentials(&self) -> Credentials {
        Credentials { aid: (*self.inner.aid).clone(), secret: self.inner.secret.clone() }
    }

    /// The tree's secret (for a child's boot).
    pub(crate) fn secret(&self) -> &plough_ipc_wire::Secret {
        &self.inner.secret
    }

    /// The handshake settings of every connection this actor makes or accepts.
    pub(crate) fn handshake_config(&self) -> HandshakeConfig {
        let hs = HandshakeConfig::default().with_deadline(self.inner.config.budgets.handshake);
        match self.inner.config.build_id {
            Some(id) => hs.with_build_id(id),
            None => hs,
        }
    }

    /// This host's TLS identity, if the tree spans hosts.
    pub(crate) fn tls(&self) -> Option<&TlsIdentity> {
        self.inner.tls.as_ref().map(|(_, id)| id)
    }

    /// The files of this host's TLS identity (for a child's boot).
    pub(crate) fn tls_files(&self) -> Option<&TlsFiles> {
        self.inner.tls.as_ref().map(|(files, _)| files)
    }

    fn accepted(&self, est: Established) {
        let uuid = est.peer.uuid;
        let waiting = self.inner.pending_spawns.locked().remove(&uuid);
        let channel = self.attach(est, false);
        if let Some((_, tx)) = waiting {
            self.inner.boots_done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let _ = tx.send(channel);
        }
    }

    /// Starts serving an established connection.
    pub(crate) fn attach(&self, mut est: Established, dialer: bool) -> Channel {
        est.framed.codec_mut().set_frame_budget(self.inner.frame_budget.clone());
        let channel = Channel::start(
            est,
            dialer,
            (*self.inner.aid).clone(),
            &self.inner.config.budgets,
            Arc::new(self.clone()),
        );
        self.inner.channels.locked().push(channel.clone());
        channel
    }

    /// How many spawned children have connected back to this actor so far.
    pub(crate) fn boots_done(&self) -> u64 {
        self.inner.boots_done.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits for the child `uuid` (about to be spawned) to connect back, proving `token`.
    pub(crate) fn expect_child(&self, uuid: Uuid, token: plough_ipc_wire::Secret) -> PendingChild {
        let (tx, rx) = oneshot::channel();
        self.inner.pending_spawns.locked().insert(uuid, (token, tx));
        PendingChild { actor: self.clone(), uuid, rx }
    }

    /// A portal for calls from this actor over `channel`.
    pub(crate) fn portal(&self, channel: Channel) -> Portal {
        let ladder = self.inner.config.budgets.ladder;
        Portal::new(channel, Arc::clone(&self.inner.aid), ladder.ack_timeout)
            .settle_within(ladder.ack_timeout + ladder.exit_timeout)
    }

    /// Connects to another actor (by address) and returns a portal to it. A connection
    /// this actor already has open to that address is reused (calls are multiplexed over
    /// it), so a program that looks actors up again and again holds one connection per
    /// peer, not one per lookup.
    ///
    /// # Errors
    ///
    /// `TransportClosed` when the address does not answer or the handshake fails.
    pub async fn connect(&self, addr: &Address) -> Result<Portal, ActorError> {
        let open = self.inner.dialed.locked().get(addr).filter(|c| !c.is_closed()).cloned();
        if let Some(channel) = open {
            return Ok(self.portal(channel));
        }
        let (me, hs) = (self.credentials(), self.handshake_config());
        let est = handshake::connect_with(addr, &me, &hs, self.tls()).await.map_err(|e| {
            ActorError::TransportClosed { peer: addr.to_string(), detail: e.to_string() }
        })?;
        let channel = self.attach(est, true);
        let mut dialed = self.inner.dialed.locked();
        dialed.retain(|_, c| !c.is_closed());
        dialed.insert(addr.clone(), channel.clone());
        drop(dialed);
        Ok(self.portal(channel))
    }

    /// Closes the connection dialed to `addr`, if any (another actor answers there now).
    pub(crate) fn hang_up(&self, addr: &Address) {
        if let Some(channel) = self.inner.dialed.locked().remove(addr) {
            channel.shutdown();
        }
    }

    /// This actor's identity.
    pub fn aid(&self) -> &Aid {
        &self.inner.aid
    }

    /// [`Actor::aid`], shared (every call it serves holds it).
    pub(crate) fn aid_shared(&self) -> &Arc<Aid> {
        &self.inner.aid
    }

    /// Where this actor listens.
    pub fn addr(&self) -> &Address {
        &self.inner.addr
    }

    /// Every address this actor listens on: [`Actor::addr`] first (the one its tree knows
    /// it by), then those it was asked to bind too (`RuntimeConfig::bind_addrs`,
    /// `SpawnOptions::bind`) as bound (a port 0 resolved). Their schemes are the
    /// transports it serves; each authenticates like the first.
    pub fn addrs(&self) -> Vec<Address> {
        let mut all = vec![self.inner.addr.clone()];
        all.extend(self.inner.more_addrs.locked().iter().cloned());
        all
    }

    /// Accepts connections on `listener` too, for good (until the actor is cancelled).
    pub(crate) fn listen_also(&self, listener: Listener) {
        self.inner.more_addrs.locked().push(listener.local_addr().clone());
        self.serve_listener(listener);
    }

    /// The registry address of this tree.
    pub fn registry_addr(&self) -> &Address {
        &self.inner.registry_addr
    }

    /// Whether this is the root actor of its tree.
    pub fn is_root(&self) -> bool {
        self.inner.is_root
    }

    /// Whether this actor is its tree's registrar now. A root that joined another
    /// program's registrar becomes it when that registrar's root goes away and this root
    /// wins the election for the registry address.
    pub fn is_registrar(&self) -> bool {
        self.inner.registrar.state().is_some()
    }

    /// The spawn method this actor's children are started with.
    pub fn spawn_method(&self) -> SpawnMethod {
        self.inner.config.spawn_method
    }

    /// Whether this actor is being cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// Resolves when this actor is cancelled.
    pub async fn cancelled(&self) {
        self.inner.cancel.cancelled().await
    }

    /// Cancels this actor (everything it serves and every nursery in it), recording who
    /// asked.
    pub fn cancel(&self, canceller: Aid) {
        self.inner.canceller.locked().get_or_insert(canceller);
        self.inner.cancel.cancel();
    }

    /// Resolves when a shutdown of this actor was asked for: a signal (SIGINT, SIGTERM), its
    /// parent's cancel, or its parent's death. A long-lived service `select!`s on it to
    /// finish its work (the same event as [`Actor::cancelled`]).
    pub async fn shutdown_requested(&self) {
        self.inner.cancel.cancelled().await
    }

    /// A token cancelled when a shutdown of this actor is asked for (see
    /// [`Actor::shutdown_requested`]); cancelling it does not cancel the actor.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.cancel.child_token()
    }

    /// Escalates this actor's cancellation: every ladder it runs (and every nursery
    /// dropped from now on) skips to SIGKILL of the children's process groups. A second
    /// SIGINT/SIGTERM does this.
    pub(crate) fn escalate(&self) {
        self.inner.hard.cancel();
    }

    /// Whether [`Actor::escalate`] was called.
    pub(crate) fn is_escalated(&self) -> bool {
        self.inner.hard.is_cancelled()
    }

    /// Resolves once [`Actor::escalate`] is called.
    pub(crate) async fn escalated(&self) {
        self.inner.hard.cancelled().await
    }

    /// Who cancelled this actor, once it is cancelled.
    pub fn canceller(&self) -> Option<Aid> {
        self.inner.canceller.locked().clone()
    }

    /// The actor's own cancellation token (served calls and nurseries derive from it).
    pub(crate) fn cancel_token(&self) -> &CancellationToken {
        &self.inner.cancel
    }

    /// The tasks this actor runs for the calls it serves (awaited at shutdown).
    pub(crate) fn tasks(&self) -> &TaskTracker {
        &self.inner.tasks
    }

    /// The functions this actor serves.
    pub(crate) fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// Which of them it exposes.
    pub(crate) fn exposure(&self) -> &Exposure {
        &self.inner.exposure
    }

    /// The parent's connection slot (set once by a child's runtime).
    pub(crate) fn parent_slot(&self) -> &std::sync::OnceLock<(Address, Channel)> {
        &self.inner.parent
    }

    /// The runtime's budgets.
    pub(crate) fn budgets(&self) -> &Budgets {
        &self.inner.config.budgets
    }

    /// The actor's span and its trace context.
    pub(crate) fn trace(&self) -> &crate::base::trace::ActorTrace {
        &self.inner.trace
    }

    /// The spawn backend, if the runtime has one.
    pub(crate) fn backend(&self) -> Option<Arc<dyn SpawnBackend>> {
        self.inner.backend.clone()
    }

    /// The in-process entry point of a forked child.
    pub(crate) fn child_main(&self) -> ChildMain {
        Arc::clone(&self.inner.child_main)
    }

    /// How this actor reaches its tree's registrar.
    pub(crate) fn registrar(&self) -> &RegistrarLink {
        &self.inner.registrar
    }

    /// The connections that are still open.
    pub(crate) fn forget_closed_channels(&self) {
        self.inner.channels.locked().retain(|c| !c.is_closed());
    }

    /// Waits for served calls and nurseries to wind down (bounded), then unregisters and
    /// closes every connection.
    pub(crate) async fn shutdown(&self) {
        let budgets = *self.budgets();
        self.inner.cancel.cancel();
        self.inner.tasks.close();
        let bound = budgets.served_calls();
        if tokio::time::timeout(bound, self.inner.tasks.wait()).await.is_err() {
            tracing::warn!(actor = %self.inner.aid, "served calls did not finish within {bound:?}; leaving them");
        }
        if let Some(client) = self.inner.registrar.take_client() {
            client.unregister(&self.inner.aid, budgets.unregister).await;
        }
        let channels = std::mem::take(&mut *self.inner.channels.locked());
        for ch in &channels {
            ch.shutdown();
        }
        // Give the writers a moment to flush; each closes as soon as it has.
        let flush = async {
            for ch in &channels {
                ch.closed().await;
            }
        };
        let _ = tokio::time::timeout(budgets.flush, flush).await;
        // Every child is down: what the backend keeps for spawning (a zygote) goes now,
        // not whenever the last task holding the backend is dropped.
        if let Some(backend) = &self.inner.backend {
            backend.shutdown().await;
        }
        // The listeners (cancelled above) are gone, their socket files with them, before
        // the marker that names them.
        self.inner.accepting.close();
        if tokio::time::timeout(budgets.flush, self.inner.accepting.wait()).await.is_err() {
            tracing::warn!(actor = %self.inner.aid, "a listener did not close within {:?}", budgets.flush);
        }
        drop(self.inner.marker.locked().take());
    }

    /// Writes this process's actor marker (see `plough_fork_prims::marker`): how
    /// `plough-reap` recognises our actors, forked ones included.
    pub(crate) fn write_marker(&self, tree: &Uuid, parent_pid: u32, method: &str) {
        let marker = create_marker(&self.inner.aid, &self.inner.addr, tree, parent_pid, method);
        self.adopt_marker(marker);
    }

    /// Takes over a marker written before this actor started (removed at shutdown).
    pub(crate) fn adopt_marker(&self, marker: Option<ActorMarker>) {
        if marker.is_some() {
            *self.inner.marker.locked() = marker;
        }
    }

    /// The uuid of this actor's tree (its root's uuid).
    pub fn tree_uuid(&self) -> Uuid {
        ids::current_tree().unwrap_or(self.inner.aid.uuid)
    }

    /// Answers call `cid` with `err` (from a task of this actor).
    pub(crate) fn reply_error(&self, channel: &Channel, cid: u64, err: RemoteActorError) {
        let ch = channel.clone();
        self.inner.tasks.spawn(async move {
            let _ = ch.send(Msg::Error(Box::new(err.to_msg(Some(cid))))).await;
        });
    }

    /// The error that answers call `cid` when `canceller` cancelled it.
    pub(crate) fn cancelled_error(&self, cid: u64, canceller: Aid) -> ErrorMsg {
        let mut e = RemoteActorError::new(
            (*self.inner.aid).clone(),
            ErrorKind::Cancelled,
            format!("cancelled by {canceller}"),
        );
        e.canceller = Some(canceller);
        e.to_msg(Some(cid))
    }
}

/// Writes the actor marker of this process (see `plough_fork_prims::marker`), and names
/// the process and its log lines after the actor. `None` (logged) if it cannot be written.
pub(crate) fn create_marker(
    aid: &Aid,
    addr: &Address,
    tree: &Uuid,
    parent_pid: u32,
    method: &str,
) -> Option<ActorMarker> {
    runtime_vars::set_actor_label(format!("{aid} {method}"));
    let info = MarkerInfo {
        name: aid.name.clone(),
        uuid: aid.uuid.to_string(),
        tree: tree.to_string(),
        parent_pid,
        addr: addr.to_string(),
        method: method.to_owned(),
        ..MarkerInfo::default()
    };
    match ActorMarker::create(&default_runtime_dir(), info) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(error = %e, "cannot write the actor marker");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An actor listening on a Unix socket in a directory of its own.
    async fn actor_at(dir: &std::path::Path) -> (Actor, std::path::PathBuf) {
        let sock = dir.join("lone@1.sock");
        let listener = Listener::bind(&Address::Uds(sock.clone())).await.expect("bind");
        let aid = Aid { name: "lone".into(), uuid: Uuid([9; 16]), pid: std::process::id() };
        let actor = Actor::start(ActorParts {
            trace: crate::base::trace::ActorTrace::new(&aid, "test"),
            aid,
            secret: plough_ipc_wire::Secret::from_bytes([7; 32]),
            registry: Registry::new(),
            config: RuntimeConfig::default(),
            backend: None,
            child_main: Arc::new(|_, _| 0),
            listener,
            registrar: None,
            registry_addr: Address::Uds(sock.clone()),
            is_root: true,
            tls: None,
            exposure: Exposure::all(),
        });
        (actor, sock)
    }

    #[tokio::test]
    async fn the_socket_file_is_gone_when_shutdown_returns() {
        // The marker goes at the very end of `shutdown`: a SIGKILL after it must find no
        // socket file left that no marker names any more. Nothing here gives the accept
        // loop a turn before `shutdown` would return if it did not wait for it.
        let dir = std::env::temp_dir().join(format!("plough-actor-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (actor, sock) = actor_at(&dir).await;
        assert!(sock.exists());
        actor.shutdown().await;
        assert!(!sock.exists(), "the listener closed before shutdown returned");
        drop(actor);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
