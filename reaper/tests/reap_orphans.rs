//! A SIGKILLed tree whose members survive (no parent-death signal): `plough-reap` finds
//! exactly the survivors, SIGINT first, and SIGKILLs the one that ignores SIGINT after
//! the grace period; an unrelated process named like an actor and a process of another
//! uid (even with a forged marker) are left alone; `--dry-run` changes nothing.

#[path = "support/fixture.rs"]
mod fixture;

use fixture::{Fixture, NOBODY, RuntimeDir, is_root, reap, wait_until};
use plough_fork_prims::marker::{MarkerInfo, markers_dir, process_start_time};
use plough_reaper::procs::is_running_as;
use std::time::Instant;

fn forge_marker(dir: &std::path::Path, pid: u32, name: &str) {
    let m = format!(
        "name={name}\npid={pid}\nuuid=forged\ntree=forged\nparent_pid=1\nstart_time={}\naddr=x\nmethod=exec\n",
        process_start_time(pid).unwrap()
    );
    assert!(MarkerInfo::parse(&m).is_some());
    std::fs::write(markers_dir(dir).join(pid.to_string()), m).unwrap();
}

#[test]
fn survivors_of_a_sigkilled_tree_are_reaped_sigint_first_and_nothing_else() {
    let rt = RuntimeDir::new();
    let dir = rt.path();
    let d = dir.to_str().unwrap();
    let mut tree = Fixture::start(&["tree", d, "2", "2", "--stubborn", "c1.0"], 7);
    let root = tree.pid_of("root");
    let stubborn = tree.pid_of("c1.0");
    let survivors: Vec<u32> = tree.pids().into_iter().filter(|&p| p != root).collect();

    // Bystanders: a process of ours named like an actor, without a marker; and (as root)
    // a process of another uid that even has a marker in our directory.
    let named = Fixture::start(&["named"], 1);
    let foreign = is_root().then(|| Fixture::start(&["as-uid", &NOBODY.to_string()], 1));
    if let Some(f) = &foreign {
        forge_marker(&dir, f.pid_of("as-uid"), "forged");
    }

    // While the root lives nobody is an orphan.
    let run = reap(&dir, &[]);
    assert_eq!((run.code, run.actor_pids()), (0, Vec::<u32>::new()), "{}", run.stdout);

    tree.kill_root();
    let dry = reap(&dir, &["--dry-run"]);
    assert_eq!(dry.code, 1, "found something: {}", dry.stdout);
    assert_eq!(dry.actor_pids(), survivors, "exactly the survivors: {}", dry.stdout);
    assert!(dry.actors().iter().all(|(_, o)| o == "would_reap"));
    assert!(dry.json["dry_run"].as_bool().unwrap());
    let starts: Vec<u64> = survivors.iter().map(|&p| process_start_time(p).unwrap()).collect();
    assert!(survivors.iter().zip(&starts).all(|(&p, &s)| is_running_as(p, s)), "dry run killed");
    assert_eq!(rt.markers().len(), 7 + usize::from(foreign.is_some()), "dry run removed markers");

    let t0 = Instant::now();
    let run = reap(&dir, &["--grace", "1"]);
    let took = t0.elapsed();
    assert_eq!(run.code, 0, "all reaped, nothing left behind: {}", run.stdout);
    let expected: Vec<(u32, String)> = survivors
        .iter()
        .map(|&p| (p, if p == stubborn { "sigkilled" } else { "exited_after_sigint" }.to_owned()))
        .collect();
    assert_eq!(run.actors(), expected, "{}", run.stdout);
    let killed = run.json["actors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["pid"] == stubborn)
        .unwrap()["after_secs"]
        .as_f64()
        .unwrap();
    assert!((0.9..2.0).contains(&killed), "SIGKILL after the 1 s grace, not {killed}");
    assert!(took.as_secs_f64() < 3.5, "the reap took {took:?}");
    assert!(run.stdout.contains("SIGKILLed after") || run.json.is_object());
    for (&p, &s) in survivors.iter().zip(&starts) {
        wait_until("survivor gone", || !is_running_as(p, s));
    }

    // The reaped actors' markers and sockets are gone; the SIGKILLed root's remain.
    let socks: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sock"))
        .collect();
    assert_eq!(socks, vec![format!("root@{root}.sock")], "{}", run.stdout);

    // Nothing left to find. `--uds` removes the reaped actors' markers and the forged
    // one (a stale file of ours: it names no process of ours) — never the processes.
    let again = reap(&dir, &["--uds"]);
    assert_eq!(again.actor_pids(), Vec::<u32>::new(), "{}", again.stdout);
    assert_eq!(rt.markers(), vec![]);
    assert!(!dir.join(format!("root@{root}.sock")).exists(), "{}", again.stdout);

    // The bystanders are untouched.
    let named_pid = named.pid_of("named");
    assert!(process_start_time(named_pid).is_some(), "the process named plough:x was hit");
    if let Some(f) = &foreign {
        let p = f.pid_of("as-uid");
        assert!(plough_reaper::procs::ProcInfo::read(p).unwrap().is_running(), "uid {NOBODY} hit");
    }
}

/// Ctrl-C to `plough-reap` while it waits out a long grace period: the actor that
/// ignores SIGINT is SIGKILLed at once, and the report is still printed.
#[test]
fn sigint_to_plough_reap_cuts_the_grace_period_short() {
    let rt = RuntimeDir::new();
    let dir = rt.path();
    let d = dir.to_str().unwrap();
    let mut tree = Fixture::start(&["tree", d, "1", "2", "--stubborn", "c1"], 3);
    let (polite, stubborn) = (tree.pid_of("c0"), tree.pid_of("c1"));
    let polite_start = process_start_time(polite).unwrap();
    tree.kill_root();

    let t0 = Instant::now();
    let reaper = std::process::Command::new(fixture::REAP)
        .arg("--runtime-dir")
        .arg(&dir)
        .args(["--json", "--grace", "60"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The polite actor exits on SIGINT: plough-reap is now waiting out its grace period.
    wait_until("the polite actor gone", || !is_running_as(polite, polite_start));
    let interrupted = Instant::now();
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&reaper),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let out = reaper.wait_with_output().unwrap();
    let took = interrupted.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(took < std::time::Duration::from_secs(5), "plough-reap took {took:?} after SIGINT");
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("the report is printed");
    let of = |pid: u32| {
        json["actors"].as_array().unwrap().iter().find(|a| a["pid"] == pid).unwrap().clone()
    };
    assert_eq!(of(polite)["outcome"], "exited_after_sigint", "{stdout}");
    assert_eq!(of(stubborn)["outcome"], "sigkilled", "{stdout}");
    let after = of(stubborn)["after_secs"].as_f64().unwrap();
    assert!(after < t0.elapsed().as_secs_f64() && after < 30.0, "SIGKILL after {after} s");
}

#[test]
fn parent_and_tree_modes_pick_only_their_actors() {
    let rt = RuntimeDir::new();
    let dir = rt.path();
    let d = dir.to_str().unwrap();
    let a = Fixture::start(&["tree", d, "1", "2"], 3);
    let b = Fixture::start(&["tree", d, "1", "2"], 3);
    let tree_of = |pid: u32| rt.markers().into_iter().find(|m| m.pid == pid).unwrap().tree;

    let run = reap(&dir, &["--dry-run", "--parent", &a.pid_of("root").to_string()]);
    assert_eq!(run.actor_pids(), vec![a.pid_of("c0"), a.pid_of("c1")], "{}", run.stdout);

    let run = reap(&dir, &["--dry-run", "--tree", &tree_of(b.pid_of("root"))]);
    assert_eq!(run.actor_pids(), b.pids(), "{}", run.stdout);

    // For real: the whole of tree b goes, tree a stays.
    let run = reap(&dir, &["--grace", "2", "--tree", &tree_of(b.pid_of("root"))]);
    assert_eq!(run.code, 0, "all of tree b reaped");
    assert!(run.actors().iter().all(|(_, o)| o == "exited_after_sigint"), "{}", run.stdout);
    assert!(a.pids().iter().all(|&p| process_start_time(p).is_some()));
    assert_eq!(reap(&dir, &["--dry-run"]).actor_pids(), Vec::<u32>::new(), "tree a is no orphan");
}

#[test]
fn an_untrusted_runtime_dir_is_refused() {
    let rt = RuntimeDir::new();
    let dir = rt.path();
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.with_file_name("link");
    std::os::unix::fs::symlink(&dir, &link).unwrap();
    let out =
        std::process::Command::new(fixture::REAP).arg("--runtime-dir").arg(&link).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("symlink"));
}

/// Usage errors exit 2 — distinct from 1 (found) and 3 (could not reap everything) — and
/// touch nothing.
#[test]
fn usage_errors_exit_2() {
    let rt = RuntimeDir::new();
    for args in [&["--no-such-flag"][..], &["--grace", "-1"], &["--parent", "1", "--tree", "x"]] {
        let out = std::process::Command::new(fixture::REAP)
            .arg("--runtime-dir")
            .arg(rt.path())
            .args(args)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "{args:?} printed a report");
    }
}
