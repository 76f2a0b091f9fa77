//! [`RuntimeConfig`]: the settings of a program's runtime, the same in every process of it.
//!
//! The registry address is per user by default (a socket in the 0700 runtime directory),
//! so unrelated programs of two users never share a registrar; `PLOUGH_REGISTRY` chooses
//! another one. The variable is read once, where the default is built (a forked child
//! gets its parent's settings and never reads the environment), and a malformed value is
//! kept as an error the root reports when it starts, not silently replaced.

use super::budgets::Budgets;
use super::error::SetupError;
use super::spawn_method::SpawnMethod;
use plough_ipc_wire::{Address, BuildId, Secret, TlsFiles};

/// Environment variable that chooses the registry address (`uds:///path` or
/// `tcp://ip:port`) instead of the per-user default.
pub const REGISTRY_ENV: &str = "PLOUGH_REGISTRY";

/// Settings of a runtime (the same in every process of a program).
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The root actor's name.
    pub name: String,
    /// Where the tree's registrar listens. Default: `$PLOUGH_REGISTRY` when set, else
    /// `uds://<runtime dir>/registry.sock` ([`Address::default_registry_uds`]), private to
    /// the user. The rule is simple: the environment overrides the default, and whatever
    /// the program assigns here overrides both. TCP is opt-in (any user of the host can
    /// reach a TCP registry). Port 0 (or a fresh UDS path) makes the root the registrar on
    /// a private address: tests use it.
    pub registry_addr: Address,
    /// Every timeout and grace period (see [`Budgets`]).
    pub budgets: Budgets,
    /// SIGUSR1 dumps the task tree and relays the signal to the children (default on;
    /// `PLOUGH_TASK_DUMP=0` also turns it off). Off: SIGUSR1 keeps its default action.
    pub task_dump: bool,
    /// The spawn method (a `PLOUGH_SPAWN_METHOD` set in the environment wins). Default:
    /// `zygote`.
    pub spawn_method: SpawnMethod,
    /// The secret every connection of the tree proves it holds (default: the user's).
    pub secret: TreeSecret,
    /// This host's TLS identity (the tree CA, its certificate and key, by path), for a
    /// tree that spans hosts (default: none). With one, the actor binds and dials
    /// `tls://` addresses under mutual TLS and refuses plaintext TCP from other hosts;
    /// its children learn the paths from their boot. See `docs/multi-host.md`.
    pub tls: Option<TlsFiles>,
    /// The build this actor states in its handshakes (default: its executable's, see
    /// `plough_ipc_wire::BuildId::current`). Over TLS a peer of another build is refused,
    /// so a host daemon states the build of the program it runs for its roots.
    pub build_id: Option<BuildId>,
    /// Further addresses the root listens on besides its own (tractor's several
    /// `registry_addrs`/bind addresses): e.g. a TCP port next to its Unix socket, so
    /// peers of either transport reach it. Written as URLs or multiaddrs
    /// (`/ip4/127.0.0.1/tcp/1616`). Every one authenticates like the first. Default:
    /// none. (A child's are chosen by its spawn: `SpawnOptions::bind`.)
    pub bind_addrs: Vec<Address>,
    /// A malformed `PLOUGH_REGISTRY` seen when the default was built (reported by the root).
    registry_env_error: Option<SetupError>,
}

impl RuntimeConfig {
    /// The registry address of a program with default settings, read from the
    /// environment now: `$PLOUGH_REGISTRY` when set and not empty, else the per-user
    /// socket ([`Address::default_registry_uds`]). What `plough ps` asks by default.
    ///
    /// # Errors
    ///
    /// [`SetupError::BadRegistryEnv`] when `PLOUGH_REGISTRY` is not an address.
    pub fn default_registry() -> Result<Address, SetupError> {
        let env = std::env::var_os(REGISTRY_ENV);
        Ok(registry_from_env(env.as_deref())?.unwrap_or_else(Address::default_registry_uds))
    }

    /// The error a malformed `PLOUGH_REGISTRY` gave when these settings were built, unless
    /// the program has chosen its registry address since (then the variable is moot).
    pub(crate) fn registry_env_error(&self) -> Option<SetupError> {
        let moot = self.registry_addr != Address::default_registry_uds();
        self.registry_env_error.clone().filter(|_| !moot)
    }

    /// With this host's TLS identity (see [`RuntimeConfig::tls`]).
    pub fn with_tls(mut self, files: TlsFiles) -> Self {
        self.tls = Some(files);
        self
    }
}

/// Which secret a tree's connections prove they hold (see `plough_ipc_wire::auth`): only a
/// peer that proves the same one reaches an actor's functions, its registrar or its
/// cancel. It never travels on argv, in the environment or on a connection; children get
/// it over the private channel of their spawn.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum TreeSecret {
    /// The user's: `secret` (0600) in the runtime directory, created on first use. Every
    /// tree of the user shares it, so they can share a registrar and find each other's
    /// actors; no other user's process can.
    #[default]
    PerUser,
    /// A fresh one for this tree only, in memory: no other program, of this user or any
    /// other, can connect to it (nor can `plough ps` list it). Give the tree a registry
    /// address of its own (another tree's registrar refuses it).
    PerTree,
    /// This one (e.g. read from a file the program manages).
    Given(Secret),
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        let (registry_addr, registry_env_error) = match RuntimeConfig::default_registry() {
            Ok(addr) => (addr, None),
            Err(e) => (Address::default_registry_uds(), Some(e)),
        };
        RuntimeConfig {
            name: "root".to_owned(),
            registry_addr,
            budgets: Budgets::default(),
            task_dump: true,
            spawn_method: SpawnMethod::Zygote,
            secret: TreeSecret::PerUser,
            tls: None,
            build_id: None,
            bind_addrs: Vec::new(),
            registry_env_error,
        }
    }
}

/// The registry address a value of `PLOUGH_REGISTRY` chooses: `None` when unset or empty.
///
/// # Errors
///
/// [`SetupError::BadRegistryEnv`] for a value that is not UTF-8 or not an address.
pub(crate) fn registry_from_env(
    value: Option<&std::ffi::OsStr>,
) -> Result<Option<Address>, SetupError> {
    let Some(value) = value else { return Ok(None) };
    let bad = |detail: String| SetupError::BadRegistryEnv {
        var: REGISTRY_ENV,
        value: value.to_string_lossy().into_owned(),
        detail,
    };
    let text = value.to_str().ok_or_else(|| bad("not UTF-8".to_owned()))?.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<Address>().map(Some).map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn plough_registry_chooses_a_uds_or_tcp_address_and_unset_or_empty_keeps_the_default() {
        let env = |s: &str| registry_from_env(Some(OsStr::new(s)));
        assert_eq!(registry_from_env(None), Ok(None));
        assert_eq!(env(""), Ok(None));
        assert_eq!(env("  "), Ok(None));
        assert_eq!(
            env("uds:///tmp/x/reg.sock"),
            Ok(Some("uds:///tmp/x/reg.sock".parse().unwrap()))
        );
        assert_eq!(
            env(" tcp://127.0.0.1:4100 "),
            Ok(Some("tcp://127.0.0.1:4100".parse().unwrap()))
        );
        assert_eq!(env("tcp://[::1]:9"), Ok(Some("tcp://[::1]:9".parse().unwrap())));
    }

    #[test]
    fn a_malformed_plough_registry_is_a_setup_error_naming_the_variable_and_the_value() {
        for (value, why) in [
            ("127.0.0.1:1616", "unknown address scheme"),
            ("tcp://localhost:1616", "bad tcp address"),
            ("tcp://127.0.0.1", "bad tcp address"),
            ("uds://relative/reg.sock", "not absolute"),
            ("http://127.0.0.1:80", "unknown address scheme"),
        ] {
            let e = registry_from_env(Some(OsStr::new(value))).unwrap_err();
            let text = e.to_string();
            assert!(
                matches!(&e, SetupError::BadRegistryEnv { var: REGISTRY_ENV, value: v, .. } if v == value),
                "{e:?}"
            );
            assert!(
                text.contains("PLOUGH_REGISTRY") && text.contains(value) && text.contains(why),
                "{text}"
            );
        }
        let long = format!("uds:///{}", "x".repeat(200));
        assert!(
            registry_from_env(Some(OsStr::new(&long)))
                .unwrap_err()
                .to_string()
                .contains("sun_path")
        );
        let not_utf8 = registry_from_env(Some(OsStr::from_bytes(b"uds:///tmp/\xff"))).unwrap_err();
        assert!(not_utf8.to_string().contains("not UTF-8"), "{not_utf8}");
    }

    #[test]
    fn the_default_registry_is_the_per_user_socket_unless_the_variable_chose_one() {
        // The test process's own environment decides which default applies here.
        let config = RuntimeConfig::default();
        match std::env::var_os(REGISTRY_ENV) {
            None => {
                assert_eq!(config.registry_addr, Address::default_registry_uds());
                assert!(config.registry_env_error().is_none());
            }
            Some(v) => match registry_from_env(Some(&v)) {
                Ok(Some(a)) => assert_eq!(config.registry_addr, a),
                Ok(None) => assert_eq!(config.registry_addr, Address::default_registry_uds()),
                Err(e) => assert_eq!(config.registry_env_error(), Some(e)),
            },
        }
        let uds = config.registry_addr.to_string();
        assert!(!uds.contains(":1616"), "{uds}");
        // An error is moot once the program chose its own address.
        let mut chosen = RuntimeConfig {
            registry_env_error: Some(SetupError::NoSpawnSpec("x".into())),
            ..config
        };
        chosen.registry_addr = Address::tcp_loopback_any();
        assert!(chosen.registry_env_error().is_none());
    }
}
