//! `cargo xtask`: plough's developer tasks.
//!
//! * `cargo xtask test` — the workspace suites (nextest when installed, `cargo test`
//!   otherwise), then a one-screen summary. This is the command the README and `.ci/run` give.
//! * `cargo xtask codegen [--check]` — regenerate the committed Cap'n Proto code, or fail
//!   when it is stale.
//! * `cargo xtask bench [NAME]` — the benchmark targets (figures are ratios against a
//!   baseline measured in the same run).

mod codegen;
mod reap;
mod test;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "plough's developer tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the test suites and print a summary; fails if any suite fails.
    Test(test::TestArgs),
    /// Find and reap leftover plough actors, shm segments and sockets (`plough-reap`).
    Reap(reap::ReapArgs),
    /// Regenerate `ipc-wire/src/generated/` from `ipc-wire/schema/*.capnp`.
    Codegen {
        /// Do not write; fail when the committed code differs from what capnp generates.
        #[arg(long)]
        check: bool,
    },
    /// Run the benchmark targets (criterion) of the workspace.
    Bench {
        /// Only benchmarks whose name contains this filter.
        filter: Option<String>,
        /// Shorter measurement (for a smoke run).
        #[arg(long)]
        quick: bool,
    },
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Test(args) => test::run(&args),
        Cmd::Reap(args) => reap::run(&args),
        Cmd::Codegen { check } => codegen::run(check),
        Cmd::Bench { filter, quick } => bench(filter.as_deref(), quick),
    }
}

/// The workspace root (the parent of this crate's directory).
pub(crate) fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Runs the benchmark targets: the runtime bench (table + `target/plough-bench.json`),
/// the multi-host rows (`tests/benches/hosts.rs`, `target/plough-bench-hosts.json`),
/// then the criterion benches of fork-prims (spawn cost by heap size) and ipc-wire
/// (codec vs raw capnp, UDS throughput). `filter` selects criterion benchmarks by name.
fn bench(filter: Option<&str>, quick: bool) -> Result<()> {
    let run = |package: &str, bench: &str, extra: &[&str]| -> Result<()> {
        let mut cmd = std::process::Command::new(env!("CARGO"));
        cmd.current_dir(workspace_root())
            .args(["bench", "-p", package, "--bench", bench, "--"])
            .args(extra);
        let status = cmd.status()?;
        anyhow::ensure!(
            status.success(),
            "cargo bench -p {package} --bench {bench} failed: {status}"
        );
        Ok(())
    };
    if filter.is_none_or(|f| "runtime".contains(f)) {
        run("plough", "runtime", if quick { &["--quick"] } else { &[] })?;
    }
    // The multi-host rows (a lab of network namespaces; skipped, said why, without root).
    if filter.is_none_or(|f| "hosts".contains(f)) {
        run("plough-tests", "hosts", if quick { &["--quick"] } else { &[] })?;
    }
    let mut criterion: Vec<&str> = Vec::new();
    if let Some(f) = filter {
        criterion.push(f);
    }
    if quick {
        criterion.extend(["--warm-up-time", "0.5", "--measurement-time", "2"]);
    }
    run("plough-fork-prims", "spawn", &criterion)?;
    run("plough-ipc-wire", "wire", &criterion)?;
    Ok(())
}
