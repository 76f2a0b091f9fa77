//! Running out of file descriptors, and a runtime directory someone else controls: a root
//! program (`plough_app`) runs with a low soft `RLIMIT_NOFILE` (set by the program itself
//! before plough starts), in a fresh `XDG_RUNTIME_DIR` per test, on this cell's transport
//! and spawn method.
//!
//! * 100 spawns at a limit of 64 fds: each one that finds no fd fails with
//!   `SpawnError::OutOfFds` naming the limit; the tree that runs is unharmed (a child
//!   started first still answers), no child of the root is a zombie, no marker or socket
//!   is left by a failed spawn, and the root exits cleanly.
//! * A listener flooded with connections that never speak: it keeps its fd reserve, so a
//!   spawn and a call made during the flood succeed, and the root's fds return to their
//!   baseline once the flood closes.
//! * A squatted runtime directory (a symlink, world-writable, another user's): the root
//!   refuses to start, naming the directory and the reason, on TCP and on UDS alike.

use plough::Budgets;
use plough_fork_prims::ChildHandle;
use plough_fork_prims::marker::{MarkerInfo, markers_dir};
use plough_tests::{
    assert_no_descendants, become_subreaper, descendants_of, files_left_in, proc_state,
};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const APP: &str = env!("CARGO_BIN_EXE_plough_app");
const FLOOD: &str = env!("CARGO_BIN_EXE_fd_flood");

/// A root program under test: its handle (killed if the test fails), its stdin, its stdout
/// lines.
struct Root {
    handle: ChildHandle,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Root {
    /// `plough_app ARGS` with `XDG_RUNTIME_DIR=dir` and a registry on this cell's
    /// transport (a UDS one in `dir/plough`); its stderr goes to `stderr`.
    fn start(args: &[&str], dir: &Path, uds: bool, stderr: std::fs::File) -> Root {
        let registry = if uds {
            format!("uds://{}", dir.join("plough/reg@fd.sock").display())
        } else {
            "tcp://127.0.0.1:0".to_owned()
        };
        let mut child = Command::new(APP)
            .args(args)
            .env("XDG_RUNTIME_DIR", dir)
            .env("PLOUGH_TEST_REGISTRY", &registry)
            .env("PLOUGH_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn plough_app");
        let stdout = child.stdout.take().unwrap();
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let handle = ChildHandle::from_std(child).unwrap();
        handle.set_kill_on_drop(true);
        Root { handle, stdin, lines }
    }

    /// The next line, within `limit`.
    #[track_caller]
    fn line(&self, limit: Duration) -> String {
        self.lines.recv_timeout(limit).unwrap_or_else(|e| panic!("no line within {limit:?}: {e}"))
    }

    /// Lines until one equal to `last` (included), within `limit` in all.
    #[track_caller]
    fn lines_until(&self, last: &str, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.line(left);
            let done = line == last;
            out.push(line);
            if done {
                return out;
            }
        }
    }

    fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to the root");
        stdin.flush().unwrap();
    }

    /// Closes stdin and waits (at most `limit`) for the exit; its code.
    #[track_caller]
    fn exit_code(&mut self, limit: Duration) -> Option<i32> {
        drop(self.stdin.take());
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.handle.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "the root still runs after {limit:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn uds_cell() -> bool {
    std::env::var("PLOUGH_TEST_TRANSPORT").as_deref() == Ok("uds")
}

fn scratch(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().unwrap()
}

#[test]
fn spawns_past_the_fd_limit_fail_typed_and_harm_nothing() {
    past_the_fd_limit(false);
}

/// The same with an up-front check that lets a spawn start with only 4 fds free, so that
/// the spawns run out at their own steps (the pipes, the child's stdio and boot socket, the
/// zygote exchange, the pidfd) — or at the check, once even those 4 are gone.
#[test]
fn spawns_that_run_out_at_any_step_fail_typed_and_harm_nothing() {
    past_the_fd_limit(true);
}

fn past_the_fd_limit(unchecked: bool) {
    become_subreaper();
    let tmp = scratch("plough-fdlimit-");
    let stderr = std::fs::File::create(tmp.path().join("stderr")).unwrap();
    let mut args = vec!["fd-limit", "64", "100"];
    if unchecked {
        args.push("unchecked");
    }
    let mut root = Root::start(&args, tmp.path(), uds_cell(), stderr);
    let b = Budgets::default();
    let lines = root.lines_until("ready", b.connect_cap);
    let summary = lines.iter().find(|l| l.starts_with("spawned ")).expect("a summary");
    let count = |key: &str| -> usize {
        let field = summary.split(' ').find_map(|f| f.strip_prefix(key)).expect(key);
        field.parse().unwrap()
    };
    let (ok, out_of_fds, other) = (count("ok="), count("out_of_fds="), count("other="));
    let steps: std::collections::BTreeSet<&str> =
        lines.iter().filter_map(|l| l.split_once(" at ")?.1.split(" (").next()).collect();
    eprintln!("at 64 fds (unchecked: {unchecked}): {summary}; failing steps: {steps:?}");
    assert_eq!(ok + out_of_fds + other, 100, "{lines:#?}");
    assert!(out_of_fds + other > 0, "100 spawns at 64 fds must run out: {lines:#?}");
    assert!(unchecked || out_of_fds > 0, "the up-front check refuses: {lines:#?}");
    let errors: Vec<&String> = lines.iter().filter(|l| l.starts_with("spawn-err ")).collect();
    assert_eq!(errors.len(), out_of_fds + other);
    for e in &errors {
        if e.contains("out of file descriptors at ") {
            assert!(e.contains("RLIMIT_NOFILE soft limit 64"), "names the limit: {e}");
        } else {
            // With fewer fds kept for a spawn than it needs, the parent may have none left
            // to tell its child's connection from a flood's (over TCP that takes a pidfd
            // and a duplicated socket): the child, refused, died during its boot. Typed,
            // and it is reaped like any other.
            assert!(unchecked, "every failure is OutOfFds: {e}");
            assert!(e.contains("died during boot") && e.contains("during the handshake"), "{e}");
        }
    }
    assert!(lines.contains(&"zombies 0".to_owned()), "{lines:#?}");
    // From outside too: no child of the root is a zombie, and every marker in the runtime
    // directory is a live actor's (a failed spawn left none, whole or half-written).
    let below = descendants_of(root.handle.pid());
    let zombies: Vec<u32> = below.iter().copied().filter(|&p| proc_state(p) == Some('Z')).collect();
    assert!(zombies.is_empty(), "zombies below the root: {zombies:?}");
    let rt_dir = tmp.path().join("plough");
    for entry in std::fs::read_dir(markers_dir(&rt_dir)).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let info = MarkerInfo::parse(&text).unwrap_or_else(|| panic!("not a marker: {entry:?}"));
        assert!(info.is_live(), "a dead actor's marker: {info:?}");
    }
    if uds_cell() {
        for f in
            files_left_in(&rt_dir).iter().filter(|f| f.extension().is_some_and(|e| e == "sock"))
        {
            let pid: u32 = f
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.rsplit_once('@'))
                .and_then(|(_, p)| p.parse().ok())
                .unwrap_or(0);
            let name = f.file_name().unwrap().to_string_lossy();
            assert!(name.starts_with("reg@") || below.contains(&pid), "a stray socket: {f:?}");
        }
    }
    // The tree that ran is unharmed: the keeper, started first, still answers.
    root.say("go");
    let rest = root.lines_until("result ok", b.connect + b.tree_teardown(1) + b.actor_exit());
    assert_eq!(rest.first().map(String::as_str), Some("keeper 3"), "{rest:#?}");
    assert_eq!(root.exit_code(b.actor_exit()), Some(0));
    assert_no_descendants(b.reap_bound);
    let left: Vec<PathBuf> =
        files_left_in(tmp.path()).into_iter().filter(|f| !f.ends_with("stderr")).collect();
    assert!(left.is_empty(), "left behind: {left:#?}");
}

/// The `fds N` (or `spawned 42 fds N`) count in `line`.
fn fds_in(line: &str) -> i64 {
    line.rsplit_once("fds ").and_then(|(_, n)| n.parse().ok()).unwrap_or_else(|| panic!("{line}"))
}

#[test]
fn a_flooded_listener_keeps_room_to_spawn_and_call() {
    become_subreaper();
    let tmp = scratch("plough-flood-");
    let log = tmp.path().join("stderr");
    // 80 fds: the root's own fds and the 64 handshakes its listener runs at once (the
    // flood never speaks) would take all of them; the reserve (20) keeps 60 the most the
    // listener may fill.
    let mut root =
        Root::start(&["flood", "80"], tmp.path(), uds_cell(), std::fs::File::create(&log).unwrap());
    let b = Budgets::default();
    let addr = root.line(b.connect).strip_prefix("addr ").expect("addr line").to_owned();
    let _ = root.lines_until("ready", b.connect);
    // Two children before the flood: what one costs the root, once its backend is up.
    root.say("spawn");
    let first = root.line(b.connect_cap);
    root.say("spawn");
    let second = root.line(b.connect_cap);
    assert!(first.starts_with("spawned 42 ") && second.starts_with("spawned 42 "), "{first}");
    let (baseline, per_child) = (fds_in(&second), fds_in(&second) - fds_in(&first));

    let mut flood = Command::new(FLOOD)
        .args([addr.as_str(), "300"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn fd_flood");
    let mut flood_out = BufReader::new(flood.stdout.take().unwrap());
    let mut held = String::new();
    flood_out.read_line(&mut held).unwrap();
    assert!(held.starts_with("held "), "{held}");
    // While it holds them: a spawn and a call.
    let t = Instant::now();
    root.say("spawn");
    let under = root.line(b.connect_cap);
    assert!(under.starts_with("spawned 42 "), "the spawn under the flood: {under}");
    let took = t.elapsed();
    let at_flood = fds_in(&under);
    assert!(at_flood <= 80, "{under}");
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(
        stderr.contains("listener at its fd reserve"),
        "the flood reached the reserve (fds {at_flood} of 80): {stderr}"
    );
    eprintln!(
        "flood: {} connects, root at {at_flood} of 80 fds; spawn + call under it took {took:?}",
        held.trim()
    );
    drop(flood.stdin.take());
    let flood_status = flood.wait().unwrap();
    assert!(flood_status.success(), "{flood_status}");

    // Back to the baseline (and the third child) once the flood is gone.
    let want = baseline + per_child;
    let deadline = Instant::now() + b.handshake + b.connect;
    loop {
        root.say("fds");
        let now = fds_in(&root.line(b.connect));
        if now <= want {
            break;
        }
        assert!(Instant::now() < deadline, "fds stay at {now}, baseline {want}");
        std::thread::sleep(Duration::from_millis(50));
    }
    root.say("quit");
    root.lines_until("result ok", b.tree_teardown(1) + b.actor_exit());
    assert_eq!(root.exit_code(b.actor_exit()), Some(0));
    assert_no_descendants(b.reap_bound);
}

/// Starts a root whose runtime directory is `squat(dir/plough)` on TCP and on UDS, and
/// checks that it refuses with `expect` in its error, writing nothing there.
fn refused(what: &str, squat: impl Fn(&Path), expect: &str) {
    for uds in [false, true] {
        let tmp = scratch("plough-squat-");
        let rt_dir = tmp.path().join("plough");
        squat(&rt_dir);
        let before = files_left_in(tmp.path());
        let stderr = std::fs::File::create(tmp.path().join("stderr")).unwrap();
        let mut root = Root::start(&["idle"], tmp.path(), uds, stderr);
        let b = Budgets::default();
        let line = root.line(b.connect);
        let transport = if uds { "uds" } else { "tcp" };
        assert!(
            line.starts_with("result err refusing the runtime directory ")
                && line.contains(&rt_dir.display().to_string())
                && line.contains(expect),
            "{what} on {transport}: {line}"
        );
        assert_eq!(root.exit_code(b.actor_exit()), Some(1), "{what} on {transport}");
        let after: Vec<PathBuf> =
            files_left_in(tmp.path()).into_iter().filter(|f| !f.ends_with("stderr")).collect();
        assert_eq!(after, before, "{what} on {transport}: nothing written through it");
        eprintln!("{what} on {transport}: {line}");
    }
}

#[test]
fn a_squatted_runtime_dir_is_refused_on_every_transport() {
    refused(
        "a symlink",
        |dir| {
            let elsewhere = dir.with_file_name("elsewhere");
            std::fs::create_dir(&elsewhere).unwrap();
            std::os::unix::fs::symlink(&elsewhere, dir).unwrap();
        },
        "is a symlink",
    );
    refused(
        "a world-writable directory",
        |dir| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::create_dir(dir).unwrap();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        },
        "writable by others",
    );
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped the foreign-owned case: needs root to chown to 65534");
        return;
    }
    refused(
        "a directory of uid 65534",
        |dir| {
            std::fs::create_dir(dir).unwrap();
            std::os::unix::fs::chown(dir, Some(65534), Some(65534)).unwrap();
        },
        "owned by uid 65534",
    );
}
