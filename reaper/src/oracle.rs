//! The leak oracle: what plough left behind between two points in time.
//!
//! A [`Snapshot`] records the live actors of ours (pid + start time, from markers), the
//! half-written markers (`actors/.<pid>.<uuid>.tmp`, live writer or not), the socket files
//! in the runtime directory, the trees' task-dump directories (`dumps/<tree>`) and our
//! `/dev/shm` entries. A later snapshot
//! minus an earlier one is the [`Leaks`]: everything that appeared in between and is
//! still alive or present. Identity is never a bare pid or name: actors are (pid, start
//! time), shm segments (device, inode), so a recycled pid or a re-created file is seen
//! as new.

use crate::actors::{Actor, marker_is_ours_and_live, own_half_written, own_markers};
use crate::dumps;
use crate::procs::ProcInfo;
use crate::reap::{ActorReport, DEFAULT_GRACE, reap_actors};
use crate::shm::{self, FileAction, SHM_DIR, ShmEntry, ShmVerdict};
use crate::uds::{self, FileVerdict};
use plough_fork_prims::marker::{MarkerInfo, default_runtime_dir};
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What of plough's exists at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    runtime_dir: PathBuf,
    shm_dir: PathBuf,
    /// Live actors of ours, with their marker file.
    pub actors: Vec<(PathBuf, MarkerInfo)>,
    /// Half-written markers (`.<pid>.<uuid>.tmp`), with their writer's pid.
    pub half_written: Vec<(PathBuf, u32)>,
    /// Task-dump directories of trees (`dumps/<tree uuid>`).
    pub dumps: Vec<PathBuf>,
    /// Socket files in the runtime directory.
    pub sockets: Vec<PathBuf>,
    /// Our `/dev/shm` entries.
    pub shm: Vec<ShmEntry>,
}

impl Snapshot {
    /// Takes a snapshot of the default runtime directory and `/dev/shm`.
    pub fn take() -> Snapshot {
        Snapshot::take_in(&default_runtime_dir())
    }

    /// Takes a snapshot of `runtime_dir` and `/dev/shm`. An untrusted runtime directory
    /// (see [`crate::actors::check_own_dir`]) contributes no actors.
    pub fn take_in(runtime_dir: &Path) -> Snapshot {
        Snapshot::take_with(runtime_dir, Path::new(SHM_DIR))
    }

    /// Takes a snapshot of `runtime_dir` and the shm directory `shm_dir`.
    pub fn take_with(runtime_dir: &Path, shm_dir: &Path) -> Snapshot {
        let actors = own_markers(runtime_dir)
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, m)| marker_is_ours_and_live(m, ProcInfo::read(m.pid).as_ref()))
            .collect();
        Snapshot {
            runtime_dir: runtime_dir.to_owned(),
            shm_dir: shm_dir.to_owned(),
            actors,
            half_written: own_half_written(runtime_dir).unwrap_or_default(),
            dumps: dumps::tree_dirs(runtime_dir),
            sockets: uds::own_sockets(runtime_dir),
            shm: shm::own_entries(shm_dir, None),
        }
    }

    /// The runtime directory this snapshot looked at.
    pub fn runtime_dir(&self) -> &Path {
        &self.runtime_dir
    }

    /// Takes a new snapshot of the same places and returns what appeared since `self`
    /// and is still there. `Snapshot::leaked_since(&before)` reads naturally too.
    pub fn leaked_since(&self) -> Leaks {
        Snapshot::take_with(&self.runtime_dir, &self.shm_dir).new_since(self)
    }

    /// What `self` (later) has that `before` (earlier) had not, re-checked to be still
    /// alive / present now.
    pub fn new_since(&self, before: &Snapshot) -> Leaks {
        let old_actors: HashSet<(u32, u64)> =
            before.actors.iter().map(|(_, m)| (m.pid, m.start_time)).collect();
        let old_half: HashSet<&PathBuf> = before.half_written.iter().map(|(p, _)| p).collect();
        let old_sockets: HashSet<&PathBuf> = before.sockets.iter().collect();
        let old_dumps: HashSet<&PathBuf> = before.dumps.iter().collect();
        let old_shm: HashSet<(u64, u64)> = before.shm.iter().map(|e| (e.dev, e.ino)).collect();
        Leaks {
            runtime_dir: self.runtime_dir.clone(),
            actors: self
                .actors
                .iter()
                .filter(|(_, m)| !old_actors.contains(&(m.pid, m.start_time)))
                .filter(|(_, m)| marker_is_ours_and_live(m, ProcInfo::read(m.pid).as_ref()))
                .cloned()
                .collect(),
            half_written: self
                .half_written
                .iter()
                .filter(|(p, _)| !old_half.contains(p) && p.exists())
                .cloned()
                .collect(),
            sockets: self
                .sockets
                .iter()
                .filter(|p| !old_sockets.contains(p) && p.exists())
                .cloned()
                .collect(),
            dumps: self
                .dumps
                .iter()
                .filter(|p| !old_dumps.contains(p) && p.exists())
                .cloned()
                .collect(),
            shm: self
                .shm
                .iter()
                .filter(|e| !old_shm.contains(&(e.dev, e.ino)) && e.path.exists())
                .cloned()
                .collect(),
        }
    }
}

/// What appeared between two snapshots and is still there.
#[derive(Debug, Clone, Default)]
pub struct Leaks {
    runtime_dir: PathBuf,
    /// Live actors (marker file, marker).
    pub actors: Vec<(PathBuf, MarkerInfo)>,
    /// Half-written markers (`.<pid>.<uuid>.tmp`, with the writer's pid): an actor
    /// killed between writing its marker and renaming it into place, or one still
    /// writing it (then it is a leaked actor too).
    pub half_written: Vec<(PathBuf, u32)>,
    /// Socket files.
    pub sockets: Vec<PathBuf>,
    /// Task-dump directories of trees (`dumps/<tree uuid>`): a tree that ended removes
    /// its own.
    pub dumps: Vec<PathBuf>,
    /// `/dev/shm` entries.
    pub shm: Vec<ShmEntry>,
}

impl Leaks {
    /// Whether nothing leaked.
    pub fn is_empty(&self) -> bool {
        self.actors.is_empty()
            && self.half_written.is_empty()
            && self.sockets.is_empty()
            && self.dumps.is_empty()
            && self.shm.is_empty()
    }

    /// Keeps only what `keep_actor` / `keep_socket` / `keep_shm` accept (half-written
    /// markers are not filtered here: [`Leaks::half_written`] is public).
    pub fn retain(
        &mut self,
        keep_actor: impl Fn(&MarkerInfo) -> bool,
        keep_socket: impl Fn(&Path) -> bool,
        keep_shm: impl Fn(&ShmEntry) -> bool,
    ) {
        self.actors.retain(|(_, m)| keep_actor(m));
        self.sockets.retain(|p| keep_socket(p));
        self.shm.retain(|e| keep_shm(e));
    }
}

impl fmt::Display for Leaks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("no leaks");
        }
        for (_, m) in &self.actors {
            writeln!(
                f,
                "leaked actor {}@{} (tree {}, parent {}, {})",
                m.name, m.pid, m.tree, m.parent_pid, m.method
            )?;
        }
        for (p, pid) in &self.half_written {
            writeln!(f, "leaked half-written marker {} (pid {pid})", p.display())?;
        }
        for s in &self.sockets {
            writeln!(f, "leaked socket {}", s.display())?;
        }
        for d in &self.dumps {
            writeln!(f, "leaked task dumps {}", d.display())?;
        }
        for e in &self.shm {
            writeln!(f, "leaked shm segment {}", e.path.display())?;
        }
        Ok(())
    }
}

/// What [`reap`] did.
#[derive(Debug, Clone, Default)]
pub struct ReapReport {
    /// The leaked actors and their fate.
    pub actors: Vec<ActorReport>,
    /// Markers and socket files removed.
    pub files: Vec<FileVerdict>,
    /// Shm segments removed or kept (still in use).
    pub shm: Vec<ShmVerdict>,
}

impl ReapReport {
    /// Whether everything leaked is gone now.
    pub fn all_gone(&self) -> bool {
        self.actors.iter().all(|a| a.outcome.is_gone())
            && self.files.iter().all(|f| f.action == FileAction::Removed)
            && self.shm.iter().all(|s| s.action == FileAction::Removed)
    }
}

impl fmt::Display for ReapReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for a in &self.actors {
            let i = &a.actor.info;
            writeln!(f, "{}@{}: {}", i.name, i.pid, a.summary)?;
        }
        for x in &self.files {
            writeln!(f, "{}: {:?} ({})", x.path.display(), x.action, x.why)?;
        }
        for s in &self.shm {
            writeln!(f, "{}: {:?} ({})", s.path.display(), s.action, s.why)?;
        }
        Ok(())
    }
}

/// Reaps what leaked, with the default grace period (see [`reap_with`]).
pub fn reap(leaks: &Leaks) -> ReapReport {
    reap_with(leaks, DEFAULT_GRACE)
}

/// Reaps what leaked: the ladder for the actors (each re-verified by start time and uid
/// first), then removes their markers, the leaked half-written markers and socket files
/// that are stale by then, and the leaked shm segments that nothing maps or holds open.
pub fn reap_with(leaks: &Leaks, grace: Duration) -> ReapReport {
    let actors: Vec<Actor> = leaks
        .actors
        .iter()
        .map(|(path, m)| Actor { info: m.clone(), marker: path.clone(), reason: "leaked".into() })
        .collect();
    let (actors, mut files) = reap_actors(&leaks.runtime_dir, actors, grace, false);
    // After the actors: a half-written marker whose writer was just reaped is stale now.
    let half: HashSet<&PathBuf> = leaks.half_written.iter().map(|(p, _)| p).collect();
    let swept: HashSet<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
    files.extend(
        uds::remove_stale_half_written(&leaks.runtime_dir, |_| true)
            .into_iter()
            .filter(|f| half.contains(&f.path) && !swept.contains(&f.path)),
    );
    for (path, pid) in &leaks.half_written {
        if path.exists() && !files.iter().any(|f| f.path == *path) {
            let why = format!("half-written marker of pid {pid}: its writer still runs");
            files.push(FileVerdict { path: path.clone(), action: FileAction::Kept, why });
        }
    }
    if !leaks.sockets.is_empty() {
        files.extend(
            uds::sweep(&leaks.runtime_dir, Some(&leaks.sockets), false).unwrap_or_default(),
        );
    }
    if !leaks.dumps.is_empty() {
        files.extend(dumps::sweep(&leaks.runtime_dir, Some(&leaks.dumps), false));
    }
    let shm = shm::sweep_entries(&leaks.shm, Duration::ZERO, false);
    ReapReport { actors, files, shm }
}
