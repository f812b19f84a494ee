//! Bad input from a worker or client is refused with a gRPC status that names
//! the problem, and the job is unharmed: the honest result for the same task
//! is still accepted afterwards and the job moves on.

use std::time::Duration;

use bytes::Bytes;
use rwp_core::data::Dataset;
use rwp_core::grad::compute_task;
use rwp_core::model::Model;
use rwp_core::wire;
use rwp_parameter_server::config::ServerConfig;
use rwp_proto::v1::job_service_client::JobServiceClient;
use rwp_proto::v1::worker_service_client::WorkerServiceClient;
use rwp_proto::v1::{self, gradient_chunk::Part, GradientChunk, GradientHeader};
use rwp_spec::plan::Sampler;
use rwp_spec::{JobSpec, Method, NonFinitePolicy, Schedule};
use tch::Device;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::Code;

struct Server {
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("data"),
            chunk_bytes: 16 << 10,
            max_message_bytes: 64 << 10,
            torch_threads: 1,
            eval_every_epochs: 0,
            ..ServerConfig::default()
        };
        let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            rwp_parameter_server::serve_with_listener(listener, config, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Self { addr, stop: Some(stop), handle, _dir: dir }
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(20), self.handle).await.expect("clean shutdown").unwrap();
    }
}

struct Worker {
    client: WorkerServiceClient<Channel>,
    jobs: JobServiceClient<Channel>,
    id: String,
}

impl Worker {
    async fn connect(server: &Server) -> Self {
        let url = format!("http://{}", server.addr);
        let mut client = WorkerServiceClient::connect(url.clone()).await.unwrap().max_decoding_message_size(64 << 20);
        let id = client
            .register(v1::RegisterRequest { name: "test".into(), device: "cpu".into() })
            .await
            .unwrap()
            .into_inner()
            .worker_id;
        let jobs = JobServiceClient::connect(url).await.unwrap();
        Self { client, jobs, id }
    }

    async fn lease(&mut self) -> v1::Task {
        let r = self.client.lease_task(v1::LeaseTaskRequest { worker_id: self.id.clone(), wait_ms: 5000 }).await;
        r.unwrap().into_inner().task.expect("a task")
    }

    async fn job(&mut self, id: &str) -> v1::Job {
        self.jobs.get_job(v1::GetJobRequest { job_id: id.into() }).await.unwrap().into_inner()
    }

    /// Pushes `header` then `payload` in chunks of `chunk`.
    async fn push(&mut self, header: GradientHeader, payload: &[u8], chunk: usize) -> Result<bool, tonic::Status> {
        let mut messages = vec![GradientChunk { part: Some(Part::Header(header)) }];
        messages
            .extend(payload.chunks(chunk).map(|c| GradientChunk { part: Some(Part::Data(Bytes::copy_from_slice(c))) }));
        self.client.push_gradient(tokio_stream::iter(messages)).await.map(|r| r.into_inner().accepted)
    }

    async fn snapshot(&mut self, job: &str, version: u64) -> Result<Vec<u8>, tonic::Status> {
        let mut stream =
            self.client.fetch_weights(v1::FetchWeightsRequest { job_id: job.into(), version }).await?.into_inner();
        let mut bytes = Vec::new();
        while let Some(c) = stream.next().await {
            bytes.extend_from_slice(&c?.data);
        }
        Ok(bytes)
    }

    /// The honest result of `task`, computed with the core crate, and its header.
    async fn honest(&mut self, task: &v1::Task) -> (GradientHeader, Vec<u8>) {
        let spec = JobSpec::try_from(task.spec.clone().unwrap()).unwrap();
        let snapshot = self.snapshot(&task.job_id, task.step).await.unwrap();
        tch::set_num_threads(1);
        let data = Dataset::load(spec.dataset, None, spec.augment).unwrap();
        let model = Model::new(spec.model, data.shape, data.classes);
        let schedule = Schedule::new(&spec, data.train.len()).unwrap();
        let state = wire::decode_snapshot(&snapshot, &model, Device::Cpu).unwrap();
        let core_task = rwp_spec::Task {
            step: task.step,
            role: rwp_proto::role_from_wire(task.role).unwrap(),
            shard: task.shard,
            num_shards: task.num_shards,
            noise_seed: task.noise_seed,
            sigma: task.sigma,
        };
        let batch = data.train_batch(&Sampler::new(&spec, &schedule, data.train.len()).shard(&core_task)).unwrap();
        let result =
            compute_task(&spec, &model, &state.weights, &state.buffers, &core_task, &batch, state.factors.as_ref());
        let gradient = wire::encode_gradients(&result.grads, spec.gradient_encoding);
        let buffers =
            if task.returns_buffers { wire::encode_buffers(result.buffers.as_ref().unwrap()) } else { vec![] };
        let header = GradientHeader {
            worker_id: self.id.clone(),
            lease_id: task.lease_id.clone(),
            job_id: task.job_id.clone(),
            step: task.step,
            role: task.role,
            shard: task.shard,
            weights_version: task.step,
            loss: result.loss,
            accuracy: result.accuracy,
            encoding: v1::GradientEncoding::F32 as i32,
            gradient_bytes: gradient.len() as u64,
            buffer_bytes: buffers.len() as u64,
            skipped_samples: Vec::new(),
        };
        let mut payload = gradient;
        payload.extend(buffers);
        (header, payload)
    }
}

fn small_spec(policy: NonFinitePolicy) -> JobSpec {
    let mut spec = JobSpec::reference(Method::Sgd);
    spec.batch_size = 32;
    spec.epochs = 1;
    spec.max_updates = Some(3);
    // Two tasks per update, so a duplicate can arrive while the update is open.
    spec.clean_shards = 2;
    spec.non_finite = policy;
    spec
}

async fn submit(worker: &mut Worker, spec: &JobSpec) -> String {
    let request = v1::SubmitJobRequest {
        name: "bad-input".into(),
        spec: Some(spec.into()),
        request_id: None,
        ..Default::default()
    };
    worker.jobs.submit_job(request).await.unwrap().into_inner().id
}

fn assert_status(result: Result<bool, tonic::Status>, code: Code, needle: &str) {
    let status = result.expect_err("the push must be refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(status.message().contains(needle), "'{needle}' not in: {}", status.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_pushes_are_refused_and_the_job_is_unharmed() {
    let server = Server::start().await;
    let mut w = Worker::connect(&server).await;
    let job = submit(&mut w, &small_spec(NonFinitePolicy::Fail)).await;
    let task = w.lease().await;
    let (header, payload) = w.honest(&task).await;
    let grad_len = header.gradient_bytes as usize;

    // Wrong shape: fewer gradient bytes than the model has.
    let short = GradientHeader { gradient_bytes: header.gradient_bytes - 4, ..header.clone() };
    assert_status(w.push(short, &payload[4..], 8192).await, Code::InvalidArgument, "gradient_bytes");
    // Wrong dtype: bfloat16 for a float32 job.
    let bf16 = GradientHeader { encoding: v1::GradientEncoding::Bf16 as i32, ..header.clone() };
    assert_status(w.push(bf16, &payload, 8192).await, Code::InvalidArgument, "encoding");
    // Missing BatchNorm buffers on a clean task.
    let no_buffers = GradientHeader { buffer_bytes: 0, ..header.clone() };
    assert_status(w.push(no_buffers, &payload[..grad_len], 8192).await, Code::InvalidArgument, "buffer_bytes");
    // A stream that stops mid-gradient.
    assert_status(
        w.push(header.clone(), &payload[..grad_len / 2], 8192).await,
        Code::InvalidArgument,
        "stream ended after",
    );
    // More bytes than announced.
    let mut long = payload.clone();
    long.extend([0u8; 8]);
    assert_status(w.push(header.clone(), &long, 8192).await, Code::InvalidArgument, "exceeds");
    // A message over the server's size limit.
    let oversized = w.push(header.clone(), &payload, 100 << 10).await.expect_err("oversized message refused");
    assert!(matches!(oversized.code(), Code::OutOfRange | Code::ResourceExhausted), "{oversized:?}");
    // Unknown job, unknown lease, stale weights version.
    let unknown_job = GradientHeader { job_id: "job-nope".into(), ..header.clone() };
    assert_status(w.push(unknown_job, &payload, 8192).await, Code::NotFound, "job-nope");
    let unknown_lease = GradientHeader { lease_id: "l-forged".into(), ..header.clone() };
    assert_status(w.push(unknown_lease, &payload, 8192).await, Code::NotFound, "l-forged");
    let stale = GradientHeader { weights_version: header.step + 1, ..header.clone() };
    assert_status(w.push(stale, &payload, 8192).await, Code::FailedPrecondition, "version");
    let fetch = w.snapshot(&job, 7).await.expect_err("only the current version is served");
    assert_eq!(fetch.code(), Code::FailedPrecondition, "{fetch:?}");
    // More samples said to be left out than the batch holds.
    let skipped = GradientHeader { skipped_samples: vec!["x.jpg: corrupt".into(); 33], ..header.clone() };
    assert_status(w.push(skipped, &payload, 8192).await, Code::InvalidArgument, "33 samples said to be left out");
    // An unknown worker must register again.
    let stranger = GradientHeader { worker_id: "w-nobody".into(), ..header.clone() };
    assert_status(w.push(stranger, &payload, 8192).await, Code::NotFound, "register");

    // None of that harmed the job: the honest result goes in, a duplicate is dropped.
    assert_eq!(w.job(&job).await.state, v1::JobState::Running as i32);
    assert!(w.push(header.clone(), &payload, 8192).await.unwrap(), "the honest result is accepted");
    assert!(!w.push(header.clone(), &payload, 8192).await.unwrap(), "duplicate dropped");
    let second = w.lease().await;
    assert_eq!((second.step, second.shard), (0, 1));
    let (second_header, second_payload) = w.honest(&second).await;
    assert!(w.push(second_header, &second_payload, 8192).await.unwrap());
    let next = w.lease().await;
    assert_eq!((next.job_id.as_str(), next.step), (job.as_str(), 1));
    assert_eq!(w.job(&job).await.step, 1);
    // A result for an update already applied is refused, naming why.
    assert_status(w.push(header, &payload, 8192).await, Code::FailedPrecondition, "already applied");
    server.shutdown().await;
}

fn poison(payload: &mut [u8], at: usize) {
    payload[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_finite_gradient_fails_the_job_by_default() {
    let server = Server::start().await;
    let mut w = Worker::connect(&server).await;
    let job = submit(&mut w, &small_spec(NonFinitePolicy::Fail)).await;
    let task = w.lease().await;
    let (header, mut payload) = w.honest(&task).await;
    poison(&mut payload, 0);
    assert_status(w.push(header, &payload, 8192).await, Code::InvalidArgument, "conv1.weight");
    let record = w.job(&job).await;
    assert_eq!(record.state, v1::JobState::Failed as i32);
    assert!(record.error.contains("conv1.weight") && record.error.contains("NaN"), "{}", record.error);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_finite_gradient_skips_the_update_when_asked() {
    let server = Server::start().await;
    let mut w = Worker::connect(&server).await;
    let job = submit(&mut w, &small_spec(NonFinitePolicy::Skip)).await;
    let before = w.snapshot(&job, 0).await.unwrap();
    let task = w.lease().await;
    let (header, mut payload) = w.honest(&task).await;
    poison(&mut payload, header.gradient_bytes as usize - 4);
    assert_status(w.push(header, &payload, 8192).await, Code::InvalidArgument, "skipped");
    let next = w.lease().await;
    assert_eq!(next.step, 1, "the job went on to the next update");
    let record = w.job(&job).await;
    assert_eq!((record.state, record.skipped_updates), (v1::JobState::Running as i32, 1));
    assert!(record.last_step.unwrap().skipped);
    assert_eq!(w.snapshot(&job, 1).await.unwrap(), before, "a skipped update leaves the weights alone");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_keeps_failing_fails_its_job_with_the_reason() {
    let server = Server::start().await;
    let mut w = Worker::connect(&server).await;
    let job = submit(&mut w, &small_spec(NonFinitePolicy::Fail)).await;
    // Giving a task back without an error (a worker stopping) is not a failure.
    let task = w.lease().await;
    let plain = v1::ReleaseLeaseRequest { worker_id: w.id.clone(), lease_id: task.lease_id, ..Default::default() };
    w.client.release_lease(plain).await.unwrap();
    for attempt in 1..=3 {
        let task = w.lease().await;
        assert_eq!((task.step, task.shard), (0, 0), "the same task comes back (attempt {attempt})");
        let failed = v1::ReleaseLeaseRequest {
            worker_id: w.id.clone(),
            lease_id: task.lease_id,
            error: "cannot read /data/cifar: No such file".into(),
            storage_unavailable: false,
        };
        w.client.release_lease(failed).await.unwrap();
        let state = w.job(&job).await.state;
        let expected = if attempt < 3 { v1::JobState::Running } else { v1::JobState::Failed };
        assert_eq!(state, expected as i32, "after {attempt} failures");
    }
    let record = w.job(&job).await;
    assert!(record.error.contains("failed 3 times") && record.error.contains("No such file"), "{}", record.error);
    server.shutdown().await;
}
