//! Who may talk to an actor: a tree's [`Secret`], the file that keeps a user's, and the
//! proof each end of a connection gives that it holds it.
//!
//! The handshake (the `handshake` module, which builds on this one) is a mutual
//! challenge–response: each end sends a [`Hello`](crate::Hello) with 32 fresh random bytes
//! (its nonce), then answers the other's nonce with a [`Msg::Proof`](crate::Msg::Proof), an
//! HMAC-SHA256 under the secret of a transcript that names the prover's role (connecting or
//! accepting), both nonces, both actors' uuids and, over TCP, the connection's endpoints.
//! What is designed out:
//!
//! * **A stranger reaching an actor's functions**: without the secret no proof checks out,
//!   and the acceptor reads nothing else from a peer before its proof did.
//! * **Replay**: a proof recorded on one connection covers that connection's nonces; the
//!   next connection has a fresh nonce of ours, so the recording is worth nothing.
//! * **Reflection**: the role is in the transcript, so an acceptor's proof sent back to it
//!   as a connector's does not verify (nor the other way round).
//! * **Relay**: someone who gets one of our actors to dial them (squatting a TCP port it
//!   dials) and passes every byte on to another of our actors would otherwise end up in
//!   the middle of an authenticated connection. Over TCP the transcript also names the
//!   connection's two endpoints as the prover sees them; through a relay the two ends see
//!   different ones, so the relayed proof fails. (So plaintext TCP through a proxy or NAT
//!   is refused too; across hosts plough uses mutual TLS. Over UDS a listener of another
//!   uid is refused before any byte, and one of ours already holds the secret.)
//! * **An oracle for strangers**: the accepting end proves itself only after the connecting
//!   end's proof checked out, so a stranger never gets a MAC of ours to study.
//! * **The secret leaking**: it never travels: not on the wire, not on argv, not in the
//!   environment. A user's secret lives in a `0600` file, [`SECRET_FILE`], in the `0700`
//!   runtime directory; a tree's own ([`Secret::generate`]) exists only in memory and reaches
//!   a child over the private channel its spawn backend hands it.
//!
//! The MAC and the comparison (constant time) are RustCrypto's `hmac` and `sha2`; nothing
//! here is home-made cryptography.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The name of a user's secret file inside the runtime directory.
pub const SECRET_FILE: &str = "secret";

/// Bytes in a secret, a nonce and a proof.
pub const KEY_LEN: usize = 32;

/// Domain separation: the transcript's first bytes, and the version of this scheme.
const LABEL: &[u8] = b"plough-auth/1\0";

/// A tree's shared secret: 32 random bytes. Cheap to clone; its `Debug` shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<[u8; KEY_LEN]>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Why a secret could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The file is a symbolic link: someone may be pointing us at a secret they know.
    #[error("{0} is a symlink; refusing to read a secret through it")]
    Symlink(PathBuf),
    /// The file belongs to another user.
    #[error("{path} is owned by uid {owner}, not by us (uid {ours}); refusing to use it")]
    ForeignOwner {
        /// The file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Our effective uid.
        ours: u32,
    },
    /// Group or others may read or write the file: the secret is no longer ours alone.
    #[error(
        "{path} has mode {mode:04o}; a secret file must be readable by its owner only (0600): \
         remove it (a new one is made) or `chmod 600` it"
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file does not hold exactly one secret.
    #[error("{path} holds {len} bytes, not a {KEY_LEN}-byte secret; remove it (a new one is made)")]
    BadLength {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// The runtime directory is refused (see [`ensure_private_dir`](crate::runtime_dir::ensure_private_dir)).
    #[error(transparent)]
    Dir(#[from] crate::runtime_dir::RuntimeDirError),
    /// Reading, creating or linking the file failed.
    #[error("cannot {op} the secret file {path}: {source}")]
    Io {
        /// What failed, e.g. `read`.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The kernel's random source failed.
    #[error("cannot draw random bytes: {0}")]
    Random(io::Error),
}

impl Secret {
    /// A fresh random secret (for a tree of its own: nothing outside the tree knows it).
    ///
    /// # Errors
    /// [`SecretError::Random`] when the kernel's random source fails.
    pub fn generate() -> Result<Secret, SecretError> {
        Ok(Secret(Arc::new(random().map_err(SecretError::Random)?)))
    }

    /// The secret with these bytes (as handed to a child over its private channel).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Secret {
        Secret(Arc::new(bytes))
    }

    /// The bytes, to hand to a child over a private channel — never to put on argv, in the
    /// environment or on a connection.
    pub fn to_bytes(&self) -> [u8; KEY_LEN] {
        *self.0
    }

    /// The user's secret in `dir` (the runtime directory, made private first): read from
    /// [`SECRET_FILE`] if it exists, else created there, `0600`, with fresh random bytes.
    /// Two processes creating it at once end up with the same secret: the file appears
    /// whole or not at all (written aside, then hard-linked into place, which fails if
    /// another got there first — then theirs is read).
    ///
    /// # Errors
    /// [`SecretError`] naming the file and what is wrong with it: a symlink, another
    /// user's, readable by others, the wrong length, or an I/O failure.
    pub fn load_or_create(dir: &Path) -> Result<Secret, SecretError> {
        crate::runtime_dir::ensure_private_dir(dir)?;
        let path = dir.join(SECRET_FILE);
        match Self::load(&path) {
            Err(SecretError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
            other => return other,
        }
        let fresh = random().map_err(SecretError::Random)?;
        // Unique per attempt (threads of one process race too); a leftover of a crash is
        // a dot-file of a few bytes that nothing reads.
        let tag = random().map_err(SecretError::Random)?;
        let tag: String = tag[..6].iter().map(|b| format!("{b:02x}")).collect();
        let aside = dir.join(format!(".{SECRET_FILE}.{}.{tag}.tmp", std::process::id()));
        let io = |op, source| SecretError::Io { op, path: path.clone(), source };
        let written = (|| {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(&aside)?;
            f.write_all(&fresh)?;
            f.sync_all()
        })();
        let linked = written.map_err(|e| io("create", e)).and_then(|()| {
            match fs::hard_link(&aside, &path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(io("link", e)),
            }
        });
        let _ = fs::remove_file(&aside);
        if linked? {
            tracing::info!(path = %path.display(), "created the user's plough secret");
            Ok(Secret::from_bytes(fresh))
        } else {
            // Someone else created it meanwhile: theirs is the secret.
            Self::load(&path)
        }
    }

    /// The secret in the file at `path`, which must be ours, `0600` (no group or other
    /// bits), not a symlink, and exactly [`KEY_LEN`] bytes.
    ///
    /// # Errors
    /// As [`Secret::load_or_create`]; a missing file is [`SecretError::Io`] with
    /// [`io::ErrorKind::NotFound`].
    pub fn load(path: &Path) -> Result<Secret, SecretError> {
        let io = |op, source| SecretError::Io { op, path: path.to_owned(), source };
        let mut f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(path)
            .map_err(|e| {
                if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                    SecretError::Symlink(path.to_owned())
                } else {
                    io("open", e)
                }
            })?;
        let meta = f.metadata().map_err(|e| io("stat", e))?;
        let ours = rustix::process::geteuid().as_raw();
        if meta.uid() != ours {
            return Err(SecretError::ForeignOwner {
                path: path.to_owned(),
                owner: meta.uid(),
                ours,
            });
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(SecretError::Exposed { path: path.to_owned(), mode });
        }
        if meta.len() != KEY_LEN as u64 {
            return Err(SecretError::BadLength { path: path.to_owned(), len: meta.len() });
        }
        let mut bytes = [0; KEY_LEN];
        f.read_exact(&mut bytes).map_err(|e| io("read", e))?;
        Ok(Secret::from_bytes(bytes))
    }

    /// This end's proof: the MAC of the transcript `role`, our nonce, theirs, our uuid,
    /// theirs.
    pub(crate) fn prove(&self, t: &Transcript<'_>) -> [u8; KEY_LEN] {
        self.mac(t).finalize().into_bytes().into()
    }

    /// Whether `proof` is the MAC of `t` (compared in constant time).
    pub(crate) fn verify(&self, t: &Transcript<'_>, proof: &[u8]) -> bool {
        self.mac(t).verify_slice(proof).is_ok()
    }

    fn mac(&self, t: &Transcript<'_>) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0[..]).expect("HMAC takes any key");
        mac.update(LABEL);
        mac.update(&[t.role as u8]);
        let parts = [
            t.prover_nonce,
            t.verifier_nonce,
            t.prover_uuid,
            t.verifier_uuid,
            t.endpoints.as_bytes(),
        ];
        for part in parts {
            // Length-prefixed, so no two transcripts run together into the same bytes.
            mac.update(&(part.len() as u32).to_be_bytes());
            mac.update(part);
        }
        mac
    }
}

/// Which end of a connection gives a proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The end that connected.
    Connecting = b'C' as isize,
    /// The end that accepted.
    Accepting = b'A' as isize,
}

/// What a proof covers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Transcript<'a> {
    pub(crate) role: Role,
    pub(crate) prover_nonce: &'a [u8],
    pub(crate) verifier_nonce: &'a [u8],
    pub(crate) prover_uuid: &'a [u8],
    pub(crate) verifier_uuid: &'a [u8],
    /// The connection's two TCP endpoints as the prover sees them (`local>peer`), empty
    /// for UDS: through a relay the two ends see different endpoints, so a proof relayed
    /// by someone in the middle does not verify.
    pub(crate) endpoints: &'a str,
}

/// A fresh nonce.
pub(crate) fn nonce() -> io::Result<[u8; KEY_LEN]> {
    random()
}

fn random() -> io::Result<[u8; KEY_LEN]> {
    let mut bytes = [0u8; KEY_LEN];
    let mut filled = 0;
    while filled < KEY_LEN {
        match rustix::rand::getrandom(&mut bytes[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn transcript<'a>(role: Role, a: &'a [u8], b: &'a [u8]) -> Transcript<'a> {
        Transcript {
            role,
            prover_nonce: a,
            verifier_nonce: b,
            prover_uuid: b"uuid-a",
            verifier_uuid: b"uuid-b",
            endpoints: "127.0.0.1:1>127.0.0.1:2",
        }
    }

    #[test]
    fn a_proof_verifies_only_for_its_transcript_and_secret() {
        let s = Secret::generate().unwrap();
        let (n1, n2) = (nonce().unwrap(), nonce().unwrap());
        assert_ne!(n1, n2, "nonces are fresh");
        let t = transcript(Role::Connecting, &n1, &n2);
        let p = s.prove(&t);
        assert!(s.verify(&t, &p));
        // Another secret, another nonce of the verifier (a replay), the other role (a
        // reflection), a truncated proof: none verifies.
        assert!(!Secret::generate().unwrap().verify(&t, &p));
        let n3 = nonce().unwrap();
        assert!(!s.verify(&transcript(Role::Connecting, &n1, &n3), &p));
        assert!(!s.verify(&transcript(Role::Accepting, &n1, &n2), &p));
        assert!(!s.verify(&t, &p[..16]));
        assert!(!s.verify(&t, &[]));
    }

    #[test]
    fn debug_hides_the_bytes() {
        let s = Secret::from_bytes([0xab; KEY_LEN]);
        assert_eq!(format!("{s:?}"), "Secret(..)");
    }

    #[test]
    fn the_user_secret_is_created_once_0600_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("plough");
        let a = Secret::load_or_create(&run).unwrap();
        let b = Secret::load_or_create(&run).unwrap();
        assert_eq!(a, b);
        let meta = fs::metadata(run.join(SECRET_FILE)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), KEY_LEN as u64);
        // Nothing written aside is left.
        let names: Vec<_> = fs::read_dir(&run).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [SECRET_FILE]);
    }

    #[test]
    fn racing_creators_agree() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("plough");
        let secrets: Vec<Secret> = std::thread::scope(|s| {
            let handles: Vec<_> =
                (0..8).map(|_| s.spawn(|| Secret::load_or_create(&run).unwrap())).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(secrets.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn exposed_short_and_symlinked_files_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("plough");
        Secret::load_or_create(&run).unwrap();
        let file = run.join(SECRET_FILE);

        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        let e = Secret::load_or_create(&run).unwrap_err();
        assert!(matches!(e, SecretError::Exposed { mode: 0o644, .. }), "{e}");
        assert!(e.to_string().contains("0644") && e.to_string().contains("0600"), "{e}");

        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&file, b"short").unwrap();
        let e = Secret::load_or_create(&run).unwrap_err();
        assert!(matches!(e, SecretError::BadLength { len: 5, .. }), "{e}");

        fs::remove_file(&file).unwrap();
        let elsewhere = dir.path().join("planted");
        fs::write(&elsewhere, [7u8; KEY_LEN]).unwrap();
        fs::set_permissions(&elsewhere, fs::Permissions::from_mode(0o600)).unwrap();
        symlink(&elsewhere, &file).unwrap();
        let e = Secret::load_or_create(&run).unwrap_err();
        assert!(matches!(e, SecretError::Symlink(_)), "{e}");
    }
}
