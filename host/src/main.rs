//! `plough-host`: runs a plough host daemon (see the `plough_host` library docs and
//! `docs/multi-host.md`).

fn main() {
    std::process::exit(plough_host::cli::main());
}
