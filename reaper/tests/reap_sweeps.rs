//! `--shm-only`: a segment mapped by a live process is kept, an orphaned one removed, one
//! of another uid untouched. `--uds`: stale socket files go, bound ones stay.
//! `--dry-run` changes nothing.

#[path = "support/fixture.rs"]
mod fixture;

use fixture::{Fixture, NOBODY, RuntimeDir, is_root, reap};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

/// `/dev/shm` files with a prefix unique to this test; removed on drop.
struct ShmFiles(Vec<PathBuf>);

impl Drop for ShmFiles {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[test]
fn shm_sweep_removes_only_unused_segments_of_ours() {
    let prefix = format!("plough-test-{}-", std::process::id());
    let path = |n: &str| PathBuf::from(format!("/dev/shm/{prefix}{n}"));
    let files = ShmFiles(vec![path("mapped"), path("orphan"), path("foreign"), path("open")]);
    for p in &files.0 {
        std::fs::write(p, [0u8; 4096]).unwrap();
    }
    let mapper = Fixture::start(&["map", path("mapped").to_str().unwrap()], 1);
    let _held_open = std::fs::File::open(path("open")).unwrap();
    if is_root() {
        std::os::unix::fs::chown(path("foreign"), Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let rt = RuntimeDir::new();
    let args = ["--shm-only", "--shm-prefix", &prefix, "--shm-min-age", "0"];

    let dry = reap(&rt.path(), &[&args[..], &["--dry-run"]].concat());
    assert_eq!(dry.code, 1, "{}", dry.stdout);
    let mut expect = vec![(path("orphan"), "would_remove".to_owned())];
    if !is_root() {
        expect.insert(0, (path("foreign"), "would_remove".to_owned())); // ours after all
    }
    assert_eq!(dry.files("shm"), expect, "{}", dry.stdout);
    assert!(files.0.iter().all(|p| p.exists()), "--dry-run removed something");

    let run = reap(&rt.path(), &args);
    assert_eq!(run.code, 0, "removed, so nothing left behind: {}", run.stdout);
    let removed: Vec<PathBuf> = run.files("shm").into_iter().map(|(p, _)| p).collect();
    assert!(removed.contains(&path("orphan")) && !path("orphan").exists());
    assert!(path("mapped").exists(), "a segment mapped by a live process was removed");
    assert!(path("open").exists(), "a segment held open was removed");
    if is_root() {
        assert!(path("foreign").exists(), "a segment of uid {NOBODY} was removed");
    }
    assert_eq!(run.json["actors"].as_array().unwrap().len(), 0, "--shm-only touched actors");

    // Once its mapper is gone, the mapped segment is an orphan too.
    drop(mapper);
    let run = reap(&rt.path(), &args);
    assert!(run.files("shm").iter().any(|(p, _)| *p == path("mapped")), "{}", run.stdout);
    assert_eq!(reap(&rt.path(), &args).code, 0, "nothing left to find");
}

#[test]
fn uds_sweep_removes_stale_sockets_and_keeps_bound_ones() {
    let rt = RuntimeDir::new();
    let dir = rt.path();
    plough_fork_prims::marker::ensure_private_dir(&dir).unwrap();
    let dead = {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        pid
    };
    let stale = dir.join(format!("worker@{dead}.sock"));
    let stale_registry = dir.join("registry@1616.sock");
    drop(UnixListener::bind(&stale).unwrap()); // the file outlives the socket
    drop(UnixListener::bind(&stale_registry).unwrap());
    let live = dir.join(format!("root@{}.sock", std::process::id()));
    let _listener = UnixListener::bind(&live).unwrap();
    let live_registry = dir.join("registry@1617.sock");
    let _registry = UnixListener::bind(&live_registry).unwrap();
    let other_file = dir.join(format!("notes@{dead}.sock.txt"));
    std::fs::write(&other_file, "not a socket").unwrap();

    let dry = reap(&dir, &["--uds", "--dry-run"]);
    let mut expect = vec![
        (stale_registry.clone(), "would_remove".to_owned()),
        (stale.clone(), "would_remove".to_owned()),
    ];
    expect.sort();
    assert_eq!(dry.files("files"), expect, "{}", dry.stdout);
    assert!(stale.exists() && stale_registry.exists(), "--dry-run removed something");
    assert_eq!(dry.code, 1, "found, and left in place: {}", dry.stdout);
    let check_dry = reap(&dir, &["--uds", "--check", "--dry-run"]);
    assert_eq!(check_dry.code, 1, "--check --dry-run: found: {}", check_dry.stdout);
    assert!(stale.exists() && stale_registry.exists(), "--check --dry-run removed something");

    // --check sweeps as usual, and still fails the run: something had been left behind.
    let run = reap(&dir, &["--uds", "--check"]);
    assert_eq!(run.code, 1, "--check: found (and removed): {}", run.stdout);
    assert!(!stale.exists() && !stale_registry.exists());
    assert!(live.exists() && live_registry.exists() && other_file.exists());
    assert_eq!(reap(&dir, &["--uds", "--check"]).code, 0, "--check: nothing left to find");

    // Without --check, a sweep that removes everything it found exits 0 (set -e friendly).
    drop(UnixListener::bind(&stale).unwrap());
    let run = reap(&dir, &["--uds"]);
    assert_eq!(run.code, 0, "removed, so nothing left behind: {}", run.stdout);
    assert_eq!(run.files("files"), vec![(stale.clone(), "removed".to_owned())], "{}", run.stdout);
    assert!(!stale.exists());
    assert_eq!(reap(&dir, &["--uds"]).code, 0, "nothing left to find");
}

/// `.<pid>.<uuid>.tmp` files: those of a dead writer go (`--uds`), a live writer's stays;
/// the leak oracle reports both and its reap removes only the stale one.
#[test]
fn half_written_markers_of_dead_writers_are_swept_and_live_ones_kept() {
    let rt = RuntimeDir::new();
    let dir = rt.path();
    let markers = plough_fork_prims::marker::markers_dir(&dir);
    plough_fork_prims::marker::ensure_private_dir(&markers).unwrap();
    let before = plough_reaper::Snapshot::take_in(&dir);
    let dead = {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        pid
    };
    let me = std::process::id();
    let my_start = plough_fork_prims::marker::process_start_time(me).unwrap();
    // Killed after the create, before any byte was written.
    let stale_empty = markers.join(format!(".{dead}.a-1.tmp"));
    std::fs::write(&stale_empty, "").unwrap();
    // Complete, but its writer is gone.
    let stale_full = markers.join(format!(".{dead}.b-2.tmp"));
    std::fs::write(&stale_full, format!("name=x\npid={dead}\nstart_time=1\n")).unwrap();
    // A live process's marker in the making (ours, with our start time).
    let live = markers.join(format!(".{me}.c-3.tmp"));
    std::fs::write(&live, format!("name=y\npid={me}\nstart_time={my_start}\n")).unwrap();

    let leaks = before.leaked_since();
    let mut half: Vec<_> = leaks.half_written.iter().map(|(p, _)| p.clone()).collect();
    half.sort();
    let mut all = vec![stale_empty.clone(), stale_full.clone(), live.clone()];
    all.sort();
    assert_eq!(half, all);
    assert!(leaks.to_string().contains("leaked half-written marker"), "{leaks}");

    let dry = reap(&dir, &["--uds", "--dry-run"]);
    let mut expect = vec![
        (stale_empty.clone(), "would_remove".to_owned()),
        (stale_full.clone(), "would_remove".to_owned()),
    ];
    expect.sort();
    assert_eq!(dry.files("files"), expect, "{}", dry.stdout);
    let run = reap(&dir, &["--uds"]);
    assert_eq!(run.code, 0, "removed, so nothing left behind: {}", run.stdout);
    assert!(!stale_empty.exists() && !stale_full.exists(), "{}", run.stdout);
    assert!(live.exists(), "a live writer's file must stay");
    assert_eq!(reap(&dir, &["--uds"]).code, 0, "nothing left to find");

    // The oracle's reap: again a stale one next to the live one.
    std::fs::write(&stale_empty, "").unwrap();
    let leaks = before.leaked_since();
    assert_eq!(leaks.half_written.len(), 2, "{leaks}");
    let report = plough_reaper::reap(&leaks);
    assert!(!stale_empty.exists(), "{report}");
    assert!(live.exists(), "{report}");
    assert!(!report.all_gone(), "the live writer's file is still there: {report}");
    std::fs::remove_file(&live).unwrap();
    assert!(before.leaked_since().is_empty());
}

/// `dumps/<tree>/`: a tree's task dumps. Those of a tree with no live actor go (`--uds`,
/// and the leak oracle reports and reaps them); a live tree's stay.
#[test]
fn task_dumps_of_ended_trees_are_swept_and_live_trees_kept() {
    let rt = RuntimeDir::new();
    let dir = rt.path();
    let d = dir.to_str().unwrap().to_owned();
    let live = Fixture::start(&["tree", &d, "1", "2"], 3);
    let tree = rt.markers().into_iter().find(|m| m.pid == live.pid_of("root")).unwrap().tree;
    let dumps = plough_reaper::dumps::dumps_dir(&dir);
    let before = plough_reaper::Snapshot::take_in(&dir);
    let live_dir = dumps.join(&tree);
    let dead_dir = dumps.join("0e0e0e0e-0000-4000-8000-000000000000");
    for (d, pid) in [(&live_dir, live.pid_of("root")), (&dead_dir, 1)] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join(format!("root@{pid}.1.dump")), "task tree of root").unwrap();
        std::fs::write(d.join(format!("root@{pid}.1.json")), "{}").unwrap();
    }

    let leaks = before.leaked_since();
    assert_eq!(leaks.dumps, vec![dead_dir.clone(), live_dir.clone()], "{leaks}");
    assert!(leaks.to_string().contains("leaked task dumps"), "{leaks}");

    let dry = reap(&dir, &["--uds", "--dry-run"]);
    assert_eq!(dry.files("files"), vec![(dead_dir.clone(), "would_remove".to_owned())]);
    assert!(dead_dir.exists(), "--dry-run removed something");
    let run = reap(&dir, &["--uds"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(run.files("files"), vec![(dead_dir.clone(), "removed".to_owned())]);
    assert!(!dead_dir.exists() && live_dir.exists(), "{}", run.stdout);

    // Once the tree is gone its dumps are stale too; the oracle's reap removes them.
    drop(live);
    let leaks = before.leaked_since();
    assert_eq!(leaks.dumps, vec![live_dir.clone()], "{leaks}");
    let report = plough_reaper::reap(&leaks);
    assert!(report.all_gone() && !live_dir.exists(), "{report}");
}
