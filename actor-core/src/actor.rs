//! One actor: the process-level state every root and child has, and how it serves.
//!
//! An actor owns its IPC listener, the connections to its peers, the tasks serving calls,
//! and one cancellation token that every served call and every nursery opened in it
//! derives from. Cancelling the actor (its parent asked, its parent vanished, SIGINT at
//! the root) cancels all of that; `Actor::shutdown` then waits, within a bound, for the
//! calls and nurseries to finish their own cancellation (which takes their children down
//! through the ladder), unregisters, flushes and closes every connection, and removes the
//! socket file.

use crate::channel::{Channel, Serve};
use crate::context::Context;
use crate::error::{ActorError, RemoteActorError};
use crate::handler::{Cx, Registry};
use crate::nursery::Nursery;
use crate::portal::Portal;
use crate::registrar::{RegistrarClient, RegistrarState};
use crate::runtime::RuntimeConfig;
use crate::spawn::{ChildMain, SpawnBackend};
use plough_ipc_wire::handshake::{self, Acceptor, Established, HandshakeConfig};
use plough_ipc_wire::msg::{Aid, CallKind, CancelAck, ErrorMsg, Hello, Msg, Start, Uuid};
use plough_ipc_wire::payload::Payload;
use plough_ipc_wire::{Address, Listener};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Reserved function names served by the runtime itself.
pub(crate) mod internal {
    pub const CANCEL_ACTOR: &str = "plough.cancel_actor";
    pub const CANCEL_CALL: &str = "plough.cancel_call";
}

/// A handle on the actor running in this process. Cheap to clone.
#[derive(Clone)]
pub struct Actor {
    pub(crate) inner: Arc<ActorInner>,
}

impl std::fmt::Debug for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Actor")
            .field("aid", &self.inner.aid.to_string())
            .field("addr", &self.inner.addr.to_string())
            .finish()
    }
}

pub(crate) struct ActorInner {
    pub(crate) aid: Aid,
    pub(crate) registry: Registry,
    pub(crate) config: RuntimeConfig,
    pub(crate) backend: Option<Arc<dyn SpawnBackend>>,
    pub(crate) child_main: ChildMain,
    pub(crate) cancel: CancellationToken,
    pub(crate) canceller: Mutex<Option<Aid>>,
    pub(crate) tasks: TaskTracker,
    pub(crate) addr: Address,
    pub(crate) pending_spawns: Mutex<HashMap<Uuid, oneshot::Sender<Channel>>>,
    pub(crate) channels: Mutex<Vec<Channel>>,
    pub(crate) registrar: Option<Arc<RegistrarState>>,
    pub(crate) registrar_client: Mutex<Option<RegistrarClient>>,
    /// The address every actor of the tree registers with.
    pub(crate) registry_addr: Address,
    pub(crate) is_root: bool,
    /// This process's actor marker (removed at the end of shutdown).
    pub(crate) marker: Mutex<Option<plough_fork_prims::marker::ActorMarker>>,
}

/// A fresh random actor id.
pub(crate) fn new_uuid() -> Uuid {
    let mut b = [0u8; 16];
    rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty()).expect("getrandom");
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // variant
    Uuid(b)
}

pub(crate) struct ActorParts {
    pub(crate) aid: Aid,
    pub(crate) registry: Registry,
    pub(crate) config: RuntimeConfig,
    pub(crate) backend: Option<Arc<dyn SpawnBackend>>,
    pub(crate) child_main: ChildMain,
    pub(crate) listener: Listener,
    pub(crate) registrar: Option<Arc<RegistrarState>>,
    pub(crate) registry_addr: Address,
    pub(crate) is_root: bool,
}

impl Actor {
    /// Builds the actor and starts accepting connections.
    pub(crate) fn start(parts: ActorParts) -> Actor {
        let addr = parts.listener.local_addr().clone();
        let actor = Actor {
            inner: Arc::new(ActorInner {
                aid: parts.aid,
                registry: parts.registry,
                config: parts.config,
                backend: parts.backend,
                child_main: parts.child_main,
                cancel: CancellationToken::new(),
                canceller: Mutex::new(None),
                tasks: TaskTracker::new(),
                addr,
                pending_spawns: Mutex::new(HashMap::new()),
                channels: Mutex::new(Vec::new()),
                registrar: parts.registrar,
                registrar_client: Mutex::new(None),
                registry_addr: parts.registry_addr,
                is_root: parts.is_root,
                marker: Mutex::new(None),
            }),
        };
        let hello = actor.hello();
        let mut acceptor = Acceptor::new(parts.listener, hello, actor.handshake_config());
        let a = actor.clone();
        // The accept loop owns the listener: it ends (and the socket file goes) when the
        // actor is cancelled and its tasks are done.
        let stop = actor.inner.cancel.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    est = acceptor.accept() => a.accepted(est),
                    () = stop.cancelled() => break,
                }
            }
            // Keep accepting a little longer? No: during shutdown nobody new may join.
            drop(acceptor);
        });
        actor
    }

    pub(crate) fn hello(&self) -> Hello {
        Hello { aid: self.inner.aid.clone(), tree_proof: Default::default() }
    }

    pub(crate) fn handshake_config(&self) -> HandshakeConfig {
        HandshakeConfig::default().with_deadline(self.inner.config.handshake_timeout)
    }

    fn accepted(&self, est: Established) {
        let uuid = est.peer.aid.uuid;
        let waiting =
            self.inner.pending_spawns.lock().unwrap_or_else(|p| p.into_inner()).remove(&uuid);
        let channel = self.attach(est, false);
        if let Some(tx) = waiting {
            let _ = tx.send(channel);
        }
    }

    /// Starts serving an established connection.
    pub(crate) fn attach(&self, est: Established, dialer: bool) -> Channel {
        let channel = Channel::start(est, dialer, Arc::new(self.clone()));
        self.inner.channels.lock().unwrap_or_else(|p| p.into_inner()).push(channel.clone());
        channel
    }

    /// Connects to another actor (by address) and returns a portal to it.
    ///
    /// # Errors
    ///
    /// `TransportClosed` when the address does not answer or the handshake fails.
    pub async fn connect(&self, addr: &Address) -> Result<Portal, ActorError> {
        let est = handshake::connect(addr, &self.hello(), &self.handshake_config()).await.map_err(
            |e| ActorError::TransportClosed { peer: addr.to_string(), detail: e.to_string() },
        )?;
        Ok(Portal::new(self.attach(est, true), self.clone()))
    }

    /// This actor's identity.
    pub fn aid(&self) -> &Aid {
        &self.inner.aid
    }

    /// Where this actor listens.
    pub fn addr(&self) -> &Address {
        &self.inner.addr
    }

    /// The registry address of this tree.
    pub fn registry_addr(&self) -> &Address {
        &self.inner.registry_addr
    }

    /// Whether this is the root actor of its tree.
    pub fn is_root(&self) -> bool {
        self.inner.is_root
    }

    /// Whether this actor is its tree's registrar.
    pub fn is_registrar(&self) -> bool {
        self.inner.registrar.is_some()
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
        self.inner.canceller.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(canceller);
        self.inner.cancel.cancel();
    }

    /// Who cancelled this actor, once it is cancelled.
    pub fn canceller(&self) -> Option<Aid> {
        self.inner.canceller.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Opens a nursery: `body` may start child actors through it; `nursery` returns only
    /// after every child has exited and been reaped. See [`Nursery`].
    ///
    /// # Errors
    ///
    /// The body's error and every child's failure, together (see [`ActorError::collect`]).
    pub async fn nursery<T, F, Fut>(&self, body: F) -> Result<T, ActorError>
    where
        F: FnOnce(Nursery) -> Fut,
        Fut: std::future::Future<Output = Result<T, ActorError>>,
    {
        Nursery::run(self.clone(), &self.inner.cancel, None, body).await
    }

    /// Waits for served calls and nurseries to wind down (bounded), then unregisters and
    /// closes every connection.
    pub(crate) async fn shutdown(&self) {
        self.inner.cancel.cancel();
        self.inner.tasks.close();
        let budget = self.inner.config.ladder.total() + Duration::from_millis(500);
        if tokio::time::timeout(budget, self.inner.tasks.wait()).await.is_err() {
            tracing::warn!(actor = %self.inner.aid, "served calls did not finish within {budget:?}; leaving them");
        }
        let client = self.inner.registrar_client.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(client) = client {
            client.unregister(&self.inner.aid).await;
        }
        let channels =
            std::mem::take(&mut *self.inner.channels.lock().unwrap_or_else(|p| p.into_inner()));
        for ch in &channels {
            ch.shutdown();
        }
        // Give the writers a moment to flush; each closes as soon as it has.
        let flush = async {
            for ch in &channels {
                ch.closed().await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_millis(500), flush).await;
        drop(self.inner.marker.lock().unwrap_or_else(|p| p.into_inner()).take());
    }

    /// Writes this process's actor marker (see `plough_fork_prims::marker`): how
    /// `plough-reap` recognises our actors, forked ones included.
    pub(crate) fn write_marker(
        &self,
        tree: &plough_ipc_wire::msg::Uuid,
        parent_pid: u32,
        method: &str,
    ) {
        let marker = create_marker(&self.inner.aid, &self.inner.addr, tree, parent_pid, method);
        self.adopt_marker(marker);
    }

    /// Takes over a marker written before this actor started (removed at shutdown).
    pub(crate) fn adopt_marker(&self, marker: Option<plough_fork_prims::marker::ActorMarker>) {
        if marker.is_some() {
            *self.inner.marker.lock().unwrap_or_else(|p| p.into_inner()) = marker;
        }
    }

    /// The uuid of this actor's tree (its root's uuid).
    pub fn tree_uuid(&self) -> plough_ipc_wire::msg::Uuid {
        tree_from_vars(&crate::runtime_vars::get(false)).unwrap_or(self.inner.aid.uuid)
    }

    fn reply_error(&self, channel: &Channel, cid: u64, err: RemoteActorError) {
        let ch = channel.clone();
        self.inner.tasks.spawn(async move {
            let _ = ch.send(Msg::Error(err.to_msg(Some(cid)))).await;
        });
    }

    fn cancelled_error(&self, cid: u64, canceller: Aid) -> ErrorMsg {
        let mut e = RemoteActorError::new(
            self.inner.aid.clone(),
            "ContextCancelled",
            format!("cancelled by {canceller}"),
        );
        e.canceller = Some(canceller);
        e.to_msg(Some(cid))
    }
}

impl Actor {
    /// After a served call was cancelled: lets it finish on its own for `grace`, and for
    /// as long as the ladder takes while it has nurseries open (checked again after the
    /// grace: a nursery may have opened meanwhile). A call with open nurseries is never
    /// dropped early: dropping a nursery hands its children to a reaper thread, and if
    /// this process then exits they are orphaned. Returns the call's own result, if it
    /// finished.
    async fn finish_after_cancel(
        &self,
        fut: &mut futures::future::BoxFuture<'static, Result<Payload, RemoteActorError>>,
        open_nurseries: &std::sync::atomic::AtomicUsize,
        grace: Duration,
    ) -> Option<Result<Payload, RemoteActorError>> {
        if !grace.is_zero()
            && let Ok(out) = tokio::time::timeout(grace, &mut *fut).await
        {
            return Some(out);
        }
        if open_nurseries.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            let ladder = self.inner.config.ladder.total() + Duration::from_millis(500);
            return tokio::time::timeout(ladder, fut).await.ok();
        }
        None
    }

    /// Serves a context function: like a function, but a cancel gives the function a
    /// grace period to finish its own cleanup (its stream operations fail with
    /// `ContextCancelled` at once), so a real error it raises meanwhile is what the parent
    /// gets, not the cancel.
    fn serve_context(
        &self,
        channel: &Channel,
        ctx: Context,
        fut: futures::future::BoxFuture<'static, Result<Payload, RemoteActorError>>,
        token: CancellationToken,
        open_nurseries: Arc<std::sync::atomic::AtomicUsize>,
    ) {
        let ch = channel.clone();
        let me = self.clone();
        let cid = ctx.cid();
        self.inner.tasks.spawn(async move {
            let mut fut = fut;
            let reply = tokio::select! {
                biased;
                out = &mut fut => match out {
                    // It returned (or raised a cancel) after its context was cancelled,
                    // e.g. by itself: the outcome is the cancel.
                    Ok(_) if token.is_cancelled() => Msg::Error(me.cancelled_error(cid, canceller_of(&ctx, &ch))),
                    Err(e) if e.canceller.is_some() && token.is_cancelled() => Msg::Error(me.cancelled_error(cid, canceller_of(&ctx, &ch))),
                    out => reply_for(cid, out),
                },
                () = token.cancelled() => {
                    let canceller = canceller_of(&ctx, &ch);
                    let grace = me.inner.config.ladder.ack_timeout;
                    match me.finish_after_cancel(&mut fut, &open_nurseries, grace).await {
                        Some(Err(e)) if e.canceller.is_none() => reply_for(cid, Err(e)),
                        _ => Msg::Error(me.cancelled_error(cid, canceller)),
                    }
                }
            };
            drop(fut);
            drop(ctx);
            ch.untrack_served(cid);
            let _ = ch.send(reply).await;
        });
    }
}

impl Serve for Actor {
    fn serve(&self, channel: &Channel, start: Start) {
        let cid = start.cid;
        match start.function.as_str() {
            internal::CANCEL_ACTOR => {
                let ch = channel.clone();
                let me = self.clone();
                let peer = channel.peer().clone();
                tokio::spawn(async move {
                    let _ = ch.send(Msg::CancelAck(CancelAck { cid, acked: true })).await;
                    tracing::info!(actor = %me.inner.aid, by = %peer, "cancel requested");
                    me.cancel(peer);
                });
            }
            internal::CANCEL_CALL => {
                let acked = start
                    .args
                    .decode::<u64>()
                    .map(|target| channel.cancel_served(target))
                    .unwrap_or(false);
                let ch = channel.clone();
                self.inner.tasks.spawn(async move {
                    let _ = ch.send(Msg::CancelAck(CancelAck { cid, acked })).await;
                });
            }
            f if f.starts_with(crate::registrar::PREFIX) => match &self.inner.registrar {
                Some(reg) => reg.serve(self, channel, start),
                None => self.reply_error(
                    channel,
                    cid,
                    RemoteActorError::new(
                        self.inner.aid.clone(),
                        "NotRegistrar",
                        format!("actor {} is not a registrar", self.inner.aid),
                    ),
                ),
            },
            _ => {
                if self.inner.cancel.is_cancelled() {
                    let canceller = self.canceller().unwrap_or_else(|| self.inner.aid.clone());
                    let ch = channel.clone();
                    let err = self.cancelled_error(cid, canceller);
                    tokio::spawn(async move {
                        let _ = ch.send(Msg::Error(err)).await;
                    });
                    return;
                }
                let kind = self.inner.registry.kind(&start.function);
                if let Some(k) = kind
                    && k != start.kind
                {
                    return self.reply_error(
                        channel,
                        cid,
                        RemoteActorError::new(
                            self.inner.aid.clone(),
                            "KindMismatch",
                            format!(
                                "`{}` is a {k:?} function in actor {}, but was called as a {:?}",
                                start.function, self.inner.aid, start.kind
                            ),
                        ),
                    );
                }
                let token = self.inner.cancel.child_token();
                let mut cx =
                    Cx::new(self.inner.aid.clone(), start.caller.clone(), cid, token.clone())
                        .with_actor(self.clone());
                let context = match kind {
                    Some(CallKind::Context | CallKind::Stream) => {
                        let types = self.inner.registry.types(&start.function);
                        let ctx = Context::serve(channel, &cx, &start.function, types);
                        cx = cx.with_context(ctx.clone());
                        Some(ctx)
                    }
                    _ => None,
                };
                let open_nurseries = cx.open_nurseries();
                let fut = match self.inner.registry.call(&start.function, cx, start.args) {
                    Ok(fut) => fut,
                    Err(e) => return self.reply_error(channel, cid, *e),
                };
                channel.track_served(cid, token.clone());
                if let Some(ctx) = context {
                    return self.serve_context(channel, ctx, fut, token, open_nurseries);
                }
                let ch = channel.clone();
                let me = self.clone();
                // A plain function answers with its `Return` (or `Error`) alone: the
                // result implies the start, and one message less per call is measurable.
                self.inner.tasks.spawn(async move {
                    let mut fut = fut;
                    let reply = tokio::select! {
                        out = &mut fut => reply_for(cid, out),
                        () = token.cancelled() => {
                            let canceller = me.canceller().unwrap_or_else(|| ch.peer().clone());
                            // Anything without a nursery is dropped at once.
                            let finished = me.finish_after_cancel(&mut fut, &open_nurseries, Duration::ZERO).await;
                            match finished {
                                Some(Err(e)) if e.canceller.is_none() => reply_for(cid, Err(e)),
                                _ => Msg::Error(me.cancelled_error(cid, canceller)),
                            }
                        }
                    };
                    ch.untrack_served(cid);
                    let _ = ch.send(reply).await;
                });
            }
        }
    }

    fn closed(&self, channel: &Channel) {
        self.inner.channels.lock().unwrap_or_else(|p| p.into_inner()).retain(|c| !c.is_closed());
        if let Some(reg) = &self.inner.registrar {
            reg.connection_closed(channel);
        }
    }
}

/// Who cancelled a served context.
fn canceller_of(ctx: &Context, ch: &Channel) -> Aid {
    match ctx.cancelled_error() {
        ActorError::ContextCancelled { canceller } => canceller,
        _ => ch.peer().clone(),
    }
}

fn reply_for(cid: u64, out: Result<Payload, RemoteActorError>) -> Msg {
    match out {
        Ok(payload) => Msg::Return { cid, payload },
        Err(e) => Msg::Error(e.to_msg(Some(cid))),
    }
}

/// Encodes a value as a payload, as an `ActorError` on failure.
pub(crate) fn encode<T: serde::Serialize + ?Sized>(v: &T) -> Result<Payload, ActorError> {
    Payload::encode(v).map_err(|e| ActorError::Runtime(format!("cannot encode arguments: {e}")))
}

/// The runtime-vars key that carries the tree's root uuid to children.
pub(crate) const TREE_VAR: &str = "tree";

pub(crate) fn tree_from_vars(vars: &plough_ipc_wire::msg::RuntimeVars) -> Option<Uuid> {
    let hex = vars.extra.iter().find(|(k, _)| k == TREE_VAR)?.1.replace('-', "");
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(Uuid(out))
}

/// Writes the actor marker of this process (see `plough_fork_prims::marker`), and names
/// the process and its log lines after the actor. `None` (logged) if it cannot be written.
pub(crate) fn create_marker(
    aid: &Aid,
    addr: &Address,
    tree: &plough_ipc_wire::msg::Uuid,
    parent_pid: u32,
    method: &str,
) -> Option<plough_fork_prims::marker::ActorMarker> {
    crate::runtime_vars::set_actor_label(format!("{aid} {method}"));
    use plough_fork_prims::marker::{ActorMarker, MarkerInfo, default_runtime_dir};
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
