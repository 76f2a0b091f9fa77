//! The spawn-method keys: which backend starts a child actor.
//!
//! actor-core knows the keys and the [`SpawnMethod`] type; the backends themselves live in
//! `plough-spawn-backends`. An unknown key is an error listing the valid ones, and the
//! reserved `subint_forkserver` parses (so configuration that names it is not a typo) but
//! refuses to spawn, naming the working choice: it never silently falls back.

use super::error::SpawnError;
use std::fmt;
use std::str::FromStr;

/// How child actors are started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpawnMethod {
    /// Fork from the program's zygote: a small single-threaded fork-server process started
    /// from a fresh image of the program, which becomes the zygote before `main` (the
    /// default; see `plough-fork-prims`' zygote). The child runs the program's `main` from
    /// its start, in a pristine process, like `exec` without its cost.
    Zygote,
    /// Re-execute the program (`/proc/self/exe`); its boot arrives on an inherited socket.
    Exec,
    /// Fork from the dedicated forkserver thread; the child builds a fresh runtime.
    MainThreadForkserver,
    /// Reserved: a forkserver whose child runtime lives in an isolated in-process domain.
    SubintForkserver,
}

/// Environment variable that overrides the program's spawn method.
pub const SPAWN_METHOD_ENV: &str = "PLOUGH_SPAWN_METHOD";

impl SpawnMethod {
    /// Every key, in the order error messages list them.
    pub const ALL: [SpawnMethod; 4] = [
        SpawnMethod::Zygote,
        SpawnMethod::Exec,
        SpawnMethod::MainThreadForkserver,
        SpawnMethod::SubintForkserver,
    ];

    /// The configuration key.
    pub const fn key(self) -> &'static str {
        match self {
            SpawnMethod::Zygote => "zygote",
            SpawnMethod::Exec => "exec",
            SpawnMethod::MainThreadForkserver => "main_thread_forkserver",
            SpawnMethod::SubintForkserver => "subint_forkserver",
        }
    }

    /// `Ok` for a method that can spawn; the reserved one is a
    /// [`SpawnError::NotImplemented`] that names the working choice.
    ///
    /// # Errors
    ///
    /// As above.
    pub fn ensure_implemented(self) -> Result<(), SpawnError> {
        match self {
            SpawnMethod::SubintForkserver => Err(SpawnError::NotImplemented {
                method: self.key().to_owned(),
                why: "it is reserved for a forkserver whose child runtime lives in an isolated \
                      in-process domain, which Rust has no equivalent of yet"
                    .to_owned(),
                instead: SpawnMethod::Zygote.key().to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// The method named by `PLOUGH_SPAWN_METHOD`, if set.
    ///
    /// # Errors
    ///
    /// The variable is set to an unknown key.
    pub fn from_env() -> Result<Option<SpawnMethod>, UnknownSpawnMethod> {
        match std::env::var(SPAWN_METHOD_ENV) {
            Ok(v) if !v.trim().is_empty() => v.trim().parse().map(Some),
            _ => Ok(None),
        }
    }
}

impl fmt::Display for SpawnMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// A spawn-method key that is not one of [`SpawnMethod::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown spawn method `{0}`; valid methods: zygote, exec, main_thread_forkserver, subint_forkserver (reserved)"
)]
pub struct UnknownSpawnMethod(pub String);

impl FromStr for SpawnMethod {
    type Err = UnknownSpawnMethod;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SpawnMethod::ALL
            .into_iter()
            .find(|m| m.key() == s)
            .ok_or_else(|| UnknownSpawnMethod(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        for m in SpawnMethod::ALL {
            assert_eq!(m.key().parse::<SpawnMethod>().unwrap(), m);
            assert_eq!(m.to_string(), m.key());
        }
    }

    #[test]
    fn unknown_keys_list_the_valid_ones() {
        let err = "trio".parse::<SpawnMethod>().unwrap_err();
        let text = err.to_string();
        for m in SpawnMethod::ALL {
            assert!(text.contains(m.key()), "{text}");
        }
        assert!(text.starts_with("unknown spawn method `trio`"));
    }

    #[test]
    fn the_reserved_key_parses_but_refuses_naming_the_working_one() {
        let m: SpawnMethod = "subint_forkserver".parse().unwrap();
        let err = m.ensure_implemented().unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`subint_forkserver` is not implemented"), "{text}");
        assert!(text.contains("use `zygote`"), "{text}");
        assert!(text.contains("reserved"), "{text}");
        SpawnMethod::Exec.ensure_implemented().unwrap();
        SpawnMethod::Zygote.ensure_implemented().unwrap();
        SpawnMethod::MainThreadForkserver.ensure_implemented().unwrap();
    }
}
