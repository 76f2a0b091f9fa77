//! `cargo xtask codegen`: filled in by the ipc-wire work.

use anyhow::{Result, bail};

pub(crate) fn run(_check: bool) -> Result<()> {
    bail!("codegen: no schema yet")
}
