//! `plough ca`: a tree CA and the host certificates that mutual TLS between hosts needs.
//!
//! ```text
//! plough ca init <dir>                       # ca.pem + ca.key (the CA's key never leaves dir)
//! plough ca issue <dir> <host> [--ip IP]...  # <host>.pem + <host>.key, signed by the CA
//! ```
//!
//! A host then needs three files: `ca.pem`, `<host>.pem` and `<host>.key`
//! ([`TlsFiles::in_ca_dir`]); a user's own PKI works the same way, by paths
//! ([`TlsFiles`]). Certificates name their host as a DNS subject alternative name (and the
//! IPs given with `--ip`), carry both the server and the client purpose (a host dials and
//! accepts), and use ECDSA P-256 keys. Every file is created `0600` in a `0700` directory
//! and never overwritten: an existing file is an error, so a CA cannot be replaced by a
//! slip of the keyboard.

use plough_ipc_wire::TlsFiles;
use plough_ipc_wire::tls::{CA_CERT_FILE, CA_KEY_FILE};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a tree CA is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// How long a host certificate is valid unless told otherwise (`--days`).
pub const HOST_VALIDITY_DAYS: u32 = 365;

/// `plough ca` and its subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum CaCmd {
    /// Create a tree CA in DIR: ca.pem (give it to every host) and ca.key (keep it here).
    Init {
        /// Where the CA lives (created 0700 if missing).
        dir: PathBuf,
    },
    /// Issue a certificate and key for HOST, signed by the CA in DIR: DIR/HOST.pem and
    /// DIR/HOST.key (copy them, with ca.pem, to that host).
    Issue {
        /// The CA's directory (from `plough ca init`).
        dir: PathBuf,
        /// The host's name (a DNS name: what `tls://HOST@ip:port` addresses name).
        host: String,
        /// An IP address the certificate also names (repeatable), for `tls://ip:port`.
        #[arg(long = "ip")]
        ips: Vec<IpAddr>,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = HOST_VALIDITY_DAYS)]
        days: u32,
    },
}

/// Why `plough ca` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// The file exists; nothing is overwritten.
    #[error("{0} exists; refusing to overwrite it")]
    Exists(PathBuf),
    /// No CA in the directory.
    #[error("no tree CA in {dir} (run `plough ca init {dir}` first)", dir = .0.display())]
    NoCa(PathBuf),
    /// The host name is not a DNS name (or not a safe file name).
    #[error("bad host name `{0}`: use letters, digits, `-` and `.` (a DNS name)")]
    BadHost(String),
    /// A file operation failed.
    #[error("cannot {op} {path}")]
    Io {
        /// What failed.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Making or reading a certificate failed.
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
}

/// Runs a `plough ca` subcommand, printing what it made; the process exit code.
pub fn run(cmd: CaCmd) -> i32 {
    let out = match cmd {
        CaCmd::Init { dir } => init(&dir).map(|()| {
            format!(
                "tree CA created: {} (keep {} private)",
                dir.join(CA_CERT_FILE).display(),
                dir.join(CA_KEY_FILE).display()
            )
        }),
        CaCmd::Issue { dir, host, ips, days } => issue(&dir, &host, &ips, days)
            .map(|f| format!("issued for {host}: {} and {}", f.cert.display(), f.key.display())),
    };
    match out {
        Ok(line) => {
            println!("{line}");
            0
        }
        Err(e) => {
            eprintln!("plough ca: {e}");
            1
        }
    }
}

/// Creates a tree CA in `dir`: `ca.pem` and `ca.key`, and the tree's secret (`secret`).
///
/// # Errors
/// [`CaError::Exists`] when either file exists; I/O and certificate errors.
pub fn init(dir: &Path) -> Result<(), CaError> {
    make_dir(dir)?;
    let (cert_path, key_path) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
    for p in [&cert_path, &key_path] {
        if p.exists() {
            return Err(CaError::Exists(p.clone()));
        }
    }
    let key = KeyPair::generate()?;
    // Two trees' CAs never share a name (a verifier finds an issuer by name: a namesake
    // CA would be "a bad signature" instead of "an unknown CA").
    let tag: String =
        key.public_key_raw().iter().skip(1).take(4).map(|b| format!("{b:02x}")).collect();
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::OrganizationName, "plough");
    params.distinguished_name.push(DnType::CommonName, format!("plough tree CA {tag}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + CA_VALIDITY;
    let cert = params.self_signed(&key)?;
    // The key first: a crash in between leaves no certificate without its key.
    write_new(&key_path, key.serialize_pem().as_bytes())?;
    write_new(&cert_path, cert.pem().as_bytes())?;
    // The tree's secret, which hosts hold beside their certificate pair (`plough-host`
    // proves it on top of TLS): `secret`, 0600.
    plough_ipc_wire::Secret::load_or_create(dir).map(drop).map_err(|e| CaError::Io {
        op: "create the tree's secret in",
        path: dir.to_owned(),
        source: io::Error::other(e.to_string()),
    })
}

/// Issues `<host>.pem` and `<host>.key` in `dir`, signed by its CA, naming `host` (and
/// `ips`), valid for `days`; the files a host loads ([`TlsFiles::in_ca_dir`]).
///
/// # Errors
/// [`CaError::BadHost`], [`CaError::NoCa`], [`CaError::Exists`]; I/O and certificate
/// errors.
pub fn issue(dir: &Path, host: &str, ips: &[IpAddr], days: u32) -> Result<TlsFiles, CaError> {
    let valid = !host.is_empty()
        && host.len() <= 253
        && !host.starts_with(['-', '.'])
        && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !valid {
        return Err(CaError::BadHost(host.to_owned()));
    }
    let files = TlsFiles::in_ca_dir(dir, host);
    for p in [&files.cert, &files.key] {
        if p.exists() {
            return Err(CaError::Exists(p.clone()));
        }
    }
    let read = |p: &Path| match std::fs::read_to_string(p) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(CaError::NoCa(dir.to_owned())),
        Err(source) => Err(CaError::Io { op: "read", path: p.to_owned(), source }),
    };
    let ca_key = KeyPair::from_pem(&read(&dir.join(CA_KEY_FILE))?)?;
    let ca = CertificateParams::from_ca_cert_pem(&read(&dir.join(CA_CERT_FILE))?)?
        .self_signed(&ca_key)?;

    let mut params = CertificateParams::new(vec![host.to_owned()])?;
    params.subject_alt_names.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    params.distinguished_name.push(DnType::OrganizationName, "plough");
    params.distinguished_name.push(DnType::CommonName, host);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages =
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days.into());
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca, &ca_key)?;
    write_new(&files.key, key.serialize_pem().as_bytes())?;
    write_new(&files.cert, cert.pem().as_bytes())?;
    Ok(files)
}

fn make_dir(dir: &Path) -> Result<(), CaError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| CaError::Io { op: "create the directory", path: dir.to_owned(), source })
}

/// Creates `path` with `bytes`, mode 0600, failing if it exists (or is a symlink).
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), CaError> {
    let mut f =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(
            |source| match source.kind() {
                io::ErrorKind::AlreadyExists => CaError::Exists(path.to_owned()),
                _ => CaError::Io { op: "create", path: path.to_owned(), source },
            },
        )?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(|source| CaError::Io {
        op: "write",
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn init_then_issue_makes_a_loadable_identity_with_private_files_and_never_overwrites() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ca");
        init(&dir).unwrap();
        let files = issue(&dir, "node-1", &["10.9.8.7".parse().unwrap()], 30).unwrap();
        let id = plough_ipc_wire::TlsIdentity::load(&files).unwrap();
        assert_eq!(id.host(), "node-1");
        for name in ["ca.pem", "ca.key", "node-1.pem", "node-1.key"] {
            let mode = std::fs::metadata(dir.join(name)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);

        let before = std::fs::read(dir.join("ca.pem")).unwrap();
        assert!(matches!(init(&dir), Err(CaError::Exists(_))));
        assert!(matches!(issue(&dir, "node-1", &[], 30), Err(CaError::Exists(_))));
        assert_eq!(std::fs::read(dir.join("ca.pem")).unwrap(), before);
    }

    #[test]
    fn bad_hosts_and_a_missing_ca_are_refused_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        for bad in ["", "../x", "a/b", "-x", "a b"] {
            assert!(matches!(issue(tmp.path(), bad, &[], 1), Err(CaError::BadHost(_))), "{bad}");
        }
        let e = issue(tmp.path(), "node-1", &[], 1).unwrap_err();
        assert!(matches!(e, CaError::NoCa(_)), "{e}");
        assert!(e.to_string().contains("plough ca init"), "{e}");
    }
}
