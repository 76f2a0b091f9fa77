//! Closing every inherited file descriptor except an explicit keep-set.
//!
//! A forked child inherits every fd of its parent: listening sockets, the parent's
//! connections to other actors, epoll and signal fds of the parent's runtime, files. Left
//! open they keep peers from seeing EOF, keep ports bound after the parent exits, and let
//! the child write into the parent's conversations. So the child prelude closes all of
//! them except the few it is given on purpose (stdio and its handshake socket).
//!
//! Three ways, best first:
//! 1. `close_range(2)` closes each gap between kept fds in one syscall (one per gap),
//!    whatever the table holds, and nothing is listed or counted;
//! 2. without `close_range` (ENOSYS, kernels before 5.9, or EPERM from a seccomp filter
//!    older than the syscall), `/proc/self/fd` names the open fds and each is `close`d;
//! 3. without either, every fd below the soft `RLIMIT_NOFILE` is `close`d (an fd opened
//!    before the limit was lowered, above it, stays open: nothing finds it).
//!
//! The first way lists nothing on purpose. Reading `/proc/self/fd` makes the kernel build
//! a dentry and an inode for every open fd, in the child, and tear them down again when
//! the parent reaps it: a parent holding a connection per child paid that for every fd
//! of every fork, so starting 1,000 actors at once cost time quadratic in 1,000 (21 s
//! where 300 took 2 s).
//!
//! Every way tolerates fds that close underneath it (`EBADF` is not an error).
//!
//! # Safety
//!
//! Closing an fd that other code owns is what this module is for: it is meant to run in a
//! freshly forked, single-threaded child before any code that could own an fd runs there,
//! or in a process that has arranged for no other code to hold fds outside `keep`.
//! `close_inherited_fds` is therefore an `unsafe fn`.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};

/// How [`close_inherited_fds`] closed the fds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScrubMethod {
    /// `close_range(2)` closed the gaps between kept fds; nothing was listed.
    CloseRange,
    /// `/proc/self/fd` listed them, one `close(2)` each.
    ProcSelfFd,
    /// No `/proc`: one `close(2)` for every fd number below `RLIMIT_NOFILE`.
    RlimitLoop,
}

/// What [`close_inherited_fds`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScrubReport {
    /// How many open fds were closed: `None` for [`ScrubMethod::CloseRange`], which
    /// closes ranges without counting what was in them.
    pub closed: Option<usize>,
    /// Which way.
    pub method: ScrubMethod,
}

/// Checks a keep-set: every fd non-negative and open. Returns it sorted and deduplicated.
///
/// # Errors
///
/// `InvalidInput` for a negative fd, `EBADF` (with the fd named) for one that is not open.
pub fn validate_keep_set(keep: &[RawFd]) -> io::Result<Vec<RawFd>> {
    let mut sorted = keep.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    for &fd in &sorted {
        if fd < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("keep-set holds a negative fd ({fd})"),
            ));
        }
        // SAFETY: F_GETFD only reads the descriptor flags; an fd that is not open yields
        // EBADF and no other effect.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            let err = io::Error::last_os_error();
            return Err(io::Error::new(
                err.kind(),
                format!("keep-set fd {fd} is not an open file descriptor: {err}"),
            ));
        }
    }
    Ok(sorted)
}

/// Closes every open fd of this process except those in `keep`; returns how it closed
/// them (and how many, where it counted them).
///
/// C form: `close_range(lo, hi, 0)` over each gap between kept fds; see the module docs
/// for the fallbacks. Its cost does not grow with the number of fds inherited.
///
/// # Errors
///
/// The keep-set is checked first ([`validate_keep_set`]): a negative fd or one that is
/// not open is an error and nothing is closed. Failures to close are not errors (an fd
/// that vanished underneath is fine); failing to list `/proc/self/fd` falls back.
///
/// # Safety
///
/// Every fd outside `keep` is closed, whoever owns it: the caller must ensure that no
/// live object (an `OwnedFd`, a `File`, a runtime's reactor) will use or close one of them
/// afterwards — true in a freshly forked child before any other code runs.
///
/// # References
///
/// close_range(2), proc(5) (`/proc/pid/fd`), getrlimit(2).
pub unsafe fn close_inherited_fds(keep: &[RawFd]) -> io::Result<ScrubReport> {
    let keep = validate_keep_set(keep)?;
    if close_range_gaps(&keep) {
        return Ok(ScrubReport { closed: None, method: ScrubMethod::CloseRange });
    }
    let (closed, method) = match list_open_fds() {
        Ok(open) => {
            let victims = open.into_iter().filter(|fd| keep.binary_search(fd).is_err());
            (victims.filter(|&fd| close_one(fd)).count(), ScrubMethod::ProcSelfFd)
        }
        Err(_) => {
            let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
                .current
                .unwrap_or(1 << 20)
                .min(i32::MAX as u64) as RawFd;
            let closed = (0..limit)
                .filter(|fd| keep.binary_search(fd).is_err())
                .filter(|&fd| close_one(fd))
                .count();
            (closed, ScrubMethod::RlimitLoop)
        }
    };
    Ok(ScrubReport { closed: Some(closed), method })
}

/// Lists the open fds of this process through `/proc/self/fd`, without the fd used to
/// read the directory itself.
pub fn list_open_fds() -> io::Result<Vec<RawFd>> {
    use rustix::fs::{Dir, Mode, OFlags};
    let dirfd = rustix::fs::open(
        "/proc/self/fd",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let own = std::os::fd::AsRawFd::as_raw_fd(&dirfd);
    let mut dir = Dir::new(dirfd)?;
    let mut fds = Vec::new();
    while let Some(entry) = dir.read() {
        let entry = entry?;
        let Ok(name) = entry.file_name().to_str() else { continue };
        if let Ok(fd) = name.parse::<RawFd>()
            && fd != own
        {
            fds.push(fd);
        }
    }
    fds.sort_unstable();
    Ok(fds)
}

/// `close(fd)`; `true` when an open fd was closed. EBADF (already closed) and EINTR
/// (closed anyway on Linux) are not reported.
fn close_one(fd: RawFd) -> bool {
    // SAFETY: the caller of `close_inherited_fds` vouched that fds outside the keep-set
    // are not used by anything alive; closing a closed fd is a harmless EBADF.
    let rc = unsafe { libc::close(fd) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
}

/// Whether `close_range` answered that it is missing or forbidden (ENOSYS, EPERM): it
/// is not tried again.
static CLOSE_RANGE_UNUSABLE: AtomicBool = AtomicBool::new(false);

/// Closes every fd not in `keep` (sorted), gap by gap, with `close_range`. Returns
/// `false` when a gap could not be closed that way: the kernel lacks it or a seccomp
/// filter forbids it (remembered), or, never seen, it failed otherwise.
fn close_range_gaps(keep: &[RawFd]) -> bool {
    if CLOSE_RANGE_UNUSABLE.load(Ordering::Relaxed) {
        return false;
    }
    let mut lo = 0u32;
    for &k in keep {
        let k = k as u32;
        if k > lo && !close_range(lo, k - 1) {
            return false;
        }
        lo = k + 1;
    }
    close_range(lo, u32::MAX)
}

fn close_range(first: u32, last: u32) -> bool {
    // SAFETY: see `close_one`; close_range(2) with flags 0 only closes descriptors.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
    if rc == 0 {
        return true;
    }
    // ENOSYS: a kernel before 5.9. EPERM: a seccomp filter that predates the syscall
    // (older container runtimes' default profiles answer EPERM to what they do not
    // know). Neither closed anything, now or later: the listing does the work.
    if matches!(io::Error::last_os_error().raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) {
        CLOSE_RANGE_UNUSABLE.store(true, Ordering::Relaxed);
    }
    // Whatever else failed (EINVAL cannot, for first <= last and flags 0), this gap may
    // still be open: the listing closes what is left.
    false
}
