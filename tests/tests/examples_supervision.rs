//! The supervision examples as a user runs them: `examples/supervisor.rs` (restarts, a
//! supervisor that gives up) and `examples/pool.rs` (a pool over crashy jobs) exit 0,
//! say what they promise, and leave nothing behind.

use plough_tests::{assert_no_descendants, become_subreaper, files_left_in, root_lock};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Runs example `name` in a runtime dir of its own; its stdout, after checking it
/// exited 0 and left no process and no file.
fn run(name: &str) -> String {
    let _g = root_lock();
    become_subreaper();
    let rt = tempfile::tempdir().unwrap();
    let out = Command::new(plough_tests::example_bin(name))
        .env("XDG_RUNTIME_DIR", rt.path())
        .env_remove("PLOUGH_SPAWN_METHOD")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_descendants(Duration::from_secs(5));
    assert_eq!(files_left_in(rt.path()), Vec::<PathBuf>::new(), "{name} left files");
    stdout
}

#[test]
fn the_supervisor_example_restarts_and_gives_up_at_its_intensity() {
    let out = run("supervisor");
    assert!(out.contains("round 2: actor flaky@"), "{out}");
    assert!(out.contains("store kept its state through the restarts: 20"), "{out}");
    assert!(out.contains("restarts: 2"), "{out}");
    assert!(out.contains("the second supervisor gave up after 4 exits"), "{out}");
    assert!(out.contains("killed by SIGABRT"), "{out}");
    assert!(out.contains("done: every actor exited and was reaped"), "{out}");
}

#[test]
fn the_pool_example_answers_or_poisons_every_job() {
    let out = run("pool");
    assert!(out.contains("answered: 1980, poisoned: 20"), "{out}");
    assert!(out.contains("first poisoned input 13: job"), "{out}");
    assert!(out.contains("workers replaced after a death: 40"), "{out}");
}
