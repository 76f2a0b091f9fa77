//! Mutual TLS: a good pair gets through with each end knowing the other's host; a peer
//! with a certificate of another CA, an expired one, the wrong name, a plaintext peer, a
//! peer stalling mid-TLS and a peer of another build each get a typed error within the
//! handshake deadline — and a good peer connecting meanwhile is not held up.

use crate::support::{creds, run};
use futures::{SinkExt, StreamExt};
use plough_ipc_wire::{
    AcceptEvent, Acceptor, Address, BuildCheck, BuildId, HandshakeConfig, HandshakeError, Listener,
    Msg, Payload, TlsFailure, TlsIdentity, TransportError, handshake,
};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// A test CA that issues host certificates in memory.
struct Ca {
    cert: Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        Ca { cert: params.self_signed(&key).unwrap(), key }
    }

    fn issue(&self, host: &str) -> TlsIdentity {
        self.issue_with(host, |_| {})
    }

    fn issue_with(&self, host: &str, tweak: impl FnOnce(&mut CertificateParams)) -> TlsIdentity {
        self.issue_trusting(host, self, tweak)
    }

    /// A certificate of this CA for `host`, which trusts `roots`.
    fn issue_trusting(
        &self,
        host: &str,
        roots: &Ca,
        tweak: impl FnOnce(&mut CertificateParams),
    ) -> TlsIdentity {
        let mut params = CertificateParams::new(vec![host.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, host);
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        tweak(&mut params);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        TlsIdentity::from_pem(
            roots.cert.pem().as_bytes(),
            cert.pem().as_bytes(),
            key.serialize_pem().as_bytes(),
        )
        .unwrap()
    }
}

fn expired(p: &mut CertificateParams) {
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2021, 1, 1);
}

const DEADLINE: Duration = Duration::from_millis(1500);

fn config() -> HandshakeConfig {
    HandshakeConfig::default().with_deadline(DEADLINE)
}

/// A TLS acceptor on loopback answering as `node-a`.
async fn tls_acceptor(identity: &TlsIdentity, config: HandshakeConfig) -> Acceptor {
    let addr: Address = "tls://node-a@127.0.0.1:0".parse().unwrap();
    let listener = Listener::bind_with(&addr, Some(identity)).await.unwrap();
    Acceptor::new(listener, creds("server"), config)
}

/// The acceptor's events until one is established and `bad` others were rejected; the
/// rejections come back, the established connection is checked to be `node-b`'s.
async fn events(acceptor: &mut Acceptor, bad: usize) -> Vec<HandshakeError> {
    let (mut rejected, mut good) = (Vec::new(), false);
    while rejected.len() < bad || !good {
        match acceptor.accept_event().await {
            AcceptEvent::Established(est) => {
                let tls = est.framed.get_ref().tls_peer().expect("a TLS connection");
                assert_eq!(tls.host(), Some("node-b"));
                good = true;
            }
            AcceptEvent::Rejected(e) => rejected.push(e),
        }
    }
    rejected
}

/// Dials `addr` as client `c` (owning its arguments, for `join!`).
async fn dial_as(
    addr: Address,
    id: Option<TlsIdentity>,
    cfg: HandshakeConfig,
) -> Result<plough_ipc_wire::Established, HandshakeError> {
    handshake::connect_with(&addr, &creds("c"), &cfg, id.as_ref()).await
}

fn tls_failure(e: &HandshakeError) -> &TlsFailure {
    match e {
        HandshakeError::Tls { failure, .. } => failure,
        HandshakeError::Connect(TransportError::Tls { failure, .. }) => failure,
        other => panic!("expected a TLS failure, got {other:?}"),
    }
}

#[test]
fn a_good_pair_talks_and_each_end_knows_the_others_host() {
    run(async {
        let ca = Ca::new("tree CA");
        let (a, b) = (ca.issue("node-a"), ca.issue("node-b"));
        let mut acceptor = tls_acceptor(&a, config()).await;
        let addr = acceptor.local_addr().clone();
        assert!(addr.to_string().starts_with("tls://node-a@127.0.0.1:"), "{addr}");
        let (server, client) =
            tokio::join!(acceptor.accept(), dial_as(addr.clone(), Some(b.clone()), config()));
        let (mut server, mut client) = (server, client.unwrap());
        assert_eq!(server.framed.get_ref().tls_peer().unwrap().host(), Some("node-b"));
        assert_eq!(client.framed.get_ref().tls_peer().unwrap().host(), Some("node-a"));
        assert_eq!(server.peer.name, "c");
        client
            .framed
            .send(Msg::Return { cid: 7, payload: Payload::encode(&"over tls").unwrap() })
            .await
            .unwrap();
        let msg = server.framed.next().await.unwrap().unwrap().decode().unwrap();
        assert_eq!(msg.decode_payload::<String>().unwrap(), "over tls");
    });
}

#[test]
fn a_stranger_ca_an_expired_cert_and_a_plaintext_peer_are_refused_and_a_good_peer_gets_through() {
    run(async {
        let ca = Ca::new("tree CA");
        let a = ca.issue("node-a");
        let mut acceptor = tls_acceptor(&a, config()).await;
        let addr = acceptor.local_addr().clone();
        // Trusts our CA, but its own certificate is another CA's.
        let stranger = Ca::new("another CA").issue_trusting("node-b", &ca, |_| {});
        let stale = ca.issue_with("node-b", expired);
        let good = ca.issue("node-b");

        let dial = |id: &TlsIdentity| dial_as(addr.clone(), Some(id.clone()), config());
        let plaintext_addr = Address::Tcp(match &addr {
            Address::Tls { addr, .. } => *addr,
            _ => unreachable!(),
        });
        let started = std::time::Instant::now();
        let (rejected, from_stranger, from_stale, from_plain, from_good) = tokio::join!(
            events(&mut acceptor, 3),
            dial(&stranger),
            dial(&stale),
            dial_as(plaintext_addr, None, config()),
            dial(&good),
        );
        assert!(
            started.elapsed() < DEADLINE,
            "nobody waited for a deadline: {:?}",
            started.elapsed()
        );
        from_good.unwrap();

        // The refused dialers each learn why, in types.
        let e = from_stranger.unwrap_err();
        assert!(
            matches!(tls_failure(&e), TlsFailure::RefusedByPeer { alert } if alert.contains("UnknownCA")),
            "{e}"
        );
        let e = from_stale.unwrap_err();
        assert!(
            matches!(tls_failure(&e), TlsFailure::RefusedByPeer { alert } if alert.contains("CertificateExpired")),
            "{e}"
        );
        match from_plain.unwrap_err() {
            HandshakeError::Refused { reason } => {
                assert!(reason.contains("TLS required"), "{reason}")
            }
            other => panic!("a plaintext peer must be told TLS is required, got {other}"),
        }
        // The acceptor saw three typed failures.
        let mut kinds: Vec<_> = rejected.iter().map(|e| tls_failure(e).clone()).collect();
        kinds.sort_by_key(|k| k.to_string());
        assert!(kinds.contains(&TlsFailure::UnknownCa), "{kinds:?}");
        assert!(kinds.contains(&TlsFailure::Expired), "{kinds:?}");
        assert!(kinds.contains(&TlsFailure::NotTls), "{kinds:?}");
    });
}

#[test]
fn a_dialer_refuses_a_server_of_another_ca_an_expired_one_and_the_wrong_name() {
    run(async {
        let ca = Ca::new("tree CA");
        let me = ca.issue("node-b");
        for (server, dial_name, want) in [
            (Ca::new("another CA").issue("node-a"), "node-a", TlsFailure::UnknownCa),
            (ca.issue_with("node-a", expired), "node-a", TlsFailure::Expired),
            (ca.issue("node-a"), "node-x", TlsFailure::WrongName { expected: "node-x".to_owned() }),
        ] {
            let mut acceptor = tls_acceptor(&server, config()).await;
            let Address::Tls { addr, .. } = acceptor.local_addr().clone() else { unreachable!() };
            let target = Address::Tls { name: Some(dial_name.into()), addr };
            let client = dial_as(target, Some(me.clone()), config());
            let server_side = async {
                match acceptor.accept_event().await {
                    AcceptEvent::Rejected(e) => e,
                    AcceptEvent::Established(_) => panic!("the server must not get through"),
                }
            };
            let (e, server_e) = tokio::join!(client, server_side);
            let e = e.unwrap_err();
            assert_eq!(tls_failure(&e), &want, "{e}");
            // The server learns it too: we told it with an alert.
            assert!(
                matches!(tls_failure(&server_e), TlsFailure::RefusedByPeer { .. }),
                "{server_e}"
            );
        }
    });
}

#[test]
fn a_peer_stalling_mid_tls_is_dropped_at_the_deadline_and_blocks_nobody() {
    run(async {
        let ca = Ca::new("tree CA");
        let short = HandshakeConfig::default().with_deadline(Duration::from_millis(300));
        let mut acceptor = tls_acceptor(&ca.issue("node-a"), short).await;
        let addr = acceptor.local_addr().clone();
        let Address::Tls { addr: sa, .. } = addr.clone() else { unreachable!() };
        // The first bytes of a ClientHello record, then nothing.
        let mut staller = tokio::net::TcpStream::connect(sa).await.unwrap();
        staller.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await.unwrap();
        let good = ca.issue("node-b");
        let started = std::time::Instant::now();
        let (rejected, ok) = tokio::join!(
            events(&mut acceptor, 1),
            dial_as(addr.clone(), Some(good.clone()), short)
        );
        ok.unwrap();
        assert!(matches!(tls_failure(&rejected[0]), TlsFailure::Stalled(_)), "{}", rejected[0]);
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());

        // And the other way: a server that accepts TCP and never speaks TLS.
        let mute = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = Address::Tls { name: Some("node-a".into()), addr: mute.local_addr().unwrap() };
        let (_held, e) = tokio::join!(mute.accept(), dial_as(target, Some(good.clone()), short));
        let e = e.unwrap_err();
        assert!(matches!(tls_failure(&e), TlsFailure::Stalled(_)), "{e}");
    });
}

#[test]
fn a_peer_of_another_build_is_refused_naming_both_ids() {
    run(async {
        let ca = Ca::new("tree CA");
        let other = BuildId([0xee; 16]);
        let mut acceptor = tls_acceptor(&ca.issue("node-a"), config().with_build_id(other)).await;
        let addr = acceptor.local_addr().clone();
        let (server_e, client) = tokio::join!(
            async {
                match acceptor.accept_event().await {
                    AcceptEvent::Rejected(e) => e,
                    AcceptEvent::Established(_) => panic!("builds differ"),
                }
            },
            dial_as(addr.clone(), Some(ca.issue("node-b")), config())
        );
        let ours = BuildId::current().unwrap();
        for e in [server_e, client.unwrap_err()] {
            let text = e.to_string();
            assert!(matches!(e, HandshakeError::BuildMismatch { .. }), "{e}");
            assert!(
                text.contains(&ours.to_string()) && text.contains(&other.to_string()),
                "{text}"
            );
        }
    });
}

#[test]
fn builds_are_not_compared_locally_unless_asked() {
    run(async {
        let tmp = tempfile::tempdir().unwrap();
        let addr = Address::uds_for_actor(tmp.path(), "s", std::process::id()).unwrap();
        let other = HandshakeConfig::default().with_build_id(BuildId([1; 16]));
        let mut acceptor = Acceptor::new(Listener::bind(&addr).await.unwrap(), creds("s"), other);
        let (_, ok) = tokio::join!(
            acceptor.accept(),
            dial_as(addr.clone(), None, HandshakeConfig::default())
        );
        ok.unwrap();
        let strict = other.with_build_check(BuildCheck::Always);
        let mut acceptor = Acceptor::new(
            Listener::bind(&Address::uds_for_actor(tmp.path(), "t", 1).unwrap()).await.unwrap(),
            creds("s"),
            strict,
        );
        let addr = acceptor.local_addr().clone();
        let always = HandshakeConfig::default().with_build_check(BuildCheck::Always);
        let (_, e) = tokio::join!(acceptor.accept_event(), dial_as(addr.clone(), None, always));
        assert!(matches!(e.unwrap_err(), HandshakeError::BuildMismatch { .. }));
    });
}

#[test]
fn tls_addresses_need_an_identity() {
    run(async {
        let addr: Address = "tls://node-a@127.0.0.1:0".parse().unwrap();
        let e = Listener::bind(&addr).await.unwrap_err();
        assert!(matches!(e, TransportError::TlsNotConfigured(_)), "{e}");
        let e = plough_ipc_wire::connect(&addr).await.unwrap_err();
        assert!(matches!(e, TransportError::TlsNotConfigured(_)), "{e}");
    });
}

#[test]
fn identity_files_that_are_exposed_missing_or_not_pem_are_refused_by_name() {
    use plough_ipc_wire::{TlsConfigError, TlsFiles};
    use std::os::unix::fs::PermissionsExt;
    let ca = Ca::new("tree CA");
    let mut params = CertificateParams::new(vec!["node-a".to_owned()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let files = TlsFiles::in_ca_dir(tmp.path(), "node-a");
    std::fs::write(&files.ca, ca.cert.pem()).unwrap();
    std::fs::write(&files.cert, cert.pem()).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(TlsIdentity::load(&files).unwrap().host(), "node-a");

    std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = TlsIdentity::load(&files).unwrap_err();
    assert!(matches!(e, TlsConfigError::KeyExposed { mode: 0o644, .. }), "{e}");
    std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o600)).unwrap();

    std::fs::write(&files.cert, "not a certificate").unwrap();
    let e = TlsIdentity::load(&files).unwrap_err();
    assert!(matches!(e, TlsConfigError::Missing { what: "certificate", .. }), "{e}");
    assert!(e.to_string().contains("node-a.pem"), "{e}");

    std::fs::remove_file(&files.ca).unwrap();
    let e = TlsIdentity::load(&files).unwrap_err();
    assert!(matches!(e, TlsConfigError::Io { .. }), "{e}");
    assert!(e.to_string().contains("ca.pem"), "{e}");
}
