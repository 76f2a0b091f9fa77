//! The settings of a root whose tree spans hosts, as the multi-host tests (and
//! `plough_app remote-root`) make them from a `plough ca` directory.

use plough::RuntimeConfig;
use plough::ipc_wire::{BuildId, Secret, TlsFiles};
use std::path::Path;

/// Makes `c` the settings of a root named `name` of the tree whose `plough ca` directory
/// is `ca`: its `root` certificate pair, the tree's secret, a private registry, and, when
/// given, the build it states (a test binary states the build of the program its hosts
/// run, which a root built from that program states by itself).
///
/// # Panics
/// When the secret cannot be read.
pub fn configure_root(c: &mut RuntimeConfig, name: &str, ca: &Path, build: Option<BuildId>) {
    c.name = name.to_owned();
    c.registry_addr = "tcp://127.0.0.1:0".parse().expect("an address");
    let secret = Secret::load(&ca.join("secret")).expect("the tree's secret");
    c.secret = plough::TreeSecret::Given(secret);
    c.tls = Some(TlsFiles::in_ca_dir(ca, "root"));
    c.build_id = build;
}
