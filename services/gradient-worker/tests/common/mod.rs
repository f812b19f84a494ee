//! Shared helpers of the worker's tests: a small job computed locally with
//! rwp-core (the expected results), and an in-process fake `WorkerService`
//! that hands out a fixed list of tasks and records what workers do.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rwp_core::data::Dataset;
use rwp_core::model::Model;
use rwp_core::wire;
use rwp_gradient_worker::{WorkerConfig, WorkerError, WorkerReport};
use rwp_proto::v1::gradient_chunk::Part;
use rwp_proto::v1::worker_service_server::{WorkerService, WorkerServiceServer};
use rwp_proto::v1::{self, GradientHeader};
use rwp_spec::plan::{init_seed, tasks_for_step, Sampler};
use rwp_spec::{JobSpec, Method, Role, Schedule};
use tch::Device;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status, Streaming};

pub const JOB_ID: &str = "job-1";

/// What rwp-core computes for one task, locally.
#[derive(Debug, Clone)]
pub struct Expected {
    pub task: rwp_spec::Task,
    pub payload: Vec<u8>,
    pub gradient_bytes: u64,
    pub buffer_bytes: u64,
    pub loss: f64,
    pub accuracy: f64,
}

/// The small job of the tests and its step-0 results.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub spec: JobSpec,
    /// The step-0 weights snapshot.
    pub snapshot: Bytes,
    /// The clean task, then the perturbed one.
    pub expected: Vec<Expected>,
    pub buffers_len: u64,
}

/// m-ARWP on the built-in dataset with the small CNN, batches of 32, 1 epoch.
pub fn small_spec() -> JobSpec {
    let mut spec = JobSpec::reference(Method::MArwp);
    spec.batch_size = 32;
    spec.epochs = 1;
    spec
}

fn returns_buffers(spec: &JobSpec, role: Role) -> bool {
    match role {
        Role::Clean | Role::Sam => true,
        Role::Perturbed => spec.method.bn_stats_from_perturbed(),
    }
}

/// Computes the step-0 tasks of [`small_spec`] with rwp-core on the CPU with
/// one thread, as the worker must.
pub fn fixture() -> Fixture {
    tch::set_num_threads(1);
    let spec = small_spec();
    let data = Dataset::for_spec(&spec).unwrap();
    let model = Model::new(spec.model, data.shape, data.classes);
    let schedule = Schedule::new(&spec, data.train.len()).unwrap();
    let mut sampler = Sampler::new(&spec, &schedule, data.train.len());
    let (weights, buffers) = model.init(init_seed(&spec), Device::Cpu);
    let snapshot = wire::encode_snapshot(&model, &weights, &buffers, None);
    let tasks = tasks_for_step(&spec, &schedule, 0);
    assert_eq!(tasks.iter().map(|t| t.role).collect::<Vec<_>>(), [Role::Clean, Role::Perturbed]);
    let expected = tasks
        .into_iter()
        .map(|task| {
            let batch = data.train_batch(&sampler.shard(&task)).unwrap();
            let result = rwp_core::grad::compute_task(&spec, &model, &weights, &buffers, &task, &batch, None);
            let mut payload = wire::encode_gradients(&result.grads, spec.gradient_encoding);
            let gradient_bytes = payload.len() as u64;
            let mut buffer_bytes = 0;
            if returns_buffers(&spec, task.role) {
                let b = wire::encode_buffers(result.buffers.as_ref().unwrap());
                buffer_bytes = b.len() as u64;
                payload.extend(b);
            }
            Expected { task, payload, gradient_bytes, buffer_bytes, loss: result.loss, accuracy: result.accuracy }
        })
        .collect();
    Fixture { spec, snapshot: Bytes::from(snapshot), expected, buffers_len: wire::buffers_len(&model) as u64 }
}

/// The wire task of one of the fixture's tasks.
pub fn wire_task(spec: &JobSpec, task: &rwp_spec::Task) -> v1::Task {
    v1::Task {
        lease_id: String::new(),
        job_id: JOB_ID.to_owned(),
        spec: Some(spec.into()),
        step: task.step,
        role: v1::Role::from(task.role).into(),
        shard: task.shard,
        num_shards: task.num_shards,
        noise_seed: task.noise_seed,
        sigma: task.sigma,
        lease_deadline_unix_ms: 0,
        returns_buffers: returns_buffers(spec, task.role),
        timeout_ms: 0,
        evaluation: None,
    }
}

/// The wire task of an evaluation shard of the fixture's job.
pub fn wire_eval_task(spec: &JobSpec, task: rwp_spec::eval::EvalTask) -> v1::Task {
    v1::Task {
        lease_id: String::new(),
        job_id: JOB_ID.to_owned(),
        spec: Some(spec.into()),
        step: task.version,
        evaluation: Some(task.into()),
        ..v1::Task::default()
    }
}

/// A push as the fake server received it.
#[derive(Debug, Clone)]
pub struct RecordedPush {
    pub header: GradientHeader,
    pub chunk_sizes: Vec<usize>,
    pub payload: Vec<u8>,
}

/// What the fake server hands out and what it saw.
#[derive(Debug, Default)]
pub struct FakeState {
    /// Prefix of the worker ids this server gives (a "restarted" server
    /// does not know the ids of the previous one).
    pub generation: String,
    pub tasks: VecDeque<v1::Task>,
    /// Snapshots by (job, version).
    pub weights: HashMap<(String, u64), Bytes>,
    pub weights_chunk: usize,
    /// Delay before FetchWeights answers (to catch a worker mid-task).
    pub fetch_delay: Duration,
    pub renew_interval_ms: u32,
    pub registered: Vec<(String, v1::RegisterRequest)>,
    pub known_workers: HashSet<String>,
    /// Lease ids handed out, in order.
    pub leased: Vec<String>,
    pub renewals: Vec<String>,
    pub releases: Vec<String>,
    /// The error each release gave (empty when none).
    pub release_errors: Vec<String>,
    pub fetches: Vec<(String, u64)>,
    /// Model files by the digest asked for (the bytes may be wrong on purpose).
    pub models: HashMap<String, Bytes>,
    pub model_fetches: Vec<String>,
    pub pushes: Vec<RecordedPush>,
    pub evaluations: Vec<v1::PushEvaluationRequest>,
    next_lease: u64,
}

impl FakeState {
    pub fn new(generation: &str, fixture: &Fixture, tasks: impl IntoIterator<Item = v1::Task>) -> Self {
        Self {
            generation: generation.to_owned(),
            tasks: tasks.into_iter().collect(),
            weights: HashMap::from([((JOB_ID.to_owned(), 0), fixture.snapshot.clone())]),
            weights_chunk: 10_000,
            renew_interval_ms: 100,
            ..Self::default()
        }
    }
}

#[derive(Debug, Clone)]
pub struct FakeServer {
    pub state: Arc<Mutex<FakeState>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

impl FakeServer {
    fn check_worker(&self, worker_id: &str) -> Result<(), Status> {
        if self.state.lock().unwrap().known_workers.contains(worker_id) {
            Ok(())
        } else {
            Err(Status::not_found(format!("unknown worker {worker_id}")))
        }
    }
}

#[tonic::async_trait]
impl WorkerService for FakeServer {
    async fn register(&self, request: Request<v1::RegisterRequest>) -> Result<Response<v1::RegisterResponse>, Status> {
        let mut s = self.state.lock().unwrap();
        let worker_id = format!("{}-worker-{}", s.generation, s.registered.len() + 1);
        s.registered.push((worker_id.clone(), request.into_inner()));
        s.known_workers.insert(worker_id.clone());
        Ok(Response::new(v1::RegisterResponse { worker_id, renew_interval_ms: s.renew_interval_ms }))
    }

    type TasksStream = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<v1::Offer, Status>> + Send>>;

    /// This fake serves tasks one call at a time: the worker falls back to LeaseTask.
    async fn tasks(
        &self,
        _: Request<tonic::Streaming<v1::WorkerReady>>,
    ) -> Result<Response<Self::TasksStream>, Status> {
        Err(Status::unimplemented("the fake server leases with LeaseTask"))
    }

    async fn lease_task(
        &self,
        request: Request<v1::LeaseTaskRequest>,
    ) -> Result<Response<v1::LeaseTaskResponse>, Status> {
        let request = request.into_inner();
        self.check_worker(&request.worker_id)?;
        let task = {
            let mut s = self.state.lock().unwrap();
            s.tasks.pop_front().map(|mut task| {
                s.next_lease += 1;
                task.lease_id = format!("{}-lease-{}", s.generation, s.next_lease);
                task.lease_deadline_unix_ms = now_ms() + 30_000;
                s.leased.push(task.lease_id.clone());
                task
            })
        };
        if task.is_none() {
            tokio::time::sleep(Duration::from_millis(u64::from(request.wait_ms).min(100))).await;
        }
        Ok(Response::new(v1::LeaseTaskResponse { task, inspection: None }))
    }

    async fn renew_lease(
        &self,
        request: Request<v1::RenewLeaseRequest>,
    ) -> Result<Response<v1::RenewLeaseResponse>, Status> {
        let request = request.into_inner();
        self.check_worker(&request.worker_id)?;
        self.state.lock().unwrap().renewals.push(request.lease_id);
        Ok(Response::new(v1::RenewLeaseResponse { lease_deadline_unix_ms: now_ms() + 30_000 }))
    }

    async fn release_lease(
        &self,
        request: Request<v1::ReleaseLeaseRequest>,
    ) -> Result<Response<v1::ReleaseLeaseResponse>, Status> {
        let request = request.into_inner();
        self.check_worker(&request.worker_id)?;
        let mut s = self.state.lock().unwrap();
        s.releases.push(request.lease_id);
        s.release_errors.push(request.error);
        Ok(Response::new(v1::ReleaseLeaseResponse {}))
    }

    type FetchWeightsStream = tokio_stream::Iter<std::vec::IntoIter<Result<v1::WeightsChunk, Status>>>;

    async fn fetch_weights(
        &self,
        request: Request<v1::FetchWeightsRequest>,
    ) -> Result<Response<Self::FetchWeightsStream>, Status> {
        let request = request.into_inner();
        let (bytes, chunk, delay) = {
            let mut s = self.state.lock().unwrap();
            s.fetches.push((request.job_id.clone(), request.version));
            let bytes = s
                .weights
                .get(&(request.job_id.clone(), request.version))
                .cloned()
                .ok_or_else(|| Status::not_found("no such weights version"))?;
            (bytes, s.weights_chunk, s.fetch_delay)
        };
        tokio::time::sleep(delay).await;
        let total = bytes.len();
        let chunks = (0..total.div_ceil(chunk))
            .map(|i| {
                let start = i * chunk;
                Ok(v1::WeightsChunk {
                    version: request.version,
                    total_bytes: total as u64,
                    offset: start as u64,
                    data: bytes.slice(start..(start + chunk).min(total)),
                })
            })
            .collect::<Vec<_>>();
        Ok(Response::new(tokio_stream::iter(chunks)))
    }

    type FetchModelStream = tokio_stream::Iter<std::vec::IntoIter<Result<v1::ModelChunk, Status>>>;

    async fn fetch_model(
        &self,
        request: Request<v1::FetchModelRequest>,
    ) -> Result<Response<Self::FetchModelStream>, Status> {
        let sha256 = request.into_inner().sha256;
        let bytes = {
            let mut s = self.state.lock().unwrap();
            s.model_fetches.push(sha256.clone());
            s.models.get(&sha256).cloned().ok_or_else(|| Status::not_found("no such model file"))?
        };
        let chunk = v1::ModelChunk { total_bytes: bytes.len() as u64, sha256, offset: 0, data: bytes };
        Ok(Response::new(tokio_stream::iter(vec![Ok(chunk)])))
    }

    async fn push_inspection(
        &self,
        _request: Request<v1::PushInspectionRequest>,
    ) -> Result<Response<v1::PushInspectionResponse>, Status> {
        Err(Status::unimplemented("this fake server hands out no inspections"))
    }

    async fn push_gradient(
        &self,
        request: Request<Streaming<v1::GradientChunk>>,
    ) -> Result<Response<v1::PushGradientResponse>, Status> {
        let mut stream = request.into_inner();
        let first = stream.message().await?.ok_or_else(|| Status::invalid_argument("empty push"))?;
        let Some(Part::Header(header)) = first.part else {
            return Err(Status::invalid_argument("a push starts with its header"));
        };
        self.check_worker(&header.worker_id)?;
        let mut chunk_sizes = Vec::new();
        let mut payload = Vec::new();
        while let Some(chunk) = stream.message().await? {
            match chunk.part {
                Some(Part::Data(data)) => {
                    chunk_sizes.push(data.len());
                    payload.extend_from_slice(&data);
                }
                _ => return Err(Status::invalid_argument("a second header")),
            }
        }
        let mut s = self.state.lock().unwrap();
        let duplicate = s.pushes.iter().any(|p| p.header.lease_id == header.lease_id);
        s.pushes.push(RecordedPush { header, chunk_sizes, payload });
        Ok(Response::new(v1::PushGradientResponse { accepted: !duplicate }))
    }

    async fn push_evaluation(
        &self,
        request: Request<v1::PushEvaluationRequest>,
    ) -> Result<Response<v1::PushEvaluationResponse>, Status> {
        let push = request.into_inner();
        self.check_worker(&push.worker_id)?;
        let mut s = self.state.lock().unwrap();
        let duplicate = s.evaluations.iter().any(|p| p.lease_id == push.lease_id);
        s.evaluations.push(push);
        Ok(Response::new(v1::PushEvaluationResponse { accepted: !duplicate }))
    }
}

/// A running fake server.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    pub server: FakeServer,
    stop: Option<oneshot::Sender<()>>,
    join: JoinHandle<()>,
}

impl Running {
    /// Serves `state` on `listener`.
    pub fn start(listener: TcpListener, state: FakeState) -> Self {
        let addr = listener.local_addr().unwrap();
        let server = FakeServer { state: Arc::new(Mutex::new(state)) };
        let (stop, stopped) = oneshot::channel::<()>();
        let service = WorkerServiceServer::new(server.clone());
        let join = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), async {
                    stopped.await.ok();
                })
                .await
                .unwrap();
        });
        Self { addr, server, stop: Some(stop), join }
    }

    /// Binds 127.0.0.1 on an unused port and serves `state` there.
    pub async fn start_local(state: FakeState) -> Self {
        Self::start(TcpListener::bind("127.0.0.1:0").await.unwrap(), state)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Shuts the server down gracefully (connections get GOAWAY).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), self.join).await.unwrap().unwrap();
    }

    /// Waits until `done` holds on the server's state, up to `limit`.
    pub async fn wait_for(&self, limit: Duration, done: impl Fn(&FakeState) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if done(&self.server.state.lock().unwrap()) {
                return true;
            }
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The worker configuration of the tests: CPU, one thread, small chunks.
pub fn worker_config(server: &str) -> WorkerConfig {
    WorkerConfig {
        server: server.to_owned(),
        name: "test-worker".to_owned(),
        device: "cpu".to_owned(),
        threads: 1,
        lease_wait_ms: 100,
        chunk_bytes: 4096,
        max_backoff_ms: 400,
        drain_timeout_ms: 30_000,
        ..WorkerConfig::default()
    }
}

/// A worker running in the background with a shutdown trigger.
#[derive(Debug)]
pub struct Worker {
    trigger: Option<oneshot::Sender<()>>,
    join: JoinHandle<Result<WorkerReport, WorkerError>>,
}

impl Worker {
    pub fn start(config: WorkerConfig) -> Self {
        // Logs show with `RUST_LOG=debug cargo test -- --nocapture`.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let (trigger, triggered) = oneshot::channel::<()>();
        let join = tokio::spawn(rwp_gradient_worker::run(config, async {
            triggered.await.ok();
        }));
        Self { trigger: Some(trigger), join }
    }

    /// Triggers shutdown and waits (up to `limit`) for the report.
    pub async fn shutdown(mut self, limit: Duration) -> WorkerReport {
        if let Some(t) = self.trigger.take() {
            let _ = t.send(());
        }
        tokio::time::timeout(limit, self.join).await.expect("the worker stops in time").unwrap().unwrap()
    }
}
