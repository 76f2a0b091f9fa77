//! The leak oracle: snapshots see what a run left (actors, sockets, shm segments), reap
//! removes it, and `LeakGuard` passes a clean test and fails — after reaping — a leaky one.

#[path = "support/fixture.rs"]
mod fixture;

use fixture::{Fixture, RuntimeDir};
use plough_reaper::{LeakGuard, Snapshot, reap_with};
use std::os::unix::net::UnixListener;
use std::time::Duration;

#[test]
fn snapshot_diff_lists_what_appeared_and_reap_removes_it() {
    let rt = RuntimeDir::new();
    let dir = rt.path();
    let shm = tempfile::tempdir().unwrap();
    let before = Snapshot::take_with(&dir, shm.path());
    assert!(before.leaked_since().is_empty());

    let tree = Fixture::start(&["tree", dir.to_str().unwrap(), "1", "2"], 3);
    // Each fixture actor listens on `<name>@<pid>.sock`, and one stray socket is left by
    // a process that is already gone.
    let mut socks: Vec<_> =
        tree.ready.iter().map(|(pid, name)| dir.join(format!("{name}@{pid}.sock"))).collect();
    let stray = dir.join("stray@999999999.sock");
    drop(UnixListener::bind(&stray).unwrap());
    socks.push(stray);
    socks.sort();
    let seg = shm.path().join("plough-test-seg");
    std::fs::write(&seg, b"x").unwrap();

    let leaks = Snapshot::leaked_since(&before);
    let mut pids: Vec<u32> = leaks.actors.iter().map(|(_, m)| m.pid).collect();
    pids.sort_unstable();
    assert_eq!(pids, tree.pids());
    assert_eq!(leaks.sockets, socks);
    assert_eq!(leaks.shm.iter().map(|e| e.path.clone()).collect::<Vec<_>>(), vec![seg.clone()]);
    let text = leaks.to_string();
    assert!(text.contains("leaked actor root@") && text.contains("leaked socket"), "{text}");
    assert!(text.contains("leaked shm segment"), "{text}");

    let report = reap_with(&leaks, Duration::from_secs(2));
    assert!(report.all_gone(), "{report}");
    assert!(socks.iter().all(|s| !s.exists()), "{report}");
    assert!(!seg.exists());
    assert!(before.leaked_since().is_empty(), "{}", before.leaked_since());
    assert!(rt.markers().is_empty(), "markers of reaped actors are removed");
}

#[test]
fn leak_guard_passes_a_clean_test_and_fails_a_leaky_one() {
    let rt = RuntimeDir::new();
    let dir = rt.path();

    // Clean: the tree is gone before the deadline; an actor that was there before the
    // guard is not the test's doing.
    let _before = Fixture::start(&["tree", dir.to_str().unwrap(), "0", "0"], 1);
    let guard = LeakGuard::descendants_in(&dir);
    let tree = Fixture::start(&["tree", dir.to_str().unwrap(), "1", "1"], 2);
    let pids = tree.pids();
    drop(tree);
    for p in pids {
        fixture::kill_and_reap(p);
    }
    guard.assert_clean(Duration::from_secs(5));

    // Leaky: a root and child still run at the deadline; the guard reaps them and panics.
    let guard = LeakGuard::descendants_in(&dir);
    let tree = Fixture::start(&["tree", dir.to_str().unwrap(), "1", "1"], 2);
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        guard.assert_clean(Duration::from_millis(200));
    }))
    .expect_err("a leak must fail the guard");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("leaked actor root@") && msg.contains("leaked actor c0@"), "{msg}");
    assert!(msg.contains("exited after SIGINT"), "{msg}");
    let pids = tree.pids();
    fixture::wait_until("reaped by the guard", || {
        pids.iter()
            .all(|&p| !plough_reaper::procs::ProcInfo::read(p).is_some_and(|i| i.is_running()))
    });
}
