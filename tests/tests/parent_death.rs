//! The parent-death signal, and the `getppid()` re-check for a parent that died first.

use plough_fork_prims::{ChildHandle, exit_code};
use plough_tests::{become_subreaper, proc_ppid, spawn_helper, wait_until};
use std::io::{BufRead, BufReader};
use std::time::Duration;

fn child_pid_from(helper: &mut std::process::Child) -> u32 {
    let mut line = String::new();
    BufReader::new(helper.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    line.trim().parse().expect("helper printed the child's pid")
}

fn adopt_orphan(pid: u32) -> ChildHandle {
    wait_until(Duration::from_secs(10), "orphan reparented to the test", || {
        proc_ppid(pid) == Some(std::process::id()) || proc_ppid(pid).is_none()
    });
    ChildHandle::adopt(pid).expect("orphan is ours to reap")
}

#[test]
fn parent_death_signal_fires_when_the_parent_is_sigkilled() {
    become_subreaper();
    let mut helper = spawn_helper(env!("CARGO_BIN_EXE_fp_orphan"), &["pdeath"]);
    let child = child_pid_from(&mut helper);
    helper.kill().unwrap();
    helper.wait().unwrap();
    let orphan = adopt_orphan(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(orphan.wait_blocking()));
    let st = rx.recv_timeout(Duration::from_secs(10)).expect("orphan did not die").unwrap();
    assert_eq!(st.signal(), Some(libc::SIGTERM), "{st}");
}

#[test]
fn a_child_whose_parent_died_before_the_prelude_leaves() {
    become_subreaper();
    let mut helper = spawn_helper(env!("CARGO_BIN_EXE_fp_orphan"), &["gone-before-prelude"]);
    let child = child_pid_from(&mut helper);
    assert!(helper.wait().unwrap().success());
    let orphan = adopt_orphan(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(orphan.wait_blocking()));
    let st = rx.recv_timeout(Duration::from_secs(10)).expect("orphan lived on").unwrap();
    assert_eq!(st.code(), Some(exit_code::PARENT_GONE), "{st}");
}
