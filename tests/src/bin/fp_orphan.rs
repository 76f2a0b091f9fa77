//! Helper for the parent-death tests: forks one child through the forkserver, prints the
//! child's pid on stdout, then
//! * `pdeath`: waits to be SIGKILLed (the child, armed with SIGTERM, must die with it);
//! * `gone-before-prelude`: exits at once, while the child is held just before arming its
//!   parent-death signal until it sees it was reparented (it must then leave, not live on).

use plough_fork_prims::{ForkOptions, fork_blocking};
use std::io::Write;
use std::sync::atomic::{AtomicI32, Ordering};

/// This helper's pid, for the child to compare its parent with.
static HELPER: AtomicI32 = AtomicI32::new(0);

fn wait_for_reparent() {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while rustix::process::getppid().map(|p| p.as_raw_nonzero().get())
        == Some(HELPER.load(Ordering::SeqCst))
        && std::time::Instant::now() < deadline
    {
        std::thread::yield_now();
    }
}

fn main() {
    let mode = std::env::args().nth(1).expect("mode: pdeath | gone-before-prelude");
    HELPER.store(std::process::id() as i32, Ordering::SeqCst);
    let mut opts = ForkOptions::default().kill_on_drop(false);
    match mode.as_str() {
        "pdeath" => {}
        "gone-before-prelude" => opts.before_parent_death_signal = Some(wait_for_reparent),
        other => panic!("unknown mode {other}"),
    }
    // The child reports once its prelude ran, so in `pdeath` mode its death signal is
    // armed before the test kills us (in the other mode it waits for our exit first).
    let (ready_r, ready_w) = rustix::pipe::pipe().expect("pipe");
    let wfd = std::os::fd::AsRawFd::as_raw_fd(&ready_w);
    let opts = opts.keep_fd(wfd);
    let child = fork_blocking(&opts, move || {
        plough_tests::write_fd(wfd, "ready\n");
        loop {
            rustix::event::pause();
        }
    })
    .expect("fork");
    drop(ready_w);
    if mode == "pdeath" {
        assert_eq!(plough_tests::read_line(&ready_r), "ready");
    }
    println!("{}", child.pid());
    std::io::stdout().flush().unwrap();
    if mode == "pdeath" {
        loop {
            rustix::event::pause();
        }
    }
    // Exit without reaping or killing the child: it must notice on its own.
    std::mem::forget(child);
}
