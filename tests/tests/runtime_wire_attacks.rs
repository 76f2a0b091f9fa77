//! Raw-socket attacks on a real child actor, from a client that does the handshake and
//! then speaks the wire by hand: a call with an enum value this build does not know, a
//! message variant of a newer schema, a flood of calls far over the per-connection cap,
//! and a frame whose aliasing pointers would make decoding allocate many times its size. Each asserts a typed answer for every
//! call, bounded memory in the child (its `VmHWM`, the peak resident set, from
//! `/proc/<pid>/status`), and that a legitimate call answers meanwhile. A frame that
//! stalls after its first bytes is dropped at the frame read deadline, on an actor and on
//! the registrar, and the actor's fds return to their baseline; peers holding large
//! partial frames past the actor-wide budget of partial-frame bytes are closed at once,
//! and the actor's peak memory grows by what the admitted ones sent only.

use futures::{SinkExt, StreamExt};
use plough::ipc_wire::handshake::{self, Credentials, FramedConnection, HandshakeConfig};
use plough::ipc_wire::msg::{Aid, CallKind, ErrorKind, ErrorMsg, Msg, Start, Uuid};
use plough::ipc_wire::{FrameCodec, Payload};
use plough::{Address, Result};
use plough_tests::{runtime, with_root};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio_util::codec::Encoder;

const APP: &str = env!("CARGO_BIN_EXE_plough_app");
const LIMIT: Duration = Duration::from_secs(60);

/// A `Start` of `function(args)` with call id `cid` (odd: the dialer's), from `caller`.
fn start(cid: u64, function: &str, args: &impl serde::Serialize, caller: &Aid) -> Msg {
    Msg::Start(Box::new(Start {
        cid,
        function: function.into(),
        args: Payload::encode(args).expect("args encode"),
        caller: caller.clone().into(),
        kind: CallKind::Function,
        trace: None,
    }))
}

fn frame_bytes(msg: &Msg) -> Vec<u8> {
    let mut buf = bytes::BytesMut::new();
    FrameCodec::default().encode(msg, &mut buf).expect("encodes");
    buf.to_vec()
}

/// A handshaken raw connection to the actor at `addr`, speaking as `me` with the user's
/// secret: a trusted peer that is broken or hostile all the same.
async fn dial(addr: &Address, me: &Aid) -> FramedConnection {
    let creds = Credentials { aid: me.clone(), secret: plough_tests::user_secret() };
    let config = HandshakeConfig::default().with_deadline(LIMIT);
    handshake::connect(addr, &creds, &config).await.expect("handshake").framed
}

fn attacker(n: u8) -> Aid {
    Aid { name: format!("attacker-{n}"), uuid: Uuid([0xa0 + n; 16]), pid: std::process::id() }
}

/// A `VmRSS`/`VmHWM`-style field of `/proc/<pid>/status`, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status.lines().find(|l| l.starts_with(field)).expect("the field");
    line.split_whitespace().nth(1).expect("a number").parse().expect("KiB")
}

/// The next message, decoded.
async fn next_msg(
    framed: &mut (
             impl futures::Stream<
        Item = std::result::Result<plough::ipc_wire::Frame, plough::ipc_wire::FrameError>,
    > + Unpin
         ),
) -> Msg {
    framed.next().await.expect("a frame, not EOF").expect("a frame").decode().expect("a message")
}

/// Starts actor `name` and returns its portal, pid and address.
async fn target(
    n: &plough::Nursery,
    root: &plough::Actor,
    name: &str,
) -> Result<(plough::Portal, u32, Address)> {
    let portal = n.start_actor(name).await?;
    // An actor is registered by the time it answers.
    let pid: u32 = portal.run("pid", ()).await?;
    let entry = root.query_actor(name).await?.into_iter().next().expect("registered");
    let addr: Address = entry.addr.parse().expect("an address");
    assert_eq!(entry.aid.pid, pid);
    Ok((portal, pid, addr))
}

#[test]
fn a_call_with_an_unknown_enum_value_or_variant_gets_a_typed_error_and_the_connection_serves_on() {
    with_root(runtime(APP), LIMIT, |root| async move {
        let r = root.clone();
        r.nursery(|n| async move {
            let (portal, _pid, addr) = target(&n, &root, "target").await?;
            let me = attacker(1);
            let mut framed = dial(&addr, &me).await;
            // `kind` (the u16 after the cid's word) set to 9: no such CallKind here.
            const CID: u64 = 0x0123_4567_89ab_cdef;
            let mut bytes = frame_bytes(&start(CID, "add", &(1, 2), &me));
            let at = bytes.chunks_exact(8).position(|w| w == CID.to_le_bytes()).unwrap() * 8;
            bytes[at + 8..at + 10].copy_from_slice(&9u16.to_le_bytes());
            framed.get_mut().write_all(&bytes).await.expect("write");
            match next_msg(&mut framed).await {
                Msg::Error(e) => {
                    assert_eq!((e.cid, e.kind), (Some(CID), ErrorKind::BadMessage), "{e:?}");
                    assert_eq!(e.source.name, "target");
                    assert!(e.message.contains("unknown value 9 for `kind`"), "{}", e.message);
                }
                other => panic!("expected a BadMessage error, got {other:?}"),
            }
            // A `Msg` member of a newer schema (discriminant 200, the low 16 bits of the
            // root's data word) that belongs to call 9: answered for that call too.
            let newer = Msg::StartAck(plough::ipc_wire::StartAck { cid: 9, ..Default::default() });
            let mut bytes = frame_bytes(&newer);
            bytes[16..18].copy_from_slice(&200u16.to_le_bytes());
            framed.get_mut().write_all(&bytes).await.expect("write");
            match next_msg(&mut framed).await {
                Msg::Error(e) => {
                    assert_eq!((e.cid, e.kind), (Some(9), ErrorKind::BadMessage), "{e:?}");
                    assert!(e.message.contains("unknown message variant 200"), "{}", e.message);
                }
                other => panic!("expected a BadMessage error, got {other:?}"),
            }
            // The same connection serves the next call.
            framed.send(start(3, "add", &(40, 2), &me)).await.expect("send");
            assert_eq!(
                next_msg(&mut framed).await,
                Msg::Return { cid: 3, payload: Payload::encode(&42i64).unwrap() }
            );
            assert_eq!(portal.run::<_, i64>("add", (1, 1)).await?, 2, "and so does the actor");
            Ok(())
        })
        .await
    })
    .unwrap();
}

#[test]
fn a_call_flood_over_the_cap_is_refused_with_too_many_calls_in_bounded_memory() {
    const FLOOD: u64 = 50_000;
    let cap = plough::Budgets::DEFAULT_MAX_CALLS_IN_FLIGHT as u64;
    let (hwm_before, hwm_after) = with_root(runtime(APP), LIMIT, |root| async move {
        let r = root.clone();
        r.nursery(|n| async move {
            let (portal, pid, addr) = target(&n, &root, "target").await?;
            let me = attacker(2);
            let framed = dial(&addr, &me).await;
            // Warm up the actor (its first call allocates what every call reuses).
            assert_eq!(portal.run::<_, i64>("add", (1, 2)).await?, 3);
            let hwm_before = status_kib(pid, "VmHWM:");
            let (mut sink, mut stream) = framed.split();
            // 50,000 calls that would each hold for a minute, written in batches while
            // the answers are read.
            let writer = tokio::spawn(async move {
                for i in 0..FLOOD {
                    sink.feed(start(2 * i + 1, "sleep", &60_000u64, &me)).await.expect("feed");
                    if i % 256 == 255 {
                        sink.flush().await.expect("flush");
                    }
                }
                sink.flush().await.expect("flush");
                sink
            });
            let mut refused = 0u64;
            while refused < FLOOD - cap {
                match next_msg(&mut stream).await {
                    Msg::Error(e) if e.kind == ErrorKind::TooManyCalls => {
                        assert_eq!(e.cid.map(|c| c % 2), Some(1), "each names its call");
                        refused += 1;
                    }
                    other => panic!("expected only TooManyCalls refusals, got {other:?}"),
                }
            }
            let _sink = writer.await.expect("the flood was written");
            let hwm_after = status_kib(pid, "VmHWM:");
            // A legitimate call on another connection answers while `cap` calls are held.
            assert_eq!(portal.run::<_, i64>("add", (2, 3)).await?, 5);
            drop(stream); // the held calls are cancelled with their connection
            Ok((hwm_before, hwm_after))
        })
        .await
    })
    .unwrap();
    let grown = hwm_after.saturating_sub(hwm_before);
    eprintln!("call flood: VmHWM {hwm_before} KiB -> {hwm_after} KiB (+{grown} KiB)");
    assert!(grown < 32 * 1024, "the flood cost the actor {grown} KiB at its peak");
}

const MARK: u64 = 0x6d61_726b_0000_0000;

fn word(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at * 8..at * 8 + 8].try_into().unwrap())
}

fn find(buf: &[u8], value: u64) -> usize {
    (0..buf.len() / 8).find(|&w| word(buf, w) == value).expect("the marker word")
}

/// An `Error` for call `cid` whose `nested` holds `m` errors, the first with `k` nested
/// leaves; every other of the `m` then has its `nested` pointer rewritten to alias the
/// first's list: `m + k` small errors on the wire, `m × k` for a reader. (As in
/// ipc-wire's `tests/wire/amplification.rs`.)
fn amplifying_frame(cid: u64, m: usize, k: usize) -> Vec<u8> {
    let small = Aid { name: String::new(), uuid: Uuid([1; 16]), pid: 1 };
    let leaf = || ErrorMsg { source: small.clone(), ..Default::default() };
    let mut nested: Vec<ErrorMsg> =
        (0..m).map(|j| ErrorMsg { cid: Some(MARK + j as u64), ..leaf() }).collect();
    nested[0].nested = (0..k).map(|_| leaf()).collect();
    let top = ErrorMsg { cid: Some(cid), source: small.clone(), nested, ..Default::default() };
    let mut buf = frame_bytes(&Msg::Error(Box::new(top)));
    // `nested` is an `Error`'s last pointer, 9 words after its cid's id.
    let first = find(&buf, MARK) + 9;
    let pointer = word(&buf, first);
    let target = first as i64 + 1 + i64::from((pointer as u32 as i32) >> 2);
    for j in 1..m {
        let at = find(&buf, MARK + j as u64) + 9;
        let offset = (target - at as i64 - 1) as i32;
        let aliased = (pointer & !0xffff_ffff) | u64::from(((offset << 2) as u32) | 1);
        buf[at * 8..at * 8 + 8].copy_from_slice(&aliased.to_le_bytes());
    }
    buf
}

#[test]
fn an_amplification_frame_is_refused_for_its_call_in_memory_bounded_by_its_size() {
    let (len, hwm_before, hwm_after) = with_root(runtime(APP), LIMIT, |root| async move {
        let r = root.clone();
        r.nursery(|n| async move {
            let (portal, pid, addr) = target(&n, &root, "target").await?;
            let me = attacker(3);
            let mut framed = dial(&addr, &me).await;
            assert_eq!(portal.run::<_, i64>("add", (1, 2)).await?, 3);
            // About 5 MB on the wire; 160,000 errors (some 60 MB decoded) for a reader.
            let frame = amplifying_frame(5, 4, 40_000);
            let hwm_before = status_kib(pid, "VmHWM:");
            framed.get_mut().write_all(&frame).await.expect("write");
            // And a legitimate call behind it, on the same connection.
            framed.send(start(7, "add", &(2, 2), &me)).await.expect("send");
            // Its answer comes first: the frame's call is refused, the connection serves on.
            let mut refused = None;
            loop {
                match next_msg(&mut framed).await {
                    Msg::Error(e) if e.cid == Some(5) => refused = Some(e),
                    Msg::Return { cid: 7, payload } => {
                        assert_eq!(payload.decode::<i64>().unwrap(), 4);
                        break;
                    }
                    other => panic!("unexpected {:?}", other.kind()),
                }
            }
            let hwm_after = status_kib(pid, "VmHWM:");
            let e = refused.expect("the frame's call is answered before the next call");
            assert_eq!(e.kind, ErrorKind::BadMessage, "{}", e.message);
            assert!(e.message.contains("decode budget"), "{}", e.message);
            assert_eq!(portal.run::<_, i64>("add", (3, 3)).await?, 6);
            Ok((frame.len() as u64, hwm_before, hwm_after))
        })
        .await
    })
    .unwrap();
    let grown = hwm_after.saturating_sub(hwm_before) * 1024;
    eprintln!(
        "amplification frame: {len} bytes; VmHWM {hwm_before} KiB -> {hwm_after} KiB \
         (+{grown} bytes, {:.1}x the frame)",
        grown as f64 / len as f64
    );
    // The frame itself (read buffer) plus at most the decode budget and slack.
    assert!(grown < 6 * len + (8 << 20), "{grown} bytes for a {len}-byte frame");
}

/// Open fds of `pid`.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).expect("the fd dir").count()
}

/// Polls `cond` every 10 ms until it holds, or panics naming `what` after `limit`.
async fn until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + limit;
    while !cond() {
        assert!(tokio::time::Instant::now() < end, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The stalled frame of issue 21: a segment table claiming 1,000 words, then 10 bytes.
fn stalled_frame() -> Vec<u8> {
    let mut head = vec![0u8; 8];
    head[4..8].copy_from_slice(&1000u32.to_le_bytes());
    head.extend_from_slice(&[0xee; 10]);
    head
}

/// Sends the stalled frame on `framed` and returns how long until the peer closed it
/// (EOF, or a reset), timed from before the write: the peer's deadline cannot start
/// before its first byte is written, while a clock read after the write may run late
/// (this thread descheduled while the peer already reads).
async fn stall(mut framed: FramedConnection) -> Duration {
    let sent = std::time::Instant::now();
    framed.get_mut().write_all(&stalled_frame()).await.expect("write");
    match tokio::time::timeout(LIMIT, framed.next()).await.expect("dropped within the limit") {
        None | Some(Err(_)) => sent.elapsed(),
        Some(Ok(f)) => panic!("expected the connection to close, got {:?}", f.decode()),
    }
}

#[test]
fn a_stalled_frame_is_dropped_at_the_frame_read_deadline_by_an_actor_and_by_the_registrar() {
    // The root (the registrar) under a short deadline of its own; the child under the
    // default of `plough_app`'s own runtime, or, forked from this program's forkserver
    // thread, under this runtime's configuration.
    let root_deadline = Duration::from_secs(2);
    let child_deadline = match std::env::var("PLOUGH_SPAWN_METHOD").as_deref() {
        Ok("main_thread_forkserver") => root_deadline,
        _ => plough::Budgets::default().frame_read,
    };
    let rt = runtime(APP).configure(|c| c.budgets.frame_read = root_deadline);
    let (to_actor, to_registrar, slow_took) = with_root(rt, LIMIT, |root| async move {
        let r = root.clone();
        r.nursery(|n| async move {
            let (portal, pid, addr) = target(&n, &root, "target").await?;
            assert_eq!(portal.run::<_, i64>("add", (1, 2)).await?, 3);
            let fds_before = fd_count(pid);
            // The root is the registrar: it serves the registry on its own listener.
            let registrar = root.addr().clone();
            let actor_conn = dial(&addr, &attacker(4)).await;
            let registrar_conn = dial(&registrar, &attacker(5)).await;
            let actor_drop = tokio::spawn(stall(actor_conn));
            let registrar_drop = tokio::spawn(stall(registrar_conn));
            // A slow but moving peer of the registrar: three calls, each frame sent in
            // four pieces 300 ms apart (~1.2 s of its 2 s), ~3.6 s in all: all answered.
            let mut slow = dial(&registrar, &attacker(6)).await;
            let slow_peer = tokio::spawn(async move {
                let began = std::time::Instant::now();
                for i in 0..3i64 {
                    let cid = 2 * i as u64 + 1;
                    let bytes = frame_bytes(&start(cid, "add", &(i, 1), &attacker(6)));
                    for piece in bytes.chunks(bytes.len().div_ceil(4)) {
                        slow.get_mut().write_all(piece).await.expect("a slow write");
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    assert_eq!(
                        next_msg(&mut slow).await,
                        Msg::Return { cid, payload: Payload::encode(&(i + 1)).unwrap() }
                    );
                }
                began.elapsed()
            });
            // While both connections hold a stalled frame, the actor and the registrar
            // serve their other peers.
            assert_eq!(portal.run::<_, i64>("add", (2, 3)).await?, 5);
            assert_eq!(root.query_actor("target").await?.len(), 1);
            let to_registrar = registrar_drop.await.expect("the registrar's drop");
            let slow_took = slow_peer.await.expect("the slow peer served");
            assert!(slow_took > root_deadline, "the slow peer took {slow_took:?} in all");
            assert_eq!(portal.run::<_, i64>("add", (3, 4)).await?, 7, "after the registrar's drop");
            let to_actor = actor_drop.await.expect("the actor's drop");
            until(Duration::from_secs(5), "the actor's fds back at baseline", || {
                fd_count(pid) == fds_before
            })
            .await;
            assert_eq!(portal.run::<_, i64>("add", (4, 5)).await?, 9, "and after its own");
            assert_eq!(root.query_actor("target").await?.len(), 1);
            Ok((to_actor, to_registrar, slow_took))
        })
        .await
    })
    .unwrap();
    eprintln!(
        "stalled frame: dropped by the actor after {to_actor:.2?} (deadline {child_deadline:?}), \
         by the registrar after {to_registrar:.2?} (deadline {root_deadline:?}); \
         a slow peer's 3 calls answered over {slow_took:.2?}"
    );
    let slack = Duration::from_secs(2);
    assert!(to_actor >= child_deadline && to_actor < child_deadline + slack, "{to_actor:?}");
    assert!(
        to_registrar >= root_deadline && to_registrar < root_deadline + slack,
        "{to_registrar:?}"
    );
}

#[test]
fn partial_frame_hogs_past_the_actor_wide_budget_are_closed_and_the_actor_stays_bounded() {
    // Each hog claims a 60 MiB frame (under the 64 MiB cap), sends 24 MiB of it and
    // stalls. The child's default budget (256 MiB) admits 4 such claims: the others close.
    const HOGS: usize = 6;
    const CLAIM_WORDS: u32 = (60 << 20) / 8;
    const SENT: usize = 24 << 20;
    let budget = plough::Budgets::DEFAULT_PARTIAL_FRAMES;
    let claim = 8 + CLAIM_WORDS as usize * 8;
    let admitted = budget / claim;
    assert_eq!(admitted, 4);
    let (rss_before, hwm_before, rss_held, hwm_held, closed) =
        with_root(runtime(APP), LIMIT, |root| async move {
            let r = root.clone();
            r.nursery(|n| async move {
                let (portal, pid, addr) = target(&n, &root, "target").await?;
                assert_eq!(portal.run::<_, i64>("add", (1, 2)).await?, 3);
                let fds_before = fd_count(pid);
                let (rss_before, hwm_before) =
                    (status_kib(pid, "VmRSS:"), status_kib(pid, "VmHWM:"));
                let mut frame = vec![0u8; 8 + SENT];
                frame[4..8].copy_from_slice(&CLAIM_WORDS.to_le_bytes());
                let frame = std::sync::Arc::new(frame);
                let (tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel();
                let (wtx, mut written_rx) = tokio::sync::mpsc::unbounded_channel();
                let mut hogs = Vec::new();
                for i in 0..HOGS {
                    let mut framed = dial(&addr, &attacker(10 + i as u8)).await;
                    let (frame, tx, wtx) = (frame.clone(), tx.clone(), wtx.clone());
                    hogs.push(tokio::spawn(async move {
                        // A refused hog's write fails once the actor has closed it.
                        if framed.get_mut().write_all(&frame).await.is_ok() {
                            let _ = wtx.send(i);
                        }
                        let _ = tokio::time::timeout(LIMIT, framed.next())
                            .await
                            .expect("closed in time");
                        let _ = tx.send(i);
                    }));
                }
                drop(wtx);
                // The hogs over the budget are closed at once (the others only at the
                // frame read deadline, 10 s after their first byte).
                let mut closed = Vec::new();
                for _ in admitted..HOGS {
                    closed.push(closed_rx.recv().await.expect("a hog closed"));
                }
                // The admitted hogs' bytes are all written (the actor read all but what
                // the socket buffers hold).
                let mut written = 0;
                while let Some(i) = written_rx.recv().await {
                    assert!(!closed.contains(&i), "a closed hog's write went through");
                    written += 1;
                    if written == admitted {
                        break;
                    }
                }
                // A legitimate call answers while the admitted hogs hold their frames.
                assert_eq!(portal.run::<_, i64>("add", (2, 3)).await?, 5);
                let (rss_held, hwm_held) = (status_kib(pid, "VmRSS:"), status_kib(pid, "VmHWM:"));
                assert!(
                    closed_rx.try_recv().is_err(),
                    "only the hogs over the budget closed so far"
                );
                // The rest go at the frame read deadline; the actor's fds return to baseline.
                for h in hogs {
                    h.await.expect("a hog task");
                }
                until(Duration::from_secs(5), "the actor's fds back at baseline", || {
                    fd_count(pid) == fds_before
                })
                .await;
                assert_eq!(portal.run::<_, i64>("add", (3, 4)).await?, 7);
                Ok((rss_before, hwm_before, rss_held, hwm_held, closed))
            })
            .await
        })
        .unwrap();
    let sent_kib = (SENT >> 10) as u64;
    eprintln!(
        "partial-frame hogs: {HOGS} x {} MiB claimed, {} MiB sent each; closed over the budget: {closed:?}; \
         VmRSS {rss_before} -> {rss_held} KiB, VmHWM {hwm_before} -> {hwm_held} KiB \
         (unbounded: +{} KiB)",
        claim >> 20,
        SENT >> 20,
        HOGS as u64 * sent_kib
    );
    assert_eq!(closed.len(), HOGS - admitted);
    // At most what the admitted hogs sent, plus slack: never the refused hogs' bytes.
    let grown = hwm_held.saturating_sub(hwm_before);
    assert!(grown < admitted as u64 * sent_kib + 16 * 1024, "grew {grown} KiB");
}
