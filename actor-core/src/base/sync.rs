//! The one lock helper of the workspace, [`LockExt::locked`] from `plough-fork-prims`
//! (see its docs for when ignoring poison is sound).
//!
//! Every mutex of this crate guards bookkeeping that each critical section changes in one
//! step (an insert, a remove, a push, an assignment, a `retain` followed by a `push` that
//! cannot fail): routes of a connection, a context's inbox and flags, the registrar's
//! slots, a nursery's children and errors, the task table, the runtime vars. A panic in
//! another task while it held the lock leaves nothing half-written, so taking the lock
//! anyway is right, and honouring the poison would turn one panicking handler into a
//! wedged actor.

pub(crate) use plough_fork_prims::sync::LockExt;
