//! `cargo xtask test`: run the suites, echo their output live, then print a one-screen
//! summary that ends with a plain `summary: N passed, M failed` line.

use anyhow::{Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub(crate) struct TestArgs {
    /// Use `cargo test` even when cargo-nextest is installed.
    #[arg(long)]
    no_nextest: bool,
    /// Extra arguments for the test runner (after `--`), e.g. a test-name filter.
    #[arg(last = true)]
    extra: Vec<String>,
}

/// What one run of a test runner reported.
#[derive(Debug, Default)]
struct Counts {
    passed: u64,
    failed: u64,
    skipped: u64,
    failures: Vec<String>,
}

pub(crate) fn run(args: &TestArgs) -> Result<()> {
    let root = crate::workspace_root();
    let nextest = !args.no_nextest && has_nextest();
    let start = Instant::now();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(&root);
    if nextest {
        cmd.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
    } else {
        cmd.args(["test", "--workspace", "--no-fail-fast"]);
    }
    if !args.extra.is_empty() {
        if !nextest {
            cmd.arg("--");
        }
        cmd.args(&args.extra);
    }
    let runner = if nextest { "nextest" } else { "cargo test" };
    eprintln!("xtask: running the workspace suites with {runner}");
    let (ok, lines) = run_echoing(cmd).with_context(|| format!("could not run {runner}"))?;
    let counts = if nextest { parse_nextest(&lines) } else { parse_cargo_test(&lines) };
    print_summary(runner, ok, &counts, start.elapsed());
    anyhow::ensure!(ok && counts.failed == 0, "test run failed");
    Ok(())
}

fn has_nextest() -> bool {
    Command::new(env!("CARGO"))
        .args(["nextest", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `cmd`, echoing stdout and stderr as they come, and returns its success and
/// every line it printed.
fn run_echoing(mut cmd: Command) -> Result<(bool, Vec<String>)> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let lines = Arc::new(Mutex::new(Vec::new()));
    let pump = |r: Box<dyn std::io::Read + Send>, to_err: bool| {
        let lines = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines() {
                let Ok(line) = line else { break };
                if to_err {
                    let _ = writeln!(std::io::stderr(), "{line}");
                } else {
                    let _ = writeln!(std::io::stdout(), "{line}");
                }
                lines.lock().unwrap().push(line);
            }
        })
    };
    let out = pump(Box::new(child.stdout.take().expect("piped")), false);
    let err = pump(Box::new(child.stderr.take().expect("piped")), true);
    let status = child.wait()?;
    let _ = out.join();
    let _ = err.join();
    let lines = std::mem::take(&mut *lines.lock().unwrap());
    Ok((status.success(), lines))
}

/// nextest: `Summary [  1.234s] 12 tests run: 11 passed, 1 failed, 2 skipped`, and one
/// `FAIL [ 0.1s] crate::binary test_name` line per failure.
fn parse_nextest(lines: &[String]) -> Counts {
    let mut c = Counts::default();
    for line in lines {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("Summary") {
            let Some((_, tail)) = rest.split_once("run:") else { continue };
            for part in tail.split(',') {
                let mut it = part.split_whitespace();
                let n = it.next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
                match it.next() {
                    Some("passed") => c.passed = n,
                    Some("failed") => c.failed = n,
                    Some("skipped") => c.skipped = n,
                    Some("timed") => c.failed += n, // "N timed out"
                    _ => {}
                }
            }
        } else if (t.starts_with("FAIL [")
            || t.starts_with("TIMEOUT [")
            || t.starts_with("SIGSEGV ["))
            && !c.failures.contains(&t.to_string())
        {
            c.failures.push(t.to_string());
        }
    }
    c
}

/// cargo test: one `test result: ok. 3 passed; 0 failed; 1 ignored; ...` per binary.
fn parse_cargo_test(lines: &[String]) -> Counts {
    let mut c = Counts::default();
    for line in lines {
        if let Some(rest) = line.trim().strip_prefix("test result:") {
            for part in rest.split(';') {
                let words: Vec<&str> = part.split_whitespace().collect();
                let (n, what) = match words.as_slice() {
                    [_, n, what, ..] if n.parse::<u64>().is_ok() => (n, what),
                    [n, what, ..] => (n, what),
                    _ => continue,
                };
                let n = n.parse::<u64>().unwrap_or(0);
                match *what {
                    "passed" => c.passed += n,
                    "failed" => c.failed += n,
                    "ignored" => c.skipped += n,
                    _ => {}
                }
            }
        } else if line.starts_with("test ") && line.ends_with("FAILED") {
            c.failures.push(line.clone());
        }
    }
    c
}

fn print_summary(runner: &str, ok: bool, c: &Counts, took: Duration) {
    println!();
    println!("== plough test summary ({runner}, {:.1}s)", took.as_secs_f64());
    println!(
        "   workspace: {} passed, {} failed, {} skipped{}",
        c.passed,
        c.failed,
        c.skipped,
        if ok { "" } else { "  [runner reported failure]" }
    );
    for f in c.failures.iter().take(20) {
        println!("   {f}");
    }
    if c.failures.len() > 20 {
        println!("   ... and {} more failures", c.failures.len() - 20);
    }
    println!("summary: {} passed, {} failed", c.passed, c.failed);
}
