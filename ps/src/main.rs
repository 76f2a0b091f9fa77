//! The `plough` command: `plough ps [--registry ADDR] [--json]` lists the live actors of a
//! tree as its registrar knows them (name, pid, uuid, spawn method, address, parent,
//! uptime); `plough ca init|issue` makes a tree CA and host certificates (see
//! `plough_ps::ca`).

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "plough", about = "plough actor trees from the outside")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// List the live actors registered at a registrar, as a tree.
    Ps {
        /// The registrar's address (`tcp://host:port` or `uds:///path`). Default: what a
        /// program with default settings uses, `$PLOUGH_REGISTRY` or the per-user socket
        /// `<runtime dir>/registry.sock`.
        #[arg(long)]
        registry: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// A tree CA and host certificates, for mutual TLS between hosts.
    #[command(subcommand)]
    Ca(plough_ps::ca::CaCmd),
}

fn main() {
    let (registry, json) = match Cli::parse().cmd {
        Cmd::Ps { registry, json } => (registry, json),
        Cmd::Ca(cmd) => std::process::exit(plough_ps::ca::run(cmd)),
    };
    let addr: Result<plough_ipc_wire::Address, String> = match registry {
        Some(r) => r.parse().map_err(|e| format!("--registry: {e}")),
        None => plough_actor_core::RuntimeConfig::default_registry().map_err(|e| e.to_string()),
    };
    let addr = match addr {
        Ok(a) => a,
        Err(e) => {
            eprintln!("plough ps: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match rt.block_on(plough_ps::query(&addr)) {
        Ok(entries) => {
            let now = plough_ps::now_ms();
            if json {
                println!("{}", plough_ps::render_json(&entries, now));
            } else {
                print!("{}", plough_ps::render_tree(&entries, now));
            }
        }
        Err(plough_actor_core::ActorError::TransportClosed { detail, .. }) => {
            eprintln!("plough ps: no plough registrar answers at {addr} ({detail})");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("plough ps: the registrar at {addr} failed: {e}");
            std::process::exit(1);
        }
    }
}
