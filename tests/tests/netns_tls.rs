//! Mutual TLS between two "hosts" (network namespaces with their own addresses, made by
//! the test): a host with a certificate of the tree CA gets through and learns the other's
//! host name; one whose certificate is another CA's, a plaintext peer at the TLS port and
//! a plaintext peer of another host at the TCP port are refused, each told why; and the
//! lab leaves no namespace or process behind, even when a test panics.
//!
//! Needs root and iproute2 (`.ci/run` installs it); elsewhere each test prints why it
//! skips.

use futures::{SinkExt, StreamExt};
use plough::ipc_wire::{
    Address, Aid, BuildId, Credentials, HandshakeConfig, HandshakeError, Msg, Payload, Secret,
    TlsFailure, TlsFiles, TlsIdentity, TransportError, Uuid, handshake,
};
use plough_tests::netns::{namespaces_named, skip_without_netns};
use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::Duration;

/// What any one wait of these tests may take.
const STEP: Duration = Duration::from_secs(10);

/// The secret `tls_echo` holds (its `TEST_SECRET`).
const TEST_SECRET: [u8; 32] = [0x42; 32];

fn creds(name: &str) -> Credentials {
    Credentials {
        aid: Aid { name: name.into(), uuid: Uuid([3; 16]), pid: std::process::id() },
        secret: Secret::from_bytes(TEST_SECRET),
    }
}

/// The lines a child prints, as they come.
fn lines(out: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn next_line(rx: &mpsc::Receiver<String>, what: &str) -> String {
    rx.recv_timeout(STEP).unwrap_or_else(|e| panic!("no line from tls_echo for {what}: {e}"))
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async { tokio::time::timeout(STEP * 3, f).await.expect("the test's budget") })
}

#[test]
fn tls_between_two_namespaces_works_and_a_stranger_ca_and_plaintext_peers_are_refused() {
    let Some(mut lab) = skip_without_netns("netns_tls", 2) else { return };
    let (a, b) = (lab.host(0).clone(), lab.host(1).clone());
    let tmp = tempfile::tempdir().unwrap();
    let (ca, other) = (tmp.path().join("ca"), tmp.path().join("other"));
    plough_ps::ca::init(&ca).unwrap();
    let a_files = plough_ps::ca::issue(&ca, "host-a", &[a.ip.into()], 1).unwrap();
    let b_files = plough_ps::ca::issue(&ca, "host-b", &[b.ip.into()], 1).unwrap();
    plough_ps::ca::init(&other).unwrap();
    let foreign = plough_ps::ca::issue(&other, "host-b", &[b.ip.into()], 1).unwrap();
    // Trusts our CA, but holds a certificate of another.
    let stranger = TlsFiles { ca: b_files.ca.clone(), ..foreign };

    let p = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let (tls_bind, tcp_bind) = (format!("tls://host-a@{}:0", a.ip), format!("tcp://{}:0", a.ip));
    let (_pid, out) = lab
        .spawn(
            0,
            env!("CARGO_BIN_EXE_tls_echo"),
            &[&p(&a_files.ca), &p(&a_files.cert), &p(&a_files.key), &tls_bind, &tcp_bind],
        )
        .unwrap();
    let rx = lines(out);
    let listening = next_line(&rx, "its addresses");
    let mut words = listening.split_whitespace().skip(1);
    let tls_addr: Address = words.next().unwrap().parse().unwrap();
    let tcp_addr: Address = words.next().unwrap().parse().unwrap();

    let good = TlsIdentity::load(&b_files).unwrap();
    let stranger = TlsIdentity::load(&stranger).unwrap();
    let config = HandshakeConfig::default().with_deadline(Duration::from_secs(5));
    // tls_echo is another executable than this test: another build, which hosts refuse.
    let echo_build = BuildId::of_file(env!("CARGO_BIN_EXE_tls_echo").as_ref()).unwrap();
    let same_build = config.with_build_id(echo_build);
    lab.in_host(1, || {
        block_on(async {
            let e = handshake::connect_with(&tls_addr, &creds("b"), &config, Some(&good))
                .await
                .unwrap_err();
            let ours = BuildId::current().unwrap();
            assert!(matches!(e, HandshakeError::BuildMismatch { .. }), "{e}");
            let text = e.to_string();
            assert!(text.contains(&ours.to_string()) && text.contains(&echo_build.to_string()), "{text}");
            let config = same_build;
            // A host of the tree: through, both ways named, and frames echo back.
            let mut est =
                handshake::connect_with(&tls_addr, &creds("b"), &config, Some(&good)).await.unwrap();
            assert_eq!(est.framed.get_ref().tls_peer().unwrap().host(), Some("host-a"));
            let sent = Msg::Return { cid: 5, payload: Payload::encode(&"across hosts").unwrap() };
            est.framed.send(&sent).await.unwrap();
            let back = est.framed.next().await.unwrap().unwrap().decode().unwrap();
            assert_eq!(back.decode_payload::<String>().unwrap(), "across hosts");

            // A certificate of another CA: refused by the TLS layer, which says so.
            let e = handshake::connect_with(&tls_addr, &creds("s"), &config, Some(&stranger))
                .await
                .unwrap_err();
            assert!(
                matches!(&e, HandshakeError::Tls { failure: TlsFailure::RefusedByPeer { alert }, .. } if alert.contains("UnknownCA")),
                "{e}"
            );
            // Plaintext at the TLS port: told, in plough's words, that TLS is required.
            let e = handshake::connect(&tls_addr_as_tcp(&tls_addr), &creds("p"), &config)
                .await
                .unwrap_err();
            assert!(matches!(&e, HandshakeError::Refused { reason } if reason.contains("TLS required")), "{e}");
            // Plaintext from another host at the TCP port: refused, told why.
            let e = handshake::connect(&tcp_addr, &creds("p"), &config).await.unwrap_err();
            assert!(
                matches!(&e, HandshakeError::Refused { reason } if reason.contains("plaintext from another host")),
                "{e}"
            );
            // And a dialer with TLS configured will not even try plaintext to another host.
            let e = handshake::connect_with(&tcp_addr, &creds("p"), &config, Some(&good))
                .await
                .unwrap_err();
            assert!(
                matches!(&e, HandshakeError::Connect(TransportError::PlaintextToAnotherHost(_))),
                "{e}"
            );
        })
    });
    // The host saw each of them for what it was.
    let seen: Vec<String> = (0..5).map(|i| next_line(&rx, &format!("event {i}"))).collect();
    assert!(seen[0].contains("runs build"), "{seen:?}");
    assert_eq!(seen[1], "ESTABLISHED host-b", "{seen:?}");
    assert!(seen.iter().any(|l| l.contains("not signed by this tree's CA")), "{seen:?}");
    assert!(seen.iter().any(|l| l.contains("does not speak TLS")), "{seen:?}");
    assert!(seen.iter().any(|l| l.contains("refused plaintext TCP from")), "{seen:?}");

    let made = lab.namespaces().to_vec();
    drop(lab);
    for ns in made {
        assert!(namespaces_named(&ns).is_empty(), "{ns} outlived its lab");
    }
}

fn tls_addr_as_tcp(a: &Address) -> Address {
    match a {
        Address::Tls { addr, .. } => Address::Tcp(*addr),
        other => panic!("not a tls address: {other}"),
    }
}

#[test]
fn a_lab_is_removed_with_its_processes_when_the_test_panics() {
    let made = std::panic::catch_unwind(|| -> Option<()> {
        let mut lab = skip_without_netns("netns lab cleanup", 2)?;
        let (pid, _out) = lab.spawn(1, "sleep", &["600"]).unwrap();
        let names = lab.namespaces().to_vec();
        std::panic::panic_any((names, pid));
    });
    let (names, pid) = match made {
        Ok(None) => return,
        Ok(Some(())) => unreachable!(),
        Err(payload) => *payload.downcast::<(Vec<String>, u32)>().expect("our panic"),
    };
    assert_eq!(names.len(), 3, "two hosts and a switch: {names:?}");
    for ns in &names {
        assert!(namespaces_named(ns).is_empty(), "{ns} outlived the panic");
    }
    assert_eq!(plough_tests::proc_state(pid), None, "the process in the lab outlived it");
}
