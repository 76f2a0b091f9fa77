//! The examples as a user runs them (`examples/contexts.rs`, `examples/registrar.rs`):
//! each prints what its docs say, exits as documented, and leaves nothing behind — no
//! process (this test is a subreaper: an orphan would be ours) and no file in its own
//! runtime directory (`XDG_RUNTIME_DIR`, a fresh temporary directory) but the user's
//! secret.

use plough::Address;
use plough_fork_prims::{ChildHandle, ExitStatus, Signal};
use plough_tests::{
    OutputLines, assert_no_descendants, become_subreaper, files_left_in, private_registry,
    root_lock, wait_exit,
};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Bounds each program's run (and the host's start).
const LIMIT: Duration = Duration::from_secs(30);

/// One run of an example, its stdout read line by line.
struct Run {
    handle: ChildHandle,
    out: OutputLines,
}

impl Run {
    fn start(name: &str, rt_dir: &Path, args: &[&str]) -> Run {
        let mut child = Command::new(plough_tests::example_bin(name))
            .args(args)
            .env("XDG_RUNTIME_DIR", rt_dir)
            .env_remove("PLOUGH_REGISTRY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let out = OutputLines::read(child.stdout.take().unwrap());
        let handle = ChildHandle::from_std(child).unwrap();
        handle.set_kill_on_drop(true);
        Run { handle, out }
    }

    /// Everything it printed, once it exited (bounded), and its exit status.
    fn finish(mut self) -> (Vec<String>, ExitStatus) {
        let status = wait_exit(&self.handle, LIMIT).expect("the example exits in time");
        let lines = self.out.rest(LIMIT).expect("its stdout closes once it exited");
        (lines, status)
    }
}

/// Nothing of the runtime directory is left but the user's secret.
fn assert_nothing_left(rt_dir: &Path) {
    let left = files_left_in(rt_dir);
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn contexts_example_streams_both_ways_and_cancels() {
    let _g = root_lock();
    become_subreaper();
    let tmp = tempfile::tempdir().unwrap();
    let (lines, status) = Run::start("contexts", tmp.path(), &[]).finish();
    assert!(status.success(), "{status}: {lines:#?}");
    assert_eq!(
        lines,
        [
            "doubler started: hello from worker",
            "doubler: sent 1, got Some(2)",
            "doubler: sent 2, got Some(4)",
            "doubler: sent 3, got Some(6)",
            "doubler returned 3",
            "counter: 1000 values, in order: true, returned Some(499500)",
            "ticker: read [0, 1, 2, 3, 4], then cancelled: true",
            "done: every actor exited and was reaped",
        ]
    );
    assert_no_descendants(Duration::from_secs(5));
    assert_nothing_left(tmp.path());
}

#[test]
fn registrar_example_serves_two_separate_visitors_then_stops_on_sigterm() {
    let _g = root_lock();
    become_subreaper();
    let tmp = tempfile::tempdir().unwrap();
    let rt_dir = tmp.path();
    // The transport the test run asks for, private to this host: TCP port 0 (the host
    // reports the port it got), or a socket in its own runtime directory.
    let registry = match private_registry() {
        Address::Uds(_) => Address::Uds(rt_dir.join("plough").join("host@reg.sock")),
        tcp => tcp,
    };
    let mut host = Run::start("registrar", rt_dir, &["host", "--registry", &registry.to_string()]);
    let hosting = host.out.expect_line("hosting ", LIMIT).expect("the host starts its guestbook");
    let book_pid: u32 = hosting
        .strip_prefix("hosting guestbook@")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{hosting:?}"));
    let ready = host.out.expect_line("ready ", LIMIT).expect("the host is ready");
    let addr = ready.strip_prefix("ready ").unwrap().to_owned();

    for (name, before) in [("alice", ""), ("bob", "alice")] {
        let (lines, status) =
            Run::start("registrar", rt_dir, &["visit", "--registry", &addr, "--name", name])
                .finish();
        assert!(status.success(), "{name}: {status}: {lines:#?}");
        let guestbook = lines.iter().find(|l| l.starts_with("guestbook: pid ")).unwrap();
        assert_eq!(
            [&lines[..2], &lines[3..]].concat(),
            [
                format!("registered: guestbook, host, visitor-{name}"),
                "nobody: not registered".to_owned(),
                format!("{name} signed after [{before}]"),
            ],
            "{lines:#?}"
        );
        assert!(guestbook.starts_with(&format!("guestbook: pid {book_pid} at ")), "{lines:#?}");
    }

    host.handle.signal(Signal::TERM).unwrap();
    let (_, status) = host.finish();
    assert_eq!(status.code(), Some(143), "{status}");
    assert_no_descendants(Duration::from_secs(5));
    assert_nothing_left(rt_dir);
}
