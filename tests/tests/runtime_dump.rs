//! SIGUSR1 task-tree dumps: one `kill -USR1 <root>` dumps every actor of the tree, parent
//! first, to stderr and to a per-actor file; the tree keeps running.

use plough_fork_prims::ChildHandle;
use plough_tests::{assert_no_descendants, become_subreaper, wait_until};
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

const APP: &str = env!("CARGO_BIN_EXE_plough_app");

/// Removes the dump files when the test ends, however it ends.
struct RemoveOnDrop(Vec<std::path::PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// Whether `f` holds a complete dump (the file appears before its text is written).
fn complete(f: &std::path::Path) -> bool {
    std::fs::read_to_string(f).is_ok_and(|t| t.contains("task tree of"))
}

fn fresh_tcp_registry() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("tcp://{}", l.local_addr().unwrap())
}

#[test]
fn sigusr1_to_the_root_dumps_every_actor_of_the_tree() {
    become_subreaper();
    let registry = fresh_tcp_registry();
    let mut child = Command::new(APP)
        .arg("tree")
        .env("PLOUGH_TEST_REGISTRY", &registry)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut stderr = child.stderr.take().unwrap();
    let app = ChildHandle::from_std(child).unwrap();
    app.set_kill_on_drop(true);
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "tree started");

    // Wait until all 7 actors (root, c0, c1, 2 sleepers each) are registered.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let addr: plough::Address = registry.parse().unwrap();
    let mut entries = Vec::new();
    wait_until(Duration::from_secs(10), "7 actors registered", || {
        entries = rt.block_on(plough_ps::query(&addr)).unwrap_or_default();
        entries.len() == 7
    });

    let dumps = plough_fork_prims::marker::default_runtime_dir().join("dumps");
    let files: Vec<std::path::PathBuf> =
        entries.iter().map(|e| dumps.join(format!("{}@{}.dump", e.aid.name, e.aid.pid))).collect();
    let _cleanup = RemoveOnDrop(files.clone());
    app.signal(plough_fork_prims::Signal::USR1).unwrap();
    wait_until(Duration::from_secs(10), "a dump file from every actor", || {
        files.iter().all(|f| complete(f))
    });

    for (e, f) in entries.iter().zip(&files) {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(
            text.starts_with(&format!("plough task dump (also appended to {})", f.display())),
            "{text}"
        );
        assert!(text.contains(&format!("task tree of {}", e.aid)), "{text}");
        match e.aid.name.as_str() {
            // The root waits on both hold_sleepers calls and has two children.
            "root" => {
                assert!(text.contains("waiting on:") && text.contains("hold_sleepers"), "{text}");
                assert!(
                    text.contains("children:") && text.contains("c0@") && text.contains("c1@"),
                    "{text}"
                );
            }
            // c0/c1 serve hold_sleepers and have two sleeper children.
            "c0" | "c1" => {
                assert!(text.contains("serving:") && text.contains("hold_sleepers"), "{text}");
                assert!(text.contains("sleeper0@") && text.contains("sleeper1@"), "{text}");
            }
            _ => assert!(!text.contains("children:"), "{text}"),
        }
    }
    // The tree is still alive and well: SIGINT takes it down gracefully.
    assert_eq!(rt.block_on(plough_ps::query(&addr)).unwrap().len(), 7);
    app.signal(plough_fork_prims::Signal::INT).unwrap();
    let st = app.wait_blocking().unwrap();
    let mut err = String::new();
    let _ = stderr.read_to_string(&mut err);
    assert_eq!(st.code(), Some(130), "{st}: {err}");
    // The root's dump also went to stderr.
    assert!(err.contains("plough task dump (also appended to"), "{err}");
    for f in &files {
        std::fs::remove_file(f).unwrap();
    }
    drop(_cleanup);
    assert_no_descendants(Duration::from_secs(5));
}

#[test]
fn a_dump_mid_stream_names_the_blocked_contexts_and_loses_nothing() {
    become_subreaper();
    let registry = fresh_tcp_registry();
    let n = 10_000u64;
    let mut child = Command::new(APP)
        .args(["stream-dump", &n.to_string()])
        .env("PLOUGH_TEST_REGISTRY", &registry)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let app = ChildHandle::from_std(child).unwrap();
    app.set_kill_on_drop(true);
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "half", "the root read half the stream");

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let addr: plough::Address = registry.parse().unwrap();
    let mut entries = Vec::new();
    wait_until(Duration::from_secs(10), "3 actors registered", || {
        entries = rt.block_on(plough_ps::query(&addr)).unwrap_or_default();
        entries.len() == 3
    });
    let dumps = plough_fork_prims::marker::default_runtime_dir().join("dumps");
    let files: Vec<(String, std::path::PathBuf)> = entries
        .iter()
        .map(|e| (e.aid.name.clone(), dumps.join(format!("{}@{}.dump", e.aid.name, e.aid.pid))))
        .collect();
    let _cleanup = RemoveOnDrop(files.iter().map(|(_, f)| f.clone()).collect());
    app.signal(plough_fork_prims::Signal::USR1).unwrap();
    wait_until(Duration::from_secs(10), "a dump from each actor", || {
        files.iter().all(|(_, f)| complete(f))
    });
    for (name, f) in &files {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(text.contains("contexts:"), "{name}: {text}");
        match name.as_str() {
            "root" => assert!(text.contains("ctx_relay") && text.contains("streaming"), "{text}"),
            "mid" => assert!(text.contains("ctx_relay") && text.contains("ctx_numbers"), "{text}"),
            "leaf" => assert!(text.contains("ctx_numbers") && text.contains("streaming"), "{text}"),
            other => panic!("unexpected actor {other}"),
        }
    }
    // Release the root: every number still arrives, in order.
    std::io::Write::write_all(&mut stdin, b"go\n").unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(rest.contains(&format!("delivered {n} of {n}")), "{rest}");
    assert!(rest.contains("result ok"), "{rest}");
    assert!(app.wait_blocking().unwrap().success());
    for (_, f) in &files {
        std::fs::remove_file(f).unwrap();
    }
    drop(_cleanup);
    assert_no_descendants(Duration::from_secs(5));
}
