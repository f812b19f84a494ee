//! A scripted `rwp.v1.JobService` on loopback, in its own thread: canned
//! jobs with a replayable history and, for running jobs, live events; it
//! records what was submitted and cancelled.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rwp_proto::v1::{
    self,
    job_event::Event,
    job_service_server::{JobService, JobServiceServer},
};
use rwp_sdk::{JobSpec, Method};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// A job the mock serves.
#[derive(Clone, Debug)]
pub struct MockJob {
    /// The record `GetJob` and `ListJobs` return.
    pub record: v1::Job,
    /// Step metrics and evaluations already recorded (replayed by `WatchJob`).
    pub history: Vec<v1::JobEvent>,
    /// Events that follow the history live, each after its delay; then,
    /// if `ends` is set, the terminal record.
    pub live: Vec<(Duration, v1::JobEvent)>,
    /// The terminal record sent last; `None`: the watch stays open.
    pub ends: Option<v1::Job>,
}

#[derive(Default, Debug)]
pub struct Recorded {
    pub submitted: Vec<(String, JobSpec)>,
    /// The bytes of each `UploadModel` call, with the digest it announced.
    pub uploads: Vec<(String, Vec<u8>)>,
    pub cancelled: Vec<String>,
    /// The digest of each `DeleteModel` call that found its file.
    pub deleted_models: Vec<String>,
    /// The `authorization` metadata of each `ListJobs` call.
    pub authorization: Vec<Option<String>>,
}

#[derive(Clone)]
struct Service {
    jobs: Arc<Mutex<BTreeMap<String, MockJob>>>,
    recorded: Arc<Mutex<Recorded>>,
}

pub struct MockServer {
    pub url: String,
    pub recorded: Arc<Mutex<Recorded>>,
    jobs: Arc<Mutex<BTreeMap<String, MockJob>>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MockServer {
    pub fn start(jobs: Vec<MockJob>) -> Self {
        let jobs = Arc::new(Mutex::new(jobs.into_iter().map(|j| (j.record.id.clone(), j)).collect()));
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let service = Service { jobs: Arc::clone(&jobs), recorded: Arc::clone(&recorded) };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                tonic::transport::Server::builder()
                    .add_service(JobServiceServer::new(service))
                    .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
            runtime.shutdown_timeout(Duration::from_millis(100));
        });
        Self { url, recorded, jobs, stop: Some(stop), thread: Some(thread) }
    }

    pub fn job(&self, id: &str) -> Option<v1::Job> {
        self.jobs.lock().unwrap().get(id).map(|j| j.record.clone())
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn not_found(id: &str) -> Status {
    Status::not_found(format!("job {id} not found"))
}

#[tonic::async_trait]
impl JobService for Service {
    async fn submit_job(&self, request: Request<v1::SubmitJobRequest>) -> Result<Response<v1::Job>, Status> {
        let r = request.into_inner();
        let spec = JobSpec::try_from(r.spec.ok_or_else(|| Status::invalid_argument("no spec"))?)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut jobs = self.jobs.lock().unwrap();
        let id = format!("j-{:06}", jobs.len() + 1);
        // It runs 8 quick updates and succeeds.
        let mut record = job(&id, &r.name, spec.method, v1::JobState::Running, 0, 8);
        record.spec = Some((&spec).into());
        let mut ends = record.clone();
        ends.state = v1::JobState::Succeeded as i32;
        ends.step = 8;
        ends.last_step = Some(step_metrics(8, 0.05));
        ends.last_evaluation = Some(v1::Evaluation {
            step: 8,
            epoch: 2,
            test_loss: 0.9,
            test_accuracy: 0.55,
            wall_time_s: 0.41,
            ..v1::Evaluation::default()
        });
        let live = history(0, 8, 0.05).into_iter().map(|e| (Duration::from_millis(20), e)).collect();
        jobs.insert(id.clone(), MockJob { record: record.clone(), history: vec![], live, ends: Some(ends) });
        self.recorded.lock().unwrap().submitted.push((r.name, spec));
        Ok(Response::new(record))
    }

    async fn upload_model(
        &self,
        request: Request<tonic::Streaming<v1::ModelChunk>>,
    ) -> Result<Response<v1::ModelFile>, Status> {
        let mut stream = request.into_inner();
        let (mut announced, mut bytes) = (None, Vec::new());
        while let Some(chunk) = stream.message().await? {
            announced.get_or_insert((chunk.sha256.clone(), chunk.total_bytes));
            bytes.extend_from_slice(&chunk.data);
        }
        let (sha256, size_bytes) = announced.ok_or_else(|| Status::invalid_argument("no chunks"))?;
        self.recorded.lock().unwrap().uploads.push((sha256.clone(), bytes));
        Ok(Response::new(v1::ModelFile { sha256, size_bytes }))
    }

    /// The uploads so far, as alice's, uploaded a minute ago.
    async fn list_models(&self, _: Request<v1::ListModelsRequest>) -> Result<Response<v1::ListModelsResponse>, Status> {
        let uploaded_unix_ms = now_ms() - 60_000;
        let recorded = self.recorded.lock().unwrap();
        let models = recorded
            .uploads
            .iter()
            .filter(|(sha256, _)| !recorded.deleted_models.contains(sha256))
            .map(|(sha256, bytes)| v1::StoredModel {
                sha256: sha256.clone(),
                size_bytes: bytes.len() as u64,
                uploaded_unix_ms,
                owner: "alice".into(),
            })
            .collect();
        Ok(Response::new(v1::ListModelsResponse { models }))
    }

    async fn delete_model(
        &self,
        request: Request<v1::DeleteModelRequest>,
    ) -> Result<Response<v1::DeleteModelResponse>, Status> {
        let sha256 = request.into_inner().sha256;
        let mut recorded = self.recorded.lock().unwrap();
        if !recorded.uploads.iter().any(|(s, _)| *s == sha256) || recorded.deleted_models.contains(&sha256) {
            return Err(Status::not_found(format!("model file {sha256} is not stored on this server for this caller")));
        }
        recorded.deleted_models.push(sha256);
        Ok(Response::new(v1::DeleteModelResponse {}))
    }

    async fn get_job(&self, request: Request<v1::GetJobRequest>) -> Result<Response<v1::Job>, Status> {
        let id = request.into_inner().job_id;
        let jobs = self.jobs.lock().unwrap();
        jobs.get(&id).map(|j| Response::new(j.record.clone())).ok_or_else(|| not_found(&id))
    }

    async fn list_jobs(&self, request: Request<v1::ListJobsRequest>) -> Result<Response<v1::ListJobsResponse>, Status> {
        let authorization = request.metadata().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
        self.recorded.lock().unwrap().authorization.push(authorization);
        let jobs = self.jobs.lock().unwrap().values().map(|j| j.record.clone()).collect();
        Ok(Response::new(v1::ListJobsResponse { jobs }))
    }

    type WatchJobStream = BoxStream<v1::JobEvent>;

    async fn watch_job(&self, request: Request<v1::WatchJobRequest>) -> Result<Response<Self::WatchJobStream>, Status> {
        let r = request.into_inner();
        let job = self.jobs.lock().unwrap().get(&r.job_id).cloned().ok_or_else(|| not_found(&r.job_id))?;
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let from = r.from_step;
            let wanted = |e: &v1::JobEvent| match &e.event {
                Some(Event::Step(m)) => m.step > from,
                Some(Event::Evaluation(e)) => e.step > from,
                _ => true,
            };
            for event in job.history.iter().filter(|e| wanted(e)) {
                if tx.send(Ok(event.clone())).await.is_err() {
                    return;
                }
            }
            for (delay, event) in job.live.iter().filter(|(_, e)| wanted(e)) {
                tokio::time::sleep(*delay).await;
                if tx.send(Ok(event.clone())).await.is_err() {
                    return;
                }
            }
            match job.ends {
                Some(end) => {
                    let _ = tx.send(Ok(v1::JobEvent { event: Some(Event::Job(end)) })).await;
                }
                // A job that goes on: keep the stream open until the client leaves.
                None => tx.closed().await,
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn cancel_job(&self, request: Request<v1::CancelJobRequest>) -> Result<Response<v1::Job>, Status> {
        let id = request.into_inner().job_id;
        let mut jobs = self.jobs.lock().unwrap();
        let job = jobs.get_mut(&id).ok_or_else(|| not_found(&id))?;
        if job.record.state == v1::JobState::Running as i32 {
            job.record.state = v1::JobState::Cancelled as i32;
        }
        self.recorded.lock().unwrap().cancelled.push(id);
        Ok(Response::new(job.record.clone()))
    }

    type WatchJobLogStream = BoxStream<v1::JobLogEntry>;

    // Logs and workers run against the real server (tests/job_logs.rs, tests/workers.rs).
    async fn watch_job_log(
        &self,
        _: Request<v1::WatchJobLogRequest>,
    ) -> Result<Response<Self::WatchJobLogStream>, Status> {
        Err(Status::unimplemented("the mock server keeps no logs"))
    }

    async fn list_workers(
        &self,
        _: Request<v1::ListWorkersRequest>,
    ) -> Result<Response<v1::ListWorkersResponse>, Status> {
        Err(Status::unimplemented("the mock server has no workers"))
    }

    // Resuming and deleting run against the real server (tests/job_lifecycle.rs).
    async fn inspect_data(&self, _: Request<v1::InspectDataRequest>) -> Result<Response<v1::DataReport>, Status> {
        Err(Status::unimplemented("the mock server has no workers to inspect data"))
    }

    async fn resume_job(&self, _: Request<v1::ResumeJobRequest>) -> Result<Response<v1::Job>, Status> {
        Err(Status::unimplemented("the mock server does not resume jobs"))
    }

    async fn delete_job(&self, _: Request<v1::DeleteJobRequest>) -> Result<Response<v1::DeleteJobResponse>, Status> {
        Err(Status::unimplemented("the mock server does not delete jobs"))
    }

    // The mock serves jobs only; sweeps run against the real server (tests/sweep_*.rs).
    async fn create_sweep(&self, _: Request<v1::CreateSweepRequest>) -> Result<Response<v1::Sweep>, Status> {
        Err(Status::unimplemented("the mock server has no sweeps"))
    }

    async fn get_sweep(&self, _: Request<v1::GetSweepRequest>) -> Result<Response<v1::Sweep>, Status> {
        Err(Status::unimplemented("the mock server has no sweeps"))
    }

    async fn list_sweeps(&self, _: Request<v1::ListSweepsRequest>) -> Result<Response<v1::ListSweepsResponse>, Status> {
        Err(Status::unimplemented("the mock server has no sweeps"))
    }

    type WatchSweepStream = BoxStream<v1::Sweep>;

    async fn watch_sweep(&self, _: Request<v1::WatchSweepRequest>) -> Result<Response<Self::WatchSweepStream>, Status> {
        Err(Status::unimplemented("the mock server has no sweeps"))
    }

    async fn cancel_sweep(&self, _: Request<v1::CancelSweepRequest>) -> Result<Response<v1::Sweep>, Status> {
        Err(Status::unimplemented("the mock server has no sweeps"))
    }

    type ExportWeightsStream = BoxStream<v1::ExportChunk>;

    async fn export_weights(
        &self,
        request: Request<v1::ExportWeightsRequest>,
    ) -> Result<Response<Self::ExportWeightsStream>, Status> {
        let id = request.into_inner().job_id;
        let step = self.jobs.lock().unwrap().get(&id).ok_or_else(|| not_found(&id))?.record.step;
        let data: Vec<u8> = (0..2500u32).map(|i| (i % 251) as u8).collect();
        let chunks: Vec<Result<v1::ExportChunk, Status>> = data
            .chunks(1000)
            .enumerate()
            .map(|(i, c)| {
                Ok(v1::ExportChunk {
                    step,
                    total_bytes: data.len() as u64,
                    offset: (i * 1000) as u64,
                    data: c.to_vec().into(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }
}

/// A job record with the method's reference spec.
pub fn job(id: &str, name: &str, method: Method, state: v1::JobState, step: u64, total: u64) -> v1::Job {
    v1::Job {
        id: id.to_owned(),
        name: name.to_owned(),
        spec: Some((&JobSpec::reference(method)).into()),
        state: state as i32,
        step,
        total_updates: total,
        updates_per_epoch: 4,
        error: String::new(),
        created_unix_ms: now_ms() - 90_000,
        updated_unix_ms: now_ms(),
        skipped_updates: 0,
        skipped_samples: 0,
        skipped_sample_examples: Vec::new(),
        last_step: (step > 0).then(|| step_metrics(step, 1.0)),
        last_evaluation: None,
        owner: "alice".to_owned(),
        ..v1::Job::default()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Metrics of update `step` (numbered from 1), `seconds_per_update` apart.
pub fn step_metrics(step: u64, seconds_per_update: f64) -> v1::StepMetrics {
    let before = (step - 1) as f64;
    v1::StepMetrics {
        step,
        loss: 2.3 / (1.0 + before / 10.0),
        accuracy: (0.1 + before / 50.0).min(0.95),
        perturbed_loss: None,
        lr: 0.1,
        sigma: 0.015,
        wall_time_s: step as f64 * seconds_per_update,
        skipped: false,
    }
}

pub fn step_event(step: u64, seconds_per_update: f64) -> v1::JobEvent {
    v1::JobEvent { event: Some(Event::Step(step_metrics(step, seconds_per_update))) }
}

pub fn evaluation_event(step: u64, seconds_per_update: f64, accuracy: f64) -> v1::JobEvent {
    v1::JobEvent {
        event: Some(Event::Evaluation(v1::Evaluation {
            step,
            epoch: step / 4,
            test_loss: 1.0 - accuracy / 2.0,
            test_accuracy: accuracy,
            wall_time_s: step as f64 * seconds_per_update + 0.01,
            ..v1::Evaluation::default()
        })),
    }
}

/// The updates after the first `from`, up to update `to`, with an
/// evaluation after every fourth.
pub fn history(from: u64, to: u64, seconds_per_update: f64) -> Vec<v1::JobEvent> {
    let mut events = Vec::new();
    for s in from + 1..=to {
        events.push(step_event(s, seconds_per_update));
        if s % 4 == 0 {
            events.push(evaluation_event(s, seconds_per_update, 0.2 + s as f64 / 100.0));
        }
    }
    events
}

/// An ended job with its whole history: `steps` updates, `seconds_per_update` apart.
pub fn ended_job(id: &str, name: &str, method: Method, state: v1::JobState, steps: u64, total: u64) -> MockJob {
    let mut record = job(id, name, method, state, steps, total);
    let events = history(0, steps, 0.5);
    record.last_evaluation = events.iter().rev().find_map(|e| match &e.event {
        Some(Event::Evaluation(ev)) => Some(*ev),
        _ => None,
    });
    record.last_step = (steps > 0).then(|| step_metrics(steps, 0.5));
    if state == v1::JobState::Failed {
        record.error = "shard 1 of update 7: data directory /data/cifar10 is missing".to_owned();
    }
    MockJob { record: record.clone(), history: events, live: vec![], ends: Some(record) }
}
