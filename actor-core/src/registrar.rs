//! **registrar** — the layer above calls: which actors of a tree are alive, and where
//! they listen.
//!
//! The root becomes the registrar when nothing answers on the registry address (or joins
//! the one that does). Every actor registers itself over a connection it keeps open, and
//! unregisters on exit; when that connection drops (the actor crashed or was killed), its
//! entries go with it, so lookups never hand out a dead actor. Duplicate names are allowed:
//! every actor of that name is listed; entries are keyed by uuid, so registering again
//! replaces, never duplicates.
//!
//! The registrar is not its first root's for good: when that root goes, the actors that
//! registered with it over a connection of their own register again with its successor
//! (the runtime layer's `failover` runs the election), and the [`client::RegistrarLink`]
//! of each lets lookups wait out the gap instead of failing.
//!
//! * [`state`]: the pure bookkeeping;
//! * [`service`]: the reserved `plough.registrar.*` functions over it;
//! * [`client`]: an actor's link to its registrar, and a passer-by's listing.
//!
//! It needs only the connection (to answer) and calls (a portal, to ask).

pub(crate) mod client;
pub(crate) mod entry;
pub(crate) mod service;
pub(crate) mod state;

#[cfg(test)]
mod tests;
