//! [`MsgKind`]: which member of the schema's `Msg` union a message is.
//!
//! A leaf of the module graph on purpose: the error types (`error`) and the payload codec
//! (`payload`) name a message's kind, and `msg`, which builds on both, maps the schema's
//! union onto it. With the enum below all three, they point one way. Public paths:
//! `plough_ipc_wire::msg::MsgKind` and `plough_ipc_wire::MsgKind`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The kinds of [`Msg`](crate::Msg), for routing and error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum MsgKind {
    Hello,
    SpawnSpec,
    Start,
    StartAck,
    Started,
    Yield,
    Stop,
    Return,
    CancelAck,
    Error,
    Proof,
}

impl MsgKind {
    /// The schema-style name, e.g. `start_ack`.
    pub const fn as_str(self) -> &'static str {
        match self {
            MsgKind::Hello => "hello",
            MsgKind::SpawnSpec => "spawn_spec",
            MsgKind::Start => "start",
            MsgKind::StartAck => "start_ack",
            MsgKind::Started => "started",
            MsgKind::Yield => "yield",
            MsgKind::Stop => "stop",
            MsgKind::Return => "return",
            MsgKind::CancelAck => "cancel_ack",
            MsgKind::Error => "error",
            MsgKind::Proof => "proof",
        }
    }
}

impl fmt::Display for MsgKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
