//! A listener's fd reserve: accepting stops short of the process's fd limit, so that the
//! rest of the process — spawning a child, reaping one, the cancel path — still finds the
//! fds it needs while the listener is flooded.
//!
//! After each accept the listener asks how many more fds the process could open (the real
//! table, whoever opened them) under the soft `RLIMIT_NOFILE`. When no more than
//! the reserve ([`FdReserve::effective`]: 64, or a quarter of the soft limit when that is
//! less) would be left, the connection is admitted only if it comes from one of this
//! process's own children connecting back (over a Unix socket: `SO_PEERCRED`'s pid has us
//! as its parent; over TCP: one of our children holds a socket bound to the peer's address
//! — asked of the children's sockets through `pidfd_getfd`, or, where the kernel refuses
//! that, found in `/proc/net/tcp` with our uid and among a child's fds) — a spawn in
//! progress must be able to finish. These checks run only inside the reserve. Any other connection is **accepted and
//! closed** at once rather than left in the backlog: the backlog is a queue, and a
//! child's connection queued behind a flood would never be reached. Closing costs the fd
//! only for the instant of the accept, and a legitimate peer sees a closed connection it
//! can retry. When `accept` itself fails for want of fds (`EMFILE`/`ENFILE`), the listener
//! waits — until one of the process's accepted connections closes, or
//! [`FdReserve::backoff`] — and tries again: it never spins on the error, and the error
//! never reaches the caller. Both states are logged at `warn`, at most once per
//! [`FdReserve::warn_interval`], with how many connections were turned away meanwhile.
//!
//! The room is asked of `plough_fork_prims::fd_headroom` (a bound from `FDSize`, or near
//! the limit a probe that opens and closes the reserve's worth of fds), never counted:
//! a pass over `/proc/self/fd` costs 0.2 ms at 100 open fds, 2 ms at 1,000.

use super::{Connection, Peer};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How a [`Listener`](super::Listener) keeps fds free for the rest of its process (see
/// the module docs). The actor runtime sets it from its `Budgets`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdReserve {
    /// How many fds to leave free ([`FdReserve::DEFAULT_RESERVE`]), capped at a quarter of
    /// the soft limit ([`FdReserve::effective`]).
    pub reserve: usize,
    /// How long to wait, when at the reserve or out of fds, before looking again (unless an
    /// accepted connection closes first): 50 ms.
    pub backoff: Duration,
    /// The least time between two warnings about connections turned away: 10 s.
    pub warn_interval: Duration,
}

impl FdReserve {
    /// The default reserve: 64 fds.
    pub const DEFAULT_RESERVE: usize = 64;

    /// The reserve in force under the soft limit `soft_limit` (`None`: unlimited): the
    /// configured one, or a quarter of the limit when that is less (so a process with a
    /// very low limit still accepts at all).
    pub fn effective(&self, soft_limit: Option<u64>) -> u64 {
        let reserve = self.reserve as u64;
        soft_limit.map_or(reserve, |limit| reserve.min(limit / 4))
    }
}

impl Default for FdReserve {
    fn default() -> Self {
        FdReserve {
            reserve: FdReserve::DEFAULT_RESERVE,
            backoff: Duration::from_millis(50),
            warn_interval: Duration::from_secs(10),
        }
    }
}

/// One of the process's accepted connections closed: an fd came free.
static RELEASED: Notify = Notify::const_new();

/// Held by every accepted [`Connection`]; its drop wakes listeners waiting for room.
#[derive(Debug)]
pub(super) struct Slot(());

impl Drop for Slot {
    fn drop(&mut self) {
        RELEASED.notify_waiters();
    }
}

/// What a listener's accept loop keeps for its reserve.
#[derive(Debug)]
pub(super) struct Gate {
    pub(super) reserve: FdReserve,
    turned_away: AtomicU64,
    last_warn: Mutex<Option<Instant>>,
}

/// What [`Gate::admit`] decided.
pub(super) enum Admit {
    /// Hand the connection out.
    Yes(Connection),
    /// It was closed: accept the next one.
    Closed,
}

impl Gate {
    pub(super) fn new(reserve: FdReserve) -> Gate {
        Gate { reserve, turned_away: AtomicU64::new(0), last_warn: Mutex::new(None) }
    }

    /// Admits `conn`, just accepted on `addr`, or closes it (see the module docs).
    pub(super) fn admit(&self, mut conn: Connection, addr: &str) -> Admit {
        if let Some((free, limit)) = self.inside()
            && !from_own_child(&conn)
        {
            drop(conn);
            self.turned_away(addr, &format!("only {free} of {limit} fds free"));
            return Admit::Closed;
        }
        conn.slot = Some(Slot(()));
        Admit::Yes(conn)
    }

    /// Whether the process, having just accepted a connection, is inside its reserve:
    /// `(free fds, soft limit)` then. Asked of `plough_fork_prims::fd_headroom`: one small
    /// read while the whole fd table fits with the reserve to spare, else a probe that
    /// opens and closes up to the reserve's worth of fds (never a count of the table, which
    /// costs 2 ms at 1,000 fds).
    fn inside(&self) -> Option<(u64, u64)> {
        let limit = plough_fork_prims::nofile_soft_limit()?;
        let reserve = self.reserve.effective(Some(limit));
        let free = plough_fork_prims::fd_headroom(reserve)?;
        (free < reserve).then_some((free, limit))
    }

    /// `accept` found no fd: waits for one to come free (or the backoff).
    pub(super) async fn out_of_fds(&self, addr: &str, e: &std::io::Error) {
        self.turned_away(addr, &e.to_string());
        let freed = RELEASED.notified();
        tokio::select! {
            () = freed => {}
            () = tokio::time::sleep(self.reserve.backoff) => {}
        }
    }

    fn turned_away(&self, addr: &str, why: &str) {
        let n = self.turned_away.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last_warn.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed() >= self.reserve.warn_interval) {
            *last = Some(Instant::now());
            self.turned_away.store(0, Ordering::Relaxed);
            let limit = plough_fork_prims::nofile_soft_limit();
            let reserve = self.reserve.effective(limit);
            tracing::warn!(
                addr,
                turned_away = n,
                reserve,
                "listener at its fd reserve ({why}): connections other than our children's are closed"
            );
        }
    }
}

/// Whether `conn`'s peer is a child of this process connecting back.
fn from_own_child(conn: &Connection) -> bool {
    match conn.peer {
        Peer::Uds { pid: Some(pid), .. } => u32::try_from(pid)
            .ok()
            .and_then(plough_fork_prims::marker::parent_pid)
            .is_some_and(|ppid| ppid == std::process::id()),
        Peer::Uds { pid: None, .. } => false,
        Peer::Tcp(peer) => match tcp_peer_is_own_child(peer) {
            Some(found) => found,
            // Not allowed to look into the children's fds (ptrace policy): by the tables.
            None => conn.local_tcp().is_some_and(|local| {
                // A foreign uid's socket is turned away without looking further.
                tcp_peer_socket(peer, local).is_some_and(|(uid, inode)| {
                    uid == rustix::process::geteuid().as_raw() && held_by_own_child(inode)
                })
            }),
        },
    }
}

/// The pids of this process's children.
fn children() -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return Vec::new() };
    tasks
        .flatten()
        .flat_map(|task| {
            let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            text.split_whitespace().map(str::to_owned).collect::<Vec<_>>()
        })
        .collect()
}

/// Whether one of our children holds a TCP socket bound to `peer`: each child's sockets
/// are duplicated here (`pidfd_getfd`, which a parent may do to its children) and asked
/// their address — a few syscalls per child socket, against reading the whole
/// `/proc/net/tcp` (which a flood makes long) per connection. `None` when the kernel
/// refuses to duplicate them.
fn tcp_peer_is_own_child(peer: std::net::SocketAddr) -> Option<bool> {
    use rustix::process::{PidfdFlags, PidfdGetfdFlags, pidfd_getfd, pidfd_open};
    for child in children() {
        let Some(pid) = child.parse().ok().and_then(rustix::process::Pid::from_raw) else {
            continue;
        };
        let Ok(pidfd) = pidfd_open(pid, PidfdFlags::empty()) else { continue };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{child}/fd")) else { continue };
        for fd in fds.flatten() {
            let is_socket = std::fs::read_link(fd.path())
                .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"));
            let Some(n) = fd.file_name().to_str().and_then(|n| n.parse().ok()) else { continue };
            if !is_socket {
                continue;
            }
            match pidfd_getfd(&pidfd, n, PidfdGetfdFlags::empty()) {
                Ok(dup) => {
                    if std::net::TcpStream::from(dup).local_addr().is_ok_and(|a| a == peer) {
                        return Some(true);
                    }
                }
                Err(rustix::io::Errno::PERM | rustix::io::Errno::NOSYS) => return None,
                Err(_) => {}
            }
        }
    }
    Some(false)
}

/// The uid and inode of the TCP socket bound to `peer` and connected to `local` (the other
/// end of one of our connections), from `/proc/net/tcp` or `/proc/net/tcp6`.
fn tcp_peer_socket(peer: std::net::SocketAddr, local: std::net::SocketAddr) -> Option<(u32, u64)> {
    let table = if peer.is_ipv4() { "/proc/net/tcp" } else { "/proc/net/tcp6" };
    let text = std::fs::read_to_string(table).ok()?;
    let (want_local, want_remote) = (proc_net_addr(peer), proc_net_addr(local));
    text.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (l, r, uid, inode) = (f.get(1)?, f.get(2)?, f.get(7)?, f.get(9)?);
        if !(l.eq_ignore_ascii_case(&want_local) && r.eq_ignore_ascii_case(&want_remote)) {
            return None;
        }
        Some((uid.parse().ok()?, inode.parse().ok()?))
    })
}

/// Whether a child of this process holds the socket with inode `inode` among its fds.
fn held_by_own_child(inode: u64) -> bool {
    let want = format!("socket:[{inode}]");
    children().iter().any(|child| {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{child}/fd")) else { return false };
        fds.flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == want.as_str()))
    })
}

/// An address as `/proc/net/tcp{,6}` writes it: the address as 32-bit words in host byte
/// order, in hex, then `:` and the port in hex.
fn proc_net_addr(sa: std::net::SocketAddr) -> String {
    let words: Vec<u32> = match sa.ip() {
        std::net::IpAddr::V4(ip) => vec![u32::from_ne_bytes(ip.octets())],
        std::net::IpAddr::V6(ip) => ip
            .octets()
            .chunks_exact(4)
            .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    };
    let mut out: String = words.iter().map(|w| format!("{w:08X}")).collect();
    out.push_str(&format!(":{:04X}", sa.port()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_capped_at_a_quarter_of_the_limit() {
        let r = FdReserve::default();
        assert_eq!(r.effective(Some(1024)), 64);
        assert_eq!(r.effective(Some(64)), 16);
        assert_eq!(r.effective(None), 64);
    }

    #[test]
    fn addresses_are_spelt_as_proc_net_tcp_spells_them() {
        // 127.0.0.1:8080 on a little-endian machine, as in /proc/net/tcp.
        if cfg!(target_endian = "little") {
            assert_eq!(proc_net_addr("127.0.0.1:8080".parse().unwrap()), "0100007F:1F90");
            assert_eq!(
                proc_net_addr("[::1]:80".parse().unwrap()),
                "00000000000000000000000001000000:0050"
            );
        }
    }

    #[test]
    fn a_tcp_peer_of_ours_is_found_with_our_uid_and_is_no_child() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(local).unwrap();
        let (_server, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let (uid, inode) = tcp_peer_socket(peer, local).expect("in /proc/net/tcp");
        assert_eq!(uid, rustix::process::geteuid().as_raw());
        // The client socket is ours, not a child's.
        assert!(!held_by_own_child(inode));
        let elsewhere: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(tcp_peer_socket(peer, elsewhere), None);
    }
}
