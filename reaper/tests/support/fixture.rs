//! Shared by the reaper's integration tests: the fixture program, a private runtime
//! directory, `plough-reap` runs, and cleanup that leaves no process or zombie behind.
//!
//! The test process makes itself a child subreaper, so fixture processes orphaned by a
//! SIGKILLed parent are reparented to it (not to a pid 1 that may never reap them) and
//! the test reaps them — each by its pid, never `waitpid(-1)`.

#![allow(dead_code)]

use plough_fork_prims::marker::{MarkerInfo, read_markers};
use rustix::process::{Pid, WaitOptions, getpid, set_child_subreaper, waitpid};
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const FIXTURE: &str = env!("CARGO_BIN_EXE_plough-reap-fixture");
pub const REAP: &str = env!("CARGO_BIN_EXE_plough-reap");
pub const NOBODY: u32 = 65534;
/// Upper bound for any one wait in these tests.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A fixture process (and, for `tree`, its descendants), with its `ready` lines.
pub struct Fixture {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    /// (pid, name) of every process that said `ready`.
    pub ready: Vec<(u32, String)>,
}

impl Fixture {
    /// Starts `plough-reap-fixture ARGS` and waits for `expect` ready lines.
    pub fn start(args: &[&str], expect: usize) -> Fixture {
        let _ = set_child_subreaper(Some(getpid()));
        let mut child = Command::new(FIXTURE)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn fixture");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut f = Fixture { child, lines, ready: Vec::new() };
        let deadline = Instant::now() + PATIENCE;
        while f.ready.len() < expect {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = f.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!("fixture {args:?}: only {} of {expect} ready: {:?}", f.ready.len(), f.ready)
            });
            let mut it = line.split_whitespace();
            if it.next() == Some("ready") {
                let pid = it.next().unwrap().parse().unwrap();
                f.ready.push((pid, it.next().unwrap_or_default().to_owned()));
            }
        }
        f
    }

    pub fn pid_of(&self, name: &str) -> u32 {
        self.ready.iter().find(|(_, n)| n == name).unwrap_or_else(|| panic!("no {name}")).0
    }

    pub fn pids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.ready.iter().map(|(p, _)| *p).collect();
        v.sort_unstable();
        v
    }

    /// SIGKILLs the first process and reaps it.
    pub fn kill_root(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Fixture {
    /// SIGKILLs every process of the fixture that is still there and reaps those that
    /// are (or became, as orphans) our children.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for (pid, _) in &self.ready {
            kill_and_reap(*pid);
        }
    }
}

/// SIGKILLs `pid` if it still runs with its recorded start time, then reaps it if it is
/// our child; bounded.
pub fn kill_and_reap(pid: u32) {
    let Some(p) = Pid::from_raw(pid as i32) else { return };
    let ours =
        || plough_reaper::procs::ProcInfo::read(pid).is_some_and(|i| i.ppid == std::process::id());
    if ours() {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
        let _ = waitpid(Some(p), WaitOptions::empty());
    } else if let Some(info) = plough_reaper::procs::ProcInfo::read(pid) {
        // Not our child (yet): its parent may be dying; kill and wait for it to vanish.
        if info.is_running() {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
        }
        wait_until("process gone or reparented to us", || {
            plough_reaper::procs::ProcInfo::read(pid).is_none_or(|i| i.ppid == std::process::id())
        });
        if ours() {
            let _ = waitpid(Some(p), WaitOptions::empty());
        }
    }
}

/// Polls `cond` every 10 ms until it holds, panicking after [`PATIENCE`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A private runtime directory (0700) inside a temp dir removed on drop.
pub struct RuntimeDir {
    tmp: tempfile::TempDir,
}

impl RuntimeDir {
    pub fn new() -> RuntimeDir {
        let tmp = tempfile::Builder::new().prefix("plough-reap-test-").tempdir().unwrap();
        RuntimeDir { tmp }
    }

    pub fn path(&self) -> PathBuf {
        self.tmp.path().join("plough")
    }

    pub fn markers(&self) -> Vec<MarkerInfo> {
        read_markers(&self.path()).into_iter().map(|(_, m)| m).collect()
    }
}

/// The result of one `plough-reap` run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub json: serde_json::Value,
}

/// Runs `plough-reap --runtime-dir DIR --json ARGS`.
pub fn reap(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new(REAP)
        .arg("--runtime-dir")
        .arg(dir)
        .arg("--json")
        .args(args)
        .output()
        .expect("run plough-reap");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "--json output does not parse ({e}):\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    Run { code: out.status.code().unwrap_or(-1), stdout, json }
}

impl Run {
    /// (pid, outcome) of every actor reported, sorted by pid.
    pub fn actors(&self) -> Vec<(u32, String)> {
        let mut v: Vec<(u32, String)> = self.json["actors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| (a["pid"].as_u64().unwrap() as u32, a["outcome"].as_str().unwrap().to_owned()))
            .collect();
        v.sort();
        v
    }

    pub fn actor_pids(&self) -> Vec<u32> {
        self.actors().into_iter().map(|(p, _)| p).collect()
    }

    /// (path, action) of every file in `key` ("shm" or "files").
    pub fn files(&self, key: &str) -> Vec<(PathBuf, String)> {
        let mut v: Vec<(PathBuf, String)> = self.json[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    PathBuf::from(f["path"].as_str().unwrap()),
                    f["action"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        v.sort();
        v
    }
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}
