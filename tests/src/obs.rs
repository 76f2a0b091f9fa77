//! Observability helpers of the suites: a tracing layer that writes every closed plough
//! span as a JSON line to a file per process, and a metrics recorder a test (or a child,
//! through the app's `metrics_*` functions) reads back.
//!
//! The span layer is installed by `plough_app` when [`TRACE_DIR_ENV`] names a directory
//! (a forked child inherits it from its parent; an exec'd or zygote child runs `main`
//! again and installs it there). Each line goes to `<dir>/<pid>.jsonl`, the pid taken at
//! write time, so a child forked from a process with the layer writes its own file.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Names the directory the span layer writes to (not a secret: a test's temp dir).
pub const TRACE_DIR_ENV: &str = "PLOUGH_TEST_TRACE_DIR";

/// One closed span, as the layer writes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpanLine {
    /// The span's name (`plough.actor`, `plough.call`, `plough.serve`).
    pub name: String,
    /// The process that closed it.
    pub pid: u32,
    /// Its fields, rendered as text.
    pub fields: std::collections::BTreeMap<String, String>,
}

impl SpanLine {
    /// Field `key`, or `""`.
    pub fn field(&self, key: &str) -> &str {
        self.fields.get(key).map_or("", String::as_str)
    }
}

#[derive(Default)]
struct Fields(std::collections::BTreeMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

/// Writes each closed span whose name starts with `plough.` to `<dir>/<pid>.jsonl`.
struct JsonSpans {
    dir: PathBuf,
}

impl<S> Layer<S> for JsonSpans
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if !attrs.metadata().name().starts_with("plough.") {
            return;
        }
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(fields) = span.extensions_mut().get_mut::<Fields>()
        {
            values.record(fields);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(fields) = span.extensions_mut().remove::<Fields>() else { return };
        let line =
            SpanLine { name: span.name().to_owned(), pid: std::process::id(), fields: fields.0 };
        let path = self.dir.join(format!("{}.jsonl", line.pid));
        let mut text = serde_json::to_string(&line).expect("a span line serializes");
        text.push('\n');
        // One append per line: lines of concurrent writers never interleave.
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = f.write_all(text.as_bytes());
        }
    }
}

/// Installs the span layer as the global subscriber if [`TRACE_DIR_ENV`] is set; whether
/// it did.
pub fn install_span_layer_from_env() -> bool {
    use tracing_subscriber::layer::SubscriberExt;
    let Some(dir) = std::env::var_os(TRACE_DIR_ENV) else { return false };
    let subscriber = tracing_subscriber::registry().with(JsonSpans { dir: dir.into() });
    tracing::subscriber::set_global_default(subscriber).is_ok()
}

/// Every span line the processes wrote to `dir`.
pub fn read_spans(dir: &std::path::Path) -> Vec<SpanLine> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("the trace dir").flatten() {
        let text = std::fs::read_to_string(entry.path()).expect("a span file");
        for line in text.lines() {
            out.push(serde_json::from_str(line).expect("a span line"));
        }
    }
    out
}

static SNAPSHOTTER: OnceLock<metrics_util::debugging::Snapshotter> = OnceLock::new();

/// This process's debugging recorder, installed globally on first use (a child forked
/// from a process that has one shares its snapshotter, and the counts made before the
/// fork).
///
/// # Panics
///
/// If another global recorder is installed.
pub fn recorder() -> &'static metrics_util::debugging::Snapshotter {
    SNAPSHOTTER.get_or_init(|| {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().expect("no other metrics recorder in the test program");
        snapshotter
    })
}

/// One metric's value: a counter's count, a gauge's value, or a histogram's samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricRow {
    /// The metric's name.
    pub name: String,
    /// Its labels, sorted by key.
    pub labels: Vec<(String, String)>,
    /// A counter's count or a gauge's value; a histogram's number of samples.
    pub value: f64,
}

/// Everything [`recorder`] counted so far. The debugging recorder hands out what came
/// since its last snapshot (counters, gauges and histograms all drain), so the totals
/// are kept here: each snapshot's values add up.
pub fn snapshot() -> Vec<MetricRow> {
    use metrics_util::debugging::DebugValue;
    static TOTALS: std::sync::Mutex<Vec<MetricRow>> = std::sync::Mutex::new(Vec::new());
    let fresh = recorder().snapshot().into_vec();
    let mut totals = TOTALS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for (key, _, _, value) in fresh {
        let key = key.key();
        let mut labels: Vec<(String, String)> =
            key.labels().map(|l| (l.key().to_owned(), l.value().to_owned())).collect();
        labels.sort();
        let value = match value {
            DebugValue::Counter(c) => c as f64,
            DebugValue::Gauge(g) => g.into_inner(),
            DebugValue::Histogram(h) => h.len() as f64,
        };
        let name = key.name().to_owned();
        match totals.iter_mut().find(|r| r.name == name && r.labels == labels) {
            Some(row) => row.value += value,
            None => totals.push(MetricRow { name, labels, value }),
        }
    }
    totals.clone()
}

/// The value of metric `name` with exactly `labels` in `rows` (0 when absent).
pub fn value(rows: &[MetricRow], name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut want: Vec<(String, String)> =
        labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    want.sort();
    rows.iter().filter(|r| r.name == name && r.labels == want).map(|r| r.value).sum()
}
