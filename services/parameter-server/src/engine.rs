//! One training engine per running job, on its own thread: it owns the job's
//! tensors (model, weights, momentum, `F`, BN buffers) and does the work
//! that needs libtorch: aggregation and update, checkpoints, and serialising
//! each new weights version once. The async side of the server only ever
//! holds bytes; it talks to the engine over a channel.
//!
//! The engine never reads a dataset: the schedule and the model's shape come
//! from [`DatasetInfo`]. Evaluations are the workers' (the coordinator
//! schedules their shards); the engine only says when one is due.
//!
//! A TorchScript job's code never runs here: its model is known by its
//! tensors only ([`Model::described`]), read from the module by a sandbox
//! process started from the engine thread when the engine starts, without
//! access to the job's data, and stopped once it has described the module.

use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::thread;

use bytes::Bytes;
use rwp_core::checkpoint;
use rwp_core::data::DatasetInfo;
use rwp_core::model::Model;
use rwp_core::optim::{
    apply_payloads, Finiteness, PayloadUpdateError, ShardPayload, StepPayloads, TrainState, UpdateReport,
};
use rwp_core::wire::{self, SnapshotWriter};
use rwp_sandbox::{Grants, ModelHost, SandboxConfig, SandboxError};
use rwp_spec::payload::Layout;
use rwp_spec::plan::init_seed;
use rwp_spec::ModelKind;
use rwp_spec::{JobSpec, Schedule};
use tch::Device;
use tokio::sync::oneshot;

use crate::error::ServerError;
use crate::pool::PayloadPool;

/// One shard's result as it arrived.
#[derive(Debug)]
pub struct RawResult {
    pub gradient: Bytes,
    pub buffers: Option<Bytes>,
    pub loss: f64,
    pub accuracy: f64,
}

/// All shard results of an update, each group in shard order.
#[derive(Debug, Default)]
pub struct RawStep {
    pub clean: Vec<RawResult>,
    pub perturbed: Vec<RawResult>,
}

#[derive(Debug)]
pub struct UpdateOutcome {
    /// `None` for a skipped update.
    pub report: Option<UpdateReport>,
    /// The epoch, when the version just published is to be evaluated.
    pub evaluation: Option<u64>,
    /// The next weights version, serialised.
    pub snapshot: Bytes,
    /// Updates applied after this one.
    pub step: u64,
    /// Seconds spent per phase: `aggregation` (decoding the shard results,
    /// averaging them, the history and the SGD step), `checkpoint` and
    /// `publish` (serialising the next weights version).
    pub phases: Vec<(&'static str, f64)>,
    /// A checkpoint was due and could not be written (the update itself
    /// stands; the job should not go on until a checkpoint succeeds).
    pub checkpoint_error: Option<rwp_core::checkpoint::CheckpointError>,
}

/// What the engine reports when it starts.
#[derive(Debug)]
pub struct EngineInit {
    pub layout: Layout,
    pub schedule: Schedule,
    /// Updates already applied (from the checkpoint, when resuming).
    pub step: u64,
    pub snapshot: Bytes,
    /// The epoch, when the version resumed at is one to evaluate.
    pub evaluation: Option<u64>,
    /// Checkpoint files passed over when resuming (corrupt, unreadable), with the reason.
    pub rejected_checkpoints: Vec<String>,
}

type Reply<T> = oneshot::Sender<Result<T, EngineError>>;

/// Why a job's engine could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine's thread is gone (its job ended, or it panicked).
    #[error("engine stopped")]
    Stopped,
    #[error("cannot start engine thread: {0}")]
    Thread(std::io::Error),
    /// A shard result that does not decode for the job's model.
    #[error(transparent)]
    Result(#[from] rwp_core::wire::WireError),
    /// Results that do not make an update (wrong shards, shapes).
    #[error(transparent)]
    Update(#[from] rwp_core::optim::UpdateError),
    #[error(transparent)]
    Checkpoint(#[from] rwp_core::checkpoint::CheckpointError),
    #[error(transparent)]
    Spec(#[from] rwp_spec::SpecError),
    /// A model whose result layout cannot be represented.
    #[error(transparent)]
    Layout(#[from] rwp_spec::payload::PayloadError),
    #[error("the job names no model file")]
    NoModelFile,
    /// The weights a new job was to start from do not fit its model.
    #[error("{0}")]
    InitialState(String),
}

enum Command {
    Update(RawStep, Reply<UpdateOutcome>),
    Skip(Reply<UpdateOutcome>),
    Export(Reply<Vec<u8>>),
    Checkpoint(Reply<u64>),
}

/// The async side's handle to a job's engine thread. Dropping it stops the thread.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Command>,
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub checkpoint_dir: PathBuf,
    pub checkpoint_every: u64,
    pub eval_every_epochs: u64,
    pub torch_threads: i32,
    /// Threads of the aggregation and update (at least 1).
    pub engine_threads: usize,
    /// Where the state lives and the update runs.
    pub device: Device,
    /// Refuse a model with more parameters, before any tensor is made
    /// (new jobs; a resumed job was accepted already).
    pub max_parameters: Option<u64>,
    /// Where decoded payloads go back for the next pushes.
    pub payloads: Arc<PayloadPool>,
    /// The stored TorchScript file of a `torchscript` job.
    pub model_file: Option<PathBuf>,
    /// A checkpoint whose weights and BatchNorm statistics a new job starts
    /// from (another job's), in place of its seed's.
    pub initial_state: Option<PathBuf>,
    /// How TorchScript jobs' sandboxes start; `Err`: they cannot here.
    pub sandbox: Result<SandboxConfig, SandboxError>,
}

/// A TorchScript module's model as the server holds it: names, shapes and
/// the initial values its sandbox read from the file.
fn described_model(opened: &rwp_sandbox::OpenedJob, initial: &[u8]) -> Result<Model, ServerError> {
    let [channels, height, width] = opened.input;
    let input = rwp_core::model::InputShape { channels, height, width };
    let zeros = |named: &[(String, Vec<i64>)]| {
        named.iter().map(|(_, shape)| tch::Tensor::zeros(shape.as_slice(), (tch::Kind::Float, Device::Cpu))).collect()
    };
    let build = |weights, buffers| {
        Model::described(
            ModelKind::TorchScript,
            input,
            opened.classes,
            opened.params.clone(),
            opened.buffers.clone(),
            weights,
            buffers,
        )
    };
    let skeleton = build(zeros(&opened.params), zeros(&opened.buffers));
    let snapshot = wire::decode_snapshot(initial, &skeleton, Device::Cpu)
        .map_err(|e| ServerError::Sandbox(format!("the initial weights from the sandbox: {e}")))?;
    Ok(build(snapshot.weights, snapshot.buffers))
}

impl EngineHandle {
    /// Starts the engine of a job, resuming from its checkpoint when one exists.
    pub async fn start(spec: JobSpec, config: EngineConfig) -> Result<(Self, EngineInit), ServerError> {
        let (init_tx, init_rx) = oneshot::channel();
        let (tx, rx) = mpsc::channel();
        thread::Builder::new()
            .name("rwp-engine".into())
            .spawn(move || match Engine::new(spec, config) {
                Ok((engine, init)) => {
                    if init_tx.send(Ok(init)).is_ok() {
                        engine.run(&rx);
                    }
                }
                Err(e) => {
                    let _ = init_tx.send(Err(e));
                }
            })
            .map_err(|e| ServerError::Engine(EngineError::Thread(e)))?;
        let init = init_rx.await.map_err(|_| ServerError::Engine(EngineError::Stopped))?;
        Ok((Self { tx }, init?))
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, ServerError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).map_err(|_| EngineError::Stopped)?;
        Ok(rx.await.map_err(|_| EngineError::Stopped)??)
    }

    pub async fn update(&self, step: RawStep) -> Result<UpdateOutcome, ServerError> {
        self.call(|r| Command::Update(step, r)).await
    }

    pub async fn skip(&self) -> Result<UpdateOutcome, ServerError> {
        self.call(Command::Skip).await
    }

    /// The current state as a checkpoint file (safetensors bytes).
    pub async fn export(&self) -> Result<Vec<u8>, ServerError> {
        self.call(Command::Export).await
    }

    /// Saves a checkpoint now; returns its step.
    pub async fn checkpoint(&self) -> Result<u64, ServerError> {
        self.call(Command::Checkpoint).await
    }
}

struct Engine {
    spec: JobSpec,
    config: EngineConfig,
    checkpoints: checkpoint::Rotation,
    model: Model,
    schedule: Schedule,
    state: TrainState,
    writer: SnapshotWriter,
}

/// The epoch of version `step` when it is to be evaluated: at the end of
/// every `every`-th epoch (0: none) and at the end of the run.
#[must_use]
pub fn evaluation_due(schedule: &Schedule, every: u64, step: u64) -> Option<u64> {
    let per_epoch = schedule.updates_per_epoch;
    let epoch = step.div_ceil(per_epoch);
    let due = step >= schedule.total_updates || (every > 0 && step % per_epoch == 0 && epoch % every == 0);
    (due && step > 0).then_some(epoch)
}

/// A TorchScript job's model, described by a sandbox that reads the module
/// file and not the job's data.
fn script_model(spec: &JobSpec, config: &EngineConfig) -> Result<Model, ServerError> {
    let sandbox = config.sandbox.clone().map_err(|e| ServerError::Sandbox(e.to_string()))?;
    let model_file = config.model_file.clone().ok_or(EngineError::NoModelFile)?;
    let mut host = ModelHost::spawn(&sandbox, &Grants { model_file })?;
    let opened = host.open_job(spec)?;
    let initial = host.initial_snapshot()?;
    described_model(&opened, &initial)
}

impl Engine {
    fn new(spec: JobSpec, config: EngineConfig) -> Result<(Self, EngineInit), ServerError> {
        if config.torch_threads > 0 {
            tch::set_num_threads(config.torch_threads);
        }
        let data = DatasetInfo::for_spec(&spec);
        let model = if spec.model == ModelKind::TorchScript {
            script_model(&spec, &config)?
        } else {
            Model::new(spec.model, data.shape, data.classes)
        };
        let parameters = u64::try_from(model.num_parameters()).unwrap_or(u64::MAX);
        if let Some(limit) = config.max_parameters.filter(|limit| parameters > *limit) {
            return Err(ServerError::ModelTooLarge { model: spec.model.to_string(), parameters, limit });
        }
        let schedule = Schedule::new(&spec, data.train).map_err(EngineError::from)?;
        let checkpoints = checkpoint::Rotation::in_dir(&config.checkpoint_dir);
        let (resumed, rejected) = checkpoints.load(&model, config.device);
        let state = match resumed {
            Some(checkpoint) => checkpoint.state,
            // Nothing usable (or a new job): the job starts over, and being
            // deterministic it reaches the same weights again.
            None => match &config.initial_state {
                Some(path) => checkpoint::load_initial(path, &model, config.device).map_err(|e| match e {
                    checkpoint::CheckpointError::Invalid { reason, .. } => EngineError::InitialState(reason),
                    other => EngineError::InitialState(other.to_string()),
                })?,
                None => {
                    let (weights, buffers) = model.init(init_seed(&spec), config.device);
                    TrainState::new(weights, buffers)
                }
            },
        };
        let layout = Layout::new(
            model.params().iter().map(|p| (p.name.clone(), p.numel() as usize)).collect(),
            model.buffers().iter().map(|b| b.numel() as usize).sum(),
            spec.gradient_encoding,
        )
        .map_err(EngineError::from)?;
        let writer = SnapshotWriter::new(&model);
        let engine = Self { spec, config, checkpoints, model, schedule: schedule.clone(), state, writer };
        let init = EngineInit {
            layout,
            evaluation: evaluation_due(&schedule, engine.config.eval_every_epochs, engine.state.step),
            schedule,
            step: engine.state.step,
            snapshot: engine.snapshot(),
            rejected_checkpoints: rejected.iter().map(ToString::to_string).collect(),
        };
        Ok((engine, init))
    }

    fn run(mut self, rx: &mpsc::Receiver<Command>) {
        while let Ok(command) = rx.recv() {
            match command {
                Command::Update(step, reply) => {
                    let _ = reply.send(self.update(step));
                }
                Command::Skip(reply) => {
                    self.state.step += 1;
                    let _ = reply.send(self.after_update(None));
                }
                Command::Export(reply) => {
                    let _ = reply.send(Ok(checkpoint::to_bytes(&self.spec, &self.model, &self.state)));
                }
                Command::Checkpoint(reply) => {
                    let _ = reply.send(self.save().map(|()| self.state.step).map_err(EngineError::from));
                }
            }
        }
    }

    fn snapshot(&self) -> Bytes {
        let factors = self.state.row_factors(&self.spec);
        self.writer.write(&self.state, factors.as_ref())
    }

    fn save(&self) -> Result<(), rwp_core::checkpoint::CheckpointError> {
        self.checkpoints.save(&self.spec, &self.model, &self.state)
    }
}

fn payloads(results: &[RawResult]) -> Vec<ShardPayload<'_>> {
    results
        .iter()
        .map(|r| ShardPayload {
            gradient: &r.gradient,
            buffers: r.buffers.as_deref(),
            loss: r.loss,
            accuracy: r.accuracy,
        })
        .collect()
}

impl Engine {
    fn update(&mut self, raw: RawStep) -> Result<UpdateOutcome, EngineError> {
        let started = std::time::Instant::now();
        rwp_core::faults::hit("aggregation");
        let report = apply_payloads(
            &self.spec,
            &self.schedule,
            &self.model,
            &mut self.state,
            &StepPayloads { clean: payloads(&raw.clean), perturbed: payloads(&raw.perturbed) },
            self.config.engine_threads,
            // Every push is checked as it arrives (`complete_push`).
            Finiteness::CheckedOnArrival,
        )
        .map_err(|e| match e {
            PayloadUpdateError::Wire(e) => EngineError::Result(e),
            PayloadUpdateError::Update(e) => EngineError::Update(e),
        })?;
        for result in raw.clean.into_iter().chain(raw.perturbed) {
            // The BatchNorm buffers are a slice of the same payload: drop
            // them first, or the payload is still shared and cannot return
            // to the pool (every clean push then faulted in a fresh buffer).
            let RawResult { gradient, buffers, .. } = result;
            drop(buffers);
            self.config.payloads.give(gradient);
        }
        let aggregation = started.elapsed().as_secs_f64();
        let mut outcome = self.after_update(Some(report))?;
        outcome.phases.insert(0, ("aggregation", aggregation));
        Ok(outcome)
    }

    fn after_update(&mut self, report: Option<UpdateReport>) -> Result<UpdateOutcome, EngineError> {
        let step = self.state.step;
        let done = step >= self.schedule.total_updates;
        let evaluation = evaluation_due(&self.schedule, self.config.eval_every_epochs, step);
        let mut phases: Vec<(&'static str, f64)> = Vec::new();
        let started = std::time::Instant::now();
        let snapshot = self.snapshot();
        let publish = started.elapsed().as_secs_f64();
        let mut checkpoint_error = None;
        if done || step % self.config.checkpoint_every == 0 {
            let started = std::time::Instant::now();
            checkpoint_error = self.save().err();
            phases.push(("checkpoint", started.elapsed().as_secs_f64()));
        }
        phases.push(("publish", publish));
        Ok(UpdateOutcome { report, evaluation, snapshot, step, phases, checkpoint_error })
    }
}
