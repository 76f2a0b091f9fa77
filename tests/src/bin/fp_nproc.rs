//! Helper for the fork-failure test: drops to `nobody` (root ignores RLIMIT_NPROC), makes
//! `fork()` fail with RLIMIT_NPROC = 0, and checks that the error is clear and that the
//! forkserver still works once the limit is lifted. Prints `ok: <error text>` on success.

use plough_fork_prims::{ForkOptions, fork_blocking};
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

fn main() {
    // Single-threaded here, so setgid/setuid apply to the whole process.
    #[allow(unsafe_code)]
    // SAFETY: an empty group list (null with length 0).
    let groups = unsafe { libc::setgroups(0, std::ptr::null()) };
    #[allow(unsafe_code)]
    // SAFETY: plain syscall with an integer argument.
    let gid = unsafe { libc::setgid(65534) };
    #[allow(unsafe_code)]
    // SAFETY: plain syscall with an integer argument.
    let uid = unsafe { libc::setuid(65534) };
    let err = std::io::Error::last_os_error();
    assert_eq!((groups, gid, uid), (0, 0, 0), "dropping to nobody failed: {err}");

    let opts = ForkOptions::default();
    let warm = fork_blocking(&opts, || 0).expect("first fork");
    assert!(warm.wait_blocking().expect("wait").success());

    let before = getrlimit(Resource::Nproc);
    setrlimit(Resource::Nproc, Rlimit { current: Some(0), maximum: before.maximum })
        .expect("lower NPROC");
    let err = fork_blocking(&opts, || 0).expect_err("fork must fail under RLIMIT_NPROC=0");
    assert_eq!(err.raw_os_error(), None, "error must carry context, not be bare");
    let text = err.to_string();
    assert!(text.starts_with("fork() failed"), "unclear error: {text}");
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock, "EAGAIN expected: {text}");

    setrlimit(Resource::Nproc, before).expect("restore NPROC");
    let again = fork_blocking(&opts, || 3).expect("forkserver usable after a failed fork");
    assert_eq!(again.wait_blocking().expect("wait").code(), Some(3));
    println!("ok: {text}");
}
