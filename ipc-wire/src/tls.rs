//! Mutual TLS between hosts: a host's identity (the tree CA, its certificate and key), the
//! rustls configurations built from it, and the typed reasons a TLS handshake fails.
//!
//! Across hosts the tree's secret alone is not enough: the HMAC proof binds the TCP
//! endpoints, which a NAT or proxy rewrites, and nothing on the path should read a
//! payload. So between hosts every connection is TLS 1.3 (rustls on *ring*; no OpenSSL)
//! with certificates on **both** sides chained to one tree CA:
//!
//! * **A stranger's host**: a peer whose certificate is not signed by the tree CA (or is
//!   expired, or not yet valid) is refused during the TLS handshake, before any plough
//!   byte is read; the server requires a client certificate ([`TlsFailure::NoCertificate`]).
//! * **A host impersonating another**: certificates name their host (a DNS name in the
//!   subject alternative names, optionally IP addresses too); the dialer checks the name
//!   its `tls://name@ip:port` address gives (or the IP of `tls://ip:port`), and the
//!   acceptor learns the dialer's host names ([`TlsPeer`]).
//! * **A relay inside TLS**: the handshake's proof of the tree's secret still runs on top,
//!   and over TLS its transcript also covers a TLS exporter value of the session (channel
//!   binding), so even a holder of a valid certificate that terminates TLS in the middle
//!   cannot pass a proof on.
//! * **A key read by others**: a key file must be ours and `0600`, like the secret.
//!
//! A host's identity usually comes from `plough ca` (`ca.pem`, `<host>.pem`,
//! `<host>.key`, see [`TlsFiles::in_ca_dir`]); a user's own PKI works the same way, by
//! paths ([`TlsFiles`]).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::fmt;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The TLS exporter label of the handshake's channel binding (RFC 8446 §7.5).
pub(crate) const EXPORTER_LABEL: &[u8] = b"EXPORTER-plough-auth/1";

/// Where a host's TLS identity lives, by path: the tree CA's certificate (the only trust
/// root), this host's certificate chain, and its private key (`0600`, ours).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsFiles {
    /// PEM: the CA certificate(s) peers must chain to.
    pub ca: PathBuf,
    /// PEM: this host's certificate, then any intermediates.
    pub cert: PathBuf,
    /// PEM: this host's private key (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
}

impl TlsFiles {
    /// The files `plough ca` writes in `dir` for `host`: `ca.pem`, `<host>.pem`,
    /// `<host>.key`.
    pub fn in_ca_dir(dir: &Path, host: &str) -> Self {
        TlsFiles {
            ca: dir.join(CA_CERT_FILE),
            cert: dir.join(format!("{host}.pem")),
            key: dir.join(format!("{host}.key")),
        }
    }
}

/// The CA certificate's file name in a `plough ca` directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA key's file name in a `plough ca` directory (it stays there: hosts need only
/// `ca.pem` and their own pair).
pub const CA_KEY_FILE: &str = "ca.key";

/// A host's TLS identity, ready to accept and dial: cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct TlsIdentity(Arc<Configs>);

struct Configs {
    host: String,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity").field("host", &self.0.host).finish_non_exhaustive()
    }
}

/// A TLS identity could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// A file could not be read.
    #[error("cannot {op} {path}")]
    Io {
        /// What failed.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A PEM file holds nothing usable of what it should.
    #[error("{path} holds no {what} in PEM form")]
    Missing {
        /// The file.
        path: PathBuf,
        /// "certificate" or "private key".
        what: &'static str,
    },
    /// A PEM file could not be parsed.
    #[error("{path} is not valid PEM: {detail}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// The parser's words.
        detail: String,
    },
    /// The key file may be read by others, or is not ours.
    #[error("{path} has mode {mode:04o} and owner uid {owner}; a key must be ours and 0600")]
    KeyExposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// Its owner.
        owner: u32,
    },
    /// Our own certificate names no host (no DNS subject alternative name).
    #[error("{path} names no host: its certificate has no DNS subject alternative name")]
    NoHostName {
        /// The file.
        path: PathBuf,
    },
    /// rustls refused the material (e.g. the key does not match the certificate).
    #[error("the TLS identity is unusable: {0}")]
    Rustls(String),
}

impl TlsIdentity {
    /// Loads the identity from its files (see [`TlsFiles`]).
    ///
    /// # Errors
    /// [`TlsConfigError`] naming the file that is missing, unreadable, not PEM, exposed
    /// (a key), or unusable.
    pub fn load(files: &TlsFiles) -> Result<Self, TlsConfigError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsConfigError::Io {
                op: "read",
                path: path.to_owned(),
                source,
            })
        };
        check_key_file(&files.key)?;
        let (ca, cert, key) = (read(&files.ca)?, read(&files.cert)?, read(&files.key)?);
        Self::from_pem_named((&ca, &files.ca), (&cert, &files.cert), (&key, &files.key))
    }

    /// The identity from PEM bytes in memory (the CA certificate(s), this host's chain,
    /// its key).
    ///
    /// # Errors
    /// As [`TlsIdentity::load`], naming `<memory>` for the file.
    pub fn from_pem(ca: &[u8], cert: &[u8], key: &[u8]) -> Result<Self, TlsConfigError> {
        let mem = Path::new("<memory>");
        Self::from_pem_named((ca, mem), (cert, mem), (key, mem))
    }

    fn from_pem_named(
        (ca, ca_path): (&[u8], &Path),
        (cert, cert_path): (&[u8], &Path),
        (key, key_path): (&[u8], &Path),
    ) -> Result<Self, TlsConfigError> {
        let roots = certs(ca, ca_path)?;
        let chain = certs(cert, cert_path)?;
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                TlsConfigError::Missing { path: key_path.to_owned(), what: "private key" }
            }
            e => TlsConfigError::Pem { path: key_path.to_owned(), detail: e.to_string() },
        })?;
        let host = dns_names(&chain[0])
            .into_iter()
            .next()
            .ok_or_else(|| TlsConfigError::NoHostName { path: cert_path.to_owned() })?;
        let mut store = RootCertStore::empty();
        for root in roots {
            store.add(root).map_err(|e| TlsConfigError::Rustls(e.to_string()))?;
        }
        let store = Arc::new(store);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let bad = |e: rustls::Error| TlsConfigError::Rustls(e.to_string());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::clone(&store),
            Arc::clone(&provider),
        )
        .build()
        .map_err(|e| TlsConfigError::Rustls(e.to_string()))?;
        let server = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(bad)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(bad)?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(bad)?
            .with_root_certificates(store)
            .with_client_auth_cert(chain, key)
            .map_err(bad)?;
        Ok(TlsIdentity(Arc::new(Configs {
            host,
            server: Arc::new(server),
            client: Arc::new(client),
        })))
    }

    /// The host our certificate names (its first DNS subject alternative name).
    pub fn host(&self) -> &str {
        &self.0.host
    }

    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(Arc::clone(&self.0.server))
    }

    pub(crate) fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(Arc::clone(&self.0.client))
    }
}

fn certs(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsConfigError::Pem { path: path.to_owned(), detail: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsConfigError::Missing { path: path.to_owned(), what: "certificate" });
    }
    Ok(certs)
}

fn check_key_file(path: &Path) -> Result<(), TlsConfigError> {
    let meta = std::fs::metadata(path).map_err(|source| TlsConfigError::Io {
        op: "stat",
        path: path.to_owned(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    let ours = rustix::process::geteuid().as_raw();
    if mode & 0o077 != 0 || meta.uid() != ours {
        return Err(TlsConfigError::KeyExposed { path: path.to_owned(), mode, owner: meta.uid() });
    }
    Ok(())
}

/// The DNS names a certificate's subject alternative names give (none if it does not
/// parse: the TLS layer has already verified it, so that does not happen in practice).
pub(crate) fn dns_names(cert: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some((*d).to_owned()),
            _ => None,
        })
        .collect()
}

/// What the TLS layer proved about the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPeer {
    /// The DNS names of the peer's certificate (verified to chain to the tree CA); the
    /// first is its host.
    pub hosts: Vec<String>,
}

impl TlsPeer {
    /// The peer's host: the first DNS name of its certificate.
    pub fn host(&self) -> Option<&str> {
        self.hosts.first().map(String::as_str)
    }
}

/// Why a TLS handshake failed: what the peer (or its certificate) did wrong, as a kind a
/// caller can branch on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsFailure {
    /// The peer's certificate does not chain to the tree CA.
    #[error("the peer's certificate is not signed by this tree's CA")]
    UnknownCa,
    /// The peer's certificate has expired.
    #[error("the peer's certificate has expired")]
    Expired,
    /// The peer's certificate is not valid yet.
    #[error("the peer's certificate is not valid yet")]
    NotYetValid,
    /// The peer's certificate does not name the host we dialed.
    #[error("the peer's certificate does not name {expected}")]
    WrongName {
        /// The name (or IP) we dialed.
        expected: String,
    },
    /// The peer presented no certificate (a client must).
    #[error("the peer presented no certificate")]
    NoCertificate,
    /// The peer does not speak TLS (e.g. a plaintext plough peer).
    #[error("the peer does not speak TLS")]
    NotTls,
    /// The peer refused us with a TLS alert (e.g. it does not trust our certificate).
    #[error("the peer refused our TLS handshake: {alert}")]
    RefusedByPeer {
        /// The alert it sent, e.g. `UnknownCA`, `CertificateExpired`.
        alert: String,
    },
    /// The peer stopped in the middle of the TLS handshake.
    #[error("the TLS handshake stalled: not completed within {0:?}")]
    Stalled(Duration),
    /// The peer closed the connection during the TLS handshake.
    #[error("the peer closed the connection during the TLS handshake")]
    Closed,
    /// Another TLS failure, in rustls's words.
    #[error("TLS failed: {0}")]
    Other(String),
}

impl TlsFailure {
    /// The failure an I/O error of a TLS stream stands for, if it is a TLS one.
    pub fn from_io(e: &io::Error, expected_name: &str) -> Option<TlsFailure> {
        let inner = e.get_ref()?.downcast_ref::<rustls::Error>()?;
        Some(TlsFailure::from_rustls(inner, expected_name))
    }

    /// Like [`TlsFailure::from_io`], with an end of stream mid-handshake as
    /// [`TlsFailure::Closed`] and any other I/O error as [`TlsFailure::Other`].
    pub(crate) fn of_handshake(e: &io::Error, expected_name: &str) -> TlsFailure {
        TlsFailure::from_io(e, expected_name).unwrap_or_else(|| match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe => TlsFailure::Closed,
            _ => TlsFailure::Other(e.to_string()),
        })
    }

    fn from_rustls(e: &rustls::Error, expected_name: &str) -> TlsFailure {
        use rustls::{AlertDescription as A, CertificateError as C, Error as E};
        match e {
            E::InvalidCertificate(c) => match c {
                C::UnknownIssuer | C::BadSignature => TlsFailure::UnknownCa,
                C::Expired | C::ExpiredContext { .. } => TlsFailure::Expired,
                C::NotValidYet | C::NotValidYetContext { .. } => TlsFailure::NotYetValid,
                C::NotValidForName | C::NotValidForNameContext { .. } => {
                    TlsFailure::WrongName { expected: expected_name.to_owned() }
                }
                other => TlsFailure::Other(format!("invalid certificate: {other:?}")),
            },
            E::NoCertificatesPresented => TlsFailure::NoCertificate,
            E::InvalidMessage(_) | E::InappropriateMessage { .. } => TlsFailure::NotTls,
            E::AlertReceived(a) => TlsFailure::RefusedByPeer {
                alert: match a {
                    A::UnknownCA => "UnknownCA (it does not trust our CA)".to_owned(),
                    A::CertificateExpired => {
                        "CertificateExpired (our certificate has expired)".to_owned()
                    }
                    A::CertificateRequired => {
                        "CertificateRequired (we sent no certificate)".to_owned()
                    }
                    A::BadCertificate | A::DecryptError => {
                        format!("{a:?} (it could not verify our certificate)")
                    }
                    other => format!("{other:?}"),
                },
            },
            other => TlsFailure::Other(other.to_string()),
        }
    }
}
