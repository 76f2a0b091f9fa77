//! The `/dev/shm` sweep: POSIX shared-memory segments (and semaphores) of ours that no
//! process uses any more.
//!
//! A segment is in use while some process maps it (`/proc/<pid>/maps`) or holds it open
//! (`/proc/<pid>/fd`); both are compared by device and inode, not by name, so a renamed
//! or re-created segment is not confused with an old one. Only regular files owned by our
//! uid are candidates.
//!
//! # Caveats
//! Only processes whose `/proc/<pid>/maps` and `fd` we can read are consulted (for an
//! unprivileged user: its own). A process of another user that maps one of our segments
//! — possible only if the segment's mode lets it open the file, or we passed it the fd —
//! is not seen; [`InUse::uninspected`] counts such processes. Between `shm_open` and
//! `mmap` a segment is briefly unused: [`SweepOptions::min_age`] keeps young segments
//! for that reason.
//!
//! Both files are read through `procfs`, each process through its own `/proc/<pid>`
//! directory fd, so a pid recycled mid-scan is not read half as one process, half as
//! another.

use crate::procs::{our_uid, read_lossy};
use procfs::ProcError;
use procfs::process::{FDTarget, MemoryMaps, Process};
use rustix::fs::OFlags;
use serde::Serialize;
use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where POSIX shared memory lives on Linux.
pub const SHM_DIR: &str = "/dev/shm";

/// A `/dev/shm` entry of ours.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ShmEntry {
    /// Its path.
    pub path: PathBuf,
    /// Device and inode (identity, not name).
    pub dev: u64,
    /// Inode.
    pub ino: u64,
}

/// Options of a sweep.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// The directory to sweep (`/dev/shm`).
    pub dir: PathBuf,
    /// Only names that start with this.
    pub prefix: Option<String>,
    /// Keep segments whose last change is younger than this.
    pub min_age: Duration,
}

impl Default for SweepOptions {
    fn default() -> Self {
        SweepOptions { dir: PathBuf::from(SHM_DIR), prefix: None, min_age: Duration::from_secs(5) }
    }
}

/// Regular files in `dir` owned by our uid (name filter optional).
pub fn own_entries(dir: &Path, prefix: Option<&str>) -> Vec<ShmEntry> {
    let Ok(rd) = fs::read_dir(dir) else { return Vec::new() };
    let uid = our_uid();
    let mut out: Vec<ShmEntry> = rd
        .flatten()
        .filter(|e| prefix.is_none_or(|p| e.file_name().to_string_lossy().starts_with(p)))
        .filter_map(|e| {
            let m = fs::symlink_metadata(e.path()).ok()?;
            (m.is_file() && m.uid() == uid).then(|| ShmEntry {
                path: e.path(),
                dev: m.dev(),
                ino: m.ino(),
            })
        })
        .collect();
    out.sort();
    out
}

/// The (device, inode) pairs that visible processes map or hold open.
#[derive(Debug, Default)]
pub struct InUse {
    files: HashSet<(u64, u64)>,
    /// How many processes could not be inspected.
    pub uninspected: usize,
}

impl InUse {
    /// Scans every visible process's `maps` and `fd`.
    pub fn scan() -> InUse {
        let mut files = HashSet::new();
        let mut uninspected = 0;
        let Ok(all) = procfs::process::all_processes() else {
            return InUse { files, uninspected };
        };
        for process in all {
            let process = match process {
                Ok(p) => p,
                // Exited between the listing and the open.
                Err(ProcError::NotFound(_)) => continue,
                Err(_) => {
                    uninspected += 1;
                    continue;
                }
            };
            let maps = read_lossy::<MemoryMaps>(&process, "maps");
            if let Some(maps) = &maps {
                files.extend(
                    maps.iter()
                        .filter(|m| m.inode != 0)
                        .map(|m| (rustix::fs::makedev(m.dev.0 as u32, m.dev.1 as u32), m.inode)),
                );
            }
            let fds = process.fd();
            let fds_read = fds.is_ok();
            for fd in fds.into_iter().flatten().flatten() {
                // A file (a `/dev/shm` segment among them, deleted or not), not a socket,
                // pipe or anon inode: its identity is that of the open file, read through
                // the fd link itself (`O_PATH` follows it without opening the file).
                if matches!(fd.target, FDTarget::Path(_) | FDTarget::MemFD(_)) {
                    let target = process.open_relative_flags(
                        format!("fd/{}", fd.fd),
                        OFlags::PATH | OFlags::CLOEXEC,
                    );
                    if let Ok(m) = target.and_then(|f| Ok(f.metadata()?)) {
                        files.insert((m.dev(), m.ino()));
                    }
                }
            }
            // A process that exited mid-scan uses nothing; only count real refusals.
            if (maps.is_none() || !fds_read) && Process::new(process.pid).is_ok() {
                uninspected += 1;
            }
        }
        InUse { files, uninspected }
    }

    /// Whether some inspected process maps or holds this entry.
    pub fn contains(&self, e: &ShmEntry) -> bool {
        self.files.contains(&(e.dev, e.ino))
    }
}

/// What the sweep decided about one segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShmVerdict {
    /// The segment.
    pub path: PathBuf,
    /// `removed`, `would_remove`, `kept` or `failed`.
    pub action: FileAction,
    /// Why (for kept and failed).
    pub why: String,
}

/// What happened to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileAction {
    /// Removed.
    Removed,
    /// `--dry-run`: would be removed.
    WouldRemove,
    /// Left in place.
    Kept,
    /// Removal failed.
    Failed,
}

/// Whether `e` is unused (and old enough, and safe to judge) given a scan.
fn unused_reason(e: &ShmEntry, in_use: &InUse, min_age: Duration) -> Result<(), String> {
    if in_use.contains(e) {
        return Err("in use".into());
    }
    let m = fs::symlink_metadata(&e.path).map_err(|err| format!("gone: {err}"))?;
    if (m.dev(), m.ino()) != (e.dev, e.ino) || m.uid() != our_uid() {
        return Err("replaced".into());
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    let changed = (m.ctime() as f64).max(m.mtime() as f64);
    if now - changed < min_age.as_secs_f64() {
        return Err(format!("younger than {:.0} s", min_age.as_secs_f64()));
    }
    Ok(())
}

/// Removes (or, with `dry_run`, lists) the given entries that no process uses. Entries
/// in use are reported as kept.
pub fn sweep_entries(entries: &[ShmEntry], min_age: Duration, dry_run: bool) -> Vec<ShmVerdict> {
    if entries.is_empty() {
        return Vec::new();
    }
    let in_use = InUse::scan();
    entries
        .iter()
        .map(|e| {
            let (action, why) = match unused_reason(e, &in_use, min_age) {
                Err(why) => (FileAction::Kept, why),
                Ok(()) if dry_run => (FileAction::WouldRemove, "unused".into()),
                Ok(()) => match fs::remove_file(&e.path) {
                    Ok(()) => (FileAction::Removed, "unused".into()),
                    Err(err) => (FileAction::Failed, err.to_string()),
                },
            };
            ShmVerdict { path: e.path.clone(), action, why }
        })
        .collect()
}

/// The `--shm` sweep: every unused segment of ours in `opts.dir`, removed (or listed,
/// with `dry_run`). Segments in use, or too young, are left out of the result.
pub fn sweep(opts: &SweepOptions, dry_run: bool) -> Vec<ShmVerdict> {
    let entries = own_entries(&opts.dir, opts.prefix.as_deref());
    sweep_entries(&entries, opts.min_age, dry_run)
        .into_iter()
        .filter(|v| v.action != FileAction::Kept)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use procfs::FromRead;

    #[test]
    fn maps_parse_whole_and_name_our_executable() {
        // One read, parsed by the same code as the scan: every line becomes a mapping.
        let bytes = fs::read("/proc/self/maps").unwrap();
        let lines = bytes.iter().filter(|&&b| b == b'\n').count();
        let maps = MemoryMaps::from_read(&bytes[..]).expect("our maps parse");
        assert_eq!(maps.len(), lines);
        assert!(read_lossy::<MemoryMaps>(&Process::myself().unwrap(), "maps").is_some());
        let exe = fs::metadata("/proc/self/exe").unwrap();
        assert!(InUse::scan().files.contains(&(exe.dev(), exe.ino())), "our mapped executable");
    }

    #[test]
    fn a_file_held_open_is_in_use_even_once_deleted() {
        let dir = tempfile::Builder::new().prefix("plough-shm-inuse-").tempdir().unwrap();
        let path = dir.path().join("seg with space (x)");
        let held = fs::File::create(&path).unwrap();
        let m = held.metadata().unwrap();
        let entry = ShmEntry { path: path.clone(), dev: m.dev(), ino: m.ino() };
        assert!(InUse::scan().contains(&entry));
        fs::remove_file(&path).unwrap();
        assert!(InUse::scan().contains(&entry), "a deleted file held open");
        drop(held);
    }
}
