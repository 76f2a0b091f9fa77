//! [`Runtime`]: a program's handlers, settings and spawn backend; [`Runtime::run`]
//! dispatches child mode (see the layer doc) or runs the root actor: it joins the
//! registrar that answers on the registry address or becomes it, runs the body with
//! SIGINT as a graceful cancel of the tree, then shuts down and reaps everything.

use super::child::child_main;
use super::listen::{bind, ephemeral_like, is_absent, is_private};
use super::signals::{Signals, dump_and_relay, watched};
use crate::base::config::RuntimeConfig;
use crate::base::dump;
use crate::base::error::{ActorError, Misuse, SetupError};
use crate::base::ids::{self, new_uuid};
use crate::base::runtime_vars;
use crate::base::spawn::{ChildBoot, ChildMain, SpawnBackend};
use crate::registrar::client::RegistrarClient;
use crate::registrar::entry::ActorEntry;
use crate::registrar::state::RegistrarState;
use crate::serving::actor::{Actor, ActorParts};
use crate::serving::registry::Registry;
use plough_fork_prims::Signal;
use plough_ipc_wire::handshake::{self, HandshakeConfig};
use plough_ipc_wire::msg::{Aid, Hello, RuntimeVars};
use std::future::Future;
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
        Arc::new(move |boot: ChildBoot| {
            child_main(registry.clone(), config.clone(), backend.clone(), boot)
        })
    }

    /// Runs the program's root actor with `body`, then cancels and reaps everything it
    /// started. In a spawned child process this never returns: the process becomes the
    /// child actor and exits when it is done.
    ///
    /// Call it first thing in `main`: in an exec'd child, code that runs before it sees
    /// the child's boot stdio (its stderr is a pipe to its parent and its real stderr
    /// waits on fd 0 until `run` moves it back), so it must not read stdin or start
    /// subprocesses.
    ///
    /// SIGINT cancels the tree gracefully and returns [`ActorError::Interrupted`]; a second
    /// SIGINT kills the children's process groups at once.
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
        if ACTOR_RUNNING.swap(true, Ordering::SeqCst) {
            return Err(Misuse::ActorAlreadyRunning.into());
        }
        let args: Vec<String> = std::env::args().collect();
        match ChildBoot::from_args(&args) {
            Ok(Some(boot)) => {
                let code = child_main(self.registry, self.config, self.backend, boot);
                std::process::exit(code);
            }
            Ok(None) => {}
            Err(e) => {
                ACTOR_RUNNING.store(false, Ordering::SeqCst);
                return Err(SetupError::ChildArgs(e).into());
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ActorError::from(SetupError::TokioRuntime(e.to_string())));
        let out = match rt {
            Ok(rt) => {
                // Children dropped on an error path (or while a panic unwinds through
                // here) went to the reaper thread: reap them before returning — the caller
                // may exit right after.
                struct Drain(std::time::Duration);
                impl Drop for Drain {
                    fn drop(&mut self) {
                        if !plough_fork_prims::drain_reaper(self.0) {
                            tracing::warn!(
                                "some children were not reaped before the root returned"
                            );
                        }
                    }
                }
                let _drain = Drain(self.config.budgets.reaper_drain);
                // Re-bound after the guard: dropped first on unwind, running the nurseries'
                // drop guards before the drain.
                let rt = rt;
                let out = rt.block_on(self.root(body));
                drop(rt);
                out
            }
            Err(e) => Err(e),
        };
        ACTOR_RUNNING.store(false, Ordering::SeqCst);
        out
    }

    async fn root<T, F, Fut>(self, body: F) -> Result<T, ActorError>
    where
        F: FnOnce(Actor) -> Fut,
        Fut: Future<Output = Result<T, ActorError>>,
    {
        let aid = Aid { name: self.config.name.clone(), uuid: new_uuid(), pid: std::process::id() };
        let hello = Hello { aid: aid.clone(), tree_proof: Default::default() };
        let registry_addr = self.config.registry_addr.clone();

        // Join the registrar that answers, or become it.
        let joined = if is_private(&registry_addr) {
            None
        } else {
            let probe =
                HandshakeConfig::default().with_deadline(self.config.budgets.registrar_probe);
            match handshake::connect(&registry_addr, &hello, &probe).await {
                Ok(est) => Some(est),
                Err(e) if is_absent(&e) => None,
                Err(e) => {
                    let (addr, detail) = (registry_addr.to_string(), e.to_string());
                    return Err(SetupError::RegistryAddressTaken { addr, detail }.into());
                }
            }
        };
        let (listener, registrar) = match &joined {
            Some(_) => (bind(&ephemeral_like(&registry_addr, &aid.name)?).await?, None),
            None => (bind(&registry_addr).await?, Some(Arc::new(RegistrarState::new()))),
        };
        let registry_addr = match (&joined, &registrar) {
            (None, Some(_)) => listener.local_addr().clone(),
            _ => registry_addr,
        };
        let child_main = self.child_main();
        let actor = Actor::start(ActorParts {
            aid: aid.clone(),
            registry: self.registry,
            config: self.config.clone(),
            backend: self.backend,
            child_main,
            listener,
            registrar,
            registry_addr,
            is_root: true,
        });
        let vars = RuntimeVars {
            is_root: true,
            spawn_method: self.config.spawn_method.key().to_owned(),
            ..runtime_vars::get(false)
        };
        runtime_vars::set(ids::with_tree(vars, &aid.uuid));
        actor.write_marker(&aid.uuid, 0, "root");
        let entry = ActorEntry::new(aid.clone(), actor.addr().to_string(), None, "root");
        if let Some(state) = actor.registrar().state() {
            state.add(entry, None);
        } else if let Some(est) = joined {
            let client = RegistrarClient::new(actor.portal(actor.attach(est, true)));
            if let Err(e) = client.register(&entry).await {
                actor.shutdown().await;
                return Err(SetupError::RegistrationRefused { detail: e.to_string() }.into());
            }
            actor.registrar().set_client(client);
        }
        tracing::info!(actor = %aid, addr = %actor.addr(), registrar = actor.is_registrar(), "root actor up");

        let out = run_with_sigint(&actor, body(actor.clone())).await;
        actor.shutdown().await;
        out
    }
}

/// Runs the root body; SIGINT cancels the tree, a second SIGINT abandons the body (its
/// nurseries' drop guards SIGKILL their children).
///
/// SIGINT is read from a `signalfd` (it is blocked on this thread meanwhile), never through
/// tokio's signal driver: that driver's process-global state would be inherited by forked
/// children, and plough builds tokio without it.
async fn run_with_sigint<T>(
    actor: &Actor,
    body: impl Future<Output = Result<T, ActorError>>,
) -> Result<T, ActorError> {
    let dumps = actor.config().task_dump && dump::enabled_by_env();
    let signals = Signals::watch(&watched(&[Signal::INT], dumps));
    if !signals.is_watching() {
        return body.await;
    }
    // The next SIGINT; a SIGUSR1 meanwhile dumps the task tree and is relayed.
    let next_sigint = || async {
        loop {
            match signals.recv().await {
                Signal::USR1 => dump_and_relay(actor),
                _ => return,
            }
        }
    };
    tokio::pin!(body);
    tokio::select! {
        r = &mut body => return r,
        () = next_sigint() => {}
    }
    tracing::warn!(actor = %actor.aid(), "SIGINT: cancelling the actor tree");
    actor.cancel(actor.aid().clone());
    tokio::select! {
        _ = &mut body => {}
        () = next_sigint() => {
            tracing::warn!(actor = %actor.aid(), "second SIGINT: killing every child");
        }
    }
    Err(ActorError::Interrupted)
}
