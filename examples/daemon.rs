//! A long-lived service and its clients: two independent programs that meet through the
//! registrar, talk over two-way streams, and a clean stop on SIGTERM (or SIGINT).
//!
//! ```sh
//! cargo run --example daemon -- serve --registry tcp://127.0.0.1:4100 --dir /tmp
//! cargo run --example daemon -- client --registry tcp://127.0.0.1:4100 --name alice --count 5
//! ```
//!
//! `serve` runs a root that is the registrar on `--registry` and starts one child actor,
//! `service`. The service writes `service-<pid>.pid` into `--dir` (its "state"), and then
//! serves `session` contexts: a client sends numbers on the stream and gets back, for each,
//! its sequence number in the session and the running sum. The root prints
//! `ready <service pid> <registry address>` once the service is up and registered (the
//! address is the one actually bound: with `tcp://127.0.0.1:0` the kernel picks the port),
//! then waits until it is asked to stop. SIGTERM or SIGINT cancels the tree: the service's
//! sessions end, it removes its file and prints `cleanup done`, every process exits and
//! is reaped, and the root exits with the conventional status (143 for SIGTERM, 130 for
//! SIGINT; a second signal stops waiting for the graceful path).
//!
//! `client` is a second root, in a process of its own (not a child of the daemon): it joins
//! the registrar at `--registry`, finds `service` by name, opens a session, streams
//! `--count` numbers and checks every answer, then prints `client ok <count>`.
//!
//! Both modes parse their own argv, but only inside the root's body: `Runtime::run` comes
//! first, so a child process (exec'd with plough's hidden child-mode arguments) never
//! meets this program's parser.

use plough::{ActorError, Address, Context, Registry};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The name the service registers under and clients look up.
const SERVICE: &str = "service";
/// How long a client waits for the service to show up in the registrar.
const FIND_TIMEOUT: Duration = Duration::from_secs(10);

const USAGE: &str = "usage:
  daemon serve  [--registry ADDR] [--dir DIR]
  daemon client [--registry ADDR] --name NAME [--count K]
ADDR is tcp://IP:PORT or uds:///PATH (default: $PLOUGH_REGISTRY, else the per-user socket
<runtime dir>/registry.sock); DIR defaults to the temp dir";

/// What the service answers for each number a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Reply {
    /// The message's sequence number in its session, from 1.
    seq: u64,
    /// The sum of every number the session has received so far.
    sum: u64,
}

// ---- The service (a child actor of the daemon's root) ----

/// Sessions this service process has opened (numbers them in the greetings).
static SESSIONS: AtomicU64 = AtomicU64::new(0);

/// The service's lifetime, as a context its root holds open: writes the pid file in
/// `dir`, answers `started(pid)`, and on cancel removes the file again.
async fn lifetime(ctx: Context, dir: PathBuf) -> Result<(), ActorError> {
    let file = PidFile::create(&dir).map_err(|e| {
        ActorError::other(format!("cannot write the pid file in {}: {e}", dir.display()))
    })?;
    ctx.started(&std::process::id()).await?;
    ctx.cancelled().await;
    drop(file); // the visible cleanup (also runs if this future is dropped instead)
    Ok(())
}

/// One client's session: greets `client`, then answers every number on the stream with
/// its sequence number and the running sum, until the client closes its side. Returns
/// how many numbers it answered.
async fn session(ctx: Context, client: String) -> Result<u64, ActorError> {
    let number = SESSIONS.fetch_add(1, Ordering::Relaxed) + 1;
    let me = ctx.cx().map(|cx| cx.actor().to_string()).unwrap_or_default();
    ctx.started(&format!("hello {client}: session {number} on {me}")).await?;
    let stream = ctx.open_stream().await?;
    let mut reply = Reply { seq: 0, sum: 0 };
    // `recv` fails with `ContextCancelled` when the daemon is stopped mid-session.
    while let Some(x) = stream.recv::<u64>().await? {
        reply.seq += 1;
        reply.sum += x;
        stream.send(&reply).await?;
    }
    Ok(reply.seq)
}

/// The service's state on disk: `<dir>/service-<pid>.pid`, removed on drop.
#[derive(Debug)]
struct PidFile(PathBuf);

impl PidFile {
    fn create(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join(format!("service-{}.pid", std::process::id()));
        std::fs::write(&path, format!("{}\n", std::process::id()))?;
        Ok(PidFile(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.0) {
            Ok(()) => println!("cleanup done: removed {}", self.0.display()),
            Err(e) => eprintln!("cleanup failed: {}: {e}", self.0.display()),
        }
        let _ = std::io::stdout().flush();
    }
}

fn registry() -> Registry {
    Registry::new().context("lifetime", lifetime).context("session", session)
}

// ---- The two roots ----

/// `serve`: become the registrar, start the service, report `ready`, wait for the stop.
async fn serve(root: plough::Actor, dir: PathBuf) -> Result<(), ActorError> {
    if !root.is_registrar() {
        return Err(ActorError::other(format!(
            "another registrar already answers at {} (is a daemon running there?)",
            root.registry_addr()
        )));
    }
    root.nursery(|n| async move {
        let service = n.start_actor(SERVICE).await?;
        // Held for the daemon's life: the service keeps its pid file while it is open.
        let (_lifetime, pid): (Context, u32) = service.open_context("lifetime", &dir).await?;
        // A child registers before it answers its parent: the name resolves by now.
        if n.actor().query_actor(SERVICE).await?.is_empty() {
            return Err(ActorError::other("the service did not register"));
        }
        println!("ready {pid} {}", n.actor().registry_addr());
        let _ = std::io::stdout().flush();
        stop_requested(n.actor()).await;
        // Leaving the nursery cancels the service (its sessions, then its lifetime) and
        // reaps it.
        Ok(())
    })
    .await
}

/// Resolves when the daemon is asked to stop: SIGTERM or SIGINT to the root.
async fn stop_requested(root: &plough::Actor) {
    root.shutdown_requested().await
}

/// `client`: join the registrar, find the service, stream `count` numbers, check each
/// answer and the session's result.
async fn client(root: plough::Actor, name: String, count: u64) -> Result<(), ActorError> {
    if root.is_registrar() {
        return Err(ActorError::other(format!(
            "no daemon answers at {}: start `daemon serve` first",
            root.registry_addr()
        )));
    }
    let service = tokio::time::timeout(FIND_TIMEOUT, root.wait_for_actor(SERVICE)).await.map_err(
        |_| ActorError::other(format!("no `{SERVICE}` registered within {FIND_TIMEOUT:?}")),
    )??;
    let (ctx, greeting): (Context, String) = service.open_context("session", &name).await?;
    println!("{greeting}");
    let stream = ctx.open_stream().await?;
    let mut expected = Reply { seq: 0, sum: 0 };
    for x in 1..=count {
        stream.send(&x).await?;
        expected.seq += 1;
        expected.sum += x;
        match stream.recv::<Reply>().await? {
            Some(reply) if reply == expected => {}
            Some(reply) => {
                return Err(ActorError::other(format!(
                    "sent {x}: expected {expected:?}, the service answered {reply:?}"
                )));
            }
            None => return Err(ActorError::other(format!("the session ended after {x}"))),
        }
    }
    stream.close().await?;
    match ctx.result::<u64>().await?.returned() {
        Some(n) if n == count => {}
        other => {
            return Err(ActorError::other(format!(
                "the session answered {other:?} numbers, {count} sent"
            )));
        }
    }
    println!("client ok {count}");
    Ok(())
}

// ---- argv ----

#[derive(Debug)]
enum Mode {
    Serve { dir: PathBuf },
    Client { name: String, count: u64 },
}

#[derive(Debug)]
struct Args {
    registry: Option<Address>,
    mode: Mode,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let (mode, rest) = args.split_first().ok_or("no mode given")?;
    let (mut registry, mut dir, mut name, mut count) = (None, None, None, 10u64);
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--registry" => {
                registry = Some(value()?.parse().map_err(|e| format!("--registry: {e}"))?)
            }
            "--dir" => dir = Some(PathBuf::from(value()?)),
            "--name" => name = Some(value()?.clone()),
            "--count" => count = value()?.parse().map_err(|e| format!("--count: {e}"))?,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let mode = match mode.as_str() {
        "serve" => Mode::Serve { dir: dir.unwrap_or_else(std::env::temp_dir) },
        "client" => Mode::Client { name: name.ok_or("client needs --name")?, count },
        other => return Err(format!("unknown mode `{other}`")),
    };
    Ok(Args { registry, mode })
}

fn main() {
    // Parsed here only to configure the runtime; a parse error is reported by the root
    // below, never before `run` (a child's argv is plough's, not ours).
    let args = parse_args(&std::env::args().skip(1).collect::<Vec<_>>());
    let runtime = plough::Runtime::new(registry()).configure(|c| {
        if let Ok(Args { registry: Some(addr), .. }) = &args {
            c.registry_addr = addr.clone();
        }
        if let Ok(Args { mode: Mode::Client { name, .. }, .. }) = &args {
            c.name = format!("client-{name}");
        }
    });
    let bad_args = args.is_err();
    let result = runtime.run(|root| async move {
        match args {
            Ok(Args { mode: Mode::Serve { dir }, .. }) => serve(root, dir).await,
            Ok(Args { mode: Mode::Client { name, count }, .. }) => client(root, name, count).await,
            Err(e) => Err(ActorError::other(format!("{e}\n{USAGE}"))),
        }
    });
    if let Err(e) = result {
        // 128 + the signal's number when a signal stopped the root (what service managers
        // and shells expect), 1 for any other failure.
        let code = if bad_args { 2 } else { e.exit_code() };
        match code {
            130 | 143 => println!("stopped: {e}"),
            _ => eprintln!("daemon: {e}"),
        }
        let _ = std::io::stdout().flush();
        std::process::exit(code);
    }
}
