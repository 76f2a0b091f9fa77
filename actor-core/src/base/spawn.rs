//! The `SpawnBackend` trait: how a parent starts a child actor process.
//!
//! actor-core decides *what* a child is and how it talks; a backend decides only how the
//! process comes to exist (`plough-spawn-backends`: exec, main_thread_forkserver). Either
//! way the child ends up in the runtime's child entry (a [`ChildMain`]) with a
//! [`ChildBoot`], connects back to its parent, and handshakes the same way, so every
//! backend gives the same observable behaviour.

use super::budgets::Budgets;
use super::error::SpawnError;
use super::spawn_method::SpawnMethod;
use futures::future::BoxFuture;
use plough_fork_prims::ChildHandle;
use plough_ipc_wire::msg::Uuid;
use plough_ipc_wire::{Address, Secret, TlsFiles};
use std::fmt;
use std::os::fd::OwnedFd;
use std::sync::Arc;

/// All a child needs to find its parent: no secret, and nothing on argv or in the
/// environment. A forking backend hands it over in memory; `exec` and `zygote` send it
/// ([`ChildBoot::encode`]) over an inherited socket, and the child's runtime entry point
/// finds it there (see `plough_fork_prims::take_delivery`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildBoot {
    /// The child actor's name.
    pub name: String,
    /// Its instance id, chosen by the parent (how the parent recognises the connection).
    pub uuid: Uuid,
    /// The uuid of its tree (the root actor's), for its actor marker: known before the
    /// spawn spec arrives, so the marker can be written while the spec is in flight.
    pub tree: Uuid,
    /// Where the parent listens.
    pub parent_addr: Address,
    /// The spawn method that started it (for logs).
    pub method: SpawnMethod,
    /// The parent's pid: a child that finds another parent (the real one died before the
    /// child armed its parent-death signal) leaves at once.
    pub parent_pid: u32,
    /// The tree's secret. A boot travels only over the child's private channel (the
    /// zygote's or exec's boot socket, or the fork itself), never on argv or in the
    /// environment.
    pub secret: Secret,
    /// The one-time key the child proves to its parent when it connects back (instead of
    /// the tree's secret): how the parent knows the connection is this child's.
    pub token: Secret,
    /// The host's TLS identity, by path (its parent's): a child of a tree that spans
    /// hosts binds and dials under mutual TLS with it. Paths, not keys: the key stays in
    /// its `0600` file.
    pub tls: Option<TlsFiles>,
}

/// The first field of an encoded [`ChildBoot`]: the format's name and version.
const BOOT_FORMAT: &str = "plough-boot/1";

impl ChildBoot {
    /// The bytes a child decodes with [`ChildBoot::decode`]: its fields, each
    /// length-prefixed.
    pub fn encode(&self) -> Vec<u8> {
        let fields = [
            BOOT_FORMAT.to_owned(),
            self.parent_addr.to_string(),
            self.method.key().to_owned(),
            self.parent_pid.to_string(),
            self.uuid.simple().to_string(),
            self.tree.simple().to_string(),
            self.name.clone(),
            hex(&self.secret),
            hex(&self.token),
        ];
        let tls = self.tls.iter().flat_map(|t| [&t.ca, &t.cert, &t.key]);
        let fields = fields.into_iter().chain(tls.map(|p| p.display().to_string()));
        let mut out = Vec::new();
        for f in fields {
            out.extend_from_slice(&(f.len() as u32).to_le_bytes());
            out.extend_from_slice(f.as_bytes());
        }
        out
    }

    /// Decodes what [`ChildBoot::encode`] wrote.
    ///
    /// # Errors
    ///
    /// The bytes are not a boot of this format (the message says which field is wrong).
    pub fn decode(mut bytes: &[u8]) -> Result<ChildBoot, String> {
        let mut fields = Vec::new();
        while !bytes.is_empty() {
            let (len, rest) = bytes.split_at_checked(4).ok_or("a cut length")?;
            let len = u32::from_le_bytes(len.try_into().map_err(|_| "a cut length")?) as usize;
            let (field, rest) = rest.split_at_checked(len).ok_or("a cut field")?;
            fields.push(std::str::from_utf8(field).map_err(|_| "a field is not UTF-8")?);
            bytes = rest;
        }
        let (fields, tls) = match fields.len() {
            9 => (&fields[..], None),
            12 => (&fields[..9], Some(&fields[9..])),
            n => return Err(format!("{n} fields, not 9 or 12")),
        };
        let [format, addr, method, ppid, uuid, tree, name, secret, token] = fields[..] else {
            unreachable!("nine fields")
        };
        let tls = tls.map(|t| TlsFiles { ca: t[0].into(), cert: t[1].into(), key: t[2].into() });
        if format != BOOT_FORMAT {
            return Err(format!("format `{format}`, not `{BOOT_FORMAT}`"));
        }
        Ok(ChildBoot {
            name: name.to_owned(),
            uuid: uuid.parse().map_err(|e| format!("bad uuid `{uuid}`: {e}"))?,
            tree: tree.parse().map_err(|e| format!("bad tree uuid `{tree}`: {e}"))?,
            parent_addr: addr.parse().map_err(|e| format!("bad parent address: {e}"))?,
            method: method.parse().map_err(|e| format!("{e}"))?,
            parent_pid: ppid.parse().map_err(|_| format!("bad parent pid `{ppid}`"))?,
            secret: decode_secret(secret).ok_or("a bad secret")?,
            token: decode_secret(token).ok_or("a bad spawn token")?,
            tls,
        })
    }
}

/// A secret as 64 hex digits.
fn hex(secret: &Secret) -> String {
    secret.to_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// The secret's 64 hex digits, back to bytes.
fn decode_secret(hex: &str) -> Option<Secret> {
    let mut bytes = [0u8; plough_ipc_wire::auth::KEY_LEN];
    if hex.len() != 2 * bytes.len() {
        return None;
    }
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(Secret::from_bytes(bytes))
}

/// The child's entry point, for backends that run it in-process (fork): it runs the
/// child actor to completion (on the runtime its [`ChildRuntime`] builds) and returns the
/// process exit code.
pub type ChildMain = Arc<dyn Fn(ChildBoot, ChildRuntime) -> i32 + Send + Sync>;

/// A child actor's tokio runtime, prepared before the fork and built in the child.
///
/// Making a tokio `Builder` reads the environment (tokio's own settings), and a forked
/// child must never read it: another thread of its parent may have held the
/// environment's lock at the instant of the fork, and the child would wait for it
/// forever. So a forking backend prepares this in the parent and moves it into the child.
pub struct ChildRuntime(tokio::runtime::Builder);

impl ChildRuntime {
    /// A current-thread runtime with every driver the runtime needs. Call it before the
    /// fork.
    pub fn prepare() -> ChildRuntime {
        let mut builder = tokio::runtime::Builder::new_current_thread();
        builder.enable_all();
        ChildRuntime(builder)
    }

    /// Builds it (in the child).
    pub(crate) fn build(mut self) -> std::io::Result<tokio::runtime::Runtime> {
        self.0.build()
    }
}

impl fmt::Debug for ChildRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChildRuntime(current_thread)")
    }
}

/// What a backend is asked to start.
pub struct SpawnRequest {
    /// How to connect back.
    pub boot: ChildBoot,
    /// The in-process entry point (used by `main_thread_forkserver`; `exec` and `zygote`
    /// children run `main`, which reaches it through `Runtime::run`).
    pub child_main: ChildMain,
    /// The write end of the boot pipe: the child's fd 2 until it has connected back (see
    /// `backend::ChildStdio`). `None`: the child inherits stderr.
    pub boot_stderr: Option<OwnedFd>,
    /// The parent's budgets (a backend's own waits, e.g. [`Budgets::fork_reply`]).
    pub budgets: Budgets,
}

impl fmt::Debug for SpawnRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpawnRequest").field("boot", &self.boot).finish_non_exhaustive()
    }
}

/// Starts child actor processes.
pub trait SpawnBackend: Send + Sync + fmt::Debug + 'static {
    /// The key of this backend.
    fn method(&self) -> SpawnMethod;

    /// Starts the process; it will connect back to `req.boot.parent_addr`. The returned
    /// handle owns the process (its own process group; killed and reaped if dropped).
    fn spawn(&self, req: SpawnRequest) -> BoxFuture<'_, Result<ChildHandle, SpawnError>>;

    /// Releases what the backend keeps for spawning (e.g. a zygote process), once the
    /// actor that owns it has taken every child down and will spawn no more. A later
    /// `spawn` may start it again. Default: nothing to release.
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boots_round_trip_and_bad_bytes_say_why() {
        let boot = ChildBoot {
            name: "worker 1\nwith a newline".into(),
            uuid: Uuid([0xab; 16]),
            tree: Uuid([0xcd; 16]),
            parent_addr: "tcp://127.0.0.1:4000".parse().unwrap(),
            method: SpawnMethod::Zygote,
            parent_pid: 77,
            secret: Secret::from_bytes([0x5c; 32]),
            token: Secret::from_bytes([0x3e; 32]),
            tls: None,
        };
        let bytes = boot.encode();
        assert_eq!(ChildBoot::decode(&bytes).unwrap(), boot);
        let files = TlsFiles::in_ca_dir(std::path::Path::new("/etc/plough ca"), "host-a");
        let with_tls = ChildBoot { tls: Some(files), ..boot.clone() };
        assert_eq!(ChildBoot::decode(&with_tls.encode()).unwrap(), with_tls);
        assert!(ChildBoot::decode(&bytes[..bytes.len() - 1]).unwrap_err().contains("cut"));
        assert!(ChildBoot::decode(&[]).unwrap_err().contains("0 fields, not 9 or 12"));
        let mut other = Vec::new();
        for f in ["plough-boot/9", "a", "b", "c", "d", "e", "f", "g", "h"] {
            other.extend_from_slice(&(f.len() as u32).to_le_bytes());
            other.extend_from_slice(f.as_bytes());
        }
        assert!(ChildBoot::decode(&other).unwrap_err().contains("plough-boot/9"));
    }
}
