//! Shared helpers for plough's integration suites (`tests/tests/*.rs`) and the helper child
//! programs they drive (`tests/src/bin/*.rs`).
//!
//! Tests wait for conditions with [`wait_until`] (a deadline and a message), never with a
//! bare sleep, and bound async bodies with `tokio::time::timeout`.

pub mod app;
pub mod crash;
pub mod lend_app;
mod lifecycle;
pub mod multi_host;
pub mod netns;
pub mod obs;
pub mod shm_app;
pub mod tractor_app;
pub mod typed_app;

use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Polls `cond` until it holds or `limit` passes; panics naming `what` on timeout.
/// The poll interval starts at 1 ms and backs off to 20 ms.
#[track_caller]
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(1);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// The scheduler state letter of a process (`R`, `S`, `Z`, ...), `None` once it is gone.
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: the state follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The parent pid of a process, `None` once it is gone.
pub fn proc_ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// Makes this process the reaper of its orphaned descendants (`PR_SET_CHILD_SUBREAPER`),
/// so a test can observe and reap grandchildren whose parent it killed.
pub fn become_subreaper() {
    #[allow(unsafe_code)]
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag; no memory is passed.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0, "prctl(PR_SET_CHILD_SUBREAPER): {}", std::io::Error::last_os_error());
}

/// A pipe as two owned fds (read end, write end), both close-on-exec.
pub fn pipe() -> (OwnedFd, OwnedFd) {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe")
}

/// Reads everything from `fd` until EOF (the writer side closed), as text.
pub fn read_to_end(fd: OwnedFd) -> String {
    let mut f = std::fs::File::from(fd);
    let mut s = String::new();
    f.read_to_string(&mut s).expect("read pipe");
    s
}

/// Reads one line from `fd` (blocking).
pub fn read_line(fd: &OwnedFd) -> String {
    // Borrow the fd as a File without taking ownership.
    let dup = fd.try_clone().expect("dup");
    let mut line = String::new();
    BufReader::new(std::fs::File::from(dup)).read_line(&mut line).expect("read line");
    line.trim_end().to_owned()
}

/// Writes `s` to a raw fd (for use in forked children, which hold raw kept fds).
pub fn write_fd(fd: RawFd, s: &str) {
    #[allow(unsafe_code)]
    // SAFETY: the caller passes an fd that is open for the duration of the call; the
    // `File` is never dropped (ManuallyDrop), so it does not close it.
    let f = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
    std::io::Write::write_all(&mut &*f, s.as_bytes()).expect("write fd");
}

/// The raw number of an owned fd.
pub fn raw(fd: &OwnedFd) -> RawFd {
    fd.as_raw_fd()
}

/// Runs a helper program (built from `tests/src/bin`) and returns it with piped stdout.
pub fn spawn_helper(path: &str, args: &[&str]) -> std::process::Child {
    std::process::Command::new(path)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn helper {path}: {e}"))
}

/// The example binary `name` of this build: `target/<profile>/examples/<name>` (examples
/// of every workspace crate land there; `cargo xtask test` builds them).
///
/// # Panics
///
/// When it is not built.
pub fn example_bin(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let bin = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("target/<profile>/deps")
        .join("examples")
        .join(name);
    assert!(
        bin.exists(),
        "{} is not built: `cargo build --workspace --examples` (cargo xtask test builds them)",
        bin.display()
    );
    bin
}

/// Serialises tests that run a root actor in this process (one root per process): a
/// no-op under nextest (one test per process), needed under `cargo test`.
pub fn root_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// The user's tree secret (the `secret` file in the runtime directory, as a root of this
/// user makes it on first use): what a raw test client proves to reach the actors.
///
/// # Panics
/// When there is none, or it is refused.
pub fn user_secret() -> plough::ipc_wire::Secret {
    let dir = plough::ipc_wire::runtime_dir::default_dir();
    plough::ipc_wire::Secret::load_or_create(&dir).expect("the user's secret")
}

/// Every file (not directory) below `dir` (a runtime directory, or an `XDG_RUNTIME_DIR`
/// holding one in `plough/`), sorted — what a tree left behind — but the user's secret
/// (`secret` in the runtime directory), which is meant to stay.
pub fn files_left_in(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let file = plough::ipc_wire::auth::SECRET_FILE;
    let secrets = [dir.join(file), dir.join("plough").join(file)];
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            } else if !secrets.contains(&e.path()) {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// A private registry address for one test: TCP port 0, or (with
/// `PLOUGH_TEST_TRANSPORT=uds`) a socket in a fresh directory.
pub fn private_registry() -> plough::Address {
    match std::env::var("PLOUGH_TEST_TRANSPORT").as_deref() {
        Ok("uds") => {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = plough::ipc_wire::runtime_dir::default_dir();
            plough::Address::Uds(dir.join(format!("t{}-{n}@reg.sock", std::process::id())))
        }
        _ => "tcp://127.0.0.1:0".parse().expect("tcp address"),
    }
}

/// The runtime the runtime suites use: the test program's registry, children exec
/// `plough_app` (or fork, per `PLOUGH_SPAWN_METHOD`), a private registry.
pub fn runtime(app: &str) -> plough::Runtime {
    plough::Runtime::new(app::registry()).child_program(app).configure(|c| {
        c.registry_addr = private_registry();
        c.budgets.shm_threshold = Some(SHM_THRESHOLD);
    })
}

/// The suites' `Budgets::shm_threshold` (the test program's and [`runtime`]'s): 1 MiB,
/// below the default, so that every suite's large payloads take the shared-memory path.
pub const SHM_THRESHOLD: usize = 1 << 20;

/// Pids of every live process below this one (children, grandchildren...), found by
/// walking `/proc`. With [`become_subreaper`], orphans of the tree count too.
pub fn descendants() -> Vec<u32> {
    descendants_of(std::process::id())
}

/// Pids of every process below `ancestor` (by parent pid, from `/proc`), sorted.
pub fn descendants_of(ancestor: u32) -> Vec<u32> {
    let mut parent_of = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>()
            && let Some(ppid) = proc_ppid(pid)
        {
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
                    Some(&pp) if pp == ancestor => return true,
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

/// Asserts, within `limit`, that nothing of ours is left below this process.
#[track_caller]
pub fn assert_no_descendants(limit: std::time::Duration) {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let left = descendants();
        if left.is_empty() {
            return;
        }
        if std::time::Instant::now() > deadline {
            let names: Vec<String> = left
                .iter()
                .map(|p| {
                    // Name and state (`Z`: a zombie nobody reaped) from stat, then argv.
                    let stat =
                        std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
                    let comm_state = stat
                        .split_once(" (")
                        .and_then(|(_, rest)| rest.rsplit_once(") "))
                        .map(|(comm, rest)| {
                            format!("{comm} {}", rest.split(' ').next().unwrap_or("?"))
                        })
                        .unwrap_or_default();
                    format!(
                        "{p} [{comm_state}]:{}",
                        std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                            .unwrap_or_default()
                            .replace('\0', " ")
                    )
                })
                .collect();
            panic!("processes left behind: {names:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Bounds a root body: panics (failing the test) after `limit`.
pub async fn bounded<T>(
    limit: std::time::Duration,
    fut: impl std::future::Future<Output = plough::Result<T>>,
) -> plough::Result<T> {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("test body timed out after {limit:?}"))
}

/// One root-actor test: under [`root_lock`], as a subreaper, runs `body` with the root of
/// `rt` (the body bounded by `limit`), then asserts that no process below this one is
/// left ([`assert_no_descendants`]).
pub fn with_root<T, F, Fut>(
    rt: plough::Runtime,
    limit: std::time::Duration,
    body: F,
) -> plough::Result<T>
where
    F: FnOnce(plough::Actor) -> Fut,
    Fut: std::future::Future<Output = plough::Result<T>>,
{
    let _g = root_lock();
    become_subreaper();
    let out = rt.run(|root| bounded(limit, body(root)));
    assert_no_descendants(std::time::Duration::from_secs(5));
    out
}

/// [`with_root`] with the body in a nursery of the root.
pub fn in_nursery<T, F, Fut>(
    rt: plough::Runtime,
    limit: std::time::Duration,
    body: F,
) -> plough::Result<T>
where
    F: FnOnce(plough::Nursery) -> Fut,
    Fut: std::future::Future<Output = plough::Result<T>>,
{
    with_root(rt, limit, |root| async move { root.nursery(body).await })
}

/// A ladder short enough for tests of the hard-kill path.
pub fn quick_ladder() -> plough::LadderConfig {
    plough::LadderConfig {
        ack_timeout: std::time::Duration::from_millis(200),
        exit_timeout: std::time::Duration::from_millis(300),
        term_timeout: std::time::Duration::from_millis(300),
    }
}

/// Removes the marker and socket file of an actor process this test killed (SIGKILL
/// leaves them: the process had no chance to). The process must be dead and reaped.
pub fn clear_killed_actor(pid: u32) {
    use plough_fork_prims::marker;
    let dir = marker::default_runtime_dir();
    let path = marker::markers_dir(&dir).join(pid.to_string());
    if let Some(info) =
        std::fs::read_to_string(&path).ok().and_then(|t| marker::MarkerInfo::parse(&t))
    {
        marker::clear_dead_actor(&dir, pid, &info.uuid).expect("clear the killed actor's files");
    }
}

/// Waits for `handle` to exit (on its pidfd, bounded by `limit`) and reaps it; `None` if
/// it still runs then.
pub fn wait_exit(
    handle: &plough_fork_prims::ChildHandle,
    limit: Duration,
) -> Option<plough_fork_prims::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = handle.try_wait().expect("try_wait") {
            return Some(st);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        match handle.pidfd() {
            Some(fd) => {
                let mut fds = [rustix::event::PollFd::new(&fd, rustix::event::PollFlags::IN)];
                let timeout = rustix::event::Timespec::try_from(left).expect("a timeout");
                match rustix::event::poll(&mut fds, Some(&timeout)) {
                    Ok(_) | Err(rustix::io::Errno::INTR) => {}
                    Err(e) => panic!("poll pidfd of {}: {e}", handle.pid()),
                }
            }
            None => std::thread::sleep(left.min(Duration::from_millis(5))),
        }
    }
}

/// A child program's stdout, read line by line on a thread of its own.
#[derive(Debug)]
pub struct OutputLines {
    rx: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl OutputLines {
    /// Starts reading `stdout`.
    pub fn read(stdout: impl Read + Send + 'static) -> OutputLines {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        OutputLines { rx, seen: Vec::new() }
    }

    /// The next line that starts with `prefix`, waiting at most `limit` for it; `None`
    /// when none came (the output ended, or the time is up).
    pub fn expect_line(&mut self, prefix: &str, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.rx.recv_timeout(left).ok()?;
            self.seen.push(line.clone());
            if line.starts_with(prefix) {
                return Some(line);
            }
        }
    }

    /// Everything printed until the output ends (every holder of the pipe exited),
    /// waiting at most `limit`; `None` when it is still open then.
    pub fn rest(&mut self, limit: Duration) -> Option<Vec<String>> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Some(self.seen.clone());
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => return None,
            }
        }
    }

    /// Every line read so far.
    pub fn seen(&self) -> &[String] {
        &self.seen
    }
}

/// Reaps `pid` if it is (now) our child (an orphan adopted by this subreaper), giving it
/// `limit` to exit on its own and killing it after that; whether it exited on its own.
pub fn reap_adopted(pid: u32, limit: Duration) -> bool {
    let Ok(h) = plough_fork_prims::ChildHandle::adopt(pid) else { return true };
    h.set_kill_on_drop(true);
    if wait_exit(&h, limit).is_some() {
        return true;
    }
    let _ = h.kill();
    let _ = h.wait_blocking();
    false
}
