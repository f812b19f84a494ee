//! The coordinator: every job's schedule of tasks, the leases handed to
//! workers, the shard results as they arrive, and the hand-off of a complete
//! update to the job's engine. Transport-free: gRPC handlers call these
//! methods and convert the results.
//!
//! Locking: one mutex over the whole scheduling state, never held across an
//! `.await` or a database write.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rwp_spec::payload::{Announced, Layout, Payload, PayloadError, PayloadSizes};
use rwp_spec::plan::tasks_for_step;
use rwp_spec::rng::derive_seed;
use rwp_spec::{JobSpec, NonFinitePolicy, Role, Schedule, Task};
use tokio::sync::{broadcast, Notify};
use tracing::{info, warn, Instrument};

use crate::config::ServerConfig;
use crate::domain::{now_unix_ms, Evaluation, JobEvent, JobRecord, JobState, Principal, StepMetrics};
use crate::engine::{EngineConfig, EngineHandle, RawResult, RawStep, UpdateOutcome};
use crate::error::ServerError;
use crate::limits::RateLimiter;
use crate::models::ModelStore;
use crate::pool::{self, PayloadPool};
use crate::store::{RequestKey, Store};
use rwp_telemetry::{Kind, Registry};

mod models;
mod sweeps;
use sweeps::SweepEntry;

/// The metric families the server exports.
const METRICS: &[(&str, Kind, &str)] = &[
    ("rwp_pending_tasks", Kind::Gauge, "Tasks of running jobs waiting for a worker (the autoscaling signal)."),
    ("rwp_leased_tasks", Kind::Gauge, "Tasks leased to a worker and not yet done (work in flight)."),
    ("rwp_active_workers", Kind::Gauge, "Workers that asked for work within the last lease timeout."),
    ("rwp_running_jobs", Kind::Gauge, "Jobs in the running state."),
    ("rwp_updates_total", Kind::Counter, "Updates applied, by job."),
    ("rwp_skipped_updates_total", Kind::Counter, "Updates skipped for non-finite gradients, by job."),
    ("rwp_leases_issued_total", Kind::Counter, "Task leases handed to workers."),
    (
        "rwp_task_queue_seconds",
        Kind::Histogram,
        "Time a task waited for a worker: from its publication (or its lease lapsing) to its lease.",
    ),
    (
        "rwp_lease_service_seconds",
        Kind::Histogram,
        "Time the server took to hand out a task to a LeaseTask call that found one ready.",
    ),
    ("rwp_results_accepted_total", Kind::Counter, "Shard results accepted (each task's first result)."),
    ("rwp_lease_expiries_total", Kind::Counter, "Leases that lapsed and whose task was handed out again."),
    ("rwp_task_failures_total", Kind::Counter, "Tasks workers gave back with an error."),
    (
        "rwp_checkpoint_failures_total",
        Kind::Counter,
        "Checkpoint writes that failed (the job pauses until one succeeds).",
    ),
    (
        "rwp_checkpoints_rejected_total",
        Kind::Counter,
        "Checkpoint files found corrupt or unreadable when resuming (an older one was used).",
    ),
    ("rwp_gradient_bytes_in_total", Kind::Counter, "Bytes of shard results received."),
    ("rwp_weight_bytes_out_total", Kind::Counter, "Bytes of weights versions sent to workers."),
    (
        "rwp_step_seconds",
        Kind::Histogram,
        "Time of one update by phase: waiting (for its tasks), update (all the engine does), and its parts: \
         aggregation, evaluation, checkpoint, publish.",
    ),
    ("rwp_job_loss", Kind::Gauge, "Training loss of the latest update, by job."),
    ("rwp_job_accuracy", Kind::Gauge, "Training accuracy of the latest update, by job."),
    ("rwp_job_test_accuracy", Kind::Gauge, "Test accuracy of the latest evaluation, by job."),
];

/// A serialised weights version, shared by every stream that sends it.
#[derive(Debug)]
pub struct Snapshot {
    pub version: u64,
    pub bytes: Bytes,
}

/// A task handed to a worker.
#[derive(Debug, Clone)]
pub struct LeasedTask {
    /// The span of the task's update, whose trace context goes to the worker.
    pub trace: tracing::Span,
    pub lease_id: String,
    pub job_id: String,
    pub spec: JobSpec,
    pub task: Task,
    pub returns_buffers: bool,
    pub deadline_unix_ms: i64,
    /// How long the worker may compute the task before it kills it.
    pub timeout: Duration,
}

/// What a worker says it is pushing (the header of a push).
#[derive(Debug, Clone)]
pub struct PushHeader {
    pub worker_id: String,
    pub lease_id: String,
    pub job_id: String,
    pub step: u64,
    pub role: Role,
    pub shard: u32,
    pub weights_version: u64,
    pub loss: f64,
    pub accuracy: f64,
    /// The encoding and byte counts of the payload that follows.
    pub announced: Announced,
}

/// Whether a push should be read, and how many bytes it must have.
#[derive(Debug, PartialEq, Eq)]
pub enum PushAdmission {
    /// Read exactly these sizes.
    Expect(PayloadSizes),
    /// The shard's result is already in: read (checking the sizes) and drop.
    Duplicate(PayloadSizes),
}

#[derive(Debug)]
enum SlotStatus {
    Pending,
    Leased { lease: String, deadline: Instant },
    Done,
}

#[derive(Debug)]
struct Slot {
    task: Task,
    /// When the task was published (a lapsed lease counts from its deadline).
    published: Instant,
    returns_buffers: bool,
    status: SlotStatus,
    result: Option<RawResult>,
    /// Times workers gave this task back with an error.
    failures: u32,
    /// When the task was last leased (its time to a result is observed).
    leased_at: Option<Instant>,
}

/// A task that fails this many times fails its job.
const MAX_TASK_FAILURES: u32 = 3;

/// Longest job (or sweep) name, in characters.
const MAX_JOB_NAME_CHARS: usize = 256;

/// `path` with `.` and `..` resolved lexically (symlinks are not followed:
/// the server may not be able to read the directory); `..` at the root
/// stays there, as the file system has it.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// A job's `data_dir` lies under one of `roots` (when the server has them).
/// The refusal names the roots as configured, and nothing the server found.
fn check_data_dir(roots: Option<&[PathBuf]>, data_dir: Option<&Path>) -> Result<(), String> {
    let (Some(roots), Some(dir)) = (roots, data_dir) else { return Ok(()) };
    let dir = normalize(dir);
    if dir.is_absolute() && roots.iter().any(|root| dir.starts_with(normalize(root))) {
        return Ok(());
    }
    let allowed = if roots.is_empty() {
        "none: this server allows only the built-in dataset".to_owned()
    } else {
        roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ")
    };
    Err(format!("data_dir must be an absolute path under one of this server's data roots (data_roots): {allowed}"))
}

/// Longest client request id, in characters.
const MAX_REQUEST_ID_CHARS: usize = 128;

/// A client's request id: 1 to [`MAX_REQUEST_ID_CHARS`] printable characters.
fn request_key(principal: &Principal, named: Named, id: String) -> Result<RequestKey, ServerError> {
    let (kind, error): (&'static str, fn(String) -> ServerError) = match named {
        Named::Job => ("job", ServerError::InvalidSpec),
        Named::Sweep => ("sweep", ServerError::InvalidSweep),
    };
    let chars = id.chars().count();
    if !(1..=MAX_REQUEST_ID_CHARS).contains(&chars) {
        return Err(error(format!(
            "request_id is {chars} characters long; it must have 1 to {MAX_REQUEST_ID_CHARS} when set"
        )));
    }
    if let Some(c) = id.chars().find(|c| is_terminal_control(*c)) {
        return Err(error(format!("request_id holds U+{:04X}, a control character", u32::from(c))));
    }
    Ok(RequestKey { kind, owner: principal.owner().unwrap_or_default(), id })
}

/// Submissions with a client request id under way, one lock per id: a
/// retry that arrives while its first attempt is still starting the job
/// waits for it, then finds what it created.
#[derive(Debug, Default)]
struct RequestLocks(Mutex<HashMap<RequestKey, Arc<tokio::sync::Mutex<()>>>>);

impl RequestLocks {
    async fn lock<'a>(&'a self, key: &RequestKey) -> RequestGuard<'a> {
        let id = key.clone();
        let lock =
            self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entry(id.clone()).or_default().clone();
        let guard = lock.lock_owned().await;
        RequestGuard { locks: self, id, guard: Some(guard) }
    }
}

struct RequestGuard<'a> {
    locks: &'a RequestLocks,
    id: RequestKey,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for RequestGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.locks.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Nobody else waits on it: forget it.
        if locks.get(&self.id).is_some_and(|l| Arc::strong_count(l) == 1) {
            locks.remove(&self.id);
        }
    }
}

/// What a name names: the error it gets is that kind's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Named {
    Job,
    Sweep,
}

/// Whether `c` could drive or disguise a terminal that prints it: C0 and C1
/// control characters (ESC, CR, LF, NUL, DEL, CSI, ...) and the Unicode
/// bidirectional overrides and isolates (U+202A to U+202E, U+2066 to U+2069).
fn is_terminal_control(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// A job's or sweep's name: at most [`MAX_JOB_NAME_CHARS`] characters, none
/// of them a terminal control (names are printed by `rwp list` and logs).
fn check_name(name: &str, named: Named) -> Result<(), ServerError> {
    let (what, error): (&str, fn(String) -> ServerError) = match named {
        Named::Job => ("job", ServerError::InvalidSpec),
        Named::Sweep => ("sweep", ServerError::InvalidSweep),
    };
    let chars = name.chars().count();
    if chars > MAX_JOB_NAME_CHARS {
        return Err(error(format!("the {what} name is {chars} characters long, at most {MAX_JOB_NAME_CHARS}")));
    }
    if let Some((at, c)) = name.chars().enumerate().find(|(_, c)| is_terminal_control(*c)) {
        return Err(error(format!(
            "name: character {} of the {what} name is U+{:04X}, a control character; names must be printable text",
            at + 1,
            u32::from(c)
        )));
    }
    Ok(())
}

#[derive(Debug)]
struct Run {
    engine: EngineHandle,
    layout: Arc<Layout>,
    schedule: Schedule,
    snapshot: Arc<Snapshot>,
    slots: Vec<Slot>,
    updating: bool,
    /// A due checkpoint could not be written: no work is handed out until a
    /// retry succeeds.
    paused: bool,
    started: Instant,
    /// When the current update's tasks were published.
    step_started: Instant,
    /// The trace span of the current update: open from its tasks'
    /// publication to its application; workers' task spans are its children.
    step_span: tracing::Span,
    /// The job's TensorBoard event file (this server process's).
    events_file: Option<Arc<Mutex<rwp_telemetry::tfevents::EventWriter>>>,
    /// The longest a task of this job took from lease to result (this
    /// server process's); tasks' time limits follow from it.
    slowest_task: Option<Duration>,
}

#[derive(Debug)]
struct JobEntry {
    record: JobRecord,
    events: broadcast::Sender<JobEvent>,
    run: Option<Run>,
}

#[derive(Debug, Clone)]
struct LeaseRef {
    job: String,
    step: u64,
    slot: usize,
    worker: String,
}

#[derive(Debug, Default)]
struct State {
    jobs: BTreeMap<String, JobEntry>,
    /// Registered workers: name and when each last asked for work.
    workers: HashMap<String, (String, Instant)>,
    leases: HashMap<String, LeaseRef>,
    /// Submissions under way, by owner: they count as running jobs until
    /// their job is in `jobs` (or refused).
    submitting: HashMap<String, u32>,
    counter: u64,
    cursor: usize,
    sweeps: BTreeMap<String, SweepEntry>,
    /// Model files named by submissions under way, with how many.
    models_starting: HashMap<String, u32>,
}

#[derive(Debug)]
pub struct Coordinator {
    config: Arc<ServerConfig>,
    store: Store,
    state: Mutex<State>,
    work: Notify,
    incarnation: String,
    draining: AtomicBool,
    stopping: tokio::sync::watch::Sender<bool>,
    metrics: Arc<Registry>,
    rates: RateLimiter,
    payloads: Arc<PayloadPool>,
    models: Arc<ModelStore>,
    /// Sweeps whose trials ended: the sweep scheduler starts the next ones.
    sweep_signal: tokio::sync::mpsc::UnboundedSender<String>,
    sweep_signals: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<String>>>,
    /// One sweep scheduling pass at a time, so that no trial starts twice.
    sweep_scheduler: tokio::sync::Mutex<()>,
    /// Submissions and sweep creations with a client request id under way.
    requests: RequestLocks,
    /// Model files whose last owner gave them up while a job used them.
    disowned: Mutex<std::collections::HashSet<String>>,
}

/// A running-job slot held by a submission under way; given back when
/// dropped unless the job took it over.
struct ActiveJobSlot<'a> {
    coordinator: &'a Coordinator,
    owner: Option<String>,
}

impl ActiveJobSlot<'_> {
    /// The job is in the coordinator's jobs now: it counts itself.
    fn taken_over(mut self, s: &mut State) {
        if let Some(owner) = self.owner.take() {
            release_submission(s, &owner);
        }
    }
}

impl Drop for ActiveJobSlot<'_> {
    fn drop(&mut self) {
        if let Some(owner) = self.owner.take() {
            release_submission(&mut self.coordinator.lock(), &owner);
            self.coordinator.active_job_freed(&owner);
        }
    }
}

/// Takes one of `owner`'s `limit` running-job slots, if one is free: its
/// running jobs (sweep trials included) and submissions under way hold the
/// others.
fn reserve_in(s: &mut State, owner: &str, limit: u32) -> bool {
    let running = s.jobs.values().filter(|j| j.run.is_some() && j.record.owner.as_deref() == Some(owner)).count();
    let submitting = s.submitting.get(owner).copied().unwrap_or(0);
    if running + submitting as usize >= limit as usize {
        return false;
    }
    *s.submitting.entry(owner.to_owned()).or_default() += 1;
    true
}

fn release_submission(s: &mut State, owner: &str) {
    if let Some(count) = s.submitting.get_mut(owner) {
        *count -= 1;
        if *count == 0 {
            s.submitting.remove(owner);
        }
    }
}

/// How long a task may run on a worker: `task_timeout_initial_ms` until
/// one of its job's tasks finished, then ten times the slowest so far, but
/// never under `task_timeout_floor_ms`.
fn task_timeout(config: &ServerConfig, slowest: Option<Duration>) -> Duration {
    match slowest {
        None => Duration::from_millis(config.task_timeout_initial_ms),
        Some(slowest) => (slowest * 10).max(Duration::from_millis(config.task_timeout_floor_ms)),
    }
}

fn returns_buffers(spec: &JobSpec, role: Role) -> bool {
    match role {
        Role::Clean | Role::Sam => true,
        Role::Perturbed => spec.method.bn_stats_from_perturbed(),
    }
}

fn step_span(job: &str, step: u64) -> tracing::Span {
    tracing::info_span!(parent: None, "rwp.step", job = %job, step)
}

fn slots_for(spec: &JobSpec, schedule: &Schedule, step: u64) -> Vec<Slot> {
    tasks_for_step(spec, schedule, step)
        .into_iter()
        .map(|task| Slot {
            published: Instant::now(),
            returns_buffers: returns_buffers(spec, task.role),
            task,
            status: SlotStatus::Pending,
            result: None,
            failures: 0,
            leased_at: None,
        })
        .collect()
}

impl Coordinator {
    /// Opens the store in the data directory and resumes every running job
    /// from its latest checkpoint.
    pub async fn open(config: ServerConfig, metrics: Arc<Registry>) -> Result<Arc<Self>, ServerError> {
        for (name, kind, help) in METRICS {
            metrics.describe(name, *kind, help);
        }
        let store = Store::open(&config.data_dir)?;
        let sandbox = config.sandbox();
        if let Err(e) = &sandbox {
            warn!(error = %e, "uploaded TorchScript models cannot be checked or trained on this server");
        }
        let models = Arc::new(ModelStore::open(
            config.data_dir.join("models"),
            config.max_model_file_bytes,
            config.max_model_bytes_per_owner,
            store.clone(),
            sandbox,
        )?);
        let (sweep_signal, sweep_signals) = tokio::sync::mpsc::unbounded_channel();
        let incarnation = format!("{:08x}", derive_seed(now_unix_ms() as u64, &[u64::from(std::process::id())]) as u32);
        let this = Arc::new(Self {
            config: Arc::new(config),
            store,
            state: Mutex::new(State::default()),
            work: Notify::new(),
            incarnation,
            draining: AtomicBool::new(false),
            stopping: tokio::sync::watch::channel(false).0,
            metrics,
            rates: RateLimiter::default(),
            payloads: Arc::new(PayloadPool::new(pool::MAX_IDLE_BYTES)),
            models,
            sweep_signal,
            sweep_signals: Mutex::new(Some(sweep_signals)),
            sweep_scheduler: tokio::sync::Mutex::new(()),
            requests: RequestLocks::default(),
            disowned: Mutex::default(),
        });
        for mut record in this.store.jobs()? {
            let (events, _) = broadcast::channel(1024);
            let run = if matches!(record.state, JobState::Running | JobState::Paused) {
                match this.start_run(&record, None).await {
                    Ok(run) => {
                        info!(job = %record.id, step = run.snapshot.version, "resuming job");
                        // A paused job tries again; it pauses anew if its checkpoints still fail.
                        record.state = JobState::Running;
                        record.error = None;
                        record.step = run.snapshot.version;
                        record.wall_time_before_s = record.last_step.as_ref().map_or(0.0, |s| s.wall_time_s);
                        Some(run)
                    }
                    Err(e) => {
                        warn!(job = %record.id, error = %e, "cannot resume job");
                        record.state = JobState::Failed;
                        record.error = Some(format!("cannot resume after restart: {e}"));
                        this.store.put_job(&record)?;
                        None
                    }
                }
            } else {
                None
            };
            this.lock().jobs.insert(record.id.clone(), JobEntry { record, events, run });
        }
        this.refresh_gauges(&this.lock());
        this.resume_sweeps()?;
        this.spawn_model_collection();
        Ok(this)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Recomputes the gauges that summarise the scheduling state.
    fn refresh_gauges(&self, s: &State) {
        let now = Instant::now();
        let mut pending = 0;
        let mut leased = 0;
        let mut running = 0;
        for entry in s.jobs.values() {
            if let Some(run) = &entry.run {
                running += 1;
                if !run.updating && !run.paused {
                    for slot in &run.slots {
                        match &slot.status {
                            SlotStatus::Pending => pending += 1,
                            SlotStatus::Leased { deadline, .. } if *deadline <= now => pending += 1,
                            SlotStatus::Leased { .. } => leased += 1,
                            SlotStatus::Done => {}
                        }
                    }
                }
            }
        }
        let window = Duration::from_millis(self.config.lease_timeout_ms);
        let active = s.workers.values().filter(|(_, seen)| now.duration_since(*seen) <= window).count();
        self.metrics.set("rwp_pending_tasks", &[], f64::from(pending));
        self.metrics.set("rwp_leased_tasks", &[], f64::from(leased));
        self.metrics.set("rwp_running_jobs", &[], f64::from(running));
        self.metrics.set("rwp_active_workers", &[], active as f64);
    }

    /// Counts bytes of weights sent to a worker.
    pub fn count_weight_bytes(&self, bytes: usize) {
        self.metrics.inc("rwp_weight_bytes_out_total", &[], bytes as f64);
    }

    /// Where a job's checkpoints live.
    fn job_dir(&self, job: &str) -> PathBuf {
        self.config.checkpoint_root().join(job)
    }

    /// Starts a job's engine; `max_parameters` refuses a larger model.
    async fn start_run(&self, record: &JobRecord, max_parameters: Option<u64>) -> Result<Run, ServerError> {
        check_data_dir(self.config.data_roots.as_deref(), record.spec.data_dir.as_deref())
            .map_err(ServerError::InvalidSpec)?;
        let dir = self.job_dir(&record.id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| ServerError::Storage(format!("cannot create {}: {e}", dir.display())))?;
        let config = EngineConfig {
            checkpoint_dir: dir,
            checkpoint_every: self.config.checkpoint_every,
            eval_every_epochs: self.config.eval_every_epochs,
            torch_threads: self.config.torch_threads,
            max_parameters,
            payloads: self.payloads.clone(),
            model_file: record.spec.model_file.as_ref().map(|f| self.models.path(&f.sha256)),
            sandbox: self.config.sandbox(),
        };
        let (engine, init) = EngineHandle::start(record.spec.clone(), config).await?;
        for rejected in &init.rejected_checkpoints {
            warn!(job = %record.id, step = init.step, %rejected, "checkpoint unusable; resuming from an older state");
            self.metrics.inc("rwp_checkpoints_rejected_total", &[], 1.0);
        }
        let board = self.config.data_dir.join("tensorboard").join(&record.id);
        let events_file = match rwp_telemetry::tfevents::EventWriter::create(&board, &self.incarnation) {
            Ok(w) => Some(Arc::new(Mutex::new(w))),
            Err(e) => {
                warn!(job = %record.id, error = %e, "cannot write TensorBoard events");
                None
            }
        };
        let slots = slots_for(&record.spec, &init.schedule, init.step);
        Ok(Run {
            engine,
            layout: Arc::new(init.layout),
            schedule: init.schedule,
            snapshot: Arc::new(Snapshot { version: init.step, bytes: init.snapshot }),
            slots,
            updating: false,
            paused: false,
            started: Instant::now(),
            step_started: Instant::now(),
            step_span: step_span(&record.id, init.step),
            events_file,
            slowest_task: None,
        })
    }

    // ------------------------------------------------------------------ jobs

    /// Takes one request from `principal`'s rate.
    fn admit(&self, principal: &Principal) -> Result<(), ServerError> {
        let Some(rate) = principal.limits.rate else { return Ok(()) };
        self.rates.admit(&principal.name, rate, Instant::now()).map_err(|retry_after| ServerError::RateLimited {
            principal: principal.name.clone(),
            per_second: rate.per_second,
            burst: rate.burst,
            retry_after,
        })
    }

    /// A running-job slot for a job `principal` submits, if it has one left.
    fn reserve_active_job(&self, principal: &Principal) -> Result<ActiveJobSlot<'_>, ServerError> {
        let (Some(owner), Some(limit)) = (principal.owner(), principal.limits.max_active_jobs) else {
            return Ok(ActiveJobSlot { coordinator: self, owner: None });
        };
        if !reserve_in(&mut self.lock(), &owner, limit) {
            return Err(ServerError::TooManyActiveJobs { owner, limit });
        }
        Ok(ActiveJobSlot { coordinator: self, owner: Some(owner) })
    }

    /// Starts a job. With a `request_id` the same owner used within the
    /// last 24 hours, returns the job that request started instead (a
    /// client's retry), as long as it asks for the same name and spec.
    pub async fn submit(
        &self,
        principal: &Principal,
        name: String,
        spec: JobSpec,
        request_id: Option<String>,
    ) -> Result<JobRecord, ServerError> {
        self.admit(principal)?;
        if self.draining.load(Ordering::SeqCst) {
            return Err(ServerError::ShuttingDown);
        }
        check_name(&name, Named::Job)?;
        let request = request_id.map(|id| request_key(principal, Named::Job, id)).transpose()?;
        spec.validate().map_err(|e| ServerError::InvalidSpec(e.to_string()))?;
        check_data_dir(self.config.data_roots.as_deref(), spec.data_dir.as_deref())
            .map_err(ServerError::InvalidSpec)?;
        let _model_in_use = spec.model_file.as_ref().map(|file| self.use_model(principal, file)).transpose()?;
        let _retries_wait = match &request {
            Some(key) => Some(self.requests.lock(key).await),
            None => None,
        };
        if let Some(key) = &request {
            if let Some(job) = self.store.request(key)? {
                let s = self.lock();
                let entry = s.jobs.get(&job).ok_or_else(|| ServerError::JobNotFound(job.clone()))?;
                if entry.record.name != name || entry.record.spec != spec {
                    return Err(ServerError::InvalidSpec(format!(
                        "request_id '{}' already submitted job {job}, with another name or spec: \
                         use a new request_id for a new job",
                        key.id
                    )));
                }
                info!(job = %job, request_id = %key.id, "a retried submission: the job it started");
                return Ok(entry.record.clone());
            }
        }
        let slot = self.reserve_active_job(principal)?;
        self.start_job(principal.owner(), name, spec, None, slot, request.as_ref()).await
    }

    /// Starts a validated job: its engine, its record, its first tasks.
    async fn start_job(
        &self,
        owner: Option<String>,
        name: String,
        spec: JobSpec,
        sweep: Option<(String, u32)>,
        slot: ActiveJobSlot<'_>,
        request: Option<&RequestKey>,
    ) -> Result<JobRecord, ServerError> {
        let id = {
            let mut s = self.lock();
            s.counter += 1;
            format!("job-{:012x}", derive_seed(now_unix_ms() as u64, &[s.counter, u64::from(std::process::id())]) >> 16)
        };
        let now = now_unix_ms();
        let mut record = JobRecord {
            id: id.clone(),
            name,
            spec,
            state: JobState::Running,
            step: 0,
            total_updates: 0,
            updates_per_epoch: 0,
            error: None,
            created_unix_ms: now,
            updated_unix_ms: now,
            skipped_updates: 0,
            last_step: None,
            last_evaluation: None,
            wall_time_before_s: 0.0,
            owner,
            sweep,
        };
        let run = self.start_run(&record, Some(self.config.max_model_parameters)).await.map_err(|e| match e {
            ServerError::Engine(message) => ServerError::InvalidSpec(message),
            other => other,
        })?;
        record.total_updates = run.schedule.total_updates;
        record.updates_per_epoch = run.schedule.updates_per_epoch;
        self.store.put_job_for(&record, request)?;
        info!(job = %id, owner = record.owner.as_deref().unwrap_or(""), method = %record.spec.method, model = %record.spec.model, updates = record.total_updates, "job submitted");
        let (events, _) = broadcast::channel(1024);
        {
            let mut s = self.lock();
            s.jobs.insert(id, JobEntry { record: record.clone(), events, run: Some(run) });
            slot.taken_over(&mut s);
            self.refresh_gauges(&s);
        }
        self.work.notify_waiters();
        Ok(record)
    }

    /// The job `job` as `principal` may see it: another user's job is not
    /// found, so that its existence does not leak.
    fn visible<'a>(s: &'a State, principal: &Principal, job: &str) -> Result<&'a JobEntry, ServerError> {
        s.jobs
            .get(job)
            .filter(|entry| principal.can_see(&entry.record))
            .ok_or_else(|| ServerError::JobNotFound(job.to_owned()))
    }

    pub fn get(&self, principal: &Principal, job: &str) -> Result<JobRecord, ServerError> {
        self.admit(principal)?;
        Self::visible(&self.lock(), principal, job).map(|j| j.record.clone())
    }

    /// The jobs `principal` may see.
    pub fn list(&self, principal: &Principal) -> Result<Vec<JobRecord>, ServerError> {
        self.admit(principal)?;
        Ok(self.lock().jobs.values().filter(|j| principal.can_see(&j.record)).map(|j| j.record.clone()).collect())
    }

    pub async fn cancel(&self, principal: &Principal, job: &str) -> Result<JobRecord, ServerError> {
        self.admit(principal)?;
        Self::visible(&self.lock(), principal, job)?;
        self.end_running(job, JobState::Cancelled, None).await
    }

    /// Ends a job that may be running: checkpoints it (export and inspection
    /// keep working on the state reached) and moves it to `state`.
    async fn end_running(&self, job: &str, state: JobState, error: Option<String>) -> Result<JobRecord, ServerError> {
        let engine = {
            let s = self.lock();
            let entry = s.jobs.get(job).ok_or_else(|| ServerError::JobNotFound(job.to_owned()))?;
            match &entry.run {
                Some(run) => run.engine.clone(),
                None => return Ok(entry.record.clone()),
            }
        };
        let _ = engine.checkpoint().await;
        self.finish(job, state, error)
    }

    /// Moves a job to a terminal state, dropping its engine and leases.
    fn finish(&self, job: &str, state: JobState, error: Option<String>) -> Result<JobRecord, ServerError> {
        let record = {
            let mut s = self.lock();
            s.leases.retain(|_, l| l.job != job);
            let entry = s.jobs.get_mut(job).ok_or_else(|| ServerError::JobNotFound(job.to_owned()))?;
            if entry.record.state.is_terminal() {
                return Ok(entry.record.clone());
            }
            entry.run = None;
            entry.record.state = state;
            entry.record.error = error;
            entry.record.updated_unix_ms = now_unix_ms();
            let _ = entry.events.send(JobEvent::Job(Box::new(entry.record.clone())));
            let record = entry.record.clone();
            self.refresh_gauges(&s);
            record
        };
        info!(job, state = state.name(), error = record.error.as_deref().unwrap_or(""), "job finished");
        self.store.put_job(&record)?;
        if let Some((sweep, _)) = &record.sweep {
            self.trial_ended(sweep);
        }
        if let Some(owner) = &record.owner {
            self.active_job_freed(owner);
        }
        if let Some(file) = &record.spec.model_file {
            self.model_released(file);
        }
        Ok(record)
    }

    /// The job's state as a checkpoint file, and the step it holds.
    pub async fn export(&self, principal: &Principal, job: &str) -> Result<(u64, Vec<u8>), ServerError> {
        self.admit(principal)?;
        let (engine, step) = {
            let s = self.lock();
            let entry = Self::visible(&s, principal, job)?;
            (entry.run.as_ref().map(|r| r.engine.clone()), entry.record.step)
        };
        match engine {
            Some(engine) => Ok((step, engine.export().await?)),
            None => {
                let path = self.job_dir(job).join("checkpoint.safetensors");
                let bytes = tokio::fs::read(&path)
                    .await
                    .map_err(|e| ServerError::Storage(format!("no weights to export for job {job}: {e}")))?;
                rwp_core::checkpoint::verify(&bytes).map_err(|e| {
                    ServerError::Storage(format!("the checkpoint of job {job} ({}) is corrupt: {e}", path.display()))
                })?;
                Ok((step, bytes))
            }
        }
    }

    /// History from `from_step` (step metrics and evaluations in step order,
    /// then the record if the job already ended) and a receiver of live events.
    pub fn watch(
        &self,
        principal: &Principal,
        job: &str,
        from_step: u64,
    ) -> Result<(Vec<JobEvent>, Option<broadcast::Receiver<JobEvent>>), ServerError> {
        self.admit(principal)?;
        let (receiver, record) = {
            let s = self.lock();
            let entry = Self::visible(&s, principal, job)?;
            (entry.events.subscribe(), entry.record.clone())
        };
        let mut history: Vec<(u64, u8, JobEvent)> = Vec::new();
        for m in self.store.steps(job, from_step)? {
            // Metrics of steps the job has not (re)reached are left over from
            // before a restart; they will be recorded again.
            if m.step < record.step {
                history.push((m.step, 0, JobEvent::Step(m)));
            }
        }
        for e in self.store.evaluations(job, from_step + 1)? {
            if e.step <= record.step {
                history.push((e.step - 1, 1, JobEvent::Evaluation(e)));
            }
        }
        history.sort_by_key(|(step, order, _)| (*step, *order));
        let mut events: Vec<JobEvent> = history.into_iter().map(|(_, _, e)| e).collect();
        if record.state.is_terminal() {
            events.push(JobEvent::Job(Box::new(record)));
            return Ok((events, None));
        }
        Ok((events, Some(receiver)))
    }

    // --------------------------------------------------------------- workers

    pub fn register(&self, name: &str, device: &str) -> (String, u64) {
        let mut s = self.lock();
        s.counter += 1;
        let id = format!("w-{}-{}", self.incarnation, s.counter);
        s.workers.insert(id.clone(), (name.to_owned(), Instant::now()));
        info!(worker = %id, name, device, "worker registered");
        (id, self.config.lease_timeout_ms / 3)
    }

    fn check_worker(s: &State, worker: &str) -> Result<(), ServerError> {
        if s.workers.contains_key(worker) {
            Ok(())
        } else {
            Err(ServerError::UnknownWorker(worker.to_owned()))
        }
    }

    /// The lease `lease` of a registered `worker`; another worker's lease is unknown to it.
    fn held_lease(s: &State, worker: &str, lease: &str) -> Result<LeaseRef, ServerError> {
        Self::check_worker(s, worker)?;
        s.leases
            .get(lease)
            .filter(|r| r.worker == worker)
            .cloned()
            .ok_or_else(|| ServerError::UnknownLease(lease.to_owned()))
    }

    /// Leases the next task, waiting up to `wait` for one.
    pub async fn lease(&self, worker: &str, wait: Duration) -> Result<Option<LeasedTask>, ServerError> {
        let deadline = Instant::now() + wait;
        let arrived = Instant::now();
        let mut first_try = true;
        loop {
            let notified = self.work.notified();
            if let Some(task) = self.try_lease(worker)? {
                if first_try {
                    self.metrics.observe("rwp_lease_service_seconds", &[], arrived.elapsed().as_secs_f64());
                }
                return Ok(Some(task));
            }
            first_try = false;
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            // Also wake up in time for the earliest lease expiry.
            let _ = tokio::time::timeout((deadline - now).min(Duration::from_millis(250)), notified).await;
        }
    }

    fn try_lease(&self, worker: &str) -> Result<Option<LeasedTask>, ServerError> {
        let mut guard = self.lock();
        let s = &mut *guard;
        Self::check_worker(s, worker)?;
        let now = Instant::now();
        if let Some((_, seen)) = s.workers.get_mut(worker) {
            *seen = now;
        }
        if self.draining.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let ids: Vec<String> = s.jobs.keys().cloned().collect();
        for offset in 0..ids.len() {
            let job_id = &ids[(s.cursor + offset) % ids.len()];
            let entry = s.jobs.get_mut(job_id).expect("listed");
            let Some(run) = entry.run.as_mut() else { continue };
            if run.updating || run.paused {
                continue;
            }
            let free = run.slots.iter().position(|slot| match &slot.status {
                SlotStatus::Pending => true,
                SlotStatus::Leased { deadline, .. } => *deadline <= now,
                SlotStatus::Done => false,
            });
            let Some(index) = free else { continue };
            s.counter += 1;
            let lease_id = format!("l-{}-{}", self.incarnation, s.counter);
            let slot = &mut run.slots[index];
            let ready_since = match &slot.status {
                SlotStatus::Leased { lease, deadline } => {
                    warn!(job = %job_id, step = slot.task.step, shard = slot.task.shard, expired = %lease, "lease expired, re-issuing");
                    self.metrics.inc("rwp_lease_expiries_total", &[], 1.0);
                    *deadline
                }
                _ => slot.published,
            };
            self.metrics.observe(
                "rwp_task_queue_seconds",
                &[],
                now.saturating_duration_since(ready_since).as_secs_f64(),
            );
            self.metrics.inc("rwp_leases_issued_total", &[], 1.0);
            let timeout = Duration::from_millis(self.config.lease_timeout_ms);
            slot.status = SlotStatus::Leased { lease: lease_id.clone(), deadline: now + timeout };
            slot.leased_at = Some(now);
            let leased = LeasedTask {
                trace: run.step_span.clone(),
                lease_id: lease_id.clone(),
                job_id: job_id.clone(),
                spec: entry.record.spec.clone(),
                task: slot.task.clone(),
                returns_buffers: slot.returns_buffers,
                deadline_unix_ms: now_unix_ms() + timeout.as_millis() as i64,
                timeout: task_timeout(&self.config, run.slowest_task),
            };
            s.leases.insert(
                lease_id,
                LeaseRef { job: job_id.clone(), step: slot.task.step, slot: index, worker: worker.to_owned() },
            );
            s.cursor = (s.cursor + offset + 1) % ids.len();
            self.refresh_gauges(s);
            return Ok(Some(leased));
        }
        self.refresh_gauges(s);
        Ok(None)
    }

    /// Extends a lease; returns its new deadline (Unix ms).
    pub fn renew(&self, worker: &str, lease: &str) -> Result<i64, ServerError> {
        let mut guard = self.lock();
        let s = &mut *guard;
        let r = Self::held_lease(s, worker, lease)?;
        let run = s
            .jobs
            .get_mut(&r.job)
            .and_then(|j| j.run.as_mut())
            .ok_or_else(|| ServerError::UnknownLease(lease.to_owned()))?;
        let timeout = Duration::from_millis(self.config.lease_timeout_ms);
        match run.slots.get_mut(r.slot).map(|slot| &mut slot.status) {
            Some(SlotStatus::Leased { lease: current, deadline })
                if current == lease && r.step == run.snapshot.version =>
            {
                *deadline = Instant::now() + timeout;
                Ok(now_unix_ms() + timeout.as_millis() as i64)
            }
            // The result is in (this worker's, its push racing the renewal, or
            // another's): nothing to keep alive, nothing wrong either.
            Some(SlotStatus::Done) if r.step == run.snapshot.version => Ok(now_unix_ms() + timeout.as_millis() as i64),
            _ => Err(ServerError::StaleTask(format!("lease {lease} is no longer held (expired, re-issued or done)"))),
        }
    }

    /// Hands a lease back unfinished so the task is re-issued at once. With
    /// an `error`, the failure is counted; the third failure of the same task
    /// fails the job with that reason.
    pub fn release(&self, worker: &str, lease: &str, error: Option<&str>) -> Result<(), ServerError> {
        let mut guard = self.lock();
        let s = &mut *guard;
        let r = Self::held_lease(s, worker, lease)?;
        let job = r.job.clone();
        let mut give_up = None;
        if let Some(run) = s.jobs.get_mut(&r.job).and_then(|j| j.run.as_mut()) {
            if let Some(slot) = run.slots.get_mut(r.slot) {
                if matches!(&slot.status, SlotStatus::Leased { lease: current, .. } if current == lease) {
                    slot.status = SlotStatus::Pending;
                    if let Some(error) = error {
                        self.metrics.inc("rwp_task_failures_total", &[], 1.0);
                        slot.failures += 1;
                        warn!(job = %r.job, step = slot.task.step, shard = slot.task.shard, worker, error, "task failed on a worker");
                        if slot.failures >= MAX_TASK_FAILURES {
                            give_up = Some(format!(
                                "{:?} shard {} of step {} failed {} times; last error (worker {worker}): {error}",
                                slot.task.role, slot.task.shard, slot.task.step, slot.failures
                            ));
                        }
                    }
                }
            }
        }
        self.refresh_gauges(s);
        drop(guard);
        if let Some(reason) = give_up {
            self.finish(&job, JobState::Failed, Some(reason))?;
        }
        self.work.notify_waiters();
        Ok(())
    }

    /// The weights version a worker asks for, if it is the current one.
    pub fn snapshot(&self, job: &str, version: u64) -> Result<Arc<Snapshot>, ServerError> {
        let s = self.lock();
        let entry = s.jobs.get(job).ok_or_else(|| ServerError::JobNotFound(job.to_owned()))?;
        let run = entry
            .run
            .as_ref()
            .ok_or(ServerError::JobNotRunning { job: job.to_owned(), state: entry.record.state.name() })?;
        if run.snapshot.version != version {
            return Err(ServerError::StaleVersion {
                job: job.to_owned(),
                requested: version,
                current: run.snapshot.version,
            });
        }
        Ok(run.snapshot.clone())
    }

    /// Checks a push header before its payload is read.
    pub fn admit_push(&self, h: &PushHeader) -> Result<PushAdmission, ServerError> {
        if self.draining.load(Ordering::SeqCst) {
            return Err(ServerError::ShuttingDown);
        }
        let s = self.lock();
        Self::check_worker(&s, &h.worker_id)?;
        let entry = s.jobs.get(&h.job_id).ok_or_else(|| ServerError::JobNotFound(h.job_id.clone()))?;
        let run = entry
            .run
            .as_ref()
            .ok_or(ServerError::JobNotRunning { job: h.job_id.clone(), state: entry.record.state.name() })?;
        let Some(lease) = s.leases.get(&h.lease_id) else {
            if h.step < run.snapshot.version {
                return Err(ServerError::StaleTask(format!(
                    "step {} of job {} is already applied (now at step {})",
                    h.step, h.job_id, run.snapshot.version
                )));
            }
            return Err(ServerError::UnknownLease(h.lease_id.clone()));
        };
        if lease.job != h.job_id || lease.step != h.step {
            return Err(ServerError::BadPush(format!(
                "lease {} is for job {} step {}, not job {} step {}",
                h.lease_id, lease.job, lease.step, h.job_id, h.step
            )));
        }
        let slot = &run.slots[lease.slot];
        if slot.task.role != h.role || slot.task.shard != h.shard {
            return Err(ServerError::BadPush(format!(
                "lease {} is for {:?} shard {}, not {:?} shard {}",
                h.lease_id, slot.task.role, slot.task.shard, h.role, h.shard
            )));
        }
        if h.weights_version != h.step {
            return Err(ServerError::StaleVersion {
                job: h.job_id.clone(),
                requested: h.weights_version,
                current: run.snapshot.version,
            });
        }
        let sizes = run
            .layout
            .expect(&h.announced, slot.returns_buffers)
            .map_err(|e| ServerError::BadPush(format!("{e}, for {} on job {}", entry.record.spec.model, h.job_id)))?;
        if matches!(slot.status, SlotStatus::Done) {
            return Ok(PushAdmission::Duplicate(sizes));
        }
        Ok(PushAdmission::Expect(sizes))
    }

    /// Takes a complete, admitted payload. Returns whether it was accepted
    /// (false: a duplicate, dropped).
    pub async fn complete_push(self: &Arc<Self>, h: &PushHeader, payload: Payload) -> Result<bool, ServerError> {
        let outcome = {
            let mut guard = self.lock();
            let s = &mut *guard;
            let Some(lease) = s.leases.get(&h.lease_id) else {
                return Err(ServerError::StaleTask(format!("lease {} ended while its result was sent", h.lease_id)));
            };
            let slot_index = lease.slot;
            let entry = s.jobs.get_mut(&h.job_id).ok_or_else(|| ServerError::JobNotFound(h.job_id.clone()))?;
            let policy = entry.record.spec.non_finite;
            let Some(run) = entry.run.as_mut() else {
                return Err(ServerError::JobNotRunning { job: h.job_id.clone(), state: entry.record.state.name() });
            };
            if run.slots[slot_index].result.is_some() {
                return Ok(false);
            }
            let split = payload.gradient_bytes();
            let payload = Bytes::from(payload.into_bytes());
            self.metrics.inc("rwp_gradient_bytes_in_total", &[], payload.len() as f64);
            let (gradient, buffers) = (payload.slice(..split), payload.slice(split..));
            let non_finite = match run.layout.check_finite(&gradient, &buffers) {
                Ok(()) => None,
                Err(e @ PayloadError::NonFinite(_)) => Some(e),
                Err(e) => return Err(ServerError::BadPush(e.to_string())),
            };
            if let Some(e) = non_finite {
                let reason = format!("{e} ({:?} shard {} of step {}, worker {})", h.role, h.shard, h.step, h.worker_id);
                Err((policy, reason))
            } else {
                self.metrics.inc("rwp_results_accepted_total", &[], 1.0);
                let slot = &mut run.slots[slot_index];
                slot.status = SlotStatus::Done;
                if let Some(took) = slot.leased_at.map(|at| at.elapsed()) {
                    run.slowest_task = Some(run.slowest_task.map_or(took, |s| s.max(took)));
                }
                slot.result = Some(RawResult {
                    gradient,
                    // A task that returns BN buffers returns them even when the
                    // model has none (an MLP): an empty set, not a missing one.
                    buffers: slot.returns_buffers.then_some(buffers),
                    loss: h.loss,
                    accuracy: h.accuracy,
                });
                let complete = run.slots.iter().all(|s| s.result.is_some()) && !run.updating;
                if complete {
                    run.updating = true;
                    self.metrics.observe(
                        "rwp_step_seconds",
                        &[("phase", "waiting")],
                        run.step_started.elapsed().as_secs_f64(),
                    );
                    let mut raw = RawStep::default();
                    for slot in &mut run.slots {
                        let result = slot.result.take().expect("complete");
                        match slot.task.role {
                            Role::Clean | Role::Sam => raw.clean.push(result),
                            Role::Perturbed => raw.perturbed.push(result),
                        }
                    }
                    let update_span =
                        tracing::info_span!(parent: &run.step_span, "rwp.update", job = %h.job_id, step = h.step);
                    Ok(Some((run.engine.clone(), raw, update_span)))
                } else {
                    Ok(None)
                }
            }
        };
        match outcome {
            Ok(None) => Ok(true),
            Ok(Some((engine, raw, update_span))) => {
                let this = Arc::clone(self);
                let job = h.job_id.clone();
                tokio::spawn(
                    async move {
                        let started = Instant::now();
                        let outcome = engine.update(raw).await;
                        this.metrics.observe(
                            "rwp_step_seconds",
                            &[("phase", "update")],
                            started.elapsed().as_secs_f64(),
                        );
                        if let Ok(o) = &outcome {
                            for (phase, seconds) in &o.phases {
                                this.metrics.observe("rwp_step_seconds", &[("phase", phase)], *seconds);
                            }
                        }
                        this.apply_outcome(&job, outcome).await;
                    }
                    .instrument(update_span),
                );
                Ok(true)
            }
            Err((NonFinitePolicy::Fail, reason)) => {
                // A sweep trial whose gradients blow up (a σ or learning rate
                // far too large) is what early stopping is for: it stops,
                // keeping its metrics, instead of failing the sweep's report.
                let trial = self.lock().jobs.get(&h.job_id).is_some_and(|j| j.record.sweep.is_some());
                if trial {
                    let reason = format!("stopped early at update {}: non-finite gradient: {reason}", h.step);
                    self.finish(&h.job_id, JobState::Stopped, Some(reason.clone()))?;
                    return Err(ServerError::NonFinite(format!("{reason}; the trial stopped")));
                }
                self.finish(&h.job_id, JobState::Failed, Some(format!("non-finite gradient: {reason}")))?;
                Err(ServerError::NonFinite(format!("{reason}; the job failed")))
            }
            Err((NonFinitePolicy::Skip, reason)) => {
                let engine = {
                    let mut s = self.lock();
                    let run = s.jobs.get_mut(&h.job_id).and_then(|j| j.run.as_mut());
                    match run {
                        Some(run) if !run.updating => {
                            run.updating = true;
                            for slot in &mut run.slots {
                                slot.result = None;
                            }
                            Some(run.engine.clone())
                        }
                        _ => None,
                    }
                };
                if let Some(engine) = engine {
                    warn!(job = %h.job_id, step = h.step, %reason, "skipping update");
                    let this = Arc::clone(self);
                    let job = h.job_id.clone();
                    tokio::spawn(async move {
                        let outcome = engine.skip().await;
                        this.apply_outcome(&job, outcome).await;
                    });
                }
                Err(ServerError::NonFinite(format!("{reason}; the update is skipped")))
            }
        }
    }

    /// Records an update the engine applied and schedules the next one.
    async fn apply_outcome(self: &Arc<Self>, job: &str, outcome: Result<UpdateOutcome, ServerError>) {
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                let _ = self.finish(job, JobState::Failed, Some(e.to_string()));
                return;
            }
        };
        let (record, metrics, evaluation, finished, events_file) = {
            let mut guard = self.lock();
            let s = &mut *guard;
            s.leases.retain(|_, l| l.job != job);
            let Some(entry) = s.jobs.get_mut(job) else { return };
            let Some(run) = entry.run.as_mut() else { return };
            let wall = entry.record.wall_time_before_s + run.started.elapsed().as_secs_f64();
            let step = outcome.step - 1;
            let metrics = match &outcome.report {
                Some(r) => StepMetrics {
                    step,
                    loss: r.loss,
                    accuracy: r.accuracy,
                    perturbed_loss: r.perturbed_loss,
                    lr: r.lr,
                    sigma: r.sigma,
                    wall_time_s: wall,
                    skipped: false,
                },
                None => StepMetrics {
                    step,
                    loss: 0.0,
                    accuracy: 0.0,
                    perturbed_loss: None,
                    lr: run.schedule.lr_at(step),
                    sigma: 0.0,
                    wall_time_s: wall,
                    skipped: true,
                },
            };
            let evaluation = outcome.evaluation.map(|(epoch, e, v)| Evaluation {
                step: outcome.step,
                epoch,
                test_loss: e.loss,
                test_accuracy: e.accuracy,
                wall_time_s: wall,
                validation_loss: v.map(|v| v.loss),
                validation_accuracy: v.map(|v| v.accuracy),
            });
            entry.record.step = outcome.step;
            entry.record.updated_unix_ms = now_unix_ms();
            if metrics.skipped {
                entry.record.skipped_updates += 1;
            }
            entry.record.last_step = Some(metrics.clone());
            if let Some(e) = &evaluation {
                entry.record.last_evaluation = Some(e.clone());
            }
            let finished = outcome.step >= run.schedule.total_updates;
            run.snapshot = Arc::new(Snapshot { version: outcome.step, bytes: outcome.snapshot });
            run.updating = false;
            run.step_started = Instant::now();
            let labels = [("job", job)];
            if metrics.skipped {
                self.metrics.inc("rwp_skipped_updates_total", &labels, 1.0);
            } else {
                self.metrics.inc("rwp_updates_total", &labels, 1.0);
                self.metrics.set("rwp_job_loss", &labels, metrics.loss);
                self.metrics.set("rwp_job_accuracy", &labels, metrics.accuracy);
            }
            if let Some(e) = &evaluation {
                self.metrics.set("rwp_job_test_accuracy", &labels, e.test_accuracy);
            }
            if !finished {
                run.slots = slots_for(&entry.record.spec, &run.schedule, outcome.step);
                // Ends the finished update's span; the next one starts now.
                run.step_span = step_span(job, outcome.step);
            }
            let _ = entry.events.send(JobEvent::Step(metrics.clone()));
            if let Some(e) = &evaluation {
                let _ = entry.events.send(JobEvent::Evaluation(e.clone()));
            }
            if let Some(error) = &outcome.checkpoint_error {
                run.paused = true;
                entry.record.state = JobState::Paused;
                entry.record.error = Some(format!(
                    "paused: the checkpoint after update {} could not be written ({error}); retrying every {} ms",
                    outcome.step, self.config.checkpoint_retry_ms
                ));
                let _ = entry.events.send(JobEvent::Job(Box::new(entry.record.clone())));
            }
            let record = entry.record.clone();
            let events_file = run.events_file.clone();
            self.refresh_gauges(s);
            (record, metrics, evaluation, finished, events_file)
        };
        let paused = outcome.checkpoint_error.is_some();
        if paused {
            warn!(job, step = record.step, reason = record.error.as_deref().unwrap_or(""), "job paused");
            self.metrics.inc("rwp_checkpoint_failures_total", &[], 1.0);
            self.retry_checkpoint(job.to_owned(), finished);
        }
        if let Some(file) = events_file {
            let mut file = file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let wall = now_unix_ms() as f64 / 1000.0;
            let mut scalars = vec![("train/lr", metrics.lr)];
            if !metrics.skipped {
                scalars.extend([("train/loss", metrics.loss), ("train/accuracy", metrics.accuracy)]);
                if let Some(p) = metrics.perturbed_loss {
                    scalars.push(("train/perturbed_loss", p));
                }
                if metrics.sigma > 0.0 {
                    scalars.push(("train/sigma", metrics.sigma));
                }
            }
            let mut written = file.scalars(metrics.step + 1, wall, &scalars);
            if let Some(e) = &evaluation {
                written = written.and_then(|()| {
                    let mut scalars = vec![("test/loss", e.test_loss), ("test/accuracy", e.test_accuracy)];
                    if let (Some(loss), Some(accuracy)) = (e.validation_loss, e.validation_accuracy) {
                        scalars.extend([("validation/loss", loss), ("validation/accuracy", accuracy)]);
                    }
                    file.scalars(e.step, wall, &scalars)
                });
            }
            if let Err(e) = written {
                warn!(job, error = %e, "cannot write TensorBoard events");
            }
        }
        if let Err(e) = self.store.put_step(&record, &metrics, evaluation.as_ref()) {
            warn!(job, error = %e, "cannot record metrics");
        }
        if let Some((sweep, trial)) = &record.sweep {
            self.sweep_changed(sweep);
            if let (Some(e), false) = (&evaluation, finished) {
                self.judge_trial(sweep, *trial, job, e).await;
            }
        }
        if finished && !paused {
            let _ = self.finish(job, JobState::Succeeded, None);
        }
        self.work.notify_waiters();
    }

    /// Retries a paused job's checkpoint until it is written (then the job
    /// goes on, or ends if that was its last update), the job ends, or the
    /// server stops.
    fn retry_checkpoint(self: &Arc<Self>, job: String, finished: bool) {
        let this = Arc::clone(self);
        let mut stopping = self.stopping();
        tokio::spawn(async move {
            let interval = Duration::from_millis(this.config.checkpoint_retry_ms);
            loop {
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    _ = stopping.wait_for(|s| *s) => return,
                }
                let engine = {
                    let s = this.lock();
                    match s.jobs.get(&job).and_then(|j| j.run.as_ref()) {
                        Some(run) if run.paused => run.engine.clone(),
                        _ => return,
                    }
                };
                let Err(e) = engine.checkpoint().await else { break };
                this.metrics.inc("rwp_checkpoint_failures_total", &[], 1.0);
                tracing::debug!(job, error = %e, "checkpoint retry failed");
            }
            let record = {
                let mut s = this.lock();
                let Some(entry) = s.jobs.get_mut(&job) else { return };
                let Some(run) = entry.run.as_mut() else { return };
                run.paused = false;
                run.step_started = Instant::now();
                entry.record.state = JobState::Running;
                entry.record.error = None;
                entry.record.updated_unix_ms = now_unix_ms();
                let _ = entry.events.send(JobEvent::Job(Box::new(entry.record.clone())));
                let record = entry.record.clone();
                this.refresh_gauges(&s);
                record
            };
            info!(job, step = record.step, "checkpoint written; job resumed");
            if let Err(e) = this.store.put_job(&record) {
                warn!(job, error = %e, "cannot record the resumed job");
            }
            if finished {
                let _ = this.finish(&job, JobState::Succeeded, None);
            }
            this.work.notify_waiters();
        });
    }

    /// Stops handing out work, lets in-flight updates finish (up to the drain
    /// timeout) and checkpoints every running job, so a restart continues
    /// exactly where this process stopped.
    pub async fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        let _ = self.stopping.send(true);
        self.work.notify_waiters();
        let deadline = Instant::now() + Duration::from_millis(self.config.drain_timeout_ms);
        while Instant::now() < deadline {
            let busy = self.lock().jobs.values().any(|j| j.run.as_ref().is_some_and(|r| r.updating));
            if !busy {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let engines: Vec<(String, EngineHandle)> = self
            .lock()
            .jobs
            .iter()
            .filter_map(|(id, j)| j.run.as_ref().map(|r| (id.clone(), r.engine.clone())))
            .collect();
        for (job, engine) in engines {
            match engine.checkpoint().await {
                Ok(step) => info!(job, step, "checkpointed for shutdown"),
                Err(e) => warn!(job, error = %e, "checkpoint at shutdown failed"),
            }
        }
    }

    /// Becomes `true` when the server starts to shut down: long-lived
    /// streams (watches) end then.
    #[must_use]
    pub fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    #[must_use]
    pub fn chunk_bytes(&self) -> usize {
        self.config.chunk_bytes
    }

    /// An empty buffer for a pushed payload of `size` bytes, reused when one is idle.
    #[must_use]
    pub fn payload_buffer(&self, size: usize) -> Vec<u8> {
        self.payloads.take(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_dirs_must_lie_under_a_root_after_dot_dot_is_resolved() {
        let roots = [PathBuf::from("/datasets"), PathBuf::from("/mnt/data/")];
        let check = |dir: &str| check_data_dir(Some(&roots), Some(Path::new(dir)));
        for ok in ["/datasets", "/datasets/cifar10", "/mnt/data/x/./y", "/datasets/a/../b", "/x/../datasets/c"] {
            check(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in
            ["/etc", "/datasets2", "/datasets/../etc", "/datasets/a/../../etc", "datasets/cifar", "../datasets", "/"]
        {
            let err = check(bad).unwrap_err();
            assert!(err.ends_with("(data_roots): /datasets, /mnt/data/"), "{bad}: {err}");
        }
        // `..` above the root stays at the root, as the file system has it.
        check("/../datasets/x").unwrap();
        // No roots: any path; no data_dir: nothing to check; an empty list: none allowed.
        check_data_dir(None, Some(Path::new("/etc"))).unwrap();
        check_data_dir(Some(&roots), None).unwrap();
        let err = check_data_dir(Some(&[]), Some(Path::new("/datasets"))).unwrap_err();
        assert!(err.contains("allows only the built-in dataset"), "{err}");
    }

    #[test]
    fn names_with_terminal_controls_are_refused_naming_the_code_point() {
        for ok in ["", "sigma sweep", "σ-grid ünïcode 日本", &"n".repeat(MAX_JOB_NAME_CHARS)] {
            check_name(ok, Named::Job).unwrap();
        }
        let cases = [
            ("a\u{1b}[2J", "U+001B"),
            ("a\rb", "U+000D"),
            ("a\nb", "U+000A"),
            ("a\0", "U+0000"),
            ("a\tb", "U+0009"),
            ("a\u{7f}", "U+007F"),
            ("a\u{9b}31m", "U+009B"),
            ("abc\u{202e}gpj.exe", "U+202E"),
            ("\u{202a}", "U+202A"),
            ("\u{2066}x\u{2069}", "U+2066"),
            ("x\u{2069}", "U+2069"),
        ];
        for (name, code) in cases {
            let err = check_name(name, Named::Job).unwrap_err();
            assert!(
                matches!(&err, ServerError::InvalidSpec(m) if m.starts_with("name: ") && m.contains(code)),
                "{err:?}"
            );
            let err = check_name(name, Named::Sweep).unwrap_err();
            assert!(
                matches!(&err, ServerError::InvalidSweep(m) if m.contains("sweep name") && m.contains(code)),
                "{err:?}"
            );
        }
        let err = check_name("\u{2067}", Named::Job).unwrap_err().to_string();
        assert_eq!(err, "invalid job spec: name: character 1 of the job name is U+2067, a control character; names must be printable text");
    }
}
