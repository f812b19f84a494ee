//! A parameter server and gradient workers inside the test process, on
//! loopback ports, shut down cleanly at the end.

use std::net::SocketAddr;
use std::time::Duration;

use rwp_parameter_server::ServerConfig;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[derive(Debug)]
pub struct Cluster {
    pub addr: SocketAddr,
    server: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
    workers: Vec<(oneshot::Sender<()>, JoinHandle<()>)>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// A server (evaluating every epoch) and `workers` CPU workers with one thread each.
    pub async fn start(workers: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("data"),
            torch_threads: 1,
            checkpoint_every: 5,
            eval_every_epochs: 1,
            ..ServerConfig::default()
        };
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
        let workers = (0..workers)
            .map(|i| {
                let config = rwp_gradient_worker::WorkerConfig {
                    server: format!("http://{addr}"),
                    name: format!("in-process-{i}"),
                    device: "cpu".into(),
                    threads: 1,
                    lease_wait_ms: 500,
                    ..rwp_gradient_worker::WorkerConfig::default()
                };
                let (stop, stopped) = oneshot::channel::<()>();
                let handle = tokio::spawn(async move {
                    rwp_gradient_worker::run(config, async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
                });
                (stop, handle)
            })
            .collect();
        Self { addr, server: Some((stop, server)), workers, _dir: dir }
    }

    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
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
