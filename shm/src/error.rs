//! The typed errors of the crate. They are `Clone` and serde-serializable so that an
//! actor can send one home as its call's error.

use serde::{Deserialize, Serialize};

/// What went wrong with a segment, a handle or a ring.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ShmError {
    /// A system call failed (errno as the OS reported it).
    #[error("{op} failed: {}", errno_text(*errno))]
    Os {
        /// The operation (`memfd_create`, `mmap`, ...).
        op: String,
        /// The raw OS error number.
        errno: i32,
    },
    /// The owner named by the handle is not running any more (or its pid now belongs to
    /// another process): its segments are gone with it.
    #[error("the owner of the segment (pid {pid}) is gone")]
    OwnerGone {
        /// The owner's pid.
        pid: u32,
    },
    /// The owner no longer holds the segment (fd closed: the owner dropped it).
    #[error("pid {pid} holds no segment at fd {fd}")]
    SegmentGone {
        /// The owner's pid.
        pid: u32,
        /// The fd the handle named.
        fd: i32,
    },
    /// The file the handle names is not a segment of this crate.
    #[error("not a plough segment: {found}")]
    NotOurs {
        /// What the file is (its `/proc/<pid>/fd` link).
        found: String,
    },
    /// The segment is a different file than the one the handle was made for (its fd was
    /// reused).
    #[error("the segment was replaced: inode {found}, the handle names {expected}")]
    Replaced {
        /// The inode the handle names.
        expected: u64,
        /// The inode found.
        found: u64,
    },
    /// The segment (or its owner process) belongs to another user.
    #[error("the segment belongs to uid {found}, not to us (uid {ours})")]
    WrongOwner {
        /// The owner's uid.
        found: u32,
        /// Ours.
        ours: u32,
    },
    /// The segment's mode is not `0600`.
    #[error("the segment has mode {found:o}, not 600")]
    WrongMode {
        /// Its permission bits.
        found: u32,
    },
    /// The segment lacks seals it must have (a memfd that could shrink under a mapping,
    /// or a buffer still writable by its owner).
    #[error("the segment is not sealed: missing {missing}")]
    NotSealed {
        /// The missing seals, by name.
        missing: String,
    },
    /// The handle claims more bytes than the segment has.
    #[error("{len} bytes claimed at offset {offset}, but the segment holds {size}")]
    LengthBeyondSegment {
        /// Offset claimed.
        offset: u64,
        /// Length claimed.
        len: u64,
        /// The segment's real size.
        size: u64,
    },
    /// A length over [`MAX_SEGMENT_BYTES`](crate::limits::MAX_SEGMENT_BYTES), or zero.
    #[error("a segment of {len} bytes is refused (1 to {max} bytes)")]
    BadLength {
        /// Length asked for.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A typed view of the wrong element type or of a length that is not a whole number
    /// of elements.
    #[error(
        "the segment holds {len} bytes of {elem_size}-byte elements; asked for {asked}-byte ones"
    )]
    ElementMismatch {
        /// The element size the handle declares.
        elem_size: u64,
        /// Its byte length.
        len: u64,
        /// `size_of` the type asked for.
        asked: u64,
    },
    /// A ring's header says what cannot be true.
    #[error("corrupt ring header: {0}")]
    CorruptRing(String),
    /// A ring's capacity out of range or not a power of two.
    #[error("a ring of {0} bytes is refused (a power of two from 64 B to 4 GiB)")]
    BadCapacity(u64),
    /// A message larger than the ring can hold.
    #[error("a {len}-byte message does not fit a ring of {capacity} bytes")]
    MessageTooLarge {
        /// Message length.
        len: u64,
        /// The ring's capacity.
        capacity: u64,
    },
    /// This end of the ring (sender or receiver) is already taken by a live process.
    #[error("the ring's {role} end is already attached (pid {pid})")]
    AlreadyAttached {
        /// `sender` or `receiver`.
        role: String,
        /// Who holds it.
        pid: u32,
    },
    /// The other end closed the ring.
    #[error("the ring's {role} closed it")]
    Closed {
        /// `sender` or `receiver`: who closed.
        role: String,
    },
    /// The other end's process died without closing the ring.
    #[error("the ring's {role} (pid {pid}) died")]
    PeerDied {
        /// `sender` or `receiver`.
        role: String,
        /// Its pid.
        pid: u32,
    },
    /// A bounded wait ran out.
    #[error("timed out after {ms} ms")]
    Timeout {
        /// The bound.
        ms: u64,
    },
}

fn errno_text(errno: i32) -> String {
    std::io::Error::from_raw_os_error(errno).to_string()
}

impl ShmError {
    /// A failed system call.
    pub(crate) fn os(op: &str, e: rustix::io::Errno) -> ShmError {
        ShmError::Os { op: op.to_owned(), errno: e.raw_os_error() }
    }
}

/// The crate's result type.
pub type Result<T, E = ShmError> = std::result::Result<T, E>;
