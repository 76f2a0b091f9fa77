//! Unix domain sockets: private directory, 0600 socket, `SO_PEERCRED` both ways, stale-file
//! reclaim, removal on drop.

use super::{AcceptError, Connection, Peer, TransportError};
use crate::runtime_dir::{self, MAX_SOCKET_PATH};
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tokio::net::{UnixListener, UnixStream};

fn our_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

pub(super) fn peer_of(s: &UnixStream) -> io::Result<Peer> {
    let cred = s.peer_cred()?;
    Ok(Peer::Uds { uid: cred.uid(), gid: cred.gid(), pid: cred.pid() })
}

#[derive(Debug)]
pub(super) struct UdsListener {
    listener: UnixListener,
    path: PathBuf,
    /// Device and inode of the socket file we created: removed on drop only if unchanged.
    file_id: (u64, u64),
}

impl UdsListener {
    pub(super) fn bind(path: &Path) -> Result<Self, TransportError> {
        let io = |op, source| TransportError::Io {
            op,
            addr: format!("uds://{}", path.display()),
            source,
        };
        if path.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(crate::AddressError::PathTooLong {
                path: path.display().to_string(),
                len: path.as_os_str().len(),
                max: MAX_SOCKET_PATH,
            }
            .into());
        }
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("/"));
        if !parent.exists() || parent == runtime_dir::default_dir() {
            runtime_dir::ensure_private_dir(parent)?;
        }
        reclaim_if_stale(path)?;
        let listener = UnixListener::bind(path).map_err(|e| {
            if e.kind() == io::ErrorKind::AddrInUse {
                TransportError::AddrInUse(path.to_owned())
            } else {
                io("bind", e)
            }
        })?;
        // The directory is private, so nobody else can connect between bind and chmod.
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(|e| io("chmod", e))?;
        let meta = fs::symlink_metadata(path).map_err(|e| io("stat", e))?;
        Ok(Self { listener, path: path.to_owned(), file_id: (meta.dev(), meta.ino()) })
    }

    pub(super) async fn accept(&self) -> Result<Connection, AcceptError> {
        let (stream, _) = self.listener.accept().await?;
        let peer = peer_of(&stream)?;
        let ours = our_uid();
        match peer {
            Peer::Uds { uid, pid, .. } if uid != ours => {
                tracing::warn!(uid, ?pid, path = %self.path.display(), "refused a connection from another user");
                let conn = Box::new(Connection {
                    stream: super::Stream::Uds(stream),
                    peer,
                    slot: None,
                    tls: None,
                });
                Err(AcceptError::PeerRefused { uid, pid, ours, conn })
            }
            _ => Ok(Connection { stream: super::Stream::Uds(stream), peer, slot: None, tls: None }),
        }
    }
}

impl Drop for UdsListener {
    fn drop(&mut self) {
        // Remove the socket file only if it is still the one we created: a successor that
        // reclaimed the name keeps its socket.
        if let Ok(meta) = fs::symlink_metadata(&self.path)
            && (meta.dev(), meta.ino()) == self.file_id
        {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Removes a socket file at `path` if nothing listens behind it.
fn reclaim_if_stale(path: &Path) -> Result<(), TransportError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(TransportError::Io {
                op: "stat",
                addr: format!("uds://{}", path.display()),
                source: e,
            });
        }
    };
    if !meta.file_type().is_socket() {
        return Err(TransportError::NotASocket(path.to_owned()));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(TransportError::AddrInUse(path.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::debug!(path = %path.display(), "reclaiming a stale socket file");
            match fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(TransportError::Io {
                    op: "remove stale socket",
                    addr: format!("uds://{}", path.display()),
                    source: e,
                }),
            }
        }
        Err(_) => Ok(()), // vanished meanwhile, or not ours to probe: let bind decide
    }
}

pub(super) async fn connect(path: &Path) -> Result<Connection, TransportError> {
    let addr = || format!("uds://{}", path.display());
    let io = |source| TransportError::Io { op: "connect to", addr: addr(), source };
    let stream = UnixStream::connect(path).await.map_err(io)?;
    let peer = peer_of(&stream).map_err(io)?;
    let ours = our_uid();
    if let Peer::Uds { uid, .. } = peer
        && uid != ours
    {
        return Err(TransportError::PeerRefused { addr: addr(), uid, ours });
    }
    Ok(Connection { stream: super::Stream::Uds(stream), peer, slot: None, tls: None })
}
