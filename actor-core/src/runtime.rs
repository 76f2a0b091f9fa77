//! **runtime** — the top layer: starting a process's actor.
//!
//! A program registers its handlers in one [`Registry`](crate::Registry) and hands
//! control to [`Runtime::run`](root::Runtime::run). Child mode is dispatched there, before
//! any of the program's own code runs: an exec'd child finds the hidden `--plough-child`
//! argument and becomes the child actor instead (and exits when it is done); a forked
//! child enters the child entry ([`child`]) directly from its backend. Either way each
//! actor runs on a fresh **current-thread** tokio runtime (a multi-thread runtime built
//! after `fork` can hang: see the design notes, `docs/design.md`, "Measured here").
//!
//! * [`root`]: [`Runtime`](root::Runtime), the root actor, SIGINT;
//! * [`child`]: a spawned child from its entry point to its exit;
//! * [`signals`]: signals as typed values, from a `signalfd`;
//! * [`listen`]: binding and addresses;
//! * [`failover`]: joining or becoming the registrar, and registering again when it is lost;
//! * [`body_task`]: the root's future as a task of its runtime.

mod body_task;
pub(crate) mod child;
pub(crate) mod failover;
pub(crate) mod listen;
pub(crate) mod root;
pub(crate) mod signals;
