//! Telemetry shared by the parameter server and the workers:
//!
//! - [`init_logging`]: `tracing` to stderr, human-readable or JSON, filtered by `RUST_LOG`;
//! - [`Registry`]: counters, gauges and histograms with labels, rendered in
//!   the Prometheus text format;
//! - [`serve_metrics`]: an HTTP endpoint with `/metrics` and `/healthz`.

mod registry;
pub mod tfevents;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

pub use registry::{Kind, Registry};

/// Sets up `tracing` on stderr: `text` (default) or `json`, level from `RUST_LOG` (default info).
pub fn init_logging(format: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match format {
        "text" => builder.try_init(),
        "json" => builder.json().try_init(),
        other => return Err(format!("unknown log format '{other}' (expected text or json)")),
    };
    result.map_err(|e| format!("cannot set up logging: {e}"))
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
