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

mod fd_reserve;
mod tcp;
mod uds;

pub use fd_reserve::FdReserve;

use crate::address::{Address, AddressError};
use crate::runtime_dir::RuntimeDirError;
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

/// An established byte stream to a peer: TCP or Unix. Reads and writes are the stream's
/// own (`AsyncRead`/`AsyncWrite`); frame it with [`FrameCodec`](crate::FrameCodec).
#[derive(Debug)]
pub struct Connection {
    stream: Stream,
    peer: Peer,
    /// For an accepted connection: its drop tells waiting listeners an fd came free.
    slot: Option<fd_reserve::Slot>,
}

#[derive(Debug)]
enum Stream {
    Tcp(TcpStream),
    Uds(UnixStream),
}

impl Connection {
    /// Who is on the other end.
    pub fn peer(&self) -> Peer {
        self.peer
    }

    /// For TCP, the connection's endpoints as this end sees them: (local, peer).
    pub fn tcp_endpoints(&self) -> Option<(SocketAddr, SocketAddr)> {
        match (&self.stream, self.peer) {
            (Stream::Tcp(s), Peer::Tcp(peer)) => Some((s.local_addr().ok()?, peer)),
            _ => None,
        }
    }

    /// Wraps an already connected Unix stream (e.g. one half of a `socketpair`), reading its
    /// peer credentials. No uid check is made: the caller vouches for the peer.
    ///
    /// # Errors
    /// The `SO_PEERCRED` query failed.
    pub fn from_unix(stream: UnixStream) -> io::Result<Self> {
        let peer = uds::peer_of(&stream)?;
        Ok(Self { stream: Stream::Uds(stream), peer, slot: None })
    }

    /// Wraps an already connected TCP stream.
    ///
    /// # Errors
    /// The peer address could not be read.
    pub fn from_tcp(stream: TcpStream) -> io::Result<Self> {
        let peer = Peer::Tcp(stream.peer_addr()?);
        stream.set_nodelay(true)?;
        Ok(Self { stream: Stream::Tcp(stream), peer, slot: None })
    }

    /// Our end's address, for a TCP connection.
    fn local_tcp(&self) -> Option<SocketAddr> {
        match &self.stream {
            Stream::Tcp(s) => s.local_addr().ok(),
            Stream::Uds(_) => None,
        }
    }
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
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Uds(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Uds(s) => Pin::new(s).poll_shutdown(cx),
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
    Tcp(tokio::net::TcpListener),
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
        match addr {
            Address::Tcp(sa) => {
                let (l, local) = tcp::bind(*sa).await?;
                Ok(Self {
                    inner: ListenerKind::Tcp(l),
                    local: Address::Tcp(local),
                    gate: fd_reserve::Gate::new(FdReserve::default()),
                })
            }
            Address::Uds(path) => Ok(Self {
                inner: ListenerKind::Uds(uds::UdsListener::bind(path)?),
                local: addr.clone(),
                gate: fd_reserve::Gate::new(FdReserve::default()),
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
    /// # Errors
    /// [`AcceptError::PeerRefused`] for a Unix peer of another uid (the connection is
    /// closed), [`AcceptError::Io`] when `accept` itself failed for another reason than
    /// fd exhaustion. Either way the listener is still usable: call `accept` again.
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
            ListenerKind::Tcp(l) => {
                let (s, _) = l.accept().await?;
                Ok(Connection::from_tcp(s)?)
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
    match addr {
        Address::Tcp(sa) => tcp::connect(*sa).await,
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
    /// `accept` (or reading the peer's credentials) failed.
    #[error("failed to accept a connection")]
    Io(#[from] io::Error),
}
