//! Logging (issue 13, item 7): plough installs a global subscriber only when asked
//! (`PLOUGH_LOG`, `Runtime::log`); a program's own subscriber gets plough's events, and an
//! ask that it overrides is answered by one warning through it, never dropped silently.
//!
//! Each case runs `log_app` (a root, one child actor, a warning of the program's own) as
//! a separate process on every spawn method, reads its whole stdout and stderr (bounded:
//! killed on timeout), and checks that nothing of the tree is left.

use plough_fork_prims::ChildHandle;
use plough_tests::{assert_no_descendants, become_subreaper, root_lock};
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const APP: &str = env!("CARGO_BIN_EXE_log_app");
/// Bounds one run of the program.
const LIMIT: Duration = Duration::from_secs(30);
const METHODS: [&str; 3] = ["zygote", "exec", "main_thread_forkserver"];

/// Environment variables for a run.
type Env<'a> = &'a [(&'a str, &'a str)];

/// One finished run of `log_app`.
#[derive(Debug)]
struct Run {
    method: &'static str,
    root: u32,
    worker: u32,
    stderr: String,
}

impl Run {
    fn lines(&self) -> impl Iterator<Item = &str> {
        self.stderr.lines()
    }

    /// The stderr lines of the program's own subscriber written by process `pid`.
    fn app_lines(&self, pid: u32) -> Vec<&str> {
        let prefix = format!("app-subscriber pid={pid} ");
        self.lines().filter(|l| l.starts_with(&prefix)).collect()
    }

    /// The stderr lines in plough's format (`[name@pid method] ` or `[pid N] `).
    fn plough_lines(&self) -> Vec<&str> {
        self.lines().filter(|l| plough_format(l)).collect()
    }
}

/// Whether `line` starts with plough's label: `[name@pid method] ` or `[pid N] `.
fn plough_format(line: &str) -> bool {
    let Some((label, _)) = line.strip_prefix('[').and_then(|r| r.split_once("] ")) else {
        return false;
    };
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(pid) = label.strip_prefix("pid ") {
        return numeric(pid);
    }
    label
        .split_once(' ')
        .and_then(|(aid, _method)| aid.rsplit_once('@'))
        .is_some_and(|(name, pid)| !name.is_empty() && numeric(pid))
}

/// Runs `log_app` with `env` (and no `PLOUGH_LOG` or `LOG_APP_*` but those) on `method`;
/// panics if it does not finish within [`LIMIT`] (it is killed) or fails.
fn run(method: &'static str, env: Env<'_>) -> Run {
    let mut child = Command::new(APP)
        .env_remove(plough::LOG_ENV)
        .env_remove("LOG_APP_SUBSCRIBER")
        .env_remove("LOG_APP_FILTER")
        .env("PLOUGH_SPAWN_METHOD", method)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn log_app");
    let pipes: [Box<dyn Read + Send>; 2] =
        [Box::new(child.stdout.take().unwrap()), Box::new(child.stderr.take().unwrap())];
    let app = ChildHandle::from_std(child).unwrap();
    app.set_kill_on_drop(true);
    let (tx, rx) = mpsc::channel();
    for (i, mut pipe) in pipes.into_iter().enumerate() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            let _ = tx.send((i, text));
        });
    }
    let deadline = Instant::now() + LIMIT;
    let mut out = [String::new(), String::new()];
    for _ in 0..2 {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((i, text)) => out[i] = text,
            Err(_) => {
                let _ = app.kill();
                panic!("log_app ({method}, {env:?}) did not finish within {LIMIT:?}");
            }
        }
    }
    // Both pipes are at EOF: the program has exited (or closed them on its way out).
    let status = app.wait_blocking().unwrap();
    let [stdout, stderr] = out;
    assert!(status.success(), "log_app ({method}, {env:?}): {status}\n{stderr}");
    let done = stdout.lines().find_map(|l| l.strip_prefix("done ")).unwrap_or_else(|| {
        panic!("log_app ({method}, {env:?}) printed no `done` line: {stdout}\n{stderr}")
    });
    let (root, worker) = done.split_once(' ').expect("done <root> <worker>");
    Run { method, root: root.parse().unwrap(), worker: worker.parse().unwrap(), stderr }
}

/// Runs `check` on a run of every spawn method, as a subreaper, then asserts that no
/// process of the tree is left.
fn on_every_method(env: Env<'_>, check: impl Fn(&Run)) {
    let _g = root_lock();
    become_subreaper();
    for method in METHODS {
        check(&run(method, env));
        assert_no_descendants(Duration::from_secs(5));
    }
}

#[test]
fn without_an_ask_a_root_installs_no_subscriber() {
    on_every_method(&[], |run| {
        assert!(run.plough_lines().is_empty(), "{}: {}", run.method, run.stderr);
        assert!(!run.stderr.contains("the program warns"), "{}: {}", run.method, run.stderr);
    });
}

#[test]
fn plough_log_or_runtime_log_installs_the_labelled_subscriber() {
    for ask in [(plough::LOG_ENV, "info"), ("LOG_APP_FILTER", "info")] {
        on_every_method(&[ask], |run| {
            let root = format!("[root@{} ", run.root);
            let mine: Vec<&str> = run.lines().filter(|l| l.starts_with(&root)).collect();
            let what = format!("{} {ask:?}: {}", run.method, run.stderr);
            assert!(mine.iter().any(|l| l.contains("root actor up")), "{what}");
            assert!(
                mine.iter().any(|l| l.contains("WARN") && l.contains("the program warns")),
                "{what}"
            );
            assert!(run.lines().all(|l| !l.starts_with("app-subscriber")), "{what}");
            assert!(!run.stderr.contains('\x1b'), "colour codes into a pipe: {what}");
        });
    }
}

/// Runs `log_app` with `PLOUGH_LOG=info` (and `env`) on `method`, its stderr into `stderr`;
/// waits (bounded) for it to exit successfully.
fn run_with_stderr(method: &str, env: Env<'_>, stderr: std::fs::File) {
    let child = Command::new(APP)
        .env_remove("LOG_APP_SUBSCRIBER")
        .env_remove("LOG_APP_FILTER")
        .env_remove("NO_COLOR")
        .env(plough::LOG_ENV, "info")
        .env("PLOUGH_SPAWN_METHOD", method)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn log_app");
    let app = ChildHandle::from_std(child).unwrap();
    app.set_kill_on_drop(true);
    let status = plough_tests::wait_exit(&app, LIMIT)
        .unwrap_or_else(|| panic!("log_app ({method}) did not finish within {LIMIT:?}"));
    assert!(status.success(), "log_app ({method}, {env:?}): {status}");
}

/// A log file gets plain text: plough's subscriber colours only a terminal.
#[test]
fn a_log_file_gets_no_colour_codes() {
    let _g = root_lock();
    become_subreaper();
    for method in METHODS {
        let file = tempfile::NamedTempFile::new().unwrap();
        run_with_stderr(method, &[], file.reopen().unwrap());
        let text = std::fs::read_to_string(file.path()).unwrap();
        assert!(text.lines().any(|l| plough_format(l) && l.contains("root actor up")), "{text}");
        assert!(!text.contains('\x1b'), "{method}: colour codes in a log file:\n{text:?}");
        assert_no_descendants(Duration::from_secs(5));
    }
}

/// On a terminal (a pseudo-terminal here) plough's subscriber colours its lines, unless
/// `NO_COLOR` is set.
#[test]
fn a_terminal_gets_colour_unless_no_color_is_set() {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let _g = root_lock();
    become_subreaper();
    for (env, colour) in [(&[][..], true), (&[("NO_COLOR", "1")][..], false)] {
        let master =
            openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).unwrap();
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        let name = ptsname(&master, Vec::new()).unwrap();
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(name.to_str().unwrap())
            .unwrap();
        let mut master = std::fs::File::from(master);
        // Read the terminal while the program writes to it (a full pty buffer would block it).
        let reader = std::thread::spawn(move || {
            let mut text = Vec::new();
            let mut buf = [0u8; 4096];
            // EIO once every writer of the slave side is gone.
            while let Ok(n @ 1..) = master.read(&mut buf) {
                text.extend_from_slice(&buf[..n]);
            }
            String::from_utf8_lossy(&text).into_owned()
        });
        run_with_stderr("zygote", env, slave);
        let text = reader.join().unwrap();
        assert!(text.contains("root actor up"), "{env:?}: {text:?}");
        assert_eq!(text.contains('\x1b'), colour, "{env:?}: {text:?}");
        assert_no_descendants(Duration::from_secs(5));
    }
}

#[test]
fn a_program_subscriber_gets_plough_events_and_one_warning_per_overridden_ask() {
    // (the ask, besides the program's own subscriber; the warning it must get)
    let cases: [(Env, Option<&str>); 3] = [
        (&[(plough::LOG_ENV, "debug")], Some("PLOUGH_LOG=debug is not applied")),
        (&[("LOG_APP_FILTER", "debug")], Some("Runtime::log(\"debug\") is not applied")),
        (&[], None),
    ];
    for (ask, warning) in cases {
        let env: Vec<(&str, &str)> =
            [("LOG_APP_SUBSCRIBER", "own")].into_iter().chain(ask.iter().copied()).collect();
        on_every_method(&env, |run| {
            let what = format!("{} {ask:?}: {}", run.method, run.stderr);
            assert!(run.plough_lines().is_empty(), "plough's format used: {what}");
            let root = run.app_lines(run.root);
            assert!(root.iter().any(|l| l.contains("root actor up")), "{what}");
            assert!(root.iter().any(|l| l.contains("WARN log_app: the program warns")), "{what}");
            // The child actor's events reach the program's subscriber too (zygote, exec:
            // `main` installed it again; main_thread_forkserver: inherited).
            assert!(
                run.app_lines(run.worker).iter().any(|l| l.contains("child actor up")),
                "{what}"
            );
            let warnings: Vec<&&str> =
                root.iter().filter(|l| l.contains("is not applied")).collect();
            match warning {
                Some(text) => {
                    assert_eq!(warnings.len(), 1, "one warning: {what}");
                    assert!(warnings[0].contains("WARN plough::logging: "), "{what}");
                    assert!(warnings[0].contains(text), "{what}");
                }
                None => assert!(warnings.is_empty(), "{what}"),
            }
        });
    }
}

#[test]
fn the_label_test_matches_ploughs_format_only() {
    assert!(plough_format("[root@12 root] 2026-01-01T00:00:00Z  INFO root actor up"));
    assert!(plough_format("[a.b@7 main_thread_forkserver] x"));
    assert!(plough_format("[pid 42] x"));
    assert!(!plough_format("app-subscriber pid=12 INFO x: y"));
    assert!(!plough_format("[pid x] y"));
    assert!(!plough_format("[note] y"));
}
