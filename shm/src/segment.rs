//! Segments: sealed memfds with an owner, and the serializable references that name them.
//!
//! A segment is an anonymous `memfd` (never a `/dev/shm` file), created `CLOEXEC`,
//! `fchmod`ed to `0600`, sized, and sealed against shrinking and growing at once. A
//! [`SegmentRef`] names it as *owner pid + owner start time + fd number + inode*; another
//! process of the same user opens it again through `/proc/<pid>/fd/<fd>` (the kernel's
//! same-uid `ptrace` read check guards that path), on any transport (TCP or UDS), without
//! passing fds over the connection.
//!
//! Why memfds and not named `/dev/shm` segments:
//! * **Lifetime.** A memfd has no name to unlink: the kernel frees it when its last fd
//!   and mapping go, so an owner that ends — by returning, panicking or SIGKILL — leaves
//!   nothing behind, and a new reader cannot open it once the owner's fd is gone. A
//!   named segment outlives a SIGKILLed owner until a sweep finds it.
//! * **No SIGBUS.** Only a memfd can be sealed: `F_SEAL_SHRINK` (every segment) makes
//!   truncating it fail with `EPERM`, so a mapping can never lose its pages under a
//!   reader; a `/dev/shm` file can be truncated by its owner at any time, and an
//!   `fstat` before mapping cannot stop a later shrink. Buffers add `F_SEAL_WRITE` once
//!   filled: readers then hold an immutable `&[T]`.
//! * **Who may open it.** The mode (`0600`) and the `/proc/<pid>/fd` path limit it to the
//!   owner's uid; there is no name to guess or squat, so no `O_EXCL` race.
//!
//! What opening needs, and what it does not give:
//! * `/proc` mounted without `hidepid`, and the owner *dumpable* (the default; a process
//!   that changed credentials or set `PR_SET_DUMPABLE` 0 can only be opened by root):
//!   the kernel checks `PTRACE_MODE_READ` for `/proc/<pid>/fd`, which Yama's
//!   `ptrace_scope` does not restrict (it limits attaching only), so a sibling actor
//!   opens a segment as well as the parent does;
//! * one host: a handle sent over TCP to another machine names a process there that is
//!   not the owner; its start time or the memfd's name and inode refuse it;
//! * no passing of fds over the connection (`SCM_RIGHTS`), so plough's connection code
//!   is untouched and TCP works the same as UDS.
//!
//! The memfd's name (visible in `/proc/<pid>/fd` and `/proc/<pid>/maps`) still encodes
//! `plough-shm.<uid>.<owner pid>.<owner start time>.<random>`, so tools (and the check
//! in [`SegmentRef`]'s opening) can tell a segment of ours from any other file.

use crate::error::{Result, ShmError};
use crate::limits::{MAX_SEGMENT_BYTES, NAME_PREFIX};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use rustix::fs::{Mode, OFlags, SealFlags};
use serde::{Deserialize, Serialize};

/// This process as an owner: its pid and start time (field 22 of `/proc/self/stat`,
/// which tells it from a later process that reuses the pid).
fn me() -> (u32, u64) {
    let pid = std::process::id();
    let start = plough_fork_prims::marker::process_start_time(pid).unwrap_or(0);
    (pid, start)
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The names of `seals`, for error messages.
pub(crate) fn seal_names(seals: SealFlags) -> String {
    let names = [
        (SealFlags::SHRINK, "F_SEAL_SHRINK"),
        (SealFlags::GROW, "F_SEAL_GROW"),
        (SealFlags::WRITE, "F_SEAL_WRITE"),
        (SealFlags::SEAL, "F_SEAL_SEAL"),
    ];
    let found: Vec<&str> =
        names.iter().filter(|(f, _)| seals.contains(*f)).map(|(_, n)| *n).collect();
    found.join("|")
}

/// A serializable name of a segment: who owns it and where it lives. It travels in an
/// ordinary call argument or stream item; it gives no access by itself (the opener must
/// be of the owner's uid, and the owner must still hold the segment).
///
/// Its fields are public because a reference is untrusted input: opening one checks
/// every field against the kernel's view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SegmentRef {
    /// The owner's pid.
    pub pid: u32,
    /// The owner's start time (`/proc/<pid>/stat` field 22).
    pub start_time: u64,
    /// The fd number of the memfd in the owner.
    pub fd: i32,
    /// The memfd's inode (tells it from a later file at the same fd number).
    pub ino: u64,
    /// The bytes the segment holds (what a reader maps).
    pub len: u64,
}

/// A segment this process created: the memfd, closed (and so freed, once nobody maps
/// it) on drop.
#[derive(Debug)]
pub(crate) struct Segment {
    fd: OwnedFd,
    reference: SegmentRef,
}

impl Segment {
    /// A new zero-filled memfd of `len` bytes, mode 0600, sealed with
    /// `F_SEAL_SHRINK | F_SEAL_GROW`.
    pub(crate) fn create(len: u64) -> Result<Segment> {
        if len == 0 || len > MAX_SEGMENT_BYTES {
            return Err(ShmError::BadLength { len, max: MAX_SEGMENT_BYTES });
        }
        let (pid, start_time) = me();
        let mut random = [0u8; 8];
        rustix::rand::getrandom(&mut random, rustix::rand::GetRandomFlags::empty())
            .map_err(|e| ShmError::os("getrandom", e))?;
        let name = format!(
            "{NAME_PREFIX}{}.{pid}.{start_time}.{:016x}",
            euid(),
            u64::from_le_bytes(random)
        );
        let flags = rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING;
        let fd =
            rustix::fs::memfd_create(name, flags).map_err(|e| ShmError::os("memfd_create", e))?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o600))
            .map_err(|e| ShmError::os("fchmod", e))?;
        rustix::fs::ftruncate(&fd, len).map_err(|e| ShmError::os("ftruncate", e))?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW)
            .map_err(|e| ShmError::os("F_ADD_SEALS", e))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| ShmError::os("fstat", e))?;
        let reference = SegmentRef { pid, start_time, fd: fd.as_raw_fd(), ino: st.st_ino, len };
        Ok(Segment { fd, reference })
    }

    /// Adds `seals`.
    pub(crate) fn seal(&self, seals: SealFlags) -> Result<()> {
        rustix::fs::fcntl_add_seals(&self.fd, seals).map_err(|e| ShmError::os("F_ADD_SEALS", e))
    }

    pub(crate) fn reference(&self) -> SegmentRef {
        self.reference
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl SegmentRef {
    /// Opens the segment this names, checking it all: the owner is the process that made
    /// the reference (pid and start time) and of our uid; the file is a memfd of ours
    /// (by its name), the same inode, mode 0600, our uid, at least `len` bytes, carrying
    /// `seals`. `writable` opens it read-write (rings), else read-only.
    pub(crate) fn open(&self, seals: SealFlags, writable: bool) -> Result<OwnedFd> {
        if self.len == 0 || self.len > MAX_SEGMENT_BYTES {
            return Err(ShmError::BadLength { len: self.len, max: MAX_SEGMENT_BYTES });
        }
        let gone = |e: rustix::io::Errno| match e {
            rustix::io::Errno::NOENT | rustix::io::Errno::SRCH => {
                ShmError::OwnerGone { pid: self.pid }
            }
            e => ShmError::os("open /proc/<pid>", e),
        };
        let proc_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let dir = rustix::fs::open(format!("/proc/{}", self.pid), proc_flags, Mode::empty())
            .map_err(gone)?;
        let ours = euid();
        let owner = rustix::fs::fstat(&dir).map_err(gone)?;
        if owner.st_uid != ours {
            return Err(ShmError::WrongOwner { found: owner.st_uid, ours });
        }
        // The directory fd is this process for good; a pid reused before it was opened
        // shows another start time.
        if plough_fork_prims::marker::process_start_time(self.pid) != Some(self.start_time) {
            return Err(ShmError::OwnerGone { pid: self.pid });
        }
        let at = format!("fd/{}", self.fd);
        let seg_gone = |e: rustix::io::Errno| match e {
            rustix::io::Errno::NOENT => ShmError::SegmentGone { pid: self.pid, fd: self.fd },
            rustix::io::Errno::SRCH => ShmError::OwnerGone { pid: self.pid },
            e => ShmError::os("open /proc/<pid>/fd/<fd>", e),
        };
        let link = rustix::fs::readlinkat(&dir, &at, Vec::new()).map_err(seg_gone)?;
        let link = link.to_string_lossy().into_owned();
        if !link.starts_with(&format!("/memfd:{NAME_PREFIX}")) {
            return Err(ShmError::NotOurs { found: link });
        }
        let mode = if writable { OFlags::RDWR } else { OFlags::RDONLY };
        let fd = rustix::fs::openat(&dir, &at, mode | OFlags::CLOEXEC, Mode::empty())
            .map_err(seg_gone)?;
        let st = rustix::fs::fstat(&fd).map_err(|e| ShmError::os("fstat", e))?;
        if st.st_ino != self.ino {
            return Err(ShmError::Replaced { expected: self.ino, found: st.st_ino });
        }
        if st.st_uid != ours {
            return Err(ShmError::WrongOwner { found: st.st_uid, ours });
        }
        if st.st_mode & 0o7777 != 0o600 {
            return Err(ShmError::WrongMode { found: st.st_mode & 0o7777 });
        }
        let size = u64::try_from(st.st_size).unwrap_or(0);
        if self.len > size {
            return Err(ShmError::LengthBeyondSegment { offset: 0, len: self.len, size });
        }
        let have = rustix::fs::fcntl_get_seals(&fd).map_err(|e| ShmError::os("F_GET_SEALS", e))?;
        if !have.contains(seals) {
            return Err(ShmError::NotSealed { missing: seal_names(seals - have) });
        }
        Ok(fd)
    }
}
