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
//! to 16 bytes, computed once per process on first use (a forked child inherits it, and a spawned
//! child running the same file is told its parent's: [`BuildId::adopt`]). Why
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

/// This process's build id, once computed or adopted (see [`BuildId::current`]).
static CURRENT: OnceLock<Result<ExeBuild, BuildIdError>> = OnceLock::new();

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

/// A build id and the executable file it was computed from (its device and inode): what a
/// parent tells a child, which adopts the id only when it runs that very file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExeBuild {
    /// The id.
    pub id: BuildId,
    /// The executable's device number.
    pub dev: u64,
    /// The executable's inode number.
    pub ino: u64,
}

impl ExeBuild {
    /// The build of the executable at `path`: its bytes hashed, its device and inode as
    /// the open file has them (so they name exactly the bytes hashed).
    ///
    /// # Errors
    /// The file cannot be read.
    pub fn of_file(path: &Path) -> io::Result<ExeBuild> {
        use std::os::unix::fs::MetadataExt;
        let mut file = std::fs::File::open(path)?;
        let meta = file.metadata()?;
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
        Ok(ExeBuild { id: BuildId(id), dev: meta.dev(), ino: meta.ino() })
    }

    /// Whether this process runs the executable this build was computed from. A running
    /// executable cannot be written to (`ETXTBSY`), so while the process that computed the
    /// build lives (a parent, while its child starts), the same device and inode mean the
    /// same bytes.
    pub fn is_this_executable(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self/exe")
            .is_ok_and(|m| (m.dev(), m.ino()) == (self.dev, self.ino))
    }
}

impl BuildId {
    /// The running executable's build id, computed on first use and then remembered.
    ///
    /// # Errors
    /// [`BuildIdError`] when `/proc/self/exe` cannot be read (remembered too).
    pub fn current() -> Result<BuildId, BuildIdError> {
        CURRENT
            .get_or_init(|| {
                ExeBuild::of_file(Path::new("/proc/self/exe"))
                    .map_err(|e| BuildIdError(e.to_string()))
            })
            .clone()
            .map(|b| b.id)
    }

    /// This process's build if it is known already (computed by [`BuildId::current`],
    /// inherited through a fork, or [adopted](BuildId::adopt)), without computing it.
    pub fn known() -> Option<ExeBuild> {
        CURRENT.get().and_then(|r| r.clone().ok())
    }

    /// Takes `build` (a parent's) as this process's, when this process runs the
    /// executable it was computed from and knows no build yet (nor failed to compute
    /// one). Hashing the same file again would only cost time (a quarter of a second for
    /// a large debug build). A child that runs another program (`child_program`) computes
    /// its own when it needs it. Returns whether `build` was adopted.
    pub fn adopt(build: ExeBuild) -> bool {
        build.is_this_executable() && CURRENT.set(Ok(build)).is_ok()
    }

    /// The build id of the executable at `path`.
    ///
    /// # Errors
    /// The file cannot be read.
    pub fn of_file(path: &Path) -> io::Result<BuildId> {
        ExeBuild::of_file(path).map(|b| b.id)
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
    fn a_build_names_the_file_it_was_computed_from() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let b = ExeBuild::of_file(&exe).unwrap();
        assert!(b.is_this_executable());
        assert!(!ExeBuild { ino: b.ino + 1, ..b }.is_this_executable(), "another inode");
        assert!(!ExeBuild { dev: b.dev + 1, ..b }.is_this_executable(), "another device");
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("other");
        std::fs::write(&other, b"another program").unwrap();
        assert!(!ExeBuild::of_file(&other).unwrap().is_this_executable());
        // Adopting another file's build is refused, whatever this process knows.
        assert!(!BuildId::adopt(ExeBuild::of_file(&other).unwrap()));
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
