//! Fault injection for tests (the `testing` feature): break a connection on purpose, from
//! either end or both, to test what calls in flight get and that nothing hangs or leaks.
//!
//! A broken connection is what a crashed network stack or a peer's lost socket looks like:
//! the connection is dropped at once, nothing queued on it is written, and no goodbye is
//! said. Every call, context and stream on it fails as for any lost connection:
//! [`ActorError::TransportClosed`] (or [`ActorError::ActorDied`], through a nursery, when
//! the peer is a child that died of it). A child whose connection to its parent breaks
//! cancels itself and exits, as when its parent goes away.

use super::portal::Portal;
use crate::base::error::{ActorError, encode};
use crate::base::names::SEVER;

/// Which end of a connection [`Portal::break_connection`] breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakSide {
    /// This end (through a parent's portal to a child: the parent side) drops it.
    Local,
    /// The peer drops its end (the child side), at this end's request.
    Remote,
    /// Both: the request to the peer goes out, and this end drops it at once; whichever
    /// end closes first, both are closed.
    Both,
}

impl Portal {
    /// Breaks the connection under this portal on purpose (fault injection for tests,
    /// the `testing` feature); returns once it is broken at this end. It is dropped at
    /// once, nothing queued on it is written, and every call, context and stream on it
    /// fails as for any lost connection: [`ActorError::TransportClosed`] (through a
    /// nursery, [`ActorError::ActorDied`] when the child died of it). A child whose
    /// connection to its parent breaks cancels itself and exits.
    ///
    /// # Errors
    ///
    /// [`BreakSide::Remote`] to a peer built without the `testing` feature: its
    /// `NoSuchFunction` answer (the connection stays up).
    pub async fn break_connection(&self, side: BreakSide) -> Result<(), ActorError> {
        match side {
            BreakSide::Local => {
                self.channel().sever("broken on purpose (testing), at this end");
                Ok(())
            }
            BreakSide::Remote => match self.run_payload(SEVER, encode(&())?).await {
                // The peer drops the connection without answering.
                Err(ActorError::TransportClosed { .. } | ActorError::ActorDied { .. }) => Ok(()),
                Err(e) => Err(e),
                Ok(_) => Err(ActorError::Protocol {
                    peer: self.aid().to_string(),
                    detail: format!("`{SEVER}` was answered: the connection was not broken"),
                }),
            },
            BreakSide::Both => {
                let mut request = std::pin::pin!(self.run_payload(SEVER, encode(&())?));
                // One poll queues the request for the writer, which sends what is queued
                // before it looks at the close.
                let _ = futures::poll!(request.as_mut());
                self.channel().sever("broken on purpose (testing), at both ends");
                Ok(())
            }
        }
    }
}
