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
        let label = plough_actor_core::actor_label();
        if label.is_empty() {
            write!(writer, "[pid {}] ", std::process::id())?;
        } else {
            write!(writer, "[{label}] ")?;
        }
        self.0.format_event(ctx, writer, event)
    }
}

/// Installs the stderr subscriber once per process, filtered by `PLOUGH_LOG`, else the
/// program's choice, else `warn`. An override is logged once.
pub(crate) fn init(program: Option<&str>) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let env = std::env::var(crate::LOG_ENV).ok().filter(|v| !v.trim().is_empty());
        let chosen = env.clone().or_else(|| program.map(str::to_owned)).unwrap_or_else(|| "warn".to_owned());
        let filter = tracing_subscriber::EnvFilter::try_new(&chosen).unwrap_or_else(|e| {
            eprintln!("plough: bad log filter `{chosen}` ({e}); using `warn`");
            tracing_subscriber::EnvFilter::new("warn")
        });
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .fmt_fields(DefaultFields::new())
            .event_format(Labeled(Format::default().with_target(false)))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        if let (Some(env), Some(program)) = (&env, program)
            && env != program
        {
            tracing::info!(env = %env, program_chose = %program, "PLOUGH_LOG overrides the log filter");
        }
    });
}
