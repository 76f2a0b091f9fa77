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

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// `token.cancelled()`, cheap to poll again.
///
/// A `select!` polls every branch each time its task wakes, and a token's own future
/// locks the token's waiter list on every poll to check its waker — in a loop that reads
/// frames or runs a nursery's body, once per message. This one polls the token's future
/// only when it may have something new to say: the first time, after the token was
/// cancelled, or with a waker other than the one it last registered. In between it answers
/// `Pending` after a look at the flag; no wake-up is lost, since cancelling sets the flag
/// before it wakes the registered waker.
///
/// "The same waker" is the same pair of pointers (data, vtable) as the waker passed to the
/// poll that registered — what `Waker::will_wake` compares, but against that waker and not
/// the clone the token keeps: a clone of tokio's `block_on` waker carries a vtable of its
/// own, so `will_wake` against it is always false there (and the root's body runs there).
/// The token's clone keeps the waker's data alive, so a match is never a reused address.
pub(crate) fn cancelled(token: &CancellationToken) -> Cancelled<'_> {
    Cancelled { token, wait: token.cancelled(), registered: None }
}

pin_project_lite::pin_project! {
    /// See [`cancelled`].
    pub(crate) struct Cancelled<'a> {
        token: &'a CancellationToken,
        #[pin]
        wait: WaitForCancellationFuture<'a>,
        // The (data, vtable) addresses of the waker the token's future last registered.
        registered: Option<(usize, usize)>,
    }
}

/// A waker's identity: the addresses `Waker::will_wake` compares.
fn identity(w: &Waker) -> (usize, usize) {
    (w.data() as usize, std::ptr::from_ref(w.vtable()) as usize)
}

impl Future for Cancelled<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let waker = identity(cx.waker());
        if *this.registered == Some(waker) && !this.token.is_cancelled() {
            return Poll::Pending;
        }
        let out = this.wait.poll(cx);
        *this.registered = out.is_pending().then_some(waker);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polled again and again with one waker it stays pending without asking the token;
    /// a cancel wakes that waker and the next poll is ready; a new waker is registered.
    #[test]
    fn a_cancel_wakes_the_registered_waker_and_a_new_waker_replaces_it() {
        struct Count(std::sync::atomic::AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: std::sync::Arc<Self>) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let woken = |c: &std::sync::Arc<Count>| c.0.load(std::sync::atomic::Ordering::SeqCst);
        let (a, b) = (std::sync::Arc::new(Count(0.into())), std::sync::Arc::new(Count(0.into())));
        let (wa, wb) =
            (Waker::from(std::sync::Arc::clone(&a)), Waker::from(std::sync::Arc::clone(&b)));
        let token = CancellationToken::new();
        let mut f = std::pin::pin!(cancelled(&token));
        for _ in 0..3 {
            assert!(f.as_mut().poll(&mut Context::from_waker(&wa)).is_pending());
        }
        // Another task polls it now: it is the one to wake.
        assert!(f.as_mut().poll(&mut Context::from_waker(&wb)).is_pending());
        assert!(f.as_mut().poll(&mut Context::from_waker(&wb)).is_pending());
        token.cancel();
        assert_eq!((woken(&a), woken(&b)), (0, 1), "the cancel woke the last waker only");
        assert!(f.as_mut().poll(&mut Context::from_waker(&wb)).is_ready());
        // Made after the cancel: ready at once.
        assert!(std::pin::pin!(cancelled(&token)).poll(&mut Context::from_waker(&wa)).is_ready());
    }
}
