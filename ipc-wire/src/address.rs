//! Where an actor listens: `tcp://127.0.0.1:4000`, `tls://node-1@10.0.0.1:4000` or
//! `uds:///run/user/1000/plough/name@pid.sock`.
//!
//! `tls://` is TCP under mutual TLS (see [`tls`](crate::tls)): the name before `@` is the
//! host the peer's certificate must name; without it (`tls://10.0.0.1:4000`) the
//! certificate must name the IP address.
//!
//! Addresses travel inside messages (`SpawnSpec`) as text, so the text form is the
//! contract: [`FromStr`] and [`Display`](fmt::Display) round-trip exactly. TCP hosts are IP
//! literals (no name resolution hides inside a parse or a connect: an actor tree should not
//! stall on DNS); UDS paths are absolute.
//!
//! This module builds on [`runtime_dir`] (socket paths and their length limit). Since
//! [`runtime_dir::socket_path`] fails with an [`AddressError`] too, that type is defined
//! down there and re-exported here, so the two modules do not import each other.

use crate::runtime_dir;
pub use crate::runtime_dir::AddressError;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The port of [`Address::default_registry_tcp`], the opt-in TCP registry.
pub const DEFAULT_REGISTRY_PORT: u16 = 1616;

/// The file name of the default registry socket in the runtime directory.
pub const REGISTRY_SOCKET: &str = "registry.sock";

/// A transport address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// TCP; binds loopback unless the address says otherwise.
    Tcp(SocketAddr),
    /// TCP under mutual TLS, for peers on other hosts.
    Tls {
        /// The host the peer's certificate must name (a DNS name); `None`: it must name
        /// the IP of `addr`. Ignored when binding.
        name: Option<std::sync::Arc<str>>,
        /// Where to connect or bind.
        addr: SocketAddr,
    },
    /// A Unix domain socket at an absolute path.
    Uds(PathBuf),
}

impl Address {
    /// A host-wide registry over TCP: `tcp://127.0.0.1:1616`. Opt-in only: every user of
    /// the host can reach it, and whoever binds it first owns it; the default registry is
    /// [`Address::default_registry_uds`].
    pub fn default_registry_tcp() -> Self {
        Address::Tcp(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_REGISTRY_PORT))
    }

    /// The default registry: `<runtime dir>/registry.sock`, in the user's private (0700)
    /// runtime directory (see [`runtime_dir::default_dir`]), so two users — or one user's
    /// two runtime directories — never share a registrar.
    pub fn default_registry_uds() -> Self {
        Address::Uds(runtime_dir::default_dir().join(REGISTRY_SOCKET))
    }

    /// A loopback TCP address with port 0 (the kernel picks one at bind).
    pub fn tcp_loopback_any() -> Self {
        Address::Tcp(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0))
    }

    /// The UDS address of actor `name` in process `pid`, inside `dir`:
    /// `<dir>/<name>@<pid>.sock`, shortened to fit `sun_path`.
    ///
    /// # Errors
    /// [`AddressError::PathTooLong`] when even the shortest name does not fit under `dir`.
    pub fn uds_for_actor(dir: &Path, name: &str, pid: u32) -> Result<Self, AddressError> {
        runtime_dir::socket_path(dir, name, pid).map(Address::Uds)
    }

    /// The socket path, for a UDS address.
    pub fn uds_path(&self) -> Option<&Path> {
        match self {
            Address::Uds(p) => Some(p),
            Address::Tcp(_) | Address::Tls { .. } => None,
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(sa) => write!(f, "tcp://{sa}"),
            Address::Uds(p) => write!(f, "uds://{}", p.display()),
            Address::Tls { name: Some(name), addr } => write!(f, "tls://{name}@{addr}"),
            Address::Tls { name: None, addr } => write!(f, "tls://{addr}"),
        }
    }
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = s.strip_prefix("tcp://") {
            rest.parse::<SocketAddr>()
                .map(Address::Tcp)
                .map_err(|_| AddressError::BadTcp(rest.to_owned()))
        } else if let Some(rest) = s.strip_prefix("tls://") {
            let (name, sa) = match rest.split_once('@') {
                Some((name, sa)) => {
                    if rustls::pki_types::DnsName::try_from(name).is_err() {
                        return Err(AddressError::BadTlsName(name.to_owned()));
                    }
                    (Some(name.into()), sa)
                }
                None => (None, rest),
            };
            let addr = sa.parse().map_err(|_| AddressError::BadTcp(sa.to_owned()))?;
            Ok(Address::Tls { name, addr })
        } else if let Some(rest) = s.strip_prefix("uds://") {
            if rest.contains('\0') {
                return Err(AddressError::NulInPath);
            }
            if !rest.starts_with('/') {
                return Err(AddressError::RelativePath(rest.to_owned()));
            }
            if rest.len() > runtime_dir::MAX_SOCKET_PATH {
                return Err(AddressError::PathTooLong {
                    path: rest.to_owned(),
                    len: rest.len(),
                    max: runtime_dir::MAX_SOCKET_PATH,
                });
            }
            Ok(Address::Uds(PathBuf::from(rest)))
        } else {
            Err(AddressError::UnknownScheme(s.to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for s in [
            "tcp://127.0.0.1:1616",
            "tcp://[::1]:80",
            "tcp://0.0.0.0:0",
            "tls://node-1@10.1.2.1:4000",
            "tls://a.example@[::1]:80",
            "tls://10.1.2.1:4000",
            "uds:///run/user/1000/plough/name@12.sock",
            "uds:///tmp/a b/c.sock",
        ] {
            let a: Address = s.parse().unwrap();
            assert_eq!(a.to_string(), s);
        }
    }

    #[test]
    fn defaults() {
        assert_eq!(Address::default_registry_tcp().to_string(), "tcp://127.0.0.1:1616");
        let uds = Address::default_registry_uds().to_string();
        assert!(uds.starts_with("uds:///") && uds.ends_with("/registry.sock"), "{uds}");
        assert!(uds.contains("/plough/") || uds.contains("/plough-"), "{uds}");
    }

    #[test]
    fn rejects() {
        assert!(matches!("http://x".parse::<Address>(), Err(AddressError::UnknownScheme(_))));
        assert!(matches!("tcp://localhost:1".parse::<Address>(), Err(AddressError::BadTcp(_))));
        assert!(matches!("tcp://1.2.3.4".parse::<Address>(), Err(AddressError::BadTcp(_))));
        assert!(matches!(
            "tls://a b@1.2.3.4:5".parse::<Address>(),
            Err(AddressError::BadTlsName(_))
        ));
        assert!(matches!("tls://n@1.2.3.4".parse::<Address>(), Err(AddressError::BadTcp(_))));
        assert!(matches!("uds://rel/x".parse::<Address>(), Err(AddressError::RelativePath(_))));
        assert!(matches!("uds:///a\0b".parse::<Address>(), Err(AddressError::NulInPath)));
        let long = format!("uds:///{}", "x".repeat(200));
        assert!(matches!(long.parse::<Address>(), Err(AddressError::PathTooLong { .. })));
    }
}
