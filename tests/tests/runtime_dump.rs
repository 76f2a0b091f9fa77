//! SIGUSR1 task-tree dumps: one `kill -USR1 <root>` dumps every actor of the tree, parent
//! first, to stderr and to per-actor files (text and JSON); the tree keeps running. Only
//! the last `DUMPS_KEPT` dumps of an actor stay, and the tree's dumps go when it ends.

use plough_fork_prims::ChildHandle;
use plough_tests::{assert_no_descendants, become_subreaper, files_left_in, wait_until};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const APP: &str = env!("CARGO_BIN_EXE_plough_app");

/// Removes a tree's dump directory when the test ends, however it ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The dump directory of the tree whose root is `root`.
fn tree_dir(root: &plough::ActorEntry) -> PathBuf {
    plough_fork_prims::marker::default_runtime_dir().join("dumps").join(root.aid.uuid.to_string())
}

/// The text and JSON files of dump `seq` of actor `e`, in `dir`.
fn dump_files(dir: &Path, e: &plough::ActorEntry, seq: u64) -> (PathBuf, PathBuf) {
    let stem = format!("{}@{}.{seq}", e.aid.name, e.aid.pid);
    (dir.join(format!("{stem}.dump")), dir.join(format!("{stem}.json")))
}

/// Whether both files of a dump are there (each is renamed into place whole).
fn complete(files: &(PathBuf, PathBuf)) -> bool {
    files.0.exists() && files.1.exists()
}

/// The dump numbers of actor `e` in `dir`, sorted, once per file kind (`dump`, `json`).
fn seqs(dir: &Path, e: &plough::ActorEntry, kind: &str) -> Vec<u64> {
    let prefix = format!("{}@{}.", e.aid.name, e.aid.pid);
    let mut v: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|f| {
            let name = f.file_name().into_string().ok()?;
            name.strip_prefix(&prefix)?.strip_suffix(&format!(".{kind}"))?.parse().ok()
        })
        .collect();
    v.sort_unstable();
    v
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

    let root = entries.iter().find(|e| e.parent.is_none()).expect("the root").clone();
    let dir = tree_dir(&root);
    let _cleanup = RemoveOnDrop(dir.clone());
    app.signal(plough_fork_prims::Signal::USR1).unwrap();
    wait_until(Duration::from_secs(10), "a dump from every actor", || {
        entries.iter().all(|e| complete(&dump_files(&dir, e, 1)))
    });

    for e in &entries {
        let (text_file, json_file) = dump_files(&dir, e, 1);
        let text = std::fs::read_to_string(&text_file).unwrap();
        let head = format!(
            "plough task dump (also in {} and {})",
            text_file.display(),
            json_file.display()
        );
        assert!(text.starts_with(&head), "{text}");
        assert!(text.contains(&format!("task tree of {}", e.aid)), "{text}");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json_file).unwrap()).unwrap();
        let what = format!("{}: {json:#}", e.aid);
        assert_eq!(json["format"], "plough-task-dump", "{what}");
        assert_eq!(json["version"], 1, "{what}");
        assert_eq!(json["actor"], e.aid.to_string(), "{what}");
        assert_eq!((&json["name"], &json["pid"]), (&e.aid.name.clone().into(), &e.aid.pid.into()));
        assert_eq!(json["tree"], root.aid.uuid.to_string(), "{what}");
        assert_eq!(json["seq"], 1, "{what}");
        assert!(json["taken_unix_ms"].as_u64().is_some_and(|t| t >= e.started_ms), "{what}");
        let tasks = json["tasks"].as_array().unwrap();
        let children: Vec<&str> = json["children"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["actor"].as_str().unwrap())
            .collect();
        let has_task = |kind: &str, function: &str| {
            tasks
                .iter()
                .any(|t| t["kind"] == kind && t["function"] == function && t["age_s"].is_f64())
        };
        match e.aid.name.as_str() {
            // The root waits on both hold_sleepers calls and has two children.
            "root" => {
                assert!(text.contains("waiting on:") && text.contains("hold_sleepers"), "{text}");
                assert!(
                    text.contains("children:") && text.contains("c0@") && text.contains("c1@"),
                    "{text}"
                );
                assert!(has_task("calling", "hold_sleepers"), "{what}");
                assert_eq!(children.len(), 2, "{what}");
                assert!(children.iter().all(|c| c.starts_with("c0@") || c.starts_with("c1@")));
            }
            // c0/c1 serve hold_sleepers and have two sleeper children.
            "c0" | "c1" => {
                assert!(text.contains("serving:") && text.contains("hold_sleepers"), "{text}");
                assert!(text.contains("sleeper0@") && text.contains("sleeper1@"), "{text}");
                assert!(has_task("serving", "hold_sleepers"), "{what}");
                let c = json["children"].as_array().unwrap();
                assert!(c.iter().all(|c| c["pid"].as_u64().is_some() && c["method"].is_string()));
                assert_eq!(children.len(), 2, "{what}");
            }
            _ => {
                assert!(!text.contains("children:"), "{text}");
                assert!(children.is_empty(), "{what}");
            }
        }
    }

    // Retention: dump after dump (each waited for: signals of one kind do not queue),
    // every actor keeps its last DUMPS_KEPT, in both forms.
    let last = plough_actor_core::DUMPS_KEPT + 3;
    for seq in 2..=last {
        app.signal(plough_fork_prims::Signal::USR1).unwrap();
        wait_until(Duration::from_secs(10), &format!("dump {seq} from every actor"), || {
            entries.iter().all(|e| complete(&dump_files(&dir, e, seq)))
        });
    }
    let kept: Vec<u64> = (last + 1 - plough_actor_core::DUMPS_KEPT..=last).collect();
    for e in &entries {
        assert_eq!(seqs(&dir, e, "dump"), kept, "{}", e.aid);
        assert_eq!(seqs(&dir, e, "json"), kept, "{}", e.aid);
    }

    // The tree is still alive and well: SIGINT takes it down gracefully.
    assert_eq!(rt.block_on(plough_ps::query(&addr)).unwrap().len(), 7);
    app.signal(plough_fork_prims::Signal::INT).unwrap();
    let st = app.wait_blocking().unwrap();
    let mut err = String::new();
    let _ = stderr.read_to_string(&mut err);
    assert_eq!(st.code(), Some(130), "{st}: {err}");
    // The root's dump also went to stderr.
    assert!(err.contains("plough task dump (also in"), "{err}");
    // The tree ended: its dumps went with it.
    assert!(!dir.exists(), "{:?}", files_left_in(&dir));
    let dumps = dir.parent().unwrap();
    assert!(files_left_in(dumps).iter().all(|f| !f.starts_with(&dir)));
    drop(_cleanup);
    assert_no_descendants(Duration::from_secs(5));
}

#[test]
fn a_dump_mid_stream_names_the_blocked_contexts_and_loses_nothing() {
    become_subreaper();
    let registry = fresh_tcp_registry();
    // Enough that, with the root holding after half, neither hop's buffer can take the
    // rest: every actor is still streaming when the dump is asked for.
    let n = 10 * plough::STREAM_BUFFER as u64;
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
    let root = entries.iter().find(|e| e.parent.is_none()).expect("the root").clone();
    let dir = tree_dir(&root);
    let _cleanup = RemoveOnDrop(dir.clone());
    let files: Vec<(String, (PathBuf, PathBuf))> =
        entries.iter().map(|e| (e.aid.name.clone(), dump_files(&dir, e, 1))).collect();
    app.signal(plough_fork_prims::Signal::USR1).unwrap();
    wait_until(Duration::from_secs(10), "a dump from each actor", || {
        files.iter().all(|(_, f)| complete(f))
    });
    for (name, (f, json)) in &files {
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
        let contexts = json["tasks"].as_array().unwrap().iter().filter(|t| t["kind"] == "context");
        assert!(contexts.count() > 0, "{name}: {json:#}");
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
    assert!(!dir.exists(), "the tree ended, its dumps stay: {:?}", files_left_in(&dir));
    drop(_cleanup);
    assert_no_descendants(Duration::from_secs(5));
}
