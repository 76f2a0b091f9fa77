//! Where an actor listens: `tcp://127.0.0.1:4000`, `tls://node-1@10.0.0.1:4000` or
//! `uds:///run/user/1000/plough/name@pid.sock`.
//!
//! `tls://` is TCP under mutual TLS (see [`tls`](crate::tls)): the name before `@` is the
//! host the peer's certificate must name; without it (`tls://10.0.0.1:4000`) the
//! certificate must name the IP address.
//!
//! tractor's multiaddr strings are read too, wherever an address is parsed:
//! `/ip4/127.0.0.1/tcp/1616`, `/ip6/::1/tcp/1616`, `/unix/run/user/1000/x.sock` (the rest
//! of the string is the absolute path), and with `/tls` (optionally `/tls/sni/<host>`)
//! after a TCP part, TCP under mutual TLS. [`Address::to_multiaddr`] writes that form;
//! [`Display`](fmt::Display) keeps writing the URL form, which is what goes on the wire.
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

impl Address {
    /// This address as a multiaddr (tractor's form): `/ip4/127.0.0.1/tcp/1616`,
    /// `/ip6/::1/tcp/80`, `/unix/tmp/x.sock`, `/ip4/10.0.0.1/tcp/4000/tls/sni/node-1`.
    /// [`FromStr`] reads it back to the same address.
    pub fn to_multiaddr(&self) -> String {
        fn tcp(sa: &SocketAddr) -> String {
            match sa.ip() {
                IpAddr::V4(ip) => format!("/ip4/{ip}/tcp/{}", sa.port()),
                IpAddr::V6(ip) => format!("/ip6/{ip}/tcp/{}", sa.port()),
            }
        }
        match self {
            Address::Tcp(sa) => tcp(sa),
            Address::Tls { name: None, addr } => format!("{}/tls", tcp(addr)),
            Address::Tls { name: Some(name), addr } => format!("{}/tls/sni/{name}", tcp(addr)),
            // The path is absolute: its leading `/` separates it from `/unix`.
            Address::Uds(p) => format!("/unix{}", p.display()),
        }
    }
}

/// Reads a multiaddr (`s` starts with `/`).
fn parse_multiaddr(s: &str) -> Result<Address, AddressError> {
    let bad = |reason: String| AddressError::BadMultiaddr { addr: s.to_owned(), reason };
    if let Some(path) = s.strip_prefix("/unix") {
        if !path.starts_with('/') {
            return Err(bad("`/unix` needs a path, e.g. `/unix/tmp/x.sock`".to_owned()));
        }
        return uds(path);
    }
    let mut parts = s[1..].split('/');
    let mut next = |what: &str| parts.next().ok_or_else(|| bad(format!("it ends before {what}")));
    let ip: IpAddr = match next("its protocol")? {
        "ip4" => {
            let v = next("the IPv4 address")?;
            IpAddr::V4(
                v.parse().map_err(|_| bad(format!("`/ip4` needs an IPv4 address, got `{v}`")))?,
            )
        }
        "ip6" => {
            let v = next("the IPv6 address")?;
            IpAddr::V6(
                v.parse().map_err(|_| bad(format!("`/ip6` needs an IPv6 address, got `{v}`")))?,
            )
        }
        other => {
            return Err(bad(format!(
                "unsupported protocol `/{other}` (plough reads `/ip4`, `/ip6` and `/unix`; \
                 host names are not resolved)"
            )));
        }
    };
    match next("`/tcp`")? {
        "tcp" => {}
        other => {
            return Err(bad(format!("expected `/tcp/<port>` after the address, got `/{other}`")));
        }
    }
    let port = next("the port")?;
    let port: u16 = port.parse().map_err(|_| bad(format!("bad tcp port `{port}`")))?;
    let addr = SocketAddr::new(ip, port);
    let tail: Vec<&str> = parts.collect();
    match tail.as_slice() {
        [] => Ok(Address::Tcp(addr)),
        ["tls"] => Ok(Address::Tls { name: None, addr }),
        ["tls", "sni", name] => {
            if rustls::pki_types::DnsName::try_from(*name).is_err() {
                return Err(AddressError::BadTlsName((*name).to_owned()));
            }
            Ok(Address::Tls { name: Some((*name).into()), addr })
        }
        rest => Err(bad(format!("unsupported `/{}` after the tcp port", rest.join("/")))),
    }
}

/// A UDS address at absolute `path`, checked.
fn uds(path: &str) -> Result<Address, AddressError> {
    if path.contains('\0') {
        return Err(AddressError::NulInPath);
    }
    if !path.starts_with('/') {
        return Err(AddressError::RelativePath(path.to_owned()));
    }
    if path.len() > runtime_dir::MAX_SOCKET_PATH {
        return Err(AddressError::PathTooLong {
            path: path.to_owned(),
            len: path.len(),
            max: runtime_dir::MAX_SOCKET_PATH,
        });
    }
    Ok(Address::Uds(PathBuf::from(path)))
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with('/') {
            parse_multiaddr(s)
        } else if let Some(rest) = s.strip_prefix("tcp://") {
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
            uds(rest)
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
    fn reads_multiaddrs() {
        for (multi, url) in [
            ("/ip4/127.0.0.1/tcp/1616", "tcp://127.0.0.1:1616"),
            ("/ip6/::1/tcp/80", "tcp://[::1]:80"),
            ("/unix/run/user/1000/plough/a@1.sock", "uds:///run/user/1000/plough/a@1.sock"),
            ("/ip4/10.1.2.1/tcp/4000/tls", "tls://10.1.2.1:4000"),
            ("/ip4/10.1.2.1/tcp/4000/tls/sni/node-1", "tls://node-1@10.1.2.1:4000"),
        ] {
            let a: Address = multi.parse().unwrap();
            assert_eq!(a.to_string(), url);
            assert_eq!(a.to_multiaddr(), multi);
        }
        let bad = |s: &str| match s.parse::<Address>() {
            Err(AddressError::BadMultiaddr { addr, reason }) => {
                assert_eq!(addr, s);
                reason
            }
            other => panic!("{s}: {other:?}"),
        };
        assert!(bad("/ip4/1.2.3/tcp/1").contains("IPv4"));
        assert!(bad("/ip6/1.2.3.4/tcp/1").contains("IPv6"));
        assert!(bad("/ip4/1.2.3.4/udp/1").contains("/tcp"));
        assert!(bad("/ip4/1.2.3.4/tcp/70000").contains("port"));
        assert!(bad("/ip4/1.2.3.4").contains("ends before"));
        assert!(bad("/dns/example.com/tcp/1").contains("not resolved"));
        assert!(bad("/ip4/1.2.3.4/tcp/1/ws").contains("/ws"));
        assert!(bad("/unix").contains("path"));
        assert!(matches!(
            "/ip4/1.2.3.4/tcp/1/tls/sni/a b".parse::<Address>(),
            Err(AddressError::BadTlsName(_))
        ));
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
