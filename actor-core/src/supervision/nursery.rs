//! The actor nursery: scoped supervision of child actor processes.
//!
//! `actor.nursery(|n| async { ... })` runs the body; the body starts children through `n`.
//! The call returns only after every child has exited **and been reaped**:
//!
//! * body done: wait for the `run_in_actor` results (as tractor does, each one is
//!   collected, and a failure cancels no sibling: 25 children that fail together give 25
//!   errors), then cancel the remaining (daemon) children through the ladder. A
//!   `run_in_actor` child stays up, serving calls, until then — also after its function
//!   returned;
//! * a failure — the body's error, or a daemon child that dies (crashes, is killed, or drops its connection while alive; a
//!   clean exit with code 0 is its own graceful cancel, not a failure) while the body
//!   runs — is one-cancels-all: the body is dropped
//!   (cancelled), every child goes down the ladder, and every failure comes back together
//!   in one error (the cancels it caused never mask it);
//! * the enclosing actor is cancelled: the same, and the result is `ContextCancelled`;
//! * the nursery future itself is dropped (its caller was cancelled, a timeout, a lost
//!   `select!`): its children still go down through the ladder, in the background, and
//!   the actor waits for them before it exits (SIGKILL at once only after a second
//!   signal, or when no runtime is left to run the ladder).
//!
//! The ladder (see [`LadderConfig`](crate::LadderConfig)): IPC cancel → wait for the ack → wait for exit →
//! SIGTERM to the child's process group → wait → SIGKILL to the group → reap.

use super::options::SpawnOptions;
use crate::base::dump::TaskGuard;
use crate::base::error::{ActorError, Misuse, encode};
use crate::base::sync::{LockExt, cancelled};
use crate::calls::portal::Portal;
use crate::serving::actor::Actor;
use crate::serving::cx::{CallState, Cx};
use plough_fork_prims::{ChildHandle, Signal};
use plough_ipc_wire::msg::{Aid, Uuid};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// One child process of a nursery.
pub(super) struct ChildActor {
    pub(super) aid: Aid,
    pub(super) portal: Portal,
    pub(super) process: super::process::ChildProcess,
    /// Set once the nursery decided to take it down (its exit is then expected).
    pub(super) cancelling: AtomicBool,
    /// The one ladder that takes it down, once started: a task of the actor, which every
    /// `take_down` awaits (so the ladder is never restarted, nor cut short by a waiter
    /// that is dropped).
    pub(super) down:
        Mutex<Option<futures::future::Shared<futures::future::BoxFuture<'static, ()>>>>,
    /// Its entry in the task table (SIGUSR1 dumps list it and relay the signal to it).
    pub(super) _task: TaskGuard,
    /// Its own shutdown budget (a supervised child's), instead of the actor's ladder.
    pub(super) ladder: std::sync::OnceLock<crate::base::budgets::LadderConfig>,
}

/// Starts child actors whose lifetime is bounded by the nursery's scope. Cheap to clone;
/// a clone used after the nursery exited fails with a clear error.
#[derive(Clone)]
pub struct Nursery {
    pub(super) inner: Arc<Inner>,
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

pub(super) struct Inner {
    /// Counts this nursery among the actor's tasks for as long as it (or the background
    /// ladder of a dropped one) lives: the actor does not exit before its children are
    /// down, whoever polls the nursery (the body, a task the program spawned, a handler).
    _tracked: tokio_util::task::task_tracker::TaskTrackerToken,
    pub(super) actor: Actor,
    pub(super) children: Mutex<Vec<Arc<ChildActor>>>,
    pub(super) errors: Mutex<Vec<ActorError>>,
    /// One-cancels-all: fired by the first failure.
    pub(super) failed: CancellationToken,
    /// Fired when the enclosing actor is cancelled, or by `Nursery::cancel`.
    pub(super) scope: CancellationToken,
    /// `run_in_actor` calls (awaited when the body is done).
    pub(super) tasks: TaskTracker,
    /// Daemon-child monitors (they end once their child is down).
    pub(super) monitors: TaskTracker,
    pub(super) closed: AtomicBool,
    /// Children whose boot was abandoned (the body was dropped mid-`start_actor`, e.g.
    /// by a cancel): killed at once, reaped before the nursery returns. Without this they
    /// would go to the process's reaper thread, and be orphaned if this actor then exits.
    pub(super) abandoned: Mutex<Vec<(ChildHandle, Uuid)>>,
    /// Fired when the body is done: the run-in-actor children are collected.
    pub(super) body_done: CancellationToken,
    /// The `run_in_actor` functions still running (closed when the body is done): their
    /// children stay up until it is empty, so peers that call each other find each other.
    pub(super) runs: TaskTracker,
}

/// The result of a [`Nursery::run_in_actor`] call: await it in the body with
/// [`RunHandle::result`] (as often as you like: it is kept), or take it once the nursery
/// has exited with [`RunHandle::into_result`].
#[derive(Debug)]
pub struct RunHandle<T> {
    slot: Arc<RunSlot<T>>,
    aid: Aid,
}

/// Where a `run_in_actor` task leaves its result.
#[derive(Debug)]
struct RunSlot<T> {
    value: Mutex<Option<Result<T, ActorError>>>,
    /// Fired when the task is done, with a result or without one (it was dropped).
    done: CancellationToken,
}

/// Fires its slot's `done` when dropped: however the task ends, a waiter wakes.
struct SlotDone<T>(Arc<RunSlot<T>>);

impl<T> Drop for SlotDone<T> {
    fn drop(&mut self) {
        self.0.done.cancel();
    }
}

impl<T> RunHandle<T> {
    /// The actor that runs (ran) the call.
    pub fn aid(&self) -> &Aid {
        &self.aid
    }

    /// Waits for the call's result and returns a copy of it; later calls return the same.
    /// An error is still the nursery's too (it is collected when the nursery exits).
    ///
    /// # Errors
    ///
    /// The call's error; [`Misuse::NoResult`] when the call never finished (the nursery
    /// was cancelled first).
    pub async fn result(&self) -> Result<T, ActorError>
    where
        T: Clone,
    {
        self.slot.done.cancelled().await;
        self.slot
            .value
            .locked()
            .clone()
            .unwrap_or_else(|| Err(Misuse::NoResult { actor: self.aid.clone() }.into()))
    }

    /// The call's result.
    ///
    /// # Errors
    ///
    /// The call's error; or, before the call finished (or when it never did because the
    /// nursery was cancelled), [`Misuse::NoResult`].
    pub fn into_result(self) -> Result<T, ActorError> {
        self.slot
            .value
            .locked()
            .take()
            .unwrap_or_else(|| Err(Misuse::NoResult { actor: self.aid.clone() }.into()))
    }
}

/// If the nursery future is dropped before it finished (an outer timeout, a lost
/// `select!` branch, a cancelled call, a root body dropped after a signal), its children
/// still go down gracefully: the same ladder as a cancel, run in the background on the
/// actor's runtime, which waits for it before the actor exits (within
/// [`Budgets::served_calls`](crate::Budgets::served_calls)). Only when that cannot run —
/// no runtime any more, the process is exiting — or the actor escalated (a second
/// signal) are they SIGKILLed at once and handed to the reaper thread.
struct DropGuard(Option<Arc<Inner>>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        let Some(inner) = self.0.take() else { return };
        inner.closed.store(true, Ordering::SeqCst);
        if inner.actor.is_escalated() || tokio::runtime::Handle::try_current().is_err() {
            kill_now(&inner);
            return;
        }
        tracing::info!(actor = %inner.actor.aid(), "nursery dropped: taking its children down in the background");
        let n = Nursery { inner: Arc::clone(&inner) };
        // If the background task itself is dropped unfinished (the runtime shuts down),
        // what is left is SIGKILLed.
        let armed = KillOnDrop(Some(inner));
        n.inner.actor.tasks().clone().spawn(async move {
            n.cancel_all().await;
            n.reap_abandoned().await;
            armed.disarm();
        });
    }
}

/// SIGKILLs what is left of a nursery's children when dropped while armed.
struct KillOnDrop(Option<Arc<Inner>>);

impl KillOnDrop {
    /// The children are down: nothing to kill.
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(inner) = self.0.take() {
            kill_now(&inner);
        }
    }
}

/// SIGKILL to every child's process group; the handles' `Drop` hands the processes to
/// the reaper thread (abandoned boots too).
fn kill_now(inner: &Inner) {
    let children = std::mem::take(&mut *inner.children.locked());
    for c in children {
        tracing::warn!(child = %c.aid, "SIGKILL to the child's process group");
        let _ = c.process.kill_group(Signal::KILL);
        let _ = c.process.kill();
    }
    drop(std::mem::take(&mut *inner.abandoned.locked()));
}

impl Nursery {
    /// Runs a nursery whose scope is cancelled with `parent` (the actor's token, or the
    /// token of the call that opened it). `open` counts the nurseries open in that call.
    pub(super) async fn run<T, F, Fut>(
        actor: Actor,
        parent: &CancellationToken,
        open: Option<Arc<CallState>>,
        body: F,
    ) -> Result<T, ActorError>
    where
        F: FnOnce(Nursery) -> Fut,
        Fut: Future<Output = Result<T, ActorError>>,
    {
        struct Open(Option<Arc<CallState>>);
        impl Drop for Open {
            fn drop(&mut self) {
                if let Some(c) = &self.0 {
                    c.open_nurseries().fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
        if let Some(c) = &open {
            c.open_nurseries().fetch_add(1, Ordering::SeqCst);
        }
        let _open = Open(open);
        let inner = Arc::new(Inner {
            _tracked: actor.tasks().token(),
            scope: parent.child_token(),
            actor,
            children: Mutex::new(Vec::new()),
            errors: Mutex::new(Vec::new()),
            failed: CancellationToken::new(),
            tasks: TaskTracker::new(),
            monitors: TaskTracker::new(),
            closed: AtomicBool::new(false),
            abandoned: Mutex::new(Vec::new()),
            body_done: CancellationToken::new(),
            runs: TaskTracker::new(),
        });
        let mut guard = DropGuard(Some(Arc::clone(&inner)));
        let n = Nursery { inner: Arc::clone(&inner) };

        let outcome = {
            let body = body(n.clone());
            tokio::select! {
                biased;
                r = body => Some(r),
                () = cancelled(&inner.failed) => None,
                () = cancelled(&inner.scope) => None,
            }
        };
        // A body that failed because a connection to one of this nursery's children was
        // lost (a call or context on it) says how that child died, if it did.
        let outcome = match outcome {
            Some(Err(e)) => Some(Err(n.explain_lost_child(e).await)),
            other => other,
        };
        // The body is done (or dropped). Collect the run_in_actor results, every one.
        inner.body_done.cancel();
        inner.runs.close();
        // A run-in-actor failure recorded while the body ran cancels nothing: it is
        // collected with the others (only a failed or dropped body is one-cancels-all here).
        if !matches!(outcome, Some(Ok(_))) {
            inner.failed.cancel();
        }
        inner.tasks.close();
        let mut cancelling = false;
        loop {
            tokio::select! {
                () = inner.tasks.wait() => break,
                () = cancelled(&inner.failed), if !cancelling => cancelling = true,
                () = cancelled(&inner.scope), if !cancelling => cancelling = true,
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

        let mut errors = std::mem::take(&mut *inner.errors.locked());
        let value = match outcome {
            Some(Ok(v)) => Some(v),
            Some(Err(e)) => {
                // One death, one report: the monitor's for the same child goes.
                errors.retain(|x| !same_death(x, &e));
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

    /// [`Nursery::explain`] for an error that names its peer only: a lost connection to
    /// one of this nursery's children becomes [`ActorError::ActorDied`] when that child
    /// died (waiting at most `Budgets::exit_status` for its status).
    async fn explain_lost_child(&self, e: ActorError) -> ActorError {
        let ActorError::TransportClosed { peer, .. } = &e else { return e };
        let child =
            self.inner.children.locked().iter().find(|c| c.aid.to_string() == *peer).cloned();
        match child {
            Some(child) => self.explain(&child, e).await,
            None => e,
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
    /// [`Misuse::NurseryExited`] when the nursery has already exited.
    pub async fn start_actor(&self, name: &str) -> Result<Portal, ActorError> {
        self.start_actor_opts(name, &SpawnOptions::default()).await
    }

    pub(super) async fn start_actor_opts(
        &self,
        name: &str,
        options: &SpawnOptions,
    ) -> Result<Portal, ActorError> {
        let child = self.spawn_child_with(name, options).await?;
        let portal = child.portal.clone();
        self.monitor(child);
        Ok(portal)
    }

    /// Starts a child actor that runs `function(args)`. The child keeps serving calls
    /// until the body is done, then is cancelled; its result can be awaited in the body
    /// ([`RunHandle::result`]) and is collected at nursery exit: an error is one of the
    /// nursery's errors (it cancels no sibling; a failure of the body or of a daemon
    /// child still cancels every child, this one included).
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
        self.run_in_actor_opts(name, &SpawnOptions::default(), function, args).await
    }

    pub(super) async fn run_in_actor_opts<A, R>(
        &self,
        name: &str,
        options: &SpawnOptions,
        function: &str,
        args: A,
    ) -> Result<RunHandle<R>, ActorError>
    where
        A: Serialize,
        R: DeserializeOwned + Send + 'static,
    {
        let child = self.spawn_child_with(name, options).await?;
        self.run_in(child, function, args)
    }

    /// Runs `function(args)` in `child` as [`Nursery::run_in_actor`] does.
    pub(super) fn run_in<A, R>(
        &self,
        child: Arc<ChildActor>,
        function: &str,
        args: A,
    ) -> Result<RunHandle<R>, ActorError>
    where
        A: Serialize,
        R: DeserializeOwned + Send + 'static,
    {
        let slot = Arc::new(RunSlot { value: Mutex::new(None), done: CancellationToken::new() });
        let handle = RunHandle { slot: Arc::clone(&slot), aid: child.aid.clone() };
        let args = encode(&args)?;
        let inner = Arc::clone(&self.inner);
        let function = function.to_owned();
        let n = self.clone();
        self.inner.tasks.spawn(crate::base::trace::inherit(async move {
            // No select on cancellation here: when the nursery cancels, the ladder makes the
            // child answer (ContextCancelled, or its real error if it had one) or kills it,
            // so the call always completes and no failure is lost.
            let done = SlotDone(Arc::clone(&slot));
            let running = inner.runs.token();
            let out = child.portal.run_raw::<R>(&function, args).await;
            drop(running);
            match out {
                Ok(v) => *slot.value.locked() = Some(Ok(v)),
                Err(e) => {
                    let taken_down = child.cancelling.load(Ordering::SeqCst)
                        || child.portal.channel().cancel_requested();
                    let e = n.explain(&child, e).await;
                    *slot.value.locked() = Some(Err(e.clone()));
                    if taken_down && (e.is_cancel() || !matches!(e, ActorError::Remote(_))) {
                        // The consequence of our own cancel, not a failure of the child.
                    } else {
                        // Collected, as tractor does: a failure once the body is done
                        // cancels no sibling (each run-in-actor child's outcome is
                        // reported: none is lost to a cancel it raced).
                        n.record(e);
                    }
                }
            }
            drop(done);
            // As in tractor, the child stays up, serving (its peers may still call it),
            // until the nursery collects it: once the body is done and every other
            // run-in-actor function has returned too.
            tokio::select! {
                () = inner.runs.wait() => {}
                () = inner.failed.cancelled() => {}
                () = inner.scope.cancelled() => {}
                () = child.portal.channel().closed() => {}
            }
            n.take_down(&child).await;
        }));
        Ok(handle)
    }

    /// Cancels every child of this nursery (through the ladder) and waits until all are
    /// reaped. The nursery stays usable.
    pub async fn cancel(&self) {
        self.cancel_all().await;
    }

    /// Records a failure (collected at exit).
    fn record(&self, e: ActorError) {
        self.inner.errors.locked().push(e);
    }

    /// Records a failure and triggers one-cancels-all.
    fn fail(&self, e: ActorError) {
        self.record(e);
        self.inner.failed.cancel();
    }

    /// Watches a daemon child: an exit the nursery did not ask for is a failure.
    pub(super) fn monitor(&self, child: Arc<ChildActor>) {
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
            let wait = n.inner.actor.budgets().exit_status;
            let exited = tokio::time::timeout(wait, child.process.wait()).await;
            if let Ok(Ok(status)) = exited
                && status.success()
            {
                tracing::info!(child = %child.aid, "daemon child exited cleanly on its own");
                return;
            }
            let e = n.death_of(&child).await;
            if !expected() {
                n.fail(e);
            }
        });
    }
}

impl Actor {
    /// Opens a nursery: `body` may start child actors through it; `nursery` returns only
    /// after every child has exited and been reaped. See [`Nursery`].
    ///
    /// # Errors
    ///
    /// The body's error and every child's failure, together (see [`ActorError::collect`]).
    pub async fn nursery<T, F, Fut>(&self, body: F) -> Result<T, ActorError>
    where
        F: FnOnce(Nursery) -> Fut,
        Fut: Future<Output = Result<T, ActorError>>,
    {
        Nursery::run(self.clone(), self.cancel_token(), None, body).await
    }
}

impl Cx {
    /// Opens a nursery in the serving actor, scoped to this call (cancelled with it); see
    /// [`Actor::nursery`].
    ///
    /// # Errors
    ///
    /// As [`Actor::nursery`].
    pub async fn nursery<T, F, Fut>(&self, body: F) -> Result<T, ActorError>
    where
        F: FnOnce(Nursery) -> Fut,
        Fut: Future<Output = Result<T, ActorError>>,
    {
        Nursery::run(self.runtime().clone(), self.cancel_token(), Some(self.call_state()), body)
            .await
    }
}

/// Whether `a` and `b` both report the death of the same actor.
fn same_death(a: &ActorError, b: &ActorError) -> bool {
    matches!(
        (a, b),
        (ActorError::ActorDied { actor: x, .. }, ActorError::ActorDied { actor: y, .. }) if x == y
    )
}
