//! The child's fd table after the prelude holds only the keep-set (plus stdio).

use plough_fork_prims::{ForkOptions, fork_blocking, list_open_fds};
use plough_tests::{pipe, raw, read_to_end, write_fd};
use proptest::prelude::*;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// Forks with `keep` plus a report pipe; the child writes its open fds to the pipe.
fn child_fd_table(keep: &[RawFd]) -> (Vec<RawFd>, RawFd) {
    let (r, w) = pipe();
    let wfd = raw(&w);
    let mut opts = ForkOptions::default().keep_fd(wfd);
    opts.keep_fds.extend_from_slice(keep);
    let child = fork_blocking(&opts, move || {
        let fds = list_open_fds().expect("list fds in child");
        let text: Vec<String> = fds.iter().map(|fd| fd.to_string()).collect();
        write_fd(wfd, &text.join(" "));
        0
    })
    .expect("fork");
    drop(w);
    let report = read_to_end(r);
    assert!(child.wait_blocking().unwrap().success());
    let fds = report.split_whitespace().map(|t| t.parse().unwrap()).collect();
    (fds, wfd)
}

fn stdio() -> Vec<RawFd> {
    (0..3).filter(|fd| plough_fork_prims::validate_keep_set(&[*fd]).is_ok()).collect()
}

#[test]
fn only_the_keep_set_survives_into_the_child() {
    // The parent holds a bit of everything.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let conn = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    let (ua, ub) = std::os::unix::net::UnixStream::pair().unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (pr, pw) = pipe();
    let epoll = rustix::event::epoll::create(rustix::event::epoll::CreateFlags::CLOEXEC).unwrap();
    let file = std::fs::File::open("/proc/self/status").unwrap();
    let dir = tempdir_file();
    // An fd without CLOEXEC (what an inherited listener looks like) is scrubbed too.
    let inherited: OwnedFd = rustix::io::dup(&listener).unwrap();
    rustix::io::fcntl_setfd(&inherited, rustix::io::FdFlags::empty()).unwrap();

    let parent_fds = list_open_fds().unwrap();
    assert!(parent_fds.len() >= 12, "parent should hold many fds: {parent_fds:?}");

    let (child_fds, report) = child_fd_table(&[]);
    let mut expected = stdio();
    expected.push(report);
    expected.sort_unstable();
    assert_eq!(child_fds, expected, "child kept more than stdio + its report fd");

    // Keeping one of them keeps exactly that one.
    let keep = ua.as_raw_fd();
    let (child_fds, report) = child_fd_table(&[keep]);
    let mut expected = stdio();
    expected.extend([report, keep]);
    expected.sort_unstable();
    assert_eq!(child_fds, expected);

    drop((listener, conn, accepted, ua, ub, udp, pr, pw, epoll, file, dir, inherited));
}

fn tempdir_file() -> std::fs::File {
    std::fs::File::open(std::env::temp_dir()).unwrap()
}

#[test]
fn the_scrub_closes_by_range_and_keeps_exactly_the_keep_set() {
    // With close_range the report says how (by ranges) and counts nothing; the table
    // after is the keep-set exactly.
    assert_eq!(scrub_with(&[], 0), "None CloseRange true");
}

/// Makes `syscalls` fail with `errno` in this process from now on (a seccomp filter, as a
/// container runtime installs one). Only for a forked test child: it cannot be undone.
fn forbid(syscalls: &[libc::c_long], errno: i32) {
    use libc::{BPF_ABS, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W, sock_filter};
    let stmt = |code: u32, k: u32| sock_filter { code: code as u16, jt: 0, jf: 0, k };
    let jump = |code: u32, k: u32, jt: u8, jf: u8| sock_filter { code: code as u16, jt, jf, k };
    // seccomp_data: the syscall number is the u32 at offset 0. The test child runs the
    // native ABI only, so the arch word is not checked.
    let mut prog = vec![stmt(BPF_LD | BPF_W | BPF_ABS, 0)];
    for (i, &nr) in syscalls.iter().enumerate() {
        // Equal: jump to the "fail" return after the remaining tests and the "allow".
        let to_fail = (syscalls.len() - i) as u8;
        prog.push(jump(BPF_JMP | BPF_JEQ | BPF_K, nr as u32, to_fail, 0));
    }
    prog.push(stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_ALLOW));
    prog.push(stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_ERRNO | errno as u32));
    let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_mut_ptr() };
    #[allow(unsafe_code)]
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS) takes integers only; it lets an unprivileged
    // process install a filter.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    assert_eq!(rc, 0, "no_new_privs: {}", std::io::Error::last_os_error());
    #[allow(unsafe_code)]
    // SAFETY: a valid filter program that outlives the call (the kernel copies it).
    let rc = unsafe { libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &fprog) };
    assert_eq!(rc, 0, "seccomp: {}", std::io::Error::last_os_error());
}

/// In a child: opens 10 extra fds, keeps 3 of them, makes `forbidden` fail with `errno`
/// (when there are any), scrubs. Reports "<closed> <method> <whether exactly the keep-set is open>", checking
/// each fd below 256 with `fcntl` (listing `/proc/self/fd` may be what is forbidden).
fn scrub_with(forbidden: &[libc::c_long], errno: i32) -> String {
    let (r, w) = pipe();
    let wfd = raw(&w);
    let forbidden = forbidden.to_vec();
    let child = fork_blocking(&ForkOptions::default().keep_fd(wfd), move || {
        let extra: Vec<OwnedFd> =
            (0..10).map(|_| rustix::io::dup(rustix::stdio::stderr()).unwrap()).collect();
        let mut keep: Vec<RawFd> =
            vec![wfd, extra[0].as_raw_fd(), extra[5].as_raw_fd(), extra[9].as_raw_fd(), 0, 1, 2];
        if !forbidden.is_empty() {
            forbid(&forbidden, errno);
        }
        #[allow(unsafe_code)]
        // SAFETY: single-threaded forked child; the only owners of the closed fds are
        // forgotten right after.
        let report = unsafe { plough_fork_prims::close_inherited_fds(&keep) }.unwrap();
        std::mem::forget(extra);
        keep.sort_unstable();
        let open: Vec<RawFd> =
            (0..256).filter(|fd| plough_fork_prims::validate_keep_set(&[*fd]).is_ok()).collect();
        write_fd(wfd, &format!("{:?} {:?} {}", report.closed, report.method, open == keep));
        0
    })
    .unwrap();
    drop(w);
    let out = read_to_end(r);
    assert!(child.wait_blocking().unwrap().success(), "the child failed: {out}");
    out
}

#[test]
fn without_close_range_the_scrub_lists_and_closes_each_fd() {
    // ENOSYS: a kernel before 5.9. EPERM: a seccomp profile older than the syscall (it
    // closed nothing; taking it for success would leave every fd open).
    for errno in [libc::ENOSYS, libc::EPERM] {
        let out = scrub_with(&[libc::SYS_close_range], errno);
        assert_eq!(out, "Some(7) ProcSelfFd true", "close_range failing with errno {errno}");
    }
}

#[test]
fn without_close_range_or_proc_the_scrub_closes_every_fd_below_the_limit() {
    // Every way to open `/proc/self/fd`: rustix may use `open` where the ABI has it.
    #[allow(unused_mut)]
    let mut forbidden = vec![libc::SYS_close_range, libc::SYS_openat, libc::SYS_openat2];
    #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
    forbidden.push(libc::SYS_open);
    let out = scrub_with(&forbidden, libc::ENOSYS);
    assert_eq!(out, "Some(7) RlimitLoop true");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// For any subset of the parent's fds chosen as the keep-set, the child's fd table is
    /// exactly that subset plus stdio and the report fd.
    #[test]
    fn child_fd_table_equals_keep_set(picks in proptest::collection::vec(any::<bool>(), 16)) {
        let owned: Vec<OwnedFd> = (0..16).map(|_| rustix::io::dup(rustix::stdio::stderr()).unwrap()).collect();
        let keep: Vec<RawFd> = owned.iter().zip(&picks).filter(|(_, p)| **p).map(|(fd, _)| fd.as_raw_fd()).collect();
        let (child_fds, report) = child_fd_table(&keep);
        let mut expected = stdio();
        expected.push(report);
        expected.extend(&keep);
        expected.sort_unstable();
        prop_assert_eq!(child_fds, expected);
    }
}
