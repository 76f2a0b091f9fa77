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
    // In a child (the scrub is process-wide): open 10 extra fds, keep 3 of them. With
    // close_range the report says how (by ranges) and counts nothing; the table after is
    // the keep-set exactly.
    let (r, w) = pipe();
    let wfd = raw(&w);
    let child = fork_blocking(&ForkOptions::default().keep_fd(wfd), move || {
        let extra: Vec<OwnedFd> =
            (0..10).map(|_| rustix::io::dup(rustix::stdio::stderr()).unwrap()).collect();
        let mut keep: Vec<RawFd> =
            vec![wfd, extra[0].as_raw_fd(), extra[5].as_raw_fd(), extra[9].as_raw_fd(), 0, 1, 2];
        // SAFETY-relevant: this child owns every fd it is about to close through `extra`,
        // which is forgotten below so nothing closes them twice.
        #[allow(unsafe_code)]
        // SAFETY: single-threaded forked child; the only owners of the closed fds are
        // forgotten right after.
        let report = unsafe { plough_fork_prims::close_inherited_fds(&keep) }.unwrap();
        std::mem::forget(extra);
        keep.sort_unstable();
        let left = list_open_fds().unwrap();
        write_fd(wfd, &format!("{:?} {:?} {}", report.closed, report.method, left == keep));
        0
    })
    .unwrap();
    drop(w);
    let out = read_to_end(r);
    assert!(child.wait_blocking().unwrap().success());
    assert_eq!(out, "None CloseRange true");
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
