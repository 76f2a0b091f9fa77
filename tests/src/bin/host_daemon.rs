//! `plough-host` as a binary of this package, so that tests find it
//! (`CARGO_BIN_EXE_host_daemon`).

fn main() {
    std::process::exit(plough_host::cli::main());
}
