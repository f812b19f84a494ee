//! Telemetry shared by the parameter server and the workers:
//!
//! - [`init`]: `tracing` to stderr, human-readable or JSON, filtered by
//!   `RUST_LOG`, plus OTLP span export when the `OTEL_*` variables ask for it;
//!   [`inject`] / [`set_parent_from`] carry W3C trace context in gRPC metadata;
//! - [`Registry`]: counters, gauges and histograms with labels, rendered in
//!   the Prometheus text format;
//! - [`serve_metrics`]: an HTTP endpoint with `/metrics` and `/healthz`.

mod otlp_metrics;
mod registry;
pub mod tfevents;
mod tracing_setup;

pub use otlp_metrics::{export_metrics, MetricsExport};
pub use tracing_setup::{init, init_with, inject, set_parent_from, TelemetryGuard};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

pub use registry::{Kind, Registry};

/// The OTLP endpoint the standard variables give for `signal` (`TRACES` or
/// `METRICS`): `OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT`, else
/// `OTEL_EXPORTER_OTLP_ENDPOINT`; none when `OTEL_<SIGNAL>_EXPORTER=none` or
/// `OTEL_SDK_DISABLED=true`.
fn otlp_endpoint_from_env(signal: &str) -> Option<String> {
    let set = |k: &str| std::env::var(k).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    if set(&format!("OTEL_{signal}_EXPORTER")).as_deref() == Some("none")
        || set("OTEL_SDK_DISABLED").as_deref() == Some("true")
    {
        return None;
    }
    set(&format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")).or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"))
}

/// Serves `/metrics` (Prometheus text) and `/healthz` on `listener` until `shutdown`.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                        registry.render(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }));
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

/// Binds `address` for [`serve_metrics`], naming the address on failure.
pub async fn bind(address: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(address).await.map_err(|e| format!("cannot listen on {address} for metrics: {e}"))
}
