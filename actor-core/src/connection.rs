//! **connection** — the layer above base: one handshaken connection to a peer actor, and
//! the calls multiplexed over it ([`Channel`]).
//!
//! This layer knows messages and call ids, not what a call means. It hands traffic up
//! through the two traits it owns, so the layers above plug in without being imported:
//! * [`Serve`]: a peer asks us to run something (`Start`), or the connection ended;
//! * [`Conversation`]: the routed half of a long-lived call (a context), into which the
//!   reader task delivers that call's messages.

mod batch;
mod buffered;
mod channel;
mod lend;
mod mailbox;
#[cfg(test)]
pub(crate) mod testing;

pub(crate) use buffered::BufferedBytes;
pub(crate) use channel::{CallRx, Channel};

use crate::base::error::ActorError;
use plough_ipc_wire::msg::{Msg, Start};

/// What a channel hands to the actor that serves it.
pub(crate) trait Serve: Send + Sync + 'static {
    /// A peer asks us to run something.
    fn serve(&self, channel: &Channel, start: Start);
    /// The connection ended (EOF, error, or local close).
    fn closed(&self, channel: &Channel);
}

/// The routed half of a long-lived call: the reader task delivers every message carrying
/// its cid here. Every method runs on the reader task and must never block (that would
/// stall every other call on the connection).
pub(crate) trait Conversation: Send + Sync + 'static {
    /// One message from the peer for this call.
    fn deliver(&self, msg: Msg, channel: &Channel);
    /// The peer granted more stream credit.
    fn grant(&self, credit: Credit);
    /// The connection is gone.
    fn transport_closed(&self, err: ActorError);
}

/// Stream credit a receiver grants back to its sender: the messages and bytes of its
/// buffer that it freed (or added). It travels as the argument of the reserved function
/// `plough.credit`, a `(messages, bytes)` pair.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Credit {
    /// Messages.
    pub(crate) messages: u32,
    /// Bytes of payload.
    pub(crate) bytes: u64,
}
