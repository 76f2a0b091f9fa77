//! How close this process is to running out of file descriptors, and whether an error
//! says it did.
//!
//! Running out of fds (`EMFILE`, or `ENFILE` for the whole system) is a state a process
//! under a connection flood, or with a low `RLIMIT_NOFILE`, reaches in normal operation:
//! the code that allocates fds must report it as a value, never panic on it. What is
//! designed out here is guessing: [`open_fd_count`] counts the real table
//! (`/proc/self/fd`), [`fd_headroom`] asks the cheap bound [`fd_table_size`] and near
//! the limit probes the room by opening what it asks about,
//! [`nofile_soft_limit`] reads the limit at the moment of asking (a
//! program may lower or raise it at any time), and [`is_out_of_fds`] recognises the
//! condition also in an error that was given context on the way (`io::Error::new(kind,
//! "pidfd_open(...) failed: Too many open files")` has lost its errno).
//!
//! A leaf: imports no other module of the crate.

use std::io;

/// The soft `RLIMIT_NOFILE` of this process now; `None` when it is unlimited.
pub fn nofile_soft_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// How many fds this process has open now (the entries of `/proc/self/fd`, less the one
/// the count itself opens).
///
/// # Errors
///
/// `/proc/self/fd` cannot be read — with `EMFILE` when not even that one fd is left.
pub fn open_fd_count() -> io::Result<usize> {
    let dir = std::fs::read_dir("/proc/self/fd")?;
    // The directory's own fd is listed too.
    Ok(dir.count().saturating_sub(1))
}

/// The size of this process's fd table (`FDSize` in `/proc/self/status`): more than the
/// highest open fd, so at least the number of open fds. Reading it costs the same at 10
/// fds and at 10,000, unlike counting them.
pub fn fd_table_size() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("FDSize:")).and_then(|v| v.trim().parse().ok())
}

/// How many more fds this process may open before `EMFILE`, up to `enough`: `None` when
/// the limit is unlimited; `Some(enough)` when at least that many are free; less when
/// fewer are (`Some(0)`: none).
///
/// When the whole fd table (`FDSize`) fits under the limit with `enough` to spare, that is
/// the answer, for the cost of one small read. Closer to the limit the fds are not counted
/// (a pass over `/proc/self/fd` costs 0.2 ms at 100 open fds, 2 ms at 1,000) but probed:
/// up to `enough` duplicates of one fd are made and closed at once (two syscalls each,
/// whatever the table holds). Another thread may take or free fds meanwhile: the answer is
/// for the instant of asking.
pub fn fd_headroom(enough: u64) -> Option<u64> {
    let limit = nofile_soft_limit()?;
    if let Some(table) = fd_table_size()
        && table.saturating_add(enough) <= limit
    {
        return Some(enough);
    }
    Some(probe_free_fds(enough))
}

/// How many fds (up to `enough`) can be opened now: opens them (`/dev/null` and its
/// duplicates) and closes them again.
fn probe_free_fds(enough: u64) -> u64 {
    use rustix::fs::{Mode, OFlags};
    if enough == 0 {
        return 0;
    }
    let Ok(first) = rustix::fs::open("/dev/null", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
    else {
        return 0;
    };
    let mut held = vec![first];
    while (held.len() as u64) < enough {
        match rustix::io::fcntl_dupfd_cloexec(&held[0], 0) {
            Ok(fd) => held.push(fd),
            Err(_) => break,
        }
    }
    held.len() as u64
}

/// Whether `e` (or an error it was made from) means "no fd left": `EMFILE` or `ENFILE`,
/// by errno or, for an error that only kept the text, by its message.
pub fn is_out_of_fds(e: &io::Error) -> bool {
    if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
        return true;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = e.get_ref().map(|s| s as _);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>()
            && matches!(io.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
        {
            return true;
        }
        source = s.source();
    }
    // strerror(EMFILE) and strerror(ENFILE), as an error with context spells them.
    e.to_string().contains("Too many open files")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_exhaustion_is_recognised_by_errno_and_by_text() {
        assert!(is_out_of_fds(&io::Error::from_raw_os_error(libc::EMFILE)));
        assert!(is_out_of_fds(&io::Error::from_raw_os_error(libc::ENFILE)));
        let with_context = io::Error::other(format!(
            "pidfd_open(7) failed: {}",
            io::Error::from_raw_os_error(libc::EMFILE)
        ));
        assert!(is_out_of_fds(&with_context), "{with_context}");
        let wrapped = io::Error::other(io::Error::from_raw_os_error(libc::EMFILE));
        assert!(is_out_of_fds(&wrapped));
        assert!(!is_out_of_fds(&io::Error::from_raw_os_error(libc::EAGAIN)));
        assert!(!is_out_of_fds(&io::Error::other("broken pipe")));
    }

    #[test]
    fn the_count_sees_our_fds_and_the_headroom_is_below_the_limit() {
        let fds: Vec<_> = (0..8).map(|_| rustix::pipe::pipe().unwrap()).collect();
        let open = open_fd_count().unwrap();
        assert!(open >= 16 + 3, "{open} fds open with 16 pipe ends held");
        let table = fd_table_size().expect("FDSize");
        assert!(table >= open as u64, "the table ({table}) holds every open fd ({open})");
        if let Some(limit) = nofile_soft_limit() {
            assert_eq!(fd_headroom(16), Some(16), "{open} of {limit} open");
            // Asked for more than the table leaves: probed, and the probe gives its fds back.
            let asked = limit.saturating_sub(table) + 32;
            let room = fd_headroom(asked).unwrap();
            assert!(room > 0 && room <= asked, "{room} of {asked}");
            let after = open_fd_count().unwrap();
            assert!(after <= open + 8, "the probe closed what it opened: {open} -> {after}");
        }
        assert_eq!(probe_free_fds(0), 0);
        assert_eq!(probe_free_fds(5), 5);
        drop(fds);
    }
}
