//! The registry's metrics over OTLP, when the `OTEL_*` variables ask for it:
//! counters and gauges as observable instruments read at each export;
//! histograms as their `_sum` and `_count`.

use std::sync::Arc;

use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::metrics::SdkMeterProvider;

use crate::{Kind, Registry};

/// Keeps the OTLP metrics export running; flushes and stops it when dropped.
#[derive(Debug)]
pub struct MetricsExport {
    provider: SdkMeterProvider,
}

impl Drop for MetricsExport {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

fn attributes(labels: &[(String, String)]) -> Vec<KeyValue> {
    labels.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())).collect()
}

/// Exports every family of `registry` (as described now) over OTLP gRPC when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._METRICS_ENDPOINT`) is set; `None`
/// otherwise. Call inside a Tokio runtime, after the families are described.
pub fn export_metrics(registry: &Arc<Registry>, service: &str) -> Result<Option<MetricsExport>, String> {
    let Some(endpoint) = crate::otlp_endpoint_from_env("METRICS") else { return Ok(None) };
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .build()
        .map_err(|e| format!("cannot set up OTLP metrics export to {endpoint}: {e}"))?;
    let service_name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service.to_owned());
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(service_name).build();
    let provider = SdkMeterProvider::builder().with_periodic_exporter(exporter).with_resource(resource).build();
    let meter = provider.meter("rwp");
    for (name, kind, help) in registry.families() {
        let r = registry.clone();
        let family = name.clone();
        match kind {
            Kind::Gauge => {
                meter
                    .f64_observable_gauge(name)
                    .with_description(help)
                    .with_callback(move |o| {
                        for (labels, v, _) in r.series(&family) {
                            o.observe(v, &attributes(&labels));
                        }
                    })
                    .build();
            }
            Kind::Counter => {
                meter
                    .f64_observable_counter(name)
                    .with_description(help)
                    .with_callback(move |o| {
                        for (labels, v, _) in r.series(&family) {
                            o.observe(v, &attributes(&labels));
                        }
                    })
                    .build();
            }
            Kind::Histogram => {
                let (r2, family2) = (r.clone(), family.clone());
                meter
                    .f64_observable_counter(format!("{name}_sum"))
                    .with_description(help.clone())
                    .with_callback(move |o| {
                        for (labels, sum, _) in r.series(&family) {
                            o.observe(sum, &attributes(&labels));
                        }
                    })
                    .build();
                meter
                    .u64_observable_counter(format!("{name}_count"))
                    .with_description(help)
                    .with_callback(move |o| {
                        for (labels, _, count) in r2.series(&family2) {
                            o.observe(count.unwrap_or(0), &attributes(&labels));
                        }
                    })
                    .build();
            }
        }
    }
    Ok(Some(MetricsExport { provider }))
}
