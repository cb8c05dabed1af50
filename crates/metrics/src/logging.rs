//! Logging and error reporting set-up, once per process.
//!
//! JSON lines (one object per line: `timestamp` RFC 3339, `level`, `target`, `message`, the
//! event's fields, and the fields of the spans around it — `request_id`, `batch_id`, `chunk` —
//! at the top level) or a human format; to stdout always, and to daily-rolling files
//! `api_server.log` / `worker.log` under a log folder when one is set. With `SENTRY_DSN` set,
//! error events go to Sentry tagged with the same span fields.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::SystemTime;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// `LOG_FORMAT`: `json` (default) or `pretty`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(LogFormat::Json),
            "pretty" => Ok(LogFormat::Pretty),
            other => Err(format!("unknown log format {other:?}; expected json or pretty")),
        }
    }
}

/// Which process this is, deciding the log file(s) and the `service` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// `vllm-batch api`: everything to `api_server.log`.
    Api,
    /// `vllm-batch worker`: everything to `worker.log`.
    Worker,
    /// `vllm-batch serve`: the worker's events to `worker.log`, the rest to `api_server.log`.
    Both,
}

/// Logging options from the command line.
#[derive(Debug, Clone)]
pub struct LogOptions {
    pub format: LogFormat,
    pub dir: Option<PathBuf>,
    pub service: Service,
}

/// Keeps the background log writers and the Sentry client alive; drop it last.
pub struct LogGuard {
    _writers: Vec<WorkerGuard>,
    _sentry: Option<sentry::ClientInitGuard>,
}

/// The fields of a span, kept as JSON so every log line and Sentry event can carry them.
struct SpanFields(Map<String, Value>);

/// Records span fields into `SpanFields` extensions.
struct SpanFieldsLayer;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for SpanFieldsLayer {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut map = Map::new();
        attrs.record(&mut JsonVisitor(&mut map));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(map));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(fields) = span.extensions_mut().get_mut::<SpanFields>() {
                values.record(&mut JsonVisitor(&mut fields.0));
            }
        }
    }
}

/// Collects a span's or event's fields as JSON values.
struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), Value::String(value.into()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), Value::String(value.to_string()));
    }
}

/// The fields of every span around the current event, outermost first (inner spans win).
fn scope_fields<S: Subscriber + for<'a> LookupSpan<'a>>(
    scope: Option<tracing_subscriber::registry::Scope<'_, S>>,
) -> Map<String, Value> {
    let mut out = Map::new();
    for span in scope.into_iter().flat_map(|s| s.from_root()) {
        if let Some(fields) = span.extensions().get::<SpanFields>() {
            out.extend(fields.0.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
    out
}

/// The JSON-lines event format.
struct JsonLines {
    service: &'static str,
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        let mut line = scope_fields(ctx.event_scope());
        event.record(&mut JsonVisitor(&mut line));
        let meta = event.metadata();
        line.insert("timestamp".into(), humantime::format_rfc3339_micros(SystemTime::now()).to_string().into());
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        line.insert("service".into(), self.service.into());
        line.entry("message").or_insert_with(|| Value::String(String::new()));
        let text = serde_json::to_string(&line).map_err(|_| std::fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

fn env_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Selects the events of one log file.
type EventPredicate = fn(&tracing::Metadata<'_>) -> bool;

fn is_worker_event(meta: &tracing::Metadata<'_>) -> bool {
    meta.target().starts_with("vllm_batch_worker")
}

/// Installs logging (and Sentry when `SENTRY_DSN` is set) for the whole process.
pub fn init_logging(opts: &LogOptions) -> LogGuard {
    let sentry = crate::sentry::init();
    let service = match opts.service {
        Service::Api => "api",
        Service::Worker => "worker",
        Service::Both => "serve",
    };
    type Boxed = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;
    let mut layers: Vec<Boxed> = vec![Box::new(SpanFieldsLayer)];
    let stdout: Boxed = match opts.format {
        LogFormat::Json => Box::new(
            tracing_subscriber::fmt::layer()
                .event_format(JsonLines { service })
                .with_writer(std::io::stdout)
                .with_filter(env_filter()),
        ),
        LogFormat::Pretty => {
            Box::new(tracing_subscriber::fmt::layer().with_writer(std::io::stdout).with_filter(env_filter()))
        }
    };
    layers.push(stdout);
    let mut writers = Vec::new();
    if let Some(dir) = &opts.dir {
        let files: &[(&str, EventPredicate)] = match opts.service {
            Service::Api => &[("api_server.log", |_| true)],
            Service::Worker => &[("worker.log", |_| true)],
            Service::Both => &[("api_server.log", |m| !is_worker_event(m)), ("worker.log", is_worker_event)],
        };
        for &(name, wanted) in files {
            let (writer, guard) = tracing_appender::non_blocking(tracing_appender::rolling::daily(dir, name));
            writers.push(guard);
            layers.push(Box::new(
                tracing_subscriber::fmt::layer()
                    .event_format(JsonLines { service })
                    .with_writer(writer)
                    .with_filter(env_filter())
                    .with_filter(filter_fn(wanted)),
            ));
        }
    }
    if sentry.is_some() {
        layers.push(Box::new(sentry_tracing::layer().event_mapper(|event, ctx| {
            use sentry_tracing::EventMapping;
            match *event.metadata().level() {
                Level::ERROR => {
                    let mut ev = sentry_tracing::event_from_event(event, &ctx);
                    let mut fields = scope_fields(ctx.event_scope(event));
                    event.record(&mut JsonVisitor(&mut fields));
                    for key in ["batch_id", "request_id", "chunk"] {
                        if let Some(v) = fields.get(key) {
                            let v = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
                            ev.tags.insert(key.into(), v);
                        }
                    }
                    EventMapping::Event(ev)
                }
                Level::WARN | Level::INFO => {
                    EventMapping::Breadcrumb(sentry_tracing::breadcrumb_from_event(event, &ctx))
                }
                _ => EventMapping::Ignore,
            }
        })));
    }
    let _ = tracing_subscriber::registry().with(layers).try_init();
    if let Some(dir) = &opts.dir {
        tracing::info!(log_dir = %dir.display(), "writing log files");
    }
    LogGuard { _writers: writers, _sentry: sentry }
}
