//! [`BuildId`]: which build of the program a process runs, so that hosts refuse a peer
//! running another one.
//!
//! Actors call each other's handlers by name and exchange payloads whose types both ends
//! compile in; two different builds can disagree on either without anything failing
//! loudly. Within a host this cannot happen to a tree (a child is a fork of its parent or
//! an exec of the same `/proc/self/exe`, which names the very inode the parent runs even
//! after the file is replaced), but a host daemon started from a different deploy can.
//!
//! The id is the SHA-256 of the running executable's bytes (`/proc/self/exe`), truncated
//! to 16 bytes, computed once per process on first use (a forked child inherits it). Why
//! that source, not a compile-time value: a constant compiled into this crate changes
//! only when this crate is rebuilt, not when the application's own handlers change; a
//! build script cannot see the final binary either. The executable's content changes with
//! any change to any crate linked in, needs nothing from the build system, and two copies
//! of one build on two hosts hash the same. The cost is one read and hash of the binary
//! (measured here: 81 ms for a 42 MB executable, the `build_id` row of the wire bench), paid
//! once, off the reactor, and only by processes that need the id: the handshake asks
//! for it only on connections where builds must match (over TLS by default, see the
//! handshake's `BuildCheck`), never for a local spawn.

use sha2::{Digest, Sha256};
use std::fmt;
use std::io::{self, Read};
use std::path::Path;
use std::sync::OnceLock;

/// Bytes in a build id.
pub const BUILD_ID_LEN: usize = 16;

/// A build's identity: 16 bytes of the SHA-256 of its executable. Displays as 32 hex
/// digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct BuildId(pub [u8; BUILD_ID_LEN]);

impl fmt::Display for BuildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for BuildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BuildId({self})")
    }
}

/// This process's build id could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot compute this program's build id from /proc/self/exe: {0}")]
pub struct BuildIdError(String);

impl BuildId {
    /// The running executable's build id, computed on first use and then remembered.
    ///
    /// # Errors
    /// [`BuildIdError`] when `/proc/self/exe` cannot be read (remembered too).
    pub fn current() -> Result<BuildId, BuildIdError> {
        static CURRENT: OnceLock<Result<BuildId, BuildIdError>> = OnceLock::new();
        CURRENT
            .get_or_init(|| {
                BuildId::of_file(Path::new("/proc/self/exe"))
                    .map_err(|e| BuildIdError(e.to_string()))
            })
            .clone()
    }

    /// The build id of the executable at `path`.
    ///
    /// # Errors
    /// The file cannot be read.
    pub fn of_file(path: &Path) -> io::Result<BuildId> {
        let mut file = std::fs::File::open(path)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => hasher.update(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let digest = hasher.finalize();
        let mut id = [0u8; BUILD_ID_LEN];
        id.copy_from_slice(&digest[..BUILD_ID_LEN]);
        Ok(BuildId(id))
    }

    /// The id in a hello's `build` field: `None` when the field is empty or not 16 bytes.
    pub fn from_wire(bytes: &[u8]) -> Option<BuildId> {
        bytes.try_into().ok().map(BuildId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_build_is_stable_and_names_this_executable() {
        let a = BuildId::current().unwrap();
        assert_eq!(a, BuildId::current().unwrap());
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        assert_eq!(a, BuildId::of_file(&exe).unwrap());
        assert_eq!(a.to_string().len(), 2 * BUILD_ID_LEN);
        assert_eq!(BuildId::from_wire(&a.0), Some(a));
        assert_eq!(BuildId::from_wire(b"short"), None);
    }

    #[test]
    fn another_file_has_another_id() {
        let dir = tempfile::tempdir().unwrap();
        let (x, y) = (dir.path().join("x"), dir.path().join("y"));
        std::fs::write(&x, b"one build").unwrap();
        std::fs::write(&y, b"another build").unwrap();
        assert_ne!(BuildId::of_file(&x).unwrap(), BuildId::of_file(&y).unwrap());
    }
}
