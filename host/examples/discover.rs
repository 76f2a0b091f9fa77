//! Prints the daemon addresses a launcher's hosts resolve to, one per line, as a root
//! would find them with `plough_host::discover` (see `host/launchers/`).
//!
//! ```text
//! SLURM_JOB_NODELIST='node[01-02]' cargo run -p plough-host --example discover -- slurm 7070
//! cargo run -p plough-host --example discover -- k8s plough plough 3 7070
//! cargo run -p plough-host --example discover -- hostlist 'node[01-04,07],gpu-[1-2]'
//! ```
//!
//! `hostlist` only expands (no DNS); the others resolve every name and fail on the first
//! that does not.

use plough_host::discover;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, what: &str| -> String {
        args.get(i).cloned().unwrap_or_else(|| {
            eprintln!("missing {what} (usage: see this example's docs)");
            std::process::exit(2)
        })
    };
    let port = |i: usize| -> u16 { arg(i, "PORT").parse().expect("PORT is a number") };
    let found = match arg(0, "slurm | k8s | hostlist").as_str() {
        "hostlist" => discover::expand_hostlist(&arg(1, "EXPR")).map(|names| {
            names.iter().for_each(|n| println!("{n}"));
            std::process::exit(0)
        }),
        "slurm" => discover::slurm_nodes().and_then(|h| discover::resolve_all(&h, port(1))),
        "k8s" => {
            let replicas = arg(3, "REPLICAS").parse().expect("REPLICAS is a number");
            discover::stateful_set(&arg(1, "SET"), &arg(2, "SERVICE"), replicas)
                .and_then(|h| discover::resolve_all(&h, port(4)))
        }
        other => {
            eprintln!("unknown launcher `{other}`: slurm, k8s or hostlist");
            std::process::exit(2)
        }
    };
    match found {
        Ok(addrs) => addrs.iter().for_each(|a| println!("{a}")),
        Err(e) => {
            eprintln!("discover: {e}");
            std::process::exit(1)
        }
    }
}
