//! `plough-reap`: find plough actors that outlived their tree and end them (SIGINT, a
//! grace period, SIGKILL); optionally sweep unused `/dev/shm` segments and stale socket
//! files. Only processes and files of the current user that carry a live plough marker
//! are ever touched.
//!
//! SIGINT (Ctrl-C) or SIGTERM to `plough-reap` while it waits out the grace period ends
//! the wait: the actors still running are SIGKILLed at once, and the report is printed.
//!
//! Exit status: 0 nothing found; 1 something found and dealt with (or listed, with
//! `--dry-run`); 3 something found that could not be dealt with (a process survived
//! SIGKILL, a file could not be removed); 2 usage error or refusal (e.g. an untrusted
//! runtime directory).

use anyhow::Context as _;
use clap::Parser;
use plough_reaper::shm::SweepOptions;
use plough_reaper::{Interrupt, Options, Selection, run};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Find and reap orphaned plough actors; sweep /dev/shm and stale plough sockets.
///
/// Exit status: 0 = nothing found, 1 = found and handled (or listed with --dry-run),
/// 3 = found but not all handled, 2 = error.
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
    /// Also remove socket files whose owner is gone, stale markers, and half-written
    /// markers (actors/.PID.UUID.tmp) whose writer is gone (a live one's stays).
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
            ExitCode::from(2)
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
    Ok(ExitCode::from(match (report.found_anything(), report.all_handled()) {
        (false, _) => 0,
        (true, true) => 1,
        (true, false) => 3,
    }))
}
