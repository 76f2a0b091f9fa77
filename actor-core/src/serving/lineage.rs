//! From an actor to its parent and to its tree's root (tractor's `current_actor()._parent_chan`
//! and `get_root()`).
//!
//! A child already holds an authenticated connection to its parent (it connected back at
//! boot, proving the tree's secret and its one-time spawn token): its parent portal is a
//! portal over that connection, so calls to the parent share it with the runtime's own
//! traffic. The root's address comes down the tree in the runtime vars (`root_addr`,
//! set by the root, passed on by every parent in the spawn spec); a portal to the root
//! is that connection again when the parent is the root, and otherwise a connection
//! dialed like every other: the handshake proves the tree's secret both ways.

use super::actor::Actor;
use crate::base::error::{ActorError, Misuse};
use crate::base::runtime_vars;
use crate::calls::portal::Portal;
use plough_ipc_wire::Address;

impl Actor {
    /// The parent's address; `None` in a root.
    pub fn parent_addr(&self) -> Option<&Address> {
        self.parent_slot().get().map(|(addr, _)| addr)
    }

    /// The address of this tree's root actor (this actor's own, in the root): from the
    /// runtime vars the root set and every spawn passed on. `None` only when the root
    /// predates the field.
    pub fn root_addr(&self) -> Option<Address> {
        if self.is_root() {
            return Some(self.addr().clone());
        }
        runtime_vars::get(false).root_addr
    }

    /// A portal to this actor's parent, over the connection the child made at boot. The
    /// parent serves what it exposes, as to anyone.
    ///
    /// # Errors
    ///
    /// [`Misuse::NoParent`] in a root; [`ActorError::TransportClosed`] when the
    /// connection to the parent is gone (then this actor is cancelling itself).
    pub fn parent_portal(&self) -> Result<Portal, ActorError> {
        let Some((addr, channel)) = self.parent_slot().get() else {
            return Err(Misuse::NoParent { actor: self.aid().clone() }.into());
        };
        if channel.is_closed() {
            let detail = "the connection to the parent is closed".to_owned();
            return Err(ActorError::TransportClosed { peer: addr.to_string(), detail });
        }
        Ok(self.portal(channel.clone()))
    }

    /// A portal to the root actor of this tree: the parent's connection when the parent
    /// is the root, otherwise a connection to the root's address (reused by later calls,
    /// see [`Actor::connect`]), authenticated like every other.
    ///
    /// # Errors
    ///
    /// [`Misuse::NoParent`] in the root itself (it has no portal to itself: call its
    /// functions directly); [`Misuse::NoRootAddr`] when the root's address was not passed
    /// down; `TransportClosed` when the root does not answer.
    pub async fn root_portal(&self) -> Result<Portal, ActorError> {
        if self.is_root() {
            return Err(Misuse::NoParent { actor: self.aid().clone() }.into());
        }
        let Some(root) = self.root_addr() else {
            return Err(Misuse::NoRootAddr.into());
        };
        if self.parent_addr() == Some(&root) {
            return self.parent_portal();
        }
        self.connect(&root).await
    }
}
