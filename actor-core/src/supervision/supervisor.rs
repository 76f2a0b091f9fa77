//! Supervisors: see [`Supervisor`](crate::Supervisor).

use super::nursery::{ChildActor, Nursery};
use crate::base::budgets::{LadderConfig, RestartIntensity};
use crate::base::error::{ActorError, ChildExit, During, Misuse, encode};
use crate::calls::portal::Portal;
use crate::serving::actor::Actor;
use crate::serving::cx::Cx;
use plough_fork_prims::ExitStatus;
use plough_ipc_wire::msg::Aid;
use plough_ipc_wire::payload::Payload;
use serde::Serialize;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;

/// Who is restarted along with a child that exited (see [`Supervisor`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Only the child that exited.
    OneForOne,
    /// Every child.
    OneForAll,
    /// The child that exited and those started after it.
    RestForOne,
}

/// When a child is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Restart {
    /// After any exit.
    #[default]
    Permanent,
    /// After an abnormal exit only.
    Transient,
    /// Never.
    Temporary,
}

/// What a child does.
#[derive(Debug, Clone)]
enum Work {
    /// Serves calls until it is taken down (a daemon actor).
    Serve,
    /// Runs one function; its return ends the child.
    Run { function: String, args: Payload },
}

/// One child of a [`Supervisor`]: its id (also its actor name), what it does, when it is
/// restarted, and how long it may take to go down.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    id: String,
    work: Work,
    restart: Restart,
    shutdown: Option<LadderConfig>,
    /// The host daemon it runs on (`None`: here).
    host: Option<super::remote::Host>,
}

impl ChildSpec {
    /// A child actor that serves calls (reach it with [`Supervised::portal`]).
    /// `Permanent` unless [`ChildSpec::restart`] says otherwise.
    pub fn actor(id: impl Into<String>) -> Self {
        ChildSpec {
            id: id.into(),
            work: Work::Serve,
            restart: Restart::Permanent,
            shutdown: None,
            host: None,
        }
    }

    /// A child actor that runs `function(args)`; the call's return ends it (and a
    /// `Permanent` one is then started again, as in OTP: use `Transient` for a job).
    ///
    /// # Errors
    ///
    /// `args` that cannot be encoded.
    pub fn run<A: Serialize>(
        id: impl Into<String>,
        function: &str,
        args: &A,
    ) -> Result<Self, ActorError> {
        Ok(ChildSpec {
            id: id.into(),
            work: Work::Run { function: function.to_owned(), args: encode(args)? },
            restart: Restart::Permanent,
            shutdown: None,
            host: None,
        })
    }

    /// When it is restarted.
    #[must_use]
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// Its own cancellation ladder, instead of the runtime's
    /// ([`Budgets::ladder`](crate::Budgets::ladder)).
    #[must_use]
    pub fn shutdown(mut self, ladder: LadderConfig) -> Self {
        self.shutdown = Some(ladder);
        self
    }

    /// On the host daemon `host` (see [`Actor::attach_host`]): each start (and restart)
    /// spawns it there, under the same ladder.
    #[must_use]
    pub fn on(mut self, host: &super::remote::Host) -> Self {
        self.host = Some(host.clone());
        self
    }

    /// Its id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// A supervisor's specification: a strategy, a restart intensity, and children in start
/// order. Run it with [`Actor::supervise`] or [`Cx::supervise`].
///
/// OTP's restart strategies over child actors (see Erlang's `supervisor(3)`).
///
/// `actor.supervise(spec, |s| async { ... })` starts the spec's children **in order**, runs
/// the body, and watches the children while it runs. A child that exits is restarted or
/// not by its [`Restart`] type (`Permanent`: always; `Transient`: after an abnormal exit;
/// `Temporary`: never), and the [`Strategy`] says who is restarted with it:
///
/// * `OneForOne`: only the child that exited;
/// * `OneForAll`: every other child is taken down (in reverse start order), then all are
///   started again in order;
/// * `RestForOne`: the children started after it are taken down (in reverse order), then
///   it and they are started again in order.
///
/// As in OTP, a `Temporary` child that a sibling's restart takes down is not started
/// again, while a `Transient` child that had ended normally is (it is still one of the
/// supervisor's children). Each restart counts against the [`RestartIntensity`]: one that
/// would make more than `max_restarts` within `period` makes the supervisor take every
/// child down, in reverse start order, and end with
/// [`ActorError::SupervisorGaveUp`] listing the exits of that window — so a child that
/// dies at boot again and again costs a bounded number of spawns, never a fork loop. A
/// restart that fails (the new process dies during its boot) is an exit too, and is
/// retried the same way.
///
/// A child is *normal*ly done when its function returned `Ok` or was cancelled (a run
/// child), or when its process exited with code 0 on its own (a serving child); a crash,
/// a kill, a lost connection or an error is abnormal. Every exit is published as a
/// [`ChildExit`] on [`Supervised::exits`] and logged with its reason.
///
/// When the body returns, the children are taken down in reverse start order, each
/// through the cancellation ladder with its own shutdown budget
/// ([`ChildSpec::shutdown`]), and the body's result is the supervisor's. The supervisor is
/// a nursery underneath: cancelled with its scope, and nothing it started outlives it. A
/// supervisor nests by running in a child: a [`ChildSpec::run`] whose function calls
/// [`Cx::supervise`] is a supervisor supervised by its parent (its giving up is its
/// abnormal exit).
///
/// As in OTP, a child that fails to start the first time fails the whole supervisor at
/// once (with that error, after taking down the children started before it): a
/// supervisor whose initial start fails does not run.
#[derive(Debug, Clone)]
pub struct Supervisor {
    strategy: Strategy,
    intensity: RestartIntensity,
    children: Vec<ChildSpec>,
}

impl Supervisor {
    /// No children yet, OTP's default intensity (1 restart in 5 s).
    pub fn new(strategy: Strategy) -> Self {
        Supervisor { strategy, intensity: RestartIntensity::default(), children: Vec::new() }
    }

    /// At most `max_restarts` restarts within `period`.
    #[must_use]
    pub fn intensity(mut self, max_restarts: u32, period: std::time::Duration) -> Self {
        self.intensity = RestartIntensity { max_restarts, period };
        self
    }

    /// Adds a child, started after those added before it.
    ///
    /// # Panics
    ///
    /// When a child of the same id was added already (ids name children uniquely).
    #[must_use]
    pub fn child(mut self, spec: ChildSpec) -> Self {
        assert!(
            self.children.iter().all(|c| c.id != spec.id),
            "a supervisor's child ids are unique: `{}` was added twice",
            spec.id
        );
        self.children.push(spec);
        self
    }
}

/// What the body of a supervisor holds: the children's current portals, their exits.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Supervised {
    shared: Arc<Shared>,
}

/// A child as the body sees it.
#[derive(Debug, Clone)]
enum View {
    /// Being (re)started.
    Starting,
    /// Up, in this generation.
    Running(u64, Portal),
    /// Terminated and not restarted (or the supervisor has ended).
    Stopped,
}

#[derive(Debug)]
struct Shared {
    ids: Vec<String>,
    views: watch::Sender<Vec<View>>,
    /// The template receiver that [`Supervised::exits`] resubscribes.
    exits: broadcast::Receiver<ChildExit>,
    restarts: AtomicU64,
}

impl Shared {
    fn set(&self, i: usize, view: View) {
        self.views.send_modify(|v| v[i] = view);
    }
}

impl Supervised {
    /// The current portal to child `id`, waiting while it is being restarted. A portal
    /// taken before a restart reaches the dead child: after an `ActorDied`, ask again.
    ///
    /// # Errors
    ///
    /// [`Misuse::NoSuchChild`]: no child has that id, it was terminated and is not
    /// restarted, or the supervisor has ended.
    pub async fn portal(&self, id: &str) -> Result<Portal, ActorError> {
        let no_such = || ActorError::from(Misuse::NoSuchChild { id: id.to_owned() });
        let i = self.shared.ids.iter().position(|c| c == id).ok_or_else(no_such)?;
        let mut rx = self.shared.views.subscribe();
        loop {
            match &rx.borrow_and_update()[i] {
                View::Running(_, p) => return Ok(p.clone()),
                View::Stopped => return Err(no_such()),
                View::Starting => {}
            }
            rx.changed().await.map_err(|_| no_such())?;
        }
    }

    /// The exits of the children from now on, as they happen. The stream ends when the
    /// supervisor has ended.
    pub fn exits(&self) -> ChildExits {
        ChildExits { rx: self.shared.exits.resubscribe() }
    }

    /// How many restarts the supervisor has made so far.
    pub fn restarts(&self) -> u64 {
        self.shared.restarts.load(Ordering::SeqCst)
    }

    /// Resolves once no child runs or is being restarted (every child ended and is not
    /// restarted: e.g. transient jobs that all succeeded).
    pub async fn all_stopped(&self) {
        let mut rx = self.shared.views.subscribe();
        let _ = rx.wait_for(|v| v.iter().all(|c| matches!(c, View::Stopped))).await;
    }
}

/// The [`ChildExit`] events of a supervisor (see [`Supervised::exits`]).
#[derive(Debug)]
pub struct ChildExits {
    rx: broadcast::Receiver<ChildExit>,
}

impl ChildExits {
    /// The next exit; `None` once the supervisor has ended and every exit was read.
    ///
    /// # Errors
    ///
    /// [`ActorError::Lagged`]: more than
    /// [`RestartIntensity::EXIT_EVENTS`] exits happened since the last read; the next
    /// call goes on with the oldest one still held.
    pub async fn recv(&mut self) -> Result<Option<ChildExit>, ActorError> {
        match self.rx.recv().await {
            Ok(e) => Ok(Some(e)),
            Err(broadcast::error::RecvError::Closed) => Ok(None),
            Err(broadcast::error::RecvError::Lagged(missed)) => Err(ActorError::Lagged { missed }),
        }
    }
}

/// What a watcher saw of one exit (or a failed start).
#[derive(Debug)]
struct Observed {
    actor: Option<Aid>,
    status: Option<ExitStatus>,
    during: During,
    error: Option<ActorError>,
}

/// An exit of child `idx`, in its generation `generation`.
#[derive(Debug)]
struct Event {
    idx: usize,
    generation: u64,
    seen: Observed,
}

/// One child as the supervisor keeps it.
#[derive(Default)]
struct Slot {
    child: Option<Arc<ChildActor>>,
    /// Bumped at every start and every deliberate stop: an exit reported for an older
    /// generation is one the supervisor caused or has handled, and is ignored.
    generation: u64,
    restarts: u32,
    /// Terminated and not restarted (a temporary child is never started again).
    stopped: bool,
}

/// A running supervisor (owned by the future of [`Actor::supervise`]).
struct Run {
    n: Nursery,
    shared: Arc<Shared>,
    specs: Vec<ChildSpec>,
    strategy: Strategy,
    intensity: RestartIntensity,
    slots: Vec<Slot>,
    events_tx: mpsc::UnboundedSender<Event>,
    events: mpsc::UnboundedReceiver<Event>,
    exits: broadcast::Sender<ChildExit>,
    /// The exits that restarted something, within the intensity's period.
    recent: VecDeque<(Instant, ChildExit)>,
}

impl Run {
    /// Starts child `i` (a new generation) and its watcher.
    async fn start(&mut self, i: usize) -> Result<(), Observed> {
        self.shared.set(i, View::Starting);
        let spec = self.specs[i].clone();
        let spawned = match &spec.host {
            Some(host) => self.n.spawn_remote(host, &spec.id).await,
            None => self.n.spawn_child(&spec.id).await,
        };
        let child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let actor = match &e {
                    ActorError::ActorDied { actor, .. } => Some(actor.clone()),
                    _ => None,
                };
                let status = status_of(&e);
                return Err(Observed { actor, status, during: During::Boot, error: Some(e) });
            }
        };
        if let Some(ladder) = spec.shutdown {
            let _ = child.ladder.set(ladder);
        }
        let slot = &mut self.slots[i];
        slot.generation += 1;
        slot.child = Some(Arc::clone(&child));
        let generation = slot.generation;
        self.shared.set(i, View::Running(generation, child.portal.clone()));
        let (n, shared, tx) = (self.n.clone(), Arc::clone(&self.shared), self.events_tx.clone());
        self.n.inner.monitors.spawn(async move {
            let seen = watch(&n, &child, spec.work).await;
            // Seen to be gone: a caller of `portal` now waits for the restart.
            shared.views.send_if_modified(|v| match v[i] {
                View::Running(g, _) if g == generation => {
                    v[i] = View::Starting;
                    true
                }
                _ => false,
            });
            let _ = tx.send(Event { idx: i, generation, seen });
        });
        Ok(())
    }

    /// Takes child `i` down (through its ladder), as the supervisor's own doing.
    async fn stop(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        slot.generation += 1;
        if let Some(child) = slot.child.take() {
            self.shared.set(i, View::Starting);
            self.n.take_down(&child).await;
        }
    }

    /// Starts every child in order; on a failure, takes the started ones down (reverse
    /// order) and returns the error.
    async fn start_all(&mut self) -> Result<(), ActorError> {
        for i in 0..self.specs.len() {
            if let Err(seen) = self.start(i).await {
                self.stop_all().await;
                let e = seen
                    .error
                    .unwrap_or_else(|| Misuse::NoSuchChild { id: self.specs[i].id.clone() }.into());
                return Err(e);
            }
        }
        Ok(())
    }

    /// Takes every child down, in reverse start order; marks them all stopped.
    async fn stop_all(&mut self) {
        for i in (0..self.slots.len()).rev() {
            self.stop(i).await;
            self.slots[i].stopped = true;
            self.shared.set(i, View::Stopped);
        }
    }

    /// Handles exits until the restart intensity is broken.
    async fn supervise(&mut self) -> ActorError {
        loop {
            let Some(ev) = self.events.recv().await else {
                unreachable!("the run holds a sender of its own events")
            };
            let slot = &self.slots[ev.idx];
            if ev.generation != slot.generation || slot.stopped {
                continue;
            }
            if let Err(gave_up) = self.exited(ev.idx, ev.seen).await {
                return gave_up;
            }
        }
    }

    /// Child `i` exited (or failed to start): restart it, and whom the strategy says.
    async fn exited(&mut self, i: usize, seen: Observed) -> Result<(), ActorError> {
        // A run child whose function returned is still up: take it down now.
        let status = match self.slots[i].child.take() {
            Some(child) => {
                self.n.take_down(&child).await;
                seen.status.or_else(|| child.process.try_wait().ok().flatten())
            }
            None => seen.status,
        };
        self.slots[i].generation += 1;
        let spec = &self.specs[i];
        let abnormal = seen.error.is_some();
        let restarting = match spec.restart {
            Restart::Permanent => true,
            Restart::Transient => abnormal,
            Restart::Temporary => false,
        };
        let mut exit = ChildExit {
            id: spec.id.clone(),
            actor: seen.actor,
            status,
            during: seen.during,
            error: seen.error,
            restarts: self.slots[i].restarts,
            restarting,
        };
        let me = self.n.actor().aid().clone();
        if !restarting {
            tracing::info!(supervisor = %me, %exit, "child ended; not restarted");
            self.slots[i].stopped = true;
            self.shared.set(i, View::Stopped);
            let _ = self.exits.send(exit);
            return Ok(());
        }
        let now = Instant::now();
        self.recent.push_back((now, exit.clone()));
        while self.recent.front().is_some_and(|(t, _)| now - *t > self.intensity.period) {
            self.recent.pop_front();
        }
        if self.recent.len() > self.intensity.max_restarts as usize {
            exit.restarting = false;
            tracing::error!(supervisor = %me, %exit, max = self.intensity.max_restarts, period = ?self.intensity.period, "restart intensity exceeded: taking every child down");
            let _ = self.exits.send(exit);
            let exits = self.recent.drain(..).map(|(_, e)| e).collect();
            self.stop_all().await;
            return Err(ActorError::SupervisorGaveUp {
                supervisor: me,
                intensity: self.intensity,
                exits,
            });
        }
        tracing::warn!(supervisor = %me, %exit, strategy = ?self.strategy, "restarting");
        self.slots[i].restarts += 1;
        self.shared.restarts.fetch_add(1, Ordering::SeqCst);
        crate::base::metrics::restarted();
        let len = self.specs.len();
        let others: Vec<usize> = match self.strategy {
            Strategy::OneForOne => vec![],
            Strategy::OneForAll => (0..len).filter(|&j| j != i).collect(),
            Strategy::RestForOne => (i + 1..len).collect(),
        };
        for &j in others.iter().rev() {
            self.stop(j).await;
            if self.specs[j].restart == Restart::Temporary {
                self.slots[j].stopped = true;
                self.shared.set(j, View::Stopped);
            }
        }
        let mut again: Vec<usize> =
            others.into_iter().filter(|&j| self.specs[j].restart != Restart::Temporary).collect();
        again.push(i);
        again.sort_unstable();
        for j in again {
            self.slots[j].stopped = false;
            if let Err(seen) = self.start(j).await {
                // The restart itself failed: an exit of its own, handled (and counted) in
                // turn, after the children that follow it have been started.
                let generation = self.slots[j].generation;
                let _ = self.events_tx.send(Event { idx: j, generation, seen });
            }
        }
        // Published once the restart is done: a watcher that reads it finds the new
        // children in place.
        let _ = self.exits.send(exit);
        Ok(())
    }
}

/// Waits for a child to be done, and says how it ended.
async fn watch(n: &Nursery, child: &ChildActor, work: Work) -> Observed {
    let actor = Some(child.aid.clone());
    match work {
        Work::Serve => {
            tokio::select! {
                _ = child.process.wait() => {}
                () = child.portal.channel().closed() => {}
            }
            let wait = n.inner.actor.budgets().exit_status;
            let status =
                tokio::time::timeout(wait, child.process.wait()).await.ok().and_then(Result::ok);
            match status {
                Some(s) if s.success() => {
                    Observed { actor, status, during: During::Idle, error: None }
                }
                Some(s) => {
                    let e = match n.death_of(child).await {
                        e @ ActorError::ActorDied { .. } => e,
                        _ => super::ladder::died(&child.aid, s, During::Idle),
                    };
                    let during = during_of(&e);
                    Observed { actor, status, during, error: Some(e) }
                }
                // Alive, but its connection is gone: it cannot be reached, so it is
                // taken down and counted as an abnormal exit.
                None => Observed {
                    actor,
                    status: None,
                    during: During::Idle,
                    error: Some(child.portal.channel().closed_error()),
                },
            }
        }
        Work::Run { function, args } => {
            match child.portal.run_raw::<serde::de::IgnoredAny>(&function, args).await {
                Ok(_) => Observed { actor, status: None, during: During::Idle, error: None },
                Err(e) if e.is_cancel() => {
                    Observed { actor, status: None, during: During::Idle, error: None }
                }
                Err(e) => {
                    let e = n.explain(child, e).await;
                    Observed { actor, status: status_of(&e), during: during_of(&e), error: Some(e) }
                }
            }
        }
    }
}

/// The exit status a death reports (`None` for any other error).
fn status_of(e: &ActorError) -> Option<ExitStatus> {
    match e {
        ActorError::ActorDied { status, .. } => Some(*status),
        _ => None,
    }
}

/// What a death says the child was doing (`Idle` for any other error).
fn during_of(e: &ActorError) -> During {
    match e {
        ActorError::ActorDied { during, .. } => during.clone(),
        _ => During::Idle,
    }
}

impl Nursery {
    /// Runs `sup` with `body` in this nursery's scope (see [`Actor::supervise`]).
    async fn supervise_in<T, F, Fut>(&self, sup: Supervisor, body: F) -> Result<T, ActorError>
    where
        F: FnOnce(Supervised) -> Fut,
        Fut: Future<Output = Result<T, ActorError>>,
    {
        let ids: Vec<String> = sup.children.iter().map(|c| c.id.clone()).collect();
        let (views, _) = watch::channel(vec![View::Starting; ids.len()]);
        let (exits, template) = broadcast::channel(RestartIntensity::EXIT_EVENTS);
        let shared = Arc::new(Shared { ids, views, exits: template, restarts: AtomicU64::new(0) });
        let (events_tx, events) = mpsc::unbounded_channel();
        let mut run = Run {
            n: self.clone(),
            shared: Arc::clone(&shared),
            slots: sup.children.iter().map(|_| Slot::default()).collect(),
            specs: sup.children,
            strategy: sup.strategy,
            intensity: sup.intensity,
            events_tx,
            events,
            exits,
            recent: VecDeque::new(),
        };
        run.start_all().await?;
        let out = {
            let body = body(Supervised { shared });
            tokio::select! {
                r = body => r,
                gave_up = run.supervise() => Err(gave_up),
            }
        };
        run.stop_all().await;
        out
    }
}

impl Actor {
    /// Runs supervisor `sup`: starts its children in order, runs `body` while it restarts
    /// them as its strategy says, and when `body` returns takes them down in reverse
    /// order and returns its result. See [`Supervisor`].
    ///
    /// # Errors
    ///
    /// The body's error; [`ActorError::SupervisorGaveUp`] when the restart intensity was
    /// exceeded (the body is then dropped); a child's error when it could not be started
    /// the first time; `ContextCancelled` when the actor is cancelled.
    pub async fn supervise<T, F, Fut>(&self, sup: Supervisor, body: F) -> Result<T, ActorError>
    where
        F: FnOnce(Supervised) -> Fut,
        Fut: Future<Output = Result<T, ActorError>>,
    {
        self.nursery(|n| async move { n.supervise_in(sup, body).await }).await
    }
}

impl Cx {
    /// Runs a supervisor in the serving actor, scoped to this call (cancelled with it);
    /// see [`Actor::supervise`]. A run child of a supervisor that calls this is a nested
    /// supervisor.
    ///
    /// # Errors
    ///
    /// As [`Actor::supervise`].
    pub async fn supervise<T, F, Fut>(&self, sup: Supervisor, body: F) -> Result<T, ActorError>
    where
        F: FnOnce(Supervised) -> Fut,
        Fut: Future<Output = Result<T, ActorError>>,
    {
        self.nursery(|n| async move { n.supervise_in(sup, body).await }).await
    }
}
