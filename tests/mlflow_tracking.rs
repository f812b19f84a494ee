//! A server with `mlflow_tracking_uri` logs each job to a real MLflow
//! tracking server (the `mlflow` package from PyPI, which
//! `scripts/setup-libtorch.sh` installs into `.venv`, started here on a
//! loopback port with a SQLite store): one run per job, named after it and
//! tagged with its id, with the job's parameters, every update's training
//! metrics, the evaluations, and its end. Read back through MLflow's REST API.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use rwp_integration_tests::in_process::Cluster;
use rwp_integration_tests::python;
use rwp_sdk::{Client, JobSpecBuilder, JobState, Method};
use serde_json::{json, Value};
use tokio_stream::StreamExt;

/// An `mlflow server` process group, stopped when dropped.
struct MlflowServer {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl MlflowServer {
    fn start() -> Self {
        let installed = python().args(["-c", "import mlflow"]).output().expect("python starts");
        assert!(
            installed.status.success(),
            "the mlflow package is missing from the project's virtualenv: run `make setup` \
             (scripts/setup-libtorch.sh installs it), or `.venv/bin/python -m pip install 'mlflow>=3.17,<3.18'`\n{}",
            String::from_utf8_lossy(&installed.stderr)
        );
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let log = std::fs::File::create(dir.path().join("mlflow.log")).unwrap();
        let child = python()
            .args(["-m", "mlflow", "server", "--host", "127.0.0.1", "--port", &port.to_string(), "--workers", "1"])
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}", dir.path().join("mlflow.db").display()))
            .arg("--default-artifact-root")
            .arg(dir.path().join("artifacts"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            // Its own process group: mlflow runs uvicorn (and a job runner) as children.
            .process_group(0)
            .spawn()
            .expect("mlflow server starts");
        let mut server = Self { child, addr, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok((200, _)) = request(addr, "GET", "/health", None) {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("mlflow server exited ({status}): {}", server.log());
            }
            assert!(Instant::now() < deadline, "mlflow server not up within 90 s: {}", server.log());
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("mlflow.log")).unwrap_or_default()
    }

    fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Calls the REST API (`/api/2.0/mlflow/<endpoint>`); the answer's JSON.
    fn api(&self, method: &str, endpoint: &str, body: Option<&Value>) -> Value {
        let (status, answer) = request(self.addr, method, &format!("/api/2.0/mlflow/{endpoint}"), body)
            .unwrap_or_else(|e| panic!("{endpoint}: {e}"));
        assert_eq!(status, 200, "{endpoint}: {answer}");
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{endpoint}: {e}: {answer}"))
    }
}

impl Drop for MlflowServer {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = std::process::Command::new("kill").args(["-TERM", "--", &group]).status();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.0 exchange (the body ends with the connection); status and body.
fn request(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, body.to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_job_is_an_mlflow_run_with_its_parameters_and_metrics() {
    let mlflow = tokio::task::spawn_blocking(MlflowServer::start).await.unwrap();
    let uri = mlflow.uri();
    let cluster = Cluster::start_configured(
        1,
        |server| {
            server.mlflow_tracking_uri = Some(uri);
            server.mlflow_experiment = "rwp-tests".into();
        },
        |_| {},
    )
    .await;
    let client = Client::connect(cluster.url()).await.unwrap();
    let spec = JobSpecBuilder::new(Method::MArwp).epochs(1).batch_size(128).build().unwrap();
    let job = client.submit("mlflow tracked", &spec).await.unwrap();
    let mut events = Box::pin(client.watch(&job.id, 0).await.unwrap());
    while let Some(e) = events.next().await {
        e.unwrap();
    }
    let finished = client.get(&job.id).await.unwrap();
    assert_eq!(finished.state, JobState::Succeeded, "{:?}", finished.error);
    cluster.shutdown().await;

    // The records reach MLflow in the background: wait for the run's end.
    let experiment = mlflow.api("GET", "experiments/get-by-name?experiment_name=rwp-tests", None);
    let experiment_id = experiment["experiment"]["experiment_id"].as_str().expect("the experiment was made").to_owned();
    let search = json!({
        "experiment_ids": [experiment_id],
        "filter": format!("tags.`rwp.job_id` = '{}'", job.id),
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let run = loop {
        let runs = mlflow.api("POST", "runs/search", Some(&search));
        let found = runs["runs"].as_array().cloned().unwrap_or_default();
        assert!(found.len() <= 1, "one run per job: {runs}");
        if let Some(run) = found.into_iter().next().filter(|r| r["info"]["status"] == "FINISHED") {
            break run;
        }
        assert!(Instant::now() < deadline, "no finished run for {} within 30 s: {runs}\n{}", job.id, mlflow.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(run["info"]["run_name"], "mlflow tracked");
    let entries = |kind: &str| -> Vec<(String, Value)> {
        run["data"][kind]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|e| (e["key"].as_str().unwrap().to_owned(), e["value"].clone()))
            .collect()
    };
    let get = |list: &[(String, Value)], key: &str| {
        list.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).unwrap_or_else(|| panic!("{key} in {list:?}"))
    };

    let params = entries("params");
    assert_eq!(get(&params, "method"), "m-arwp");
    assert_eq!(get(&params, "epochs"), "1");
    assert_eq!(get(&params, "batch_size"), "128");
    assert_eq!(get(&params, "lr").as_str().unwrap().parse::<f64>().unwrap(), spec.lr);
    assert_eq!(get(&params, "sigma").as_str().unwrap().parse::<f64>().unwrap(), spec.sigma);
    assert_eq!(get(&params, "model"), spec.model.to_string());
    let tags = entries("tags");
    assert_eq!(get(&tags, "rwp.job_id"), job.id.as_str());

    // The latest value of each metric is the job's last; every update is in the history.
    let metrics = entries("metrics");
    let last_step = finished.last_step.as_ref().unwrap();
    let last_evaluation = finished.last_evaluation.as_ref().unwrap();
    assert_eq!(get(&metrics, "train/loss").as_f64().unwrap(), last_step.loss);
    assert_eq!(get(&metrics, "train/accuracy").as_f64().unwrap(), last_step.accuracy);
    assert_eq!(get(&metrics, "test/accuracy").as_f64().unwrap(), last_evaluation.test_accuracy);
    assert_eq!(get(&metrics, "test/loss").as_f64().unwrap(), last_evaluation.test_loss);
    let run_id = run["info"]["run_id"].as_str().unwrap();
    let history = mlflow.api(
        "GET",
        &format!("metrics/get-history?run_id={run_id}&metric_key=train%2Floss&max_results=1000"),
        None,
    );
    let steps: Vec<i64> = history["metrics"].as_array().unwrap().iter().map(|m| m["step"].as_i64().unwrap()).collect();
    let updates = finished.total_updates as i64;
    assert_eq!(steps.len() as i64, updates, "{history}");
    assert_eq!(steps.iter().max(), Some(&updates));
}
