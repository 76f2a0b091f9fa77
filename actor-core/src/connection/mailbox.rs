//! The replies to one call we made: the reader task posts them, the caller takes them.
//!
//! A call has a reply or a few (a `StartAck`, then its `Return` or `Error`), so its mailbox
//! is one allocation: the first reply waits in a slot of its own, later ones (rare) in a
//! queue behind it. A tokio channel would cost two aligned allocations per call, and
//! making and freeing them was a measurable part of a round trip.
//!
//! The mailbox closes when its sending half ([`Post`]) is dropped: the channel forgot the
//! call (the connection is gone). The caller then takes what was posted before and learns
//! it is closed.

use crate::base::sync::LockExt;
use plough_ipc_wire::msg::Msg;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

#[derive(Default)]
struct Slots {
    first: Option<Msg>,
    more: VecDeque<Msg>,
    waker: Option<Waker>,
    closed: bool,
}

/// The sending half, held by the channel's route for the call.
pub(crate) struct Post(Arc<Mutex<Slots>>);

/// The receiving half, held by the caller.
#[derive(Debug)]
pub(crate) struct Mailbox(Arc<Mutex<Slots>>);

impl std::fmt::Debug for Slots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slots")
            .field("queued", &(usize::from(self.first.is_some()) + self.more.len()))
            .field("closed", &self.closed)
            .finish()
    }
}

/// A new mailbox: its sending and receiving halves.
pub(crate) fn mailbox() -> (Post, Mailbox) {
    let slots = Arc::new(Mutex::new(Slots::default()));
    (Post(Arc::clone(&slots)), Mailbox(slots))
}

impl Post {
    /// Posts a reply and wakes the caller. Replies are taken in the order posted.
    pub(crate) fn post(&self, msg: Msg) {
        let waker = {
            let mut s = self.0.locked();
            if s.first.is_none() && s.more.is_empty() {
                s.first = Some(msg);
            } else {
                s.more.push_back(msg);
            }
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Drop for Post {
    fn drop(&mut self) {
        let waker = {
            let mut s = self.0.locked();
            s.closed = true;
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Mailbox {
    /// The next reply; `None` once the mailbox is closed and empty.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Msg>> {
        let mut s = self.0.locked();
        if let Some(msg) = s.first.take() {
            s.first = s.more.pop_front();
            return Poll::Ready(Some(msg));
        }
        if s.closed {
            return Poll::Ready(None);
        }
        match &mut s.waker {
            Some(w) => w.clone_from(cx.waker()),
            None => s.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The next reply; `None` once the mailbox is closed and empty.
    pub(crate) async fn recv(&mut self) -> Option<Msg> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plough_ipc_wire::msg::Msg;

    fn ret(cid: u64) -> Msg {
        Msg::Return { cid, payload: plough_ipc_wire::payload::Payload::from(bytes::Bytes::new()) }
    }

    fn cid(m: Option<Msg>) -> Option<u64> {
        m.map(|m| m.cid().expect("a reply names its call"))
    }

    #[tokio::test]
    async fn replies_come_in_the_order_posted_and_then_the_close() {
        let (post, mut rx) = mailbox();
        for c in 1..=5 {
            post.post(ret(c));
        }
        assert_eq!(cid(rx.recv().await), Some(1));
        post.post(ret(6));
        drop(post);
        let mut got = Vec::new();
        while let Some(m) = rx.recv().await {
            got.push(m.cid().unwrap());
        }
        assert_eq!(got, [2, 3, 4, 5, 6], "everything posted before the close arrives");
        assert!(rx.recv().await.is_none(), "closed stays closed");
    }

    #[tokio::test]
    async fn a_waiting_caller_is_woken_by_a_post_and_by_the_close() {
        let (post, mut rx) = mailbox();
        let waiter = tokio::spawn(async move {
            let first = cid(rx.recv().await);
            let second = cid(rx.recv().await);
            (first, second)
        });
        tokio::task::yield_now().await;
        post.post(ret(7));
        tokio::task::yield_now().await;
        drop(post);
        let (first, second) = tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
            .await
            .expect("the waiter is woken")
            .unwrap();
        assert_eq!((first, second), (Some(7), None));
    }

    #[test]
    fn a_receiver_dropped_first_leaves_the_sender_harmless() {
        let (post, rx) = mailbox();
        drop(rx);
        post.post(ret(1));
        drop(post);
    }
}
