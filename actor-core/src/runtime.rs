//! Starting a process's actor: the root (`Runtime::run`) or a child (`child_main`).
//!
//! A program registers its handlers in one [`Registry`] and hands control to
//! [`Runtime::run`]. Child mode is dispatched there, before any of the program's own
//! code runs: an exec'd child finds the hidden `--plough-child` argument and becomes the
//! child actor instead (and exits when it is done); a forked child enters [`child_main`]
//! directly from its backend. Either way each actor runs on a fresh **current-thread**
//! tokio runtime (a multi-thread runtime built after `fork` can hang, see DESIGN.md).

use crate::actor::{Actor, ActorParts, new_uuid};
use crate::error::ActorError;
use crate::handler::Registry;
use crate::nursery::LadderConfig;
use crate::registrar::{ActorEntry, RegistrarClient, RegistrarState};
use crate::spawn::{ChildBoot, ChildMain, SpawnBackend};
use crate::spawn_method::SpawnMethod;
use futures::StreamExt;
use plough_ipc_wire::handshake::{self, HandshakeConfig, HandshakeError};
use plough_ipc_wire::msg::{Aid, Hello, Msg, RuntimeVars};
use plough_ipc_wire::{Address, Listener, TransportError};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Settings of a runtime (the same in every process of a program).
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The root actor's name.
    pub name: String,
    /// Where the tree's registrar listens (`tcp://127.0.0.1:1616` by default). Port 0 (or
    /// a fresh UDS path) makes the root the registrar on a private address: tests use it.
    pub registry_addr: Address,
    /// Cancellation ladder timeouts.
    pub ladder: LadderConfig,
    /// How long a spawned child has to connect back.
    pub connect_timeout: Duration,
    /// Deadline of each connection handshake.
    pub handshake_timeout: Duration,
    /// SIGUSR1 dumps the task tree and relays the signal to the children (default on;
    /// `PLOUGH_TASK_DUMP=0` also turns it off). Off: SIGUSR1 keeps its default action.
    pub task_dump: bool,
    /// The spawn method (a `PLOUGH_SPAWN_METHOD` set in the environment wins). Default:
    /// `main_thread_forkserver`.
    pub spawn_method: SpawnMethod,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            name: "root".to_owned(),
            registry_addr: Address::default_registry_tcp(),
            ladder: LadderConfig::default(),
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            task_dump: true,
            spawn_method: SpawnMethod::MainThreadForkserver,
        }
    }
}

/// One actor runs per process: the root, or the child actor of a spawned process.
static ACTOR_RUNNING: AtomicBool = AtomicBool::new(false);

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
    /// `body`'s error; [`ActorError::Runtime`] when an actor already runs in this process,
    /// or the registry address is held by something that is not a plough registrar.
    pub fn run<T, F, Fut>(self, body: F) -> Result<T, ActorError>
    where
        F: FnOnce(Actor) -> Fut,
        Fut: Future<Output = Result<T, ActorError>>,
    {
        if ACTOR_RUNNING.swap(true, Ordering::SeqCst) {
            return Err(ActorError::Runtime(
                "an actor is already running in this process (one root per process)".to_owned(),
            ));
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
                return Err(ActorError::Runtime(format!("bad child-mode arguments: {e}")));
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ActorError::Runtime(format!("cannot build the tokio runtime: {e}")));
        let out = match rt {
            Ok(rt) => {
                // Children dropped on an error path (or while a panic unwinds through
                // here) went to the reaper thread: reap them before returning — the caller
                // may exit right after.
                struct Drain;
                impl Drop for Drain {
                    fn drop(&mut self) {
                        if !plough_fork_prims::drain_reaper(Duration::from_secs(3)) {
                            tracing::warn!(
                                "some children were not reaped before the root returned"
                            );
                        }
                    }
                }
                let _drain = Drain;
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
            let probe = HandshakeConfig::default().with_deadline(Duration::from_secs(2));
            match handshake::connect(&registry_addr, &hello, &probe).await {
                Ok(est) => Some(est),
                Err(e) if is_absent(&e) => None,
                Err(e) => {
                    return Err(ActorError::Runtime(format!(
                        "the registry address {registry_addr} is held by something that is not a plough registrar: {e}"
                    )));
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
        crate::runtime_vars::set(RuntimeVars {
            is_root: true,
            spawn_method: self.config.spawn_method.key().to_owned(),
            extra: vec![(crate::actor::TREE_VAR.to_owned(), aid.uuid.to_string())],
            ..crate::runtime_vars::get(false)
        });
        actor.write_marker(&aid.uuid, 0, "root");
        let entry = ActorEntry::new(aid.clone(), actor.addr().to_string(), None, "root");
        if let Some(state) = &actor.inner.registrar {
            state.add(entry, None);
        } else if let Some(est) = joined {
            let client = RegistrarClient::new(crate::portal::Portal::new(
                actor.attach(est, true),
                actor.clone(),
            ));
            if let Err(e) = client.register(&entry).await {
                actor.shutdown().await;
                return Err(ActorError::Runtime(format!(
                    "the plough actor at the registry address refused to register us: {e}"
                )));
            }
            *actor.inner.registrar_client.lock().unwrap_or_else(|p| p.into_inner()) = Some(client);
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
    let dumps = actor.inner.config.task_dump && crate::dump::enabled_by_env();
    let watched: &[i32] =
        if dumps { &[libc_sig::SIGINT, libc_sig::SIGUSR1] } else { &[libc_sig::SIGINT] };
    let signals = match plough_fork_prims::SignalFd::new(watched) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGINT");
            return body.await;
        }
    };
    // The next SIGINT; a SIGUSR1 meanwhile dumps the task tree and is relayed.
    let next_sigint = || async {
        loop {
            match signals.recv().await {
                Ok(libc_sig::SIGUSR1) => dump_and_relay(actor),
                Ok(_) => return,
                Err(_) => std::future::pending::<()>().await,
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

/// SIGUSR1: the task tree to stderr and the dump file, then the signal to every child.
fn dump_and_relay(actor: &Actor) {
    if let Err(e) = crate::dump::dump(&actor.aid().name, crate::runtime_vars::actor_label()) {
        tracing::warn!(error = %e, "cannot append the task dump to its file");
    }
    crate::dump::relay_to_children();
}

/// Whether `addr` names a private, fresh registry (TCP port 0): nothing to join.
fn is_private(addr: &Address) -> bool {
    matches!(addr, Address::Tcp(sa) if sa.port() == 0)
}

/// A connect failure that means "nobody listens there".
fn is_absent(e: &HandshakeError) -> bool {
    use std::io::ErrorKind::{ConnectionRefused, NotFound};
    matches!(e, HandshakeError::Connect(TransportError::Io { source, .. }) if matches!(source.kind(), ConnectionRefused | NotFound))
}

async fn bind(addr: &Address) -> Result<Listener, ActorError> {
    Listener::bind(addr)
        .await
        .map_err(|e| ActorError::Runtime(format!("cannot listen on {addr}: {e}")))
}

/// An address for a non-registrar actor on the same transport as `like`: TCP loopback
/// with a kernel-chosen port, or `<dir of like>/<name>@<pid>.sock`.
fn ephemeral_like(like: &Address, name: &str) -> Result<Address, ActorError> {
    match like {
        Address::Tcp(sa) => Ok(Address::Tcp(std::net::SocketAddr::new(sa.ip(), 0))),
        Address::Uds(path) => {
            let dir = path
                .parent()
                .map(PathBuf::from)
                .unwrap_or_else(plough_ipc_wire::runtime_dir::default_dir);
            Address::uds_for_actor(&dir, name, std::process::id())
                .map_err(|e| ActorError::Runtime(format!("no socket path for actor {name}: {e}")))
        }
    }
}

/// Runs a spawned child actor to completion; returns the process exit code.
pub fn child_main(
    registry: Registry,
    config: RuntimeConfig,
    backend: Option<Arc<dyn SpawnBackend>>,
    boot: ChildBoot,
) -> i32 {
    ACTOR_RUNNING.store(true, Ordering::SeqCst);
    if boot.real_stderr_on_stdin {
        // An exec'd child: its real stderr is on fd 0 (see `boot_stderr`); /dev/null goes
        // there before anything of the actor runs.
        crate::boot_stderr::real_stderr_from_stdin();
    }
    // Backstop for a parent that dies without closing our connection cleanly: SIGTERM
    // (handled below as a graceful self-cancel). A forked child had this armed by its
    // prelude already; arming it again is harmless. If the parent is already gone, leave.
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM));
    if rustix::process::getppid().map(|p| p.as_raw_nonzero().get() as u32) != Some(boot.parent_pid)
    {
        say(format_args!(
            "plough: child {}: parent {} is gone before the child started",
            boot.name, boot.parent_pid
        ));
        return 1;
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let hint = if e.raw_os_error() == Some(9) && boot.method != SpawnMethod::Exec {
                " (tokio's `signal` or `process` feature is enabled in this program: its signal \
                 driver's process-global state does not survive fork; use the `exec` spawn method)"
            } else {
                ""
            };
            say(format_args!(
                "plough: child {}: cannot build a tokio runtime: {e}{hint}",
                boot.name
            ));
            return 70;
        }
    };
    let boot_name = boot.name.clone();
    let code = rt.block_on(async move {
        match child(registry, config, backend, boot.clone()).await {
            Ok(()) => 0,
            Err(e) => {
                say(format_args!("plough: child {}@{}: {e}", boot.name, std::process::id()));
                1
            }
        }
    });
    // Children dropped mid-shutdown were handed to the reaper thread: let it finish, or
    // they outlive this process as orphans (or zombies of whoever inherits them).
    drop(rt);
    if !plough_fork_prims::drain_reaper(Duration::from_secs(3)) {
        say(format_args!("plough: child {}: some children were not reaped before exit", boot_name));
    }
    code
}

/// A line to stderr that never panics: during boot fd 2 is a pipe to the parent, which
/// may be gone (`eprintln!` would panic on the broken pipe).
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

async fn child(
    registry: Registry,
    config: RuntimeConfig,
    backend: Option<Arc<dyn SpawnBackend>>,
    boot: ChildBoot,
) -> Result<(), ActorError> {
    // First thing: from here on SIGINT/SIGTERM (e.g. the parent-death signal) are a
    // graceful self-cancel, not a sudden death that would leave files behind.
    let mut signals = SelfCancelSignals::new(config.task_dump && crate::dump::enabled_by_env());
    let aid = Aid { name: boot.name.clone(), uuid: boot.uuid, pid: std::process::id() };
    let hello = Hello { aid: aid.clone(), tree_proof: Default::default() };
    let hs = HandshakeConfig::default().with_deadline(config.handshake_timeout);
    // Start connecting to the parent: the connection and our hello go out. While the
    // parent accepts and answers: our own listener (same transport as the parent's) and
    // our actor marker, which need nothing from it. From the marker on `plough-reap`
    // recognises this process; it exists before we answer anything (a handler that blocks
    // our only thread cannot keep it from being written), and it is removed however boot
    // ends.
    let mut connecting = std::pin::pin!(handshake::connect(&boot.parent_addr, &hello, &hs));
    let mut early = futures::poll!(connecting.as_mut());
    if early.is_pending() {
        // A TCP connect is still in progress (on loopback, complete as soon as the reactor
        // looks): one turn of the reactor, and the hello goes out too.
        tokio::task::yield_now().await;
        early = futures::poll!(connecting.as_mut());
    }
    let early = match early {
        std::task::Poll::Ready(Err(e)) => {
            return Err(ActorError::Runtime(format!(
                "cannot connect to parent at {}: {e}",
                boot.parent_addr
            )));
        }
        other => other,
    };
    let ours = ephemeral_like(&boot.parent_addr, &aid.name)?;
    let mark = |addr: &Address| {
        crate::actor::create_marker(&aid, addr, &boot.tree, boot.parent_pid, boot.method.key())
    };
    let (listener, marker) = match &ours {
        // The marker names the socket file before it exists: killed at any point, this
        // process leaves nothing its reaper cannot attribute and remove.
        Address::Uds(_) => {
            let marker = mark(&ours);
            (bind(&ours).await?, marker)
        }
        // A TCP port leaves no file; the marker records the port the kernel chose.
        Address::Tcp(_) => {
            let listener = bind(&ours).await?;
            let marker = mark(listener.local_addr());
            (listener, marker)
        }
    };
    let connected = match early {
        std::task::Poll::Ready(r) => r,
        std::task::Poll::Pending => connecting.await,
    };
    let mut est = connected.map_err(|e| {
        ActorError::Runtime(format!("cannot connect to parent at {}: {e}", boot.parent_addr))
    })?;
    // Connected: boot is over as far as the parent is concerned. The real stderr goes
    // back onto fd 2, which ends the parent's copy of our boot output.
    crate::boot_stderr::restore();
    let first = tokio::time::timeout(config.handshake_timeout, est.framed.next())
        .await
        .map_err(|_| ActorError::Runtime("parent sent no spawn spec".into()))?;
    let spec = match first {
        Some(Ok(frame)) => match frame.decode() {
            Ok(Msg::SpawnSpec(spec)) => spec,
            Ok(other) => {
                return Err(ActorError::Runtime(format!(
                    "expected a spawn spec from the parent, got {}",
                    other.kind()
                )));
            }
            Err(e) => return Err(ActorError::Runtime(format!("bad spawn spec: {e}"))),
        },
        Some(Err(e)) => return Err(ActorError::Runtime(format!("reading the spawn spec: {e}"))),
        None => {
            return Err(ActorError::Runtime(
                "parent closed the connection before the spawn spec".into(),
            ));
        }
    };
    let _ = crate::runtime_vars::get(true);
    crate::runtime_vars::set(RuntimeVars { is_root: false, ..spec.runtime_vars.clone() });
    let registry_addr =
        spec.registry_addrs.first().cloned().unwrap_or_else(|| config.registry_addr.clone());
    let child_main: ChildMain = {
        let (registry, config, backend) = (registry.clone(), config.clone(), backend.clone());
        Arc::new(move |b: ChildBoot| {
            child_main(registry.clone(), config.clone(), backend.clone(), b)
        })
    };
    let actor = Actor::start(ActorParts {
        aid: aid.clone(),
        registry,
        config,
        backend,
        child_main,
        listener,
        registrar: None,
        registry_addr: registry_addr.clone(),
        is_root: false,
    });
    actor.adopt_marker(marker);
    let entry = ActorEntry::new(
        aid.clone(),
        actor.addr().to_string(),
        spec.parent.clone(),
        boot.method.key(),
    );
    // Register before answering the parent (best effort: a tree without a reachable
    // registrar still works), so whoever hears from us over the parent connection can
    // find us, and a function the parent calls at once can find other actors. (Our own
    // listener already accepts: a peer that found its address some other way may be
    // answered before the registration lands.)
    let parent = if registry_addr == boot.parent_addr {
        // The parent is the registrar: register over its connection. The registration
        // leaves before any answer of ours, and the registrar records it as it reads it,
        // so the parent sees us registered by the time any reply of ours arrives.
        let parent = actor.attach(est, true);
        let client =
            RegistrarClient::via_parent(crate::portal::Portal::new(parent.clone(), actor.clone()));
        *actor.inner.registrar_client.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(client.clone());
        if let Err(e) = client.register(&entry).await {
            tracing::warn!(error = %e, "registrar refused the registration");
        }
        parent
    } else {
        // Its own connection to the registrar; the parent's calls wait in the socket.
        match handshake::connect(&registry_addr, &actor.hello(), &hs).await {
            Ok(reg) => {
                let client = RegistrarClient::new(crate::portal::Portal::new(
                    actor.attach(reg, true),
                    actor.clone(),
                ));
                match client.register(&entry).await {
                    Ok(()) => {
                        *actor.inner.registrar_client.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(client)
                    }
                    Err(e) => tracing::warn!(error = %e, "registrar refused the registration"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, registry = %registry_addr, "registrar unreachable")
            }
        }
        actor.attach(est, true)
    };
    tracing::info!(actor = %aid, parent = %parent.peer(), method = %boot.method, addr = %actor.addr(), "child actor up");

    loop {
        tokio::select! {
            () = parent.closed() => {
                tracing::warn!(actor = %aid, "parent connection lost: cancelling myself");
                actor.cancel(aid.clone());
            }
            sig = signals.recv() => {
                if sig == "SIGUSR1" {
                    dump_and_relay(&actor);
                    continue;
                }
                tracing::warn!(actor = %aid, signal = sig, "signalled: cancelling myself");
                actor.cancel(aid.clone());
            }
            () = actor.cancelled() => {}
        }
        break;
    }
    actor.shutdown().await;
    Ok(())
}

/// SIGINT and SIGTERM in a child actor: both mean "cancel yourself, gracefully". Read
/// from a `signalfd` made here (never tokio's process-global signal state, which a forked
/// child inherits broken).
struct SelfCancelSignals(Option<plough_fork_prims::SignalFd>);

impl SelfCancelSignals {
    fn new(dumps: bool) -> Self {
        let watched: &[i32] = if dumps {
            &[libc_sig::SIGINT, libc_sig::SIGTERM, libc_sig::SIGUSR1]
        } else {
            &[libc_sig::SIGINT, libc_sig::SIGTERM]
        };
        match plough_fork_prims::SignalFd::new(watched) {
            Ok(fd) => SelfCancelSignals(Some(fd)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGINT/SIGTERM");
                SelfCancelSignals(None)
            }
        }
    }

    async fn recv(&mut self) -> &'static str {
        match &self.0 {
            Some(fd) => match fd.recv().await {
                Ok(libc_sig::SIGINT) => "SIGINT",
                Ok(libc_sig::SIGUSR1) => "SIGUSR1",
                Ok(_) => "SIGTERM",
                Err(_) => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }
}

mod libc_sig {
    pub const SIGINT: i32 = 2;
    pub const SIGUSR1: i32 = 10;
    pub const SIGTERM: i32 = 15;
}
