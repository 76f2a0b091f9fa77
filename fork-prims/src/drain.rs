//! Waiting, before the process exits, until no child of ours is left between states:
//! neither being forked for a requester that is gone nor queued for the reaper thread.
//!
//! The top of the crate's module order: it asks `forkserver` (fork requests in flight)
//! and `reap_queue` (children queued), so that `reap_queue`, below `forkserver`, need
//! not ask upwards.

use crate::forkserver::forks_in_flight;
use crate::reap_queue::pending_reaps;

/// Waits (at most `limit`) until no fork request is in flight and the reaper thread has
/// reaped every child handed to it; returns whether it did. Call before the process
/// exits: a child still being forked for a requester that is gone, or still queued,
/// would be orphaned (and, once dead, left as a zombie of whoever inherits it).
pub fn drain_reaper(limit: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    let mut pause = std::time::Duration::from_micros(200);
    while forks_in_flight() > 0 || pending_reaps() > 0 {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(20));
    }
    true
}
