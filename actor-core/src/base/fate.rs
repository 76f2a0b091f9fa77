//! A child's fate: how its process ended, once it has. The supervision layer learns it
//! from the child's pidfd; the connection layer reads it to say, of a connection that was
//! lost, that the actor behind it died and how (see
//! [`ActorError::ActorDied`](crate::ActorError::ActorDied)).

use plough_fork_prims::ExitStatus;
use std::time::Duration;
use tokio::sync::watch;

/// Where a child's exit status becomes known (held by whoever waits for the process).
#[derive(Debug)]
pub(crate) struct FateTx(watch::Sender<Option<ExitStatus>>);

/// Reads a child's exit status, once known. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Fate(watch::Receiver<Option<ExitStatus>>);

/// A new, still unknown fate.
pub(crate) fn fate() -> (FateTx, Fate) {
    let (tx, rx) = watch::channel(None);
    (FateTx(tx), Fate(rx))
}

impl FateTx {
    /// The process ended with `status`.
    pub(crate) fn set(&self, status: ExitStatus) {
        self.0.send_replace(Some(status));
    }
}

impl Fate {
    /// The status, if the process has ended.
    pub(crate) fn now(&self) -> Option<ExitStatus> {
        *self.0.borrow()
    }

    /// The status, waiting at most `wait` for the process to end (`None`: still alive
    /// then, or nobody is waiting for it any more).
    pub(crate) async fn within(&self, wait: Duration) -> Option<ExitStatus> {
        let mut rx = self.0.clone();
        match tokio::time::timeout(wait, rx.wait_for(Option::is_some)).await {
            Ok(Ok(status)) => *status,
            _ => self.now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_fate_is_unknown_until_set_and_waits_at_most_its_bound() {
        let (tx, f) = fate();
        assert_eq!(f.now(), None);
        assert_eq!(f.within(Duration::from_millis(20)).await, None);
        let g = f.clone();
        let waiter = tokio::spawn(async move { g.within(Duration::from_secs(30)).await });
        tx.set(ExitStatus::Exited(3));
        assert_eq!(waiter.await.unwrap(), Some(ExitStatus::Exited(3)));
        assert_eq!(f.now(), Some(ExitStatus::Exited(3)));
        drop(tx);
        assert_eq!(f.within(Duration::from_secs(30)).await, Some(ExitStatus::Exited(3)));
    }
}
