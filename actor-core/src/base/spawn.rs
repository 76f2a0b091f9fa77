//! The `SpawnBackend` trait: how a parent starts a child actor process.
//!
//! actor-core decides *what* a child is and how it talks; a backend decides only how the
//! process comes to exist (`plough-spawn-backends`: exec, main_thread_forkserver). Either
//! way the child ends up in the runtime's child entry (a [`ChildMain`]) with a
//! [`ChildBoot`], connects back to its parent, and handshakes the same way, so every
//! backend gives the same observable behaviour.

use super::error::SpawnError;
use super::spawn_method::SpawnMethod;
use futures::future::BoxFuture;
use plough_fork_prims::ChildHandle;
use plough_ipc_wire::Address;
use plough_ipc_wire::msg::Uuid;
use std::fmt;
use std::os::fd::OwnedFd;
use std::sync::Arc;

/// The hidden argument that puts a re-executed program into child mode.
pub const CHILD_MODE_ARG: &str = "--plough-child";

/// The optional last child-mode argument: this child's real stderr is on its stdin.
const STDERR_ON_STDIN_ARG: &str = "stderr-on-stdin";

/// All a child needs to find its parent: no secret travels on argv or in the environment.
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
    /// An exec'd child's real stderr is its stdin during boot (its fd 2 is the boot pipe
    /// its parent reads; see `backend::capture_in_forked_child`). Child-mode dispatch
    /// moves it back. Forked children hand it over in-process and leave this `false`.
    pub real_stderr_on_stdin: bool,
}

impl ChildBoot {
    /// The argv tail for an exec'd child:
    /// `--plough-child <addr> <method> <parent pid> <uuid> <tree> <name> [stderr-on-stdin]`.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            CHILD_MODE_ARG.to_owned(),
            self.parent_addr.to_string(),
            self.method.key().to_owned(),
            self.parent_pid.to_string(),
            self.uuid.simple().to_string(),
            self.tree.simple().to_string(),
            self.name.clone(),
        ];
        if self.real_stderr_on_stdin {
            args.push(STDERR_ON_STDIN_ARG.to_owned());
        }
        args
    }

    /// Parses the argv tail written by [`ChildBoot::to_args`], if present.
    ///
    /// # Errors
    ///
    /// The child-mode flag is present but what follows is malformed.
    pub fn from_args(args: &[String]) -> Result<Option<ChildBoot>, String> {
        let Some(i) = args.iter().position(|a| a == CHILD_MODE_ARG) else { return Ok(None) };
        let rest = &args[i + 1..];
        let [addr, method, ppid, uuid, tree, name, tail @ ..] = rest else {
            return Err(format!(
                "{CHILD_MODE_ARG} needs <addr> <method> <parent pid> <uuid> <tree> <name>, got {rest:?}"
            ));
        };
        let parent_pid = ppid.parse().map_err(|_| format!("bad parent pid `{ppid}`"))?;
        let parent_addr = addr.parse().map_err(|e| format!("bad parent address: {e}"))?;
        let method = method.parse().map_err(|e| format!("{e}"))?;
        let uuid: Uuid = uuid.parse().map_err(|e| format!("bad uuid `{uuid}`: {e}"))?;
        let tree: Uuid = tree.parse().map_err(|e| format!("bad tree uuid `{tree}`: {e}"))?;
        Ok(Some(ChildBoot {
            name: name.clone(),
            uuid,
            tree,
            parent_addr,
            method,
            parent_pid,
            real_stderr_on_stdin: tail.first().is_some_and(|a| a == STDERR_ON_STDIN_ARG),
        }))
    }
}

/// The child's entry point, for backends that run it in-process (fork): it runs the
/// child actor to completion and returns the process exit code.
pub type ChildMain = Arc<dyn Fn(ChildBoot) -> i32 + Send + Sync>;

/// What a backend is asked to start.
pub struct SpawnRequest {
    /// How to connect back.
    pub boot: ChildBoot,
    /// The in-process entry point (used by forking backends; exec re-runs `main`).
    pub child_main: ChildMain,
    /// The write end of the boot pipe: the child's fd 2 until it has connected back (see
    /// `backend::dup_stderr`). `None`: the child inherits stderr.
    pub boot_stderr: Option<OwnedFd>,
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_args_round_trip() {
        let boot = ChildBoot {
            name: "worker 1".into(),
            uuid: Uuid([0xab; 16]),
            tree: Uuid([0xcd; 16]),
            parent_addr: "tcp://127.0.0.1:4000".parse().unwrap(),
            method: SpawnMethod::Exec,
            parent_pid: 77,
            real_stderr_on_stdin: false,
        };
        let mut args = vec!["prog".to_owned()];
        args.extend(boot.to_args());
        assert_eq!(ChildBoot::from_args(&args).unwrap(), Some(boot.clone()));
        let boot = ChildBoot { real_stderr_on_stdin: true, ..boot };
        let mut args = vec!["prog".to_owned()];
        args.extend(boot.to_args());
        assert_eq!(ChildBoot::from_args(&args).unwrap(), Some(boot));
        assert_eq!(ChildBoot::from_args(&["prog".to_owned()]).unwrap(), None);
        let bad = vec!["prog".to_owned(), CHILD_MODE_ARG.to_owned(), "x".to_owned()];
        assert!(ChildBoot::from_args(&bad).unwrap_err().contains("needs"));
    }
}
