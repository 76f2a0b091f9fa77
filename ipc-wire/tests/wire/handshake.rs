//! The handshake: deadline, small pre-handshake limits, bounded pending, isolation, and
//! the proof: a wrong secret, a replayed proof and a reflected one are refused, with the
//! reason told to the refused peer.

use crate::support::{creds, run, yield_msg};
use futures::{SinkExt, StreamExt};
use plough_ipc_wire::{
    AcceptEvent, Acceptor, Address, Credentials, ErrorKind, FrameCodec, FrameError,
    FramedConnection, HandshakeConfig, HandshakeError, Listener, Msg, MsgKind, Refusal, Secret,
    connect, handshake,
};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

async fn uds_acceptor(dir: &std::path::Path, config: HandshakeConfig) -> Acceptor {
    let addr = Address::uds_for_actor(dir, "server", std::process::id()).unwrap();
    Acceptor::new(Listener::bind(&addr).await.unwrap(), creds("server"), config)
}

#[test]
fn bad_peers_are_dropped_while_a_good_peer_completes_its_handshake() {
    run(async {
        let tmp = tempfile::tempdir().unwrap();
        let config = HandshakeConfig::default().with_deadline(Duration::from_millis(800));
        let mut acceptor = uds_acceptor(tmp.path(), config).await;
        let addr = acceptor.local_addr().clone();

        let _silent = connect(&addr).await.unwrap();
        let mut garbage = connect(&addr).await.unwrap();
        garbage.write_all(b"GET / HTTP/1.1\r\nHost: plough\r\n\r\n").await.unwrap();
        let mut oversized = connect(&addr).await.unwrap();
        // One segment of 1 MiB: over the 64 KiB handshake limit.
        oversized.write_all(&[0, 0, 0, 0, 0, 0, 2, 0]).await.unwrap();
        let mut wrong_first = plough_ipc_wire::FramedConnection::new(
            connect(&addr).await.unwrap(),
            plough_ipc_wire::FrameCodec::default(),
        );
        wrong_first.send(yield_msg(1, b"hi")).await.unwrap();

        let client_hello = creds("good");
        let client = handshake::connect(&addr, &client_hello, &config);
        let events = async {
            let mut rejected = Vec::new();
            let mut established = None;
            while rejected.len() < 4 || established.is_none() {
                match acceptor.accept_event().await {
                    AcceptEvent::Established(est) => {
                        assert!(
                            !rejected.iter().any(|e| matches!(e, HandshakeError::TimedOut(_))),
                            "the good peer must not wait for the silent one's deadline"
                        );
                        established = Some(est);
                    }
                    AcceptEvent::Rejected(e) => rejected.push(e),
                }
            }
            (established.unwrap(), rejected)
        };
        let (client, (mut server, rejected)) = tokio::join!(client, events);
        let mut client = client.expect("the good peer completes");
        assert_eq!(server.peer.name, "good");
        assert_eq!(client.peer.name, "server");

        let has = |f: &dyn Fn(&HandshakeError) -> bool| rejected.iter().any(f);
        assert!(has(&|e| matches!(e, HandshakeError::TimedOut(_))), "{rejected:?}");
        assert!(
            has(&|e| matches!(e, HandshakeError::Frame(FrameError::BadSegmentTable { .. }))),
            "{rejected:?}"
        );
        assert!(
            has(&|e| matches!(e, HandshakeError::Frame(FrameError::TooLarge { claimed, limit })
            if *claimed == 8 + (1 << 20) && *limit == 64 << 10)),
            "{rejected:?}"
        );
        assert!(
            has(&|e| matches!(
                e,
                HandshakeError::Unexpected { expected: MsgKind::Hello, got: MsgKind::Yield }
            )),
            "{rejected:?}"
        );

        // After the handshake the full limits apply: a 1 MiB frame flows both ways.
        let big = yield_msg(7, &vec![3u8; 1 << 20]);
        // (Sent and received concurrently: 1 MiB does not fit in the socket buffer.)
        let (sent, got) = tokio::join!(client.framed.send(&big), server.framed.next());
        sent.unwrap();
        assert_eq!(got.unwrap().unwrap().decode().unwrap(), big);
        let (sent, got) = tokio::join!(server.framed.send(&big), client.framed.next());
        sent.unwrap();
        assert_eq!(got.unwrap().unwrap().decode().unwrap(), big);
        assert_eq!(acceptor.pending(), 0);
    });
}

#[test]
fn pending_handshakes_are_bounded_and_the_oldest_make_room() {
    run(async {
        let tmp = tempfile::tempdir().unwrap();
        // A deadline far beyond the test's budget: room is made by eviction, not timeouts.
        let config =
            HandshakeConfig::default().with_deadline(Duration::from_secs(600)).with_max_pending(2);
        let mut acceptor = uds_acceptor(tmp.path(), config).await;
        let addr = acceptor.local_addr().clone();
        let mut silent = Vec::new();
        for _ in 0..4 {
            silent
                .push(FramedConnection::new(connect(&addr).await.unwrap(), FrameCodec::default()));
        }
        let late = creds("late");
        let patient = HandshakeConfig::default();
        let client = handshake::connect(&addr, &late, &patient);
        let events = async {
            let (mut evicted, mut established) = (0, None);
            while evicted < 3 || established.is_none() {
                match acceptor.accept_event().await {
                    AcceptEvent::Established(est) => established = Some(est),
                    AcceptEvent::Rejected(HandshakeError::Evicted(Refusal::TooManyPending(2))) => {
                        evicted += 1
                    }
                    AcceptEvent::Rejected(e) => panic!("unexpected rejection: {e}"),
                }
                assert!(acceptor.pending() <= 2, "pending handshakes: {}", acceptor.pending());
            }
            (evicted, established.unwrap())
        };
        let (client, (evicted, server)) = tokio::join!(client, events);
        client.expect("the late peer is served at once, not after the silent ones' deadline");
        assert_eq!((evicted, server.peer.name.as_str()), (3, "late"));
        // The three oldest silent peers were told why: one refusal naming the cap. The youngest still holds its slot.
        for framed in &mut silent[..3] {
            let mut msg = framed.next().await.unwrap().unwrap().decode().unwrap();
            // (A handshake evicted before it ran at all has not sent its hello yet.)
            if msg.kind() == MsgKind::Hello {
                msg = framed.next().await.unwrap().unwrap().decode().unwrap();
            }
            let Msg::Error(e) = msg else { panic!("expected a refusal, got {msg:?}") };
            assert_eq!(e.kind, ErrorKind::Refused);
            assert!(e.message.contains("too many connections"), "{}", e.message);
            assert!(framed.next().await.is_none(), "then the connection closes");
        }
        assert_eq!(acceptor.pending(), 1);
    });
}

/// An acceptor with `secret` on a fresh socket, accepting one event.
async fn one_event(
    tmp: &std::path::Path,
    secret: Secret,
    client: Credentials,
) -> (Result<plough_ipc_wire::Established, HandshakeError>, AcceptEvent) {
    let addr = Address::uds_for_actor(tmp, "server", std::process::id()).unwrap();
    let me = Credentials { secret, ..creds("server") };
    let mut acceptor =
        Acceptor::new(Listener::bind(&addr).await.unwrap(), me, HandshakeConfig::default());
    let config = HandshakeConfig::default();
    tokio::join!(handshake::connect(&addr, &client, &config), acceptor.accept_event())
}

#[test]
fn a_peer_without_the_secret_is_refused_and_told_why() {
    run(async {
        let tmp = tempfile::tempdir().unwrap();
        let stranger = Credentials { secret: Secret::generate().unwrap(), ..creds("stranger") };
        let (client, event) = one_event(tmp.path(), crate::support::secret(), stranger).await;
        match client {
            Err(HandshakeError::Refused { reason }) => {
                assert!(reason.starts_with("bad proof"), "{reason}")
            }
            other => panic!("the stranger must be refused, got {other:?}"),
        }
        match event {
            AcceptEvent::Rejected(HandshakeError::BadProof { peer }) => {
                assert!(peer.starts_with("stranger@"), "{peer}")
            }
            other => panic!("expected BadProof, got {other:?}"),
        }
    });
}

#[test]
fn an_acceptor_without_the_secret_is_not_trusted_by_the_connecting_end() {
    run(async {
        // The connecting end proves first, so the acceptor (here the impostor) refuses
        // it; the connecting end never takes the impostor for the tree.
        let tmp = tempfile::tempdir().unwrap();
        let (client, _) = one_event(tmp.path(), Secret::generate().unwrap(), creds("client")).await;
        let err = client.expect_err("an impostor listener must not be trusted");
        assert!(
            matches!(err, HandshakeError::Refused { .. } | HandshakeError::BadProof { .. }),
            "{err}"
        );
    });
}

/// Forwards bytes between `a` and `b` both ways; returns what `a` sent.
async fn relay(mut a: tokio::net::UnixStream, mut b: tokio::net::UnixStream) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut ar, mut aw) = a.split();
    let (mut br, mut bw) = b.split();
    let mut recorded = Vec::new();
    let up = async {
        let mut buf = [0u8; 4096];
        loop {
            let n = ar.read(&mut buf).await.unwrap_or(0);
            if n == 0 || bw.write_all(&buf[..n]).await.is_err() {
                break;
            }
            recorded.extend_from_slice(&buf[..n]);
        }
        let _ = bw.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut br, &mut aw).await;
        let _ = aw.shutdown().await;
    };
    tokio::join!(up, down);
    recorded
}

#[test]
fn a_recorded_proof_replayed_on_a_new_connection_is_refused() {
    run(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut acceptor = uds_acceptor(tmp.path(), HandshakeConfig::default()).await;
        let addr = acceptor.local_addr().clone();
        // An eavesdropper in the middle records a legitimate peer's whole handshake.
        let (client_end, tap_end) = tokio::net::UnixStream::pair().unwrap();
        let upstream = tokio::net::UnixStream::connect(addr.uds_path().unwrap()).await.unwrap();
        let tap = tokio::spawn(relay(tap_end, upstream));
        let conn = plough_ipc_wire::Connection::from_unix(client_end).unwrap();
        let config = HandshakeConfig::default();
        let legit = creds("legit");
        let (client, server) =
            tokio::join!(handshake::initiate(conn, &legit, &config), acceptor.accept());
        let client = client.expect("the legitimate peer gets in through the tap");
        drop((client, server));
        let recorded = tap.await.unwrap();
        assert!(!recorded.is_empty());

        // Its bytes, replayed verbatim on a connection of the eavesdropper's own.
        let mut replay = connect(&addr).await.unwrap();
        use tokio::io::AsyncWriteExt;
        replay.write_all(&recorded).await.unwrap();
        let mut framed = FramedConnection::new(replay, FrameCodec::default());
        let (event, refusal) = tokio::join!(acceptor.accept_event(), async {
            let hello = framed.next().await.unwrap().unwrap().decode().unwrap();
            assert_eq!(hello.kind(), MsgKind::Hello);
            framed.next().await.unwrap().unwrap().decode().unwrap()
        });
        assert!(
            matches!(event, AcceptEvent::Rejected(HandshakeError::BadProof { .. })),
            "{event:?}"
        );
        let Msg::Error(e) = refusal else { panic!("expected a refusal, got {refusal:?}") };
        assert_eq!(e.kind, ErrorKind::Refused);
        assert!(e.message.starts_with("bad proof"), "{}", e.message);
    });
}

#[test]
fn an_acceptors_proof_reflected_back_as_a_connectors_is_refused() {
    run(async {
        // The reflection: open two connections to the acceptor, hand each the other's
        // hello, and present the acceptor's own proof as ours. The accepting end proves
        // only after the connecting end did, so there is never a proof of its own to
        // reflect; and a proof is bound to its role in any case.
        let tmp = tempfile::tempdir().unwrap();
        let mut acceptor = uds_acceptor(tmp.path(), HandshakeConfig::default()).await;
        let addr = acceptor.local_addr().clone();
        let mut a = FramedConnection::new(connect(&addr).await.unwrap(), FrameCodec::default());
        let mut b = FramedConnection::new(connect(&addr).await.unwrap(), FrameCodec::default());
        let events = async {
            let mut out = Vec::new();
            for _ in 0..2 {
                out.push(acceptor.accept_event().await);
            }
            out
        };
        let attack = async {
            let ha = a.next().await.unwrap().unwrap().decode().unwrap();
            let hb = b.next().await.unwrap().unwrap().decode().unwrap();
            let (Msg::Hello(ha), Msg::Hello(hb)) = (ha, hb) else { panic!("hellos first") };
            // Each connection gets a hello that carries the other's nonce as its own.
            let echo = |h: &plough_ipc_wire::Hello| {
                Msg::Hello(Box::new(plough_ipc_wire::Hello {
                    aid: crate::support::aid("mirror"),
                    nonce: h.nonce.clone(),
                    build: Default::default(),
                    batches: false,
                    reads_shm: false,
                }))
            };
            a.send(echo(&hb)).await.unwrap();
            b.send(echo(&ha)).await.unwrap();
            // Neither side has a proof to offer: send garbage and read the verdicts.
            a.send(Msg::Proof(vec![0; 32].into())).await.unwrap();
            b.send(Msg::Proof(vec![0; 32].into())).await.unwrap();
            let ra = a.next().await.unwrap().unwrap().decode().unwrap();
            let rb = b.next().await.unwrap().unwrap().decode().unwrap();
            (ra, rb)
        };
        let (events, (ra, rb)) = tokio::join!(events, attack);
        for e in &events {
            assert!(matches!(e, AcceptEvent::Rejected(HandshakeError::BadProof { .. })), "{e:?}");
        }
        for r in [ra, rb] {
            assert!(matches!(&r, Msg::Error(e) if e.kind == ErrorKind::Refused), "{r:?}");
        }
    });
}

#[test]
fn tcp_binds_loopback_and_handshakes() {
    run(async {
        let listener = Listener::bind(&Address::tcp_loopback_any()).await.unwrap();
        let Address::Tcp(sa) = listener.local_addr().clone() else { panic!("tcp") };
        assert!(sa.ip().is_loopback() && sa.port() != 0);
        let mut acceptor = Acceptor::new(listener, creds("server"), HandshakeConfig::default());
        let addr = acceptor.local_addr().clone();
        let client_creds = creds("client");
        let config = HandshakeConfig::default();
        let (server, client) =
            tokio::join!(acceptor.accept(), handshake::connect(&addr, &client_creds, &config));
        let mut client = client.unwrap();
        let mut server = server;
        assert_eq!(server.peer, client_creds.aid);
        assert!(matches!(server.framed.get_ref().peer(), plough_ipc_wire::Peer::Tcp(_)));
        client.framed.send(yield_msg(1, b"over tcp")).await.unwrap();
        assert_eq!(
            server.framed.next().await.unwrap().unwrap().decode().unwrap(),
            yield_msg(1, b"over tcp")
        );
    });
}

#[test]
fn a_peer_that_hangs_up_is_reported_closed_and_connect_errors_are_typed() {
    run(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut acceptor = uds_acceptor(tmp.path(), HandshakeConfig::default()).await;
        let addr = acceptor.local_addr().clone();
        drop(connect(&addr).await.unwrap());
        match acceptor.accept_event().await {
            AcceptEvent::Rejected(
                HandshakeError::Closed | HandshakeError::Frame(FrameError::Io(_)),
            ) => {}
            other => panic!("expected Closed, got {other:?}"),
        }
        let nowhere = Address::Uds(tmp.path().join("nobody-here.sock"));
        let err = handshake::connect(&nowhere, &creds("c"), &HandshakeConfig::default())
            .await
            .unwrap_err();
        assert!(matches!(err, HandshakeError::Connect(_)), "{err}");
    });
}

#[test]
fn an_expected_peer_must_prove_its_one_time_key_so_a_racer_with_its_uuid_is_refused() {
    run(async {
        let tmp = tempfile::tempdir().unwrap();
        let token = Secret::generate().unwrap();
        let expected = creds("child").aid.uuid;
        let key = token.clone();
        let keys: plough_ipc_wire::PeerKeys =
            std::sync::Arc::new(move |uuid| (*uuid == expected).then(|| key.clone()));
        let mut acceptor =
            uds_acceptor(tmp.path(), HandshakeConfig::default()).await.with_peer_keys(keys);
        let addr = acceptor.local_addr().clone();
        let config = HandshakeConfig::default();
        // The racer knows the uuid and even the tree's secret, but not the token.
        let racer = creds("child");
        let (raced, event) =
            tokio::join!(handshake::connect(&addr, &racer, &config), acceptor.accept_event());
        assert!(matches!(raced, Err(HandshakeError::Refused { .. })), "{raced:?}");
        assert!(matches!(event, AcceptEvent::Rejected(HandshakeError::BadProof { .. })));
        // The real child, with its token, still gets in; peers that are not expected
        // prove the tree's secret as before.
        let child = Credentials { secret: token, ..creds("child") };
        let (real, server) =
            tokio::join!(handshake::connect(&addr, &child, &config), acceptor.accept());
        real.expect("the real child gets in");
        assert_eq!(server.peer.name, "child");
        let other = Credentials {
            aid: plough_ipc_wire::Aid {
                uuid: plough_ipc_wire::Uuid([1; 16]),
                ..creds("other").aid
            },
            ..creds("other")
        };
        let (ok, _) = tokio::join!(handshake::connect(&addr, &other, &config), acceptor.accept());
        ok.expect("an unexpected peer with the tree's secret gets in");
    });
}

#[test]
fn a_tcp_relay_in_the_middle_cannot_pass_a_proof_on() {
    run(async {
        // The relay listens where a peer of ours dials, and passes every byte on, both
        // ways, to a real acceptor of ours: each end then sees other TCP endpoints than
        // the other, and the proof (which names them) fails.
        let listener = Listener::bind(&Address::tcp_loopback_any()).await.unwrap();
        let mut acceptor = Acceptor::new(listener, creds("server"), HandshakeConfig::default());
        let Address::Tcp(real) = acceptor.local_addr().clone() else { panic!("tcp") };
        let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay_addr = Address::Tcp(relay.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut a, _) = relay.accept().await.unwrap();
            let mut b = tokio::net::TcpStream::connect(real).await.unwrap();
            let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
        });
        let victim = creds("victim");
        let config = HandshakeConfig::default();
        let (client, event) = tokio::join!(
            handshake::connect(&relay_addr, &victim, &config),
            acceptor.accept_event()
        );
        assert!(
            matches!(event, AcceptEvent::Rejected(HandshakeError::BadProof { .. })),
            "the relayed proof must fail: {event:?}"
        );
        assert!(matches!(client, Err(HandshakeError::Refused { .. })), "{client:?}");
        // Directly, the same peer gets in.
        let direct = Address::Tcp(real);
        let (client, server) =
            tokio::join!(handshake::connect(&direct, &victim, &config), acceptor.accept());
        client.expect("the direct connection is accepted");
        assert_eq!(server.peer.name, "victim");
    });
}
