//! Listeners and connections over TCP and Unix domain sockets, with the peer checked.
//!
//! What is designed out here: a process of another user talking to our actors over a Unix
//! socket (the socket is 0600 in a 0700 directory, and on top of that every accepted
//! connection's `SO_PEERCRED` uid must be ours — a loosened permission does not open the
//! door); a stale socket file from a crashed run blocking the name forever (it is reclaimed,
//! but only after a connect proves nobody listens behind it); a live listener's file being
//! unlinked by someone else's cleanup (a listener removes only the file it created, checked
//! by device and inode); and accidental exposure over TCP (addresses are explicit IPs, and
//! the defaults are loopback); and a flooded listener taking the process's last fds (it
//! keeps an fd reserve for the rest of the process: see [`FdReserve`]).
//!
//! # Between hosts: TLS, and plaintext only within a host
//!
//! A `tls://` address is TCP under mutual TLS (see [`tls`](crate::tls)); binding or
//! dialing one needs a [`TlsIdentity`] ([`Listener::bind_with`], [`connect_with`]). A
//! listener accepts the TCP connection at once and leaves the TLS handshake to
//! [`Connection::secure`], which the handshake module runs inside its own deadline and
//! task, so a peer stalling mid-TLS holds up nobody else.
//!
//! When a TLS identity is configured, **plaintext TCP is for peers on the same host
//! only**, both ways: a plaintext connection is refused unless its peer's IP is a
//! loopback address or the connection's own local IP (which is what the kernel picks as
//! the source when a host dials one of its own addresses). Anything else is "another
//! host" — a rule that needs no list of interfaces and errs on the side of refusing (a
//! same-host peer bound to another of the host's addresses must use TLS or UDS). Without
//! a TLS identity nothing changes: plaintext TCP is allowed, protected by the secret.

mod fd_reserve;
mod halves;
mod quiet;
mod tcp;
mod uds;

pub use fd_reserve::FdReserve;
pub use halves::{ReadHalf, WriteHalf};

use crate::address::{Address, AddressError};
use crate::runtime_dir::RuntimeDirError;
use crate::tls::{TlsFailure, TlsIdentity, TlsPeer};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// Who is on the other end of a [`Connection`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A TCP peer's address.
    Tcp(SocketAddr),
    /// A Unix socket peer's credentials (`SO_PEERCRED`, taken at connect time).
    Uds {
        /// User id.
        uid: u32,
        /// Group id.
        gid: u32,
        /// Process id, when the kernel reports one.
        pid: Option<i32>,
    },
}

/// An established byte stream to a peer: TCP, TLS over TCP, or Unix. Reads and writes are
/// the stream's own (`AsyncRead`/`AsyncWrite`); frame it with
/// [`FrameCodec`](crate::FrameCodec). A TLS connection whose TLS handshake has not run yet
/// (one accepted from a `tls://` listener, or dialed by [`dial`]) must be
/// [`secure`](Connection::secure)d first; until then reads and writes fail.
#[derive(Debug)]
pub struct Connection {
    stream: Stream,
    peer: Peer,
    /// For an accepted connection: its drop tells waiting listeners an fd came free.
    slot: Option<fd_reserve::Slot>,
    /// Once TLS is up: what its handshake proved about the peer, and the session's
    /// exporter value (the channel binding of the handshake's proof).
    tls: Option<(TlsPeer, [u8; 32])>,
}

enum Stream {
    Tcp(TcpStream),
    Uds(UnixStream),
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
    /// Accepted or dialed, TLS handshake not run yet.
    Pending(Box<PendingTls>),
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stream::Tcp(_) => "Tcp",
            Stream::Uds(_) => "Uds",
            Stream::Tls(_) => "Tls",
            Stream::Pending(_) => "TlsPending",
        })
    }
}

enum PendingTls {
    Accept {
        tcp: TcpStream,
        acceptor: tokio_rustls::TlsAcceptor,
    },
    Dial {
        tcp: TcpStream,
        connector: tokio_rustls::TlsConnector,
        name: rustls::pki_types::ServerName<'static>,
    },
}

/// [`Connection::secure`] failed: why, and — for a plaintext peer that reached a TLS
/// listener — the connection back as plaintext, so that it can be told why in words it
/// reads (a plough refusal frame).
#[derive(Debug)]
pub struct SecureError {
    /// Why.
    pub failure: TlsFailure,
    /// For [`TlsFailure::NotTls`] on the accepting side: the untouched plaintext
    /// connection.
    pub plaintext: Option<Box<Connection>>,
}

/// The first byte of every TLS record that opens a handshake (content type 22).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Whether `peer` is on the same host as `local`, by the rule in the module docs.
pub(crate) fn same_host(local: SocketAddr, peer: SocketAddr) -> bool {
    let canon = |ip: std::net::IpAddr| ip.to_canonical();
    canon(peer.ip()).is_loopback() || canon(peer.ip()) == canon(local.ip())
}

impl Connection {
    /// Who is on the other end.
    pub fn peer(&self) -> Peer {
        self.peer
    }

    /// For TCP (and TLS), the connection's endpoints as this end sees them: (local, peer).
    pub fn tcp_endpoints(&self) -> Option<(SocketAddr, SocketAddr)> {
        match self.peer {
            Peer::Tcp(peer) => Some((self.local_tcp()?, peer)),
            Peer::Uds { .. } => None,
        }
    }

    /// For a TLS connection whose handshake is done: what it proved about the peer (its
    /// certificate's host names).
    pub fn tls_peer(&self) -> Option<&TlsPeer> {
        self.tls.as_ref().map(|(peer, _)| peer)
    }

    /// Whether this connection is (or is to become, once secured) TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_) | Stream::Pending(_))
    }

    /// The TLS session's exporter value (RFC 8446 §7.5), the same at both ends of one
    /// session and different on any other: the channel binding of the handshake's proof.
    pub(crate) fn channel_binding(&self) -> Option<&[u8; 32]> {
        self.tls.as_ref().map(|(_, binding)| binding)
    }

    /// Runs the TLS handshake of a connection that needs one (accepted from a `tls://`
    /// listener, or from [`dial`]); any other connection is returned as it is. No
    /// deadline of its own: the caller bounds it (the handshake module does, with its
    /// deadline).
    ///
    /// An accepting end first peeks at the peer's first byte: a peer that does not open
    /// with a TLS record (a plaintext plough peer) fails with [`TlsFailure::NotTls`] and
    /// its connection comes back untouched, in plaintext.
    ///
    /// # Errors
    /// [`SecureError`] with the [`TlsFailure`]: an unknown CA, an expired certificate, a
    /// wrong name, no client certificate, a peer not speaking TLS, an alert from the peer.
    pub async fn secure(self) -> Result<Connection, SecureError> {
        let Connection { stream, peer, slot, tls } = self;
        let fail = |failure| SecureError { failure, plaintext: None };
        let pending = match stream {
            Stream::Pending(p) => *p,
            stream => return Ok(Connection { stream, peer, slot, tls }),
        };
        let (stream, session_peer, binding) = match pending {
            PendingTls::Accept { tcp, acceptor } => {
                let mut first = [0u8; 1];
                match tcp.peek(&mut first).await {
                    Ok(0) => return Err(fail(TlsFailure::Closed)),
                    Ok(_) if first[0] != TLS_HANDSHAKE_RECORD => {
                        let conn = Connection { stream: Stream::Tcp(tcp), peer, slot, tls: None };
                        return Err(SecureError {
                            failure: TlsFailure::NotTls,
                            plaintext: Some(Box::new(conn)),
                        });
                    }
                    Ok(_) => {}
                    Err(e) => return Err(fail(TlsFailure::of_handshake(&e, ""))),
                }
                let s = acceptor
                    .accept(tcp)
                    .await
                    .map_err(|e| fail(TlsFailure::of_handshake(&e, "")))?;
                let (peer_tls, binding) = session_facts(s.get_ref().1);
                (tokio_rustls::TlsStream::Server(s), peer_tls, binding)
            }
            PendingTls::Dial { tcp, connector, name } => {
                let expected = name.to_str().into_owned();
                let s = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| fail(TlsFailure::of_handshake(&e, &expected)))?;
                let (peer_tls, binding) = session_facts(s.get_ref().1);
                (tokio_rustls::TlsStream::Client(s), peer_tls, binding)
            }
        };
        let binding = binding.map_err(|e| fail(TlsFailure::Other(e.to_string())))?;
        Ok(Connection {
            stream: Stream::Tls(Box::new(stream)),
            peer,
            slot,
            tls: Some((session_peer, binding)),
        })
    }

    /// Wraps an already connected Unix stream (e.g. one half of a `socketpair`), reading its
    /// peer credentials. No uid check is made: the caller vouches for the peer.
    ///
    /// # Errors
    /// The `SO_PEERCRED` query failed.
    pub fn from_unix(stream: UnixStream) -> io::Result<Self> {
        let peer = uds::peer_of(&stream)?;
        Ok(Self { stream: Stream::Uds(stream), peer, slot: None, tls: None })
    }

    /// Wraps an already connected TCP stream.
    ///
    /// # Errors
    /// The peer address could not be read.
    pub fn from_tcp(stream: TcpStream) -> io::Result<Self> {
        let peer = Peer::Tcp(stream.peer_addr()?);
        stream.set_nodelay(true)?;
        Ok(Self { stream: Stream::Tcp(stream), peer, slot: None, tls: None })
    }

    /// Our end's address, for a TCP (or TLS) connection.
    fn local_tcp(&self) -> Option<SocketAddr> {
        match &self.stream {
            Stream::Tcp(s) => s.local_addr().ok(),
            Stream::Tls(s) => s.get_ref().0.local_addr().ok(),
            Stream::Pending(p) => match &**p {
                PendingTls::Accept { tcp, .. } | PendingTls::Dial { tcp, .. } => {
                    tcp.local_addr().ok()
                }
            },
            Stream::Uds(_) => None,
        }
    }

    /// This TCP connection, to be secured with TLS (accepting end).
    fn pending_accept(self, acceptor: tokio_rustls::TlsAcceptor) -> Self {
        match self.stream {
            Stream::Tcp(tcp) => Connection {
                stream: Stream::Pending(Box::new(PendingTls::Accept { tcp, acceptor })),
                ..self
            },
            _ => self,
        }
    }
}

/// The peer's certificate names and the session's exporter value.
fn session_facts(
    session: &impl std::ops::Deref<Target = rustls::ConnectionCommon<impl Sized>>,
) -> (TlsPeer, Result<[u8; 32], rustls::Error>) {
    let hosts = session
        .peer_certificates()
        .and_then(|c| c.first())
        .map(crate::tls::dns_names)
        .unwrap_or_default();
    let binding = session.export_keying_material([0u8; 32], crate::tls::EXPORTER_LABEL, None);
    (TlsPeer { hosts }, binding)
}

/// The error a read or write of a connection not secured yet gets.
fn not_secured() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the TLS handshake has not run (Connection::secure)",
    )
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Uds(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
            Stream::Pending(_) => Poll::Ready(Err(not_secured())),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Uds(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
            Stream::Pending(_) => Poll::Ready(Err(not_secured())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Uds(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
            Stream::Pending(_) => Poll::Ready(Err(not_secured())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Uds(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
            Stream::Pending(_) => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Uds(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
            Stream::Pending(_) => Poll::Ready(Ok(())),
        }
    }
}

/// A bound listener. For UDS, the socket file is removed when the listener is dropped.
#[derive(Debug)]
pub struct Listener {
    inner: ListenerKind,
    local: Address,
    gate: fd_reserve::Gate,
}

#[derive(Debug)]
enum ListenerKind {
    /// With a TLS identity configured: plaintext from this host only.
    Tcp(tokio::net::TcpListener, Option<TlsIdentity>),
    Tls(tokio::net::TcpListener, TlsIdentity),
    Uds(uds::UdsListener),
}

impl Listener {
    /// Binds `addr`. For UDS: the parent directory is created 0700 if missing (and the
    /// runtime directory is always checked, see [`ensure_private_dir`](crate::runtime_dir::ensure_private_dir)),
    /// a stale socket file is reclaimed only when nothing listens behind it, and the new
    /// socket file is made 0600. For TCP with port 0, [`Listener::local_addr`] tells the port.
    ///
    /// # Errors
    /// [`TransportError`] when the directory is refused, the address is in use, or the
    /// bind fails.
    pub async fn bind(addr: &Address) -> Result<Self, TransportError> {
        Self::bind_with(addr, None).await
    }

    /// Binds `addr` as [`Listener::bind`] does, with a TLS identity or without: a
    /// `tls://` address needs one; with one, a plain `tcp://` listener admits peers of
    /// this host only (see the module docs).
    ///
    /// # Errors
    /// As [`Listener::bind`]; [`TransportError::TlsNotConfigured`] for a `tls://` address
    /// without an identity.
    pub async fn bind_with(
        addr: &Address,
        tls: Option<&TlsIdentity>,
    ) -> Result<Self, TransportError> {
        let gate = fd_reserve::Gate::new(FdReserve::default());
        let tls = tls.cloned();
        match addr {
            Address::Tcp(sa) => {
                let (l, local) = tcp::bind(*sa).await?;
                Ok(Self { inner: ListenerKind::Tcp(l, tls), local: Address::Tcp(local), gate })
            }
            Address::Tls { name, addr: sa } => {
                let tls = tls.ok_or_else(|| TransportError::TlsNotConfigured(addr.to_string()))?;
                let (l, local) = tcp::bind(*sa).await?;
                let local = Address::Tls { name: name.clone(), addr: local };
                Ok(Self { inner: ListenerKind::Tls(l, tls), local, gate })
            }
            Address::Uds(path) => Ok(Self {
                inner: ListenerKind::Uds(uds::UdsListener::bind(path)?),
                local: addr.clone(),
                gate,
            }),
        }
    }

    /// The bound address (with the real port for TCP port 0).
    pub fn local_addr(&self) -> &Address {
        &self.local
    }

    /// The same listener keeping `reserve` (default: [`FdReserve::default`]).
    pub fn with_fd_reserve(mut self, reserve: FdReserve) -> Self {
        self.gate = fd_reserve::Gate::new(reserve);
        self
    }

    /// The fd reserve this listener keeps.
    pub fn fd_reserve(&self) -> FdReserve {
        self.gate.reserve
    }

    /// Accepts one connection. Cancel-safe.
    ///
    /// Inside the process's fd reserve only this process's own children are admitted;
    /// other connections are closed, and running out of fds is waited out, not returned
    /// (see [`FdReserve`]).
    ///
    /// A connection of a `tls://` listener comes back before its TLS handshake: run
    /// [`Connection::secure`] (the handshake module does).
    ///
    /// # Errors
    /// [`AcceptError::PeerRefused`] for a Unix peer of another uid (the connection is
    /// closed), [`AcceptError::PlaintextFromAnotherHost`] for a plaintext TCP peer of
    /// another host when TLS is configured, [`AcceptError::Io`] when `accept` itself
    /// failed for another reason than fd exhaustion. Either way the listener is still
    /// usable: call `accept` again.
    pub async fn accept(&self) -> Result<Connection, AcceptError> {
        loop {
            match self.accept_one().await {
                Ok(conn) => match self.gate.admit(conn, &self.local.to_string()) {
                    fd_reserve::Admit::Yes(conn) => return Ok(conn),
                    // Turned away: the next one (a flood is served at the rate it comes,
                    // with a turn of the runtime between two).
                    fd_reserve::Admit::Closed => tokio::task::yield_now().await,
                },
                Err(AcceptError::Io(e)) if plough_fork_prims::is_out_of_fds(&e) => {
                    self.gate.out_of_fds(&self.local.to_string(), &e).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn accept_one(&self) -> Result<Connection, AcceptError> {
        match &self.inner {
            ListenerKind::Tcp(l, tls) => {
                let (s, _) = l.accept().await?;
                let conn = Connection::from_tcp(s)?;
                match (tls, conn.tcp_endpoints()) {
                    (Some(_), Some((local, peer))) if !same_host(local, peer) => {
                        Err(AcceptError::PlaintextFromAnotherHost { peer, conn: Box::new(conn) })
                    }
                    _ => Ok(conn),
                }
            }
            ListenerKind::Tls(l, identity) => {
                let (s, _) = l.accept().await?;
                Ok(Connection::from_tcp(s)?.pending_accept(identity.acceptor()))
            }
            ListenerKind::Uds(l) => l.accept().await,
        }
    }
}

/// Connects to `addr`. For UDS, the listener's uid (`SO_PEERCRED`) must be ours: a socket
/// planted by another user is refused.
///
/// # Errors
/// [`TransportError`] when the connection fails or the peer is refused.
pub async fn connect(addr: &Address) -> Result<Connection, TransportError> {
    connect_with(addr, None).await
}

/// Connects to `addr` as [`connect`] does, with a TLS identity or without, and for
/// `tls://` runs the TLS handshake (unbounded: bound it, as the handshake module does).
///
/// # Errors
/// As [`connect`]; [`TransportError::TlsNotConfigured`] for `tls://` without an
/// identity, [`TransportError::Tls`] when the TLS handshake fails,
/// [`TransportError::PlaintextToAnotherHost`] for plaintext TCP to another host while an
/// identity is configured.
pub async fn connect_with(
    addr: &Address,
    tls: Option<&TlsIdentity>,
) -> Result<Connection, TransportError> {
    dial(addr, tls)
        .await?
        .secure()
        .await
        .map_err(|e| TransportError::Tls { addr: addr.to_string(), failure: e.failure })
}

/// Connects to `addr` without running the TLS handshake of a `tls://` address (run
/// [`Connection::secure`] next, under a deadline of the caller's).
///
/// # Errors
/// As [`connect_with`], less the TLS failures.
pub async fn dial(addr: &Address, tls: Option<&TlsIdentity>) -> Result<Connection, TransportError> {
    match addr {
        Address::Tcp(sa) => {
            let conn = tcp::connect(*sa).await?;
            match (tls, conn.tcp_endpoints()) {
                (Some(_), Some((local, peer))) if !same_host(local, peer) => {
                    Err(TransportError::PlaintextToAnotherHost(addr.to_string()))
                }
                _ => Ok(conn),
            }
        }
        Address::Tls { name, addr: sa } => {
            let identity = tls.ok_or_else(|| TransportError::TlsNotConfigured(addr.to_string()))?;
            let server_name = match name {
                Some(n) => rustls::pki_types::ServerName::try_from(n.to_string())
                    .map_err(|_| AddressError::BadTlsName(n.to_string()))?,
                None => rustls::pki_types::ServerName::IpAddress(sa.ip().into()),
            };
            let conn = tcp::connect(*sa).await?;
            let Connection { stream, peer, slot, .. } = conn;
            let Stream::Tcp(tcp) = stream else { unreachable!("tcp::connect makes a TCP stream") };
            let pending =
                PendingTls::Dial { tcp, connector: identity.connector(), name: server_name };
            Ok(Connection { stream: Stream::Pending(Box::new(pending)), peer, slot, tls: None })
        }
        Address::Uds(path) => uds::connect(path).await,
    }
}

/// Binding or connecting failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The address is not usable.
    #[error(transparent)]
    Address(#[from] AddressError),
    /// The socket directory was refused.
    #[error(transparent)]
    RuntimeDir(#[from] RuntimeDirError),
    /// Something listens at this UDS path already.
    #[error("{0} is in use by a live listener")]
    AddrInUse(PathBuf),
    /// A file that is not a socket sits at the UDS path.
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// The peer runs as another user.
    #[error("peer at {addr} runs as uid {uid}, not as us (uid {ours})")]
    PeerRefused {
        /// The address connected to.
        addr: String,
        /// The peer's uid.
        uid: u32,
        /// Ours.
        ours: u32,
    },
    /// A `tls://` address, but no TLS identity to bind or dial it with.
    #[error("{0} is a TLS address, but no TLS identity (CA, certificate, key) is configured")]
    TlsNotConfigured(String),
    /// Plaintext TCP to another host while a TLS identity is configured.
    #[error(
        "plaintext TCP to {0}, another host, is refused while TLS is configured: dial its tls:// address"
    )]
    PlaintextToAnotherHost(String),
    /// The TLS handshake failed.
    #[error("TLS with {addr} failed: {failure}")]
    Tls {
        /// The address dialed.
        addr: String,
        /// Why.
        failure: TlsFailure,
    },
    /// A socket call failed.
    #[error("failed to {op} {addr}")]
    Io {
        /// What was being done: "bind", "connect", ...
        op: &'static str,
        /// The address.
        addr: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Accepting one connection failed; the listener remains usable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// A Unix peer of another uid connected. Nothing may be read from it; the connection
    /// is handed back only so the refusal can be said (the handshake's acceptor sends one
    /// error frame), and closes when dropped.
    #[error("refused a connection from uid {uid} (pid {pid:?}); only uid {ours} may connect")]
    PeerRefused {
        /// The peer's uid.
        uid: u32,
        /// The peer's pid, when known.
        pid: Option<i32>,
        /// Ours.
        ours: u32,
        /// The refused connection.
        conn: Box<Connection>,
    },
    /// A plaintext TCP peer of another host, while a TLS identity is configured. The
    /// connection is handed back only so the refusal can be said.
    #[error(
        "refused plaintext TCP from {peer}, another host: TLS is configured, so other hosts must use tls://"
    )]
    PlaintextFromAnotherHost {
        /// The peer.
        peer: SocketAddr,
        /// The refused connection.
        conn: Box<Connection>,
    },
    /// `accept` (or reading the peer's credentials) failed.
    #[error("failed to accept a connection")]
    Io(#[from] io::Error),
}

#[cfg(test)]
mod tests {
    use super::same_host;

    #[test]
    fn same_host_is_loopback_or_the_connections_own_ip_and_nothing_else() {
        let at = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        assert!(same_host(at("10.1.2.1:4000"), at("127.0.0.1:5000")));
        assert!(same_host(at("[::1]:4000"), at("[::1]:5000")));
        assert!(same_host(at("10.1.2.1:4000"), at("10.1.2.1:5000")));
        // IPv4 seen through an IPv6 socket is the same address.
        assert!(same_host(at("[::ffff:10.1.2.1]:4000"), at("10.1.2.1:5000")));
        assert!(same_host(at("[::ffff:10.1.2.1]:4000"), at("[::ffff:127.0.0.1]:5000")));
        assert!(!same_host(at("10.1.2.1:4000"), at("10.1.2.2:5000")));
        assert!(!same_host(at("[::ffff:10.1.2.1]:4000"), at("[::ffff:10.1.2.9]:5000")));
    }
}
