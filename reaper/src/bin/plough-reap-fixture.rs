//! Test helper for `plough-reaper`: processes that look, from outside, like plough actors
//! (they write real markers) or like things the reaper must leave alone. Each prints
//! `ready <pid> <name>` on stdout once it is set up, then waits for a signal.
//!
//! * `tree DIR DEPTH BREADTH [--stubborn NAME]...` — a root (`root`) and its tree of
//!   exec'd children (`c0`, `c0.1`, ...), all writing markers in the runtime dir `DIR`
//!   and listening on `DIR/<name>@<pid>.sock`.
//!   No parent-death signal: when the root is SIGKILLed, the rest survives. A node named
//!   by `--stubborn` ignores SIGINT.
//! * `node DIR TREE DEPTH BREADTH NAME [--stubborn NAME]...` — one node (internal).
//! * `as-uid UID` — a process of another user, named `plough:x`.
//! * `named` — a process of ours named `plough:x`, with no marker.
//! * `map PATH` — maps the file at `PATH` (closing the fd), then waits.
//!
//! Unsafe code: `signal(SIGINT, SIG_IGN)` and `mmap`, each with its `SAFETY` note.

use plough_fork_prims::marker::{ActorMarker, MarkerInfo, set_process_name};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn ready(name: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "ready {} {name}", std::process::id());
    let _ = out.flush();
}

fn wait_forever() -> ! {
    loop {
        std::thread::park();
    }
}

/// Ignores SIGINT (`stubborn`) or restores its default action (a shell may have started
/// us with SIGINT ignored, and that disposition survives exec).
#[allow(unsafe_code)]
fn set_sigint(stubborn: bool) {
    let action = if stubborn { libc::SIG_IGN } else { libc::SIG_DFL };
    // SAFETY: installs SIG_IGN or SIG_DFL (no handler code runs); the process is
    // single-threaded at this point, so nothing races with the change.
    unsafe {
        libc::signal(libc::SIGINT, action);
    }
}

#[allow(unsafe_code)]
fn map_file(path: &str) {
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).expect("open");
    let len = file.metadata().expect("stat").len().max(1) as usize;
    if file.metadata().expect("stat").len() == 0 {
        file.set_len(len as u64).expect("set_len");
    }
    use std::os::fd::AsRawFd as _;
    // SAFETY: a fresh shared mapping of a file we opened, at an address the kernel picks;
    // it is never unmapped and never accessed, so no Rust reference aliases it.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED, "mmap failed");
    drop(file);
}

fn stubborn_names(args: &[String]) -> Vec<String> {
    args.windows(2).filter(|w| w[0] == "--stubborn").map(|w| w[1].clone()).collect()
}

/// One tree node: marker, children, `ready`, wait.
fn node(dir: &str, tree: &str, depth: u32, breadth: u32, name: &str, rest: &[String]) -> ! {
    set_sigint(stubborn_names(rest).iter().any(|n| n == name));
    let uuid = if name == "root" { tree.to_owned() } else { format!("{tree}-{name}") };
    let parent_pid = if name == "root" { 0 } else { std::os::unix::process::parent_id() };
    let sock = PathBuf::from(dir).join(format!("{name}@{}.sock", std::process::id()));
    plough_fork_prims::marker::ensure_private_dir(&PathBuf::from(dir)).expect("runtime dir");
    // Listens like an actor; the file stays behind when we are killed.
    let listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
    std::mem::forget(listener);
    let info = MarkerInfo {
        name: name.to_owned(),
        uuid,
        tree: tree.to_owned(),
        parent_pid,
        addr: format!("uds://{}", sock.display()),
        method: "fixture".into(),
        ..Default::default()
    };
    let marker = ActorMarker::create(&PathBuf::from(dir), info).expect("marker");
    std::mem::forget(marker); // Outlives us on purpose: a SIGKILLed actor leaves it too.
    if depth > 0 {
        for i in 0..breadth {
            let child_name = if name == "root" { format!("c{i}") } else { format!("{name}.{i}") };
            let mut child = Command::new(std::env::current_exe().expect("current_exe"))
                .args(["node", dir, tree, &(depth - 1).to_string(), &breadth.to_string()])
                .arg(&child_name)
                .args(rest)
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn child");
            // Reap our own children so none lingers as a zombie while we live.
            std::thread::spawn(move || child.wait());
        }
    }
    ready(name);
    wait_forever()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let num = |i: usize| arg(i).parse::<u32>().expect("number argument");
    match arg(0).as_str() {
        "tree" => {
            let tree = format!("fixture-{}-{}", std::process::id(), rand_suffix());
            node(&arg(1), &tree, num(2), num(3), "root", &args[4.min(args.len())..])
        }
        "node" => node(&arg(1), &arg(2), num(3), num(4), &arg(5), &args[6.min(args.len())..]),
        "as-uid" => {
            let uid = num(1);
            set_process_name("plough:x");
            rustix::thread::set_thread_gid(rustix::process::Gid::from_raw(uid)).expect("setgid");
            rustix::thread::set_thread_uid(rustix::process::Uid::from_raw(uid)).expect("setuid");
            ready("as-uid");
            wait_forever()
        }
        "named" => {
            set_process_name("plough:x");
            ready("named");
            wait_forever()
        }
        "map" => {
            map_file(&arg(1));
            ready("map");
            wait_forever()
        }
        other => {
            eprintln!("plough-reap-fixture: unknown mode `{other}`");
            std::process::exit(2)
        }
    }
}

fn rand_suffix() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    t.as_nanos() as u64 & 0xffff_ffff
}
