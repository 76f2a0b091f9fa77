//! One reaper run: find, terminate, sweep, report.

use crate::actors::{Actor, Selection, find_actors};
use crate::error::ReapError;
use crate::ladder::{Interrupt, Outcome, Target, terminate_until};
use crate::shm::{self, FileAction, ShmVerdict, SweepOptions};
use crate::uds::{self, FileVerdict};
use serde::Serialize;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The default grace period between SIGINT and SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3);

/// What to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// The runtime directory holding markers and sockets.
    pub runtime_dir: PathBuf,
    /// Which actors to reap; `None` touches no process (`--shm-only`).
    pub selection: Option<Selection>,
    /// SIGINT → SIGKILL grace period.
    pub grace: Duration,
    /// List, do not act.
    pub dry_run: bool,
    /// Sweep `/dev/shm` too.
    pub shm: Option<SweepOptions>,
    /// Sweep stale sockets, markers and task dumps (of trees with no live actor) in the
    /// runtime directory.
    pub uds: bool,
    /// Cuts the grace period short (`plough-reap`: its own SIGINT / SIGTERM).
    pub interrupt: Option<Interrupt>,
}

impl Options {
    /// Orphan mode in the default runtime directory, default grace, no sweeps.
    pub fn orphans() -> Options {
        Options {
            runtime_dir: plough_fork_prims::marker::default_runtime_dir(),
            selection: Some(Selection::Orphans),
            grace: DEFAULT_GRACE,
            dry_run: false,
            shm: None,
            uds: false,
            interrupt: None,
        }
    }
}

/// One actor and what was done to it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActorReport {
    /// The actor.
    #[serde(flatten)]
    pub actor: Actor,
    /// What the ladder did.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// The outcome in words ("exited after SIGINT in 0.2 s").
    pub summary: String,
}

/// What a run found and did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Actors found and their fate.
    pub actors: Vec<ActorReport>,
    /// `/dev/shm` segments removed (or that would be).
    pub shm: Vec<ShmVerdict>,
    /// Runtime-directory files (stale sockets, markers) removed (or that would be).
    pub files: Vec<FileVerdict>,
}

impl Report {
    /// Whether anything was found.
    pub fn found_anything(&self) -> bool {
        !self.actors.is_empty() || !self.shm.is_empty() || !self.files.is_empty()
    }

    /// Whether everything found was dealt with (always true for a dry run that listed it).
    pub fn all_handled(&self) -> bool {
        self.actors.iter().all(|a| a.outcome.is_gone() || a.outcome == Outcome::WouldReap)
            && self.shm.iter().all(|s| s.action != FileAction::Failed)
            && self.files.iter().all(|f| f.action != FileAction::Failed)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for a in &self.actors {
            let i = &a.actor.info;
            writeln!(
                f,
                "actor {}@{} (tree {}, parent {}, {}): {}: {}",
                i.name, i.pid, i.tree, i.parent_pid, i.method, a.actor.reason, a.summary
            )?;
        }
        for s in &self.shm {
            writeln!(f, "shm {}: {} ({})", s.path.display(), action_word(s.action), s.why)?;
        }
        for x in &self.files {
            writeln!(f, "file {}: {} ({})", x.path.display(), action_word(x.action), x.why)?;
        }
        if !self.found_anything() {
            writeln!(f, "nothing to reap")?;
        }
        Ok(())
    }
}

fn action_word(a: FileAction) -> &'static str {
    match a {
        FileAction::Removed => "removed",
        FileAction::WouldRemove => "would remove",
        FileAction::Kept => "kept",
        FileAction::Failed => "removal failed",
    }
}

/// Reaps actors with the ladder (or lists them, with `dry_run`) and removes the markers
/// of those that are gone afterwards.
pub fn reap_actors(
    runtime_dir: &std::path::Path,
    actors: Vec<Actor>,
    grace: Duration,
    dry_run: bool,
) -> (Vec<ActorReport>, Vec<FileVerdict>) {
    reap_actors_until(runtime_dir, actors, grace, dry_run, None)
}

/// [`reap_actors`], with the grace period cut short when `interrupt` fires.
pub fn reap_actors_until(
    runtime_dir: &std::path::Path,
    actors: Vec<Actor>,
    grace: Duration,
    dry_run: bool,
    interrupt: Option<&Interrupt>,
) -> (Vec<ActorReport>, Vec<FileVerdict>) {
    let outcomes = if dry_run {
        vec![Outcome::WouldReap; actors.len()]
    } else {
        let targets: Vec<Target> = actors
            .iter()
            .map(|a| Target { pid: a.info.pid, start_time: a.info.start_time })
            .collect();
        terminate_until(&targets, grace, interrupt)
    };
    let gone: Vec<u32> = actors
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| o.is_gone())
        .map(|(a, _)| a.info.pid)
        .collect();
    let files = if dry_run { Vec::new() } else { uds::remove_dead_markers(runtime_dir, &gone) };
    let reports = actors
        .into_iter()
        .zip(outcomes)
        .map(|(actor, outcome)| ActorReport { summary: outcome.to_string(), actor, outcome })
        .collect();
    (reports, files)
}

/// Runs the reaper as `opts` says.
///
/// # Errors
/// The runtime directory (or its markers directory) cannot be trusted: it is a
/// symlink, another user's, or writable by others. Nothing is touched then.
pub fn run(opts: &Options) -> Result<Report, ReapError> {
    let mut report = Report { dry_run: opts.dry_run, ..Report::default() };
    if let Some(sel) = &opts.selection {
        let actors = find_actors(&opts.runtime_dir, sel)?;
        let (actors, files) = reap_actors_until(
            &opts.runtime_dir,
            actors,
            opts.grace,
            opts.dry_run,
            opts.interrupt.as_ref(),
        );
        report.actors = actors;
        report.files = files;
    }
    if opts.uds {
        let mut swept = uds::sweep(&opts.runtime_dir, None, opts.dry_run)?;
        swept.extend(crate::dumps::sweep(&opts.runtime_dir, None, opts.dry_run));
        for v in swept {
            if !report.files.iter().any(|f| f.path == v.path) {
                report.files.push(v);
            }
        }
    }
    if let Some(shm_opts) = &opts.shm {
        report.shm = shm::sweep(shm_opts, opts.dry_run);
    }
    Ok(report)
}
