//! The compute thread: the one thread that owns libtorch state (models,
//! datasets' batches, weights). Async code talks to it through a channel of
//! commands, each with a oneshot reply, and never holds a tensor.
//!
//! The worker reads every task's batches itself, from disk or object
//! storage. A built-in model runs on this thread. A TorchScript job's model
//! is the job's author's code: it runs in a model sandbox (`rwp-sandbox`),
//! one per cached job, started from this thread (which it dies with);
//! weights and batches go in and gradients come out through shared memory,
//! and the sandbox itself reads no file. A sandboxed task is killed
//! when it runs past its time limit, when its lease is lost (a cancelled
//! job) and when the worker shuts down.
//!
//! A task is a gradient of an update or a shard of an evaluation; each job
//! keeps two weights versions ([`WeightSlots`]), the current update's and
//! the one under evaluation.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rwp_core::data::{Batch, Dataset, DatasetInfo};
use rwp_core::model::Model;
use rwp_core::trainer::eval_batches;
use rwp_core::wire::Snapshot;
use rwp_sandbox::{Grants, Killer, ModelHost, SandboxConfig, SandboxError};
use rwp_spec::eval::{BatchEval, EvalTask};
use rwp_spec::plan::Sampler;
use rwp_spec::work::Work;
use rwp_spec::{JobSpec, Method, Role, Schedule, Task};
use tch::Device;
use tokio::sync::oneshot;
use tracing::{debug, info, warn, Span};

use crate::in_process;
use crate::slots::WeightSlots;
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
    pub work: Work,
    /// The cached TorchScript file of a `torchscript` job.
    pub model_file: Option<std::path::PathBuf>,
    /// How long a sandboxed computation may run (`None`: no limit).
    pub timeout: Option<Duration>,
    /// The task's span, entered on the compute thread for its log lines.
    pub span: Span,
}

/// A gradient task's result, ready to push.
#[derive(Debug)]
pub(crate) struct GradientOutput {
    /// Gradients, then (for tasks that return them) BatchNorm buffers.
    pub payload: Vec<u8>,
    pub gradient_bytes: u64,
    pub buffer_bytes: u64,
    pub loss: f64,
    pub accuracy: f64,
}

/// What a task computed.
#[derive(Debug)]
pub(crate) enum Computed {
    Gradient(GradientOutput),
    /// An evaluation shard: one result per batch, in batch order.
    Evaluation(Vec<BatchEval>),
}

/// A computed result, ready to push.
#[derive(Debug)]
pub(crate) struct TaskOutput {
    pub computed: Computed,
    pub compute_time: Duration,
    /// Samples left out of the task's batches (`bad_samples = "skip"`),
    /// each named with what is wrong with it.
    pub skipped: Vec<String>,
    /// The snapshot bytes the task installed, once decoded: the next fetch
    /// reuses the buffer.
    pub spent_snapshot: Option<Vec<u8>>,
}

enum Command {
    HasWeights {
        job_id: String,
        /// The task's spec: a job held with another spec (one resumed with
        /// more epochs, say) is reloaded, so its weights do not count.
        spec: Box<JobSpec>,
        version: u64,
        reply: oneshot::Sender<bool>,
    },
    /// The weights versions held, by job.
    Held { reply: oneshot::Sender<Vec<(String, u64)>> },
    /// Read the task's batches now, for the `Compute` that follows.
    Prepare { input: Box<TaskInput> },
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
    pub(crate) async fn has_weights(&self, job_id: &str, spec: &JobSpec, version: u64) -> Result<bool, WorkerError> {
        let (reply, answer) = oneshot::channel();
        let spec = Box::new(spec.clone());
        self.commands
            .send(Command::HasWeights { job_id: job_id.to_owned(), spec, version, reply })
            .map_err(|_| WorkerError::ComputeThreadGone)?;
        answer.await.map_err(|_| WorkerError::ComputeThreadGone)
    }

    /// The weights versions the thread holds, by job (what a task offer
    /// need not carry).
    pub(crate) async fn held_versions(&self) -> Result<Vec<(String, u64)>, WorkerError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Held { reply }).map_err(|_| WorkerError::ComputeThreadGone)?;
        answer.await.map_err(|_| WorkerError::ComputeThreadGone)
    }

    /// Has the thread read `input`'s batches now (decoding images on its
    /// pool), while the caller fetches the weights; the `compute` of the
    /// same task then takes them. Returns at once.
    pub(crate) fn prepare(&self, input: TaskInput) -> Result<(), WorkerError> {
        self.commands.send(Command::Prepare { input: Box::new(input) }).map_err(|_| WorkerError::ComputeThreadGone)
    }

    /// Computes a task, first installing `snapshot` (the bytes of the
    /// weights version the task names) when given.
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
    data: Dataset,
    sampler: Sampler,
    backend: Backend,
    last_used: Instant,
    /// The batches read ahead for a task (`Prepare`), or why they could not be.
    prepared: Option<(Work, Result<Loaded, WorkerError>)>,
}

/// A task's batches, read by the worker for either backend.
pub(crate) enum Loaded {
    Gradient(Batch),
    /// An evaluation shard's batches, in order.
    Evaluation(Vec<Batch>),
}

impl Loaded {
    fn skipped(&self) -> Vec<String> {
        match self {
            Loaded::Gradient(batch) => batch.skipped.clone(),
            Loaded::Evaluation(batches) => batches.iter().flat_map(|b| b.skipped.iter().cloned()).collect(),
        }
    }
}

/// Where a job's tasks are computed.
// At most a few are cached: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Backend {
    /// A built-in model, on the compute thread.
    InProcess {
        model: Model,
        /// The weights versions received, decoded.
        weights: WeightSlots<Snapshot>,
    },
    /// A TorchScript module, in its sandbox, which holds the model and the
    /// weights versions in `versions`' slots.
    Sandboxed { host: ModelHost, versions: WeightSlots<()> },
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
        let data = Dataset::for_spec(spec)?;
        let schedule = Schedule::new(spec, data.train.len())?;
        let sampler = Sampler::new(spec, &schedule, data.train.len());
        let backend = if spec.model == rwp_spec::ModelKind::TorchScript {
            let sandbox = sandbox.as_ref().map_err(|e| WorkerError::Sandbox(e.to_string()))?;
            let model_file = model_file.ok_or_else(|| model_error("not fetched".to_owned()))?;
            let grants = Grants { model_file: model_file.to_owned() };
            let mut host = ModelHost::spawn(sandbox, &grants).map_err(|e| WorkerError::Sandbox(e.to_string()))?;
            host.open_job(spec).map_err(|e| model_error(e.to_string()))?;
            Backend::Sandboxed { host, versions: WeightSlots::default() }
        } else {
            let model = Model::for_spec(spec, data.shape, data.classes, None, device)
                .map_err(|e| model_error(e.to_string()))?;
            Backend::InProcess { model, weights: WeightSlots::default() }
        };
        Ok(Self { spec: spec.clone(), schedule, data, sampler, backend, last_used: Instant::now(), prepared: None })
    }

    /// The batches of `work`: those read ahead for it, else read now.
    fn take_batches(&mut self, work: &Work) -> Result<Loaded, WorkerError> {
        match self.prepared.take() {
            Some((prepared, batches)) if prepared == *work => batches,
            _ => self.batches(work),
        }
    }

    /// Reads the batches of `work` (on the compute thread: a batch is tensors).
    fn batches(&mut self, work: &Work) -> Result<Loaded, WorkerError> {
        match work {
            Work::Gradient { task, .. } => Ok(Loaded::Gradient(self.data.train_batch(&self.sampler.shard(task))?)),
            Work::Evaluation(task) => {
                let split = self.data.eval_split(task.split).ok_or_else(|| {
                    WorkerError::InvalidTask(format!("the job holds no {:?} samples out", task.split))
                })?;
                let batches = self.data.eval_plan(split).shard_batches(task.shard);
                Ok(Loaded::Evaluation(eval_batches(&self.data, split, batches)?))
            }
        }
    }

    fn versions(&self) -> Box<dyn Iterator<Item = u64> + '_> {
        match &self.backend {
            Backend::InProcess { weights, .. } => Box::new(weights.versions()),
            Backend::Sandboxed { versions, .. } => Box::new(versions.versions()),
        }
    }

    fn has_weights(&self, version: u64) -> bool {
        match &self.backend {
            Backend::InProcess { weights, .. } => weights.has(version),
            Backend::Sandboxed { versions, .. } => versions.has(version),
        }
    }

    fn train_samples(&self) -> usize {
        self.data.train.len()
    }

    /// Refuses a task that the job's plan cannot contain (it would otherwise
    /// index out of the batch or panic in libtorch).
    fn check(&self, work: &Work) -> Result<(), WorkerError> {
        match work {
            Work::Gradient { task, .. } => self.check_gradient(task),
            Work::Evaluation(task) => self.check_evaluation(task),
        }
    }

    fn check_evaluation(&self, task: &EvalTask) -> Result<(), WorkerError> {
        let shards = DatasetInfo::for_spec(&self.spec).eval_plan(task.split).shard_count();
        if task.num_shards != shards || task.shard >= task.num_shards {
            return Err(WorkerError::InvalidTask(format!(
                "{:?} evaluation shard {} of {} (the split has {shards})",
                task.split, task.shard, task.num_shards
            )));
        }
        if task.version > self.schedule.total_updates {
            return Err(WorkerError::InvalidTask(format!(
                "version {} is past the job's {} updates",
                task.version, self.schedule.total_updates
            )));
        }
        Ok(())
    }

    fn check_gradient(&self, task: &Task) -> Result<(), WorkerError> {
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
                Ok(Command::HasWeights { job_id, spec, version, reply }) => {
                    let has = self.jobs.get(&job_id).is_some_and(|j| j.spec == *spec && j.has_weights(version));
                    let _ = reply.send(has);
                }
                Ok(Command::Held { reply }) => {
                    let held = self.jobs.iter().flat_map(|(id, job)| job.versions().map(move |v| (id.clone(), v)));
                    let _ = reply.send(held.collect());
                }
                Ok(Command::Prepare { input }) => {
                    let _entered = input.span.enter();
                    let job_id = input.job_id.clone();
                    let prepared = std::panic::catch_unwind(AssertUnwindSafe(|| self.prepare(&input)));
                    if prepared.is_err() {
                        // The Compute that follows reads the batches itself and reports.
                        self.jobs.remove(&job_id);
                    }
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

    /// Reads `input`'s batches ahead of its computation; a job that cannot
    /// be loaded or a task that does not fit it is left for the `Compute`
    /// to report.
    fn prepare(&mut self, input: &TaskInput) {
        let Ok(job) = self.job(&input.job_id, &input.spec, input.model_file.as_deref()) else { return };
        if job.check(&input.work).is_err() {
            return;
        }
        let started = Instant::now();
        let batches = job.batches(&input.work);
        debug!(elapsed_ms = started.elapsed().as_millis() as u64, ok = batches.is_ok(), "batches read ahead");
        job.prepared = Some((input.work.clone(), batches));
    }

    fn compute(&mut self, input: TaskInput, snapshot: Option<Vec<u8>>) -> Result<TaskOutput, WorkerError> {
        let _entered = input.span.enter();
        let device = self.device;
        let running = self.running.clone();
        let job = self.job(&input.job_id, &input.spec, input.model_file.as_deref())?;
        job.check(&input.work)?;
        match input.work {
            Work::Evaluation(_) => rwp_core::faults::hit("evaluation"),
            Work::Gradient { .. } => rwp_core::faults::hit("gradient"),
        }
        let loaded = job.take_batches(&input.work)?;
        let skipped = loaded.skipped();
        if let Some(first) = skipped.first() {
            warn!(skipped = skipped.len(), first, "samples left out of the task's batches (bad_samples = skip)");
        }
        let spec = &job.spec;
        let error = match &mut job.backend {
            Backend::Sandboxed { host, versions } => {
                running.set(Some(host.killer()));
                let timeout = input.timeout.unwrap_or(NO_TIME_LIMIT);
                let version = input.work.version();
                let (slot, held) = versions.slot_for(version);
                let computed = if held || snapshot.is_some() {
                    sandboxed(host, &input.work, &loaded, snapshot.as_deref(), slot, timeout)
                } else {
                    Err(SandboxError::Failed {
                        what: "the task",
                        message: format!("weights version {version} is not loaded"),
                    })
                };
                running.set(None);
                match computed {
                    Ok((computed, compute_time)) => {
                        versions.put(slot, version, ());
                        debug!(elapsed_ms = compute_time.as_millis() as u64, "computed in the sandbox");
                        return Ok(TaskOutput { computed, compute_time, skipped, spent_snapshot: snapshot });
                    }
                    Err(e) => e,
                }
            }
            Backend::InProcess { model, weights } => {
                let (computed, compute_time, spent_snapshot) =
                    in_process::compute(spec, model, weights, &input.work, &loaded, snapshot, device)?;
                return Ok(TaskOutput { computed, compute_time, skipped, spent_snapshot });
            }
        };
        // A sandbox that failed is gone: the next task of the job starts another.
        self.jobs.remove(&input.job_id);
        Err(WorkerError::Sandbox(error.to_string()))
    }
}

/// Runs a task in the job's sandbox on `loaded`, its batches, with the
/// weights in `slot`, installing `snapshot` there first when given.
fn sandboxed(
    host: &mut ModelHost,
    work: &Work,
    loaded: &Loaded,
    snapshot: Option<&[u8]>,
    slot: usize,
    timeout: Duration,
) -> Result<(Computed, Duration), SandboxError> {
    match (work, loaded) {
        (Work::Gradient { task, returns_buffers }, Loaded::Gradient(batch)) => {
            let c = host.compute(task, *returns_buffers, snapshot, slot, batch, timeout)?;
            let output = GradientOutput {
                payload: c.payload,
                gradient_bytes: c.gradient_bytes,
                buffer_bytes: c.buffer_bytes,
                loss: c.loss,
                accuracy: c.accuracy,
            };
            Ok((Computed::Gradient(output), c.compute_time))
        }
        (Work::Evaluation(task), Loaded::Evaluation(batches)) => {
            let (batches, took) = host.evaluate(task, snapshot, slot, batches, timeout)?;
            Ok((Computed::Evaluation(batches), took))
        }
        _ => Err(SandboxError::Failed { what: "the task", message: "bug: batches of another kind of task".to_owned() }),
    }
}

/// A sandboxed task's limit when the server gives none.
const NO_TIME_LIMIT: Duration = Duration::from_secs(24 * 3600);
