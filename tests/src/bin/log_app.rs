//! The logging test program (`tests/tests/logging.rs`): a root that starts one child
//! actor `worker`, calls it, emits a warning of its own (target `log_app`), prints
//! `done <root pid> <worker pid>` on stdout and exits.
//!
//! Set in the environment (so that `zygote` and `exec` children, which run `main` from its
//! start, do the same):
//! * `LOG_APP_SUBSCRIBER=own`: before `Runtime::run` the program installs its own global
//!   subscriber (level INFO) writing `app-subscriber pid=<pid> <LEVEL> <target>: <message>`
//!   lines to stderr;
//! * `LOG_APP_FILTER=F`: the program calls `Runtime::log(F)`.

use std::fmt;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The program's own line format, recognisably not plough's.
struct AppFormat;

impl<S, N> FormatEvent<S, N> for AppFormat
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
        let meta = event.metadata();
        write!(
            writer,
            "app-subscriber pid={} {} {}: ",
            std::process::id(),
            meta.level(),
            meta.target()
        )?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

fn main() {
    if std::env::var("LOG_APP_SUBSCRIBER").as_deref() == Ok("own") {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(std::io::stderr)
            .event_format(AppFormat)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the first subscriber");
    }
    let mut runtime = plough::Runtime::new(plough_tests::app::registry())
        .configure(|c| c.registry_addr = plough_tests::private_registry());
    if let Ok(filter) = std::env::var("LOG_APP_FILTER") {
        runtime = runtime.log(filter);
    }
    let result = runtime.run(|root| async move {
        let worker = root
            .nursery(|n| async move {
                let portal = n.start_actor("worker").await?;
                portal.run::<_, u32>("pid", ()).await
            })
            .await?;
        tracing::warn!(target: "log_app", "the program warns");
        println!("done {} {worker}", std::process::id());
        Ok(())
    });
    if let Err(e) = result {
        eprintln!("log_app: {e}");
        std::process::exit(1);
    }
}
