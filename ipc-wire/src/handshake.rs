//! The opening exchange: both ends send a `Hello` (their [`Aid`](crate::Aid)) and read the
//! other's, under a deadline and under much smaller frame limits than after.
//!
//! An accepting actor is exposed to whoever can connect, before it knows who they are.
//! The hazards designed out: a silent peer holding a connection (and its task and buffer)
//! forever — the deadline drops it; a garbage or hostile peer making us allocate — until
//! the handshake completes only [`Limits::HANDSHAKE`] frames (64 KiB) are accepted; a flood
//! of connections — at most [`HandshakeConfig::max_pending`] handshakes run at once, the
//! rest wait in the kernel's backlog; and one bad peer delaying good ones — each handshake
//! runs in its own task, so a good peer completes while silent ones wait out their
//! deadline. `Hello` carries a `tree_proof` field, empty for now, where tree
//! authentication will go.

use crate::Address;
use crate::codec::FrameCodec;
use crate::error::{FrameError, MsgError};
use crate::limits::Limits;
use crate::msg::{Hello, Msg};
use crate::msg_kind::MsgKind;
use crate::transport::{self, AcceptError, Connection, Listener, TransportError};
use futures::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::codec::Framed;

/// A framed connection: a `Stream` of [`Frame`](crate::Frame)s and a `Sink` of
/// [`Msg`]s (owned or by reference).
pub type FramedConnection = Framed<Connection, FrameCodec>;

/// Handshake settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandshakeConfig {
    /// How long the whole exchange may take (default 10 s).
    pub deadline: Duration,
    /// How many handshakes an [`Acceptor`] runs at once (default 64, at least 1).
    pub max_pending: usize,
    /// Limits while the peer is unknown (default [`Limits::HANDSHAKE`]).
    pub handshake_limits: Limits,
    /// Limits once the handshake is done (default [`Limits::DEFAULT`]).
    pub limits: Limits,
}

impl Default for HandshakeConfig {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(10),
            max_pending: 64,
            handshake_limits: Limits::HANDSHAKE,
            limits: Limits::DEFAULT,
        }
    }
}

impl HandshakeConfig {
    /// With another deadline.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// With another bound on concurrent handshakes (at least 1).
    pub fn with_max_pending(mut self, n: usize) -> Self {
        self.max_pending = n.max(1);
        self
    }

    /// With other limits after the handshake.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
}

/// A connection whose peer has said who it is.
#[derive(Debug)]
pub struct Established {
    /// The peer's `Hello`.
    pub peer: Hello,
    /// The framed connection, now under the post-handshake limits. Bytes the peer sent
    /// right after its `Hello` are already buffered in it: nothing is lost.
    pub framed: FramedConnection,
}

/// The handshake failed; only this connection is affected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The peer did not complete the exchange in time.
    #[error("handshake not completed within {0:?}")]
    TimedOut(Duration),
    /// The peer closed the connection before sending its `Hello`.
    #[error("peer closed the connection during the handshake")]
    Closed,
    /// The peer's first message was not a `Hello`.
    #[error("expected a hello as the first message, got a {0} message")]
    UnexpectedFirst(MsgKind),
    /// The peer's bytes could not be framed (garbage, or a frame over the handshake limit).
    #[error("bad frame during the handshake")]
    Frame(#[from] FrameError),
    /// The peer's first frame was not a readable message.
    #[error("bad first message")]
    Msg(#[from] MsgError),
    /// Connecting failed.
    #[error(transparent)]
    Connect(#[from] TransportError),
    /// Accepting failed (or the peer's uid was refused).
    #[error(transparent)]
    Accept(#[from] AcceptError),
}

/// Runs the handshake on a fresh connection: sends `ours`, reads the peer's `Hello`.
///
/// # Errors
/// [`HandshakeError`] on timeout, EOF, garbage, an oversized frame or a wrong first message.
///
/// # Panics
/// Outside a Tokio runtime with the time driver enabled (the deadline needs it).
pub async fn handshake(
    conn: Connection,
    ours: &Hello,
    config: &HandshakeConfig,
) -> Result<Established, HandshakeError> {
    let mut framed = Framed::new(conn, FrameCodec::new(config.handshake_limits));
    let exchange = async {
        framed.send(&Msg::Hello(ours.clone())).await?;
        let frame = framed.next().await.ok_or(HandshakeError::Closed)??;
        match frame.decode()? {
            Msg::Hello(h) => Ok(h),
            other => Err(HandshakeError::UnexpectedFirst(other.kind())),
        }
    };
    let peer = tokio::time::timeout(config.deadline, exchange)
        .await
        .map_err(|_| HandshakeError::TimedOut(config.deadline))??;
    framed.codec_mut().set_limits(config.limits);
    Ok(Established { peer, framed })
}

/// Connects to `addr` and runs the handshake; the deadline covers both.
///
/// # Errors
/// [`HandshakeError::Connect`] when connecting fails, otherwise as [`handshake`].
///
/// # Panics
/// As [`handshake`].
pub async fn connect(
    addr: &Address,
    ours: &Hello,
    config: &HandshakeConfig,
) -> Result<Established, HandshakeError> {
    let started = tokio::time::Instant::now();
    let conn = tokio::time::timeout(config.deadline, transport::connect(addr))
        .await
        .map_err(|_| HandshakeError::TimedOut(config.deadline))??;
    let left = config.deadline.saturating_sub(started.elapsed());
    handshake(conn, ours, &HandshakeConfig { deadline: left, ..*config }).await
}

/// What [`Acceptor::accept_event`] saw.
#[derive(Debug)]
pub enum AcceptEvent {
    /// A peer completed its handshake.
    Established(Box<Established>),
    /// A connection was refused or its handshake failed; the acceptor carries on.
    Rejected(HandshakeError),
}

/// Accepts connections and runs their handshakes concurrently, at most
/// [`HandshakeConfig::max_pending`] at a time. Dropping it aborts pending handshakes and,
/// for UDS, removes the socket file.
///
/// # Panics
/// Its accept methods spawn the handshakes as tasks on the current Tokio runtime, which
/// must have the I/O and time drivers enabled.
#[derive(Debug)]
pub struct Acceptor {
    listener: Listener,
    ours: Hello,
    config: HandshakeConfig,
    pending: JoinSet<Result<Established, HandshakeError>>,
}

impl Acceptor {
    /// An acceptor answering with `ours`.
    pub fn new(listener: Listener, ours: Hello, config: HandshakeConfig) -> Self {
        Self {
            listener,
            ours,
            config: config.with_max_pending(config.max_pending),
            pending: JoinSet::new(),
        }
    }

    /// The listener's address.
    pub fn local_addr(&self) -> &Address {
        self.listener.local_addr()
    }

    /// Handshakes in progress (never more than `max_pending`).
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The next completed or failed handshake. Cancel-safe: dropping the future loses no
    /// connection (pending handshakes stay owned by the acceptor).
    pub async fn accept_event(&mut self) -> AcceptEvent {
        loop {
            let room = self.pending.len() < self.config.max_pending;
            tokio::select! {
                Some(done) = self.pending.join_next(), if !self.pending.is_empty() => {
                    return match done {
                        Ok(Ok(est)) => AcceptEvent::Established(Box::new(est)),
                        Ok(Err(e)) => AcceptEvent::Rejected(e),
                        // A handshake task cannot panic short of a bug; report it as closed.
                        Err(_) => AcceptEvent::Rejected(HandshakeError::Closed),
                    };
                }
                accepted = self.listener.accept(), if room => match accepted {
                    Ok(conn) => {
                        let (ours, config) = (self.ours.clone(), self.config);
                        self.pending.spawn(async move { handshake(conn, &ours, &config).await });
                    }
                    Err(e) => return AcceptEvent::Rejected(e.into()),
                },
            }
        }
    }

    /// The next peer that completes its handshake; refused connections and failed
    /// handshakes are logged (at `debug`) and skipped.
    pub async fn accept(&mut self) -> Established {
        loop {
            match self.accept_event().await {
                AcceptEvent::Established(est) => return *est,
                AcceptEvent::Rejected(HandshakeError::Accept(AcceptError::Io(e))) => {
                    // e.g. EMFILE: back off briefly instead of spinning on the error.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                AcceptEvent::Rejected(e) => tracing::debug!(error = %e, "connection rejected"),
            }
        }
    }
}
