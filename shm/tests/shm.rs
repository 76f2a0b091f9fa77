//! plough-shm in one process and across forked processes: buffers, rings, and every bad
//! handle answered with its typed error and no mapping left behind.

use plough_fork_prims::{ForkOptions, Signal, fork_blocking};
use plough_shm::{HEADER_BYTES, Ring, RingHandle, ShmBuf, ShmBufMut, ShmError, ShmHandle};
use rustix::fd::{AsRawFd, OwnedFd};
use rustix::fs::{MemfdFlags, Mode, SealFlags};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// How many of this process's mappings are of inode `ino`.
fn mappings_of(ino: u64) -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines().filter(|l| l.split_whitespace().nth(4) == Some(&ino.to_string())).count()
}

/// A raw memfd (not made by the crate): name, mode and seals chosen by the test.
fn raw_memfd(name: &str, len: u64, mode: u32, seals: SealFlags) -> OwnedFd {
    let fd =
        rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).unwrap();
    rustix::fs::ftruncate(&fd, len).unwrap();
    if !seals.is_empty() {
        rustix::fs::fcntl_add_seals(&fd, seals).unwrap();
    }
    fd
}

/// A handle naming `fd` of this process.
fn handle_of(fd: &impl AsRawFd, len: u64) -> ShmHandle {
    let pid = std::process::id();
    let ino = std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap().ino();
    let start_time = plough_fork_prims::marker::process_start_time(pid).unwrap();
    let segment = plough_shm::SegmentRef { pid, start_time, fd: fd.as_raw_fd(), ino, len };
    ShmHandle { segment, elem_size: 1 }
}

/// Opens a bad handle: the typed error, and no new mapping of its inode.
fn refused(h: &ShmHandle) -> ShmError {
    let before = mappings_of(h.segment.ino);
    let e = ShmBuf::<u8>::open(h).expect_err("a bad handle is refused");
    assert_eq!(mappings_of(h.segment.ino), before, "a refused handle left a mapping: {e}");
    e
}

#[test]
fn a_frozen_buffer_is_read_in_place_through_its_handle() {
    let mut b = ShmBufMut::<u32>::new(4096).unwrap();
    for (i, x) in b.as_mut_slice().iter_mut().enumerate() {
        *x = i as u32 * 3;
    }
    let b = b.freeze().unwrap();
    assert!(b.is_owner());
    let h: ShmHandle = serde_json::from_str(&serde_json::to_string(&b.handle()).unwrap()).unwrap();
    let view = ShmBuf::<u32>::open(&h).unwrap();
    assert!(!view.is_owner());
    assert_eq!(view.len(), 4096);
    assert_eq!(view[4095], 4095 * 3);
    assert_eq!(view.as_bytes().len(), 4096 * 4);
    // The reader's view is the owner's pages, not a copy.
    assert_eq!(mappings_of(h.segment.ino), 2);
    drop(view);
    assert_eq!(mappings_of(h.segment.ino), 1);
    // The wrong element type.
    match ShmBuf::<u64>::open(&h) {
        Err(ShmError::ElementMismatch { elem_size: 4, asked: 8, .. }) => {}
        other => panic!("expected an element mismatch, got {other:?}"),
    }
    drop(b);
    assert_eq!(mappings_of(h.segment.ino), 0);
}

#[test]
fn a_buffer_cannot_shrink_or_be_written_once_frozen() {
    let b = ShmBufMut::<u8>::from_slice(&[1, 2, 3]).unwrap().freeze().unwrap();
    let path = format!("/proc/self/fd/{}", b.handle().segment.fd);
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    let e = f.set_len(1).expect_err("a sealed segment cannot shrink");
    assert_eq!(e.raw_os_error(), Some(libc_eperm()), "{e}");
    let e = f.write_at(b"x", 0).expect_err("a frozen segment cannot be written");
    assert_eq!(e.raw_os_error(), Some(libc_eperm()), "{e}");
    assert_eq!(&*b, &[1, 2, 3]);
}

fn libc_eperm() -> i32 {
    rustix::io::Errno::PERM.raw_os_error()
}

#[test]
fn bad_handles_get_typed_errors_and_map_nothing() {
    let name = "plough-shm.test";
    // Not ours: a plain file, and a memfd of another name.
    let file = tempfile::tempfile().unwrap();
    file.set_len(4096).unwrap();
    assert!(matches!(refused(&handle_of(&file, 4096)), ShmError::NotOurs { .. }));
    let other = raw_memfd("someone-else", 4096, 0o600, SealFlags::SHRINK | SealFlags::WRITE);
    match refused(&handle_of(&other, 4096)) {
        ShmError::NotOurs { found } => assert!(found.contains("someone-else"), "{found}"),
        e => panic!("expected not-ours, got {e}"),
    }
    // Not a file at all: a socket, an eventfd.
    let (sock, _peer) = UnixStream::pair().unwrap();
    assert!(
        matches!(refused(&handle_of(&sock, 4096)), ShmError::NotOurs { found } if found.starts_with("socket:"))
    );
    let efd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
    assert!(
        matches!(refused(&handle_of(&efd, 4096)), ShmError::NotOurs { found } if found.contains("eventfd"))
    );
    // A memfd of our name that is not sealed, or only half.
    let unsealed = raw_memfd(name, 4096, 0o600, SealFlags::empty());
    match refused(&handle_of(&unsealed, 4096)) {
        ShmError::NotSealed { missing } => assert_eq!(missing, "F_SEAL_SHRINK|F_SEAL_WRITE"),
        e => panic!("expected not-sealed, got {e}"),
    }
    let writable = raw_memfd(name, 4096, 0o600, SealFlags::SHRINK);
    match refused(&handle_of(&writable, 4096)) {
        ShmError::NotSealed { missing } => assert_eq!(missing, "F_SEAL_WRITE"),
        e => panic!("expected not-sealed, got {e}"),
    }
    // The wrong mode.
    let loose = raw_memfd(name, 4096, 0o644, SealFlags::SHRINK | SealFlags::WRITE);
    assert_eq!(refused(&handle_of(&loose, 4096)), ShmError::WrongMode { found: 0o644 });
    // The wrong owner uid (only root can give a file away).
    let given = raw_memfd(name, 4096, 0o600, SealFlags::SHRINK | SealFlags::WRITE);
    if rustix::process::geteuid().is_root() {
        let nobody = rustix::process::Uid::from_raw(65534);
        rustix::fs::fchown(&given, Some(nobody), None).unwrap();
        let ours = rustix::process::geteuid().as_raw();
        assert_eq!(refused(&handle_of(&given, 4096)), ShmError::WrongOwner { found: 65534, ours });
    } else {
        eprintln!("not root: the wrong-uid case needs fchown to another uid; skipped");
    }
    // A length beyond the segment, zero, or beyond any segment.
    let b = ShmBufMut::<u8>::new(4096).unwrap().freeze().unwrap();
    let mut long = b.handle();
    long.segment.len = 4097;
    assert_eq!(refused(&long), ShmError::LengthBeyondSegment { offset: 0, len: 4097, size: 4096 });
    for len in [0, plough_shm::limits::MAX_SEGMENT_BYTES + 1] {
        let mut h = b.handle();
        h.segment.len = len;
        assert!(matches!(refused(&h), ShmError::BadLength { .. }));
    }
    // Another inode at the fd the handle names.
    let mut moved = b.handle();
    moved.segment.ino += 1;
    assert!(matches!(refused(&moved), ShmError::Replaced { .. }));
    // An owner that never was (or a recycled pid: another start time).
    let mut stale = b.handle();
    stale.segment.start_time += 1;
    assert_eq!(refused(&stale), ShmError::OwnerGone { pid: std::process::id() });
    // A process of another user (pid 1 when we are not root).
    if !rustix::process::geteuid().is_root() {
        let mut init = b.handle();
        init.segment.pid = 1;
        assert!(matches!(refused(&init), ShmError::WrongOwner { .. }));
    }
    // A handle whose fd the owner closed.
    let dropped = ShmBufMut::<u8>::new(64).unwrap().freeze().unwrap();
    let h = dropped.handle();
    drop(dropped);
    // The fd number may have been reused meanwhile by another test's file.
    assert!(matches!(
        refused(&h),
        ShmError::SegmentGone { .. } | ShmError::NotOurs { .. } | ShmError::Replaced { .. }
    ));
}

/// Forks a child that runs `body` with one end of a socketpair; returns the child and
/// our end, read line by line.
fn fork_with(
    body: impl FnOnce(UnixStream) -> i32 + Send + 'static,
) -> (plough_fork_prims::ChildHandle, BufReader<UnixStream>) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    ours.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let opts = ForkOptions::default().keep_fd(theirs.as_raw_fd());
    let child = fork_blocking(&opts, move || body(theirs)).unwrap();
    (child, BufReader::new(ours))
}

fn line(r: &mut BufReader<UnixStream>) -> String {
    let mut s = String::new();
    r.read_line(&mut s).unwrap();
    s.trim().to_owned()
}

#[test]
fn another_process_reads_a_buffer_until_its_owner_ends() {
    let (child, mut r) = fork_with(|mut s| {
        let b = ShmBufMut::<u64>::from_slice(&[7, 8, 9]).unwrap().freeze().unwrap();
        writeln!(s, "{}", serde_json::to_string(&b.handle()).unwrap()).unwrap();
        // Hold the buffer until the parent says so.
        let mut done = String::new();
        let _ = BufReader::new(&s).read_line(&mut done);
        0
    });
    let h: ShmHandle = serde_json::from_str(&line(&mut r)).unwrap();
    assert_eq!(h.segment.pid, child.pid());
    let view = ShmBuf::<u64>::open(&h).unwrap();
    assert_eq!(&*view, &[7, 8, 9]);
    writeln!(r.get_mut(), "done").unwrap();
    assert!(child.wait_blocking().unwrap().success());
    // Our mapping stays valid after the owner ended; nobody can open it any more.
    assert_eq!(&*view, &[7, 8, 9]);
    assert_eq!(ShmBuf::<u64>::open(&h).unwrap_err(), ShmError::OwnerGone { pid: child.pid() });
}

#[test]
fn a_ring_carries_messages_in_order_across_wrap_around_then_closes() {
    let ring = Ring::create(256).unwrap();
    let handle: RingHandle = ring.handle();
    let mut tx = ring.sender().unwrap();
    let mut rx = handle.receiver().unwrap();
    assert!(matches!(handle.receiver(), Err(ShmError::AlreadyAttached { .. })));
    let sender = std::thread::spawn(move || {
        for i in 0..10_000u32 {
            let msg = vec![(i % 251) as u8; (i % 100) as usize];
            tx.send(&msg).unwrap();
        }
        // Dropped: closed.
    });
    let mut out = Vec::new();
    for i in 0..10_000u32 {
        let n = rx.recv_timeout(&mut out, Some(Duration::from_secs(10))).unwrap();
        assert_eq!(n, Some((i % 100) as usize));
        assert!(out.iter().all(|&b| b == (i % 251) as u8));
    }
    sender.join().unwrap();
    assert_eq!(rx.recv(&mut out).unwrap(), None, "the end, once drained");
}

#[test]
fn a_ring_refuses_what_cannot_fit_and_reports_a_closed_receiver() {
    assert_eq!(Ring::create(100).unwrap_err(), ShmError::BadCapacity(100));
    let ring = Ring::create(64).unwrap();
    let h = ring.handle();
    let mut tx = ring.sender().unwrap();
    assert!(matches!(tx.try_send(&[0; 61]), Err(ShmError::MessageTooLarge { .. })));
    assert!(tx.try_send(&[0; 60]).unwrap());
    assert!(!tx.try_send(&[0; 1]).unwrap(), "full");
    let e = tx.send_timeout(&[0; 1], Some(Duration::from_millis(20))).unwrap_err();
    assert_eq!(e, ShmError::Timeout { ms: 20 });
    let rx = h.receiver().unwrap();
    drop(rx);
    assert_eq!(tx.send(&[1]).unwrap_err(), ShmError::Closed { role: "receiver".into() });
}

/// Writes `bytes` at `offset` of a ring's segment, as a peer that lies would.
fn poke(h: &RingHandle, offset: u64, bytes: &[u8]) {
    let path = format!("/proc/self/fd/{}", h.segment.fd);
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_at(bytes, offset).unwrap();
}

#[test]
fn a_ring_whose_header_lies_is_a_typed_error() {
    let corrupt = |offset: u64, bytes: &[u8]| {
        let ring = Ring::create(1024).unwrap();
        let h = ring.handle();
        poke(&h, offset, bytes);
        let before = mappings_of(h.segment.ino);
        let e = h.receiver().expect_err("a lying header is refused");
        assert_eq!(mappings_of(h.segment.ino), before, "refused, but mapped: {e}");
        drop(ring);
        e
    };
    let text = |e: ShmError| match e {
        ShmError::CorruptRing(why) => why,
        e => panic!("expected a corrupt ring, got {e}"),
    };
    assert!(text(corrupt(0, b"NOTARING")).contains("bad magic"));
    assert!(text(corrupt(8, &7u32.to_le_bytes())).contains("version 7"));
    assert!(text(corrupt(16, &1000u64.to_le_bytes())).contains("capacity 1000"));
    assert!(text(corrupt(16, &2048u64.to_le_bytes())).contains("does not match"));
    assert!(text(corrupt(64, &5000u64.to_le_bytes())).contains("tail 5000"));
    assert!(text(corrupt(128, &9u64.to_le_bytes())).contains("head 9"));

    // Lies told after attaching: a message longer than what was sent; a tail that runs
    // past the head by more than the capacity; a head that runs backwards.
    let ring = Ring::create(1024).unwrap();
    let h = ring.handle();
    let mut tx = ring.sender().unwrap();
    let mut rx = h.receiver().unwrap();
    tx.send(b"hello").unwrap();
    poke(&h, HEADER_BYTES, &900u32.to_le_bytes());
    let mut out = Vec::new();
    let e = text(rx.try_recv(&mut out).unwrap_err());
    assert!(e.contains("a 900-byte message claimed, 5 bytes sent"), "{e}");
    let ring = Ring::create(1024).unwrap();
    let h = ring.handle();
    let tx = ring.sender().unwrap();
    let mut rx = h.receiver().unwrap();
    poke(&h, 64, &(1u64 << 40).to_le_bytes());
    assert!(text(rx.try_recv(&mut out).unwrap_err()).contains("of a 1024-byte ring"));
    // The sender: fill the ring, let the receiver take one, then move the head back.
    drop((tx, rx));
    let ring = Ring::create(64).unwrap();
    let h = ring.handle();
    let mut tx = ring.sender().unwrap();
    let mut rx = h.receiver().unwrap();
    while tx.try_send(&[1; 8]).unwrap() {}
    rx.try_recv(&mut out).unwrap();
    assert!(tx.try_send(&[1; 8]).unwrap(), "room again");
    rx.try_recv(&mut out).unwrap();
    poke(&h, 128, &0u64.to_le_bytes());
    let e = (0..10).find_map(|_| tx.try_send(&[1; 8]).err()).expect("the lie is seen");
    assert!(text(e).contains("the receiver was at 12"));
}

#[test]
fn a_ring_between_processes_and_a_peer_killed_mid_wait() {
    // The child receives and echoes the count; the parent sends.
    let ring = Ring::create(4096).unwrap();
    let h = ring.handle();
    let (child, mut r) = fork_with(move |mut s| {
        let mut rx = h.receiver().unwrap();
        let mut out = Vec::new();
        let mut n = 0u64;
        while rx.recv(&mut out).unwrap().is_some() {
            n += 1;
        }
        writeln!(s, "got {n}").unwrap();
        0
    });
    let mut tx = ring.sender().unwrap();
    for i in 0..50_000u64 {
        tx.send(&i.to_le_bytes()).unwrap();
    }
    drop(tx);
    assert_eq!(line(&mut r), "got 50000");
    assert!(child.wait_blocking().unwrap().success());

    // A receiver SIGKILLed while the sender waits for room: PeerDied, within the bound.
    let ring = Ring::create(64).unwrap();
    let h = ring.handle();
    let (child, mut r) = fork_with(move |mut s| {
        let _rx = h.receiver().unwrap();
        writeln!(s, "attached").unwrap();
        std::thread::sleep(Duration::from_secs(60));
        0
    });
    assert_eq!(line(&mut r), "attached");
    let mut tx = ring.sender().unwrap();
    while tx.try_send(&[0; 16]).unwrap() {}
    child.signal(Signal::KILL).unwrap();
    let t = std::time::Instant::now();
    let e = tx.send_timeout(&[0; 16], Some(Duration::from_secs(10))).unwrap_err();
    assert_eq!(e, ShmError::PeerDied { role: "receiver".into(), pid: child.pid() });
    assert!(t.elapsed() < Duration::from_secs(2), "noticed in {:?}", t.elapsed());
    child.wait_blocking().unwrap();
}

#[test]
fn a_forked_child_does_not_inherit_a_mapping() {
    let b = ShmBufMut::<u8>::new(1 << 20).unwrap().freeze().unwrap();
    let ino = b.handle().segment.ino;
    assert_eq!(mappings_of(ino), 1);
    let (child, mut r) = fork_with(move |mut s| {
        writeln!(s, "maps {}", mappings_of(ino)).unwrap();
        0
    });
    assert_eq!(line(&mut r), "maps 0");
    assert!(child.wait_blocking().unwrap().success());
}

#[test]
fn a_ring_cannot_shrink_and_an_unsealed_one_is_refused() {
    let ring = Ring::create(1024).unwrap();
    let h = ring.handle();
    let path = format!("/proc/self/fd/{}", h.segment.fd);
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    let e = f.set_len(HEADER_BYTES).expect_err("a ring's segment cannot shrink");
    assert_eq!(e.raw_os_error(), Some(libc_eperm()), "{e}");
    // A forged ring: a valid header in a memfd of our name that could shrink.
    let mut header = vec![0u8; (HEADER_BYTES + 1024) as usize];
    f.read_exact_at(&mut header, 0).unwrap();
    let forged =
        raw_memfd("plough-shm.forged-ring", HEADER_BYTES + 1024, 0o600, SealFlags::empty());
    std::fs::File::from(forged.try_clone().unwrap()).write_all_at(&header, 0).unwrap();
    let rh = RingHandle { segment: handle_of(&forged, HEADER_BYTES + 1024).segment };
    match rh.receiver() {
        Err(ShmError::NotSealed { missing }) => assert_eq!(missing, "F_SEAL_SHRINK|F_SEAL_GROW"),
        other => panic!("expected not-sealed, got {other:?}"),
    }
    assert_eq!(mappings_of(rh.segment.ino), 0);
}

#[test]
fn mapping_a_sparse_buffer_allocates_nothing() {
    // 256 MiB that the owner never wrote: a reader's mapping must not fill it in.
    let b = ShmBufMut::<u8>::new(256 << 20).unwrap().freeze().unwrap();
    let path = format!("/proc/self/fd/{}", b.handle().segment.fd);
    let blocks = || std::fs::metadata(&path).unwrap().blocks();
    assert_eq!(blocks(), 0);
    let view = ShmBuf::<u8>::open(&b.handle()).unwrap();
    assert_eq!(view[12345], 0);
    assert!(blocks() * 512 <= 4096, "{} blocks after reading one byte", blocks());
}
