//! Task dumps left by a tree that ended without its root's cleanup.
//!
//! A plough actor writes its SIGUSR1 task dumps to `<runtime dir>/dumps/<tree uuid>/`,
//! and the tree's root removes that directory when the tree has ended. A root that was
//! SIGKILLed never does: such a directory is stale once no live actor of ours belongs
//! to its tree (by marker: the marker's `tree` is the directory's name).

use crate::actors::{marker_is_ours_and_live, own_markers};
use crate::procs::ProcInfo;
use crate::shm::FileAction;
use crate::uds::FileVerdict;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The dump directory of a runtime directory.
pub fn dumps_dir(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join("dumps")
}

/// Every tree's dump directory (`dumps/<tree>`) under `runtime_dir`, sorted.
pub fn tree_dirs(runtime_dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dumps_dir(runtime_dir))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// The trees that have a live actor of ours (by marker) under `runtime_dir`.
fn live_trees(runtime_dir: &Path) -> HashSet<String> {
    own_markers(runtime_dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, m)| marker_is_ours_and_live(m, ProcInfo::read(m.pid).as_ref()))
        .map(|(_, m)| m.tree)
        .collect()
}

/// Removes (or, with `dry_run`, lists) the dump directories among `dirs` (all of them
/// when `None`) whose tree has no live actor of ours; keeps the others.
pub fn sweep(runtime_dir: &Path, dirs: Option<&[PathBuf]>, dry_run: bool) -> Vec<FileVerdict> {
    let live = live_trees(runtime_dir);
    let all;
    let dirs = match dirs {
        Some(d) => d,
        None => {
            all = tree_dirs(runtime_dir);
            &all
        }
    };
    let mut out = Vec::new();
    for dir in dirs {
        let tree = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if live.contains(tree) {
            continue;
        }
        let why = format!("task dumps of tree {tree}, which has no live actor");
        let action = if dry_run {
            FileAction::WouldRemove
        } else {
            match std::fs::remove_dir_all(dir) {
                Ok(()) => FileAction::Removed,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileAction::Removed,
                Err(_) => FileAction::Failed,
            }
        };
        out.push(FileVerdict { path: dir.clone(), action, why });
    }
    out
}
