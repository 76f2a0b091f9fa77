//! [`SharedCache`]: one resource per key, shared by every task that asks for it (tractor's
//! `maybe_open_context`).
//!
//! Many tasks of one actor often want the same long-lived thing — a context streaming
//! quotes for one symbol, a portal to one service — and opening it once per task wastes
//! the peer's work and the connection's buffers. [`SharedCache::maybe_open`] opens it for
//! the first task that asks for a key, and hands every later task (also one that asks
//! while the first is still opening) the same value.
//!
//! # Lifetime
//!
//! Each caller holds a [`Cached`] lease. The value lives while at least one lease of its
//! key does: when the last one is dropped, the cache forgets the key and drops the value —
//! that is what closes it (a parent's [`Context`](crate::Context) that is dropped before
//! its child finished cancels it; a [`Portal`](crate::Portal) just lets its connection go
//! once unused). A task asking for the key after that opens a new one. An open that fails
//! is returned to the task that ran it, and caches nothing: a task waiting on the same key
//! runs its own open then. The cache itself holds no value: dropping it changes nothing
//! for the leases out.

use crate::base::sync::LockExt;
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;

/// One resource per key, shared by every task that asks for it (tractor's
/// `maybe_open_context`): [`SharedCache::maybe_open`] opens it for the first task that
/// asks for a key and hands every later one (also one that asks while it is still being
/// opened) the same value. Cheap to clone (clones share the cache).
///
/// # Lifetime
///
/// Each caller holds a [`Cached`] lease. The value lives while at least one lease of its
/// key does: when the last one is dropped, the cache forgets the key and drops the value,
/// which is what closes it (a parent's [`Context`](crate::Context) dropped before its
/// child finished cancels it). A task asking for the key after that opens a new one. An
/// open that fails is returned to the task that ran it and caches nothing. Dropping the
/// cache itself changes nothing for the leases out.
pub struct SharedCache<K, V> {
    slots: Arc<Mutex<HashMap<K, Arc<Slot<V>>>>>,
}

struct Slot<V> {
    value: OnceCell<Arc<V>>,
    /// How many leases of this key are out (guarded by the cache's lock).
    users: Mutex<usize>,
}

impl<K, V> Clone for SharedCache<K, V> {
    fn clone(&self) -> Self {
        SharedCache { slots: Arc::clone(&self.slots) }
    }
}

impl<K, V> Default for SharedCache<K, V> {
    fn default() -> Self {
        SharedCache { slots: Arc::new(Mutex::new(HashMap::new())) }
    }
}

impl<K, V> std::fmt::Debug for SharedCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCache").field("keys", &self.slots.locked().len()).finish()
    }
}

impl<K: Eq + Hash + Clone, V> SharedCache<K, V> {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of `key`: the one open now (a cache hit), or the one `open` makes (run
    /// by the first task to ask; others asking meanwhile wait for it and share it).
    ///
    /// # Errors
    ///
    /// `open`'s error, to the task that ran it (nothing is cached then).
    pub async fn maybe_open<E, F, Fut>(&self, key: K, open: F) -> Result<Cached<K, V>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let slot = {
            let mut slots = self.slots.locked();
            let slot = slots
                .entry(key.clone())
                .or_insert_with(|| Arc::new(Slot { value: OnceCell::new(), users: Mutex::new(0) }));
            *slot.users.locked() += 1;
            Arc::clone(slot)
        };
        // From here the lease counts as a user: dropped (an error, or this future
        // cancelled), it gives the key back.
        let lease = Lease { cache: self.clone(), key, slot };
        let ran = std::sync::atomic::AtomicBool::new(false);
        let value = lease
            .slot
            .value
            .get_or_try_init(|| {
                ran.store(true, std::sync::atomic::Ordering::Relaxed);
                async { open().await.map(Arc::new) }
            })
            .await?;
        let value = Arc::clone(value);
        let hit = !ran.load(std::sync::atomic::Ordering::Relaxed);
        Ok(Cached { value, hit, _lease: lease })
    }

    /// How many keys are open now.
    pub fn len(&self) -> usize {
        self.slots.locked().len()
    }

    /// Whether no key is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One task's lease on a shared value ([`SharedCache::maybe_open`]); derefs to the
/// value. The last lease of a key dropped closes it.
pub struct Cached<K: Eq + Hash + Clone, V> {
    value: Arc<V>,
    hit: bool,
    _lease: Lease<K, V>,
}

impl<K: Eq + Hash + Clone, V> Cached<K, V> {
    /// Whether another task opened the value (tractor's `cache_hit`): it was open, or
    /// being opened, when this task asked.
    pub fn cache_hit(&self) -> bool {
        self.hit
    }
}

impl<K: Eq + Hash + Clone, V> std::ops::Deref for Cached<K, V> {
    type Target = V;

    fn deref(&self) -> &V {
        &self.value
    }
}

impl<K: Eq + Hash + Clone, V: std::fmt::Debug> std::fmt::Debug for Cached<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cached").field("value", &*self.value).field("hit", &self.hit).finish()
    }
}

struct Lease<K: Eq + Hash + Clone, V> {
    cache: SharedCache<K, V>,
    key: K,
    slot: Arc<Slot<V>>,
}

impl<K: Eq + Hash + Clone, V> Drop for Lease<K, V> {
    fn drop(&mut self) {
        let mut slots = self.cache.slots.locked();
        let mut users = self.slot.users.locked();
        *users -= 1;
        let last = *users == 0;
        drop(users);
        if last && slots.get(&self.key).is_some_and(|s| Arc::ptr_eq(s, &self.slot)) {
            // The value goes with the slot once the last `Cached` (which holds the value
            // too) is gone: the lease is dropped after it.
            let slot = slots.remove(&self.key);
            drop(slots);
            drop(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts how many are alive.
    struct Resource(Arc<AtomicUsize>);

    impl Drop for Resource {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn open(alive: &Arc<AtomicUsize>, opens: &Arc<AtomicUsize>) -> Resource {
        alive.fetch_add(1, Ordering::SeqCst);
        opens.fetch_add(1, Ordering::SeqCst);
        Resource(Arc::clone(alive))
    }

    #[tokio::test]
    async fn the_first_task_opens_later_ones_share_the_last_drop_closes() {
        let cache: SharedCache<&str, Resource> = SharedCache::new();
        let (alive, opens) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let a = cache.maybe_open("k", || async { Ok::<_, ()>(open(&alive, &opens)) }).await;
        let a = a.unwrap();
        assert!(!a.cache_hit());
        let b = cache.maybe_open("k", || async { Ok::<_, ()>(open(&alive, &opens)) }).await;
        let b = b.unwrap();
        assert!(b.cache_hit());
        assert!(Arc::ptr_eq(&a.value, &b.value));
        let other = cache.maybe_open("j", || async { Ok::<_, ()>(open(&alive, &opens)) }).await;
        assert_eq!((opens.load(Ordering::SeqCst), alive.load(Ordering::SeqCst)), (2, 2));
        drop(other);
        assert_eq!(alive.load(Ordering::SeqCst), 1);
        drop(a);
        assert_eq!(alive.load(Ordering::SeqCst), 1, "b still uses it");
        drop(b);
        assert_eq!(alive.load(Ordering::SeqCst), 0, "the last user closed it");
        assert!(cache.is_empty());
        // Asked again: opened again.
        let c = cache.maybe_open("k", || async { Ok::<_, ()>(open(&alive, &opens)) }).await;
        assert!(!c.unwrap().cache_hit());
        assert_eq!(opens.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_task_asking_while_the_first_opens_waits_and_shares() {
        let cache: SharedCache<u8, Resource> = SharedCache::new();
        let (alive, opens) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let first = cache.maybe_open(1, || async {
            wait.await.unwrap();
            Ok::<_, ()>(open(&alive, &opens))
        });
        let second = async {
            tokio::task::yield_now().await;
            cache.maybe_open(1, || async { Ok::<_, ()>(open(&alive, &opens)) }).await
        };
        let release = async {
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
            go.send(()).unwrap();
        };
        let (a, b, ()) = tokio::join!(first, second, release);
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(!a.cache_hit() && b.cache_hit());
        assert_eq!(opens.load(Ordering::SeqCst), 1);
        drop((a, b));
        assert_eq!(alive.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_failed_open_caches_nothing() {
        let cache: SharedCache<u8, u8> = SharedCache::new();
        let e = cache.maybe_open(1, || async { Err::<u8, _>("no") }).await.unwrap_err();
        assert_eq!(e, "no");
        assert!(cache.is_empty());
        let v = cache.maybe_open(1, || async { Ok::<_, &str>(7) }).await.unwrap();
        assert_eq!((*v, v.cache_hit()), (7, false));
    }
}
