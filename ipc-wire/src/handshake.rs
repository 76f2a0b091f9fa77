//! The opening exchange: both ends say who they are ([`Hello`]: an [`Aid`] and a fresh
//! nonce), then prove that they hold the tree's [`Secret`] ([`Msg::Proof`], see
//! [`auth`]) — all under a deadline and under much smaller frame limits than
//! after.
//!
//! An accepting actor is exposed to whoever can connect, before it knows who they are.
//! The hazards designed out:
//!
//! * **A stranger reaching the runtime**: nothing a peer sends after its hello is read
//!   until its proof checked out; a peer that fails gets one [`ErrorKind::Refused`] error
//!   frame saying why (another uid, a bad proof, too many waiting, too slow) and the
//!   connection closes. The refusal is logged with the peer's address or uid.
//! * **A silent peer holding a connection** (its task and buffer) forever: the deadline
//!   drops it.
//! * **A garbage or hostile peer making us allocate**: until the handshake completes only
//!   [`Limits::HANDSHAKE`] frames (64 KiB) are accepted.
//! * **A flood of connections locking everyone out**: at most
//!   [`HandshakeConfig::max_pending`] handshakes run at once, and when one more arrives the
//!   *oldest* is dropped (told so) — never the newcomer. A legitimate peer authenticates in
//!   well under a millisecond, so it is through long before silent or slow connections can
//!   push it out; they are the ones that age into eviction. Connections never wait in the
//!   kernel's backlog for a slot, so a flood of silent ones cannot stall an honest dialer
//!   for their whole deadline.
//! * **One bad peer delaying good ones**: each handshake runs in its own task.
//! * **A racer taking an expected peer's place** (a spawned child connecting back): an
//!   acceptor can hold [`PeerKeys`], a one-time key per expected peer uuid; a peer whose
//!   hello names such a uuid must prove that key, not the tree's secret, so a racer who
//!   learnt the uuid is refused and the real peer still gets in. Such a handshake, once
//!   its hello named an expected uuid, is never evicted.
//! * **A peer of another host without TLS, or of another build**: over `tls://` the TLS
//!   handshake ([`Connection::secure`]) runs first, inside the same deadline and eviction
//!   rules, so a peer stalling mid-TLS costs one slot until the deadline and nothing
//!   else; a plaintext peer at a TLS listener is told, in a plough frame it can read, that
//!   TLS is required. Where builds must match ([`BuildCheck`]; over TLS by default), each
//!   hello carries its [`BuildId`] and a peer of another build is refused, both ids named.
//!
//! [`Aid`]: crate::Aid
//! [`ErrorKind::Refused`]: crate::ErrorKind::Refused

use crate::Address;
use crate::auth::{self, Role, Secret, Transcript};
use crate::build_id::{BuildId, BuildIdError};
use crate::codec::FrameCodec;
use crate::error::{FrameError, MsgError};
use crate::limits::Limits;
use crate::msg::{Aid, ErrorKind, ErrorMsg, Hello, Msg};
use crate::msg_kind::MsgKind;
use crate::tls::{TlsFailure, TlsIdentity};
use crate::transport::{
    self, AcceptError, Connection, Listener, Peer, SecureError, TransportError,
};
use futures::{SinkExt, StreamExt};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

/// A framed connection: a `Stream` of [`Frame`](crate::Frame)s and a `Sink` of
/// [`Msg`]s (owned or by reference).
pub type FramedConnection = Framed<Connection, FrameCodec>;

/// How long a refusal frame may take to leave: it is a courtesy to the refused peer, and
/// a peer that does not read must not hold the connection open with it.
const REFUSAL_WRITE: Duration = Duration::from_millis(200);

/// Handshake settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandshakeConfig {
    /// How long the whole exchange may take (default 10 s).
    pub deadline: Duration,
    /// How many handshakes an [`Acceptor`] runs at once (default 256, at least 1); one
    /// more evicts the oldest.
    pub max_pending: usize,
    /// Limits while the peer is unknown (default [`Limits::HANDSHAKE`]).
    pub handshake_limits: Limits,
    /// Limits once the handshake is done (default [`Limits::DEFAULT`]).
    pub limits: Limits,
    /// On which connections the peer must run our build (default [`BuildCheck::OverTls`]).
    pub build_check: BuildCheck,
    /// The build id this end states; `None` (the default): this executable's,
    /// [`BuildId::current`]. A program with an identity of its own (a release number) can
    /// give it here.
    pub build_id: Option<BuildId>,
}

impl Default for HandshakeConfig {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(10),
            max_pending: 256,
            handshake_limits: Limits::HANDSHAKE,
            limits: Limits::DEFAULT,
            build_check: BuildCheck::OverTls,
            build_id: None,
        }
    }
}

/// On which connections both ends state their [`BuildId`] and refuse a peer whose build
/// differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum BuildCheck {
    /// Over TLS, i.e. between hosts (the default). Locally, other programs of the user
    /// (`plough ps`, another application sharing the registry) are legitimate peers, and
    /// a tree's own children run its executable by construction.
    #[default]
    OverTls,
    /// On every connection.
    Always,
    /// Never.
    Never,
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

    /// With another rule for where builds must match.
    pub fn with_build_check(mut self, check: BuildCheck) -> Self {
        self.build_check = check;
        self
    }

    /// Stating `id` as this end's build instead of this executable's.
    pub fn with_build_id(mut self, id: BuildId) -> Self {
        self.build_id = Some(id);
        self
    }
}

/// Who this end of a connection is, and the secret it proves that with.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// Who is speaking.
    pub aid: Aid,
    /// The tree's secret.
    pub secret: Secret,
}

/// One-time keys of expected peers, by the uuid their hello names (see the module docs):
/// `Some(key)` for a peer that must prove `key` instead of the tree's secret.
pub type PeerKeys = Arc<dyn Fn(&crate::msg::Uuid) -> Option<Secret> + Send + Sync>;

/// What an acceptor's handshake task is given: when to give up its slot, and how to keep it.
struct Slot {
    /// Cancelled when the acceptor evicts this handshake.
    evict: CancellationToken,
    /// The acceptor's `max_pending` (for the refusal's message).
    cap: usize,
    /// Set once the peer named an expected uuid: never evicted from then on.
    protected: Arc<AtomicBool>,
    keys: Option<PeerKeys>,
}

/// A connection whose peer has said who it is and proved it holds the secret.
#[derive(Debug)]
pub struct Established {
    /// Who the peer is.
    pub peer: Aid,
    /// The peer reads batches of stream items ([`Msg::Yields`]); it said so in its hello.
    pub peer_batches: bool,
    /// The framed connection, now under the post-handshake limits. Bytes the peer sent
    /// right after its proof are already buffered in it: nothing is lost.
    pub framed: FramedConnection,
    /// The peer said it reads payloads lent through shared memory (`Hello.reads_shm`).
    pub peer_reads_shm: bool,
}

/// Why a connection was refused before its peer was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The peer's proof did not check out.
    #[error(
        "bad proof: the peer does not hold this tree's secret (or replayed another \
         connection's proof)"
    )]
    BadProof,
    /// The peer's first message was not a hello, or its second not a proof.
    #[error("protocol: expected a {expected} message, got a {got} message")]
    Protocol {
        /// What should have come.
        expected: MsgKind,
        /// What came.
        got: MsgKind,
    },
    /// The peer did not complete the exchange within the deadline.
    #[error("too slow: the handshake was not completed within {0:?}")]
    TooSlow(Duration),
    /// More peers were authenticating at once than the acceptor allows; this one, the
    /// oldest, was dropped to make room.
    #[error(
        "too many connections: more than {0} were waiting to authenticate; this one, the oldest, was dropped"
    )]
    TooManyPending(usize),
    /// A Unix peer of another uid.
    #[error("wrong uid: connections from uid {uid} are refused; only uid {ours} may connect")]
    ForeignUid {
        /// The peer's uid.
        uid: u32,
        /// Ours.
        ours: u32,
    },
    /// A plaintext peer at a TLS listener.
    #[error("TLS required: this listener speaks TLS only (dial its tls:// address)")]
    TlsRequired,
    /// A plaintext TCP peer of another host while TLS is configured.
    #[error(
        "plaintext from another host: TLS is configured here, so other hosts must dial a tls:// address"
    )]
    PlaintextFromAnotherHost,
    /// The peer runs another build than the refuser.
    #[error("build mismatch: this end runs build {ours}; the peer stated {}", fmt_build(theirs))]
    BuildMismatch {
        /// The refuser's build.
        ours: BuildId,
        /// The build the peer stated, if any.
        theirs: Option<BuildId>,
    },
}

fn fmt_build(b: &Option<BuildId>) -> String {
    match b {
        Some(b) => format!("build {b}"),
        None => "no build id".to_owned(),
    }
}

/// The handshake failed; only this connection is affected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The peer did not complete the exchange in time.
    #[error("handshake not completed within {0:?}")]
    TimedOut(Duration),
    /// The peer closed the connection before the exchange was complete.
    #[error("peer closed the connection during the handshake")]
    Closed,
    /// The peer's first message was not a `Hello` (or its second not a proof).
    #[error("expected a {expected} message in the handshake, got a {got} message")]
    Unexpected {
        /// What should have come.
        expected: MsgKind,
        /// What came.
        got: MsgKind,
    },
    /// The peer's bytes could not be framed (garbage, or a frame over the handshake limit).
    #[error("bad frame during the handshake")]
    Frame(#[from] FrameError),
    /// A message of the handshake was not readable.
    #[error("bad handshake message")]
    Msg(#[from] MsgError),
    /// The peer's proof did not check out: it does not hold our secret. The peer was told.
    #[error("the peer {peer} did not prove it holds this tree's secret; refused it")]
    BadProof {
        /// Who the peer said it was.
        peer: String,
    },
    /// We were refused by the peer, which said why.
    #[error("refused by the peer: {reason}")]
    Refused {
        /// The peer's reason, e.g. "bad proof: ...".
        reason: String,
    },
    /// This pending handshake was dropped to make room (see [`HandshakeConfig::max_pending`]).
    #[error("{0}")]
    Evicted(Refusal),
    /// Connecting failed.
    #[error(transparent)]
    Connect(#[from] TransportError),
    /// Accepting failed (or the peer's uid was refused).
    #[error(transparent)]
    Accept(#[from] AcceptError),
    /// The kernel's random source failed (no nonce).
    #[error("cannot draw a nonce: {0}")]
    Random(std::io::Error),
    /// The TLS handshake failed (or the peer's TLS layer refused us after it), or a
    /// plaintext peer reached a TLS listener ([`TlsFailure::NotTls`]; it was told).
    #[error("TLS with {peer} failed: {failure}")]
    Tls {
        /// The peer's address.
        peer: String,
        /// Why.
        failure: TlsFailure,
    },
    /// The peer runs another build than ours (see [`BuildCheck`]); it was told.
    #[error(
        "the peer {peer} runs build {}, this end runs build {ours}; refused it",
        fmt_theirs(theirs)
    )]
    BuildMismatch {
        /// Who the peer said it was.
        peer: String,
        /// Our build.
        ours: BuildId,
        /// Its build, if it stated one.
        theirs: Option<BuildId>,
    },
    /// Our own build id could not be computed.
    #[error(transparent)]
    BuildId(#[from] BuildIdError),
}

fn fmt_theirs(b: &Option<BuildId>) -> String {
    match b {
        Some(b) => b.to_string(),
        None => "(none stated)".to_owned(),
    }
}

impl HandshakeError {
    /// Why the peer is told it was refused; `None` when the failure is ours or the peer
    /// is gone (nobody to tell).
    fn refusal(&self, deadline: Duration) -> Option<Refusal> {
        match self {
            HandshakeError::BadProof { .. } => Some(Refusal::BadProof),
            HandshakeError::Unexpected { expected, got } => {
                Some(Refusal::Protocol { expected: *expected, got: *got })
            }
            HandshakeError::TimedOut(_) => Some(Refusal::TooSlow(deadline)),
            HandshakeError::Evicted(r) => Some(*r),
            HandshakeError::BuildMismatch { ours, theirs, .. } => {
                Some(Refusal::BuildMismatch { ours: *ours, theirs: *theirs })
            }
            _ => None,
        }
    }
}

/// The connecting end's handshake over `conn`: hellos both ways, our proof, then the
/// peer's, which must check out.
///
/// # Errors
/// [`HandshakeError`] on timeout, EOF, garbage, an oversized frame, a wrong message, a
/// refusal by the peer ([`HandshakeError::Refused`], with its reason), or a peer that
/// does not prove it holds the secret ([`HandshakeError::BadProof`]).
///
/// # Panics
/// Outside a Tokio runtime with the time driver enabled (the deadline needs it).
pub async fn initiate(
    conn: Connection,
    me: &Credentials,
    config: &HandshakeConfig,
) -> Result<Established, HandshakeError> {
    exchange(conn, me, Role::Connecting, config, None).await
}

/// The accepting end's handshake over `conn` (as [`Acceptor`] runs it, or over a
/// connection that arrived some other way, such as a socket pair): hellos both ways, the
/// peer's proof, which must check out (else the peer is told and the connection
/// closes), then ours.
///
/// # Errors
/// As [`initiate`].
///
/// # Panics
/// As [`initiate`].
pub async fn respond(
    conn: Connection,
    me: &Credentials,
    config: &HandshakeConfig,
) -> Result<Established, HandshakeError> {
    exchange(conn, me, Role::Accepting, config, None).await
}

/// Connects to `addr` and runs the connecting end's handshake; the deadline covers both.
///
/// # Errors
/// [`HandshakeError::Connect`] when connecting fails, otherwise as [`initiate`].
///
/// # Panics
/// As [`initiate`].
pub async fn connect(
    addr: &Address,
    me: &Credentials,
    config: &HandshakeConfig,
) -> Result<Established, HandshakeError> {
    connect_with(addr, me, config, None).await
}

/// [`connect`] with a TLS identity or without (see
/// [`transport::connect_with`]): a `tls://` address's TLS handshake runs inside the
/// deadline, then the exchange on top of it.
///
/// # Errors
/// As [`connect`]; [`HandshakeError::Tls`] when TLS fails (a stall mid-TLS is
/// [`TlsFailure::Stalled`]); [`HandshakeError::BuildMismatch`] for a peer of another build.
///
/// # Panics
/// As [`initiate`].
pub async fn connect_with(
    addr: &Address,
    me: &Credentials,
    config: &HandshakeConfig,
    tls: Option<&TlsIdentity>,
) -> Result<Established, HandshakeError> {
    let started = tokio::time::Instant::now();
    let conn = tokio::time::timeout(config.deadline, transport::dial(addr, tls))
        .await
        .map_err(|_| HandshakeError::TimedOut(config.deadline))??;
    let left = config.deadline.saturating_sub(started.elapsed());
    initiate(conn, me, &HandshakeConfig { deadline: left, ..*config }).await
}

/// The exchange for either role; an acceptor's `slot` may end it early with a
/// [`Refusal::TooManyPending`].
async fn exchange(
    conn: Connection,
    me: &Credentials,
    role: Role,
    config: &HandshakeConfig,
    slot: Option<Slot>,
) -> Result<Established, HandshakeError> {
    let started = tokio::time::Instant::now();
    let peer_addr = conn.peer();
    let peer_text = match peer_addr {
        Peer::Tcp(a) => a.to_string(),
        Peer::Uds { uid, pid, .. } => format!("uid {uid} pid {pid:?}"),
    };
    let evicted = || async {
        match &slot {
            Some(slot) => {
                slot.evict.cancelled().await;
                slot.cap
            }
            None => std::future::pending().await,
        }
    };
    // TLS first, where the connection has it to run: same deadline, same eviction.
    let conn = if conn.is_tls() {
        let secured = tokio::select! {
            out = tokio::time::timeout(config.deadline, conn.secure()) => out.unwrap_or(Err(
                SecureError { failure: TlsFailure::Stalled(config.deadline), plaintext: None },
            )),
            cap = evicted() => return Err(HandshakeError::Evicted(Refusal::TooManyPending(cap))),
        };
        match secured {
            Ok(conn) => conn,
            Err(SecureError { failure, plaintext }) => {
                if let Some(conn) = plaintext {
                    log_refusal(role, &peer_addr, &Refusal::TlsRequired);
                    let mut framed = Framed::new(*conn, FrameCodec::new(config.handshake_limits));
                    refuse(&mut framed, &me.aid, &Refusal::TlsRequired).await;
                } else {
                    tracing::warn!(peer = %peer_text, %failure, "TLS handshake failed");
                }
                return Err(HandshakeError::Tls { peer: peer_text, failure });
            }
        }
    } else {
        conn
    };
    let deadline = config.deadline.saturating_sub(started.elapsed());
    let is_tls = conn.is_tls();
    // Each end's view of the TCP endpoints (local, peer): the peer's view is ours swapped;
    // over TLS, the session's exporter value too (the same at both ends of one session).
    let binding = conn.channel_binding().map(|b| {
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!("|tls:{hex}")
    });
    let views = match conn.tcp_endpoints() {
        Some((local, peer)) => {
            let b = binding.unwrap_or_default();
            (format!("{local}>{peer}{b}"), format!("{peer}>{local}{b}"))
        }
        None => (String::new(), String::new()),
    };
    let build = match (config.build_check, is_tls) {
        (BuildCheck::Always, _) | (BuildCheck::OverTls, true) => match config.build_id {
            Some(id) => Some(id),
            // Hashing the executable (once per process) is blocking work.
            None => Some(match tokio::task::spawn_blocking(BuildId::current).await {
                Ok(id) => id?,
                Err(_) => BuildId::current()?,
            }),
        },
        _ => None,
    };
    let mut framed = Framed::new(conn, FrameCodec::new(config.handshake_limits));
    let ours = auth::nonce().map_err(HandshakeError::Random)?;
    let steps = steps(&mut framed, me, role, &ours, slot.as_ref(), &views, build);
    let out = tokio::select! {
        out = tokio::time::timeout(deadline, steps) => {
            out.unwrap_or(Err(HandshakeError::TimedOut(config.deadline)))
        }
        cap = evicted() => Err(HandshakeError::Evicted(Refusal::TooManyPending(cap))),
    };
    // Over TLS, a read that failed on a TLS alert (the peer refused our certificate after
    // its handshake, as TLS 1.3 servers do) is a TLS failure, not a framing one.
    let out = out.map_err(|e| match e {
        HandshakeError::Frame(FrameError::Io(io)) if is_tls => match TlsFailure::from_io(&io, "") {
            Some(failure) => HandshakeError::Tls { peer: peer_text.clone(), failure },
            None => HandshakeError::Frame(FrameError::Io(io)),
        },
        e => e,
    });
    match out {
        Ok((peer, peer_batches, peer_reads_shm)) => {
            framed.codec_mut().set_limits(config.limits);
            Ok(Established { peer, peer_batches, framed, peer_reads_shm })
        }
        Err(e) => {
            if let Some(why) = e.refusal(config.deadline) {
                log_refusal(role, &peer_addr, &why);
                refuse(&mut framed, &me.aid, &why).await;
            }
            Err(e)
        }
    }
}

/// The messages of the exchange, in order; the peer's aid once it proved itself, and
/// whether it reads lent payloads.
async fn steps(
    framed: &mut FramedConnection,
    me: &Credentials,
    role: Role,
    ours: &[u8; auth::KEY_LEN],
    slot: Option<&Slot>,
    (my_view, their_view): &(String, String),
    build: Option<BuildId>,
) -> Result<(Aid, bool, bool), HandshakeError> {
    let hello = Hello {
        aid: me.aid.clone(),
        nonce: bytes::Bytes::copy_from_slice(ours),
        build: build.map(|b| bytes::Bytes::copy_from_slice(&b.0)).unwrap_or_default(),
        batches: true,
        reads_shm: true,
    };
    framed.send(&Msg::Hello(Box::new(hello))).await?;
    let peer = match next(framed).await? {
        Msg::Hello(h) => h,
        other => return Err(unexpected(MsgKind::Hello, &other)),
    };
    if let Some(ours) = build {
        let theirs = BuildId::from_wire(&peer.build);
        if theirs != Some(ours) {
            return Err(HandshakeError::BuildMismatch { peer: peer.aid.to_string(), ours, theirs });
        }
    }
    // An expected peer proves its one-time key (and is answered with it), nothing else.
    let key = slot.and_then(|s| Some((s, s.keys.as_ref()?(&peer.aid.uuid)?)));
    let secret = match &key {
        Some((slot, key)) => {
            slot.protected.store(true, Ordering::Relaxed);
            key
        }
        None => &me.secret,
    };
    let t = |prover: Role, prover_nonce, verifier_nonce, prover_uuid, verifier_uuid, endpoints| {
        Transcript {
            role: prover,
            prover_nonce,
            verifier_nonce,
            prover_uuid,
            verifier_uuid,
            endpoints,
        }
    };
    let (mine, theirs) = (&me.aid.uuid.0[..], &peer.aid.uuid.0[..]);
    let my_proof =
        |secret: &Secret| secret.prove(&t(role, ours, &peer.nonce, mine, theirs, my_view));
    let check = |proof: &[u8]| {
        let other = match role {
            Role::Connecting => Role::Accepting,
            Role::Accepting => Role::Connecting,
        };
        secret.verify(&t(other, &peer.nonce, ours, theirs, mine, their_view), proof)
    };
    let bad = || HandshakeError::BadProof { peer: peer.aid.to_string() };
    // The connecting end proves itself first; the accepting end answers only a peer that
    // did, so a stranger never sees a proof of ours.
    if role == Role::Connecting {
        framed.send(&Msg::Proof(my_proof(secret).to_vec().into())).await?;
    }
    match next(framed).await? {
        Msg::Proof(p) if check(&p) => {}
        Msg::Proof(_) => return Err(bad()),
        other => return Err(unexpected(MsgKind::Proof, &other)),
    }
    if role == Role::Accepting {
        framed.send(&Msg::Proof(my_proof(secret).to_vec().into())).await?;
    }
    Ok((peer.aid, peer.batches, peer.reads_shm))
}

/// The next message of the handshake; a refusal from the peer is [`HandshakeError::Refused`].
async fn next(framed: &mut FramedConnection) -> Result<Msg, HandshakeError> {
    let frame = framed.next().await.ok_or(HandshakeError::Closed)??;
    match frame.decode()? {
        Msg::Error(e) if e.kind == ErrorKind::Refused => {
            Err(HandshakeError::Refused { reason: e.message })
        }
        msg => Ok(msg),
    }
}

fn unexpected(expected: MsgKind, got: &Msg) -> HandshakeError {
    HandshakeError::Unexpected { expected, got: got.kind() }
}

fn log_refusal(role: Role, peer: &Peer, why: &Refusal) {
    let side = if role == Role::Accepting { "accepted" } else { "dialed" };
    match peer {
        Peer::Tcp(addr) => {
            tracing::warn!(peer = %addr, reason = %why, "refused a {side} connection")
        }
        Peer::Uds { uid, pid, .. } => {
            tracing::warn!(uid, ?pid, reason = %why, "refused a {side} connection");
        }
    }
}

/// Tells the peer why it is refused (one error frame, best effort and briefly), then
/// closes our side.
async fn refuse(framed: &mut FramedConnection, me: &Aid, why: &Refusal) {
    let msg = Msg::Error(Box::new(ErrorMsg {
        cid: None,
        source: me.clone(),
        kind: ErrorKind::Refused,
        type_name: ErrorKind::Refused.type_name().to_owned(),
        message: why.to_string(),
        ..ErrorMsg::default()
    }));
    let _ = tokio::time::timeout(REFUSAL_WRITE, async {
        SinkExt::<&Msg>::send(framed, &msg).await?;
        SinkExt::<&Msg>::close(framed).await
    })
    .await;
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
/// [`HandshakeConfig::max_pending`] at a time: one more evicts the oldest (which is told
/// so). Dropping it aborts pending handshakes and, for UDS, removes the socket file.
///
/// # Panics
/// Its accept methods spawn the handshakes as tasks on the current Tokio runtime, which
/// must have the I/O and time drivers enabled.
pub struct Acceptor {
    listener: Listener,
    me: Credentials,
    config: HandshakeConfig,
    pending: JoinSet<Result<Established, HandshakeError>>,
    /// The handshakes not yet evicted, oldest first: their task, eviction token, and
    /// whether they are protected from eviction.
    order: VecDeque<(tokio::task::Id, CancellationToken, Arc<AtomicBool>)>,
    keys: Option<PeerKeys>,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("addr", self.listener.local_addr())
            .field("aid", &self.me.aid)
            .field("pending", &self.order.len())
            .field("peer_keys", &self.keys.is_some())
            .finish_non_exhaustive()
    }
}

impl Acceptor {
    /// An acceptor that answers as `me`.
    pub fn new(listener: Listener, me: Credentials, config: HandshakeConfig) -> Self {
        Self {
            listener,
            me,
            config: config.with_max_pending(config.max_pending),
            pending: JoinSet::new(),
            order: VecDeque::new(),
            keys: None,
        }
    }

    /// With one-time keys for expected peers (see [`PeerKeys`]).
    pub fn with_peer_keys(mut self, keys: PeerKeys) -> Self {
        self.keys = Some(keys);
        self
    }

    /// The listener's address.
    pub fn local_addr(&self) -> &Address {
        self.listener.local_addr()
    }

    /// Handshakes in progress that may still complete (never more than `max_pending`).
    pub fn pending(&self) -> usize {
        self.order.len()
    }

    /// The next completed or failed handshake. Cancel-safe: dropping the future loses no
    /// connection (pending handshakes stay owned by the acceptor).
    pub async fn accept_event(&mut self) -> AcceptEvent {
        loop {
            tokio::select! {
                biased;
                Some(done) = self.pending.join_next_with_id(), if !self.pending.is_empty() => {
                    let id = match &done {
                        Ok((id, _)) => *id,
                        Err(e) => e.id(),
                    };
                    self.order.retain(|(t, ..)| *t != id);
                    return match done {
                        Ok((_, Ok(est))) => AcceptEvent::Established(Box::new(est)),
                        Ok((_, Err(e))) => AcceptEvent::Rejected(e),
                        // A handshake task cannot panic short of a bug; report it as closed.
                        Err(_) => AcceptEvent::Rejected(HandshakeError::Closed),
                    };
                }
                accepted = self.listener.accept() => match accepted {
                    Ok(conn) => self.start(conn),
                    Err(AcceptError::PlaintextFromAnotherHost { peer, conn }) => {
                        let me = self.me.aid.clone();
                        self.pending.spawn(async move {
                            let why = Refusal::PlaintextFromAnotherHost;
                            log_refusal(Role::Accepting, &conn.peer(), &why);
                            let mut framed = Framed::new(*conn, FrameCodec::new(Limits::HANDSHAKE));
                            refuse(&mut framed, &me, &why).await;
                            Err(AcceptError::PlaintextFromAnotherHost { peer, conn: Box::new(framed.into_inner()) }.into())
                        });
                    }
                    Err(AcceptError::PeerRefused { uid, pid, ours, conn }) => {
                        // Told why, briefly, in a task of its own; the connection is then
                        // dropped. Nothing of it counts against the pending handshakes.
                        let me = self.me.aid.clone();
                        self.pending.spawn(async move {
                            let why = Refusal::ForeignUid { uid, ours };
                            log_refusal(Role::Accepting, &conn.peer(), &why);
                            let mut framed = Framed::new(*conn, FrameCodec::new(Limits::HANDSHAKE));
                            refuse(&mut framed, &me, &why).await;
                            Err(AcceptError::PeerRefused { uid, pid, ours, conn: Box::new(framed.into_inner()) }.into())
                        });
                    }
                    Err(e) => return AcceptEvent::Rejected(e.into()),
                },
            }
        }
    }

    /// Starts the handshake of a new connection, evicting the oldest pending one that is
    /// not protected when all slots are taken.
    fn start(&mut self, conn: Connection) {
        let cap = self.config.max_pending;
        while self.order.len() >= cap {
            let Some(i) = self.order.iter().position(|(.., p)| !p.load(Ordering::Relaxed)) else {
                // Every slot holds an expected peer: they are few, and finish quickly.
                break;
            };
            if let Some((_, token, _)) = self.order.remove(i) {
                token.cancel();
            }
        }
        let (me, config) = (self.me.clone(), self.config);
        let slot = Slot {
            evict: CancellationToken::new(),
            cap,
            protected: Arc::new(AtomicBool::new(false)),
            keys: self.keys.clone(),
        };
        let (token, protected) = (slot.evict.clone(), Arc::clone(&slot.protected));
        let task = self
            .pending
            .spawn(async move { exchange(conn, &me, Role::Accepting, &config, Some(slot)).await });
        self.order.push_back((task.id(), token, protected));
    }

    /// The next peer that completes its handshake; refused connections and failed
    /// handshakes are logged (at `debug`; refusals at `warn` where they happen) and
    /// skipped.
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
