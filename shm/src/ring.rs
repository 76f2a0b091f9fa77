//! A bounded single-producer / single-consumer ring of messages between two processes,
//! in one shared segment.
//!
//! # Layout
//!
//! A 256-byte header, then `capacity` bytes of data (a power of two). Positions are
//! byte counts that only grow (`u64`, never wrapping in practice); a message is a
//! little-endian `u32` length and its bytes, written at `position % capacity` and
//! wrapping around the end.
//!
//! | offset | field | written by |
//! | --- | --- | --- |
//! | 0 | magic `PLGRING1` (u64) | creator |
//! | 8 | version (u32) | creator |
//! | 16 | capacity (u64) | creator |
//! | 64 | tail: bytes ever sent (u64) | sender |
//! | 72 | data futex: bumped after each send (u32) | sender |
//! | 76 | receiver is waiting (u32) | receiver |
//! | 128 | head: bytes ever received (u64) | receiver |
//! | 136 | space futex: bumped after each receive (u32) | receiver |
//! | 140 | sender is waiting (u32) | sender |
//! | 192 | closed flags: 1 sender, 2 receiver (u32) | either |
//! | 196 / 200 | sender / receiver pid (u32) | that end |
//! | 208 / 216 | sender / receiver start time (u64) | that end |
//!
//! # Waiting
//!
//! An end that cannot go on (empty ring, full ring) spins briefly
//! ([`SPIN_BEFORE_SLEEP`](crate::limits::SPIN_BEFORE_SLEEP) checks), then sets its
//! waiting flag and sleeps on a futex word of the header (a shared futex: no
//! `FUTEX_PRIVATE_FLAG`); the other end, after each step, looks at the flag and, when it
//! is set, takes it (clears it), bumps the word and wakes the sleeper: no system call
//! while nobody sleeps, one wake-up per sleep. A sleep lasts at
//! most [`PEER_CHECK_INTERVAL`](crate::limits::PEER_CHECK_INTERVAL), after which the end
//! checks that its peer process is alive (a `pidfd` polled for exit): a peer killed
//! without closing its end is reported as [`ShmError::PeerDied`] within that bound.
//!
//! # Lies
//!
//! Every field the peer writes is checked before use: the header at attach (magic,
//! version, capacity against the segment), every read of the peer's position (at most
//! `capacity` from ours, never backwards), every length against what was sent; an end
//! never reads its own position back. A lie is
//! [`ShmError::CorruptRing`]; indexes are always reduced modulo the locally kept
//! capacity, so no lie reaches memory outside the mapping.
//!
//! # Ends
//!
//! Each role is taken once (a compare-and-swap of the pid slot): a second sender or
//! receiver is [`ShmError::AlreadyAttached`], even once the first one's process is dead
//! (make a new ring). A peer that never attaches is not an error: an end waits for it as
//! long as its own call allows (the `_timeout` variants bound that).
//!
//! The calls block the calling thread: in an async actor, run an end in
//! `tokio::task::spawn_blocking` or a thread of its own.

use crate::error::{Result, ShmError};
use crate::limits::{MAX_RING_CAPACITY, MIN_RING_CAPACITY, PEER_CHECK_INTERVAL, SPIN_BEFORE_SLEEP};
use crate::map::Mapping;
use crate::segment::{Segment, SegmentRef};
use rustix::fd::OwnedFd;
use rustix::fs::SealFlags;
use rustix::thread::futex;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst, fence};
use std::time::{Duration, Instant};

/// The ring's magic number.
pub const MAGIC: u64 = u64::from_le_bytes(*b"PLGRING1");
/// The layout version.
pub const VERSION: u32 = 1;
/// Bytes before the data area.
pub const HEADER_BYTES: u64 = 256;

const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = 8;
const OFF_CAPACITY: usize = 16;
const OFF_TAIL: usize = 64;
const OFF_DATA_SEQ: usize = 72;
const OFF_RECV_WAITING: usize = 76;
const OFF_HEAD: usize = 128;
const OFF_SPACE_SEQ: usize = 136;
const OFF_SEND_WAITING: usize = 140;
const OFF_CLOSED: usize = 192;
const OFF_PID: [usize; 2] = [196, 200];
const OFF_START: [usize; 2] = [208, 216];
const LEN_BYTES: u64 = 4;

/// Which end of a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Sender = 0,
    Receiver = 1,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Sender => "sender",
            Role::Receiver => "receiver",
        }
    }
    fn peer(self) -> Role {
        match self {
            Role::Sender => Role::Receiver,
            Role::Receiver => Role::Sender,
        }
    }
    fn closed_bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// A serializable reference to a ring: send it to the peer, which attaches with
/// [`RingHandle::sender`] or [`RingHandle::receiver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RingHandle {
    /// The segment (header + data).
    pub segment: SegmentRef,
}

/// A ring this process created; it owns the segment. Turn it into one end and send
/// [`handle`](Ring::handle) to the process that takes the other.
#[derive(Debug)]
pub struct Ring {
    shared: Arc<Shared>,
}

/// The mapping (and, in the owner, the memfd) an end holds.
#[derive(Debug)]
struct Shared {
    map: Mapping,
    capacity: u64,
    reference: SegmentRef,
    _segment: Option<Segment>,
}

impl Ring {
    /// A ring with `capacity` bytes of data (a power of two, 64 B to 4 GiB); a message
    /// takes its length plus 4 bytes.
    pub fn create(capacity: u64) -> Result<Ring> {
        check_capacity(capacity)?;
        let segment = Segment::create(HEADER_BYTES + capacity)?;
        segment.seal(SealFlags::SEAL)?;
        let map = Mapping::map_writable(segment.fd(), (HEADER_BYTES + capacity) as usize)?;
        map.atomic_u64(OFF_CAPACITY).store(capacity, SeqCst);
        map.atomic_u32(OFF_VERSION).store(VERSION, SeqCst);
        map.atomic_u64(OFF_MAGIC).store(MAGIC, SeqCst);
        let reference = segment.reference();
        Ok(Ring { shared: Arc::new(Shared { map, capacity, reference, _segment: Some(segment) }) })
    }

    /// The handle to send to the peer.
    pub fn handle(&self) -> RingHandle {
        RingHandle { segment: self.shared.reference }
    }

    /// This process becomes the sender.
    pub fn sender(self) -> Result<RingSender> {
        Ok(RingSender { end: End::attach(self.shared, Role::Sender)? })
    }

    /// This process becomes the receiver.
    pub fn receiver(self) -> Result<RingReceiver> {
        Ok(RingReceiver { end: End::attach(self.shared, Role::Receiver)? })
    }
}

fn check_capacity(capacity: u64) -> Result<()> {
    if !capacity.is_power_of_two() || !(MIN_RING_CAPACITY..=MAX_RING_CAPACITY).contains(&capacity) {
        return Err(ShmError::BadCapacity(capacity));
    }
    Ok(())
}

impl RingHandle {
    fn open(&self) -> Result<Arc<Shared>> {
        let fd: OwnedFd = self.segment.open(SealFlags::SHRINK | SealFlags::GROW, true)?;
        if self.segment.len <= HEADER_BYTES {
            return Err(ShmError::LengthBeyondSegment {
                offset: 0,
                len: HEADER_BYTES + 1,
                size: self.segment.len,
            });
        }
        let map = Mapping::map_writable(&fd, self.segment.len as usize)?;
        let magic = map.atomic_u64(OFF_MAGIC).load(SeqCst);
        if magic != MAGIC {
            return Err(ShmError::CorruptRing(format!("bad magic {magic:#018x}")));
        }
        let version = map.atomic_u32(OFF_VERSION).load(SeqCst);
        if version != VERSION {
            return Err(ShmError::CorruptRing(format!(
                "version {version}, this build reads {VERSION}"
            )));
        }
        let capacity = map.atomic_u64(OFF_CAPACITY).load(SeqCst);
        check_capacity(capacity).map_err(|_| {
            ShmError::CorruptRing(format!("capacity {capacity} is not a valid ring size"))
        })?;
        if HEADER_BYTES + capacity != self.segment.len {
            return Err(ShmError::CorruptRing(format!(
                "capacity {capacity} does not match the {}-byte segment",
                self.segment.len
            )));
        }
        Ok(Arc::new(Shared { map, capacity, reference: self.segment, _segment: None }))
    }

    /// Attaches to the ring as its sender.
    pub fn sender(&self) -> Result<RingSender> {
        Ok(RingSender { end: End::attach(self.open()?, Role::Sender)? })
    }

    /// Attaches to the ring as its receiver.
    pub fn receiver(&self) -> Result<RingReceiver> {
        Ok(RingReceiver { end: End::attach(self.open()?, Role::Receiver)? })
    }
}

/// What both ends share: the mapping, their role, their own position, the peer's pidfd.
#[derive(Debug)]
struct End {
    shared: Arc<Shared>,
    role: Role,
    /// Our position (tail for the sender, head for the receiver): only we write it, and
    /// we never read it back (a peer that overwrites it changes nothing here).
    pos: u64,
    /// The peer's position as last read (head for the sender, tail for the receiver),
    /// re-read only when it no longer lets us go on.
    peer_pos: u64,
    /// The peer, once seen: its pid and a pidfd polled for its exit.
    peer: Option<(u32, OwnedFd)>,
}

impl End {
    fn attach(shared: Arc<Shared>, role: Role) -> Result<End> {
        let map = &shared.map;
        let me = std::process::id();
        if let Err(pid) =
            map.atomic_u32(OFF_PID[role as usize]).compare_exchange(0, me, SeqCst, SeqCst)
        {
            return Err(ShmError::AlreadyAttached { role: role.name().into(), pid });
        }
        let start = plough_fork_prims::marker::process_start_time(me).unwrap_or(0);
        map.atomic_u64(OFF_START[role as usize]).store(start, SeqCst);
        let head = map.atomic_u64(OFF_HEAD).load(SeqCst);
        let tail = map.atomic_u64(OFF_TAIL).load(SeqCst);
        let cap = shared.capacity;
        let mut end = End { shared, role, pos: 0, peer_pos: 0, peer: None };
        if tail < head || tail - head > cap {
            end.release();
            return Err(ShmError::CorruptRing(format!(
                "head {head} and tail {tail} of a {cap}-byte ring"
            )));
        }
        (end.pos, end.peer_pos) = match role {
            Role::Sender => (tail, head),
            Role::Receiver => (head, tail),
        };
        Ok(end)
    }

    /// Gives up the role slot (an attach that failed).
    fn release(&self) {
        let me = std::process::id();
        let _ = self
            .map()
            .atomic_u32(OFF_PID[self.role as usize])
            .compare_exchange(me, 0, SeqCst, SeqCst);
    }

    fn map(&self) -> &Mapping {
        &self.shared.map
    }

    fn cap(&self) -> u64 {
        self.shared.capacity
    }

    /// Re-reads the peer's position, checked: it never goes backwards, and head and tail
    /// are never more than a capacity apart.
    fn reload_peer(&mut self) -> Result<()> {
        let cap = self.cap();
        let (head, tail) = match self.role {
            Role::Sender => (self.map().atomic_u64(OFF_HEAD).load(SeqCst), self.pos),
            Role::Receiver => (self.pos, self.map().atomic_u64(OFF_TAIL).load(SeqCst)),
        };
        let peer = if self.role == Role::Sender { head } else { tail };
        if tail < head || tail - head > cap || peer < self.peer_pos {
            return Err(ShmError::CorruptRing(format!(
                "head {head} and tail {tail} of a {cap}-byte ring (the {} was at {})",
                self.role.peer().name(),
                self.peer_pos
            )));
        }
        self.peer_pos = peer;
        Ok(())
    }

    fn copy_in(&self, pos: u64, data: &[u8]) {
        let cap = self.cap();
        let at = (pos % cap) as usize;
        let first = data.len().min(cap as usize - at);
        let base = HEADER_BYTES as usize;
        self.map().write(base + at, &data[..first]);
        self.map().write(base, &data[first..]);
    }

    fn copy_out(&self, pos: u64, out: &mut [u8]) {
        let cap = self.cap();
        let at = (pos % cap) as usize;
        let first = out.len().min(cap as usize - at);
        let base = HEADER_BYTES as usize;
        let (a, b) = out.split_at_mut(first);
        self.map().read(base + at, a);
        self.map().read(base, b);
    }

    fn closed(&self, role: Role) -> bool {
        self.map().atomic_u32(OFF_CLOSED).load(SeqCst) & role.closed_bit() != 0
    }

    /// Publishes our new position, and wakes the peer if it sleeps (the `SeqCst` store
    /// and the peer's `SeqCst` flag-then-recheck make one of us see the other).
    fn publish(&mut self, pos: u64) {
        self.pos = pos;
        let (at, seq, waiting) = match self.role {
            Role::Sender => (OFF_TAIL, OFF_DATA_SEQ, OFF_RECV_WAITING),
            Role::Receiver => (OFF_HEAD, OFF_SPACE_SEQ, OFF_SEND_WAITING),
        };
        self.map().atomic_u64(at).store(pos, SeqCst);
        fence(SeqCst);
        // The waker takes the flag: one wake-up per sleep, however many steps it takes
        // the sleeper to run again.
        let flag = self.map().atomic_u32(waiting);
        if flag.load(SeqCst) != 0 && self.worth_waking() && flag.swap(0, SeqCst) != 0 {
            let word = self.map().atomic_u32(seq);
            word.fetch_add(1, SeqCst);
            let _ = futex::wake(word, futex::Flags::empty(), 1);
        }
    }

    /// Whether a sleeping peer should be woken now. A receiver is woken by every message
    /// (latency); a sender only once half the ring is free (or more), so that a full ring
    /// drained message by message does not cost a wake-up — and a sleep — per message.
    /// An empty ring is all free, so a sleeping sender is always woken by then; a
    /// receiver that stops reading while less than half is free leaves a sender that
    /// has room enough asleep for at most `PEER_CHECK_INTERVAL`.
    fn worth_waking(&self) -> bool {
        if self.role == Role::Sender {
            return true;
        }
        let tail = self.map().atomic_u64(OFF_TAIL).load(SeqCst);
        let used = tail.wrapping_sub(self.pos);
        used > self.cap() || self.cap() - used >= self.cap() / 2
    }

    /// Fails if the peer's process is gone without closing its end.
    fn check_peer(&mut self) -> Result<()> {
        let peer = self.role.peer();
        let pid = self.map().atomic_u32(OFF_PID[peer as usize]).load(SeqCst);
        if pid == 0 {
            return Ok(());
        }
        let died = || ShmError::PeerDied { role: peer.name().into(), pid };
        if self.peer.as_ref().is_none_or(|(p, _)| *p != pid) {
            let raw = rustix::process::Pid::from_raw(pid as i32).ok_or_else(died)?;
            let fd = rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty())
                .map_err(|_| died())?;
            let start = self.map().atomic_u64(OFF_START[peer as usize]).load(SeqCst);
            if start != 0 && plough_fork_prims::marker::process_start_time(pid) != Some(start) {
                return Err(died());
            }
            self.peer = Some((pid, fd));
        }
        let (_, fd) = self.peer.as_ref().expect("set above");
        let mut fds = [rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN)];
        let zero = rustix::time::Timespec { tv_sec: 0, tv_nsec: 0 };
        match rustix::event::poll(&mut fds, Some(&zero)) {
            Ok(n) if n > 0 => Err(died()),
            _ => Ok(()),
        }
    }

    /// Whether the peer moved (or closed) since `peer_pos` was read.
    fn peer_moved(&self) -> bool {
        let at = if self.role == Role::Sender { OFF_HEAD } else { OFF_TAIL };
        self.map().atomic_u64(at).load(SeqCst) != self.peer_pos || self.closed(self.role.peer())
    }

    /// Waits until the peer moves or closes: a short spin (a peer on another core is
    /// often one message away), then sleeps on the peer's futex word, at most
    /// `PEER_CHECK_INTERVAL` (or what is left of `deadline`) at a time, checking after
    /// each sleep that the peer is alive.
    fn wait(&mut self, deadline: Option<Instant>) -> Result<()> {
        for _ in 0..SPIN_BEFORE_SLEEP {
            if self.peer_moved() {
                return Ok(());
            }
            std::hint::spin_loop();
        }
        let (seq_off, waiting_off) = match self.role {
            Role::Sender => (OFF_SPACE_SEQ, OFF_SEND_WAITING),
            Role::Receiver => (OFF_DATA_SEQ, OFF_RECV_WAITING),
        };
        let waiting = self.map().atomic_u32(waiting_off);
        waiting.store(1, SeqCst);
        fence(SeqCst);
        let word: &AtomicU32 = self.map().atomic_u32(seq_off);
        let seq = word.load(SeqCst);
        if !self.peer_moved() {
            let mut slice = PEER_CHECK_INTERVAL;
            if let Some(d) = deadline {
                slice = slice.min(d.saturating_duration_since(Instant::now()));
            }
            let ts = rustix::time::Timespec {
                tv_sec: slice.as_secs() as i64,
                tv_nsec: i64::from(slice.subsec_nanos()),
            };
            let _ = futex::wait(word, futex::Flags::empty(), seq, Some(&ts));
        }
        self.map().atomic_u32(waiting_off).store(0, SeqCst);
        if self.peer_moved() {
            return Ok(());
        }
        if let Some(d) = deadline
            && Instant::now() >= d
        {
            return Err(ShmError::Timeout { ms: 0 });
        }
        self.check_peer()
    }

    fn close(&self) {
        self.map().atomic_u32(OFF_CLOSED).fetch_or(self.role.closed_bit(), SeqCst);
        fence(SeqCst);
        for (seq, waiting) in [(OFF_DATA_SEQ, OFF_RECV_WAITING), (OFF_SPACE_SEQ, OFF_SEND_WAITING)]
        {
            let word = self.map().atomic_u32(seq);
            word.fetch_add(1, SeqCst);
            if self.map().atomic_u32(waiting).load(SeqCst) != 0 {
                let _ = futex::wake(word, futex::Flags::empty(), 1);
            }
        }
    }
}

fn deadline_of(timeout: Option<Duration>) -> Option<Instant> {
    timeout.map(|t| Instant::now() + t)
}

fn timeout_error(timeout: Option<Duration>, e: ShmError) -> ShmError {
    match (e, timeout) {
        (ShmError::Timeout { .. }, Some(t)) => ShmError::Timeout { ms: t.as_millis() as u64 },
        (e, _) => e,
    }
}

/// The sending end of a ring. Dropping it closes the ring (the receiver drains what was
/// sent, then sees the end).
#[derive(Debug)]
pub struct RingSender {
    end: End,
}

impl RingSender {
    /// The ring's data capacity in bytes (the largest message is 4 bytes less).
    pub fn capacity(&self) -> u64 {
        self.end.cap()
    }

    /// Sends one message, without waiting: `Ok(false)` when the ring has no room for it.
    pub fn try_send(&mut self, msg: &[u8]) -> Result<bool> {
        let need = LEN_BYTES + msg.len() as u64;
        let cap = self.end.cap();
        if need > cap || msg.len() > u32::MAX as usize {
            return Err(ShmError::MessageTooLarge { len: msg.len() as u64, capacity: cap });
        }
        if self.end.closed(Role::Receiver) {
            return Err(ShmError::Closed { role: "receiver".into() });
        }
        let tail = self.end.pos;
        if cap - (tail - self.end.peer_pos) < need {
            self.end.reload_peer()?;
            if cap - (tail - self.end.peer_pos) < need {
                return Ok(false);
            }
        }
        self.end.copy_in(tail, &(msg.len() as u32).to_le_bytes());
        self.end.copy_in(tail + LEN_BYTES, msg);
        self.end.publish(tail + need);
        Ok(true)
    }

    /// Sends one message, waiting for room.
    pub fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.send_timeout(msg, None)
    }

    /// Sends one message, waiting for room at most `timeout` (`None`: no bound).
    pub fn send_timeout(&mut self, msg: &[u8], timeout: Option<Duration>) -> Result<()> {
        let deadline = deadline_of(timeout);
        loop {
            if self.try_send(msg)? {
                return Ok(());
            }
            self.end.wait(deadline).map_err(|e| timeout_error(timeout, e))?;
        }
    }
}

impl Drop for RingSender {
    fn drop(&mut self) {
        self.end.close();
    }
}

/// The receiving end of a ring. Dropping it closes the ring (the sender's next send
/// fails with [`ShmError::Closed`]).
#[derive(Debug)]
pub struct RingReceiver {
    end: End,
}

impl RingReceiver {
    /// The ring's data capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.end.cap()
    }

    /// Receives one message into `out` (replacing its contents) without waiting:
    /// `Ok(Some(len))`, or `Ok(None)` when the ring is empty.
    pub fn try_recv(&mut self, out: &mut Vec<u8>) -> Result<Option<usize>> {
        let head = self.end.pos;
        if self.end.peer_pos == head {
            self.end.reload_peer()?;
            if self.end.peer_pos == head {
                return Ok(None);
            }
        }
        // The sender publishes its tail only after a whole message: what it says was
        // sent holds whole messages, or it lies.
        let avail = self.end.peer_pos - head;
        if avail < LEN_BYTES {
            return Err(ShmError::CorruptRing(format!("{avail} bytes sent: less than a length")));
        }
        let mut len = [0u8; 4];
        self.end.copy_out(head, &mut len);
        let len = u64::from(u32::from_le_bytes(len));
        if len > avail - LEN_BYTES {
            return Err(ShmError::CorruptRing(format!(
                "a {len}-byte message claimed, {} bytes sent",
                avail - LEN_BYTES
            )));
        }
        out.resize(len as usize, 0);
        self.end.copy_out(head + LEN_BYTES, out);
        self.end.publish(head + LEN_BYTES + len);
        Ok(Some(len as usize))
    }

    /// Receives one message into `out`, waiting for one: `Ok(Some(len))`, or `Ok(None)`
    /// once the sender closed the ring and every message it sent was received.
    pub fn recv(&mut self, out: &mut Vec<u8>) -> Result<Option<usize>> {
        self.recv_timeout(out, None)
    }

    /// [`recv`](Self::recv), waiting at most `timeout` (`None`: no bound).
    pub fn recv_timeout(
        &mut self,
        out: &mut Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<Option<usize>> {
        let deadline = deadline_of(timeout);
        loop {
            if let Some(n) = self.try_recv(out)? {
                return Ok(Some(n));
            }
            if self.end.closed(Role::Sender) {
                // A last message sent just before the close.
                return self.try_recv(out);
            }
            self.end.wait(deadline).map_err(|e| timeout_error(timeout, e))?;
        }
    }
}

impl Drop for RingReceiver {
    fn drop(&mut self) {
        self.end.close();
    }
}
