//! An MLflow tracking client off the training path: [`MlflowTracker::record`]
//! puts a [`Record`] on a bounded queue and returns at once; a background
//! task sends the queue to the tracking server's REST API
//! (`/api/2.0/mlflow/...`): the experiment found by name (made if missing),
//! a run per job (`runs/create`, tagged `rwp.job_id`), its parameters and
//! metrics (`runs/log-batch`, consecutive records batched), its end
//! (`runs/update`). A job resumed by a restarted server finds its run again
//! by that tag (`runs/search`).
//!
//! Nothing waits for the tracker: a full queue drops the record (counted,
//! and said in a warning), and a tracker that does not answer within
//! [`REQUEST_TIMEOUT`] or answers with an error costs only the records of
//! that batch, with one warning until it works again. Plain `http://`
//! tracking URIs only (a TLS-terminating proxy in front of an `https://`
//! server, or a sidecar, for the rest).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value as Json};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Records waiting to be sent; beyond, new ones are dropped.
pub const QUEUE_RECORDS: usize = 8192;
/// Longest wait for one answer of the tracking server.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// MLflow's limits on one `log-batch` request.
const BATCH_METRICS: usize = 1000;
const BATCH_PARAMS: usize = 100;
/// MLflow's longest parameter value.
const PARAM_VALUE_CHARS: usize = 6000;
/// The tag that names a run's job.
pub const JOB_TAG: &str = "rwp.job_id";

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunStatus {
    Finished,
    Failed,
    Killed,
}

impl RunStatus {
    fn name(self) -> &'static str {
        match self {
            RunStatus::Finished => "FINISHED",
            RunStatus::Failed => "FAILED",
            RunStatus::Killed => "KILLED",
        }
    }
}

/// What happened to a job, for its run.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// The job started (`resumed`: again, after a restart of the server,
    /// with its parameters logged before).
    Started {
        job: String,
        name: String,
        params: Vec<(String, String)>,
        tags: Vec<(String, String)>,
        start_unix_ms: i64,
        resumed: bool,
    },
    /// Metrics at one step.
    Metrics { job: String, step: i64, unix_ms: i64, values: Vec<(String, f64)> },
    /// The job ended.
    Ended { job: String, status: RunStatus, end_unix_ms: i64 },
}

impl Record {
    fn job(&self) -> &str {
        match self {
            Record::Started { job, .. } | Record::Metrics { job, .. } | Record::Ended { job, .. } => job,
        }
    }
}

/// The tracking server's address, from an `http://host:port[/path]` URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackingUri {
    /// `host:port` (port 80 when the URI has none).
    pub authority: String,
    /// The path the API lies under, without a trailing `/` (often empty).
    pub base_path: String,
}

impl TrackingUri {
    /// Parses `uri`; the error says what is wrong with it.
    pub fn parse(uri: &str) -> Result<Self, String> {
        let Some(rest) = uri.strip_prefix("http://") else {
            return Err(if uri.starts_with("https://") {
                "https:// is not supported: give the tracking server's plain http:// address \
                 (or a TLS-terminating proxy's)"
                    .to_owned()
            } else {
                "must be an http://host:port URI of an MLflow tracking server".to_owned()
            });
        };
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        if authority.is_empty() || authority.contains('@') || authority.contains(['?', '#']) {
            return Err("must be an http://host:port URI (no user, query or fragment)".to_owned());
        }
        if path.contains(['?', '#']) {
            return Err("must be an http://host:port[/path] URI (no query or fragment)".to_owned());
        }
        let has_port = authority.rsplit_once(':').is_some_and(|(_, p)| !p.contains(']'));
        let authority = if has_port { authority.to_owned() } else { format!("{authority}:80") };
        let base_path = path.trim_end_matches('/');
        let base_path = if base_path.is_empty() { String::new() } else { format!("/{base_path}") };
        Ok(Self { authority, base_path })
    }
}

/// The handle the server records through; cheap to clone.
#[derive(Clone, Debug)]
pub struct MlflowTracker {
    queue: mpsc::Sender<Record>,
    dropped: Arc<AtomicU64>,
}

impl MlflowTracker {
    /// Starts the background task that sends records to `tracking_uri`,
    /// into the experiment named `experiment`. Needs a Tokio runtime.
    pub fn start(tracking_uri: &str, experiment: &str) -> Result<Self, String> {
        let uri = TrackingUri::parse(tracking_uri)?;
        let (queue, records) = mpsc::channel(QUEUE_RECORDS);
        let sender = Sender { uri, tracking_uri: tracking_uri.to_owned(), connection: None };
        let client =
            Client { api: sender, experiment: experiment.to_owned(), experiment_id: None, runs: HashMap::new() };
        tokio::spawn(client.run(records));
        Ok(Self { queue, dropped: Arc::default() })
    }

    /// Queues `record`; never waits. A full queue drops it.
    pub fn record(&self, record: Record) {
        if self.queue.try_send(record).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                warn!(dropped, "MLflow tracking falls behind: records dropped (the tracker is slow or away)");
            }
        }
    }
}

/// One HTTP/1.1 connection to the tracking server, opened when needed.
struct Sender {
    uri: TrackingUri,
    tracking_uri: String,
    connection: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

/// What went wrong with one request.
#[derive(Debug)]
enum ApiError {
    /// The server answered with an error (MLflow's `error_code`, when it gave one).
    Answer { status: u16, code: String, message: String },
    /// No answer: connection, timeout, a body that is not JSON.
    Transport(String),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Answer { status, code, message } => write!(f, "HTTP {status} {code}: {message}"),
            ApiError::Transport(e) => f.write_str(e),
        }
    }
}

impl ApiError {
    fn is(&self, error_code: &str) -> bool {
        matches!(self, ApiError::Answer { code, .. } if code == error_code)
    }
}

impl Sender {
    async fn connect(&mut self) -> Result<&mut hyper::client::conn::http1::SendRequest<Full<Bytes>>, ApiError> {
        if self.connection.as_ref().is_none_or(|c| c.is_closed()) {
            let stream = tokio::net::TcpStream::connect(&self.uri.authority)
                .await
                .map_err(|e| ApiError::Transport(format!("cannot connect to {}: {e}", self.uri.authority)))?;
            let _ = stream.set_nodelay(true);
            let (sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| ApiError::Transport(format!("HTTP handshake: {e}")))?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    debug!("MLflow connection closed: {e}");
                }
            });
            self.connection = Some(sender);
        }
        Ok(self.connection.as_mut().expect("connected"))
    }

    /// Calls `endpoint` (under `/api/2.0/mlflow/`): GET with `query`, or
    /// POST with `body`; returns the answer's JSON.
    async fn call(&mut self, endpoint: &str, query: Option<&str>, body: Option<&Json>) -> Result<Json, ApiError> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(endpoint, query, body)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => {
                if matches!(e, ApiError::Transport(_)) {
                    self.connection = None;
                }
                Err(e)
            }
            Err(_) => {
                self.connection = None;
                Err(ApiError::Transport(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())))
            }
        }
    }

    async fn exchange(&mut self, endpoint: &str, query: Option<&str>, body: Option<&Json>) -> Result<Json, ApiError> {
        let mut path = format!("{}/api/2.0/mlflow/{endpoint}", self.uri.base_path);
        if let Some(query) = query {
            path = format!("{path}?{query}");
        }
        let (method, body) = match body {
            Some(body) => (http::Method::POST, Bytes::from(body.to_string())),
            None => (http::Method::GET, Bytes::new()),
        };
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, &self.uri.authority)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| ApiError::Transport(format!("request: {e}")))?;
        let connection = self.connect().await?;
        connection.ready().await.map_err(|e| ApiError::Transport(format!("connection: {e}")))?;
        let response = connection.send_request(request).await.map_err(|e| ApiError::Transport(e.to_string()))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| ApiError::Transport(format!("reading the answer: {e}")))?
            .to_bytes();
        let answer: Json =
            if bytes.is_empty() { json!({}) } else { serde_json::from_slice(&bytes).unwrap_or(Json::Null) };
        if !status.is_success() {
            let text = |k: &str| answer.get(k).and_then(Json::as_str).unwrap_or_default().to_owned();
            let message = if answer.is_null() {
                String::from_utf8_lossy(&bytes).chars().take(200).collect()
            } else {
                text("message")
            };
            return Err(ApiError::Answer { status: status.as_u16(), code: text("error_code"), message });
        }
        if answer.is_null() {
            return Err(ApiError::Transport(format!("{endpoint}: the answer is not JSON")));
        }
        Ok(answer)
    }
}

/// The background task's state: the experiment's id and each job's run.
struct Client {
    api: Sender,
    experiment: String,
    experiment_id: Option<String>,
    /// Run id by job id, for the jobs that have not ended.
    runs: HashMap<String, String>,
}

impl Client {
    async fn run(mut self, mut records: mpsc::Receiver<Record>) {
        let mut failing = false;
        while let Some(first) = records.recv().await {
            let mut batch = vec![first];
            while batch.len() < BATCH_METRICS {
                match records.try_recv() {
                    Ok(record) => batch.push(record),
                    Err(_) => break,
                }
            }
            match self.deliver(batch).await {
                Ok(()) if failing => {
                    info!(tracker = %self.api.tracking_uri, "MLflow tracking works again");
                    failing = false;
                }
                Ok(()) => {}
                Err(e) => {
                    if !failing {
                        warn!(tracker = %self.api.tracking_uri, error = %e, "MLflow tracking failed; its records are dropped until the tracker answers");
                    }
                    failing = true;
                }
            }
        }
    }

    /// Sends `batch` in order, each job's consecutive metrics in one request.
    async fn deliver(&mut self, batch: Vec<Record>) -> Result<(), ApiError> {
        let mut pending: Vec<(String, Vec<Json>)> = Vec::new();
        for record in batch {
            match record {
                Record::Metrics { job, step, unix_ms, values } => {
                    let metrics = values
                        .into_iter()
                        .filter(|(_, v)| v.is_finite())
                        .map(|(key, value)| json!({ "key": key, "value": value, "timestamp": unix_ms, "step": step }));
                    match pending.iter_mut().find(|(j, _)| *j == job) {
                        Some((_, list)) => list.extend(metrics),
                        None => pending.push((job, metrics.collect())),
                    }
                }
                other => {
                    if let Some(at) = pending.iter().position(|(j, _)| j == other.job()) {
                        let (job, metrics) = pending.remove(at);
                        self.log_metrics(&job, metrics).await?;
                    }
                    self.apply(other).await?;
                }
            }
        }
        for (job, metrics) in pending {
            self.log_metrics(&job, metrics).await?;
        }
        Ok(())
    }

    async fn apply(&mut self, record: Record) -> Result<(), ApiError> {
        match record {
            Record::Started { job, name, params, tags, start_unix_ms, resumed } => {
                let found = if resumed { self.find_run(&job).await? } else { None };
                let run = match found {
                    Some(run) => run,
                    None => {
                        let run = self.create_run(&job, &name, &tags, start_unix_ms).await?;
                        self.log_params(&run, &params).await?;
                        run
                    }
                };
                self.runs.insert(job, run);
            }
            Record::Ended { job, status, end_unix_ms } => {
                let Some(run) = self.run_of(&job).await? else { return Ok(()) };
                self.api
                    .call(
                        "runs/update",
                        None,
                        Some(&json!({ "run_id": run, "status": status.name(), "end_time": end_unix_ms })),
                    )
                    .await?;
                self.runs.remove(&job);
            }
            Record::Metrics { .. } => unreachable!("batched by deliver"),
        }
        Ok(())
    }

    async fn log_metrics(&mut self, job: &str, metrics: Vec<Json>) -> Result<(), ApiError> {
        let Some(run) = self.run_of(job).await? else { return Ok(()) };
        for chunk in metrics.chunks(BATCH_METRICS) {
            self.api.call("runs/log-batch", None, Some(&json!({ "run_id": run, "metrics": chunk }))).await?;
        }
        Ok(())
    }

    async fn log_params(&mut self, run: &str, params: &[(String, String)]) -> Result<(), ApiError> {
        let params: Vec<Json> = params
            .iter()
            .map(|(key, value)| json!({ "key": key, "value": value.chars().take(PARAM_VALUE_CHARS).collect::<String>() }))
            .collect();
        for chunk in params.chunks(BATCH_PARAMS) {
            self.api.call("runs/log-batch", None, Some(&json!({ "run_id": run, "params": chunk }))).await?;
        }
        Ok(())
    }

    /// The job's run: known, found by its tag (a job this process did not
    /// start), or made now (its start was not recorded: the tracker was away).
    async fn run_of(&mut self, job: &str) -> Result<Option<String>, ApiError> {
        if let Some(run) = self.runs.get(job) {
            return Ok(Some(run.clone()));
        }
        let run = match self.find_run(job).await? {
            Some(run) => run,
            None => self.create_run(job, job, &[], now_unix_ms()).await?,
        };
        self.runs.insert(job.to_owned(), run.clone());
        Ok(Some(run))
    }

    async fn experiment_id(&mut self) -> Result<String, ApiError> {
        if let Some(id) = &self.experiment_id {
            return Ok(id.clone());
        }
        let query = format!("experiment_name={}", percent_encode(&self.experiment));
        let id = match self.api.call("experiments/get-by-name", Some(&query), None).await {
            Ok(answer) => answer["experiment"]["experiment_id"].as_str().map(str::to_owned),
            Err(e) if e.is("RESOURCE_DOES_NOT_EXIST") => {
                match self.api.call("experiments/create", None, Some(&json!({ "name": self.experiment }))).await {
                    Ok(answer) => answer["experiment_id"].as_str().map(str::to_owned),
                    // Another client made it meanwhile.
                    Err(e) if e.is("RESOURCE_ALREADY_EXISTS") => {
                        let answer = self.api.call("experiments/get-by-name", Some(&query), None).await?;
                        answer["experiment"]["experiment_id"].as_str().map(str::to_owned)
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        let id = id.ok_or_else(|| ApiError::Transport("the experiment's answer has no experiment_id".to_owned()))?;
        info!(experiment = %self.experiment, id = %id, tracker = %self.api.tracking_uri, "MLflow experiment");
        self.experiment_id = Some(id.clone());
        Ok(id)
    }

    async fn create_run(
        &mut self,
        job: &str,
        name: &str,
        tags: &[(String, String)],
        start_unix_ms: i64,
    ) -> Result<String, ApiError> {
        let experiment = self.experiment_id().await?;
        let mut all_tags = vec![json!({ "key": JOB_TAG, "value": job })];
        all_tags.extend(tags.iter().map(|(key, value)| json!({ "key": key, "value": value })));
        let body =
            json!({ "experiment_id": experiment, "run_name": name, "start_time": start_unix_ms, "tags": all_tags });
        let answer = self.api.call("runs/create", None, Some(&body)).await?;
        answer["run"]["info"]["run_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ApiError::Transport("runs/create answered without a run_id".to_owned()))
    }

    async fn find_run(&mut self, job: &str) -> Result<Option<String>, ApiError> {
        let experiment = self.experiment_id().await?;
        let filter = format!("tags.`{JOB_TAG}` = '{job}'");
        let body = json!({ "experiment_ids": [experiment], "filter": filter, "max_results": 1 });
        let answer = self.api.call("runs/search", None, Some(&body)).await?;
        Ok(answer["runs"][0]["info"]["run_id"].as_str().map(str::to_owned))
    }
}

fn now_unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// `text` as a URL query value.
fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracking_uris_are_plain_http_with_a_port() {
        let uri = TrackingUri::parse("http://127.0.0.1:5000").unwrap();
        assert_eq!((uri.authority.as_str(), uri.base_path.as_str()), ("127.0.0.1:5000", ""));
        let uri = TrackingUri::parse("http://mlflow.internal/tracking/").unwrap();
        assert_eq!((uri.authority.as_str(), uri.base_path.as_str()), ("mlflow.internal:80", "/tracking"));
        let uri = TrackingUri::parse("http://[::1]:5000/").unwrap();
        assert_eq!(uri.authority, "[::1]:5000");
        assert!(TrackingUri::parse("https://mlflow.example.com").unwrap_err().contains("https:// is not supported"));
        assert!(TrackingUri::parse("mlflow:5000").unwrap_err().contains("http://host:port"));
        assert!(TrackingUri::parse("http://user:pw@host:5000").is_err());
        assert!(TrackingUri::parse("http://").is_err());
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(percent_encode("rwp jobs/σ"), "rwp%20jobs%2F%CF%83");
    }

    #[tokio::test]
    async fn an_unreachable_tracker_never_blocks_the_caller() {
        // A port nothing listens on: every delivery fails, records are dropped.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let tracker = MlflowTracker::start(&format!("http://127.0.0.1:{port}"), "rwp").unwrap();
        let started = std::time::Instant::now();
        for step in 0..(QUEUE_RECORDS as i64 * 2) {
            tracker.record(Record::Metrics { job: "j".into(), step, unix_ms: 0, values: vec![("loss".into(), 1.0)] });
        }
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    }
}
