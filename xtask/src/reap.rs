//! `cargo xtask reap [ARGS]...`: runs this workspace's `plough-reap` with `ARGS` (see
//! `cargo xtask reap --help`) and exits with its status: 0 nothing left behind (nothing
//! found, or all of it reaped), 1 found and still there (`--dry-run`) or found at all
//! (`--check`), 2 usage error or refusal, 3 found but not all of it reaped or removed.

use anyhow::Result;
use std::process::Command;

/// Arguments passed through to `plough-reap` unchanged.
#[derive(Debug, clap::Args)]
pub(crate) struct ReapArgs {
    /// Arguments for `plough-reap` (e.g. `--dry-run --shm --uds`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

pub(crate) fn run(args: &ReapArgs) -> Result<()> {
    let status = Command::new(env!("CARGO"))
        .current_dir(crate::workspace_root())
        .args(["run", "--quiet", "-p", "plough-reaper", "--bin", "plough-reap", "--"])
        .args(&args.args)
        .status()?;
    std::process::exit(status.code().unwrap_or(2));
}
