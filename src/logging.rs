//! Logging: every line names the actor (`name@pid`) and spawn method that wrote it.

use std::fmt;
use std::sync::Once;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{DefaultFields, Format, Full, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Prefixes the default format with the process's actor label.
struct Labeled(Format<Full>);

impl<S, N> FormatEvent<S, N> for Labeled
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let label = plough_actor_core::runtime_vars::actor_label();
        if label.is_empty() {
            write!(writer, "[pid {}] ", std::process::id())?;
        } else {
            write!(writer, "[{label}] ")?;
        }
        self.0.format_event(ctx, writer, event)
    }
}

/// Installs the stderr subscriber once per process, filtered by `PLOUGH_LOG` (default
/// `warn`).
pub(crate) fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_env(crate::LOG_ENV)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .fmt_fields(DefaultFields::new())
            .event_format(Labeled(Format::default().with_target(false)))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}
