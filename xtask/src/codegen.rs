//! `cargo xtask codegen [--check]`: the committed Cap'n Proto code of `plough-ipc-wire`.
//!
//! The generated Rust lives in `ipc-wire/src/generated/` and is committed, so that a fresh
//! machine builds the workspace without the `capnp` compiler (there is no build script).
//! The price is that the committed code can go stale when someone edits
//! `ipc-wire/schema/*.capnp` and forgets to regenerate; `--check` is the guard against that:
//! it generates into a scratch directory and fails, naming each differing file, when the
//! result is not byte-for-byte what is committed.
//!
//! The output is run through `rustfmt` with the workspace's `rustfmt.toml`, so that
//! `cargo fmt` leaves it unchanged (otherwise formatting the workspace would make the check
//! fail).

use anyhow::{Context, Result, bail, ensure};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The parent module (inside `plough-ipc-wire`) that the generated modules live in; the
/// generated code names its own types through this path.
const PARENT_MODULE: &str = "generated";

pub(crate) fn run(check: bool) -> Result<()> {
    let root = crate::workspace_root();
    let schema_dir = root.join("ipc-wire/schema");
    let committed = root.join("ipc-wire/src").join(PARENT_MODULE);

    let capnp = find_capnp()?;
    let schemas = schema_files(&schema_dir)?;

    if check {
        let scratch = ScratchDir::new()?;
        generate(&capnp, &schema_dir, &schemas, scratch.path())?;
        let report = compare(scratch.path(), &committed)?;
        if !report.is_empty() {
            bail!(
                "the committed Cap'n Proto code in {} is stale:\n{}\nrun `cargo xtask codegen` and commit the result",
                committed.display(),
                report.join("\n")
            );
        }
        println!(
            "codegen: {} is up to date ({} schema file(s))",
            committed.display(),
            schemas.len()
        );
    } else {
        fs::create_dir_all(&committed)
            .with_context(|| format!("failed to create {}", committed.display()))?;
        // Start clean so that a schema file that was removed does not leave its module behind.
        for stale in generated_files(&committed)? {
            fs::remove_file(committed.join(&stale))
                .with_context(|| format!("failed to remove stale {stale}"))?;
        }
        generate(&capnp, &schema_dir, &schemas, &committed)?;
        println!(
            "codegen: regenerated {} from {} schema file(s)",
            committed.display(),
            schemas.len()
        );
    }
    Ok(())
}

/// The `capnp` compiler, or a clear error that says how to get it.
fn find_capnp() -> Result<PathBuf> {
    let exe = std::env::var_os("CAPNP").map_or_else(|| PathBuf::from("capnp"), PathBuf::from);
    match Command::new(&exe).arg("--version").output() {
        Ok(out) if out.status.success() => Ok(exe),
        Ok(out) => bail!(
            "`{} --version` failed ({}); the Cap'n Proto compiler is needed for codegen",
            exe.display(),
            out.status
        ),
        Err(e) => bail!(
            "the Cap'n Proto compiler `{}` is not installed ({e}); install it \
             (Debian: `apt-get install capnproto`) or point $CAPNP at it",
            exe.display()
        ),
    }
}

fn schema_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("failed to read {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "capnp") {
            files.push(path);
        }
    }
    files.sort();
    ensure!(!files.is_empty(), "no .capnp files in {}", dir.display());
    Ok(files)
}

fn generate(capnp: &Path, schema_dir: &Path, schemas: &[PathBuf], out: &Path) -> Result<()> {
    let mut cmd = capnpc::CompilerCommand::new();
    cmd.capnp_executable(capnp)
        .src_prefix(schema_dir)
        .output_path(out)
        .default_parent_module(vec![PARENT_MODULE.to_owned()]);
    for schema in schemas {
        cmd.file(schema);
    }
    cmd.run().map_err(|e| anyhow::anyhow!("capnp compile failed: {e}"))?;

    let generated = generated_files(out)?;
    ensure!(!generated.is_empty(), "capnp produced no Rust files in {}", out.display());
    let mut rustfmt = Command::new(std::env::var_os("RUSTFMT").unwrap_or_else(|| "rustfmt".into()));
    rustfmt.args(["--edition", "2024"]);
    // The scratch dir of `--check` is outside the workspace: point rustfmt at its config.
    let root = crate::workspace_root();
    if root.join("rustfmt.toml").exists() {
        rustfmt.arg("--config-path").arg(root.join("rustfmt.toml"));
    }
    for file in &generated {
        rustfmt.arg(out.join(file));
    }
    let status = rustfmt.status().context("failed to run rustfmt on the generated code")?;
    ensure!(status.success(), "rustfmt failed on the generated code: {status}");
    Ok(())
}

/// The generated `*_capnp.rs` files in `dir` (file names only), sorted.
fn generated_files(dir: &Path) -> Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    if !dir.exists() {
        return Ok(names);
    }
    for entry in fs::read_dir(dir).with_context(|| format!("failed to read {}", dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with("_capnp.rs") {
            names.insert(name);
        }
    }
    Ok(names)
}

/// One line per difference between freshly generated and committed code; empty when equal.
fn compare(fresh: &Path, committed: &Path) -> Result<Vec<String>> {
    let fresh_files = generated_files(fresh)?;
    let committed_files = generated_files(committed)?;
    let mut report = Vec::new();
    for name in fresh_files.difference(&committed_files) {
        report.push(format!("  missing:   {name} (the schema generates it, it is not committed)"));
    }
    for name in committed_files.difference(&fresh_files) {
        report.push(format!("  extra:     {name} (committed, no schema generates it)"));
    }
    for name in fresh_files.intersection(&committed_files) {
        let new = fs::read_to_string(fresh.join(name))?;
        let old = fs::read_to_string(committed.join(name))?;
        if new != old {
            report.push(format!("  changed:   {name} ({})", first_difference(&old, &new)));
        }
    }
    Ok(report)
}

fn first_difference(old: &str, new: &str) -> String {
    let (old_lines, new_lines): (Vec<_>, Vec<_>) = (old.lines().collect(), new.lines().collect());
    let line = old_lines
        .iter()
        .zip(&new_lines)
        .position(|(a, b)| a != b)
        .unwrap_or(old_lines.len().min(new_lines.len()));
    let shown = |lines: &[&str]| {
        lines.get(line).map_or("<end of file>".to_owned(), |l| l.trim().to_owned())
    };
    format!(
        "{} vs {} lines; first difference at line {}: committed `{}`, generated `{}`",
        old_lines.len(),
        new_lines.len(),
        line + 1,
        shown(&old_lines),
        shown(&new_lines)
    )
}

/// A directory under the system temp dir, removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let path =
            std::env::temp_dir().join(format!("plough-codegen-{}-{nanos}", std::process::id()));
        fs::create_dir(&path).with_context(|| format!("failed to create {}", path.display()))?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
