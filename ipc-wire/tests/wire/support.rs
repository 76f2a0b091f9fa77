//! Shared helpers: sample messages, a bounded runtime, a framed socket pair.

use plough_ipc_wire::{
    Aid, Connection, Credentials, FrameCodec, Limits, Msg, Payload, Secret, Uuid,
};
use std::future::Future;
use std::time::Duration;
use tokio::net::UnixStream;
use tokio_util::codec::Framed;

/// Every test's budget.
pub const BUDGET: Duration = Duration::from_secs(20);

/// Runs `fut` on a current-thread runtime (what actors use), bounded by [`BUDGET`].
pub fn run<F: Future>(fut: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(
        async { tokio::time::timeout(BUDGET, fut).await.expect("test exceeded its budget") },
    )
}

pub fn aid(name: &str) -> Aid {
    Aid { name: name.into(), uuid: Uuid([0x5a; 16]), pid: std::process::id() }
}

/// The tests' tree secret.
pub fn secret() -> Secret {
    Secret::from_bytes([0x42; 32])
}

/// `name` with the tests' secret.
pub fn creds(name: &str) -> Credentials {
    Credentials { aid: aid(name), secret: secret() }
}

pub fn yield_msg(cid: u64, payload: &[u8]) -> Msg {
    Msg::Yield { cid, payload: Payload::from(payload.to_vec()) }
}

/// Two framed ends of a Unix socket pair.
pub fn framed_pair(
    limits: Limits,
) -> (Framed<Connection, FrameCodec>, Framed<Connection, FrameCodec>) {
    let (a, b) = UnixStream::pair().expect("socketpair");
    let wrap =
        |s| Framed::new(Connection::from_unix(s).expect("peer cred"), FrameCodec::new(limits));
    (wrap(a), wrap(b))
}
