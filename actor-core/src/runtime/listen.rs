//! Where an actor listens: binding, the address of a non-registrar actor, and what a
//! failed connect to the registry address means.

use crate::base::error::{ActorError, SetupError};
use crate::serving::actor::Actor;
use plough_ipc_wire::handshake::HandshakeError;
use plough_ipc_wire::{Address, Listener, TlsFiles, TlsIdentity, TransportError};
use std::path::PathBuf;

/// Whether `addr` names a private, fresh registry (TCP port 0) or a host's own
/// (`tls://`: a registrar is never elected across hosts): nothing to join.
pub(super) fn is_private(addr: &Address) -> bool {
    matches!(addr, Address::Tcp(sa) if sa.port() == 0) || matches!(addr, Address::Tls { .. })
}

/// This host's TLS identity, loaded from its files (none without files).
pub(super) fn load_tls(
    files: Option<&TlsFiles>,
) -> Result<Option<(TlsFiles, TlsIdentity)>, ActorError> {
    let Some(files) = files else { return Ok(None) };
    let id = TlsIdentity::load(files).map_err(|e| SetupError::Tls(e.to_string()))?;
    Ok(Some((files.clone(), id)))
}

/// A connect failure that means "nobody listens there".
pub(super) fn is_absent(e: &HandshakeError) -> bool {
    use std::io::ErrorKind::{ConnectionRefused, NotFound};
    matches!(e, HandshakeError::Connect(TransportError::Io { source, .. }) if matches!(source.kind(), ConnectionRefused | NotFound))
}

/// Checks (creating it if missing) this process's runtime directory, where its markers go
/// and, on UDS, its sockets: an actor starts only if it is private, on every transport.
pub(super) fn check_runtime_dir() -> Result<(), ActorError> {
    let dir = plough_fork_prims::marker::default_runtime_dir();
    plough_fork_prims::marker::ensure_private_dir(&dir).map_err(|e| {
        SetupError::RuntimeDir { path: dir.display().to_string(), detail: e.to_string() }.into()
    })
}

pub(super) async fn bind(
    addr: &Address,
    tls: Option<&TlsIdentity>,
) -> Result<Listener, ActorError> {
    Listener::bind_with(addr, tls)
        .await
        .map_err(|e| SetupError::Listen { addr: addr.to_string(), detail: e.to_string() }.into())
}

/// An address for a non-registrar actor on the same transport as `like`: TCP loopback
/// with a kernel-chosen port, or `<dir of like>/<name>@<pid>.sock`.
pub(super) fn ephemeral_like(like: &Address, name: &str) -> Result<Address, ActorError> {
    match like {
        Address::Tcp(sa) => Ok(Address::Tcp(std::net::SocketAddr::new(sa.ip(), 0))),
        Address::Tls { name, addr } => {
            Ok(Address::Tls { name: name.clone(), addr: std::net::SocketAddr::new(addr.ip(), 0) })
        }
        Address::Uds(path) => {
            let dir = path
                .parent()
                .map(PathBuf::from)
                .unwrap_or_else(plough_ipc_wire::runtime_dir::default_dir);
            Address::uds_for_actor(&dir, name, std::process::id()).map_err(|e| {
                SetupError::SocketPath { name: name.to_owned(), detail: e.to_string() }.into()
            })
        }
    }
}

/// Binds every address of `addrs` and serves it too (an actor's further bind addresses).
///
/// # Errors
///
/// The first that cannot be bound (those bound before it stay served).
pub(super) async fn bind_more(actor: &Actor, addrs: &[Address]) -> Result<(), ActorError> {
    for addr in addrs {
        actor.listen_also(bind(addr, actor.tls()).await?);
    }
    Ok(())
}
