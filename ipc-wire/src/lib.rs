//! plough's wire: the Cap'n Proto protocol every actor speaks, a limit-checked framing
//! codec, addresses, and UDS/TCP transports with a bounded handshake.
//!
//! ```
//! use futures::{SinkExt, StreamExt};
//! use plough_ipc_wire::{Aid, Credentials, HandshakeConfig, Listener, Msg, Payload, Secret, Uuid, handshake};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let addr = plough_ipc_wire::Address::uds_for_actor(dir.path(), "root", std::process::id())?;
//! // Both ends hold the tree's secret (a user's lives in the runtime directory; see `auth`).
//! let secret = Secret::generate()?;
//! let me = |name: &str| Credentials {
//!     aid: Aid { name: name.into(), uuid: Uuid([7; 16]), pid: std::process::id() },
//!     secret: secret.clone(),
//! };
//! let config = HandshakeConfig::default();
//! let mut acceptor = plough_ipc_wire::Acceptor::new(Listener::bind(&addr).await?, me("root"), config);
//!
//! let child = me("child");
//! let (server, client) = tokio::join!(acceptor.accept(), handshake::connect(&addr, &child, &config));
//! let (mut server, mut client) = (server, client?);
//! assert_eq!(server.peer.name, "child");
//!
//! // Payloads are MessagePack by default; the frame shares its buffer with the payload.
//! client.framed.send(Msg::Return { cid: 1, payload: Payload::encode(&(1, "two"))? }).await?;
//! let frame = server.framed.next().await.expect("a frame")?;
//! let msg = frame.decode()?;
//! assert_eq!(msg.cid(), Some(1));
//! assert_eq!(msg.decode_payload::<(u32, String)>()?, (1, "two".to_owned()));
//! # Ok(())
//! # }
//! ```
//!
//! # Layers
//!
//! * [`Msg`] — the owned mirror of `schema/plough.capnp`; [`generated`] holds the raw
//!   Cap'n Proto readers and builders. An [`ErrorMsg`] says which failure it reports with
//!   an [`ErrorKind`].
//! * [`Payload`], [`PayloadCodec`], [`MsgPack`], [`MsgTypeError`] — the opaque payload bytes
//!   and the serde codec that fills them.
//! * [`FrameCodec`], [`Limits`], [`Frame`], [`MsgView`] — framing with the limits checked
//!   before allocation; a frame decodes to a `Msg` or, zero-copy, to a `MsgView`.
//! * [`Address`], [`runtime_dir`], [`Listener`], [`Connection`], [`connect`] — transports;
//!   [`tls`] ([`TlsIdentity`], [`TlsFiles`], [`TlsFailure`]) — mutual TLS between hosts.
//! * [`BuildId`] — which build a process runs, compared between hosts.
//! * [`auth`] — the tree's [`Secret`] (a user's in a `0600` file) and the proof of it.
//! * [`handshake`], [`Acceptor`] — the `Hello` exchange and the mutual proof under a
//!   deadline; strangers are refused, told why, and bounded.
//!
//! # Module layering
//!
//! The modules depend on each other one way, with no import cycle; from the bottom:
//!
//! 1. Leaves, which import no other module: [`generated`] (the Cap'n Proto code), `arena`
//!    (the in-place segment allocator), `msg_kind` ([`MsgKind`]), `limits` ([`Limits`]),
//!    [`runtime_dir`] (the socket directory, and [`AddressError`]), [`tls`] (identities
//!    and TLS failures) and [`build_id`].
//! 2. `error_kind` ([`ErrorKind`]) on `generated`; [`address`] on `runtime_dir` and
//!    `tls`; [`error`] and [`payload`] on `msg_kind`.
//! 3. [`msg`] on the layers below: the owned messages and their conversion to and from
//!    the generated code.
//! 4. [`frame`] on `msg` and `limits`; then [`codec`] on `frame`, `arena` and `limits`;
//!    then [`writer`] on `codec`.
//! 5. [`transport`] on `address`, `runtime_dir` and `tls`; [`auth`] on `runtime_dir`; then
//!    [`handshake`] on `codec`, `transport`, `auth`, `tls` and `build_id`.
//!
//! A type that two modules need lives in the lower one and is re-exported where it has
//! always been found: `msg::MsgKind`, `codec::Limits`, `address::AddressError`, and
//! everything at the crate root.
//!
//! # Writing efficiently
//!
//! A `Framed`/`FramedWrite` sink encodes each message straight into its write buffer, so a
//! payload is copied once; a [`FrameWriter`] does the same for small payloads and copies
//! a large one not at all (it leaves from its own bytes in a vectored write). `SinkExt::send` flushes every message (one `write` each); to
//! batch, `feed` several and `flush` once (raise `set_backpressure_boundary` above the
//! default 8 KiB for large batches): they leave in one `write`.
//!
//! Errors are split by blast radius: a [`FrameError`] ends a connection, a [`MsgError`]
//! fails one message. This crate knows nothing of actors beyond the schema.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod address;
mod arena;
pub mod auth;
pub mod build_id;
pub mod codec;
pub mod error;
mod error_kind;
pub mod frame;
pub mod generated;
pub mod handshake;
mod limits;
pub mod msg;
mod msg_kind;
pub mod payload;
mod recv_pool;
pub mod runtime_dir;
pub mod tls;
pub mod transport;
pub mod writer;

pub use address::{Address, AddressError};
pub use auth::{Secret, SecretError};
pub use build_id::{BuildId, BuildIdError, ExeBuild};
pub use codec::{FrameBudget, FrameCodec, Limits, PartialFrameClock};
pub use error::{FrameError, MsgError, SegmentTableError};
pub use frame::{Frame, MsgView};
pub use handshake::{
    AcceptEvent, Acceptor, BuildCheck, Credentials, Established, FramedConnection, HandshakeConfig,
    HandshakeError, PeerKeys, Refusal,
};
pub use msg::{
    Aid, CallKind, CancelAck, Cid, ErrorKind, ErrorMsg, ErrorValue, Hello, InvalidUuid, Msg,
    MsgKind, RuntimeVars, SpawnSpec, Start, StartAck, TraceContext, TypeErrorInfo, Uuid,
};
pub use payload::{MsgPack, MsgTypeError, Payload, PayloadCodec, PayloadEncodeError, ShmRef};
pub use tls::{TlsConfigError, TlsFailure, TlsFiles, TlsIdentity, TlsPeer};
pub use transport::{
    AcceptError, Connection, FdReserve, Listener, Peer, SecureError, TransportError, connect,
    connect_with,
};
pub use writer::FrameWriter;
