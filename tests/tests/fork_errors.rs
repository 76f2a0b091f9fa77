//! Bad input to the forkserver: clear errors, and the forkserver stays usable.

use plough_fork_prims::{ForkOptions, fork_blocking};

#[test]
fn an_invalid_keep_fd_is_a_clear_error_and_nothing_is_forked() {
    let err = fork_blocking(&ForkOptions::default().keep_fd(-3), || 0).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("negative fd (-3)"), "{err}");

    // A closed fd: find one that is surely not open.
    let (r, w) = plough_tests::pipe();
    let closed = plough_tests::raw(&r);
    drop(r);
    let err = fork_blocking(&ForkOptions::default().keep_fd(closed), || 0).unwrap_err();
    assert!(
        err.to_string().contains(&format!("keep-set fd {closed} is not an open file descriptor")),
        "{err}"
    );
    drop(w);

    // Still usable.
    let child = fork_blocking(&ForkOptions::default(), || 5).unwrap();
    assert_eq!(child.wait_blocking().unwrap().code(), Some(5));
}

#[test]
fn a_failing_fork_is_a_clear_error_and_the_forkserver_recovers() {
    // Root ignores RLIMIT_NPROC, so the helper drops to `nobody` first.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fp_nproc")).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "helper failed: {}\n{stdout}\n{stderr}", out.status);
    assert!(stdout.starts_with("ok: fork() failed: Resource temporarily unavailable"), "{stdout}");
}
