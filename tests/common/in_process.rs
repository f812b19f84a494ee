//! A parameter server and gradient workers inside the test process, on
//! loopback ports, shut down cleanly at the end.

use std::net::SocketAddr;
use std::time::Duration;

use rwp_gradient_worker::WorkerConfig;
use rwp_parameter_server::ServerConfig;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[derive(Debug)]
pub struct Cluster {
    pub addr: SocketAddr,
    /// `http://` or, when the server speaks TLS, `https://` and the address.
    url: String,
    /// The settings new workers start from (server URL, credentials).
    worker: WorkerConfig,
    /// The server's `/metrics` endpoint.
    pub metrics: SocketAddr,
    /// Each worker's `/metrics` endpoint.
    pub worker_metrics: Vec<SocketAddr>,
    server: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
    workers: Vec<(oneshot::Sender<()>, JoinHandle<()>)>,
    _dir: tempfile::TempDir,
}

fn spawn_worker(template: &WorkerConfig, i: usize) -> (SocketAddr, (oneshot::Sender<()>, JoinHandle<()>)) {
    let metrics = free_port();
    let config = WorkerConfig { metrics_listen: Some(metrics), name: format!("in-process-{i}"), ..template.clone() };
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        rwp_gradient_worker::run(config, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (metrics, (stop, handle))
}

/// A loopback address with a port that was free a moment ago, for a
/// listener that can only be given an address. Drawn below the kernel's
/// ephemeral range (32768 and up): a port from that range can be taken by any
/// outgoing connection between this check and the listener's bind.
#[must_use]
pub fn free_port() -> SocketAddr {
    use std::sync::atomic::{AtomicU64, Ordering};
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    let salt = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    loop {
        let draw =
            rwp_spec::rng::derive_seed(salt, &[u64::from(std::process::id()), DRAWS.fetch_add(1, Ordering::Relaxed)]);
        let addr = SocketAddr::from(([127, 0, 0, 1], 20_000 + (draw % 12_000) as u16));
        if std::net::TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
}

/// GETs `path` over plain HTTP/1.1 and returns the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// The value of one sample (`name` with exactly these labels) in Prometheus text.
#[must_use]
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Starts a parameter server with `config` on its `listen` address (port 0
/// for a free one); returns the address it listens on, the sender that stops
/// it, and its task.
pub async fn spawn_server(config: ServerConfig) -> (SocketAddr, oneshot::Sender<()>, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        rwp_parameter_server::serve_with_listener(listener, config, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (addr, stop, server)
}

impl Cluster {
    /// A server (evaluating every epoch) and `workers` CPU workers with one thread each.
    pub async fn start(workers: usize) -> Self {
        Self::start_configured(workers, |_| {}, |_| {}).await
    }

    /// [`Cluster::start`] with the server's and the workers' settings changed
    /// by `server` and `worker` (TLS, tokens, limits). The workers' `server`
    /// URL is `https://` when the server has a certificate.
    pub async fn start_configured(
        workers: usize,
        server: impl FnOnce(&mut ServerConfig),
        worker: impl FnOnce(&mut WorkerConfig),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let metrics = free_port();
        let mut config = ServerConfig {
            metrics_listen: Some(metrics),
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("data"),
            torch_threads: 1,
            checkpoint_every: 5,
            eval_every_epochs: 1,
            ..ServerConfig::default()
        };
        server(&mut config);
        let scheme = if config.tls_cert.is_some() { "https" } else { "http" };
        let (addr, stop, server) = spawn_server(config).await;
        let url = format!("{scheme}://{addr}");
        let mut template = WorkerConfig {
            server: url.clone(),
            device: "cpu".into(),
            threads: 1,
            lease_wait_ms: 500,
            ..WorkerConfig::default()
        };
        worker(&mut template);
        let (worker_metrics, workers) = (0..workers).map(|i| spawn_worker(&template, i)).unzip();
        Self { addr, url, worker: template, metrics, worker_metrics, server: Some((stop, server)), workers, _dir: dir }
    }

    /// Adds `count` more workers.
    pub async fn with_workers(mut self, count: usize) -> Self {
        let start = self.workers.len();
        for i in start..start + count {
            let (metrics, worker) = spawn_worker(&self.worker, i);
            self.worker_metrics.push(metrics);
            self.workers.push(worker);
        }
        self
    }

    /// The server's data directory.
    #[must_use]
    pub fn data_dir(&self) -> std::path::PathBuf {
        self._dir.path().join("data")
    }

    #[must_use]
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Stops the workers, then the server, and waits for both.
    pub async fn shutdown(mut self) {
        for (stop, handle) in self.workers.drain(..) {
            let _ = stop.send(());
            tokio::time::timeout(Duration::from_secs(30), handle).await.expect("worker stops").unwrap();
        }
        if let Some((stop, handle)) = self.server.take() {
            let _ = stop.send(());
            tokio::time::timeout(Duration::from_secs(30), handle).await.expect("server stops").unwrap();
        }
    }
}
