//! The program as its user runs it: tokio "full", `#[tokio::main]`, clap, its own
//! subscriber and threads — on every backend.

mod common;

use common::{Running, assert_nothing_left, become_subreaper, one_at_a_time, program};
use std::time::Duration;

/// The sum of the squares of 0..n.
fn squares(n: u64) -> u64 {
    (0..n).map(|i| i * i).sum()
}

#[test]
fn a_hundred_actors_on_the_zygote_and_exec_backends() {
    let _one = one_at_a_time();
    become_subreaper();
    for backend in ["zygote", "exec"] {
        let mut cmd = program("user-app");
        cmd.args(["--backend", backend, "fan-out", "--actors", "100"]);
        let (code, out, stderr) = Running::start(cmd).finish(Duration::from_secs(60));
        assert_eq!(code, Some(0), "{backend}: {out:?}\n{stderr}");
        assert_eq!(out, vec![format!("ok {}", squares(100))], "{backend}\n{stderr}");
        assert_nothing_left(Duration::from_secs(5));
    }
}

#[test]
fn the_default_backend_is_the_zygote_and_works_here() {
    let _one = one_at_a_time();
    become_subreaper();
    let mut cmd = program("user-app");
    cmd.args(["fan-out", "--actors", "3"]).env_remove("PLOUGH_SPAWN_METHOD");
    let (code, out, stderr) = Running::start(cmd).finish(Duration::from_secs(30));
    assert_eq!((code, out), (Some(0), vec![format!("ok {}", squares(3))]), "{stderr}");
    assert_nothing_left(Duration::from_secs(5));
}

#[test]
fn main_thread_forkserver_refuses_before_forking_and_names_the_cause() {
    let _one = one_at_a_time();
    become_subreaper();
    let mut cmd = program("user-app");
    cmd.args(["--backend", "main_thread_forkserver", "fan-out", "--actors", "2"]);
    let (code, out, stderr) = Running::start(cmd).finish(Duration::from_secs(30));
    assert_eq!(code, Some(1), "{out:?}\n{stderr}");
    let text = out.join("\n");
    for needed in ["main_thread_forkserver", "tokio", "`signal`", "zygote", "exec"] {
        assert!(text.contains(needed), "`{needed}` missing from: {text}");
    }
    // Refused before forking: no actor ever booted, so none wrote to stderr.
    assert!(!stderr.contains("sq-0@"), "{stderr}");
    assert_nothing_left(Duration::from_secs(5));
}

#[test]
fn a_current_thread_tokio_main_root_spawns_too() {
    let _one = one_at_a_time();
    become_subreaper();
    let mut cmd = program("current");
    cmd.arg("10");
    let (code, out, stderr) = Running::start(cmd).finish(Duration::from_secs(30));
    assert_eq!((code, out), (Some(0), vec![format!("ok {}", squares(10))]), "{stderr}");
    assert_nothing_left(Duration::from_secs(5));
}

#[test]
fn sigterm_as_systemd_sends_it_stops_the_whole_tree_with_143() {
    let _one = one_at_a_time();
    become_subreaper();
    for backend in ["zygote", "exec"] {
        let mut cmd = program("user-app");
        cmd.args(["--backend", backend, "serve", "--actors", "3"]);
        let mut app = Running::start(cmd);
        let ready = app.line(Duration::from_secs(30));
        let pids: Vec<u32> = ready
            .strip_prefix("ready ")
            .unwrap_or_else(|| panic!("{backend}: {ready}"))
            .split(' ')
            .map(|p| p.parse().expect("a pid"))
            .collect();
        assert_eq!(pids.len(), 3);
        app.signal(libc::SIGTERM);
        let (code, out, stderr) = app.finish(Duration::from_secs(10));
        assert_eq!(code, Some(143), "{backend}: {out:?}\n{stderr}");
        assert!(
            out.len() == 1 && out[0].starts_with("error terminated"),
            "{backend}: {out:?}\n{stderr}"
        );
        for pid in pids {
            assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "{pid} lives");
        }
        assert_nothing_left(Duration::from_secs(5));
    }
}

#[test]
fn ten_thousand_zygote_spawns_while_threads_hammer_every_lock() {
    let _one = one_at_a_time();
    become_subreaper();
    let mut cmd = program("user-app");
    cmd.args(["--backend", "zygote", "stress", "--spawns", "10000", "--batch", "25"]);
    let (code, out, stderr) = Running::start(cmd).finish(Duration::from_secs(600));
    assert_eq!((code, out), (Some(0), vec!["ok 10000".to_owned()]), "{stderr}");
    assert_nothing_left(Duration::from_secs(5));
}
