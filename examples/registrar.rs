//! The registrar across two programs: one program hosts named actors, others — separate
//! programs, not its children — find them by name through the registrar and call them.
//!
//! ```sh
//! cargo run --example registrar -- host  --registry tcp://127.0.0.1:4200 &
//! cargo run --example registrar -- visit --registry tcp://127.0.0.1:4200 --name alice
//! cargo run --example registrar -- visit --registry tcp://127.0.0.1:4200 --name bob
//! kill %1   # SIGTERM: the host's tree goes down cleanly (exit status 143)
//! ```
//!
//! `host` is a root that becomes the registrar at `--registry` (default: the per-user
//! socket) and starts one child actor, `guestbook`, which keeps a list of visitors in
//! its own process. It prints `ready <registry address>` and waits for SIGTERM or SIGINT.
//!
//! `visit` is a second root that *joins* that registrar. It lists the registered actors
//! ([`plough::Actor::list_actors`]), looks up a name nobody registered
//! ([`plough::Actor::find_actor`] answers `None`), resolves `guestbook`
//! ([`plough::Actor::query_actor`] for its entry, `find_actor` for a portal), signs the
//! book and prints who signed before. Each `visit` is its own process: the guestbook's
//! state lives in the host's child actor, which outlives every visitor.

use plough::{ActorError, Address, Cx, Registry};
use std::io::Write as _;
use std::sync::Mutex;

/// The name the host's actor registers under.
const BOOK: &str = "guestbook";

/// The visitors so far (the `guestbook` actor is a process of its own: this static is its
/// state, nobody else's).
static SIGNED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Signs the book as `name`; returns who signed before.
async fn sign(_cx: Cx, name: String) -> Result<Vec<String>, ActorError> {
    let mut book =
        SIGNED.lock().map_err(|_| ActorError::other("the guestbook's lock is poisoned"))?;
    let before = book.clone();
    book.push(name);
    Ok(before)
}

fn registry() -> Registry {
    Registry::new().func("sign", sign)
}

/// `host`: be the registrar, start the guestbook, wait for a stop signal.
async fn host(root: plough::Actor) -> Result<(), ActorError> {
    if !root.is_registrar() {
        return Err(ActorError::other(format!(
            "a registrar already answers at {}: is a host running there?",
            root.registry_addr()
        )));
    }
    root.nursery(|n| async move {
        let book = n.start_actor(BOOK).await?;
        // A child registers before it answers its parent: its name resolves from here on.
        println!("hosting {}", book.aid());
        println!("ready {}", n.actor().registry_addr());
        let _ = std::io::stdout().flush();
        n.actor().shutdown_requested().await;
        Ok(())
    })
    .await
}

/// `visit`: join the registrar, look around, sign the guestbook.
async fn visit(root: plough::Actor, name: String) -> Result<(), ActorError> {
    if root.is_registrar() {
        return Err(ActorError::other(format!(
            "no host answers at {}: start `registrar host` first",
            root.registry_addr()
        )));
    }
    let mut names: Vec<String> =
        root.list_actors().await?.into_iter().map(|e| e.aid.name).collect();
    names.sort();
    println!("registered: {}", names.join(", "));
    let nobody = root.find_actor("nobody").await?;
    println!("nobody: {}", if nobody.is_some() { "found" } else { "not registered" });
    let entries = root.query_actor(BOOK).await?;
    let entry = entries.first().ok_or_else(|| ActorError::other("no guestbook registered"))?;
    println!("{BOOK}: pid {} at {}", entry.aid.pid, entry.addr);
    let book =
        root.find_actor(BOOK).await?.ok_or_else(|| ActorError::other("the guestbook left"))?;
    let before: Vec<String> = book.run("sign", &name).await?;
    println!("{name} signed after [{}]", before.join(", "));
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |f: &str| args.iter().position(|a| a == f).and_then(|i| args.get(i + 1)).cloned();
    let registry_addr = flag("--registry").map(|a| a.parse::<Address>());
    let name = flag("--name").unwrap_or_else(|| "visitor".to_owned());
    let mode = args.first().cloned().unwrap_or_default();
    let runtime = plough::Runtime::new(registry()).configure(|c| {
        if let Some(Ok(addr)) = &registry_addr {
            c.registry_addr = addr.clone();
        }
        c.name = if mode == "host" { "host".to_owned() } else { format!("visitor-{name}") };
    });
    // Everything above runs again in an exec'd child actor (whose argv is plough's): it
    // only configures; the arguments are judged inside the root's body.
    let result = runtime.run(|root| async move {
        match (mode.as_str(), registry_addr) {
            (_, Some(Err(e))) => Err(ActorError::other(format!("--registry: {e}"))),
            ("host", _) => host(root).await,
            ("visit", _) => visit(root, name).await,
            (other, _) => Err(ActorError::other(format!(
                "unknown mode `{other}`: registrar host|visit [--registry ADDR] [--name NAME]"
            ))),
        }
    });
    if let Err(e) = result {
        eprintln!("registrar: {e}");
        std::process::exit(e.exit_code());
    }
}
