//! The compute thread: the one thread that owns libtorch state (models,
//! datasets' batches, weights). Async code talks to it through a channel of
//! commands, each with a oneshot reply, and never holds a tensor.
//!
//! A built-in model runs on this thread. A TorchScript job's model is the
//! job's author's code: it runs in a model sandbox (`rwp-sandbox`), one per
//! cached job, started from this thread (which it dies with); weights go in
//! and gradients come out through shared memory. A sandboxed task is killed
//! when it runs past its time limit, when its lease is lost (a cancelled
//! job) and when the worker shuts down.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rwp_core::data::Dataset;
use rwp_core::grad::compute_task;
use rwp_core::model::Model;
use rwp_core::wire::{self, Snapshot};
use rwp_sandbox::{Grants, Killer, ModelHost, SandboxConfig, SandboxError};
use rwp_spec::plan::Sampler;
use rwp_spec::{JobSpec, Method, Role, Schedule, Task};
use tch::Device;
use tokio::sync::oneshot;
use tracing::{debug, info, Span};

use crate::WorkerError;

/// Jobs whose data, model and weights are kept at once.
const MAX_CACHED_JOBS: usize = 2;
/// A job not used for this long is dropped (a cancelled or finished job must
/// not hold memory forever).
const JOB_IDLE_EVICTION: Duration = Duration::from_secs(10 * 60);
/// How often an idle compute thread checks for jobs to evict.
const EVICTION_CHECK: Duration = Duration::from_secs(60);

/// One leased task, as the compute thread needs it.
#[derive(Debug, Clone)]
pub(crate) struct TaskInput {
    pub job_id: String,
    pub spec: JobSpec,
    pub task: Task,
    pub returns_buffers: bool,
    /// The cached TorchScript file of a `torchscript` job.
    pub model_file: Option<std::path::PathBuf>,
    /// How long a sandboxed computation may run (`None`: no limit).
    pub timeout: Option<Duration>,
    /// The task's span, entered on the compute thread for its log lines.
    pub span: Span,
}

/// A computed result, ready to push.
#[derive(Debug)]
pub(crate) struct TaskOutput {
    /// Gradients, then (for tasks that return them) BatchNorm buffers.
    pub payload: Vec<u8>,
    pub gradient_bytes: u64,
    pub buffer_bytes: u64,
    pub loss: f64,
    pub accuracy: f64,
    pub compute_time: Duration,
    /// The snapshot bytes the task installed, once decoded: the next fetch
    /// reuses the buffer.
    pub spent_snapshot: Option<Vec<u8>>,
}

enum Command {
    HasWeights {
        job_id: String,
        version: u64,
        reply: oneshot::Sender<bool>,
    },
    Compute {
        input: Box<TaskInput>,
        snapshot: Option<Vec<u8>>,
        reply: oneshot::Sender<Result<TaskOutput, WorkerError>>,
    },
}

/// The async side's handle on the compute thread. Dropping it lets the
/// thread finish its current command and exit.
#[derive(Debug)]
pub(crate) struct ComputeHandle {
    commands: mpsc::Sender<Command>,
    thread: JoinHandle<()>,
    /// A buffer for the next weights fetch: a fresh one of a snapshot's size
    /// (44.7 MB for ResNet-18) costs the fetch its page faults, about a third
    /// of its time on loopback (`bench-transport`).
    spare: std::sync::Mutex<Vec<u8>>,
    running: Aborter,
}

/// Kills the sandboxed computation in progress, if there is one.
#[derive(Debug, Clone, Default)]
pub(crate) struct Aborter(std::sync::Arc<std::sync::Mutex<Option<Killer>>>);

impl Aborter {
    pub(crate) fn abort(&self, reason: &str) {
        if let Some(killer) = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref() {
            info!(reason, "killing the model sandbox of the task in progress");
            killer.kill(reason);
        }
    }

    fn set(&self, killer: Option<Killer>) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = killer;
    }
}

impl ComputeHandle {
    /// Starts the thread; `threads` > 0 sets libtorch's intra-op threads on
    /// it. TorchScript jobs run in sandboxes started as `sandbox` says.
    pub(crate) fn spawn(
        device: Device,
        threads: usize,
        sandbox: Result<SandboxConfig, SandboxError>,
    ) -> Result<Self, WorkerError> {
        let (commands, receiver) = mpsc::channel();
        let running = Aborter::default();
        let aborter = running.clone();
        let thread = std::thread::Builder::new()
            .name("rwp-compute".to_owned())
            .spawn(move || {
                if threads > 0 {
                    tch::set_num_threads(threads as i32);
                }
                ComputeThread { device, jobs: HashMap::new(), sandbox, running: aborter }.serve(&receiver);
            })
            .map_err(|e| WorkerError::Compute(format!("cannot start the compute thread: {e}")))?;
        Ok(Self { commands, thread, spare: std::sync::Mutex::new(Vec::new()), running })
    }

    /// A handle that kills the sandboxed task in progress (its result is
    /// not wanted any more).
    pub(crate) fn aborter(&self) -> Aborter {
        self.running.clone()
    }

    /// The buffer to fetch the next weights version into (empty; its
    /// capacity is that of the last snapshot installed).
    pub(crate) fn snapshot_buffer(&self) -> Vec<u8> {
        std::mem::take(&mut *self.spare.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Whether the thread holds weights version `version` of the job.
    pub(crate) async fn has_weights(&self, job_id: &str, version: u64) -> Result<bool, WorkerError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::HasWeights { job_id: job_id.to_owned(), version, reply })
            .map_err(|_| WorkerError::ComputeThreadGone)?;
        answer.await.map_err(|_| WorkerError::ComputeThreadGone)
    }

    /// Computes a task, first installing `snapshot` (the bytes of weights
    /// version `task.step`) when given.
    pub(crate) async fn compute(&self, input: TaskInput, snapshot: Option<Vec<u8>>) -> Result<TaskOutput, WorkerError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Compute { input: Box::new(input), snapshot, reply })
            .map_err(|_| WorkerError::ComputeThreadGone)?;
        let mut output = answer.await.map_err(|_| WorkerError::ComputeThreadGone)??;
        if let Some(spent) = output.spent_snapshot.take() {
            *self.spare.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = spent;
        }
        Ok(output)
    }

    /// Stops the thread, waiting for it up to `wait` (it may be busy with a
    /// task abandoned on shutdown; it is then left to finish on its own).
    pub(crate) async fn stop(self, wait: Duration) {
        drop(self.commands);
        let thread = self.thread;
        let joined = tokio::task::spawn_blocking(move || thread.join());
        match tokio::time::timeout(wait, joined).await {
            Ok(Ok(Ok(()))) => debug!("compute thread stopped"),
            Ok(_) => tracing::error!("the compute thread panicked"),
            Err(_) => debug!("compute thread still busy; not waiting for it"),
        }
    }
}

/// Everything cached for one job.
struct JobState {
    spec: JobSpec,
    schedule: Schedule,
    backend: Backend,
    last_used: Instant,
}

/// Where a job's tasks are computed.
// At most a few are cached: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Backend {
    /// A built-in model, on the compute thread.
    InProcess {
        data: Dataset,
        model: Model,
        sampler: Sampler,
        /// The latest weights version received, and its decoded snapshot.
        weights: Option<(u64, Snapshot)>,
    },
    /// A TorchScript module, in its sandbox, which holds the data, the
    /// model and the weights version `version`.
    Sandboxed { host: ModelHost, version: Option<u64> },
}

impl JobState {
    fn load(
        spec: &JobSpec,
        model_file: Option<&std::path::Path>,
        device: Device,
        sandbox: &Result<SandboxConfig, SandboxError>,
    ) -> Result<Self, WorkerError> {
        spec.validate()?;
        let model_error = |reason: String| WorkerError::Model {
            sha256: spec.model_file.as_ref().map(|f| f.sha256.clone()).unwrap_or_default(),
            reason,
        };
        if spec.model == rwp_spec::ModelKind::TorchScript {
            let sandbox = sandbox.as_ref().map_err(|e| WorkerError::Sandbox(e.to_string()))?;
            let model_file = model_file.ok_or_else(|| model_error("not fetched".to_owned()))?;
            let grants = Grants { model_file: model_file.to_owned(), data_dir: spec.data_dir.clone() };
            let mut host = ModelHost::spawn(sandbox, &grants).map_err(|e| WorkerError::Sandbox(e.to_string()))?;
            let opened = host.open_job(spec).map_err(|e| model_error(e.to_string()))?;
            let schedule = Schedule::new(spec, opened.train_samples as usize)?;
            let backend = Backend::Sandboxed { host, version: None };
            return Ok(Self { spec: spec.clone(), schedule, backend, last_used: Instant::now() });
        }
        let data = Dataset::for_spec(spec)?;
        let model =
            Model::for_spec(spec, data.shape, data.classes, None, device).map_err(|e| model_error(e.to_string()))?;
        let schedule = Schedule::new(spec, data.train.len())?;
        let sampler = Sampler::new(spec, &schedule, data.train.len());
        let backend = Backend::InProcess { data, model, sampler, weights: None };
        Ok(Self { spec: spec.clone(), schedule, backend, last_used: Instant::now() })
    }

    fn has_weights(&self, version: u64) -> bool {
        match &self.backend {
            Backend::InProcess { weights, .. } => weights.as_ref().is_some_and(|(v, _)| *v == version),
            Backend::Sandboxed { version: held, .. } => *held == Some(version),
        }
    }

    fn train_samples(&self) -> usize {
        match &self.backend {
            Backend::InProcess { data, .. } => data.train.len(),
            Backend::Sandboxed { .. } => 0,
        }
    }

    /// Refuses a task that the job's plan cannot contain (it would otherwise
    /// index out of the batch or panic in libtorch).
    fn check(&self, task: &Task) -> Result<(), WorkerError> {
        let spec = &self.spec;
        let (allowed, shards) = match task.role {
            Role::Clean => (spec.method.uses_clean(), spec.clean_shards),
            Role::Sam => (spec.method == Method::Sam, spec.clean_shards),
            Role::Perturbed => (spec.method.uses_perturbed(), spec.perturbed_shards),
        };
        let invalid = |reason: String| Err(WorkerError::InvalidTask(reason));
        if !allowed {
            return invalid(format!("method {} has no {:?} tasks", spec.method, task.role));
        }
        if task.num_shards != shards || task.shard >= task.num_shards {
            return invalid(format!("shard {} of {} (the spec has {shards})", task.shard, task.num_shards));
        }
        if task.step >= self.schedule.total_updates {
            return invalid(format!("step {} is past the job's {} updates", task.step, self.schedule.total_updates));
        }
        if task.role == Role::Perturbed && task.noise_seed.is_none() {
            return invalid("a perturbed task without a noise seed".to_owned());
        }
        Ok(())
    }
}

struct ComputeThread {
    device: Device,
    jobs: HashMap<String, JobState>,
    sandbox: Result<SandboxConfig, SandboxError>,
    running: Aborter,
}

impl ComputeThread {
    fn serve(mut self, commands: &mpsc::Receiver<Command>) {
        loop {
            match commands.recv_timeout(EVICTION_CHECK) {
                Ok(Command::HasWeights { job_id, version, reply }) => {
                    let has = self.jobs.get(&job_id).is_some_and(|j| j.has_weights(version));
                    let _ = reply.send(has);
                }
                Ok(Command::Compute { input, snapshot, reply }) => {
                    let job_id = input.job_id.clone();
                    let span = input.span.clone();
                    let result = std::panic::catch_unwind(AssertUnwindSafe(|| self.compute(*input, snapshot)))
                        .unwrap_or_else(|panic| {
                            // The job's cached state may be half updated.
                            self.jobs.remove(&job_id);
                            Err(WorkerError::Compute(format!("panicked: {}", rwp_sandbox::panic_message(&*panic))))
                        });
                    let _ = reply.send(result);
                    let _entered = span.enter();
                    self.evict(Some(&job_id));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => self.evict(None),
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Drops jobs idle for too long, then the least recently used ones
    /// beyond the cache size; `keep` is the job just used.
    fn evict(&mut self, keep: Option<&str>) {
        let now = Instant::now();
        let idle: Vec<String> = self
            .jobs
            .iter()
            .filter(|(id, j)| Some(id.as_str()) != keep && now.duration_since(j.last_used) > JOB_IDLE_EVICTION)
            .map(|(id, _)| id.clone())
            .collect();
        for id in idle {
            info!(job = %id, "dropping the cached state of an idle job");
            self.jobs.remove(&id);
        }
        while self.jobs.len() > MAX_CACHED_JOBS {
            let Some(oldest) = self
                .jobs
                .iter()
                .filter(|(id, _)| Some(id.as_str()) != keep)
                .min_by_key(|(_, j)| j.last_used)
                .map(|(id, _)| id.clone())
            else {
                break;
            };
            debug!(job = %oldest, "dropping the cached state of the least recently used job");
            self.jobs.remove(&oldest);
        }
    }

    fn job(
        &mut self,
        job_id: &str,
        spec: &JobSpec,
        model_file: Option<&std::path::Path>,
    ) -> Result<&mut JobState, WorkerError> {
        let stale = self.jobs.get(job_id).is_some_and(|j| &j.spec != spec);
        if stale {
            info!("the job's spec changed; reloading it");
            self.jobs.remove(job_id);
        }
        if !self.jobs.contains_key(job_id) {
            let started = Instant::now();
            let state = JobState::load(spec, model_file, self.device, &self.sandbox)?;
            info!(
                model = %spec.model,
                dataset = %spec.dataset,
                train_samples = state.train_samples(),
                sandboxed = matches!(state.backend, Backend::Sandboxed { .. }),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "job loaded"
            );
            self.jobs.insert(job_id.to_owned(), state);
        }
        let job = self.jobs.get_mut(job_id).expect("inserted above");
        job.last_used = Instant::now();
        Ok(job)
    }

    fn compute(&mut self, input: TaskInput, snapshot: Option<Vec<u8>>) -> Result<TaskOutput, WorkerError> {
        let _entered = input.span.enter();
        let device = self.device;
        let running = self.running.clone();
        let task = &input.task;
        let job = self.job(&input.job_id, &input.spec, input.model_file.as_deref())?;
        job.check(task)?;
        let spec = &job.spec;
        let error = match &mut job.backend {
            Backend::Sandboxed { host, version } => {
                running.set(Some(host.killer()));
                let timeout = input.timeout.unwrap_or(NO_TIME_LIMIT);
                let computed = host.compute(task, input.returns_buffers, snapshot.as_deref(), timeout);
                running.set(None);
                match computed {
                    Ok(c) => {
                        if snapshot.is_some() {
                            *version = Some(task.step);
                        }
                        debug!(
                            loss = c.loss,
                            elapsed_ms = c.compute_time.as_millis() as u64,
                            "computed in the sandbox"
                        );
                        return Ok(TaskOutput {
                            payload: c.payload,
                            gradient_bytes: c.gradient_bytes,
                            buffer_bytes: c.buffer_bytes,
                            loss: c.loss,
                            accuracy: c.accuracy,
                            compute_time: c.compute_time,
                            spent_snapshot: snapshot,
                        });
                    }
                    Err(e) => e,
                }
            }
            Backend::InProcess { data, model, sampler, weights } => {
                return compute_in_process(spec, data, model, sampler, weights, &input, snapshot, device);
            }
        };
        // A sandbox that failed is gone: the next task of the job starts another.
        self.jobs.remove(&input.job_id);
        Err(WorkerError::Sandbox(error.to_string()))
    }
}

/// A sandboxed task's limit when the server gives none.
const NO_TIME_LIMIT: Duration = Duration::from_secs(24 * 3600);

#[allow(clippy::too_many_arguments)]
fn compute_in_process(
    spec: &JobSpec,
    data: &Dataset,
    model: &Model,
    sampler: &mut Sampler,
    weights: &mut Option<(u64, Snapshot)>,
    input: &TaskInput,
    snapshot: Option<Vec<u8>>,
    device: Device,
) -> Result<TaskOutput, WorkerError> {
    let task = &input.task;
    let spent_snapshot = match snapshot {
        Some(bytes) => {
            let decoded = wire::decode_snapshot(&bytes, model, device)?;
            debug!(version = task.step, factors = decoded.factors.is_some(), "weights installed");
            *weights = Some((task.step, decoded));
            Some(bytes)
        }
        None => None,
    };
    let weights = match weights {
        Some((version, weights)) if *version == task.step => weights,
        _ => return Err(WorkerError::Compute(format!("weights version {} is not loaded", task.step))),
    };

    let started = Instant::now();
    let samples = sampler.shard(task);
    let batch = data.train_batch(&samples).to_device(device);
    let result = compute_task(spec, model, &weights.weights, &weights.buffers, task, &batch, weights.factors.as_ref());
    let mut payload = wire::encode_gradients(&result.grads, spec.gradient_encoding);
    let gradient_bytes = payload.len() as u64;
    let buffer_bytes = if input.returns_buffers {
        let Some(buffers) = result.buffers.as_ref() else {
            return Err(WorkerError::Compute(format!(
                "bug: a {:?} task must return BatchNorm buffers but its result has none",
                task.role
            )));
        };
        let bytes = wire::encode_buffers(buffers);
        payload.extend_from_slice(&bytes);
        bytes.len() as u64
    } else {
        0
    };
    let compute_time = started.elapsed();
    debug!(
        loss = result.loss,
        accuracy = result.accuracy,
        samples = batch.len(),
        elapsed_ms = compute_time.as_millis() as u64,
        "computed"
    );
    Ok(TaskOutput {
        payload,
        gradient_bytes,
        buffer_bytes,
        loss: result.loss,
        accuracy: result.accuracy,
        compute_time,
        spent_snapshot,
    })
}
