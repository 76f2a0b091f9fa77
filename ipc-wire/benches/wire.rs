//! The wire's cost, each figure next to the raw `capnp::serialize` floor measured in the
//! same run:
//!
//! * `small/*`: encode + decode of one message with a 64-byte payload, in memory.
//! * `large/*`: 1 MiB payloads through a real Unix socket pair (writer thread → reader),
//!   reported as throughput.
//! * `handshake/*`: opening a connection over a Unix socket pair: the authenticated
//!   handshake (hellos with nonces, then the mutual proof) next to its floor, the bare
//!   hello exchange that was the whole handshake before authentication.
//! * `tcp_tls/*`: over loopback TCP, plaintext next to mutual TLS (rustls, TLS 1.3, ECDSA
//!   P-256 certificates of one test CA): opening a connection (connect, accept, TLS, the
//!   authenticated handshake; the build id is computed once, before), and the round trip
//!   of one 64-byte message on an open connection.
//! * `build_id/*`: what computing a build id costs (once per process that needs it):
//!   SHA-256 of this bench's own executable.
//!
//! Run: `cargo bench -p plough-ipc-wire -- --warm-up-time 1 --measurement-time 3`.

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::{SinkExt, StreamExt};
use plough_ipc_wire::generated::plough_capnp as schema;
use plough_ipc_wire::{FrameCodec, Msg, Payload};
use std::hint::black_box;
use std::io::{BufReader, Write};
use std::time::{Duration, Instant};
use tokio_util::codec::{Decoder, Encoder, FramedRead, FramedWrite};

const SMALL: usize = 64;
const LARGE: usize = 1 << 20;

fn yield_msg(len: usize) -> Msg {
    Msg::Yield { cid: 42, payload: Payload::from(vec![0xa5; len]) }
}

/// The raw floor: build with capnp's default builder, `serialize::write_message` into a
/// reused buffer, `read_message_from_flat_slice`, read the fields.
fn raw_roundtrip(payload: &[u8], out: &mut Vec<u8>) -> usize {
    let mut message = capnp::message::Builder::new_default();
    {
        let mut y = message.init_root::<schema::msg::Builder<'_>>().init_yield();
        y.set_cid(42);
        y.set_payload(payload);
    }
    out.clear();
    capnp::serialize::write_message(&mut *out, &message).unwrap();
    let mut slice = &out[..];
    let reader =
        capnp::serialize::read_message_from_flat_slice(&mut slice, Default::default()).unwrap();
    let root = reader.get_root::<schema::msg::Reader<'_>>().unwrap();
    match root.which().unwrap() {
        schema::msg::Yield(y) => {
            let y = y.unwrap();
            y.get_cid() as usize + y.get_payload().unwrap().len()
        }
        _ => unreachable!(),
    }
}

fn small(c: &mut Criterion) {
    let mut g = c.benchmark_group("small");
    let payload = vec![0xa5; SMALL];
    let msg = yield_msg(SMALL);
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::with_capacity(4096);

    g.bench_function("raw_capnp_serialize_roundtrip", |b| {
        let mut out = Vec::with_capacity(4096);
        b.iter(|| black_box(raw_roundtrip(black_box(&payload), &mut out)))
    });
    g.bench_function("codec_roundtrip_owned_msg", |b| {
        b.iter(|| {
            codec.encode(black_box(&msg), &mut buf).unwrap();
            let frame = codec.decode(&mut buf).unwrap().unwrap();
            black_box(frame.decode().unwrap())
        })
    });
    g.bench_function("codec_roundtrip_view", |b| {
        b.iter(|| {
            codec.encode(black_box(&msg), &mut buf).unwrap();
            let frame = codec.decode(&mut buf).unwrap().unwrap();
            let view = frame.view().unwrap();
            black_box((view.cid, view.payload.map(<[u8]>::len)))
        })
    });
    // Coalescing: 64 small frames into one buffer, then all decoded.
    g.throughput(Throughput::Elements(64));
    g.bench_function("codec_batch_of_64_view", |b| {
        b.iter(|| {
            for _ in 0..64 {
                codec.encode(black_box(&msg), &mut buf).unwrap();
            }
            let mut n = 0;
            while let Some(frame) = codec.decode(&mut buf).unwrap() {
                n += frame.view().unwrap().payload.map_or(0, <[u8]>::len);
            }
            black_box(n)
        })
    });
    g.finish();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// `iters` 1 MiB messages through the codec over a Unix socket pair.
fn codec_over_uds(iters: u64) -> Duration {
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let writer = std::thread::spawn(move || {
        runtime().block_on(async move {
            a.set_nonblocking(true).unwrap();
            let a = tokio::net::UnixStream::from_std(a).unwrap();
            let mut sink = FramedWrite::new(a, FrameCodec::default());
            let msg = yield_msg(LARGE);
            for _ in 0..iters {
                sink.send(&msg).await.unwrap();
            }
        })
    });
    let rt = runtime();
    let elapsed = rt.block_on(async move {
        b.set_nonblocking(true).unwrap();
        let b = tokio::net::UnixStream::from_std(b).unwrap();
        let mut stream = FramedRead::with_capacity(b, FrameCodec::default(), 64 << 10);
        let start = Instant::now();
        let mut total = 0;
        for _ in 0..iters {
            let frame = stream.next().await.unwrap().unwrap();
            total += frame.view().unwrap().payload.unwrap().len();
        }
        assert_eq!(total as u64, iters * LARGE as u64);
        start.elapsed()
    });
    writer.join().unwrap();
    elapsed
}

/// The raw floor: `capnp::serialize::write_message` / `read_message` on blocking sockets.
fn raw_over_uds(iters: u64) -> Duration {
    let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let writer = std::thread::spawn(move || {
        let payload = vec![0xa5; LARGE];
        for _ in 0..iters {
            let mut message = capnp::message::Builder::new_default();
            let mut y = message.init_root::<schema::msg::Builder<'_>>().init_yield();
            y.set_cid(42);
            y.set_payload(&payload);
            capnp::serialize::write_message(&mut a, &message).unwrap();
        }
        a.flush().unwrap();
    });
    let mut reader = BufReader::with_capacity(64 << 10, b);
    let start = Instant::now();
    let mut total = 0;
    for _ in 0..iters {
        let message = capnp::serialize::read_message(&mut reader, Default::default()).unwrap();
        let root = message.get_root::<schema::msg::Reader<'_>>().unwrap();
        if let schema::msg::Yield(y) = root.which().unwrap() {
            total += y.unwrap().get_payload().unwrap().len();
        }
    }
    let elapsed = start.elapsed();
    assert_eq!(total as u64, iters * LARGE as u64);
    writer.join().unwrap();
    elapsed
}

fn large(c: &mut Criterion) {
    let mut g = c.benchmark_group("large");
    g.throughput(Throughput::Bytes(LARGE as u64));
    g.bench_function("raw_capnp_serialize_uds_1MiB", |b| b.iter_custom(raw_over_uds));
    g.bench_function("codec_uds_1MiB", |b| b.iter_custom(codec_over_uds));
    g.finish();
}

/// Two framed ends of a fresh Unix socket pair.
fn framed_pair() -> (plough_ipc_wire::FramedConnection, plough_ipc_wire::FramedConnection) {
    let (a, b) = tokio::net::UnixStream::pair().unwrap();
    let conn = |s| plough_ipc_wire::Connection::from_unix(s).unwrap();
    (
        plough_ipc_wire::FramedConnection::new(conn(a), FrameCodec::default()),
        plough_ipc_wire::FramedConnection::new(conn(b), FrameCodec::default()),
    )
}

/// One end of the bare hello exchange: send ours, read theirs.
async fn say_hello(f: &mut plough_ipc_wire::FramedConnection, hello: Msg) -> Msg {
    f.send(hello).await.unwrap();
    f.next().await.unwrap().unwrap().decode().unwrap()
}

fn handshake(c: &mut Criterion) {
    use plough_ipc_wire::{Aid, Credentials, HandshakeConfig, Hello, Secret, Uuid, handshake};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let aid = |n: u8| Aid { name: format!("actor-{n}"), uuid: Uuid([n; 16]), pid: 1 };
    let secret = Secret::from_bytes([7; 32]);
    let (ca, cb) =
        (Credentials { aid: aid(1), secret: secret.clone() }, Credentials { aid: aid(2), secret });
    let config = HandshakeConfig::default();
    let mut g = c.benchmark_group("handshake");
    g.bench_function("floor_hello_exchange_socketpair", |b| {
        b.iter(|| {
            rt.block_on(async {
                let (mut a, mut b) = framed_pair();
                let hello = |aid| {
                    Msg::Hello(Box::new(Hello {
                        aid,
                        nonce: vec![0; 32].into(),
                        build: Default::default(),
                        batches: true,
                        reads_shm: false,
                    }))
                };
                black_box(tokio::join!(
                    say_hello(&mut a, hello(aid(1))),
                    say_hello(&mut b, hello(aid(2)))
                ))
            })
        })
    });
    g.bench_function("authenticated_handshake_socketpair", |b| {
        b.iter(|| {
            rt.block_on(async {
                let (x, y) = tokio::net::UnixStream::pair().unwrap();
                let conn = |s| plough_ipc_wire::Connection::from_unix(s).unwrap();
                let (ea, eb) = tokio::join!(
                    handshake::initiate(conn(x), &ca, &config),
                    handshake::respond(conn(y), &cb, &config)
                );
                black_box((ea.unwrap().peer, eb.unwrap().peer))
            })
        })
    });
    g.finish();
}

/// A test CA's identities for hosts `node-a` and `node-b`.
fn tls_pair() -> (plough_ipc_wire::TlsIdentity, plough_ipc_wire::TlsIdentity) {
    use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca.self_signed(&ca_key).unwrap();
    let host = |name: &str| {
        let mut p = CertificateParams::new(vec![name.to_owned()]).unwrap();
        p.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
        plough_ipc_wire::TlsIdentity::from_pem(
            ca.pem().as_bytes(),
            cert.pem().as_bytes(),
            key.serialize_pem().as_bytes(),
        )
        .unwrap()
    };
    (host("node-a"), host("node-b"))
}

/// Accepts on `l` and dials it (with `id` for TLS): both ends' established connections.
async fn open_pair(
    l: &plough_ipc_wire::Listener,
    id: Option<&plough_ipc_wire::TlsIdentity>,
    (server, client): (&plough_ipc_wire::Credentials, &plough_ipc_wire::Credentials),
    config: &plough_ipc_wire::HandshakeConfig,
) -> (plough_ipc_wire::Established, plough_ipc_wire::Established) {
    use plough_ipc_wire::handshake;
    let addr = l.local_addr().clone();
    let accept = async { handshake::respond(l.accept().await.unwrap(), server, config).await };
    let (s, c) = tokio::join!(accept, handshake::connect_with(&addr, client, config, id));
    (s.unwrap(), c.unwrap())
}

fn tcp_tls(c: &mut Criterion) {
    use plough_ipc_wire::BuildId;
    use plough_ipc_wire::{Address, Aid, Credentials, HandshakeConfig, Listener, Secret, Uuid};
    let rt = runtime();
    let aid = |n: u8| Aid { name: format!("actor-{n}"), uuid: Uuid([n; 16]), pid: 1 };
    let secret = Secret::from_bytes([7; 32]);
    let (ca, cb) =
        (Credentials { aid: aid(1), secret: secret.clone() }, Credentials { aid: aid(2), secret });
    let config = HandshakeConfig::default();
    let (server_id, client_id) = tls_pair();
    BuildId::current().unwrap();
    let tcp: Address = "tcp://127.0.0.1:0".parse().unwrap();
    let tls: Address = "tls://node-a@127.0.0.1:0".parse().unwrap();
    let (tcp_l, tls_l) = rt.block_on(async {
        (
            Listener::bind(&tcp).await.unwrap(),
            Listener::bind_with(&tls, Some(&server_id)).await.unwrap(),
        )
    });
    let open = |l, id| open_pair(l, id, (&ca, &cb), &config);
    let mut g = c.benchmark_group("tcp_tls");
    g.bench_function("open_plaintext_tcp_loopback", |b| {
        b.iter(|| black_box(rt.block_on(open(&tcp_l, None))))
    });
    g.bench_function("open_mutual_tls_loopback", |b| {
        b.iter(|| black_box(rt.block_on(open(&tls_l, Some(&client_id)))))
    });
    for (name, l, id) in [
        ("roundtrip_64B_plaintext_tcp_loopback", &tcp_l, None),
        ("roundtrip_64B_mutual_tls_loopback", &tls_l, Some(&client_id)),
    ] {
        let (mut s, mut cl) = rt.block_on(open(l, id));
        let msg = yield_msg(SMALL);
        g.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    cl.framed.send(&msg).await.unwrap();
                    let got = s.framed.next().await.unwrap().unwrap();
                    s.framed.send(&msg).await.unwrap();
                    black_box((got, cl.framed.next().await.unwrap().unwrap()))
                })
            })
        });
    }
    g.finish();
}

fn build_id(c: &mut Criterion) {
    let exe = std::fs::read_link("/proc/self/exe").unwrap();
    let mb = std::fs::metadata(&exe).unwrap().len() as f64 / 1e6;
    let mut g = c.benchmark_group("build_id");
    g.sample_size(10);
    g.bench_function(format!("sha256_of_this_executable_{mb:.0}MB"), |b| {
        b.iter(|| black_box(plough_ipc_wire::BuildId::of_file(&exe).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, small, large, handshake, tcp_tls, build_id);
criterion_main!(benches);
