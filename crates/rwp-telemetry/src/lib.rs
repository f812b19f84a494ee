//! Telemetry shared by the parameter server and the workers:
//!
//! - [`init`]: `tracing` to stderr, human-readable or JSON, filtered by
//!   `RUST_LOG`, plus OTLP span export when the `OTEL_*` variables ask for it;
//!   [`inject`] / [`set_parent_from`] carry W3C trace context in gRPC metadata;
//! - [`Registry`]: counters, gauges and histograms with labels, rendered in
//!   the Prometheus text format;
//! - [`serve_metrics`]: an HTTP endpoint with `/metrics` and `/healthz`,
//!   within [`ConnectionLimits`];
//! - [`ConnectionsPerPeer`]: the per-peer connection limit it keeps, which
//!   the parameter server's gRPC ports keep as well;
//! - [`tfevents`] and [`hparams`]: TensorBoard event files, scalars and the
//!   HParams plugin's summaries;
//! - [`mlflow`]: a client of an MLflow tracking server, off the caller's path.

mod connections;
pub mod hparams;
pub mod mlflow;
mod otlp_metrics;
mod registry;
pub mod tfevents;
mod tracing_setup;

pub use otlp_metrics::{export_metrics, MetricsExport};
pub use tracing_setup::{context_map, init, init_with, inject, set_parent_from, set_parent_from_map, TelemetryGuard};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use connections::{ConnectionsPerPeer, PeerPermit};
pub use registry::{Counter, Gauge, Histogram, Kind, Registry};

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

/// Limits on the connections of the metrics endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Time a client has to send a request's headers: the first request's
    /// from connecting, a later one's from the previous response (so an idle
    /// keep-alive connection is closed after it too).
    pub header_read_timeout: Duration,
    /// Connections one peer IP address may hold at once; one more is closed
    /// as soon as it is accepted.
    pub max_per_peer: usize,
}

/// Serves `/metrics` (Prometheus text) and `/healthz` on `listener` until
/// `shutdown`, within `limits`; then lets the requests in progress finish.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_http(listener, metrics_router(registry), limits, shutdown).await
}

/// The routes `/metrics` (Prometheus text of `registry`) and `/healthz`.
pub fn metrics_router(registry: Arc<Registry>) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
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
        .route("/healthz", get(|| async { "ok\n" }))
}

/// Serves `app` over HTTP/1 on `listener` until `shutdown`, within
/// `limits`; then lets the requests in progress finish.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let peers = ConnectionsPerPeer::new(limits.max_per_peer);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let connections = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, say: wait rather than spin.
                tracing::debug!("metrics endpoint: cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(permit) = peers.admit(peer.ip()) else {
            tracing::warn!(
                peer = %peer.ip(),
                limit = peers.limit(),
                "metrics endpoint: closed a connection beyond the peer's limit (max_connections_per_peer)"
            );
            continue;
        };
        let served = http.serve_connection(
            hyper_util::rt::TokioIo::new(stream),
            hyper_util::service::TowerToHyperService::new(app.clone()),
        );
        let served = connections.watch(served);
        tokio::spawn(async move {
            if let Err(e) = served.await {
                tracing::debug!(%peer, "metrics endpoint: connection closed: {e}");
            }
            drop(permit);
        });
    }
    drop(listener);
    connections.shutdown().await;
    Ok(())
}

/// Binds `address` for [`serve_metrics`], naming the address on failure.
pub async fn bind(address: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(address).await.map_err(|e| format!("cannot listen on {address} for metrics: {e}"))
}
