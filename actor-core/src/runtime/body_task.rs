//! The root's future, run as a task of its own runtime rather than as `block_on`'s future.
//!
//! Every reply a root's call waits for is delivered by a task (the connection's reader),
//! and on a current-thread runtime a task that wakes `block_on`'s future costs a trip
//! through the reactor before that future is polled: the scheduler, finding no task left,
//! polls the driver once without blocking (an `epoll_wait` with a zero timeout, and the
//! timer wheel's bookkeeping) and only then goes back to the future. A task woken by a
//! task is polled next, with no such trip. Measured per round trip of a root's call: one
//! syscall and about 800 instructions.
//!
//! A task must be `Send` and `'static`; the root's future is neither (a body may hold an
//! `Rc` and borrow from `main`'s stack). [`run_as_task`] therefore spawns a stand-in that
//! polls the future in place, through a pointer into its own stack frame, and is sound
//! for the same reason `std::thread::scope` is: it does not return before the stand-in
//! is gone.
//!
//! - **Only this thread touches the future.** A current-thread runtime polls its tasks on
//!   the thread inside its `Runtime::block_on` (`Handle::block_on` drives no tasks), and
//!   the runtime here is the caller's own, never shared: its `block_on` is called once,
//!   below, on this thread. The stand-in has no drop glue, so dropping it (when it is
//!   done, or with the runtime) touches nothing.
//! - **The future outlives every poll.** The stand-in polls only inside that `block_on`,
//!   which returns once the task is over (done, or its poll panicked). A panic of
//!   `block_on` itself unwinds past the frame with the task still queued, unpolled: the
//!   caller drops the runtime on the way out, which drops queued tasks without polling.
//! - **It is dropped inside the runtime**, as `block_on` would have dropped it: a body
//!   whose poll panicked still holds values whose drop may need the runtime (a nursery's
//!   guard spawns its cleanup).

#![allow(unsafe_code)]

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Runs `fut` to completion on `rt` as a task (see the module docs); a panic in it is
/// resumed here.
pub(super) fn run_as_task<F: Future>(rt: &tokio::runtime::Runtime, fut: F) -> F::Output {
    // First, so that it is dropped last: `fut` is dropped inside the runtime.
    let _inside = rt.enter();
    let mut slot = Slot { fut: std::pin::pin!(fut), out: None };
    let task = StandIn { slot: std::ptr::from_mut(&mut slot).cast(), poll: poll_slot::<F> };
    match rt.block_on(rt.spawn(task)) {
        Ok(()) => slot.out.take().expect("the task ended with the future done"),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only a runtime shutdown cancels a task, and this one is not shut down here.
        Err(e) => panic!("the root's task was cancelled: {e}"),
    }
}

/// The future and, once it is done, its output.
struct Slot<'a, F: Future> {
    fut: Pin<&'a mut F>,
    out: Option<F::Output>,
}

/// What the runtime holds: a pointer to the [`Slot`] and how to poll it.
struct StandIn {
    slot: *mut (),
    poll: unsafe fn(*mut (), &mut Context<'_>) -> Poll<()>,
}

// SAFETY: a `StandIn` is only ever polled and dropped on the thread that made it (the
// module docs: a current-thread runtime used by this thread alone), so nothing of the
// future crosses threads.
unsafe impl Send for StandIn {}

impl Future for StandIn {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // SAFETY: `slot` points to the `Slot` of `run_as_task`'s frame, which is alive
        // while the task can be polled and is touched by nothing else meanwhile (see the
        // module docs); `poll` is the function for its type.
        unsafe { (self.poll)(self.slot, cx) }
    }
}

/// Polls the `Slot<F>` behind `slot`, keeping the output.
///
/// # Safety
/// `slot` points to a live `Slot<'_, F>` that nothing else uses during the call.
unsafe fn poll_slot<F: Future>(slot: *mut (), cx: &mut Context<'_>) -> Poll<()> {
    // SAFETY: the caller's promise.
    let slot = unsafe { &mut *slot.cast::<Slot<'_, F>>() };
    match slot.fut.as_mut().poll(cx) {
        Poll::Ready(v) => {
            slot.out = Some(v);
            Poll::Ready(())
        }
        Poll::Pending => Poll::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    /// A future that is neither `Send` nor `'static` runs as a task: it borrows from the
    /// caller's frame, holds an `Rc` across awaits, spawns, and its output comes back.
    #[test]
    fn a_borrowing_non_send_future_runs_and_returns_its_output() {
        let rt = rt();
        let mut seen = Vec::new();
        let out = run_as_task(&rt, async {
            let rc = Rc::new(5);
            let child = tokio::spawn(async { 6 });
            tokio::task::yield_now().await;
            seen.push(*rc);
            seen.push(child.await.unwrap());
            assert!(tokio::runtime::Handle::try_current().is_ok(), "inside the runtime");
            *rc * 2
        });
        assert_eq!((out, seen), (10, vec![5, 6]));
    }

    /// A panic in the future comes out of `run_as_task`, and what the future held is
    /// dropped inside the runtime.
    #[test]
    fn a_panic_is_resumed_and_the_future_is_dropped_inside_the_runtime() {
        struct NeedsRuntime;
        impl Drop for NeedsRuntime {
            fn drop(&mut self) {
                assert!(tokio::runtime::Handle::try_current().is_ok(), "dropped inside");
            }
        }
        let rt = rt();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_as_task(&rt, async {
                let _held = NeedsRuntime;
                tokio::task::yield_now().await;
                panic!("the body failed");
            })
        }));
        let msg = caught.unwrap_err();
        assert_eq!(msg.downcast_ref::<&str>(), Some(&"the body failed"));
    }
}
