//! `plough-host` as a binary of this package, so that tests find it
//! (`CARGO_BIN_EXE_plough_host`).

fn main() {
    std::process::exit(plough_host::cli::main());
}
