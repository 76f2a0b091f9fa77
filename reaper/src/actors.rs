//! Which processes are plough actors of ours, and which of them to reap.
//!
//! Only a marker file proves that a process is an actor (see
//! [`plough_fork_prims::marker`]); its name proves nothing, and a marker proves nothing
//! either unless the file sits in a directory of ours, is owned by us, and the process it
//! names runs now with the recorded start time and with our uid (real, effective and
//! saved). Anything else is left alone, whatever it claims.

use crate::error::ReapError;
use crate::procs::{ProcInfo, ProcTable, our_uid};
use plough_fork_prims::marker::{MarkerInfo, half_written_markers, markers_dir, read_markers};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Which actors to pick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Actors cut off from their tree: the tree's root has no live marker, the recorded
    /// parent has none, or the process was reparented away from that parent.
    Orphans,
    /// Every actor below this pid: in the live process tree, or through the parent
    /// pids recorded in markers (live or stale), so actors reparented away are found too.
    Descendants(u32),
    /// Every live actor of the tree whose root has this uuid (the root included).
    Tree(String),
}

/// A live actor of ours, as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// What its marker says.
    pub info: MarkerInfo,
    /// Its marker file.
    pub marker: PathBuf,
    /// Why it was selected (e.g. "tree root gone").
    pub reason: String,
}

/// The marker's fields, then `marker` and `reason` (the marker type itself stays
/// serde-free).
impl Serialize for Actor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let m = &self.info;
        let mut st = s.serialize_struct("Actor", 10)?;
        st.serialize_field("name", &m.name)?;
        st.serialize_field("pid", &m.pid)?;
        st.serialize_field("uuid", &m.uuid)?;
        st.serialize_field("tree", &m.tree)?;
        st.serialize_field("parent_pid", &m.parent_pid)?;
        st.serialize_field("start_time", &m.start_time)?;
        st.serialize_field("addr", &m.addr)?;
        st.serialize_field("method", &m.method)?;
        st.serialize_field("marker", &self.marker)?;
        st.serialize_field("reason", &self.reason)?;
        st.end()
    }
}

/// Checks that `dir` may be trusted: a real directory (not a symlink) owned by us and
/// closed to others. A missing directory is fine (there is nothing in it).
///
/// # Errors
/// [`ReapError::UntrustedDir`] otherwise.
pub fn check_own_dir(dir: &Path) -> Result<bool, ReapError> {
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(ReapError::Io { path: dir.to_owned(), source: e }),
    };
    let why = if meta.file_type().is_symlink() {
        "it is a symlink".to_owned()
    } else if !meta.is_dir() {
        "it is not a directory".to_owned()
    } else if meta.uid() != our_uid() {
        format!("it belongs to uid {}", meta.uid())
    } else if meta.mode() & 0o022 != 0 {
        format!("others may write it (mode {:o})", meta.mode() & 0o777)
    } else {
        return Ok(true);
    };
    Err(ReapError::UntrustedDir { path: dir.to_owned(), why })
}

/// Every marker under `runtime_dir` whose file is ours, with its path; the directories
/// are checked first (see [`check_own_dir`]).
///
/// # Errors
/// The runtime or markers directory cannot be trusted.
pub fn own_markers(runtime_dir: &Path) -> Result<Vec<(PathBuf, MarkerInfo)>, ReapError> {
    if !check_own_dir(runtime_dir)? || !check_own_dir(&markers_dir(runtime_dir))? {
        return Ok(Vec::new());
    }
    let uid = our_uid();
    Ok(read_markers(runtime_dir)
        .into_iter()
        .filter(|(p, _)| std::fs::symlink_metadata(p).is_ok_and(|m| m.uid() == uid && m.is_file()))
        .collect())
}

/// Every half-written marker (`.<pid>.<uuid>.tmp`: a marker whose writer had not yet
/// renamed it into place) under `runtime_dir` whose file is ours, with its writer's pid;
/// the directories are checked first (see [`check_own_dir`]). Whether its writer is gone
/// is [`plough_fork_prims::marker::half_written_is_stale`]'s question: a live actor's
/// marker in the making must stay.
///
/// # Errors
/// The runtime or markers directory cannot be trusted.
pub fn own_half_written(runtime_dir: &Path) -> Result<Vec<(PathBuf, u32)>, ReapError> {
    if !check_own_dir(runtime_dir)? || !check_own_dir(&markers_dir(runtime_dir))? {
        return Ok(Vec::new());
    }
    let uid = our_uid();
    Ok(half_written_markers(runtime_dir)
        .into_iter()
        .filter(|(p, _)| std::fs::symlink_metadata(p).is_ok_and(|m| m.uid() == uid && m.is_file()))
        .collect())
}

/// Whether the process a marker names runs now, is that process (start time), and is
/// entirely ours.
pub fn marker_is_ours_and_live(m: &MarkerInfo, proc_info: Option<&ProcInfo>) -> bool {
    proc_info
        .is_some_and(|p| p.start_time == m.start_time && p.is_running() && p.is_owned_by(our_uid()))
}

/// The live actors of ours under `runtime_dir` that `selection` picks, sorted by pid.
///
/// # Errors
/// The runtime or markers directory cannot be trusted.
pub fn find_actors(runtime_dir: &Path, selection: &Selection) -> Result<Vec<Actor>, ReapError> {
    let table = ProcTable::scan();
    let markers = own_markers(runtime_dir)?;
    Ok(select(&table, &markers, selection))
}

/// The selection logic over a process table and markers (pure, for testing).
pub(crate) fn select(
    table: &ProcTable,
    markers: &[(PathBuf, MarkerInfo)],
    selection: &Selection,
) -> Vec<Actor> {
    let by_pid: HashMap<u32, &MarkerInfo> = markers.iter().map(|(_, m)| (m.pid, m)).collect();
    let live: Vec<(&PathBuf, &MarkerInfo)> = markers
        .iter()
        .filter(|(_, m)| marker_is_ours_and_live(m, table.get(m.pid)))
        .map(|(p, m)| (p, m))
        .collect();
    let live_pids: HashSet<u32> = live.iter().map(|(_, m)| m.pid).collect();
    let live_roots: HashSet<&str> = live
        .iter()
        .filter(|(_, m)| m.parent_pid == 0 && m.uuid == m.tree)
        .map(|(_, m)| m.tree.as_str())
        .collect();
    let mut out = Vec::new();
    for (path, m) in live {
        let reason = match selection {
            Selection::Orphans => orphan_reason(table, m, &live_pids, &live_roots),
            Selection::Descendants(ancestor) => {
                descendant_reason(table, &by_pid, m, *ancestor).map(str::to_owned)
            }
            Selection::Tree(uuid) => (m.tree == *uuid).then(|| format!("in tree {uuid}")),
        };
        if let Some(reason) = reason {
            out.push(Actor { info: m.clone(), marker: path.clone(), reason });
        }
    }
    out.sort_by_key(|a| a.info.pid);
    out
}

fn orphan_reason(
    table: &ProcTable,
    m: &MarkerInfo,
    live_pids: &HashSet<u32>,
    live_roots: &HashSet<&str>,
) -> Option<String> {
    if m.parent_pid == 0 {
        return None;
    }
    if !live_roots.contains(m.tree.as_str()) {
        Some("tree root gone".to_owned())
    } else if !live_pids.contains(&m.parent_pid) {
        Some(format!("parent {} gone", m.parent_pid))
    } else if table.get(m.pid).is_some_and(|p| p.ppid != m.parent_pid) {
        Some(format!("reparented away from {}", m.parent_pid))
    } else {
        None
    }
}

fn descendant_reason(
    table: &ProcTable,
    by_pid: &HashMap<u32, &MarkerInfo>,
    m: &MarkerInfo,
    ancestor: u32,
) -> Option<&'static str> {
    if m.pid == ancestor {
        return None;
    }
    if table.is_descendant_of(m.pid, ancestor) {
        return Some("descendant (process tree)");
    }
    // Follow recorded parents; each parent must have started no later than its child,
    // so a recycled pid cannot splice an unrelated chain in.
    let ancestor_start = table.get(ancestor).map(|p| p.start_time);
    let mut cur = m;
    for _ in 0..256 {
        if cur.parent_pid == 0 {
            return None;
        }
        if cur.parent_pid == ancestor {
            return match ancestor_start {
                Some(s) if s > cur.start_time => None,
                _ => Some("descendant (recorded parents)"),
            };
        }
        match by_pid.get(&cur.parent_pid) {
            Some(parent) if parent.start_time <= cur.start_time => cur = parent,
            _ => return None,
        }
    }
    None
}
