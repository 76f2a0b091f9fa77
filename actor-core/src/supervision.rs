//! **supervision** — the layer above serving: scoped children and how they go down.
//!
//! * [`nursery`]: [`Nursery`](nursery::Nursery), one-cancels-all, `run_in_actor` results,
//!   the drop guard; `Actor::nursery` and `Cx::nursery` are defined here;
//! * [`boot`]: a child from its spawn until it is the nursery's member;
//! * [`cluster`]: [`Cluster`](cluster::Cluster), N actors started together (tractor's
//!   `open_actor_cluster`);
//! * [`options`]: [`SpawnOptions`](options::SpawnOptions), what a spawn chooses for its child;
//! * [`ladder`]: the cancellation ladder for one child, and reaping;
//! * [`supervisor`]: OTP restart strategies over children, with restart intensity;
//! * [`pool`]: a worker pool whose jobs survive their workers' deaths.

pub(crate) mod boot;
pub(crate) mod cluster;
pub(crate) mod ladder;
pub(crate) mod nursery;
pub(crate) mod options;
pub(crate) mod pool;
pub(crate) mod process;
pub(crate) mod remote;
pub(crate) mod supervisor;
pub(crate) mod typed_run;
