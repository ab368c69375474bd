//! Tracing for tests: logs through the test capture, and every finished span kept in memory so a
//! test can follow a trace from the command to the projection.

use std::sync::OnceLock;

use opentelemetry::trace::TraceId;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};

struct Installed {
    exporter: InMemorySpanExporter,
    _provider: SdkTracerProvider,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

/// Installs the process's subscriber once (tests of one binary may share a process).
pub fn init() {
    INSTALLED.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        platform::telemetry::init_with(platform::telemetry::test_logs(), &provider, "e2e");
        Installed {
            exporter,
            _provider: provider,
        }
    });
}

/// The finished spans of one trace.
pub fn spans_of(trace_id: TraceId) -> Vec<SpanData> {
    INSTALLED
        .get()
        .map(|i| i.exporter.get_finished_spans().unwrap_or_default())
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s.span_context.trace_id() == trace_id)
        .collect()
}

/// Every finished span named `name` with the attribute `key` = `value`.
pub fn spans_with(name: &str, key: &str, value: &str) -> Vec<SpanData> {
    INSTALLED
        .get()
        .map(|i| i.exporter.get_finished_spans().unwrap_or_default())
        .unwrap_or_default()
        .into_iter()
        .filter(|s| {
            s.name == name
                && s.attributes
                    .iter()
                    .any(|kv| kv.key.as_str() == key && kv.value.as_str() == value)
        })
        .collect()
}
