//! Finding a registrar, when a root starts and after an actor loses the one it had: join
//! the registrar that answers on the registry address, or bind the address and become it
//! ([`elect`]); and keep an actor registered when its registrar goes away
//! ([`keep_registered`]).
//!
//! When the registrar's root exits (cleanly or killed), every actor that registered with
//! it over a connection of its own sees that connection close. A root then runs the
//! election again — the first to bind the registry address is the new registrar, the
//! others join it — and every such actor, root or child, registers itself again with
//! whoever answers. A registrar restarted on the address (a new program's root, after
//! the old one died) gets the same: everyone still alive comes back to it.
//!
//! Hazards designed out:
//! * two roots both becoming the registrar of one UDS address, each reclaiming the other's
//!   fresh socket file as "stale": a root binds the address only while it holds an
//!   exclusive `flock` on the socket's directory, and probes again under it (TCP's bind
//!   is atomic by itself); the loser of a race joins the winner;
//! * survivors that busy-loop on a dead address, or hammer it all in step: tries are
//!   paced by [`Budgets::registrar_retry`](crate::Budgets::registrar_retry), exponential,
//!   jittered and capped, and each one is a single connect;
//! * the dead root's tree coming back as stale entries: an actor re-registers only
//!   itself, and one whose registrar was its parent does not (it goes down with its
//!   parent); entries are keyed by uuid, so a re-registration never duplicates one;
//! * a keeper outliving its actor: it runs on the actor's tasks and stops at its cancel.

use super::listen::is_absent;
use crate::registrar::client::RegistrarClient;
use crate::registrar::entry::ActorEntry;
use crate::registrar::state::RegistrarState;
use crate::serving::actor::Actor;
use plough_ipc_wire::handshake::{self, Credentials, Established, HandshakeConfig, HandshakeError};
use plough_ipc_wire::{Address, Listener, TransportError};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What an election gave this actor.
pub(super) enum Elected {
    /// A registrar answered: the connection to it, handshaken.
    Joined(Box<Established>),
    /// Nobody answered and this actor bound the registry address: it is the registrar.
    Became(Listener),
}

/// Why an election gave nothing this time.
pub(super) enum ElectError {
    /// Try again: nobody answers and this actor may not bind, another root is binding the
    /// address right now, or one bound it first.
    Again(String),
    /// Something that is not a plough registrar answers there.
    Taken(HandshakeError),
    /// Binding the free address failed.
    Bind(TransportError),
}

impl std::fmt::Display for ElectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ElectError::Again(why) => f.write_str(why),
            ElectError::Taken(e) => write!(f, "{e}"),
            ElectError::Bind(e) => write!(f, "cannot bind it: {e}"),
        }
    }
}

/// Joins the registrar at `addr`, or (with `may_bind`, and nobody answering) binds the
/// address and becomes it. `probe` bounds each connect and handshake.
pub(super) async fn elect(
    addr: &Address,
    me: &Credentials,
    probe: Duration,
    may_bind: bool,
) -> Result<Elected, ElectError> {
    let hs = HandshakeConfig::default().with_deadline(probe);
    match handshake::connect(addr, me, &hs).await {
        Ok(est) => return Ok(Elected::Joined(Box::new(est))),
        Err(e) if is_absent(&e) => {}
        Err(e) => return Err(ElectError::Taken(e)),
    }
    if !may_bind {
        return Err(ElectError::Again(format!("no registrar answers at {addr}")));
    }
    let _lock = ElectionLock::take(addr)?;
    // Under the lock: a root that bound the address since our probe answers now.
    match handshake::connect(addr, me, &hs).await {
        Ok(est) => return Ok(Elected::Joined(Box::new(est))),
        Err(e) if is_absent(&e) => {}
        Err(e) => return Err(ElectError::Taken(e)),
    }
    match Listener::bind(addr).await {
        Ok(listener) => Ok(Elected::Became(listener)),
        Err(e) if is_addr_in_use(&e) => {
            Err(ElectError::Again(format!("another root bound {addr} first")))
        }
        Err(e) => Err(ElectError::Bind(e)),
    }
}

fn is_addr_in_use(e: &TransportError) -> bool {
    match e {
        TransportError::AddrInUse(_) => true,
        TransportError::Io { source, .. } => source.kind() == std::io::ErrorKind::AddrInUse,
        _ => false,
    }
}

/// An exclusive `flock(2)` on the directory of a UDS registry address, held while a root
/// probes and binds it (released when dropped, or when the process dies); the directory
/// is created (private, as the bind would) if it does not exist yet. Nothing for TCP.
///
/// Without it two roots starting at once race: a bound socket refuses connections until
/// it listens, so the other root's bind, probing it in that instant, takes it for stale
/// and unlinks it — and both become "the" registrar.
struct ElectionLock {
    /// The locked directory (unlocked when closed).
    _dir: Option<OwnedFd>,
}

impl ElectionLock {
    fn take(addr: &Address) -> Result<ElectionLock, ElectError> {
        use rustix::fs::{FlockOperation, Mode, OFlags, flock, open};
        let Some(dir) = addr.uds_path().and_then(|p| p.parent()) else {
            return Ok(ElectionLock { _dir: None });
        };
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let mut opened = open(dir, flags, Mode::empty());
        if matches!(opened, Err(rustix::io::Errno::NOENT)) {
            // The first root here: make the private directory (as the bind would), so
            // that the lock exists before anyone binds in it.
            plough_ipc_wire::runtime_dir::ensure_private_dir(dir)
                .map_err(|e| ElectError::Bind(TransportError::RuntimeDir(e)))?;
            opened = open(dir, flags, Mode::empty());
        }
        let fd = opened.map_err(|e| {
            ElectError::Again(format!("cannot open {} to lock it: {e}", dir.display()))
        })?;
        match flock(&fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(ElectionLock { _dir: Some(fd) }),
            Err(rustix::io::Errno::WOULDBLOCK) => {
                Err(ElectError::Again(format!("another root is binding {addr}")))
            }
            Err(e) => Err(ElectError::Again(format!("cannot lock {}: {e}", dir.display()))),
        }
    }
}

/// A random number for jitter (the time's nanoseconds if the kernel has none to give).
pub(super) fn random() -> u64 {
    let mut buf = [0u8; 8];
    match rustix::rand::getrandom(&mut buf, rustix::rand::GetRandomFlags::NONBLOCK) {
        Ok(8) => u64::from_ne_bytes(buf),
        _ => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::from(d.subsec_nanos())),
    }
}

/// Keeps `actor` registered as `entry` at its registry address: whenever the connection
/// to its registrar closes while the actor runs, finds the successor and registers there
/// again. `may_elect` (a root): it may bind the address and become the registrar itself,
/// which ends the keeping. Lookups issued meanwhile wait for the new link.
///
/// Starts recovering at once when the actor has no registrar link yet (its first
/// registration failed).
pub(super) fn keep_registered(actor: &Actor, entry: ActorEntry, may_elect: bool) {
    actor.registrar().set_recovering(true);
    let a = actor.clone();
    actor.tasks().spawn(async move {
        let addr = a.registry_addr().clone();
        loop {
            if let Some(client) = a.registrar().client() {
                tokio::select! {
                    () = client.closed() => {}
                    () = a.cancelled() => break,
                }
            }
            if a.is_cancelled() {
                break;
            }
            tracing::warn!(actor = %a.aid(), registry = %addr, "lost the registrar at {addr}: finding its successor");
            let lost = Instant::now();
            let found = tokio::select! {
                found = successor(&a, &addr, &entry, may_elect) => found,
                () = a.cancelled() => break,
            };
            let took = lost.elapsed();
            match found {
                Successor::Joined(client) => {
                    a.registrar().set_client(client);
                    tracing::info!(actor = %a.aid(), registry = %addr, ?took, "re-registered with the registrar at {addr}");
                }
                Successor::Became(listener) => {
                    let state = Arc::new(RegistrarState::new());
                    state.add(entry.clone(), None);
                    // The state first: a registration arriving over the new listener
                    // finds this actor a registrar.
                    a.registrar().become_registrar(state);
                    a.serve_listener(listener);
                    tracing::info!(actor = %a.aid(), registry = %addr, ?took, "became the registrar at {addr} after the last one was lost");
                    break;
                }
            }
        }
        a.registrar().set_recovering(false);
    });
}

/// Where an actor's registration went after its registrar was lost.
enum Successor {
    /// Registered with the registrar that answered.
    Joined(RegistrarClient),
    /// Bound the address: this actor is the registrar now.
    Became(Listener),
}

/// Tries, paced by the registrar backoff, until a registrar takes `entry` or this actor
/// becomes the registrar. Warns once when that takes longer than the registrar gap.
async fn successor(a: &Actor, addr: &Address, entry: &ActorEntry, may_elect: bool) -> Successor {
    let budgets = *a.budgets();
    let started = Instant::now();
    let mut warned = false;
    let mut attempt = 0u32;
    loop {
        tokio::time::sleep(budgets.registrar_retry(attempt, random())).await;
        let why = match elect(addr, &a.credentials(), budgets.registrar_probe, may_elect).await {
            Ok(Elected::Became(listener)) => return Successor::Became(listener),
            Ok(Elected::Joined(est)) => {
                let client = RegistrarClient::new(a.portal(a.attach(*est, true)));
                match client.register(entry).await {
                    Ok(()) => return Successor::Joined(client),
                    Err(e) => {
                        client.close();
                        format!("the registrar refused the registration: {e}")
                    }
                }
            }
            Err(e) => e.to_string(),
        };
        tracing::debug!(actor = %a.aid(), registry = %addr, attempt, "no registrar yet: {why}");
        if !warned && started.elapsed() > budgets.registrar_gap {
            warned = true;
            tracing::warn!(actor = %a.aid(), registry = %addr, "still no registrar at {addr} after {:?} ({why}); trying every {:?}", started.elapsed(), budgets.registrar_retry_max);
        }
        attempt = attempt.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory of this test's own (removed by the test).
    fn scratch(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("plough-elect-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        dir
    }

    fn test_creds() -> Credentials {
        Credentials {
            aid: plough_ipc_wire::Aid::default(),
            secret: plough_ipc_wire::Secret::from_bytes([0x42; 32]),
        }
    }

    /// The election lock is what keeps two roots from both binding a UDS address: while
    /// one holds it, another's election waits its turn (tries again) instead of
    /// reclaiming the file; without a registrar and without the right to bind (a child)
    /// it is the same; the free address goes to the one holding the lock.
    #[tokio::test]
    async fn a_uds_election_binds_only_under_the_lock_and_a_non_root_never_binds() {
        let dir = scratch("lock");
        let addr = Address::Uds(dir.join("registry.sock"));
        let hello = test_creds();
        let probe = Duration::from_secs(2);
        let again = |r: Result<Elected, ElectError>| match r {
            Err(ElectError::Again(why)) => why,
            Err(e) => panic!("expected to try again, got {e}"),
            Ok(_) => panic!("expected to try again, got an election"),
        };

        let held = ElectionLock::take(&addr).ok().expect("the lock");
        let why = again(elect(&addr, &hello, probe, true).await);
        assert!(why.contains("another root is binding"), "{why}");
        assert!(!dir.join("registry.sock").exists(), "bound without the lock");
        drop(held);

        let why = again(elect(&addr, &hello, probe, false).await);
        assert!(why.contains("no registrar answers"), "{why}");
        assert!(!dir.join("registry.sock").exists(), "a non-root bound the address");

        match elect(&addr, &hello, probe, true).await {
            Ok(Elected::Became(listener)) => {
                assert_eq!(listener.local_addr(), &addr);
                drop(listener);
            }
            Ok(Elected::Joined(_)) => panic!("joined a registrar that does not exist"),
            Err(e) => panic!("the free address was not bound: {e}"),
        }
        assert!(!dir.join("registry.sock").exists(), "the listener's file outlived it");
        std::fs::remove_dir(&dir).unwrap();
    }

    /// TCP needs no lock (its bind is atomic); a TCP address held by a listener that
    /// speaks no plough is `Taken`, not retried forever.
    #[tokio::test]
    async fn a_tcp_address_held_by_a_stranger_is_taken() {
        let stranger = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = Address::Tcp(stranger.local_addr().unwrap());
        let r = elect(&addr, &test_creds(), Duration::from_millis(200), true).await;
        assert!(
            matches!(r, Err(ElectError::Taken(_))),
            "{}",
            r.err().map(|e| e.to_string()).unwrap_or_default()
        );
    }
}
