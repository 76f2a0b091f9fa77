//! A service's lifecycle, seen from outside: SIGTERM (what systemd, Kubernetes and docker
//! send) and SIGINT take the whole tree down gracefully whether or not the root's body has
//! a nursery open or the program has threads of its own; a second signal escalates; user
//! code sees the shutdown coming; a panicking body and a dropped nursery still leave
//! nothing behind, and a dropped nursery's children run their cleanup.
//!
//! The root is the `plough_app` program (scenarios in its doc); this test process is its
//! subreaper, so an orphan would show. Cleanup is visible as files: each holder child
//! creates one and removes it when its call is dropped, which a graceful cancel does and
//! a SIGKILL does not.

use plough_fork_prims::{ChildHandle, ExitStatus, Signal};
use plough_tests::{assert_no_descendants, become_subreaper, private_registry};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const APP: &str = env!("CARGO_BIN_EXE_plough_app");

/// How long a graceful teardown of these small trees may take (the default ladder's
/// total is 4.1 s; graceful ones take a fraction of it).
const DOWN: Duration = Duration::from_secs(6);

struct App {
    handle: ChildHandle,
    lines: std::sync::mpsc::Receiver<String>,
    dir: tempfile::TempDir,
    /// Under `cargo test` (threads), one tree at a time: "no descendant left" is about
    /// this test's tree.
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

impl App {
    /// Starts `plough_app <scenario> <dir> <n>` and waits for its `ready` line.
    fn start(scenario: &str, n: u32) -> App {
        let one_at_a_time = plough_tests::root_lock();
        become_subreaper();
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut child = Command::new(APP)
            .args([scenario, dir.path().to_str().unwrap(), &n.to_string()])
            .env("PLOUGH_TEST_REGISTRY", private_registry().to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn plough_app");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let handle = ChildHandle::from_std(child).unwrap();
        handle.set_kill_on_drop(true);
        // Lines arrive on a channel, so every wait for one is bounded.
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let app = App { handle, lines, dir, _one_at_a_time: one_at_a_time };
        app.expect_line("ready", Duration::from_secs(30));
        app
    }

    /// Waits (bounded) for a line equal to `want`; returns the lines before it.
    fn expect_line(&self, want: &str, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line == want => return seen,
                Ok(line) => seen.push(line),
                Err(e) => panic!("no `{want}` line within {limit:?} ({e}); saw {seen:?}"),
            }
        }
    }

    /// Every line until stdout closes (bounded).
    fn rest(&self, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        while let Ok(line) =
            self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            seen.push(line);
        }
        seen
    }

    fn signal(&self, sig: Signal) {
        self.handle.signal(sig).unwrap();
    }

    /// Waits (bounded) for the root to exit; how it ended.
    fn exit(&self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.handle.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "the root still runs after {limit:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn held(&self) -> Vec<PathBuf> {
        held_files(self.dir.path())
    }
}

fn held_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("held")))
        .collect();
    v.sort();
    v
}

/// The root and every actor of its tree are gone and left no marker or socket.
fn assert_nothing_left(app: &App) {
    assert_no_descendants(DOWN);
    let dir = plough_fork_prims::marker::default_runtime_dir();
    let markers = plough_fork_prims::marker::read_markers(&dir);
    assert!(
        !markers.iter().any(|(_, m)| m.pid == app.handle.pid()),
        "the root left its marker: {markers:?}"
    );
}

/// SIGTERM or SIGINT to a root mid-stream, with children holding files: the tree goes
/// down gracefully (every child ran its cleanup), the root exits with the signal's
/// conventional status, and nothing is left.
fn a_signal_takes_the_tree_down_gracefully(sig: Signal, code: i32, scenario: &str) {
    let app = App::start(scenario, 3);
    assert_eq!(app.held().len(), 3, "the holders hold their files");
    let t = Instant::now();
    app.signal(sig);
    let st = app.exit(DOWN);
    assert_eq!(st.code(), Some(code), "{st}");
    let out = app.rest(Duration::from_secs(2));
    assert!(out.iter().any(|l| l == "shutdown requested"), "user code saw it: {out:?}");
    assert!(app.held().is_empty(), "every child ran its cleanup: {:?}", app.held());
    assert!(t.elapsed() < DOWN, "took {:?}", t.elapsed());
    assert_nothing_left(&app);
}

#[test]
fn sigterm_to_a_root_mid_stream_takes_the_tree_down_gracefully() {
    a_signal_takes_the_tree_down_gracefully(Signal::TERM, 143, "files");
}

#[test]
fn sigint_to_a_root_mid_stream_takes_the_tree_down_gracefully() {
    a_signal_takes_the_tree_down_gracefully(Signal::INT, 130, "files");
}

/// A nursery that runs in a task of the program's own (not in the body): the root waits
/// for it to take its children down gracefully before it exits.
#[test]
fn a_nursery_in_a_spawned_task_is_waited_for() {
    a_signal_takes_the_tree_down_gracefully(Signal::TERM, 143, "spawned-nursery");
}

/// A thread of the program's own, started before `Runtime::run`, blocks no signal: the
/// kernel may deliver the signal there. One Ctrl-C (or SIGTERM) is still graceful.
#[test]
fn a_thread_started_before_run_does_not_make_a_signal_fatal() {
    a_signal_takes_the_tree_down_gracefully(Signal::INT, 130, "thread-first");
    a_signal_takes_the_tree_down_gracefully(Signal::TERM, 143, "thread-first");
}

/// The body has no nursery open and never looks at the cancellation: one signal is enough.
#[test]
fn one_signal_ends_a_body_without_a_nursery() {
    for (sig, code) in [(Signal::INT, 130), (Signal::TERM, 143)] {
        let app = App::start("idle", 0);
        app.signal(sig);
        let st = app.exit(DOWN);
        assert_eq!(st.code(), Some(code), "{st}");
        assert!(app.rest(Duration::from_secs(2)).iter().any(|l| l == "shutdown requested"));
        assert_nothing_left(&app);
    }
}

/// A second signal does not wait for the ladder: a child that ignores every cancel (it
/// blocks its only thread) is SIGKILLed at once — whether the second signal comes while
/// the body still runs, or after the runtime dropped it and the tree goes down.
#[test]
fn a_second_signal_escalates_to_sigkill() {
    second_signal_escalates(false);
}

#[test]
fn a_second_signal_after_the_body_was_dropped_escalates_to_sigkill() {
    second_signal_escalates(true);
}

fn second_signal_escalates(after_the_body: bool) {
    let app = App::start("stubborn", 0);
    app.signal(Signal::INT);
    app.expect_line("shutdown requested", Duration::from_secs(5));
    if after_the_body {
        app.expect_line("body dropped", Duration::from_secs(5));
    }
    let t = Instant::now();
    app.signal(Signal::INT);
    let st = app.exit(DOWN);
    assert_eq!(st.code(), Some(130), "{st}");
    // Without the escalation the ladder waits ack (0.5 s) + exit (1.5 s) before SIGTERM.
    let ladder = plough::LadderConfig::default();
    assert!(
        t.elapsed() < ladder.ack_timeout + ladder.exit_timeout,
        "the second signal did not skip the ladder: {:?}",
        t.elapsed()
    );
    assert_nothing_left(&app);
}

/// A panic in the root's body: the tree still goes down gracefully (the dropped
/// nursery's children run their cleanup), and the root leaves no marker.
#[test]
fn a_panicking_body_leaves_nothing_behind() {
    let app = App::start("panic", 2);
    let st = app.exit(DOWN);
    assert_eq!(st.code(), Some(101), "a panic: {st}");
    assert!(app.held().is_empty(), "every child ran its cleanup: {:?}", app.held());
    assert_nothing_left(&app);
}

/// A nursery dropped by a lost `select!` (what `tokio::time::timeout` does): its children
/// get the same graceful ladder as a cancel, in the background, and are all reaped before
/// the root exits.
#[test]
fn a_dropped_nursery_takes_its_children_down_gracefully() {
    let app = App::start("timeout", 3);
    assert_eq!(app.held().len(), 3);
    app.expect_line("timed out", DOWN);
    let st = app.exit(DOWN);
    assert_eq!(st.code(), Some(0), "{st}");
    let out = app.rest(Duration::from_secs(2));
    assert!(out.iter().any(|l| l == "result ok"), "{out:?}");
    assert!(app.held().is_empty(), "every child ran its cleanup: {:?}", app.held());
    // Reaped before the root exited: nothing of the tree is alive now, at once.
    assert_no_descendants(Duration::from_millis(200));
    assert_nothing_left(&app);
}

/// A root whose body panics in this very process: the panic goes on out of `run`, but the
/// tree is down first (its marker gone, its children reaped), and the process can run a
/// root again.
#[test]
fn a_panic_in_the_body_unwinds_out_of_run_after_the_shutdown() {
    let _one_at_a_time = plough_tests::root_lock();
    become_subreaper();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("held0").to_str().unwrap().to_owned();
    let held_dir = dir.path().to_owned();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        plough_tests::runtime(APP).run(|root| async move {
            root.nursery::<(), _, _>(|n| async move {
                n.run_in_actor::<_, ()>("holder", "hold_file", file).await?;
                plough_tests::bounded(Duration::from_secs(20), async {
                    while held_files(&held_dir).is_empty() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Ok(())
                })
                .await?;
                panic!("on purpose, in the body");
            })
            .await
        })
    }));
    let payload = panicked.expect_err("the panic goes on out of run");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"on purpose, in the body"));
    assert!(held_files(dir.path()).is_empty(), "the holder ran its cleanup");
    assert_no_descendants(Duration::from_millis(200));
    let markers =
        plough_fork_prims::marker::read_markers(&plough_fork_prims::marker::default_runtime_dir());
    assert!(
        !markers.iter().any(|(_, m)| m.pid == std::process::id()),
        "the root left its marker: {markers:?}"
    );
    let again = plough_tests::runtime(APP).run(|_| async { Ok(7) });
    assert_eq!(again.unwrap(), 7, "the process can run a root again");
}

/// A handler sees its actor's shutdown coming (`Cx::shutdown_requested`) when the parent
/// cancels the actor, and finishes its own work within its declared cleanup budget.
#[test]
fn a_handler_sees_its_actors_shutdown_requested() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    plough_tests::in_nursery(plough_tests::runtime(APP), Duration::from_secs(30), |n| async move {
        let p = n.start_actor("watcher").await?;
        let call = {
            let (p, d) = (p.clone(), d.to_str().unwrap().to_owned());
            tokio::spawn(async move { p.run::<_, ()>("watch_shutdown", d).await })
        };
        while !d.join("armed").exists() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!d.join("shutdown-seen").exists());
        assert!(p.cancel_actor().await, "the cancel was acknowledged");
        let answer = call.await.expect("the call task");
        // It returned Ok as its actor was cancelled: its own value, or the cancel — never
        // a failure.
        assert!(
            answer.as_ref().is_ok() || answer.as_ref().is_err_and(|e| e.is_cancel()),
            "{answer:?}"
        );
        plough_tests::bounded(Duration::from_secs(5), async {
            while !d.join("shutdown-seen").exists() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// A nursery dropped while its own exit ladder is under way (an outer timeout that fires
/// during the teardown of a child that ignores its cancel) does not restart the ladder:
/// the child is down within one ladder's total, not two.
#[test]
fn a_nursery_dropped_during_its_exit_ladder_does_not_restart_it() {
    let ladder = plough::LadderConfig::default();
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("blocking");
    let t = Instant::now();
    plough_tests::with_root(
        plough_tests::runtime(APP),
        Duration::from_secs(30),
        |root| async move {
            let nursery = root.nursery(|n| async move {
                let p = n.start_actor("stubborn").await?;
                // Blocks the child's only thread once it has marked that it does: from
                // then on it acknowledges no cancel and handles no signal.
                let path = mark.to_str().unwrap().to_owned();
                tokio::spawn(async move { p.run::<_, ()>("mark_then_block", path).await });
                while !mark.exists() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Ok(())
            });
            // The body returns at once; the exit ladder runs; the timeout drops it midway.
            let cut =
                tokio::time::timeout(ladder.ack_timeout + ladder.exit_timeout / 2, nursery).await;
            assert!(cut.is_err(), "the ladder for a stubborn child outlasts the timeout");
            Ok(())
        },
    )
    .unwrap();
    // `with_root` returns once the root has shut down, which waits for the ladder.
    let took = t.elapsed();
    assert!(
        took < ladder.total(),
        "one ladder takes at most {:?}; the child took {took:?} to go down",
        ladder.total()
    );
}
