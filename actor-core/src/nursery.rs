//! The actor nursery: scoped supervision of child actor processes.
//!
//! `actor.nursery(|n| async { ... })` runs the body; the body starts children through `n`.
//! The call returns only after every child has exited **and been reaped**:
//!
//! * body done: wait for the `run_in_actor` results (as tractor does, a `run_in_actor`
//!   failure is collected when the body is done, so a body that starts 25 failing actors
//!   back to back gets all 25 errors), then cancel the remaining (daemon) children through
//!   the ladder;
//! * a failure — the body's error, a `run_in_actor` error once the body is done, or a
//!   daemon child that dies (crashes, is killed, or drops its connection while alive; a
//!   clean exit with code 0 is its own graceful cancel, not a failure) while the body
//!   runs — is one-cancels-all: the body is dropped
//!   (cancelled), every child goes down the ladder, and every failure comes back together
//!   in one error (the cancels it caused never mask it);
//! * the enclosing actor is cancelled: the same, and the result is `ContextCancelled`;
//! * the nursery future itself is dropped (its caller was cancelled): a drop guard
//!   SIGKILLs every child's process group and hands the processes to the reaper thread.
//!
//! The ladder (see [`LadderConfig`]): IPC cancel → wait for the ack → wait for exit →
//! SIGTERM to the child's process group → wait → SIGKILL to the group → reap.

use crate::actor::{Actor, new_uuid};
use crate::channel::Channel;
use crate::error::{ActorError, SpawnError};
use crate::portal::Portal;
use crate::spawn::{ChildBoot, SpawnRequest};
use plough_fork_prims::{ChildHandle, ExitStatus, Signal};
use plough_ipc_wire::msg::{Aid, Msg, SpawnSpec, Uuid};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Timeouts of the cancellation ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LadderConfig {
    /// How long to wait for a child to acknowledge an IPC cancel.
    pub ack_timeout: Duration,
    /// How long to wait for a (cancelled) child to exit on its own.
    pub exit_timeout: Duration,
    /// How long after SIGTERM before SIGKILL.
    pub term_timeout: Duration,
}

impl Default for LadderConfig {
    fn default() -> Self {
        LadderConfig {
            ack_timeout: Duration::from_millis(500),
            exit_timeout: Duration::from_millis(1500),
            term_timeout: Duration::from_millis(1600),
        }
    }
}

impl LadderConfig {
    /// The longest one child can take to go down the whole ladder (plus the reap).
    pub fn total(&self) -> Duration {
        self.ack_timeout + self.exit_timeout + self.term_timeout + Duration::from_millis(500)
    }
}

/// One child process of a nursery.
struct ChildActor {
    aid: Aid,
    portal: Portal,
    process: ChildHandle,
    /// Set once the nursery decided to take it down (its exit is then expected).
    cancelling: AtomicBool,
    /// Its entry in the task table (SIGUSR1 dumps list it and relay the signal to it).
    _task: crate::dump::TaskGuard,
}

/// Starts child actors whose lifetime is bounded by the nursery's scope. Cheap to clone;
/// a clone used after the nursery exited fails with a clear error.
#[derive(Clone)]
pub struct Nursery {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Nursery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.inner.children.lock().map(|c| c.len()).unwrap_or(0);
        f.debug_struct("Nursery")
            .field("actor", &self.inner.actor.aid().to_string())
            .field("children", &n)
            .finish()
    }
}

struct Inner {
    actor: Actor,
    children: Mutex<Vec<Arc<ChildActor>>>,
    errors: Mutex<Vec<ActorError>>,
    /// One-cancels-all: fired by the first failure.
    failed: CancellationToken,
    /// Fired when the enclosing actor is cancelled, or by `Nursery::cancel`.
    scope: CancellationToken,
    /// `run_in_actor` calls (awaited when the body is done).
    tasks: TaskTracker,
    /// Daemon-child monitors (they end once their child is down).
    monitors: TaskTracker,
    closed: AtomicBool,
    /// Children whose boot was abandoned (the body was dropped mid-`start_actor`, e.g.
    /// by a cancel): killed at once, reaped before the nursery returns. Without this they
    /// would go to the process's reaper thread, and be orphaned if this actor then exits.
    abandoned: Mutex<Vec<(ChildHandle, Uuid)>>,
    /// The body is done: a `run_in_actor` failure now cancels the rest at once.
    exiting: AtomicBool,
}

/// The result of a [`Nursery::run_in_actor`] call, available once the nursery has exited.
#[derive(Debug)]
pub struct RunHandle<T> {
    slot: Arc<Mutex<Option<Result<T, ActorError>>>>,
    aid: Aid,
}

impl<T> RunHandle<T> {
    /// The actor that runs (ran) the call.
    pub fn aid(&self) -> &Aid {
        &self.aid
    }

    /// The call's result.
    ///
    /// # Errors
    ///
    /// The call's error; or, before the nursery has exited (or when the call never
    /// finished because the nursery was cancelled), a runtime error saying so.
    pub fn into_result(self) -> Result<T, ActorError> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner()).take().unwrap_or_else(|| {
            Err(ActorError::Runtime(format!(
                "the call in actor {} has no result (nursery not exited, or cancelled)",
                self.aid
            )))
        })
    }
}

/// A child between its spawn and its registration in the nursery: if that is abandoned
/// (the future dropped, or an error), the child is killed and left for the nursery to reap.
struct Booting<'a> {
    inner: &'a Inner,
    process: Option<ChildHandle>,
    uuid: Uuid,
}

/// The end of what a child that did not boot wrote to stderr (empty if not captured).
async fn boot_tail(pump: Option<crate::boot_stderr::Pump>) -> String {
    match pump {
        Some(pump) => pump.finish(Duration::from_millis(250)).await,
        None => String::new(),
    }
}

impl Booting<'_> {
    /// The child died (and was reaped) during boot: remove what it may have left — its
    /// marker, its socket file, a half-written marker — now rather than when the nursery
    /// exits, and do not signal its (recyclable) pid or process group again.
    fn reaped(&mut self) {
        if let Some(process) = self.process.take() {
            let dir = plough_fork_prims::marker::default_runtime_dir();
            let _ = plough_fork_prims::marker::clear_dead_actor(
                &dir,
                process.pid(),
                &self.uuid.to_string(),
            );
        }
    }
}

impl Drop for Booting<'_> {
    fn drop(&mut self) {
        if let Some(process) = self.process.take() {
            let _ = process.kill_group(Signal::KILL);
            let _ = process.kill();
            self.inner
                .abandoned
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((process, self.uuid));
        }
    }
}

/// Kills every child if the nursery future is dropped before it finished.
struct DropGuard(Option<Arc<Inner>>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        if let Some(inner) = self.0.take() {
            inner.closed.store(true, Ordering::SeqCst);
            let children =
                std::mem::take(&mut *inner.children.lock().unwrap_or_else(|p| p.into_inner()));
            for c in children {
                tracing::warn!(child = %c.aid, "nursery dropped: SIGKILL to the child's process group");
                let _ = c.process.kill_group(Signal::KILL);
                let _ = c.process.kill();
                // The handle's Drop hands the process to the reaper thread.
            }
        }
    }
}

impl Nursery {
    /// Runs a nursery whose scope is cancelled with `parent` (the actor's token, or the
    /// token of the call that opened it). `open` counts the nurseries open in that call.
    pub(crate) async fn run<T, F, Fut>(
        actor: Actor,
        parent: &CancellationToken,
        open: Option<Arc<std::sync::atomic::AtomicUsize>>,
        body: F,
    ) -> Result<T, ActorError>
    where
        F: FnOnce(Nursery) -> Fut,
        Fut: Future<Output = Result<T, ActorError>>,
    {
        struct Open(Option<Arc<std::sync::atomic::AtomicUsize>>);
        impl Drop for Open {
            fn drop(&mut self) {
                if let Some(c) = &self.0 {
                    c.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
        if let Some(c) = &open {
            c.fetch_add(1, Ordering::SeqCst);
        }
        let _open = Open(open);
        let inner = Arc::new(Inner {
            scope: parent.child_token(),
            actor,
            children: Mutex::new(Vec::new()),
            errors: Mutex::new(Vec::new()),
            failed: CancellationToken::new(),
            tasks: TaskTracker::new(),
            monitors: TaskTracker::new(),
            closed: AtomicBool::new(false),
            abandoned: Mutex::new(Vec::new()),
            exiting: AtomicBool::new(false),
        });
        let mut guard = DropGuard(Some(Arc::clone(&inner)));
        let n = Nursery { inner: Arc::clone(&inner) };

        let outcome = {
            let body = body(n.clone());
            tokio::select! {
                r = body => Some(r),
                () = inner.failed.cancelled() => None,
                () = inner.scope.cancelled() => None,
            }
        };
        // The body is done (or dropped). Collect the run_in_actor results; the first
        // failure (now or already recorded) takes every other child down.
        inner.exiting.store(true, Ordering::SeqCst);
        let failed_early = !inner.errors.lock().unwrap_or_else(|p| p.into_inner()).is_empty();
        if !matches!(outcome, Some(Ok(_))) || failed_early {
            inner.failed.cancel();
        }
        inner.tasks.close();
        let mut cancelling = false;
        loop {
            tokio::select! {
                () = inner.tasks.wait() => break,
                () = inner.failed.cancelled(), if !cancelling => cancelling = true,
                () = inner.scope.cancelled(), if !cancelling => cancelling = true,
            }
            if cancelling {
                // Take everyone down while the run tasks collect what their children say.
                let n2 = n.clone();
                inner.monitors.spawn(async move { n2.cancel_all().await });
            }
        }
        inner.closed.store(true, Ordering::SeqCst);
        n.cancel_all().await;
        n.reap_abandoned().await;
        inner.tasks.close();
        inner.tasks.wait().await;
        inner.monitors.close();
        inner.monitors.wait().await;
        guard.0 = None;

        let mut errors =
            std::mem::take(&mut *inner.errors.lock().unwrap_or_else(|p| p.into_inner()));
        let value = match outcome {
            Some(Ok(v)) => Some(v),
            Some(Err(e)) => {
                errors.insert(0, e);
                None
            }
            None => None,
        };
        if let Some(err) = ActorError::collect(errors) {
            return Err(err);
        }
        match value {
            Some(v) if !inner.scope.is_cancelled() => Ok(v),
            _ => {
                let canceller =
                    inner.actor.canceller().unwrap_or_else(|| inner.actor.aid().clone());
                Err(ActorError::ContextCancelled { canceller })
            }
        }
    }

    /// The actor this nursery lives in.
    pub fn actor(&self) -> &Actor {
        &self.inner.actor
    }

    /// Starts a child actor and returns a portal to it. The child lives until the nursery
    /// exits (then it is cancelled) or is cancelled through its portal.
    ///
    /// # Errors
    ///
    /// [`ActorError::Spawn`]: the backend failed, the child died during boot (with its
    /// exit status), or it did not connect back in time (it was killed and reaped); a
    /// runtime error when the nursery has already exited.
    pub async fn start_actor(&self, name: &str) -> Result<Portal, ActorError> {
        let child = self.spawn_child(name).await?;
        let portal = child.portal.clone();
        self.monitor(child);
        Ok(portal)
    }

    /// Starts a child actor that runs `function(args)` and is then cancelled. The result
    /// (or error) is collected at nursery exit: read it from the returned handle then. An
    /// error cancels the whole nursery (one-cancels-all).
    ///
    /// # Errors
    ///
    /// As [`Nursery::start_actor`] (spawn failures are returned here, not at exit).
    pub async fn run_in_actor<A, R>(
        &self,
        name: &str,
        function: &str,
        args: A,
    ) -> Result<RunHandle<R>, ActorError>
    where
        A: Serialize,
        R: DeserializeOwned + Send + 'static,
    {
        let child = self.spawn_child(name).await?;
        let slot = Arc::new(Mutex::new(None));
        let handle = RunHandle { slot: Arc::clone(&slot), aid: child.aid.clone() };
        let args = crate::actor::encode(&args)?;
        let inner = Arc::clone(&self.inner);
        let function = function.to_owned();
        let n = self.clone();
        self.inner.tasks.spawn(async move {
            // No select on cancellation here: when the nursery cancels, the ladder makes the
            // child answer (ContextCancelled, or its real error if it had one) or kills it,
            // so the call always completes and no failure is lost.
            let out = child.portal.run_raw::<R>(&function, args).await;
            match out {
                Ok(v) => *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(Ok(v)),
                Err(e) => {
                    let taken_down = child.cancelling.load(Ordering::SeqCst)
                        || child.portal.channel().cancel_requested();
                    let e = n.explain(&child, e).await;
                    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(Err(e.clone()));
                    if taken_down && (e.is_cancel() || !matches!(e, ActorError::Remote(_))) {
                        // The consequence of our own cancel, not a failure of the child.
                    } else {
                        n.record(e);
                        if inner.exiting.load(Ordering::SeqCst) {
                            inner.failed.cancel();
                        }
                    }
                }
            }
            // Its job is done: take it down now rather than at nursery exit.
            n.take_down(&child).await;
        });
        Ok(handle)
    }

    /// Cancels every child of this nursery (through the ladder) and waits until all are
    /// reaped. The nursery stays usable.
    pub async fn cancel(&self) {
        self.cancel_all().await;
    }

    async fn cancel_all(&self) {
        let children: Vec<Arc<ChildActor>> =
            self.inner.children.lock().unwrap_or_else(|p| p.into_inner()).clone();
        futures::future::join_all(children.iter().map(|c| self.take_down(c))).await;
    }

    /// Reaps the children whose boot was abandoned (they were killed when it was).
    async fn reap_abandoned(&self) {
        let abandoned =
            std::mem::take(&mut *self.inner.abandoned.lock().unwrap_or_else(|p| p.into_inner()));
        for (process, uuid) in abandoned {
            match tokio::time::timeout(Duration::from_secs(5), process.wait()).await {
                Ok(Ok(status)) => {
                    tracing::debug!(pid = process.pid(), %status, "reaped a child whose boot was abandoned");
                    let dir = plough_fork_prims::marker::default_runtime_dir();
                    let _ = plough_fork_prims::marker::clear_dead_actor(
                        &dir,
                        process.pid(),
                        &uuid.to_string(),
                    );
                }
                other => tracing::error!(pid = process.pid(), ?other, "could not reap child"),
            }
        }
    }

    /// Records a failure (collected at exit).
    fn record(&self, e: ActorError) {
        self.inner.errors.lock().unwrap_or_else(|p| p.into_inner()).push(e);
    }

    /// Records a failure and triggers one-cancels-all.
    fn fail(&self, e: ActorError) {
        self.record(e);
        self.inner.failed.cancel();
    }

    /// A lost connection says little; if the child died, say how.
    async fn explain(&self, child: &ChildActor, e: ActorError) -> ActorError {
        if !matches!(e, ActorError::TransportClosed { .. }) {
            return e;
        }
        match tokio::time::timeout(Duration::from_millis(500), child.process.wait()).await {
            Ok(Ok(status)) => died(&child.aid, status),
            _ => e,
        }
    }

    async fn spawn_child(&self, name: &str) -> Result<Arc<ChildActor>, ActorError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(ActorError::Runtime(format!(
                "cannot start actor {name}: the nursery has exited"
            )));
        }
        let actor = &self.inner.actor;
        let Some(backend) = actor.inner.backend.clone() else {
            return Err(ActorError::Runtime("this runtime has no spawn backend".into()));
        };
        backend.method().ensure_implemented()?;
        let uuid = new_uuid();
        let (tx, rx) = tokio::sync::oneshot::channel::<Channel>();
        actor.inner.pending_spawns.lock().unwrap_or_else(|p| p.into_inner()).insert(uuid, tx);
        let forget = || {
            actor.inner.pending_spawns.lock().unwrap_or_else(|p| p.into_inner()).remove(&uuid);
        };
        let boot = ChildBoot {
            name: name.to_owned(),
            uuid,
            tree: actor.tree_uuid(),
            parent_addr: actor.addr().clone(),
            method: backend.method(),
            parent_pid: std::process::id(),
            real_stderr_on_stdin: false,
        };
        // The child's boot stderr comes through us, so a boot death can say what it wrote.
        // Without a pipe (no fds left) the child inherits stderr and the error has none.
        let (read, boot_stderr) = match crate::boot_stderr::pipe() {
            Ok((read, write)) => (Some(read), Some(write)),
            Err(e) => {
                tracing::debug!(error = %e, "boot stderr not captured");
                (None, None)
            }
        };
        let req =
            SpawnRequest { boot, child_main: Arc::clone(&actor.inner.child_main), boot_stderr };
        // The backend drops its copy of the write end once the child has its own. The fork
        // is requested at the first poll; the pump starts while it is under way (what the
        // child writes meanwhile waits in the pipe).
        let mut spawning = backend.spawn(req);
        let early = futures::poll!(&mut spawning);
        let pump = read.and_then(|read| {
            crate::boot_stderr::Pump::start(read)
                .inspect_err(|e| tracing::debug!(error = %e, "boot stderr not captured"))
                .ok()
        });
        let spawned = match early {
            std::task::Poll::Ready(r) => r,
            std::task::Poll::Pending => spawning.await,
        };
        let process = match spawned {
            Ok(p) => p,
            Err(e) => {
                forget();
                return Err(e.into());
            }
        };
        let mut booting = Booting { inner: &self.inner, process: Some(process), uuid };
        let process = booting.process.as_ref().expect("set above");
        let timeout = actor.inner.config.connect_timeout;
        let channel = tokio::select! {
            ch = rx => ch.ok(),
            st = process.wait() => {
                forget();
                let status = st.map(|s| s.to_string()).unwrap_or_else(|e| format!("unknown ({e})"));
                booting.reaped();
                let stderr = boot_tail(pump).await;
                return Err(SpawnError::DiedDuringBoot { name: name.to_owned(), status, stderr }.into());
            }
            () = tokio::time::sleep(timeout) => None,
        };
        let Some(channel) = channel else {
            forget();
            let _ = process.kill_group(Signal::KILL);
            let _ = process.kill();
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(5), process.wait()).await {
                booting.reaped();
            }
            let stderr = boot_tail(pump).await;
            return Err(SpawnError::ConnectTimeout {
                name: name.to_owned(),
                secs: timeout.as_secs_f64(),
                stderr,
            }
            .into());
        };
        let spec = SpawnSpec {
            runtime_vars: crate::runtime_vars::get(false),
            registry_addrs: vec![actor.registry_addr().clone()],
            bind_addrs: vec![],
            enable_handlers: actor.inner.registry.names().map(str::to_owned).collect(),
            parent: Some(actor.aid().clone()),
        };
        channel.send(Msg::SpawnSpec(spec)).await?;
        let process = booting.process.take().expect("still booting");
        let method = backend.method().key();
        let child = Arc::new_cyclic(|me: &std::sync::Weak<ChildActor>| {
            let me = me.clone();
            let aid = channel.peer().clone();
            // Through the child's handle (pidfd): a no-op once it is reaped.
            let relay: crate::dump::Relay = Arc::new(move || {
                if let Some(c) = me.upgrade() {
                    let _ = c.process.signal(Signal::USR1);
                }
            });
            ChildActor {
                _task: crate::dump::TaskGuard::child(&aid, aid.pid, method, relay),
                aid,
                portal: Portal::new(channel, actor.clone()),
                process,
                cancelling: AtomicBool::new(false),
            }
        });
        tracing::info!(parent = %actor.aid(), child = %child.aid, method = %backend.method(), "spawned");
        self.inner.children.lock().unwrap_or_else(|p| p.into_inner()).push(Arc::clone(&child));
        Ok(child)
    }

    /// Watches a daemon child: an exit the nursery did not ask for is a failure.
    fn monitor(&self, child: Arc<ChildActor>) {
        let n = self.clone();
        self.inner.monitors.spawn(async move {
            tokio::select! {
                _ = child.process.wait() => {}
                () = child.portal.channel().closed() => {}
                () = n.inner.failed.cancelled() => return,
                () = n.inner.scope.cancelled() => return,
            }
            let expected = || {
                child.cancelling.load(Ordering::SeqCst)
                    || child.portal.channel().cancel_requested()
                    || n.inner.closed.load(Ordering::SeqCst)
            };
            if expected() {
                return;
            }
            // A clean exit (code 0) is the child's own graceful cancel path — e.g. another
            // actor cancelled it, or it was signalled — not a failure: only a crash, a
            // kill, or a lost connection to a live child is.
            let exited =
                tokio::time::timeout(Duration::from_millis(500), child.process.wait()).await;
            if let Ok(Ok(status)) = exited
                && status.success()
            {
                tracing::info!(child = %child.aid, "daemon child exited cleanly on its own");
                return;
            }
            let e = n.explain(&child, child.portal.channel().closed_error()).await;
            if !expected() {
                n.fail(e);
            }
        });
    }

    /// The ladder for one child; returns once it is reaped. Idempotent.
    async fn take_down(&self, child: &ChildActor) {
        let cfg = self.inner.actor.inner.config.ladder;
        child.cancelling.store(true, Ordering::SeqCst);
        if child.process.try_wait().ok().flatten().is_none() {
            let acked = !child.portal.is_closed()
                && child.portal.cancel_actor_within(cfg.ack_timeout).await;
            let exited = tokio::time::timeout(cfg.exit_timeout, child.process.wait()).await.is_ok();
            if !exited {
                tracing::warn!(child = %child.aid, acked, "did not exit after cancel: SIGTERM to its group");
                let _ = child.process.kill_group(Signal::TERM);
                if tokio::time::timeout(cfg.term_timeout, child.process.wait()).await.is_err() {
                    tracing::warn!(child = %child.aid, "did not exit after SIGTERM: SIGKILL to its group");
                    let _ = child.process.kill_group(Signal::KILL);
                    let _ = child.process.kill();
                }
            }
        }
        // Reap (bounded: after SIGKILL this is immediate).
        match tokio::time::timeout(Duration::from_secs(5), child.process.wait()).await {
            Ok(Ok(status)) => {
                tracing::debug!(child = %child.aid, %status, "reaped");
                if !status.success() {
                    // Killed (or crashed): it could not remove its marker and socket file.
                    let dir = plough_fork_prims::marker::default_runtime_dir();
                    let uuid = child.aid.uuid.to_string();
                    if let Err(e) =
                        plough_fork_prims::marker::clear_dead_actor(&dir, child.aid.pid, &uuid)
                    {
                        tracing::warn!(child = %child.aid, error = %e, "cannot remove the files of a dead child");
                    }
                }
            }
            other => tracing::error!(child = %child.aid, ?other, "could not reap child"),
        }
        child.portal.channel().shutdown();
        self.inner
            .children
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|c| c.aid.uuid != child.aid.uuid);
    }
}

fn died(aid: &Aid, status: ExitStatus) -> ActorError {
    ActorError::Runtime(format!("actor {aid} died unexpectedly ({status})"))
}
