//! One OpenTelemetry trace across three processes (cargo feature `opentelemetry`):
//! root → child → grandchild, each process exporting its spans to stdout.
//!
//! ```text
//! cargo run --features opentelemetry --example otel
//! ```
//!
//! Every process installs the same pipeline in `main` (an SDK tracer provider, the
//! `tracing-opentelemetry` layer, [`plough::otel::install`]): `zygote` and `exec`
//! children run `main` again, `main_thread_forkserver` children inherit it. The spans
//! printed by the three processes share one trace id, and each `plough.serve` span's
//! parent is the `plough.call` span of the process that called it.

use opentelemetry::trace::TracerProvider as _;
use plough::{ActorError, Cx, Registry, Runtime};
use tracing_subscriber::layer::SubscriberExt;

async fn add(_cx: Cx, (a, b): (i64, i64)) -> Result<i64, std::convert::Infallible> {
    Ok(a + b)
}

/// Starts a grandchild and asks it: a call that makes a call.
async fn relay(cx: Cx, (a, b): (i64, i64)) -> Result<i64, ActorError> {
    cx.nursery(|n| async move { n.start_actor("grandchild").await?.run("add", (a, b)).await }).await
}

fn main() -> plough::Result<()> {
    // Spans are exported as they end (a child actor exits without a shutdown hook).
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_simple_exporter(opentelemetry_stdout::SpanExporter::default())
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("plough-example"));
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
        .expect("the only subscriber of the program");
    plough::otel::install().expect("installed once");

    let registry = Registry::new().func("add", add).func("relay", relay);
    let sum = Runtime::new(registry).run(|root| async move {
        root.nursery(|n| async move {
            n.start_actor("child").await?.run::<_, i64>("relay", (2, 3)).await
        })
        .await
    })?;
    println!("2 + 3 = {sum}");
    let _ = provider.shutdown();
    Ok(())
}
