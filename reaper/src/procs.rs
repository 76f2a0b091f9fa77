//! The few facts about other processes that the reaper needs, read from `/proc`.
//!
//! A pid alone names nothing: it is recycled. Every decision here therefore pairs a pid
//! with its start time (field 22 of `/proc/<pid>/stat`), and a process that is a zombie
//! counts as gone — it runs no code and holds no resources but its pid. Processes whose
//! `/proc` entries we cannot read (another user's, under `hidepid`) are simply absent:
//! the reaper never needs them, because it never acts on them.
//!
//! The files are parsed by `procfs`; `read_lossy` covers the one thing it does not: a
//! file with a line that is not UTF-8.

use procfs::FromRead;
use procfs::process::{Process, Stat, Status};
use std::collections::HashMap;
use std::io::Read;

/// What `/proc/<pid>/stat` and `/proc/<pid>/status` say about one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    /// The pid.
    pub pid: u32,
    /// The parent's pid.
    pub ppid: u32,
    /// The state letter (`R`, `S`, `D`, `Z`, ...).
    pub state: char,
    /// Start time in clock ticks since boot.
    pub start_time: u64,
    /// `comm` (at most 15 bytes, invalid UTF-8 replaced); never evidence of anything.
    pub comm: String,
    /// Real, effective and saved uid, when `status` was readable.
    pub uids: Option<[u32; 3]>,
}

impl ProcInfo {
    /// Reads one process; `None` when it is gone or unreadable.
    pub fn read(pid: u32) -> Option<ProcInfo> {
        ProcInfo::of(&Process::new(i32::try_from(pid).ok()?).ok()?)
    }

    /// Reads an opened `/proc/<pid>`; `None` when it is gone or unreadable.
    pub(crate) fn of(process: &Process) -> Option<ProcInfo> {
        // procfs parses `stat` after the *last* `)` and converts lossily, so a `comm`
        // with spaces, parentheses or a cut UTF-8 sequence cannot shift the fields.
        let stat: Stat = process.stat().ok()?;
        let uids = read_lossy::<Status>(process, "status").map(|s| [s.ruid, s.euid, s.suid]);
        Some(ProcInfo {
            pid: u32::try_from(stat.pid).ok()?,
            ppid: u32::try_from(stat.ppid).ok()?,
            state: stat.state,
            start_time: stat.starttime,
            comm: stat.comm,
            uids,
        })
    }

    /// Whether the process still runs (not a zombie, not dead).
    pub fn is_running(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }

    /// Whether its real, effective and saved uid are all `uid`.
    pub fn is_owned_by(&self, uid: u32) -> bool {
        self.uids.is_some_and(|u| u.iter().all(|&x| x == uid))
    }
}

/// Parses `/proc/<pid>/<file>` with procfs after replacing invalid UTF-8.
///
/// procfs reads `status` and `maps` line by line as `String`s, so one line that is not
/// UTF-8 fails the whole file: `status` carries `comm` raw (`Name:`; a name cut inside a
/// UTF-8 sequence by the kernel's 15-byte limit), `maps` carries file names raw. Neither
/// is a field we use, so they are made valid first.
pub(crate) fn read_lossy<T: FromRead>(process: &Process, file: &str) -> Option<T> {
    let mut bytes = Vec::with_capacity(2048);
    process.open_relative(file).ok()?.read_to_end(&mut bytes).ok()?;
    T::from_read(String::from_utf8_lossy(&bytes).as_bytes()).ok()
}

/// Our effective uid: the only uid whose processes and files the reaper touches.
pub fn our_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Whether `pid` runs now with exactly this start time (and is not a zombie).
pub fn is_running_as(pid: u32, start_time: u64) -> bool {
    ProcInfo::read(pid).is_some_and(|p| p.start_time == start_time && p.is_running())
}

/// The pids listed in `/proc` (those we can see).
pub fn all_pids() -> Vec<u32> {
    let Ok(iter) = procfs::process::all_processes() else { return Vec::new() };
    let mut pids: Vec<u32> = iter.filter_map(|p| u32::try_from(p.ok()?.pid).ok()).collect();
    pids.sort_unstable();
    pids
}

/// A snapshot of every visible process, by pid.
#[derive(Debug, Default)]
pub struct ProcTable {
    procs: HashMap<u32, ProcInfo>,
}

impl ProcTable {
    /// Reads every visible process.
    pub fn scan() -> ProcTable {
        let procs = procfs::process::all_processes()
            .into_iter()
            .flatten()
            .filter_map(|p| ProcInfo::of(&p.ok()?))
            .map(|p| (p.pid, p))
            .collect();
        ProcTable { procs }
    }

    /// One process, if it was visible.
    pub fn get(&self, pid: u32) -> Option<&ProcInfo> {
        self.procs.get(&pid)
    }

    /// Whether `ancestor` is a proper ancestor of `pid` in the live process tree.
    pub fn is_descendant_of(&self, pid: u32, ancestor: u32) -> bool {
        let mut cur = pid;
        for _ in 0..4096 {
            let Some(p) = self.procs.get(&cur) else { return false };
            if p.ppid == ancestor {
                return true;
            }
            if p.ppid <= 1 || p.ppid == cur {
                return false;
            }
            cur = p.ppid;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plough_fork_prims::{ForkOptions, fork_blocking};
    use rustix::pipe::{PipeFlags, pipe_with};
    use std::os::fd::{AsRawFd, OwnedFd};

    #[test]
    fn reads_itself_and_its_parent() {
        let me = ProcInfo::read(std::process::id()).unwrap();
        assert!(me.is_running());
        assert!(me.is_owned_by(our_uid()));
        assert_eq!(Some(me.start_time), plough_fork_prims::marker::process_start_time(me.pid));
        let table = ProcTable::scan();
        assert_eq!(table.get(me.pid).map(|p| p.start_time), Some(me.start_time));
        assert!(table.is_descendant_of(me.pid, me.ppid));
        assert!(!table.is_descendant_of(me.ppid, me.pid));
        assert!(is_running_as(me.pid, me.start_time));
        assert!(!is_running_as(me.pid, me.start_time + 1));
        assert!(all_pids().contains(&me.pid));
    }

    #[test]
    fn absent_pids_read_as_none() {
        assert_eq!(ProcInfo::read(0), None);
        assert_eq!(ProcInfo::read(u32::MAX), None, "not a valid pid_t");
        let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .map_or(4_194_304, |s| s.trim().parse().unwrap());
        assert_eq!(ProcInfo::read(pid_max), None, "pids stay below pid_max");
    }

    /// A child that renames itself to `comm` (raw bytes), reports ready, and exits when
    /// `release` is written to or closed.
    fn renamed_child(comm: &'static [u8]) -> (plough_fork_prims::ChildHandle, OwnedFd) {
        let (ready_r, ready_w) = pipe_with(PipeFlags::CLOEXEC).unwrap();
        let (release_r, release_w) = pipe_with(PipeFlags::CLOEXEC).unwrap();
        let opts =
            ForkOptions::default().keep_fd(ready_w.as_raw_fd()).keep_fd(release_r.as_raw_fd());
        let child = fork_blocking(&opts, move || {
            let mut name = comm.to_vec();
            name.push(0);
            let name = std::ffi::CStr::from_bytes_with_nul(&name).unwrap();
            rustix::thread::set_name(name).unwrap();
            rustix::io::write(&ready_w, b"r").unwrap();
            let _ = rustix::io::read(&release_r, &mut [0u8; 1]);
            0
        })
        .unwrap();
        let mut ready = [0u8; 1];
        assert_eq!(rustix::io::read(&ready_r, &mut ready).unwrap(), 1, "child not ready");
        (child, release_w)
    }

    #[test]
    fn a_comm_with_parens_spaces_or_a_cut_utf8_sequence_does_not_shift_fields() {
        let me = std::process::id();
        let uid = our_uid();
        // `\xc3` alone is the first byte of a two-byte sequence: `status` then holds a
        // `Name:` line that is not UTF-8.
        for comm in [&b"a) b (c) S 1 2"[..], b"abcdefghijklmn\xc3", b") (\xff\xfe"] {
            let (child, release) = renamed_child(comm);
            let pid = child.pid();
            let raw = std::fs::read(format!("/proc/{pid}/comm")).unwrap();
            assert_eq!(&raw[..raw.len() - 1], comm, "the kernel kept the name as given");
            let info = ProcInfo::read(pid).expect("a renamed child is readable");
            assert_eq!(info.comm, String::from_utf8_lossy(comm), "{comm:?}");
            assert_eq!((info.pid, info.ppid), (pid, me), "{comm:?}");
            assert!(info.is_running(), "{comm:?}: state {}", info.state);
            assert_eq!(info.uids, Some([uid; 3]), "{comm:?}: status parsed");
            assert_eq!(
                Some(info.start_time),
                plough_fork_prims::marker::process_start_time(pid),
                "{comm:?}"
            );
            assert!(ProcTable::scan().is_descendant_of(pid, me), "{comm:?}");
            drop(release);
            assert!(child.wait_blocking().unwrap().success());
        }
    }

    #[test]
    fn a_zombie_is_visible_but_not_running() {
        let child = fork_blocking(&ForkOptions::default(), || 3).unwrap();
        let pid = rustix::process::Pid::from_raw(child.pid() as i32).unwrap();
        // Waits for the exit without reaping: the child is a zombie until `wait_blocking`.
        rustix::process::waitid(
            rustix::process::WaitId::Pid(pid),
            rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOWAIT,
        )
        .unwrap();
        let zombie = ProcInfo::read(child.pid()).expect("a zombie still has /proc/<pid>");
        assert_eq!(zombie.state, 'Z');
        assert!(!zombie.is_running());
        assert!(!is_running_as(zombie.pid, zombie.start_time));
        assert_eq!(child.wait_blocking().unwrap().code(), Some(3));
        assert!(!is_running_as(zombie.pid, zombie.start_time), "reaped");
    }
}
