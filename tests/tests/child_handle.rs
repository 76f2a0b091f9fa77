//! ChildHandle: cancel-safe waits, group kills, no zombies, exit statuses.

use plough_fork_prims::{
    ChildHandle, ExitStatus, ForkOptions, KillTarget, Signal, fork, fork_blocking,
};
use plough_tests::{become_subreaper, pipe, proc_state, raw, read_line, wait_until, write_fd};
use std::time::Duration;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(20);

/// A child that blocks until the write end of `gate` closes, then exits with `code`.
fn gated_child(code: i32) -> (ChildHandle, std::os::fd::OwnedFd) {
    let (r, w) = pipe();
    let rfd = raw(&r);
    let opts = ForkOptions::default().keep_fd(rfd);
    let child = fork_blocking(&opts, move || {
        let mut b = [0u8; 1];
        let _ = rustix::io::read(kept(rfd), &mut b);
        code
    })
    .expect("fork");
    drop(r);
    (child, w)
}

fn kept(fd: i32) -> std::os::fd::BorrowedFd<'static> {
    #[allow(unsafe_code)]
    // SAFETY: used only in forked children on fds kept open for the child's lifetime.
    unsafe {
        std::os::fd::BorrowedFd::borrow_raw(fd)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_is_cancel_safe_and_status_is_cached() {
    timeout(LIMIT, async {
        let (child, gate) = gated_child(3);
        // Start waiting, give up before the child exits: nothing is lost.
        let early = timeout(Duration::from_millis(30), child.wait()).await;
        assert!(early.is_err(), "child exited before its gate opened");
        assert_eq!(child.try_wait().unwrap(), None);
        // Two concurrent waiters, then the gate opens.
        let (a, b) = tokio::join!(child.wait(), async {
            drop(gate);
            child.wait().await
        });
        assert_eq!(a.unwrap(), ExitStatus::Exited(3));
        assert_eq!(b.unwrap(), ExitStatus::Exited(3));
        assert_eq!(child.wait().await.unwrap(), ExitStatus::Exited(3));
        assert_eq!(child.try_wait().unwrap(), Some(ExitStatus::Exited(3)));
        assert_eq!(child.exit_status(), Some(ExitStatus::Exited(3)));
        assert_eq!(proc_state(child.pid()), None, "reaped child still in /proc");
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn signal_and_kill_report_how_the_child_died() {
    timeout(LIMIT, async {
        let (child, _gate) = gated_child(0);
        child.signal(Signal::TERM).unwrap();
        let st = child.wait().await.unwrap();
        assert_eq!(st, ExitStatus::Signaled { signal: libc::SIGTERM, core_dumped: false });
        assert_eq!(st.to_string(), "killed by SIGTERM");
        // Signalling a reaped child is a no-op, never a stray signal to a reused pid.
        child.kill().unwrap();
        child.send(KillTarget::Process, Signal::INT).unwrap();

        let (child, _gate) = gated_child(0);
        child.kill().unwrap();
        assert_eq!(child.wait().await.unwrap().to_string(), "killed by SIGKILL");
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_crashing_child_reports_its_core_dump_or_signal() {
    timeout(LIMIT, async {
        let child = fork(&ForkOptions::default(), || {
            // SIGABRT's default action dumps core (when the core limit allows).
            std::process::abort()
        })
        .await
        .unwrap();
        let st = child.wait().await.unwrap();
        assert_eq!(st.signal(), Some(libc::SIGABRT), "{st}");
        assert!(st.to_string().starts_with("killed by SIGABRT"), "{st}");
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_panicking_child_exits_with_the_panic_code() {
    timeout(LIMIT, async {
        let child = fork(&ForkOptions::default(), || panic!("boom in the child")).await.unwrap();
        let st = child.wait().await.unwrap();
        assert_eq!(st.code(), Some(plough_fork_prims::exit_code::PANICKED));
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn kill_group_also_kills_a_grandchild() {
    become_subreaper();
    timeout(LIMIT, async {
        let (r, w) = pipe();
        let wfd = raw(&w);
        let child = fork(&ForkOptions::default().keep_fd(wfd), move || {
            // A grandchild in the child's process group, via the child's own forkserver.
            let opts = ForkOptions::default()
                .keep_fd(wfd)
                .new_process_group(false)
                .parent_death_signal(None)
                .kill_on_drop(false);
            let grandchild = fork_blocking(&opts, move || {
                loop {
                    rustix::event::pause();
                }
            })
            .expect("fork grandchild");
            write_fd(wfd, &format!("{}\n", grandchild.pid()));
            std::mem::forget(grandchild);
            loop {
                rustix::event::pause();
            }
        })
        .await
        .unwrap();
        drop(w);
        let grandchild: u32 = read_line(&r).parse().expect("grandchild pid");
        assert_eq!(
            rustix::process::getpgid(rustix::process::Pid::from_raw(grandchild as i32))
                .unwrap()
                .as_raw_nonzero()
                .get() as u32,
            child.pid(),
            "grandchild is not in the child's group"
        );
        child.kill_group(Signal::KILL).unwrap();
        assert_eq!(child.wait().await.unwrap().signal(), Some(libc::SIGKILL));
        // The grandchild was reparented to us (subreaper): adopt it and reap it.
        wait_until(Duration::from_secs(10), "grandchild reparented to the test", || {
            plough_tests::proc_ppid(grandchild) == Some(std::process::id())
        });
        let gc = ChildHandle::adopt(grandchild).unwrap();
        assert_eq!(gc.wait().await.unwrap().signal(), Some(libc::SIGKILL));
    })
    .await
    .expect("test timed out");
}

#[test]
fn kill_group_without_a_group_is_a_clear_error() {
    let opts = ForkOptions::default().new_process_group(false);
    let child = fork_blocking(&opts, || 0).unwrap();
    let err = child.kill_group(Signal::TERM).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("does not lead a process group"), "{err}");
    assert!(child.wait_blocking().unwrap().success());
}

#[test]
fn dropping_an_unwaited_running_child_leaves_no_zombie() {
    // kill_on_drop (the default): killed and reaped.
    let (child, _gate) = gated_child(0);
    let pid = child.pid();
    assert!(matches!(proc_state(pid), Some('S' | 'R')));
    drop(child);
    wait_until(Duration::from_secs(10), "dropped child reaped", || proc_state(pid).is_none());

    // Without kill_on_drop: it lives on until it exits by itself, then the reaper reaps it.
    let (child, gate) = gated_child(0);
    let pid = child.pid();
    child.set_kill_on_drop(false);
    drop(child);
    assert!(matches!(proc_state(pid), Some('S' | 'R')), "child was killed on drop");
    drop(gate);
    wait_until(Duration::from_secs(10), "exited child reaped by the reaper", || {
        proc_state(pid).is_none()
    });
    wait_until(Duration::from_secs(10), "reaper queue drained", || {
        plough_fork_prims::pending_reaps() == 0
    });

    // Exited but unwaited: reaped in Drop itself.
    let child = fork_blocking(&ForkOptions::default(), || 0).unwrap();
    let pid = child.pid();
    wait_until(Duration::from_secs(10), "child became a zombie", || proc_state(pid) == Some('Z'));
    drop(child);
    assert_eq!(proc_state(pid), None);
}

#[tokio::test]
async fn fallback_without_pidfd_waits_and_signals() {
    timeout(LIMIT, async {
        let (r, w) = pipe();
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.args(["-c", "read x; exit 4"]);
        cmd.stdin(std::process::Stdio::from(r));
        #[allow(clippy::zombie_processes)] // the adopting handle reaps it
        let std_child = cmd.spawn().unwrap();
        let child = ChildHandle::adopt_without_pidfd(std_child.id()).unwrap();
        assert!(child.pidfd().is_none());
        assert!(timeout(Duration::from_millis(30), child.wait()).await.is_err());
        drop(w);
        assert_eq!(child.wait().await.unwrap(), ExitStatus::Exited(4));

        let std_child = std::process::Command::new("/bin/sleep").arg("60").spawn().unwrap();
        let child = ChildHandle::from_std(std_child).unwrap();
        assert!(child.pidfd().is_some());
        child.signal(Signal::INT).unwrap();
        assert_eq!(child.wait().await.unwrap().to_string(), "killed by SIGINT");
    })
    .await
    .expect("test timed out");
}

#[test]
fn adopting_a_process_that_is_not_our_child_fails() {
    let err = ChildHandle::adopt(1).unwrap_err();
    assert!(err.to_string().contains("not an unreaped child"), "{err}");
    let err = ChildHandle::adopt(0).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

/// A child that died without cleaning up leaves its actor marker; dropping its handle
/// clears it — also when the child was already reaped by `wait`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_handle_of_a_reaped_crashed_actor_clears_its_marker() {
    use plough_fork_prims::marker::{ActorMarker, MarkerInfo, default_runtime_dir, markers_dir};
    timeout(LIMIT, async {
        let (r, w) = pipe();
        let wfd = raw(&w);
        let opts = ForkOptions::default().keep_fd(wfd);
        let child = fork(&opts, move || {
            let info =
                MarkerInfo { name: "crasher".into(), uuid: "c-1".into(), ..Default::default() };
            let marker = ActorMarker::create(&default_runtime_dir(), info).expect("marker");
            let _ = rustix::io::write(kept(wfd), b"up\n");
            // Dies without removing it, as a crash or a kill would.
            std::mem::forget(marker);
            9
        })
        .await
        .expect("fork");
        drop(w);
        assert_eq!(read_line(&r), "up");
        let path = markers_dir(&default_runtime_dir()).join(child.pid().to_string());
        let status = child.wait().await.expect("wait");
        assert_eq!(status.code(), Some(9));
        assert!(path.exists(), "the dead child's marker is there until the handle goes");
        drop(child);
        assert!(!path.exists(), "dropping the handle cleared {}", path.display());
    })
    .await
    .expect("bounded");
}
