//! A spawned child actor, from its entry point ([`child_main`]) to its exit: it connects
//! back to its parent, gets its spawn spec, registers, serves until its parent cancels it
//! (or goes away, or a signal asks), and shuts down.

use super::failover::keep_registered;
use super::listen::{bind, bind_more, check_runtime_dir, ephemeral_like, is_private, load_tls};
use super::root::ACTOR_RUNNING;
use super::signals::{Signals, dump_and_relay, name, watched};
use crate::base::boot_stderr;
use crate::base::config::RuntimeConfig;
use crate::base::dump;
use crate::base::error::{ActorError, SetupError};
use crate::base::runtime_vars;
use crate::base::spawn::{ChildBoot, ChildMain, ChildRuntime, SpawnBackend};
use crate::base::spawn_method::SpawnMethod;
use crate::base::trace::ActorTrace;
use crate::registrar::client::RegistrarClient;
use crate::registrar::entry::ActorEntry;
use crate::serving::actor::{Actor, ActorParts, create_marker};
use crate::serving::exposure::Exposure;
use crate::serving::registry::Registry;
use futures::StreamExt;
use plough_fork_prims::Signal;
use plough_ipc_wire::Address;
use plough_ipc_wire::handshake::{self, Credentials, HandshakeConfig};
use plough_ipc_wire::msg::{Aid, Msg, RuntimeVars};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Runs a spawned child actor to completion; returns the process exit code.
pub(crate) fn child_main(
    registry: Registry,
    config: RuntimeConfig,
    backend: Option<Arc<dyn SpawnBackend>>,
    boot: ChildBoot,
    runtime: ChildRuntime,
) -> i32 {
    ACTOR_RUNNING.store(true, Ordering::SeqCst);
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
    let rt = match runtime.build() {
        Ok(rt) => rt,
        Err(e) => {
            let hint = if boot.method == SpawnMethod::MainThreadForkserver {
                " (tokio's `signal` or `process` feature is enabled in this program: its signal \
                 driver's process-global state does not survive fork; use the `zygote` or `exec` \
                 spawn method)"
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
    let drain = config.budgets.reaper_drain;
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
    if !plough_fork_prims::drain_reaper(drain) {
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
    let dumps = config.task_dump && dump::enabled_by_env();
    let watch = watched(&[Signal::INT, Signal::TERM], dumps);
    // A child forked in-process has one thread, and blocks its signals on it for good; one
    // that ran the program's `main` may have the program's threads too (tokio's workers
    // under `#[tokio::main]`), so it handles them process-wide, as a root does.
    // Never dropped: a child's `run` ends in its process's exit, and a stop signal that
    // arrives after the shutdown (the parent-death signal racing an operator's SIGINT,
    // say) while the runtime and the reaper drain must not kill it halfway, by the
    // default action that dropping the handler would bring back.
    let signals = std::mem::ManuallyDrop::new(match boot.method {
        SpawnMethod::MainThreadForkserver => Signals::until_exit(&watch),
        _ => Signals::process_wide(&watch),
    });
    // Nothing is written through a runtime directory someone else controls (its parent
    // checked it, but it may have been replaced since).
    check_runtime_dir()?;
    let aid = Aid { name: boot.name.clone(), uuid: boot.uuid, pid: std::process::id() };
    set_process_name(&aid.name);
    // A forked child shows its parent's command line (an exec'd one has its own): it
    // shows the actor instead, `plough: name@pid`.
    if boot.method != SpawnMethod::Exec
        && let Err(e) = plough_fork_prims::set_cmdline_title(&format!("plough: {aid}"))
    {
        tracing::debug!(error = %e, "cannot set the command line");
    }
    // To the parent we prove our one-time spawn token: it tells us from a racer.
    let me = Credentials { aid: aid.clone(), secret: boot.token.clone() };
    let hs = HandshakeConfig::default().with_deadline(config.budgets.handshake);
    // The parent decides when a boot takes too long (it kills us then); until its cap, a
    // busy parent that answers late is waited for.
    let to_parent = HandshakeConfig::default().with_deadline(config.budgets.connect_cap);
    // Start connecting to the parent: the connection and our hello go out. While the
    // parent accepts and answers: our own listener (same transport as the parent's) and
    // our actor marker, which need nothing from it. From the marker on `plough-reap`
    // recognises this process; it exists before we answer anything (a handler that blocks
    // our only thread cannot keep it from being written), and it is removed however boot
    // ends.
    // A child of a tree that spans hosts gets the host's TLS identity from its boot.
    let tls = load_tls(boot.tls.as_ref())?;
    let identity = tls.as_ref().map(|t| t.1.clone());
    let mut connecting = std::pin::pin!(handshake::connect_with(
        &boot.parent_addr,
        &me,
        &to_parent,
        identity.as_ref()
    ));
    let mut early = futures::poll!(connecting.as_mut());
    if early.is_pending() {
        // A TCP connect is still in progress (on loopback, complete as soon as the reactor
        // looks): one turn of the reactor, and the hello goes out too.
        tokio::task::yield_now().await;
        early = futures::poll!(connecting.as_mut());
    }
    let early = match early {
        std::task::Poll::Ready(Err(e)) => {
            let (addr, detail) = (boot.parent_addr.to_string(), e.to_string());
            return Err(SetupError::ParentUnreachable { addr, detail }.into());
        }
        other => other,
    };
    let ours = ephemeral_like(&boot.parent_addr, &aid.name)?;
    let mark =
        |addr: &Address| create_marker(&aid, addr, &boot.tree, boot.parent_pid, boot.method.key());
    let (listener, marker) = match &ours {
        // The marker names the socket file before it exists: killed at any point, this
        // process leaves nothing its reaper cannot attribute and remove.
        Address::Uds(_) => {
            let marker = mark(&ours);
            (bind(&ours, identity.as_ref()).await?, marker)
        }
        // A TCP port leaves no file; the marker records the port the kernel chose.
        Address::Tcp(_) | Address::Tls { .. } => {
            let listener = bind(&ours, identity.as_ref()).await?;
            let marker = mark(listener.local_addr());
            (listener, marker)
        }
    };
    let connected = match early {
        std::task::Poll::Ready(r) => r,
        std::task::Poll::Pending => connecting.await,
    };
    let mut est = connected.map_err(|e| SetupError::ParentUnreachable {
        addr: boot.parent_addr.to_string(),
        detail: e.to_string(),
    })?;
    // Connected: boot is over as far as the parent is concerned. The real stderr goes
    // back onto fd 2, which ends the parent's copy of our boot output.
    boot_stderr::restore();
    // As for the connection: the parent decides when our boot takes too long (it kills
    // us then), so a parent busy booting many children at once is waited for up to its
    // cap, not for one handshake's budget.
    let wait = config.budgets.connect_cap;
    let first = tokio::time::timeout(wait, est.framed.next())
        .await
        .map_err(|_| SetupError::NoSpawnSpec(format!("none within {wait:?}")))?;
    let spec = match first {
        Some(Ok(frame)) => match frame.decode() {
            Ok(Msg::SpawnSpec(spec)) => spec,
            Ok(other) => {
                return Err(ActorError::Protocol {
                    peer: boot.parent_addr.to_string(),
                    detail: format!("expected a spawn spec from the parent, got {}", other.kind()),
                });
            }
            Err(e) => return Err(SetupError::NoSpawnSpec(format!("a bad spawn spec: {e}")).into()),
        },
        Some(Err(e)) => {
            return Err(SetupError::NoSpawnSpec(format!("reading it failed: {e}")).into());
        }
        None => {
            let why = "the parent closed the connection before sending it";
            return Err(SetupError::NoSpawnSpec(why.to_owned()).into());
        }
    };
    let _ = runtime_vars::get(true);
    runtime_vars::set(RuntimeVars { is_root: false, ..spec.runtime_vars.clone() });
    // Our parent's build, if we run the file it was computed from (a fork of it, or an exec
    // of its /proc/self/exe; not a `child_program` of another build).
    if let Some(build) = spec.runtime_vars.build {
        plough_ipc_wire::BuildId::adopt(build);
    }
    // The log level its spawn chose (or its parent had): for plough's own subscriber.
    if !spec.runtime_vars.log_level.is_empty() {
        runtime_vars::apply_log_filter(&spec.runtime_vars.log_level);
    }
    let registry_addr =
        spec.registry_addrs.first().cloned().unwrap_or_else(|| config.registry_addr.clone());
    let child_main: ChildMain = {
        let (registry, config, backend) = (registry.clone(), config.clone(), backend.clone());
        Arc::new(move |b: ChildBoot, rt: ChildRuntime| {
            child_main(registry.clone(), config.clone(), backend.clone(), b, rt)
        })
    };
    let actor = Actor::start(ActorParts {
        aid: aid.clone(),
        secret: boot.secret.clone(),
        registry,
        config,
        backend,
        child_main,
        listener,
        registrar: None,
        registry_addr: registry_addr.clone(),
        is_root: false,
        tls: tls.clone(),
        trace: ActorTrace::new(&aid, boot.method.key()),
        // Every registered function, unless the spawn narrowed it (a host daemon's spawn
        // never does: it does not know the program's registry).
        exposure: if spec.expose_only {
            Exposure::only(spec.enable_handlers.iter().cloned())
        } else {
            Exposure::all()
        },
    });
    actor.adopt_marker(marker);
    // The further addresses its spawn asked for: a failure is this child's setup error.
    if let Err(e) = bind_more(&actor, &spec.bind_addrs).await {
        actor.shutdown().await;
        return Err(e);
    }
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
        // Before anything is served on it: a handler may ask for its parent's portal.
        let _ = actor.parent_slot().set((boot.parent_addr.clone(), parent.clone()));
        let client = RegistrarClient::via_parent(actor.portal(parent.clone()));
        actor.registrar().set_client(client.clone());
        if let Err(e) = client.register(&entry).await {
            tracing::warn!(error = %e, "registrar refused the registration");
        }
        parent
    } else {
        // Its own connection to the registrar; the parent's calls wait in the socket.
        match handshake::connect_with(&registry_addr, &actor.credentials(), &hs, identity.as_ref())
            .await
        {
            Ok(reg) => {
                let client = RegistrarClient::new(actor.portal(actor.attach(reg, true)));
                match client.register(&entry).await {
                    Ok(()) => actor.registrar().set_client(client),
                    Err(e) => tracing::warn!(error = %e, "registrar refused the registration"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, registry = %registry_addr, "registrar unreachable")
            }
        }
        // This registrar is not our parent: it may go away while we live (its root exited,
        // or it was killed), and then we register with its successor. A child never binds
        // the registry address itself: the surviving roots elect the registrar.
        if !is_private(&registry_addr) {
            keep_registered(&actor, entry, false);
        }
        let parent = actor.attach(est, true);
        let _ = actor.parent_slot().set((boot.parent_addr.clone(), parent.clone()));
        parent
    };
    tracing::info!(actor = %aid, parent = %parent.peer(), method = %boot.method, addr = %actor.addr(), "child actor up");

    let mut signalled = false;
    loop {
        tokio::select! {
            () = parent.closed() => {
                tracing::warn!(actor = %aid, "parent connection lost: cancelling myself");
                actor.cancel(aid.clone());
            }
            sig = signals.recv() => {
                if sig == Signal::USR1 {
                    dump_and_relay(&actor);
                    continue;
                }
                tracing::warn!(actor = %aid, signal = %name(sig), "signalled: cancelling myself");
                signalled = true;
                actor.cancel(aid.clone());
            }
            () = actor.cancelled() => {}
        }
        break;
    }
    // During the shutdown a stop signal that follows an earlier one escalates (SIGKILL to
    // this actor's children); the first one is the graceful cancel already under way.
    let shutdown = actor.shutdown();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            sig = signals.recv() => match sig {
                Signal::USR1 => dump_and_relay(&actor),
                sig if signalled => {
                    tracing::warn!(actor = %aid, signal = %name(sig), "second signal: killing my children");
                    actor.escalate();
                }
                _ => signalled = true,
            },
        }
    }
}

/// Names this process after its actor in `ps`, `top` and `/proc/<pid>/comm`:
/// `plough:<name>`, cut to the kernel's 15 bytes (a forked child would otherwise show its
/// parent's name). A forked child's command line is rewritten too
/// (`plough_fork_prims::set_cmdline_title`).
fn set_process_name(name: &str) {
    let mut title = format!("plough:{name}").into_bytes();
    title.retain(|&b| b != 0);
    title.truncate(15);
    // Not cut inside a UTF-8 sequence.
    while std::str::from_utf8(&title).is_err() {
        title.pop();
    }
    if let Ok(title) = std::ffi::CString::new(title)
        && let Err(e) = rustix::thread::set_name(&title)
    {
        tracing::debug!(error = %e, "cannot set the process name");
    }
}
