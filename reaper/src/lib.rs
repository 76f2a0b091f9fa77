//! Find and reap plough actors that outlived their tree, sweep `/dev/shm` and stale
//! socket files, and tell a test run whether it leaked any of them.
//!
//! plough's runtime makes leaks impossible by design (nurseries reap their children,
//! children die with their parent); this crate is the independent check that catches
//! what gets through anyway — a SIGKILLed root, a crashed test run — and the oracle the
//! test matrix uses to prove that nothing did.
//!
//! ```no_run
//! use plough_reaper::{Options, Snapshot, reap, run};
//!
//! // `plough-reap` in code: SIGINT, 3 s, SIGKILL every orphaned actor of ours.
//! let report = run(&Options::orphans())?;
//! print!("{report}");
//!
//! // The leak oracle.
//! let before = Snapshot::take();
//! // ... run something ...
//! let leaks = before.leaked_since();
//! if !leaks.is_empty() {
//!     eprintln!("{leaks}");
//!     reap(&leaks);
//! }
//! # Ok::<(), plough_reaper::ReapError>(())
//! ```
//!
//! # What counts as an actor
//! Only a marker file in a runtime directory of ours, naming a process that runs with
//! the recorded start time and our uid (see [`plough_fork_prims::marker`]). Process
//! names, command lines and environments are never evidence; processes and files of
//! other users are never touched.

pub mod actors;
pub mod dumps;
mod error;
mod guard;
pub mod ladder;
mod oracle;
pub mod procs;
mod reap;
pub mod shm;
pub mod uds;

pub use actors::{Actor, Selection, find_actors};
pub use error::ReapError;
pub use guard::LeakGuard;
pub use ladder::{Interrupt, Outcome, Target, terminate, terminate_until};
pub use oracle::{Leaks, ReapReport, Snapshot, reap, reap_with};
pub use reap::{ActorReport, DEFAULT_GRACE, Options, Report, reap_actors, reap_actors_until, run};
