//! Shared memory between the actors of a tree (`plough::shm`): buffers and rings shared
//! through ordinary calls, a SIGKILLed owner whose segments are gone once the nursery
//! returns, and bad handles that get typed errors while the connection's other calls go
//! on, with no mapping left behind.

use plough::ActorError;
use plough::shm::{Ring, RingHandle, SegmentRef, ShmBuf, ShmBufMut, ShmError, ShmHandle};
use plough_tests::shm_app::square;
use plough_tests::{in_nursery, runtime};
use rustix::fd::{AsRawFd, OwnedFd};
use rustix::fs::{MemfdFlags, Mode, SealFlags};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const APP: &str = env!("CARGO_BIN_EXE_plough_app");
const LIMIT: Duration = Duration::from_secs(60);

fn shm(e: ShmError) -> ActorError {
    ActorError::other(e)
}

/// Every open fd and mapping, in every process we can see, of a segment whose name says
/// `pid` owns it (`plough-shm.<uid>.<pid>.…`).
fn segments_of(pid: u32) -> Vec<String> {
    let tag = format!("plough-shm.{}.{pid}.", rustix::process::geteuid().as_raw());
    let mut found = Vec::new();
    for proc_dir in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let p = proc_dir.path();
        if let Ok(maps) = std::fs::read_to_string(p.join("maps")) {
            found.extend(
                maps.lines().filter(|l| l.contains(&tag)).map(|l| format!("{}: {l}", p.display())),
            );
        }
        for fd in std::fs::read_dir(p.join("fd")).into_iter().flatten().flatten() {
            if let Ok(link) = std::fs::read_link(fd.path())
                && link.to_string_lossy().contains(&tag)
            {
                found.push(format!("{}: {}", fd.path().display(), link.display()));
            }
        }
    }
    found
}

#[test]
fn actors_share_buffers_and_rings_through_calls() {
    in_nursery(runtime(APP), LIMIT, |n| async move {
        let owner = n.start_actor("shm-owner").await?;
        let reader = n.start_actor("shm-reader").await?;
        // A buffer a child owns, read in place by a sibling and by the root.
        let len = 100_000u64;
        let h: ShmHandle = owner.run("shm_make", len).await?;
        let sum = (0..len).map(square).fold(0u64, u64::wrapping_add);
        assert_eq!(reader.run::<_, u64>("shm_sum", h).await?, sum);
        let view = ShmBuf::<u64>::open(&h).map_err(shm)?;
        assert_eq!((view.len(), view[99_999]), (100_000, square(99_999)));
        drop(view);
        // A 1 MiB byte buffer the root owns, read by a child.
        let data: Vec<u8> = (0..1u32 << 20).map(|i| (i % 253) as u8).collect();
        let bytes = ShmBufMut::from_slice(&data).and_then(ShmBufMut::freeze).map_err(shm)?;
        let expected = data.iter().map(|&b| u64::from(b)).sum::<u64>();
        let got: Result<u64, ShmError> = reader.run("shm_try_sum_bytes", bytes.handle()).await?;
        assert_eq!(got, Ok(expected));
        // A ring between two children: one sends 0..N, the other sums what arrives.
        let n_msgs = 100_000u64;
        let rh: RingHandle = owner.run("shm_ring_make", 4096u64).await?;
        let (sent, got) = tokio::join!(
            owner.run::<_, u64>("shm_ring_send_held", n_msgs),
            reader.run::<_, (u64, u64)>("shm_ring_recv", rh)
        );
        assert_eq!(sent?, n_msgs);
        assert_eq!(got?, (n_msgs, n_msgs * (n_msgs - 1) / 2));
        // A ring from the root to a child.
        let ring = Ring::create(1024).map_err(shm)?;
        let rh = ring.handle();
        let mut tx = ring.sender().map_err(shm)?;
        let send = tokio::task::spawn_blocking(move || {
            (0..10_000u64).try_for_each(|i| tx.send(&i.to_le_bytes()))
        });
        assert_eq!(reader.run::<_, (u64, u64)>("shm_ring_recv", rh).await?, (10_000, 49_995_000));
        send.await.expect("the sender task").map_err(shm)?;
        // Nothing mapped in the children but what they own (one buffer each... the
        // owner's buffer; the reader maps nothing once its calls are done).
        assert_eq!(reader.run::<_, usize>("shm_maps", ()).await?, 0);
        assert_eq!(owner.run::<_, usize>("shm_maps", ()).await?, 1, "the owner's held buffer");
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_sigkilled_owners_segments_are_gone_once_the_nursery_returns() {
    let seen: Arc<Mutex<Option<(u32, ShmHandle, RingHandle)>>> = Arc::default();
    let out = seen.clone();
    let result = in_nursery(runtime(APP), LIMIT, |n| async move {
        let owner = n.start_actor("doomed-owner").await?;
        let pid: u32 = owner.run("pid", ()).await?;
        let h: ShmHandle = owner.run("shm_make", 1u64 << 20).await?;
        let rh: RingHandle = owner.run("shm_ring_make", 1u64 << 16).await?;
        assert_eq!(
            segments_of(pid).len(),
            4,
            "two memfds, each held and mapped: {:?}",
            segments_of(pid)
        );
        *out.lock().unwrap() = Some((pid, h, rh));
        let target = rustix::process::Pid::from_raw(pid as i32).expect("a pid");
        rustix::process::kill_process(target, rustix::process::Signal::KILL).expect("SIGKILL");
        Ok(())
    });
    let (pid, h, rh) = seen.lock().unwrap().take().expect("the body ran");
    eprintln!("nursery: {result:?}");
    assert_eq!(segments_of(pid), Vec::<String>::new(), "nothing of the dead owner's is left");
    assert_eq!(ShmBuf::<u64>::open(&h).unwrap_err(), ShmError::OwnerGone { pid });
    assert_eq!(rh.receiver().unwrap_err(), ShmError::OwnerGone { pid });
}

/// A memfd of the root's own, named like ours, with the mode and seals a test chooses.
fn raw_memfd(len: u64, mode: u32, seals: SealFlags) -> OwnedFd {
    let fd = rustix::fs::memfd_create(
        "plough-shm.forged",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .expect("memfd");
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).expect("fchmod");
    rustix::fs::ftruncate(&fd, len).expect("ftruncate");
    if !seals.is_empty() {
        rustix::fs::fcntl_add_seals(&fd, seals).expect("seals");
    }
    fd
}

/// A byte-buffer handle naming an fd of the root.
fn handle_of(fd: &impl AsRawFd, len: u64) -> ShmHandle {
    let pid = std::process::id();
    let ino = std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("fd").ino();
    let start_time = plough::fork_prims::marker::process_start_time(pid).expect("start time");
    ShmHandle {
        segment: SegmentRef { pid, start_time, fd: fd.as_raw_fd(), ino, len },
        elem_size: 1,
    }
}

#[test]
fn bad_handles_get_typed_errors_and_the_connection_goes_on() {
    in_nursery(runtime(APP), LIMIT, |n| async move {
        let p = n.start_actor("shm-victim").await?;
        assert_eq!(p.run::<_, usize>("shm_maps", ()).await?, 0);
        let good = ShmBufMut::from_slice(&[1u8, 2, 3]).and_then(ShmBufMut::freeze).map_err(shm)?;
        let file = tempfile::tempfile().expect("a file");
        file.set_len(4096).expect("set_len");
        let unsealed = raw_memfd(4096, 0o600, SealFlags::empty());
        let loose = raw_memfd(4096, 0o644, SealFlags::SHRINK | SealFlags::WRITE);
        let given = raw_memfd(4096, 0o600, SealFlags::SHRINK | SealFlags::WRITE);
        let mut long = good.handle();
        long.segment.len = 4;
        let ours = rustix::process::geteuid().as_raw();
        let mut cases: Vec<(&str, ShmHandle, ShmError)> = vec![
            ("a plain file", handle_of(&file, 4096), ShmError::NotOurs { found: String::new() }),
            (
                "an unsealed memfd",
                handle_of(&unsealed, 4096),
                ShmError::NotSealed { missing: "F_SEAL_SHRINK|F_SEAL_WRITE".into() },
            ),
            ("mode 0644", handle_of(&loose, 4096), ShmError::WrongMode { found: 0o644 }),
            (
                "beyond the segment",
                long,
                ShmError::LengthBeyondSegment { offset: 0, len: 4, size: 3 },
            ),
        ];
        if rustix::process::geteuid().is_root() {
            rustix::fs::fchown(&given, Some(rustix::process::Uid::from_raw(65534)), None)
                .expect("chown");
            cases.push((
                "another uid",
                handle_of(&given, 4096),
                ShmError::WrongOwner { found: 65534, ours },
            ));
        }
        for (what, h, want) in cases {
            // The bad one and a good one at once, on the same connection.
            let (bad, fine) = tokio::join!(
                p.run::<_, Result<u64, ShmError>>("shm_try_sum_bytes", h),
                p.run::<_, Result<u64, ShmError>>("shm_try_sum_bytes", good.handle())
            );
            match (bad?, want) {
                (Err(ShmError::NotOurs { found }), ShmError::NotOurs { .. }) => {
                    assert!(found.starts_with('/'), "{what}: names the file: {found}")
                }
                (got, want) => assert_eq!(got, Err(want), "{what}"),
            }
            assert_eq!(fine?, Ok(6), "{what}: the good call beside it");
            assert_eq!(p.run::<_, i64>("add", (2, 3)).await?, 5, "{what}: a later call");
            assert_eq!(p.run::<_, usize>("shm_maps", ()).await?, 0, "{what}: no mapping left");
        }
        // The same refusal as the call's own error: its type and message come home.
        let as_u64s = ShmHandle { elem_size: 8, ..handle_of(&unsealed, 4096) };
        let e = p.run::<_, u64>("shm_sum", as_u64s).await.unwrap_err();
        let r = e.as_remote().unwrap_or_else(|| panic!("a remote error: {e}"));
        assert_eq!(r.type_name, "ShmError", "{e}");
        assert!(r.message.contains("not sealed"), "{e}");
        // A ring whose header lies (bad magic; a capacity beyond the segment).
        for (offset, lie, says) in [
            (0u64, b"NOTARING".to_vec(), "bad magic"),
            (16, (1u64 << 20).to_le_bytes().to_vec(), "does not match"),
        ] {
            let ring = Ring::create(1024).map_err(shm)?;
            let rh = ring.handle();
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(format!("/proc/self/fd/{}", rh.segment.fd))
                .expect("the ring's memfd");
            f.write_at(&lie, offset).expect("lie");
            let e = p.run::<_, (u64, u64)>("shm_ring_recv", rh).await.unwrap_err();
            let r = e.as_remote().unwrap_or_else(|| panic!("a remote error: {e}"));
            assert!(r.message.contains("corrupt ring header") && r.message.contains(says), "{e}");
            assert_eq!(
                p.run::<_, usize>("shm_maps", ()).await?,
                0,
                "a refused ring left a mapping"
            );
        }
        assert_eq!(p.run::<_, i64>("add", (40, 2)).await?, 42);
        Ok(())
    })
    .unwrap();
}
