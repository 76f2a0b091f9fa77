//! TCP: explicit IP addresses only, `TCP_NODELAY` on (the codec coalesces writes itself).

use super::{Connection, TransportError};
use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};

pub(super) async fn bind(sa: SocketAddr) -> Result<(TcpListener, SocketAddr), TransportError> {
    let io = |source| TransportError::Io { op: "bind", addr: format!("tcp://{sa}"), source };
    let l = TcpListener::bind(sa).await.map_err(io)?;
    let local = l.local_addr().map_err(io)?;
    Ok((l, local))
}

pub(super) async fn connect(sa: SocketAddr) -> Result<Connection, TransportError> {
    let io = |source| TransportError::Io { op: "connect to", addr: format!("tcp://{sa}"), source };
    let s = TcpStream::connect(sa).await.map_err(io)?;
    Connection::from_tcp(s).map_err(io)
}
