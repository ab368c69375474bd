//! Logs and traces.
//!
//! Logs go to stderr (stdout is kept for what a command prints, e.g. `bootstrap`'s JSON): JSON
//! lines when not on a terminal (what a log pipeline wants), readable text on one. `RUST_LOG`
//! filters (default `info,sqlx=warn`); `LOG_FORMAT=json|text` overrides the choice.
//!
//! Traces: every span is also an OpenTelemetry span, so a W3C `traceparent` can be taken from the
//! current span and carried (HTTP request → event metadata → outbox row → NATS header →
//! projection span): one trace runs from the command to the projection write. Spans are exported
//! over OTLP/HTTP when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and only then.

use std::collections::HashMap;
use std::io::IsTerminal;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer, Registry};

/// Keeps the tracer provider alive; flushes pending spans when dropped (at the end of `main`).
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"))
}

/// The tracer provider: exporting over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
fn provider(service: &'static str) -> SdkTracerProvider {
    let mut builder = SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name(service).build());
    if std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").is_ok_and(|v| !v.is_empty()) {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
        {
            Ok(exporter) => builder = builder.with_batch_exporter(exporter),
            Err(e) => eprintln!("OTLP exporter not started: {e}"),
        }
    }
    builder.build()
}

/// Installs logging and tracing for a binary.
pub fn init(service: &'static str) -> Telemetry {
    let json = match std::env::var("LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        _ => !std::io::stderr().is_terminal(),
    };
    let logs = if json {
        fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        fmt::layer().compact().with_writer(std::io::stderr).boxed()
    };
    let provider = provider(service);
    init_with(logs, &provider, service);
    Telemetry { provider }
}

/// Installs `logs` plus the OpenTelemetry layer of `provider` as the process's subscriber (a
/// second call is harmless: the first stays). Tests use it with an in-memory exporter.
pub fn init_with(
    logs: Box<dyn Layer<Registry> + Send + Sync>,
    provider: &SdkTracerProvider,
    service: &'static str,
) {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let traces = tracing_opentelemetry::layer().with_tracer(provider.tracer(service));
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .with(filter())
        .try_init();
}

/// For tests: text logs through the test harness's capture (shown only for a failing test).
pub fn test_logs() -> Box<dyn Layer<Registry> + Send + Sync> {
    fmt::layer().with_test_writer().compact().boxed()
}

/// The W3C `traceparent` of a span, if it belongs to a trace.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the remote span a `traceparent` names (ignored when malformed).
pub fn continue_trace(span: &tracing::Span, traceparent: &str) {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}

/// The trace id of a span, as 32 hex digits (for logs and tests).
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// Runs a binary's async `main` with logging and tracing installed. The telemetry is set up
/// before the Tokio runtime starts and flushed after it stops: the OTLP exporter's blocking
/// HTTP client must live outside of any runtime.
pub fn run<T>(service: &'static str, main: impl std::future::Future<Output = T>) -> T {
    let telemetry = init(service);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    let result = runtime.block_on(main);
    drop(runtime);
    drop(telemetry);
    result
}
