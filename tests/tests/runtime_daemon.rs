//! The daemon example (`examples/daemon.rs`) as its user runs it: `daemon serve`, two
//! `daemon client` programs found by name and streamed to at once, then a signal to the
//! daemon — it must stop cleanly: the conventional exit status, the service's cleanup
//! run, every process reaped by its own parent, nothing left in the runtime directory.
//!
//! The daemon and its clients get a runtime directory of their own (`XDG_RUNTIME_DIR`, a
//! temporary directory that also holds the service's `--dir`), so "nothing left" is
//! checked exactly: no file at all may remain in it. This test process is a subreaper,
//! so a process orphaned by the daemon would be ours to see (and reap).
//!
//! Every check is made, and every process reaped, before any fails: the failure lists
//! each broken promise at once.

use plough::Address;
use plough_fork_prims::{ChildHandle, ExitStatus, Signal};
use plough_tests::{
    OutputLines, assert_no_descendants, become_subreaper, descendants, private_registry, proc_ppid,
    reap_adopted, root_lock, wait_exit,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Bounds starting the daemon, and each client's whole run.
const START: Duration = Duration::from_secs(20);
/// Bounds how long the stopped daemon's output takes to end after it exited.
const DRAIN: Duration = Duration::from_secs(5);

/// The example binary of this build: `target/<profile>/examples/daemon`, next to this
/// test's `deps` directory.
fn daemon_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join("examples").join("daemon");
    assert!(
        bin.exists(),
        "{} is not built: `cargo build -p plough --example daemon` (cargo xtask test and \
         cargo test --workspace build it)",
        bin.display()
    );
    bin
}

/// One program run of the example, with its stdout read line by line on a thread.
struct Run {
    what: String,
    handle: ChildHandle,
    out: OutputLines,
}

impl Run {
    fn start(what: &str, rt_dir: &Path, args: &[&str]) -> Run {
        let mut child = Command::new(daemon_bin())
            .args(args)
            .env("XDG_RUNTIME_DIR", rt_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let out = OutputLines::read(child.stdout.take().unwrap());
        let handle = ChildHandle::from_std(child).unwrap();
        handle.set_kill_on_drop(true);
        Run { what: what.to_owned(), handle, out }
    }

    /// The next line that starts with `prefix`, waiting at most `limit` for it.
    fn expect_line(&mut self, prefix: &str, limit: Duration) -> String {
        self.out.expect_line(prefix, limit).unwrap_or_else(|| {
            let (what, seen, exit) = (&self.what, self.out.seen(), self.handle.try_wait());
            panic!(
                "{what}: no line `{prefix}...` after {limit:?}; it printed {seen:?}; exit {exit:?}"
            )
        })
    }

    /// Everything it prints until its stdout closes (every holder of the pipe exited),
    /// waiting at most `limit`; `None` when the pipe is still open then.
    fn rest(&mut self, limit: Duration) -> Option<Vec<String>> {
        self.out.rest(limit)
    }

    /// Its exit status, waiting at most `limit` (on its pidfd); `None` if it still runs.
    fn wait_exit(&self, limit: Duration) -> Option<ExitStatus> {
        wait_exit(&self.handle, limit)
    }
}

/// Starts `daemon client` for `name`, streaming `count` numbers to the service at `addr`.
fn start_client(rt_dir: &Path, addr: &str, name: &str, count: u64) -> Run {
    let count = count.to_string();
    let args = ["client", "--registry", addr, "--name", name, "--count", &count];
    Run::start(&format!("client {name}"), rt_dir, &args)
}

/// Waits for a client to finish: greeted, `client ok <count>`, exit status 0.
fn finish_client(mut client: Run, count: u64) {
    let what = client.what.clone();
    let greeting = client.expect_line("hello ", START);
    assert!(greeting.contains("session"), "{what}: greeted with {greeting:?}");
    client.expect_line(&format!("client ok {count}"), START);
    let st = client.wait_exit(START);
    assert_eq!(st.and_then(|s| s.code()), Some(0), "{what} exited with {st:?}");
}

/// The promises a stop broke, collected so that all are reported together.
#[derive(Default)]
struct Broken(Vec<String>);

impl Broken {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }
}

/// Kills and reaps whatever is left below this process when a check panics midway (the
/// daemon itself goes first: a `Run` kills its process on drop).
struct KillLeftovers;

impl Drop for KillLeftovers {
    fn drop(&mut self) {
        for pid in descendants() {
            let _ = reap_adopted(pid, Duration::ZERO);
        }
    }
}

/// The whole scenario: serve, two concurrent clients, then `signal` to the daemon's root,
/// which must exit with `code` having done everything a clean stop does.
fn serve_two_clients_then_stop(signal: Signal, code: i32) {
    let _one_root_test_at_a_time = root_lock();
    become_subreaper();
    let tmp = tempfile::tempdir().unwrap();
    let rt_dir = tmp.path();
    let work = rt_dir.join("work");
    std::fs::create_dir(&work).unwrap();
    let kill_leftovers = KillLeftovers;
    // The transport the test run asks for, private to this daemon: TCP port 0 (the
    // daemon reports the port it got), or a socket in its own runtime directory.
    let registry = match private_registry() {
        Address::Uds(_) => Address::Uds(rt_dir.join("plough").join("daemon@reg.sock")),
        tcp => tcp,
    };

    let serve_args =
        ["serve", "--registry", &registry.to_string(), "--dir", work.to_str().unwrap()];
    let mut daemon = Run::start("daemon serve", rt_dir, &serve_args);
    let ready = daemon.expect_line("ready ", START);
    let (service, addr) = match ready.split_whitespace().collect::<Vec<_>>()[..] {
        [_, pid, addr] => (pid.parse::<u32>().expect("service pid"), addr.to_owned()),
        _ => panic!("the daemon said {ready:?}"),
    };
    let pid_file = work.join(format!("service-{service}.pid"));
    assert!(pid_file.exists(), "the service did not write {}", pid_file.display());

    // Two independent programs at once, each finding the service by name.
    let (alice, bob) =
        (start_client(rt_dir, &addr, "alice", 200), start_client(rt_dir, &addr, "bob", 300));
    finish_client(alice, 200);
    finish_client(bob, 300);
    assert!(pid_file.exists(), "the service lost its file while serving");

    // The stop. Everything is observed (and reaped) first, then checked.
    let bound = plough::Budgets::default().tree_teardown(1) + Duration::from_secs(1);
    let t = Instant::now();
    daemon.handle.signal(signal).unwrap();
    let status = daemon.wait_exit(bound);
    let took = t.elapsed();
    if status.is_none() {
        let _ = daemon.handle.kill();
        let _ = daemon.handle.wait_blocking();
    }
    // A service whose root exited without reaping it was reparented to us.
    let orphaned = proc_ppid(service) == Some(std::process::id());
    if orphaned {
        let _ = reap_adopted(service, bound);
    }
    let output = daemon.rest(DRAIN);
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut left = descendants();
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        left = descendants();
    }
    drop(kill_leftovers);

    let mut broken = Broken::default();
    broken.check(status.is_some_and(|s| s.code() == Some(code)), || {
        format!("the daemon exited with {status:?} after {took:?}, expected exit code {code}")
    });
    broken.check(took < bound, || format!("the daemon took {took:?} to stop (bound {bound:?})"));
    broken.check(!orphaned, || format!("the daemon exited before reaping its service ({service})"));
    broken.check(output.is_some(), || format!("its stdout still open {DRAIN:?} after it exited"));
    let output = output.unwrap_or_else(|| daemon.out.seen().to_vec());
    broken.check(output.iter().any(|l| l.starts_with("cleanup done")), || {
        format!("the service printed no `cleanup done`: {output:?}")
    });
    broken.check(!pid_file.exists(), || {
        format!("the service's file is left: {}", pid_file.display())
    });
    let files = plough_tests::files_left_in(rt_dir);
    broken.check(files.is_empty(), || format!("files left in the runtime dir: {files:?}"));
    broken.check(left.is_empty(), || format!("processes left behind (now killed): {left:?}"));
    assert!(broken.0.is_empty(), "the daemon did not stop cleanly:\n  {}", broken.0.join("\n  "));
    assert_no_descendants(Duration::from_secs(2));
}

#[test]
fn sigterm_stops_the_daemon_cleanly() {
    serve_two_clients_then_stop(Signal::TERM, 143);
}

#[test]
fn sigint_stops_the_daemon_cleanly() {
    serve_two_clients_then_stop(Signal::INT, 130);
}
