//! The coordinator: the front the gRPC handlers call. It wires together
//! parts with one job each:
//!
//! - [`registry`]: job records, ownership and visibility, quotas, store
//!   writes and each job's event broadcast (the job API);
//! - [`rwp_scheduler::Scheduler`]: update slots and leases, a synchronous
//!   model with no I/O (the worker API in [`work`] drives it);
//! - [`updates`]: a complete update handed to the job's engine and its
//!   outcome applied; [`recorder`] the side effects of a job's start, its
//!   updates, evaluations and end (store, TensorBoard, MLflow, metrics);
//! - [`evaluations`]: evaluations as shards leased to workers, their
//!   results summed and recorded;
//! - [`sweeps`]: hyper-parameter sweeps, driven by their trials' events;
//! - [`models`]: uploaded model files;
//! - [`lifecycle`]: jobs that ended, resumed or deleted (by request or by
//!   the retention rule);
//! - [`admission`]: checks of names, request ids and data directories.
//!
//! Locking: one mutex over the registry, the scheduler and the sweeps,
//! never held across an `.await` or a database write.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rwp_scheduler::{Planned, Scheduler, Timing};
use rwp_spec::eval::BatchEval;
use rwp_spec::payload::{Layout, PayloadSizes};
use rwp_spec::plan::tasks_for_step;
use rwp_spec::rng::derive_seed;
use rwp_spec::{JobSpec, Role, Schedule};
use tokio::sync::{broadcast, Notify};
use tracing::{info, warn};

use crate::config::ServerConfig;
use crate::domain::{now_unix_ms, JobState, LogKind};
use crate::engine::{EngineConfig, EngineHandle, RawResult};
use crate::error::ServerError;
use crate::limits::RateLimiter;
use crate::models::ModelStore;
use crate::pool::{self, PayloadPool};
use crate::store::Store;
use rwp_telemetry::Registry;

mod admission;
mod evaluations;
mod inspections;
mod lifecycle;
mod logs;
mod metrics;
mod models;
mod recorder;
mod registry;
mod storage;
mod sweeps;
mod updates;
mod work;
mod workers;

use admission::RequestLocks;
use metrics::ServerMetrics;
use recorder::UpdateRecorder;
use registry::{JobEntry, Jobs};
use sweeps::SweepEntry;

/// A serialised weights version, shared by every stream that sends it.
#[derive(Debug)]
pub struct Snapshot {
    pub version: u64,
    pub bytes: Bytes,
}

/// What a worker says it is pushing (the header of a push), as the worker
/// builds it.
pub use rwp_spec::work::PushHeader;

/// A task handed to a worker, with the span of its update.
#[derive(Debug, Clone)]
pub struct LeasedTask {
    /// The span of the task's update, whose trace context goes to the worker.
    pub trace: tracing::Span,
    /// The task as the worker sees it.
    pub leased: rwp_spec::work::LeasedTask,
}

/// What a worker asking for work gets.
#[derive(Debug)]
pub enum Leased {
    Task(Box<LeasedTask>),
    /// A submitted job's own data to inspect.
    Inspection(Box<rwp_spec::work::Inspection>),
}

/// Whether a push should be read, and how many bytes it must have.
#[derive(Debug, PartialEq, Eq)]
pub enum PushAdmission {
    /// Read exactly these sizes.
    Expect(PayloadSizes),
    /// The shard's result is already in: read (checking the sizes) and drop.
    Duplicate(PayloadSizes),
}

/// A running job's engine and what its tasks need.
#[derive(Debug)]
struct Run {
    engine: EngineHandle,
    layout: Arc<Layout>,
    schedule: Schedule,
    snapshot: Arc<Snapshot>,
    started: Instant,
    /// The trace span of the current update: open from its tasks'
    /// publication to its application; workers' task spans are its children.
    step_span: tracing::Span,
    /// Versions under evaluation on the workers, by version.
    evaluating: BTreeMap<u64, evaluations::Evaluating>,
    /// Time since `started` when no worker was connected: not training time.
    idle: Duration,
}

impl Run {
    /// Seconds this run has trained: since it started, less the time no
    /// worker was connected (`outage`: since when none is, if none is now).
    fn trained_seconds(&self, outage: Option<Instant>) -> f64 {
        let now = Instant::now();
        let current = outage.map_or(Duration::ZERO, |since| now.saturating_duration_since(since.max(self.started)));
        now.saturating_duration_since(self.started).saturating_sub(self.idle + current).as_secs_f64()
    }
}

#[derive(Debug)]
struct State {
    jobs: Jobs,
    scheduler: Scheduler<RawResult, Vec<BatchEval>>,
    sweeps: BTreeMap<String, SweepEntry>,
    /// Model files named by submissions under way, with how many.
    models_starting: HashMap<String, u32>,
    workers: workers::Workers,
    /// Since when no worker is connected, while none is.
    no_workers_since: Option<Instant>,
    /// Submitted jobs' own data waiting for (or under) a worker's inspection.
    inspections: inspections::Inspections,
}

#[derive(Debug)]
pub struct Coordinator {
    config: Arc<ServerConfig>,
    store: Store,
    state: Mutex<State>,
    work: Notify,
    stopping: tokio::sync::watch::Sender<bool>,
    metrics: ServerMetrics,
    recorder: UpdateRecorder,
    rates: RateLimiter,
    logs: logs::JobLogs,
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

/// The tasks of `spec`'s update `step`, as the scheduler plans them.
fn planned(spec: &JobSpec, schedule: &Schedule, step: u64) -> Vec<Planned> {
    tasks_for_step(spec, schedule, step)
        .into_iter()
        .map(|task| {
            let returns_buffers = match task.role {
                Role::Clean | Role::Sam => true,
                Role::Perturbed => spec.method.bn_stats_from_perturbed(),
            };
            Planned { task, returns_buffers }
        })
        .collect()
}

fn step_span(job: &str, step: u64) -> tracing::Span {
    tracing::info_span!(parent: None, "rwp.step", job = %job, step)
}

impl Coordinator {
    /// Opens the store in the data directory and resumes every running job
    /// from its latest checkpoint.
    pub async fn open(config: ServerConfig, registry: Arc<Registry>) -> Result<Arc<Self>, ServerError> {
        let store = Store::open(&config.data_dir)?;
        Self::open_with_store(config, store, registry).await
    }

    /// [`Self::open`] on the data directory's store, opened beforehand
    /// (`rwp-server` opens it before it listens, so that a directory it
    /// cannot use, or one another server holds, is reported first).
    pub async fn open_with_store(
        config: ServerConfig,
        store: Store,
        registry: Arc<Registry>,
    ) -> Result<Arc<Self>, ServerError> {
        let metrics = ServerMetrics::new(&registry);
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
        let timing = Timing {
            lease_timeout: Duration::from_millis(config.lease_timeout_ms),
            task_timeout_initial: Duration::from_millis(config.task_timeout_initial_ms),
            task_timeout_floor: Duration::from_millis(config.task_timeout_floor_ms),
        };
        let state = State {
            jobs: Jobs::default(),
            scheduler: Scheduler::new(timing, incarnation.clone()),
            sweeps: BTreeMap::new(),
            models_starting: HashMap::new(),
            workers: workers::Workers::default(),
            no_workers_since: None,
            inspections: inspections::Inspections::default(),
        };
        let logs = logs::JobLogs::open(store.clone(), store.jobs()?.into_iter().map(|r| r.id.clone()))?;
        let tracker = match &config.mlflow_tracking_uri {
            Some(uri) => {
                let tracker = rwp_telemetry::mlflow::MlflowTracker::start(uri, &config.mlflow_experiment)
                    .map_err(|e| ServerError::Storage(format!("mlflow_tracking_uri: {e}")))?;
                info!(tracker = %uri, experiment = %config.mlflow_experiment, "jobs are logged to MLflow");
                Some(tracker)
            }
            None => None,
        };
        let recorder = UpdateRecorder::new(
            store.clone(),
            metrics.clone(),
            config.data_dir.join("tensorboard"),
            incarnation,
            tracker,
        );
        let this = Arc::new(Self {
            config: Arc::new(config),
            store,
            state: Mutex::new(state),
            work: Notify::new(),
            stopping: tokio::sync::watch::channel(false).0,
            metrics,
            recorder,
            rates: RateLimiter::default(),
            logs,
            payloads: Arc::new(PayloadPool::new(pool::MAX_IDLE_BYTES)),
            models,
            sweep_signal,
            sweep_signals: Mutex::new(Some(sweep_signals)),
            sweep_scheduler: tokio::sync::Mutex::new(()),
            requests: RequestLocks::default(),
            disowned: Mutex::default(),
        });
        let mut finishing = Vec::new();
        for mut record in this.store.jobs()? {
            let (events, _) = broadcast::channel(1024);
            let mut resumed_evaluation = None;
            let run = if matches!(record.state, JobState::Running | JobState::Paused) {
                match this.start_run(&record, None).await {
                    Ok((run, evaluation)) => {
                        // An evaluation of this version that did not finish
                        // before the restart runs again.
                        let recorded = this.store.evaluations(&record.id, run.snapshot.version)?;
                        if !recorded.iter().any(|e| e.step == run.snapshot.version) {
                            resumed_evaluation = evaluation.map(|epoch| (epoch, run.snapshot.clone()));
                        }
                        info!(job = %record.id, step = run.snapshot.version, "resuming job");
                        this.log(
                            &record.id,
                            LogKind::ServerRestarted,
                            None,
                            format!(
                                "the server restarted; the job goes on from its checkpoint at step {}",
                                run.snapshot.version
                            ),
                        );
                        this.recorder.job_started(&record, None, true);
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
            let mut s = this.lock();
            if let Some(run) = &run {
                let version = run.snapshot.version;
                // Training that is done leaves nothing to schedule but its evaluation.
                let tasks = if version < run.schedule.total_updates {
                    planned(&record.spec, &run.schedule, version)
                } else {
                    finishing.push(record.id.clone());
                    Vec::new()
                };
                s.scheduler.schedule(&record.id, version, tasks, Instant::now());
            }
            let id = record.id.clone();
            s.jobs.insert(JobEntry::new(record, events, run));
            if let Some((epoch, snapshot)) = resumed_evaluation {
                Self::start_evaluation(&mut s, &id, epoch, snapshot);
            }
        }
        this.refresh_gauges(&this.lock());
        for job in finishing {
            this.succeed_when_done(&job);
        }
        this.resume_sweeps()?;
        this.spawn_model_collection();
        this.spawn_retention();
        this.spawn_log_writer();
        this.spawn_worker_watch();
        Ok(this)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Recomputes the gauges that summarise the scheduling state.
    fn refresh_gauges(&self, s: &State) {
        self.metrics.show(s.scheduler.gauges(Instant::now()));
    }

    /// Counts bytes of weights sent to a worker.
    pub fn count_weight_bytes(&self, bytes: usize) {
        self.metrics.weight_bytes_out.inc(bytes as f64);
    }

    /// Where a job's checkpoints live.
    fn job_dir(&self, job: &str) -> PathBuf {
        self.config.checkpoint_root().join(job)
    }

    /// Removes the directory of a job that was refused after it was made
    /// (its engine would not start, its record could not be stored), so a
    /// refused submit leaves nothing behind.
    fn discard_job_dir(&self, job: &str) {
        let dir = self.job_dir(job);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!(job, dir = %dir.display(), error = %e, "cannot remove the directory of a refused job"),
        }
    }

    /// Starts a job's engine; `max_parameters` refuses a larger model. With
    /// the run comes the epoch of its version when that is one to evaluate.
    async fn start_run(
        &self,
        record: &registry::JobRecord,
        max_parameters: Option<u64>,
    ) -> Result<(Run, Option<u64>), ServerError> {
        admission::check_data_dir(self.config.data_roots.as_deref(), record.spec.data_dir.as_deref())
            .map_err(ServerError::InvalidSpec)?;
        let dir = self.job_dir(&record.id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| ServerError::Storage(format!("cannot create {}: {e}", dir.display())))?;
        let config = EngineConfig {
            checkpoint_dir: dir.clone(),
            checkpoint_every: self.config.checkpoint_every,
            eval_every_epochs: self.config.eval_every_epochs,
            torch_threads: self.config.torch_threads,
            engine_threads: self.config.resolved_engine_threads(),
            device: self.config.resolved_engine_device(),
            max_parameters,
            payloads: self.payloads.clone(),
            model_file: record.spec.model_file.as_ref().map(|f| self.models.path(&f.sha256)),
            initial_state: Some(dir.join(lifecycle::INITIAL_STATE_FILE)).filter(|path| path.exists()),
            sandbox: self.config.sandbox(),
        };
        let (engine, init) = EngineHandle::start(record.spec.clone(), config).await?;
        for rejected in &init.rejected_checkpoints {
            warn!(job = %record.id, step = init.step, %rejected, "checkpoint unusable; resuming from an older state");
            self.metrics.checkpoints_rejected.inc(1.0);
        }
        self.recorder.open_board(record);
        let run = Run {
            engine,
            layout: Arc::new(init.layout),
            schedule: init.schedule,
            snapshot: Arc::new(Snapshot { version: init.step, bytes: init.snapshot }),
            started: Instant::now(),
            step_span: step_span(&record.id, init.step),
            evaluating: BTreeMap::new(),
            idle: Duration::ZERO,
        };
        Ok((run, init.evaluation))
    }

    /// Stops handing out work, lets in-flight updates finish (up to the drain
    /// timeout) and checkpoints every running job, so a restart continues
    /// exactly where this process stopped.
    pub async fn drain(&self) {
        self.lock().scheduler.drain();
        let _ = self.stopping.send(true);
        self.work.notify_waiters();
        let deadline = Instant::now() + Duration::from_millis(self.config.drain_timeout_ms);
        while Instant::now() < deadline {
            if !self.lock().scheduler.applying() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let engines: Vec<(String, EngineHandle)> = self.lock().jobs.engines();
        for (job, engine) in engines {
            match engine.checkpoint().await {
                Ok(step) => info!(job, step, "checkpointed for shutdown"),
                Err(e) => warn!(job, error = %e, "checkpoint at shutdown failed"),
            }
        }
    }

    fn draining(&self) -> bool {
        self.lock().scheduler.is_draining()
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
