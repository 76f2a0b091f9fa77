//! The per-user directory that holds plough's Unix sockets, and the names inside it.
//!
//! A socket file is only as private as the directory it sits in: anyone who can write the
//! directory can replace the socket with their own (and catch our connections), and anyone
//! who can search it can connect. So the directory is `$XDG_RUNTIME_DIR/plough/` (fallback
//! `/tmp/plough-<uid>/`), created mode 0700, and refused outright when it is a symlink or
//! belongs to another user — the classic `/tmp` squatting attack, where someone creates
//! `/tmp/plough-1000` first. Socket names are `<actor>@<pid>.sock`, sanitized and shortened
//! (with a hash of the full name, so two long names stay distinct) to fit `sun_path`.
//!
//! Whatever the transport, the same directory holds the actor markers (see
//! `plough_fork_prims::marker`), so the check itself is fork-prims' and shared.
//!
//! A leaf of the crate's module graph: `address` builds on it, so
//! [`AddressError`], which [`socket_path`] returns, is defined here and re-exported as
//! `plough_ipc_wire::address::AddressError` (and at the crate root).

use std::path::{Path, PathBuf};

/// Longest socket path that fits in `sockaddr_un.sun_path` (108 bytes with the NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// The default runtime directory: `$XDG_RUNTIME_DIR/plough`, or `/tmp/plough-<uid>` when
/// `XDG_RUNTIME_DIR` is unset or not absolute. Does not create it; see [`ensure_private_dir`].
/// Read from the environment once per process (a forked child inherits the value and
/// never reads the environment, whose lock another thread of its parent may have held).
/// The same directory actor markers use: this is
/// `plough_fork_prims::marker::default_runtime_dir`.
pub fn default_dir() -> PathBuf {
    plough_fork_prims::marker::default_runtime_dir()
}

/// Why an address is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// No `tcp://`, `tls://` or `uds://` prefix, and not a multiaddr (`/ip4/...`).
    #[error(
        "unknown address scheme in `{0}` (expected `tcp://ip:port`, `tls://[host@]ip:port`, \
         `uds:///path`, or a multiaddr: `/ip4/ip/tcp/port`, `/ip6/ip/tcp/port`, `/unix/path`)"
    )]
    UnknownScheme(String),
    /// A multiaddr (tractor's address form, `/ip4/127.0.0.1/tcp/1616`) that plough cannot
    /// read: `reason` says which part.
    #[error("bad multiaddr `{addr}`: {reason}")]
    BadMultiaddr {
        /// The whole address as given.
        addr: String,
        /// What is wrong with it, e.g. "`/ip4` needs an IPv4 address, got `1.2.3`".
        reason: String,
    },
    /// The host name of a `tls://host@ip:port` address is not a DNS name.
    #[error("bad tls host name `{0}`: expected a DNS name, e.g. `node-1` or `a.example`")]
    BadTlsName(String),
    /// The TCP part is not `ip:port` (IPv6 in brackets).
    #[error("bad tcp address `{0}`: expected `ip:port`, e.g. `127.0.0.1:1616` or `[::1]:1616`")]
    BadTcp(String),
    /// The UDS path is not absolute.
    #[error("uds path `{0}` is not absolute")]
    RelativePath(String),
    /// The UDS path contains a NUL byte.
    #[error("uds path contains a NUL byte")]
    NulInPath,
    /// A socket path does not fit in `sun_path`.
    #[error("socket path `{path}` is {len} bytes, longer than the {max} that fit in sun_path")]
    PathTooLong {
        /// The path.
        path: String,
        /// Its length in bytes.
        len: usize,
        /// The maximum.
        max: usize,
    },
}

/// Why a runtime directory was refused: a symlink, not a directory, another user's, or
/// writable by others (`plough_fork_prims::marker::PrivateDirError`, the one check that
/// sockets and markers share).
pub use plough_fork_prims::marker::PrivateDirError as RuntimeDirError;

/// Creates `dir` (and missing parents) with mode 0700 if needed, then checks it: not a
/// symlink, a directory, owned by our effective uid, writable by nobody else; a directory
/// of ours that others may only read or search is tightened to 0700. The check runs
/// *after* creation, so a directory someone else created in the race window is caught
/// too. (`plough_fork_prims::marker::ensure_private_dir`: markers and sockets are checked
/// alike.)
///
/// # Errors
/// [`RuntimeDirError`] when the directory is refused or cannot be created.
pub fn ensure_private_dir(dir: &Path) -> Result<(), RuntimeDirError> {
    plough_fork_prims::marker::ensure_private_dir(dir)
}

/// `<dir>/<name>@<pid>.sock`, with `name` sanitized (only `[A-Za-z0-9._-]` kept, others
/// become `_`) and, when the path would not fit in `sun_path`, cut short and suffixed with
/// `~` and a hash of the full name.
///
/// # Errors
/// [`AddressError::PathTooLong`] when `dir` leaves no room for a name.
pub fn socket_path(dir: &Path, name: &str, pid: u32) -> Result<PathBuf, AddressError> {
    let clean: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .collect();
    let clean =
        if clean.is_empty() || clean.starts_with('.') { format!("_{clean}") } else { clean };
    let tail = format!("@{pid}.sock");
    let dir_len = dir.as_os_str().len() + 1;
    let path = dir.join(format!("{clean}{tail}"));
    if path.as_os_str().len() <= MAX_SOCKET_PATH {
        return Ok(path);
    }
    let suffix = format!("~{:08x}", fnv1a(name.as_bytes()));
    let budget = MAX_SOCKET_PATH
        .checked_sub(dir_len + tail.len() + suffix.len())
        .filter(|b| *b >= 1)
        .ok_or_else(|| AddressError::PathTooLong {
            path: path.display().to_string(),
            len: path.as_os_str().len(),
            max: MAX_SOCKET_PATH,
        })?;
    // `clean` is ASCII, so any byte index is a char boundary.
    Ok(dir.join(format!("{}{suffix}{tail}", &clean[..budget.min(clean.len())])))
}

/// 32-bit FNV-1a: stable across builds and processes, unlike std's hasher.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h: u32, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn names_are_sanitized_and_shortened_to_fit() {
        let dir = Path::new("/run/user/1000/plough");
        assert_eq!(
            socket_path(dir, "worker-3", 42).unwrap(),
            Path::new("/run/user/1000/plough/worker-3@42.sock")
        );
        assert_eq!(
            socket_path(dir, "a/b c", 1).unwrap(),
            Path::new("/run/user/1000/plough/a_b_c@1.sock")
        );
        assert_eq!(
            socket_path(dir, "..", 1).unwrap(),
            Path::new("/run/user/1000/plough/_..@1.sock")
        );
        let long_a = socket_path(dir, &"a".repeat(300), 4_000_000).unwrap();
        let long_b = socket_path(dir, &format!("{}b", "a".repeat(299)), 4_000_000).unwrap();
        assert_eq!(long_a.as_os_str().len(), MAX_SOCKET_PATH);
        assert_ne!(long_a, long_b, "shortened names keep a hash of the full name");
        assert!(long_a.to_str().unwrap().ends_with("@4000000.sock"));
        let deep = PathBuf::from(format!("/{}", "d".repeat(100)));
        assert!(matches!(socket_path(&deep, "x", 1), Err(AddressError::PathTooLong { .. })));
    }

    #[test]
    fn private_dir_is_created_0700_and_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/plough");
        ensure_private_dir(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        // Writable by others: they may have planted files already. Refused, not tightened.
        for mode in [0o777, 0o1777, 0o770, 0o702] {
            fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).unwrap();
            let err = ensure_private_dir(&dir).unwrap_err();
            assert!(matches!(err, RuntimeDirError::WritableByOthers { .. }), "{mode:o}: {err}");
            assert!(err.to_string().contains("writable by others"), "{err}");
            assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o7777, mode, "left as found");
        }
    }

    #[test]
    fn symlinks_files_and_foreign_dirs_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        fs::create_dir(&real).unwrap();
        let link = tmp.path().join("link");
        symlink(&real, &link).unwrap();
        assert!(matches!(ensure_private_dir(&link), Err(RuntimeDirError::Symlink(_))));
        let file = tmp.path().join("file");
        fs::write(&file, b"").unwrap();
        assert!(matches!(ensure_private_dir(&file), Err(RuntimeDirError::NotADirectory(_))));
        if rustix::process::geteuid().is_root() {
            let foreign = tmp.path().join("foreign");
            fs::create_dir(&foreign).unwrap();
            std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
            assert!(matches!(
                ensure_private_dir(&foreign),
                Err(RuntimeDirError::ForeignOwner { owner: 65534, .. })
            ));
        }
    }
}
