//! `plough-host`'s loopback example as a user runs it (`cargo run -p plough-host
//! --example loopback -- demo`): a daemon on loopback under mutual TLS, a root that
//! starts a serving and a run-in-actor actor on it and calls them; it exits 0, says what
//! its docs promise, and leaves nothing behind: no process (this test is a subreaper, so
//! an orphan of the daemon's would be ours), no file in its runtime directory, and no
//! tree directory in the temporary directory.

use plough_fork_prims::ChildHandle;
use plough_tests::{
    OutputLines, assert_no_descendants, become_subreaper, example_bin, files_left_in, root_lock,
    wait_exit,
};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Bounds the example's whole run (a daemon's start, two remote spawns, the teardown).
const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn the_loopback_example_runs_actors_on_a_host_daemon_and_leaves_nothing() {
    let _g = root_lock();
    become_subreaper();
    let rt = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(example_bin("loopback"))
        .arg("demo")
        .env("XDG_RUNTIME_DIR", rt.path())
        .env("TMPDIR", tmp.path())
        .env_remove("PLOUGH_SPAWN_METHOD")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = OutputLines::read(child.stdout.take().unwrap());
    let handle = ChildHandle::from_std(child).unwrap();
    handle.set_kill_on_drop(true);
    let status = wait_exit(&handle, LIMIT).expect("the example exits in time");
    let stdout = out.rest(LIMIT).expect("its stdout closes once it exited").join("\n");
    assert!(status.success(), "loopback: {status}\n{stdout}");
    assert!(stdout.contains("daemon node-1 listening on tls://node-1@127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("attached to node-1"), "{stdout}");
    assert!(stdout.contains("on node-1: 2 + 3 = 5"), "{stdout}");
    assert!(stdout.contains("on node-1: 4 + 5 = 9"), "{stdout}");
    assert!(stdout.contains("done: every remote actor reaped"), "{stdout}");
    assert_no_descendants(Duration::from_secs(5));
    assert_eq!(files_left_in(rt.path()), Vec::<PathBuf>::new(), "files left in the runtime dir");
    assert_eq!(files_left_in(tmp.path()), Vec::<PathBuf>::new(), "the tree's directory was left");
}
