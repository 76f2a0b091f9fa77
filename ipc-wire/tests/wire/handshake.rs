//! The handshake: deadline, small pre-handshake limits, bounded pending, isolation.

use crate::support::{hello, run, yield_msg};
use futures::{SinkExt, StreamExt};
use plough_ipc_wire::{
    AcceptEvent, Acceptor, Address, FrameError, HandshakeConfig, HandshakeError, Listener, MsgKind,
    connect, handshake,
};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

async fn uds_acceptor(dir: &std::path::Path, config: HandshakeConfig) -> Acceptor {
    let addr = Address::uds_for_actor(dir, "server", std::process::id()).unwrap();
    Acceptor::new(Listener::bind(&addr).await.unwrap(), hello("server"), config)
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

        let client_hello = hello("good");
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
        assert_eq!(server.peer.aid.name, "good");
        assert_eq!(client.peer.aid.name, "server");

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
            has(&|e| matches!(e, HandshakeError::UnexpectedFirst(MsgKind::Yield))),
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
fn pending_handshakes_are_bounded() {
    run(async {
        let tmp = tempfile::tempdir().unwrap();
        let config = HandshakeConfig::default()
            .with_deadline(Duration::from_millis(300))
            .with_max_pending(2);
        let mut acceptor = uds_acceptor(tmp.path(), config).await;
        let addr = acceptor.local_addr().clone();
        let mut silent = Vec::new();
        for _ in 0..4 {
            silent.push(connect(&addr).await.unwrap());
        }
        let client_hello = hello("late");
        let patient = HandshakeConfig::default();
        let client = handshake::connect(&addr, &client_hello, &patient);
        let events = async {
            let (mut timeouts, mut established) = (0, 0);
            while timeouts + established < 5 {
                match acceptor.accept_event().await {
                    AcceptEvent::Established(_) => established += 1,
                    AcceptEvent::Rejected(HandshakeError::TimedOut(_)) => timeouts += 1,
                    AcceptEvent::Rejected(e) => panic!("unexpected rejection: {e}"),
                }
                assert!(acceptor.pending() <= 2, "pending handshakes: {}", acceptor.pending());
            }
            (timeouts, established)
        };
        let (client, counts) = tokio::join!(client, events);
        client.expect("the late peer gets a slot once silent ones time out");
        assert_eq!(counts, (4, 1));
    });
}

#[test]
fn tcp_binds_loopback_and_handshakes() {
    run(async {
        let listener = Listener::bind(&Address::tcp_loopback_any()).await.unwrap();
        let Address::Tcp(sa) = listener.local_addr().clone() else { panic!("tcp") };
        assert!(sa.ip().is_loopback() && sa.port() != 0);
        let mut acceptor = Acceptor::new(listener, hello("server"), HandshakeConfig::default());
        let addr = acceptor.local_addr().clone();
        let mut proof_hello = hello("client");
        proof_hello.tree_proof = bytes::Bytes::from_static(b"reserved for tree auth");
        let config = HandshakeConfig::default();
        let (server, client) =
            tokio::join!(acceptor.accept(), handshake::connect(&addr, &proof_hello, &config));
        let mut client = client.unwrap();
        let mut server = server;
        assert_eq!(server.peer, proof_hello);
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
        let err = handshake::connect(&nowhere, &hello("c"), &HandshakeConfig::default())
            .await
            .unwrap_err();
        assert!(matches!(err, HandshakeError::Connect(_)), "{err}");
    });
}
