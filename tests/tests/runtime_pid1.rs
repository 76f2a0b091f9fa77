//! A plough program as the first process of a pid namespace (`unshare --fork --pid
//! --mount-proc`, as a container without an init runs it): the program runs behind
//! plough's init (it is PID 2, its parent PID 1), an orphan it makes is reaped instead of
//! staying a zombie, and SIGTERM / SIGINT sent to the namespace's PID 1 end the whole tree
//! with 143 / 130, leaving no process and no file.
//!
//! With plough's init turned off (`PLOUGH_INIT=0`) the root is PID 1 itself, and still
//! handles both signals. Skips (saying so) only when `unshare` is not installed.

use plough::Budgets;
use plough_fork_prims::ChildHandle;
use plough_tests::{assert_no_descendants, become_subreaper, proc_ppid, proc_state, wait_until};
use std::io::{BufRead, BufReader};

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const APP: &str = env!("CARGO_BIN_EXE_plough_app");

/// Runs `plough_app pid1` in a new pid namespace, sends `signal` to the namespace's
/// PID 1 once the tree is up, and returns how unshare (which exits as its child, the
/// namespace's PID 1, did) ended; `None` when `unshare` is missing. `with_init: false`
/// turns plough's init off (`PLOUGH_INIT=0`): the root is PID 1 itself (and makes no
/// orphan, which nobody would reap).
fn run_in_pid_namespace(
    signal: rustix::process::Signal,
    with_init: bool,
) -> Option<plough_fork_prims::ExitStatus> {
    become_subreaper();
    let tmp = tempfile::Builder::new().prefix("plough-pid1-").tempdir().unwrap();
    let registry = match std::env::var("PLOUGH_TEST_TRANSPORT").as_deref() {
        Ok("uds") => format!("uds://{}", tmp.path().join("reg@pid1.sock").display()),
        _ => "tcp://127.0.0.1:0".to_owned(),
    };
    let spawned = Command::new("unshare")
        .args(["--fork", "--pid", "--mount-proc", APP, "pid1"])
        .args((!with_init).then_some("no-orphan"))
        .env(plough_fork_prims::INIT_ENV, if with_init { "1" } else { "0" })
        .env("XDG_RUNTIME_DIR", tmp.path())
        .env("PLOUGH_TEST_REGISTRY", &registry)
        .stdout(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("SKIPPED: `unshare` is not available ({e}); the PID 1 test needs it");
            return None;
        }
        Err(e) => panic!("spawn unshare: {e}"),
    };
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let unshare = ChildHandle::from_std(child).unwrap();
    unshare.set_kill_on_drop(true);
    let budgets = Budgets::default();
    // Lines as they come, each awaited at most a boot's budget.
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next_line = || {
        lines.recv_timeout(budgets.connect + budgets.reap_bound).expect("a line from the program")
    };
    if with_init {
        assert_eq!(next_line(), "pid 2 ppid 1", "the program runs behind plough's init");
        assert_eq!(next_line(), "orphan reaped", "PID 1 reaps a re-parented orphan");
    } else {
        assert_eq!(next_line(), "pid 1 ppid 0", "the root is PID 1 itself");
        assert_eq!(next_line(), "no orphan");
    }
    let ready = next_line();
    assert!(ready.starts_with("ready "), "{ready}");
    // The namespace's PID 1, as this namespace sees it: unshare's child.
    let inside: Vec<(u32, char)> = plough_tests::descendants_of(unshare.pid())
        .into_iter()
        .map(|c| (c, proc_state(c).unwrap_or('?')))
        .collect();
    let init = inside.iter().find(|(p, _)| proc_ppid(*p) == Some(unshare.pid())).unwrap().0;
    let least = if with_init { 3 } else { 2 };
    assert!(
        inside.iter().all(|&(_, state)| state != 'Z'),
        "no zombie in the namespace: {inside:?}"
    );
    assert!(inside.len() >= least, "(init,) root and its child at least: {inside:?}");
    let t = Instant::now();
    rustix::process::kill_process(rustix::process::Pid::from_raw(init as i32).unwrap(), signal)
        .unwrap();
    let limit = budgets.tree_teardown(1) + budgets.actor_exit();
    let status = loop {
        if let Some(st) = unshare.try_wait().unwrap() {
            break st;
        }
        assert!(t.elapsed() < limit, "the namespace still runs {limit:?} after {signal:?}");
        std::thread::sleep(Duration::from_millis(5));
    };
    eprintln!("{signal:?} to the namespace's PID 1: {status} after {:?}", t.elapsed());
    let rest: String = lines.try_iter().collect::<Vec<_>>().join("\n");
    assert_no_descendants(budgets.reap_bound);
    let left = plough_tests::files_left_in(tmp.path());
    assert!(left.is_empty(), "files left behind: {left:#?}");
    wait_until(budgets.reap_bound, "the namespace gone", || proc_state(init).is_none());
    assert!(rest.contains("result err"), "{rest}");
    Some(status)
}

#[test]
fn as_pid_1_orphans_are_reaped_and_sigterm_ends_the_tree_with_143() {
    if let Some(status) = run_in_pid_namespace(rustix::process::Signal::TERM, true) {
        assert_eq!(status.code(), Some(143), "{status}");
    }
}

#[test]
fn as_pid_1_sigint_ends_the_tree_with_130() {
    if let Some(status) = run_in_pid_namespace(rustix::process::Signal::INT, true) {
        assert_eq!(status.code(), Some(130), "{status}");
    }
}

/// Without plough's init the root is PID 1, for which the kernel drops every signal left
/// at its default action: SIGTERM and SIGINT still end the tree, because the root handles
/// them while `Runtime::run` runs.
#[test]
fn as_pid_1_itself_the_root_still_handles_sigterm_and_sigint() {
    for (signal, code) in
        [(rustix::process::Signal::TERM, 143), (rustix::process::Signal::INT, 130)]
    {
        if let Some(status) = run_in_pid_namespace(signal, false) {
            assert_eq!(status.code(), Some(code), "{status}");
        }
    }
}
