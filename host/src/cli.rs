//! The `plough-host` command line. Nothing secret is on it: it names files.

use clap::Parser;
use std::path::PathBuf;

/// The per-host daemon of a plough tree that spans hosts.
#[derive(Debug, Parser)]
#[command(name = "plough-host", version)]
struct Args {
    /// The `plough ca` directory with `ca.pem`, `<host>.pem`, `<host>.key` and `secret`.
    #[arg(long)]
    ca_dir: PathBuf,
    /// Where to listen: `tls://<host>@<ip>:<port>` (port 0: any; the bound address is
    /// printed). `<host>` names the certificate files.
    #[arg(long)]
    listen: plough::Address,
    /// The one program this host runs for roots (it must be the roots' build).
    #[arg(long)]
    program: PathBuf,
    /// The liveness lease in milliseconds (default: `Budgets::lease`).
    #[arg(long)]
    lease_ms: Option<u64>,
    /// Stop when stdin reaches its end (a launcher's session ended: `ssh`).
    #[arg(long)]
    stop_on_stdin_eof: bool,
}

/// Parses this process's arguments and runs the daemon; the exit code.
pub fn main() -> i32 {
    let args = Args::parse();
    let host = match &args.listen {
        plough::Address::Tls { name: Some(n), .. } => n.to_string(),
        other => {
            eprintln!("plough-host: --listen {other}: want tls://<host>@<ip>:<port>");
            return 2;
        }
    };
    let mut config = crate::HostConfig::from_ca_dir(&args.ca_dir, &host, args.listen, args.program);
    config.stop_on_stdin_eof = args.stop_on_stdin_eof;
    if let Some(ms) = args.lease_ms {
        config.lease = std::time::Duration::from_millis(ms);
    }
    match crate::run(config) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("plough-host: {e}");
            e.exit_code()
        }
    }
}
