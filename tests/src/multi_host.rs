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

/// Starts `plough-host` (the `daemon` binary, running `program` for the actors it spawns)
/// for the host named `host` in lab host `i`, under the `plough ca` directory `ca`, with
/// `lease`; its pid and the `tls://` address it says it listens on (waited for at most
/// `within`). The lab kills it on drop.
///
/// # Panics
/// When it cannot be started or does not say where it listens within `within`.
pub fn start_daemon(
    lab: &mut crate::netns::Lab,
    i: usize,
    host: &str,
    ca: &Path,
    (daemon, program): (&str, &str),
    lease: std::time::Duration,
    within: std::time::Duration,
) -> (u32, plough::Address) {
    use std::io::BufRead;
    let listen = format!("tls://{host}@{}:0", lab.host(i).ip);
    let lease = lease.as_millis().to_string();
    let ca = ca.to_str().expect("a UTF-8 path");
    let args = ["--ca-dir", ca, "--listen", &listen, "--program", program, "--lease-ms", &lease];
    let (pid, out) = lab.spawn(i, daemon, &args).expect("start plough-host");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let line = rx.recv_timeout(within).expect("plough-host says where it listens");
    let addr = line.split_whitespace().nth(2).expect("an address").parse().expect("an address");
    (pid, addr)
}
