//! Logging: every line names the actor (`name@pid`) that wrote it.

use std::sync::Once;

/// Installs the stderr subscriber once per process, filtered by `PLOUGH_LOG` (default
/// `warn`). Lines carry the process's actor label, set by the runtime.
pub(crate) fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_env(crate::LOG_ENV)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_target(false)
            .try_init();
    });
}
