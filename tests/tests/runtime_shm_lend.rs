//! Large payloads through shared memory with no user code (`Budgets::shm_threshold`): a
//! stream item, a call's arguments and its result at or above the threshold travel as a
//! sealed memfd lent by the sender and mapped zero-copy by the receiver — even past the
//! frame cap, which only the copied path is held to. Bad references from a raw peer
//! (after a real handshake) fail their own call with a typed error, map nothing, and the
//! connection serves on. A SIGKILLed lender leaves nothing once its mappings drop.

use futures::{SinkExt, StreamExt};
use plough::ipc_wire::handshake::{self, Credentials, FramedConnection, HandshakeConfig};
use plough::ipc_wire::msg::{Aid, CallKind, ErrorKind, Msg, Start, Uuid};
use plough::ipc_wire::{Payload, ShmRef};
use plough::shm::ShmBufMut;
use plough::{ActorError, Address};
use plough_tests::{in_nursery, runtime, with_root};
use rustix::fd::{AsRawFd, OwnedFd};
use rustix::fs::{MemfdFlags, Mode, SealFlags};
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const APP: &str = env!("CARGO_BIN_EXE_plough_app");
const LIMIT: Duration = Duration::from_secs(60);
const MIB: usize = 1 << 20;

/// This process's plough-shm mappings (`/proc/self/maps` lines).
fn my_segments() -> Vec<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
    maps.lines().filter(|l| l.contains("/memfd:plough-shm.")).map(str::to_owned).collect()
}

/// Whether `addr` lies in one of this process's plough-shm mappings.
fn in_a_segment(addr: usize) -> bool {
    my_segments().iter().any(|l| {
        let (a, b) = l.split_whitespace().next().and_then(|r| r.split_once('-')).expect("a-b");
        let hex = |s| usize::from_str_radix(s, 16).expect("hex");
        (hex(a)..hex(b)).contains(&addr)
    })
}

#[test]
fn large_stream_items_arguments_and_results_go_through_shared_memory_zero_copy() {
    in_nursery(runtime(APP), LIMIT, |n| async move {
        let p = n.start_actor("lender").await?;
        let before = my_segments().len();
        // Three 2 MiB stream items, child -> root: each arrives as its own mapping.
        let (ctx, ()) = p.open_context::<_, ()>("ctx_bytes_source", (3u64, 2 * MIB, true)).await?;
        let s = ctx.open_stream().await?;
        let mut got = Vec::new();
        while let Some(item) = s.recv_payload().await? {
            assert!(in_a_segment(item.as_ptr() as usize), "item {} is the mapping", got.len());
            got.push(item);
        }
        assert_eq!(ctx.result::<u64>().await?.returned(), Some(3));
        for (i, item) in got.iter().enumerate() {
            assert_eq!(item.len(), 2 * MIB);
            assert_eq!(item[..8], (i as u64).to_le_bytes());
            assert!(item[8..].iter().all(|&b| b == 0x5a));
        }
        assert_eq!(my_segments().len(), before + 3, "{:?}", my_segments());
        drop(got);
        assert_eq!(my_segments().len(), before, "the pages go with the last Bytes");

        // Below the threshold: by copy.
        let (ctx, ()) =
            p.open_context::<_, ()>("ctx_bytes_source", (2u64, 4096usize, true)).await?;
        let s = ctx.open_stream().await?;
        while let Some(item) = s.recv_payload().await? {
            assert!(!in_a_segment(item.as_ptr() as usize), "a small item is copied");
        }
        ctx.result::<u64>().await?;

        // An argument of 65 MiB: over the 64 MiB frame cap, so it can only have come
        // through shared memory; and a large result.
        const BIG: usize = 65 * MIB;
        let big = bytes::Bytes::from(vec![1u8; BIG]);
        let t = std::time::Instant::now();
        assert_eq!(p.run::<_, (u64, u64)>("lend_sum", big).await?, (BIG as u64, BIG as u64));
        let back: bytes::Bytes = p.run("lend_bytes", (3 * MIB, 2u8)).await?;
        assert!(back == vec![2u8; 3 * MIB], "the result's bytes");
        eprintln!("65 MiB there, 3 MiB back: {:?}", t.elapsed());
        // The child holds nothing: what it received is dropped, what it lent came back.
        assert_eq!(p.run::<_, usize>("shm_maps", ()).await?, 0);
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_sigkilled_lender_leaves_nothing_once_the_receivers_mapping_drops() {
    let before = my_segments().len();
    let held: Arc<Mutex<Option<(u32, Payload)>>> = Arc::default();
    let out = held.clone();
    let result = in_nursery(runtime(APP), LIMIT, |n| async move {
        let p = n.start_actor("doomed-lender").await?;
        let pid: u32 = p.run("pid", ()).await?;
        let (ctx, ()) = p.open_context::<_, ()>("ctx_bytes_source", (0u64, 2 * MIB, true)).await?;
        let s = ctx.open_stream().await?;
        let item = s.recv_payload().await?.expect("an item");
        assert!(in_a_segment(item.as_ptr() as usize));
        *out.lock().unwrap() = Some((pid, item));
        let target = rustix::process::Pid::from_raw(pid as i32).expect("a pid");
        rustix::process::kill_process(target, rustix::process::Signal::KILL).expect("SIGKILL");
        Ok(())
    });
    eprintln!("nursery: {result:?}");
    let (pid, item) = held.lock().unwrap().take().expect("the body ran");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "the lender is gone");
    assert!(item[8..].iter().all(|&b| b == 0x5a), "the mapping outlives its lender");
    drop(item);
    assert_eq!(my_segments().len(), before, "{:?}", my_segments());
}

/// A handshaken raw connection to the actor at `addr`, speaking as `me`, and who the actor
/// is (its own calls name no caller: the reader knows it is the connection's peer).
async fn dial(addr: &Address, me: &Aid) -> (FramedConnection, std::sync::Arc<Aid>) {
    let creds = Credentials { aid: me.clone(), secret: plough_tests::user_secret() };
    let config = HandshakeConfig::default().with_deadline(LIMIT);
    let est = handshake::connect(addr, &creds, &config).await.expect("handshake");
    (est.framed, est.peer.into())
}

/// A `Start` of `function` whose arguments are lent as `r`.
fn lent_start(cid: u64, function: &str, r: ShmRef, caller: &Aid) -> Msg {
    Msg::Start(Box::new(Start {
        cid,
        function: function.into(),
        args: Payload::lent(r),
        caller: caller.clone().into(),
        kind: CallKind::Function,
        trace: None,
    }))
}

/// A reference to fd `fd` of this process, claiming `len` bytes.
fn ref_to(fd: &impl AsRawFd, len: u64) -> ShmRef {
    let pid = std::process::id();
    let ino = std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("fd").ino();
    let start_time = plough::fork_prims::marker::process_start_time(pid).expect("start time");
    ShmRef { pid, start_time, fd: fd.as_raw_fd(), ino, len }
}

/// A memfd named like ours, of mode 0600, with `seals`.
fn raw_memfd(len: u64, seals: SealFlags) -> OwnedFd {
    let flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
    let fd = rustix::fs::memfd_create("plough-shm.forged", flags).expect("memfd");
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o600)).expect("fchmod");
    rustix::fs::ftruncate(&fd, len).expect("ftruncate");
    if !seals.is_empty() {
        rustix::fs::fcntl_add_seals(&fd, seals).expect("seals");
    }
    fd
}

/// The next message that is not a `plough.shm_opened`; the inodes those named are
/// added to `opened`.
async fn next_answer(
    framed: &mut FramedConnection,
    peer: &std::sync::Arc<Aid>,
    opened: &mut Vec<u64>,
) -> Msg {
    loop {
        let frame = framed.next().await.expect("a frame").expect("a frame");
        match frame.decode_from(peer).expect("msg") {
            Msg::Start(s) if &*s.function == "plough.shm_opened" => {
                opened.extend(s.args.decode::<Vec<u64>>().expect("inodes"));
            }
            other => return other,
        }
    }
}

#[test]
fn bad_references_fail_their_own_call_map_nothing_and_the_connection_serves_on() {
    with_root(runtime(APP), LIMIT, |root| async move {
        let r = root.clone();
        r.nursery(|n| async move {
            let portal = n.start_actor("lend-target").await?;
            let pid: u32 = portal.run("pid", ()).await?;
            let entry = root.query_actor("lend-target").await?.into_iter().next().expect("entry");
            let addr: Address = entry.addr.parse().expect("an address");
            assert_eq!(entry.aid.pid, pid);
            let me =
                Aid { name: "raw-lender".into(), uuid: Uuid([0xb1; 16]), pid: std::process::id() };
            let (mut framed, peer) = dial(&addr, &me).await;

            let file = tempfile::tempfile().expect("a file");
            file.set_len(4096).expect("set_len");
            let unsealed = raw_memfd(4096, SealFlags::empty());
            // The arguments of `lend_sum`, as the payload codec writes them.
            let args = Payload::encode(&bytes::Bytes::from(vec![7u8; 4096])).expect("encodes");
            let good = ShmBufMut::from_slice(&args)
                .and_then(ShmBufMut::freeze)
                .map_err(ActorError::other)?;
            let g = good.handle().segment;
            let good_ref =
                ShmRef { pid: g.pid, start_time: g.start_time, fd: g.fd, ino: g.ino, len: g.len };
            let cases: Vec<(&str, ShmRef, &str)> = vec![
                ("a plain file", ref_to(&file, 4096), "not a plough segment"),
                ("an unsealed memfd", ref_to(&unsealed, 4096), "not sealed"),
                ("a lying length", ShmRef { len: 1 << 20, ..good_ref }, "but the segment holds"),
                // Over a Unix socket the peer's pid is known (`SO_PEERCRED`); over TCP
                // plough-shm's checks find pid 1 is not of our uid (or not its start time).
                (
                    "another process",
                    ShmRef { pid: 1, ..good_ref },
                    "not the peer|belongs to uid|is gone",
                ),
                ("a closed fd", ShmRef { fd: 9999, ..good_ref }, "holds no segment at fd 9999"),
            ];
            // Each refused reference is answered `shm_opened` too (the lender may drop it).
            let mut opened = Vec::new();
            for (i, (what, r, says)) in cases.into_iter().enumerate() {
                let cid = 2 * i as u64 + 1;
                framed.send(lent_start(cid, "lend_sum", r, &me)).await.expect("send");
                match next_answer(&mut framed, &peer, &mut opened).await {
                    Msg::Error(e) => {
                        assert_eq!(
                            (e.cid, e.kind),
                            (Some(cid), ErrorKind::BadMessage),
                            "{what}: {e:?}"
                        );
                        assert!(
                            says.split('|').any(|s| e.message.contains(s)),
                            "{what}: {}",
                            e.message
                        );
                    }
                    other => panic!("{what}: expected a BadMessage error, got {other:?}"),
                }
            }
            // A good reference from this raw peer works (and is answered `shm_opened`),
            // and so does a plain call.
            framed.send(lent_start(101, "lend_sum", good_ref, &me)).await.expect("send");
            match next_answer(&mut framed, &peer, &mut opened).await {
                Msg::Return { cid: 101, payload } => {
                    assert_eq!(payload.decode::<(u64, u64)>().unwrap(), (4096, 7 * 4096));
                }
                other => panic!("unexpected {other:?}"),
            }
            // The receiver says so before it serves the call, on the same ordered queue.
            assert!(opened.contains(&good_ref.ino), "{opened:?}");
            assert!(
                opened.len() >= 5,
                "the refused ones with an inode, and the good one: {opened:?}"
            );
            assert_eq!(portal.run::<_, i64>("add", (40, 2)).await?, 42, "the actor serves on");
            assert_eq!(portal.run::<_, usize>("shm_maps", ()).await?, 0, "no mapping left");
            Ok(())
        })
        .await
    })
    .unwrap();
}
