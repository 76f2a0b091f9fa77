//! Every limit and timeout of the crate, in one place.

use std::time::Duration;

/// The largest segment a handle may name (1 TiB): a length beyond it is refused before
/// anything is opened or mapped.
pub const MAX_SEGMENT_BYTES: u64 = 1 << 40;

/// The smallest ring data area (bytes; a power of two).
pub const MIN_RING_CAPACITY: u64 = 64;

/// The largest ring data area (bytes; a power of two).
pub const MAX_RING_CAPACITY: u64 = 1 << 32;

/// How long one futex wait of a ring end sleeps before it checks that its peer process is
/// still alive (a peer killed by SIGKILL never sets the closed flag): the bound on how
/// late a blocked end learns of a dead peer. A wake-up by the peer ends a wait at once.
pub const PEER_CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// The prefix of the name of every memfd this crate creates (as `/proc/<pid>/fd/<n>`
/// shows it: `/memfd:plough-shm.<uid>.<pid>.<start time>.<random> (deleted)`). A handle
/// whose file does not carry it is not ours.
pub const NAME_PREFIX: &str = "plough-shm.";

/// How many times a ring end that cannot go on checks its peer's position (with a
/// `spin_loop` hint between) before it sleeps on the futex: a few microseconds, less
/// than one futex sleep and wake-up, and bounded.
pub const SPIN_BEFORE_SLEEP: u32 = 200;
