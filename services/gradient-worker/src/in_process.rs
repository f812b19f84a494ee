//! Tasks of built-in models, computed on the compute thread itself.

use std::time::Instant;

use rwp_core::data::Dataset;
use rwp_core::grad::compute_task;
use rwp_core::model::Model;
use rwp_core::trainer::evaluate_batches;
use rwp_core::wire::{self, Snapshot};
use rwp_spec::eval::shard_batches;
use rwp_spec::plan::Sampler;
use rwp_spec::work::Work;
use rwp_spec::JobSpec;
use tch::Device;
use tracing::{debug, warn};

use crate::compute::{Computed, GradientOutput, TaskInput, TaskOutput};
use crate::slots::WeightSlots;
use crate::WorkerError;

/// Computes `input`'s task with the weights version it names, installing
/// `snapshot` (that version's bytes) first when given.
#[allow(clippy::too_many_arguments)]
pub(crate) fn compute(
    spec: &JobSpec,
    data: &Dataset,
    model: &Model,
    sampler: &mut Sampler,
    weights: &mut WeightSlots<Snapshot>,
    input: &TaskInput,
    snapshot: Option<Vec<u8>>,
    device: Device,
) -> Result<TaskOutput, WorkerError> {
    let version = input.work.version();
    let (slot, _) = weights.slot_for(version);
    let spent_snapshot = match snapshot {
        Some(bytes) => {
            let decoded = wire::decode_snapshot(&bytes, model, device)?;
            debug!(version, slot, factors = decoded.factors.is_some(), "weights installed");
            weights.put(slot, version, decoded);
            Some(bytes)
        }
        None => None,
    };
    let held = weights.slot_for(version);
    let weights = match held {
        (slot, true) => weights.touch(slot).expect("held"),
        _ => return Err(WorkerError::Compute(format!("weights version {version} is not loaded"))),
    };
    let started = Instant::now();
    let computed = match &input.work {
        Work::Gradient { task, returns_buffers } => {
            let samples = sampler.shard(task);
            let batch = data.train_batch(&samples)?.to_device(device);
            if let Some(first) = batch.skipped.first() {
                warn!(skipped = batch.skipped.len(), first, "samples left out of the batch (bad_samples = skip)");
            }
            let result =
                compute_task(spec, model, &weights.weights, &weights.buffers, task, &batch, weights.factors.as_ref());
            let mut payload = wire::encode_gradients(&result.grads, spec.gradient_encoding);
            let gradient_bytes = payload.len() as u64;
            let buffer_bytes = if *returns_buffers {
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
            debug!(loss = result.loss, accuracy = result.accuracy, samples = batch.len(), "computed");
            Computed::Gradient(GradientOutput {
                payload,
                gradient_bytes,
                buffer_bytes,
                loss: result.loss,
                accuracy: result.accuracy,
            })
        }
        Work::Evaluation(task) => {
            let split = data
                .eval_split(task.split)
                .ok_or_else(|| WorkerError::InvalidTask(format!("the job holds no {:?} samples out", task.split)))?;
            let batches = shard_batches(split.len(), task.shard);
            let results = evaluate_batches(model, data, split, batches, &weights.weights, &weights.buffers, device)?;
            debug!(batches = results.len(), "evaluated");
            Computed::Evaluation(results)
        }
    };
    Ok(TaskOutput { computed, compute_time: started.elapsed(), spent_snapshot })
}
