//! Large payloads through shared memory, with no user code: a payload of a `Start`,
//! `Started`, `Yield` or `Return` at or above [`Budgets::shm_threshold`] is copied once
//! into a sealed memfd by the sender, the frame carries its reference (`ShmRef`) instead
//! of the bytes, and the receiver maps it read-only and hands the user a [`Payload`]
//! whose `Bytes` owns the mapping (zero-copy: the pages go when its last clone drops).
//!
//! * **Where.** Only between two processes of one host and one user: a Unix socket whose
//!   peer has our uid, or plain TCP whose peer is a loopback address; never over TLS. A
//!   sender lends only to a peer whose hello said it reads lent payloads
//!   (`Hello.reads_shm`); a receiver refuses a reference from any other connection.
//! * **Lifetime.** The sender keeps the segment's fd (what lets the receiver open it)
//!   until the receiver says it is done with it — opened or refused — with the reserved
//!   call `plough.shm_opened` (argument: the segments' inodes), or until the connection
//!   ends. What one connection has lent and not heard back about is bounded by
//!   [`Budgets::shm_lent`]; a payload that would take it over goes by copy, unless only
//!   shared memory can carry it (it is over the frame limit): then its sender waits for
//!   the peer to return segments, as it waits for room in the writer's queue, and one
//!   longer than the whole budget is refused at once. A memfd dies with its last fd and
//!   mapping, so a SIGKILL of either side leaves nothing.
//! * **Bad input.** A reference is untrusted: plough-shm checks it against the kernel
//!   (the owner alive and ours, our memfd by name and inode, mode 0600, sealed against
//!   writing and shrinking, at least as long as claimed); over a Unix socket it must also
//!   name the peer's own process (`SO_PEERCRED`), and it may be no longer than
//!   [`Budgets::shm_lent`]. A refusal fails that message's call with a `BadMessage`
//!   error naming the [`LendError`], maps nothing, and the connection serves on.
//!
//! [`Budgets::shm_threshold`]: crate::Budgets::shm_threshold
//! [`Budgets::shm_lent`]: crate::Budgets::shm_lent

use crate::base::budgets::Budgets;
use crate::base::sync::LockExt;
use bytes::Bytes;
use plough_ipc_wire::handshake::Established;
use plough_ipc_wire::msg::Msg;
use plough_ipc_wire::transport::Peer;
use plough_ipc_wire::{Payload, ShmRef};
use plough_shm::{SegmentRef, ShmBufMut, ShmBytes, ShmError, ShmHandle};
use std::collections::HashMap;
use std::sync::Mutex;

/// Why a lent payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LendError {
    /// The connection is not one that may carry references (another host, TLS, another
    /// user).
    #[error(
        "a shared-memory reference arrived on a connection that is not local (TLS, another host or user)"
    )]
    NotLocal,
    /// The reference names a process that is not the peer's.
    #[error("the shared-memory reference names pid {named}, not the peer (pid {peer})")]
    NotThePeer {
        /// The pid the reference names.
        named: u32,
        /// The peer's pid.
        peer: u32,
    },
    /// The reference claims more bytes than this connection may have lent at once.
    #[error("a lent payload of {len} bytes is over the bound of {max}")]
    TooLong {
        /// The length claimed.
        len: u64,
        /// [`Budgets::shm_lent`](crate::Budgets::shm_lent).
        max: u64,
    },
    /// The segment did not check out (plough-shm's reason).
    #[error("the lent segment is refused: {0}")]
    Shm(#[from] ShmError),
}

/// What [`Lender::outgoing`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lending {
    /// It goes as it is now: its payload is lent, or it has none to lend here.
    Done,
    /// Its payload of `len` bytes would be lent, but what is lent already leaves no room
    /// in [`Budgets::shm_lent`]: as it is, it goes by copy.
    Full {
        /// The payload's length.
        len: u64,
    },
}

/// One connection's lending state, both directions.
pub(crate) struct Lender {
    /// [`Budgets::shm_threshold`]; 0: never lend.
    threshold: usize,
    /// [`Budgets::shm_lent`].
    max_lent: u64,
    /// Whether we lend to this peer (local and it reads lent payloads).
    lend: bool,
    /// Whether we accept references from this peer (local).
    accept: bool,
    /// The peer's pid, when the kernel told us (Unix sockets): references must name it.
    peer_pid: Option<u32>,
    lent: Mutex<Lent>,
    /// Told when segments come back.
    returned: tokio::sync::Notify,
}

/// What we lent and have not heard back about: segment inode → segment.
#[derive(Default)]
struct Lent {
    by_ino: HashMap<u64, ShmBytes>,
    bytes: u64,
}

impl Lender {
    /// The lending state of an established connection.
    pub(crate) fn new(est: &Established, budgets: &Budgets) -> Lender {
        let conn = est.framed.get_ref();
        let (local, peer_pid) = if conn.is_tls() {
            (false, None)
        } else {
            match conn.peer() {
                Peer::Uds { uid, pid, .. } => (
                    uid == rustix::process::geteuid().as_raw(),
                    pid.and_then(|p| u32::try_from(p).ok()),
                ),
                Peer::Tcp(addr) => (addr.ip().to_canonical().is_loopback(), None),
            }
        };
        Lender::from_parts(local, peer_pid, est.peer_reads_shm, budgets)
    }

    /// The lending state of a connection that is `local` (or not), to a peer of pid
    /// `peer_pid` (when known) that reads lent payloads (or not).
    pub(crate) fn from_parts(
        local: bool,
        peer_pid: Option<u32>,
        peer_reads_shm: bool,
        budgets: &Budgets,
    ) -> Lender {
        let threshold = budgets.shm_threshold.unwrap_or(0);
        Lender {
            threshold,
            max_lent: budgets.shm_lent as u64,
            lend: local && peer_reads_shm && threshold > 0,
            accept: local,
            peer_pid,
            lent: Mutex::new(Lent::default()),
            returned: tokio::sync::Notify::new(),
        }
    }

    /// Lends `msg`'s payload when it is large enough and the budget has room: copies it
    /// into a sealed segment and puts the reference in its place. Otherwise (or when
    /// making the segment fails) the message goes unchanged, by copy; [`Lending::Full`]
    /// says it would have been lent had the peer returned enough of what it holds (see
    /// [`Lender::room_for`]).
    pub(crate) fn outgoing(&self, msg: &mut Msg) -> Lending {
        if !self.lend {
            return Lending::Done;
        }
        let Some(payload) = payload_mut(msg) else { return Lending::Done };
        let len = payload.len();
        if len < self.threshold || payload.shm_ref().is_some() {
            return Lending::Done;
        }
        {
            let mut lent = self.lent.locked();
            if lent.bytes + len as u64 > self.max_lent {
                tracing::debug!(len, lent = lent.bytes, "shm_lent is full: a payload goes by copy");
                // One longer than the whole budget never fits.
                return if len as u64 <= self.max_lent {
                    Lending::Full { len: len as u64 }
                } else {
                    Lending::Done
                };
            }
            lent.bytes += len as u64;
        }
        match ShmBufMut::<u8>::from_slice(payload).and_then(ShmBufMut::freeze) {
            Ok(buf) => {
                let s = buf.handle().segment;
                *payload = Payload::lent(ShmRef {
                    pid: s.pid,
                    start_time: s.start_time,
                    fd: s.fd,
                    ino: s.ino,
                    len: s.len,
                });
                self.lent.locked().by_ino.insert(s.ino, buf);
            }
            Err(e) => {
                tracing::debug!(error = %e, "could not lend a payload: it goes by copy");
                self.lent.locked().bytes -= len as u64;
            }
        }
        Lending::Done
    }

    /// Replaces a lent payload of `msg` with its bytes, mapped. `Ok(Some(ino))`: a
    /// segment to tell the peer we are done with; `Err` (with the inode to tell, if
    /// any): the reference was refused, and the payload is left empty.
    pub(crate) fn incoming(&self, msg: &mut Msg) -> Result<Option<u64>, (LendError, Option<u64>)> {
        let Some(payload) = payload_mut(msg) else { return Ok(None) };
        let Some(r) = payload.shm_ref().copied() else { return Ok(None) };
        *payload = Payload::empty();
        if !self.accept {
            return Err((LendError::NotLocal, None));
        }
        if let Some(peer) = self.peer_pid
            && r.pid != peer
        {
            return Err((LendError::NotThePeer { named: r.pid, peer }, None));
        }
        if r.len > self.max_lent {
            return Err((LendError::TooLong { len: r.len, max: self.max_lent }, Some(r.ino)));
        }
        let handle = ShmHandle {
            segment: SegmentRef {
                pid: r.pid,
                start_time: r.start_time,
                fd: r.fd,
                ino: r.ino,
                len: r.len,
            },
            elem_size: 1,
        };
        let buf = ShmBytes::open(&handle).map_err(|e| (LendError::Shm(e), Some(r.ino)))?;
        *payload = Payload::from(Bytes::from_owner(Mapped(buf)));
        Ok(Some(r.ino))
    }

    /// The peer is done with these segments: drop them (an inode we did not lend is
    /// ignored).
    pub(crate) fn returned(&self, inos: &[u64]) {
        let mut lent = self.lent.locked();
        for ino in inos {
            if let Some(buf) = lent.by_ino.remove(ino) {
                lent.bytes -= buf.len() as u64;
            }
        }
        drop(lent);
        self.returned.notify_waiters();
    }

    /// Once `len` more bytes fit in [`Budgets::shm_lent`] (the peer returned segments), or
    /// the connection ended (which returns them all).
    pub(crate) async fn room_for(&self, len: u64) {
        loop {
            let returned = self.returned.notified();
            let mut returned = std::pin::pin!(returned);
            returned.as_mut().enable();
            if self.lent.locked().bytes + len <= self.max_lent {
                return;
            }
            returned.await;
        }
    }

    /// Once nothing is lent.
    pub(crate) async fn drained(&self) {
        loop {
            let returned = self.returned.notified();
            let mut returned = std::pin::pin!(returned);
            returned.as_mut().enable();
            if self.lent.locked().by_ino.is_empty() {
                return;
            }
            returned.await;
        }
    }

    /// The connection ended: drop every segment still lent.
    pub(crate) fn clear(&self) {
        let mut lent = self.lent.locked();
        lent.by_ino.clear();
        lent.bytes = 0;
        drop(lent);
        self.returned.notify_waiters();
    }

    /// Bytes lent and not yet returned.
    #[cfg(test)]
    pub(crate) fn lent_bytes(&self) -> u64 {
        self.lent.locked().bytes
    }
}

/// A mapped segment as the owner of a `Bytes`.
struct Mapped(ShmBytes);

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

fn payload_mut(msg: &mut Msg) -> Option<&mut Payload> {
    match msg {
        Msg::Start(s) => Some(&mut s.args),
        Msg::Started { payload, .. } | Msg::Yield { payload, .. } | Msg::Return { payload, .. } => {
            Some(payload)
        }
        _ => None,
    }
}

/// `plough.shm_opened`: we are done with the peer's segments `inos` (opened or refused).
/// Nobody waits for an answer, so it carries cid 0.
pub(crate) fn returned_msg(inos: Vec<u64>, me: &plough_ipc_wire::msg::Aid) -> Msg {
    Msg::Start(Box::new(plough_ipc_wire::msg::Start {
        cid: 0,
        function: crate::base::names::SHM_OPENED.into(),
        args: Payload::encode(&inos).expect("integers encode"),
        caller: me.clone().into(),
        kind: plough_ipc_wire::msg::CallKind::Function,
        trace: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use plough_ipc_wire::msg::Start;

    const MIB: usize = 1 << 20;

    fn budgets(lent: usize) -> Budgets {
        Budgets { shm_threshold: Some(MIB), shm_lent: lent, ..Budgets::default() }
    }

    fn yield_of(len: usize, fill: u8) -> Msg {
        Msg::Yield { cid: 3, payload: Payload::from(vec![fill; len]) }
    }

    fn lent_ref(msg: &Msg) -> Option<ShmRef> {
        msg.payload().and_then(|p| p.shm_ref().copied())
    }

    /// Whether `addr` lies in one of this process's plough-shm mappings.
    fn in_a_segment(addr: usize) -> bool {
        let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
        maps.lines().filter(|l| l.contains("/memfd:plough-shm.")).any(|l| {
            let range = l.split_whitespace().next().expect("range");
            let (a, b) = range.split_once('-').expect("a-b");
            let (a, b) =
                (usize::from_str_radix(a, 16).unwrap(), usize::from_str_radix(b, 16).unwrap());
            (a..b).contains(&addr)
        })
    }

    /// Whether a plough-shm segment with inode `ino` is still mapped here (the inode is the
    /// fifth field of a `/proc/self/maps` line; other tests map segments of their own).
    fn mapped(ino: u64) -> bool {
        let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
        maps.lines()
            .filter(|l| l.contains("/memfd:plough-shm."))
            .any(|l| l.split_whitespace().nth(4).and_then(|f| f.parse::<u64>().ok()) == Some(ino))
    }

    #[test]
    fn a_large_payload_is_lent_mapped_zero_copy_and_returned() {
        let me = std::process::id();
        let (tx, rx) = (
            Lender::from_parts(true, Some(me), true, &budgets(8 * MIB)),
            Lender::from_parts(true, Some(me), true, &budgets(8 * MIB)),
        );
        let mut msg = yield_of(2 * MIB, 0xab);
        tx.outgoing(&mut msg);
        let r = lent_ref(&msg).expect("lent");
        assert_eq!((r.len, tx.lent_bytes()), (2 * MIB as u64, 2 * MIB as u64));
        assert!(msg.payload().unwrap().is_empty(), "the frame carries no bytes");
        assert_eq!(rx.incoming(&mut msg), Ok(Some(r.ino)));
        let p = msg.payload().unwrap().clone();
        assert!(p.iter().all(|&b| b == 0xab) && p.len() == 2 * MIB);
        assert!(in_a_segment(p.as_ptr() as usize), "the bytes are the mapping");
        tx.returned(&[r.ino]);
        assert_eq!(tx.lent_bytes(), 0);
        // Still readable: the mapping holds the pages.
        assert_eq!(p[MIB], 0xab);
        drop((p, msg));
        assert!(!mapped(r.ino), "the last Bytes unmapped the segment");

        // Below the threshold, or not a payload: untouched.
        let mut small = yield_of(MIB - 1, 1);
        tx.outgoing(&mut small);
        assert!(lent_ref(&small).is_none());
    }

    #[test]
    fn shm_lent_bounds_what_is_lent_and_the_rest_goes_by_copy() {
        let tx = Lender::from_parts(true, None, true, &budgets(3 * MIB));
        let mut inos = Vec::new();
        for _ in 0..3 {
            let mut m = yield_of(MIB, 2);
            tx.outgoing(&mut m);
            inos.push(lent_ref(&m).expect("lent within the bound").ino);
        }
        let mut over = yield_of(MIB, 2);
        tx.outgoing(&mut over);
        assert!(lent_ref(&over).is_none(), "a peer that never answers: by copy");
        assert_eq!(over.payload().unwrap().len(), MIB);
        tx.returned(&[inos[0], 12345]);
        let mut again = yield_of(MIB, 2);
        tx.outgoing(&mut again);
        assert!(lent_ref(&again).is_some(), "room again once one came back");
        tx.clear();
        assert_eq!(tx.lent_bytes(), 0);
    }

    #[test]
    fn no_lending_off_host_to_an_old_peer_or_when_disabled_and_no_reference_accepted_off_host() {
        let off = Budgets { shm_threshold: None, ..budgets(8 * MIB) };
        for tx in [
            Lender::from_parts(false, None, true, &budgets(8 * MIB)),
            Lender::from_parts(true, None, false, &budgets(8 * MIB)),
            Lender::from_parts(true, None, true, &off),
        ] {
            let mut m = yield_of(2 * MIB, 1);
            tx.outgoing(&mut m);
            assert!(lent_ref(&m).is_none());
        }
        let tx = Lender::from_parts(true, None, true, &budgets(8 * MIB));
        let mut m = Msg::Start(Box::new(Start {
            args: Payload::from(vec![3; 2 * MIB]),
            ..Start::default()
        }));
        tx.outgoing(&mut m);
        assert!(lent_ref(&m).is_some(), "call arguments are lent too");
        let tls = Lender::from_parts(false, None, true, &budgets(8 * MIB));
        let got = tls.incoming(&mut m.clone()).map_err(|(e, _)| e);
        assert_eq!(got, Err(LendError::NotLocal));
        let other = Lender::from_parts(true, Some(1), true, &budgets(8 * MIB));
        let got = other.incoming(&mut m.clone()).map_err(|(e, _)| e);
        assert!(matches!(got, Err(LendError::NotThePeer { peer: 1, .. })), "{got:?}");
        let short = Lender::from_parts(true, None, true, &budgets(MIB));
        let got = short.incoming(&mut m).map_err(|(e, _)| e);
        assert!(matches!(got, Err(LendError::TooLong { .. })), "{got:?}");
    }
}
