//! Every timeout and grace period of the runtime, and the per-peer caps on calls and on
//! buffered bytes, in one place.
//!
//! The promise "cancellation is bounded" is only as good as the budgets behind it, so each
//! of them is a named field here with its default and what it bounds; no other file of
//! the crate writes a duration literal. The bounds on a single frame (its size, the work
//! and memory of decoding it) are ipc-wire's `Limits`; the bound of one stream's buffer
//! (messages and bytes) is its [`StreamConfig`](crate::StreamConfig), because both ends
//! of a stream must agree on its defaults. [`LadderConfig::total`] is the longest one child
//! takes to go down the cancellation ladder; [`Budgets::tree_teardown`] the bound for a
//! tree of a given depth.

use std::time::Duration;

/// The cancellation ladder: IPC cancel → wait for the ack → wait for the exit → SIGTERM
/// to the child's process group → wait → SIGKILL to the group → reap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LadderConfig {
    /// How long to wait for a child to acknowledge an IPC cancel (0.5 s). Also the default
    /// wait of [`Portal::cancel_actor`](crate::Portal::cancel_actor).
    pub ack_timeout: Duration,
    /// How long to wait for a (cancelled) child to exit on its own (1.5 s). After an
    /// acknowledged cancel the ladder waits `ack_timeout + exit_timeout` in all before it
    /// sends SIGTERM: [`Budgets::cleanup`] stays below that.
    pub exit_timeout: Duration,
    /// How long after SIGTERM before SIGKILL (1.6 s).
    pub term_timeout: Duration,
}

impl Default for LadderConfig {
    fn default() -> Self {
        LadderConfig {
            ack_timeout: Duration::from_millis(500),
            exit_timeout: Duration::from_millis(1500),
            term_timeout: Duration::from_millis(1600),
        }
    }
}

impl LadderConfig {
    /// What [`LadderConfig::total`] allows for the reap after SIGKILL (which the kernel
    /// makes immediate for anything but a process in uninterruptible sleep).
    pub const REAP_ALLOWANCE: Duration = Duration::from_millis(500);

    /// The longest one child can take to go down the whole ladder (plus the reap):
    /// 4.1 s by default.
    pub fn total(&self) -> Duration {
        self.ack_timeout + self.exit_timeout + self.term_timeout + Self::REAP_ALLOWANCE
    }
}

/// A supervisor's restart intensity (OTP's `intensity` and `period`): a restart that would
/// make more than `max_restarts` restarts within `period` ends the supervisor instead
/// ([`ActorError::SupervisorGaveUp`](crate::ActorError::SupervisorGaveUp)). OTP's default,
/// 1 restart in 5 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartIntensity {
    /// How many restarts `period` may hold.
    pub max_restarts: u32,
    /// The sliding window.
    pub period: Duration,
}

impl Default for RestartIntensity {
    fn default() -> Self {
        RestartIntensity { max_restarts: 1, period: Duration::from_secs(5) }
    }
}

impl RestartIntensity {
    /// How many [`ChildExit`](crate::ChildExit) events a supervisor holds for a watcher
    /// that reads them late (one that falls further behind is told it lagged).
    pub const EXIT_EVENTS: usize = 1024;
}

/// Every budget of a runtime. `Budgets::default()` is what plough uses; tests shorten the
/// ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    /// The cancellation ladder.
    pub ladder: LadderConfig,
    /// How long a spawned child may go without progress before it has connected back
    /// (10 s): then it is killed and reaped and the spawn fails with `ConnectTimeout`.
    /// Progress is the child using CPU, or another child of the same actor connecting
    /// back meanwhile (under load the parent completes boots in turn: a child that waits
    /// for its turn is not stuck). Bounded by [`Budgets::connect_cap`] in all.
    pub connect: Duration,
    /// The longest a spawned child may take to connect back, progress or not (60 s).
    /// Also what a child allows its parent to answer its connection and send its spawn
    /// spec, since the parent decides when a boot took too long.
    pub connect_cap: Duration,
    /// The deadline of each connection handshake (10 s).
    pub handshake: Duration,
    /// How long a root probes the registry address for a registrar to join before it
    /// gives up on it (2 s).
    pub registrar_probe: Duration,
    /// After the registrar is lost (its root exited or was killed): the first pause before
    /// an actor tries to join or become its successor (5 ms). Each later try waits twice
    /// as long, up to [`Budgets::registrar_retry_max`], and every pause is jittered
    /// (drawn from its upper half, the first from all of it), so the survivors do not
    /// hammer the address in step. See [`Budgets::registrar_retry`].
    pub registrar_retry_min: Duration,
    /// The longest pause between two tries to reach a registrar after it was lost
    /// (100 ms): the cost of waiting for a registrar that does not come back is one
    /// connect per actor this often. With the defaults the first seven tries fall within
    /// about 0.3 s, well inside the 1 s a failover may take.
    pub registrar_retry_max: Duration,
    /// How long a lookup ([`Actor::find_actor`](crate::Actor::find_actor),
    /// [`Actor::list_actors`](crate::Actor::list_actors), ...) issued while the registrar
    /// is being replaced waits for the successor before it fails with the lost
    /// connection's error (3 s); and after how long without a registrar the actor warns.
    /// [`Actor::wait_for_actor`](crate::Actor::wait_for_actor) waits a failover out
    /// without a bound of its own.
    pub registrar_gap: Duration,
    /// Beyond the ladder's total: how much longer an exiting actor waits for its served
    /// calls and their nurseries to finish their own cancellation (0.5 s).
    pub shutdown_slack: Duration,
    /// How long an exiting actor waits for the registrar to answer its unregistration
    /// (0.5 s).
    pub unregister: Duration,
    /// How long an exiting actor lets its connections flush what they queued (0.5 s).
    pub flush: Duration,
    /// After a lost connection: how long to wait for the child's exit status, to say how
    /// it died instead of only that the connection closed (0.5 s).
    pub exit_status: Duration,
    /// After SIGKILL, or a child that failed its boot: the bound on waiting for the reap
    /// (5 s; immediate in practice).
    pub reap_bound: Duration,
    /// A child that died during boot: how long to wait for the rest of what it wrote to
    /// stderr (0.25 s).
    pub boot_stderr: Duration,
    /// Before a process's actor returns (root) or exits (child): how long the reaper
    /// thread gets to reap children that were dropped instead of taken down (3 s).
    pub reaper_drain: Duration,
    /// The cleanup budget of a cancelled context or stream function that declares none of
    /// its own ([`Registry::cleanup`](crate::Registry::cleanup)): how long it may still run
    /// after the cancel (its stream operations fail at once) so that an error it raises
    /// meanwhile is what its caller gets, not the cancel (1.5 s). A cleanup that takes
    /// longer is dropped and answered as cancelled.
    ///
    /// Keep it below what a parent's ladder waits after an acknowledged cancel,
    /// `ladder.ack_timeout + ladder.exit_timeout` (2 s by default): when the parent cancels
    /// the whole actor, a cleanup that uses its whole budget then still answers (and the
    /// actor exits) before the parent escalates to SIGTERM. Shorten it with the ladder.
    pub cleanup: Duration,
    /// How long a fork server process (the `zygote` backend's) has to answer a fork
    /// request before it is taken for hung, killed and restarted (5 s; a fork of its small
    /// process takes well under a millisecond).
    pub fork_reply: Duration,
    /// How many calls one peer connection may have this actor serve at once (1024): from a
    /// call's `Start` until its final answer (`Return`, `Error` or `CancelAck`) is queued.
    /// A `Start` beyond it is not served and not queued: it is answered at once with an
    /// error of kind [`ErrorKind::TooManyCalls`](plough_ipc_wire::ErrorKind::TooManyCalls)
    /// for that call, so a peer flooding calls costs one small reply each, not a task and
    /// its state. Calls from other connections are not affected. Stream credit, the
    /// runtime's cancels (`plough.cancel_actor`, `plough.cancel_call`) and the messages of
    /// calls already running are never refused.
    pub max_calls_in_flight: usize,
    /// How long one frame may take to arrive once its first byte has (10 s), on every
    /// handshaken connection of the actor, dialed or accepted, TCP or UDS (the handshake
    /// has its own deadline, [`Budgets::handshake`]). The deadline is per frame and
    /// progress does not extend it: a peer that sends part of a frame and stalls, or
    /// trickles it a byte at a time, is dropped with a logged reason when it expires
    /// (every call on that connection fails with `TransportClosed`), so it cannot pin the
    /// frame's buffer. A peer may be as slow as it likes *between* frames. Over a link
    /// slower than the largest frame you send divided by this budget, raise it.
    pub frame_read: Duration,
    /// How many bytes of partial frames all the peer connections of this actor may hold
    /// in all (256 MiB): a frame that has started arriving is charged the size its segment
    /// table claims (up to the frame cap, 64 MiB) until it completes or its connection
    /// ends. A connection whose partial frame would take the actor over this budget is
    /// closed with a logged reason (`framing error: a partial frame of ... bytes would take
    /// the buffered partial frames over the budget`), and the actor keeps serving the
    /// others: N peers each holding a large partial frame cost at most this, not N
    /// frames. A frame that arrives in one read is not charged. Complete frames waiting in
    /// stream buffers are bounded by [`Budgets::stream_buffers`], not counted here.
    pub partial_frames: usize,
    /// How many bytes of stream messages the buffers of all the contexts of one peer
    /// connection may hold in all (256 MiB: 16 streams at their full
    /// [`STREAM_BUFFER_BYTES`](crate::STREAM_BUFFER_BYTES)). Each stream's buffer is bounded on its
    /// own, in messages and bytes ([`StreamConfig`](crate::StreamConfig)); this bounds what a
    /// peer with many contexts open can make this actor hold. A message that would take
    /// the sum over it is refused as an overrun of its stream
    /// ([`OverrunBound::Connection`](crate::OverrunBound::Connection)), backpressure or
    /// not: the stream fails, its context and the connection serve on. A message that
    /// finds nothing buffered on the connection is always admitted.
    pub stream_buffers: usize,
    /// How many bytes of large messages (a payload of 64 KiB or more) one peer connection
    /// may have queued for writing (64 MiB). A `send` of a large message waits for room
    /// until the writer has written what is queued before it (one larger than the whole
    /// budget waits until no large message is queued): a peer that reads slowly, or not
    /// at all, makes this actor's senders wait instead of piling its messages up in
    /// memory (256 queued stream messages of 16 MiB were 4 GiB). Smaller messages are
    /// bounded by the queue's length (256). The reader task's own answers never wait.
    pub outgoing_bytes: usize,
    /// Payloads (of `Start`, `Started`, `Yield`, `Return`) of at least this many bytes go
    /// through shared memory instead of the socket, to a peer of this host and user (a
    /// Unix socket, or plain TCP over loopback): copied once into a sealed memfd, mapped
    /// zero-copy by the receiver (see `docs/design.md`, "Large payloads through shared
    /// memory"). `None` or `Some(0)`: never. The
    /// default, [`Budgets::DEFAULT_SHM_THRESHOLD`] (64 MiB), lends only what could not go by
    /// copy: measured, a fresh segment per payload loses to the copy below that.
    pub shm_threshold: Option<usize>,
    /// How many bytes one connection may have lent through shared memory and not yet
    /// heard back about (256 MiB): the sender holds each segment until the receiver says
    /// it opened (or refused) it; a payload that would take the sum over this goes by
    /// copy, so a peer that never answers costs at most this. One that cannot go by copy
    /// (over the frame limit) waits until the receiver returns enough, or the connection
    /// ends. Also the longest lent payload a receiver accepts.
    pub shm_lent: usize,
    /// How many fds the actor's listeners leave free for everything but accepting (64, or
    /// a quarter of the soft `RLIMIT_NOFILE` when that is less): once the process has no
    /// more than this many fds left, a listener accepts only its own children connecting
    /// back (see `plough_ipc_wire::FdReserve`), so spawning, reaping and the cancel path
    /// keep working while a listener is flooded. Keep it at least [`Budgets::spawn_fds`].
    pub fd_reserve: usize,
    /// How many free fds a spawn needs in the parent at its peak (16: the boot-stderr
    /// pipe, the child's stdio and boot socket, its pidfd and a waiter's duplicate of it,
    /// its connection back): with fewer free, `start_actor` fails at once with
    /// [`SpawnError::OutOfFds`](crate::SpawnError::OutOfFds), before anything is forked.
    pub spawn_fds: usize,
    /// While a listener is at its fd reserve (or `accept` failed for want of fds): how long
    /// it waits before it looks again, unless one of its connections closes first (50 ms).
    pub accept_backoff: Duration,
    /// The least time between two warnings that a listener is holding connections back at
    /// its fd reserve (10 s).
    pub fd_warn_interval: Duration,
    /// The liveness lease between a root and a host daemon running actors for it (5 s):
    /// a daemon that hears no heartbeat from the root for this long takes the root's
    /// actors on that host down the ladder; a root whose heartbeats go unanswered this
    /// long reports the host's actors as lost ([`ActorError::HostLost`]). The root beats
    /// every [`Budgets::heartbeat`]. Both ends use the daemon's lease (the root learns it
    /// when it attaches). See `docs/multi-host.md`.
    ///
    /// [`ActorError::HostLost`]: crate::ActorError::HostLost
    pub lease: Duration,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            ladder: LadderConfig::default(),
            connect: Duration::from_secs(10),
            connect_cap: Duration::from_secs(60),
            handshake: Duration::from_secs(10),
            registrar_probe: Duration::from_secs(2),
            registrar_retry_min: Duration::from_millis(5),
            registrar_retry_max: Duration::from_millis(100),
            registrar_gap: Duration::from_secs(3),
            shutdown_slack: Duration::from_millis(500),
            unregister: Duration::from_millis(500),
            flush: Duration::from_millis(500),
            exit_status: Duration::from_millis(500),
            reap_bound: Duration::from_secs(5),
            boot_stderr: Duration::from_millis(250),
            reaper_drain: Duration::from_secs(3),
            cleanup: Duration::from_millis(1500),
            fork_reply: Duration::from_secs(5),
            max_calls_in_flight: Budgets::DEFAULT_MAX_CALLS_IN_FLIGHT,
            frame_read: Duration::from_secs(10),
            partial_frames: Budgets::DEFAULT_PARTIAL_FRAMES,
            stream_buffers: Budgets::DEFAULT_STREAM_BUFFERS,
            outgoing_bytes: Budgets::DEFAULT_OUTGOING_BYTES,
            shm_threshold: Some(Budgets::DEFAULT_SHM_THRESHOLD),
            shm_lent: Budgets::DEFAULT_SHM_LENT,
            fd_reserve: plough_ipc_wire::FdReserve::DEFAULT_RESERVE,
            spawn_fds: 16,
            accept_backoff: Duration::from_millis(50),
            fd_warn_interval: Duration::from_secs(10),
            lease: Duration::from_secs(5),
        }
    }
}

impl Budgets {
    /// How often a root beats to a host daemon under a lease of `lease`: a fifth of it, so
    /// that a few lost beats (or one slow one) do not end it; each beat waits at most this
    /// long for its answer.
    pub fn heartbeat(lease: Duration) -> Duration {
        lease / 5
    }

    /// The default of [`Budgets::max_calls_in_flight`]: 1024 calls served at once per peer
    /// connection.
    pub const DEFAULT_MAX_CALLS_IN_FLIGHT: usize = 1024;

    /// The default of [`Budgets::partial_frames`]: 256 MiB of partial frames per actor.
    pub const DEFAULT_PARTIAL_FRAMES: usize = 256 << 20;

    /// The default of [`Budgets::stream_buffers`]: 256 MiB of buffered stream messages per
    /// peer connection.
    pub const DEFAULT_STREAM_BUFFERS: usize = 256 << 20;

    /// The default of [`Budgets::outgoing_bytes`]: 64 MiB of large messages queued for
    /// writing per peer connection.
    pub const DEFAULT_OUTGOING_BYTES: usize = 64 << 20;

    /// The default of [`Budgets::shm_threshold`]: 64 MiB, the default frame cap, so that
    /// by default only payloads that could not go by copy at all are lent. Measured
    /// (`cargo bench -p plough --bench runtime -- --only shm --quick`, same run, root →
    /// child): a stream of 1 MiB items moved 0.54 GB/s lent against 1.18 GB/s copied, 64
    /// MiB in 1 MiB items 0.34 against 1.01 GB/s; a 1 MiB call argument 0.60 against 0.56
    /// GB/s. A fresh segment per payload (memfd, faults on fresh pages, two mappings)
    /// costs more than the socket's copy into warm buffers; lower the threshold where
    /// the receiver keeps large payloads mapped, or cannot afford the copy's memory.
    pub const DEFAULT_SHM_THRESHOLD: usize = 64 << 20;

    /// The default of [`Budgets::shm_lent`]: 256 MiB lent per connection.
    pub const DEFAULT_SHM_LENT: usize = 256 << 20;

    /// For how many functions a thread keeps the keys of their call counters
    /// (`plough_calls_total`), so that counting a call builds no key; a call of any other
    /// function builds its key each time.
    pub const CALL_COUNTERS: usize = 4096;

    /// The cleanup budget of a cancelled plain function that declares none of its own
    /// ([`Registry::cleanup`](crate::Registry::cleanup)): zero, it is dropped at once and
    /// answered as cancelled. A plain function learns of a cancel only by selecting on
    /// [`Cx::cancelled`](crate::Cx::cancelled); one that does not would only be kept
    /// running to no purpose, so a budget is for the function that does to declare.
    ///
    /// Whatever the budget, a call with nurseries open is given the time to take their
    /// children down ([`Budgets::served_calls`]).
    pub const FUNCTION_CLEANUP: Duration = Duration::ZERO;

    /// How long an exiting actor (or a cancelled call with nurseries open) waits for its
    /// calls and nurseries to take their children down: the ladder's total plus
    /// [`Budgets::shutdown_slack`]. Also the cap of any cleanup budget, so a call answers
    /// before its exiting actor stops waiting for it.
    pub fn served_calls(&self) -> Duration {
        self.ladder.total() + self.shutdown_slack
    }

    /// The longest an actor takes from "cancelled" to "exited": its calls and nurseries
    /// ([`Budgets::served_calls`]), its unregistration, the flush of its connections.
    pub fn actor_exit(&self) -> Duration {
        self.served_calls() + self.unregister + self.flush
    }

    /// The pause before try `attempt` (0, 1, ...) to reach a registrar after losing one,
    /// given a random number `random`: `min * 2^attempt`, capped at
    /// [`Budgets::registrar_retry_max`], taken from its upper half at random (from all of
    /// it for the first try: the survivors of one registrar then spread out at once).
    pub fn registrar_retry(&self, attempt: u32, random: u64) -> Duration {
        let cap = self.registrar_retry_max.max(self.registrar_retry_min);
        let full = self.registrar_retry_min.saturating_mul(1u32 << attempt.min(16)).min(cap);
        let floor = if attempt == 0 { Duration::ZERO } else { full / 2 };
        let span = (full - floor).as_micros().max(1) as u64;
        floor + Duration::from_micros(random % (span + 1))
    }

    /// A bound for cancelling a tree `depth` levels deep below the nursery that cancels
    /// it: a parent waits for each child at most [`LadderConfig::total`] (children go down
    /// in parallel), after which the child's process group is SIGKILLed and its own
    /// children, whose parent died, cancel themselves the same way.
    pub fn tree_teardown(&self, depth: u32) -> Duration {
        self.ladder.total() * depth.max(1)
    }

    /// The fd reserve the actor's listeners keep ([`Budgets::fd_reserve`] and its timing).
    pub fn listener_fd_reserve(&self) -> plough_ipc_wire::FdReserve {
        plough_ipc_wire::FdReserve {
            reserve: self.fd_reserve,
            backoff: self.accept_backoff,
            warn_interval: self.fd_warn_interval,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ladder_total_is_the_sum_of_its_steps() {
        let l = LadderConfig::default();
        assert_eq!(l.total(), Duration::from_millis(500 + 1500 + 1600 + 500));
        let b = Budgets::default();
        assert_eq!(b.served_calls(), l.total() + Duration::from_millis(500));
        assert_eq!(b.actor_exit(), b.served_calls() + Duration::from_secs(1));
        assert_eq!(b.tree_teardown(3), l.total() * 3);
        assert_eq!(b.tree_teardown(0), l.total());
    }

    #[test]
    fn registrar_retries_back_off_jittered_up_to_the_cap_and_reach_a_successor_within_1s() {
        let b = Budgets::default();
        let (min, max) = (b.registrar_retry_min, b.registrar_retry_max);
        assert_eq!((min, max), (Duration::from_millis(5), Duration::from_millis(100)));
        for random in [0, 1, 77, 4_999, u64::MAX / 3, u64::MAX] {
            assert!(b.registrar_retry(0, random) <= min);
            for attempt in 1..40 {
                let full = (min * 2u32.pow(attempt.min(16))).min(max);
                let d = b.registrar_retry(attempt, random);
                assert!(
                    d >= full / 2 && d <= full,
                    "try {attempt}: {d:?} outside {full:?}/2..{full:?}"
                );
            }
        }
        // Jittered: different draws give different pauses.
        let draws: std::collections::HashSet<Duration> =
            (0..50u64).map(|r| b.registrar_retry(3, r * 7919)).collect();
        assert!(draws.len() > 10, "{draws:?}");
        // The worst case of the first seven tries stays far inside a second.
        let worst: Duration = (0..7).map(|a| b.registrar_retry(a, u64::MAX)).sum();
        assert!(worst <= Duration::from_millis(400), "{worst:?}");
        assert!(b.registrar_gap > Duration::from_secs(1));
    }

    #[test]
    fn a_cleanup_that_uses_its_whole_budget_answers_before_the_ladder_escalates() {
        let b = Budgets::default();
        assert_eq!(b.cleanup, Duration::from_millis(1500));
        assert!(b.cleanup < b.ladder.ack_timeout + b.ladder.exit_timeout, "{b:?}");
        assert!(b.cleanup < b.served_calls(), "{b:?}");
        assert_eq!(Budgets::FUNCTION_CLEANUP, Duration::ZERO);
    }

    #[test]
    fn the_fd_reserve_covers_a_spawn() {
        let b = Budgets::default();
        assert_eq!((b.fd_reserve, b.spawn_fds), (64, 16));
        assert!(b.spawn_fds <= b.fd_reserve);
        // At a soft limit of 64 a quarter is kept: still room for one spawn.
        assert_eq!(b.listener_fd_reserve().effective(Some(64)), 16);
        assert_eq!(b.listener_fd_reserve().effective(Some(1024)), 64);
    }
}
