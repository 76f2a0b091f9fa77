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
//!
//! And two waits that are cheap to poll again, for the long-lived branches of a hot
//! `select!`: [`cancelled`] (a cancellation token) and [`when_woken`] (any future).

pub(crate) use plough_fork_prims::sync::LockExt;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

pin_project_lite::pin_project! {
    /// See [`when_woken`].
    pub(crate) struct WhenWoken<F> {
        #[pin]
        inner: F,
        // What the inner future wakes: a flag, and the task that polls us.
        wake: Arc<Woken>,
        // The identity of the waker of our last poll, once the inner future was pending.
        polled_by: Option<(usize, usize)>,
    }
}

/// What a [`WhenWoken`]'s inner future wakes.
#[derive(Default)]
struct Woken {
    flag: AtomicBool,
    task: futures::task::AtomicWaker,
}

impl std::task::Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.flag.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// `fut`, polled only after it woke its task (or by another task than last time).
///
/// For a long-lived branch of a `select!` that rarely fires (the signal watch beside the
/// root's body): the `select!` polls it on every wake-up of the body, and each such poll of
/// an I/O future takes its registration's lock to update its waker. Here the inner
/// future gets a waker of its own, which sets a flag before it wakes the task; a poll that
/// finds the flag unset, from the task that polled last, is `Pending` at once.
pub(crate) fn when_woken<F: Future>(fut: F) -> WhenWoken<F> {
    WhenWoken { inner: fut, wake: Arc::default(), polled_by: None }
}

impl<F: Future> Future for WhenWoken<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let caller = identity(cx.waker());
        if *this.polled_by == Some(caller) && !this.wake.flag.swap(false, Ordering::Acquire) {
            return Poll::Pending;
        }
        // Every time: a wake takes the registered waker.
        this.wake.task.register(cx.waker());
        this.wake.flag.store(false, Ordering::Relaxed);
        let inner = Waker::from(Arc::clone(this.wake));
        let out = this.inner.poll(&mut Context::from_waker(&inner));
        *this.polled_by = out.is_pending().then_some(caller);
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

    /// Polled again with no wake in between it stays pending without polling the inner
    /// future; the inner future's wake (twice: a wake takes the registered waker) and a
    /// new task each get it polled again.
    #[test]
    fn the_inner_future_is_polled_after_its_wake_or_for_another_task_only() {
        let polls = std::cell::Cell::new(0);
        let ready = std::cell::Cell::new(false);
        let inner_waker: std::cell::RefCell<Option<Waker>> = Default::default();
        let inner = std::future::poll_fn(|cx| {
            polls.set(polls.get() + 1);
            *inner_waker.borrow_mut() = Some(cx.waker().clone());
            if ready.get() { Poll::Ready(7) } else { Poll::Pending }
        });
        let mut f = std::pin::pin!(when_woken(inner));
        let (wa, wb) = (Waker::noop(), Waker::from(Arc::new(Woken::default())));
        let mut poll = |w: &Waker| f.as_mut().poll(&mut Context::from_waker(w));
        assert!(poll(wa).is_pending());
        assert!(poll(wa).is_pending());
        assert_eq!(polls.get(), 1, "no wake: not polled again");
        for round in 2..4 {
            inner_waker.borrow().as_ref().unwrap().wake_by_ref();
            assert!(poll(wa).is_pending());
            assert!(poll(wa).is_pending());
            assert_eq!(polls.get(), round, "polled once per wake");
        }
        assert!(poll(&wb).is_pending());
        assert_eq!(polls.get(), 4, "another task polls it");
        ready.set(true);
        inner_waker.borrow().as_ref().unwrap().wake_by_ref();
        assert_eq!(poll(&wb), Poll::Ready(7));
    }
}
