//! The limits of `plough-host`'s own code, named in one place.

/// The most host names one Slurm hostlist expression may expand to (a typo such as
/// `node[1-99999999]` is refused instead of filling memory). Slurm's own largest
/// clusters have some 10⁴ nodes.
pub const MAX_HOSTLIST_HOSTS: usize = 1 << 16;
/// The most replicas [`crate::discover::stateful_set`] names.
pub const MAX_REPLICAS: u32 = 1 << 16;
