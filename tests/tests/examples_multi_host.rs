//! `plough-host`'s loopback example as a user runs it (`cargo run -p plough-host
//! --example loopback -- demo`): a daemon on loopback under mutual TLS, a root that
//! starts a serving and a run-in-actor actor on it and calls them; it exits 0, says what
//! its docs promise, and leaves nothing behind: no process (this test is a subreaper, so
//! an orphan of the daemon's would be ours), no file in its runtime directory, and no
//! tree directory in the temporary directory.

use plough_tests::{
    assert_no_descendants, become_subreaper, example_bin, files_left_in, root_lock,
};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

#[test]
fn the_loopback_example_runs_actors_on_a_host_daemon_and_leaves_nothing() {
    let _g = root_lock();
    become_subreaper();
    let rt = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // Bounded by the runtime's own budgets (attach: the handshake's; spawn: the boot
    // cap; the daemon's stop: its ladder), so a plain wait cannot hang.
    let out = Command::new(example_bin("loopback"))
        .arg("demo")
        .env("XDG_RUNTIME_DIR", rt.path())
        .env("TMPDIR", tmp.path())
        .env_remove("PLOUGH_SPAWN_METHOD")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "loopback: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("daemon node-1 listening on tls://node-1@127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("attached to node-1"), "{stdout}");
    assert!(stdout.contains("on node-1: 2 + 3 = 5"), "{stdout}");
    assert!(stdout.contains("on node-1: 4 + 5 = 9"), "{stdout}");
    assert!(stdout.contains("done: every remote actor reaped"), "{stdout}");
    assert_no_descendants(Duration::from_secs(5));
    assert_eq!(files_left_in(rt.path()), Vec::<PathBuf>::new(), "files left in the runtime dir");
    assert_eq!(files_left_in(tmp.path()), Vec::<PathBuf>::new(), "the tree's directory was left");
}
