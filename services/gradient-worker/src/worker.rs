//! The worker's main loop: register, lease, fetch, compute, push; drain on
//! shutdown.

use std::future::Future;
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use rwp_proto::v1;
use rwp_spec::eval::EvalSplit;
use rwp_spec::payload::Announced;
use rwp_spec::work::{EvalPush, Inspection, InspectionPush, LeasedTask, PushHeader, Work};
use rwp_spec::Role;
use tch::Device;
use tonic::Code;
use tracing::{debug, error, info, info_span, warn, Instrument, Span};

use crate::compute::{ComputeHandle, Computed, GradientOutput, TaskInput};
use crate::models;
use crate::rpc::{self, Session};
use crate::{WorkerConfig, WorkerError};
use rwp_telemetry::{Counter, Histogram, Registry};
use std::sync::Arc;
use tokio::net::TcpListener;

/// What a worker did, returned when it stops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerReport {
    /// Tasks computed and pushed (duplicates included).
    pub tasks_completed: u64,
    /// Pushed results the server already had (`accepted = false`).
    pub duplicates: u64,
    /// Tasks that failed (logged; their leases given back when possible).
    pub tasks_failed: u64,
    /// Leases given back unfinished (failures and shutdown).
    pub leases_released: u64,
    /// Successful `Register` calls (more than one after server restarts).
    pub registrations: u64,
}

/// A task as leased, converted to domain types and ready for the compute thread.
#[derive(Debug)]
struct Leased {
    lease_id: String,
    input: TaskInput,
}

/// The kind of a task, as metrics and spans name it.
fn role_name(work: &Work) -> &'static str {
    match work {
        Work::Gradient { task, .. } => match task.role {
            Role::Clean => "clean",
            Role::Perturbed => "perturbed",
            Role::Sam => "sam",
        },
        Work::Evaluation(task) => match task.split {
            EvalSplit::Test => "evaluation-test",
            EvalSplit::Validation => "evaluation-validation",
        },
    }
}

fn shard_of(work: &Work) -> u32 {
    match work {
        Work::Gradient { task, .. } => task.shard,
        Work::Evaluation(task) => task.shard,
    }
}

fn convert(task: v1::Task) -> Result<Leased, WorkerError> {
    let leased = LeasedTask::try_from(task).map_err(|e| WorkerError::InvalidTask(format!("task.{e}")))?;
    let span = info_span!(
        "rwp.task",
        job = %leased.job_id,
        step = leased.work.version(),
        role = %role_name(&leased.work),
        shard = shard_of(&leased.work),
        lease = %leased.lease_id,
        device = tracing::field::Empty,
        bytes = tracing::field::Empty,
    );
    let input = TaskInput {
        job_id: leased.job_id,
        spec: leased.spec,
        work: leased.work,
        model_file: None,
        timeout: leased.timeout,
        span,
    };
    Ok(Leased { lease_id: leased.lease_id, input })
}

/// Aborts a spawned task when dropped (the lease renewer of a task that is
/// done or abandoned).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Where a task's weights come from, with the stream they may follow on.
struct WeightsFrom<'a> {
    weights: rpc::Weights,
    stream: Option<&'a mut rpc::TaskStream>,
}

/// Fetches (if needed), computes and pushes one task. Returns whether the
/// server accepted the result.
async fn process(
    chunk_bytes: usize,
    model_cache_dir: &std::path::Path,
    compute: &ComputeHandle,
    session: &Session,
    leased: &Leased,
    source: WeightsFrom<'_>,
    metrics: &WorkerMetrics,
) -> Result<bool, WorkerError> {
    let started = Instant::now();
    let renewer = AbortOnDrop(tokio::spawn(
        rpc::keep_renewing(session.clone(), leased.lease_id.clone(), compute.aborter()).instrument(Span::current()),
    ));
    let mut input = leased.input.clone();
    if let Some(file) = &input.spec.model_file {
        input.model_file = Some(models::cached_model(session, model_cache_dir, file).await?);
    }
    let input = &input;
    let version = input.work.version();
    let incoming = match (source.weights, source.stream) {
        (rpc::Weights::Incoming, Some(stream)) => Some(stream),
        _ => None,
    };
    let held = incoming.is_none() && compute.has_weights(&input.job_id, &input.spec, version).await?;
    // The compute thread reads the task's batches while the weights arrive.
    compute.prepare(input.clone())?;
    let snapshot = if let Some(stream) = incoming {
        let bytes = stream.weights(&input.job_id, version, compute.snapshot_buffer()).await?;
        metrics.weight_bytes_in.inc(bytes.len() as f64);
        Some(bytes)
    } else if held {
        None
    } else {
        let bytes = rpc::fetch_weights(session, &input.job_id, version, compute.snapshot_buffer()).await?;
        metrics.weight_bytes_in.inc(bytes.len() as f64);
        Some(bytes)
    };
    let output = compute.compute(input.clone(), snapshot).await?;
    let role = role_name(&input.work);
    metrics.compute_seconds.observe_with(&[("role", role)], output.compute_time.as_secs_f64());
    let push_started = Instant::now();
    let (accepted, bytes, loss) = match (output.computed, &input.work) {
        (Computed::Gradient(gradient), Work::Gradient { task, .. }) => {
            let GradientOutput { payload, gradient_bytes, buffer_bytes, loss, accuracy } = gradient;
            let header = PushHeader {
                worker_id: session.worker_id.clone(),
                lease_id: leased.lease_id.clone(),
                job_id: input.job_id.clone(),
                step: task.step,
                role: task.role,
                shard: task.shard,
                weights_version: task.step,
                loss,
                accuracy,
                announced: Announced { encoding: input.spec.gradient_encoding, gradient_bytes, buffer_bytes },
                skipped: output.skipped,
            };
            let bytes = payload.len();
            Span::current().record("bytes", bytes);
            (rpc::push(session, header, payload.into(), chunk_bytes).await?, bytes, Some(loss))
        }
        (Computed::Evaluation(batches), Work::Evaluation(task)) => {
            let push = EvalPush {
                worker_id: session.worker_id.clone(),
                lease_id: leased.lease_id.clone(),
                job_id: input.job_id.clone(),
                task: *task,
                batches,
                skipped: output.skipped,
            };
            (rpc::push_evaluation(session, push).await?, 0, None)
        }
        _ => return Err(WorkerError::Compute("bug: the result is not of the task's kind".to_owned())),
    };
    drop(renewer);
    metrics.gradient_bytes_out.inc(bytes as f64);
    metrics.tasks.inc_with(&[("role", role), ("outcome", if accepted { "accepted" } else { "duplicate" })], 1.0);
    info!(
        loss,
        bytes,
        compute_ms = output.compute_time.as_millis() as u64,
        push_ms = push_started.elapsed().as_millis() as u64,
        total_ms = started.elapsed().as_millis() as u64,
        accepted,
        "task done"
    );
    if !accepted {
        debug!("the server already had this result (duplicate dropped)");
    }
    Ok(accepted)
}

/// The metric families the worker exports, one typed field each.
#[derive(Clone, Debug)]
struct WorkerMetrics {
    tasks: Counter,
    compute_seconds: Histogram,
    gradient_bytes_out: Counter,
    weight_bytes_in: Counter,
}

impl WorkerMetrics {
    fn new(registry: &Arc<Registry>) -> Self {
        Self {
            tasks: registry.counter(
                "rwp_worker_tasks_total",
                "Tasks finished, by role and outcome (accepted, duplicate, failed).",
            ),
            compute_seconds: registry
                .histogram("rwp_worker_compute_seconds", "Time to compute one task's gradient, by role."),
            gradient_bytes_out: registry
                .counter("rwp_worker_gradient_bytes_out_total", "Bytes of results pushed to the server."),
            weight_bytes_in: registry.counter("rwp_worker_weight_bytes_in_total", "Bytes of weights versions fetched."),
        }
    }
}

fn device_name(device: Device) -> String {
    match device {
        Device::Cuda(n) => format!("cuda:{n}"),
        Device::Mps => "mps".to_owned(),
        Device::Vulkan => "vulkan".to_owned(),
        _ => "cpu".to_owned(),
    }
}

/// Binds the worker's metrics port (`metrics_listen`), if it has one.
pub async fn bind_metrics(config: &WorkerConfig) -> Result<Option<TcpListener>, WorkerError> {
    match config.metrics_listen {
        Some(address) => rwp_telemetry::bind(address)
            .await
            .map(Some)
            .map_err(|reason| WorkerError::Config { field: "metrics_listen", reason }),
        None => Ok(None),
    }
}

/// Runs a worker until `shutdown` resolves, then drains the task in flight
/// (see the crate docs). Errors are those that stop the worker for good: an
/// invalid configuration, an unusable device or a dead compute thread.
pub async fn run(config: WorkerConfig, shutdown: impl Future<Output = ()> + Send) -> Result<WorkerReport, WorkerError> {
    let metrics = bind_metrics(&config).await?;
    run_with_metrics(config, metrics, shutdown).await
}

/// [`run`] with its metrics port already bound (tests bind port 0); the
/// listener given is used whatever `metrics_listen` says.
pub async fn run_with_metrics(
    config: WorkerConfig,
    metrics_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<WorkerReport, WorkerError> {
    config.validate()?;
    rwp_data::cache::configure(config.data_cache_dir.clone(), config.data_cache_bytes);
    let connector = rpc::Connector::new(&config)?;
    let device = rwp_core::trainer::parse_device(&config.device).map_err(|e| WorkerError::Device(e.to_string()))?;
    let (threads, threads_from) = config.compute_threads();
    let sandbox = config.sandbox(&device_name(device), threads);
    if let Err(e) = &sandbox {
        warn!(error = %e, "TorchScript jobs cannot run on this worker");
    }
    let compute = ComputeHandle::spawn(device, threads, sandbox)?;
    info!(
        server = %config.server,
        name = %config.name,
        device = %device_name(device),
        threads,
        threads_from,
        "worker starting"
    );
    let registry = Arc::new(Registry::new());
    let metrics = WorkerMetrics::new(&registry);
    let _otlp_metrics = rwp_telemetry::export_metrics(&registry, "rwp-worker")
        .map_err(|reason| WorkerError::Config { field: "OTEL_EXPORTER_OTLP_ENDPOINT", reason })?;
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_server = match metrics_listener {
        Some(listener) => {
            if let Ok(address) = listener.local_addr() {
                info!(address = %address, "metrics endpoint listening");
            }
            let limits = rwp_telemetry::ConnectionLimits {
                header_read_timeout: Duration::from_millis(config.metrics_header_timeout_ms),
                max_per_peer: config.max_connections_per_peer,
            };
            Some(tokio::spawn(rwp_telemetry::serve_metrics(listener, registry.clone(), limits, async {
                let _ = metrics_stopped.await;
            })))
        }
        None => None,
    };
    let mut worker = Worker {
        metrics,
        config,
        connector,
        device,
        compute: &compute,
        report: WorkerReport::default(),
        session: None,
        tasks: None,
        unary: false,
    };
    let result = worker.serve(shutdown).await;
    let _ = stop_metrics.send(());
    if let Some(handle) = metrics_server {
        let _ = handle.await;
    }
    let report = worker.report;
    // A sandboxed task still running was given back in the drain: stop it.
    compute.aborter().abort("the worker is shutting down");
    compute.stop(Duration::from_secs(5)).await;
    // An error is the caller's to report (the binary logs it and exits non-zero).
    info!(?report, "worker stopped");
    result.map(|()| report)
}

struct Worker<'a> {
    metrics: WorkerMetrics,
    config: WorkerConfig,
    connector: rpc::Connector,
    device: Device,
    compute: &'a ComputeHandle,
    report: WorkerReport,
    session: Option<Session>,
    /// The session's Tasks stream, once open.
    tasks: Option<rpc::TaskStream>,
    /// The server has no Tasks stream: lease with LeaseTask.
    unary: bool,
}

/// How one pass of the loop ended.
enum Flow {
    Continue,
    Stop,
}

impl Worker<'_> {
    async fn serve(&mut self, shutdown: impl Future<Output = ()> + Send) -> Result<(), WorkerError> {
        let mut shutdown = std::pin::pin!(shutdown);
        let policy = rpc::backoff(self.config.max_backoff_ms);
        let mut backoff = policy.build(); // never ends: `next()` is always `Some`
        loop {
            let session = match &self.session {
                Some(s) => s.clone(),
                None => {
                    let device = device_name(self.device);
                    let connect = self.connector.connect_and_register(&self.config, &device);
                    let session = tokio::select! {
                        biased;
                        () = &mut shutdown => return Ok(()),
                        s = connect => s?,
                    };
                    self.report.registrations += 1;
                    self.session = Some(session.clone());
                    (self.tasks, self.unary) = (None, false);
                    session
                }
            };
            let leased = tokio::select! {
                biased;
                () = &mut shutdown => return Ok(()),
                r = self.next_offer(&session) => r,
            };
            let delay = match leased {
                Ok(None) => {
                    backoff = policy.build();
                    continue;
                }
                Ok(Some(rpc::Offered::Inspection(inspection))) => {
                    backoff = policy.build();
                    self.inspect(&session, inspection).await;
                    continue;
                }
                Ok(Some(rpc::Offered::Task(task, metadata, weights))) => {
                    backoff = policy.build();
                    match self.run_task(&session, *task, &metadata, weights, shutdown.as_mut()).await? {
                        (Flow::Stop, _) => return Ok(()),
                        (Flow::Continue, false) => continue,
                        // A failed task: pace the next lease so that a task
                        // that cannot work here does not spin.
                        (Flow::Continue, true) => backoff.next().unwrap_or_default(),
                    }
                }
                Err(WorkerError::Rpc { status, .. }) if status.code() == Code::NotFound => {
                    warn!("the server does not know this worker ({}); registering again", status.message());
                    self.lose_session();
                    continue;
                }
                Err(e) if e.is_disconnect() => {
                    warn!("lost the server: {e}; reconnecting");
                    self.lose_session();
                    backoff.next().unwrap_or_default()
                }
                Err(e) => {
                    let delay = backoff.next().unwrap_or_default();
                    warn!(retry_in_ms = delay.as_millis() as u64, "leasing failed: {e}");
                    delay
                }
            };
            tokio::select! {
                biased;
                () = &mut shutdown => return Ok(()),
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Forgets the session and its Tasks stream, whose open request would
    /// otherwise keep the old connection (and a stopping server) waiting.
    fn lose_session(&mut self) {
        self.session = None;
        self.tasks = None;
    }

    /// The next task or inspection: from the session's Tasks stream (opened
    /// on first use), or by LeaseTask from a server without one (`None`
    /// when none came within `lease_wait_ms`).
    async fn next_offer(&mut self, session: &Session) -> Result<Option<rpc::Offered>, WorkerError> {
        if self.tasks.is_none() && !self.unary {
            match rpc::TaskStream::open(session).await? {
                Some(stream) => self.tasks = Some(stream),
                None => {
                    info!("the server has no task stream; leasing tasks one call at a time");
                    self.unary = true;
                }
            }
        }
        let Some(stream) = &mut self.tasks else {
            return rpc::lease(session, self.config.lease_wait_ms).await;
        };
        let holds = self.compute.held_versions().await?;
        match stream.next(session, holds).await {
            Ok(offered) => Ok(Some(offered)),
            Err(e) => {
                // A broken stream is opened again with the next offer.
                self.tasks = None;
                Err(e)
            }
        }
    }

    /// Runs one leased task, draining it if shutdown comes meanwhile.
    /// Returns whether to go on, and whether the task failed.
    async fn run_task(
        &mut self,
        session: &Session,
        task: v1::Task,
        metadata: &tonic::metadata::MetadataMap,
        weights: rpc::Weights,
        mut shutdown: std::pin::Pin<&mut (impl Future<Output = ()> + Send)>,
    ) -> Result<(Flow, bool), WorkerError> {
        let lease_id = task.lease_id.clone();
        let leased = match convert(task) {
            Ok(l) => {
                // The task's span continues the server's trace of its update.
                rwp_telemetry::set_parent_from(&l.input.span, metadata);
                l.input.span.record("device", device_name(self.device));
                l
            }
            Err(e) => {
                error!(lease = %lease_id, "refusing a task: {e}");
                self.report.tasks_failed += 1;
                self.give_back(session, &lease_id, Some(format!("refused the task: {e}")), false).await;
                return Ok((Flow::Continue, true));
            }
        };
        let span = leased.input.span.clone();
        let compute: &ComputeHandle = self.compute;
        let metrics = self.metrics.clone();
        let model_cache_dir = self.config.model_cache_dir.clone();
        // The task's weights may follow its offer on the stream: it goes
        // with the task, and back once the task is done.
        let mut stream = self.tasks.take();
        let drain = Duration::from_millis(self.config.drain_timeout_ms);
        let (outcome, flow) = {
            let source = WeightsFrom { weights, stream: stream.as_mut() };
            let work = process(self.config.chunk_bytes, &model_cache_dir, compute, session, &leased, source, &metrics)
                .instrument(span.clone());
            let mut work = std::pin::pin!(work);
            tokio::select! {
                biased;
                r = &mut work => (Some(r), Flow::Continue),
                () = &mut shutdown => {
                    info!(
                        parent: &span,
                        drain_timeout_ms = self.config.drain_timeout_ms,
                        "shutting down: finishing the task in flight"
                    );
                    (tokio::time::timeout(drain, &mut work).await.ok(), Flow::Stop)
                }
            }
        };
        self.tasks = stream;
        let failed = match outcome {
            None => {
                warn!(parent: &span, "the task did not finish within the drain timeout; giving its lease back");
                self.give_back(session, &leased.lease_id, None, false).instrument(span.clone()).await;
                false
            }
            Some(Ok(accepted)) => {
                self.report.tasks_completed += 1;
                if !accepted {
                    self.report.duplicates += 1;
                }
                false
            }
            Some(Err(e @ (WorkerError::ComputeThreadGone | WorkerError::Device(_)))) => return Err(e),
            Some(Err(e)) => {
                error!(parent: &span, "task failed: {e}");
                self.report.tasks_failed += 1;
                self.metrics.tasks.inc_with(&[("outcome", "failed")], 1.0);
                if e.is_disconnect() {
                    // The server is gone or restarting; it re-issues the task.
                    self.lose_session();
                } else {
                    let storage = e.is_storage_unavailable();
                    self.give_back(session, &leased.lease_id, Some(e.for_server()), storage)
                        .instrument(span.clone())
                        .await;
                }
                true
            }
        };
        Ok((flow, failed))
    }

    /// Lists a job's own data as this worker would read it (decoding every
    /// image when asked), and pushes its report or the first problem found.
    async fn inspect(&mut self, session: &Session, task: rwp_proto::v1::InspectionTask) {
        let lease_id = task.lease_id.clone();
        let span = info_span!("rwp.inspect", lease = %lease_id);
        let inspection = match Inspection::try_from(task) {
            Ok(i) => i,
            Err(e) => {
                error!(parent: &span, "refusing an inspection: {e}");
                self.give_back(session, &lease_id, Some(format!("refused the inspection: {e}")), false).await;
                return;
            }
        };
        let _renewer = AbortOnDrop(tokio::spawn(
            rpc::keep_renewing(session.clone(), lease_id.clone(), crate::compute::Aborter::default())
                .instrument(span.clone()),
        ));
        let started = Instant::now();
        let (dataset, data, decode) = (inspection.dataset, inspection.data, inspection.decode);
        let threads = self.config.compute_threads().0;
        let found = tokio::task::spawn_blocking(move || {
            let decoder: Option<&rwp_data::inspect::Decoder> = decode.then_some(&rwp_images::decoded_size);
            rwp_data::inspect::inspect(dataset, &data, decoder, threads).map_err(|e| e.to_string())
        })
        .await;
        let result = match found {
            Ok(result) => result,
            Err(e) => {
                error!(parent: &span, "the inspection stopped: {e}");
                self.give_back(session, &lease_id, Some(format!("the inspection stopped: {e}")), false).await;
                return;
            }
        };
        info!(parent: &span, ok = result.is_ok(), ms = started.elapsed().as_millis() as u64, "data inspected");
        let push = InspectionPush { worker_id: session.worker_id.clone(), lease_id, result };
        if let Err(e) = rpc::push_inspection(session, push).await {
            warn!(parent: &span, "could not push the inspection (it will lapse and be re-issued): {e}");
        }
    }

    async fn give_back(&mut self, session: &Session, lease_id: &str, error: Option<String>, storage_unavailable: bool) {
        match rpc::release(session, lease_id, error, storage_unavailable).await {
            Ok(()) => {
                self.report.leases_released += 1;
                info!("lease given back");
            }
            Err(e) => warn!("could not give the lease back (it will lapse on the server): {e}"),
        }
    }
}
