//! SIGINT to a root while it starts 100 children at once (`plough_app burst 100`, one
//! `try_join_all` of `start_actor`s): wherever the spawns were — forking, writing their
//! markers, connecting back, running — the tree ends with 130, no process is left, and
//! the root's runtime directory (a fresh `XDG_RUNTIME_DIR` per trial) holds no file: no
//! marker, no half-written `actors/.PID.UUID.tmp`, no socket file.

use plough::Budgets;
use plough_fork_prims::ChildHandle;
use plough_tests::{assert_no_descendants, become_subreaper, wait_until};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const APP: &str = env!("CARGO_BIN_EXE_plough_app");
const N: usize = 100;

/// Whom the SIGINT goes to.
#[derive(Debug, Clone, Copy)]
enum To {
    /// The root alone (`kill <pid>`).
    Root,
    /// The root's process group, as Ctrl-C in a terminal sends it: every process of the
    /// tree still in that group gets it too, children in the middle of their boot
    /// included.
    Group,
    /// The root, twice at once (an impatient Ctrl-C Ctrl-C): the second escalates to
    /// SIGKILL of every child, children in the middle of writing their markers included.
    Twice,
}

/// Starts the burst (the root leads a process group of its own), SIGINTs it once its
/// markers directory holds `at` entries (markers and half-written ones: spawns in every
/// stage), and checks what is left. Returns how many entries the directory held at the
/// SIGINT.
fn trial(at: usize, to: To) -> usize {
    become_subreaper();
    let tmp = tempfile::Builder::new().prefix("plough-burst-").tempdir().unwrap();
    let registry = match std::env::var("PLOUGH_TEST_TRANSPORT").as_deref() {
        Ok("uds") => format!("uds://{}", tmp.path().join("reg@burst.sock").display()),
        _ => "tcp://127.0.0.1:0".to_owned(),
    };
    let mut child = Command::new(APP)
        .args(["burst", &N.to_string()])
        .env("XDG_RUNTIME_DIR", tmp.path())
        .env("PLOUGH_TEST_REGISTRY", &registry)
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn plough_app");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let root = ChildHandle::from_std(child).unwrap();
    root.set_kill_on_drop(true);
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "spawning");
    let actors = tmp.path().join("plough/actors");
    let count = || std::fs::read_dir(&actors).map_or(0, |d| d.count());
    let budgets = Budgets::default();
    wait_until(budgets.connect, "the burst's markers", || count() >= at);
    let seen = count();
    match to {
        To::Root => root.signal(plough_fork_prims::Signal::INT).unwrap(),
        To::Twice => {
            root.signal(plough_fork_prims::Signal::INT).unwrap();
            root.signal(plough_fork_prims::Signal::INT).unwrap();
        }
        To::Group => {
            let group = rustix::process::Pid::from_raw(root.pid() as i32).unwrap();
            rustix::process::kill_process_group(group, rustix::process::Signal::INT).unwrap();
        }
    }
    // The spawns under way finish or fail, then one ladder for the tree below the root.
    let limit = budgets.connect + budgets.tree_teardown(1) + budgets.actor_exit();
    let t = Instant::now();
    let status = loop {
        if let Some(st) = root.try_wait().unwrap() {
            break st;
        }
        assert!(t.elapsed() < limit, "the root still runs {limit:?} after SIGINT");
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut stdout, &mut rest);
    assert_eq!(status.code(), Some(130), "{status}; stdout: {rest}");
    assert!(rest.contains("result err interrupted"), "{rest}");
    assert_no_descendants(budgets.reap_bound);
    let left = plough_tests::files_left_in(tmp.path());
    assert!(left.is_empty(), "SIGINT ({to:?}) at {seen} markers left files behind: {left:#?}");
    seen
}

#[test]
fn sigint_during_100_concurrent_spawns_leaves_no_file_and_no_process() {
    // Early (the first markers being written), midway, and late in the burst.
    for to in [To::Root, To::Group, To::Twice] {
        for at in [1, N / 4, N / 2, N - 10] {
            let seen = trial(at, to);
            eprintln!("SIGINT to {to:?} with {seen} entries in actors/: clean");
        }
    }
}
