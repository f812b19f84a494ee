//! The parameter server of the RWP training service.
//!
//! It holds every job's weights and optimizer state (in one engine thread per
//! job, see [`engine`]), splits each update into the tasks the job spec asks
//! for, leases them to stateless gradient workers, collects the shard results,
//! aggregates them in shard order, applies the update and publishes the next
//! weights version, serialised once. Job records and metrics live in an
//! embedded database (redb) in the data directory, next to each job's latest
//! safetensors checkpoint; on start the server resumes every running job from
//! it.
//!
//! [`serve`] runs the gRPC services (`rwp.v1.WorkerService`,
//! `rwp.v1.JobService`, `grpc.health.v1.Health`, reflection) until the
//! `shutdown` future resolves, then drains: no new leases, in-flight updates
//! finish, every running job is checkpointed. With `tls_cert` and `tls_key`
//! the port speaks TLS only (mutual TLS with `tls_client_ca`); `health_listen`
//! adds a plaintext port with health alone, for probes that cannot speak TLS.
//! Every port keeps its connections within the limits of [`connections`].

pub mod config;
pub mod connections;
pub mod coordinator;
mod cuda;
mod dashboard;
pub mod domain;
pub mod engine;
pub mod error;
mod grpc;
pub mod layers;
pub mod limits;
pub mod models;
pub mod pool;
pub mod security;
pub mod store;
pub mod tokens;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use connections::{Admission, FirstRequestLayer, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT};
use rwp_proto::v1::job_service_server::JobServiceServer;
use rwp_proto::v1::worker_service_server::WorkerServiceServer;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tracing::{info, warn};

pub use config::ServerConfig;
pub use error::ServerError;
pub use security::Security;

/// The sockets the server listens on, bound before it serves: `rwp-server`
/// binds the configured addresses ([`Listeners::bind`]), tests bind port 0
/// and pass what they bound, so no port is ever guessed.
#[derive(Debug)]
pub struct Listeners {
    /// The gRPC port (job and worker APIs).
    pub grpc: TcpListener,
    /// `/metrics` and `/healthz` over HTTP (`metrics_listen`).
    pub metrics: Option<TcpListener>,
    /// Plaintext gRPC health for probes that cannot speak TLS (`health_listen`).
    pub health: Option<TcpListener>,
}

impl Listeners {
    /// Binds `listen`, `metrics_listen` and `health_listen`.
    pub async fn bind(config: &ServerConfig) -> Result<Self, ServerError> {
        let grpc = TcpListener::bind(config.listen)
            .await
            .map_err(|e| ServerError::Startup(format!("cannot listen on {}: {e}", config.listen)))?;
        Self::around(grpc, config).await
    }

    /// `grpc`, and the metrics and health ports of `config` bound.
    pub async fn around(grpc: TcpListener, config: &ServerConfig) -> Result<Self, ServerError> {
        let metrics = match config.metrics_listen {
            Some(address) => Some(rwp_telemetry::bind(address).await.map_err(ServerError::Startup)?),
            None => None,
        };
        let health = match config.health_listen {
            Some(address) => Some(
                TcpListener::bind(address)
                    .await
                    .map_err(|e| ServerError::Startup(format!("cannot listen on {address} (health_listen): {e}")))?,
            ),
            None => None,
        };
        Ok(Self { grpc, metrics, health })
    }
}

/// Binds the configured addresses and serves until `shutdown` completes.
pub async fn serve(config: ServerConfig, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServerError> {
    let listeners = Listeners::bind(&config).await?;
    serve_with_listeners(listeners, config, ServeOptions::default(), shutdown).await
}

/// Serves on an already bound gRPC listener (the metrics and health ports
/// of `config` are bound here).
pub async fn serve_with_listener(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let listeners = Listeners::around(listener, &config).await?;
    serve_with_listeners(listeners, config, ServeOptions::default(), shutdown).await
}

/// Extension points of the server.
#[derive(Clone, Default)]
pub struct ServeOptions {
    /// Replaces the authentication the configuration sets up (bearer tokens
    /// of `tokens_file`, or none): called with every request's headers
    /// (health and reflection excepted), it resolves the caller or refuses
    /// the request with its error.
    pub authenticate: Option<layers::Authenticate>,
    /// The data directory's store, opened beforehand ([`store::Store::open`]);
    /// `None`: the server opens `data_dir` itself.
    pub store: Option<store::Store>,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("authenticate", &self.authenticate.is_some())
            .field("store", &self.store.is_some())
            .finish()
    }
}

/// Serves on bound listeners with extension points; the metrics and health
/// listeners given are used whatever `config` names.
pub async fn serve_with_listeners(
    listeners: Listeners,
    config: ServerConfig,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let security = Security::load(&config)?;
    serve_with_security(listeners, config, security, options, shutdown).await
}

/// [`serve_with`] with the credential files of `config` already read (by
/// [`Security::load`]), so that a binary can report a bad one before it
/// opens its port.
pub async fn serve_with_security(
    listeners: Listeners,
    config: ServerConfig,
    security: Security,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let Listeners { grpc: listener, metrics: metrics_listener, health: health_listener } = listeners;
    let local: SocketAddr = listener.local_addr().map_err(|e| ServerError::Startup(e.to_string()))?;
    let max_message = config.max_message_bytes;
    let request_timeout = Duration::from_millis(config.request_timeout_ms);
    let authenticate = match options.authenticate {
        Some(custom) => custom,
        None => {
            match &security.tokens {
                Some(tokens) => {
                    let (users, admins, workers) = tokens.counts();
                    info!(users, admins, workers, "callers need a bearer token of the tokens file");
                }
                None => warn!(
                    "no tokens_file: every caller may submit, see and cancel every job and run tasks \
                     (development mode); set tokens_file before the server is reachable by others"
                ),
            }
            security.authenticate()
        }
    };
    let middleware = tower::ServiceBuilder::new()
        .layer(FirstRequestLayer)
        .load_shed()
        .concurrency_limit(config.max_concurrent_requests)
        .layer(layers::AuthLayer::new(authenticate.clone()))
        .into_inner();
    let metrics_limits = rwp_telemetry::ConnectionLimits {
        header_read_timeout: std::time::Duration::from_millis(config.connection_first_request_timeout_ms),
        max_per_peer: config.max_connections_per_peer,
    };
    let (admission, health_admission) = (Admission::new(&config), Admission::new(&config));
    let metrics = std::sync::Arc::new(rwp_telemetry::Registry::new());
    let drain_timeout = Duration::from_millis(config.drain_timeout_ms);
    let coordinator = match options.store {
        Some(store) => coordinator::Coordinator::open_with_store(config, store, metrics.clone()).await?,
        None => coordinator::Coordinator::open(config, metrics.clone()).await?,
    };
    // Also over OTLP when the OTEL_* variables ask for it; stops with the server.
    let _otlp_metrics = rwp_telemetry::export_metrics(&metrics, "rwp-server").map_err(ServerError::Startup)?;
    let metrics_server = match metrics_listener {
        Some(listener) => {
            info!(address = %listener.local_addr().map_err(|e| ServerError::Startup(e.to_string()))?, "metrics endpoint listening");
            let mut stopping = coordinator.stopping();
            let app = rwp_telemetry::metrics_router(metrics)
                .merge(dashboard::router(coordinator.clone(), authenticate.clone()));
            Some(tokio::spawn(rwp_telemetry::serve_http(listener, app, metrics_limits, async move {
                let _ = stopping.wait_for(|s| *s).await;
            })))
        }
        None => None,
    };
    let handlers = grpc::Handlers::new(coordinator.clone());

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<WorkerServiceServer<grpc::Handlers>>().await;
    health.set_serving::<JobServiceServer<grpc::Handlers>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(rwp_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServerError::Startup(format!("reflection: {e}")))?;

    // Probes that cannot speak TLS get health alone, in plaintext, until the
    // main port has drained.
    let health_server = match health_listener {
        Some(listener) => {
            info!(address = %listener.local_addr().map_err(|e| ServerError::Startup(e.to_string()))?, "plaintext health endpoint listening");
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let server = Server::builder()
                .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
                .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
                .layer(FirstRequestLayer)
                .add_service(health_service.clone())
                .serve_with_incoming_shutdown(health_admission.incoming(listener), async {
                    let _ = stopped.await;
                });
            Some((stop, tokio::spawn(server)))
        }
        None => None,
    };

    let incoming = admission.incoming(listener);
    info!(address = %local, tls = security.tls.is_some(), "parameter server listening");
    // Requests still running when the drain is over (an upload whose model
    // takes its whole sandbox timeout to load, say) do not hold the
    // shutdown beyond the drain timeout.
    let (draining_tx, draining) = tokio::sync::oneshot::channel::<()>();
    let drain = {
        let coordinator = coordinator.clone();
        async move {
            shutdown.await;
            let _ = draining_tx.send(());
            info!("shutting down: draining");
            health.set_not_serving::<WorkerServiceServer<grpc::Handlers>>().await;
            health.set_not_serving::<JobServiceServer<grpc::Handlers>>().await;
            coordinator.drain().await;
        }
    };
    let mut server = Server::builder();
    if let Some(tls) = security.tls {
        server = server.tls_config(tls).map_err(|e| ServerError::Credentials(format!("TLS: {e}")))?;
    }
    let served = server
        .timeout(request_timeout)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .layer(middleware)
        .initial_stream_window_size(8 << 20)
        .initial_connection_window_size(16 << 20)
        .max_frame_size((1 << 24) - 1)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(
            WorkerServiceServer::new(handlers.clone())
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(max_message),
        )
        .add_service(
            JobServiceServer::new(handlers)
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(max_message),
        )
        .serve_with_incoming_shutdown(incoming, drain);
    let served = tokio::select! {
        served = served => served.map_err(|e| ServerError::Transport(e.to_string())),
        () = async {
            if draining.await.is_err() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(drain_timeout + Duration::from_secs(1)).await;
        } => {
            warn!(drain_timeout_ms = drain_timeout.as_millis() as u64, "requests still in flight after the drain timeout; stopping without them");
            Ok(())
        }
    };
    if let Some((stop, handle)) = health_server {
        let _ = stop.send(());
        let _ = handle.await;
    }
    served?;
    if let Some(handle) = metrics_server {
        let _ = handle.await;
    }
    info!("parameter server stopped");
    Ok(())
}
