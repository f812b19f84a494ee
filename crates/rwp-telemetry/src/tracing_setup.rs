//! Logs and traces: one `tracing` subscriber with a log layer (text or JSON
//! on stderr) and, when OTLP is configured by the standard `OTEL_*`
//! environment variables, an OpenTelemetry layer exporting spans over OTLP
//! gRPC. W3C trace context crosses process boundaries in gRPC metadata.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Keeps the trace exporter alive; flushes and shuts it down when dropped.
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Exports every finished span now.
    pub fn flush(&self) {
        if let Some(p) = &self.provider {
            let _ = p.force_flush();
        }
    }

    #[must_use]
    pub fn tracing_enabled(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

/// Sets up logging and, when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
/// `..._TRACES_ENDPOINT`) is set, span export under `service` (overridden by
/// `OTEL_SERVICE_NAME`). Must run inside a Tokio runtime.
pub fn init(service: &str, log_format: &str) -> Result<TelemetryGuard, String> {
    init_with(service, log_format, crate::otlp_endpoint_from_env("TRACES"))
}

/// [`init`] with an explicit OTLP endpoint (`None`: no span export).
pub fn init_with(service: &str, log_format: &str, otlp_endpoint: Option<String>) -> Result<TelemetryGuard, String> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = match log_format {
        // Colours only on a terminal: a log file or a pod's log gets plain text.
        "text" => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .boxed(),
        "json" => tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr).boxed(),
        other => return Err(format!("unknown log format '{other}' (expected text or json)")),
    };
    let (provider, traces) = match otlp_endpoint {
        Some(endpoint) => {
            use opentelemetry_otlp::WithExportConfig;
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()
                .map_err(|e| format!("cannot set up OTLP export to {endpoint}: {e}"))?;
            let service_name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service.to_owned());
            let resource = opentelemetry_sdk::Resource::builder().with_service_name(service_name).build();
            let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
            let tracer = provider.tracer("rwp");
            let layer = tracing_opentelemetry::layer().with_tracer(tracer).boxed();
            (Some(provider), Some(layer))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(traces)
        .try_init()
        .map_err(|e| format!("cannot set up logging: {e}"))?;
    Ok(TelemetryGuard { provider })
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (tonic::metadata::MetadataKey::from_bytes(key.as_bytes()), value.parse()) {
            self.0.insert(k, v);
        }
    }
}

struct MetadataExtractor<'a>(&'a tonic::metadata::MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// Writes `span`'s W3C trace context (`traceparent`) into gRPC metadata.
pub fn inject(span: &tracing::Span, metadata: &mut tonic::metadata::MetadataMap) {
    let context = span.context();
    TraceContextPropagator::new().inject_context(&context, &mut MetadataInjector(metadata));
}

/// Makes `span` a child of the trace context found in gRPC metadata, if any.
pub fn set_parent_from(span: &tracing::Span, metadata: &tonic::metadata::MetadataMap) {
    let context = TraceContextPropagator::new().extract(&MetadataExtractor(metadata));
    use opentelemetry::trace::TraceContextExt;
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}

/// `span`'s W3C trace context as a map, for a message that carries it
/// itself (one offer of a long-lived stream, whose metadata is the stream's).
#[must_use]
pub fn context_map(span: &tracing::Span) -> std::collections::HashMap<String, String> {
    let mut map = std::collections::HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut map);
    map
}

/// Makes `span` a child of the trace context in `map` ([`context_map`]), if any.
pub fn set_parent_from_map(span: &tracing::Span, map: &std::collections::HashMap<String, String>) {
    let context = TraceContextPropagator::new().extract(map);
    use opentelemetry::trace::TraceContextExt;
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}
