//! A host's plough listener for the netns suites: `tls_echo <ca> <cert> <key> <tls addr>
//! <tcp addr>` binds both addresses with the TLS identity (so the plain TCP one admits
//! this host's peers only), prints `LISTENING <tls addr> <tcp addr>`, then one line per
//! connection — `ESTABLISHED <peer host>` or `REJECTED <error>` — and echoes every frame
//! of an established connection back. It runs until killed (its lab kills it).

use futures::{SinkExt, StreamExt};
use plough::ipc_wire::{
    AcceptEvent, Acceptor, Address, Aid, Credentials, HandshakeConfig, Listener, Secret, TlsFiles,
    TlsIdentity, Uuid,
};
use std::io::Write;

/// The secret both ends of the netns suites hold (a test's, never a user's).
pub const TEST_SECRET: [u8; 32] = [0x42; 32];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [ca, cert, key, tls, tcp] = &args[..] else {
        eprintln!("usage: tls_echo <ca> <cert> <key> <tls addr> <tcp addr>");
        std::process::exit(2);
    };
    let files = TlsFiles { ca: ca.into(), cert: cert.into(), key: key.into() };
    let identity = TlsIdentity::load(&files).expect("the TLS identity");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async move {
        let me = Credentials {
            aid: Aid { name: "echo".into(), uuid: Uuid([9; 16]), pid: std::process::id() },
            secret: Secret::from_bytes(TEST_SECRET),
        };
        let config = HandshakeConfig::default();
        let bind = |a: &String| {
            let addr: Address = a.parse().expect("an address");
            let identity = identity.clone();
            async move { Listener::bind_with(&addr, Some(&identity)).await.expect("bind") }
        };
        let mut tls_side = Acceptor::new(bind(tls).await, me.clone(), config);
        let mut tcp_side = Acceptor::new(bind(tcp).await, me, config);
        say(&format!("LISTENING {} {}", tls_side.local_addr(), tcp_side.local_addr()));
        let mut echoes = tokio::task::JoinSet::new();
        loop {
            let event = tokio::select! {
                e = tls_side.accept_event() => e,
                e = tcp_side.accept_event() => e,
                Some(_) = echoes.join_next(), if !echoes.is_empty() => continue,
            };
            match event {
                AcceptEvent::Established(est) => {
                    let host = est
                        .framed
                        .get_ref()
                        .tls_peer()
                        .and_then(|p| p.host().map(str::to_owned))
                        .unwrap_or_else(|| "(plaintext)".into());
                    say(&format!("ESTABLISHED {host}"));
                    let mut framed = est.framed;
                    echoes.spawn(async move {
                        while let Some(Ok(frame)) = framed.next().await {
                            let Ok(msg) = frame.decode() else { break };
                            if framed.send(msg).await.is_err() {
                                break;
                            }
                        }
                    });
                }
                AcceptEvent::Rejected(e) => say(&format!("REJECTED {e}")),
            }
        }
    });
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
