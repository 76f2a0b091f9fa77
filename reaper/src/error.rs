//! The reaper's errors.

use std::path::PathBuf;

/// Why the reaper refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReapError {
    /// A directory whose contents would decide what to kill is not safely ours.
    #[error("refusing to trust {path}: {why}")]
    UntrustedDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// Reading a directory or file failed.
    #[error("failed to read {path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}
