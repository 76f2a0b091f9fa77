//! The `plough` command: `plough ps [--registry ADDR] [--json]` lists the live actors of a
//! tree as its registrar knows them (name, pid, uuid, spawn method, address, parent,
//! uptime).

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
        /// The registrar's address (`tcp://host:port` or `uds:///path`).
        #[arg(long, default_value = "tcp://127.0.0.1:1616")]
        registry: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    let Cmd::Ps { registry, json } = Cli::parse().cmd;
    let addr: plough_ipc_wire::Address = match registry.parse() {
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
