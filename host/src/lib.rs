//! `plough-host`: the daemon a host runs so that roots on other hosts can start actors
//! on it, under the same ladder as their local children.
//!
//! ```no_run
//! let config = plough_host::HostConfig::from_ca_dir(
//!     "/etc/plough".as_ref(), "node-7", "tls://node-7@10.0.0.7:7070".parse().unwrap(),
//!     "/opt/app/bin/worker".into(),
//! );
//! std::process::exit(match plough_host::run(config) { Ok(()) => 0, Err(e) => e.exit_code() });
//! ```
//!
//! The daemon is a plough root of its own tree ([`run`]): it listens on its host's
//! `tls://` address under mutual TLS and serves the functions of
//! [`plough::core::host`] — attach, beat, spawn, wait, signal, stop, list — to the roots
//! that reach it. The model (see `docs/multi-host.md`):
//!
//! * **Who gets in**: a peer whose certificate chains to the tree CA *and* who proves the
//!   tree's secret (the `secret` file of the CA directory, which every host of the tree
//!   holds, `0600`); over TLS the proof is bound to the TLS session, so it cannot be
//!   relayed. A certificate of another CA, a plaintext peer, a stranger to the secret:
//!   refused before any function is reached.
//! * **What runs**: only the program the host's operator allowed ([`HostConfig::program`]);
//!   a root names an actor, never a path. The daemon states that program's build in its
//!   handshakes, so a root of another build is refused at the door, both builds named.
//! * **Who owns what**: the root that attached owns what it spawns; only it can signal,
//!   stop or wait for its actors, and its lease covers them: when it has not beaten for
//!   [`HostConfig::lease`], the daemon takes them all down its ladder.
//! * **Who holds the process**: the daemon is each actor's parent — its pidfd, its process
//!   group, its reaping; the actor dies with it (its parent-death signal, and its parent
//!   connection's end).

pub mod cli;
pub mod discover;
pub mod limits;
pub mod ssh;

use plough::core::host::{
    Attached, Exit, HOST_ATTACH, HOST_BEAT, HOST_LIST, HOST_SIGNAL, HOST_SPAWN, HOST_STOP,
    HOST_WAIT, HostedActor, HostedProcess, SignalOrder, SpawnOrder, Spawned,
};
use plough::ipc_wire::msg::{Aid, Uuid};
use plough::ipc_wire::{BuildId, Secret, TlsFiles};
use plough::{Actor, ActorError, Address, Budgets, Cx, Registry, RuntimeConfig, TreeSecret};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How a host daemon runs.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Where it listens: this host's `tls://name@ip:port` (port 0: one the kernel picks;
    /// the daemon prints the address it bound).
    pub listen: Address,
    /// This host's TLS identity (the tree CA, the host's certificate and key).
    pub tls: TlsFiles,
    /// The tree's secret file (`0600`, ours).
    pub secret: PathBuf,
    /// The one program this host runs for roots (it links plough and calls
    /// `Runtime::run`); its build must be the roots'.
    pub program: PathBuf,
    /// The liveness lease (default [`Budgets::lease`]).
    pub lease: Duration,
    /// Stop (gracefully, as on SIGTERM) when stdin reaches its end: how a launcher's
    /// session (ssh) takes the daemon down with it (default off).
    pub stop_on_stdin_eof: bool,
}

impl HostConfig {
    /// The files of a `plough ca` directory for `host` (`ca.pem`, `<host>.pem`,
    /// `<host>.key`, `secret`), listening on `listen`, running `program`.
    pub fn from_ca_dir(dir: &Path, host: &str, listen: Address, program: PathBuf) -> Self {
        HostConfig {
            listen,
            tls: TlsFiles::in_ca_dir(dir, host),
            secret: dir.join(plough::ipc_wire::auth::SECRET_FILE),
            program,
            lease: Budgets::default().lease,
            stop_on_stdin_eof: false,
        }
    }
}

/// Why a daemon refused an order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The caller has not attached (or its lease ran out).
    #[error("root {0} is not attached to this host (attach first; a lease that ran out ends it)")]
    NotAttached(String),
    /// No actor of that spawn id runs here (for this caller).
    #[error("no actor with spawn id {0} runs here for you")]
    NoSuchActor(String),
    /// An order named another owner than its caller.
    #[error("an order of {caller} names another owner")]
    NotYours {
        /// The caller.
        caller: String,
    },
    /// Starting the actor failed.
    #[error("cannot start actor {name}: {detail}")]
    Spawn {
        /// The actor's name.
        name: String,
        /// The runtime's error.
        detail: String,
    },
}

/// A root that attached: when it beat last, and the token its actors go down with.
struct Owner {
    last_beat: Instant,
    gone: CancellationToken,
}

/// One actor the daemon runs.
struct Hosted {
    owner: Uuid,
    /// Its spawn's outcome, once known.
    spawned: watch::Receiver<Option<Result<Spawned, HostError>>>,
    /// Its process, once started.
    process: watch::Receiver<Option<Arc<HostedProcess>>>,
    /// How it ended, once it has.
    exit: watch::Receiver<Option<Exit>>,
    /// Cancelled to take it down (a stop, or its owner's lease ran out).
    stop: CancellationToken,
}

/// The daemon's state, shared by its functions.
struct State {
    host: String,
    lease: Duration,
    owners: Mutex<HashMap<Uuid, Owner>>,
    hosted: Mutex<HashMap<String, Hosted>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl State {
    fn owner_token(&self, caller: &Aid) -> Result<CancellationToken, HostError> {
        lock(&self.owners)
            .get(&caller.uuid)
            .map(|o| o.gone.clone())
            .ok_or_else(|| HostError::NotAttached(caller.to_string()))
    }

    /// The caller's actor `spawn_id`: its spawn, process and exit watches.
    fn mine(&self, caller: &Aid, spawn_id: &str) -> Result<HostedView, HostError> {
        let hosted = lock(&self.hosted);
        let h = hosted
            .get(spawn_id)
            .filter(|h| h.owner == caller.uuid)
            .ok_or_else(|| HostError::NoSuchActor(spawn_id.to_owned()))?;
        Ok(HostedView { process: h.process.clone(), exit: h.exit.clone(), stop: h.stop.clone() })
    }

    /// Takes the actors of every owner whose lease ran out down (their tokens fire).
    fn expire_leases(&self) {
        let mut owners = lock(&self.owners);
        let expired: Vec<Uuid> = owners
            .iter()
            .filter(|(_, o)| o.last_beat.elapsed() > self.lease)
            .map(|(u, _)| *u)
            .collect();
        for uuid in expired {
            if let Some(o) = owners.remove(&uuid) {
                let n = lock(&self.hosted).values().filter(|h| h.owner == uuid).count();
                tracing::warn!(owner = %uuid, actors = n, lease = ?self.lease, "lease ran out: taking the owner's actors down");
                o.gone.cancel();
            }
        }
    }
}

struct HostedView {
    process: watch::Receiver<Option<Arc<HostedProcess>>>,
    exit: watch::Receiver<Option<Exit>>,
    stop: CancellationToken,
}

async fn until_exit(mut exit: watch::Receiver<Option<Exit>>) -> Option<Exit> {
    exit.wait_for(Option::is_some).await.ok().and_then(|e| *e)
}

/// The daemon's functions over `state`.
fn registry(state: Arc<State>) -> Registry {
    let s = Arc::clone(&state);
    let attach = move |cx: Cx, (): ()| {
        let s = Arc::clone(&s);
        async move {
            let mut owners = lock(&s.owners);
            let o = owners.entry(cx.caller().uuid).or_insert_with(|| Owner {
                last_beat: Instant::now(),
                gone: CancellationToken::new(),
            });
            o.last_beat = Instant::now();
            tracing::info!(owner = %cx.caller(), "a root attached");
            Ok::<_, HostError>(Attached {
                host: s.host.clone(),
                lease_ms: s.lease.as_millis() as u64,
            })
        }
    };
    let s = Arc::clone(&state);
    let beat = move |cx: Cx, (): ()| {
        let s = Arc::clone(&s);
        async move {
            match lock(&s.owners).get_mut(&cx.caller().uuid) {
                Some(o) => {
                    o.last_beat = Instant::now();
                    Ok(())
                }
                None => Err(HostError::NotAttached(cx.caller().to_string())),
            }
        }
    };
    let s = Arc::clone(&state);
    let spawn = move |cx: Cx, order: SpawnOrder| {
        let s = Arc::clone(&s);
        async move { spawn(&s, &cx, order).await }
    };
    let s = Arc::clone(&state);
    let wait = move |cx: Cx, spawn_id: String| {
        let s = Arc::clone(&s);
        async move {
            let view = s.mine(cx.caller(), &spawn_id)?;
            until_exit(view.exit).await.ok_or(HostError::NoSuchActor(spawn_id))
        }
    };
    let s = Arc::clone(&state);
    let signal = move |cx: Cx, order: SignalOrder| {
        let s = Arc::clone(&s);
        async move {
            let view = s.mine(cx.caller(), &order.spawn_id)?;
            let process = view.process.borrow().clone();
            let Some(process) = process else { return Ok(false) };
            let Some(signal) = plough::fork_prims::Signal::from_named_raw(order.signal) else {
                return Ok(false);
            };
            Ok::<_, HostError>(process.signal(signal, order.group).unwrap_or(false))
        }
    };
    let s = Arc::clone(&state);
    let stop = move |cx: Cx, spawn_id: String| {
        let s = Arc::clone(&s);
        async move {
            let view = s.mine(cx.caller(), &spawn_id)?;
            view.stop.cancel();
            until_exit(view.exit).await.ok_or(HostError::NoSuchActor(spawn_id))
        }
    };
    let s = Arc::clone(&state);
    let list = move |cx: Cx, (): ()| {
        let s = Arc::clone(&s);
        async move {
            // The caller's own actors only: another root of the tree learns nothing of
            // what this one runs here.
            let caller = cx.caller().uuid;
            let hosted = lock(&s.hosted);
            let mut out: Vec<HostedActor> = hosted
                .iter()
                .filter(|(_, h)| h.owner == caller)
                .filter_map(|(id, h)| {
                    let spawned = h.spawned.borrow().clone()?.ok()?;
                    Some(HostedActor {
                        spawn_id: id.clone(),
                        owner: h.owner,
                        aid: spawned.aid,
                        addr: spawned.addr,
                        exit: *h.exit.borrow(),
                    })
                })
                .collect();
            out.sort_by(|a, b| a.aid.name.cmp(&b.aid.name).then(a.spawn_id.cmp(&b.spawn_id)));
            Ok::<_, HostError>(out)
        }
    };
    Registry::new()
        .func(HOST_ATTACH, attach)
        .func(HOST_BEAT, beat)
        .func(HOST_SPAWN, spawn)
        .func(HOST_WAIT, wait)
        .func(HOST_SIGNAL, signal)
        .func(HOST_STOP, stop)
        .func(HOST_LIST, list)
}

/// [`HOST_SPAWN`]: starts the actor once per spawn id, and answers every order of that id
/// with the same actor.
async fn spawn(s: &Arc<State>, cx: &Cx, order: SpawnOrder) -> Result<Spawned, HostError> {
    let caller = cx.caller().clone();
    if order.owner != caller.uuid {
        return Err(HostError::NotYours { caller: caller.to_string() });
    }
    let gone = s.owner_token(&caller)?;
    let (mut spawned, again) = {
        let mut hosted = lock(&s.hosted);
        match hosted.get(&order.spawn_id) {
            Some(h) if h.owner != caller.uuid => {
                return Err(HostError::NoSuchActor(order.spawn_id));
            }
            Some(h) => (h.spawned.clone(), true),
            None => {
                let (spawned_tx, spawned) = watch::channel(None);
                let (process_tx, process) = watch::channel(None);
                let (exit_tx, exit) = watch::channel(None);
                let stop = gone.child_token();
                hosted.insert(
                    order.spawn_id.clone(),
                    Hosted {
                        owner: caller.uuid,
                        spawned: spawned.clone(),
                        process,
                        exit,
                        stop: stop.clone(),
                    },
                );
                let actor = cx.runtime().clone();
                let run =
                    Run { actor, name: order.name.clone(), stop, spawned_tx, process_tx, exit_tx };
                tokio::spawn(run.run(Arc::clone(s), order.spawn_id.clone()));
                (spawned, false)
            }
        }
    };
    let out = spawned.wait_for(Option::is_some).await.ok().and_then(|r| r.clone());
    let out = out.unwrap_or_else(|| {
        Err(HostError::Spawn { name: order.name.clone(), detail: "the daemon is stopping".into() })
    });
    out.map(|sp| Spawned { again, ..sp })
}

/// One hosted actor's life: a nursery of its own (so one actor's death fails no other
/// root's), held open until the actor exits or is stopped.
struct Run {
    actor: Actor,
    name: String,
    stop: CancellationToken,
    spawned_tx: watch::Sender<Option<Result<Spawned, HostError>>>,
    process_tx: watch::Sender<Option<Arc<HostedProcess>>>,
    exit_tx: watch::Sender<Option<Exit>>,
}

impl Run {
    async fn run(self, state: Arc<State>, spawn_id: String) {
        let Run { actor, name, stop, spawned_tx, process_tx, exit_tx } = self;
        let held: Arc<Mutex<Option<Arc<HostedProcess>>>> = Arc::default();
        let keep = Arc::clone(&held);
        let (a, tx, named) = (actor.clone(), spawned_tx.clone(), name.clone());
        let out = actor
            .nursery(|n| async move {
                let (spawned_tx, name) = (tx, named);
                let portal = n.start_actor(&name).await?;
                let aid = portal.aid().clone();
                let process = n.hosted_process(&aid).map(Arc::new);
                *lock(&keep) = process.clone();
                let _ = process_tx.send(process.clone());
                let addr = address_of(&a, &aid).await?;
                let _ = spawned_tx.send(Some(Ok(Spawned { aid, addr, again: false })));
                tokio::select! {
                    () = stop.cancelled() => {}
                    _ = async { match &process { Some(p) => { let _ = p.wait().await; } None => std::future::pending().await } } => {}
                }
                Ok(())
            })
            .await;
        if let Err(e) = &out {
            tracing::info!(actor = %name, error = %e, "hosted actor ended");
        }
        let process = lock(&held).clone();
        let exit = match process {
            Some(p) => p.wait().await.ok().map(Exit::from),
            None => None,
        };
        if spawned_tx.borrow().is_none() {
            let detail = out.err().map(|e| e.to_string()).unwrap_or_else(|| "no actor".into());
            let _ = spawned_tx.send(Some(Err(HostError::Spawn { name: name.clone(), detail })));
        }
        let _ = exit_tx.send(Some(exit.unwrap_or(Exit {
            code: None,
            signal: None,
            core_dumped: false,
        })));
        // Its record stays (for `list` and late waits) while its owner is attached.
        let owner = lock(&state.hosted).get(&spawn_id).map(|h| h.owner);
        if owner.is_some_and(|o| !lock(&state.owners).contains_key(&o)) {
            lock(&state.hosted).remove(&spawn_id);
        }
    }
}

/// The address actor `aid` registered with this daemon (its registrar): it registers
/// before it answers anything, and this waits at most [`Budgets::connect`].
async fn address_of(actor: &Actor, aid: &Aid) -> Result<String, ActorError> {
    let deadline = Instant::now() + Budgets::default().connect;
    loop {
        let entries = actor.query_actor(&aid.name).await?;
        if let Some(e) = entries.into_iter().find(|e| e.aid.uuid == aid.uuid) {
            return Ok(e.addr);
        }
        if Instant::now() > deadline {
            return Err(ActorError::other(format!("actor {aid} did not register")));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Runs the daemon until SIGINT or SIGTERM: its actors go down with it (each through
/// the ladder). Prints `plough-host listening <addr> build <id> pid <pid>` on stdout once
/// it accepts.
///
/// # Errors
///
/// The runtime's: the TLS identity, the secret or the program cannot be read, the
/// address cannot be bound; [`ActorError::Interrupted`] / [`ActorError::Terminated`]
/// when signalled (exit with [`ActorError::exit_code`]).
pub fn run(config: HostConfig) -> Result<(), ActorError> {
    let setup = |detail: String| ActorError::other(detail);
    let secret = Secret::load(&config.secret)
        .map_err(|e| setup(format!("cannot read the tree's secret: {e}")))?;
    let build = BuildId::of_file(&config.program)
        .map_err(|e| setup(format!("cannot read the program {}: {e}", config.program.display())))?;
    let host = match &config.listen {
        Address::Tls { name: Some(n), .. } => n.to_string(),
        other => return Err(setup(format!("{other} is not a tls://host@ip:port address"))),
    };
    let state = Arc::new(State {
        host: host.clone(),
        lease: config.lease,
        owners: Mutex::default(),
        hosted: Mutex::default(),
    });
    let runtime = plough::Runtime::new(registry(Arc::clone(&state)))
        .child_program(&config.program)
        .configure(|c: &mut RuntimeConfig| {
            c.name = format!("plough-host@{host}");
            c.registry_addr = config.listen.clone();
            c.secret = TreeSecret::Given(secret);
            c.tls = Some(config.tls.clone());
            c.build_id = Some(build);
            c.budgets.lease = config.lease;
        });
    let (eof_tx, eof) = tokio::sync::oneshot::channel::<()>();
    if config.stop_on_stdin_eof {
        // A plain thread: stdin is blocking, and its end is the launcher's session ending.
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            let _ = eof_tx.send(());
        });
    }
    runtime.run(|actor| async move {
        let pid = std::process::id();
        println!("plough-host listening {} build {build} pid {pid}", actor.addr());
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let beat = Budgets::heartbeat(state.lease);
        let mut eof = std::pin::pin!(eof);
        loop {
            tokio::select! {
                () = tokio::time::sleep(beat) => state.expire_leases(),
                () = actor.shutdown_requested() => return Ok(()),
                Ok(()) = &mut eof => {
                    tracing::info!("stdin closed: the launcher's session ended, stopping");
                    return Ok(());
                }
            }
        }
    })
}
