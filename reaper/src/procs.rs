//! The few facts about other processes that the reaper needs, read from `/proc`.
//!
//! A pid alone names nothing: it is recycled. Every decision here therefore pairs a pid
//! with its start time (field 22 of `/proc/<pid>/stat`), and a process that is a zombie
//! counts as gone — it runs no code and holds no resources but its pid. Processes whose
//! `/proc` entries we cannot read (another user's, under `hidepid`) are simply absent:
//! the reaper never needs them, because it never acts on them.

use std::collections::HashMap;
use std::fs;

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
    /// `comm` (at most 15 bytes); never evidence of anything.
    pub comm: String,
    /// Real, effective and saved uid, when `status` was readable.
    pub uids: Option<[u32; 3]>,
}

impl ProcInfo {
    /// Reads one process; `None` when it is gone or unreadable.
    pub fn read(pid: u32) -> Option<ProcInfo> {
        // Bytes, not a String: `comm` is whatever the process named itself (possibly cut
        // inside a UTF-8 sequence); only the fields after it must be text.
        let stat = fs::read(format!("/proc/{pid}/stat")).ok()?;
        let close = stat.iter().rposition(|&b| b == b')')?;
        let open = stat.iter().position(|&b| b == b'(')?;
        let comm = String::from_utf8_lossy(stat.get(open + 1..close)?).into_owned();
        let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // `rest` starts at field 3 (state): field N is fields[N - 3].
        let state = fields.first()?.chars().next()?;
        let ppid = fields.get(1)?.parse().ok()?;
        let start_time = fields.get(19)?.parse().ok()?;
        let uids = fs::read_to_string(format!("/proc/{pid}/status")).ok().and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Uid:"))?;
            let v: Vec<u32> =
                line[4..].split_whitespace().take(3).filter_map(|x| x.parse().ok()).collect();
            (v.len() == 3).then(|| [v[0], v[1], v[2]])
        });
        Some(ProcInfo { pid, ppid, state, start_time, comm, uids })
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
    let Ok(dir) = fs::read_dir("/proc") else { return Vec::new() };
    let mut pids: Vec<u32> =
        dir.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect();
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
        let procs = all_pids().into_iter().filter_map(|p| Some((p, ProcInfo::read(p)?))).collect();
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

    #[test]
    fn reads_itself_and_its_parent() {
        let me = ProcInfo::read(std::process::id()).unwrap();
        assert!(me.is_running());
        assert!(me.is_owned_by(our_uid()));
        assert_eq!(Some(me.start_time), plough_fork_prims::marker::process_start_time(me.pid));
        let table = ProcTable::scan();
        assert!(table.is_descendant_of(me.pid, me.ppid));
        assert!(!table.is_descendant_of(me.ppid, me.pid));
        assert!(is_running_as(me.pid, me.start_time));
        assert!(!is_running_as(me.pid, me.start_time + 1));
    }
}
