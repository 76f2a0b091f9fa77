//! Nobody else gets in: every connection proves the tree's secret. A process of another
//! uid (65534) is refused, on TCP by the proof and on UDS by the socket's permissions,
//! and is told why; a process of our uid without the secret is refused with "bad proof";
//! a handshake recorded on the way to the root and replayed is refused; a racer that
//! claims a booting child's uuid loses to the real child; and floods of
//! unauthenticated connections — 1,000 that try a wrong proof, 200 that never say a word —
//! neither stop legitimate calls nor spawns, and the root's fds return to their baseline.

use futures::{SinkExt, StreamExt};
use plough::Address;
use plough::ipc_wire::handshake::{self, Credentials, HandshakeConfig, HandshakeError};
use plough::ipc_wire::msg::{Aid, ErrorKind, Msg, Uuid};
use plough::ipc_wire::{FrameCodec, FramedConnection, Secret};
use plough_tests::{runtime, user_secret, with_root};
use std::time::{Duration, Instant};

const APP: &str = env!("CARGO_BIN_EXE_plough_app");
const LIMIT: Duration = Duration::from_secs(90);
const STRANGER_ENV: &str = "PLOUGH_TEST_STRANGER_ADDR";
const NOBODY: u32 = 65534;

fn stranger(name: &str) -> Credentials {
    Credentials {
        aid: Aid { name: name.to_owned(), uuid: Uuid::new_v4(), pid: std::process::id() },
        secret: Secret::generate().expect("a random secret"),
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").count()
}

/// Waits (bounded) until this process's fd count is back to `baseline` (a little slack for
/// the runtime's own churn).
async fn fds_settle(baseline: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = open_fds();
        if now <= baseline + 4 {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {now} fds open, baseline {baseline}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Not a test of its own: the body of the helper process that
/// `another_uid_is_refused_and_told_why` re-executes this binary as. It drops to
/// `nobody`, tries to handshake with the actor named in the environment (it has no secret
/// of ours, so with a random one), and prints the outcome on one line.
#[test]
fn helper_stranger() {
    let Some(addr) = std::env::var_os(STRANGER_ENV) else { return };
    use rustix::process::{Gid, Uid};
    rustix::thread::set_thread_groups(&[]).expect("setgroups");
    rustix::thread::set_thread_gid(Gid::from_raw(NOBODY)).expect("setgid");
    rustix::thread::set_thread_uid(Uid::from_raw(NOBODY)).expect("setuid");
    let addr: Address = addr.to_str().expect("utf-8").parse().expect("an address");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
    let line = rt.block_on(async {
        let config = HandshakeConfig::default().with_deadline(Duration::from_secs(10));
        match handshake::connect(&addr, &stranger("stranger"), &config).await {
            Ok(_) => "ADMITTED".to_owned(),
            Err(e) => format!("REFUSED {}", error_chain(&e)),
        }
    });
    println!("{line}");
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Runs [`helper_stranger`] against `addr`; its one line of output.
fn run_stranger(addr: &Address) -> String {
    let mut child = std::process::Command::new(std::env::current_exe().expect("this binary"))
        .args(["--exact", "helper_stranger", "--nocapture", "--test-threads=1", "--quiet"])
        .env(STRANGER_ENV, addr.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the stranger");
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(30));
        if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    });
    let mut out = String::new();
    use std::io::Read;
    child.stdout.take().expect("stdout").read_to_string(&mut out).expect("read");
    let status = child.wait().expect("wait");
    drop(watchdog);
    assert!(status.success(), "the stranger failed: {status}: {out}");
    out.lines()
        .find(|l| l.starts_with("REFUSED") || l.starts_with("ADMITTED"))
        .unwrap_or("")
        .to_owned()
}

#[test]
fn another_uid_is_refused_and_told_why() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to run a helper as uid {NOBODY}");
        return;
    }
    with_root(runtime(APP), LIMIT, |root| async move {
        let addr = root.addr().clone();
        let line = tokio::task::spawn_blocking(move || run_stranger(&addr)).await.unwrap();
        println!("uid {NOBODY} at {}: {line}", root.addr());
        match root.addr() {
            // Over TCP it reaches the handshake and fails the proof.
            Address::Tcp(_) => assert!(
                line.starts_with("REFUSED refused by the peer: bad proof"),
                "stranger over tcp: {line}"
            ),
            // Over UDS the 0700 runtime directory keeps it from connecting at all.
            Address::Uds(_) => assert!(
                line.starts_with("REFUSED failed to connect to")
                    && line.contains("ermission denied"),
                "stranger over uds: {line}"
            ),
            other => panic!("the test matrix has no {other} transport"),
        }
        // The tree is untouched: the root still answers its own calls.
        let me = root.find_actor("root").await?.expect("the root finds itself");
        assert_eq!(me.run::<_, u32>("pid", ()).await?, std::process::id());
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_peer_of_our_uid_without_the_secret_is_refused_with_bad_proof() {
    with_root(runtime(APP), LIMIT, |root| async move {
        let config = HandshakeConfig::default().with_deadline(Duration::from_secs(10));
        let err = handshake::connect(root.addr(), &stranger("no-secret"), &config)
            .await
            .expect_err("a peer without the secret must not get in");
        match &err {
            HandshakeError::Refused { reason } => {
                assert!(reason.starts_with("bad proof"), "{reason}");
                println!("refused: {reason}");
            }
            other => panic!("expected a refusal, got {other}"),
        }
        // Raw: hello, a proof of zeros; the answer is one refusal frame, then EOF — no
        // call is ever read.
        let conn = plough::ipc_wire::connect(root.addr()).await.expect("connect");
        let mut framed = FramedConnection::new(conn, FrameCodec::default());
        let me = stranger("raw");
        framed
            .send(Msg::Hello(Box::new(plough::ipc_wire::Hello {
                aid: me.aid.clone(),
                nonce: vec![1; 32].into(),
                build: Default::default(),
                batches: false,
                reads_shm: false,
            })))
            .await
            .unwrap();
        framed.send(Msg::Proof(vec![0; 32].into())).await.unwrap();
        let mut kinds = Vec::new();
        while let Some(Ok(frame)) = framed.next().await {
            let msg = frame.decode().expect("decodes");
            if let Msg::Error(e) = &msg {
                assert_eq!(e.kind, ErrorKind::Refused);
                assert!(e.message.starts_with("bad proof"), "{}", e.message);
            }
            kinds.push(msg.kind().as_str());
        }
        assert_eq!(kinds, ["hello", "error"]);
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_racer_claiming_a_booting_childs_uuid_loses_to_the_real_child() {
    with_root(runtime(APP), LIMIT, |root| async move {
        let parent = root.addr().clone();
        let stop = tokio_util::sync::CancellationToken::new();
        // The racer: whoever's uuid shows up in a marker, it claims at once, with the
        // user's secret (a process of our uid that can read the runtime directory).
        let racer = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let dir = plough_fork_prims::marker::default_runtime_dir();
                let mut seen = std::collections::HashSet::new();
                let (mut refused, mut admitted) = (0, 0);
                let config = HandshakeConfig::default().with_deadline(Duration::from_secs(10));
                while !stop.is_cancelled() {
                    for (_, m) in plough_fork_prims::marker::read_markers(&dir) {
                        if m.parent_pid != std::process::id() || !seen.insert(m.uuid.clone()) {
                            continue;
                        }
                        let Ok(uuid) = m.uuid.parse::<Uuid>() else { continue };
                        let me = Credentials {
                            aid: Aid { name: m.name.clone(), uuid, pid: std::process::id() },
                            secret: user_secret(),
                        };
                        match handshake::connect(&parent, &me, &config).await {
                            Err(HandshakeError::Refused { reason }) => {
                                assert!(reason.starts_with("bad proof"), "{reason}");
                                refused += 1;
                            }
                            // Too late for the child's place: an ordinary peer of ours.
                            Ok(_) => admitted += 1,
                            Err(e) => panic!("racer: {e}"),
                        }
                    }
                    tokio::task::yield_now().await;
                }
                (refused, admitted)
            })
        };
        let out = root
            .nursery(|n| async move {
                for i in 0..10 {
                    let p = n.start_actor(&format!("raced{i}")).await?;
                    // The connection the parent took for the child is the child's: it
                    // answers, with the pid it registered under.
                    let pid: u32 = p.run("pid", ()).await?;
                    assert_eq!(pid, p.aid().pid, "raced{i}");
                }
                n.cancel().await;
                Ok(())
            })
            .await;
        stop.cancel();
        let (refused, admitted) = racer.await.unwrap();
        println!("racer: {refused} refused while the child was pending, {admitted} admitted after");
        out
    })
    .unwrap();
}

/// Raises this process's soft fd limit to its hard one (the flood tests hold both ends of
/// a thousand connections in one process).
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    l.current = l.maximum;
    let _ = setrlimit(Resource::Nofile, l);
}

#[test]
fn a_thousand_unauthenticated_connections_neither_stop_calls_nor_spawns() {
    raise_fd_limit();
    with_root(runtime(APP), LIMIT, |root| async move {
        let addr = root.addr().clone();
        root.nursery(|n| async move {
            let worker = n.start_actor("worker").await?;
            let baseline = open_fds();
            // 1,000 at once: each says hello and offers a bad proof.
            let mut flood = tokio::task::JoinSet::new();
            for i in 0..1000 {
                let addr = addr.clone();
                flood.spawn(async move {
                    let config = HandshakeConfig::default().with_deadline(Duration::from_secs(30));
                    handshake::connect(&addr, &stranger(&format!("flood{i}")), &config).await
                });
            }
            // Meanwhile: calls on the open connection, and 10 spawns that answer (in a
            // nursery of their own, gone before the fds are counted again).
            let started = Instant::now();
            let w = worker.clone();
            n.actor()
                .nursery(|inner| async move {
                    for i in 0..10 {
                        assert_eq!(w.run::<_, u32>("pid", ()).await?, w.aid().pid);
                        let p = inner.start_actor(&format!("during{i}")).await?;
                        assert_eq!(p.run::<_, u32>("pid", ()).await?, p.aid().pid);
                    }
                    inner.cancel().await;
                    Ok(())
                })
                .await?;
            let during = started.elapsed();
            let (mut refused, mut other) = (0, Vec::new());
            while let Some(r) = flood.join_next().await {
                match r.unwrap() {
                    Err(HandshakeError::Refused { .. }) => refused += 1,
                    Ok(_) => panic!("a stranger got in"),
                    Err(e) => other.push(e.to_string()),
                }
            }
            println!(
                "flood: {refused} refused (bad proof or too many waiting), {} failed otherwise; \
                 10 spawns + calls took {during:?}",
                other.len()
            );
            // Every stranger was turned away, nearly all of them told why.
            assert!(
                refused >= 900,
                "{refused} refusals; others: {:?}",
                &other[..other.len().min(5)]
            );
            // Our fds come back to what they were with the worker alone.
            fds_settle(baseline, "after the flood").await;
            n.cancel().await;
            Ok(())
        })
        .await
    })
    .unwrap();
}

#[test]
fn two_hundred_silent_connections_do_not_stall_spawns() {
    raise_fd_limit();
    // The silent connections never time out during the test: spawns that had to wait for
    // them would hang until the test's limit.
    let rt = runtime(APP).configure(|c| c.budgets.handshake = Duration::from_secs(600));
    with_root(rt, LIMIT, |root| async move {
        let addr = root.addr().clone();
        let baseline = open_fds();
        let mut silent = Vec::new();
        for _ in 0..200 {
            silent.push(plough::ipc_wire::connect(&addr).await.expect("connect"));
        }
        let started = Instant::now();
        root.nursery(|n| async move {
            for i in 0..10 {
                let p = n.start_actor(&format!("quiet{i}")).await?;
                assert_eq!(p.run::<_, u32>("pid", ()).await?, p.aid().pid);
            }
            n.cancel().await;
            Ok(())
        })
        .await?;
        println!("10 spawns beside 200 silent connections: {:?}", started.elapsed());
        drop(silent);
        fds_settle(baseline, "after the silent connections closed").await;
        Ok(())
    })
    .unwrap();
}

/// Forwards bytes both ways between `a` and `b` until both directions end; returns what
/// `a` sent.
async fn tap(a: tokio::net::UnixStream, b: plough::ipc_wire::Connection) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let up = async {
        let (mut recorded, mut buf) = (Vec::new(), [0u8; 4096]);
        loop {
            let n = ar.read(&mut buf).await.unwrap_or(0);
            if n == 0 || bw.write_all(&buf[..n]).await.is_err() {
                break;
            }
            recorded.extend_from_slice(&buf[..n]);
        }
        let _ = bw.shutdown().await;
        recorded
    };
    let down = async {
        let _ = tokio::io::copy(&mut br, &mut aw).await;
        let _ = aw.shutdown().await;
    };
    tokio::join!(up, down).0
}

#[test]
fn a_recorded_handshake_replayed_to_the_root_is_refused() {
    with_root(runtime(APP), LIMIT, |root| async move {
        // An eavesdropper between a legitimate peer of ours and the root records the
        // peer's side of the handshake.
        let (client_end, tap_end) = tokio::net::UnixStream::pair().expect("socketpair");
        let upstream = plough::ipc_wire::connect(root.addr()).await.expect("connect");
        let recording = tokio::spawn(tap(tap_end, upstream));
        let me = Credentials {
            aid: Aid { name: "legit".to_owned(), uuid: Uuid::new_v4(), pid: std::process::id() },
            secret: user_secret(),
        };
        let conn = plough::ipc_wire::Connection::from_unix(client_end).expect("a socketpair end");
        let config = HandshakeConfig::default().with_deadline(Duration::from_secs(10));
        match (handshake::initiate(conn, &me, &config).await, root.addr()) {
            // Over UDS the tap is invisible: the legitimate peer gets in through it.
            (Ok(est), Address::Uds(_)) => drop(est),
            // Over TCP the proof names the connection's endpoints, which differ on the two
            // sides of a relay: even the legitimate peer is refused through it.
            (Err(HandshakeError::Refused { reason }), Address::Tcp(_)) => {
                assert!(reason.starts_with("bad proof"), "{reason}")
            }
            (other, addr) => panic!("through a tap to {addr}: {other:?}"),
        }
        let recorded = recording.await.unwrap();
        assert!(!recorded.is_empty());
        // Its bytes, replayed verbatim on the eavesdropper's own connection: the root's
        // fresh nonce makes the recorded proof worthless.
        let mut replay = plough::ipc_wire::connect(root.addr()).await.expect("connect");
        tokio::io::AsyncWriteExt::write_all(&mut replay, &recorded).await.unwrap();
        let mut framed = FramedConnection::new(replay, FrameCodec::default());
        let mut got = Vec::new();
        while let Some(Ok(frame)) = framed.next().await {
            got.push(frame.decode().expect("decodes"));
        }
        let kinds: Vec<_> = got.iter().map(|m| m.kind().as_str()).collect();
        assert_eq!(kinds, ["hello", "error"], "{got:?}");
        let Msg::Error(e) = &got[1] else { unreachable!() };
        assert_eq!(e.kind, ErrorKind::Refused);
        assert!(e.message.starts_with("bad proof"), "{}", e.message);
        Ok(())
    })
    .unwrap();
}
