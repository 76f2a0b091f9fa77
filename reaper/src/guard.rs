//! [`LeakGuard`]: an integration test's proof that its tree left nothing behind.

use crate::oracle::{Leaks, Snapshot, reap_with};
use crate::procs::ProcTable;
use plough_fork_prims::marker::{MarkerInfo, read_markers};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

/// Which of the new things a guard answers for.
#[derive(Debug, Clone)]
enum Scope {
    /// Actors descending from this process or a watched pid, and their sockets.
    Descendants { watched: Vec<u32> },
    /// Everything new in the runtime directory, and every new shm segment of ours.
    Everything,
}

/// Snapshots plough's processes and files when created; [`LeakGuard::assert_clean`]
/// then waits (bounded) until what the test started is gone, and fails the test —
/// after reaping the leftovers — when it is not.
///
/// Tests run in parallel, so by default a guard answers only for actors that descend
/// from the test process (through the live process tree or the parent pids recorded in
/// markers, which survive a SIGKILLed parent) and for those actors' socket files; add
/// the pid of a root started as a subprocess with [`LeakGuard::watch`]. A test that owns
/// its runtime directory can use [`LeakGuard::in_dir`], which answers for everything new
/// in it and for every new `/dev/shm` segment of ours.
///
/// ```no_run
/// use plough_reaper::LeakGuard;
/// use std::time::Duration;
///
/// let guard = LeakGuard::new();
/// // ... run an actor tree ...
/// guard.assert_clean(Duration::from_secs(5));
/// ```
#[derive(Debug)]
pub struct LeakGuard {
    before: Snapshot,
    scope: Scope,
    reap_grace: Duration,
}

impl Default for LeakGuard {
    fn default() -> Self {
        LeakGuard::new()
    }
}

impl LeakGuard {
    /// A guard for this process's descendants in the default runtime directory.
    pub fn new() -> LeakGuard {
        LeakGuard::descendants_in(&plough_fork_prims::marker::default_runtime_dir())
    }

    /// A guard for this process's descendants in `runtime_dir`.
    pub fn descendants_in(runtime_dir: &Path) -> LeakGuard {
        LeakGuard {
            before: Snapshot::take_in(runtime_dir),
            scope: Scope::Descendants { watched: Vec::new() },
            reap_grace: Duration::from_secs(1),
        }
    }

    /// A guard for everything in `runtime_dir` (a directory the test owns) and for our
    /// new `/dev/shm` segments.
    pub fn in_dir(runtime_dir: &Path) -> LeakGuard {
        LeakGuard {
            before: Snapshot::take_in(runtime_dir),
            scope: Scope::Everything,
            reap_grace: Duration::from_secs(1),
        }
    }

    /// Also answer for the actors below `pid` (e.g. a root run as a subprocess).
    #[must_use]
    pub fn watch(mut self, pid: u32) -> LeakGuard {
        if let Scope::Descendants { watched } = &mut self.scope {
            watched.push(pid);
        }
        self
    }

    /// What this guard's test has left so far.
    pub fn leaks(&self) -> Leaks {
        let mut leaks = self.before.leaked_since();
        let Scope::Descendants { watched } = &self.scope else { return leaks };
        let mut ours: HashSet<u32> = watched.iter().copied().collect();
        ours.insert(std::process::id());
        let table = ProcTable::scan();
        // All markers, live or stale: a stale one still links a survivor to its tree.
        let markers: HashMap<u32, MarkerInfo> =
            read_markers(self.before.runtime_dir()).into_iter().map(|(_, m)| (m.pid, m)).collect();
        let descends = |m: &MarkerInfo| {
            ours.iter().any(|&a| table.is_descendant_of(m.pid, a))
                || recorded_chain_reaches(&markers, m, &ours)
        };
        let in_scope: HashSet<u32> = markers
            .values()
            .filter(|m| ours.contains(&m.pid) || descends(m))
            .map(|m| m.pid)
            .chain(ours.iter().copied())
            .collect();
        leaks.retain(
            |m| in_scope.contains(&m.pid),
            |p| crate::uds::socket_owner_pid(p).is_some_and(|pid| in_scope.contains(&pid)),
            |_| false,
        );
        // A half-written marker is attributable by its writer's pid only while that runs.
        leaks.half_written.retain(|(_, pid)| in_scope.contains(pid));
        leaks
    }

    /// Waits up to `timeout` for [`leaks`](Self::leaks) to be empty.
    ///
    /// # Panics
    /// When something is left at the deadline; the panic lists it, after the leftovers
    /// were reaped (SIGINT, 1 s, SIGKILL) so the next test starts clean.
    #[track_caller]
    pub fn assert_clean(self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let leaks = self.leaks();
            if leaks.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                let report = reap_with(&leaks, self.reap_grace);
                panic!(
                    "the test left plough resources behind after {:.1} s:\n{leaks}reaped:\n{report}",
                    timeout.as_secs_f64()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Whether `m`'s recorded parent chain reaches one of `roots`; each parent must have
/// started no later than its child, so recycled pids cannot splice chains together.
fn recorded_chain_reaches(
    markers: &HashMap<u32, MarkerInfo>,
    m: &MarkerInfo,
    roots: &HashSet<u32>,
) -> bool {
    let mut cur = m;
    for _ in 0..256 {
        if cur.parent_pid == 0 {
            return false;
        }
        if roots.contains(&cur.parent_pid) {
            return true;
        }
        match markers.get(&cur.parent_pid) {
            Some(p) if p.start_time <= cur.start_time => cur = p,
            _ => return false,
        }
    }
    false
}
