//! The local trainer: one process runs every task of every update in plan
//! order, with the same functions the distributed service uses, so both give
//! the same weights.

use std::ops::Range;
use std::path::Path;

use rwp_spec::eval::{BatchEval, EvalTotals};
use rwp_spec::plan::{init_seed, tasks_for_step, Sampler};
use rwp_spec::{JobSpec, Role, Schedule, SpecError, Task};
use tch::{Device, Kind, Tensor};

use crate::checkpoint::{self, CheckpointError};
use crate::data::{Batch, DataError, Dataset, Split};
use crate::grad::compute_task;
use crate::model::{BnMode, Model, ModelError};
use crate::optim::{apply_update, StepResults, TrainState, UpdateError, UpdateReport};
use crate::perturb::RowFactors;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Update(#[from] UpdateError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{0}")]
    Device(String),
    #[error("{0}")]
    ModelFile(String),
}

/// Checks that `path` holds the file `spec.model_file` names.
fn check_model_file(spec: &JobSpec, path: Option<&Path>) -> Result<(), TrainError> {
    let (Some(expected), Some(path)) = (&spec.model_file, path) else { return Ok(()) };
    let found = rwp_spec::ModelFile::of_path(path)
        .map_err(|e| TrainError::ModelFile(format!("cannot read {}: {e}", path.display())))?;
    if &found == expected {
        Ok(())
    } else {
        Err(TrainError::ModelFile(format!(
            "{} has SHA-256 {} ({} bytes); the job's model file is {} ({} bytes)",
            path.display(),
            found.sha256,
            found.size_bytes,
            expected.sha256,
            expected.size_bytes
        )))
    }
}

/// Parses `cpu`, `cuda`, `cuda:N` or `auto` (CUDA when available).
pub fn parse_device(s: &str) -> Result<Device, TrainError> {
    let device = match s {
        "cpu" => Device::Cpu,
        "auto" => Device::cuda_if_available(),
        "cuda" => Device::Cuda(0),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Device::Cuda(n),
            _ => {
                return Err(TrainError::Device(format!(
                    "unknown device '{other}' (expected cpu, cuda, cuda:N or auto)"
                )))
            }
        },
    };
    if let Device::Cuda(n) = device {
        let available = tch::Cuda::device_count();
        if n as i64 >= available {
            return Err(TrainError::Device(format!("device {s} requested but {available} CUDA devices are visible")));
        }
    }
    Ok(device)
}

/// Loss and accuracy on the test split.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    pub loss: f64,
    pub accuracy: f64,
}

/// Loss and accuracy of `weights` on the test split of `data`, with the
/// running statistics in `buffers` (evaluation mode).
pub fn evaluate(
    model: &Model,
    data: &Dataset,
    weights: &[Tensor],
    buffers: &[Tensor],
    device: Device,
) -> Result<Evaluation, DataError> {
    evaluate_split(model, data, &data.test, weights, buffers, device)
}

/// Loss and accuracy on the held-out validation split, when `data` has one.
pub fn evaluate_validation(
    model: &Model,
    data: &Dataset,
    weights: &[Tensor],
    buffers: &[Tensor],
    device: Device,
) -> Result<Option<Evaluation>, DataError> {
    data.validation.as_ref().map(|split| evaluate_split(model, data, split, weights, buffers, device)).transpose()
}

/// Loss and accuracy on `split`: the per-batch results of every shard of
/// its evaluation plan ([`rwp_spec::eval`]) summed in batch order, exactly
/// as the parameter server sums the shards workers evaluate.
fn evaluate_split(
    model: &Model,
    data: &Dataset,
    split: &Split,
    weights: &[Tensor],
    buffers: &[Tensor],
    device: Device,
) -> Result<Evaluation, DataError> {
    let mut totals = EvalTotals::default();
    let plan = data.eval_plan(split);
    for shard in 0..plan.shard_count() {
        for batch in evaluate_batches(model, data, split, plan.shard_batches(shard), weights, buffers, device)? {
            totals.add(&batch);
        }
    }
    Ok(Evaluation { loss: totals.loss(), accuracy: totals.accuracy() })
}

/// The results of the evaluation batches `batches` of `split` (one shard of
/// an evaluation), with the running statistics in `buffers`.
pub fn evaluate_batches(
    model: &Model,
    data: &Dataset,
    split: &Split,
    batches: Range<usize>,
    weights: &[Tensor],
    buffers: &[Tensor],
    device: Device,
) -> Result<Vec<BatchEval>, DataError> {
    eval_batches(data, split, batches)?
        .into_iter()
        .map(|batch| Ok(evaluate_batch(model, &batch.to_device(device), weights, buffers)))
        .collect()
}

/// The evaluation batches `batches` of `split`, read from `data`.
pub fn eval_batches(data: &Dataset, split: &Split, batches: Range<usize>) -> Result<Vec<Batch>, DataError> {
    let plan = data.eval_plan(split);
    batches.map(|index| data.slice(split, plan.batch_samples(index))).collect()
}

/// One evaluation batch's result, with the running statistics in `buffers`.
pub fn evaluate_batch(model: &Model, batch: &Batch, weights: &[Tensor], buffers: &[Tensor]) -> BatchEval {
    let _no_grad = tch::no_grad_guard();
    let logits = model.forward(weights, buffers, &batch.images, BnMode::Eval);
    let len = batch.len();
    let mean_loss = logits.cross_entropy_for_logits(&batch.labels).double_value(&[]);
    let correct =
        logits.argmax(-1, false).eq_tensor(&batch.labels).to_kind(Kind::Double).sum(Kind::Double).double_value(&[]);
    BatchEval { loss_sum: mean_loss * len as f64, correct, samples: len as u64 }
}

/// The tasks of one update with their batches, before they are computed.
#[derive(Debug)]
pub struct PreparedStep {
    pub tasks: Vec<(Task, Batch)>,
    pub factors: Option<RowFactors>,
}

#[derive(Debug)]
pub struct LocalTrainer {
    pub spec: JobSpec,
    pub schedule: Schedule,
    pub model: Model,
    pub data: Dataset,
    pub state: TrainState,
    sampler: Sampler,
    device: Device,
    /// Times a sample was left out of a training batch (`bad_samples =
    /// "skip"`) in this process, and the first distinct ones.
    pub skipped_samples: u64,
    pub skipped_sample_examples: Vec<String>,
}

impl LocalTrainer {
    /// A fresh run of `spec` (a built-in model) with initial weights drawn
    /// from the spec's seed.
    pub fn new(spec: JobSpec, device: Device) -> Result<Self, TrainError> {
        Self::with_model_file(spec, device, None)
    }

    /// A fresh run of `spec`; a TorchScript model is loaded from
    /// `model_file` (the file `spec.model_file` names) and starts from the
    /// file's weights.
    pub fn with_model_file(spec: JobSpec, device: Device, model_file: Option<&Path>) -> Result<Self, TrainError> {
        let mut spec = spec;
        spec.validate()?;
        check_model_file(&spec, model_file)?;
        let data = Dataset::inspect(&mut spec)?;
        let model = Model::for_spec(&spec, data.shape, data.classes, model_file, device)?;
        let (weights, buffers) = model.init(init_seed(&spec), device);
        Self::assemble(spec, data, model, TrainState::new(weights, buffers), device)
    }

    /// A fresh run of `spec` that starts from the weights and BatchNorm
    /// statistics of the checkpoint at `initial` (an exported job, say)
    /// instead of the seed's; the optimizer state starts fresh.
    pub fn from_weights(
        spec: JobSpec,
        device: Device,
        model_file: Option<&Path>,
        initial: &Path,
    ) -> Result<Self, TrainError> {
        let mut spec = spec;
        spec.validate()?;
        check_model_file(&spec, model_file)?;
        let data = Dataset::inspect(&mut spec)?;
        let model = Model::for_spec(&spec, data.shape, data.classes, model_file, device)?;
        let state = checkpoint::load_initial(initial, &model, device)?;
        Self::assemble(spec, data, model, state, device)
    }

    /// Continues the run saved in a checkpoint (`model_file` as for
    /// [`LocalTrainer::with_model_file`]); `extend` replaces the spec's
    /// epochs and update cap (a run continued for longer).
    pub fn resume(
        path: &Path,
        device: Device,
        model_file: Option<&Path>,
        extend: &rwp_spec::Extension,
    ) -> Result<Self, TrainError> {
        let mut spec = checkpoint::read_spec(path)?;
        extend.apply(&mut spec);
        spec.validate()?;
        check_model_file(&spec, model_file)?;
        let data = Dataset::for_spec(&spec)?;
        let model = Model::for_spec(&spec, data.shape, data.classes, model_file, device)?;
        let loaded = checkpoint::load(path, &model, device)?;
        Self::assemble(spec, data, model, loaded.state, device)
    }

    fn assemble(
        spec: JobSpec,
        data: Dataset,
        model: Model,
        state: TrainState,
        device: Device,
    ) -> Result<Self, TrainError> {
        let schedule = Schedule::new(&spec, data.train.len())?;
        let sampler = Sampler::new(&spec, &schedule, data.train.len());
        Ok(Self {
            spec,
            schedule,
            model,
            data,
            state,
            sampler,
            device,
            skipped_samples: 0,
            skipped_sample_examples: Vec::new(),
        })
    }

    #[must_use]
    pub fn is_done(&self) -> bool {
        self.state.step >= self.schedule.total_updates
    }

    /// The tasks and batches of the next update.
    pub fn prepare_step(&mut self) -> Result<PreparedStep, DataError> {
        let tasks: Vec<(Task, Batch)> = tasks_for_step(&self.spec, &self.schedule, self.state.step)
            .into_iter()
            .map(|task| {
                let samples = self.sampler.shard(&task);
                let batch = self.data.train_batch(&samples)?.to_device(self.device);
                Ok((task, batch))
            })
            .collect::<Result<_, DataError>>()?;
        for (_, batch) in &tasks {
            rwp_spec::job::note_skipped(&mut self.skipped_samples, &mut self.skipped_sample_examples, &batch.skipped);
        }
        Ok(PreparedStep { tasks, factors: self.state.row_factors(&self.spec) })
    }

    /// Computes the prepared tasks in plan order and applies the update.
    pub fn run_step(&mut self, prepared: PreparedStep) -> Result<UpdateReport, TrainError> {
        let mut results = StepResults::default();
        for (task, batch) in &prepared.tasks {
            let result = compute_task(
                &self.spec,
                &self.model,
                self.state.weights(),
                self.state.buffers(),
                task,
                batch,
                prepared.factors.as_ref(),
            );
            match task.role {
                Role::Clean | Role::Sam => results.clean.push(result),
                Role::Perturbed => results.perturbed.push(result),
            }
        }
        // As many threads as libtorch uses, which the bits do not depend on.
        let threads = usize::try_from(tch::get_num_threads()).unwrap_or(1);
        Ok(apply_update(&self.spec, &self.schedule, &self.model, &mut self.state, results, threads)?)
    }

    pub fn step(&mut self) -> Result<UpdateReport, TrainError> {
        let prepared = self.prepare_step()?;
        self.run_step(prepared)
    }

    /// Loss and accuracy on the test split, with running statistics.
    pub fn evaluate(&self) -> Result<Evaluation, DataError> {
        evaluate(&self.model, &self.data, self.state.weights(), self.state.buffers(), self.device)
    }

    /// Loss and accuracy on the validation split, when the spec holds one out.
    pub fn evaluate_validation(&self) -> Result<Option<Evaluation>, DataError> {
        evaluate_validation(&self.model, &self.data, self.state.weights(), self.state.buffers(), self.device)
    }

    pub fn save_checkpoint(&self, path: &Path) -> Result<(), TrainError> {
        Ok(checkpoint::save(path, &self.spec, &self.model, &self.state)?)
    }

    #[must_use]
    pub fn device(&self) -> Device {
        self.device
    }
}
