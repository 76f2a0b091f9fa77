//! The worker pool: see [`Pool`](crate::Pool).

use super::nursery::{ChildActor, Nursery};
use crate::base::error::{ActorError, Misuse, encode};
use crate::base::sync::LockExt;
use crate::serving::actor::Actor;
use crate::serving::cx::Cx;
use plough_ipc_wire::payload::Payload;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::VecDeque;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskCx, Poll};
use tokio::sync::{Notify, Semaphore, oneshot};
use tokio_util::sync::CancellationToken;

/// How a [`Pool`] is made.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    name: String,
    workers: usize,
    queue: usize,
    retries: u32,
    boot_failures: u32,
}

impl PoolConfig {
    /// `workers` workers named `pool-<n>`, a queue of `4 × workers` jobs, 2 retries, 3
    /// boot failures in a row.
    pub fn new(workers: usize) -> Self {
        PoolConfig {
            name: "pool".to_owned(),
            workers,
            queue: workers.max(1) * 4,
            retries: 2,
            boot_failures: 3,
        }
    }

    /// The workers' names: `<name>-<n>`.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// How many jobs wait for a worker before [`Pool::submit`] waits too (at least 1).
    #[must_use]
    pub fn queue(mut self, jobs: usize) -> Self {
        self.queue = jobs.max(1);
        self
    }

    /// How many times a job whose worker died is run again before it is reported
    /// poisoned.
    #[must_use]
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// How many worker boots may fail in a row before the pool fails.
    #[must_use]
    pub fn boot_failures(mut self, failures: u32) -> Self {
        self.boot_failures = failures.max(1);
        self
    }
}

/// One queued job.
struct Job {
    id: u64,
    function: String,
    args: Payload,
    /// The deaths it caused so far.
    deaths: Vec<ActorError>,
    /// It holds a place of the queue's bound (until a worker first takes it).
    holds_room: bool,
    reply: oneshot::Sender<Result<Payload, ActorError>>,
}

/// The queue: fresh jobs behind a bound, retried jobs first.
struct Queue {
    jobs: Mutex<VecDeque<Job>>,
    /// Room for fresh jobs (a retried job needs none: it had its place).
    room: Arc<Semaphore>,
    ready: Notify,
    closed: CancellationToken,
}

impl Queue {
    fn push_back(&self, job: Job) {
        self.jobs.locked().push_back(job);
        self.ready.notify_one();
    }

    fn push_front(&self, job: Job) {
        self.jobs.locked().push_front(job);
        self.ready.notify_one();
    }

    /// The next job, or `None` when `stop` fires or the queue closes.
    async fn pop(&self, stop: &CancellationToken) -> Option<Job> {
        loop {
            let ready = self.ready.notified();
            if stop.is_cancelled() || self.closed.is_cancelled() {
                // Let another worker have the wake-up this one may have taken.
                self.ready.notify_one();
                return None;
            }
            if let Some(job) = self.jobs.locked().pop_front() {
                return Some(job);
            }
            tokio::select! {
                () = ready => {}
                () = stop.cancelled() => return None,
                () = self.closed.cancelled() => return None,
            }
        }
    }
}

/// The pool, as its body holds it. Cheap to clone.
///
/// A worker pool: N child actors that run submitted jobs, a bounded queue, and jobs that
/// survive the death of their worker.
///
/// `actor.pool(PoolConfig::new(4), |pool| async { ... })` starts the workers, runs the
/// body, and takes the workers down when it returns. In the body, [`Pool::submit`] queues
/// `function(args)` — waiting while the queue is full (backpressure) — and returns a
/// [`JobHandle`], a future of the job's result; collect handles in a
/// `FuturesUnordered` to take results as they complete.
///
/// Each job is answered exactly once:
///
/// * it returned: its value (or its own error — the worker is fine and goes on);
/// * its worker died under it (a crash, a kill, a lost connection): the worker is reaped
///   and replaced by a fresh one, and the job goes to the front of the queue to run
///   again, on whichever worker is free — at most [`PoolConfig::retries`] times. One more
///   death and it is reported as [`ActorError::JobPoisoned`] with every death it caused:
///   the input that kills workers is named, and stops killing them;
/// * the pool ended first (the body returned or the pool was cancelled): an error saying
///   so ([`Misuse::PoolClosed`]).
///
/// A job that succeeded is never run again; a job whose worker died mid-way may have run
/// in part (at-least-once until it succeeds, as any retry). A worker that cannot even
/// boot, [`PoolConfig::boot_failures`] times in a row, fails the pool with that error:
/// no fork loop. [`Pool::resize`] grows or shrinks the pool at run time (a worker that is
/// let go finishes its current job first).
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.shared.cfg.name)
            .field("workers", &self.workers())
            .finish()
    }
}

struct Shared {
    n: Nursery,
    cfg: PoolConfig,
    queue: Queue,
    next_job: AtomicU64,
    next_worker: AtomicUsize,
    /// One stop token per worker task, in start order.
    workers: Mutex<Vec<CancellationToken>>,
    /// Fired (with the error in `failure`) when workers cannot boot.
    failed: CancellationToken,
    failure: Mutex<Option<ActorError>>,
    /// Worker boots that failed in a row.
    boot_failures: AtomicU64,
    /// Worker replacements after a death.
    replaced: AtomicU64,
}

/// The result of one job: a future (see [`Pool`]).
#[derive(Debug)]
pub struct JobHandle<R> {
    id: u64,
    rx: oneshot::Receiver<Result<Payload, ActorError>>,
    _result: PhantomData<fn() -> R>,
}

impl<R> JobHandle<R> {
    /// The job's id in its pool (what [`ActorError::JobPoisoned`] names).
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl<R: DeserializeOwned> Future for JobHandle<R> {
    type Output = Result<R, ActorError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskCx<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx).map(|r| match r {
            Ok(Ok(payload)) => payload.decode::<R>().map_err(|e| {
                crate::calls::wire::type_error(e, plough_ipc_wire::msg::MsgKind::Return)
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Misuse::PoolClosed.into()),
        })
    }
}

impl Pool {
    /// Queues `function(args)` for the next free worker, waiting while the queue is full.
    ///
    /// # Errors
    ///
    /// Arguments that cannot be encoded; [`Misuse::PoolClosed`] once the pool has ended.
    pub async fn submit<A, R>(&self, function: &str, args: A) -> Result<JobHandle<R>, ActorError>
    where
        A: Serialize,
        R: DeserializeOwned,
    {
        let args = encode(&args)?;
        let q = &self.shared.queue;
        let permit = tokio::select! {
            p = Arc::clone(&q.room).acquire_owned() => p.map_err(|_| Misuse::PoolClosed)?,
            () = q.closed.cancelled() => return Err(Misuse::PoolClosed.into()),
        };
        // The room is given back when a worker takes the job.
        permit.forget();
        let id = self.shared.next_job.fetch_add(1, Ordering::Relaxed);
        let (reply, rx) = oneshot::channel();
        let job = Job {
            id,
            function: function.to_owned(),
            args,
            deaths: Vec::new(),
            holds_room: true,
            reply,
        };
        q.push_back(job);
        Ok(JobHandle { id, rx, _result: PhantomData })
    }

    /// How many workers the pool has (or will have, after a [`Pool::resize`]).
    pub fn workers(&self) -> usize {
        self.shared.workers.locked().len()
    }

    /// How many workers were replaced after they died.
    pub fn replaced(&self) -> u64 {
        self.shared.replaced.load(Ordering::Relaxed)
    }

    /// Grows the pool to `workers` (new workers boot as they take their first job) or
    /// shrinks it (the most recent workers finish their current job and go).
    pub fn resize(&self, workers: usize) {
        let mut tokens = self.shared.workers.locked();
        while tokens.len() > workers {
            if let Some(t) = tokens.pop() {
                t.cancel();
            }
        }
        while tokens.len() < workers {
            let stop = CancellationToken::new();
            tokens.push(stop.clone());
            let shared = Arc::clone(&self.shared);
            self.shared.n.inner.monitors.spawn(async move { worker(shared, stop).await });
        }
    }
}

/// One worker: takes jobs, keeps a live child actor to run them on.
async fn worker(shared: Arc<Shared>, stop: CancellationToken) {
    let mut child: Option<Arc<ChildActor>> = None;
    while let Some(mut job) = shared.queue.pop(&stop).await {
        if std::mem::take(&mut job.holds_room) {
            // A fresh job left the bounded part of the queue.
            shared.queue.room.add_permits(1);
        }
        let c = match &child {
            Some(c) => Arc::clone(c),
            None => match boot(&shared).await {
                Some(c) => {
                    child = Some(Arc::clone(&c));
                    c
                }
                None => {
                    shared.queue.push_front(job);
                    continue;
                }
            },
        };
        let out = c.portal.run_payload(&job.function, job.args.clone()).await;
        match out {
            Err(e @ (ActorError::ActorDied { .. } | ActorError::TransportClosed { .. })) => {
                let e = shared.n.explain(&c, e).await;
                tracing::warn!(worker = %c.aid, job = job.id, function = %job.function, error = %e, "a job's worker died: replacing it");
                child = None;
                shared.n.take_down(&c).await;
                shared.replaced.fetch_add(1, Ordering::Relaxed);
                job.deaths.push(e);
                if job.deaths.len() > shared.cfg.retries as usize {
                    tracing::error!(job = job.id, function = %job.function, deaths = job.deaths.len(), "job poisoned");
                    let Job { id, function, deaths, reply, .. } = job;
                    let _ = reply.send(Err(ActorError::JobPoisoned { job: id, function, deaths }));
                } else {
                    shared.queue.push_front(job);
                }
            }
            other => {
                let _ = job.reply.send(other);
            }
        }
    }
    if let Some(c) = child {
        shared.n.take_down(&c).await;
    }
}

/// A fresh worker; `None` (the pool failing when too many in a row fail) if it did not boot.
async fn boot(shared: &Shared) -> Option<Arc<ChildActor>> {
    let i = shared.next_worker.fetch_add(1, Ordering::Relaxed);
    match shared.n.spawn_child(&format!("{}-{i}", shared.cfg.name)).await {
        Ok(c) => {
            shared.boot_failures.store(0, Ordering::Relaxed);
            Some(c)
        }
        Err(e) => {
            let failures = shared.boot_failures.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(pool = %shared.cfg.name, failures, error = %e, "a worker did not boot");
            if failures >= u64::from(shared.cfg.boot_failures) {
                shared.failure.locked().get_or_insert(e);
                shared.failed.cancel();
            }
            None
        }
    }
}

impl Nursery {
    async fn pool_in<T, F, Fut>(&self, cfg: PoolConfig, body: F) -> Result<T, ActorError>
    where
        F: FnOnce(Pool) -> Fut,
        Fut: Future<Output = Result<T, ActorError>>,
    {
        let workers = cfg.workers;
        let queue = Queue {
            jobs: Mutex::new(VecDeque::new()),
            room: Arc::new(Semaphore::new(cfg.queue)),
            ready: Notify::new(),
            closed: CancellationToken::new(),
        };
        let shared = Arc::new(Shared {
            n: self.clone(),
            cfg,
            queue,
            next_job: AtomicU64::new(0),
            next_worker: AtomicUsize::new(0),
            workers: Mutex::new(Vec::new()),
            failed: CancellationToken::new(),
            failure: Mutex::new(None),
            boot_failures: AtomicU64::new(0),
            replaced: AtomicU64::new(0),
        });
        let pool = Pool { shared: Arc::clone(&shared) };
        pool.resize(workers);
        let out = tokio::select! {
            r = body(pool.clone()) => r,
            () = shared.failed.cancelled() => {
                Err(shared.failure.locked().take().unwrap_or_else(|| Misuse::PoolClosed.into()))
            }
        };
        // Pending jobs are answered `PoolClosed` (their replies drop with them).
        shared.queue.closed.cancel();
        shared.queue.room.close();
        for t in shared.workers.locked().drain(..) {
            t.cancel();
        }
        shared.queue.jobs.locked().clear();
        out
    }
}

impl Actor {
    /// Runs a worker pool for `body` (see [`Pool`]); returns once every
    /// worker is down.
    ///
    /// # Errors
    ///
    /// The body's error; a worker's boot error when [`PoolConfig::boot_failures`] boots
    /// failed in a row; `ContextCancelled` when the actor is cancelled.
    pub async fn pool<T, F, Fut>(&self, cfg: PoolConfig, body: F) -> Result<T, ActorError>
    where
        F: FnOnce(Pool) -> Fut,
        Fut: Future<Output = Result<T, ActorError>>,
    {
        self.nursery(|n| async move { n.pool_in(cfg, body).await }).await
    }
}

impl Cx {
    /// [`Actor::pool`] in the serving actor, scoped to this call.
    ///
    /// # Errors
    ///
    /// As [`Actor::pool`].
    pub async fn pool<T, F, Fut>(&self, cfg: PoolConfig, body: F) -> Result<T, ActorError>
    where
        F: FnOnce(Pool) -> Fut,
        Fut: Future<Output = Result<T, ActorError>>,
    {
        self.nursery(|n| async move { n.pool_in(cfg, body).await }).await
    }
}
