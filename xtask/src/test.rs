//! `cargo xtask test`: run the suites, echo their output live, then print a one-screen
//! summary that ends with a plain `summary: N passed, M failed` line.
//!
//! Each cell runs with its own runtime directory (`XDG_RUNTIME_DIR`), and the leak oracle
//! checks it afterwards: a live actor, a socket or marker file, a new `/dev/shm`
//! segment of ours, or a lab's network namespace (`plough-t-*`) that is still there
//! fails the cell, is listed, and is then reaped.

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
    /// Tests that failed and then passed on nextest's retry (`retries` in
    /// `.config/nextest.toml`): passed, but listed so they get fixed.
    flaky: Vec<String>,
}

/// One run of the test runner: a name, environment, and which tests.
struct Cell {
    name: String,
    env: Vec<(&'static str, &'static str)>,
    suites: Suites,
    /// Run with the whole runner confined to one CPU (its affinity, which every test
    /// process inherits): a one-CPU host, where connections are registered for reading
    /// only (`plough_ipc_wire` transport's `quiet` halves).
    one_cpu: bool,
}

/// Which tests a cell runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Suites {
    /// Everything of the workspace but the runtime suites.
    Workspace,
    /// The runtime suites (`tests/tests/runtime_*.rs`), once per backend and transport.
    Runtime,
    /// `tests/user-app`: a user's program, a cargo project of its own (tokio "full",
    /// `#[tokio::main]`, clap), built in its own target directory, always with `cargo test`.
    UserApp,
}

/// The user's program, relative to the workspace root.
const USER_APP: &str = "tests/user-app";

/// The backends and transports every runtime suite must pass on.
const METHODS: [&str; 3] = ["zygote", "exec", "main_thread_forkserver"];
const TRANSPORTS: [&str; 2] = ["tcp", "uds"];

pub(crate) fn run(args: &TestArgs) -> Result<()> {
    let root = crate::workspace_root();
    let nextest = !args.no_nextest && has_nextest();
    let runner = if nextest { "nextest" } else { "cargo test" };
    let start = Instant::now();

    let mut cells = vec![Cell {
        name: "workspace".to_owned(),
        env: vec![],
        suites: Suites::Workspace,
        one_cpu: false,
    }];
    for m in METHODS {
        for t in TRANSPORTS {
            cells.push(Cell {
                name: format!("{m} x {t}"),
                env: vec![("PLOUGH_SPAWN_METHOD", m), ("PLOUGH_TEST_TRANSPORT", t)],
                suites: Suites::Runtime,
                one_cpu: false,
            });
        }
    }
    // The default backend and transport once more, on one CPU.
    cells.push(Cell {
        name: "zygote x uds, one CPU".to_owned(),
        env: vec![("PLOUGH_SPAWN_METHOD", "zygote"), ("PLOUGH_TEST_TRANSPORT", "uds")],
        suites: Suites::Runtime,
        one_cpu: true,
    });
    cells.push(Cell {
        name: "user-app".to_owned(),
        env: vec![],
        suites: Suites::UserApp,
        one_cpu: false,
    });
    let runtime_tests = runtime_test_targets(&root)?;

    // Some suites drive workspace programs that are not their own package's (the `plough`
    // CLI of `plough-ps`, the `daemon` example): build every binary and example first,
    // with the same profile the runner uses (`cargo test --workspace` builds examples
    // too; this makes sure of it for every runner and test selection).
    let status = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args(["build", "--workspace", "--bins", "--examples"])
        .status()
        .context("could not run cargo build")?;
    anyhow::ensure!(status.success(), "cargo build --workspace --bins --examples failed: {status}");

    let mut results = Vec::new();
    for cell in &cells {
        eprintln!("\nxtask: == {} ({runner})", cell.name);
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(&root).envs(cell.env.iter().copied());
        let cell_nextest = nextest && cell.suites != Suites::UserApp;
        match (cell.suites, cell_nextest) {
            (Suites::UserApp, _) => {
                let manifest = root.join(USER_APP).join("Cargo.toml");
                cmd.args(["test", "--no-fail-fast", "--manifest-path"])
                    .arg(manifest)
                    .env("CARGO_TARGET_DIR", root.join("target/user-app"));
            }
            // Always `--workspace`: the same feature resolution as the first cell, so the
            // matrix reuses its build instead of compiling a second variant.
            (Suites::Runtime, true) => {
                cmd.args(["nextest", "run", "--no-fail-fast", "--workspace"]);
                cmd.args(["-E", "binary(/^runtime_/)"]);
            }
            (Suites::Workspace, true) => {
                cmd.args(["nextest", "run", "--no-fail-fast", "--workspace"]);
                cmd.args(["-E", "not binary(/^runtime_/)"]);
            }
            (Suites::Runtime, false) => {
                cmd.args(["test", "--no-fail-fast", "-p", "plough-tests"]);
                for t in &runtime_tests {
                    cmd.args(["--test", t]);
                }
            }
            // cargo test cannot exclude targets: the runtime suites also run here once.
            (Suites::Workspace, false) => {
                cmd.args(["test", "--no-fail-fast", "--workspace"]);
            }
        }
        if !args.extra.is_empty() {
            if !cell_nextest {
                cmd.arg("--");
            }
            cmd.args(&args.extra);
        }
        let rt_dir = std::env::temp_dir().join(format!(
            "plough-xtask-{}-{}",
            std::process::id(),
            results.len()
        ));
        make_private_dir(&rt_dir)?;
        cmd.env("XDG_RUNTIME_DIR", &rt_dir);
        let plough_dir = rt_dir.join("plough");
        let before = plough_reaper::Snapshot::take_in(&plough_dir);
        let before_ns = lab_namespaces();
        let cell_start = Instant::now();
        let confined = cell.one_cpu.then(confine_to_one_cpu).transpose()?;
        let ran = run_echoing(cmd).with_context(|| format!("could not run {runner}"));
        if let Some(before) = confined {
            rustix::thread::sched_setaffinity(None, &before)
                .context("could not restore this thread's CPU affinity")?;
        }
        let (ok, lines) = ran?;
        let mut counts =
            if cell_nextest { parse_nextest(&lines) } else { parse_cargo_test(&lines) };
        let mut leaks = check_leaks(&before, &plough_dir);
        leaks.extend(check_namespace_leaks(&before_ns));
        if !leaks.is_empty() {
            counts.failed += 1;
            for l in &leaks {
                counts.failures.push(format!("LEAK {l}"));
            }
        }
        let _ = std::fs::remove_dir_all(&rt_dir);
        results.push((cell.name.clone(), ok, counts, cell_start.elapsed()));
    }
    let all_ok = print_summary(runner, &results, start.elapsed());
    anyhow::ensure!(all_ok, "test run failed");
    Ok(())
}

/// Confines this thread (and so the processes it starts from now on) to the CPU it runs
/// on; returns the affinity it had.
fn confine_to_one_cpu() -> Result<rustix::thread::CpuSet> {
    let before = rustix::thread::sched_getaffinity(None).context("sched_getaffinity")?;
    let mut one = rustix::thread::CpuSet::new();
    one.set(rustix::thread::sched_getcpu());
    rustix::thread::sched_setaffinity(None, &one).context("sched_setaffinity")?;
    Ok(before)
}

fn make_private_dir(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    Ok(())
}

/// What a cell left behind in its runtime directory (and `/dev/shm`): live actors and
/// sockets through the oracle (then reaped), plus any file at all left in the directory
/// but the user's secret (`plough_ipc_wire::auth::SECRET_FILE`), which is meant to stay.
fn check_leaks(before: &plough_reaper::Snapshot, dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let leaks = before.leaked_since();
    if !leaks.is_empty() {
        out.extend(leaks.to_string().lines().map(str::to_owned));
        let report = plough_reaper::reap(&leaks);
        if !report.all_gone() {
            out.push("(some leaked processes could not be reaped)".to_owned());
        }
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p == dir.join(plough_ipc_wire::auth::SECRET_FILE) {
                // The user's secret: kept across runs, as it is on a user's machine.
            } else if !out.iter().any(|l| l.contains(&*p.to_string_lossy())) {
                out.push(format!("file left behind: {}", p.display()));
            }
        }
    }
    out
}

/// The prefix of the network namespaces the tests' labs make (`plough_tests::netns`).
const LAB_NETNS_PREFIX: &str = "plough-t-";

/// The labs' network namespaces that exist now (none where `ip` is missing).
fn lab_namespaces() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).stderr(Stdio::null()).output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(LAB_NETNS_PREFIX))
        .map(str::to_owned)
        .collect()
}

/// A lab namespace a cell left behind is a leak: listed, then deleted.
fn check_namespace_leaks(before: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for ns in lab_namespaces().into_iter().filter(|n| !before.contains(n)) {
        let _ = Command::new("ip").args(["netns", "delete", &ns]).status();
        out.push(format!("network namespace left behind: {ns}"));
    }
    out
}

/// The names of `tests/tests/runtime_*.rs`, the suites the matrix repeats.
fn runtime_test_targets(root: &std::path::Path) -> Result<Vec<String>> {
    let mut v: Vec<String> = std::fs::read_dir(root.join("tests/tests"))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let stem = name.strip_suffix(".rs")?;
            stem.starts_with("runtime_").then(|| stem.to_owned())
        })
        .collect();
    v.sort();
    Ok(v)
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
        } else if t.starts_with("FLAKY ") && !c.flaky.contains(&t.to_string()) {
            c.flaky.push(t.to_string());
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

/// Prints one line per cell and the closing `summary: N passed, M failed` line; returns
/// whether every cell passed.
fn print_summary(
    runner: &str,
    results: &[(String, bool, Counts, Duration)],
    took: Duration,
) -> bool {
    println!();
    println!("== plough test summary ({runner}, {:.1}s)", took.as_secs_f64());
    let (mut passed, mut failed, mut all_ok) = (0, 0, true);
    let flaky: usize = results.iter().map(|(_, _, c, _)| c.flaky.len()).sum();
    for (name, ok, c, d) in results {
        let ok = *ok && c.failed == 0;
        all_ok &= ok;
        passed += c.passed;
        // A runner failure with no failed test (a build error, a crash) counts as one.
        failed += if ok { 0 } else { c.failed.max(1) };
        println!(
            "   {:<4} {name:<32} {:>4} passed {:>3} failed {:>3} skipped  {:>6.1}s",
            if ok { "ok" } else { "FAIL" },
            c.passed,
            c.failed,
            c.skipped,
            d.as_secs_f64()
        );
        for f in c.failures.iter().take(10) {
            println!("        {f}");
        }
        for f in &c.flaky {
            println!("        {f}");
        }
        if c.failures.len() > 10 {
            println!("        ... and {} more failures", c.failures.len() - 10);
        }
    }
    if flaky > 0 {
        println!("summary: {passed} passed, {failed} failed ({flaky} flaky: passed on retry)");
    } else {
        println!("summary: {passed} passed, {failed} failed");
    }
    all_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nextest_counts_failures_and_flakes() {
        let out = [
            "  TRY 1 FAIL [   0.003s] plough-tests::runtime_stream ten_round_ping_pong",
            "  TRY 2 PASS [   0.002s] plough-tests::runtime_stream ten_round_ping_pong",
            "        FAIL [   0.010s] plough-tests::runtime_basics spawn_and_call_a_function",
            "     Summary [   0.021s] 3 tests run: 2 passed (1 flaky), 1 failed, 4 skipped",
            "   FLAKY 2/2 [   0.002s] plough-tests::runtime_stream ten_round_ping_pong",
        ]
        .map(str::to_owned);
        let c = parse_nextest(&out);
        assert_eq!((c.passed, c.failed, c.skipped), (2, 1, 4));
        assert_eq!(c.failures.len(), 1, "{:?}", c.failures);
        assert_eq!(c.flaky.len(), 1, "{:?}", c.flaky);
        assert!(c.flaky[0].ends_with("ten_round_ping_pong"));
    }
}
