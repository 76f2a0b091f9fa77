//! Signals from outside: SIGINT to the root, SIGKILL of a parent. The root here is the
//! `plough_app` program; this test process is its subreaper, so any orphan would show.

use plough_fork_prims::ChildHandle;
use plough_tests::{assert_no_descendants, become_subreaper, private_registry, wait_until};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const APP: &str = env!("CARGO_BIN_EXE_plough_app");

struct App {
    handle: ChildHandle,
    stdout: BufReader<std::process::ChildStdout>,
    pids: Vec<u32>,
}

fn start_app(args: &[&str]) -> App {
    become_subreaper();
    let mut child = Command::new(APP)
        .args(args)
        .env("PLOUGH_TEST_REGISTRY", private_registry().to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn plough_app");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let handle = ChildHandle::from_std(child).unwrap();
    handle.set_kill_on_drop(true);
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let pids: Vec<u32> = line
        .strip_prefix("pids ")
        .unwrap_or_else(|| panic!("app said {line:?}"))
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    App { handle, stdout, pids }
}

fn wait_exit(handle: &ChildHandle, limit: Duration) -> plough_fork_prims::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = handle.try_wait().unwrap() {
            return st;
        }
        assert!(Instant::now() < deadline, "pid {} still running after {limit:?}", handle.pid());
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn rest_of(stdout: &mut BufReader<std::process::ChildStdout>) -> String {
    let mut s = String::new();
    let _ = std::io::Read::read_to_string(stdout, &mut s);
    s
}

#[test]
fn sigint_to_the_root_cancels_the_tree() {
    let mut app = start_app(&["sleepers", "3"]);
    assert_eq!(app.pids.len(), 3);
    let t = Instant::now();
    app.handle.signal(plough_fork_prims::Signal::INT).unwrap();
    let st = wait_exit(&app.handle, Duration::from_secs(2));
    assert_eq!(st.code(), Some(130), "{st}");
    assert!(rest_of(&mut app.stdout).contains("result err interrupted"));
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_no_descendants(Duration::from_secs(2));
}

#[test]
fn sigint_raised_by_a_background_task_cancels_the_tree() {
    let mut app = start_app(&["sleepers-selfint", "2"]);
    let st = wait_exit(&app.handle, Duration::from_secs(2));
    assert_eq!(st.code(), Some(130), "{st}");
    assert!(rest_of(&mut app.stdout).contains("result err interrupted"));
    assert_no_descendants(Duration::from_secs(2));
}

/// SIGKILLs the app's root, reaps it and removes the files it could not; returns every
/// orphan it left to us (its actors, and its zygote when it had one).
fn kill_root(app: &App) -> Vec<u32> {
    app.handle.kill().unwrap();
    assert_eq!(app.handle.wait_blocking().unwrap().signal(), Some(libc::SIGKILL));
    plough_tests::clear_killed_actor(app.handle.pid());
    let mut orphans = app.pids.clone();
    orphans.extend(plough_tests::descendants());
    orphans.sort_unstable();
    orphans.dedup();
    orphans
}

/// Waits (bounded by `limit` from `since`) for each orphan to be reparented to us, then
/// reaps it; returns how each ended (`None`: it was already gone).
fn reap_orphans(
    pids: &[u32],
    since: Instant,
    limit: Duration,
) -> Vec<(u32, Option<plough_fork_prims::ExitStatus>)> {
    pids.iter()
        .map(|&pid| {
            wait_until(limit, "orphan reparented or gone", || {
                plough_tests::proc_ppid(pid).is_none_or(|pp| pp == std::process::id())
            });
            let st = ChildHandle::adopt(pid)
                .ok()
                .map(|o| wait_exit(&o, limit.saturating_sub(since.elapsed())));
            (pid, st)
        })
        .collect()
}

/// Each orphan exited with code 0 (its graceful cancel path) and left no marker.
fn assert_unwound(ended: &[(u32, Option<plough_fork_prims::ExitStatus>)]) {
    let markers =
        plough_fork_prims::marker::read_markers(&plough_fork_prims::marker::default_runtime_dir());
    for (pid, st) in ended {
        if let Some(st) = st {
            assert_eq!(st.code(), Some(0), "orphan {pid} did not unwind gracefully: {st}");
        }
        assert!(!markers.iter().any(|(_, m)| m.pid == *pid), "orphan {pid} left its marker");
    }
}

#[test]
fn children_of_a_sigkilled_parent_exit_by_themselves() {
    let app = start_app(&["sleepers", "2"]);
    let orphans = kill_root(&app);
    let t = Instant::now();
    let ended = reap_orphans(&orphans, t, Duration::from_secs(2));
    assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());
    assert_unwound(&ended);
    assert_no_descendants(Duration::from_secs(2));
}

#[test]
fn sigint_to_an_orphan_unwinds_through_its_cancel_path() {
    let app = start_app(&["sleepers", "2"]);
    let orphans = kill_root(&app);
    let t = Instant::now();
    for pid in &app.pids {
        // SIGINT the orphan (it may already be unwinding because its parent's connection
        // dropped: either way it must take the graceful path, not die by the signal).
        if let Some(p) = rustix::process::Pid::from_raw(*pid as i32) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::INT);
        }
    }
    let ended = reap_orphans(&orphans, t, Duration::from_secs(1));
    assert!(t.elapsed() < Duration::from_secs(1), "took {:?}", t.elapsed());
    assert_unwound(&ended);
    assert_no_descendants(Duration::from_secs(1));
}
