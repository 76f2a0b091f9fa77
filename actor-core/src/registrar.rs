//! **registrar** — the layer above calls: which actors of a tree are alive, and where
//! they listen.
//!
//! The root becomes the registrar when nothing answers on the registry address (or joins
//! the one that does). Every actor registers itself over a connection it keeps open, and
//! unregisters on exit; when that connection drops (the actor crashed or was killed), its
//! entries go with it, so lookups never hand out a dead actor. Duplicate names are allowed:
//! every actor of that name is listed.
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
