//! Fan-out: one source read by several local tasks ([`FanOut`], [`Subscriber`]) — a
//! context's stream ([`MsgStream::fan_out`]) or any local stream or channel
//! ([`FanOut::from_stream`], [`FanOut::from_receiver`]); tractor's `broadcast_receiver`.
//!
//! Two hazards are designed out:
//!
//! * **A pump that outruns every reader.** A task that reads the source as fast as it
//!   delivers lags readers that keep up perfectly well (ten readers of a 1,000-item echo
//!   all lagged by 64 to 576). There is no pump: the reader that wants an item nobody has
//!   read yet pulls it from the source, one at a time, under an async lock; the others
//!   take it from a ring of the last `capacity` items.
//! * **A reader that keeps up but has not run yet.** The puller never evicts an item that
//!   a subscriber which keeps up has not taken yet — one waiting in its `recv`, or one
//!   that called `recv` since that item arrived (it is between two calls, on another
//!   thread): it waits for it (such a subscriber is not waiting itself, so this cannot
//!   deadlock). Only a subscriber that has not called `recv` for the whole time the ring
//!   took to fill — busy elsewhere, stalled — falls behind; its next `recv` says so
//!   ([`ActorError::Lagged`], how many it missed) and it resumes with the oldest item
//!   held, or silently with [`FanOut::raise_on_lag`] off.

use super::stream::MsgStream;
use crate::base::error::{ActorError, Misuse};
use crate::base::sync::LockExt;
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

type Source<T> = Pin<Box<dyn Stream<Item = Result<T, ActorError>> + Send>>;

struct Sub {
    /// The sequence number of the next item it reads.
    cursor: u64,
    /// It is inside `recv` now: the puller waits for it rather than evict what it has not
    /// read.
    in_recv: bool,
    /// The head when it last entered `recv`: a subscriber that called `recv` since the
    /// oldest item arrived keeps up, even if it is between two calls right now.
    entered_at: u64,
}

struct State<T> {
    /// The last items pulled, at most `capacity`.
    ring: VecDeque<T>,
    /// The sequence number of `ring[0]`.
    start: u64,
    /// After the last item: the source's end (`Ok`) or its error.
    end: Option<Result<(), ActorError>>,
    /// [`FanOut::close`] was called.
    closed: bool,
    subs: HashMap<u64, Sub>,
    next_id: u64,
}

impl<T> State<T> {
    fn head(&self) -> u64 {
        self.start + self.ring.len() as u64
    }

    /// Whether there is something new for subscriber `id` (pulled by another, or the end).
    fn pulled_for(&self, id: u64) -> bool {
        let cursor = self.subs.get(&id).map_or(0, |s| s.cursor);
        self.head() > cursor || self.end.is_some() || self.closed
    }
}

impl<T: Clone> State<T> {
    /// What subscriber `id` reads next without pulling, if anything.
    fn take(&mut self, id: u64, raise_on_lag: bool) -> Option<Result<Option<T>, ActorError>> {
        if self.closed {
            return Some(Ok(None));
        }
        let (start, head) = (self.start, self.head());
        let sub = self.subs.get_mut(&id).expect("a live subscriber is registered");
        if sub.cursor < start {
            let missed = start - sub.cursor;
            sub.cursor = start;
            if raise_on_lag {
                return Some(Err(ActorError::Lagged { missed }));
            }
        }
        if sub.cursor < head {
            let v = self.ring[(sub.cursor - start) as usize].clone();
            sub.cursor += 1;
            return Some(Ok(Some(v)));
        }
        self.end.clone().map(|end| end.map(|()| None))
    }

    /// Whether one more item fits: the ring has room, or every subscriber that keeps up
    /// has read its oldest item. A subscriber in `recv` is waited for; one between two
    /// calls (it called `recv` since the oldest item arrived) is yielded to, a bounded
    /// number of times ([`YIELDS_TO_A_READER`]): it may have stopped reading for good.
    fn room(&self, capacity: usize) -> Room {
        if self.closed || self.ring.len() < capacity {
            return Room::Yes;
        }
        let unread = || self.subs.values().filter(|s| s.cursor <= self.start);
        if unread().any(|s| s.in_recv) {
            Room::WaitForReader
        } else if unread().any(|s| s.entered_at > self.start) {
            Room::YieldToReader
        } else {
            Room::Yes
        }
    }

    fn push(&mut self, v: T, capacity: usize) {
        if self.ring.len() >= capacity {
            self.ring.pop_front();
            self.start += 1;
        }
        self.ring.push_back(v);
    }
}

/// Whether the puller may push one more item ([`State::room`]).
enum Room {
    Yes,
    WaitForReader,
    YieldToReader,
}

/// How many times a puller yields to a subscriber between two `recv` calls before it
/// evicts what that subscriber has not read.
const YIELDS_TO_A_READER: usize = 16;

struct Hub<T> {
    state: Mutex<State<T>>,
    /// An item was pulled, a subscriber advanced or left, or the fan-out closed.
    changed: Notify,
    /// The source, locked by the subscriber that pulls; `None` once it ended or closed.
    source: tokio::sync::Mutex<Option<Source<T>>>,
    closing: CancellationToken,
    /// The context's stream, when the source is one (for sending, and for `close`).
    stream: Option<Arc<MsgStream>>,
    capacity: usize,
    raise_on_lag: AtomicBool,
}

/// One source shared by several local tasks (tractor's `MsgStream.subscribe` and
/// `broadcast_receiver`): every [`Subscriber`] receives every item from when it
/// subscribed, as long as it keeps up (see the module docs). Nothing is read from the
/// source until a subscriber's `recv` asks; it is dropped with the `FanOut` and every
/// subscriber, or by [`FanOut::close`].
pub struct FanOut<T> {
    hub: Arc<Hub<T>>,
}

impl<T> std::fmt::Debug for FanOut<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.hub.state.locked();
        f.debug_struct("FanOut")
            .field("capacity", &self.hub.capacity)
            .field("subscribers", &st.subs.len())
            .field("closed", &st.closed)
            .finish()
    }
}

impl<T: Clone + Send + 'static> FanOut<T> {
    fn new(source: Source<T>, stream: Option<Arc<MsgStream>>, capacity: usize) -> Self {
        let state = State {
            ring: VecDeque::new(),
            start: 0,
            end: None,
            closed: false,
            subs: HashMap::new(),
            next_id: 0,
        };
        FanOut {
            hub: Arc::new(Hub {
                state: Mutex::new(state),
                changed: Notify::new(),
                source: tokio::sync::Mutex::new(Some(source)),
                closing: CancellationToken::new(),
                stream,
                capacity: capacity.max(1),
                raise_on_lag: AtomicBool::new(true),
            }),
        }
    }

    /// A fan-out of a context's stream, decoding its messages as `T`.
    pub(super) fn over_stream(stream: Arc<MsgStream>, capacity: usize) -> Self
    where
        T: DeserializeOwned,
    {
        let items = futures::stream::unfold(Arc::clone(&stream), |s| async move {
            match s.recv::<T>().await {
                Ok(Some(v)) => Some((Ok(v), s)),
                Ok(None) => None,
                Err(e) => Some((Err(e), s)),
            }
        });
        FanOut::new(Box::pin(items), Some(stream), capacity)
    }

    /// A fan-out of any local stream, holding the last `capacity` items (at least 1).
    pub fn from_stream<S>(source: S, capacity: usize) -> Self
    where
        S: Stream<Item = T> + Send + 'static,
    {
        FanOut::new(Box::pin(source.map(Ok)), None, capacity)
    }

    /// A fan-out of a local channel, holding the last `capacity` items (at least 1); it
    /// ends when every sender is dropped, and closing it closes the channel.
    pub fn from_receiver(mut rx: tokio::sync::mpsc::Receiver<T>, capacity: usize) -> Self {
        FanOut::from_stream(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)), capacity)
    }

    /// This fan-out with lag reported ([`ActorError::Lagged`], the default) or skipped
    /// silently (tractor's `raise_on_lag=False`): a subscriber that fell behind goes on
    /// with the oldest item held.
    pub fn raise_on_lag(self, raise: bool) -> Self {
        self.hub.raise_on_lag.store(raise, Ordering::Relaxed);
        self
    }

    /// A new subscriber; it receives every item pulled from now on.
    ///
    /// # Errors
    ///
    /// [`Misuse::SubscribeAfterClose`] after [`FanOut::close`].
    pub fn subscribe(&self) -> Result<Subscriber<T>, ActorError> {
        let mut st = self.hub.state.locked();
        if st.closed {
            return Err(Misuse::SubscribeAfterClose.into());
        }
        let id = st.next_id;
        st.next_id += 1;
        let cursor = st.head();
        // Until it first calls `recv` (its task may not have run yet), it counts as
        // keeping up for one ring's worth of items.
        let entered_at = cursor + self.hub.capacity as u64;
        st.subs.insert(id, Sub { cursor, in_recv: false, entered_at });
        Ok(Subscriber { hub: Arc::clone(&self.hub), id, done: false })
    }

    /// The context's stream, when this fans one out: it can still send (do not `recv` on
    /// it: what it reads is not fanned out).
    pub fn stream(&self) -> Option<&MsgStream> {
        self.hub.stream.as_deref()
    }

    /// Closes the fan-out: every subscriber's `recv` is end of stream at once, a new
    /// subscription is an error, and the source is dropped (a context's stream is closed
    /// with [`MsgStream::close`]; a channel's senders see it closed). Idempotent.
    ///
    /// # Errors
    ///
    /// Closing a context's stream: a lost connection.
    pub async fn close(&self) -> Result<(), ActorError> {
        if std::mem::replace(&mut self.hub.state.locked().closed, true) {
            return Ok(());
        }
        self.hub.closing.cancel();
        self.hub.changed.notify_waiters();
        // The puller lets go of the source at once (it selects on `closing`).
        self.hub.source.lock().await.take();
        match &self.hub.stream {
            Some(s) => s.close().await,
            None => Ok(()),
        }
    }
}

/// One local receiver of a [`FanOut`].
pub struct Subscriber<T> {
    hub: Arc<Hub<T>>,
    id: u64,
    /// It returned the end (or the source's error): from now on, end of stream.
    done: bool,
}

impl<T> std::fmt::Debug for Subscriber<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber").field("id", &self.id).field("done", &self.done).finish()
    }
}

impl<T> Drop for Subscriber<T> {
    fn drop(&mut self) {
        self.hub.state.locked().subs.remove(&self.id);
        self.hub.changed.notify_waiters();
    }
}

/// Marks a subscriber as inside `recv` while it lives (a `recv` future that is dropped
/// unmarks it).
struct InRecv<'a, T> {
    hub: &'a Hub<T>,
    id: u64,
}

impl<'a, T> InRecv<'a, T> {
    fn new(hub: &'a Hub<T>, id: u64) -> Self {
        let mut st = hub.state.locked();
        let head = st.head();
        if let Some(s) = st.subs.get_mut(&id) {
            s.in_recv = true;
            s.entered_at = head;
        }
        drop(st);
        InRecv { hub, id }
    }
}

impl<T> Drop for InRecv<'_, T> {
    fn drop(&mut self) {
        if let Some(s) = self.hub.state.locked().subs.get_mut(&self.id) {
            s.in_recv = false;
        }
        self.hub.changed.notify_waiters();
    }
}

impl<T: Clone + Send + 'static> Subscriber<T> {
    /// The next item; `Ok(None)` at end of stream (and once the fan-out is closed).
    /// Cancel-safe: a `recv` dropped before it returned loses nothing.
    ///
    /// # Errors
    ///
    /// [`ActorError::Lagged`] when this subscriber fell behind the fan-out's capacity
    /// while it was not in `recv` (it then continues with the oldest item held; never
    /// with [`FanOut::raise_on_lag`] off); the source's error, delivered to every
    /// subscriber once (then end of stream).
    pub async fn recv(&mut self) -> Result<Option<T>, ActorError> {
        if self.done {
            return Ok(None);
        }
        let r = self.next().await;
        if !matches!(r, Ok(Some(_)) | Err(ActorError::Lagged { .. })) {
            self.done = true;
        }
        r
    }

    async fn next(&self) -> Result<Option<T>, ActorError> {
        let hub = &*self.hub;
        let _in_recv = InRecv::new(hub, self.id);
        let mut yields = 0;
        loop {
            let taken = hub.state.locked().take(self.id, hub.raise_on_lag.load(Ordering::Relaxed));
            if let Some(r) = taken {
                hub.changed.notify_waiters();
                return r;
            }
            // Nothing new: pull it (or take what another pulled meanwhile). Room for it
            // first, waiting for the subscribers that keep up to read the oldest — without
            // the source, which one of them may need.
            let changed = hub.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let room = {
                let st = hub.state.locked();
                if st.pulled_for(self.id) {
                    // Pulled by another since `take` (then we may be the one waited for).
                    continue;
                }
                st.room(hub.capacity)
            };
            match room {
                Room::Yes => {}
                Room::YieldToReader if yields >= YIELDS_TO_A_READER => {}
                Room::YieldToReader => {
                    yields += 1;
                    tokio::select! {
                        () = tokio::task::yield_now() => {}
                        () = changed => {}
                    }
                    continue;
                }
                Room::WaitForReader => {
                    changed.await;
                    continue;
                }
            }
            let mut source = hub.source.lock().await;
            {
                let st = hub.state.locked();
                if st.pulled_for(self.id) {
                    continue;
                }
                match st.room(hub.capacity) {
                    Room::Yes => {}
                    Room::YieldToReader if yields >= YIELDS_TO_A_READER => {}
                    // A subscriber entered `recv` meanwhile: wait for it, as above.
                    _ => continue,
                }
            }
            let Some(src) = source.as_mut() else {
                // Ended or closed meanwhile: `take` says which.
                continue;
            };
            let next = tokio::select! {
                next = src.next() => next,
                () = hub.closing.cancelled() => continue,
            };
            {
                let mut st = hub.state.locked();
                match next {
                    Some(Ok(v)) => st.push(v, hub.capacity),
                    Some(Err(e)) => st.end = Some(Err(e)),
                    None => st.end = Some(Ok(())),
                }
                if st.end.is_some() {
                    *source = None;
                }
            }
            hub.changed.notify_waiters();
        }
    }
}
