//! A parameter server and gradient workers inside the test process, on
//! loopback ports, shut down cleanly at the end.

use std::net::SocketAddr;
use std::time::Duration;

use rwp_gradient_worker::WorkerConfig;
use rwp_parameter_server::{Listeners, ServeOptions, ServerConfig};
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
    /// The plaintext health port, when the settings ask for one.
    pub health: Option<SocketAddr>,
    /// Each worker's `/metrics` endpoint.
    pub worker_metrics: Vec<SocketAddr>,
    server: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
    workers: Vec<(oneshot::Sender<()>, JoinHandle<()>)>,
    _dir: tempfile::TempDir,
}

/// A listener on a free loopback port, chosen by the kernel.
fn loopback() -> std::net::TcpListener {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    listener
}

fn spawn_worker(template: &WorkerConfig, i: usize) -> (SocketAddr, (oneshot::Sender<()>, JoinHandle<()>)) {
    let listener = loopback();
    let metrics = listener.local_addr().unwrap();
    let config = WorkerConfig { name: format!("in-process-{i}"), ..template.clone() };
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        rwp_gradient_worker::run_with_metrics(config, Some(listener), async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (metrics, (stop, handle))
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
    let grpc = tokio::net::TcpListener::bind(config.listen).await.unwrap();
    let listeners = Listeners::around(grpc, &config).await.unwrap();
    spawn_server_on(listeners, config)
}

/// Starts a parameter server on bound listeners.
pub fn spawn_server_on(
    listeners: Listeners,
    config: ServerConfig,
) -> (SocketAddr, oneshot::Sender<()>, JoinHandle<()>) {
    let addr = listeners.grpc.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        rwp_parameter_server::serve_with_listeners(listeners, config, ServeOptions::default(), async {
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
        let mut config = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("data"),
            torch_threads: 1,
            checkpoint_every: 5,
            eval_every_epochs: 1,
            ..ServerConfig::default()
        };
        server(&mut config);
        let scheme = if config.tls_cert.is_some() { "https" } else { "http" };
        // Every port is bound here, on port 0: the server gets the listeners.
        let bind = || tokio::net::TcpListener::from_std(loopback()).unwrap();
        let listeners =
            Listeners { grpc: bind(), metrics: Some(bind()), health: config.health_listen.is_some().then(bind) };
        let metrics = listeners.metrics.as_ref().unwrap().local_addr().unwrap();
        let health = listeners.health.as_ref().map(|l| l.local_addr().unwrap());
        let (addr, stop, server) = spawn_server_on(listeners, config);
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
        Self {
            addr,
            url,
            worker: template,
            metrics,
            health,
            worker_metrics,
            server: Some((stop, server)),
            workers,
            _dir: dir,
        }
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
