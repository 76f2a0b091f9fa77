//! A real actor tree (root -> 2 children -> 2 grandchildren each), exec'd or forked, is
//! SIGKILLed at the root: `plough-reaper` finds exactly the actors that survive it (the
//! runtime's parent-death handling should leave none for long), reaps them SIGINT-first,
//! and afterwards the leak oracle sees nothing but files the sweep removes.

use plough_fork_prims::marker::{process_start_time, read_markers};
use plough_reaper::procs::is_running_as;
use plough_reaper::{Outcome, Selection, Snapshot, find_actors, reap_actors};
use plough_tests::{become_subreaper, proc_ppid, wait_until};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(15);

/// A temp directory used as `XDG_RUNTIME_DIR`; removed on drop.
struct TempRuntime(PathBuf);

impl Drop for TempRuntime {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sigkilled_tree_leaves_nothing_the_reaper_misses(method: &str) {
    become_subreaper();
    let tmp = TempRuntime(
        std::env::temp_dir().join(format!("plough-reap-app-{}-{method}", std::process::id())),
    );
    std::fs::create_dir_all(&tmp.0).unwrap();
    let rt = tmp.0.join("plough");
    let before = Snapshot::take_in(&rt);
    let mut root = Command::new(env!("CARGO_BIN_EXE_plough_app"))
        .arg("tree")
        .env("XDG_RUNTIME_DIR", &tmp.0)
        .env("PLOUGH_TEST_REGISTRY", "tcp://127.0.0.1:0")
        .env("PLOUGH_SPAWN_METHOD", method)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(root.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "tree started");
    let live = || -> Vec<(u32, u64)> {
        read_markers(&rt)
            .into_iter()
            .filter(|(_, m)| m.is_live())
            .map(|(_, m)| (m.pid, m.start_time))
            .collect()
    };
    wait_until(LIMIT, "7 live actors", || live().len() == 7);
    let members: Vec<(u32, u64)> = live().into_iter().filter(|&(p, _)| p != root.id()).collect();

    root.kill().unwrap();
    root.wait().unwrap();
    // Whatever the reaper finds now is a survivor of the tree, and every survivor that is
    // still running after the search was found (a process can only die meanwhile).
    let found = find_actors(&rt, &Selection::Orphans).unwrap();
    for a in &found {
        assert!(members.contains(&(a.info.pid, a.info.start_time)), "{a:?} is no tree member");
    }
    let found_pids: Vec<u32> = found.iter().map(|a| a.info.pid).collect();
    for &(p, s) in members.iter().filter(|(p, _)| !found_pids.contains(p)) {
        // Not found, so it was already exiting: it must be gone soon.
        wait_until(LIMIT, "an unfound member exits", || !is_running_as(p, s));
    }
    let (reports, _) = reap_actors(&rt, found, Duration::from_secs(3), false);
    for r in &reports {
        assert!(
            matches!(r.outcome, Outcome::ExitedAfterSigint { .. } | Outcome::AlreadyGone),
            "{method}: {}@{}: {}",
            r.actor.info.name,
            r.actor.info.pid,
            r.summary
        );
    }
    eprintln!("{method}: {} survivors found right after the SIGKILL", reports.len());
    wait_until(LIMIT, "the tree is gone", || members.iter().all(|&(p, s)| !is_running_as(p, s)));
    assert!(find_actors(&rt, &Selection::Orphans).unwrap().is_empty());

    // Orphans were reparented to us: reap their zombies, by pid.
    for &(p, _) in &members {
        if proc_ppid(p) == Some(std::process::id()) {
            let pid = rustix::process::Pid::from_raw(p as i32).unwrap();
            let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
        }
    }
    // The SIGKILLed root could not remove its socket or marker: the sweep does.
    plough_reaper::uds::sweep(&rt, None, false).unwrap();
    let leaks = before.leaked_since();
    assert!(leaks.is_empty(), "{method}: {leaks}");
    assert!(read_markers(&rt).is_empty(), "stale markers swept");
    assert!(process_start_time(root.id()).is_none());
}

#[test]
fn sigkilled_exec_tree_leaves_nothing_the_reaper_misses() {
    sigkilled_tree_leaves_nothing_the_reaper_misses("exec");
}

#[test]
fn sigkilled_forkserver_tree_leaves_nothing_the_reaper_misses() {
    sigkilled_tree_leaves_nothing_the_reaper_misses("main_thread_forkserver");
}
