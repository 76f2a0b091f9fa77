//! Two "hosts" on one machine, no root rights needed: a `plough-host` daemon on loopback
//! under mutual TLS, and a root that attaches to it, starts actors there under its own
//! nursery, calls them, and takes everything down when it is done.
//!
//! ```text
//! cargo run -p plough-host --example loopback -- demo
//! ```
//!
//! The same binary plays three parts, as a real deployment's program does:
//! * `demo`: the root. It makes a tree CA with `plough ca`'s code in a private temporary
//!   directory (a real tree makes it once: `plough ca init`, `plough ca issue`), starts
//!   the daemon (below) as a subprocess, attaches to it and runs its actors there;
//! * `daemon DIR`: the host daemon (`plough_host::run`, what the `plough-host` binary
//!   runs), which runs this very program for the root: the only program it may run;
//! * with no arguments, started by the daemon: a remote actor (`Runtime::run` becomes the
//!   child the daemon booted). Run by hand without arguments, it says how to use it.

use plough::ipc_wire::{Secret, TlsFiles};
use plough::{ActorError, Cx, Registry, Runtime, TreeSecret};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The host's name in its certificate and its address.
const HOST: &str = "node-1";

/// What a remote actor serves: its answer names the process it runs in.
async fn add(_cx: Cx, (a, b): (i64, i64)) -> Result<(i64, u32), std::convert::Infallible> {
    Ok((a + b, std::process::id()))
}

fn registry() -> Registry {
    Registry::new().func("add", add)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["demo"] => demo()?,
        ["daemon", dir] => daemon(Path::new(dir))?,
        _ => {
            // A remote actor booted by the daemon becomes its child here and never
            // returns into the body.
            Runtime::new(registry()).run(|_root| async {
                eprintln!("usage: loopback demo");
                Err(ActorError::other("run `loopback demo`"))
            })?;
        }
    }
    Ok(())
}

/// The daemon: serves roots of this tree on `tls://node-1@127.0.0.1:<any port>`, running
/// this program for them, until its stdin (the root's pipe) ends.
fn daemon(dir: &Path) -> Result<(), ActorError> {
    let listen = format!("tls://{HOST}@127.0.0.1:0").parse().expect("a tls address");
    let me = std::env::current_exe().expect("this program's path");
    plough_host::run(plough_host::HostConfig {
        stop_on_stdin_eof: true,
        ..plough_host::HostConfig::from_ca_dir(dir, HOST, listen, me)
    })
}

/// A private directory removed on drop, holding the tree's CA, certificates and secret.
struct TreeDir(PathBuf);

impl TreeDir {
    fn new() -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!("plough-loopback-{}", std::process::id()));
        let tree = TreeDir(dir);
        let localhost = [std::net::IpAddr::from([127, 0, 0, 1])];
        let made = plough_ps::ca::init(&tree.0)
            .and_then(|()| plough_ps::ca::issue(&tree.0, HOST, &localhost, 1))
            .and_then(|_| plough_ps::ca::issue(&tree.0, "root", &localhost, 1));
        made.map_err(std::io::Error::other)?;
        Ok(tree)
    }
}

impl Drop for TreeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The daemon subprocess: its stdin is its lifeline (closed on drop, it stops, taking
/// its actors down), and it is waited for.
struct Daemon(Child);

impl Daemon {
    /// Starts it and reads the address it listens on from its first line.
    fn start(dir: &Path) -> std::io::Result<(Self, String)> {
        let child = Command::new(std::env::current_exe()?)
            .arg("daemon")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut daemon = Daemon(child);
        let stdout = daemon.0.stdout.take().expect("piped");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        // `plough-host listening <addr> build <id> pid <pid>`
        let addr = line.split_whitespace().nth(2).map(str::to_owned);
        let addr = addr
            .ok_or_else(|| std::io::Error::other(format!("the daemon did not start: {line:?}")))?;
        Ok((daemon, addr))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

fn demo() -> Result<(), Box<dyn std::error::Error>> {
    let tree = TreeDir::new()?;
    let (daemon, addr) = Daemon::start(&tree.0)?;
    println!("daemon {HOST} listening on {addr}");
    let secret = Secret::load(&tree.0.join(plough::ipc_wire::auth::SECRET_FILE))?;
    let dir = tree.0.clone();
    let answers = Runtime::new(registry())
        .configure(move |c| {
            c.tls = Some(TlsFiles::in_ca_dir(&dir, "root"));
            c.secret = TreeSecret::Given(secret);
            // This root is the registrar of its own tree, on a port of its own.
            c.registry_addr = "tcp://127.0.0.1:0".parse().expect("an address");
        })
        .run(|root| async move {
            let addr = addr.parse().map_err(|e| ActorError::other(format!("{addr}: {e}")))?;
            let host = root.attach_host(&addr).await?;
            println!("attached to {} (lease {:?})", host.name(), host.lease());
            root.nursery(|n| async move {
                // A serving actor and a run-in-actor one, both on the host, both under
                // this nursery's ladder.
                let worker = n.start_actor_on(&host, "worker").await?;
                let (sum, pid) = worker.run::<_, (i64, u32)>("add", (2i64, 3i64)).await?;
                println!("worker@{pid} on {HOST}: 2 + 3 = {sum}");
                let once = n.run_in_actor_on::<_, (i64, u32)>(&host, "once", "add", (4i64, 5i64));
                let (sum2, pid2) = once.await?.result().await?;
                println!("once@{pid2} on {HOST}: 4 + 5 = {sum2}");
                Ok(vec![(sum, pid), (sum2, pid2)])
            })
            .await
        })?;
    let me = std::process::id();
    assert!(answers.iter().all(|&(_, pid)| pid != me), "the actors ran in processes of their own");
    // The daemon stops when its lifeline closes; then the tree's files go.
    drop(daemon);
    drop(tree);
    println!("done: every remote actor reaped, the daemon stopped, the tree's files removed");
    Ok(())
}
