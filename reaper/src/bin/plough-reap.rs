//! `plough-reap`: find plough actors that outlived their tree and end them (SIGINT, a
//! grace period, SIGKILL); optionally sweep unused `/dev/shm` segments and stale socket
//! files. Only processes and files of the current user that carry a live plough marker
//! are ever touched.
//!
//! SIGINT (Ctrl-C) or SIGTERM to `plough-reap` while it waits out the grace period ends
//! the wait: the actors still running are SIGKILLed at once, and the report is printed.
//!
//! # Exit status
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | nothing of ours is left behind: nothing was found, or everything found was reaped or removed |
//! | 1 | something of ours was found and is still there (`--dry-run`), or — with `--check` — was found at all, even if it was then reaped |
//! | 2 | usage error or refusal: bad arguments, an untrusted runtime directory, `/proc` unreadable; nothing was touched |
//! | 3 | something was found that could not be dealt with (a process survived SIGKILL, a file could not be removed) |
//!
//! So `plough-reap` in a `set -e` script fails only when something is left behind, and
//! `plough-reap --check` (e.g. after a test run) fails when anything had leaked.

use anyhow::Context as _;
use clap::Parser;
use plough_reaper::shm::SweepOptions;
use plough_reaper::{Interrupt, Options, Selection, run};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Find and reap orphaned plough actors; sweep /dev/shm and stale plough sockets.
///
/// Exit status: 0 = nothing left behind (nothing found, or all of it reaped);
/// 1 = found and still there (--dry-run), or found at all (--check); 2 = usage error or
/// refusal; 3 = found but could not reap or remove all of it.
#[derive(Debug, Parser)]
#[command(name = "plough-reap", version)]
struct Cli {
    /// Reap every plough actor below this pid (process tree or recorded parents).
    #[arg(long, value_name = "PID", conflicts_with_all = ["tree", "shm_only"])]
    parent: Option<u32>,
    /// Reap every live actor of the tree whose root has this uuid.
    #[arg(long, value_name = "UUID", conflicts_with = "shm_only")]
    tree: Option<String>,
    /// Seconds between SIGINT and SIGKILL (Ctrl-C cuts it short).
    #[arg(long, value_name = "SECS", default_value_t = 3.0)]
    grace: f64,
    /// Also remove /dev/shm segments of ours that no process maps or holds open.
    #[arg(long)]
    shm: bool,
    /// Only sweep /dev/shm; touch no process.
    #[arg(long)]
    shm_only: bool,
    /// Only shm segments whose name starts with this.
    #[arg(long, value_name = "PREFIX")]
    shm_prefix: Option<String>,
    /// Keep shm segments changed less than this many seconds ago (between shm_open and
    /// mmap a segment is briefly unused).
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    shm_min_age: f64,
    /// Also remove socket files whose owner is gone, stale markers, half-written
    /// markers (actors/.PID.UUID.tmp) whose writer is gone (a live one's stays), and the
    /// task dumps (dumps/TREE/) of trees that have no live actor left.
    #[arg(long)]
    uds: bool,
    /// The runtime directory (default: $XDG_RUNTIME_DIR/plough or /tmp/plough-UID).
    #[arg(long, value_name = "DIR")]
    runtime_dir: Option<PathBuf>,
    /// List what would be done; change nothing.
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Exit 1 if anything of ours was found, even when it was then reaped (combine with
    /// --dry-run to only look).
    #[arg(long)]
    check: bool,
}

/// `plough-reap`'s exit status (the table in the crate docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// Nothing of ours is left behind.
    Clean = 0,
    /// Something was found: still there (`--dry-run`), or found at all (`--check`).
    Found = 1,
    /// Bad arguments or a refusal (clap's own usage errors exit 2 as well).
    Usage = 2,
    /// Something found could not be reaped or removed.
    Incomplete = 3,
}

impl Exit {
    /// The status for a run's report.
    fn of(report: &plough_reaper::Report, dry_run: bool, check: bool) -> Exit {
        if !report.found_anything() {
            Exit::Clean
        } else if !report.all_handled() {
            Exit::Incomplete
        } else if dry_run || check {
            Exit::Found
        } else {
            Exit::Clean
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

fn secs(v: f64, what: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v).with_context(|| format!("invalid {what}: {v}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("plough-reap: {e:#}");
            Exit::Usage.into()
        }
    }
}

fn real_main(cli: &Cli) -> anyhow::Result<ExitCode> {
    let selection = if cli.shm_only {
        None
    } else if let Some(pid) = cli.parent {
        Some(Selection::Descendants(pid))
    } else if let Some(uuid) = &cli.tree {
        Some(Selection::Tree(uuid.clone()))
    } else {
        Some(Selection::Orphans)
    };
    let opts = Options {
        runtime_dir: cli
            .runtime_dir
            .clone()
            .unwrap_or_else(plough_fork_prims::marker::default_runtime_dir),
        selection,
        grace: secs(cli.grace, "--grace")?,
        dry_run: cli.dry_run,
        shm: (cli.shm || cli.shm_only)
            .then(|| -> anyhow::Result<SweepOptions> {
                Ok(SweepOptions {
                    prefix: cli.shm_prefix.clone(),
                    min_age: secs(cli.shm_min_age, "--shm-min-age")?,
                    ..SweepOptions::default()
                })
            })
            .transpose()?,
        uds: cli.uds && !cli.shm_only,
        // Ctrl-C (or SIGTERM) while it waits out the grace period: SIGKILL now, and still
        // print what was done.
        interrupt: if cli.dry_run {
            None
        } else {
            Some(Interrupt::on_sigint_and_sigterm().context("cannot watch SIGINT")?)
        },
    };
    let report = run(&opts)?;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(Exit::of(&report, cli.dry_run, cli.check).into())
}

#[cfg(test)]
mod tests {
    use super::Exit;
    use plough_reaper::Report;
    use plough_reaper::shm::{FileAction, ShmVerdict};

    fn with_file(action: FileAction) -> Report {
        let why = String::new();
        Report {
            shm: vec![ShmVerdict { path: "/dev/shm/x".into(), action, why }],
            ..Report::default()
        }
    }

    /// The exit-status table, for every (report, --dry-run, --check).
    #[test]
    fn exit_status_says_whether_anything_is_left_behind() {
        let flags = [(false, false), (true, false), (false, true), (true, true)];
        for (dry_run, check) in flags {
            assert_eq!(Exit::of(&Report::default(), dry_run, check), Exit::Clean, "nothing found");
            let found = if dry_run || check { Exit::Found } else { Exit::Clean };
            let gone = if dry_run { FileAction::WouldRemove } else { FileAction::Removed };
            assert_eq!(Exit::of(&with_file(gone), dry_run, check), found, "{dry_run} {check}");
            let failed = with_file(FileAction::Failed);
            assert_eq!(Exit::of(&failed, dry_run, check), Exit::Incomplete, "{dry_run} {check}");
        }
        let codes = [Exit::Clean, Exit::Found, Exit::Usage, Exit::Incomplete].map(|e| e as u8);
        assert_eq!(codes, [0, 1, 2, 3]);
    }
}
