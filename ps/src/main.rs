//! The `plough` command: `plough ps [--registry ADDR] [--json] [--watch [SECS]]` lists the
//! live actors of a tree as its registrar knows them (name, pid, uuid, spawn method,
//! address, parent, uptime); `plough ca init|issue` makes a tree CA and host certificates
//! (see `plough_ps::ca`).
//!
//! Exit status: 0 listed; 1 no registrar answers (or it failed); 2 usage error.

use clap::{Parser, Subcommand};
use std::io::Write as _;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(name = "plough", about = "plough actor trees from the outside")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// List the live actors registered at a registrar, as a tree.
    ///
    /// The table fits the terminal's width (or `COLUMNS`); colour only on a terminal, and
    /// never with `NO_COLOR` set.
    Ps {
        /// The registrar's address (`tcp://host:port` or `uds:///path`). Default: what a
        /// program with default settings uses, `$PLOUGH_REGISTRY` or the per-user socket
        /// `<runtime dir>/registry.sock`.
        #[arg(long)]
        registry: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// List again every SECS seconds (default 2) until interrupted. On a terminal
        /// the screen is redrawn; elsewhere each listing follows the last, after a blank
        /// line (JSON: one document per line). A registrar that stops answering is
        /// reported, and watched for again.
        #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2")]
        watch: Option<f64>,
    },
    /// A tree CA and host certificates, for mutual TLS between hosts.
    #[command(subcommand)]
    Ca(plough_ps::ca::CaCmd),
}

fn main() {
    let (registry, json, watch) = match Cli::parse().cmd {
        Cmd::Ps { registry, json, watch } => (registry, json, watch),
        Cmd::Ca(cmd) => std::process::exit(plough_ps::ca::run(cmd)),
    };
    let addr: Result<plough_ipc_wire::Address, String> = match registry {
        Some(r) => r.parse().map_err(|e| format!("--registry: {e}")),
        None => plough_actor_core::RuntimeConfig::default_registry().map_err(|e| e.to_string()),
    };
    let addr = match addr {
        Ok(a) => a,
        Err(e) => usage(&e),
    };
    let every = match watch.map(Duration::try_from_secs_f64) {
        None => None,
        Some(Ok(d)) if !d.is_zero() => Some(d),
        Some(_) => usage(&format!("--watch: not a positive number of seconds: {watch:?}")),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let layout = plough_ps::Layout::for_stdout();
    let Some(every) = every else {
        match rt.block_on(list(&addr, json, false, layout)) {
            Ok(text) => print!("{text}"),
            Err(e) => {
                eprintln!("plough ps: {e}");
                std::process::exit(1);
            }
        }
        return;
    };
    rt.block_on(async {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut first = true;
        loop {
            tick.tick().await;
            let text = list(&addr, json, true, layout).await.unwrap_or_else(|e| format!("{e}\n"));
            let mut out = std::io::stdout().lock();
            let shown = if layout.colour {
                // Home, clear screen: redraw in place.
                write!(out, "\x1b[H\x1b[2J{text}")
            } else if json || first {
                write!(out, "{text}")
            } else {
                write!(out, "\n{text}")
            };
            if shown.and_then(|()| out.flush()).is_err() {
                return; // stdout closed (`| head`): done.
            }
            first = false;
        }
    });
}

/// One listing, rendered; or what went wrong, as the line to show.
async fn list(
    addr: &plough_ipc_wire::Address,
    json: bool,
    one_line: bool,
    layout: plough_ps::Layout,
) -> Result<String, String> {
    match plough_ps::query(addr).await {
        Ok(entries) => {
            let now = plough_ps::now_ms();
            Ok(if json && !one_line {
                format!("{}\n", plough_ps::render_json(&entries, now))
            } else if json {
                // One line per document, so that `--watch --json` is a JSON-lines stream.
                let value: serde_json::Value =
                    serde_json::from_str(&plough_ps::render_json(&entries, now))
                        .expect("render_json writes JSON");
                format!("{value}\n")
            } else {
                plough_ps::render_table(&entries, now, layout)
            })
        }
        Err(plough_actor_core::ActorError::TransportClosed { detail, .. }) => {
            Err(format!("no plough registrar answers at {addr} ({detail})"))
        }
        Err(e) => Err(format!("the registrar at {addr} failed: {e}")),
    }
}

fn usage(e: &str) -> ! {
    eprintln!("plough ps: {e}");
    std::process::exit(2);
}
