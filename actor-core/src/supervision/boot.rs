//! Boot: a child from its spawn until it is a member of its nursery — the backend starts
//! the process, the child connects back (or dies, or times out: then it is killed,
//! reaped, and its files removed), gets its spawn spec, and is registered as the
//! nursery's child. A boot abandoned half-way (the body dropped mid-`start_actor`) kills
//! the child at once and leaves it for the nursery to reap.

use super::ladder::clear_dead_child_files;
use super::nursery::{ChildActor, Inner, Nursery};
use super::options::SpawnOptions;
use crate::base::boot_stderr;
use crate::base::dump::{Relay, TaskGuard};
use crate::base::error::{ActorError, During, Misuse, SpawnError};
use crate::base::fate::fate;
use crate::base::metrics;
use crate::base::spawn::{ChildBoot, SpawnRequest};
use crate::base::sync::LockExt;
use plough_fork_prims::{ChildHandle, Signal};
use plough_ipc_wire::msg::{Aid, Msg, Uuid};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A child between its spawn and its registration in the nursery: if that is abandoned
/// (the future dropped, or an error), the child is killed and left for the nursery to reap.
pub(super) struct Booting<'a> {
    inner: &'a Inner,
    process: Option<ChildHandle>,
    uuid: Uuid,
}

/// The end of what a child that did not boot wrote to stderr (empty if not captured),
/// waiting at most `wait` for the rest of it.
async fn boot_tail(pump: Option<boot_stderr::Pump>, wait: Duration) -> String {
    match pump {
        Some(pump) => pump.finish(wait).await,
        None => String::new(),
    }
}

impl Booting<'_> {
    /// The boot failed with the child still running (a step after the fork found no fd):
    /// SIGKILL it and its group and hand it to the reaper thread at once, which reaps it
    /// (it dies at once) and clears what it may have written. Not left for the nursery's
    /// exit: a long-lived nursery would keep it a zombie until then.
    fn failed(&mut self) {
        if let Some(process) = self.process.take() {
            let _ = process.kill_group(Signal::KILL);
            let _ = process.kill();
            drop(process);
        }
    }

    /// The child died (and was reaped) during boot: remove what it may have left — its
    /// marker, its socket file, a half-written marker — now rather than when the nursery
    /// exits, and do not signal its (recyclable) pid or process group again.
    fn reaped(&mut self) {
        if let Some(process) = self.process.take() {
            clear_dead_child_files(process.pid(), &self.uuid);
        }
    }
}

impl Drop for Booting<'_> {
    fn drop(&mut self) {
        if let Some(process) = self.process.take() {
            let _ = process.kill_group(Signal::KILL);
            let _ = process.kill();
            self.inner.abandoned.locked().push((process, self.uuid));
        }
    }
}

impl Nursery {
    /// Spawns and boots child `name`, counting the spawn and its latency by backend.
    pub(super) async fn spawn_child(&self, name: &str) -> Result<Arc<ChildActor>, ActorError> {
        self.spawn_child_with(name, &SpawnOptions::default()).await
    }

    /// Spawns and boots child `name` as `options` say, counting the spawn and its latency
    /// by backend.
    pub(super) async fn spawn_child_with(
        &self,
        name: &str,
        options: &SpawnOptions,
    ) -> Result<Arc<ChildActor>, ActorError> {
        let backend = self.inner.actor.backend().map(|b| b.method().key());
        let started = std::time::Instant::now();
        let out = self.boot_child(name, options).await;
        if let Some(backend) = backend {
            metrics::spawned(backend, out.is_ok(), started.elapsed());
        }
        out
    }

    async fn boot_child(
        &self,
        name: &str,
        options: &SpawnOptions,
    ) -> Result<Arc<ChildActor>, ActorError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(Misuse::NurseryExited { name: name.to_owned() }.into());
        }
        let actor = &self.inner.actor;
        let budgets = *actor.budgets();
        let Some(backend) = actor.backend() else {
            return Err(Misuse::NoSpawnBackend.into());
        };
        backend.method().ensure_implemented()?;
        // Too few fds for a spawn: say so now, before anything is forked or half-made.
        if let Some(room) = plough_fork_prims::fd_headroom(budgets.spawn_fds as u64)
            && room < budgets.spawn_fds as u64
        {
            return Err(SpawnError::OutOfFds {
                name: name.to_owned(),
                step: format!(
                    "the check before the spawn (only {room} fds free, a spawn needs {})",
                    budgets.spawn_fds
                ),
                limit: plough_fork_prims::nofile_soft_limit(),
                detail: String::new(),
            }
            .into());
        }
        let uuid = Uuid::new_v4();
        // The child proves this one-time key when it connects back: a racer that learnt
        // its uuid (from its marker, say) is refused, and the real child still gets in.
        let token = plough_ipc_wire::Secret::generate().map_err(|e| SpawnError::Os {
            name: name.to_owned(),
            message: format!("no spawn token: {e}"),
        })?;
        // Forgotten however this ends (the guard's drop).
        let mut pending = actor.expect_child(uuid, token.clone());
        let boot = ChildBoot {
            name: name.to_owned(),
            uuid,
            tree: actor.tree_uuid(),
            parent_addr: actor.addr().clone(),
            method: backend.method(),
            parent_pid: std::process::id(),
            secret: actor.secret().clone(),
            token,
            tls: actor.tls_files().cloned(),
        };
        // The child's boot stderr comes through us, so a boot death can say what it wrote.
        // No fd left for the pipe: the spawn would fail at its next step anyway.
        let (read, boot_stderr) = match boot_stderr::pipe() {
            Ok((read, write)) => (Some(read), Some(write)),
            Err(e) if plough_fork_prims::is_out_of_fds(&e) => {
                return Err(SpawnError::from_io(name, "the boot stderr pipe", &e).into());
            }
            Err(e) => {
                tracing::debug!(error = %e, "boot stderr not captured");
                (None, None)
            }
        };
        let req = SpawnRequest { boot, child_main: actor.child_main(), boot_stderr, budgets };
        // The backend drops its copy of the write end once the child has its own. The fork
        // is requested at the first poll; the pump starts while it is under way (what the
        // child writes meanwhile waits in the pipe).
        let mut spawning = backend.spawn(req);
        let early = futures::poll!(&mut spawning);
        let pump = read.and_then(|read| {
            boot_stderr::Pump::start(read)
                .inspect_err(|e| tracing::debug!(error = %e, "boot stderr not captured"))
                .ok()
        });
        let spawned = match early {
            std::task::Poll::Ready(r) => r,
            std::task::Poll::Pending => spawning.await,
        };
        let process = spawned?;
        let mut booting = Booting { inner: &self.inner, process: Some(process), uuid };
        let process = booting.process.as_ref().expect("set above");
        let started = tokio::time::Instant::now();
        let mut progress = BootProgress::now(actor, process.pid());
        let channel = loop {
            let window = budgets.connect.min(budgets.connect_cap.saturating_sub(started.elapsed()));
            tokio::select! {
                ch = pending.connected() => break ch,
                st = process.wait() => {
                    let status = match st {
                        Ok(status) => status,
                        // Not known to have died: not reaped, so not taken for dead.
                        Err(e) => {
                            booting.failed();
                            return Err(SpawnError::from_io(name, "waiting for its boot", &e).into());
                        }
                    };
                    let actor = Aid { name: name.to_owned(), uuid, pid: process.pid() };
                    booting.reaped();
                    let stderr = boot_tail(pump, budgets.boot_stderr).await;
                    return Err(ActorError::ActorDied { actor, status, during: During::Boot, stderr });
                }
                () = tokio::time::sleep(window) => {
                    let now = BootProgress::now(actor, process.pid());
                    let moved = now.moved_since(&progress);
                    progress = now;
                    if !moved || started.elapsed() >= budgets.connect_cap {
                        break None;
                    }
                    tracing::debug!(child = name, waited = ?started.elapsed(), "still booting, making progress: waiting on");
                }
            }
        };
        let timeout = started.elapsed();
        let Some(channel) = channel else {
            let _ = process.kill_group(Signal::KILL);
            let _ = process.kill();
            match tokio::time::timeout(budgets.reap_bound, process.wait()).await {
                Ok(Ok(_)) => booting.reaped(),
                _ => booting.failed(),
            }
            let stderr = boot_tail(pump, budgets.boot_stderr).await;
            return Err(SpawnError::ConnectTimeout {
                name: name.to_owned(),
                secs: timeout.as_secs_f64(),
                stderr,
            }
            .into());
        };
        let spec = match options.spawn_spec(actor) {
            Ok(spec) => spec,
            Err(e) => {
                booting.failed();
                return Err(e);
            }
        };
        if let Err(e) = channel.send(Msg::SpawnSpec(Box::new(spec))).await {
            booting.failed();
            return Err(e);
        }
        let process = booting.process.take().expect("still booting");
        let method = backend.method().key();
        // Every call, context and stream on this connection that sees it lost is told how
        // the child died (the fate is set by the task below, from its pidfd).
        let (fate_tx, fate) = fate();
        channel.set_fate(fate);
        let child = Arc::new_cyclic(|me: &std::sync::Weak<ChildActor>| {
            let me = me.clone();
            let aid = channel.peer().clone();
            // Through the child's handle (pidfd): a no-op once it is reaped.
            let relay: Relay = Arc::new(move || {
                if let Some(c) = me.upgrade() {
                    let _ = c.process.signal(Signal::USR1);
                }
            });
            ChildActor {
                _task: TaskGuard::child(&aid, aid.pid, method, relay),
                aid,
                portal: actor.portal(channel),
                process: process.into(),
                cancelling: AtomicBool::new(false),
                down: std::sync::Mutex::new(None),
                ladder: std::sync::OnceLock::new(),
            }
        });
        // Joining is checked under the children's lock, against `closed`: a boot that
        // completes after the nursery began to exit (its `start_actor` ran in a task of
        // its own) must not leave a child that nothing takes down.
        let mut children = self.inner.children.locked();
        if self.inner.closed.load(Ordering::SeqCst) {
            drop(children);
            tracing::warn!(child = %child.aid, "booted after its nursery exited: SIGKILL");
            let _ = child.process.kill_group(Signal::KILL);
            let _ = child.process.kill();
            // Dropping the last handle hands the process to the reaper thread, which also
            // clears its marker.
            return Err(Misuse::NurseryExited { name: name.to_owned() }.into());
        }
        let watched = Arc::clone(&child);
        let live = metrics::LiveChild::new(method);
        tokio::spawn(async move {
            let _live = live;
            if let Ok(status) = watched.process.wait().await {
                fate_tx.set(status);
            }
        });
        tracing::info!(parent = %actor.aid(), child = %child.aid, method = %backend.method(), "spawned");
        children.push(Arc::clone(&child));
        drop(children);
        Ok(child)
    }
}

/// What counts as a booting child's progress (see [`Budgets::connect`]): its own CPU
/// time, and its parent completing other children's boots.
///
/// [`Budgets::connect`]: crate::Budgets::connect
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BootProgress {
    cpu_ticks: Option<u64>,
    boots_done: u64,
}

impl BootProgress {
    fn now(actor: &crate::serving::actor::Actor, pid: u32) -> BootProgress {
        let cpu_ticks = procfs::process::Process::new(pid as i32)
            .and_then(|p| p.stat())
            .ok()
            .map(|s| s.utime + s.stime);
        BootProgress { cpu_ticks, boots_done: actor.boots_done() }
    }

    fn moved_since(&self, before: &BootProgress) -> bool {
        self.boots_done > before.boots_done
            || matches!((self.cpu_ticks, before.cpu_ticks), (Some(now), Some(then)) if now > then)
    }
}
