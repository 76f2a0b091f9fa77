//! [`Runtime`]: a program's handlers, settings and spawn backend; [`Runtime::run`]
//! dispatches child mode (see the layer doc) or runs the root actor: it joins the
//! registrar that answers on the registry address or becomes it (and, having joined,
//! takes part in electing a successor when that registrar goes), runs the body with
//! SIGINT as a graceful cancel of the tree, then shuts down and reaps everything.

use super::child::child_main;
use super::failover::{ElectError, Elected, elect, keep_registered, random};
use super::listen::{bind, bind_more, check_runtime_dir, ephemeral_like, is_private, load_tls};
use super::signals::{Signals, dump_and_relay, name, watched};
use crate::base::boot_stderr;
use crate::base::budgets::Budgets;
use crate::base::config::{RuntimeConfig, TreeSecret};
use crate::base::dump;
use crate::base::error::{ActorError, Misuse, SetupError};
use crate::base::ids;
use crate::base::runtime_vars;
use crate::base::spawn::{ChildBoot, ChildMain, ChildRuntime, SpawnBackend};
use crate::base::sync::when_woken;
use crate::base::trace::ActorTrace;
use crate::registrar::client::RegistrarClient;
use crate::registrar::entry::ActorEntry;
use crate::registrar::state::RegistrarState;
use crate::serving::actor::{Actor, ActorParts};
use crate::serving::exposure::Exposure;
use crate::serving::registry::Registry;
use futures::FutureExt;
use plough_fork_prims::Signal;
use plough_ipc_wire::handshake::{Credentials, HandshakeError};
use plough_ipc_wire::msg::{Aid, RuntimeVars, Uuid};
use plough_ipc_wire::{Address, Secret, runtime_dir};
use std::future::Future;
use std::os::fd::OwnedFd;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// One actor runs per process: the root, or the child actor of a spawned process.
pub(super) static ACTOR_RUNNING: AtomicBool = AtomicBool::new(false);

/// The actor runtime of a program: its handlers, settings and spawn backend.
pub struct Runtime {
    registry: Registry,
    config: RuntimeConfig,
    backend: Option<Arc<dyn SpawnBackend>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("registry", &self.registry)
            .field("config", &self.config)
            .finish()
    }
}

impl Runtime {
    /// A runtime serving `registry`, with default settings and no spawn backend (the
    /// `plough` facade sets the default backends).
    pub fn new(registry: Registry) -> Self {
        Runtime { registry, config: RuntimeConfig::default(), backend: None }
    }

    /// Replaces the settings.
    pub fn with_config(mut self, config: RuntimeConfig) -> Self {
        self.config = config;
        self
    }

    /// Changes the settings in place.
    pub fn configure(mut self, f: impl FnOnce(&mut RuntimeConfig)) -> Self {
        f(&mut self.config);
        self
    }

    /// Sets the spawn backend.
    pub fn with_backend(mut self, backend: Arc<dyn SpawnBackend>) -> Self {
        self.backend = Some(backend);
        self
    }

    /// The settings.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// The entry point for forked children: runs the child actor and returns its exit
    /// code. Cheap to clone into a backend.
    pub fn child_main(&self) -> ChildMain {
        let (registry, config, backend) =
            (self.registry.clone(), self.config.clone(), self.backend.clone());
        Arc::new(move |boot: ChildBoot, rt: ChildRuntime| {
            child_main(registry.clone(), config.clone(), backend.clone(), boot, rt)
        })
    }

    /// Runs the program's root actor with `body`, then cancels and reaps everything it
    /// started. In a spawned child process this never returns: the process becomes the
    /// child actor and exits when it is done.
    ///
    /// A `zygote` or `exec` child runs the program's `main` from its start, with the
    /// root's argv (see `plough-spawn-backends`' `ChildCommand`), and becomes the child
    /// here: so call `run` early in `main`, after what every process of the program needs
    /// (argument parsing, its tracing subscriber) and before what only the root should do
    /// (binding a service port, reading stdin). Until `run`, a child's stdout goes to
    /// `/dev/null` (the root printed it already), its stderr is a pipe its parent reads
    /// (shown in a boot error), and its stdin is `/dev/null`; `run` puts the real stdout
    /// and stderr back. Nothing of plough's is on a child's argv: the program's own
    /// argument parser accepts it as it accepted the root's. In a program with a tokio
    /// runtime of its own (`#[tokio::main]`) use [`Runtime::run_async`]; `run` there is a
    /// [`Misuse::InsideTokioRuntime`].
    ///
    /// # Signals
    ///
    /// SIGINT and SIGTERM cancel the whole tree gracefully (every child through the
    /// cancellation ladder, running its cleanup) and `run` returns
    /// [`ActorError::Interrupted`] or [`ActorError::Terminated`]; exit with
    /// [`ActorError::exit_code`] (130, 143) as service managers and shells expect. The body
    /// sees it coming ([`Actor::shutdown_requested`]) and gets the ladder's ack timeout to
    /// finish; then it is dropped, nursery or not (a dropped nursery still takes its
    /// children down gracefully before `run` returns). A second signal escalates: every
    /// child's process group is SIGKILLed at once.
    ///
    /// While `run` runs, plough handles SIGINT, SIGTERM (and SIGUSR1, for task dumps,
    /// unless [`RuntimeConfig::task_dump`](crate::RuntimeConfig::task_dump) is off)
    /// process-wide, whichever thread the kernel delivers them to — threads the program
    /// started before `run` included. The handler installed before plough's keeps
    /// running for every signal (it is called first), and comes back when `run` returns;
    /// one installed after plough's (tokio's `ctrl_c()` first used inside the body) stays.
    /// So the program's own `tokio::signal` works in the root and in `zygote` and `exec`
    /// children. A program compiled with tokio's `signal` or `process` feature cannot
    /// fork in-process (`main_thread_forkserver` refuses it, naming the cause): `zygote`
    /// (the default) and `exec` work. Inside the tree, prefer
    /// [`Actor::shutdown_requested`] / [`Cx::shutdown_requested`](crate::Cx::shutdown_requested):
    /// they also fire on a parent's cancel and a parent's death.
    ///
    /// A program started as PID 1 (a container without an init) runs as PID 2 behind a
    /// minimal init that plough's startup hook forks before `main`: it reaps the
    /// namespace's orphans and passes SIGINT and SIGTERM (and SIGHUP, SIGQUIT, SIGUSR1,
    /// SIGUSR2, SIGWINCH) sent to PID 1 on to the program, so they work as anywhere else;
    /// see `plough_fork_prims::INIT_ENV` (`PLOUGH_INIT=0` keeps the program as PID 1).
    ///
    /// # Errors
    ///
    /// `body`'s error; [`Misuse::ActorAlreadyRunning`]
    /// when an actor already runs in this process; a [`SetupError`]
    /// when the runtime cannot start (e.g. the registry address is held by something that
    /// is not a plough registrar).
    pub fn run<T, F, Fut>(self, body: F) -> Result<T, ActorError>
    where
        F: FnOnce(Actor) -> Fut,
        Fut: Future<Output = Result<T, ActorError>>,
    {
        let _running = Running::claim()?;
        // A child becomes itself even here (on a thread of its own); a root cannot.
        let inside_a_runtime = tokio::runtime::Handle::try_current().is_ok();
        let this = self.become_child_if_started_as_one(inside_a_runtime)?;
        if inside_a_runtime {
            return Err(Misuse::InsideTokioRuntime.into());
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ActorError::from(SetupError::TokioRuntime(e.to_string())))?;
        let _drain = Drain(this.config.budgets.reaper_drain);
        // Re-bound after the guard: dropped first on unwind, running the nurseries' drop
        // guards before the drain.
        let rt = rt;
        // As a task, not as `block_on`'s future: a reply a task delivers then costs no
        // extra trip through the reactor (see `body_task`).
        let out = super::body_task::run_as_task(&rt, this.root(body));
        drop(rt);
        out
    }

    /// [`Runtime::run`] on the caller's tokio runtime, for a program that has one
    /// (`#[tokio::main]`, of either flavour, or `#[tokio::test]`). The root actor's tasks
    /// run on that runtime; `body` need not be `Send`. The runtime needs its I/O and time
    /// drivers (`enable_all()`, as `#[tokio::main]` does).
    ///
    /// In a spawned child process this never returns, as with [`Runtime::run`]: the child
    /// actor runs on a fresh current-thread runtime of its own, on a thread of its own,
    /// and the process exits when it is done — every actor but a root runs on a
    /// current-thread runtime. Everything else (signals, errors, shutdown) is as for
    /// [`Runtime::run`].
    ///
    /// # Errors
    ///
    /// As [`Runtime::run`].
    pub async fn run_async<T, F, Fut>(self, body: F) -> Result<T, ActorError>
    where
        F: FnOnce(Actor) -> Fut,
        Fut: Future<Output = Result<T, ActorError>>,
    {
        let _running = Running::claim()?;
        let this = self.become_child_if_started_as_one(true)?;
        let _drain = Drain(this.config.budgets.reaper_drain);
        this.root(body).await
    }

    /// In a process started as a child actor (`exec`, `zygote`): becomes it and exits,
    /// never returning; otherwise hands the runtime back for a root. `own_thread`: the
    /// child's runtime runs on a thread of its own (the caller's belongs to the program's
    /// runtime, which cannot host another one).
    fn become_child_if_started_as_one(self, own_thread: bool) -> Result<Runtime, ActorError> {
        let Some((boot, fds)) = delivered_boot()? else { return Ok(self) };
        boot_stderr::use_delivered(fds);
        let (registry, config, backend) = (self.registry, self.config, self.backend);
        let code = if own_thread {
            std::thread::Builder::new()
                .name("plough-child".to_owned())
                .spawn(move || child_main(registry, config, backend, boot, ChildRuntime::prepare()))
                .map(|t| t.join().unwrap_or(plough_fork_prims::exit_code::PANICKED))
                .unwrap_or(plough_fork_prims::exit_code::PRELUDE_FAILED)
        } else {
            child_main(registry, config, backend, boot, ChildRuntime::prepare())
        };
        std::process::exit(code)
    }

    async fn root<T, F, Fut>(self, body: F) -> Result<T, ActorError>
    where
        F: FnOnce(Actor) -> Fut,
        Fut: Future<Output = Result<T, ActorError>>,
    {
        // First: from here on a SIGINT/SIGTERM is a graceful stop (one arriving while the
        // root sets up waits in the pipe and cancels the tree as soon as the body runs),
        // never a sudden death that leaves a marker or socket behind.
        let dumps = self.config.task_dump && dump::enabled_by_env();
        let signals = Signals::process_wide(&watched(&[Signal::INT, Signal::TERM], dumps));
        // Nothing is written through a runtime directory someone else controls.
        check_runtime_dir()?;
        let aid =
            Aid { name: self.config.name.clone(), uuid: Uuid::new_v4(), pid: std::process::id() };
        let secret = tree_secret(&self.config.secret)?;
        let me = Credentials { aid: aid.clone(), secret: secret.clone() };
        let registry_addr = self.config.registry_addr.clone();
        let tls = load_tls(self.config.tls.as_ref())?;

        if let Some(e) = self.config.registry_env_error() {
            return Err(e.into());
        }
        // Join the registrar that answers, or become it.
        let private = is_private(&registry_addr);
        let (joined, listener, registrar) = if private {
            (
                None,
                bind(&registry_addr, tls.as_ref().map(|t| &t.1)).await?,
                Some(Arc::new(RegistrarState::new())),
            )
        } else {
            match elect_at_start(&registry_addr, &me, &self.config.budgets).await? {
                Elected::Joined(est) => {
                    let own = bind(
                        &ephemeral_like(&registry_addr, &aid.name)?,
                        tls.as_ref().map(|t| &t.1),
                    )
                    .await?;
                    (Some(*est), own, None)
                }
                Elected::Became(listener) => {
                    (None, listener, Some(Arc::new(RegistrarState::new())))
                }
            }
        };
        // A registrar on a private address (TCP port 0) is where the kernel bound it.
        let registry_addr = match &registrar {
            Some(_) => listener.local_addr().clone(),
            None => registry_addr,
        };
        let child_main = self.child_main();
        let actor = Actor::start(ActorParts {
            aid: aid.clone(),
            secret,
            registry: self.registry,
            config: self.config.clone(),
            backend: self.backend,
            child_main,
            listener,
            registrar,
            registry_addr,
            is_root: true,
            tls,
            trace: ActorTrace::new(&aid, "root"),
            exposure: Exposure::all(),
        });
        let vars = RuntimeVars {
            is_root: true,
            spawn_method: self.config.spawn_method.key().to_owned(),
            root_addr: Some(actor.addr().clone()),
            ..runtime_vars::get(false)
        };
        runtime_vars::set(ids::with_tree(vars, &aid.uuid));
        actor.write_marker(&aid.uuid, 0, "root");
        if let Err(e) = bind_more(&actor, &self.config.bind_addrs).await {
            actor.shutdown().await;
            return Err(e);
        }
        let entry = ActorEntry::new(aid.clone(), actor.addr().to_string(), None, "root");
        if let Some(state) = actor.registrar().state() {
            state.add(entry, None);
            if !private {
                let registry = actor.registry_addr();
                tracing::info!(actor = %aid, %registry, "became the registrar at {registry}");
            }
        } else if let Some(est) = joined {
            let client = RegistrarClient::new(actor.portal(actor.attach(est, true)));
            if let Err(e) = client.register(&entry).await {
                actor.shutdown().await;
                return Err(SetupError::RegistrationRefused { detail: e.to_string() }.into());
            }
            actor.registrar().set_client(client);
            let registry = actor.registry_addr();
            tracing::info!(actor = %aid, %registry, "joined the registrar at {registry}");
            // When that registrar goes away, run the election again and register there.
            keep_registered(&actor, entry, true);
        }
        tracing::info!(actor = %aid, addr = %actor.addr(), registrar = actor.is_registrar(), "root actor up");

        // However the body ends — a value, an error, a signal, a panic — the actor shuts
        // down (its marker and socket go, its children are reaped) before `run` returns
        // or the panic goes on.
        let run = AssertUnwindSafe(async {
            let body = actor.trace().run(body(actor.clone()));
            run_with_signals(&actor, &signals, body).await
        });
        let out = run.catch_unwind().await;
        shutdown_watching(&actor, &signals, out.as_ref().is_ok_and(|r| is_signalled(r))).await;
        // The tree has ended (every actor of it reaped): its task dumps go with it.
        dump::remove_tree(&aid.uuid.to_string());
        // No actor runs here any more: the runtime vars and the log label say so (a root
        // started later in this process begins from the defaults, as the first did).
        runtime_vars::reset();
        drop(signals);
        match out {
            Ok(out) => out,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

/// The election of a starting root: joins the registrar at `addr` or becomes it. A race
/// with another root binding the address at the same moment is retried (paced by the
/// registrar backoff) until [`Budgets::registrar_probe`] is over.
///
/// # Errors
///
/// [`SetupError::RegistryAddressTaken`] when something that is not a plough registrar
/// answers there (or the race does not settle in time); [`SetupError::Listen`] when the
/// free address cannot be bound.
async fn elect_at_start(
    addr: &Address,
    me: &Credentials,
    budgets: &Budgets,
) -> Result<Elected, ActorError> {
    let deadline = std::time::Instant::now() + budgets.registrar_probe;
    let mut attempt = 0u32;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let taken =
            |detail: String| SetupError::RegistryAddressTaken { addr: addr.to_string(), detail };
        match elect(addr, me, budgets.registrar_probe, true).await {
            Ok(elected) => return Ok(elected),
            Err(ElectError::Taken(
                e @ (HandshakeError::Refused { .. } | HandshakeError::BadProof { .. }),
            )) => {
                let (addr, detail) = (addr.to_string(), e.to_string());
                return Err(SetupError::RegistryOfAnotherTree { addr, detail }.into());
            }
            Err(ElectError::Taken(e)) => return Err(taken(e.to_string()).into()),
            Err(ElectError::Bind(e)) => {
                let (addr, detail) = (addr.to_string(), e.to_string());
                return Err(SetupError::Listen { addr, detail }.into());
            }
            Err(ElectError::Again(why)) if left.is_zero() => return Err(taken(why).into()),
            Err(ElectError::Again(_)) => {}
        }
        tokio::time::sleep(budgets.registrar_retry(attempt, random())).await;
        attempt = attempt.saturating_add(1);
    }
}

/// Holds [`ACTOR_RUNNING`] for one root: however `run` ends (a panic in the body
/// included), the process may run a root again.
struct Running;

impl Running {
    fn claim() -> Result<Running, ActorError> {
        if ACTOR_RUNNING.swap(true, Ordering::SeqCst) {
            return Err(Misuse::ActorAlreadyRunning.into());
        }
        Ok(Running)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        ACTOR_RUNNING.store(false, Ordering::SeqCst);
    }
}

/// Children dropped on an error path (or while a panic unwinds through `run`) went to the
/// reaper thread: reap them before `run` returns — the caller may exit right after.
struct Drain(std::time::Duration);

impl Drop for Drain {
    fn drop(&mut self) {
        if !plough_fork_prims::drain_reaper(self.0) {
            tracing::warn!("some children were not reaped before the root returned");
        }
    }
}

/// The boot this process was started with as a child actor (`exec`, `zygote`), with its
/// delivered fds; `None` for a root.
///
/// # Errors
///
/// A malformed boot, or a child whose boot was never taken (plough's startup hook did not
/// run: it must not go on as a second root).
pub(super) fn delivered_boot() -> Result<Option<(ChildBoot, Vec<OwnedFd>)>, ActorError> {
    if let Some(delivery) = plough_fork_prims::take_delivery() {
        let boot = ChildBoot::decode(&delivery.payload).map_err(SetupError::ChildBoot)?;
        return Ok(Some((boot, delivery.fds)));
    }
    if std::env::var_os(plough_fork_prims::BOOT_ENV).is_some() {
        let why = if plough_fork_prims::startup_hook_ran() {
            "its boot was already taken".to_owned()
        } else {
            format!(
                "{} is set but plough's startup hook did not run in this program (it runs \
                 before `main` in every program that links plough-fork-prims)",
                plough_fork_prims::BOOT_ENV
            )
        };
        return Err(SetupError::ChildBoot(why).into());
    }
    Ok(None)
}

/// The secret a root's tree proves (see [`TreeSecret`]).
fn tree_secret(which: &TreeSecret) -> Result<Secret, ActorError> {
    let secret = match which {
        TreeSecret::PerUser => Secret::load_or_create(&runtime_dir::default_dir()),
        TreeSecret::PerTree => Secret::generate(),
        TreeSecret::Given(s) => Ok(s.clone()),
    };
    secret.map_err(|e| SetupError::Secret(e.to_string()).into())
}

/// Whether the body ended because of a signal.
fn is_signalled<T>(r: &Result<T, ActorError>) -> bool {
    matches!(r, Err(ActorError::Interrupted | ActorError::Terminated))
}

/// The actor's shutdown, during which SIGUSR1 still dumps and a stop signal escalates if
/// one came before (`signalled`) — the first one during an ordinary shutdown is the
/// graceful cancel the shutdown already is.
async fn shutdown_watching(actor: &Actor, signals: &Signals, mut signalled: bool) {
    let shutdown = actor.shutdown();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            sig = signals.recv() => match sig {
                Signal::USR1 => dump_and_relay(actor),
                sig if signalled => {
                    tracing::warn!(actor = %actor.aid(), signal = %name(sig), "second signal: killing every child");
                    actor.escalate();
                }
                _ => signalled = true,
            },
        }
    }
}

/// Runs the root body with SIGINT and SIGTERM as a graceful cancel of the whole tree.
///
/// The first signal cancels the root actor: every nursery and served call derives from
/// it, so the tree goes down through the ladder. The body itself is a cancellable scope:
/// it gets the ladder's ack timeout to finish on its own (it sees
/// [`Actor::shutdown_requested`]), then it is dropped — with or without a nursery open;
/// a dropped nursery still takes its children down gracefully, in the background, and
/// the root's shutdown waits for them. A second signal escalates: every ladder skips to
/// SIGKILL of the children's process groups.
///
/// Signals arrive through a process-wide handler (see `signals`), so threads the program
/// started before `run` cannot turn one Ctrl-C into a sudden death.
async fn run_with_signals<T>(
    actor: &Actor,
    signals: &Signals,
    body: impl Future<Output = Result<T, ActorError>>,
) -> Result<T, ActorError> {
    if !signals.is_watching() {
        return body.await;
    }
    // The next SIGINT or SIGTERM; a SIGUSR1 meanwhile dumps the task tree and is relayed.
    let next_stop = || async {
        loop {
            match signals.recv().await {
                Signal::USR1 => dump_and_relay(actor),
                sig => return sig,
            }
        }
    };
    tokio::pin!(body);
    let first = tokio::select! {
        biased;
        r = &mut body => return r,
        // Polled only when a signal woke it, not on each of the body's wake-ups.
        sig = when_woken(next_stop()) => sig,
    };
    tracing::warn!(actor = %actor.aid(), signal = %name(first), "cancelling the actor tree");
    actor.cancel(actor.aid().clone());
    let grace = actor.budgets().ladder.ack_timeout;
    let escalate = tokio::select! {
        out = &mut body => {
            // The signal is the outcome; a real failure the tree raised while going down
            // is not lost from sight (a cancel that it caused would only be noise).
            if let Err(e) = out
                && !e.is_cancel()
            {
                tracing::warn!(actor = %actor.aid(), error = %e, "the tree failed while it was cancelled");
            }
            false
        }
        () = tokio::time::sleep(grace) => {
            tracing::info!(actor = %actor.aid(), ?grace, "the root body did not finish on its own: dropping it (its nurseries go down in the background)");
            false
        }
        sig = next_stop() => {
            tracing::warn!(actor = %actor.aid(), signal = %name(sig), "second signal: killing every child");
            true
        }
    };
    if escalate {
        actor.escalate();
    }
    Err(if first == Signal::TERM { ActorError::Terminated } else { ActorError::Interrupted })
}
