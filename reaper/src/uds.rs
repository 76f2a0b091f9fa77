//! Stale files in the runtime directory: actor sockets whose owner is gone, and markers
//! whose process is gone.
//!
//! Actor sockets are named `<actor>@<pid>.sock`. One is stale when no socket is bound to
//! it any more (it is absent from `/proc/net/unix`), no live marker has that pid, and the
//! pid is not a running process of ours. Other socket files (the default registry's
//! `registry.sock`, or an older `registry@<port>.sock`, whose number is no pid) are stale
//! when nothing is bound to them. A file that is not a socket, or not ours, is never touched.

use crate::actors::{check_own_dir, marker_is_ours_and_live, own_half_written, own_markers};
use crate::error::ReapError;
use crate::procs::{ProcInfo, our_uid};
use crate::shm::FileAction;
use plough_fork_prims::marker::half_written_is_stale;
use procfs::FromRead;
use procfs::net::UnixNetEntries;
use serde::Serialize;
use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// A file swept from the runtime directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileVerdict {
    /// The file.
    pub path: PathBuf,
    /// What happened.
    pub action: FileAction,
    /// Why.
    pub why: String,
}

/// The pid in a socket name `<actor>@<pid>.sock`, if it has that shape.
pub fn socket_owner_pid(path: &Path) -> Option<u32> {
    let name = path.file_name()?.to_str()?;
    name.strip_suffix(".sock")?.rsplit_once('@')?.1.parse().ok()
}

/// Socket files of ours directly in `runtime_dir` (`*.sock`), sorted.
pub fn own_sockets(runtime_dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(runtime_dir) else { return Vec::new() };
    let uid = our_uid();
    let mut out: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sock"))
        .filter(|p| {
            fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket() && m.uid() == uid)
        })
        .collect();
    out.sort();
    out
}

/// Paths that some socket is bound to, in our network namespace or in any other that a
/// process of ours is in (`/proc/<pid>/task/<tid>/net/unix` of one task per namespace,
/// read through procfs), as the tables show them; ask [`may_be_bound`] about a file. `None`
/// when our own table cannot be read.
///
/// A path socket is listed only in the table of the namespace it was bound in, yet any
/// namespace reaches it through the file: an actor (or a `plough-host` daemon) running in
/// another network namespace, sharing this runtime directory, would look unbound from
/// ours, and its live socket file would be swept.
///
/// The kernel prints each path raw: procfs keeps it up to the first whitespace, and reads
/// the table as text, so one path anywhere in it that is not UTF-8 (an abstract name of
/// another program's, say) would fail the whole table; such bytes are replaced first.
pub fn bound_socket_paths() -> Option<HashSet<PathBuf>> {
    let mut bound = unix_table(Path::new("/proc/net/unix"))?;
    let own_ns = fs::read_link("/proc/self/ns/net").ok();
    let mut seen: HashSet<PathBuf> = own_ns.into_iter().collect();
    let uid = our_uid();
    let is_id = |e: &fs::DirEntry| {
        e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
    };
    let procs = fs::read_dir("/proc").into_iter().flatten().flatten().filter(is_id);
    for proc_entry in procs {
        if !proc_entry.metadata().is_ok_and(|m| m.uid() == uid) {
            continue;
        }
        // Namespaces are a thread's: one thread of a process may have left the others'.
        let tasks = fs::read_dir(proc_entry.path().join("task")).into_iter().flatten().flatten();
        for task in tasks.filter(is_id) {
            // Another user's task, or one gone since the listing: no link, skipped.
            let Ok(ns) = fs::read_link(task.path().join("ns/net")) else { continue };
            if seen.insert(ns) {
                bound.extend(unix_table(&task.path().join("net/unix")).unwrap_or_default());
            }
        }
    }
    Some(bound)
}

/// The absolute paths in one `net/unix` table.
fn unix_table(path: &Path) -> Option<HashSet<PathBuf>> {
    let bytes = fs::read(path).ok()?;
    let table = UnixNetEntries::from_read(String::from_utf8_lossy(&bytes).as_bytes()).ok()?;
    Some(
        table
            .0
            .into_iter()
            .filter_map(|e| e.path)
            // Abstract names start with `@`; relative paths cannot be matched to a file.
            .filter(|p| p.as_os_str().as_encoded_bytes().first() == Some(&b'/'))
            .collect(),
    )
}

/// Whether a socket may be bound to `path`, given [`bound_socket_paths`]: whether the
/// table shows a path that `path` would be shown as. Never `false` for a bound path. It
/// can be `true` for an unbound one that looks like a bound one in the table (a bound
/// `/r/a b.sock` shows as `/r/a`, so `/r/a` and `/r/a c.sock` look bound): that only
/// keeps a file.
pub fn may_be_bound(bound: &HashSet<PathBuf>, path: &Path) -> bool {
    let shown = path.to_string_lossy();
    bound.contains(Path::new(shown.split_whitespace().next().unwrap_or_default()))
}

/// Why a socket file is still in use, or `None` when it is stale.
fn socket_in_use(
    path: &Path,
    bound: Option<&HashSet<PathBuf>>,
    live_marker_pids: &HashSet<u32>,
) -> Option<String> {
    match bound {
        Some(b) if may_be_bound(b, path) => return Some("bound".into()),
        Some(_) => {}
        None => return Some("cannot read /proc/net/unix".into()),
    }
    let pid = socket_owner_pid(path)?;
    if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("registry@")) {
        return None;
    }
    if live_marker_pids.contains(&pid) {
        return Some(format!("actor {pid} is live"));
    }
    match ProcInfo::read(pid) {
        Some(p) if p.is_running() && p.is_owned_by(our_uid()) => {
            Some(format!("pid {pid} runs (ours, no marker)"))
        }
        _ => None,
    }
}

/// Removes (or lists, with `dry_run`) stale socket files, stale markers and stale
/// half-written markers (`.<pid>.<uuid>.tmp` whose writer is gone: see
/// [`half_written_is_stale`]; a live actor's marker in the making stays) in
/// `runtime_dir`. Only files to remove are returned. With `only`, just those socket
/// files are considered (and no markers).
///
/// # Errors
/// The runtime or markers directory cannot be trusted.
pub fn sweep(
    runtime_dir: &Path,
    only: Option<&[PathBuf]>,
    dry_run: bool,
) -> Result<Vec<FileVerdict>, ReapError> {
    if !check_own_dir(runtime_dir)? {
        return Ok(Vec::new());
    }
    let markers = own_markers(runtime_dir)?;
    let live: HashSet<u32> = markers
        .iter()
        .filter(|(_, m)| marker_is_ours_and_live(m, ProcInfo::read(m.pid).as_ref()))
        .map(|(_, m)| m.pid)
        .collect();
    let bound = bound_socket_paths();
    let candidates = match only {
        Some(paths) => {
            let all = own_sockets(runtime_dir);
            paths.iter().filter(|p| all.contains(p)).cloned().collect()
        }
        None => own_sockets(runtime_dir),
    };
    let mut stale: Vec<(PathBuf, String)> = candidates
        .into_iter()
        .filter(|p| socket_in_use(p, bound.as_ref(), &live).is_none())
        .map(|p| (p, "socket owner gone".to_owned()))
        .collect();
    if only.is_none() {
        stale.extend(
            markers
                .iter()
                .filter(|(_, m)| !live.contains(&m.pid))
                .map(|(p, m)| (p.clone(), format!("marker of {} (pid {}) gone", m.name, m.pid))),
        );
        stale.extend(
            own_half_written(runtime_dir)?
                .into_iter()
                .filter(|(p, pid)| half_written_is_stale(p, *pid))
                .map(|(p, pid)| (p, format!("half-written marker of pid {pid}, writer gone"))),
        );
    }
    Ok(stale
        .into_iter()
        .map(|(path, why)| {
            let action = if dry_run {
                FileAction::WouldRemove
            } else {
                match fs::remove_file(&path) {
                    Ok(()) => FileAction::Removed,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileAction::Removed,
                    Err(e) => {
                        return FileVerdict {
                            path,
                            action: FileAction::Failed,
                            why: e.to_string(),
                        };
                    }
                }
            };
            FileVerdict { path, action, why }
        })
        .collect())
}

/// Removes the markers of the given pids when their process is gone (after a reap), and
/// the socket file each names as its address (`uds://...`) when that is a socket of ours
/// inside `runtime_dir` that nothing is bound to; and the half-written markers of those
/// pids whose writer is gone.
pub fn remove_dead_markers(runtime_dir: &Path, pids: &[u32]) -> Vec<FileVerdict> {
    let Ok(markers) = own_markers(runtime_dir) else { return Vec::new() };
    let bound = bound_socket_paths();
    let sockets = own_sockets(runtime_dir);
    let mut out = remove_stale_half_written(runtime_dir, |pid| pids.contains(&pid));
    for (path, m) in markers {
        if !pids.contains(&m.pid) || marker_is_ours_and_live(&m, ProcInfo::read(m.pid).as_ref()) {
            continue;
        }
        let sock =
            m.addr.strip_prefix("uds://").map(PathBuf::from).filter(|s| {
                sockets.contains(s) && bound.as_ref().is_some_and(|b| !may_be_bound(b, s))
            });
        for (file, what) in [(Some(path), "marker"), (sock, "socket")] {
            let Some(file) = file else { continue };
            let (action, why) = match fs::remove_file(&file) {
                Ok(()) => {
                    (FileAction::Removed, format!("{what} of reaped {} (pid {})", m.name, m.pid))
                }
                Err(e) => (FileAction::Failed, e.to_string()),
            };
            out.push(FileVerdict { path: file, action, why });
        }
    }
    out
}

/// Removes the half-written markers of ours whose pid `which` picks and whose writer is
/// gone (see [`half_written_is_stale`]).
pub(crate) fn remove_stale_half_written(
    runtime_dir: &Path,
    which: impl Fn(u32) -> bool,
) -> Vec<FileVerdict> {
    let Ok(half) = own_half_written(runtime_dir) else { return Vec::new() };
    half.into_iter()
        .filter(|(p, pid)| which(*pid) && half_written_is_stale(p, *pid))
        .map(|(path, pid)| {
            let (action, why) = match fs::remove_file(&path) {
                Ok(()) => (FileAction::Removed, format!("half-written marker of dead pid {pid}")),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    (FileAction::Removed, format!("half-written marker of dead pid {pid}"))
                }
                Err(e) => (FileAction::Failed, e.to_string()),
            };
            FileVerdict { path, action, why }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_is_parsed_from_the_suffix() {
        assert_eq!(socket_owner_pid(Path::new("/r/worker@42.sock")), Some(42));
        assert_eq!(socket_owner_pid(Path::new("/r/a@b@7.sock")), Some(7));
        assert_eq!(socket_owner_pid(Path::new("/r/registry@1616.sock")), Some(1616));
        assert_eq!(socket_owner_pid(Path::new("/r/x.sock")), None);
        assert_eq!(socket_owner_pid(Path::new("/r/x@1.txt")), None);
    }

    #[test]
    fn bound_sockets_are_seen_whatever_else_the_table_holds() {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::{SocketAddr, UnixListener};
        let tmp = tempfile::Builder::new().prefix("plough-uds-bound-").tempdir().unwrap();
        let dir = tmp.path();
        // Another program's abstract name that is not UTF-8 makes no difference.
        let mut abstract_name = format!("plough-test-{}-", std::process::id()).into_bytes();
        abstract_name.extend_from_slice(b"\xc3\xff");
        let addr = SocketAddr::from_abstract_name(&abstract_name).unwrap();
        let _foreign = UnixListener::bind_addr(&addr).unwrap();
        let plain = dir.join("w@1.sock");
        let spaced = dir.join("w x@2.sock");
        let (a, b) = (UnixListener::bind(&plain).unwrap(), UnixListener::bind(&spaced).unwrap());
        let bound = bound_socket_paths().expect("/proc/net/unix parses");
        assert!(may_be_bound(&bound, &plain));
        assert!(may_be_bound(&bound, &spaced), "a path with a space is not taken for unbound");
        assert!(!may_be_bound(&bound, &dir.join("w@3.sock")), "never bound");
        // The price: what the spaced path is cut to looks bound too (so it is kept).
        assert!(may_be_bound(&bound, &dir.join("w")));
        drop((a, b));
    }

    #[test]
    #[allow(unsafe_code)] // unshare(2), which rustix offers only as unsafe too
    fn a_socket_bound_in_another_network_namespace_is_seen_as_bound() {
        let tmp = tempfile::Builder::new().prefix("plough-uds-netns-").tempdir().unwrap();
        let path = tmp.path().join("host@1.sock");
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let p = path.clone();
        // A thread of ours in a network namespace of its own binds the socket, as a
        // plough-host daemon in a lab namespace does, and holds it until told.
        let t = std::thread::spawn(move || {
            // SAFETY: unshare(2) with CLONE_NEWNET moves only this thread, touching no memory.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                bound_tx.send(Err(std::io::Error::last_os_error())).unwrap();
                return;
            }
            let listener = std::os::unix::net::UnixListener::bind(&p).unwrap();
            bound_tx.send(Ok(())).unwrap();
            let _ = done_rx.recv_timeout(std::time::Duration::from_secs(30));
            drop(listener);
        });
        match bound_rx.recv().unwrap() {
            Ok(()) => {}
            Err(e) => {
                eprintln!("SKIPPED: cannot make a network namespace here ({e}); needs root");
                t.join().unwrap();
                return;
            }
        }
        let here = unix_table(Path::new("/proc/net/unix")).unwrap();
        assert!(!may_be_bound(&here, &path), "our own namespace's table does not list it");
        let bound = bound_socket_paths().expect("tables parse");
        assert!(may_be_bound(&bound, &path), "bound in another namespace of ours: in use");
        done_tx.send(()).unwrap();
        t.join().unwrap();
    }
}
