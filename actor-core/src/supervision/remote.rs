//! Children on other hosts: a root attaches to a host daemon (`plough-host`) and starts
//! actors there through it; the nursery holds them as it holds its own, so the same
//! ladder takes them down, their process steps performed by the daemon.
//!
//! Who does what (see `docs/multi-host.md`):
//!
//! * The **daemon** is the remote actor's parent: it spawns the program its operator
//!   allowed (never a path a root names), holds the pidfd and the process group, reaps
//!   it, and reports its exit status ([`HOST_WAIT`]). Spawning is idempotent by the
//!   caller's spawn id ([`SpawnOrder::spawn_id`]): a repeated order answers with the actor
//!   the first one started.
//! * The **root** talks to the actor itself, over mutual TLS (the actor listens on its
//!   host's `tls://` address), so calls and streams cost one hop, not two through the
//!   daemon; it runs the ladder's IPC cancel on that connection, and asks the daemon for
//!   each process step ([`HOST_SIGNAL`], [`HOST_WAIT`]).
//! * The **lease** ([`Budgets::lease`](crate::Budgets::lease)): the root beats to the
//!   daemon ([`HOST_BEAT`]) every [`Budgets::heartbeat`](crate::Budgets::heartbeat); a
//!   daemon that hears none for the lease takes the root's actors down its own ladder; a
//!   root whose beats go unanswered for the lease takes the host for lost, and its
//!   children there fail with [`ActorError::HostLost`].

use super::nursery::{ChildActor, Nursery};
use super::process::ChildProcess;
use crate::base::dump::{Relay, TaskGuard};
use crate::base::error::{ActorError, Misuse, SpawnError};
use crate::base::fate::fate;
use crate::base::sync::LockExt;
use crate::calls::portal::Portal;
use crate::registrar::entry::ActorEntry;
use crate::serving::actor::Actor;
use plough_fork_prims::{ExitStatus, Signal};
use plough_ipc_wire::Address;
use plough_ipc_wire::msg::{Aid, Uuid};
use serde::{Deserialize, Serialize};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A root attaches: `(()) -> Attached`. Starts the caller's lease (the caller is the
/// owner of what it spawns).
pub const HOST_ATTACH: &str = "host.attach";
/// A heartbeat: `(()) -> ()`. Renews the caller's lease; an owner the daemon does not
/// know (its lease ran out, or the daemon restarted) is refused.
pub const HOST_BEAT: &str = "host.beat";
/// `(SpawnOrder) -> Spawned`: starts the allowed program as an actor for the owner
/// (idempotent by spawn id).
pub const HOST_SPAWN: &str = "host.spawn";
/// `(spawn_id: String) -> Exit`: returns once the actor has exited and been reaped.
pub const HOST_WAIT: &str = "host.wait";
/// `(SignalOrder) -> bool`: signals the actor's process (or group); `false` once it is
/// reaped.
pub const HOST_SIGNAL: &str = "host.signal";
/// `(spawn_id: String) -> Exit`: takes the actor down the daemon's ladder, returns once
/// it is reaped.
pub const HOST_STOP: &str = "host.stop";
/// `(()) -> Vec<HostedActor>`: the actors this daemon runs for the caller (its own only).
pub const HOST_LIST: &str = "host.list";

/// The daemon's answer to [`HOST_ATTACH`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attached {
    /// The host's name (its certificate's).
    pub host: String,
    /// The lease both ends keep, in milliseconds.
    pub lease_ms: u64,
}

/// What a root asks a daemon to start ([`HOST_SPAWN`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnOrder {
    /// The root that owns it (its lease covers it).
    pub owner: Uuid,
    /// Chosen by the caller: a repeated order with the same id starts nothing new.
    pub spawn_id: String,
    /// The actor's name.
    pub name: String,
}

/// The daemon's answer to [`HOST_SPAWN`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spawned {
    /// The actor.
    pub aid: Aid,
    /// Where it listens (a `tls://` address of its host).
    pub addr: String,
    /// Whether an earlier order with this spawn id started it.
    pub again: bool,
}

/// A signal for a hosted actor ([`HOST_SIGNAL`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalOrder {
    /// The actor.
    pub spawn_id: String,
    /// The signal's number.
    pub signal: i32,
    /// To its whole process group.
    pub group: bool,
}

/// How a hosted actor's process ended, as it travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// Its exit code, if it exited.
    pub code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// Whether it dumped core.
    pub core_dumped: bool,
}

impl From<ExitStatus> for Exit {
    fn from(s: ExitStatus) -> Self {
        match s {
            ExitStatus::Exited(code) => Exit { code: Some(code), signal: None, core_dumped: false },
            ExitStatus::Signaled { signal, core_dumped } => {
                Exit { code: None, signal: Some(signal), core_dumped }
            }
        }
    }
}

impl From<Exit> for ExitStatus {
    fn from(e: Exit) -> Self {
        match (e.code, e.signal) {
            (_, Some(signal)) => ExitStatus::Signaled { signal, core_dumped: e.core_dumped },
            (Some(code), None) => ExitStatus::Exited(code),
            (None, None) => ExitStatus::Exited(-1),
        }
    }
}

/// One actor a daemon runs ([`HOST_LIST`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostedActor {
    /// Its spawn id.
    pub spawn_id: String,
    /// The root that owns it.
    pub owner: Uuid,
    /// The actor.
    pub aid: Aid,
    /// Where it listens.
    pub addr: String,
    /// How it ended, once it has.
    pub exit: Option<Exit>,
}

/// A host daemon this actor is attached to: spawn on it with
/// [`Nursery::start_actor_on`] and [`Nursery::run_in_actor_on`]. Cheap to clone; the
/// heartbeats (and with them the lease) end when the last clone is dropped.
#[derive(Clone)]
pub struct Host {
    inner: Arc<HostInner>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("name", &self.inner.name)
            .field("addr", &self.inner.addr.to_string())
            .field("lost", &self.inner.lost.is_cancelled())
            .finish()
    }
}

struct HostInner {
    name: String,
    addr: Address,
    actor: Actor,
    link: Mutex<Portal>,
    lease: Duration,
    lost: CancellationToken,
    reason: Mutex<Option<String>>,
}

impl Host {
    /// The host's name (its certificate's).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The daemon's address.
    pub fn addr(&self) -> &Address {
        &self.inner.addr
    }

    /// The lease agreed with the daemon.
    pub fn lease(&self) -> Duration {
        self.inner.lease
    }

    /// Why the host is lost, once it is (its lease ran out without an answered beat).
    pub fn lost_reason(&self) -> Option<String> {
        self.inner.reason.locked().clone()
    }

    /// Waits until the host is lost.
    pub async fn lost(&self) {
        self.inner.lost.cancelled().await
    }

    /// A portal to the daemon (for its functions: [`HOST_LIST`], say).
    pub fn portal(&self) -> Portal {
        self.inner.link.locked().clone()
    }

    fn mark_lost(&self, reason: String) {
        tracing::warn!(host = %self.inner.name, %reason, "host lost");
        *self.inner.reason.locked() = Some(reason);
        self.inner.lost.cancel();
    }

    /// Keeps the lease: beats every heartbeat, reconnects when the link broke, and marks
    /// the host lost once no beat was answered for the lease. Ends when the last handle
    /// goes, the host is lost, or the actor is cancelled.
    fn keep_lease(&self) {
        let weak: Weak<HostInner> = Arc::downgrade(&self.inner);
        let beat = crate::base::budgets::Budgets::heartbeat(self.inner.lease);
        let lease = self.inner.lease;
        let stop = self.inner.actor.cancel_token().clone();
        tokio::spawn(async move {
            let mut last_ok = tokio::time::Instant::now();
            let mut last_error = String::from("no answer");
            loop {
                tokio::select! {
                    () = tokio::time::sleep(beat) => {}
                    () = stop.cancelled() => return,
                }
                let Some(inner) = weak.upgrade() else { return };
                let host = Host { inner };
                let portal = host.portal();
                let answered = if portal.is_closed() {
                    match tokio::time::timeout(beat, host.inner.actor.connect(&host.inner.addr))
                        .await
                    {
                        Ok(Ok(p)) => {
                            *host.inner.link.locked() = p;
                            Err("reconnected".to_owned())
                        }
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err(format!("no connection within {beat:?}")),
                    }
                } else {
                    match tokio::time::timeout(beat, portal.run::<_, ()>(HOST_BEAT, ())).await {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err(format!("no answer within {beat:?}")),
                    }
                };
                match answered {
                    Ok(()) => last_ok = tokio::time::Instant::now(),
                    Err(e) => last_error = e,
                }
                if last_ok.elapsed() > lease {
                    host.mark_lost(format!(
                        "no heartbeat answered within the lease of {lease:?} (last: {last_error})"
                    ));
                    return;
                }
            }
        });
    }
}

impl Actor {
    /// Attaches to the host daemon at `addr` (a `tls://host@ip:port` address: the
    /// runtime needs a TLS identity, [`RuntimeConfig::tls`](crate::RuntimeConfig::tls),
    /// and the daemon must run this program's build) and starts the lease.
    ///
    /// # Errors
    ///
    /// [`ActorError::TransportClosed`] when the daemon does not answer or refuses us (a
    /// certificate of another CA, another build, another secret: the handshake's reason
    /// is in the detail); the daemon's own error otherwise.
    pub async fn attach_host(&self, addr: &Address) -> Result<Host, ActorError> {
        let portal = self.connect(addr).await?;
        let wait = self.budgets().handshake;
        let attached: Attached = tokio::time::timeout(wait, portal.run(HOST_ATTACH, ()))
            .await
            .map_err(|_| ActorError::ActorTooSlow {
            actor: portal.aid().clone(),
            what: "answer to attach".to_owned(),
            secs: wait.as_secs_f64(),
        })??;
        let host = Host {
            inner: Arc::new(HostInner {
                name: attached.host,
                addr: addr.clone(),
                actor: self.clone(),
                link: Mutex::new(portal),
                lease: Duration::from_millis(attached.lease_ms),
                lost: CancellationToken::new(),
                reason: Mutex::new(None),
            }),
        };
        host.keep_lease();
        Ok(host)
    }
}

/// A child's process as its host daemon holds it.
pub(crate) struct RemoteProcess {
    host: Host,
    spawn_id: String,
    pid: u32,
    status: watch::Receiver<Option<Result<ExitStatus, String>>>,
}

impl RemoteProcess {
    /// Watches the hosted actor `spawn_id` until the daemon reports its exit (or the
    /// host is lost).
    fn watch(host: Host, spawn_id: String, pid: u32) -> RemoteProcess {
        let (tx, status) = watch::channel(None);
        let (h, id) = (host.clone(), spawn_id.clone());
        tokio::spawn(async move {
            let beat = crate::base::budgets::Budgets::heartbeat(h.lease());
            let out = loop {
                let portal = h.portal();
                tokio::select! {
                    r = portal.run::<_, Exit>(HOST_WAIT, &id) => match r {
                        Ok(exit) => break Ok(ExitStatus::from(exit)),
                        // The link broke: the lease decides; ask again on the next link.
                        Err(ActorError::TransportClosed { .. }) => {}
                        Err(e) => break Err(e.to_string()),
                    },
                    () = h.lost() => break Err(h.lost_reason().unwrap_or_default()),
                    () = tx.closed() => return,
                }
                tokio::select! {
                    () = tokio::time::sleep(beat) => {}
                    () = h.lost() => break Err(h.lost_reason().unwrap_or_default()),
                }
            };
            let _ = tx.send(Some(out));
        });
        RemoteProcess { host, spawn_id, pid, status }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    pub(crate) fn host_name(&self) -> &str {
        self.host.name()
    }

    fn now(&self) -> io::Result<Option<ExitStatus>> {
        match &*self.status.borrow() {
            None => Ok(None),
            Some(Ok(s)) => Ok(Some(*s)),
            Some(Err(why)) => Err(io::Error::other(why.clone())),
        }
    }

    pub(crate) fn try_wait(&self) -> io::Result<Option<ExitStatus>> {
        self.now()
    }

    pub(crate) async fn wait(&self) -> io::Result<ExitStatus> {
        let mut rx = self.status.clone();
        match rx.wait_for(Option::is_some).await {
            Ok(_) => {}
            Err(_) => return Err(io::Error::other("the watch of the remote actor ended")),
        }
        drop(rx);
        self.now().map(|s| s.expect("set"))
    }

    /// Asks the daemon to send `signal` (to the group with `group`); returns at once.
    pub(crate) fn signal(&self, signal: Signal, group: bool) -> io::Result<()> {
        if self.host.inner.lost.is_cancelled() {
            return Err(io::Error::other("the host is lost"));
        }
        // Without a runtime (a nursery dropped while the process exits) nothing can be
        // sent: the daemon's lease takes the actor down.
        let rt = tokio::runtime::Handle::try_current()
            .map_err(|_| io::Error::other("no runtime to reach the host daemon"))?;
        let order = SignalOrder { spawn_id: self.spawn_id.clone(), signal: signal.as_raw(), group };
        let (portal, lease) = (self.host.portal(), self.host.lease());
        rt.spawn(async move {
            let _ = tokio::time::timeout(lease, portal.run::<_, bool>(HOST_SIGNAL, order)).await;
        });
        Ok(())
    }

    pub(crate) fn lost(&self) -> Option<(String, String)> {
        let reason = self.host.lost_reason()?;
        Some((self.host.name().to_owned(), reason))
    }
}

impl Nursery {
    /// Starts a child actor on `host` (see [`Actor::attach_host`]) and returns a portal to
    /// it, as [`Nursery::start_actor`] does here: the nursery takes it down through the
    /// same ladder (its process steps done by the host's daemon), and its death is one of
    /// the nursery's failures ([`ActorError::ActorDied`] with its exit status, or
    /// [`ActorError::HostLost`] when its host is lost).
    ///
    /// # Errors
    ///
    /// The daemon's refusal or failure to spawn (as a remote error), a lost connection,
    /// [`Misuse::NurseryExited`].
    pub async fn start_actor_on(&self, host: &Host, name: &str) -> Result<Portal, ActorError> {
        let child = self.spawn_remote(host, name).await?;
        let portal = child.portal.clone();
        self.monitor(child);
        Ok(portal)
    }

    /// [`Nursery::run_in_actor`] on `host`.
    ///
    /// # Errors
    ///
    /// As [`Nursery::start_actor_on`].
    pub async fn run_in_actor_on<A, R>(
        &self,
        host: &Host,
        name: &str,
        function: &str,
        args: A,
    ) -> Result<super::nursery::RunHandle<R>, ActorError>
    where
        A: Serialize,
        R: serde::de::DeserializeOwned + Send + 'static,
    {
        let child = self.spawn_remote(host, name).await?;
        self.run_in(child, function, args)
    }

    pub(super) async fn spawn_remote(
        &self,
        host: &Host,
        name: &str,
    ) -> Result<Arc<ChildActor>, ActorError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(Misuse::NurseryExited { name: name.to_owned() }.into());
        }
        let actor = &self.inner.actor;
        let spawn_id = Uuid::new_v4().simple().to_string();
        let order =
            SpawnOrder { owner: actor.aid().uuid, spawn_id: spawn_id.clone(), name: name.into() };
        // Bounded as a local boot is, and by the lease: a daemon that went away meanwhile
        // does not leave the spawn hanging.
        let (wait, daemon) = (actor.budgets().connect_cap, host.portal());
        let spawned: Spawned = tokio::select! {
            r = tokio::time::timeout(wait, daemon.run(HOST_SPAWN, &order)) => match r {
                Ok(r) => r?,
                Err(_) => {
                    stop_remote(host, &spawn_id);
                    return Err(SpawnError::ConnectTimeout {
                        name: name.to_owned(),
                        secs: wait.as_secs_f64(),
                        stderr: String::new(),
                    }
                    .into());
                }
            },
            () = host.lost() => {
                let reason = host.lost_reason().unwrap_or_default();
                return Err(ActorError::HostLost {
                    actor: Aid { name: name.to_owned(), uuid: Uuid([0; 16]), pid: 0 },
                    host: host.name().to_owned(),
                    reason,
                });
            }
        };
        let addr = ActorEntry::new(spawned.aid.clone(), spawned.addr.clone(), None, "")
            .address()
            .inspect_err(|_| stop_remote(host, &spawn_id))?;
        let portal = actor.connect(&addr).await.inspect_err(|_| stop_remote(host, &spawn_id))?;
        let process = RemoteProcess::watch(host.clone(), spawn_id, spawned.aid.pid);
        let (fate_tx, fate) = fate();
        portal.channel().set_fate(fate);
        let aid = spawned.aid;
        let method = format!("remote@{}", host.name());
        let child = Arc::new_cyclic(|me: &Weak<ChildActor>| {
            let me = me.clone();
            let relay: Relay = Arc::new(move || {
                if let Some(c) = me.upgrade() {
                    let _ = c.process.signal(Signal::USR1);
                }
            });
            ChildActor {
                _task: TaskGuard::child(&aid, aid.pid, &method, relay),
                aid: aid.clone(),
                portal: portal.clone(),
                process: ChildProcess::Remote(process),
                cancelling: AtomicBool::new(false),
                down: Mutex::new(None),
                ladder: std::sync::OnceLock::new(),
            }
        });
        {
            let mut children = self.inner.children.locked();
            if self.inner.closed.load(Ordering::SeqCst) {
                drop(children);
                let _ = child.process.kill_group(Signal::KILL);
                return Err(Misuse::NurseryExited { name: name.to_owned() }.into());
            }
            let watched = Arc::clone(&child);
            tokio::spawn(async move {
                if let Ok(status) = watched.process.wait().await {
                    fate_tx.set(status);
                }
            });
            children.push(Arc::clone(&child));
        }
        // Our tree's registrar lists it with its host (the daemon's registrar lists it
        // too): ours, or the one this actor registered with (the remote actor registers
        // with its daemon's, not ours). (`method` is `remote@<host>`: the host is named
        // there, the address is its own.)
        let parent = Some(actor.aid().clone());
        let entry = ActorEntry::new(aid.clone(), addr.to_string(), parent, &method);
        let gap = actor.budgets().registrar_gap;
        match tokio::time::timeout(gap, actor.registrar().register(entry)).await {
            Ok(Some(Ok(())) | None) => {}
            Ok(Some(Err(e))) => {
                tracing::warn!(child = %aid, error = %e, "registrar refused a remote child's entry")
            }
            Err(_) => {
                tracing::warn!(child = %aid, "registrar did not answer a remote child's registration within {gap:?}")
            }
        }
        tracing::info!(parent = %actor.aid(), child = %aid, host = host.name(), "spawned on a host");
        Ok(child)
    }
}

/// A child's process as its parent holds it, for a host daemon that answers for it to a
/// remote root ([`HOST_WAIT`], [`HOST_SIGNAL`]): through the nursery's own handle
/// (pidfd, process group), so a signal never reaches a recycled pid.
pub struct HostedProcess(Arc<ChildActor>);

impl std::fmt::Debug for HostedProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("HostedProcess").field(&self.0.aid.to_string()).finish()
    }
}

impl HostedProcess {
    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.0.process.pid()
    }

    /// Waits until it has exited and been reaped; then its status (as often as asked).
    ///
    /// # Errors
    ///
    /// Waiting on its pidfd failed.
    pub async fn wait(&self) -> io::Result<ExitStatus> {
        self.0.process.wait().await
    }

    /// Sends `signal` to it, or to its process group with `group`; `false` once it has
    /// been reaped (nothing is sent then).
    ///
    /// # Errors
    ///
    /// The kernel refused the signal.
    pub fn signal(&self, signal: Signal, group: bool) -> io::Result<bool> {
        if self.0.process.try_wait()?.is_some() {
            return Ok(false);
        }
        match group {
            true => self.0.process.kill_group(signal)?,
            false => self.0.process.signal(signal)?,
        }
        Ok(true)
    }
}

impl Nursery {
    /// The process of `child`, one of this nursery's children (for a host daemon).
    pub fn hosted_process(&self, child: &Aid) -> Option<HostedProcess> {
        let children = self.inner.children.locked();
        children.iter().find(|c| c.aid.uuid == child.uuid).cloned().map(HostedProcess)
    }
}

/// Asks the daemon to take the actor `spawn_id` down (a spawn that failed half-way).
fn stop_remote(host: &Host, spawn_id: &str) {
    let (portal, id, lease) = (host.portal(), spawn_id.to_owned(), host.lease());
    tokio::spawn(async move {
        let _ = tokio::time::timeout(lease, portal.run::<_, Exit>(HOST_STOP, id)).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_travel_and_come_back_the_same() {
        for s in [
            ExitStatus::Exited(0),
            ExitStatus::Exited(3),
            ExitStatus::Signaled { signal: 9, core_dumped: false },
            ExitStatus::Signaled { signal: 6, core_dumped: true },
        ] {
            assert_eq!(ExitStatus::from(Exit::from(s)), s);
        }
    }
}
