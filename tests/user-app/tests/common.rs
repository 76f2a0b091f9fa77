//! Running the program as its user would, bounded: a child process with a deadline, its
//! output, and a check that nothing it started outlives it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Makes this test process the reaper of everything below it, so orphans of a program
/// that died are ours to find (and reap).
pub fn become_subreaper() {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0, "PR_SET_CHILD_SUBREAPER");
}

/// The program's binary.
pub fn program(name: &str) -> Command {
    let path = match name {
        "current" => env!("CARGO_BIN_EXE_current"),
        _ => env!("CARGO_BIN_EXE_plough-user-app"),
    };
    let mut cmd = Command::new(path);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// A running program whose stdout lines and exit arrive on channels.
pub struct Running {
    pub pid: u32,
    lines: mpsc::Receiver<String>,
    exit: mpsc::Receiver<std::process::ExitStatus>,
    stderr: std::thread::JoinHandle<String>,
    pub started: Instant,
}

impl Running {
    pub fn start(mut cmd: Command) -> Running {
        let mut child: Child = cmd.spawn().expect("the program starts");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut err = child.stderr.take().expect("piped stderr");
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let pid = child.id();
        let (done, exit) = mpsc::channel();
        std::thread::spawn(move || {
            if let Ok(st) = child.wait() {
                let _ = done.send(st);
            }
        });
        Running { pid, lines, exit, stderr, started: Instant::now() }
    }

    fn kill(&self) {
        // SAFETY: kill(2) on our own unreaped child (the waiter thread has not reaped it:
        // it would have sent its status).
        unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
    }

    /// Sends `signal` to the program.
    pub fn signal(&self, signal: i32) {
        // SAFETY: as in `kill`.
        unsafe { libc::kill(self.pid as i32, signal) };
    }

    /// The next stdout line, within `limit` (panics, killing the program, after it).
    pub fn line(&mut self, limit: Duration) -> String {
        match self.lines.recv_timeout(limit) {
            Ok(line) => line,
            Err(_) => {
                self.kill();
                panic!("no line from the program within {limit:?}");
            }
        }
    }

    /// Waits for the exit within `limit` (killing it after): (exit code, stdout lines
    /// not read yet, stderr).
    pub fn finish(self, limit: Duration) -> (Option<i32>, Vec<String>, String) {
        let status = match self.exit.recv_timeout(limit) {
            Ok(st) => st,
            Err(_) => {
                self.kill();
                let _ = self.exit.recv();
                let stderr = self.stderr.join().unwrap_or_default();
                panic!("the program did not exit within {limit:?}; stderr:\n{stderr}");
            }
        };
        let stderr = self.stderr.join().unwrap_or_default();
        // The stdout reader ends at EOF, after the last line.
        let rest: Vec<String> = self.lines.iter().collect();
        (status.code(), rest, stderr)
    }
}

/// Pids of every live process below this one.
pub fn descendants() -> Vec<u32> {
    let me = std::process::id();
    let mut parent_of = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else { continue };
        let mut fields = after.split(' ');
        let state = fields.next().unwrap_or("");
        let ppid: u32 = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if state != "Z" {
            parent_of.insert(pid, ppid);
        }
    }
    let mut out: Vec<u32> = parent_of
        .keys()
        .copied()
        .filter(|&pid| {
            let mut p = pid;
            for _ in 0..64 {
                match parent_of.get(&p) {
                    Some(&pp) if pp == me => return true,
                    Some(&pp) if pp > 1 => p = pp,
                    _ => return false,
                }
            }
            false
        })
        .collect();
    out.sort_unstable();
    out
}

/// Reaps zombies reparented to us and asserts, within `limit`, that nothing is left below.
pub fn assert_nothing_left(limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        // SAFETY: waitpid on any child, non-blocking; our children are all disposable here.
        while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
        let left = descendants();
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "processes left behind: {left:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Tests of this file run one at a time (they count processes below this one).
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
